/* The parts every GenMC harness shares: a real region in static memory, the writer, a checked snapshot. */
#ifndef SEQSHM_PROOF_HARNESS_H
#define SEQSHM_PROOF_HARNESS_H

/*
 * Each harness_*.c sets NR_SLOTS (and WRITES) and includes this file, which compiles the real
 * shared protocol steps (module/protocol/seqshm_protocol.h, found through -I) with
 * proof/seqshm_env.h. Not seqshm_protocol.c: the header check and the layout are sequential
 * code (unit-tested), and GenMC cannot run their memset/memcpy over a whole header. The
 * region below has the layout seqshm_layout_init() builds (payloads from the first
 * SEQSHM_ALIGN boundary after the slot lines, a stride of whole cache lines), and the geometry
 * is what seqshm_geometry_init() derives from such a header.
 *
 * What the writer stores, so that any mix is visible: write k (1, 2, ...) stores
 * payload word i = k * 16 + i + 1, write_seq = k and timestamp_ns = 1000 + k; the region
 * starts all zero, which is "write 0" (a new region's slots are zero).
 */
#include <assert.h>
#include <genmc.h>
#include <pthread.h>

#include "seqshm_protocol.h"

#ifndef NR_SLOTS
#error "a harness defines NR_SLOTS"
#endif
/* Writes made before any thread starts (the ring's past, at no cost in executions), then
 * WRITES made by the writer thread while readers read: LAST_WRITE in all. */
#ifndef PREFILL
#define PREFILL 0
#endif
#ifndef WRITES
#define WRITES 2
#endif
#define LAST_WRITE	(PREFILL + WRITES)
/*
 * Attempts a reader makes per snapshot before it gives up (the shipped reader backs off and
 * tries again until its timeout; a bound keeps every execution finite). One suffices: a
 * reader's next snapshot is its retry, and a retry sees nothing a new attempt would not.
 */
#ifndef TRIES
#define TRIES 1
#endif

#define PAYLOAD_WORDS	2	/* two words: a copy can mix them */
#define SLOT_STRIDE	SEQSHM_CACHELINE
/* Header, the slot control lines, then the payloads from the next SEQSHM_ALIGN boundary. */
#define PAYLOAD_OFFSET	((SEQSHM_SLOTS_OFFSET + NR_SLOTS * sizeof(struct seqshm_slot) + \
			  SEQSHM_ALIGN - 1) / SEQSHM_ALIGN * SEQSHM_ALIGN)
#define REGION_BYTES	((PAYLOAD_OFFSET + NR_SLOTS * SLOT_STRIDE + SEQSHM_ALIGN - 1) / \
			 SEQSHM_ALIGN * SEQSHM_ALIGN)

static union {
	struct seqshm_header h;
	__u64 words[REGION_BYTES / sizeof(__u64)];
} region __attribute__((aligned(SEQSHM_ALIGN)));

/* The geometry every thread uses, from the checked header (set before any thread starts). */
static struct seqshm_geometry geo;

static __u64 payload_word(__u64 k, unsigned int i)
{
	return k ? k * 16 + i + 1 : 0;
}

static __u64 stamp(__u64 k)
{
	return k ? 1000 + k : 0;
}

/* Write number @k (the writer's private head is k - 1), as both shipped writers do. */
static void write_one(__u64 k)
{
	__u32 slot = seqshm_write_slot_begin(&geo, k - 1);
	__u64 *p = (__u64 *)seqshm_slot_payload_w(&geo, slot);
	unsigned int i;

	for (i = 0; i < PAYLOAD_WORDS; i++)
		seqshm_store_relaxed(&p[i], payload_word(k, i));
	seqshm_write_slot_end(&geo, slot, k, stamp(k));
}

/* The writer thread's writes: PREFILL + 1 to LAST_WRITE. */
static void write_all(void)
{
	__u64 k;

	for (k = PREFILL + 1; k <= LAST_WRITE; k++)
		write_one(k);
}

/* The geometry of the region, as seqshm_geometry_init() fills it from its header. */
static void geometry_init(void)
{
	geo.base = (const unsigned char *)&region;
	geo.payload_offset = PAYLOAD_OFFSET;
	geo.payload_size = PAYLOAD_WORDS * sizeof(__u64);
	geo.slot_stride = SLOT_STRIDE;
	geo.slot_mask = NR_SLOTS - 1;
}

