// SPDX-License-Identifier: GPL-2.0
/*
 * seqshm: channels: the region's layout, the seqlock writer (exported API) and reader.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/ctype.h>
#include <linux/export.h>
#include <linux/irq_work.h>
#include <linux/log2.h>
#include <linux/mutex.h>
#include <linux/math.h>
#include <linux/overflow.h>
#include <linux/poll.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/timekeeping.h>
#include <linux/vmalloc.h>

#include "seqshm_internal.h"

/* Live channels, so that a name is refused cleanly (-EEXIST) when it is taken. */
static LIST_HEAD(seqshm_channels);
static DEFINE_MUTEX(seqshm_channels_lock);

static bool seqshm_name_valid(const char *name)
{
	size_t len = strnlen(name, SEQSHM_NAME_LEN);
	size_t i;

	if (len == 0 || len >= SEQSHM_NAME_LEN)
		return false;
	if (!strcmp(name, ".") || !strcmp(name, ".."))
		return false;
	for (i = 0; i < len; i++) {
		if (!isalnum(name[i]) && name[i] != '_' && name[i] != '.' && name[i] != '-')
			return false;
	}
	return true;
}

static int seqshm_check_fields(const struct seqshm_channel_config *cfg)
{
	unsigned int i, j;

	if (!cfg->fields || cfg->nr_fields < 1 || cfg->nr_fields > SEQSHM_MAX_FIELDS)
		return -EINVAL;
	if (!cfg->record && cfg->nr_fields != 1)
		return -EINVAL;
	if (cfg->itemsize == 0)
		return -EINVAL;

	for (i = 0; i < cfg->nr_fields; i++) {
		const struct seqshm_field *f = &cfg->fields[i];
		size_t nlen = strnlen(f->name, SEQSHM_FIELD_NAME_LEN);
		u64 end;

		if (nlen >= SEQSHM_FIELD_NAME_LEN)
			return -EINVAL;
		if (memchr_inv(f->__reserved, 0, sizeof(f->__reserved)))
			return -EINVAL;
		if (!seqshm_kind_size_valid(f->kind, f->size) || f->count == 0)
			return -EINVAL;
		if ((f->flags & ~SEQSHM_FIELD_F_KNOWN) ||
		    (f->count > 1 && !(f->flags & SEQSHM_FIELD_F_ARRAY)))
			return -EINVAL;
		end = (u64)f->offset + (u64)f->count * f->size;
		if (end > cfg->itemsize)
			return -EINVAL;
		if (!cfg->record) {
			if (nlen || f->offset || f->count != 1 || f->flags ||
			    f->size != cfg->itemsize)
				return -EINVAL;
			continue;
		}
		if (!nlen)
			return -EINVAL;
		for (j = 0; j < i; j++) {
			if (!strncmp(f->name, cfg->fields[j].name, SEQSHM_FIELD_NAME_LEN))
				return -EINVAL;
		}
	}
	return 0;
}

/* Validates @cfg and computes the geometry of its region into @ch. */
static int seqshm_layout(const struct seqshm_channel_config *cfg, struct seqshm_channel *ch)
{
	u64 payload_size = cfg->itemsize;
	u64 payload_offset, stride, slots_end, region;
	unsigned int i;
	int ret;

	if (!cfg->name || !seqshm_name_valid(cfg->name))
		return -EINVAL;
	ret = seqshm_check_fields(cfg);
	if (ret)
		return ret;
	if (cfg->ndim > SEQSHM_MAX_DIMS || (cfg->ndim && !cfg->shape))
		return -EINVAL;
	for (i = 0; i < cfg->ndim; i++) {
		if (cfg->shape[i] == 0)
			return -EINVAL;
		if (check_mul_overflow(payload_size, cfg->shape[i], &payload_size))
			return -EOVERFLOW;
		if (payload_size > SEQSHM_MAX_REGION)
			return -E2BIG;
	}
	if (!cfg->nr_slots || cfg->nr_slots > SEQSHM_MAX_SLOTS || !is_power_of_2(cfg->nr_slots))
		return -EINVAL;

	stride = round_up(payload_size, SEQSHM_CACHELINE);
	slots_end = SEQSHM_SLOTS_OFFSET + (u64)cfg->nr_slots * sizeof(struct seqshm_slot);
	payload_offset = round_up(slots_end, SEQSHM_ALIGN);
	/* stride <= 1 GiB + 63 and nr_slots <= 1024: no overflow in u64. */
	region = round_up(payload_offset + stride * cfg->nr_slots, PAGE_SIZE);
	if (region > SEQSHM_MAX_REGION)
		return -E2BIG;

	ch->payload_size = payload_size;
	ch->slot_stride = stride;
	ch->region_size = region;
	ch->mask = cfg->nr_slots - 1;
	return 0;
}

