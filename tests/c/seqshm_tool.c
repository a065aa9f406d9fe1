/* seqshm_tool: libseqshm driven from the command line, for the cross-language tests (tests/test_clib.py). */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <seqshm.h>

/*
 * Usage (every result is one line on stdout; an error is "err ERRNO MESSAGE", exit 1):
 *   seqshm_tool info PATH                 the channel's description
 *   seqshm_tool snap PATH                 one snapshot: seq=, ts=, data=HEX
 *   seqshm_tool zc PATH                   the same through seqshm_rd_begin()/seqshm_rd_end()
 *   seqshm_tool follow PATH N TIMEOUT_MS  up to N writes in order, then "end ..."
 *   seqshm_tool wait PATH TIMEOUT_MS      one wait past the newest write: wait=R state=S
 *   seqshm_tool state PATH                state=NAME
 *   seqshm_tool hold PATH MS              "held", then after MS ms the state of what it opened
 *   seqshm_tool fork PATH                 a forked child's calls on the reader: child=0 if all
 *                                          fail with -ECHILD
 *   seqshm_tool torn PATH SECONDS [bypass|bypass-split|dst+16]  reads of a pattern channel
 *                                          (every 64-bit word of a write holds its write
 *                                          number) into a 64-byte aligned buffer: reads=N
 *                                          torn=K; bypass: without the retry (the test's
 *                                          hook), bypass-split: halves 2 ms apart; dst+16:
 *                                          snapshots into a buffer 16 bytes past a line
 *   seqshm_tool rd PATH                   open, print "ready", then obey stdin: "snap" (ok seq=
 *                                          data=HEX), "reopen" (ok reopen=R), "state",
 *                                          "info", "wait MS" (ok wait=R), "follow MS" (ok
 *                                          seq= lost= data=HEX); a failure: err ERRNO MSG
 *   seqshm_tool wr PATH SPEC SHAPE NSLOTS [overwrite]  create, print "ready", then obey
 *                                          stdin: "w HEX", "wb HEX" (begin/end), "pattern N [GAP_NS]",
 *                                          "hang" (begin, never end), "fork" (a child's
 *                                          writes fail), "close", "unlink"
 * SPEC: a scalar "f8" (kind and size), or a record "ITEMSIZE|name:kindsize:offset[:count]|..."
 * (a count makes an array field). SHAPE: "-" (none) or "3,4".
 */

/* The test's own bypass hook: a copy of the zero-copy view WITHOUT seqshm_rd_end(), which a
 * torn-read check must catch; it exists only in this test program, never in the library. */
static int bypass_retry;
/* torn's destination: this many bytes past a 64-byte boundary (its "dst+16" mode) */
static size_t dst_offset;

static int fail(const struct seqshm_err *e, int rc)
{
	printf("err %d %s\n", -rc, e->msg);
	return 1;
}

static void hex_out(const unsigned char *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		printf("%02x", p[i]);
}

