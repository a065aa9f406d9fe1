/* print_channel: map a seqshm channel (a kernel device or a /dev/shm file) and print its writes, consistently under a live writer. */
/*
 * The userspace half of the classic question "how do I share a page between my kernel module
 * and a program without torn reads?", done with libseqshm: no mmap, no offsets, no locks by
 * hand. The library maps the channel read-only, checks its header, and copies each write
 * under the channel's sequence lock, retrying when the writer was in the middle of it, so
 * every line printed is one whole write, never half of one and half of the next.
 *
 *   cc print_channel.c $(pkg-config --cflags --libs seqshm) -o print_channel
 *   ./print_channel mysensor        # /dev/seqshm/mysensor (the module's example channel)
 *   ./print_channel selftest 5      # the newest write, then the next 5 as they come
 *   ./print_channel /dev/shm/c_demo 0
 */
/* strnlen() is POSIX, not ISO C: say so, for builds with -std=c99 or -std=c11 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <seqshm.h>

/* One scalar of a field, printed by its NumPy kind and size. */
static void print_scalar(const unsigned char *p, char kind, unsigned int size)
{
	union { int8_t i1; int16_t i2; int32_t i4; int64_t i8; uint8_t u1; uint16_t u2;
		uint32_t u4; uint64_t u8; float f4; double f8; } v;

	memcpy(&v, p, size < sizeof(v) ? size : sizeof(v));
	switch (kind) {
	case 'b': printf("%s", v.u1 ? "true" : "false"); break;
	case 'i': printf("%" PRId64, size == 1 ? v.i1 : size == 2 ? v.i2 : size == 4 ? v.i4 : v.i8);
		  break;
	case 'u': printf("%" PRIu64, size == 1 ? v.u1 : size == 2 ? v.u2 : size == 4 ? v.u4 : v.u8);
		  break;
	case 'f': if (size == 4) printf("%g", v.f4);
		  else if (size == 8) printf("%g", v.f8);
		  else printf("0x%04x(f2)", v.u2);
		  break;
	case 'c': if (size == 8) { float c[2]; memcpy(c, p, 8); printf("%g%+gj", c[0], c[1]); }
		  else { double c[2]; memcpy(c, p, 16); printf("%g%+gj", c[0], c[1]); }
		  break;
	default: printf("?");
	}
}

/* One write: a byte array is a message (printed as text); anything else element by element,
 * field by field, as the channel's field table describes it. */
static void print_write(const struct seqshm_info *info, const unsigned char *buf,
			const struct seqshm_sample *s)
{
	uint64_t n = info->payload_size / info->itemsize, e;
	const struct seqshm_field_desc *f0 = &info->fields[0];

	printf("write %" PRIu64 " at %" PRIu64 " ns", s->write_seq, s->timestamp_ns);
	if (s->lost)
		printf(" (%" PRIu64 " lost before it)", s->lost);
	if (!info->record && info->itemsize == 1 && (f0->kind == 'u' || f0->kind == 'i')) {
		printf(": \"%.*s\"\n", (int)strnlen((const char *)buf, info->payload_size), buf);
		return;
	}
	printf(":\n");
	for (e = 0; e < n && e < 32; e++) {
		const unsigned char *el = buf + e * info->itemsize;
		uint32_t k, j;

		printf("  [%" PRIu64 "]", e);
		for (k = 0; k < info->nr_fields; k++) {
			const struct seqshm_field_desc *f = &info->fields[k];

			printf(" %s%s", f->name, f->name[0] ? "=" : "");
			printf("%s", f->array ? "[" : "");
			for (j = 0; j < f->count; j++) {
				printf("%s", j ? " " : "");
				print_scalar(el + f->offset + j * f->size, f->kind, f->size);
			}
			printf("%s", f->array ? "]" : "");
		}
		printf("\n");
	}
	if (n > 32)
		printf("  ... %" PRIu64 " more elements\n", n - 32);
}

int main(int argc, char **argv)
{
	const char *name = argc > 1 ? argv[1] : "mysensor";
	long count = argc > 2 ? strtol(argv[2], NULL, 10) : 0, i;
	const struct seqshm_info *info;
	struct seqshm_sample s;
	struct seqshm_rd *r;
	struct seqshm_err err;
	unsigned char *buf;
	int rc;

	/* Opens read-only; refuses anything that is not a well-formed seqshm channel. */
	rc = seqshm_rd_open(&r, name, &err);
	if (rc) {
		fprintf(stderr, "%s\n", err.msg);
		return 1;
	}
	info = seqshm_rd_info(r);
	printf("%s: channel '%s', %s, %u slot(s), %" PRIu64 " bytes per write\n", info->path,
	       info->name, info->is_device ? "kernel device" : "userspace channel",
	       info->nr_slots, info->payload_size);
	buf = malloc(info->payload_size);
	if (!buf) {
		fprintf(stderr, "%s: no memory for %" PRIu64 " bytes\n", info->path,
			info->payload_size);
		seqshm_rd_close(r);
		return 1;
	}
	/* The newest write, whole: retried while the writer is in the middle of it. */
	rc = seqshm_rd_snapshot(r, buf, info->payload_size, &s, 1000000000u, &err);
	if (!rc)
		print_write(info, buf, &s);
	/* Then each next write, in order (sleeping until it comes), until COUNT or the end. */
	for (i = 0; !rc && i < count; i++) {
		rc = seqshm_rd_follow(r, buf, info->payload_size, &s, SEQSHM_FOREVER, &err);
		if (!rc)
			print_write(info, buf, &s);
	}
	if (rc == -EPIPE)
		printf("%s\n", err.msg);	/* the channel ended: closed, writer died, replaced */
	else if (rc)
		fprintf(stderr, "%s\n", err.msg);
	free(buf);
	seqshm_rd_close(r);
	return rc && rc != -EPIPE;
}
