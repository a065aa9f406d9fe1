/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * seqshm: the layout of a region shared between one writer and any number of read-only readers
 * under a sequence lock, and the device's ioctl interface.
 *
 * This header is the single definition of the shared region. The kernel module, the userspace
 * writer and the Cython reader all include it; nothing restates its offsets by hand.
 *
 * Region layout (all offsets from the start of the mapping, native byte order):
 *
 *   0                      struct seqshm_header      static description + head
 *   SEQSHM_SLOTS_OFFSET    struct seqshm_slot[nr_slots]  one cache line of control per slot
 *   payload_offset         slot 0 payload             (payload_size bytes)
 *   payload_offset + k * slot_stride                 slot k payload
 *   region_size            end (a multiple of SEQSHM_ALIGN)
 *
 * Who writes what: exactly one writer (the kernel, or one userspace process holding a
 * write lock, F_OFD_SETLK, on byte 0 of the file) writes every byte. Readers map the region read-only and never
 * write. The static fields (everything in struct seqshm_header before @head) are written once,
 * before @magic is stored with release semantics; a reader that sees the magic sees them all.
 *
 * The protocol (nr_slots == 1 is the classic seqlock; N > 1 a ring of N copies):
 *
 * Writer, for write number k = head + 1 into slot s = k & (nr_slots - 1):
 *	slot[s].seq += 1;			(odd: write in progress)
 *	smp_wmb();				pairs with the reader's final smp_rmb()
 *	write payload of slot s, slot[s].write_seq = k, slot[s].timestamp_ns = now;
 *	smp_wmb();				pairs with the reader's load-acquire of seq
 *	slot[s].seq += 1;			(even: the copy is complete)
 *	smp_store_release(&head, k);		pairs with the reader's load-acquire of head
 *
 * Reader:
 *	again:
 *	h = smp_load_acquire(&head);		pairs with the writer's release of head
 *	s = h & (nr_slots - 1);
 *	seq = smp_load_acquire(&slot[s].seq);	pairs with the writer's second smp_wmb()
 *	if (seq & 1) { cpu_relax(); goto again; }
 *	copy payload, write_seq and timestamp_ns of slot s;
 *	smp_rmb();				pairs with the writer's first smp_wmb()
 *	if (READ_ONCE(slot[s].seq) != seq) goto again;
 *	use the copy (and only now: nothing read inside the loop is trusted before this check).
 *
 * A reader that takes many snapshots should start from the newer of @head and the last
 * write_seq it returned: the writer turns a slot's seq even before it stores @head, so a copy
 * of write k + 1 can be read while @head still says k, and a next read sent by @head alone
 * would return the older write k.
 *
 * With a ring the writer never touches the slot that @head names, so a reader retries only
 * if the writer laps the whole ring during one copy; readers can also read every slot to
 * fetch the last nr_slots writes, telling from write_seq which ones they missed.
 *
 * Before the first write, head == 0 and every slot reads as write_seq 0, all-zero payload.
 *
 * The end of a channel: a writer that stops for good stores @state = SEQSHM_STATE_CLOSED
 * (store-release, after its last store of @head); a userspace creator that takes over the
 * channel's path stores SEQSHM_STATE_REPLACED into the old region first (holding the old
 * file's lock, so the old writer is gone). A reader that loads @state with load-acquire and
 * sees it not OPEN therefore sees every write the region will ever get: it can take what is
 * left and then report the end. A writer process that dies stores nothing; readers of a
 * userspace channel find that through the file lock the writer holds (see @writer_pid).
 *
 * Waking sleepers (userspace channels; a device's readers sleep in poll() instead). Readers
 * cannot write the region, so the writer creates a sidecar file they may write, named
 * <dir>/.<channel file name>.waiters, one page holding struct seqshm_waiters; the header
 * names it by @waiters_dev and @waiters_ino (0: none, and then readers poll). A reader
 * sleeps in FUTEX_WAIT (shared, not FUTEX_PRIVATE_FLAG: the key is the file and offset, so
 * the writer's mapping and each reader's read-only one meet) on the low 32 bits of @head,
 * together with @state when it can (futex_waitv(2)), so that both a write and the end of the
 * channel wake it. With W = SEQSHM_WAKE_F_FENCE in @wake_flags:
 *
 * Writer, after each smp_store_release(&head, k) above:
 *	W ? smp_mb() : barrier();		pairs with the reader's membarrier() / smp_mb()
 *	if (READ_ONCE(waiters->count))		(one plain load when nobody sleeps)
 *		futex(&head, FUTEX_WAKE, INT_MAX);
 * and at the end, after smp_store_release(&state, CLOSED or REPLACED):
 *	futex(&state, FUTEX_WAKE, INT_MAX); futex(&head, FUTEX_WAKE, INT_MAX);
 *
 * Reader, to sleep until head > target (it holds a read lock on byte 0 of the sidecar,
 * fcntl(F_OFD_SETLK), around its count):
 *	atomic_inc(&waiters->count);		(a full barrier on its own)
 *	W ? smp_mb() : membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED);
 *						pairs with the writer's barrier above
 *	h = smp_load_acquire(&head);
 *	if (h > target || smp_load_acquire(&state) != OPEN) goto done;
 *	futex_waitv({&head, (u32)h}, {&state, OPEN}, timeout);
 *   done:
 *	atomic_dec(&waiters->count);
 *
 * The store of head and the load of count against the store of count and the load of head
 * are the store-buffering (Dekker) pattern: only a full barrier on both sides keeps both
 * loads from missing both stores. The writer that registered for membarrier
 * (MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) pays a compiler barrier per write and each
 * reader going to sleep pays a membarrier(), which puts a full barrier into every running
 * thread of every registered process; so either the reader's load sees head k or the
 * writer's load sees the count, and then its FUTEX_WAKE comes after its store of head, which
 * the futex contract turns into "the sleeper sees k or is woken". A writer that could not
 * register fences every write and sets SEQSHM_WAKE_F_FENCE. Both ends are advisory: a count
 * left high (a reader that died counted) costs the writer a futex wake per write until it
 * resets the count, which it tries after SEQSHM_WAKE_HEAL_AFTER wakes that found nobody (in
 * total, not in a row; again within 16 such wakes if a live reader's lock stopped it) and
 * does when it can take a write lock on the sidecar's byte 0 (no live reader counted); a
 * count too low (a rogue reader) only delays a wake-up to the sleeper's timeout, which
 * readers bound (they also look for a writer that died, which wakes no one).
 */
#ifndef _UAPI_LINUX_SEQSHM_H
#define _UAPI_LINUX_SEQSHM_H

#include <linux/types.h>
#include <linux/ioctl.h>

#if defined(__cplusplus)
#define __SEQSHM_ASSERT(cond, msg) static_assert(cond, msg)
#else
#define __SEQSHM_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif

/* Bytes "seqshm!\0" in memory on a little-endian machine; a foreign-endian region fails it. */
#define SEQSHM_MAGIC		0x00216d6873716573ULL
#define SEQSHM_ABI_VERSION	1

#define SEQSHM_ALIGN		4096	/* payload_offset and region_size are multiples of this */
#define SEQSHM_CACHELINE	64	/* slot_stride is a multiple of this */
#define SEQSHM_NAME_LEN		64	/* channel name, NUL-terminated, so at most 63 chars */
#define SEQSHM_FIELD_NAME_LEN	32	/* field name, NUL-terminated, so at most 31 chars */
#define SEQSHM_MAX_DIMS		8
#define SEQSHM_MAX_FIELDS	32
#define SEQSHM_MAX_SLOTS	1024	/* a power of two; nr_slots is a power of two up to it */

/* seqshm_header.flags */
#define SEQSHM_F_RECORD		(1U << 0)	/* element is a record of named fields */
#define SEQSHM_F_KNOWN		(SEQSHM_F_RECORD)	/* readers reject any other bit */

/* seqshm_header.wake_flags */
#define SEQSHM_WAKE_F_FENCE	(1U << 0)	/* the writer fences every write: no membarrier */

/* The sidecar file of sleeping readers (struct seqshm_waiters): its magic, "waiters\0". */
#define SEQSHM_WAITERS_MAGIC	0x0073726574696177ULL
/* Wakes that found nobody (in total) before the writer tries to reset a stale count. */
#define SEQSHM_WAKE_HEAL_AFTER	1024

/* seqshm_header.state: the channel's life */
#define SEQSHM_STATE_OPEN	0	/* a writer may still publish (the zero value) */
#define SEQSHM_STATE_CLOSED	1	/* its writer closed it: no write will follow */
#define SEQSHM_STATE_REPLACED	2	/* a new channel took its path: no write will follow */

/* seqshm_field.flags */
#define SEQSHM_FIELD_F_ARRAY	(1U << 0)	/* an array of @count scalars, even of one */
#define SEQSHM_FIELD_F_KNOWN	(SEQSHM_FIELD_F_ARRAY)	/* readers reject any other bit */

/* seqshm_field.kind: the NumPy kind character of a scalar */
#define SEQSHM_KIND_BOOL	'b'	/* size 1 */
#define SEQSHM_KIND_INT		'i'	/* size 1, 2, 4, 8 */
#define SEQSHM_KIND_UINT	'u'	/* size 1, 2, 4, 8 */
#define SEQSHM_KIND_FLOAT	'f'	/* size 2, 4, 8 */
#define SEQSHM_KIND_COMPLEX	'c'	/* size 8, 16 */

/* Whether @size is a valid scalar size for @kind: the one rule writers and readers share. */
static __inline__ int seqshm_kind_size_valid(__u8 kind, __u8 size)
{
	switch (kind) {
	case SEQSHM_KIND_BOOL:
		return size == 1;
	case SEQSHM_KIND_INT:
	case SEQSHM_KIND_UINT:
		return size == 1 || size == 2 || size == 4 || size == 8;
	case SEQSHM_KIND_FLOAT:
		return size == 2 || size == 4 || size == 8;
	case SEQSHM_KIND_COMPLEX:
		return size == 8 || size == 16;
	default:
		return 0;
	}
}

/**
 * struct seqshm_field - one scalar or fixed-length array of scalars in the element type.
 * @name:	field name, NUL-terminated and NUL-padded; all-NUL for a plain scalar element.
 * @offset:	byte offset of the field within one element; @offset + @count * @size <= itemsize.
 * @count:	number of scalars: 1 for a scalar field, n for a field holding an array of n.
 * @kind:	one of SEQSHM_KIND_*.
 * @size:	bytes per scalar, valid for @kind as listed above.
 * @flags:	SEQSHM_FIELD_F_*: F_ARRAY marks a 1-d array field (NumPy subarray), which a
 *		@count of 1 alone cannot tell from a scalar field; without it @count is 1.
 * @__reserved:	zero.
 *
 * Written once by the writer before it publishes the magic; read by readers to build the
 * element's NumPy dtype without evaluating any text. Native byte order.
 */
struct seqshm_field {
	char	name[SEQSHM_FIELD_NAME_LEN];
	__u32	offset;
	__u32	count;
	__u8	kind;
	__u8	size;
	__u8	flags;
	__u8	__reserved[5];
};

/**
 * struct seqshm_slot - control line of one slot; one cache line each, so a reader polling
 * one slot's @seq shares no line with another slot's writes.
 * @seq:	sequence count: odd while the writer writes this slot, even otherwise. Written by
 *		the writer (WRITE_ONCE + smp_wmb), read by readers (load-acquire). 32-bit like the
 *		vDSO's: a reader would have to sleep through 2^31 writes of this slot to be fooled.
 * @__reserved:	zero.
 * @write_seq:	write number (1, 2, ...) of the copy in this slot; 0 before the first write.
 *		Inside the seqlock: only trusted after the reader's seq re-check.
 * @timestamp_ns: the writer's clock (@clock_id) in ns when it took this copy; inside the seqlock.
 * @__pad:	zero; keeps the next slot's line apart.
 */
struct seqshm_slot {
	__u32	seq;
	__u32	__reserved;
	__u64	write_seq;
	__u64	timestamp_ns;
	__u8	__pad[SEQSHM_CACHELINE - 24];
};

/**
 * struct seqshm_header - page 0 of every region.
 *
 * Cache line 0, identity and geometry (static):
 * @magic:	SEQSHM_MAGIC, stored last with release semantics once all static fields are set.
 * @abi_version: SEQSHM_ABI_VERSION; readers reject any other.
 * @header_size: sizeof(struct seqshm_header).
 * @region_size: total bytes of the region; a multiple of SEQSHM_ALIGN.
 * @payload_offset: offset of slot 0's payload; a multiple of SEQSHM_ALIGN, at or after the end
 *		of the slot control array.
 * @payload_size: bytes of one slot's payload: itemsize * product(shape); > 0.
 * @slot_stride: bytes from one slot's payload to the next; a multiple of SEQSHM_CACHELINE,
 *		>= @payload_size. Slot k's payload ends inside @region_size for every k.
 * @nr_slots:	number of slots: a power of two from 1 to SEQSHM_MAX_SLOTS.
 * @flags:	SEQSHM_F_*; readers reject unknown bits.
 * @clock_id:	clock of @timestamp_ns (CLOCK_MONOTONIC = 1).
 * @writer_pid:	thread-group id of a userspace writer in its own pid namespace, 0 for the
 *		kernel. Informational: a pid can be reused and means another process in another
 *		namespace, so a reader tells a live writer by the write lock (F_OFD_SETLK on
 *		byte 0) the writer holds on the file for the channel's whole life, which needs a
 *		descriptor open for writing, and uses the pid and @writer_start only to say
 *		which process that is (or was).
 *
 * Cache line 1 (static):
 * @name:	channel name, NUL-terminated, printable ASCII.
 *
 * Cache lines 2-3, the element type (static):
 * @itemsize:	bytes of one element (of the record, for SEQSHM_F_RECORD).
 * @nr_fields:	entries used in @fields: exactly 1 for a plain scalar element (with an empty
 *		name, offset 0, count 1, size == @itemsize), 1 to SEQSHM_MAX_FIELDS for a record
 *		(distinct non-empty names, each field inside @itemsize).
 * @ndim:	number of dimensions of the payload array, 0 to SEQSHM_MAX_DIMS.
 * @__reserved0: zero.
 * @shape:	the first @ndim entries are the payload array's shape (each >= 1); rest zero.
 * @writer_start: start time of the writer process (field 22 of /proc/PID/stat, clock ticks
 *		after boot), 0 for the kernel: with @writer_pid it names one process even after
 *		the pid is reused.
 * @waiters_dev: st_dev of the channel's sidecar of sleeping readers (struct seqshm_waiters),
 *		as stat(2) reports it. Written by a userspace writer before the magic, read by
 *		readers, who use the file at <dir>/.<name of the channel file>.waiters only if
 *		its st_dev and st_ino are these (a stale sidecar of an earlier channel is not).
 *		0 for the kernel, which has none.
 * @waiters_ino: st_ino of that sidecar; 0 when there is none (readers then poll).
 * @wake_flags:	SEQSHM_WAKE_*: written by the writer before the magic, read by readers;
 *		unknown bits are ignored. 0 for the kernel.
 * @writer_pidns: inode number of the writer's pid namespace (st_ino of /proc/self/ns/pid,
 *		which the kernel keeps 32-bit), 0 for the kernel or when unknown. Informational,
 *		like @writer_pid: it tells a reader in another pid namespace (another container)
 *		that @writer_pid is not its own namespace's process of that number.
 * @__pad0:	zero.
 * @fields:	the field table, see struct seqshm_field.
 *
 * Its own cache line, dynamic:
 * @head:	number of completed writes; the newest complete copy is in slot
 *		head & (nr_slots - 1). Written by the writer with store-release after the
 *		slot's seq turned even; read by readers with load-acquire.
 * @__pad1:	zero.
 *
 * Its own cache line, dynamic but written at most twice in a channel's life, so readers can
 * load it on every read at the cost of a cache hit:
 * @state:	SEQSHM_STATE_*; OPEN until the writer closes the channel (store-release after its
 *		last head) or a new creator replaces it. Readers load it with load-acquire.
 * @__pad2:	zero.
 */
struct seqshm_header {
	/* line 0 */
	__u64	magic;
	__u32	abi_version;
	__u32	header_size;
	__u64	region_size;
	__u64	payload_offset;
	__u64	payload_size;
	__u64	slot_stride;
	__u32	nr_slots;
	__u32	flags;
	__s32	clock_id;
	__u32	writer_pid;
	/* line 1 */
	char	name[SEQSHM_NAME_LEN];
	/* lines 2-3 */
	__u32	itemsize;
	__u32	nr_fields;
	__u32	ndim;
	__u32	__reserved0;
	__u64	shape[SEQSHM_MAX_DIMS];
	__u64	writer_start;
	__u64	waiters_dev;
	__u64	waiters_ino;
	__u32	wake_flags;
	__u32	writer_pidns;
	__u8	__pad0[16];
	/* lines 4-27 */
	struct seqshm_field fields[SEQSHM_MAX_FIELDS];
	/* line 28 */
	__u64	head;
	__u8	__pad1[SEQSHM_CACHELINE - 8];
	/* line 29 */
	__u32	state;
	__u8	__pad2[SEQSHM_CACHELINE - 4 + 128];
};

/**
 * struct seqshm_waiters - the sidecar file of a userspace channel's sleeping readers, one
 * SEQSHM_ALIGN-byte page. The writer creates it beside the channel, writable by everyone who
 * may read the channel (readers cannot write the region), and names it in the header.
 *
 * Line 0, static (written by the writer before the file gets its name):
 * @magic:	SEQSHM_WAITERS_MAGIC.
 * @channel_dev: st_dev of the channel file it serves: with @channel_ino, a reader checks the
 *		sidecar belongs to its channel (the header names the sidecar the other way).
 * @channel_ino: st_ino of the channel file.
 * @__pad0:	zero.
 *
 * Line 1, dynamic:
 * @count:	readers about to sleep or asleep on the channel's futex words. Readers add and
 *		subtract 1 atomically (holding a read lock on byte 0 of the file); the writer
 *		loads it after every write and stores 0 when it resets a stale count.
 * @__pad1:	zero.
 */
struct seqshm_waiters {
	/* line 0 */
	__u64	magic;
	__u64	channel_dev;
	__u64	channel_ino;
	__u8	__pad0[SEQSHM_CACHELINE - 24];
	/* line 1 */
	__u32	count;
	__u8	__pad1[SEQSHM_CACHELINE - 4];
};

/* The slot control array starts right after the header. */
#define SEQSHM_SLOTS_OFFSET	((__u64)sizeof(struct seqshm_header))

__SEQSHM_ASSERT(sizeof(struct seqshm_field) == 48, "seqshm_field size");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_field, offset) == 32, "field offset");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_field, count) == 36, "field count");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_field, kind) == 40, "field kind");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_field, size) == 41, "field size");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_field, flags) == 42, "field flags");

