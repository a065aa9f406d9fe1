/* SPDX-License-Identifier: GPL-2.0 */
/*
 * seqshm.h - libseqshm, the C API of seqshm channels: read a kernel device (/dev/seqshm/NAME)
 * or a userspace channel (/dev/shm/NAME), and write a userspace channel.
 *
 * A channel is one writer's region of shared memory, laid out and updated as
 * <linux/seqshm.h> (the kernel module's uapi header) says, under a sequence lock: readers map
 * it read-only and never block the writer; a reader's copy is retried until it is consistent.
 * This library is built from the same C the Python package uses, so a C program and a Python
 * program read and write the same channels with the same checks.
 *
 * Conventions, for every function below:
 *
 * Errors: a function that can fail returns 0 (or a count) on success and a negative errno
 * value on failure, and, if @err is not NULL, fills *@err with that errno and a message that
 * names the file and says what to do (struct seqshm_err). There is no global error state;
 * @err may be shared by calls in one thread, never by threads at once.
 *
 * Threads: a handle (struct seqshm_rd, struct seqshm_wr) is used by one thread at a time
 * (serialize calls on one handle, or open one reader per thread: readers are cheap and never
 * slow the writer). Different handles may be used in different threads at once, of the same
 * channel too. Functions that take no handle are thread-safe. Each function's Context: says
 * what it allows. None is async-signal-safe: do not call them from a signal handler.
 *
 * Fork: a handle belongs to the process that opened it. In a forked child, a parent's handle
 * may only be described (seqshm_rd_info(), seqshm_rd_head(), seqshm_rd_fd(), seqshm_wr_info())
 * and closed: its close function then releases only the child's copies (a writer's close
 * does not end the channel); every call that reads, waits or writes fails with -ECHILD
 * (seqshm_wr_begin() returns NULL). A writer's mapping is not inherited (MADV_DONTFORK), and
 * the child's copy of its descriptor keeps the writer's liveness lock held until the child
 * closes it or exits. Descriptors are opened O_CLOEXEC, so exec() drops them.
 *
 * Signals: each open file channel's mapping is guarded against the file being truncated
 * under it: the library installs one process-wide SIGBUS handler (chained to the previous
 * one for faults outside its mappings) that turns such a fault into -EIO from the next call
 * instead of a crash. Install your own SIGBUS handler before opening channels, if any.
 *
 * Timeouts are in nanoseconds; SEQSHM_FOREVER waits without limit.
 */
#ifndef SEQSHM_H
#define SEQSHM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(SEQSHM_BUILDING)
#define SEQSHM_API __attribute__((visibility("default")))
#else
#define SEQSHM_API
#endif

/* A timeout without limit. */
#define SEQSHM_FOREVER		UINT64_MAX
/* The longest message of a struct seqshm_err, its NUL included. */
#define SEQSHM_ERR_LEN		512
/* Limits of the channel format (as <linux/seqshm.h> has them). */
#define SEQSHM_LIB_NAME_LEN	64	/* channel name, NUL included */
#define SEQSHM_LIB_FIELD_LEN	32	/* field name, NUL included */
#define SEQSHM_LIB_MAX_DIMS	8
#define SEQSHM_LIB_MAX_FIELDS	32
#define SEQSHM_LIB_MAX_SLOTS	1024

/**
 * struct seqshm_err - what went wrong, for the caller to print or act on.
 * @errnum:	the positive errno value the function returned negated.
 * @msg:	"PATH: what happened; what to do", NUL-terminated.
 */
struct seqshm_err {
	int errnum;
	char msg[SEQSHM_ERR_LEN];
};

/**
 * enum seqshm_chstate - where a channel is in its life, as a reader sees it.
 * @SEQSHM_CH_OPEN:	a writer may still publish.
 * @SEQSHM_CH_CLOSED:	its writer closed it (or the kernel destroyed the device): no write
 *			will follow.
 * @SEQSHM_CH_WRITER_DIED: the userspace writer process ended without closing it.
 * @SEQSHM_CH_REPLACED:	a new channel took its path (or was written into its very file).
 * @SEQSHM_CH_REMOVED:	its file was unlinked; the writer may still publish, but no new
 *			reader can find it.
 * @SEQSHM_CH_TRUNCATED: its file is shorter than the region this reader mapped (another
 *			process shrank it): reads fail with -EIO.
 */
