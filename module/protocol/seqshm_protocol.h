/* SPDX-License-Identifier: GPL-2.0 */
/*
 * seqshm protocol, one source for the kernel module, the Python extension and the proof.
 *
 * The seqlock steps over a region laid out by <uapi/linux/seqshm.h>, written once and
 * compiled into seqshm.ko, into the userspace extension (seqshm/_core) and into the GenMC
 * harnesses (proof/), as the kernel does for the vDSO with include/vdso/helpers.h and
 * lib/vdso/gettimeofday.c. Only the environment differs, through "seqshm_env.h", which each
 * build finds first on its include path:
 *
 *   module/seqshm_env.h      the kernel: READ_ONCE/WRITE_ONCE, smp_wmb/smp_rmb,
 *                            smp_load_acquire/smp_store_release, memcpy
 *   seqshm/src/seqshm_env.h  userspace: the GCC __atomic builtins with C11 semantics
 *   proof/seqshm_env.h       GenMC: C11 atomics, the payload copy as relaxed word loads
 *
 * A shim provides: the types __u32/__u64 and the layout header (struct seqshm_header...);
 * seqshm_load_acquire(p), seqshm_load_relaxed(p), seqshm_store_relaxed(p, v),
 * seqshm_store_release(p, v) on 32- and 64-bit fields; seqshm_smp_wmb() (orders earlier
 * stores before later stores), seqshm_smp_rmb() (earlier loads before later loads);
 * seqshm_copy_from_slot(dst, src, n), the reader's racing payload copy; seqshm_likely(x);
 * SEQSHM_PRINTF(fmt, args), a printf-like function's format attribute.
 * For seqshm_protocol.c also memcpy, memset, strlen, strncmp, vsnprintf and CLOCK_MONOTONIC.
 *
 * The memory-ordering argument, the vDSO's (include/vdso/helpers.h), by pair:
 *   writer                                       reader
 *   seq odd           (store, relaxed)           seq           (load-acquire)  [A]
 *   smp_wmb()                            [B]     payload, meta (copy, relaxed)
 *   payload           (producer's stores)        smp_rmb()                     [B]
 *   write_seq, timestamp_ns (relaxed)            seq again     (load, relaxed): equal?
 *   seq even          (store-release)    [A]
 *   head              (store-release)    [C]     head          (load-acquire)  [C]
 * [A]: a reader that sees the even seq sees the payload and meta stored before it.
 * [B]: a reader whose copy saw any byte of a newer write sees that write's odd seq (or a
 *      later one) when it loads seq again, so it retries.
 * [C]: a reader sent to a slot by head finds that slot's write already complete.
 */
#ifndef SEQSHM_PROTOCOL_H_SHARED
#define SEQSHM_PROTOCOL_H_SHARED

#include "seqshm_env.h"

/* Status codes of the functions below (negative, like the kernel's; each side maps them). */
enum seqshm_status {
	SEQSHM_OK = 0,
	SEQSHM_ETIMEDOUT = -1,	/* no consistent copy within the reader's timeout */
	SEQSHM_EMAGIC = -2,	/* not a seqshm region */
	SEQSHM_EVERSION = -3,	/* a seqshm region of another ABI version */
	SEQSHM_EFORMAT = -4,	/* inconsistent, truncated or unrepresentable header */
	SEQSHM_EINVAL = -5,	/* a layout a writer asked for cannot be built */
	SEQSHM_E2BIG = -6,	/* a layout larger than the writer's limit */
	SEQSHM_EOVERFLOW = -7,	/* a shape whose size overflows 64 bits */
	SEQSHM_EDAMAGED = -8,	/* a consistent copy no writer following the protocol leaves */
};

/*
 * Write numbers a reader accepts are below this: 2^63 writes take 292 years at one a
 * nanosecond, so a larger one (in a slot or in head) is damage, and a reader's "next write"
 * (one more than the last) never wraps.
 */
#define SEQSHM_WRITE_LIMIT	((__u64)1 << 63)