__SEQSHM_ASSERT(sizeof(struct seqshm_slot) == SEQSHM_CACHELINE, "slot is one cache line");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_slot, seq) == 0, "slot seq");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_slot, write_seq) == 8, "slot write_seq");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_slot, timestamp_ns) == 16, "slot timestamp");

__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_header, magic) == 0, "magic");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_header, abi_version) == 8, "abi_version");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_header, header_size) == 12, "header_size");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_header, region_size) == 16, "region_size");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_header, payload_offset) == 24, "payload_offset");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_header, payload_size) == 32, "payload_size");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_header, slot_stride) == 40, "slot_stride");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_header, nr_slots) == 48, "nr_slots");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_header, flags) == 52, "flags");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_header, clock_id) == 56, "clock_id");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_header, writer_pid) == 60, "writer_pid");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_header, name) == 64, "name");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_header, itemsize) == 128, "itemsize");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_header, nr_fields) == 132, "nr_fields");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_header, ndim) == 136, "ndim");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_header, shape) == 144, "shape");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_header, writer_start) == 208, "writer_start");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_header, waiters_dev) == 216, "waiters_dev");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_header, waiters_ino) == 224, "waiters_ino");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_header, wake_flags) == 232, "wake_flags");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_header, writer_pidns) == 236, "writer_pidns");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_header, fields) == 256, "fields");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_header, head) == 1792, "head on its own line");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_header, state) == 1856, "state on its own line");
__SEQSHM_ASSERT(sizeof(struct seqshm_header) == 2048, "header size");
__SEQSHM_ASSERT(SEQSHM_ALIGN % SEQSHM_CACHELINE == 0, "alignment");