enum seqshm_chstate {
	SEQSHM_CH_OPEN = 0,
	SEQSHM_CH_CLOSED = 1,
	SEQSHM_CH_WRITER_DIED = 2,
	SEQSHM_CH_REPLACED = 3,
	SEQSHM_CH_REMOVED = 4,
	SEQSHM_CH_TRUNCATED = 5,
};

/**
 * struct seqshm_field_desc - one field of a channel's element: a scalar or a 1-d array of
 * scalars, as NumPy describes them.
 * @name:	field name, at most 31 printable ASCII characters; "" (or NULL) for the one
 *		field of a plain scalar element.
 * @offset:	byte offset of the field in the element.
 * @count:	number of scalars: 1 for a scalar field, n for an array field.
 * @kind:	NumPy kind character: 'b' bool (size 1), 'i' signed and 'u' unsigned integer
 *		(1, 2, 4, 8), 'f' float (2, 4, 8), 'c' complex (8, 16).
 * @size:	bytes of one scalar.
 * @array:	nonzero for an array field (a NumPy subarray), even of one scalar.
 */
struct seqshm_field_desc {
	const char *name;
	uint32_t offset;
	uint32_t count;
	char kind;
	uint8_t size;
	uint8_t array;
};

/**
 * struct seqshm_info - what a channel is, from the header a reader checked at open (or a
 * writer built): never re-read from shared memory.
 * @path:	the channel's file as opened (a bare name resolved), NUL-terminated.
 * @name:	the channel's name in its header.
 * @is_device:	nonzero for a kernel device, 0 for a userspace channel file.
 * @nr_slots:	slots of the ring: 1 for a plain seqlock.
 * @payload_size: bytes of one payload (one write): itemsize times the shape's elements.
 * @itemsize:	bytes of one element.
 * @record:	nonzero when the element is a record of named fields.
 * @ndim:	dimensions of the payload array (0: one element).
 * @shape:	the first @ndim entries are the payload array's shape.
 * @nr_fields:	entries of @fields used.
 * @fields:	the element's fields; each @name points into @field_names.
 * @field_names: storage of the field names.
 * @writer_pid:	the userspace writer's pid in its own pid namespace (0: the kernel).
 */
struct seqshm_info {
	char path[4096];
	char name[SEQSHM_LIB_NAME_LEN];
	int is_device;
	uint32_t nr_slots;
	uint64_t payload_size;
	uint32_t itemsize;
	int record;
	uint32_t ndim;
	uint64_t shape[SEQSHM_LIB_MAX_DIMS];
	uint32_t nr_fields;
	struct seqshm_field_desc fields[SEQSHM_LIB_MAX_FIELDS];
	char field_names[SEQSHM_LIB_MAX_FIELDS][SEQSHM_LIB_FIELD_LEN];
	uint32_t writer_pid;
};

/**
 * struct seqshm_sample - what a read returned besides the payload.
 * @write_seq:	the write number of the copy (1, 2, ...; 0 before the first write).
 * @timestamp_ns: the writer's CLOCK_MONOTONIC time of that write, in ns.
 * @lost:	seqshm_rd_follow() only: writes skipped just before this one because the ring
 *		no longer held them (0 otherwise).
 */
struct seqshm_sample {
	uint64_t write_seq;
	uint64_t timestamp_ns;
	uint64_t lost;
};

/**
 * struct seqshm_view - a zero-copy read in progress (seqshm_rd_begin() to seqshm_rd_end()).
 * @data:	the payload in the shared mapping (payload_size bytes, read-only). It may change
 *		under the reader at any moment: nothing read from it may be trusted, or acted
 *		on, before seqshm_rd_end() returned 0.
 * @slot:	the slot read (private to the library).
 * @seq:	the slot's sequence count at begin (private).
 * @want:	the write the reader asked for (private).
 */
