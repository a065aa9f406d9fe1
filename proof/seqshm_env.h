/* seqshm_env.h for GenMC: the shared protocol source's atomics, fences and copy, as the model checker sees them. */
#ifndef SEQSHM_ENV_H
#define SEQSHM_ENV_H

/*
 * The shared protocol source (module/protocol/) includes "seqshm_env.h" and finds this one
 * when a harness is compiled by GenMC with -I proof. The kernel and the Python extension
 * have their own (kernel: READ_ONCE, smp_wmb, ...; userspace: GCC __atomic builtins).
 *
 * Atomics. The shared structures are plain __u32/__u64 (the uapi header cannot use _Atomic),
 * so every access the protocol marks is a GCC/Clang __atomic builtin on the plain field:
 * clang turns it into an LLVM atomic load/store/fence with that C11 order, which is what
 * GenMC models (its own <lkmm.h> defines atomic_load_explicit() the same way). Sizes never
 * mix: every field is always accessed at its own width, as GenMC requires.
 *
 * How the kernel's primitives map, and where the model is STRONGER than the kernel, i.e.
 * what a proof under these mappings does not cover:
 *
 *   smp_store_release(p, v)  -> store-release. Same guarantee (RC11 and IMM give a
 *                               release store exactly what LKMM gives it for these uses).
 *   smp_load_acquire(p)      -> load-acquire. Same.
 *   smp_wmb()                -> release fence. STRONGER: smp_wmb() orders earlier stores
 *                               before later stores only; a release fence also orders
 *                               earlier loads before later stores. The writer's only earlier
 *                               load is of its own seq (it is its one writer; its head is a
 *                               private count), so nothing from another thread crosses it,
 *                               but the proof does not show that load->store order is unused.
 *   smp_rmb()                -> acquire fence. STRONGER: smp_rmb() orders earlier loads
 *                               before later loads only; an acquire fence also orders earlier
 *                               loads before later stores. The reader stores nothing shared
 *                               after it (its copy goes to private memory), so the extra
 *                               order has nothing to act on.
 *   smp_mb()                 -> seq_cst fence. Same for the store-buffering pattern it is
 *                               used for (RC11's SC fences, IMM's full fence).
 *   READ_ONCE / WRITE_ONCE   -> relaxed load / store. Same, except that LKMM (and real
 *                               CPUs) respect address and data dependencies, which RC11 does
 *                               not count and IMM does: a proof under RC11 never leans on a
 *                               dependency, so it is the weaker assumption.
 *   cpu_relax()              -> nothing (a hint to the CPU; GenMC bounds every loop).
 *
 * RC11 is the C11 model as compilers implement it: a result under --rc11 holds for the
 * userspace build (GCC/Clang __atomic builtins). IMM is the hardware-level model that
 * ARMv8, POWER and RISC-V map onto; a result under --imm holds for the compiled code on
 * those CPUs, and so for the kernel's barriers as the macros above translate them.
 *
 * The payload copy. The shipped copy is a plain memcpy racing with the writer's stores: a
 * data race by the letter of C11 (GenMC reports it as one), safe in practice because no
 * byte of the copy is looked at before the seq re-check passes, and the acquire load before
 * it and the fence after it are compiler barriers that keep the copy between them (the vDSO
 * and rigtorp/Seqlock do the same; P1478 proposes the byte-wise atomic memcpy that would
 * make it legal). Here it is the same copy as relaxed 64-bit word loads: each word reads
 * some write's value, exactly what a racing memcpy does on every CPU the code runs on
 * (aligned words do not tear), and the checker can tell which write each word came from.
 * The writer's payload stores, in the harnesses, are relaxed word stores likewise.
 *
 * Mutants (proof/run.py): -DSEQSHM_MUTANT_FILE=<basename> and one of
 * -DSEQSHM_MUTANT_{WMB,RMB,MB,ACQUIRE,RELEASE}_LINE=<n> weaken the one use of that primitive
 * on line n of that file of the shared source: a fence is dropped, an acquire or release
 * becomes relaxed. __FILE_NAME__ and __LINE__ are those of the call site, and clang folds
 * the comparison, so every other site compiles exactly as without a mutant.
 */

#include <linux/types.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <time.h>

#include "linux/seqshm.h"

/* GenMC's <stdio.h> declares only printf and friends; the shared .c formats its messages. */
int vsnprintf(char *str, size_t size, const char *format, va_list ap);

#define SEQSHM_STR_(x)	#x
#define SEQSHM_STR(x)	SEQSHM_STR_(x)

#ifdef SEQSHM_MUTANT_FILE
#define SEQSHM_MUTANT_AT(line) \
	(__LINE__ == (line) && !__builtin_strcmp(__FILE_NAME__, SEQSHM_STR(SEQSHM_MUTANT_FILE)))
