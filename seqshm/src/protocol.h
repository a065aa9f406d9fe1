/* seqshm protocol core: the seqlock reader and writer over a region laid out by linux/seqshm.h. */
#ifndef SEQSHM_PROTOCOL_H
#define SEQSHM_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "linux/seqshm.h"
#include "wake.h"

/*
 * Atomics: the shared structs are plain __u32/__u64 (they are shared with the kernel and
 * cannot be _Atomic), so we use the GCC/Clang __atomic builtins, which act on ordinary
 * objects with C11 semantics.
 *
 * The payload copy: a plain memcpy between the acquire load of seq and the acquire fence,
 * as the kernel's vDSO and rigtorp/Seqlock do, not a loop of relaxed atomic word loads
 * (folly's Tearable, P1478's atomic memcpy). Under C11 the racing copy is formally a data race;
 * in practice it is safe here because (1) the copy goes through memcpy into memory the caller
 * will not look at before the seq re-check passes, so no decision is taken on a torn value,
 * (2) memcpy is opaque enough and bracketed by an acquire load and a fence, both compiler
 * barriers for the surrounding memory accesses, so the compiler cannot move the copy out of
 * the critical section (the failure rigtorp's README shows with a relaxed load), and (3) word
 * loads would forbid the vectorised copy that lets a snapshot run at memcpy speed.
 */
#define seqshm_load_acquire_u32(p)	__atomic_load_n((p), __ATOMIC_ACQUIRE)
#define seqshm_load_acquire_u64(p)	__atomic_load_n((p), __ATOMIC_ACQUIRE)
#define seqshm_load_relaxed_u32(p)	__atomic_load_n((p), __ATOMIC_RELAXED)
#define seqshm_load_relaxed_u64(p)	__atomic_load_n((p), __ATOMIC_RELAXED)

#if defined(__x86_64__) || defined(__i386__)
#define seqshm_cpu_relax()	__builtin_ia32_pause()
#elif defined(__aarch64__)
#define seqshm_cpu_relax()	__asm__ __volatile__("yield" ::: "memory")
#else
#define seqshm_cpu_relax()	__asm__ __volatile__("" ::: "memory")
#endif

/* Error codes returned by the functions below (negative, like the kernel's). */
enum seqshm_status {
	SEQSHM_OK = 0,
	SEQSHM_ETIMEDOUT = -1,	/* no consistent copy within the reader's timeout */
	SEQSHM_EMAGIC = -2,	/* not a seqshm region */
	SEQSHM_EVERSION = -3,	/* a seqshm region of another ABI version */
	SEQSHM_EFORMAT = -4,	/* inconsistent, truncated or unrepresentable header */
	SEQSHM_EINVAL = -5,	/* a layout a writer asked for cannot be built */
};

/* Geometry of a validated region, copied out of a private copy of its header: never re-read
 * from shared memory, so a writer that scribbles over the header cannot send a reader out of
 * bounds. */
struct seqshm_geometry {
	const unsigned char *base;	/* start of the mapping */
	uint64_t payload_offset;
	uint64_t payload_size;
	uint64_t slot_stride;
	uint32_t slot_mask;		/* nr_slots - 1 */
};

/* What a reader learns about the copy it took; valid only once the copy is validated. */
struct seqshm_meta {
	uint64_t write_seq;
	uint64_t timestamp_ns;
	uint32_t slot;
};

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

static inline const struct seqshm_header *seqshm_hdr(const struct seqshm_geometry *g)
{
	return (const struct seqshm_header *)g->base;
}

static inline const struct seqshm_slot *seqshm_slot_ctl(const struct seqshm_geometry *g,
							 uint32_t slot)
{
	return (const struct seqshm_slot *)(g->base + SEQSHM_SLOTS_OFFSET) + slot;
}

static inline const unsigned char *seqshm_slot_payload(const struct seqshm_geometry *g,
							uint32_t slot)
{
	return g->base + g->payload_offset + (uint64_t)slot * g->slot_stride;
}

/* Completed writes so far. Pairs with the writer's store-release of head in seqshm_write_end(). */
static inline uint64_t seqshm_head(const struct seqshm_geometry *g)
{
	return seqshm_load_acquire_u64(&seqshm_hdr(g)->head);
}

/*
 * The channel's state word (SEQSHM_STATE_*). Pairs with the writer's store-release in
 * seqshm_write_close(): a reader that sees the channel closed sees every write before it.
 */
static inline uint32_t seqshm_state(const struct seqshm_geometry *g)
{
	return seqshm_load_acquire_u32(&seqshm_hdr(g)->state);
}

/*
 * Begin a read of @slot: returns its seq if even, or an odd value if the writer is
 * in it (the caller retries). Pairs with the writer's release fence before its final seq
 * store: seeing the even seq means seeing the payload that came before it.
 */
static inline uint32_t seqshm_read_begin(const struct seqshm_geometry *g, uint32_t slot)
{
	return seqshm_load_acquire_u32(&seqshm_slot_ctl(g, slot)->seq);
}

/*
 * End a read: nonzero if what was read since seqshm_read_begin() may be torn. The acquire
 * fence keeps every load of the copy before the seq reload; it pairs with the writer's release
 * fence after it made seq odd (seqshm_write_begin()): if any copied byte came from the new
 * write, the reload sees at least that odd seq.
 */
