/* seqshm userspace protocol: the reader's open check and waits, the writer, over the shared steps. */
#ifndef SEQSHM_PROTOCOL_H
#define SEQSHM_PROTOCOL_H

#include <stdint.h>

/* The seqlock steps, the header check and the layout: one source with the kernel module. */
#include "seqshm_protocol.h"
#include "wake.h"

struct seqshm_reader {
	struct seqshm_geometry g;
	uint64_t newest;		/* newest write number this reader has returned */
	/* statistics of this reader, private to it */
	uint64_t snapshots;
	uint64_t retries;
	/* set when an attempt fails: the slot and the seq seen (odd: the writer was in it) */
	uint32_t last_seq;
	uint32_t last_slot;
};

/*
 * How a waiting reader spends its time: a short phase of CPU pauses (a writer mid-write
 * usually finishes within a microsecond or two), then sleeps that double from
 * SEQSHM_SLEEP_MIN_NS to SEQSHM_SLEEP_MAX_NS, so a reader waiting on a stopped or
 * preempted writer uses no CPU to speak of. Kept by the caller across calls, so that a wait
 * cut into slices (to look at signals in between) backs off as one wait.
 */
struct seqshm_backoff {
	unsigned int spins;
	uint64_t sleep_ns;
};

struct seqshm_writer {
	struct seqshm_geometry g;	/* base is writable for a writer */
	uint64_t head;			/* completed writes: only this writer changes head */
	uint32_t slot;			/* slot of the write in progress */
	int in_write;
	struct seqshm_waker wake;	/* wakes sleeping readers after each write (wake.h) */
};

#define SEQSHM_BACKOFF_INIT	{ 0, 0 }

/* The slot this reader copies next: seqshm_pick_slot() from the newest write it returned. */
static inline uint32_t seqshm_reader_slot(const struct seqshm_reader *r)
{
	return seqshm_pick_slot(&r->g, r->newest);
}

/*
 * Read until a consistent copy of the newest slot (@fixed < 0) or of slot @fixed is in @dst,
 * backing off through @b, or until CLOCK_MONOTONIC reaches @deadline. Returns SEQSHM_OK,
 * SEQSHM_ETIMEDOUT (then last_seq/last_slot say what was seen) or SEQSHM_EDAMAGED: the copy
 * (in @dst and @meta, not accounted) is of a write no writer following the protocol leaves
 * there (seqshm_copy_is_newest(); for slot @fixed, seqshm_write_fits_slot() or write 0, a
 * slot never written). Counts failed attempts in r->retries; a consistent read of the newest
 * slot is accounted by seqshm_reader_done().
 */
int seqshm_read_until(struct seqshm_reader *r, int64_t fixed, void *dst,
		      struct seqshm_meta *meta, uint64_t deadline, struct seqshm_backoff *b);
/* Wait until the newest slot (@newest) or slot *@slot is not mid-write, backing off through
 * @b until @deadline; its seq in *@seq. Returns SEQSHM_OK or SEQSHM_ETIMEDOUT. */
int seqshm_wait_even_until(struct seqshm_reader *r, uint32_t *slot, uint32_t *seq,
			   int newest, uint64_t deadline, struct seqshm_backoff *b);

/* Account a consistent read of the newest data. */
static inline void seqshm_reader_done(struct seqshm_reader *r, const struct seqshm_meta *meta)
{
	r->snapshots++;
	if (meta->write_seq > r->newest)
		r->newest = meta->write_seq;
}

/*
 * One attempt at a consistent copy of the newest payload into @dst (payload_size bytes), its
 * metadata into @meta: 0 on success (accounted), SEQSHM_EDAMAGED for a copy of a write that
 * cannot be there (as seqshm_read_until()), 1 if the writer was in the way (the caller goes
 * on with seqshm_read_until()). Inline, so a snapshot costs one call.
 */
static inline int seqshm_read_once(struct seqshm_reader *r, void *dst, struct seqshm_meta *meta)
{
	uint64_t want = seqshm_pick_write(&r->g, r->newest);

	if (seqshm_likely(!seqshm_try_read_slot(&r->g, (uint32_t)want & r->g.slot_mask, dst,
						meta))) {
		if (!seqshm_likely(seqshm_copy_is_newest(&r->g, want, meta->write_seq)))
			return SEQSHM_EDAMAGED;
		seqshm_reader_done(r, meta);
		return 0;
	}
	r->retries++;
	return 1;
}

/* Writer side: begin returns the payload of the slot being written; end publishes it and
 * wakes sleeping readers (w->wake, set up with seqshm_waker_init() first). */
void *seqshm_write_begin(struct seqshm_writer *w);
void seqshm_write_end(struct seqshm_writer *w, uint64_t timestamp_ns);
/* Saturating @now + @ns: a timeout past the end of time never wraps to the past. */
static inline uint64_t seqshm_deadline(uint64_t now, uint64_t ns)
{
	uint64_t d;

	return __builtin_add_overflow(now, ns, &d) ? UINT64_MAX : d;
}

uint64_t seqshm_monotonic_ns(void);

/*
 * The reader's open check of a channel file's holes, after seqshm_header_check() and before
 * anything reads the payload (docs/format.md, reader step 4): the one copy, which the Python
 * reader (seqshm._core.refuse_holes()) and libseqshm's seqshm_rd_open() and
 * seqshm_rd_reopen() both call. @h is the open file's checked header; @is_file, @size and
 * @allocated are from its fstat: whether it is a regular file, st_size, and st_blocks * 512.
 * The caller stats the file: an fstat called from this C would tie the Python extension to
 * glibc 2.33's fstat64 symbol, past the wheel's manylinux_2_17 policy (Python's os.fstat is
 * the interpreter's own).
 *
 * Every writer reserves the whole region before the file has its name (posix_fallocate in
 * Python's create() and seqshm_wr_create()), and its file is the region, so a regular file
 * with fewer bytes allocated than it holds (st_blocks * 512 < st_size) is another program's:
 * its holes read as zeros, and reading one through the shared mapping allocates its page,
 * filling the file system page by page with a payload any local user can claim for one page
 * of tmpfs (a tmpfs: memory); on a full one the page cannot be had and the read faults
 * (SIGBUS) as if the file had shrunk. st_blocks is exact on tmpfs, where channels live. A
 * file longer than its region is held to every byte, so data past the region cannot stand in
 * for holes within it. A device has no holes. Returns SEQSHM_OK, or SEQSHM_EFORMAT with the
 * sentence (what the file is, what to do) in @why.
 */
int seqshm_refuse_holes(const struct seqshm_header *h, int is_file, uint64_t size,
			uint64_t allocated, char *why, size_t whylen);

#endif /* SEQSHM_PROTOCOL_H */