static int hex_in(const char *s, unsigned char *p, size_t n)
{
	size_t i;

	if (strlen(s) != 2 * n)
		return -1;
	for (i = 0; i < n; i++) {
		unsigned int v;

		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return -1;
		p[i] = (unsigned char)v;
	}
	return 0;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void print_info(const struct seqshm_info *i)
{
	uint32_t k;

	printf("name=%s device=%d slots=%u payload=%" PRIu64 " itemsize=%u record=%d shape=",
	       i->name, i->is_device, i->nr_slots, i->payload_size, i->itemsize, i->record);
	for (k = 0; k < i->ndim; k++)
		printf("%s%" PRIu64, k ? "," : "", i->shape[k]);
	printf(" fields=");
	for (k = 0; k < i->nr_fields; k++) {
		const struct seqshm_field_desc *f = &i->fields[k];

		printf("%s%s:%c%u:%u:%u:%d", k ? "|" : "", f->name, f->kind, f->size, f->offset,
		       f->count, f->array);
	}
	printf(" pid=%u\n", i->writer_pid);
}

static int cmd_follow(struct seqshm_rd *r, long n, long ms)
{
	size_t len = seqshm_rd_info(r)->payload_size;
	unsigned char *buf = malloc(len);
	struct seqshm_sample s;
	struct seqshm_err e;
	long i;
	int rc = 0;

	for (i = 0; i < n; i++) {
		rc = seqshm_rd_follow(r, buf, len, &s, (uint64_t)ms * 1000000u, &e);
		if (rc)
			break;
		printf("seq=%" PRIu64 " lost=%" PRIu64 " data=", s.write_seq, s.lost);
		hex_out(buf, len);
		printf("\n");
		fflush(stdout);
	}
	printf("end rc=%d state=%s msg=%s\n", rc, seqshm_strstate(seqshm_rd_state(r, NULL)),
	       rc ? e.msg : "");
	free(buf);
	return 0;
}

/* Reads of a pattern channel for @seconds: a copy whose 64-bit words are not all equal (or
 * not its write number) is torn. With bypass_retry, the copy is taken from the view without
 * the validating seqshm_rd_end(). */
static int cmd_torn(struct seqshm_rd *r, double seconds)
{
	size_t len = seqshm_rd_info(r)->payload_size, words = len / 8, k;
	/* a destination on a cache line, or dst_offset bytes past one (the copy of a few KiB
	 * then copies its first line apart from the rest) */
	unsigned char *space = aligned_alloc(64, (len + 64 + 63) / 64 * 64);
	uint64_t *buf = (uint64_t *)(space + dst_offset);
	uint64_t end = now_ns() + (uint64_t)(seconds * 1e9), reads = 0, torn = 0;
	uint64_t distinct = 0, last = 0;
	struct seqshm_sample s;
	struct seqshm_view v;
	struct seqshm_err e;
	int rc;

	while (now_ns() < end) {
		for (int batch = 0; batch < 256; batch++) {
			if (bypass_retry) {
				rc = seqshm_rd_begin(r, &v, 1000000000u, &e);
				if (rc) {
					free(space);
					return fail(&e, rc);
				}
				if (bypass_retry == 2) {
					/* halves 2 ms apart: a writer running at all tears it */
					struct timespec gap = { 0, 2000000 };

					memcpy(buf, v.data, len / 2);
					nanosleep(&gap, NULL);
					memcpy((char *)buf + len / 2, (const char *)v.data + len / 2,
					       len - len / 2);
				} else {
					memcpy(buf, v.data, len);
				}
				s.write_seq = buf[0];
			} else {
				rc = seqshm_rd_snapshot(r, buf, len, &s, 1000000000u, &e);
				if (rc) {
					free(space);
					return fail(&e, rc);
				}
				if (buf[0] != s.write_seq)
					torn++;	/* the payload is not the write the sample names */
			}
			for (k = 1; k < words; k++)
				if (buf[k] != buf[0]) {
					torn++;
					break;
				}
			if (s.write_seq != last)
				distinct++;
			last = s.write_seq;
			reads++;
		}
	}
	printf("reads=%" PRIu64 " torn=%" PRIu64 " distinct=%" PRIu64 "\n", reads, torn, distinct);
	free(space);
	return 0;
}

static int parse_spec(const char *spec, struct seqshm_wr_opts *o, struct seqshm_field_desc *f,
		      char names[][32])
{
	char buf[4096], *save = NULL, *tok;
	unsigned int size;

	snprintf(buf, sizeof(buf), "%s", spec);
	if (!strchr(buf, '|')) {
		if (sscanf(buf, "%c%u", &f[0].kind, &size) != 2)
			return -1;
		f[0].name = "";
		f[0].size = (uint8_t)size;
		f[0].count = 1;
		o->itemsize = size;
		o->nr_fields = 1;
		o->record = 0;
		return 0;
	}
	o->record = 1;
	o->nr_fields = 0;
	tok = strtok_r(buf, "|", &save);
	o->itemsize = (uint32_t)strtoul(tok, NULL, 10);
	while ((tok = strtok_r(NULL, "|", &save))) {
		struct seqshm_field_desc *d = &f[o->nr_fields];
		char *name = names[o->nr_fields];
		unsigned int off, count = 0;
		char kind;
		int n = sscanf(tok, "%31[^:]:%c%u:%u:%u", name, &kind, &size, &off, &count);

		if (n < 4)
			return -1;
		d->name = name;
		d->kind = kind;
		d->size = (uint8_t)size;
		d->offset = off;
		d->count = n == 5 ? count : 1;
		d->array = n == 5;
		o->nr_fields++;
	}
	return 0;
}

static int cmd_wr(int argc, char **argv)
{
	struct seqshm_field_desc fields[32];
	char names[32][32], line[1 << 20], shape_s[256];
	uint64_t shape[8];
	struct seqshm_wr_opts o = { 0 };
	struct seqshm_wr *w;
	struct seqshm_err e;
	size_t len;
	unsigned char *buf;
	int64_t head = 0;
	int rc;

	if (argc < 6)
		return 2;
	memset(fields, 0, sizeof(fields));
	if (parse_spec(argv[3], &o, fields, names)) {
		printf("err 22 bad spec\n");
		return 1;
	}
	o.fields = fields;
	snprintf(shape_s, sizeof(shape_s), "%s", argv[4]);
	if (strcmp(shape_s, "-")) {
		char *save = NULL, *tok;

		for (tok = strtok_r(shape_s, ",", &save); tok && o.ndim < 8;
		     tok = strtok_r(NULL, ",", &save))
			shape[o.ndim++] = strtoull(tok, NULL, 10);
		o.shape = shape;
	}
	o.nr_slots = (uint32_t)strtoul(argv[5], NULL, 10);
	o.overwrite = argc > 6 && !strcmp(argv[6], "overwrite");
	rc = seqshm_wr_create(&w, argv[2], &o, &e);
	if (rc)
		return fail(&e, rc);
	len = seqshm_wr_info(w)->payload_size;
	/* a writer that never gets "close" (killed, or stdin ends) leaves the channel to die */
	buf = malloc(len);
	printf("ready payload=%zu\n", len);
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin)) {
		line[strcspn(line, "\n")] = 0;
		if (!strncmp(line, "w ", 2) || !strncmp(line, "wb ", 3)) {
			int begin = line[1] == 'b';
			int64_t seq;

			if (hex_in(line + (begin ? 3 : 2), buf, len)) {
				printf("err 22 bad hex\n");
			} else if (begin) {
				void *dst = seqshm_wr_begin(w);

				memcpy(dst, buf, len);
				seq = seqshm_wr_end(w, 0);
				head = seq > 0 ? seq : head;
				printf("ok %" PRId64 "\n", seq);
			} else {
				seq = seqshm_wr_write(w, buf, len, 0, &e);
				if (seq < 0)
					printf("err %d %s\n", (int)-seq, e.msg);
				else
					printf("ok %" PRId64 "\n", head = seq);
			}
		} else if (!strncmp(line, "pattern ", 8)) {
			int64_t seq;

			char *rest;
			long n = strtol(line + 8, &rest, 10), i;
			uint64_t gap = strtoull(rest, NULL, 10);

			for (i = 0; i < n; i++) {
				uint64_t *dst, until = now_ns() + gap;

				/* a paced writer (GAP_NS between writes) leaves readers room */
				while (gap && now_ns() < until)
					;
				dst = seqshm_wr_begin(w);

				/* every word holds the number of the write being made */
				for (size_t j = 0; j < len / 8; j++)
					dst[j] = (uint64_t)head + 1;
				head = seqshm_wr_end(w, 0);
			}
			seq = head;
			printf("ok %" PRId64 "\n", seq);
		} else if (!strcmp(line, "fork")) {
			/* a forked child is not the writer: writes fail, its close ends nothing */
			pid_t pid = fork();
			int status = 0;

			if (pid == 0) {
				int64_t rc = seqshm_wr_write(w, buf, len, 0, &e);
				int ok = rc == -ECHILD && !seqshm_wr_begin(w) &&
					 seqshm_wr_end(w, 0) == -ECHILD;

				seqshm_wr_close(w, 1);
				free(buf);
				_exit(ok ? 0 : 3);
			}
			waitpid(pid, &status, 0);
			printf("ok fork %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
		} else if (!strcmp(line, "hang")) {
			seqshm_wr_begin(w);
			printf("ok hang\n");
		} else if (!strcmp(line, "close") || !strcmp(line, "unlink")) {
			seqshm_wr_close(w, line[0] == 'u');
			printf("ok closed\n");
			fflush(stdout);
			free(buf);
			return 0;
		} else {
			printf("err 22 unknown command\n");
		}
		fflush(stdout);
	}
	/* stdin ended without "close": end as a process that dies does (no close) */
	free(buf);
	_exit(0);
}