static inline int seqshm_read_retry(const struct seqshm_geometry *g, uint32_t slot,
				    uint32_t seq)
{
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	return seqshm_load_relaxed_u32(&seqshm_slot_ctl(g, slot)->seq) != seq;
}

/* Copy the metadata of @slot; racy by itself, trusted only once seqshm_read_retry() says 0. */
static inline void seqshm_read_meta(const struct seqshm_geometry *g, uint32_t slot,
				    struct seqshm_meta *meta)
{
	const struct seqshm_slot *s = seqshm_slot_ctl(g, slot);

	meta->write_seq = seqshm_load_relaxed_u64(&s->write_seq);
	meta->timestamp_ns = seqshm_load_relaxed_u64(&s->timestamp_ns);
	meta->slot = slot;
}

/*
 * The slot a reader starts from. In a ring, head can lag a copy this reader already returned:
 * the writer makes a slot's seq even before it stores head, so a reader may copy write k+1
 * while head still says k, and its next read, sent by head to write k, would go back in time.
 * Starting from the newer of head and the last write it returned keeps each reader's
 * snapshots in write order: that slot holds that write or a later one.
 */
static inline uint32_t seqshm_reader_slot(const struct seqshm_reader *r)
{
	uint64_t head;

	/* One slot: nothing to choose, and no reason to touch the line the writer stores head
	 * in on every write (a cache miss per read under a busy writer). */
	if (!r->g.slot_mask)
		return 0;
	head = seqshm_head(&r->g);

	return (uint32_t)(head > r->newest ? head : r->newest) & r->g.slot_mask;
}

/*
 * Read until a consistent copy of the newest slot (@fixed < 0) or of slot @fixed is in @dst,
 * backing off through @b, or until CLOCK_MONOTONIC reaches @deadline. Returns SEQSHM_OK or
 * SEQSHM_ETIMEDOUT (then last_seq/last_slot say what was seen). Counts failed attempts in
 * r->retries; a consistent read of the newest slot is accounted by seqshm_reader_done().
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

/* One attempt at a consistent copy of @slot; 0 on success. */
static inline int seqshm_try_read_slot(const struct seqshm_geometry *g, uint32_t slot,
				       void *dst, struct seqshm_meta *meta)
{
	uint32_t seq = seqshm_read_begin(g, slot);

	if (seq & 1)
		return 1;
	memcpy(dst, seqshm_slot_payload(g, slot), g->payload_size);
	seqshm_read_meta(g, slot, meta);
	return seqshm_read_retry(g, slot, seq);
}

/*
 * One attempt at a consistent copy of the newest payload into @dst (payload_size bytes), its
 * metadata into @meta: 0 on success (accounted), nonzero if the writer was in the way (the
 * caller goes on with seqshm_read_until()). Inline, so a snapshot costs one call.
 */
static inline int seqshm_read_once(struct seqshm_reader *r, void *dst, struct seqshm_meta *meta)
{
	uint32_t slot = seqshm_reader_slot(r);

	if (__builtin_expect(!seqshm_try_read_slot(&r->g, slot, dst, meta), 1)) {
		seqshm_reader_done(r, meta);
		return 0;
	}
	r->retries++;
	return 1;
}

/* Check a private copy of a header. @region_size_limit is the size of the backing file, or 0
 * when unknown (a device). On failure, writes a sentence into @why. */
int seqshm_header_check(const struct seqshm_header *h, uint64_t region_size_limit,
			char *why, size_t whylen);

/* Fill the geometry of a mapping at @base from a checked header copy. */
void seqshm_geometry_init(struct seqshm_geometry *g, const void *base,
			  const struct seqshm_header *h);

/* Fill every static field of @h (not magic) for the given element type and shape. */
int seqshm_layout_init(struct seqshm_header *h, const char *name, uint32_t nr_slots,
		       uint32_t ndim, const uint64_t *shape, uint32_t itemsize, uint32_t flags,
		       uint32_t nr_fields, const struct seqshm_field *fields, uint32_t writer_pid,
		       uint64_t writer_start, char *why, size_t whylen);

/* Store the magic last, with release semantics; pairs with the reader's first load of the
 * header after it opened the file: a reader seeing the magic sees all static fields. */
void seqshm_header_publish(struct seqshm_header *h);

/* Writer side: begin returns the payload of the slot being written; end publishes it and
 * wakes sleeping readers (w->wake, set up with seqshm_waker_init() first). */
void *seqshm_write_begin(struct seqshm_writer *w);
void seqshm_write_end(struct seqshm_writer *w, uint64_t timestamp_ns);
/* The channel's end: store @state (SEQSHM_STATE_CLOSED or _REPLACED) into the header at @h. */
void seqshm_write_close(struct seqshm_header *h, uint32_t state);
/* Saturating @now + @ns: a timeout past the end of time never wraps to the past. */
static inline uint64_t seqshm_deadline(uint64_t now, uint64_t ns)
{
	uint64_t d;

	return __builtin_add_overflow(now, ns, &d) ? UINT64_MAX : d;
}

uint64_t seqshm_monotonic_ns(void);

#endif /* SEQSHM_PROTOCOL_H */