/*
 * Geometry of a validated region, copied out of a private copy of its header: never re-read
 * from shared memory, so a writer that scribbles over the header cannot send a reader out of
 * bounds.
 */
struct seqshm_geometry {
	const unsigned char *base;	/* start of the region (writable for a writer) */
	__u64 payload_offset;
	__u64 payload_size;
	__u64 slot_stride;
	__u32 slot_mask;		/* nr_slots - 1 */
};

/* What a reader learns about the copy it took; valid only once the copy is validated. */
struct seqshm_meta {
	__u64 write_seq;
	__u64 timestamp_ns;
	__u32 slot;
};

static inline const struct seqshm_header *seqshm_hdr(const struct seqshm_geometry *g)
{
	return (const struct seqshm_header *)g->base;
}

static inline const struct seqshm_slot *
seqshm_slot_ctl(const struct seqshm_geometry *g, __u32 slot)
{
	return (const struct seqshm_slot *)(g->base + SEQSHM_SLOTS_OFFSET) + slot;
}

static inline const unsigned char *
seqshm_slot_payload(const struct seqshm_geometry *g, __u32 slot)
{
	return g->base + g->payload_offset + (__u64)slot * g->slot_stride;
}

/* Completed writes so far. [C]: pairs with the store-release of head in seqshm_write_slot_end(). */
static inline __u64 seqshm_head(const struct seqshm_geometry *g)
{
	return seqshm_load_acquire(&seqshm_hdr(g)->head);
}

/*
 * The channel's state word (SEQSHM_STATE_*). Pairs with the store-release in
 * seqshm_write_close(): a reader that sees the channel closed sees every write before it.
 */
static inline __u32 seqshm_state(const struct seqshm_geometry *g)
{
	return seqshm_load_acquire(&seqshm_hdr(g)->state);
}

/*
 * Begin a read of @slot: its seq if even, or an odd value if the writer is in it (the caller
 * retries). [A]: pairs with the writer's store-release of the even seq in
 * seqshm_write_slot_end(): seeing the even seq means seeing the payload stored before it.
 */
static inline __u32 seqshm_read_begin(const struct seqshm_geometry *g, __u32 slot)
{
	return seqshm_load_acquire(&seqshm_slot_ctl(g, slot)->seq);
}

/*
 * End a read: nonzero if what was read since seqshm_read_begin() may be torn. [B]: the read
 * barrier keeps every load of the copy before the seq reload; it pairs with the writer's
 * write barrier after it made seq odd (seqshm_write_slot_begin()): if any copied byte came
 * from a newer write, the reload sees that write's odd seq or a later one.
 */
static inline int seqshm_read_retry(const struct seqshm_geometry *g, __u32 slot, __u32 seq)
{
	seqshm_smp_rmb();
	return seqshm_load_relaxed(&seqshm_slot_ctl(g, slot)->seq) != seq;
}

/* Copy the metadata of @slot; racy by itself, trusted only once seqshm_read_retry() says 0. */
static inline void seqshm_read_meta(const struct seqshm_geometry *g, __u32 slot,
				    struct seqshm_meta *meta)
{
	const struct seqshm_slot *s = seqshm_slot_ctl(g, slot);

	meta->write_seq = seqshm_load_relaxed(&s->write_seq);
	meta->timestamp_ns = seqshm_load_relaxed(&s->timestamp_ns);
	meta->slot = slot;
}

/*
 * The slot a reader that has already returned write @newest (0: none) copies next. In a ring,
 * head can lag a copy the reader already returned: a slot's seq turns even before head names
 * it, so a reader may copy write k+1 while head still says k, and its next read, sent by head
 * to write k, would go back in time. The newer of head and @newest names a slot that holds
 * that write or a later one, so each reader's snapshots stay in write order.
 */
static inline __u64 seqshm_pick_write(const struct seqshm_geometry *g, __u64 newest)
{
	__u64 head;

	/*
	 * One slot: nothing to choose, and no reason to touch the line the writer stores head in
	 * on every write (a cache miss per read under a busy writer).
	 */
	if (!g->slot_mask)
		return newest;
	head = seqshm_head(g);
	return head > newest ? head : newest;
}

