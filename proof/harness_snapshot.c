/* GenMC harness: snapshots of the newest write, on one slot (the classic seqlock) or a ring (-DNR_SLOTS=2, 4). */

/*
 * One writer makes WRITES writes (after PREFILL made before the threads start); one reader
 * takes SNAPSHOTS snapshots. Each snapshot either meets the writer, or is one whole write
 * from the slot that write went to (check_copy()), no older than the reader's last one and
 * no older than head was at its start (snapshot()).
 *
 * One reader covers any number: readers store nothing the writer or another reader loads,
 * so what one reader can see is the same whether or not others run (a second reader only
 * multiplies the executions).
 *
 * -DNR_SLOTS=2 with 3 writes: write 3 laps slot 1 while a reader may be copying write 1, and a
 * reader may copy write 3 while head still says 2, the case seqshm_pick_slot() handles with
 * the reader's newest write. -DNR_SLOTS=4 -DPREFILL=2 with 3 writes: writes 3, 4 and 5, the
 * last one lapping slot 1.
 */
#ifndef NR_SLOTS
#define NR_SLOTS 1
#endif
#ifndef SNAPSHOTS
#define SNAPSHOTS 2
#endif
#include "harness.h"

static void *writer(void *arg)
{
	(void)arg;
	write_all();
	return NULL;
}

static void *reader(void *arg)
{
	struct reader r = { 0 };
	struct copy c;
	int i;

	(void)arg;
	for (i = 0; i < SNAPSHOTS; i++)
		snapshot(&r, &c);
	return NULL;
}

int main(void)
{
	return run_writer_and_reader(writer, reader);
}