struct seqshm_view {
	const void *data;
	uint32_t slot;
	uint32_t seq;
	uint64_t want;
};

/* A reader of one channel (opaque). */
struct seqshm_rd;
/* The writer of one userspace channel (opaque). */
struct seqshm_wr;

/**
 * seqshm_rd_open() - open a channel for reading.
 * @out:	receives the new reader on success (NULL on failure).
 * @path:	a path (anything with a '/', relative to the current directory), or a bare name
 *		looked up as /dev/seqshm/NAME (a kernel device), then /dev/shm/NAME (a userspace
 *		channel), as Python's seqshm.open() does.
 * @err:	filled on failure; may be NULL.
 *
 * The file is opened read-only and non-blocking (a FIFO cannot hang it), never through a
 * symbolic link another user planted in a sticky world-writable directory (nor at any
 * directory of the path): such a link fails with -EACCES. It must be a regular file or a
 * character device; its header must pass the readers' check (the same C the kernel module
 * and the Python package use): right magic, ABI version, a consistent layout that fits the
 * file; and a file with holes (fewer bytes allocated than it holds: no writer's file has
 * any) is refused with -EPROTO, by the check the Python package uses, before anything reads
 * its payload. Then the whole region is mapped read-only.
 *
 * Context: thread-safe; the reader belongs to the calling process (see seqshm_rd_close() for a
 * forked child). Installs the SIGBUS guard for a file channel (process-wide, once).
 *
 * Return: 0, or -ENOENT (no such channel; or a bare name that is no channel's: empty, "." or
 * ".."), -EACCES (not readable, or a planted link), -EPROTO (not a seqshm channel, or a
 * damaged or truncated header), -EPROTONOSUPPORT (another ABI version), -ENOMEM, or another
 * errno of open(2) or mmap(2).
 */
SEQSHM_API int seqshm_rd_open(struct seqshm_rd **out, const char *path, struct seqshm_err *err);

/**
 * seqshm_rd_info() - what the channel is (checked header at open).
 * @r:		the reader.
 *
 * Context: any thread, any time while @r is open; a forked child may read it.
 *
 * Return: the reader's description, valid until seqshm_rd_close().
 */
SEQSHM_API const struct seqshm_info *seqshm_rd_info(const struct seqshm_rd *r);

/**
 * seqshm_rd_snapshot() - copy the newest write into a buffer, consistently.
 * @r:		the reader.
 * @buf:	where the payload goes.
 * @len:	bytes at @buf: at least the channel's payload_size.
 * @sample:	receives the copy's write number and timestamp; may be NULL.
 * @timeout_ns:	how long to retry while the writer is in the way (SEQSHM_FOREVER: no limit).
 * @err:	filled on failure; may be NULL.
 *
 * Copies until a copy is consistent (the slot's sequence count was even and unchanged around
 * it), backing off from CPU pauses to sleeps of up to 1 ms. On failure @buf and @sample hold
 * nothing of use (a copy that failed its check may be left in them). Successive snapshots of one reader
 * never go back in write order. Never blocks the writer.
 *
 * Context: one thread at a time per reader (others may use other readers at once); in a forked
 * child, fails with -ECHILD.
 *
 * Return: 0, or -EINVAL (@len too small), -ETIMEDOUT (no consistent copy within the
 * timeout: a writer stuck mid-write, or lapping the ring during every copy), -EIO (the
 * file was truncated under the mapping), -EPROTO (a consistent copy no writer following the
 * protocol leaves: a damaged region), -ECHILD (in a forked child).
 */
SEQSHM_API int seqshm_rd_snapshot(struct seqshm_rd *r, void *buf, size_t len,
				  struct seqshm_sample *sample, uint64_t timeout_ns,
				  struct seqshm_err *err);

