// SPDX-License-Identifier: GPL-2.0
/*
 * seqshm: the device of each channel (open, read-only mmap, read, poll, ioctl) and the module.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/fs.h>
#include <linux/minmax.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/poll.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/uio.h>
#include <linux/version.h>
#include <linux/vmalloc.h>

#include "seqshm_internal.h"

#if KERNEL_VERSION(6, 3, 0) > LINUX_VERSION_CODE
/* vm_flags_set() and vm_flags_clear() arrived in 6.3; before, vm_flags was written directly. */
static inline void seqshm_vm_flags_set(struct vm_area_struct *vma, vm_flags_t flags)
{
	vma->vm_flags |= flags;
}

static inline void seqshm_vm_flags_clear(struct vm_area_struct *vma, vm_flags_t flags)
{
	vma->vm_flags &= ~flags;
}
#else
#define seqshm_vm_flags_set	vm_flags_set
#define seqshm_vm_flags_clear	vm_flags_clear
#endif

/**
 * struct seqshm_file - state of one open file of a channel.
 * @ch:		the channel; the file holds a reference on it.
 * @lock:	serializes read() and SEQSHM_IOC_INFO on this file; guards @bounce.
 * @bounce:	payload_size bytes that read() copies into under the seqlock, allocated on the
 *		first read(); the copy to the caller (copy_to_iter()) happens outside the seqlock
 *		loop, from here.
 * @seen:	the version this file last saw (see poll); written under @lock, read locklessly.
 */
struct seqshm_file {
	struct seqshm_channel *ch;
	struct mutex lock;	/* serializes read() and the INFO ack; guards @bounce */
	void *bounce;
	u64 seen;
};

static int seqshm_open(struct inode *inode, struct file *file)
{
	/* misc_open() put our miscdevice here, and holds misc_mtx against misc_deregister(). */
	struct miscdevice *misc = file->private_data;
	struct seqshm_channel *ch = container_of(misc, struct seqshm_channel, misc);
	struct seqshm_file *sf;

	sf = kzalloc(sizeof(*sf), GFP_KERNEL);
	if (!sf)
		return -ENOMEM;
	mutex_init(&sf->lock);
	seqshm_channel_get(ch);
	sf->ch = ch;
	file->private_data = sf;
	atomic64_inc(&ch->nr_opens);
	/* Each read() takes a fresh copy: no file position, no lseek/pread. */
	return stream_open(inode, file);
}

static int seqshm_release(struct inode *inode, struct file *file)
{
	struct seqshm_file *sf = file->private_data;

	seqshm_channel_put(sf->ch);
	kvfree(sf->bounce);
	mutex_destroy(&sf->lock);
	kfree(sf);
	return 0;
}

/*
 * read(), readv() and the like: one consistent copy of the newest payload per call, whatever
 * the number of buffers (a readv() scatters that one copy over its buffers, in order; without
 * .read_iter the VFS would call .read once per buffer and return several copies).
 */
static ssize_t seqshm_read_iter(struct kiocb *iocb, struct iov_iter *to)
{
	struct seqshm_file *sf = iocb->ki_filp->private_data;
	struct seqshm_channel *ch = sf->ch;
	u64 write_seq;
	ssize_t ret;

	if (iov_iter_count(to) < ch->g.payload_size)
		return -EINVAL;
	if (READ_ONCE(ch->dead))
		return -ENODEV;
	if (mutex_lock_interruptible(&sf->lock))
		return -ERESTARTSYS;
	if (!sf->bounce) {
		sf->bounce = kvmalloc(ch->g.payload_size, GFP_KERNEL);
		if (!sf->bounce) {
			ret = -ENOMEM;
			goto out;
		}
	}
	/* Copies returned through this file never go back in write order. */
	write_seq = READ_ONCE(sf->seen);
	ret = seqshm_channel_read(ch, sf->bounce, &write_seq);
	if (ret) {
		atomic64_inc(&ch->nr_read_busy);
		goto out;
	}
	/* A short copy (a bad buffer) fails the whole call; the file's seen stays as it was. */
	if (copy_to_iter(sf->bounce, ch->g.payload_size, to) != ch->g.payload_size) {
		ret = -EFAULT;
		goto out;
	}
	WRITE_ONCE(sf->seen, write_seq);
	atomic64_inc(&ch->nr_reads);
	ret = ch->g.payload_size;
out:
	mutex_unlock(&sf->lock);
	return ret;
}

