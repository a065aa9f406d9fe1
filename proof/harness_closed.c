/* GenMC harness: the channel's end: a reader that sees the state closed then takes the last write, never an older one. */

/*
 * The writer makes WRITES writes and closes the channel (seqshm_write_close(), after its last
 * store of head). A reader looks at the state (seqshm_state()) and takes a snapshot, twice,
 * as a following snapshot() does (_read_into() looks at the state first): once it has seen
 * the end, its snapshot must be the last write, or it would report the end with a write it
 * never saw. follow()'s end is checked in harness_follow.c.
 */
#ifndef NR_SLOTS
#define NR_SLOTS 1
#endif
#include "harness.h"

static void *writer(void *arg)
{
	(void)arg;
	write_all();
	seqshm_write_close((struct seqshm_header *)geo.base, SEQSHM_STATE_CLOSED);
	return NULL;
}

static void *reader(void *arg)
{
	struct reader r = { 0 };
	struct copy c;
	int i;

	(void)arg;
	for (i = 0; i < 2; i++) {
		__u32 state = seqshm_state(&geo);

		if (snapshot(&r, &c))
			continue;
		if (state != SEQSHM_STATE_OPEN)
			assert(c.meta.write_seq == LAST_WRITE);	/* nothing left unseen */
	}
	return NULL;
}

int main(void)
{
	return run_writer_and_reader(writer, reader);
}