/**
 * seqshm_rd_begin() - start a zero-copy read of the newest write.
 * @r:		the reader.
 * @v:		receives the payload's address in the mapping and the read's state.
 * @timeout_ns:	how long to wait for the writer to leave the newest slot.
 * @err:	filled on failure; may be NULL.
 *
 * Read what you need from @v->data, then call seqshm_rd_end(): only when that returns 0 was
 * what you read one consistent write. Never act on bytes read before then (a torn value can
 * be anything: an index out of range, a length past the end).
 *
 * Context: one thread at a time per reader (others may use other readers at once); in a forked
 * child, fails with -ECHILD.
 *
 * Return: 0, or -ETIMEDOUT (the writer stayed in the slot), -EIO (truncated), -ECHILD.
 */
SEQSHM_API int seqshm_rd_begin(struct seqshm_rd *r, struct seqshm_view *v, uint64_t timeout_ns,
			       struct seqshm_err *err);

/**
 * seqshm_rd_end() - finish a zero-copy read: was it consistent?
 * @r:		the reader.
 * @v:		the view seqshm_rd_begin() filled.
 * @sample:	receives the write number and timestamp of what was read; may be NULL.
 * @err:	filled on -EPROTO, -EIO or -ECHILD; may be NULL.
 *
 * Context: the thread that called seqshm_rd_begin() for @v; in a forked child, fails with
 * -ECHILD (a view its parent began included).
 *
 * Return: 0 when everything read from @v->data since seqshm_rd_begin() belongs to one write
 * (@sample says which); -EAGAIN when the writer changed the slot meanwhile (discard what
 * was read and begin again); -EIO (truncated), -EPROTO (a damaged region) or -ECHILD.
 */
SEQSHM_API int seqshm_rd_end(struct seqshm_rd *r, const struct seqshm_view *v,
			     struct seqshm_sample *sample, struct seqshm_err *err);

/**
 * seqshm_rd_follow() - the next write in order, every one the ring still holds.
 * @r:		the reader.
 * @buf:	where the payload goes.
 * @len:	bytes at @buf: at least payload_size.
 * @sample:	receives its write number, timestamp and how many writes were lost just before
 *		it (the writer lapped the ring over them); may be NULL.
 * @timeout_ns:	how long to wait for the next write (SEQSHM_FOREVER: no limit).
 * @err:	filled on failure; may be NULL.
 *
 * The first call returns the write after the last one this reader returned (by snapshot or
 * follow), or, for a reader that has returned none, the oldest write the ring holds (waiting
 * for write 1 if there is none). Waits as seqshm_rd_wait() does.
 *
 * Context: one thread at a time per reader (others may use other readers at once); in a forked
 * child, fails with -ECHILD.
 *
 * Return: 0 (a write is in @buf), -ETIMEDOUT (no next write within @timeout_ns), -EPIPE (the
 * channel ended and every write it got was returned: seqshm_rd_state() says how), -EINVAL,
 * -EIO, -EPROTO, -ECHILD, or an error of the wait.
 */
SEQSHM_API int seqshm_rd_follow(struct seqshm_rd *r, void *buf, size_t len,
				struct seqshm_sample *sample, uint64_t timeout_ns,
				struct seqshm_err *err);

/**
 * seqshm_rd_wait() - sleep until a write newer than the last one this reader returned.
 * @r:		the reader.
 * @timeout_ns:	the longest sleep (SEQSHM_FOREVER: no limit).
 * @err:	filled on failure; may be NULL.
 *
 * A device: poll(2) on it. A userspace channel: a futex sleep the writer wakes, through the
 * channel's sidecar file (see <linux/seqshm.h>, "Waking sleepers"); without a usable sidecar,
 * a look at the head with a backoff from 20 us to 1 ms. Either way the channel's state is
 * looked at every 0.1 s, so a writer that dies (and wakes no one) ends the wait. A signal
 * handler that returns does not end the wait early.
 *
 * Context: one thread at a time per reader (others may use other readers at once); in a forked
 * child, fails with -ECHILD. Never holds anything the writer needs: a reader stopped here
 * delays no one.
 *
 * Return: 1 when a newer write is there, 0 at the timeout, -EPIPE when the channel ended with
 * nothing newer (seqshm_rd_state() says how), -EIO (truncated), -ECHILD, or an errno of the
 * system calls.
 */
