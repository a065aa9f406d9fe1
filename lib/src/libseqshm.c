/* libseqshm: the C API (seqshm.h) over the userspace protocol the Python extension uses. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "seqshm.h"

#include "files.h"
#include "guard.h"
#include "protocol.h"
#include "wake.h"

/* How often a wait or a blocked read looks at the channel's state (a dead writer wakes no
 * one), and a reader without a sidecar looks for it again: Python's CHECK_INTERVAL_S. */
#define CHECK_NS		100000000ull
/* The polling wait's backoff, when no futex sleep is possible (Python's POLL_MAX_S). */
#define POLL_MIN_NS		20000ull
#define POLL_MAX_NS		1000000ull
/* The largest region a writer builds (as the Python writer: 1 TiB). */
#define MAX_REGION		((uint64_t)1 << 40)
/* A creator retries this long while the old channel's lock is held by a closing writer or a
 * creator replacing it (Python's _LOCK_RETRY_S). */
#define LOCK_RETRY_NS		20000000ull
#define LIVENESS_BYTE		0
#define TAKEOVER_BYTE		1

/*
 * Forks of this process: a handle remembers the count at open, and a forked child, whose
 * count differs, may only close it. A counter bumped by a pthread_atfork() child handler
 * costs a hot-path call one load, where getpid() would cost a system call.
 */
static unsigned int seqshm_lib_forks;
static pthread_once_t seqshm_lib_once = PTHREAD_ONCE_INIT;

static void seqshm_lib_forked(void)
{
	__atomic_store_n(&seqshm_lib_forks, seqshm_lib_forks + 1, __ATOMIC_RELAXED);
}

static void seqshm_lib_init(void)
{
	pthread_atfork(NULL, NULL, seqshm_lib_forked);
}

static unsigned int seqshm_lib_fork_count(void)
{
	pthread_once(&seqshm_lib_once, seqshm_lib_init);
	return __atomic_load_n(&seqshm_lib_forks, __ATOMIC_RELAXED);
}

/*
 * Whether a handle that recorded @forks at open is in a forked child now: the check of the
 * calls that read (snapshot, begin, end). The handle exists, so its open went through
 * seqshm_lib_fork_count() and the pthread_once() that installs the handler: a load suffices,
 * where a pthread_once() call on every read cost a 64 B begin and end about 2 ns.
 */
static inline int seqshm_lib_forked_since(unsigned int forks)
{
	return forks != __atomic_load_n(&seqshm_lib_forks, __ATOMIC_RELAXED);
}

struct seqshm_rd {
	struct seqshm_reader r;		/* the protocol's reader: geometry, newest, counters */
	struct seqshm_header hdr;	/* the checked private copy of the header */
	struct seqshm_info info;
	void *map;
	size_t map_len;
	struct seqshm_guard *guard;
	int fd;
	int followed;			/* the open followed a symbolic link */
	unsigned int forks;
	uint64_t follow_next;		/* the next write seqshm_rd_follow() wants (0: none yet) */
	__u64 follow_lost;		/* writes lost since the last follow returned one */
	/* the sidecar of sleeping readers (a userspace channel), or side_fd < 0 */
	int side_fd;
	struct seqshm_waiters *side;
	struct seqshm_guard *side_guard;
	uint64_t side_next_try;
	/* seqshm_rd_snapshot()'s fast path for this channel (rd_snapshot_pick()) */
	int (*snapshot)(struct seqshm_rd *r, void *buf, size_t len, struct seqshm_sample *sample,
			uint64_t timeout_ns, struct seqshm_err *err);
};

static int (*rd_snapshot_pick(const struct seqshm_geometry *g))(struct seqshm_rd *, void *, size_t,
								     struct seqshm_sample *, uint64_t,
								     struct seqshm_err *);

struct seqshm_wr {
	struct seqshm_writer w;
	struct seqshm_info info;
	void *map;
	size_t map_len;
	struct seqshm_guard *guard;
	int fd;
	int dirfd;
	char base[NAME_MAX + 1];	/* the file's name in dirfd */
	int side_fd;
	struct seqshm_waiters *side;
	struct seqshm_guard *side_guard;
	dev_t side_dev;
	ino_t side_ino;
	unsigned int forks;
};

const char *seqshm_strstate(int state)
{
	static const char *const names[] = { "open", "closed", "writer-died", "replaced",
					     "removed", "truncated" };

	return state >= 0 && state <= SEQSHM_CH_TRUNCATED ? names[state] : "unknown";
}

/* -- shared helpers ----------------------------------------------------------------------- */

static void info_from_header(struct seqshm_info *info, const struct seqshm_header *h,
			     const char *path, int is_device)
{
	uint32_t i;

	memset(info, 0, sizeof(*info));
	snprintf(info->path, sizeof(info->path), "%s", path);
	memcpy(info->name, h->name, sizeof(info->name));
	info->name[sizeof(info->name) - 1] = 0;
	info->is_device = is_device;
	info->nr_slots = h->nr_slots;
	info->payload_size = h->payload_size;
	info->itemsize = h->itemsize;
	info->record = (h->flags & SEQSHM_F_RECORD) != 0;
	info->ndim = h->ndim;
	for (i = 0; i < h->ndim; i++)
		info->shape[i] = h->shape[i];
	info->nr_fields = h->nr_fields;
	for (i = 0; i < h->nr_fields; i++) {
		const struct seqshm_field *f = &h->fields[i];

		memcpy(info->field_names[i], f->name, SEQSHM_LIB_FIELD_LEN);
		info->field_names[i][SEQSHM_LIB_FIELD_LEN - 1] = 0;
		info->fields[i].name = info->field_names[i];
		info->fields[i].offset = f->offset;
		info->fields[i].count = f->count;
		info->fields[i].kind = (char)f->kind;
		info->fields[i].size = f->size;
		info->fields[i].array = (f->flags & SEQSHM_FIELD_F_ARRAY) != 0;
	}
	info->writer_pid = h->writer_pid;
}

/* The header check every reader makes, its status as an errno with the check's sentence. */
static int check_header(const struct seqshm_header *h, uint64_t file_size, const char *path,
			struct seqshm_err *err)
{
	char why[256];
	int rc = seqshm_header_check(h, file_size, why, sizeof(why));

	if (rc == SEQSHM_OK)
		return 0;
	if (rc == SEQSHM_EVERSION)
		return seqshm_lib_fail(err, EPROTONOSUPPORT, path, "%s", why);
	return seqshm_lib_fail(err, EPROTO, path, "%s (not a seqshm channel, or a damaged one: "
			       "have its writer create it again)", why);
}

/* The error of seqshm_lib_split() (-EISDIR, -ENAMETOOLONG, or getcwd()'s errno for a relative
 * @path), with what to do about a directory (@isdir_hint). */
static int split_failed(struct seqshm_err *err, int rc, const char *path, const char *isdir_hint)
{
	if (rc == -EISDIR)
		return seqshm_lib_fail(err, EISDIR, path, "a directory, not a channel: %s", isdir_hint);
	if (rc == -ENAMETOOLONG)
		return seqshm_lib_fail(err, ENAMETOOLONG, path, "the path is too long");
	return seqshm_lib_fail(err, -rc, path, "a relative path, and the current directory has no "
			       "name (%s: removed?): give an absolute path", strerror(-rc));
}

/* fcntl() with an open-file-description lock of @type on @byte; F_OFD_GETLK's answer in @type. */
static int ofd_lock(int fd, int cmd, short *type, off_t byte)
{
	struct flock fl = { .l_type = *type, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1 };

	if (fcntl(fd, cmd, &fl))
		return -errno;
	*type = fl.l_type;
	return 0;
}

/* Whether no writer holds the channel open as @fd (no write lock on its liveness byte). */
static int lock_is_free(int fd)
{
	short type = F_RDLCK;

	return ofd_lock(fd, F_OFD_GETLK, &type, LIVENESS_BYTE) == 0 && type == F_UNLCK;
}

static void sleep_ns(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000u),
			       .tv_nsec = (long)(ns % 1000000000u) };

	nanosleep(&ts, NULL);
}

static void unmap_guarded(void *addr, size_t len, struct seqshm_guard *g, int unmap)
{
	if (!addr)
		return;
	if (g)
		seqshm_guard_remove(g);
	if (unmap)
		munmap(addr, len);
}

/* Map @len bytes of @fd shared and guard them (guard.h); NULL with errno on failure. */
static void *map_guarded(int fd, size_t len, int writable, uint32_t nr_slots,
			 struct seqshm_guard **guard)
{
	void *p = mmap(NULL, len, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, fd, 0);
	int e;

	if (p == MAP_FAILED)
		return NULL;
	/* A forked child must not inherit a writer's mapping: it would hold the file (and so
	 * the writer's lock) after the writer closed it. */
	if (writable && madvise(p, len, MADV_DONTFORK)) {
		e = errno;
		munmap(p, len);
		errno = e;
		return NULL;
	}
	*guard = seqshm_guard_add(p, len, nr_slots, writable);
	if (!*guard) {
		e = errno;
		munmap(p, len);
		errno = e;
		return NULL;
	}
	return p;
}

/* -- readers ------------------------------------------------------------------------------ */

static int rd_truncated(struct seqshm_rd *r, struct seqshm_err *err)
{
	return seqshm_lib_fail(err, EIO, r->info.path, "the file shrank under this process's "
			       "mapping (truncated by another process?); its data is gone: close "
			       "the reader and open the channel again");
}

/* -ECHILD in a forked child, -EIO once the file was truncated under the mapping, else 0. */
static int rd_fail_state(struct seqshm_rd *r, struct seqshm_err *err)
{
	if (r->forks != seqshm_lib_fork_count())
		return seqshm_lib_fail(err, ECHILD, r->info.path, "a reader opened by the parent "
				       "process: open the channel again in this (forked) process");
	if (seqshm_guard_damaged(r->guard))
		return rd_truncated(r, err);
	return 0;
}

/* The file a channel argument names (seqshm.resolve()): a path as it is, a bare name found in
 * /dev/seqshm, then /dev/shm. */
static int resolve(const char *path, char *out, size_t len, struct seqshm_err *err)
{
	static const char *const dirs[] = { "/dev/seqshm", "/dev/shm" };
	struct stat st;
	size_t i;

	if (!path || !*path)
		return seqshm_lib_fail(err, ENOENT, path ? path : "", "no channel: the name is empty");
	/* nor the directories by their own names, nor their parent */
	if (!strcmp(path, ".") || !strcmp(path, ".."))
		return seqshm_lib_fail(err, ENOENT, path, "no channel: '%s' is a directory's name, "
				       "not a channel's: give a channel's name or a path to its file",
				       path);
	if (strchr(path, '/')) {
		if (strlen(path) >= len)
			return seqshm_lib_fail(err, ENAMETOOLONG, path, "the path is too long");
		strcpy(out, path);
		return 0;
	}
	for (i = 0; i < 2; i++) {
		if ((size_t)snprintf(out, len, "%s/%s", dirs[i], path) >= len)
			return seqshm_lib_fail(err, ENAMETOOLONG, path, "the name is too long");
		if (!lstat(out, &st))
			return 0;
	}
	return seqshm_lib_fail(err, ENOENT, path, "no channel '%s': looked for /dev/seqshm/%s and "
			       "/dev/shm/%s%s", path, path, path, stat("/dev/seqshm", &st) ?
			       " (/dev/seqshm does not exist: the seqshm kernel module is not "
			       "loaded)" : "");
}