/* The slot of seqshm_pick_write(): it holds that write or a later one of the same slot. */
static inline __u32 seqshm_pick_slot(const struct seqshm_geometry *g, __u64 newest)
{
	return (__u32)seqshm_pick_write(g, newest) & g->slot_mask;
}

/*
 * Whether write @w may be in @slot: write k goes to slot k & slot_mask (write 0, a slot never
 * written, is in slot 0 only), and is below SEQSHM_WRITE_LIMIT. A consistent copy that fails
 * this comes from a region that was damaged or rewritten by something other than its writer
 * (or a header copied over another channel's slots), never from a writer that follows the
 * protocol, however it stopped.
 */
static inline int seqshm_write_fits_slot(const struct seqshm_geometry *g, __u32 slot, __u64 w)
{
	return ((__u32)w & g->slot_mask) == slot && w < SEQSHM_WRITE_LIMIT;
}

/*
 * Whether a consistent copy of write @w, from the slot of seqshm_pick_write()'s @want, can
 * be what a writer following the protocol left there: that write or a later one of the same
 * slot ([C]: head is stored after its slot's seq turned even; a reader's own newest write
 * was in that slot when it copied it, and a slot's writes only grow).
 */
static inline int seqshm_copy_is_newest(const struct seqshm_geometry *g, __u64 want, __u64 w)
{
	return w >= want && !((w ^ want) & g->slot_mask) && w < SEQSHM_WRITE_LIMIT;
}

/*
 * One attempt at a consistent copy of @slot's payload into @dst (payload_size bytes) and its
 * metadata into @meta: 0 on success, nonzero if the writer was in the way. The copy races
 * with the writer by design; nothing in @dst or @meta may be trusted before this returns 0.
 */
static inline int seqshm_try_read_slot(const struct seqshm_geometry *g, __u32 slot,
				       void *dst, struct seqshm_meta *meta)
{
	__u32 seq = seqshm_read_begin(g, slot);

	if (seq & 1)
		return 1;
	seqshm_copy_from_slot(dst, seqshm_slot_payload(g, slot), g->payload_size);
	seqshm_read_meta(g, slot, meta);
	return seqshm_read_retry(g, slot, seq);
}

/*
 * Following: every write once, in order (seqshm's follow(); also how a kernel consumer would
 * drain a ring). The follower wants write *@next (>= 1) and knows the newest complete write,
 * @head (from seqshm_head()).
 *
 * seqshm_follow_step(): 0 if write *@next is not complete yet (wait). Else 1: the ring holds
 * only the last nr_slots writes, so a follower more than that behind moves *@next on to the
 * oldest one still held and counts what it skipped in *@lost; slot *@next & slot_mask is
 * then the one to copy. A slot that head says is complete holds that write or a later one
 * (head is stored after the slot's seq turned even, [C]).
 */
static inline int seqshm_follow_step(const struct seqshm_geometry *g, __u64 head, __u64 *next,
				     __u64 *lost)
{
	__u64 nr_slots = (__u64)g->slot_mask + 1;

	if (head < *next)
		return 0;
	if (head - *next >= nr_slots) {
		*lost += head - nr_slots + 1 - *next;
		*next = head - nr_slots + 1;
	}
	return 1;
}

/* What one seqshm_follow_once() attempt found. */
enum seqshm_follow {
	SEQSHM_FOLLOW_WAIT = 0,		/* write *next is not complete yet */
	SEQSHM_FOLLOW_GOT = 1,		/* write *next is in dst and meta */
	SEQSHM_FOLLOW_LAPPED = 2,	/* write *next is gone (counted, *next moved): step again */
	SEQSHM_FOLLOW_BEHIND = 3,	/* its slot holds an older write: not a writer's doing */
	SEQSHM_FOLLOW_DAMAGED = 4,	/* head, or the write in its slot, no writer leaves */
};