/* Fills the static fields of the header; the magic goes last, with release semantics. */
static void seqshm_fill_header(const struct seqshm_channel_config *cfg, struct seqshm_channel *ch)
{
	struct seqshm_header *hdr = ch->hdr;
	unsigned int i;

	hdr->abi_version = SEQSHM_ABI_VERSION;
	hdr->header_size = sizeof(*hdr);
	hdr->region_size = ch->region_size;
	hdr->payload_offset = ch->payload - (u8 *)ch->region;
	hdr->payload_size = ch->payload_size;
	hdr->slot_stride = ch->slot_stride;
	hdr->nr_slots = ch->mask + 1;
	hdr->flags = cfg->record ? SEQSHM_F_RECORD : 0;
	hdr->clock_id = CLOCK_MONOTONIC;
	hdr->writer_pid = 0;
	strscpy(hdr->name, cfg->name, sizeof(hdr->name));
	hdr->itemsize = cfg->itemsize;
	hdr->nr_fields = cfg->nr_fields;
	hdr->ndim = cfg->ndim;
	for (i = 0; i < cfg->ndim; i++)
		hdr->shape[i] = cfg->shape[i];
	for (i = 0; i < cfg->nr_fields; i++) {
		struct seqshm_field *f = &hdr->fields[i];

		strscpy_pad(f->name, cfg->fields[i].name, sizeof(f->name));
		f->offset = cfg->fields[i].offset;
		f->count = cfg->fields[i].count;
		f->kind = cfg->fields[i].kind;
		f->size = cfg->fields[i].size;
		f->flags = cfg->fields[i].flags;
	}
	/*
	 * Pairs with the reader's load-acquire of the magic: a reader that sees the magic sees
	 * every static field above. (Nobody can map the region yet; this is for the record.)
	 */
	smp_store_release(&hdr->magic, SEQSHM_MAGIC);
}

/* Under seqshm_channels_lock. */
static struct seqshm_channel *seqshm_channel_find(const char *name)
{
	struct seqshm_channel *ch;

	list_for_each_entry(ch, &seqshm_channels, node) {
		if (!strncmp(ch->hdr->name, name, SEQSHM_NAME_LEN))
			return ch;
	}
	return NULL;
}

static void seqshm_channel_release(struct kref *ref)
{
	struct seqshm_channel *ch = container_of(ref, struct seqshm_channel, ref);

	vfree(ch->region);
	kfree(ch->devname);
	kfree(ch->nodename);
	kfree(ch);
}

/**
 * seqshm_channel_get() - take a reference on a channel (for an open file).
 * @ch: the channel.
 */
void seqshm_channel_get(struct seqshm_channel *ch)
{
	kref_get(&ch->ref);
}

/**
 * seqshm_channel_put() - drop a reference; the last one frees the region.
 * @ch: the channel.
 */
void seqshm_channel_put(struct seqshm_channel *ch)
{
	kref_put(&ch->ref, seqshm_channel_release);
}

/*
 * Wakes the channel's pollers on behalf of seqshm_write_end(), which only queues this.
 *
 * A writer may run in hard interrupt context, where a wake-up must not happen on PREEMPT_RT:
 * it takes the wait queue's spinlock_t, a sleeping lock there. So the work is set up with
 * init_irq_work(), no flags, as perf does for the wake-up of its ring buffer's readers
 * (event->pending_irq, perf_pending_irq()): without PREEMPT_RT it runs from the irq_work
 * interrupt the writer's CPU raises at once (a self-IPI on x86; hard interrupt context, where
 * a wake-up is fine); with PREEMPT_RT it runs in that CPU's irq_work/N kernel thread
 * (SCHED_FIFO), where the wait-queue lock may sleep. IRQ_WORK_INIT_HARD() would run it in
 * hard interrupt context on PREEMPT_RT too, the very thing to avoid (perf keeps that flavour
 * for pending_disable_irq, which takes no sleeping lock); IRQ_WORK_INIT_LAZY() would wait
 * for the next tick.
 *
 * Queuing a work that is pending (queued, not yet started) does nothing: the pending run
 * wakes every sleeper that is on the queue when it runs, the new write's included. Queuing
 * one that is running queues it again. So no wake-up is lost.
 */