/* What rd_open_region() found at a path: a channel checked and mapped, not yet a reader's. */
struct rd_region {
	struct seqshm_header h;		/* the checked private copy of its header */
	char path[4096];		/* its directory as the kernel resolved it, and its name */
	void *map;
	struct seqshm_guard *guard;
	struct stat st;
	int fd;
	int followed;			/* the open followed a symbolic link */
	int is_device;
};

static void rd_region_release(struct rd_region *o)
{
	unmap_guarded(o->map, o->h.region_size, o->guard, 1);
	close(o->fd);
}

/*
 * Open the channel file @full (a path resolve() gave) read-only, never through a link another
 * user planted, check its header, refuse a file with holes and map it: the one open step of
 * seqshm_rd_open() and seqshm_rd_reopen(), as the Python reader's _open_region() (the checks
 * are the shared ones: seqshm_header_check() and seqshm_refuse_holes()). Nothing reads the
 * payload before it returns 0.
 */
static int rd_open_region(const char *full_in, struct rd_region *o, struct seqshm_err *err)
{
	char dir[4096], name[NAME_MAX + 1], where[4096], why[256];
	char *full = o->path;
	struct seqshm_header *h = &o->h;
	struct stat *st = &o->st;
	uint64_t size = 0;
	int dirfd, fd, rc;

	snprintf(full, sizeof(o->path), "%s", full_in);
	rc = seqshm_lib_split(full, dir, sizeof(dir), name, sizeof(name));
	if (rc)
		return split_failed(err, rc, full, "name a file in it");
	dirfd = seqshm_lib_open_dir(dir, full, err);
	if (dirfd < 0)
		return dirfd;
	/* The directory as the kernel resolved it (".." after a link), for messages and state. */
	if (seqshm_lib_fd_path(dirfd, where, sizeof(where)) == 0 &&
	    (size_t)snprintf(full, sizeof(o->path), "%s/%s", strcmp(where, "/") ? where : "",
			     name) >= sizeof(o->path)) {
		close(dirfd);
		return seqshm_lib_fail(err, ENAMETOOLONG, full_in, "the path is too long");
	}
	/* O_NONBLOCK: a FIFO must not block */
	fd = seqshm_lib_open_in(dirfd, name, O_RDONLY | O_NONBLOCK, 0, &o->followed, full, err);
	close(dirfd);
	if (fd == -EPERM)
		return -EACCES;		/* a planted link: the message names it */
	if (fd == -ENOENT)
		return seqshm_lib_fail(err, ENOENT, full, "no channel file there: check the path, or "
				       "start the channel's writer first");
	if (fd == -EACCES)
		return seqshm_lib_fail(err, EACCES, full, "this user may not read the channel file: "
				       "run as one its mode lets read, or have its writer create it "
				       "with a wider mode");
	if (fd < 0)
		return seqshm_lib_fail(err, -fd, full, "cannot open: %s", strerror(-fd));
	if (fstat(fd, st)) {
		rc = seqshm_lib_fail(err, errno, full, "cannot stat: %s", strerror(errno));
		goto fail_fd;
	}
	if (S_ISREG(st->st_mode)) {
		ssize_t got = 0;

		size = (uint64_t)st->st_size;
		/* pread, not a mapping: a file that shrinks now gives a short read, not SIGBUS */
		if (size >= sizeof(*h)) {
			got = pread(fd, h, sizeof(*h), 0);
			if (got < 0) {
				rc = seqshm_lib_fail(err, errno, full, "cannot read its header: %s",
						     strerror(errno));
				goto fail_fd;
			}
		}
		if (got != (ssize_t)sizeof(*h)) {
			/* what was there to read: a file that shrank since its stat, or one whose
			 * size says more than a read gives (sysfs), is reported by its bytes */
			rc = seqshm_lib_fail(err, EPROTO, full, "truncated: %llu bytes, a seqshm header "
					     "alone has %zu (not a channel, or one cut short: have its "
					     "writer create it again)", size < sizeof(*h) ?
					     (unsigned long long)size : (unsigned long long)got,
					     sizeof(*h));
			goto fail_fd;
		}
	} else if (S_ISCHR(st->st_mode)) {
		void *page = mmap(NULL, SEQSHM_ALIGN, PROT_READ, MAP_SHARED, fd, 0);

		if (page == MAP_FAILED) {
			rc = seqshm_lib_fail(err, errno, full, "not a seqshm device: cannot map its "
					     "header page (%s); open a channel under /dev/seqshm or "
					     "/dev/shm", strerror(errno));
			goto fail_fd;
		}
		memcpy(h, page, sizeof(*h));
		munmap(page, SEQSHM_ALIGN);
	} else {
		rc = seqshm_lib_fail(err, EPROTO, full, "neither a regular file nor a seqshm device: "
				     "open a channel under /dev/seqshm or /dev/shm");
		goto fail_fd;
	}
	rc = check_header(h, size, full, err);
	if (rc)
		goto fail_fd;
	/* a file with holes: seqshm_refuse_holes() (src/protocol.c) says why, for both readers */
	if (seqshm_refuse_holes(h, S_ISREG(st->st_mode), (uint64_t)st->st_size,
				(uint64_t)st->st_blocks * 512, why, sizeof(why)) != SEQSHM_OK) {
		rc = seqshm_lib_fail(err, EPROTO, full, "%s", why);
		goto fail_fd;
	}
	o->map = map_guarded(fd, h->region_size, 0, h->nr_slots, &o->guard);
	if (!o->map) {
		rc = seqshm_lib_fail(err, errno, full, "cannot map %llu bytes: %s",
				     (unsigned long long)h->region_size, strerror(errno));
		goto fail_fd;
	}
	o->fd = fd;
	o->is_device = !size;
	return 0;
fail_fd:
	close(fd);
	return rc;
}

/* Make @o the channel @r reads (a new reader, or one moving to a replacement): its geometry,
 * fast path and description; a new channel's writes are numbered from 1 again. */
static void rd_attach(struct seqshm_rd *r, struct rd_region *o)
{
	r->map = o->map;
	r->map_len = o->h.region_size;
	r->guard = o->guard;
	r->hdr = o->h;
	r->fd = o->fd;
	r->followed = o->followed;
	r->r.newest = 0;
	r->follow_next = 0;
	r->follow_lost = 0;
	seqshm_geometry_init(&r->r.g, r->map, &o->h);
	r->snapshot = rd_snapshot_pick(&r->r.g);
	info_from_header(&r->info, &o->h, o->path, o->is_device);
}

int seqshm_rd_open(struct seqshm_rd **out, const char *path, struct seqshm_err *err)
{
	char full[4096];
	struct rd_region o;
	struct seqshm_rd *r;
	int rc;

	*out = NULL;
	rc = resolve(path, full, sizeof(full), err);
	if (rc)
		return rc;
	rc = rd_open_region(full, &o, err);
	if (rc)
		return rc;
	r = calloc(1, sizeof(*r));
	if (!r) {
		rc = seqshm_lib_fail(err, ENOMEM, o.path, "out of memory");
		rd_region_release(&o);
		return rc;
	}
	r->forks = seqshm_lib_fork_count();
	r->side_fd = -1;
	rd_attach(r, &o);
	*out = r;
	return 0;
}

const struct seqshm_info *seqshm_rd_info(const struct seqshm_rd *r)
{
	return &r->info;
}

int seqshm_rd_fd(const struct seqshm_rd *r)
{
	return r->fd;
}

uint64_t seqshm_rd_head(const struct seqshm_rd *r)
{
	return seqshm_head(&r->r.g);
}

static void fill_sample(struct seqshm_sample *s, const struct seqshm_meta *m, uint64_t lost)
{
	if (s) {
		s->write_seq = m->write_seq;
		s->timestamp_ns = m->timestamp_ns;
		s->lost = lost;
	}
}

static int rd_damaged(struct seqshm_rd *r, struct seqshm_err *err)
{
	int rc = rd_fail_state(r, err);

	if (rc)
		return rc;
	return seqshm_lib_fail(err, EPROTO, r->info.path, "a consistent copy of a write that "
			       "cannot be in its slot: the region was damaged or rewritten by "
			       "something other than its writer");
}

/* The ETIMEDOUT of a read blocked on @slot, whose seq was @seq, as Python's ReadTimeout. */
static int rd_timed_out(struct seqshm_rd *r, uint32_t slot, uint32_t seq, uint64_t head0,
			uint64_t timeout_ns, struct seqshm_err *err)
{
	uint64_t writes = seqshm_head(&r->r.g) - head0;
	int rc = rd_fail_state(r, err);

	if (rc)
		return rc;
	if ((seq & 1) && !writes) {
		const char *who = r->info.is_device || !r->hdr.writer_pid ? "" :
				  lock_is_free(r->fd) ? "; the writer is gone: it died in the "
				  "middle of a write" : "; the writer is alive but not finishing "
				  "(stopped?)";

		return seqshm_lib_fail(err, ETIMEDOUT, r->info.path, "no consistent snapshot: slot "
				       "%u stayed mid-write (its sequence count %u is odd) for "
				       "%.3g s%s", slot, seq, timeout_ns / 1e9, who);
	}
	return seqshm_lib_fail(err, ETIMEDOUT, r->info.path, "no consistent snapshot: the writer "
			       "overwrote slot %u during every copy for %.3g s (%llu writes "
			       "completed meanwhile); a channel with more slots (nr_slots) lets "
			       "readers through", slot, timeout_ns / 1e9,
			       (unsigned long long)writes);
}

/* Whether a read blocked on an odd slot waits for a writer that died in it. */
static int rd_writer_dead(struct seqshm_rd *r)
{
	return !r->info.is_device && r->hdr.writer_pid && lock_is_free(r->fd);
}

/* The snapshot's slow path, out of line so that the fast path saves no registers and
 * initializes nothing it does not use: back off, and every CHECK_NS look for a writer that
 * died mid-write or a file truncated under the mapping (whose replacement pages read as
 * mid-write). */