static __poll_t seqshm_poll(struct file *file, poll_table *wait)
{
	struct seqshm_file *sf = file->private_data;
	struct seqshm_channel *ch = sf->ch;

	poll_wait(file, &ch->wq, wait);
	/*
	 * Pairs with the smp_mb() in wq_has_sleeper() in seqshm_write_end(): either we see the
	 * new head below, or the writer sees us on the queue and wakes us.
	 */
	smp_mb();
	if (READ_ONCE(ch->dead))
		return EPOLLHUP;
	if (READ_ONCE(ch->hdr->head) != READ_ONCE(sf->seen))
		return EPOLLIN | EPOLLRDNORM;
	return 0;
}

static void seqshm_vm_open(struct vm_area_struct *vma)
{
	struct seqshm_channel *ch = vma->vm_private_data;

	atomic64_inc(&ch->nr_maps_active);
}

static void seqshm_vm_close(struct vm_area_struct *vma)
{
	struct seqshm_channel *ch = vma->vm_private_data;

	atomic64_dec(&ch->nr_maps_active);
}

/*
 * A page of the mapping that is not present (mmap pre-populates every page, but
 * madvise(MADV_DONTNEED) and the like zap them) is the region's page at that offset again,
 * as relay's buffers do. Only read faults reach here: the mapping has neither VM_WRITE nor
 * VM_MAYWRITE, and no .page_mkwrite/.pfn_mkwrite, so it can never become writable.
 */
static vm_fault_t seqshm_vm_fault(struct vm_fault *vmf)
{
	struct seqshm_channel *ch = vmf->vma->vm_private_data;
	struct page *page;

	/* mmap limits the mapping to the region and mremap cannot grow it: for the record. */
	if (vmf->pgoff >= ch->region_size >> PAGE_SHIFT)
		return VM_FAULT_SIGBUS;
	page = vmalloc_to_page(ch->region + (vmf->pgoff << PAGE_SHIFT));
	if (!page)
		return VM_FAULT_SIGBUS;
	get_page(page);
	vmf->page = page;
	return 0;
}

static const struct vm_operations_struct seqshm_vm_ops = {
	.open = seqshm_vm_open,
	.close = seqshm_vm_close,
	.fault = seqshm_vm_fault,
};

/*
 * Read-only mapping of the region from offset 0, any length up to region_size. The mapping
 * holds the file (vma->vm_file), so the channel and this module stay as long as it exists.
 */
static int seqshm_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct seqshm_file *sf = file->private_data;
	struct seqshm_channel *ch = sf->ch;
	unsigned long len = vma->vm_end - vma->vm_start;
	int ret;

	if (vma->vm_pgoff != 0 || len > ch->region_size)
		return -EINVAL;
	/* Only an O_RDWR file gets this far with PROT_WRITE: the VFS refuses O_RDONLY ones. */
	if (vma->vm_flags & VM_WRITE)
		return -EACCES;
	/* No mprotect(PROT_WRITE), no FOLL_FORCE write (not a COW mapping), no mremap growth. */
	seqshm_vm_flags_clear(vma, VM_MAYWRITE);
	seqshm_vm_flags_set(vma, VM_DONTEXPAND | VM_DONTDUMP);
	ret = remap_vmalloc_range(vma, ch->region, 0);
	if (ret)
		return ret;
	vma->vm_private_data = ch;
	vma->vm_ops = &seqshm_vm_ops;
	seqshm_vm_open(vma);
	atomic64_inc(&ch->nr_mmaps);
	return 0;
}