/*
 * One attempt at write *@next: step (seqshm_follow_step(), from a fresh head), then a
 * consistent copy of its slot into @dst and @meta, accepted only if it is that very write.
 *
 * Every outcome but WAIT and the two that no writer following the protocol can cause
 * (BEHIND, DAMAGED: the caller raises) is progress: GOT returns write *@next (the caller goes
 * on with *@next + 1), and LAPPED moves *@next on by at least one, counting what it skipped
 * in *@lost. So with head still, a follower returns within nr_slots + 1 attempts, whatever
 * the slots hold and wherever the writer stopped (proof/harness_follow_stop.c).
 *
 * Head says write *@next is complete, so the slot holds it or a later write. A writer found
 * in the slot (mid-write, or starting during the copy) is therefore writing a later write
 * over it: write *@next is gone, counted in *@lost, and *@next moves on; waiting for that
 * writer would be waiting for nothing (and forever, if it died there). A consistent copy of
 * a later write w of that slot (w >= *@next + nr_slots) means the writer lapped the ring
 * past *@next: writes up to w - nr_slots are gone and *@next moves to the oldest the ring
 * may still hold, w - nr_slots + 1; with one slot that is w itself, the copy in hand. That
 * copy may be ahead of head: a writer stopped (or killed) between its slot's even seq and
 * its store of head leaves write head + 1 complete in its slot, and a follower that wanted
 * the write that one overwrote must still move on. A consistent copy of an older write, or of
 * one that does not belong in that slot, cannot come from a writer that follows the protocol
 * (a region rewritten, damaged or copied over under the reader): BEHIND or DAMAGED, never a
 * retry.
 */
static inline enum seqshm_follow seqshm_follow_once(const struct seqshm_geometry *g,
						    __u64 *next, __u64 *lost, void *dst,
						    struct seqshm_meta *meta)
{
	__u64 nr_slots = (__u64)g->slot_mask + 1, head = seqshm_head(g), w;
	__u32 slot;

	if (head >= SEQSHM_WRITE_LIMIT)
		return SEQSHM_FOLLOW_DAMAGED;
	if (!seqshm_follow_step(g, head, next, lost))
		return SEQSHM_FOLLOW_WAIT;
	slot = (__u32)*next & g->slot_mask;
	if (seqshm_try_read_slot(g, slot, dst, meta)) {
		(*lost)++;
		(*next)++;
		return SEQSHM_FOLLOW_LAPPED;
	}
	w = meta->write_seq;
	if (w == *next)
		return SEQSHM_FOLLOW_GOT;
	if (w < *next)
		return SEQSHM_FOLLOW_BEHIND;
	if (!seqshm_write_fits_slot(g, slot, w))
		return SEQSHM_FOLLOW_DAMAGED;
	/* w > *next in the same slot: w >= *next + nr_slots, so *next moves on by one at least */
	*lost += w - nr_slots + 1 - *next;
	*next = w - nr_slots + 1;
	return *next == w ? SEQSHM_FOLLOW_GOT : SEQSHM_FOLLOW_LAPPED;
}

/* A writer's view of a slot's control line (the writer's mapping is writable). */
static inline struct seqshm_slot *seqshm_slot_ctl_w(const struct seqshm_geometry *g, __u32 slot)
{
	return (struct seqshm_slot *)(g->base + SEQSHM_SLOTS_OFFSET) + slot;
}

/* The payload of @slot, for its writer. */
static inline void *seqshm_slot_payload_w(const struct seqshm_geometry *g, __u32 slot)
{
	return (void *)seqshm_slot_payload(g, slot);
}

/*
 * Begin write number @head + 1 (writers are serialized by the caller; @head is the caller's
 * private count of completed writes): make its slot's seq odd. Returns the slot; the caller
 * then stores the payload (seqshm_slot_payload_w()) and ends with seqshm_write_slot_end().
 */
