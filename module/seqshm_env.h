/* SPDX-License-Identifier: GPL-2.0 */
/*
 * seqshm: the kernel's environment for the shared protocol source (protocol/seqshm_protocol.h).
 *
 * The primitives are the kernel's own, as the vDSO's seqlock uses them
 * (include/vdso/helpers.h): WRITE_ONCE + smp_wmb() on the writer, smp_load_acquire(),
 * READ_ONCE + smp_rmb() on the reader, smp_store_release() where a store publishes.
 */
#ifndef _SEQSHM_ENV_H
#define _SEQSHM_ENV_H

#include <linux/compiler.h>
#include <linux/kernel.h>
#include <linux/stdarg.h>
#include <linux/string.h>
#include <linux/time.h>
#include <linux/types.h>
#include <asm/barrier.h>
#include <uapi/linux/seqshm.h>

/*
 * head (and each slot's write_seq) is a 64-bit word that writers store and readers load in
 * one access (smp_store_release()/smp_load_acquire() refuse wider-than-word types): a 32-bit
 * kernel cannot keep that promise, so it cannot build seqshm.
 */
#if BITS_PER_LONG != 64
#error "seqshm needs a 64-bit kernel: head and write_seq are loaded and stored in one access"
#endif

/* [A][C] of seqshm_protocol.h: a reader's load that pairs with a writer's store-release. */
#define seqshm_load_acquire(p)		smp_load_acquire(p)
#define seqshm_load_relaxed(p)		READ_ONCE(*(p))
#define seqshm_store_relaxed(p, v)	WRITE_ONCE(*(p), (v))
/* [A][C] of seqshm_protocol.h: a writer's store that pairs with a reader's load-acquire. */
#define seqshm_store_release(p, v)	smp_store_release((p), (v))
/* [B] of seqshm_protocol.h: after the odd seq, pairs with the reader's smp_rmb(). */
#define seqshm_smp_wmb()		smp_wmb()
/* [B] of seqshm_protocol.h: before the seq re-check, pairs with the writer's smp_wmb(). */
#define seqshm_smp_rmb()		smp_rmb()
#define seqshm_likely(x)		likely(x)
#define SEQSHM_PRINTF(fmt, args)	__printf(fmt, args)
/*
 * The reader's copy races with the writer by design: memcpy, as the vDSO copies its data
 * page's fields with plain loads; nothing copied is used before the seq re-check passes.
 */
#define seqshm_copy_from_slot(dst, src, n)	memcpy((dst), (src), (n))

#endif /* _SEQSHM_ENV_H */
