/* GenMC harness: a writer that stops between any two of its stores never makes a follower spin: every follow step makes progress, within a bound. */

/*
 * The writer is stopped (SIGSTOP, a debugger) or killed at any instruction: it makes a
 * nondeterministic number of its stores, then none. Every store it makes (the shared
 * source's seq, write_seq, timestamp, head; the harness's payload words) passes
 * SEQSHM_PROOF_STORE_GATE() (proof/seqshm_env.h), here a look at a flag a third thread, the
 * stopper, sets at any moment: GenMC explores every value each look can read, so the writer
 * stops before its first store, between any two of them, or never. A stopped writer is not
 * a damaged region: every copy a reader takes must still be accepted, and no reader may
 * wait on it for ever.
 *
 * The follower is follow()'s loop over the real seqshm_follow_once(), from where
 * _follow_plan() starts (the oldest write head says the ring holds). Checked at every step:
 *   - progress: a step either finds nothing complete to take (WAIT, *next unchanged), or
 *     returns write *next (GOT), or moves *next on by at least one, counting what it skipped
 *     (LAPPED); never BEHIND or DAMAGED, which only a region no writer left can cause;
 *   - what it returns is one whole write from its slot, exactly the one after the previous
 *     sample plus the writes it reports lost;
 *   - the end: a follower that finds the channel closed has accounted for every write;
 *   - a bound: a follower that has something to take returns within STEPS steps. Every step
 *     but WAIT moves *next on, *next never passes the last write + 1, and a WAIT is followed
 *     by a sleep that ends only when head says there is something to take (a sleep that never
 *     ends, behind a stopped writer, is an execution GenMC drops as blocked: the shipped
 *     follower sleeps then until its timeout, using no CPU).
 * The mutant FOLLOW_OLD_STEP is seqshm_follow_once() as it was before issue 16
 * (follow_old_step.h): a consistent copy of a later write was LAPPED without moving *next,
 * which holds only if head moves on. Behind a writer stopped between its slot's even seq and
 * its store of head, the slot holds write k + 1 while head says k, and a follower that wants
 * the write k + 1 overwrote stepped there for ever.
 */
#ifndef NR_SLOTS
#define NR_SLOTS 2
#endif
#ifndef PREFILL
#define PREFILL 1
#endif
#ifndef WRITES
#define WRITES 2
#endif
/* Steps of the follower: a WAIT and a step that takes or skips a write, per write, and one. */
#define STEPS		(2 * (PREFILL + WRITES) + 1)

/* The stop: the stopper's flag, and the writer's own memory of having seen it. */
static int stop_flag;
static int writer_armed;	/* set by main() after the prefill, before the threads start */
static int writer_stopped;	/* the writer's own */

/* SEQSHM_PROOF_STORE_GATE(): whether the writer makes this store (only the writer stores). */
static int writer_may_store(void)
{
	if (!writer_armed)
		return 1;
	if (writer_stopped)
		return 0;
	if (__atomic_load_n(&stop_flag, __ATOMIC_RELAXED)) {
		writer_stopped = 1;
		return 0;
	}
	return 1;
}
#define SEQSHM_PROOF_STORE_GATE()	writer_may_store()

#include "harness.h"

#ifdef SEQSHM_MUTANT_FOLLOW_OLD_STEP
#include "follow_old_step.h"
#define seqshm_follow_once	seqshm_follow_once_old
#endif

/* The step under test: the shared seqshm_follow_once(), or the mutant's. */
static enum seqshm_follow follow_once(__u64 *next, __u64 *lost, void *dst,
				      struct seqshm_meta *meta)
{
	return seqshm_follow_once(&geo, next, lost, dst, meta);
}

/* The writer's writes, then the channel's close (a stopped writer makes neither). */
static void *writer(void *arg)
{
	(void)arg;
	write_all();
	seqshm_write_close((struct seqshm_header *)geo.base, SEQSHM_STATE_CLOSED);
	return NULL;
}

static void *stopper(void *arg)
{
	(void)arg;
	__atomic_store_n(&stop_flag, 1, __ATOMIC_RELAXED);
	return NULL;
}

static void *follower(void *arg)
{
	__u64 head = seqshm_head(&geo), lost = 0, accounted, next;
	struct copy c;
	int steps;

	(void)arg;
	/* _follow_plan(): a reader that read nothing starts at the oldest write the ring holds */
	next = head > NR_SLOTS ? head - NR_SLOTS + 1 : 1;
	accounted = next - 1;
	for (steps = 0; steps < STEPS; steps++) {
		__u64 before = next, skipped = 0;
		enum seqshm_follow rc = follow_once(&next, &skipped, c.words, &c.meta);

		lost += skipped;
		assert(next == accounted + 1 + lost);	/* every write moved past is counted */
		switch (rc) {
		case SEQSHM_FOLLOW_WAIT:
			assert(next == before);
			/* wait(): the channel ended with nothing left (a writer that was not stopped) */
			if (seqshm_state(&geo) != SEQSHM_STATE_OPEN && seqshm_head(&geo) < next) {
				assert(accounted + lost == LAST_WRITE);
				return NULL;
			}
			/* a sleep that ends has something to take (see above) */
			__VERIFIER_assume(seqshm_head(&geo) >= next);
			break;
		case SEQSHM_FOLLOW_GOT:
			check_copy(&c, (__u32)next & geo.slot_mask);
			assert(c.meta.write_seq == next);
			accounted = next;
			lost = 0;
			next++;
			break;
		case SEQSHM_FOLLOW_LAPPED:
			assert(next > before);	/* progress: *next moved on, the skip counted */
			break;
		case SEQSHM_FOLLOW_BEHIND:
		case SEQSHM_FOLLOW_DAMAGED:
			assert(0);	/* a stopped writer is not a damaged region */
			break;
		}
	}
	/* Only a follower that kept finding something to take got here: it must not. */
	assert(0);
	return NULL;
}

int main(void)
{
	region_init();
	writer_armed = 1;
	spawn(writer, NULL);
	spawn(stopper, NULL);
	spawn(follower, NULL);
	return 0;
}
