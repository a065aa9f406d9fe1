/* seqshm: userspace's environment for the shared protocol source (module/protocol/). */
#ifndef SEQSHM_ENV_H
#define SEQSHM_ENV_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "linux/seqshm.h"

/*
 * Atomics: the shared structs are plain __u32/__u64 (they are shared with the kernel and
 * cannot be _Atomic), so the GCC/Clang __atomic builtins, which act on ordinary objects with
 * C11 semantics. The kernel's barriers map onto C11 as the kernel's own memory model
 * allows for the pairs used here: smp_wmb() becomes a release fence and smp_rmb() an acquire
 * fence. Each is stronger than the kernel's by one ordering, earlier loads before later
 * stores (smp_wmb() orders only stores, smp_rmb() only loads); C11 has nothing weaker that
 * still synchronizes with the fence it pairs with (the proof, docs/proof.md, says what this
 * covers). On x86 both compile to a compiler barrier only, as in the kernel.
 */
#define seqshm_load_acquire(p)		__atomic_load_n((p), __ATOMIC_ACQUIRE)
#define seqshm_load_relaxed(p)		__atomic_load_n((p), __ATOMIC_RELAXED)
#define seqshm_store_relaxed(p, v)	__atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define seqshm_store_release(p, v)	__atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define seqshm_smp_wmb()		__atomic_thread_fence(__ATOMIC_RELEASE)
#define seqshm_smp_rmb()		__atomic_thread_fence(__ATOMIC_ACQUIRE)
#define seqshm_likely(x)		__builtin_expect(!!(x), 1)
#define SEQSHM_PRINTF(fmt, args)	__attribute__((format(printf, fmt, args)))

/*
 * The payload copy: a plain memcpy between the acquire load of seq and the acquire fence, as
 * the kernel's vDSO and rigtorp/Seqlock do, not a loop of relaxed atomic word loads (folly's
 * Tearable, P1478's atomic memcpy). Under C11 the racing copy is formally a data race; in
 * practice it is safe here because (1) the copy goes through memcpy into memory the caller
 * will not look at before the seq re-check passes, so no decision is taken on a torn value,
 * (2) memcpy is opaque enough and bracketed by an acquire load and a fence, both compiler
 * barriers for the surrounding memory accesses, so the compiler cannot move the copy out of
 * the critical section (the failure rigtorp's README shows with a relaxed load), and (3) word
 * loads would forbid the vectorised copy that lets a snapshot run at memcpy speed. The proof
 * (proof/seqshm_env.h) checks the same source with the copy as relaxed word loads.
 */
#define seqshm_copy_from_slot(dst, src, n)	memcpy((dst), (src), (n))

#if defined(__x86_64__) || defined(__i386__)
#define seqshm_cpu_relax()	__builtin_ia32_pause()
#elif defined(__aarch64__)
#define seqshm_cpu_relax()	__asm__ __volatile__("yield" ::: "memory")
#else
#define seqshm_cpu_relax()	__asm__ __volatile__("" ::: "memory")
#endif

#endif /* SEQSHM_ENV_H */