__SEQSHM_ASSERT(sizeof(struct seqshm_waiters) == 128, "waiters: two cache lines");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_waiters, channel_dev) == 8, "waiters dev");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_waiters, channel_ino) == 16, "waiters ino");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_waiters, count) == 64, "waiters count");

/*
 * Device interface (/dev/seqshm/<name>), implemented by the kernel module.
 *
 * mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0) maps the region above. The offset must be 0;
 * @len may be anything from one page up to region_size (a reader maps the header page first,
 * reads region_size, then maps the whole region). A larger length or a nonzero offset fails
 * with EINVAL; PROT_WRITE (possible only on an O_RDWR file) fails with EACCES, and the mapping
 * can never be made writable (mprotect fails with EACCES).
 *
 * read(fd, buf, count) returns one consistent copy of the newest payload: exactly
 * payload_size bytes, or EINVAL if count < payload_size. The file position is ignored (the
 * file is a stream: lseek and pread fail with ESPIPE); every read() takes a fresh copy. It
 * never blocks on the writer: after a bounded number of retries it fails with EAGAIN.
 * write() is not supported (EBADF or EINVAL).
 *
 * poll() reports EPOLLIN | EPOLLRDNORM while head differs from the version this open file
 * last saw; the version seen is set by read() (to the write number of the copy returned) and
 * by SEQSHM_IOC_INFO with SEQSHM_INFO_ACK (to the head it returns). A new file has seen
 * version 0, so it is readable as soon as anything has been written. When the channel is
 * destroyed under an open file, poll() reports EPOLLHUP and read() fails with ENODEV.
 *
 * ioctl: every command takes a structure that starts with @size and @flags.
 * @size is sizeof() the structure the caller was compiled with (it must equal the size
 * encoded in the command number); the kernel writes back how many bytes it filled, so an
 * older kernel and a newer caller agree on which fields are valid. A caller structure that is
 * larger than the kernel's must have its unknown tail zero (else E2BIG). Unknown @flags bits
 * or nonzero reserved fields fail with EINVAL, an unknown command with ENOTTY, a bad pointer
 * with EFAULT. Reserved fields read back as zero.
 */
