/* GenMC harness: the userspace wake-up protocol: a reader that goes to sleep before a write is always woken, or sees the write and does not sleep. */

/*
 * The writer's side is the real code: the shared write steps, then seqshm_waker_after_publish()
 * from seqshm/src/wake.h (its full fence, SEQSHM_WAKE_F_FENCE, then one load of the count).
 * The reader's side is seqshm_wake_wait() from seqshm/src/wake.c, step for step, since that
 * function makes system calls: count itself (seq_cst increment), a full fence, head (and the
 * state) with load-acquire, sleep on head's value (and on the state's), uncount itself.
 *
 * What is abstracted:
 * - FUTEX_WAIT/futex_waitv and FUTEX_WAKE: a hash-bucket lock as the kernel's; a wait
 *   compares the futex words with the values it was given under that lock and queues
 *   itself, or returns at once; a wake marks every queued sleeper woken under the same lock.
 *   That is the futex contract ("a waiter either sees the new value or is woken by a wake
 *   issued after the store"). A sleeper never wakes on its own here (no timeout, no signal):
 *   a lost wake-up is one left queued after the writer is done.
 * - The futex word is the low 32 bits of head; the model compares all of head (GenMC needs
 *   each location accessed at one size), which differs only after 2^32 writes.
 * - membarrier(): not modelled. A reader of a writer without SEQSHM_WAKE_F_FENCE calls
 *   membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) instead of its fence, which runs a full
 *   barrier in every running thread of the writer, turning the writer's compiler barrier
 *   into the fence modelled here at whatever point the writer is; this harness proves the
 *   protocol with fences on both sides (the F_FENCE path, and what membarrier() provides),
 *   and the mutant WAKE_WRITER_NO_FENCE shows the writer's side cannot be a compiler barrier
 *   alone when the reader does not use membarrier().
 * - The sidecar's count and its read lock: the count is a word both sides reach; the lock
 *   (against a count reset) is not modelled (resets happen only with no reader counted).
 *
 * -DCLOSE: the writer closes the channel instead of writing (seqshm_write_close(), then the
 * wake of every sleeper, seqshm_wake_all()); the reader sleeps on head and state together.
 */
#define NR_SLOTS 1
#ifdef CLOSE
#define WRITES 0
#else
#define WRITES 1
#endif
#include "harness.h"
#include "wake.h"

static struct seqshm_waiters waiters;
static struct seqshm_waker waker;

/* The kernel's futex hash bucket of head and state, and the one reader's place in it. */
static pthread_mutex_t bucket = PTHREAD_MUTEX_INITIALIZER;
static int queued;	/* under bucket: the reader sleeps in the futex */
static int woken;	/* under bucket: a wake found it there */

/* futex_waitv({head, @head}, {state, OPEN}): 0 asleep (queued), -1 a value differed. */
static int futex_wait(__u64 head)
{
	int rc = -1;

	pthread_mutex_lock(&bucket);
#ifndef SEQSHM_MUTANT_WAKE_SLEEP_NO_COMPARE
	if (seqshm_load_relaxed(&region.h.head) == head &&
	    seqshm_load_relaxed(&region.h.state) == SEQSHM_STATE_OPEN)
#endif
	{
		queued = 1;
		rc = 0;
	}
	pthread_mutex_unlock(&bucket);
	return rc;
}

/* FUTEX_WAKE on a futex word of the region: every queued sleeper is woken. */
static void futex_wake(void)
{
	pthread_mutex_lock(&bucket);
	if (queued)
		woken = 1;
	pthread_mutex_unlock(&bucket);
}

/* wake.c's slow path after a write (its stale-count reset is not modelled). */
void seqshm_waker_wake(struct seqshm_waker *wk)
{
	futex_wake();
	wk->wakes++;
}

static void *writer(void *arg)
{
	(void)arg;
#ifdef CLOSE
	seqshm_write_close((struct seqshm_header *)geo.base, SEQSHM_STATE_CLOSED);
	futex_wake();	/* seqshm_wake_all(): state's sleepers, then head's */
	futex_wake();
#else
	write_one(1);
	seqshm_waker_after_publish(&waker);
#endif
	return NULL;
}

/* seqshm_wake_wait(h, count, fence = 1, target = 0, timeout), up to its sleep. */
static void *reader(void *arg)
{
	__u64 target = 0, head;

	(void)arg;
#ifndef SEQSHM_MUTANT_WAKE_NO_COUNT
	__atomic_fetch_add(&waiters.count, 1, __ATOMIC_SEQ_CST);
#endif
#ifndef SEQSHM_MUTANT_WAKE_NO_READER_FENCE
	/* pairs with the writer's fence in seqshm_waker_after_publish() */
	seqshm_smp_mb();
#endif
	head = seqshm_load_acquire(&region.h.head);
	if (head <= target && seqshm_load_acquire(&region.h.state) == SEQSHM_STATE_OPEN &&
	    futex_wait(head) == 0)
		return NULL;	/* asleep, still counted: it uncounts itself once woken */
	__atomic_fetch_sub(&waiters.count, 1, __ATOMIC_RELEASE);
	return NULL;
}

int main(void)
{
	pthread_t w, r;

	region_init();
	/* seqshm_waker_init() + seqshm_waker_attach() (wake.c): the fields the writer uses */
	waker.count = &waiters.count;
	waker.head_word = seqshm_head_word(&region.h);
	waker.state_word = &region.h.state;
	waker.fd = -1;
#ifdef SEQSHM_MUTANT_WAKE_WRITER_NO_FENCE
	waker.fence = 0;	/* a compiler barrier only, with no membarrier() from the reader */
#else
	waker.fence = 1;
#endif
	w = spawn(writer, NULL);
	r = spawn(reader, NULL);
	pthread_join(w, NULL);
	pthread_join(r, NULL);
	/* no lost wake-up: the reader, if it went to sleep, has been woken */
	assert(!queued || woken);
	return 0;
}
