/* seqshm wake-ups: readers of a userspace channel sleep in the kernel until the next write. */
#ifndef SEQSHM_WAKE_H
#define SEQSHM_WAKE_H

#include <stdint.h>

#include "linux/seqshm.h"

/*
 * The protocol is in the top comment of linux/seqshm.h ("Waking sleepers"). In short: a
 * reader counts itself in the sidecar's @count, makes its increment visible to the writer
 * (a full fence, paired with the writer's), re-checks head and state, and sleeps in a shared futex on the low 32 bits of
 * head (and on state); the writer, after its store-release of head, loads @count and calls
 * FUTEX_WAKE only when it is nonzero.
 *
 * Why a futex on head itself and not a separate word: the word already changes on every
 * write, so the writer stores nothing more, and the kernel's compare in FUTEX_WAIT closes the
 * window between the reader's last look at head and its sleep (the value changed: EAGAIN).
 * Why futex_waitv on head and state both: the end of a channel changes state, not head; a
 * reader that looked at state just before the writer's close and went to sleep just after
 * the close's FUTEX_WAKE would otherwise sleep on an unchanged head until its timeout.
 */

/* A write's wake-up check, the writer's side. */
struct seqshm_waker {
	uint32_t *count;	/* the sidecar's count, or seqshm_no_waiters (stays 0) */
	uint32_t *head_word;	/* the low 32 bits of head in the writer's mapping */
	uint32_t *state_word;	/* state in the writer's mapping */
	int fd;			/* the sidecar, to reset a stale count; -1: none */
	int fence;		/* SEQSHM_WAKE_F_FENCE: a full fence per write, no membarrier */
	uint32_t idle_wakes;	/* wakes that woke nobody since the last reset try */
	uint64_t wakes;		/* FUTEX_WAKE calls after writes */
	uint64_t resets;	/* stale counts reset */
};

/* The count of a writer with no sidecar: a word nobody ever stores to. */
extern uint32_t seqshm_no_waiters;

/* Status of seqshm_wake_wait() beside SEQSHM_OK and SEQSHM_ETIMEDOUT (seqshm_protocol.h). */
#define SEQSHM_WAKE_ENOBARRIER	(-20)	/* the writer does not fence: this process must poll */

/* The 32-bit word of @head a futex waits on: its low half, in either byte order. */
static inline uint32_t *seqshm_head_word(const struct seqshm_header *h)
{
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	return (uint32_t *)&h->head + 1;
#else
	return (uint32_t *)&h->head;
#endif
}

/* A waker for the region at @h (writable) with no sidecar yet. */
void seqshm_waker_init(struct seqshm_waker *wk, struct seqshm_header *h, int fence);
/* Use the sidecar mapped at @w, open as @fd (kept open by the caller); NULL: none. */
void seqshm_waker_attach(struct seqshm_waker *wk, struct seqshm_waiters *w, int fd);
/* The slow path of seqshm_waker_after_publish(): someone may sleep. */
void seqshm_waker_wake(struct seqshm_waker *wk);

/*
 * After the writer's store-release of head (seqshm_write_end()). The barrier pairs with the
 * reader's membarrier() (or, with @fence, its full fence) between its increment of count and
 * its load of head in seqshm_wake_wait(): the store of head and the load of count are then
 * not reordered as the reader could observe, so a reader that missed head k is one this load
 * sees. With a registered writer it is only a compiler barrier: membarrier() turns it into a
 * full one in whichever thread of this process is running when a reader needs it. Nobody
 * waiting: this barrier and one load of a line the readers rarely write.
 */
static inline void seqshm_waker_after_publish(struct seqshm_waker *wk)
{
	if (wk->fence)
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
	else
		__atomic_signal_fence(__ATOMIC_SEQ_CST);
	if (__builtin_expect(__atomic_load_n(wk->count, __ATOMIC_RELAXED) != 0, 0))
		seqshm_waker_wake(wk);
}

/*
 * The end of the channel, after the store-release of state (seqshm_write_close()): wake every
 * sleeper, on state (futex_waitv sleepers) and on head (FUTEX_WAIT sleepers of kernels
 * without futex_waitv). No count check: it happens once, and the futex contract (the value
 * was stored before the wake) is all the ordering a sleeper needs.
 */
void seqshm_wake_all(struct seqshm_header *h);

/* Take (@lock) or drop the reader's read lock on byte 0 of the sidecar open as @fd: 0 or
 * -errno (-EAGAIN or -EACCES: the writer is resetting the count right now). */
int seqshm_wake_lock(int fd, int lock);

/*
 * The reader's sleep: until head > @target, the state leaves OPEN, a wake-up, a signal, or
 * @timeout_ns. Counts itself in @count (the sidecar, holding its read lock) around it.
 * @fence: the writer's SEQSHM_WAKE_F_FENCE. Returns SEQSHM_OK (look at head and state
 * again), SEQSHM_ETIMEDOUT, or SEQSHM_WAKE_ENOBARRIER. Call without the GIL.
 */
int seqshm_wake_wait(const struct seqshm_header *h, uint32_t *count, int fence,
		     uint64_t target, uint64_t timeout_ns);

#endif /* SEQSHM_WAKE_H */
