/* seqshm_misuse: libseqshm called the ways a careless C user calls it, for tests/test_clib_newuser.py. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <seqshm.h>

/*
 * Usage (each result is one line "NAME rc=RC msg=MESSAGE" on stdout, exit 0 unless the
 * program itself failed):
 *   seqshm_misuse open PATH          seqshm_rd_open(): its result and message
 *   seqshm_misuse create PATH N      seqshm_wr_create() of N bytes (u1), closed and unlinked
 *   seqshm_misuse fork PATH          a channel of PATH, a zero-copy read begun by the parent
 *                                    and ended in a forked child (rd_end), then every reading
 *                                    call of the child; the parent's own end afterwards
 *   seqshm_misuse begin2 PATH        seqshm_wr_begin() twice without an end in between
 */

static void show(const char *what, long long rc, const struct seqshm_err *e)
{
	printf("%s rc=%lld msg=%s\n", what, rc, rc < 0 ? e->msg : "");
	fflush(stdout);
}

static int create(struct seqshm_wr **w, const char *path, uint64_t n, struct seqshm_err *e)
{
	uint64_t shape[1] = { n };
	struct seqshm_field_desc f = { .count = 1, .kind = 'u', .size = 1 };
	struct seqshm_wr_opts o = { .ndim = 1, .shape = shape, .itemsize = 1, .nr_fields = 1,
				    .fields = &f, .overwrite = 1 };

	return seqshm_wr_create(w, path, &o, e);
}

int main(int argc, char **argv)
{
	struct seqshm_err e = { 0 };
	struct seqshm_wr *w;
	struct seqshm_rd *r;
	struct seqshm_view v;
	struct seqshm_sample s;
	unsigned char buf[8] = { 0 };
	int rc;

	if (argc < 3)
		return 2;
	if (!strcmp(argv[1], "open")) {
		rc = seqshm_rd_open(&r, argv[2], &e);
		show("open", rc, &e);
		seqshm_rd_close(r);
		return 0;
	}
	if (!strcmp(argv[1], "create") && argc > 3) {
		rc = create(&w, argv[2], strtoull(argv[3], NULL, 10), &e);
		show("create", rc, &e);
		seqshm_wr_close(w, 1);
		return 0;
	}
	rc = create(&w, argv[2], sizeof(buf), &e);
	if (rc) {
		show("create", rc, &e);
		return 1;
	}
	if (!strcmp(argv[1], "begin2")) {
		void *a = seqshm_wr_begin(w), *b = seqshm_wr_begin(w);

		printf("first=%d second=%d end=%lld\n", a != NULL, b != NULL,
		       (long long)seqshm_wr_end(w, 0));
		seqshm_wr_close(w, 1);
		return 0;
	}
	if (!strcmp(argv[1], "fork")) {
		pid_t pid;

		seqshm_wr_write(w, buf, sizeof(buf), 0, &e);
		if (seqshm_rd_open(&r, argv[2], &e) || seqshm_rd_begin(r, &v, 0, &e)) {
			show("open", -e.errnum, &e);
			return 1;
		}
		pid = fork();
		if (pid == 0) {
			show("child-end", seqshm_rd_end(r, &v, &s, &e), &e);
			show("child-begin", seqshm_rd_begin(r, &v, 0, &e), &e);
			show("child-snapshot", seqshm_rd_snapshot(r, buf, sizeof(buf), &s, 0, &e), &e);
			show("child-follow", seqshm_rd_follow(r, buf, sizeof(buf), &s, 0, &e), &e);
			show("child-wait", seqshm_rd_wait(r, 0, &e), &e);
			show("child-state", seqshm_rd_state(r, &e), &e);
			show("child-reopen", seqshm_rd_reopen(r, &e), &e);
			seqshm_rd_close(r);
			seqshm_wr_close(w, 1);
			_exit(0);
		}
		waitpid(pid, NULL, 0);
		show("parent-end", seqshm_rd_end(r, &v, &s, &e), &e);
		seqshm_rd_close(r);
		seqshm_wr_close(w, 1);
		return 0;
	}
	seqshm_wr_close(w, 1);
	return 2;
}
