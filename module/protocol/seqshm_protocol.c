// SPDX-License-Identifier: GPL-2.0
/*
 * seqshm protocol, one source for the kernel module and the Python extension: the header
 * check every reader makes and the layout every writer builds (see seqshm_protocol.h).
 */
#include "seqshm_protocol.h"

static SEQSHM_PRINTF(4, 5)
int seqshm_fail(char *why, size_t whylen, int status, const char *fmt, ...)
{
	va_list ap;

	if (why && whylen) {
		va_start(ap, fmt);
		vsnprintf(why, whylen, fmt, ap);
		va_end(ap);
	}
	return status;
}

static int seqshm_is_pow2(__u64 x)
{
	return x && !(x & (x - 1));
}

/* A NUL-terminated printable-ASCII string within @len bytes, empty or not. */
static int seqshm_check_name(const char *s, size_t len, int allow_empty)
{
	size_t i;

	for (i = 0; i < len && s[i]; i++)
		if (s[i] < 0x20 || s[i] > 0x7e)
			return 0;
	return i < len && (allow_empty || i > 0);
}

static int seqshm_check_fields(const struct seqshm_header *h, char *why, size_t whylen)
{
	int record = (h->flags & SEQSHM_F_RECORD) != 0;
	__u32 i, j;

	if (h->nr_fields < 1 || h->nr_fields > SEQSHM_MAX_FIELDS)
		return seqshm_fail(why, whylen, SEQSHM_EFORMAT,
				   "nr_fields is %u, not 1 to %u", h->nr_fields, SEQSHM_MAX_FIELDS);
	if (!record && h->nr_fields != 1)
		return seqshm_fail(why, whylen, SEQSHM_EFORMAT,
				   "a scalar element has exactly one field, not %u", h->nr_fields);
	for (i = 0; i < h->nr_fields; i++) {
		const struct seqshm_field *f = &h->fields[i];
		__u64 end;

		if (!seqshm_kind_size_valid(f->kind, f->size))
			return seqshm_fail(why, whylen, SEQSHM_EFORMAT,
					   "field %u has kind 0x%x size %u, which no NumPy scalar has",
					   i, f->kind, f->size);
		if (!seqshm_check_name(f->name, sizeof(f->name), !record))
			return seqshm_fail(why, whylen, SEQSHM_EFORMAT,
					   "field %u's name is %s", i, record ?
					   "empty, unterminated or not printable ASCII" :
					   "unterminated or not printable ASCII");
		if (f->__reserved[0] | f->__reserved[1] | f->__reserved[2] | f->__reserved[3] |
		    f->__reserved[4])
			return seqshm_fail(why, whylen, SEQSHM_EFORMAT,
					   "field %u has nonzero reserved bytes", i);
		if (f->flags & ~SEQSHM_FIELD_F_KNOWN)
			return seqshm_fail(why, whylen, SEQSHM_EFORMAT,
					   "field %u has unknown flags 0x%x", i,
					   f->flags & ~SEQSHM_FIELD_F_KNOWN);
		if (f->count < 1 || (f->count > 1 && !(f->flags & SEQSHM_FIELD_F_ARRAY)))
			return seqshm_fail(why, whylen, SEQSHM_EFORMAT,
					   "field %u has count %u%s", i, f->count,
					   f->count ? " without SEQSHM_FIELD_F_ARRAY" : "");
		end = (__u64)f->offset + (__u64)f->count * f->size;
		if (end > h->itemsize)
			return seqshm_fail(why, whylen, SEQSHM_EFORMAT,
					   "field %u ends at byte %llu, beyond itemsize %u",
					   i, (unsigned long long)end, h->itemsize);
		if (!record && (f->name[0] || f->offset || f->count != 1 || f->flags ||
				f->size != h->itemsize))
			return seqshm_fail(why, whylen, SEQSHM_EFORMAT,
					   "a scalar element's field must be unnamed, at offset 0, count 1 and of size itemsize");
		for (j = 0; j < i; j++)
			if (!strncmp(h->fields[j].name, f->name, sizeof(f->name)))
				return seqshm_fail(why, whylen, SEQSHM_EFORMAT,
						   "fields %u and %u are both named '%s'", j, i,
						   f->name);
	}
	return SEQSHM_OK;
}

