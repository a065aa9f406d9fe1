/* seqshm protocol core: header validation, layout, the reader's slow path and the writer. */
#include "protocol.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

uint64_t seqshm_monotonic_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * CPU pauses before the first sleep: a writer mid-write usually finishes within a few hundred
 * ns; one preempted, stopped or dead does not, and then spinning only burns a CPU. After each
 * sleep a shorter burst of attempts: a writer rewriting a one-slot channel flat out leaves
 * only short even windows, and one attempt per sleep would almost never meet one (a burst
 * costs ~10 us per sleep of up to 1 ms: about 1% of a CPU).
 */
#define SEQSHM_SPINS_BEFORE_SLEEP	1024u
#define SEQSHM_SPINS_AFTER_SLEEP	256u
#define SEQSHM_SLEEP_MIN_NS		10000u		/* 10 us */
#define SEQSHM_SLEEP_MAX_NS		1000000u	/* 1 ms: the latency cost of a long wait */

/* One step of waiting for the writer to leave a slot; nonzero once @deadline has passed. */
static int seqshm_backoff(struct seqshm_backoff *b, uint64_t deadline)
{
	struct timespec ts;
	uint64_t now, ns;

	if (b->spins < SEQSHM_SPINS_BEFORE_SLEEP) {
		b->spins++;
		seqshm_cpu_relax();
		return (b->spins & 127u) == 0 && seqshm_monotonic_ns() >= deadline;
	}
	now = seqshm_monotonic_ns();
	if (now >= deadline)
		return 1;
	ns = b->sleep_ns < SEQSHM_SLEEP_MIN_NS ? SEQSHM_SLEEP_MIN_NS : b->sleep_ns;
	b->sleep_ns = ns * 2 > SEQSHM_SLEEP_MAX_NS ? SEQSHM_SLEEP_MAX_NS : ns * 2;
	if (ns > deadline - now)
		ns = deadline - now;
	ts.tv_sec = (time_t)(ns / 1000000000u);
	ts.tv_nsec = (long)(ns % 1000000000u);
	nanosleep(&ts, NULL);	/* EINTR just ends the sleep early; the caller looks at signals */
	b->spins = SEQSHM_SPINS_BEFORE_SLEEP - SEQSHM_SPINS_AFTER_SLEEP;
	return 0;
}

int seqshm_read_until(struct seqshm_reader *r, int64_t fixed, void *dst,
		      struct seqshm_meta *meta, uint64_t deadline, struct seqshm_backoff *b)
{
	for (;;) {
		uint32_t slot = fixed < 0 ? seqshm_reader_slot(r) : (uint32_t)fixed & r->g.slot_mask;

		if (!seqshm_try_read_slot(&r->g, slot, dst, meta)) {
			if (fixed < 0)
				seqshm_reader_done(r, meta);
			else
				r->snapshots++;
			return SEQSHM_OK;
		}
		r->retries++;
		r->last_slot = slot;
		r->last_seq = seqshm_load_relaxed_u32(&seqshm_slot_ctl(&r->g, slot)->seq);
		if (seqshm_backoff(b, deadline))
			return SEQSHM_ETIMEDOUT;
	}
}

int seqshm_wait_even_until(struct seqshm_reader *r, uint32_t *slot, uint32_t *seq,
			   int newest, uint64_t deadline, struct seqshm_backoff *b)
{
	for (;;) {
		if (newest)
			*slot = seqshm_reader_slot(r);
		*seq = seqshm_read_begin(&r->g, *slot);
		if (!(*seq & 1))
			return SEQSHM_OK;
		r->retries++;
		r->last_seq = *seq;
		r->last_slot = *slot;
		if (seqshm_backoff(b, deadline))
			return SEQSHM_ETIMEDOUT;
	}
}

static int seqshm_fail(char *why, size_t whylen, int status, const char *fmt, ...)
{
	va_list ap;

	if (why && whylen) {
		va_start(ap, fmt);
		vsnprintf(why, whylen, fmt, ap);
		va_end(ap);
	}
	return status;
}