static void seqshm_wake_pollers(struct irq_work *work)
{
	struct seqshm_channel *ch = container_of(work, struct seqshm_channel, wake_work);

	atomic64_inc(&ch->nr_poll_wakeups);
	wake_up_interruptible_poll(&ch->wq, EPOLLIN | EPOLLRDNORM);
}

/**
 * seqshm_channel_create() - create a channel and its device /dev/seqshm/<name>.
 * @cfg: name, element type, shape and number of slots; copied, the caller may free it.
 *
 * The region is allocated with vmalloc_user() (zeroed: before the first write every slot
 * reads as write number 0 with an all-zero payload) and laid out as <uapi/linux/seqshm.h>
 * describes. The device appears only once the region is complete.
 *
 * Context: process context; may sleep.
 * Return: the channel, or an ERR_PTR(): -EINVAL for a bad @cfg, -E2BIG or -EOVERFLOW for a
 * region over 1 GiB, -EEXIST if a live channel has that name, -ENOMEM, or a misc_register()
 * error.
 */
struct seqshm_channel *seqshm_channel_create(const struct seqshm_channel_config *cfg)
{
	struct seqshm_channel *ch;
	int ret;

	if (!cfg)
		return ERR_PTR(-EINVAL);
	ch = kzalloc(sizeof(*ch), GFP_KERNEL);
	if (!ch)
		return ERR_PTR(-ENOMEM);
	ret = seqshm_layout(cfg, ch);
	if (ret)
		goto err_free;

	ret = -ENOMEM;
	ch->region = vmalloc_user(ch->region_size);
	if (!ch->region)
		goto err_free;
	ch->hdr = ch->region;
	ch->slots = ch->region + SEQSHM_SLOTS_OFFSET;
	ch->payload = ch->region +
		round_up(SEQSHM_SLOTS_OFFSET + (u64)(ch->mask + 1) * sizeof(struct seqshm_slot),
			 SEQSHM_ALIGN);
	ch->devname = kasprintf(GFP_KERNEL, "seqshm-%s", cfg->name);
	ch->nodename = kasprintf(GFP_KERNEL, "seqshm/%s", cfg->name);
	if (!ch->devname || !ch->nodename)
		goto err_free;

	raw_spin_lock_init(&ch->lock);
	kref_init(&ch->ref);
	init_waitqueue_head(&ch->wq);
	/* Not IRQ_WORK_INIT_HARD: see seqshm_wake_pollers(). */
	init_irq_work(&ch->wake_work, seqshm_wake_pollers);
	seqshm_fill_header(cfg, ch);

	ch->misc.minor = MISC_DYNAMIC_MINOR;
	ch->misc.name = ch->devname;
	ch->misc.nodename = ch->nodename;
	ch->misc.mode = 0444;
	ch->misc.fops = &seqshm_fops;

	mutex_lock(&seqshm_channels_lock);
	if (seqshm_channel_find(cfg->name)) {
		ret = -EEXIST;
	} else {
		ret = misc_register(&ch->misc);
		if (!ret)
			list_add(&ch->node, &seqshm_channels);
	}
	mutex_unlock(&seqshm_channels_lock);
	if (ret)
		goto err_free;

	pr_debug("channel %s: payload %zu B, %u slots, region %zu B\n", cfg->name,
		 ch->payload_size, ch->mask + 1, ch->region_size);
	return ch;

err_free:
	vfree(ch->region);
	kfree(ch->devname);
	kfree(ch->nodename);
	kfree(ch);
	return ERR_PTR(ret);
}
EXPORT_SYMBOL_GPL(seqshm_channel_create);

/**
 * seqshm_channel_destroy() - remove a channel's device and drop the producer's reference.
 * @ch: the channel, or NULL or an ERR_PTR() (then nothing happens).
 *
 * No new file can open the channel afterwards. Files already open (and their mappings) keep
 * the region alive until the last one goes: mappings keep showing the last write and a
 * state of SEQSHM_STATE_CLOSED, read() fails with -ENODEV and poll() reports EPOLLHUP.
 * The caller must not write to @ch after this (nor concurrently with it).
 *
 * Context: process context; may sleep.
 */
