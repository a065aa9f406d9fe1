/* GenMC harness: the header's magic is published last: a reader that sees it sees every static field. */

/*
 * The writer fills static fields of the header with plain stores (as seqshm_layout_init()
 * does) and then stores the magic with the real seqshm_header_publish(). The reader loads
 * the magic with load-acquire and, if it is there, reads those fields with plain loads: under
 * RC11 a plain load that races with the writer's store is itself a reported error, and a
 * stale value fails the checks. The load-acquire stands for how shipped readers take the
 * header (pread(), or a copy of the device's page once the device exists), which the kernel
 * orders on its own; the store-release is the writer's half, which this checks.
 */
#define NR_SLOTS 2
#include "harness.h"

static void *writer(void *arg)
{
	(void)arg;
	region.h.payload_offset = PAYLOAD_OFFSET;
	region.h.slot_stride = SLOT_STRIDE;
	region.h.nr_slots = NR_SLOTS;
	seqshm_header_publish(&region.h);
	return NULL;
}

static void *reader(void *arg)
{
	(void)arg;
	if (seqshm_load_acquire(&region.h.magic) != SEQSHM_MAGIC)
		return NULL;	/* not published yet: readers refuse such a region */
	assert(region.h.payload_offset == PAYLOAD_OFFSET);
	assert(region.h.slot_stride == SLOT_STRIDE);
	assert(region.h.nr_slots == NR_SLOTS);
	return NULL;
}

int main(void)
{
	return run_writer_and_reader(writer, reader);
}