static __attribute__((noinline, cold)) int
rd_snapshot_slow(struct seqshm_rd *r, void *buf, size_t len, struct seqshm_sample *sample,
		 uint64_t timeout_ns, struct seqshm_err *err)
{
	struct seqshm_backoff b = SEQSHM_BACKOFF_INIT;
	struct seqshm_meta meta;
	uint64_t deadline, head0;
	int rc;

	rc = rd_fail_state(r, err);
	if (rc)
		return rc;
	if (len < r->r.g.payload_size)
		return seqshm_lib_fail(err, EINVAL, r->info.path, "a buffer of %zu bytes, the "
				       "payload has %llu", len,
				       (unsigned long long)r->r.g.payload_size);
	deadline = seqshm_deadline(seqshm_monotonic_ns(), timeout_ns);
	head0 = seqshm_head(&r->r.g);
	for (;;) {
		uint64_t slice = seqshm_deadline(seqshm_monotonic_ns(), CHECK_NS);

		rc = seqshm_read_until(&r->r, -1, buf, &meta, slice < deadline ? slice : deadline, &b);
		if (rc == SEQSHM_OK) {
			fill_sample(sample, &meta, 0);
			return 0;
		}
		if (rc == SEQSHM_EDAMAGED)
			return rd_damaged(r, err);
		rc = rd_fail_state(r, err);
		if (rc)
			return rc;
		if (seqshm_monotonic_ns() >= deadline ||
		    ((r->r.last_seq & 1) && rd_writer_dead(r)))
			return rd_timed_out(r, r->r.last_slot, r->r.last_seq, head0, timeout_ns, err);
	}
}

/*
 * The racing copy of the payloads of a few KiB on x86-64 (rd_snapshot_pick() says which):
 * rep movsb inline, where glibc's memcpy for these sizes (above its rep_movsb_threshold)
 * also ends in rep movsb, after a call and its own checks. Measured at 4 KiB (EPYC, family 25):
 * the seqlock around a call of memcpy cost 3-5 ns more than the bare memcpy, around rep movsb
 * nothing; rep movsb alone is as fast as memcpy from 4 KiB to 256 KiB and slower below
 * (9.9 vs 2.7 ns at 256 B, 23.6 vs 18.7 ns at 2 KiB: its start-up cost). Like the memcpy of
 * seqshm_copy_from_slot(), it is one opaque copy between the acquire load of seq and the
 * read barrier: the asm's memory clobber keeps the compiler from moving any access across it.
 */
#if defined(__x86_64__)
#include <cpuid.h>
#define RD_REP_MIN	4096u
#define RD_REP_MAX	(256u * 1024)

/*
 * rep movsb into a destination aligned to a cache line, as glibc's memcpy does before its own
 * rep movsb (ALIGN_MOVSB): unless @dst is on a line already, the first 64 bytes are copied
 * through registers, and rep movsb copies the rest from the first line boundary of @dst on
 * (the bytes in between copied twice, the registers' stored last). Measured at 4 KiB (EPYC,
 * family 25, a page-aligned source), bare copies: rep movsb into a buffer 16 or 48 bytes past
 * a line took 44.1 ns, aligned as here 42.2 ns, into a line 40.9 ns either way; glibc's memcpy
 * 42.5 ns. numpy's and malloc's buffers are 16-byte aligned. Inside the snapshot the gain is
 * within this shared machine's noise (benchmarks/test_bench_clib.py). Both parts are loads of
 * the slot between the acquire load of seq and the read barrier, validated together by the
 * reload of seq; the asm's memory clobber keeps the head's loads before it. @n > 64.
 */
static inline __attribute__((always_inline)) void rd_copy_rep_movsb(void *dst, const void *src,
								     size_t n)
{
	/* values, not an array: the memory clobber would put an array on the stack */
	typedef long long rd_v16 __attribute__((vector_size(16)));
	size_t skip = (size_t)-(uintptr_t)dst & 63;
	unsigned char *d = (unsigned char *)dst + skip;
	const unsigned char *s = (const unsigned char *)src + skip;
	rd_v16 h0, h1, h2, h3;

	if (!skip) {
		__asm__ __volatile__("rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
		return;
	}
	__builtin_memcpy(&h0, src, 16);
	__builtin_memcpy(&h1, (const unsigned char *)src + 16, 16);
	__builtin_memcpy(&h2, (const unsigned char *)src + 32, 16);
	__builtin_memcpy(&h3, (const unsigned char *)src + 48, 16);
	n -= skip;
	__asm__ __volatile__("rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
	__builtin_memcpy(dst, &h0, 16);
	__builtin_memcpy((unsigned char *)dst + 16, &h1, 16);
	__builtin_memcpy((unsigned char *)dst + 32, &h2, 16);
	__builtin_memcpy((unsigned char *)dst + 48, &h3, 16);
}

/* Whether the CPU has enhanced rep movsb (ERMS: CPUID leaf 7, EBX bit 9), which glibc also
 * requires before it copies with rep movsb. */
static int rd_cpu_has_erms(void)
{
	unsigned int a, b, c, d;

	return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1u << 9));
}
#else
#define rd_copy_rep_movsb(dst, src, n)	seqshm_copy_from_slot((dst), (src), (n))
#endif

/*
 * Where the snapshot's entry and fast paths start: on a cache line. Measured (64 B payload,
 * EPYC family 25, the loops of benchmarks/bench_clib.c): the same code took 2.47 or 2.74 ns a call
 * depending only on where the linker happened to place it (16-byte alignment), 2.47 every
 * time on a 64-byte boundary, where its branches share the fewest fetch blocks.
 */
#define RD_HOT_ALIGN	64
/* The bytes of struct seqshm_sample that the fast path copies from the slot's meta at once. */
#define RD_SAMPLE_META	(2 * sizeof(uint64_t))
_Static_assert(offsetof(struct seqshm_sample, write_seq) == 0 &&
	       offsetof(struct seqshm_sample, timestamp_ns) == sizeof(uint64_t) &&
	       offsetof(struct seqshm_slot, timestamp_ns) ==
	       offsetof(struct seqshm_slot, write_seq) + sizeof(uint64_t),
	       "struct seqshm_sample starts as the slot's write_seq and timestamp_ns do");

/*
 * The racing copy of a 32, 64 or 128 byte payload in 32-byte moves, for the fast paths built
 * for AVX2 (rd_snapshot_pick() takes them when the CPU and the kernel support it): half the
 * loads and stores of the 16-byte moves baseline x86-64 allows, as glibc's memcpy copies these
 * sizes. Measured (EPYC family 25, benchmarks/test_bench_clib.py, destination on a line): the
 * 64 B snapshot 2.47 -> 2.20 ns (memcpy 1.66 ns), 128 B 3.18 -> 2.58 ns. Fewer moves is
 * what made the 64 B call faster: taking the entry's two register saves off the fast path
 * (rd_damaged() out of line) measured no change.
 * Like seqshm_copy_from_slot()'s, one copy bracketed by the acquire load of seq before it
 * and the read barrier of seqshm_read_retry() after it.
 */
static inline __attribute__((always_inline)) void rd_copy_v32(void *dst, const void *src,
							       size_t n)
{
	typedef long long rd_v32 __attribute__((vector_size(32)));
	size_t i;
	rd_v32 v;

	for (i = 0; i < n; i += sizeof(v)) {
		__builtin_memcpy(&v, (const unsigned char *)src + i, sizeof(v));
		__builtin_memcpy((unsigned char *)dst + i, &v, sizeof(v));
	}
}

/* How a fast path copies the payload: memcpy (inlined for constant sizes), rep movsb, or
 * 32-byte moves. */
enum { RD_COPY_MEMCPY, RD_COPY_REP, RD_COPY_V32 };

/*
 * One attempt of the snapshot's fast path, seqshm_read_once() taken apart into the shared
 * steps so that the racing copy's size @n can be a constant (for the small payloads most
 * channels have, the copy inlines into a few moves instead of a call into libc) and a
 * channel of one slot (@one_slot: the plain seqlock) skips the ring's steps: no load of
 * head, no multiply for the slot's address. The geometry is copied into locals first: the
 * copy into @buf may alias the reader (a void *), and the read barrier is a compiler barrier,
 * so fields left in *r would be loaded again after each. Only the copies differ from
 * seqshm_try_read_slot(): they are bracketed the same way, by the acquire load of seq before
 * them (nothing moves above it) and the acquire fence of seqshm_read_retry() after them
 * (nothing moves below it). Anything but a consistent copy of the newest write goes to the
 * slow path with the caller's arguments as they came (@len: as checked).
 */
static inline __attribute__((always_inline)) int
rd_snapshot_fast(struct seqshm_rd *r, void *buf, size_t len, struct seqshm_sample *sample,
		 uint64_t timeout_ns, struct seqshm_err *err, __u64 n, int one_slot, int copy)
{
	struct seqshm_geometry g = r->r.g;
	const struct seqshm_slot *ctl;
	uint64_t want, w;
	uint32_t slot, seq;

	if (one_slot) {
		g.slot_mask = 0;	/* known: the checks of the ring fold away */
		slot = 0;
	} else {
		want = seqshm_pick_write(&g, r->r.newest);
		slot = (uint32_t)want & g.slot_mask;
	}
	seq = seqshm_read_begin(&g, slot);
	if (seqshm_likely(!(seq & 1))) {
		if (copy == RD_COPY_REP)
			rd_copy_rep_movsb(buf, seqshm_slot_payload(&g, slot), n);
		else if (copy == RD_COPY_V32)
			rd_copy_v32(buf, seqshm_slot_payload(&g, slot), n);
		else
			seqshm_copy_from_slot(buf, seqshm_slot_payload(&g, slot), n);
		/*
		 * seqshm_read_meta() taken apart too: the write number into a register for the
		 * checks below, and the write number and timestamp straight into the caller's
		 * sample as one 16-byte racing copy, like the payload's (struct seqshm_sample
		 * starts as the slot's meta does). So no register holds the timestamp across the
		 * re-check, and the fast path saves none on the stack: a store and a register
		 * spill fewer than filling the sample afterwards (64 B: 9 instead of 11 stores a
		 * call). Both loads are of the same validated window, so they agree when the
		 * re-check passes; on failure the sample, like @buf, holds nothing of use.
		 */
		ctl = seqshm_slot_ctl(&g, slot);
		w = seqshm_load_relaxed(&ctl->write_seq);
		if (sample)
			seqshm_copy_from_slot(sample, &ctl->write_seq, RD_SAMPLE_META);
		if (seqshm_likely(!seqshm_read_retry(&g, slot, seq))) {
			/* the reader's own newest, private to it: loaded only now, so that it
			 * holds no register across the copy */
			if (one_slot)
				want = r->r.newest;
			if (!seqshm_likely(seqshm_copy_is_newest(&g, want, w)))
				return rd_damaged(r, err);
			/*
			 * seqshm_reader_done() without its count of snapshots, which the library
			 * never reports: an increment in memory on every call would chain the
			 * calls through a store and a load of the same word (a few cycles each
			 * in a loop of snapshots). The copy is of write @want or a later one.
			 */
			r->r.newest = w;
			if (sample)
				sample->lost = 0;
			return 0;
		}
	}
	r->r.retries++;
	/* @len was checked by seqshm_rd_snapshot(): the payload's size stands in for it, so the
	 * fast path keeps no register for it */
	(void)len;
	return rd_snapshot_slow(r, buf, r->r.g.payload_size, sample, timeout_ns, err);
}

typedef int rd_snapshot_fn(struct seqshm_rd *r, void *buf, size_t len,
			   struct seqshm_sample *sample, uint64_t timeout_ns,
			   struct seqshm_err *err);

