/* seqshm userspace protocol: the reader's open check, waits and slow path, the writer with its
 * wake-ups. */
#include "protocol.h"

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
		uint64_t want = fixed < 0 ? seqshm_pick_write(&r->g, r->newest) : 0;
		uint32_t slot = fixed < 0 ? (uint32_t)want & r->g.slot_mask :
					    (uint32_t)fixed & r->g.slot_mask;

		if (!seqshm_try_read_slot(&r->g, slot, dst, meta)) {
			if (fixed < 0) {
				if (!seqshm_copy_is_newest(&r->g, want, meta->write_seq))
					return SEQSHM_EDAMAGED;
				seqshm_reader_done(r, meta);
			} else {
				if (meta->write_seq &&
				    !seqshm_write_fits_slot(&r->g, slot, meta->write_seq))
					return SEQSHM_EDAMAGED;
				r->snapshots++;
			}
			return SEQSHM_OK;
		}
		r->retries++;
		r->last_slot = slot;
		r->last_seq = seqshm_load_relaxed(&seqshm_slot_ctl(&r->g, slot)->seq);
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

void *seqshm_write_begin(struct seqshm_writer *w)
{
	w->slot = seqshm_write_slot_begin(&w->g, w->head);
	w->in_write = 1;
	return seqshm_slot_payload_w(&w->g, w->slot);
}

void seqshm_write_end(struct seqshm_writer *w, uint64_t timestamp_ns)
{
	seqshm_write_slot_end(&w->g, w->slot, w->head + 1, timestamp_ns);
	w->head++;
	w->in_write = 0;
	/* Sleeping readers: one load of the sidecar's count when there are none (wake.h). */
	seqshm_waker_after_publish(&w->wake);
}

int seqshm_refuse_holes(const struct seqshm_header *h, int is_file, uint64_t size,
			uint64_t allocated, char *why, size_t whylen)
{
	static const char what[] = "(no seqshm writer leaves holes; reading them would fill the "
				   "file system): not a channel a writer made, have its writer "
				   "create it again";

	if (!is_file || allocated >= size)
		return SEQSHM_OK;
	if (why && whylen) {
		if (size <= h->region_size)
			snprintf(why, whylen, "a sparse file: its region of %llu bytes has %llu "
				 "allocated %s", (unsigned long long)h->region_size,
				 (unsigned long long)allocated, what);
		else
			snprintf(why, whylen, "a sparse file: its %llu bytes (its region and more) "
				 "have %llu allocated %s", (unsigned long long)size,
				 (unsigned long long)allocated, what);
	}
	return SEQSHM_EFORMAT;
}