static int seqshm_is_pow2(uint64_t x)
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
	uint32_t i, j;

	if (h->nr_fields < 1 || h->nr_fields > SEQSHM_MAX_FIELDS)
		return seqshm_fail(why, whylen, SEQSHM_EFORMAT,
				   "nr_fields is %u, not 1 to %u", h->nr_fields, SEQSHM_MAX_FIELDS);
	if (!record && h->nr_fields != 1)
		return seqshm_fail(why, whylen, SEQSHM_EFORMAT,
				   "a scalar element has exactly one field, not %u", h->nr_fields);
	for (i = 0; i < h->nr_fields; i++) {
		const struct seqshm_field *f = &h->fields[i];
		uint64_t end;

		if (!seqshm_kind_size_valid(f->kind, f->size))
			return seqshm_fail(why, whylen, SEQSHM_EFORMAT,
					   "field %u has kind %#x size %u, which no NumPy scalar has",
					   i, f->kind, f->size);
		if (!seqshm_check_name(f->name, sizeof(f->name), !record))
			return seqshm_fail(why, whylen, SEQSHM_EFORMAT,
					   "field %u's name is %s", i, record ?
					   "empty, unterminated or not printable ASCII" :
					   "unterminated or not printable ASCII");
		if (f->flags & ~SEQSHM_FIELD_F_KNOWN)
			return seqshm_fail(why, whylen, SEQSHM_EFORMAT,
					   "field %u has unknown flags %#x", i,
					   f->flags & ~SEQSHM_FIELD_F_KNOWN);
		if (f->count < 1 || (f->count > 1 && !(f->flags & SEQSHM_FIELD_F_ARRAY)))
			return seqshm_fail(why, whylen, SEQSHM_EFORMAT,
					   "field %u has count %u%s", i, f->count,
					   f->count ? " without SEQSHM_FIELD_F_ARRAY" : "");
		end = (uint64_t)f->offset + (uint64_t)f->count * f->size;
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

int seqshm_header_check(const struct seqshm_header *h, uint64_t region_size_limit,
			char *why, size_t whylen)
{
	uint64_t elems = 1, need, last;
	uint32_t i;

	if (h->magic != SEQSHM_MAGIC) {
		if (h->magic == __builtin_bswap64(SEQSHM_MAGIC))
			return seqshm_fail(why, whylen, SEQSHM_EMAGIC,
					   "a seqshm region of the other byte order");
		return seqshm_fail(why, whylen, SEQSHM_EMAGIC,
				   "not a seqshm region (magic is %#llx, expected %#llx)",
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
				   "unknown flags %#x", h->flags & ~SEQSHM_F_KNOWN);
	if (!seqshm_is_pow2(h->nr_slots) || h->nr_slots > SEQSHM_MAX_SLOTS)
		return seqshm_fail(why, whylen, SEQSHM_EFORMAT,
				   "nr_slots is %u, not a power of two from 1 to %u",
				   h->nr_slots, SEQSHM_MAX_SLOTS);
	if (h->payload_offset % SEQSHM_ALIGN ||
	    h->payload_offset < SEQSHM_SLOTS_OFFSET + (uint64_t)h->nr_slots * sizeof(struct seqshm_slot))
		return seqshm_fail(why, whylen, SEQSHM_EFORMAT,
				   "payload_offset %llu is not a multiple of %u after the %u slot lines",
				   (unsigned long long)h->payload_offset, SEQSHM_ALIGN, h->nr_slots);
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
	if (__builtin_mul_overflow((uint64_t)(h->nr_slots - 1), h->slot_stride, &last) ||
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
	if (__builtin_mul_overflow(elems, (uint64_t)h->itemsize, &need) || need != h->payload_size)
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

static uint64_t seqshm_round_up(uint64_t x, uint64_t to)
{
	return (x + to - 1) / to * to;
}

int seqshm_layout_init(struct seqshm_header *h, const char *name, uint32_t nr_slots,
		       uint32_t ndim, const uint64_t *shape, uint32_t itemsize, uint32_t flags,
		       uint32_t nr_fields, const struct seqshm_field *fields, uint32_t writer_pid,
		       uint64_t writer_start, char *why, size_t whylen)
{
	uint64_t payload = itemsize, stride, offset, region;
	uint32_t i;
	int rc;
	size_t name_len = strlen(name);

	if (name_len >= sizeof(h->name))
		return seqshm_fail(why, whylen, SEQSHM_EINVAL,
				   "channel name is %zu characters, at most %zu",
				   name_len, sizeof(h->name) - 1);
	if (!seqshm_is_pow2(nr_slots) || nr_slots > SEQSHM_MAX_SLOTS)
		return seqshm_fail(why, whylen, SEQSHM_EINVAL,
				   "nr_slots is %u, not a power of two from 1 to %u",
				   nr_slots, SEQSHM_MAX_SLOTS);
	if (ndim > SEQSHM_MAX_DIMS)
		return seqshm_fail(why, whylen, SEQSHM_EINVAL,
				   "%u dimensions, at most %u", ndim, SEQSHM_MAX_DIMS);
	if (nr_fields < 1 || nr_fields > SEQSHM_MAX_FIELDS)
		return seqshm_fail(why, whylen, SEQSHM_EINVAL,
				   "%u fields, at most %u", nr_fields, SEQSHM_MAX_FIELDS);
	for (i = 0; i < ndim; i++)
		if (!shape[i] || __builtin_mul_overflow(payload, shape[i], &payload))
			return seqshm_fail(why, whylen, SEQSHM_EINVAL,
					   "dimension %u has length %llu", i,
					   (unsigned long long)shape[i]);
	if (payload == 0 || payload > (1ull << 40))
		return seqshm_fail(why, whylen, SEQSHM_EINVAL,
				   "payload of %llu bytes", (unsigned long long)payload);
	stride = seqshm_round_up(payload, SEQSHM_CACHELINE);
	offset = seqshm_round_up(SEQSHM_SLOTS_OFFSET + (uint64_t)nr_slots * sizeof(struct seqshm_slot),
				 SEQSHM_ALIGN);
	region = seqshm_round_up(offset + (uint64_t)nr_slots * stride, SEQSHM_ALIGN);

	memset(h, 0, sizeof(*h));
	h->abi_version = SEQSHM_ABI_VERSION;
	h->header_size = sizeof(*h);
	h->region_size = region;
	h->payload_offset = offset;
	h->payload_size = payload;
	h->slot_stride = stride;
	h->nr_slots = nr_slots;
	h->flags = flags;
	h->clock_id = CLOCK_MONOTONIC;
	h->writer_pid = writer_pid;
	h->writer_start = writer_start;
	memcpy(h->name, name, name_len);
	h->itemsize = itemsize;
	h->nr_fields = nr_fields;
	h->ndim = ndim;
	for (i = 0; i < ndim; i++)
		h->shape[i] = shape[i];
	memcpy(h->fields, fields, nr_fields * sizeof(*fields));

	/* The same checks a reader makes, so a writer can never publish what readers reject. */
	h->magic = SEQSHM_MAGIC;
	rc = seqshm_header_check(h, 0, why, whylen);
	h->magic = 0;
	return rc == SEQSHM_OK ? SEQSHM_OK : SEQSHM_EINVAL;
}

void seqshm_header_publish(struct seqshm_header *h)
{
	/* Pairs with the reader's read of the header after open(): every static field is stored
	 * before the magic, so a reader that sees the magic sees a complete header. */
	__atomic_store_n(&h->magic, SEQSHM_MAGIC, __ATOMIC_RELEASE);
}

static struct seqshm_slot *seqshm_slot_ctl_w(struct seqshm_writer *w, uint32_t slot)
{
	return (struct seqshm_slot *)(w->g.base + SEQSHM_SLOTS_OFFSET) + slot;
}

void *seqshm_write_begin(struct seqshm_writer *w)
{
	struct seqshm_slot *s;

	w->slot = (uint32_t)(w->head + 1) & w->g.slot_mask;
	s = seqshm_slot_ctl_w(w, w->slot);
	/* Only this writer stores seq, so a relaxed load of our own last store suffices. */
	__atomic_store_n(&s->seq, __atomic_load_n(&s->seq, __ATOMIC_RELAXED) + 1,
			 __ATOMIC_RELAXED);
	/* Pairs with the reader's acquire fence in seqshm_read_retry(): the odd seq is ordered
	 * before every payload store below (a release fence orders prior stores before later
	 * ones; smp_wmb() in the kernel). */
	__atomic_thread_fence(__ATOMIC_RELEASE);
	w->in_write = 1;
	return (void *)seqshm_slot_payload(&w->g, w->slot);
}

void seqshm_write_end(struct seqshm_writer *w, uint64_t timestamp_ns)
{
	struct seqshm_slot *s = seqshm_slot_ctl_w(w, w->slot);
	struct seqshm_header *h = (struct seqshm_header *)w->g.base;

	__atomic_store_n(&s->write_seq, w->head + 1, __ATOMIC_RELAXED);
	__atomic_store_n(&s->timestamp_ns, timestamp_ns, __ATOMIC_RELAXED);
	/* Pairs with the reader's acquire load in seqshm_read_begin(): payload and metadata are
	 * stored before seq turns even. */
	__atomic_store_n(&s->seq, __atomic_load_n(&s->seq, __ATOMIC_RELAXED) + 1,
			 __ATOMIC_RELEASE);
	w->head++;
	/* Pairs with the reader's acquire load in seqshm_head(): a reader sent to this
	 * slot by head finds its seq already even. */
	__atomic_store_n(&h->head, w->head, __ATOMIC_RELEASE);
	w->in_write = 0;
	/* Sleeping readers: one load of the sidecar's count when there are none (wake.h). */
	seqshm_waker_after_publish(&w->wake);
}

void seqshm_write_close(struct seqshm_header *h, uint32_t state)
{
	/* Pairs with the reader's load-acquire in seqshm_state(): it is stored after the last
	 * store-release of head, so a reader that sees the end sees every write. */
	__atomic_store_n(&h->state, state, __ATOMIC_RELEASE);
}
