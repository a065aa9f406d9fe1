/* SPDX-License-Identifier: GPL-2.0 */
/*
 * seqshm: in-kernel API for producers that publish data to userspace through a seqshm channel.
 *
 * A producer creates a channel (a region laid out as in <uapi/linux/seqshm.h>, shown at
 * /dev/seqshm/<name>), then writes to it from any context but NMI: write_begin() returns the
 * payload of the slot being written, write_end() publishes it; or publish() copies a buffer.
 * Writers never sleep and never wait for readers, and take no lock that can sleep on any
 * kernel, PREEMPT_RT included (so hard interrupt context is fine): writers of one channel are
 * serialized by a raw spinlock taken with interrupts saved between write_begin() and
 * write_end(), and pollers are woken from an irq_work, not from the writer's context.
 */
#ifndef _LINUX_SEQSHM_H
#define _LINUX_SEQSHM_H

#include <linux/types.h>
#include <uapi/linux/seqshm.h>

struct seqshm_channel;

/*
 * The mode bits a channel's device may have: read for its owner, its group and others. A
 * channel holds what its producer publishes, which may be private: a producer that names no
 * mode gets SEQSHM_MODE_DEFAULT, its owner (root) only, as a misc device without a mode gets
 * 0600 from devtmpfs. Sharing is the producer's (or, through udev, the administrator's) choice.
 */
#define SEQSHM_MODE_READ_BITS	0444
#define SEQSHM_MODE_DEFAULT	0400

/**
 * struct seqshm_channel_config - what a producer asks for when it creates a channel.
 * @name:	channel name: 1 to SEQSHM_NAME_LEN - 1 characters of ``[A-Za-z0-9_.-]``, not "." or
 *		"..". The device is /dev/seqshm/@name.
 * @record:	true: the element is a record of named fields (SEQSHM_F_RECORD); false: a plain
 *		scalar described by exactly one field with an empty name, offset 0, count 1.
 * @fields:	the field table, @nr_fields entries (copied; reserved bytes must be zero).
 * @nr_fields:	1 to SEQSHM_MAX_FIELDS (exactly 1 when !@record).
 * @itemsize:	bytes of one element; every field lies inside it.
 * @ndim:	0 to SEQSHM_MAX_DIMS.
 * @shape:	@ndim entries, each >= 1.
 * @nr_slots:	a power of two from 1 to SEQSHM_MAX_SLOTS.
 * @mode:	who may open the device: read bits only (SEQSHM_MODE_READ_BITS), e.g. 0400 (its
 *		owner, root), 0440 (root and the node's group, which a udev rule sets) or 0444
 *		(every user); 0 means SEQSHM_MODE_DEFAULT, 0400. Any other bit (write, execute,
 *		set-id, sticky, a file type) is refused with -EINVAL: a channel is read-only to
 *		userspace, and a mode must mean what it says.
 */
struct seqshm_channel_config {
	const char *name;
	bool record;
	const struct seqshm_field *fields;
	unsigned int nr_fields;
	u32 itemsize;
	unsigned int ndim;
	const u64 *shape;
	unsigned int nr_slots;
	umode_t mode;
};

struct seqshm_channel *seqshm_channel_create(const struct seqshm_channel_config *cfg);
void seqshm_channel_destroy(struct seqshm_channel *ch);
size_t seqshm_channel_payload_size(const struct seqshm_channel *ch);
void *seqshm_write_begin(struct seqshm_channel *ch, u64 *write_seq) __acquires(ch);
void seqshm_write_end(struct seqshm_channel *ch, u64 timestamp_ns) __releases(ch);
int seqshm_publish(struct seqshm_channel *ch, const void *buf, size_t len);
int seqshm_check_header(const struct seqshm_header *hdr, u64 region_size, char *why,
			size_t whylen);

#endif /* _LINUX_SEQSHM_H */
