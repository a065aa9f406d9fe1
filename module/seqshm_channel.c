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

/*
 * Lays out @cfg's region into @hdr (all but the magic) with the shared protocol's
 * seqshm_layout_init(), which ends with the check every reader makes of a header: the kernel
 * publishes no header a reader would reject. The kernel's own rules come first: a name that
 * can be a device node, and the pointers a config must have.
 */
static int seqshm_layout(const struct seqshm_channel_config *cfg, struct seqshm_header *hdr)
{
	struct seqshm_layout_req req = {
		.name = cfg->name,
		.nr_slots = cfg->nr_slots,
		.ndim = cfg->ndim,
		.shape = cfg->shape,
		.itemsize = cfg->itemsize,
		.flags = cfg->record ? SEQSHM_F_RECORD : 0,
		.nr_fields = cfg->nr_fields,
		.fields = cfg->fields,
		.writer_pid = 0,	/* the kernel: no process to watch */
		.region_align = PAGE_SIZE,
		.max_region = SEQSHM_MAX_REGION,
	};
	char why[128];
	int ret;

	/* The ranges are the shared layout's to check; the pointers are the config's. */
	if (!cfg->name || !seqshm_name_valid(cfg->name) || !cfg->fields ||
	    (cfg->ndim && !cfg->shape))
		return -EINVAL;
	ret = seqshm_layout_init(hdr, &req, why, sizeof(why));
	if (ret == SEQSHM_E2BIG)
		return -E2BIG;
	if (ret == SEQSHM_EOVERFLOW)
		return -EOVERFLOW;
	if (ret) {
		pr_debug("channel %s: %s\n", cfg->name, why);
		return -EINVAL;
	}
	return 0;
}

/*
 * The mode of @cfg's device: SEQSHM_MODE_DEFAULT for 0, @cfg->mode if it has read bits only,
 * else 0 (a bad config). Never 0 for a good one: misc_register() with mode 0 would leave the
 * node to devtmpfs's default (0600) and udev's (0660 once a rule names a group), write bits
 * included.
 */
