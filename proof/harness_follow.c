/* GenMC harness: history() then follow() to the channel's end, on a ring: no write returned twice, none skipped uncounted, none missed at the end. */

/*
 * The reader is seqshm.Reader's history() then follow(), step for step:
 *
 *   history() (_read_slots()): one consistent copy of every slot, zeros left out; the newest
 *	counts as read (_mark_read()), so follow() starts after it.
 *   follow() (_follow_plan(), _follow_next()): from the write after the last one read (none
 *	read: the oldest the ring holds), the real seqshm_follow_once() until it gets that
 *	write: it steps from a fresh head (counting what a lapping writer took), copies the
 *	slot, and refuses a copy of a later write (lapped during the copy). A slot found
 *	mid-write is copied again as _read_slow() does, and the copy taken only if it is still
 *	that write.
 *   wait() (_wait_plan(), _end_or_follow()): with nothing new, the state, then head: the
 *	channel ended with nothing left, or there is a write to take. How a sleeper learns of
 *	a write is the wake-up harness's business; here a wait ends only when there is
 *	something to see (GenMC drops the executions where it would sleep on).
 *
 * Checked: each copy is one whole write from its slot; history holds, for every slot, the
 * write head named for it at the start or a later one; follow's samples come in order, each
 * exactly the write after the previous sample plus the writes it reports lost; and when
 * follow ends because the channel ended, it has accounted for every write up to the last.
 * Harness mutants, to show the checks bite: FOLLOW_TAKE_LAPPED takes a copy
 * seqshm_follow_once() refused, FOLLOW_DROP_LOST forgets the writes it says were lost.
 *
 * The writer makes PREFILL writes before the reader starts, WRITES while it reads, then
 * closes the channel (seqshm_write_close()).
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
/* Rounds of follow's loop: each takes a sample, notices a lap, or ends. */
#define ROUNDS		(WRITES + 2)
#include "harness.h"

static void *writer(void *arg)
{
	(void)arg;
	write_all();
	seqshm_write_close((struct seqshm_header *)geo.base, SEQSHM_STATE_CLOSED);
	return NULL;
}

/* The newest write of slot @i that head @h says is complete, or 0 if none is. */
static __u64 named_by_head(__u64 h, __u32 i)
{
	__u64 k = h - ((h - i) & geo.slot_mask);

	return h >= i ? k : 0;
}

/* history(): returns the newest write it holds (0: none). */
static __u64 history(void)
{
	__u64 h = seqshm_head(&geo), newest = 0;
	struct copy c;
	__u32 i;

	for (i = 0; i <= geo.slot_mask; i++) {
		if (try_copy(i, &c))
			continue;	/* a slot with no consistent copy is left out */
		check_copy(&c, i);
		assert(c.meta.write_seq >= named_by_head(h, i));
		/* what _read_slots() checks never refuses this writer's copy */
		assert(!c.meta.write_seq || seqshm_write_fits_slot(&geo, i, c.meta.write_seq));
		if (c.meta.write_seq > newest)
			newest = c.meta.write_seq;
	}
	assert(newest <= seqshm_head(&geo) + 1);	/* _read_slots()'s check of head, after */
	return newest;
}

/*
 * follow()'s next sample, from write *@next on: 1 with the copy in @c and the writes lost
 * before it added to *@lost, or 0 if there is nothing to take yet.
 */
static int follow_next(__u64 *next, __u64 *lost, struct copy *c)
{
	__u64 skipped = 0;
	enum seqshm_follow rc = seqshm_follow_once(&geo, next, &skipped, c->words, &c->meta);

	/* _follow_plan(): lost += skipped on every step, a sample or not */
#ifndef SEQSHM_MUTANT_FOLLOW_DROP_LOST
	*lost += skipped;
#endif
	switch (rc) {
	case SEQSHM_FOLLOW_WAIT:
		return 0;
	case SEQSHM_FOLLOW_BEHIND:	/* an older write than head says: never, from this writer */
	case SEQSHM_FOLLOW_DAMAGED:	/* a write of another slot, a head past 2^63: never */
		assert(0);
		return 0;
	case SEQSHM_FOLLOW_LAPPED:
#ifndef SEQSHM_MUTANT_FOLLOW_TAKE_LAPPED
		return 0;	/* step again, from a fresh head */
#endif
		check_copy(c, c->meta.slot);	/* the slot it copied */
		break;
	case SEQSHM_FOLLOW_GOT:
		check_copy(c, (__u32)*next & geo.slot_mask);
		break;
	}
	return 1;
}

static void *reader(void *arg)
{
#ifdef FOLLOW_AFTER_HISTORY
	__u64 seq = history();
#else
	__u64 seq = 0;
#endif
	__u64 next, lost = 0, accounted, head = seqshm_head(&geo);
	struct copy c;
	int round, ended = 0;

	(void)arg;
	/* _follow_plan(): self.seq + 1 if self.seq else max(1, self.head - self.nr_slots + 1) */
	next = seq ? seq + 1 : (head > NR_SLOTS ? head - NR_SLOTS + 1 : 1);
	accounted = next - 1;
	for (round = 0; round < ROUNDS && !ended; round++) {
		if (!follow_next(&next, &lost, &c)) {
			/* wait(): _end_or_follow() looks at the state, then _newer() at head */
			if (seqshm_state(&geo) != SEQSHM_STATE_OPEN && seqshm_head(&geo) < next) {
				ended = 1;
				break;
			}
			/* a sleep that ends has something to show: see the top comment */
			__VERIFIER_assume(seqshm_head(&geo) >= next);
			continue;
		}
		/* the sample (data, seq, lost): exactly the next write, or the next after losses */
		assert(c.meta.write_seq == accounted + 1 + lost);
		accounted = c.meta.write_seq;
		lost = 0;
		next = c.meta.write_seq + 1;
	}
	if (ended)
		assert(accounted == LAST_WRITE);	/* the end comes after every write */
	return NULL;
}

int main(void)
{
	return run_writer_and_reader(writer, reader);
}