/* ioctl type: not taken in Documentation/userspace-api/ioctl/ioctl-number.rst (6.1 .. 6.12). */
#define SEQSHM_IOC_MAGIC	0xBC

/* seqshm_ioc_info.flags */
#define SEQSHM_INFO_ACK		(1U << 0)	/* record the returned @head as seen (see poll) */
#define SEQSHM_INFO_KNOWN	(SEQSHM_INFO_ACK)

/**
 * struct seqshm_ioc_info - SEQSHM_IOC_INFO: the region's layout and this file's poll state.
 * @size:	in: sizeof(struct seqshm_ioc_info); out: bytes the kernel filled.
 * @flags:	in: SEQSHM_INFO_*; out: unchanged.
 * @abi_version: out: SEQSHM_ABI_VERSION of the region.
 * @nr_slots:	out: as in struct seqshm_header.
 * @region_size: out: as in struct seqshm_header; the largest length mmap accepts.
 * @payload_offset: out: as in struct seqshm_header.
 * @payload_size: out: as in struct seqshm_header; the byte count read() returns.
 * @slot_stride: out: as in struct seqshm_header.
 * @head:	out: number of completed writes at the time of the call.
 * @seen:	out: the version this open file has seen (after the ACK, if requested).
 * @__reserved:	in: zero; out: zero.
 *
 * Written by the caller (@size, @flags, @__reserved) and filled by the kernel (the rest).
 */