#else
#define SEQSHM_MUTANT_AT(line)	0
#endif
#ifndef SEQSHM_MUTANT_WMB_LINE
#define SEQSHM_MUTANT_WMB_LINE		(-1)
#endif
#ifndef SEQSHM_MUTANT_RMB_LINE
#define SEQSHM_MUTANT_RMB_LINE		(-1)
#endif
#ifndef SEQSHM_MUTANT_MB_LINE
#define SEQSHM_MUTANT_MB_LINE		(-1)
#endif
#ifndef SEQSHM_MUTANT_ACQUIRE_LINE
#define SEQSHM_MUTANT_ACQUIRE_LINE	(-1)
#endif
#ifndef SEQSHM_MUTANT_RELEASE_LINE
#define SEQSHM_MUTANT_RELEASE_LINE	(-1)
#endif

/* Load-acquire of a 32- or 64-bit field; pairs with whatever store-release the caller names. */
#define seqshm_load_acquire(p)						\
	(SEQSHM_MUTANT_AT(SEQSHM_MUTANT_ACQUIRE_LINE) ?			\
	 __atomic_load_n((p), __ATOMIC_RELAXED) :			\
	 __atomic_load_n((p), __ATOMIC_ACQUIRE))
#define seqshm_load_relaxed(p)		__atomic_load_n((p), __ATOMIC_RELAXED)
/*
 * A writer stopped (SIGSTOP, a debugger) or killed between any two of its stores: every store
 * the shared source and the harnesses make passes SEQSHM_PROOF_STORE_GATE() first, which
 * harness_follow_stop.c defines to decide, nondeterministically, that this store and every
 * later one of the writer never happen. Everywhere else every store happens.
 */
#ifndef SEQSHM_PROOF_STORE_GATE
#define SEQSHM_PROOF_STORE_GATE()	1
#endif
#define seqshm_store_relaxed(p, v)					\
	do {								\
		if (SEQSHM_PROOF_STORE_GATE())				\
			__atomic_store_n((p), (v), __ATOMIC_RELAXED);	\
	} while (0)
/* Store-release; pairs with whatever load-acquire the caller names. */
#define seqshm_store_release(p, v)					\
	do {								\
		if (!SEQSHM_PROOF_STORE_GATE())				\
			break;						\
		if (SEQSHM_MUTANT_AT(SEQSHM_MUTANT_RELEASE_LINE))	\
			__atomic_store_n((p), (v), __ATOMIC_RELAXED);	\
		else							\
			__atomic_store_n((p), (v), __ATOMIC_RELEASE);	\
	} while (0)

/* smp_wmb() as a release fence (stronger: see above); pairs as the call site says. */
#define seqshm_smp_wmb()						\
	do {								\
		if (!SEQSHM_MUTANT_AT(SEQSHM_MUTANT_WMB_LINE))		\
			__atomic_thread_fence(__ATOMIC_RELEASE);	\
	} while (0)
/* smp_rmb() as an acquire fence (stronger: see above); pairs as the call site says. */
#define seqshm_smp_rmb()						\
	do {								\
		if (!SEQSHM_MUTANT_AT(SEQSHM_MUTANT_RMB_LINE))		\
			__atomic_thread_fence(__ATOMIC_ACQUIRE);	\
	} while (0)
/* smp_mb() as a seq_cst fence; pairs as the call site says. */
#define seqshm_smp_mb()							\
	do {								\
		if (!SEQSHM_MUTANT_AT(SEQSHM_MUTANT_MB_LINE))		\
			__atomic_thread_fence(__ATOMIC_SEQ_CST);	\
	} while (0)

#define SEQSHM_PRINTF(fmt, args)	__attribute__((format(printf, fmt, args)))
/*
 * A compiler barrier (the registered writer's side of the wake-up protocol, wake.h) orders
 * nothing between threads. GenMC 0.10.3 ignores an LLVM fence's sync scope and would model
 * __atomic_signal_fence() as a full thread fence, proving that path with a fence it does not
 * have; here it is what it is to another thread: nothing.
 */
#define __atomic_signal_fence(order)	((void)(order))

#define seqshm_cpu_relax()	do { } while (0)
#define seqshm_likely(x)	__builtin_expect(!!(x), 1)
#define seqshm_unlikely(x)	__builtin_expect(!!(x), 0)

/*
 * The reader's racing payload copy as relaxed 64-bit word loads (see above). Payloads in the
 * harnesses are whole words; a slot's payload is SEQSHM_ALIGN-aligned and its stride a
 * multiple of SEQSHM_CACHELINE, so every word is aligned as in the shipped region.
 */
static inline void seqshm_genmc_copy_from_slot(void *dst, const void *src, size_t n)
{
	const __u64 *s = (const __u64 *)src;
	__u64 *d = (__u64 *)dst;
	size_t i;

	for (i = 0; i < n / sizeof(__u64); i++)
		d[i] = __atomic_load_n(&s[i], __ATOMIC_RELAXED);
}
#define seqshm_copy_from_slot(dst, src, n)	seqshm_genmc_copy_from_slot((dst), (src), (n))

#endif /* SEQSHM_ENV_H */
