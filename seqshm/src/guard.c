/* seqshm guard: the SIGBUS handler that turns a truncated channel file into a damaged flag. */
#define _GNU_SOURCE
#include "guard.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "linux/seqshm.h"

/* Guards, newest first. Nodes are prepended with a release store and never unlinked or
 * freed, so the handler can walk the list at any moment without a lock. */
static struct seqshm_guard *seqshm_guards;
static pthread_mutex_t seqshm_guard_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sigaction seqshm_old_action;

/* Build the replacement beside the range and move it in with one mremap(), so no thread ever
 * sees a half-made replacement (seq 0 would read as a consistent, all-zero copy). */
static int seqshm_guard_repair(struct seqshm_guard *g)
{
	size_t off;
	char *fresh = mmap(NULL, g->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			   -1, 0);

	if (fresh == MAP_FAILED)
		return -1;
	for (off = 0; off < g->nr_slots; off++) {
		size_t at = SEQSHM_SLOTS_OFFSET + off * sizeof(struct seqshm_slot);

		if (at + sizeof(struct seqshm_slot) <= g->len)
			((struct seqshm_slot *)(fresh + at))->seq = 1;	/* odd: mid-write */
	}
	if (!g->writable)
		mprotect(fresh, g->len, PROT_READ);
	/* Pairs with seqshm_guard_damaged(): whoever reads the replacement sees the flag. */
	__atomic_store_n(&g->damaged, 1, __ATOMIC_RELEASE);
	if (mremap(fresh, g->len, g->len, MREMAP_MAYMOVE | MREMAP_FIXED, g->start) == MAP_FAILED) {
		munmap(fresh, g->len);
		return -1;
	}
	return 0;
}

static struct seqshm_guard *seqshm_guard_find(const void *addr)
{
	struct seqshm_guard *g;

	for (g = __atomic_load_n(&seqshm_guards, __ATOMIC_ACQUIRE); g; g = g->next) {
		if (!__atomic_load_n(&g->active, __ATOMIC_ACQUIRE))
			continue;
		if ((const char *)addr >= (const char *)g->start &&
		    (const char *)addr < (const char *)g->start + g->len)
			return g;
	}
	return NULL;
}

/*
 * Hand a SIGBUS that is not ours to whoever had it before us, as if we had never been
 * installed: put their action back and let the fault replay (a sent signal is raised again,
 * blocked until we return). Calling their handler from ours instead loops forever when it
 * puts us back and returns (Python's faulthandler restores the handler it found, which may
 * be ours). If we are reached again after that, whatever happens, take the default action.
 */
static void seqshm_guard_chain(int sig, siginfo_t *info)
{
	static volatile sig_atomic_t chained;

	if (!chained) {
		chained = 1;
		sigaction(sig, &seqshm_old_action, NULL);
	} else {
		signal(sig, SIG_DFL);
	}
	if (info->si_code <= 0)
		raise(sig);
}

static void seqshm_guard_handler(int sig, siginfo_t *info, void *ctx)
{
	(void)ctx;
	int saved = errno, expect = 0;
	struct seqshm_guard *g = info->si_code > 0 ? seqshm_guard_find(info->si_addr) : NULL;

	if (!g) {
		seqshm_guard_chain(sig, info);
		errno = saved;
		return;
	}
	if (__atomic_compare_exchange_n(&g->repair, &expect, 1, 0, __ATOMIC_ACQ_REL,
					__ATOMIC_ACQUIRE)) {
		if (seqshm_guard_repair(g)) {
			/* No memory for the replacement: die of the SIGBUS as without a guard. */
			signal(sig, SIG_DFL);
		}
		__atomic_store_n(&g->repair, 2, __ATOMIC_RELEASE);
	} else {
		/* Another thread repairs this range: return once it has, to re-execute. */
		while (__atomic_load_n(&g->repair, __ATOMIC_ACQUIRE) != 2)
			sched_yield();
	}
	errno = saved;
}

static int seqshm_guard_install(void)
{
	struct sigaction sa, cur;

	if (sigaction(SIGBUS, NULL, &cur))
		return -1;
	if ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == seqshm_guard_handler)
		return 0;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = seqshm_guard_handler;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	/* Whatever holds SIGBUS now (SIG_DFL, or Python's faulthandler) gets what is not ours. */
	seqshm_old_action = cur;
	return sigaction(SIGBUS, &sa, NULL);
}

struct seqshm_guard *seqshm_guard_add(void *start, size_t len, uint32_t nr_slots, int writable)
{
	struct seqshm_guard *g;

	pthread_mutex_lock(&seqshm_guard_lock);
	if (seqshm_guard_install()) {
		pthread_mutex_unlock(&seqshm_guard_lock);
		return NULL;
	}
	for (g = seqshm_guards; g; g = g->next)
		if (!g->active && g->repair != 1)
			break;
	if (!g) {
		g = calloc(1, sizeof(*g));
		if (!g) {
			pthread_mutex_unlock(&seqshm_guard_lock);
			errno = ENOMEM;
			return NULL;
		}
		g->next = seqshm_guards;
		__atomic_store_n(&seqshm_guards, g, __ATOMIC_RELEASE);
	}
	g->start = start;
	g->len = len;
	g->nr_slots = nr_slots;
	g->writable = writable;
	g->damaged = 0;
	g->repair = 0;
	/* Pairs with the acquire load in seqshm_guard_find(): the range is set before it counts. */
	__atomic_store_n(&g->active, 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&seqshm_guard_lock);
	return g;
}

void seqshm_guard_remove(struct seqshm_guard *g)
{
	pthread_mutex_lock(&seqshm_guard_lock);
	__atomic_store_n(&g->active, 0, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&seqshm_guard_lock);
}