SEQSHM_API int seqshm_rd_wait(struct seqshm_rd *r, uint64_t timeout_ns, struct seqshm_err *err);

/**
 * seqshm_rd_head() - the number of writes completed so far.
 * @r:		the reader.
 *
 * One load of shared memory (acquire): no system call. A damaged region may say anything.
 *
 * Context: any thread, while @r is open (one atomic load); in a forked child it reads the
 * inherited mapping.
 *
 * Return: the channel's head now.
 */
SEQSHM_API uint64_t seqshm_rd_head(const struct seqshm_rd *r);

/**
 * seqshm_rd_state() - the channel's state now.
 * @r:		the reader.
 * @err:	filled on failure; may be NULL.
 *
 * System calls (fstat, a lock query, a stat of the path): not for a hot loop. The file still
 * at the reader's path, unchanged, and its writer alive is OPEN; a writer's close is CLOSED;
 * no live writer's lock on a userspace channel, WRITER_DIED; a different file at the path or
 * another header in the file, REPLACED (a device: CLOSED); no file at the path, REMOVED;
 * the file shorter than the mapping, TRUNCATED.
 *
 * Context: one thread at a time per reader (others may use other readers at once); in a forked
 * child, fails with -ECHILD.
 *
 * Return: an enum seqshm_chstate value (>= 0), or -ECHILD or an errno of fstat(2).
 */
SEQSHM_API int seqshm_rd_state(struct seqshm_rd *r, struct seqshm_err *err);

/**
 * seqshm_rd_reopen() - move the reader to the channel now at its path, if one replaced it.
 * @r:		the reader.
 * @err:	filled on failure; may be NULL.
 *
 * What tail -F does for a log: a writer that restarts under the same name (a new
 * seqshm_wr_create(), or the Python package's, with overwrite) puts a new file at the path, and
 * the old channel ends (REPLACED, or WRITER_DIED until the new one is linked). This opens
 * the path the reader was opened with (a bare name as it was resolved then) exactly as
 * seqshm_rd_open() does: read-only, never through a link another user planted, the same
 * header check, a file with holes refused. If that is another channel (another file, or
 * another header written into the same file) of the same element type and shape, the
 * reader lets go of the old one and reads the new one from then on: its description
 * (seqshm_rd_info(), same address) is the new header's, its write numbers start again
 * (seqshm_rd_follow() starts from the oldest write the new ring holds), and its descriptor
 * (seqshm_rd_fd()) is another one. On any failure the reader is unchanged and still reads
 * the old channel. System calls (an open, a map): call it when a wait or a follow says the
 * channel ended (-EPIPE) or seqshm_rd_state() says REPLACED, not in a hot loop.
 *
 * Context: one thread at a time per reader, with no other call on @r (seqshm_rd_info()
 * included) running meanwhile; in a forked child, fails with -ECHILD.
 *
 * Return: 1 when the reader moved to a new channel, 0 when the file at the path is still the
 * reader's channel (nothing replaced it: yet), or -ENOENT (no file at the path now: the new
 * writer has not linked it yet, or the channel was removed), -EACCES (not readable, or a
 * planted link), -EPROTO (not a seqshm channel, a damaged or sparse one), -EPROTONOSUPPORT
 * (another ABI version), -ENOTSUP (another element type or shape: open it as a new reader),
 * -ECHILD, or another errno of open(2), fstat(2) or mmap(2). Every failure leaves @r as it
 * was.
 */
SEQSHM_API int seqshm_rd_reopen(struct seqshm_rd *r, struct seqshm_err *err);

/**
 * seqshm_rd_fd() - the reader's descriptor of the channel file, for poll(2) on a device.
 * @r:		the reader.
 *
 * Owned by the reader: do not close it. Readable (POLLIN) on a device when a write newer
 * than this file has seen is there; a userspace channel's file is always readable.
 *
 * Context: any thread, while @r is open.
 *
 * Return: the descriptor.
 */