int seqshm_header_check(const struct seqshm_header *h, __u64 region_size_limit,
			char *why, size_t whylen)
{
	__u64 elems = 1, need, last, slots_end;
	__u32 i;

	if (h->magic != SEQSHM_MAGIC) {
		if (h->magic == __builtin_bswap64(SEQSHM_MAGIC))
			return seqshm_fail(why, whylen, SEQSHM_EMAGIC,
					   "a seqshm region of the other byte order");
		return seqshm_fail(why, whylen, SEQSHM_EMAGIC,
				   "not a seqshm region (magic is 0x%llx, expected 0x%llx)",
				   (unsigned long long)h->magic, (unsigned long long)SEQSHM_MAGIC);
	}
	if (h->abi_version != SEQSHM_ABI_VERSION)
		return seqshm_fail(why, whylen, SEQSHM_EVERSION,
				   "seqshm ABI version %u, this reader understands version %u",
				   h->abi_version, SEQSHM_ABI_VERSION);
	if (h->header_size != sizeof(*h))
		return seqshm_fail(why, whylen, SEQSHM_EFORMAT,
				   "header_size is %u, not %zu", h->header_size, sizeof(*h));
	if (h->flags & ~SEQSHM_F_KNOWN)
		return seqshm_fail(why, whylen, SEQSHM_EFORMAT,
				   "unknown flags 0x%x", h->flags & ~SEQSHM_F_KNOWN);
	if (!seqshm_is_pow2(h->nr_slots) || h->nr_slots > SEQSHM_MAX_SLOTS)
		return seqshm_fail(why, whylen, SEQSHM_EFORMAT,
				   "nr_slots is %u, not a power of two from 1 to %u",
				   h->nr_slots, SEQSHM_MAX_SLOTS);
	slots_end = SEQSHM_SLOTS_OFFSET + (__u64)h->nr_slots * sizeof(struct seqshm_slot);
	if (h->payload_offset % SEQSHM_ALIGN || h->payload_offset < slots_end)
		return seqshm_fail(why, whylen, SEQSHM_EFORMAT,
				   "payload_offset %llu is not a multiple of %u after the %u slot lines",
				   (unsigned long long)h->payload_offset, SEQSHM_ALIGN,
				   h->nr_slots);
	if (h->payload_size == 0)
		return seqshm_fail(why, whylen, SEQSHM_EFORMAT, "payload_size is 0");
	if (h->slot_stride % SEQSHM_CACHELINE || h->slot_stride < h->payload_size)
		return seqshm_fail(why, whylen, SEQSHM_EFORMAT,
				   "slot_stride %llu is not a multiple of %u at least payload_size %llu",
				   (unsigned long long)h->slot_stride, SEQSHM_CACHELINE,
				   (unsigned long long)h->payload_size);
	if (h->region_size % SEQSHM_ALIGN)
		return seqshm_fail(why, whylen, SEQSHM_EFORMAT,
				   "region_size %llu is not a multiple of %u",
				   (unsigned long long)h->region_size, SEQSHM_ALIGN);
	if (__builtin_mul_overflow((__u64)(h->nr_slots - 1), h->slot_stride, &last) ||
	    __builtin_add_overflow(last, h->payload_offset, &last) ||
	    __builtin_add_overflow(last, h->payload_size, &need) || need > h->region_size)
		return seqshm_fail(why, whylen, SEQSHM_EFORMAT,
				   "the %u slots of %llu bytes do not fit in region_size %llu",
				   h->nr_slots, (unsigned long long)h->payload_size,
				   (unsigned long long)h->region_size);
	if (region_size_limit && h->region_size > region_size_limit)
		return seqshm_fail(why, whylen, SEQSHM_EFORMAT,
				   "truncated: the header says %llu bytes, the file has %llu",
				   (unsigned long long)h->region_size,
				   (unsigned long long)region_size_limit);
	/*
	 * The two words a writer changes after publishing, as they stood when the reader took
	 * its copy: it looks at them again on every read, so this only refuses a region that
	 * is plainly not what a writer leaves (the reads check what they find later).
	 */
	if (h->head >= SEQSHM_WRITE_LIMIT)
		return seqshm_fail(why, whylen, SEQSHM_EFORMAT,
				   "head is %llu, past the %llu writes a channel can have",
				   (unsigned long long)h->head,
				   (unsigned long long)SEQSHM_WRITE_LIMIT - 1);
	if (h->state > SEQSHM_STATE_REPLACED)
		return seqshm_fail(why, whylen, SEQSHM_EFORMAT,
				   "the state word is %u, which no writer stores", h->state);
	if (!seqshm_check_name(h->name, sizeof(h->name), 1))
		return seqshm_fail(why, whylen, SEQSHM_EFORMAT,
				   "channel name is unterminated or not printable ASCII");
	if (h->ndim > SEQSHM_MAX_DIMS)
		return seqshm_fail(why, whylen, SEQSHM_EFORMAT,
				   "ndim is %u, more than %u", h->ndim, SEQSHM_MAX_DIMS);
	for (i = 0; i < SEQSHM_MAX_DIMS; i++) {
		if (i >= h->ndim) {
			if (h->shape[i])
				return seqshm_fail(why, whylen, SEQSHM_EFORMAT,
						   "shape[%u] is set beyond ndim %u", i, h->ndim);
			continue;
		}
		if (!h->shape[i] || __builtin_mul_overflow(elems, h->shape[i], &elems))
			return seqshm_fail(why, whylen, SEQSHM_EFORMAT,
					   "shape[%u] is %llu", i, (unsigned long long)h->shape[i]);
	}
	if (h->itemsize == 0)
		return seqshm_fail(why, whylen, SEQSHM_EFORMAT, "itemsize is 0");
	if (__builtin_mul_overflow(elems, (__u64)h->itemsize, &need) || need != h->payload_size)
		return seqshm_fail(why, whylen, SEQSHM_EFORMAT,
				   "payload_size %llu is not itemsize %u times the shape's %llu elements",
				   (unsigned long long)h->payload_size, h->itemsize,
				   (unsigned long long)elems);
	return seqshm_check_fields(h, why, whylen);
}