static long seqshm_ioctl_info(struct seqshm_file *sf, void __user *uarg, size_t usize)
{
	struct seqshm_channel *ch = sf->ch;
	struct seqshm_ioc_info info;
	int ret;

	if (usize < SEQSHM_IOC_INFO_SIZE_VER0)
		return -ENOTTY;
	ret = copy_struct_from_user(&info, sizeof(info), uarg, usize);
	if (ret)
		return ret;
	if (info.size != usize || info.flags & ~SEQSHM_INFO_KNOWN ||
	    memchr_inv(info.__reserved, 0, sizeof(info.__reserved)))
		return -EINVAL;

	info.abi_version = ch->hdr->abi_version;
	info.nr_slots = ch->hdr->nr_slots;
	info.region_size = ch->region_size;
	info.payload_offset = ch->hdr->payload_offset;
	info.payload_size = ch->g.payload_size;
	info.slot_stride = ch->g.slot_stride;
	info.head = READ_ONCE(ch->hdr->head);
	if (info.flags & SEQSHM_INFO_ACK) {
		if (mutex_lock_interruptible(&sf->lock))
			return -ERESTARTSYS;
		WRITE_ONCE(sf->seen, info.head);
		mutex_unlock(&sf->lock);
	}
	info.seen = READ_ONCE(sf->seen);
	info.size = min_t(size_t, usize, sizeof(info));
	if (copy_to_user(uarg, &info, info.size))
		return -EFAULT;
	return 0;
}

static long seqshm_ioctl_stats(struct seqshm_file *sf, void __user *uarg, size_t usize)
{
	struct seqshm_channel *ch = sf->ch;
	struct seqshm_ioc_stats st;
	int ret;

	if (usize < SEQSHM_IOC_STATS_SIZE_VER0)
		return -ENOTTY;
	ret = copy_struct_from_user(&st, sizeof(st), uarg, usize);
	if (ret)
		return ret;
	if (st.size != usize || st.flags ||
	    memchr_inv(st.__reserved, 0, sizeof(st.__reserved)))
		return -EINVAL;

	st.writes = READ_ONCE(ch->hdr->head);
	st.reads = atomic64_read(&ch->nr_reads);
	st.read_retries = atomic64_read(&ch->nr_read_retries);
	st.read_busy = atomic64_read(&ch->nr_read_busy);
	st.mmaps = atomic64_read(&ch->nr_mmaps);
	st.maps_active = atomic64_read(&ch->nr_maps_active);
	st.opens = atomic64_read(&ch->nr_opens);
	st.poll_wakeups = atomic64_read(&ch->nr_poll_wakeups);
	st.size = min_t(size_t, usize, sizeof(st));
	if (copy_to_user(uarg, &st, st.size))
		return -EFAULT;
	return 0;
}

/*
 * Commands are matched on type, number and direction; the size bits of the command give the
 * caller's structure size, so a later, larger version of a structure keeps its number.
 */
static long seqshm_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct seqshm_file *sf = file->private_data;
	void __user *uarg = (void __user *)arg;

	if (_IOC_TYPE(cmd) != SEQSHM_IOC_MAGIC || _IOC_DIR(cmd) != (_IOC_READ | _IOC_WRITE))
		return -ENOTTY;
	switch (_IOC_NR(cmd)) {
	case _IOC_NR(SEQSHM_IOC_INFO):
		return seqshm_ioctl_info(sf, uarg, _IOC_SIZE(cmd));
	case _IOC_NR(SEQSHM_IOC_STATS):
		return seqshm_ioctl_stats(sf, uarg, _IOC_SIZE(cmd));
	default:
		return -ENOTTY;
	}
}

/* No .write: write() fails with EBADF (O_RDONLY file) or EINVAL (O_RDWR file). */
const struct file_operations seqshm_fops = {
	.owner = THIS_MODULE,
	.open = seqshm_open,
	.release = seqshm_release,
	.read_iter = seqshm_read_iter,
	.poll = seqshm_poll,
	.mmap = seqshm_mmap,
	.unlocked_ioctl = seqshm_ioctl,
	/* Every structure has the same layout for 32-bit callers (only __u32/__u64, padded). */
	.compat_ioctl = compat_ptr_ioctl,
};