/* The instruction set a fast path is built for: the build's own, or AVX2 (x86-64, chosen at
 * open when the CPU and the kernel support it). */
#define RD_ISA_BUILD	/* nothing */
#define RD_ISA_AVX2	__attribute__((target("avx2")))

/* One fast path per constant payload size (8 to 128 bytes), for one slot and for a ring; the
 * one for any other size copies with memcpy. */
#define RD_SNAPSHOT_FN(name, n, one_slot, copy, isa)					\
	static __attribute__((noinline, aligned(RD_HOT_ALIGN))) isa int			\
	name(struct seqshm_rd *r, void *buf, size_t len, struct seqshm_sample *sample,	\
	     uint64_t timeout_ns, struct seqshm_err *err)				\
	{										\
		return rd_snapshot_fast(r, buf, len, sample, timeout_ns, err, (n), (one_slot), \
					(copy));					\
	}
/* Both of a size: rd_snapshot_1_@sfx for one slot, rd_snapshot_n_@sfx for a ring. */
#define RD_SNAPSHOT_FNS(sfx, n, copy, isa)						\
	RD_SNAPSHOT_FN(rd_snapshot_1_##sfx, n, 1, copy, isa)				\
	RD_SNAPSHOT_FN(rd_snapshot_n_##sfx, n, 0, copy, isa)
RD_SNAPSHOT_FNS(8, 8, RD_COPY_MEMCPY, RD_ISA_BUILD)
RD_SNAPSHOT_FNS(16, 16, RD_COPY_MEMCPY, RD_ISA_BUILD)
RD_SNAPSHOT_FNS(32, 32, RD_COPY_MEMCPY, RD_ISA_BUILD)
RD_SNAPSHOT_FNS(64, 64, RD_COPY_MEMCPY, RD_ISA_BUILD)
RD_SNAPSHOT_FNS(128, 128, RD_COPY_MEMCPY, RD_ISA_BUILD)
RD_SNAPSHOT_FNS(any, r->r.g.payload_size, RD_COPY_MEMCPY, RD_ISA_BUILD)
#if defined(__x86_64__)
RD_SNAPSHOT_FNS(rep, r->r.g.payload_size, RD_COPY_REP, RD_ISA_BUILD)
RD_SNAPSHOT_FNS(32_avx2, 32, RD_COPY_V32, RD_ISA_AVX2)
RD_SNAPSHOT_FNS(64_avx2, 64, RD_COPY_V32, RD_ISA_AVX2)
RD_SNAPSHOT_FNS(128_avx2, 128, RD_COPY_V32, RD_ISA_AVX2)
#endif

/* The fast path of a reader's channel, chosen once at open (its payload size and ring). */
static rd_snapshot_fn *rd_snapshot_pick(const struct seqshm_geometry *g)
{
	static rd_snapshot_fn *const one[] = { rd_snapshot_1_8, rd_snapshot_1_16,
					       rd_snapshot_1_32, rd_snapshot_1_64,
					       rd_snapshot_1_128, rd_snapshot_1_any };
	static rd_snapshot_fn *const ring[] = { rd_snapshot_n_8, rd_snapshot_n_16,
						rd_snapshot_n_32, rd_snapshot_n_64,
						rd_snapshot_n_128, rd_snapshot_n_any };
	rd_snapshot_fn *const *fns = g->slot_mask ? ring : one;

#if defined(__x86_64__)
	if (g->payload_size >= RD_REP_MIN && g->payload_size <= RD_REP_MAX && rd_cpu_has_erms())
		return g->slot_mask ? rd_snapshot_n_rep : rd_snapshot_1_rep;
	/* libgcc fills what __builtin_cpu_supports() reads from a constructor; a program that
	 * opens a reader from a constructor of its own may run before it */
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx2")) {
		switch (g->payload_size) {
		case 32: return g->slot_mask ? rd_snapshot_n_32_avx2 : rd_snapshot_1_32_avx2;
		case 64: return g->slot_mask ? rd_snapshot_n_64_avx2 : rd_snapshot_1_64_avx2;
		case 128: return g->slot_mask ? rd_snapshot_n_128_avx2 : rd_snapshot_1_128_avx2;
		}
	}
#endif
	switch (g->payload_size) {
	case 8: return fns[0];
	case 16: return fns[1];
	case 32: return fns[2];
	case 64: return fns[3];
	case 128: return fns[4];
	default: return fns[5];
	}
}

__attribute__((aligned(RD_HOT_ALIGN)))
int seqshm_rd_snapshot(struct seqshm_rd *r, void *buf, size_t len, struct seqshm_sample *sample,
		       uint64_t timeout_ns, struct seqshm_err *err)
{
	if (__builtin_expect(seqshm_lib_forked_since(r->forks) || len < r->r.g.payload_size, 0))
		return rd_snapshot_slow(r, buf, len, sample, timeout_ns, err);
	return r->snapshot(r, buf, len, sample, timeout_ns, err);
}

/* One attempt of seqshm_rd_begin(): 1 if the newest slot was not mid-write (@v set up). */
static inline __attribute__((always_inline)) int rd_begin_once(struct seqshm_rd *r,
								struct seqshm_view *v)
{
	v->want = seqshm_pick_write(&r->r.g, r->r.newest);
	v->slot = (uint32_t)v->want & r->r.g.slot_mask;
	v->seq = seqshm_read_begin(&r->r.g, v->slot);
	if (!seqshm_likely(!(v->seq & 1)))
		return 0;
	v->data = seqshm_slot_payload(&r->r.g, v->slot);
	return 1;
}

/* seqshm_rd_begin() after its first attempt found the slot mid-write: wait, in slices of
 * CHECK_NS between looks at the reader's state, until an attempt succeeds or the timeout. */
static __attribute__((noinline)) int rd_begin_slow(struct seqshm_rd *r, struct seqshm_view *v,
						   uint64_t timeout_ns, struct seqshm_err *err)
{
	struct seqshm_backoff b = SEQSHM_BACKOFF_INIT;
	uint64_t deadline = seqshm_deadline(seqshm_monotonic_ns(), timeout_ns);
	uint64_t head0 = seqshm_head(&r->r.g);
	int rc;

	for (;;) {
		uint64_t slice = seqshm_deadline(seqshm_monotonic_ns(), CHECK_NS);
		uint32_t slot, seq;

		r->r.retries++;	/* the attempt that found the slot mid-write */
		rc = rd_fail_state(r, err);
		if (rc)
			return rc;
		rc = seqshm_wait_even_until(&r->r, &slot, &seq, 1,
					    slice < deadline ? slice : deadline, &b);
		if (rc == SEQSHM_OK) {
			if (rd_begin_once(r, v))
				return 0;
			continue;
		}
		if (seqshm_monotonic_ns() >= deadline || ((seq & 1) && rd_writer_dead(r)))
			return rd_timed_out(r, slot, seq, head0, timeout_ns, err);
	}
}

int seqshm_rd_begin(struct seqshm_rd *r, struct seqshm_view *v, uint64_t timeout_ns,
		    struct seqshm_err *err)
{
	if (__builtin_expect(seqshm_lib_forked_since(r->forks), 0))
		return rd_fail_state(r, err);
	if (rd_begin_once(r, v))
		return 0;
	return rd_begin_slow(r, v, timeout_ns, err);
}

int seqshm_rd_end(struct seqshm_rd *r, const struct seqshm_view *v, struct seqshm_sample *sample,
		  struct seqshm_err *err)
{
	struct seqshm_meta meta;

	/* a forked child may not read through its parent's reader, a view begun by the parent
	 * included (seqshm.h, "Fork") */
	if (__builtin_expect(seqshm_lib_forked_since(r->forks), 0))
		return rd_fail_state(r, err);
	seqshm_read_meta(&r->r.g, v->slot, &meta);
	if (seqshm_read_retry(&r->r.g, v->slot, v->seq)) {
		r->r.retries++;
		return seqshm_guard_damaged(r->guard) ? rd_fail_state(r, err) : -EAGAIN;
	}
	if (!seqshm_copy_is_newest(&r->r.g, v->want, meta.write_seq))
		return rd_damaged(r, err);
	/* no count of snapshots, which the library never reports (as the snapshot's fast path);
	 * the newer of the two, since a snapshot between begin and end may have returned a
	 * later write than this view's */
	if (meta.write_seq > r->r.newest)
		r->r.newest = meta.write_seq;
	fill_sample(sample, &meta, 0);
	return 0;
}

/* Whether the header in the file is no longer the one checked at open (another channel was
 * written into this very file): the static part, before head. */
static int rd_rewritten(struct seqshm_rd *r, uint64_t size)
{
	struct seqshm_header now;

	if (pread(r->fd, &now, sizeof(now), 0) != (ssize_t)sizeof(now))
		return 1;
	if (seqshm_header_check(&now, size, NULL, 0) != SEQSHM_OK)
		return 1;
	return memcmp(&now, &r->hdr, offsetof(struct seqshm_header, head)) != 0;
}

int seqshm_rd_state(struct seqshm_rd *r, struct seqshm_err *err)
{
	struct stat st, now;
	uint32_t word;
	int rc;

	if (r->forks != seqshm_lib_fork_count())
		return rd_fail_state(r, err);
	if (seqshm_guard_damaged(r->guard))
		return SEQSHM_CH_TRUNCATED;
	word = seqshm_state(&r->r.g);
	if (word == SEQSHM_STATE_CLOSED)
		return SEQSHM_CH_CLOSED;
	if (word == SEQSHM_STATE_REPLACED)
		return SEQSHM_CH_REPLACED;
	if (fstat(r->fd, &st))
		return seqshm_lib_fail(err, errno, r->info.path, "cannot stat: %s", strerror(errno));
	if (!r->info.is_device) {
		/* shrunk under the mapping, even if nothing has touched a lost page yet */
		if ((uint64_t)st.st_size < r->hdr.region_size)
			return SEQSHM_CH_TRUNCATED;
		if (rd_rewritten(r, (uint64_t)st.st_size))
			return SEQSHM_CH_REPLACED;
		if (lock_is_free(r->fd))
			return SEQSHM_CH_WRITER_DIED;
	}
	/* the file at the reader's path now, found as the open found it */
	rc = r->followed ? stat(r->info.path, &now) : lstat(r->info.path, &now);
	if (rc) {
		if (errno == ENOENT || errno == ENOTDIR)
			return SEQSHM_CH_REMOVED;
		return seqshm_lib_fail(err, errno, r->info.path, "cannot stat: %s", strerror(errno));
	}
	if (now.st_dev != st.st_dev || now.st_ino != st.st_ino)
		return r->info.is_device ? SEQSHM_CH_CLOSED : SEQSHM_CH_REPLACED;
	return SEQSHM_CH_OPEN;
}

static void rd_drop_side(struct seqshm_rd *r)
{
	if (r->side_fd < 0)
		return;
	unmap_guarded(r->side, SEQSHM_ALIGN, r->side_guard, 1);
	close(r->side_fd);
	r->side = NULL;
	r->side_fd = -1;
}

/*
 * Attach the channel's sidecar, if the header names one and the file at its place is it
 * (st_dev and st_ino as the header says, and it names our channel file back): else the wait
 * polls, and looks again CHECK_NS later. As the Python reader's _open_waiters().
 */
static void rd_open_side(struct seqshm_rd *r)
{
	char where[4096], dir[4096], name[NAME_MAX + 1], side[4096 + NAME_MAX + 16];
	struct stat st, ch;
	uint64_t id[3];
	int fd;

	r->side_next_try = seqshm_deadline(seqshm_monotonic_ns(), CHECK_NS);
	if (!r->hdr.waiters_ino)
		return;
	/* beside the channel file: the one a link led to, in its directory as the kernel names it */
	if (r->followed ? seqshm_lib_fd_path(r->fd, where, sizeof(where)) :
			  snprintf(where, sizeof(where), "%s", r->info.path) < 0)
		return;
	if (seqshm_lib_split(where, dir, sizeof(dir), name, sizeof(name)) ||
	    (size_t)snprintf(side, sizeof(side), "%s/.%s.waiters", dir, name) >= sizeof(side))
		return;
	fd = open(side, O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0)
		return;		/* none (not yet linked, removed) or not ours to write */
	if (fstat(fd, &st) || !S_ISREG(st.st_mode) || st.st_size < SEQSHM_ALIGN ||
	    (uint64_t)st.st_dev != r->hdr.waiters_dev || (uint64_t)st.st_ino != r->hdr.waiters_ino ||
	    pread(fd, id, sizeof(id), offsetof(struct seqshm_waiters, magic)) != sizeof(id) ||
	    fstat(r->fd, &ch) || id[0] != SEQSHM_WAITERS_MAGIC || id[1] != (uint64_t)ch.st_dev ||
	    id[2] != (uint64_t)ch.st_ino)
		goto fail;
	r->side = map_guarded(fd, SEQSHM_ALIGN, 1, 0, &r->side_guard);
	if (!r->side)
		goto fail;
	r->side_fd = fd;
	return;
fail:
	close(fd);
}

/* One sleep of up to @ns, until head passes @target (or a wake-up, or the end). */
static int rd_sleep(struct seqshm_rd *r, uint64_t target, uint64_t ns, uint64_t *poll_delay,
		    struct seqshm_err *err)
{
	if (r->info.is_device) {
		struct seqshm_ioc_info info = { .size = sizeof(info), .flags = SEQSHM_INFO_ACK };
		struct pollfd p = { .fd = r->fd, .events = POLLIN };
		uint64_t ms = (ns + 999999) / 1000000;

		/* What this file has seen is head now: poll() reports only a newer write. */
		if (ioctl(r->fd, SEQSHM_IOC_INFO, &info)) {
			/* destroyed meanwhile: the caller finds the channel CLOSED */
			if (errno == ENODEV)
				return 0;
			return seqshm_lib_fail(err, errno, r->info.path, "SEQSHM_IOC_INFO: %s",
					       strerror(errno));
		}
		if (info.head > target)
			return 0;
		if (poll(&p, 1, ms > INT_MAX ? INT_MAX : (int)ms) < 0 && errno != EINTR)
			return seqshm_lib_fail(err, errno, r->info.path, "poll: %s", strerror(errno));
		return 0;
	}
	if (r->side_fd >= 0 && seqshm_guard_damaged(r->side_guard))
		rd_drop_side(r);
	if (r->side_fd < 0 && seqshm_monotonic_ns() >= r->side_next_try)
		rd_open_side(r);
	if (r->side_fd >= 0) {
		int rc = seqshm_wake_lock(r->side_fd, 1);

		if (rc == 0) {
			rc = seqshm_wake_wait(seqshm_hdr(&r->r.g), &r->side->count,
					      r->hdr.wake_flags & SEQSHM_WAKE_F_FENCE, target, ns, NULL);
			seqshm_wake_lock(r->side_fd, 0);
			if (rc != SEQSHM_WAKE_ENOBARRIER)
				return 0;
			rd_drop_side(r);	/* the writer does not fence: poll */
			r->side_next_try = UINT64_MAX;
		} else if (rc != -EAGAIN && rc != -EACCES) {
			rd_drop_side(r);
		}
		/* the writer is resetting the count right now: poll once */
	}
	if (ns > *poll_delay)
		ns = *poll_delay;
	sleep_ns(ns);
	*poll_delay = *poll_delay * 2 > POLL_MAX_NS ? POLL_MAX_NS : *poll_delay * 2;
	return 0;
}

static int rd_ended(struct seqshm_rd *r, int state, struct seqshm_err *err)
{
	static const char *const what[] = {
		[SEQSHM_CH_CLOSED] = "the channel was closed by its writer",
		[SEQSHM_CH_WRITER_DIED] = "its writer ended without closing the channel",
		[SEQSHM_CH_REPLACED] = "a new channel replaced this one at its path; seqshm_rd_reopen() "
				       "moves this reader to it",
	};

	return seqshm_lib_fail(err, EPIPE, r->info.path, "no more writes: %s (%s)", what[state],
			       seqshm_strstate(state));
}

/* Wait until head > @target or @deadline: 1, 0, or -errno (-EPIPE: ended, nothing newer). */
static int rd_wait_past(struct seqshm_rd *r, uint64_t target, uint64_t deadline,
			struct seqshm_err *err)
{
	uint64_t next_check = 0, delay = POLL_MIN_NS;
	int rc;

	for (;;) {
		uint64_t now, left;

		if (seqshm_head(&r->r.g) > target)
			return 1;
		now = seqshm_monotonic_ns();
		if (now >= next_check || seqshm_state(&r->r.g) != SEQSHM_STATE_OPEN ||
		    seqshm_guard_damaged(r->guard)) {
			int state = seqshm_rd_state(r, err);

			if (state < 0)
				return state;
			if (state == SEQSHM_CH_TRUNCATED)
				return rd_truncated(r, err);
			if (seqshm_head(&r->r.g) > target)
				return 1;
			if (state != SEQSHM_CH_OPEN && state != SEQSHM_CH_REMOVED)
				return rd_ended(r, state, err);
			next_check = seqshm_deadline(now, CHECK_NS);
		}
		if (now >= deadline)
			return 0;
		left = deadline - now;
		if (left > next_check - now)
			left = next_check - now;
		rc = rd_sleep(r, target, left, &delay, err);
		if (rc)
			return rc;
	}
}

int seqshm_rd_wait(struct seqshm_rd *r, uint64_t timeout_ns, struct seqshm_err *err)
{
	if (r->forks != seqshm_lib_fork_count())
		return rd_fail_state(r, err);
	return rd_wait_past(r, r->r.newest, seqshm_deadline(seqshm_monotonic_ns(), timeout_ns),
			    err);
}

int seqshm_rd_follow(struct seqshm_rd *r, void *buf, size_t len, struct seqshm_sample *sample,
		     uint64_t timeout_ns, struct seqshm_err *err)
{
	struct seqshm_meta meta;
	uint64_t deadline;
	__u64 next;
	int rc;

	if (r->forks != seqshm_lib_fork_count())
		return rd_fail_state(r, err);
	if (len < r->r.g.payload_size)
		return seqshm_lib_fail(err, EINVAL, r->info.path, "a buffer of %zu bytes, the "
				       "payload has %llu", len,
				       (unsigned long long)r->r.g.payload_size);
	deadline = seqshm_deadline(seqshm_monotonic_ns(), timeout_ns);
	next = r->follow_next;
	if (!next) {
		/* a reader that returned none starts from the oldest write the ring holds */
		uint64_t head = seqshm_head(&r->r.g), slots = r->info.nr_slots;

		next = head >= slots ? head - slots + 1 : 1;
	}
	if (r->r.newest && next <= r->r.newest)
		next = r->r.newest + 1;	/* never before what a snapshot returned */
	for (;;) {
		enum seqshm_follow got = seqshm_follow_once(&r->r.g, &next, &r->follow_lost, buf,
							    &meta);

		r->follow_next = next;
		switch (got) {
		case SEQSHM_FOLLOW_GOT:
			seqshm_reader_done(&r->r, &meta);
			fill_sample(sample, &meta, r->follow_lost);
			r->follow_lost = 0;
			r->follow_next = meta.write_seq + 1;
			return 0;
		case SEQSHM_FOLLOW_LAPPED:
			rc = rd_fail_state(r, err);
			if (rc)
				return rc;
			if (seqshm_monotonic_ns() >= deadline)
				return seqshm_lib_fail(err, ETIMEDOUT, r->info.path, "the writer "
						       "lapped the ring during every copy for %.3g s; "
						       "a channel with more slots (nr_slots) lets "
						       "followers through", timeout_ns / 1e9);
			continue;
		case SEQSHM_FOLLOW_BEHIND:
		case SEQSHM_FOLLOW_DAMAGED:
			return rd_damaged(r, err);
		case SEQSHM_FOLLOW_WAIT:
			break;
		}
		rc = rd_fail_state(r, err);
		if (rc)
			return rc;
		rc = rd_wait_past(r, next - 1, deadline, err);
		if (rc < 0)
			return rc;
		if (rc == 0)
			return seqshm_lib_fail(err, ETIMEDOUT, r->info.path, "no new write within "
					       "%.3g s", timeout_ns / 1e9);
	}
}

/* Whether @a and @b have one element type and shape: a reader moves to a replacement only
 * then (as the Python reader's _element_key()), so that no caller reads new bytes as the
 * type it was written for. */
static int same_element(const struct seqshm_info *a, const struct seqshm_info *b)
{
	uint32_t i;

	if (a->itemsize != b->itemsize || a->record != b->record || a->ndim != b->ndim ||
	    a->nr_fields != b->nr_fields ||
	    memcmp(a->shape, b->shape, a->ndim * sizeof(a->shape[0])))
		return 0;
	for (i = 0; i < a->nr_fields; i++) {
		const struct seqshm_field_desc *x = &a->fields[i], *y = &b->fields[i];

		if (strcmp(x->name, y->name) || x->offset != y->offset || x->count != y->count ||
		    x->kind != y->kind || x->size != y->size || x->array != y->array)
			return 0;
	}
	return 1;
}

int seqshm_rd_reopen(struct seqshm_rd *r, struct seqshm_err *err)
{
	struct seqshm_info now;
	struct rd_region o;
	struct stat cur;
	int rc;

	if (r->forks != seqshm_lib_fork_count())
		return rd_fail_state(r, err);
	if (fstat(r->fd, &cur))
		return seqshm_lib_fail(err, errno, r->info.path, "cannot stat: %s", strerror(errno));
	/* the path as the open found it (its directory resolved by the kernel then), opened,
	 * checked and mapped as seqshm_rd_open() does: a planted link, a sparse file or a bad
	 * header is refused before this reader lets go of its channel */
	rc = rd_open_region(r->info.path, &o, err);
	if (rc)
		return rc;
	/* the same file is a new channel only if another was written into it in place */
	if (o.st.st_dev == cur.st_dev && o.st.st_ino == cur.st_ino &&
	    !memcmp(&o.h, &r->hdr, offsetof(struct seqshm_header, head))) {
		rd_region_release(&o);
		return 0;
	}
	info_from_header(&now, &o.h, o.path, o.is_device);
	if (!same_element(&now, &r->info)) {
		rd_region_release(&o);
		return seqshm_lib_fail(err, ENOTSUP, r->info.path, "the channel now at this path "
				       "has another element type or shape (itemsize %u, %u "
				       "dimensions, %u fields; this reader's: %u, %u, %u): open it "
				       "as a new reader; this one still reads the old channel",
				       now.itemsize, now.ndim, now.nr_fields, r->info.itemsize,
				       r->info.ndim, r->info.nr_fields);
	}
	rd_drop_side(r);
	unmap_guarded(r->map, r->map_len, r->guard, 1);
	close(r->fd);
	rd_attach(r, &o);
	r->side_next_try = 0;	/* the new channel's sidecar, at the next wait */
	return 1;
}

void seqshm_rd_close(struct seqshm_rd *r)
{
	if (!r)
		return;
	/* A forked child inherited the reader's mappings (they are not MADV_DONTFORK, unlike a
	 * writer's): they are its own copies, unmapped in the child as in the parent. */
	rd_drop_side(r);
	unmap_guarded(r->map, r->map_len, r->guard, 1);
	close(r->fd);
	free(r);
}

/* -- writers ------------------------------------------------------------------------------ */

/*
 * A new file in @dirfd that has no name until it is linked into place (O_TMPFILE, linked
 * through /proc/self/fd), so a creator killed before then leaves nothing behind; where
 * O_TMPFILE or /proc is missing, a file with a unique hidden name (O_EXCL) stands in. As
 * _files.NewFile.
 */
struct new_file {
	int dirfd;
	int fd;
	char prefix[NAME_MAX + 1];
	char name[NAME_MAX + 1];	/* its temporary name, "" while it has none */
};

static void random_name(char *out, size_t len, const char *prefix)
{
	unsigned char r[6] = { 0 };

	if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
		uint64_t t = seqshm_monotonic_ns() ^ ((uint64_t)getpid() << 32);

		memcpy(r, &t, sizeof(r));
	}
	if (snprintf(out, len, "%.*s%02x%02x%02x%02x%02x%02x", NAME_MAX - 12, prefix, r[0], r[1],
		     r[2], r[3], r[4], r[5]) >= (int)len)
		out[0] = 0;	/* cannot happen: every caller's buffer holds NAME_MAX + 1 */
}