void seqshm_geometry_init(struct seqshm_geometry *g, const void *base,
			  const struct seqshm_header *h)
{
	g->base = base;
	g->payload_offset = h->payload_offset;
	g->payload_size = h->payload_size;
	g->slot_stride = h->slot_stride;
	g->slot_mask = h->nr_slots - 1;
}

static __u64 seqshm_round_up(__u64 x, __u64 to)
{
	return (x + to - 1) / to * to;
}

int seqshm_layout_init(struct seqshm_header *h, const struct seqshm_layout_req *req,
		       char *why, size_t whylen)
{
	__u64 payload = req->itemsize, stride, offset, region;
	size_t name_len = strlen(req->name);
	__u32 i;
	int rc;

	if (name_len >= sizeof(h->name))
		return seqshm_fail(why, whylen, SEQSHM_EINVAL,
				   "channel name is %zu characters, at most %zu",
				   name_len, sizeof(h->name) - 1);
	if (!seqshm_is_pow2(req->nr_slots) || req->nr_slots > SEQSHM_MAX_SLOTS)
		return seqshm_fail(why, whylen, SEQSHM_EINVAL,
				   "nr_slots is %u, not a power of two from 1 to %u",
				   req->nr_slots, SEQSHM_MAX_SLOTS);
	if (req->ndim > SEQSHM_MAX_DIMS)
		return seqshm_fail(why, whylen, SEQSHM_EINVAL,
				   "%u dimensions, at most %u", req->ndim, SEQSHM_MAX_DIMS);
	if (req->nr_fields < 1 || req->nr_fields > SEQSHM_MAX_FIELDS)
		return seqshm_fail(why, whylen, SEQSHM_EINVAL,
				   "%u fields, not 1 to %u", req->nr_fields, SEQSHM_MAX_FIELDS);
	if (!seqshm_is_pow2(req->region_align) || req->region_align % SEQSHM_ALIGN)
		return seqshm_fail(why, whylen, SEQSHM_EINVAL,
				   "region alignment %llu is not a power-of-two multiple of %u",
				   (unsigned long long)req->region_align, SEQSHM_ALIGN);
	for (i = 0; i < req->ndim; i++) {
		if (!req->shape[i])
			return seqshm_fail(why, whylen, SEQSHM_EINVAL,
					   "dimension %u has length 0", i);
		if (__builtin_mul_overflow(payload, req->shape[i], &payload))
			return seqshm_fail(why, whylen, SEQSHM_EOVERFLOW,
					   "the shape's size overflows 64 bits at dimension %u", i);
	}
	if (payload == 0)
		return seqshm_fail(why, whylen, SEQSHM_EINVAL, "payload of 0 bytes");
	/*
	 * Each step below stays far from overflow once payload fits the limit: nr_slots is at
	 * most SEQSHM_MAX_SLOTS and max_region is a writer's limit on memory it can allocate.
	 */
	if (payload > req->max_region)
		goto too_big;
	stride = seqshm_round_up(payload, SEQSHM_CACHELINE);
	offset = seqshm_round_up(SEQSHM_SLOTS_OFFSET +
				 (__u64)req->nr_slots * sizeof(struct seqshm_slot), SEQSHM_ALIGN);
	region = seqshm_round_up(offset + (__u64)req->nr_slots * stride, req->region_align);
	if (region > req->max_region)
		goto too_big;

	memset(h, 0, sizeof(*h));
	h->abi_version = SEQSHM_ABI_VERSION;
	h->header_size = sizeof(*h);
	h->region_size = region;
	h->payload_offset = offset;
	h->payload_size = payload;
	h->slot_stride = stride;
	h->nr_slots = req->nr_slots;
	h->flags = req->flags;
	h->clock_id = CLOCK_MONOTONIC;
	h->writer_pid = req->writer_pid;
	h->writer_start = req->writer_start;
	memcpy(h->name, req->name, name_len);
	h->itemsize = req->itemsize;
	h->nr_fields = req->nr_fields;
	h->ndim = req->ndim;
	for (i = 0; i < req->ndim; i++)
		h->shape[i] = req->shape[i];
	memcpy(h->fields, req->fields, req->nr_fields * sizeof(*req->fields));

	/* The readers' own check, so a writer can never publish what readers reject. */
	h->magic = SEQSHM_MAGIC;
	rc = seqshm_header_check(h, 0, why, whylen);
	h->magic = 0;
	return rc == SEQSHM_OK ? SEQSHM_OK : SEQSHM_EINVAL;

too_big:
	return seqshm_fail(why, whylen, SEQSHM_E2BIG,
			   "a payload of %llu bytes in %u slots needs more than the %llu bytes a region may have",
			   (unsigned long long)payload, req->nr_slots,
			   (unsigned long long)req->max_region);
}