/* The region, its geometry and the PREFILL writes before the threads start. */
static void region_init(void)
{
	__u64 k;

	geometry_init();
	for (k = 1; k <= PREFILL; k++)
		write_one(k);
}

struct copy {
	__u64 words[PAYLOAD_WORDS];
	struct seqshm_meta meta;
};

/*
 * What every accepted copy must be: one whole write, payload and metadata alike, taken from
 * the slot that write went to.
 */
static void check_copy(const struct copy *c, __u32 slot)
{
	__u64 k = c->meta.write_seq;
	unsigned int i;

	assert(c->meta.slot == slot);
	assert(k <= LAST_WRITE);
	assert(k == 0 || (k & geo.slot_mask) == slot);
	for (i = 0; i < PAYLOAD_WORDS; i++)
		assert(c->words[i] == payload_word(k, i));	/* not torn, not mixed */
	assert(c->meta.timestamp_ns == stamp(k));
}

/*
 * One attempt at a copy of @slot: the real seqshm_try_read_slot(). The mutant TRUST_COPY is
 * a reader that uses its copy without the seq re-check (it still skips an odd seq).
 */
static int try_copy(__u32 slot, struct copy *c)
{
#ifdef SEQSHM_MUTANT_TRUST_COPY
	if (seqshm_read_begin(&geo, slot) & 1)
		return 1;
	seqshm_copy_from_slot(c->words, seqshm_slot_payload(&geo, slot), geo.payload_size);
	seqshm_read_meta(&geo, slot, &c->meta);
	return 0;
#else
	return seqshm_try_read_slot(&geo, slot, c->words, &c->meta);
#endif
}

/*
 * A reader's own state: @newest is what it hands seqshm_pick_slot() (the newest write it
 * returned; the mutant FORGET_NEWEST never updates it, so head alone picks the slot), @last
 * what it really returned last, for the checks.
 */
struct reader {
	__u64 newest;
	__u64 last;
	unsigned int snapshots;
};

/* A slot's seq once write @k, which went to it, is complete: two per write to that slot. */
static __u32 seq_after(__u64 k)
{
	return k ? (__u32)(2 * ((k - 1) / NR_SLOTS + 1)) : 0;
}

/*
 * A snapshot of the newest write, as the extension's seqshm_read_once()/seqshm_read_until()
 * and the kernel's read() take it: the slot of seqshm_pick_write(head, newest) (the kernel's
 * seqshm_pick_slot()), retried.
 * Checks the copy, that it is no older than this reader's last one (snapshots never go
 * back), and no older than head was when the snapshot began (a snapshot is the newest
 * write). Returns 0 with the copy in @c, or nonzero when every attempt met the writer.
 */
static int snapshot(struct reader *r, struct copy *c)
{
	__u64 before = seqshm_head(&geo);
	int t;

	/*
	 * [C] of seqshm_protocol.h: the slot head names holds that write complete, its seq even
	 * (or a later write's). Without it, no copy would be wrong (the re-check turns a stale
	 * seq into a retry), but a reader sent by head would retry for nothing.
	 */
	assert(seqshm_read_begin(&geo, (__u32)before & geo.slot_mask) >= seq_after(before));

	for (t = 0; t < TRIES; t++) {
		__u64 want = seqshm_pick_write(&geo, r->newest);
		__u32 slot = (__u32)want & geo.slot_mask;

		if (try_copy(slot, c))
			continue;
		check_copy(c, slot);
		/* what the extension's seqshm_read_once() checks never refuses this writer's copy */
		assert(seqshm_copy_is_newest(&geo, want, c->meta.write_seq));
		assert(c->meta.write_seq >= r->last);	/* never back in write order */
		assert(c->meta.write_seq >= before);	/* the newest at its start, or later */
#ifndef SEQSHM_MUTANT_FORGET_NEWEST
		if (c->meta.write_seq > r->newest)
			r->newest = c->meta.write_seq;
#endif
		r->last = c->meta.write_seq;
		r->snapshots++;
		return 0;
	}
	return 1;
}

static pthread_t spawn(void *(*fn)(void *), void *arg)
{
	pthread_t t;

	assert(pthread_create(&t, NULL, fn, arg) == 0);
	return t;
}

/* main() of a harness: the region, then its writer and its reader running at once. */
static int run_writer_and_reader(void *(*writer)(void *), void *(*reader)(void *))
{
	region_init();
	spawn(writer, NULL);
	spawn(reader, NULL);
	return 0;
}

#endif /* SEQSHM_PROOF_HARNESS_H */