static int new_file_open(struct new_file *nf, int dirfd, const char *prefix, mode_t mode)
{
	char proc[64];
	int i;

	nf->dirfd = dirfd;
	nf->name[0] = 0;
	/* a temporary name is the prefix and 12 hex digits, within NAME_MAX */
	snprintf(nf->prefix, sizeof(nf->prefix) - 12, "%s", prefix);
	nf->fd = openat(dirfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, mode);
	if (nf->fd >= 0) {
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", nf->fd);
		if (!access(proc, F_OK))
			return 0;
		close(nf->fd);
	} else if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) {
		return -errno;
	}
	for (i = 0; i < 100; i++) {
		random_name(nf->name, sizeof(nf->name), nf->prefix);
		nf->fd = openat(dirfd, nf->name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
				mode);
		if (nf->fd >= 0)
			return 0;
		if (errno != EEXIST)
			return -errno;
	}
	nf->name[0] = 0;
	return -EEXIST;
}

/* Give the file @name: 0, or -EEXIST if anything (a link included) has it, or -errno. */
static int new_file_link(struct new_file *nf, const char *name)
{
	char proc[64];

	if (!nf->name[0]) {
		/* linkat(AT_SYMLINK_FOLLOW) of /proc/self/fd/N names an O_TMPFILE file without
		 * CAP_DAC_READ_SEARCH (which AT_EMPTY_PATH needs); the destination is never
		 * followed */
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", nf->fd);
		return linkat(AT_FDCWD, proc, nf->dirfd, name, AT_SYMLINK_FOLLOW) ? -errno : 0;
	}
	return linkat(nf->dirfd, nf->name, nf->dirfd, name, 0) ? -errno : 0;
}

