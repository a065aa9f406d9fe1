/* The follow step as it was before issue 16, kept as a mutant that the proof (harness_follow_stop.c) and the fuzzer (tests/fuzz/fuzz_region.c) must catch. */
#ifndef SEQSHM_FOLLOW_OLD_STEP_H
#define SEQSHM_FOLLOW_OLD_STEP_H

#include "seqshm_protocol.h"

/*
 * seqshm_follow_once() before issue 16: a consistent copy of a later write was LAPPED without
 * moving *next ("the next step counts what the lap took"), which holds only if head moves on.
 * Behind a writer stopped between its slot's even seq and its store of head, or over a
 * region copied over another channel's, a follower stepped there for ever.
 */
static inline enum seqshm_follow seqshm_follow_once_old(const struct seqshm_geometry *g,
							__u64 *next, __u64 *lost, void *dst,
							struct seqshm_meta *meta)
{
	if (!seqshm_follow_step(g, seqshm_head(g), next, lost))
		return SEQSHM_FOLLOW_WAIT;
	if (seqshm_try_read_slot(g, (__u32)*next & g->slot_mask, dst, meta)) {
		(*lost)++;
		(*next)++;
		return SEQSHM_FOLLOW_LAPPED;
	}
	if (meta->write_seq < *next)
		return SEQSHM_FOLLOW_BEHIND;
	return meta->write_seq == *next ? SEQSHM_FOLLOW_GOT : SEQSHM_FOLLOW_LAPPED;
}

#endif /* SEQSHM_FOLLOW_OLD_STEP_H */
