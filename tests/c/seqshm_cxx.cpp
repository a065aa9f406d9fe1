// seqshm_cxx: the public header used from C++11 (tests/test_clib.py builds it with -pedantic -Werror).
//
// Usage: seqshm_cxx READ_PATH WRITE_PATH
// Reads READ_PATH (a channel of one f8): "read seq=N value=V state=S reopen=R"; then creates a
// one-f8 channel at WRITE_PATH, writes 2.5 twice, reads it back and removes it:
// "wrote seq=N value=V". An error is "err ERRNO MESSAGE", exit 1.
#include <seqshm.h>

#include <cstdio>
#include <cstring>
#include <vector>

static int fail(const seqshm_err &e, int rc)
{
	std::printf("err %d %s\n", -rc, e.msg);
	return 1;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return 2;
	seqshm_err e;
	seqshm_rd *r = nullptr;
	int rc = seqshm_rd_open(&r, argv[1], &e);
	if (rc)
		return fail(e, rc);
	const seqshm_info *info = seqshm_rd_info(r);
	std::vector<unsigned char> buf(info->payload_size);
	seqshm_sample s = seqshm_sample();
	rc = seqshm_rd_snapshot(r, buf.data(), buf.size(), &s, SEQSHM_FOREVER, &e);
	if (rc) {
		seqshm_rd_close(r);
		return fail(e, rc);
	}
	double v;
	std::memcpy(&v, buf.data(), sizeof(v));
	int state = seqshm_rd_state(r, &e);
	int moved = seqshm_rd_reopen(r, &e);
	std::printf("read seq=%llu value=%g state=%s reopen=%d\n",
		    static_cast<unsigned long long>(s.write_seq), v, seqshm_strstate(state), moved);
	seqshm_rd_close(r);

	// A writer: the options and the field table as C++11 fills them (no designated
	// initializers before C++20).
	seqshm_field_desc field = seqshm_field_desc();
	field.name = "";
	field.count = 1;
	field.kind = 'f';
	field.size = 8;
	seqshm_wr_opts o = seqshm_wr_opts();
	o.itemsize = 8;
	o.nr_fields = 1;
	o.fields = &field;
	seqshm_wr *w = nullptr;
	rc = seqshm_wr_create(&w, argv[2], &o, &e);
	if (rc)
		return fail(e, rc);
	double out = 2.5;
	int64_t seq = seqshm_wr_write(w, &out, sizeof(out), 0, &e);
	if (seq > 0) {
		void *dst = seqshm_wr_begin(w);
		std::memcpy(dst, &out, sizeof(out));
		seq = seqshm_wr_end(w, 0);
	}
	if (seq < 0) {
		seqshm_wr_close(w, 1);
		return fail(e, static_cast<int>(seq));
	}
	rc = seqshm_rd_open(&r, argv[2], &e);
	if (rc == 0) {
		seqshm_view view;
		rc = seqshm_rd_begin(r, &view, SEQSHM_FOREVER, &e);
		if (rc == 0) {
			std::memcpy(&v, view.data, sizeof(v));
			rc = seqshm_rd_end(r, &view, &s, &e);
		}
		seqshm_rd_close(r);
	}
	seqshm_wr_close(w, 1);
	if (rc)
		return fail(e, rc);
	std::printf("wrote seq=%llu value=%g\n", static_cast<unsigned long long>(s.write_seq), v);
	return 0;
}
