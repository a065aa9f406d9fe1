/* libFuzzer target: seqshm_header_check() over any header bytes and file size, checked against what every reader then relies on. */

/*
 * Input: 8 bytes of the file's size (native order; 0: a device, whose size is not known),
 * then the header (short inputs are padded with zeros). seqshm_header_check() must return
 * SEQSHM_OK or one of its three errors with a sentence; on SEQSHM_OK everything a reader
 * computes from the header must hold, recomputed here in 128-bit arithmetic so that no
 * overflow in the check can hide: the slots and their payloads inside the region, the region
 * inside the file, the payload exactly the element size times the shape, every field inside
 * an element, the name a printable string, head and state what a writer can leave.
 * Built with -fsanitize=fuzzer,address,undefined (tests/fuzz/fuzzing.py).
 */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "seqshm_protocol.h"

typedef unsigned __int128 u128;

static void printable(const char *s, size_t len, int allow_empty)
{
	size_t i;

	for (i = 0; i < len && s[i]; i++)
		assert(s[i] >= 0x20 && s[i] <= 0x7e);
	assert(i < len && (allow_empty || i > 0));
}

/* Everything a reader relies on once the check has passed. */
static void check_accepted(const struct seqshm_header *h, __u64 limit)
{
	struct seqshm_geometry g;
	u128 elems = 1, last_end;
	__u32 i;

	assert(h->magic == SEQSHM_MAGIC && h->abi_version == SEQSHM_ABI_VERSION);
	assert(h->header_size == sizeof(*h));
	assert(h->nr_slots >= 1 && h->nr_slots <= SEQSHM_MAX_SLOTS);
	assert(!(h->nr_slots & (h->nr_slots - 1)));
	assert(h->payload_offset % SEQSHM_ALIGN == 0);
	assert((u128)h->payload_offset >=
	       SEQSHM_SLOTS_OFFSET + (u128)h->nr_slots * sizeof(struct seqshm_slot));
	assert(h->payload_size > 0 && h->slot_stride >= h->payload_size);
	assert(h->slot_stride % SEQSHM_CACHELINE == 0);
	assert(h->region_size % SEQSHM_ALIGN == 0);
	last_end = (u128)h->payload_offset + (u128)(h->nr_slots - 1) * h->slot_stride +
		   h->payload_size;
	assert(last_end <= h->region_size);
	assert(!limit || h->region_size <= limit);
	assert(h->ndim <= SEQSHM_MAX_DIMS);
	for (i = 0; i < SEQSHM_MAX_DIMS; i++) {
		if (i < h->ndim) {
			assert(h->shape[i] > 0);
			elems *= h->shape[i];
			assert(elems <= UINT64_MAX);
		} else {
			assert(h->shape[i] == 0);
		}
	}
	assert(elems * h->itemsize == h->payload_size);
	assert(h->nr_fields >= 1 && h->nr_fields <= SEQSHM_MAX_FIELDS);
	for (i = 0; i < h->nr_fields; i++) {
		const struct seqshm_field *f = &h->fields[i];

		assert(f->count >= 1 && f->size >= 1);
		assert((u128)f->offset + (u128)f->count * f->size <= h->itemsize);
		printable(f->name, sizeof(f->name), !(h->flags & SEQSHM_F_RECORD));
	}
	printable(h->name, sizeof(h->name), 1);
	assert(h->head < SEQSHM_WRITE_LIMIT && h->state <= SEQSHM_STATE_REPLACED);

	/* The geometry a reader derives: every slot's payload inside the region. */
	seqshm_geometry_init(&g, NULL, h);
	assert(g.slot_mask == h->nr_slots - 1);
	assert((u128)g.payload_offset + (u128)g.slot_mask * g.slot_stride + g.payload_size <=
	       h->region_size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct seqshm_header h;
	char why[256];
	__u64 limit = 0;
	size_t n;
	int rc;

	if (size < sizeof(limit))
		return -1;
	memcpy(&limit, data, sizeof(limit));
	data += sizeof(limit);
	size -= sizeof(limit);
	memset(&h, 0, sizeof(h));
	n = size < sizeof(h) ? size : sizeof(h);
	memcpy(&h, data, n);

	memset(why, 'x', sizeof(why));
	rc = seqshm_header_check(&h, limit, why, sizeof(why));
	if (rc == SEQSHM_OK) {
		check_accepted(&h, limit);
	} else {
		assert(rc == SEQSHM_EMAGIC || rc == SEQSHM_EVERSION || rc == SEQSHM_EFORMAT);
		assert(memchr(why, 0, sizeof(why)) && why[0]);	/* a sentence, terminated */
	}
	return 0;
}