SEQSHM_API int seqshm_rd_fd(const struct seqshm_rd *r);

/**
 * seqshm_rd_close() - close a reader: unmap and release everything it holds.
 * @r:		the reader, or NULL (nothing happens).
 *
 * In a forked child, closes the child's descriptors only. Never fails.
 *
 * Context: once, with no other call on @r running or to come; in a forked child, allowed
 * (closes the child's descriptors and unmaps its copies).
 */
SEQSHM_API void seqshm_rd_close(struct seqshm_rd *r);

/**
 * struct seqshm_wr_opts - what seqshm_wr_create() makes.
 * @name:	the channel's name in its header (printable ASCII, at most 63 characters);
 *		NULL: the file's name (non-printable characters as '?').
 * @nr_slots:	a power of two from 1 to 1024: 1 for a plain seqlock, N for a ring that keeps
 *		the last N writes (readers are never starved by a continuous writer). 0 means 1.
 * @ndim:	dimensions of the payload array, 0 to 8.
 * @shape:	@ndim lengths, each >= 1 (NULL when @ndim is 0).
 * @itemsize:	bytes of one element (the record's size for a record).
 * @record:	nonzero: the element is a record of @nr_fields named fields; zero: a plain
 *		scalar, @fields[0] unnamed, at offset 0, of size @itemsize.
 * @nr_fields:	entries of @fields, 1 to 32.
 * @fields:	the element's fields (struct seqshm_field_desc).
 * @overwrite:	nonzero: replace a channel at the path whose writer is gone (it is marked
 *		REPLACED, so its readers see the end), or another file of this user; zero: an
 *		existing file is -EEXIST.
 * @mode:	permission bits of the file, 0 to 0777 (the umask does not apply); 0 means 0644.
 *		Readers that may read it may also write its sidecar (to sleep).
 */
struct seqshm_wr_opts {
	const char *name;
	uint32_t nr_slots;
	uint32_t ndim;
	const uint64_t *shape;
	uint32_t itemsize;
	int record;
	uint32_t nr_fields;
	const struct seqshm_field_desc *fields;
	int overwrite;
	mode_t mode;
};

/**
 * seqshm_wr_create() - create a userspace channel, atomically, and become its one writer.
 * @out:	receives the new writer on success (NULL on failure).
 * @path:	the channel's file (normally /dev/shm/NAME), relative to the current directory
 *		unless absolute.
 * @opts:	element type, shape, ring and mode (struct seqshm_wr_opts).
 * @err:	filled on failure; may be NULL.
 *
 * As Python's seqshm.create(): the directory is opened one component at a time (never
 * through a link another user planted); the file is made unnamed (O_TMPFILE), filled, its
 * memory reserved (a full tmpfs fails here, not later with SIGBUS), its header written, the
 * writer's liveness lock (an OFD write lock on byte 0, held until close) taken, its sidecar
 * of sleeping readers made, and only then linked at @path: readers never see a partial
 * channel, and a creator killed before the link leaves nothing behind. Of creators racing
 * for one path exactly one wins.
 *
 * Context: thread-safe; the writer belongs to the calling process: a forked child is not the
 * channel's writer (the mapping is not inherited, MADV_DONTFORK).
 *
 * Return: 0, or -EEXIST (a file is there and not @overwrite; or it is a link, a directory, or
 * another user's file that is not a channel), -EBUSY (a live writer holds the channel there,
 * or another creator is replacing it), -EINVAL (@opts cannot be laid out), -E2BIG (over
 * 1 TiB), -ENOSPC (no room: df -h the directory), -EACCES, -ENOENT (no such directory), or
 * another errno of the system calls.
 */
SEQSHM_API int seqshm_wr_create(struct seqshm_wr **out, const char *path,
				const struct seqshm_wr_opts *opts, struct seqshm_err *err);