static inline __u32 seqshm_write_slot_begin(const struct seqshm_geometry *g, __u64 head)
{
	__u32 slot = (__u32)(head + 1) & g->slot_mask;
	struct seqshm_slot *s = seqshm_slot_ctl_w(g, slot);

	/* Only this writer stores seq: a relaxed load of its own last store suffices. */
	seqshm_store_relaxed(&s->seq, seqshm_load_relaxed(&s->seq) + 1);
	/*
	 * [B]: pairs with the reader's read barrier in seqshm_read_retry(): the odd seq is
	 * ordered before every payload store that follows.
	 */
	seqshm_smp_wmb();
	return slot;
}

/*
 * End write number @k (the one seqshm_write_slot_begin() began in @slot), taken at
 * @timestamp_ns: store its metadata, turn the slot's seq even and publish @k as head.
 */
static inline void seqshm_write_slot_end(const struct seqshm_geometry *g, __u32 slot, __u64 k,
					 __u64 timestamp_ns)
{
	struct seqshm_slot *s = seqshm_slot_ctl_w(g, slot);
	struct seqshm_header *h = (struct seqshm_header *)g->base;

	seqshm_store_relaxed(&s->write_seq, k);
	seqshm_store_relaxed(&s->timestamp_ns, timestamp_ns);
	/*
	 * [A]: pairs with the reader's load-acquire in seqshm_read_begin(): payload and metadata
	 * are stored before seq turns even.
	 */
	seqshm_store_release(&s->seq, seqshm_load_relaxed(&s->seq) + 1);
	/*
	 * [C]: pairs with the reader's load-acquire in seqshm_head(): a reader sent to this slot
	 * by head finds its seq already even and its payload complete.
	 */
	seqshm_store_release(&h->head, k);
}

/*
 * The channel's end: store @state (SEQSHM_STATE_CLOSED or _REPLACED) into the header at @h,
 * after the last write. Pairs with the reader's load-acquire in seqshm_state(): it is stored
 * after the last store-release of head, so a reader that sees the end sees every write.
 */
static inline void seqshm_write_close(struct seqshm_header *h, __u32 state)
{
	seqshm_store_release(&h->state, state);
}

/*
 * Store the magic last. Pairs with the reader's first load of the header after it opened the
 * region: a reader that sees the magic sees every static field stored before it.
 */
static inline void seqshm_header_publish(struct seqshm_header *h)
{
	seqshm_store_release(&h->magic, SEQSHM_MAGIC);
}

/*
 * Check a private copy of a header, as every reader does before it trusts a region.
 * @region_size_limit is the size of the backing file, or 0 when unknown (a device). On
 * failure returns SEQSHM_EMAGIC, _EVERSION or _EFORMAT and writes a sentence into @why.
 */
int seqshm_header_check(const struct seqshm_header *h, __u64 region_size_limit,
			char *why, size_t whylen);

/* Fill the geometry of a region at @base from a checked header copy. */
void seqshm_geometry_init(struct seqshm_geometry *g, const void *base,
			  const struct seqshm_header *h);

/*
 * What a writer asks for: the element type, shape and ring of a channel, and who writes it.
 * @region_align: region_size is rounded up to this (a power of two, a multiple of
 * SEQSHM_ALIGN: the page size for a device, whose region is mapped page by page).
 * @max_region: the largest region this writer may build.
 */
struct seqshm_layout_req {
	const char *name;
	__u32 nr_slots;
	__u32 ndim;
	const __u64 *shape;
	__u32 itemsize;
	__u32 flags;
	__u32 nr_fields;
	const struct seqshm_field *fields;
	__u32 writer_pid;
	__u64 writer_start;
	__u64 region_align;
	__u64 max_region;
};

/*
 * Fill every static field of @h (all but the magic, which seqshm_header_publish() stores)
 * for @req, then pass it through seqshm_header_check(), the readers' own check, so that a
 * writer can never publish a header readers reject. Returns SEQSHM_OK, SEQSHM_E2BIG (a region
 * over @req->max_region), SEQSHM_EOVERFLOW (a shape past 2^64 bytes) or SEQSHM_EINVAL, with a
 * sentence in @why.
 */
int seqshm_layout_init(struct seqshm_header *h, const struct seqshm_layout_req *req,
		       char *why, size_t whylen);

#endif /* SEQSHM_PROTOCOL_H_SHARED */