void seqshm_channel_destroy(struct seqshm_channel *ch)
{
	unsigned long flags;

	if (IS_ERR_OR_NULL(ch))
		return;
	mutex_lock(&seqshm_channels_lock);
	list_del(&ch->node);
	misc_deregister(&ch->misc);
	mutex_unlock(&seqshm_channels_lock);
	raw_spin_lock_irqsave(&ch->lock, flags);
	WRITE_ONCE(ch->dead, true);
	/*
	 * Under the writers' lock, so after the last store-release of head: pairs with the
	 * reader's load-acquire of state, which then sees every write the channel got.
	 */
	smp_store_release(&ch->hdr->state, SEQSHM_STATE_CLOSED);
	raw_spin_unlock_irqrestore(&ch->lock, flags);
	/*
	 * The last write's wake-up may still be queued or running on some CPU: wait for it. No
	 * writer queues it again (none may write after this), so once synced it stays idle, and
	 * the channel (maybe freed by the put below) and this module's code can go.
	 */
	irq_work_sync(&ch->wake_work);
	wake_up_interruptible_poll(&ch->wq, EPOLLHUP);
	seqshm_channel_put(ch);
}
EXPORT_SYMBOL_GPL(seqshm_channel_destroy);

/**
 * seqshm_channel_payload_size() - bytes of one payload of a channel.
 * @ch: the channel.
 *
 * Return: the payload size (itemsize times the product of the shape).
 */
size_t seqshm_channel_payload_size(const struct seqshm_channel *ch)
{
	return ch->payload_size;
}
EXPORT_SYMBOL_GPL(seqshm_channel_payload_size);

/**
 * seqshm_write_begin() - start a write: take the writer lock and mark the next slot odd.
 * @ch: the channel.
 * @write_seq: if not NULL, receives the number of this write (1 for the first).
 *
 * Takes the channel's raw spinlock with interrupts saved and disabled (a real spinning lock
 * on PREEMPT_RT too, so hard interrupt context is fine there); it is held until
 * seqshm_write_end(), which must follow on the same CPU without sleeping in between. The
 * returned payload (seqshm_channel_payload_size() bytes) holds whatever this slot held
 * before (an old write, or zeros): write all of it that matters.
 *
 * Context: any context but NMI. Never sleeps, never waits for a reader.
 * Return: the payload of the slot being written.
 */
void *seqshm_write_begin(struct seqshm_channel *ch, u64 *write_seq)
	__acquires(ch)
{
	struct seqshm_slot *slot;
	unsigned long flags;
	u32 s;

	raw_spin_lock_irqsave(&ch->lock, flags);
	ch->irqflags = flags;
	s = (ch->head + 1) & ch->mask;
	slot = &ch->slots[s];
	ch->slot = slot;
	/* Odd: the copy in this slot is being rewritten. */
	WRITE_ONCE(slot->seq, slot->seq + 1);
	/*
	 * Pairs with the reader's smp_rmb() before it re-reads seq: a reader whose copy saw any
	 * byte written below sees this odd seq (or a later one) and retries.
	 */
	smp_wmb();
	if (write_seq)
		*write_seq = ch->head + 1;
	return ch->payload + (size_t)s * ch->slot_stride;
}
EXPORT_SYMBOL_GPL(seqshm_write_begin);

/**
 * seqshm_write_end() - finish a write: publish the slot as the newest copy, drop the lock.
 * @ch: the channel, after seqshm_write_begin().
 * @timestamp_ns: CLOCK_MONOTONIC time of the data in ns; 0 means now (ktime_get_ns()).
 *
 * Stores the slot's write number and timestamp, turns its seq even, stores the new head with
 * release semantics, releases the lock and restores interrupts. If pollers sleep, it queues
 * an irq_work that wakes them from a context where that is allowed (the wait queue's lock
 * sleeps on PREEMPT_RT): this function itself takes no lock that can sleep, on any kernel.
 *
 * Context: any context but NMI (hard interrupt included, on PREEMPT_RT too), same CPU and
 * context as the seqshm_write_begin() it ends.
 */