struct seqshm_ioc_info {
	__u32	size;
	__u32	flags;
	__u32	abi_version;
	__u32	nr_slots;
	__u64	region_size;
	__u64	payload_offset;
	__u64	payload_size;
	__u64	slot_stride;
	__u64	head;
	__u64	seen;
	__u64	__reserved[4];
};

/**
 * struct seqshm_ioc_stats - SEQSHM_IOC_STATS: the channel's counters since it was created.
 * @size:	in: sizeof(struct seqshm_ioc_stats); out: bytes the kernel filled.
 * @flags:	in: zero (no flags defined yet); out: unchanged.
 * @writes:	out: completed writes (the header's head).
 * @reads:	out: read() calls that returned a copy, all open files together.
 * @read_retries: out: seqlock retries inside read() (the writer moved during the copy).
 * @read_busy:	out: read() calls that gave up with EAGAIN.
 * @mmaps:	out: successful mmap() calls.
 * @maps_active: out: mappings of the region that exist now (a fork or split counts apart).
 * @opens:	out: open() calls.
 * @poll_wakeups: out: wake-up passes over sleeping pollers (an irq_work after a write; writes
 *		close together may share one).
 * @__reserved:	in: zero; out: zero.
 *
 * Written by the caller (@size, @flags, @__reserved) and filled by the kernel (the rest).
 * Each counter is read on its own (no snapshot across counters).
 */
