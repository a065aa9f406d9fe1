// SPDX-License-Identifier: GPL-2.0
/*
 * seqshm_bench_mutex: benchmark-only model of the seed answer's design, for comparison with
 * seqshm: a page the kernel writes from an hrtimer, read by userspace between ioctl LOCK and
 * ioctl UNLOCK. Not for production: it exists to measure what that design costs.
 *
 * The seed answer takes a mutex through ioctl and holds it in userspace. A kernel mutex may
 * not be held across a return to userspace, nor taken from a timer, so this models it as a
 * lock word: LOCK sleeps until the word is free and sets it to the caller's file; UNLOCK (or
 * closing that file) frees it. The hrtimer writer can only try to take the word and, when a
 * reader holds it, skips that tick and counts it: the kernel side waits on userspace, which
 * is the point of the comparison.
 *
 * /dev/seqshm_bench_mutex: mmap one page read-only (offset 0); ioctl LOCK, UNLOCK, STATS.
 * Page layout: u64 words, every word = the write number (the same pattern as seqshm's
 * selftest channel), so a torn copy is visible.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/atomic.h>
#include <linux/fs.h>
#include <linux/hrtimer.h>
#include <linux/ioctl.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/uaccess.h>
#include <linux/version.h>
#include <linux/vmalloc.h>
#include <linux/wait.h>

#define BENCH_IOC_MAGIC		0xB7
#define BENCH_IOC_LOCK		_IO(BENCH_IOC_MAGIC, 0)
#define BENCH_IOC_UNLOCK	_IO(BENCH_IOC_MAGIC, 1)
/* u64[3]: writes done, ticks skipped because a reader held the lock, LOCK calls */
#define BENCH_IOC_STATS		_IOR(BENCH_IOC_MAGIC, 2, __u64[3])

#define BENCH_WRITER		((struct file *)1)

static unsigned int period_us = 100;
module_param(period_us, uint, 0444);
MODULE_PARM_DESC(period_us, "writer period in us, 10 to 1000000 (default 100)");

static u64 *bench_page;
static struct hrtimer bench_timer;
static struct file *bench_owner;	/* NULL, BENCH_WRITER or the file holding the lock */
static DECLARE_WAIT_QUEUE_HEAD(bench_wq);
static atomic64_t bench_writes, bench_skips, bench_locks;

static enum hrtimer_restart bench_tick(struct hrtimer *t)
{
	size_t i;
	u64 k;

	/* Try-lock: a reader holds the page, so this write is lost. */
	if (cmpxchg(&bench_owner, NULL, BENCH_WRITER)) {
		atomic64_inc(&bench_skips);
	} else {
		k = atomic64_inc_return(&bench_writes);
		for (i = 0; i < PAGE_SIZE / sizeof(u64); i++)
			WRITE_ONCE(bench_page[i], k);
		/* Orders the page writes before the unlock; pairs with LOCK's cmpxchg. */
		smp_store_release(&bench_owner, NULL);
		wake_up_interruptible(&bench_wq);
	}
	hrtimer_forward_now(t, ns_to_ktime((u64)period_us * NSEC_PER_USEC));
	return HRTIMER_RESTART;
}

static void bench_unlock(struct file *file)
{
	if (cmpxchg(&bench_owner, file, NULL) == file)
		wake_up_interruptible(&bench_wq);
}

static long bench_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	u64 st[3];

	switch (cmd) {
	case BENCH_IOC_LOCK:
		atomic64_inc(&bench_locks);
		/* Fully ordered cmpxchg: the page reads that follow see the last write. */
		return wait_event_interruptible(bench_wq,
						!cmpxchg(&bench_owner, NULL, file));
	case BENCH_IOC_UNLOCK:
		if (READ_ONCE(bench_owner) != file)
			return -EPERM;
		bench_unlock(file);
		return 0;
	case BENCH_IOC_STATS:
		st[0] = atomic64_read(&bench_writes);
		st[1] = atomic64_read(&bench_skips);
		st[2] = atomic64_read(&bench_locks);
		return copy_to_user((void __user *)arg, st, sizeof(st)) ? -EFAULT : 0;
	default:
		return -ENOTTY;
	}
}

/* Unlike the seed answer, a reader that dies holding the lock releases it here. */
static int bench_release(struct inode *inode, struct file *file)
{
	bench_unlock(file);
	return 0;
}

static int bench_mmap(struct file *file, struct vm_area_struct *vma)
{
	if (vma->vm_pgoff || vma->vm_end - vma->vm_start > PAGE_SIZE)
		return -EINVAL;
	if (vma->vm_flags & VM_WRITE)
		return -EACCES;
#if KERNEL_VERSION(6, 3, 0) > LINUX_VERSION_CODE
	vma->vm_flags &= ~VM_MAYWRITE;
#else
	vm_flags_clear(vma, VM_MAYWRITE);
#endif
	return remap_vmalloc_range(vma, bench_page, 0);
}

static const struct file_operations bench_fops = {
	.owner = THIS_MODULE,
	.release = bench_release,
	.mmap = bench_mmap,
	.unlocked_ioctl = bench_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
};

static struct miscdevice bench_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "seqshm_bench_mutex",
	.mode = 0444,
	.fops = &bench_fops,
};

static int __init bench_init(void)
{
	int ret;

	if (period_us < 10 || period_us > 1000000)
		return -EINVAL;
	bench_page = vmalloc_user(PAGE_SIZE);
	if (!bench_page)
		return -ENOMEM;
	ret = misc_register(&bench_misc);
	if (ret) {
		vfree(bench_page);
		return ret;
	}
	hrtimer_init(&bench_timer, CLOCK_MONOTONIC, HRTIMER_MODE_REL);
	bench_timer.function = bench_tick;
	hrtimer_start(&bench_timer, ns_to_ktime((u64)period_us * NSEC_PER_USEC), HRTIMER_MODE_REL);
	return 0;
}

static void __exit bench_exit(void)
{
	hrtimer_cancel(&bench_timer);
	misc_deregister(&bench_misc);
	vfree(bench_page);
}

module_init(bench_init);
module_exit(bench_exit);

MODULE_DESCRIPTION("Benchmark-only model of an ioctl-locked shared page, for comparison with seqshm");
MODULE_LICENSE("GPL");