static void new_file_discard_name(struct new_file *nf)
{
	if (nf->name[0])
		unlinkat(nf->dirfd, nf->name, 0);
	nf->name[0] = 0;
}

/* Put the file at @name, replacing whatever entry is there (rename(2) never follows it). */
static int new_file_replace(struct new_file *nf, const char *name)
{
	char tmp[NAME_MAX + 1];
	int i, rc;

	if (!nf->name[0]) {
		for (i = 0; i < 100; i++) {
			random_name(tmp, sizeof(tmp), nf->prefix);
			rc = new_file_link(nf, tmp);
			if (rc == 0)
				break;
			if (rc != -EEXIST)
				return rc;
		}
		if (i == 100)
			return -EEXIST;
		strcpy(nf->name, tmp);
	}
	if (renameat(nf->dirfd, nf->name, nf->dirfd, name))
		return -errno;
	nf->name[0] = 0;
	return 0;
}

/* A new file in @dir could not be made (errno @e): as the Python writer's _files.new_file()
 * says it, word for word, so that both writers' users read one message. */
static int wr_fail_new_file(struct seqshm_err *err, int e, const char *path, const char *dir)
{
	if (e == ENOSPC)
		return seqshm_lib_fail(err, e, path, "no room for a new file in %s (see `df -i %s` "
				       "and `df -h %s`): free some", dir, dir, dir);
	return seqshm_lib_fail(err, e, path, "cannot create a file in %s: %s", dir, strerror(e));
}

/* @size bytes of a new file could not be reserved (posix_fallocate()'s @e): as the Python
 * writer's _files.reserve() says it (docs/faq.md quotes it). */
static int wr_fail_reserve(struct seqshm_err *err, int e, const char *path, uint64_t size,
			   const char *dir)
{
	if (e == ENOSPC)
		return seqshm_lib_fail(err, e, path, "no room for its %llu bytes in %s (see `df -h "
				       "%s`): free some, or make the channel smaller (shape, "
				       "nr_slots)", (unsigned long long)size, dir, dir);
	return seqshm_lib_fail(err, e, path, "cannot reserve its %llu bytes: %s",
			       (unsigned long long)size, strerror(e));
}

static uint64_t process_start_time(void)
{
	char buf[1024], *p;
	unsigned long long start = 0;
	int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC), i;
	ssize_t n;

	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	p = strrchr(buf, ')');
	if (!p)
		return 0;
	/* after ") " come fields 3 (state) ... 22 (starttime) */
	for (i = 3, p++; i < 22 && p; i++)
		p = strchr(p + 1, ' ');
	if (p)
		sscanf(p, " %llu", &start);
	return start;
}

static uint32_t pid_namespace(void)
{
	struct stat st;

	return stat("/proc/self/ns/pid", &st) ? 0 : (uint32_t)st.st_ino;
}

/* The channel's end seen by its readers at once: @state into the region open as @fd, if it
 * is a seqshm region (how a creator ends the old channel it replaces). */
