/* libseqshm's file safety, as seqshm/_files.py: the kernel resolves paths, planted links are not followed. */
#define _GNU_SOURCE
#include "files.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* How often a name that keeps changing between a link and another file is looked at again. */
#define SEQSHM_LIB_SWAPS	8

int seqshm_lib_fail(struct seqshm_err *err, int errnum, const char *path, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (err) {
		err->errnum = errnum;
		n = snprintf(err->msg, sizeof(err->msg), "%s: ", path ? path : "seqshm");
		if (n < 0 || (size_t)n >= sizeof(err->msg))
			n = 0;
		va_start(ap, fmt);
		vsnprintf(err->msg + n, sizeof(err->msg) - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return -errnum;
}

int seqshm_lib_split(const char *path, char *dir, size_t dirlen, char *name, size_t namelen)
{
	char abs[8192];
	size_t out = 0, i = 0, last = 0;
	int n;

	if (path[0] == '/') {
		n = snprintf(abs, sizeof(abs), "%s", path);
	} else {
		char cwd[4096];

		if (!getcwd(cwd, sizeof(cwd)))
			return -errno;
		n = snprintf(abs, sizeof(abs), "%s/%s", cwd, path);
	}
	if (n < 0 || (size_t)n >= sizeof(abs))
		return -ENAMETOOLONG;
	/* Rebuild "/a/b/c" without empty and "." components, in place (out <= i always). */
	while (abs[i]) {
		size_t start, len;

		while (abs[i] == '/')
			i++;
		start = i;
		while (abs[i] && abs[i] != '/')
			i++;
		len = i - start;
		if (!len || (len == 1 && abs[start] == '.'))
			continue;
		last = out;
		abs[out++] = '/';
		memmove(abs + out, abs + start, len);
		out += len;
	}
	abs[out] = 0;
	if (!out || !strcmp(abs + last + 1, "..") || !strcmp(abs + last + 1, "."))
		return -EISDIR;
	if (strlen(abs + last + 1) >= namelen || (last ? last : 1) >= dirlen)
		return -ENAMETOOLONG;
	strcpy(name, abs + last + 1);
	if (!last) {
		strcpy(dir, "/");
	} else {
		memcpy(dir, abs, last);
		dir[last] = 0;
	}
	return 0;
}

int seqshm_lib_fd_path(int fd, char *buf, size_t len)
{
	char proc[64];
	ssize_t n;

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	n = readlink(proc, buf, len - 1);
	if (n < 0 || (size_t)n >= len - 1)
		return -1;
	buf[n] = 0;
	return 0;
}

int seqshm_lib_check_link(int dirfd, const char *name, const struct stat *link,
			  const char *for_path, struct seqshm_err *err)
{
	char where[4096];
	struct stat st;

	if (fstat(dirfd, &st))
		return seqshm_lib_fail(err, errno, for_path, "cannot stat the directory of %s: %s",
				       name, strerror(errno));
	if (!((st.st_mode & S_ISVTX) && (st.st_mode & S_IWOTH)))
		return 0;
	if (link->st_uid == geteuid() || link->st_uid == st.st_uid)
		return 0;
	if (seqshm_lib_fd_path(dirfd, where, sizeof(where)))
		strcpy(where, "its directory");
	return seqshm_lib_fail(err, EACCES, for_path,
			       "%s is a symbolic link that uid %u made in %s, a directory every "
			       "user may write: not followed (as fs.protected_symlinks does); give "
			       "the real path", name, (unsigned)link->st_uid, where);
}

int seqshm_lib_open_dir(const char *dir, const char *for_path, struct seqshm_err *err)
{
	const int flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
	char comp[4096];
	const char *p = dir;
	int fd = open("/", flags), nxt, rc;

	if (fd < 0)
		return seqshm_lib_fail(err, errno, for_path, "cannot open /: %s", strerror(errno));
	while (*p) {
		size_t len;
		struct stat link;

		while (*p == '/')
			p++;
		len = strcspn(p, "/");
		if (!len)
			break;
		if (len >= sizeof(comp)) {
			close(fd);
			return seqshm_lib_fail(err, ENAMETOOLONG, for_path, "a directory name is too long");
		}
		memcpy(comp, p, len);
		comp[len] = 0;
		p += len;
		if (!strcmp(comp, "."))
			continue;
		nxt = openat(fd, comp, flags | O_NOFOLLOW);
		if (nxt < 0 && (errno == ENOTDIR || errno == ELOOP)) {
			/* A link (O_NOFOLLOW) or not a directory at all. */
			if (fstatat(fd, comp, &link, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(link.st_mode)) {
				rc = seqshm_lib_check_link(fd, comp, &link, for_path, err);
				if (rc) {
					close(fd);
					return rc;
				}
				nxt = openat(fd, comp, flags);
			} else {
				errno = ENOTDIR;
			}
		}
		if (nxt < 0) {
			int e = errno;

			close(fd);
			if (e == ENOENT)
				return seqshm_lib_fail(err, e, for_path, "no directory %s", dir);
			if (e == ENOTDIR)
				return seqshm_lib_fail(err, e, for_path, "%s is not a directory", dir);
			if (e == EACCES)
				return seqshm_lib_fail(err, e, for_path,
						       "this user may not search %s", dir);
			return seqshm_lib_fail(err, e, for_path, "cannot open the directory %s: %s",
					       dir, strerror(e));
		}
		close(fd);
		fd = nxt;
	}
	return fd;
}

int seqshm_lib_open_in(int dirfd, const char *name, int flags, mode_t mode, int *followed,
		       const char *for_path, struct seqshm_err *err)
{
	int i, fd, rc;

	*followed = 0;
	for (i = 0; i < SEQSHM_LIB_SWAPS; i++) {
		struct stat link;

		fd = openat(dirfd, name, flags | O_NOFOLLOW | O_CLOEXEC, mode);
		if (fd >= 0)
			return fd;
		if (errno != ELOOP)
			return -errno;
		if (fstatat(dirfd, name, &link, AT_SYMLINK_NOFOLLOW))
			return -errno;
		if (!S_ISLNK(link.st_mode))
			continue;	/* swapped for something else meanwhile: look again */
		rc = seqshm_lib_check_link(dirfd, name, &link, for_path, err);
		if (rc)
			return rc == -EACCES ? -EPERM : rc;	/* -EPERM: the message is in @err */
		/* O_NOFOLLOW is off only here, for a link this user or the directory's owner made */
		fd = openat(dirfd, name, flags | O_CLOEXEC, mode);
		if (fd >= 0)
			*followed = 1;
		return fd >= 0 ? fd : -errno;
	}
	return -ELOOP;
}