void seqshm_write_end(struct seqshm_channel *ch, u64 timestamp_ns)
	__releases(ch)
{
	struct seqshm_slot *slot = ch->slot;
	unsigned long flags = ch->irqflags;
	u64 k = ch->head + 1;

	if (!timestamp_ns)
		timestamp_ns = ktime_get_ns();
	WRITE_ONCE(slot->write_seq, k);
	WRITE_ONCE(slot->timestamp_ns, timestamp_ns);
	/*
	 * Pairs with the reader's load-acquire of seq: a reader that sees the even seq below
	 * sees the whole payload, write_seq and timestamp written before it.
	 */
	smp_wmb();
	WRITE_ONCE(slot->seq, slot->seq + 1);
	/*
	 * Pairs with the reader's load-acquire of head: a reader that sees head == k finds
	 * slot k's seq already even (or later) and its payload complete.
	 */
	smp_store_release(&ch->hdr->head, k);
	ch->head = k;
	ch->slot = NULL;
	raw_spin_unlock_irqrestore(&ch->lock, flags);

	/*
	 * wq_has_sleeper()'s smp_mb() pairs with the smp_mb() in seqshm_poll() between
	 * poll_wait() and its load of head: either the poller sees head == k, or we see it on
	 * the queue and have it woken. waitqueue_active() reads the list without its lock, so
	 * a write without sleepers costs no lock and no irq_work. The wake-up itself is
	 * deferred to seqshm_wake_pollers(), which runs after this (it is queued here) and
	 * takes the queue's lock: it finds the poller we saw on the queue, which leaves only
	 * once woken or once its poll() is over.
	 */
	if (wq_has_sleeper(&ch->wq))
		irq_work_queue(&ch->wake_work);
}
EXPORT_SYMBOL_GPL(seqshm_write_end);

/**
 * seqshm_publish() - write a buffer as the channel's newest copy.
 * @ch: the channel.
 * @buf: the data.
 * @len: bytes of @buf, at most the payload size; the rest of the payload is zeroed.
 *
 * Context: any context but NMI. Never sleeps, never waits for a reader.
 * Return: 0, or -EINVAL if @len is larger than the payload.
 */
int seqshm_publish(struct seqshm_channel *ch, const void *buf, size_t len)
{
	u8 *dst;

	if (len > ch->payload_size)
		return -EINVAL;
	dst = seqshm_write_begin(ch, NULL);
	memcpy(dst, buf, len);
	memset(dst + len, 0, ch->payload_size - len);
	seqshm_write_end(ch, 0);
	return 0;
}
EXPORT_SYMBOL_GPL(seqshm_publish);

/**
 * seqshm_channel_read() - copy the newest complete payload with the seqlock reader.
 * @ch: the channel.
 * @dst: payload_size bytes of kernel memory.
 * @write_seq: in: the newest write number the caller has already seen (0 if none); out: the
 *	write number of the copy, never older than that.
 *
 * The same read loop as a userspace reader's, bounded: after SEQSHM_READ_MAX_TRIES attempts,
 * or SEQSHM_READ_MAX_NS once it made SEQSHM_READ_MIN_TRIES, it gives up. Takes no lock, so it
 * never delays the writer.
 *
 * Context: process context (it may reschedule between attempts).
 * Return: 0, or -EAGAIN if no consistent copy could be taken in the bound.
 */
int seqshm_channel_read(struct seqshm_channel *ch, void *dst, u64 *write_seq)
{
	u64 deadline = ktime_get_ns() + SEQSHM_READ_MAX_NS;
	u64 seen = *write_seq;
	unsigned int tries;

	for (tries = 0; tries < SEQSHM_READ_MAX_TRIES; tries++) {
		struct seqshm_slot *slot;
		u64 head, ws;
		u32 seq, s;

		if (tries) {
			atomic64_inc(&ch->nr_read_retries);
			/* A reader preempted past the deadline still gets a few attempts. */
			if (tries >= SEQSHM_READ_MIN_TRIES && ktime_get_ns() > deadline)
				break;
			cpu_relax();
			cond_resched();
		}
		/* Pairs with the writer's smp_store_release() of head. */
		head = smp_load_acquire(&ch->hdr->head);
		/*
		 * A slot turns even before head names it, so the caller may have seen a newer
		 * write than head says; that write's slot holds it or a later one.
		 */
		s = max(head, seen) & ch->mask;
		slot = &ch->slots[s];
		/* Pairs with the writer's second smp_wmb() (before seq turns even). */
		seq = smp_load_acquire(&slot->seq);
		if (seq & 1)
			continue;
		memcpy(dst, ch->payload + (size_t)s * ch->slot_stride, ch->payload_size);
		ws = READ_ONCE(slot->write_seq);
		/* Pairs with the writer's first smp_wmb() (after seq turned odd). */
		smp_rmb();
		if (READ_ONCE(slot->seq) != seq)
			continue;
		*write_seq = ws;
		return 0;
	}
	return -EAGAIN;
}
