/* libFuzzer target: a reader's steps (snapshot, every slot, follow) over any region that passes the header check: in bounds, and every follow step progresses. */

/*
 * Input: a region (the file's bytes; its length is the file's size), then optionally 8 bytes
 * and 4 bytes that a scribbling writer stores into head and the state word after the reader
 * checked the header (a header copy is checked once; head and state are read again on every
 * step). A region the check refuses is never mapped, so it ends here. Otherwise, over a
 * buffer of exactly region_size bytes (AddressSanitizer sees any read past it):
 *   - a snapshot (the extension's inline seqshm_read_once()): a copy, a writer in the way,
 *     or SEQSHM_EDAMAGED; a copy it accepts is of the slot it picked and below 2^63;
 *   - every slot, as history() copies them (seqshm_try_read_slot(), seqshm_write_fits_slot());
 *   - follow() from where _follow_plan() starts, and from after the snapshot's write, over
 *     the shared seqshm_follow_once(): every step waits with *next unchanged, returns write
 *     *next, or moves *next on counting what it skipped (or reports damage); with head still,
 *     it ends within nr_slots + 2 steps, whatever the slots hold.
 */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocol.h"
#ifdef SEQSHM_FUZZ_OLD_FOLLOW_STEP	/* the mutant the fuzzer must catch (test_fuzz_c.py) */
#include "follow_old_step.h"
#define seqshm_follow_once	seqshm_follow_once_old
#endif

/* follow() from *@next on, to its first wait or error; every step must be progress. */
static void follow(const struct seqshm_geometry *g, __u64 next, void *dst)
{
	__u64 nr_slots = (__u64)g->slot_mask + 1;
	struct seqshm_meta meta;
	unsigned int steps;

	for (steps = 0;; steps++) {
		__u64 before = next, skipped = 0;
		enum seqshm_follow rc = seqshm_follow_once(g, &next, &skipped, dst, &meta);

		assert(steps <= nr_slots + 2);	/* with head still, a follower ends this soon */
		assert(next - before == skipped);	/* every write moved past is counted */
		switch (rc) {
		case SEQSHM_FOLLOW_WAIT:
			assert(next == before);
			return;
		case SEQSHM_FOLLOW_GOT:
			assert(meta.write_seq == next && next < SEQSHM_WRITE_LIMIT);
			assert(meta.slot == ((__u32)next & g->slot_mask));
			next++;
			break;
		case SEQSHM_FOLLOW_LAPPED:
			assert(next > before && next <= SEQSHM_WRITE_LIMIT);
			break;
		case SEQSHM_FOLLOW_BEHIND:
			assert(meta.write_seq < next);
			return;
		case SEQSHM_FOLLOW_DAMAGED:
			return;
		default:
			assert(0);
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct seqshm_reader r;
	struct seqshm_header h, *shared;
	struct seqshm_meta meta;
	unsigned char *region;
	void *dst;
	char why[256];
	__u64 head, want;
	__u32 i;
	int rc;

	if (size < sizeof(h))
		return -1;
	memcpy(&h, data, sizeof(h));
	if (seqshm_header_check(&h, size, why, sizeof(why)) != SEQSHM_OK)
		return 0;
	region = malloc(h.region_size);
	dst = malloc(h.payload_size);
	assert(region && dst);
	memcpy(region, data, h.region_size);
	shared = (struct seqshm_header *)region;
	if (size >= h.region_size + 12) {	/* scribbled on after the check */
		memcpy(&shared->head, data + h.region_size, 8);
		memcpy(&shared->state, data + h.region_size + 8, 4);
	}
	memset(&r, 0, sizeof(r));
	seqshm_geometry_init(&r.g, region, &h);

	(void)seqshm_state(&r.g);
	want = seqshm_pick_write(&r.g, 0);
	rc = seqshm_read_once(&r, dst, &meta);
	assert(rc == 0 || rc == 1 || rc == SEQSHM_EDAMAGED);
	if (rc == 0) {
		assert(meta.slot == ((__u32)want & r.g.slot_mask));
		assert(meta.write_seq >= want && meta.write_seq < SEQSHM_WRITE_LIMIT);
		assert(r.newest == meta.write_seq);
	}

	for (i = 0; i <= r.g.slot_mask; i++)
		if (!seqshm_try_read_slot(&r.g, i, dst, &meta))
			(void)seqshm_write_fits_slot(&r.g, i, meta.write_seq);

	head = seqshm_head(&r.g);
	follow(&r.g, head > r.g.slot_mask ? head - r.g.slot_mask : 1, dst);
	if (rc == 0)
		follow(&r.g, r.newest + 1, dst);

	free(dst);
	free(region);
	return 0;
}
