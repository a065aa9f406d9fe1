/* SPDX-License-Identifier: GPL-2.0 */
/*
 * seqshm: the device core's own definitions (channel object, device glue), shared by its files.
 */
#ifndef _SEQSHM_INTERNAL_H
#define _SEQSHM_INTERNAL_H

#include <linux/atomic.h>
#include <linux/bits.h>
#include <linux/irq_work.h>
#include <linux/kref.h>
#include <linux/list.h>
#include <linux/miscdevice.h>
#include <linux/spinlock.h>
#include <linux/wait.h>
#include <linux/seqshm.h>

#include "protocol/seqshm_protocol.h"

/*
 * read() retries at most SEQSHM_READ_MAX_TRIES times, and for at most SEQSHM_READ_MAX_NS
 * once it has made SEQSHM_READ_MIN_TRIES attempts, before it gives up with -EAGAIN.
 */
#define SEQSHM_READ_MAX_TRIES	1000
#define SEQSHM_READ_MIN_TRIES	16
#define SEQSHM_READ_MAX_NS	(50 * NSEC_PER_MSEC)

/* The largest region a channel may have. */
#define SEQSHM_MAX_REGION	BIT_ULL(30)

/**
 * struct seqshm_channel - one channel: its region, its writer lock and its device.
 * @lock:	serializes writers; held with interrupts off from write_begin() to write_end().
 *		A raw spinlock: it never sleeps, on PREEMPT_RT either, so a writer may run in
 *		hard interrupt context there too.
 * @irqflags:	interrupt state saved by write_begin(), restored by write_end(); only the
 *		holder of @lock touches it.
 * @head:	private copy of the header's head, written under @lock.
 * @slot:	slot being written, valid under @lock between write_begin() and write_end().
 * @g:		the region's geometry for the shared protocol's steps, taken from its checked
 *		header (seqshm_geometry_init()); its payload_size is the channel's.
 * @region:	the region (vmalloc_user()), @region_size bytes; freed with the last reference.
 * @hdr:	@region as the header.
 * @region_size: bytes of @region.
 * @ref:	one reference for the producer (dropped by destroy) and one per open file.
 * @node:	entry in the list of live channels (names are unique among them).
 * @dead:	set by destroy: no more writes; read() fails, poll() reports a hang-up.
 * @wq:	pollers waiting for a new version. Its lock is a spinlock_t, a sleeping lock on
 *		PREEMPT_RT: writers never take it, they queue @wake_work.
 * @wake_work:	wakes @wq on behalf of a writer, out of the writer's context (see
 *		seqshm_wake_pollers()); synced by destroy before the producer's reference goes.
 * @misc:	the misc device /dev/seqshm/<name>.
 * @devname:	name of @misc in the misc class: "seqshm-<name>".
 * @nodename:	"seqshm/<name>", the node under /dev.
 * @nr_reads:	counters reported by SEQSHM_IOC_STATS (see struct seqshm_ioc_stats).
 * @nr_read_retries: see @nr_reads.
 * @nr_read_busy: see @nr_reads.
 * @nr_mmaps:	see @nr_reads.
 * @nr_maps_active: see @nr_reads.
 * @nr_opens:	see @nr_reads.
 * @nr_poll_wakeups: see @nr_reads.
 */
struct seqshm_channel {
	raw_spinlock_t lock;	/* serializes writers, see @lock above */
	unsigned long irqflags;
	u64 head;
	u32 slot;
	struct seqshm_geometry g;
	void *region;
	struct seqshm_header *hdr;
	size_t region_size;
	struct kref ref;
	struct list_head node;
	bool dead;
	struct wait_queue_head wq;
	struct irq_work wake_work;
	struct miscdevice misc;
	char *devname;
	char *nodename;
	atomic64_t nr_reads;
	atomic64_t nr_read_retries;
	atomic64_t nr_read_busy;
	atomic64_t nr_mmaps;
	atomic64_t nr_maps_active;
	atomic64_t nr_opens;
	atomic64_t nr_poll_wakeups;
};

extern const struct file_operations seqshm_fops;

void seqshm_channel_get(struct seqshm_channel *ch);
void seqshm_channel_put(struct seqshm_channel *ch);
int seqshm_channel_read(struct seqshm_channel *ch, void *dst, u64 *write_seq);

#endif /* _SEQSHM_INTERNAL_H */
