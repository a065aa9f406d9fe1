/* seqshm wake-ups: futex sleeps of readers, the writer's wake, the count's reset. */
#define _GNU_SOURCE
#include "wake.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "protocol.h"

uint32_t seqshm_no_waiters;

/* Shared futexes: never FUTEX_PRIVATE_FLAG, whose key is the address in one process's mm;
 * a shared key is the file and offset, the same in the writer's read-write mapping and in
 * every reader's read-only one (FUTEX_WAIT only reads the word). */
static long seqshm_futex(uint32_t *word, int op, uint32_t val, const struct timespec *ts)
{
	return syscall(SYS_futex, word, op, val, ts, NULL, 0);
}

void seqshm_waker_init(struct seqshm_waker *wk, struct seqshm_header *h, int fence)
{
	wk->count = &seqshm_no_waiters;
	wk->head_word = seqshm_head_word(h);
	wk->state_word = &h->state;
	wk->fd = -1;
	wk->fence = fence != 0;
	wk->idle_wakes = 0;
	wk->wakes = 0;
	wk->resets = 0;
}

void seqshm_waker_attach(struct seqshm_waker *wk, struct seqshm_waiters *w, int fd)
{
	wk->count = w ? &w->count : &seqshm_no_waiters;
	wk->fd = w ? fd : -1;
	wk->idle_wakes = 0;
}

/*
 * A count that stays high while wakes find nobody: a reader that died between its increment
 * and its decrement (or a rogue one). Every counted reader holds a read lock on byte 0 of the
 * sidecar (an OFD lock: the kernel drops it when the reader's process dies), so a write lock
 * we can take means no live reader is counted: the count is wholly stale, and no reader can
 * count itself until we unlock, so storing 0 loses nobody. Readers that meet our lock
 * (microseconds) poll for that one sleep. If a live reader holds its lock, the count is right
 * (or mixed with stale counts: seqshm_waker_wake() tries again soon). Returns 0 when a live
 * reader's lock stopped it, 1 when the try is over (reset, or no sidecar to lock).
 */
static int seqshm_waker_reset(struct seqshm_waker *wk)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1 };

	if (wk->fd < 0)
		return 1;	/* nothing to reset it through: do not try again soon */
	if (fcntl(wk->fd, F_OFD_SETLK, &fl) != 0)
		return 0;
	/* Ordered against the readers' increments by the lock (a reader increments only while it
	 * holds its read lock, which it takes after our unlock); an atomic store, as the readers
	 * update the word with atomic read-modify-writes. */
	__atomic_store_n(wk->count, 0, __ATOMIC_RELAXED);
	wk->resets++;
	fl.l_type = F_UNLCK;
	fcntl(wk->fd, F_OFD_SETLK, &fl);
	return 1;
}

void seqshm_waker_wake(struct seqshm_waker *wk)
{
	long woken = seqshm_futex(wk->head_word, FUTEX_WAKE, INT_MAX, NULL);

	wk->wakes++;
	/* A wake that finds nobody is normal now and then (a counted reader not yet asleep: its
	 * FUTEX_WAIT then sees the new head and returns); many of them are a stale count. Counted
	 * in total, not in a row: a live reader that sleeps now and then (one write in ten) finds
	 * a wake often enough to break every run, and a count its dead peer left would then
	 * cost each write a FUTEX_WAKE for as long as it lives. Trying the reset is harmless
	 * (it stores 0 only when no live reader is counted), so trying it once per
	 * SEQSHM_WAKE_HEAL_AFTER idle wakes whatever came between costs nothing. */
	if (woken > 0)
		return;
	if (++wk->idle_wakes < SEQSHM_WAKE_HEAL_AFTER)
		return;
	if (seqshm_waker_reset(wk)) {
		wk->idle_wakes = 0;
		return;
	}
	/* A live reader held its lock: one woken but not yet run still does, and a burst of
	 * writes after a wake finds it so every time. Try again within 1 to 16 idle wakes, a
	 * stride that varies (a multiplicative hash of the wake count) so that it cannot keep
	 * falling in step with such a pattern; an fcntl() per ~8 wakes that found nobody. */
	wk->idle_wakes = SEQSHM_WAKE_HEAL_AFTER - 1 - (uint32_t)((wk->wakes * 2654435761u) >> 28 & 15);
}

void seqshm_wake_all(struct seqshm_header *h)
{
	seqshm_futex(&h->state, FUTEX_WAKE, INT_MAX, NULL);
	seqshm_futex(seqshm_head_word(h), FUTEX_WAKE, INT_MAX, NULL);
}