struct seqshm_ioc_stats {
	__u32	size;
	__u32	flags;
	__u64	writes;
	__u64	reads;
	__u64	read_retries;
	__u64	read_busy;
	__u64	mmaps;
	__u64	maps_active;
	__u64	opens;
	__u64	poll_wakeups;
	__u64	__reserved[7];
};

#define SEQSHM_IOC_INFO		_IOWR(SEQSHM_IOC_MAGIC, 0x00, struct seqshm_ioc_info)
#define SEQSHM_IOC_STATS	_IOWR(SEQSHM_IOC_MAGIC, 0x01, struct seqshm_ioc_stats)

/* The first published sizes: a kernel accepts any size from these up. */
#define SEQSHM_IOC_INFO_SIZE_VER0	96
#define SEQSHM_IOC_STATS_SIZE_VER0	128

__SEQSHM_ASSERT(sizeof(struct seqshm_ioc_info) == SEQSHM_IOC_INFO_SIZE_VER0, "ioc_info size");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_ioc_info, abi_version) == 8, "info abi");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_ioc_info, region_size) == 16, "info region");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_ioc_info, head) == 48, "info head");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_ioc_info, seen) == 56, "info seen");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_ioc_info, __reserved) == 64, "info reserved");
__SEQSHM_ASSERT(sizeof(struct seqshm_ioc_stats) == SEQSHM_IOC_STATS_SIZE_VER0, "stats size");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_ioc_stats, writes) == 8, "stats writes");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_ioc_stats, poll_wakeups) == 64, "stats wakeups");
__SEQSHM_ASSERT(__builtin_offsetof(struct seqshm_ioc_stats, __reserved) == 72, "stats reserved");

#endif /* _UAPI_LINUX_SEQSHM_H */
