/* c_writer: a C data-acquisition loop publishing records to Python (or C) readers through a seqshm channel in /dev/shm. */
/*
 *   cc c_writer.c $(pkg-config --cflags --libs seqshm) -lm -o c_writer
 *   ./c_writer c_demo 500 &          # 500 writes at 100 Hz to /dev/shm/c_demo
 *   python3 read_c_writer.py c_demo  # prints them as NumPy records
 *
 * The element is a C struct, described to readers by its field table (NumPy's view of it:
 * dtype([('t', '<f8'), ('count', '<i4'), ('xyz', '<f4', (3,))])); a ring of 8 slots lets a
 * follower that falls behind by up to 7 writes still get every one.
 */
/* nanosleep() is POSIX, not ISO C: say so, for builds with -std=c99 or -std=c11 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <seqshm.h>

struct sample {
	double t;		/* seconds since the start */
	int32_t count;		/* the write's own counter */
	float xyz[3];		/* a made-up 3-axis reading */
};

static const struct seqshm_field_desc fields[] = {
	{ .name = "t", .offset = offsetof(struct sample, t), .count = 1, .kind = 'f', .size = 8 },
	{ .name = "count", .offset = offsetof(struct sample, count), .count = 1, .kind = 'i',
	  .size = 4 },
	{ .name = "xyz", .offset = offsetof(struct sample, xyz), .count = 3, .kind = 'f',
	  .size = 4, .array = 1 },
};

int main(int argc, char **argv)
{
	const char *name = argc > 1 ? argv[1] : "c_demo";
	long n = argc > 2 ? strtol(argv[2], NULL, 10) : 1000, i;
	struct timespec period = { 0, 10 * 1000 * 1000 };	/* 100 Hz */
	struct seqshm_wr_opts opts = {
		.nr_slots = 8, .itemsize = sizeof(struct sample), .record = 1,
		.nr_fields = sizeof(fields) / sizeof(fields[0]), .fields = fields,
		.overwrite = 1,		/* replace a channel whose writer is gone */
		.mode = 0644,		/* every user may read it */
	};
	char path[300];
	struct seqshm_err err;
	struct seqshm_wr *w;
	int rc = 0;

	snprintf(path, sizeof(path), "/dev/shm/%s", name);
	/* Appears complete, or not at all; one writer per channel (another gets -EBUSY). */
	if (seqshm_wr_create(&w, path, &opts, &err)) {
		fprintf(stderr, "%s\n", err.msg);
		return 1;
	}
	for (i = 0; i < n; i++) {
		/* In place: fill the slot the library hands out, then publish it. */
		struct sample *s = seqshm_wr_begin(w);
		int64_t seq;

		if (!s) {	/* the file was truncated under us (or a forked child) */
			fprintf(stderr, "%s: cannot write: create the channel again\n",
				seqshm_wr_info(w)->path);
			rc = 1;
			break;
		}
		s->t = i * 0.01;
		s->count = (int32_t)i + 1;
		s->xyz[0] = (float)sin(s->t);
		s->xyz[1] = (float)cos(s->t);
		s->xyz[2] = (float)i;
		seq = seqshm_wr_end(w, 0);	/* 0: timestamp now (CLOCK_MONOTONIC) */
		if (seq < 0) {
			fprintf(stderr, "%s: %s\n", seqshm_wr_info(w)->path, strerror((int)-seq));
			rc = 1;
			break;
		}
		nanosleep(&period, NULL);
	}
	/* Readers see the channel CLOSED after the last write; the file goes too. */
	seqshm_wr_close(w, 1);
	return rc;
}
