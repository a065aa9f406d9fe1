/* libseqshm's file safety: directories opened component by component, no planted links. */
#ifndef SEQSHM_LIB_FILES_H
#define SEQSHM_LIB_FILES_H

#include <stddef.h>
#include <sys/stat.h>

#include "seqshm.h"

/* Fill @err (if not NULL) with -@errnum and "PATH: message"; returns -@errnum. */
int seqshm_lib_fail(struct seqshm_err *err, int errnum, const char *path, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/*
 * Split @path into its directory (absolute, "." components dropped, ".." kept: after a
 * symbolic link only the kernel knows what it means) and its file name, as _files.split().
 * Returns 0 or -EISDIR (no file name), -ENAMETOOLONG.
 */
int seqshm_lib_split(const char *path, char *dir, size_t dirlen, char *name, size_t namelen);

/*
 * An O_PATH descriptor of the directory @dir (absolute), opened one component at a time, each
 * looked up by the kernel in the one before; a symbolic link among them followed only where
 * seqshm_lib_check_link() allows. Returns the descriptor or -errno (message in @err, naming
 * @for_path).
 */
int seqshm_lib_open_dir(const char *dir, const char *for_path, struct seqshm_err *err);

/*
 * Refuse (-EACCES, message in @err) to follow the symbolic link @name (its lstat @link) in the
 * directory @dirfd where fs.protected_symlinks=1 would: in a sticky world-writable directory,
 * a link owned neither by this user nor by the directory's owner. 0: it may be followed.
 */
int seqshm_lib_check_link(int dirfd, const char *name, const struct stat *link,
			  const char *for_path, struct seqshm_err *err);

/*
 * open(2) @name in @dirfd (O_CLOEXEC added) without following a link another user planted:
 * the descriptor, with *@followed set when a link was followed; or -errno (no message: the
 * caller says what it means, except for a planted link, whose message is in @err).
 */
int seqshm_lib_open_in(int dirfd, const char *name, int flags, mode_t mode, int *followed,
		       const char *for_path, struct seqshm_err *err);

/* The kernel's name of what @fd is open on, into @buf; 0 or -1. */
int seqshm_lib_fd_path(int fd, char *buf, size_t len);

#endif /* SEQSHM_LIB_FILES_H */