int seqshm_wake_lock(int fd, int lock)
{
	struct flock fl = { .l_type = lock ? F_RDLCK : F_UNLCK, .l_whence = SEEK_SET,
			    .l_start = 0, .l_len = 1 };

	return fcntl(fd, F_OFD_SETLK, &fl) ? -errno : 0;
}

/* futex_waitv(2) came with Linux 5.16, its header bits (FUTEX_32, struct futex_waitv) too. */
#if defined(SYS_futex_waitv) && defined(FUTEX_32)
#define SEQSHM_HAVE_WAITV 1
#endif

#ifdef SEQSHM_HAVE_WAITV
/* futex_waitv(2) (Linux 5.16): 1 until it fails with ENOSYS, then 0 (FUTEX_WAIT on head). */
static int seqshm_have_waitv = 1;
#endif

static int seqshm_sleep(const struct seqshm_header *h, uint32_t head_lo, uint64_t timeout_ns)
{
	struct timespec ts;
	long rc;

#ifdef SEQSHM_HAVE_WAITV
	if (__atomic_load_n(&seqshm_have_waitv, __ATOMIC_RELAXED)) {
		/* Shared futexes (no FUTEX_PRIVATE_FLAG); the timeout is absolute. */
		struct futex_waitv w[2] = {
			{ .val = head_lo, .uaddr = (uintptr_t)seqshm_head_word(h),
			  .flags = FUTEX_32 },
			{ .val = SEQSHM_STATE_OPEN, .uaddr = (uintptr_t)&h->state,
			  .flags = FUTEX_32 },
		};
		uint64_t end = seqshm_deadline(seqshm_monotonic_ns(), timeout_ns);

		ts.tv_sec = (time_t)(end / 1000000000u);
		ts.tv_nsec = (long)(end % 1000000000u);
		rc = syscall(SYS_futex_waitv, w, 2, 0, &ts, CLOCK_MONOTONIC);
		if (rc >= 0 || errno != ENOSYS)
			return rc < 0 && errno == ETIMEDOUT ? SEQSHM_ETIMEDOUT : SEQSHM_OK;
		__atomic_store_n(&seqshm_have_waitv, 0, __ATOMIC_RELAXED);
	}
#endif
	/* An older kernel: sleep on head alone; a close then wakes us through head too
	 * (seqshm_wake_all()), but one that lands between our look at state and this sleep is
	 * seen only at the timeout, which callers keep short (0.1 s). */
	ts.tv_sec = (time_t)(timeout_ns / 1000000000u);
	ts.tv_nsec = (long)(timeout_ns % 1000000000u);
	rc = seqshm_futex(seqshm_head_word(h), FUTEX_WAIT, head_lo, &ts);
	return rc < 0 && errno == ETIMEDOUT ? SEQSHM_ETIMEDOUT : SEQSHM_OK;
}

int seqshm_wake_wait(const struct seqshm_header *h, uint32_t *count, int fence,
		     uint64_t target, uint64_t timeout_ns)
{
	uint64_t head;
	int rc = SEQSHM_OK;

	/* Count ourselves before the last look at head: seq_cst, a full barrier by itself. */
	__atomic_fetch_add(count, 1, __ATOMIC_SEQ_CST);
	/* Pairs with the writer's full fence in seqshm_waker_after_publish(): store count, then
	 * load head, against the writer's store head, then load count (store buffering): with a
	 * full fence on each side, either our load below sees its store of head, or its later
	 * load of count sees our increment and it wakes us. A writer without WAKE_F_FENCE (one
	 * that relied on membarrier(2), which seqshm's writers no longer register for: that
	 * registration let any local user interrupt the writer's CPUs) orders nothing there for
	 * us, so we poll: no sleep could be sure to be woken. */
	if (!fence) {
		__atomic_fetch_sub(count, 1, __ATOMIC_RELEASE);
		return SEQSHM_WAKE_ENOBARRIER;
	}
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	/* Pairs with the writer's store-release of head (and of state at the end). */
	head = seqshm_load_acquire(&h->head);
	if (head <= target && seqshm_load_acquire(&h->state) == SEQSHM_STATE_OPEN)
		rc = seqshm_sleep(h, (uint32_t)head, timeout_ns);
	/* Late is harmless (a spurious wake); release keeps it after our loads of head. */
	__atomic_fetch_sub(count, 1, __ATOMIC_RELEASE);
	return rc;
}
