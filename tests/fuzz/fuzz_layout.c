/* libFuzzer target: seqshm_layout_init(), the layout every writer builds, from any request: refused with a sentence, or a header the readers' check accepts. */

/*
 * Input, read in order (missing bytes are zero): nr_slots, ndim, itemsize, flags, nr_fields
 * (u32 each), the 8 dimensions (u64 each), a shift for region_align and one for max_region
 * (a byte each), the name (64 bytes, cut at the first NUL or the end), then nr_fields raw
 * struct seqshm_field. On SEQSHM_OK the header must pass seqshm_header_check() against its
 * own region_size, fit the writer's limit and alignment, and hold exactly what was asked;
 * otherwise the status is one of the writer's errors, with a sentence.
 */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "seqshm_protocol.h"

struct cursor {
	const uint8_t *p;
	size_t left;
};

static void take(struct cursor *c, void *dst, size_t n)
{
	size_t k = c->left < n ? c->left : n;

	memset(dst, 0, n);
	memcpy(dst, c->p, k);
	c->p += k;
	c->left -= k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cursor c = { data, size };
	struct seqshm_field fields[SEQSHM_MAX_FIELDS];
	struct seqshm_layout_req req;
	struct seqshm_header h;
	__u64 shape[SEQSHM_MAX_DIMS];
	uint8_t align_shift, max_shift;
	char name[SEQSHM_NAME_LEN + 8], why[256];
	__u32 u[5], i;
	int rc;

	take(&c, u, sizeof(u));
	take(&c, shape, sizeof(shape));
	take(&c, &align_shift, 1);
	take(&c, &max_shift, 1);
	take(&c, name, SEQSHM_NAME_LEN + 7);
	name[SEQSHM_NAME_LEN + 7] = 0;
	take(&c, fields, sizeof(fields));

	memset(&req, 0, sizeof(req));
	req.name = name;
	req.nr_slots = u[0];
	req.ndim = u[1];
	req.shape = shape;
	req.itemsize = u[2];
	req.flags = u[3];
	req.nr_fields = u[4];
	req.fields = fields;
	req.writer_pid = 1;
	/* any power of two from 1 to 2^63 (most of them refused), any limit up to 2^63 */
	req.region_align = (__u64)1 << (align_shift % 64);
	req.max_region = (__u64)1 << (max_shift % 64);

	memset(why, 'x', sizeof(why));
	rc = seqshm_layout_init(&h, &req, why, sizeof(why));
	if (rc != SEQSHM_OK) {
		assert(rc == SEQSHM_EINVAL || rc == SEQSHM_E2BIG || rc == SEQSHM_EOVERFLOW);
		assert(memchr(why, 0, sizeof(why)) && why[0]);
		return 0;
	}
	assert(h.magic == 0);	/* published later, by seqshm_header_publish() */
	h.magic = SEQSHM_MAGIC;
	assert(seqshm_header_check(&h, h.region_size, why, sizeof(why)) == SEQSHM_OK);
	assert(h.region_size <= req.max_region && h.region_size % req.region_align == 0);
	assert(h.nr_slots == req.nr_slots && h.ndim == req.ndim && h.itemsize == req.itemsize);
	assert(h.nr_fields == req.nr_fields && h.flags == req.flags);
	assert(!strncmp(h.name, name, sizeof(h.name)));
	for (i = 0; i < req.ndim; i++)
		assert(h.shape[i] == shape[i]);
	assert(!memcmp(h.fields, fields, req.nr_fields * sizeof(fields[0])));
	assert(h.head == 0 && h.state == SEQSHM_STATE_OPEN);
	return 0;
}