static void mark_state(int fd, uint32_t state)
{
	struct seqshm_guard *g;
	struct stat st;
	struct seqshm_header *h;

	if (fstat(fd, &st) || st.st_size < (off_t)sizeof(*h))
		return;
	h = mmap(NULL, SEQSHM_ALIGN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (h == MAP_FAILED)
		return;
	g = seqshm_guard_add(h, SEQSHM_ALIGN, 0, 1);
	if (g && seqshm_load_acquire(&h->magic) == SEQSHM_MAGIC) {
		seqshm_write_close(h, state);
		seqshm_wake_all(h);	/* its sleepers see the end now, not at their next check */
	}
	if (g)
		seqshm_guard_remove(g);
	munmap(h, SEQSHM_ALIGN);
}

/* Whether the regular file @fd (its stat @st) holds a header readers accept. */
static int is_channel(int fd, const struct stat *st)
{
	struct seqshm_header h;

	return S_ISREG(st->st_mode) && pread(fd, &h, sizeof(h), 0) == (ssize_t)sizeof(h) &&
	       seqshm_header_check(&h, (uint64_t)st->st_size, NULL, 0) == SEQSHM_OK;
}

/*
 * The file at @name that an overwriting create replaces, open without following a link:
 * the descriptor (*@writable: open for writing, a regular file), -ENOENT when it is gone, or
 * -EEXIST saying what it is: a link, a socket, a directory, another user's file that is not
 * a channel. As _writer._open_old().
 */
static int open_old(int dirfd, const char *name, const char *path, int *writable,
		    struct seqshm_err *err)
{
	const int flags = O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW;	/* a FIFO must not block */
	const char *what = NULL;
	struct stat st;
	int fd;

	*writable = 1;
	fd = openat(dirfd, name, O_RDWR | flags);
	if (fd < 0 && errno != ELOOP && errno != ENOENT && errno != ENXIO) {
		*writable = 0;
		fd = openat(dirfd, name, O_RDONLY | flags);
	}
	if (fd < 0) {
		if (errno == ENOENT)
			return -ENOENT;
		if (errno == ELOOP || errno == ENXIO)
			return seqshm_lib_fail(err, EEXIST, path, "%s, not a channel: not replaced "
					       "(remove it, or create the channel at another path)",
					       errno == ELOOP ? "a symbolic link" : "a socket");
		return seqshm_lib_fail(err, errno, path, "cannot open the file there: %s",
				       strerror(errno));
	}
	if (fstat(fd, &st)) {
		close(fd);
		return seqshm_lib_fail(err, errno, path, "cannot stat: %s", strerror(errno));
	}
	if (S_ISDIR(st.st_mode))
		what = "a directory";
	else if (!is_channel(fd, &st) && st.st_uid != geteuid())
		what = "another user's file that is not a seqshm channel";
	if (what) {
		close(fd);
		return seqshm_lib_fail(err, EEXIST, path, "%s: not replaced (remove it, or create "
				       "the channel at another path)", what);
	}
	*writable = *writable && S_ISREG(st.st_mode);
	return fd;
}

/* Take over the old channel open as @old: its writer is gone and no other creator replaces
 * it (the takeover byte's write lock, or only read locks in the way). 0 or -EBUSY. */
static int take_old(int old, const char *path, struct seqshm_err *err)
{
	uint64_t deadline = seqshm_deadline(seqshm_monotonic_ns(), LOCK_RETRY_NS);

	for (;;) {
		int alive = !lock_is_free(old);

		if (!alive) {
			short type = F_WRLCK;
			int rc = ofd_lock(old, F_OFD_SETLK, &type, TAKEOVER_BYTE);

			if (rc == 0)
				return 0;
			if (rc != -EAGAIN && rc != -EACCES && rc != -EBADF)
				return seqshm_lib_fail(err, -rc, path, "cannot lock: %s", strerror(-rc));
			type = F_WRLCK;
			if (ofd_lock(old, F_OFD_GETLK, &type, TAKEOVER_BYTE) == 0 && type != F_WRLCK)
				return 0;	/* only read locks in the way (docs/security.md) */
		}
		if (seqshm_monotonic_ns() >= deadline)
			return seqshm_lib_fail(err, EBUSY, path, alive ? "another writer holds this "
					       "channel" : "another creator is replacing this channel");
		sleep_ns(1000000);
	}
}

/* Put the complete, locked channel file at its name, atomically (_writer._take_path()). */
static int take_path(struct new_file *nf, const char *name, const char *path, int overwrite,
		     struct seqshm_err *err)
{
	int i, rc;

	for (i = 0; i < 100; i++) {
		struct stat a, b;
		int old, writable;

		rc = new_file_link(nf, name);
		if (rc == 0) {
			new_file_discard_name(nf);
			return 0;
		}
		if (rc == -ENOENT)
			return seqshm_lib_fail(err, ENOENT, path, "its directory was removed while "
					       "the channel was being made");
		if (rc != -EEXIST)
			return seqshm_lib_fail(err, -rc, path, "cannot link the channel into place: %s",
					       strerror(-rc));
		if (!overwrite)
			return seqshm_lib_fail(err, EEXIST, path, "channel exists (set overwrite to "
					       "replace it)");
		old = open_old(nf->dirfd, name, path, &writable, err);
		if (old == -ENOENT)
			continue;	/* removed meanwhile: link again */
		if (old < 0)
			return old;
		rc = take_old(old, path, err);
		if (rc) {
			close(old);
			return rc;
		}
		if (fstat(old, &a) || fstatat(nf->dirfd, name, &b, AT_SYMLINK_NOFOLLOW) ||
		    a.st_dev != b.st_dev || a.st_ino != b.st_ino) {
			close(old);
			continue;	/* replaced while we looked: look at the new one */
		}
		rc = new_file_replace(nf, name);
		if (rc) {
			close(old);
			if (rc == -EPERM || rc == -EACCES)
				return seqshm_lib_fail(err, EPERM, path, "another user's file, in a "
						       "directory where only its owner may replace "
						       "it (sticky): create the channel at another "
						       "path");
			return seqshm_lib_fail(err, -rc, path, "cannot replace: %s", strerror(-rc));
		}
		if (writable)
			mark_state(old, SEQSHM_STATE_REPLACED);
		close(old);
		return 0;
	}
	return seqshm_lib_fail(err, EBUSY, path, "the path kept changing while this creator tried "
			       "to take it");
}

/* The sidecar of sleeping readers for the channel file @ch (its stat): writable by exactly
 * the classes of user @mode lets read the channel (fchmod: the umask does not apply). */
static int make_side(struct new_file *side, int dirfd, const char *base, mode_t mode,
		     const struct stat *ch, const char *path, const char *dir,
		     struct seqshm_err *err)
{
	char prefix[NAME_MAX + 16], sname[4096 + NAME_MAX + 16];
	mode_t readable = mode & 0444;
	uint64_t id[3] = { SEQSHM_WAITERS_MAGIC, (uint64_t)ch->st_dev, (uint64_t)ch->st_ino };
	int rc, e = 0;

	snprintf(prefix, sizeof(prefix), ".%s.waiters.", base);
	rc = new_file_open(side, dirfd, prefix, 0600);
	if (rc)
		return wr_fail_new_file(err, -rc, path, dir);
	if (fchmod(side->fd, readable | (readable >> 1))) {
		e = errno;
	} else if ((rc = posix_fallocate(side->fd, 0, SEQSHM_ALIGN)) != 0) {
		e = rc;
	} else {
		ssize_t n = pwrite(side->fd, id, sizeof(id), offsetof(struct seqshm_waiters, magic));

		if (n != (ssize_t)sizeof(id))
			e = n < 0 ? errno : EIO;	/* a short write sets no errno */
	}
	if (!e)
		return 0;
	close(side->fd);
	new_file_discard_name(side);
	side->fd = -1;
	if (rc) {
		/* named as the Python writer names it: the sidecar's own path */
		snprintf(sname, sizeof(sname), "%s/.%s.waiters", strcmp(dir, "/") ? dir : "", base);
		return wr_fail_reserve(err, e, sname, SEQSHM_ALIGN, dir);
	}
	return seqshm_lib_fail(err, e, path, "cannot make its sidecar: %s", strerror(e));
}

/* A sidecar is swept only this long after it was last written: one younger may belong to a
 * create() that has linked its channel but not yet its sidecar (_writer.STALE_SIDECAR_AGE_S). */
#define STALE_SIDECAR_AGE_S	60

/* Whether the file at @channel in @dirfd is a channel whose header names the sidecar @side:
 * 1, 0, or -1 when that cannot be told (a channel this user may not read). */
static int names_sidecar(int dirfd, const char *channel, const struct stat *side)
{
	struct seqshm_header h;
	struct stat st;
	int fd = openat(dirfd, channel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK), rc = 0;

	if (fd < 0)
		return errno == ENOENT || errno == ELOOP ? 0 : -1;
	if (!fstat(fd, &st) && S_ISREG(st.st_mode) &&
	    pread(fd, &h, sizeof(h), 0) == (ssize_t)sizeof(h) &&
	    seqshm_header_check(&h, (uint64_t)st.st_size, NULL, 0) == SEQSHM_OK)
		rc = h.waiters_dev == (uint64_t)side->st_dev && h.waiters_ino == (uint64_t)side->st_ino;
	close(fd);
	return rc;
}

/*
 * Remove @dirfd's sidecars whose channel is gone (a writer killed by SIGKILL, a channel file
 * removed with rm, leaves its .NAME.waiters behind, and nothing else would remove it): the
 * file at NAME is missing or is not a channel whose header names the sidecar, and the sidecar
 * was last written over STALE_SIDECAR_AGE_S ago. Names looked up in @dirfd without following
 * links; best effort, as _writer._sweep_stale_waiters().
 */
static void sweep_stale_waiters(int dirfd)
{
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct dirent *de;
	DIR *d;

	if (fd < 0)
		return;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return;
	}
	while ((de = readdir(d))) {
		size_t len = strlen(de->d_name);
		char channel[NAME_MAX + 1];
		struct stat st, cur;
		uint64_t magic;
		int side;

		if (de->d_name[0] != '.' || len <= 9 || strcmp(de->d_name + len - 8, ".waiters"))
			continue;
		memcpy(channel, de->d_name + 1, len - 9);
		channel[len - 9] = 0;
		side = openat(dirfd, de->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
		if (side < 0)
			continue;
		if (!fstat(side, &st) && S_ISREG(st.st_mode) &&
		    time(NULL) - st.st_mtime >= STALE_SIDECAR_AGE_S &&
		    pread(side, &magic, sizeof(magic), 0) == (ssize_t)sizeof(magic) &&
		    magic == SEQSHM_WAITERS_MAGIC && names_sidecar(dirfd, channel, &st) == 0 &&
		    !fstatat(dirfd, de->d_name, &cur, AT_SYMLINK_NOFOLLOW) &&
		    cur.st_dev == st.st_dev && cur.st_ino == st.st_ino)
			unlinkat(dirfd, de->d_name, 0);
		close(side);
	}
	closedir(d);
}

static int wr_fail_state(struct seqshm_wr *w, struct seqshm_err *err)
{
	if (w->forks != seqshm_lib_fork_count())
		return seqshm_lib_fail(err, ECHILD, w->info.path, "a writer of the parent process: "
				       "a forked child is not the channel's writer");
	if (!w->map)
		return seqshm_lib_fail(err, EBADF, w->info.path, "the writer is closed");
	if (seqshm_guard_damaged(w->guard))
		return seqshm_lib_fail(err, EIO, w->info.path, "the file shrank under the writer's "
				       "mapping (truncated by another process?): close the writer "
				       "and create the channel again");
	return 0;
}

/* The header's name: the file's, as printable ASCII, at most 63 characters. */
static void default_name(char *out, const char *base)
{
	size_t i;

	for (i = 0; base[i] && i < SEQSHM_LIB_NAME_LEN - 1; i++)
		out[i] = base[i] >= 0x20 && base[i] < 0x7f ? base[i] : '?';
	out[i] = 0;
}

int seqshm_wr_create(struct seqshm_wr **out, const char *path, const struct seqshm_wr_opts *o,
		     struct seqshm_err *err)
{
	char dir[4096], base[NAME_MAX + 1], full[4096 + NAME_MAX + 2], where[4096];
	char name[SEQSHM_LIB_NAME_LEN], why[256];
	struct seqshm_field fields[SEQSHM_LIB_MAX_FIELDS];
	struct new_file nf = { .fd = -1 }, side = { .fd = -1 };
	struct seqshm_layout_req req;
	struct seqshm_header h;
	struct seqshm_wr *w = NULL;
	struct stat st, sst;
	mode_t mode = o->mode ? o->mode : 0644;
	uint32_t i;
	int dirfd, rc;

	*out = NULL;
	if (!path || !*path)
		return seqshm_lib_fail(err, EINVAL, "", "no path");
	rc = seqshm_lib_split(path, dir, sizeof(dir), base, sizeof(base));
	if (rc)
		return split_failed(err, rc, path, "choose another path");
	snprintf(full, sizeof(full), "%s/%s", strcmp(dir, "/") ? dir : "", base);
	if (o->mode > 0777)
		return seqshm_lib_fail(err, EINVAL, full, "mode %#o is not permission bits from 0 to "
				       "0777", (unsigned)o->mode);
	if (strlen(base) > NAME_MAX - strlen("..waiters"))
		return seqshm_lib_fail(err, ENAMETOOLONG, full, "the file name is %zu bytes: at most "
				       "%zu, so that its sidecar '.NAME.waiters' has a name",
				       strlen(base), NAME_MAX - strlen("..waiters"));
	if (o->name) {
		if (strlen(o->name) >= SEQSHM_LIB_NAME_LEN)
			return seqshm_lib_fail(err, EINVAL, full, "channel name is %zu characters, at "
					       "most %d", strlen(o->name), SEQSHM_LIB_NAME_LEN - 1);
		strcpy(name, o->name);
	} else {
		default_name(name, base);
	}
	if (o->nr_fields > SEQSHM_LIB_MAX_FIELDS || (o->nr_fields && !o->fields) ||
	    (o->ndim && !o->shape))
		return seqshm_lib_fail(err, EINVAL, full, "%u fields (at most %d) or a shape missing",
				       o->nr_fields, SEQSHM_LIB_MAX_FIELDS);
	memset(fields, 0, sizeof(fields));
	for (i = 0; i < o->nr_fields; i++) {
		const struct seqshm_field_desc *f = &o->fields[i];

		if (f->name && strlen(f->name) >= SEQSHM_LIB_FIELD_LEN)
			return seqshm_lib_fail(err, EINVAL, full, "field name '%s' is longer than %d",
					       f->name, SEQSHM_LIB_FIELD_LEN - 1);
		if (f->name)
			strcpy(fields[i].name, f->name);
		fields[i].offset = f->offset;
		fields[i].count = f->count;
		fields[i].kind = (uint8_t)f->kind;
		fields[i].size = f->size;
		fields[i].flags = f->array ? SEQSHM_FIELD_F_ARRAY : 0;
	}
	memset(&req, 0, sizeof(req));
	req.name = name;
	req.nr_slots = o->nr_slots ? o->nr_slots : 1;
	req.ndim = o->ndim;
	req.shape = (const __u64 *)o->shape;
	req.itemsize = o->itemsize;
	req.flags = o->record ? SEQSHM_F_RECORD : 0;
	req.nr_fields = o->nr_fields;
	req.fields = fields;
	req.writer_pid = (uint32_t)getpid();
	req.writer_start = process_start_time();
	req.region_align = SEQSHM_ALIGN;
	req.max_region = MAX_REGION;
	rc = seqshm_layout_init(&h, &req, why, sizeof(why));
	if (rc != SEQSHM_OK)
		return seqshm_lib_fail(err, rc == SEQSHM_E2BIG ? E2BIG : EINVAL, full, "%s", why);
	h.wake_flags = SEQSHM_WAKE_F_FENCE;	/* a full fence per write, never membarrier */
	h.writer_pidns = pid_namespace();

	/* Every name below is made relative to the directory held open here. */
	dirfd = seqshm_lib_open_dir(dir, full, err);
	if (dirfd < 0)
		return dirfd;
	/* The directory as the kernel resolved it, for messages; a name the kernel cannot give
	 * (longer than PATH_MAX, past a link) leaves the path as the caller wrote it. */
	if (seqshm_lib_fd_path(dirfd, where, sizeof(where)) == 0) {
		snprintf(full, sizeof(full), "%s/%s", strcmp(where, "/") ? where : "", base);
		snprintf(dir, sizeof(dir), "%s", where);
	}
	if (!fstatat(dirfd, base, &st, AT_SYMLINK_NOFOLLOW)) {
		if (S_ISDIR(st.st_mode)) {
			rc = seqshm_lib_fail(err, EISDIR, full, "a directory, not a channel: choose "
					     "another path");
			goto fail;
		}
		if (!o->overwrite) {
			rc = seqshm_lib_fail(err, EEXIST, full, "channel exists (set overwrite to "
					     "replace it)");
			goto fail;
		}
	}
	w = calloc(1, sizeof(*w));
	if (!w) {
		rc = seqshm_lib_fail(err, ENOMEM, full, "out of memory");
		goto fail;
	}
	w->fd = w->side_fd = -1;
	w->dirfd = dirfd;
	{
		char prefix[NAME_MAX + 2];

		snprintf(prefix, sizeof(prefix), ".%s.", base);
		rc = new_file_open(&nf, dirfd, prefix, 0600);
	}
	if (rc) {
		rc = wr_fail_new_file(err, -rc, full, dir);
		goto fail;
	}
	w->fd = nf.fd;
	if (fchmod(w->fd, mode) || fstat(w->fd, &st)) {
		rc = seqshm_lib_fail(err, errno, full, "cannot set its mode: %s", strerror(errno));
		goto fail;
	}
	/* The sidecar where sleeping readers count themselves, named in the header. */
	rc = make_side(&side, dirfd, base, mode, &st, full, dir, err);
	if (rc)
		goto fail;
	w->side_fd = side.fd;
	if (fstat(side.fd, &sst)) {
		rc = seqshm_lib_fail(err, errno, full, "cannot stat its sidecar: %s", strerror(errno));
		goto fail;
	}
	h.waiters_dev = (uint64_t)sst.st_dev;
	h.waiters_ino = (uint64_t)sst.st_ino;
	/* Reserve the memory now: a full tmpfs fails here with ENOSPC, not later with SIGBUS. */
	rc = posix_fallocate(w->fd, 0, (off_t)h.region_size);
	if (rc) {
		rc = wr_fail_reserve(err, rc, full, h.region_size, dir);
		goto fail;
	}
	{
		ssize_t n = pwrite(w->fd, &h, sizeof(h), 0);
		int e = n < 0 ? errno : EIO;	/* a short write sets no errno */

		if (n != (ssize_t)sizeof(h)) {
			rc = seqshm_lib_fail(err, e, full, "cannot write its header: %s", strerror(e));
			goto fail;
		}
	}
	{
		/* the liveness lock, held until close: unnamed so far, nobody can hold or block it */
		short type = F_WRLCK;

		rc = ofd_lock(w->fd, F_OFD_SETLK, &type, LIVENESS_BYTE);
		if (rc) {
			rc = seqshm_lib_fail(err, -rc, full, "cannot lock: %s", strerror(-rc));
			goto fail;
		}
	}
	w->map = map_guarded(w->fd, h.region_size, 1, h.nr_slots, &w->guard);
	if (!w->map) {
		w->map = NULL;
		rc = seqshm_lib_fail(err, errno, full, "cannot map %llu bytes: %s",
				     (unsigned long long)h.region_size, strerror(errno));
		goto fail;
	}
	w->map_len = h.region_size;
	w->side = map_guarded(side.fd, SEQSHM_ALIGN, 1, 0, &w->side_guard);
	if (!w->side) {
		rc = seqshm_lib_fail(err, errno, full, "cannot map its sidecar: %s", strerror(errno));
		goto fail;
	}
	w->side_dev = sst.st_dev;
	w->side_ino = sst.st_ino;
	seqshm_geometry_init(&w->w.g, w->map, &h);
	seqshm_waker_init(&w->w.wake, w->map, 1);
	seqshm_waker_attach(&w->w.wake, w->side, side.fd);
	w->w.head = 0;
	/* Pairs with the readers' first look at the header: the magic last. */
	seqshm_header_publish(w->map);
	h.magic = SEQSHM_MAGIC;
	info_from_header(&w->info, &h, full, 0);
	w->forks = seqshm_lib_fork_count();
	snprintf(w->base, sizeof(w->base), "%s", base);
	rc = take_path(&nf, base, full, o->overwrite, err);
	if (rc)
		goto fail;
	/* Only now, holding the path, the sidecar's name (a creator that lost would have
	 * replaced a live writer's): a new file, so readers of an old channel keep the old one. */
	{
		char sname[NAME_MAX + 1];

		snprintf(sname, sizeof(sname), ".%s.waiters", base);
		rc = new_file_link(&side, sname);
		if (rc == 0) {
			new_file_discard_name(&side);
		} else if (rc == -EEXIST) {
			/* an older channel's, or a planted file: replaced, never followed; another
			 * user's (sticky directory) or a directory: the channel works without one */
			if (new_file_replace(&side, sname))
				new_file_discard_name(&side);
		} else {
			new_file_discard_name(&side);
		}
	}
	sweep_stale_waiters(dirfd);
	*out = w;
	return 0;
fail:
	new_file_discard_name(&nf);
	new_file_discard_name(&side);
	if (w) {
		if (w->side)
			unmap_guarded(w->side, SEQSHM_ALIGN, w->side_guard, 1);
		if (w->map)
			unmap_guarded(w->map, w->map_len, w->guard, 1);
		if (w->side_fd >= 0)
			close(w->side_fd);
		if (w->fd >= 0)
			close(w->fd);
		free(w);
	}
	close(dirfd);
	return rc;
}

const struct seqshm_info *seqshm_wr_info(const struct seqshm_wr *w)
{
	return &w->info;
}

int64_t seqshm_wr_write(struct seqshm_wr *w, const void *data, size_t len, uint64_t timestamp_ns,
			struct seqshm_err *err)
{
	void *dst;
	int rc;

	if (__builtin_expect(w->forks != seqshm_lib_fork_count() || !w->map ||
			     w->w.in_write, 0)) {
		rc = wr_fail_state(w, err);
		return rc ? rc : seqshm_lib_fail(err, EINVAL, w->info.path, "a write is begun "
						 "(seqshm_wr_begin()): end it first");
	}
	if (len != w->w.g.payload_size)
		return seqshm_lib_fail(err, EINVAL, w->info.path, "%zu bytes, the payload has %llu",
				       len, (unsigned long long)w->w.g.payload_size);
	dst = seqshm_write_begin(&w->w);
	memcpy(dst, data, len);
	seqshm_write_end(&w->w, timestamp_ns ? timestamp_ns : seqshm_monotonic_ns());
	if (__builtin_expect(seqshm_guard_damaged(w->guard), 0))
		return wr_fail_state(w, err);
	return (int64_t)w->w.head;
}

void *seqshm_wr_begin(struct seqshm_wr *w)
{
	if (w->forks != seqshm_lib_fork_count() || !w->map || seqshm_guard_damaged(w->guard) ||
	    w->w.in_write)
		return NULL;
	return seqshm_write_begin(&w->w);
}

int64_t seqshm_wr_end(struct seqshm_wr *w, uint64_t timestamp_ns)
{
	if (w->forks != seqshm_lib_fork_count() || !w->map)
		return -ECHILD;
	if (!w->w.in_write)
		return -EINVAL;
	seqshm_write_end(&w->w, timestamp_ns ? timestamp_ns : seqshm_monotonic_ns());
	if (seqshm_guard_damaged(w->guard))
		return -EIO;
	return (int64_t)w->w.head;
}

void seqshm_wr_close(struct seqshm_wr *w, int unlink)
{
	struct stat a, b;
	char sname[NAME_MAX + 16];

	if (!w)
		return;
	if (w->forks != seqshm_lib_fork_count()) {
		/* A forked child: the writer's mapping was not inherited (MADV_DONTFORK), so
		 * nothing is unmapped (something else may be there now); only its descriptors go. */
		seqshm_guard_remove(w->guard);
		if (w->side)
			unmap_guarded(w->side, SEQSHM_ALIGN, w->side_guard, 0);
		goto close_fds;
	}
	if (w->map) {
		seqshm_write_close(w->map, SEQSHM_STATE_CLOSED);
		seqshm_wake_all(w->map);	/* after the state: see wake.h */
	}
	/* The sidecar goes with every close (after the end no reader sleeps): ours only. */
	snprintf(sname, sizeof(sname), ".%s.waiters", w->base);
	if (!fstatat(w->dirfd, sname, &a, AT_SYMLINK_NOFOLLOW) && a.st_dev == w->side_dev &&
	    a.st_ino == w->side_ino)
		unlinkat(w->dirfd, sname, 0);
	if (unlink && !fstat(w->fd, &a) && !fstatat(w->dirfd, w->base, &b, AT_SYMLINK_NOFOLLOW) &&
	    a.st_dev == b.st_dev && a.st_ino == b.st_ino)
		unlinkat(w->dirfd, w->base, 0);
	if (w->side)
		unmap_guarded(w->side, SEQSHM_ALIGN, w->side_guard, 1);
	if (w->map)
		unmap_guarded(w->map, w->map_len, w->guard, 1);
close_fds:
	if (w->side_fd >= 0)
		close(w->side_fd);
	close(w->fd);
	close(w->dirfd);
	free(w);
}
