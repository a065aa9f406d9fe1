/* bench_clib: timed loops of libseqshm's snapshot and of a plain memcpy of the same size, called through ctypes by benchmarks/test_bench_clib.py. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <seqshm.h>

/* Keeps the compiler from dropping or merging the copies of a loop: the buffer escapes. */
#define ESCAPE(p)	__asm__ __volatile__("" : : "r"(p) : "memory")

/* @n snapshots of @r into @buf; the number that failed (none on an idle channel). */
long loop_snapshot(struct seqshm_rd *r, void *buf, size_t len, long n)
{
	struct seqshm_sample s;
	long i, bad = 0;

	for (i = 0; i < n; i++) {
		bad += seqshm_rd_snapshot(r, buf, len, &s, SEQSHM_FOREVER, NULL) != 0;
		ESCAPE(buf);
	}
	return bad;
}

/* @n zero-copy reads (begin, copy out of the view, end). */
long loop_view(struct seqshm_rd *r, void *buf, size_t len, long n)
{
	struct seqshm_view v;
	long i, bad = 0;

	for (i = 0; i < n; i++) {
		bad += seqshm_rd_begin(r, &v, SEQSHM_FOREVER, NULL) != 0;
		memcpy(buf, v.data, len);
		ESCAPE(buf);
		bad += seqshm_rd_end(r, &v, NULL, NULL) != 0;
	}
	return bad;
}

/* @n plain copies of @len bytes from @src: the baseline (no seqlock, no call into a library). */
long loop_memcpy(const void *src, void *buf, size_t len, long n)
{
	long i;

	for (i = 0; i < n; i++) {
		ESCAPE(src);
		memcpy(buf, src, len);
		ESCAPE(buf);
	}
	return 0;
}

/* @n plain copies out of the channel's own mapping (the newest slot's payload, found once
 * with seqshm_rd_begin()): the same memory a snapshot copies, without the seqlock. */
long loop_mapping(struct seqshm_rd *r, void *buf, size_t len, long n)
{
	struct seqshm_view v;

	if (seqshm_rd_begin(r, &v, SEQSHM_FOREVER, NULL))
		return 1;
	return loop_memcpy(v.data, buf, len, n);
}

/* Where the newest slot's payload is in @r's mapping (0 on failure): the benchmark gives its
 * private memcpy source the same alignment, so that the baseline and the snapshot copy
 * between the same offsets within a page and a cache line. */
const void *payload_address(struct seqshm_rd *r)
{
	struct seqshm_view v;

	return seqshm_rd_begin(r, &v, SEQSHM_FOREVER, NULL) ? NULL : v.data;
}

/* The empty loop: what every case above also pays per operation. */
long loop_empty(void *buf, long n)
{
	long i;

	for (i = 0; i < n; i++)
		ESCAPE(buf);
	return 0;
}