/**
 * seqshm_wr_info() - what the writer's channel is.
 * @w:		the writer.
 *
 * Context: any thread, while @w is open.
 *
 * Return: its description, valid until seqshm_wr_close().
 */
SEQSHM_API const struct seqshm_info *seqshm_wr_info(const struct seqshm_wr *w);

/**
 * seqshm_wr_write() - publish one whole payload.
 * @w:		the writer.
 * @data:	the payload: payload_size bytes.
 * @len:	bytes at @data: exactly payload_size.
 * @timestamp_ns: the write's timestamp, ns of CLOCK_MONOTONIC; 0: now.
 * @err:	filled on failure; may be NULL.
 *
 * Wakes readers sleeping in seqshm_rd_wait() (one load of a shared word when none sleeps).
 *
 * Context: one thread at a time per writer (serialize writes yourself); in a forked child,
 * fails with -ECHILD.
 *
 * Return: the write number (>= 1) of this write, or -EINVAL (@len wrong, or a write begun
 * by seqshm_wr_begin() and not ended), -EIO (the file was truncated under the writer),
 * -ECHILD (in a forked child). A writer closed by seqshm_wr_close() is freed: calling this
 * (or any function) with it afterwards is undefined, not an error it can report.
 */
SEQSHM_API int64_t seqshm_wr_write(struct seqshm_wr *w, const void *data, size_t len,
				   uint64_t timestamp_ns, struct seqshm_err *err);

/**
 * seqshm_wr_begin() - start an in-place write: the payload to fill.
 * @w:		the writer.
 *
 * Returns the payload of the next write's slot in the shared mapping (payload_size bytes,
 * writable), which holds an older write of that slot (not necessarily the last one): fill
 * all of it, then call seqshm_wr_end(). Readers that meet the slot meanwhile retry. No other
 * call on @w may come in between.
 *
 * Context: one thread at a time per writer, and the same thread until seqshm_wr_end(); in a
 * forked child, returns NULL.
 *
 * Return: the payload, or NULL when a write is already begun (and not ended), the file was
 * truncated under the writer, or in a forked child.
 */
SEQSHM_API void *seqshm_wr_begin(struct seqshm_wr *w);

/**
 * seqshm_wr_end() - publish the write seqshm_wr_begin() started.
 * @w:		the writer.
 * @timestamp_ns: the write's timestamp, ns of CLOCK_MONOTONIC; 0: now.
 *
 * Context: the thread that called seqshm_wr_begin(); in a forked child, fails with -ECHILD.
 *
 * Return: the write number (>= 1), or -EINVAL when no write was begun, -EIO (truncated).
 */
SEQSHM_API int64_t seqshm_wr_end(struct seqshm_wr *w, uint64_t timestamp_ns);

/**
 * seqshm_wr_close() - end the channel and release the writer.
 * @w:		the writer, or NULL (nothing happens).
 * @unlink:	nonzero: also remove the channel's file, if it is still this channel's.
 *
 * Marks the channel CLOSED (its readers see the end at once and wake), removes its sidecar,
 * unmaps it and closes its file, which drops the liveness lock. A write begun and not ended
 * is abandoned: its slot stays mid-write (in a ring, readers still read the other slots; with
 * one slot they time out, and see the channel CLOSED). In a forked child, only closes the
 * child's descriptors. Never fails.
 *
 * Context: once, with no other call on @w running or to come; in a forked child, allowed
 * (closes only the child's copies of the descriptors: the channel stays its parent's).
 */
SEQSHM_API void seqshm_wr_close(struct seqshm_wr *w, int unlink);

/**
 * seqshm_strstate() - the name of a channel state, as Python's ChannelState says it.
 * @state:	an enum seqshm_chstate value.
 *
 * Context: any thread (a constant string).
 *
 * Return: "open", "closed", "writer-died", "replaced", "removed", "truncated" or "unknown".
 */
SEQSHM_API const char *seqshm_strstate(int state);

#ifdef __cplusplus
}
#endif

#endif /* SEQSHM_H */