static umode_t seqshm_mode(const struct seqshm_channel_config *cfg)
{
	if (!cfg->mode)
		return SEQSHM_MODE_DEFAULT;
	if (cfg->mode & ~SEQSHM_MODE_READ_BITS)
		return 0;
	return cfg->mode;
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
 * @cfg: name, element type, shape, number of slots and the device's mode; copied, the caller
 *	may free it.
 *
 * The region is allocated with vmalloc_user() (zeroed: before the first write every slot
 * reads as write number 0 with an all-zero payload) and laid out as <uapi/linux/seqshm.h>
 * describes. The device appears only once the region is complete, with @cfg->mode (0:
 * SEQSHM_MODE_DEFAULT), owned by root:root until udev (if it runs) applies its rules.
 *
 * Context: process context; may sleep.
 * Return: the channel, or an ERR_PTR(): -EINVAL for a bad @cfg (a mode with a bit outside
 * SEQSHM_MODE_READ_BITS included), -E2BIG for a region over 1 GiB, -EOVERFLOW for a shape
 * whose size overflows 64 bits, -EEXIST if a live channel has that name, -ENOMEM, or a
 * misc_register() error.
 */
struct seqshm_channel *seqshm_channel_create(const struct seqshm_channel_config *cfg)
{
	struct seqshm_header *hdr = NULL;
	struct seqshm_channel *ch;
	char why[128];
	umode_t mode;
	int ret;

	if (!cfg)
		return ERR_PTR(-EINVAL);
	ch = kzalloc(sizeof(*ch), GFP_KERNEL);
	hdr = kmalloc(sizeof(*hdr), GFP_KERNEL);
	ret = -ENOMEM;
	if (!ch || !hdr)
		goto err_free;
	ret = seqshm_layout(cfg, hdr);
	if (ret)
		goto err_free;
	mode = seqshm_mode(cfg);
	if (!mode) {
		pr_debug("channel %s: mode %#o has bits other than %#o (read)\n", cfg->name,
			 cfg->mode, SEQSHM_MODE_READ_BITS);
		ret = -EINVAL;
		goto err_free;
	}
	/*
	 * A name already taken fails before the region (up to 1 GiB) is allocated; the check
	 * that decides is the one under the lock at registration below.
	 */
	mutex_lock(&seqshm_channels_lock);
	ret = seqshm_channel_find(cfg->name) ? -EEXIST : 0;
	mutex_unlock(&seqshm_channels_lock);
	if (ret)
		goto err_free;

	ret = -ENOMEM;
	ch->region_size = hdr->region_size;
	ch->region = vmalloc_user(ch->region_size);
	if (!ch->region)
		goto err_free;
	ch->hdr = ch->region;
	memcpy(ch->hdr, hdr, sizeof(*hdr));
	/*
	 * The header as it will be published (the private copy, just copied into the region,
	 * with the magic set) through the readers' own check, which seqshm_layout_init() also
	 * ended with: the geometry below is taken from a checked header, as a reader takes its
	 * own.
	 */
	hdr->magic = SEQSHM_MAGIC;
	if (WARN_ON(seqshm_header_check(hdr, ch->region_size, why, sizeof(why)))) {
		pr_err("channel %s: its own header fails the readers' check: %s\n", cfg->name, why);
		ret = -EINVAL;
		goto err_free;
	}
	seqshm_geometry_init(&ch->g, ch->region, hdr);
	ch->devname = kasprintf(GFP_KERNEL, "seqshm-%s", cfg->name);
	ch->nodename = kasprintf(GFP_KERNEL, "seqshm/%s", cfg->name);
	if (!ch->devname || !ch->nodename)
		goto err_free;

	raw_spin_lock_init(&ch->lock);
	kref_init(&ch->ref);
	init_waitqueue_head(&ch->wq);
	/* Not IRQ_WORK_INIT_HARD: see seqshm_wake_pollers(). */
	init_irq_work(&ch->wake_work, seqshm_wake_pollers);
	/*
	 * Pairs with the reader's load-acquire of the magic: a reader that sees the magic sees
	 * every static field. (Nobody can map the region yet; this is for the record.)
	 */
	seqshm_header_publish(ch->hdr);

	ch->misc.minor = MISC_DYNAMIC_MINOR;
	ch->misc.name = ch->devname;
	ch->misc.nodename = ch->nodename;
	ch->misc.mode = mode;
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

	pr_debug("channel %s: payload %llu B, %u slots, region %zu B\n", cfg->name,
		 ch->g.payload_size, ch->g.slot_mask + 1, ch->region_size);
	kfree(hdr);
	return ch;

err_free:
	kfree(hdr);
	if (ch) {
		vfree(ch->region);
		kfree(ch->devname);
		kfree(ch->nodename);
	}
	kfree(ch);
	return ERR_PTR(ret);
}
EXPORT_SYMBOL_GPL(seqshm_channel_create);

/**
 * seqshm_channel_destroy() - remove a channel's device and drop the producer's reference.
 * @ch: the channel, or NULL or an ERR_PTR() (then nothing happens).
 *
 * No new file can open the channel afterwards. Files already open (and their mappings) keep
 * the region alive until the last one goes; until then their mappings show the last write
 * and a state of SEQSHM_STATE_CLOSED, read() fails with -ENODEV and poll() reports EPOLLHUP.
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
	 * Under the writers' lock, so after the last store-release of head: the shared
	 * protocol's store-release of state, which pairs with the reader's load-acquire of it
	 * (seqshm_state()); a reader that sees the end then sees every write the channel got.
	 */
	seqshm_write_close(ch->hdr, SEQSHM_STATE_CLOSED);
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
 * seqshm_check_header() - check a header as every seqshm reader does.
 * @hdr: a private copy of a region's header (not one a writer may change under the check).
 * @region_size: bytes of the region the header came from, or 0 if unknown.
 * @why: receives a sentence saying what is wrong (the readers' own wording), or NULL.
 * @whylen: bytes of @why.
 *
 * The same compiled check (seqshm_header_check() of the shared protocol source) that this
 * module passes every header it publishes through, and the one the userspace readers run.
 *
 * Context: any context.
 * Return: 0; -EBADMSG if @hdr is not a seqshm header or is inconsistent, truncated or
 * unrepresentable; -EPROTONOSUPPORT if it is one of another ABI version.
 */
int seqshm_check_header(const struct seqshm_header *hdr, u64 region_size, char *why,
			size_t whylen)
{
	switch (seqshm_header_check(hdr, region_size, why, whylen)) {
	case SEQSHM_OK:
		return 0;
	case SEQSHM_EVERSION:
		return -EPROTONOSUPPORT;
	default:
		return -EBADMSG;
	}
}
EXPORT_SYMBOL_GPL(seqshm_check_header);

/**
 * seqshm_channel_payload_size() - bytes of one payload of a channel.
 * @ch: the channel.
 *
 * Return: the payload size (itemsize times the product of the shape).
 */
size_t seqshm_channel_payload_size(const struct seqshm_channel *ch)
{
	return ch->g.payload_size;
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
	unsigned long flags;

	raw_spin_lock_irqsave(&ch->lock, flags);
	ch->irqflags = flags;
	/* The slot's seq turns odd, then smp_wmb(): the shared protocol's step [B]. */
	ch->slot = seqshm_write_slot_begin(&ch->g, ch->head);
	if (write_seq)
		*write_seq = ch->head + 1;
	return seqshm_slot_payload_w(&ch->g, ch->slot);
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
	unsigned long flags = ch->irqflags;
	u64 k = ch->head + 1;

	if (!timestamp_ns)
		timestamp_ns = ktime_get_ns();
	/*
	 * Metadata, the slot's seq even with smp_store_release() ([A]), then head with
	 * smp_store_release() ([C]): the shared protocol's steps, each barrier's pair named there.
	 */
	seqshm_write_slot_end(&ch->g, ch->slot, k, timestamp_ns);
	ch->head = k;
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

	if (len > ch->g.payload_size)
		return -EINVAL;
	dst = seqshm_write_begin(ch, NULL);
	memcpy(dst, buf, len);
	memset(dst + len, 0, ch->g.payload_size - len);
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
	struct seqshm_meta meta;
	unsigned int tries;

	for (tries = 0; tries < SEQSHM_READ_MAX_TRIES; tries++) {
		if (tries) {
			atomic64_inc(&ch->nr_read_retries);
			/* A reader preempted past the deadline still gets a few attempts. */
			if (tries >= SEQSHM_READ_MIN_TRIES && ktime_get_ns() > deadline)
				break;
			cpu_relax();
			cond_resched();
		}
		/*
		 * The shared protocol's read: the slot from head and the newest write the caller
		 * has seen (never back in time), seq load-acquire ([A]), the copy, smp_rmb() and
		 * the seq re-check ([B]).
		 */
		if (seqshm_try_read_slot(&ch->g, seqshm_pick_slot(&ch->g, *write_seq), dst, &meta))
			continue;
		*write_seq = meta.write_seq;
		return 0;
	}
	return -EAGAIN;
}