/* One reader kept open across commands from stdin, for what happens between them (a reader
 * that moves to a replacement with seqshm_rd_reopen()). */
static int cmd_rd(struct seqshm_rd *r)
{
	char line[256];
	struct seqshm_sample s;
	struct seqshm_err e;
	int rc;

	printf("ready\n");
	while (fgets(line, sizeof(line), stdin)) {
		/* the payload size of the channel read now: a reopen may change the reader's */
		size_t len = seqshm_rd_info(r)->payload_size;
		unsigned char *buf = malloc(len);
		uint64_t ns = (uint64_t)strtol(line + strcspn(line, " "), NULL, 10) * 1000000u;

		line[strcspn(line, "\n")] = 0;
		memset(&s, 0, sizeof(s));
		if (!strcmp(line, "snap") || !strncmp(line, "follow ", 7)) {
			rc = line[0] == 's' ? seqshm_rd_snapshot(r, buf, len, &s, 1000000000u, &e) :
			     seqshm_rd_follow(r, buf, len, &s, ns, &e);
			if (rc) {
				printf("err %d %s\n", -rc, e.msg);
			} else {
				printf("ok seq=%" PRIu64 " lost=%" PRIu64 " data=", s.write_seq,
				       s.lost);
				hex_out(buf, len);
				printf("\n");
			}
		} else if (!strcmp(line, "reopen")) {
			rc = seqshm_rd_reopen(r, &e);
			if (rc < 0)
				printf("err %d %s\n", -rc, e.msg);
			else
				printf("ok reopen=%d\n", rc);
		} else if (!strncmp(line, "wait ", 5)) {
			rc = seqshm_rd_wait(r, ns, &e);
			if (rc < 0)
				printf("err %d %s\n", -rc, e.msg);
			else
				printf("ok wait=%d\n", rc);
		} else if (!strcmp(line, "state")) {
			printf("ok state=%s\n", seqshm_strstate(seqshm_rd_state(r, NULL)));
		} else if (!strcmp(line, "info")) {
			printf("ok ");
			print_info(seqshm_rd_info(r));
		} else {
			printf("err 22 unknown command\n");
		}
		free(buf);
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct seqshm_rd *r;
	struct seqshm_err e;
	int rc;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 3) {
		fprintf(stderr, "usage: seqshm_tool COMMAND PATH ...\n");
		return 2;
	}
	if (!strcmp(argv[1], "wr"))
		return cmd_wr(argc, argv);
	rc = seqshm_rd_open(&r, argv[2], &e);
	if (rc)
		return fail(&e, rc);
	if (!strcmp(argv[1], "info")) {
		print_info(seqshm_rd_info(r));
	} else if (!strcmp(argv[1], "rd")) {
		rc = cmd_rd(r);
	} else if (!strcmp(argv[1], "snap") || !strcmp(argv[1], "zc")) {
		size_t len = seqshm_rd_info(r)->payload_size;
		unsigned char *buf = malloc(len);
		struct seqshm_sample s;

		if (argv[1][0] == 's') {
			rc = seqshm_rd_snapshot(r, buf, len, &s, 1000000000u, &e);
		} else {
			struct seqshm_view v;

			do {
				rc = seqshm_rd_begin(r, &v, 1000000000u, &e);
				if (rc)
					break;
				memcpy(buf, v.data, len);
				rc = seqshm_rd_end(r, &v, &s, &e);
			} while (rc == -EAGAIN);
		}
		if (rc) {
			rc = fail(&e, rc);
		} else {
			printf("seq=%" PRIu64 " ts=%" PRIu64 " data=", s.write_seq, s.timestamp_ns);
			hex_out(buf, len);
			printf("\n");
		}
		free(buf);
	} else if (!strcmp(argv[1], "follow") && argc >= 5) {
		cmd_follow(r, strtol(argv[3], NULL, 10), strtol(argv[4], NULL, 10));
	} else if (!strcmp(argv[1], "wait") && argc >= 4) {
		uint64_t ns = (uint64_t)strtol(argv[3], NULL, 10) * 1000000u;
		size_t len = seqshm_rd_info(r)->payload_size;
		unsigned char *buf = malloc(len);

		/* wait past the newest write there is now */
		rc = seqshm_rd_snapshot(r, buf, len, NULL, 1000000000u, &e);
		free(buf);
		if (rc) {
			rc = fail(&e, rc);
		} else {
			rc = seqshm_rd_wait(r, ns, &e);
			printf("wait=%d state=%s msg=%s\n", rc,
			       seqshm_strstate(seqshm_rd_state(r, NULL)), rc < 0 ? e.msg : "");
			rc = 0;
		}
	} else if (!strcmp(argv[1], "fork")) {
		/* a reader's forked child: every read and wait fails with -ECHILD, close works */
		pid_t pid = fork();
		int status = 0;

		if (pid == 0) {
			size_t len = seqshm_rd_info(r)->payload_size;
			unsigned char *buf = malloc(len);
			struct seqshm_view v;
			int ok = seqshm_rd_snapshot(r, buf, len, NULL, 1000000u, &e) == -ECHILD &&
				 seqshm_rd_wait(r, 1000000u, NULL) == -ECHILD &&
				 seqshm_rd_follow(r, buf, len, NULL, 1000000u, NULL) == -ECHILD &&
				 seqshm_rd_begin(r, &v, 1000000u, NULL) == -ECHILD &&
				 seqshm_rd_state(r, NULL) == -ECHILD && strstr(e.msg, "forked");

			free(buf);
			seqshm_rd_close(r);
			_exit(ok ? 0 : 3);
		}
		waitpid(pid, &status, 0);
		printf("child=%d state=%s\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1,
		       seqshm_strstate(seqshm_rd_state(r, NULL)));
	} else if (!strcmp(argv[1], "hold") && argc >= 4) {
		/* keep the channel open while others act on its path, then say its state */
		struct timespec ts = { strtol(argv[3], NULL, 10) / 1000,
				       strtol(argv[3], NULL, 10) % 1000 * 1000000 };

		printf("held\n");
		fflush(stdout);
		nanosleep(&ts, NULL);
		printf("state=%s\n", seqshm_strstate(seqshm_rd_state(r, NULL)));
	} else if (!strcmp(argv[1], "state")) {
		rc = seqshm_rd_state(r, &e);
		if (rc < 0) {
			rc = fail(&e, rc);
		} else {
			printf("state=%s\n", seqshm_strstate(rc));
			rc = 0;
		}
	} else if (!strcmp(argv[1], "torn") && argc >= 4) {
		bypass_retry = argc > 4 && !strcmp(argv[4], "bypass") ? 1 :
			       argc > 4 && !strcmp(argv[4], "bypass-split") ? 2 : 0;
		dst_offset = argc > 4 && !strcmp(argv[4], "dst+16") ? 16 : 0;
		rc = cmd_torn(r, strtod(argv[3], NULL));
	} else {
		fprintf(stderr, "unknown command %s\n", argv[1]);
		rc = 2;
	}
	seqshm_rd_close(r);
	return rc;
}
