/* seqshm guard: a file truncated under a mapping turns into a flag on the mapping, not SIGBUS. */
#ifndef SEQSHM_GUARD_H
#define SEQSHM_GUARD_H

#include <stddef.h>
#include <stdint.h>

/*
 * A mapping of a channel file in this process. When the file shrinks under it (truncate(1),
 * ftruncate by any process with write access), the kernel raises SIGBUS in whichever thread
 * touches a page past the new end: in a reader's copy, in a view the user holds, in the
 * writer. The guard's SIGBUS handler finds the mapping the faulting address is in, marks it
 * damaged, and atomically replaces the whole range with private memory in which every slot's
 * seq is odd; the faulting instruction then completes against that memory.
 *
 * Why this and not a check in the hot path: the replacement makes every slot read as
 * mid-write, so a reader's inline attempt fails on its own and the slow path, which looks at
 * @damaged first, raises; a snapshot that never meets a truncated file pays nothing. A copy
 * that was in flight when the pages went away re-checks its seq against the replacement and
 * fails the same way (the odd seq differs from the even one it started with). The flag is set
 * before the replacement is installed, so whoever sees the replacement sees the flag.
 *
 * Faults outside every guarded mapping go to the handler that was installed before ours (it is
 * put back and the fault replays), so a crash elsewhere still dumps core or a faulthandler
 * traceback. A SIGBUS handler installed after ours (faulthandler.enable() after a channel was
 * opened) runs first and ends the process; the next open of a channel puts the guard back on
 * top. Enable faulthandler before opening channels (pytest and python -X faulthandler do).
 */
struct seqshm_guard {
	void *start;
	size_t len;
	uint32_t nr_slots;	/* slot lines to mark odd in the replacement */
	int writable;
	int damaged;		/* set by the handler; read with __atomic loads */
	int repair;		/* 0 none, 1 in progress, 2 done: one thread repairs */
	int active;
	struct seqshm_guard *next;
};

/* A guard for [start, start + len); NULL with errno set on failure. Installs the handler
 * (again, if something replaced it since). */
struct seqshm_guard *seqshm_guard_add(void *start, size_t len, uint32_t nr_slots, int writable);
/* Stop guarding, before the range is unmapped. The node is kept for reuse, never freed:
 * a handler running in another thread may be walking the list. */
void seqshm_guard_remove(struct seqshm_guard *g);

static inline int seqshm_guard_damaged(const struct seqshm_guard *g)
{
	return __atomic_load_n(&g->damaged, __ATOMIC_ACQUIRE);
}

#endif /* SEQSHM_GUARD_H */
