// SPDX-License-Identifier: GPL-2.0
/*
 * seqshm_apitest: test-only producer module for tests/device: checks that the exported API
 * rejects bad channel configurations, then publishes known records on /dev/seqshm/apitest,
 * and lets the tests put any header through the kernel's compiled header check
 * (/dev/seqshm_apitest_check). Built beside seqshm.ko for the guest tests; not installed by
 * DKMS.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/err.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/stddef.h>
#include <linux/slab.h>
#include <linux/stat.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <linux/seqshm.h>

static unsigned int checks;
module_param(checks, uint, 0444);
MODULE_PARM_DESC(checks, "configuration checks run at load");

static unsigned int failures;
module_param(failures, uint, 0444);
MODULE_PARM_DESC(failures, "configuration checks that did not get the expected error");

/* The tests load the module with a mode to see the node get it, or refused at create. */
static ushort mode;
module_param(mode, ushort, 0444);
MODULE_PARM_DESC(mode, "mode of /dev/seqshm/apitest, passed to seqshm_channel_create() as is (default 0: the API's default)");

/* The element of /dev/seqshm/apitest. */
struct apitest_rec {
	s32 a;
	u32 pad;
	u64 b;		/* IEEE 754 binary64 bits: the kernel does no floating point */
	u8 c[4];
	u8 pad2[4];
};

static const struct seqshm_field apitest_fields[] = {
	{ .name = "a", .offset = offsetof(struct apitest_rec, a), .count = 1,
	  .kind = SEQSHM_KIND_INT, .size = 4 },
	{ .name = "b", .offset = offsetof(struct apitest_rec, b), .count = 1,
	  .kind = SEQSHM_KIND_FLOAT, .size = 8 },
	{ .name = "c", .offset = offsetof(struct apitest_rec, c), .count = 4,
	  .kind = SEQSHM_KIND_UINT, .size = 1, .flags = SEQSHM_FIELD_F_ARRAY },
};

static const u64 apitest_shape[] = { 2, 3 };

static const struct seqshm_channel_config apitest_cfg = {
	.name = "apitest",
	.record = true,
	.fields = apitest_fields,
	.nr_fields = ARRAY_SIZE(apitest_fields),
	.itemsize = sizeof(struct apitest_rec),
	.ndim = 2,
	.shape = apitest_shape,
	.nr_slots = 2,
};

static struct seqshm_channel *apitest_ch;

/* Creating @cfg must fail with @err (and create nothing). */
static void apitest_expect(const struct seqshm_channel_config *cfg, int err, const char *what)
{
	struct seqshm_channel *ch = seqshm_channel_create(cfg);

	checks++;
	if (IS_ERR(ch) && PTR_ERR(ch) == err)
		return;
	failures++;
	pr_err("%s: expected %d, got %ld\n", what, err, IS_ERR(ch) ? PTR_ERR(ch) : 0L);
	seqshm_channel_destroy(ch);
}

static const struct {
	umode_t mode;
	const char *what;
} bad_modes[] = {
	{ 0644, "mode 0644 (owner write)" },
	{ 0446, "mode 0446 (others write)" },
	{ 0222, "mode 0222 (write only)" },
	{ 0555, "mode 0555 (execute)" },
	{ 0441, "mode 0441 (others execute)" },
	{ 04444, "mode 04444 (set-user-id)" },
	{ 02444, "mode 02444 (set-group-id)" },
	{ 01444, "mode 01444 (sticky)" },
	{ S_IFCHR | 0444, "mode S_IFCHR | 0444 (a file type)" },
	{ 0xffff, "mode 0xffff" },
};

static void apitest_bad_configs(void)
{
	static const struct seqshm_field scalar = {
		.count = 1, .kind = SEQSHM_KIND_UINT, .size = 8,
	};
	struct seqshm_field f[2] = { apitest_fields[0], apitest_fields[0] };
	u64 shape[SEQSHM_MAX_DIMS + 1] = { 1, 1, 1, 1, 1, 1, 1, 1, 1 };
	struct seqshm_channel_config c;
	unsigned int i;

	apitest_expect(NULL, -EINVAL, "NULL config");

	c = apitest_cfg;
	c.name = "";
	apitest_expect(&c, -EINVAL, "empty name");
	c.name = "..";
	apitest_expect(&c, -EINVAL, "name ..");
	c.name = "a/b";
	apitest_expect(&c, -EINVAL, "name with a slash");
	c.name = "0123456789012345678901234567890123456789012345678901234567890123";
	apitest_expect(&c, -EINVAL, "name of 64 chars");
	c.name = "selftest";
	apitest_expect(&c, -EEXIST, "name taken");

	c = apitest_cfg;
	c.nr_slots = 3;
	apitest_expect(&c, -EINVAL, "3 slots");
	c.nr_slots = 0;
	apitest_expect(&c, -EINVAL, "0 slots");
	c.nr_slots = SEQSHM_MAX_SLOTS * 2;
	apitest_expect(&c, -EINVAL, "2048 slots");

	c = apitest_cfg;
	c.ndim = SEQSHM_MAX_DIMS + 1;
	c.shape = shape;
	apitest_expect(&c, -EINVAL, "9 dims");
	shape[0] = 0;
	c.ndim = 1;
	apitest_expect(&c, -EINVAL, "zero dimension");
	shape[0] = 1ULL << 40;
	apitest_expect(&c, -E2BIG, "1 TiB payload");
	shape[0] = U64_MAX;
	apitest_expect(&c, -EOVERFLOW, "overflowing shape");

	c = apitest_cfg;
	c.nr_fields = 0;
	apitest_expect(&c, -EINVAL, "no fields");
	c.record = false;
	c.nr_fields = 3;
	apitest_expect(&c, -EINVAL, "scalar with 3 fields");
	c.fields = &scalar;
	c.nr_fields = 1;
	c.itemsize = 4;
	apitest_expect(&c, -EINVAL, "scalar field size != itemsize");

	c = apitest_cfg;
	c.fields = f;
	c.nr_fields = 2;
	apitest_expect(&c, -EINVAL, "duplicate field names");
	strscpy(f[1].name, "z", sizeof(f[1].name));
	f[1].offset = sizeof(struct apitest_rec) - 2;
	apitest_expect(&c, -EINVAL, "field past itemsize");
	f[1].offset = 0;
	f[1].size = 3;
	apitest_expect(&c, -EINVAL, "int of 3 bytes");
	f[1].size = 4;
	f[1].kind = 'x';
	apitest_expect(&c, -EINVAL, "unknown kind");
	f[1].kind = SEQSHM_KIND_INT;
	f[1].count = 2;
	apitest_expect(&c, -EINVAL, "count 2 without F_ARRAY");
	f[1].count = 1;
	f[1].flags = 0x80;
	apitest_expect(&c, -EINVAL, "unknown field flag");
	f[1].flags = 0;
	f[1].__reserved[0] = 1;
	apitest_expect(&c, -EINVAL, "nonzero field reserved");
	f[1].__reserved[0] = 0;
	f[1].name[0] = '\0';
	apitest_expect(&c, -EINVAL, "empty field name in a record");

	/* A device mode has read bits only: no write, execute, set-id or sticky bit, no type. */
	c = apitest_cfg;
	for (i = 0; i < ARRAY_SIZE(bad_modes); i++) {
		c.mode = bad_modes[i].mode;
		apitest_expect(&c, -EINVAL, bad_modes[i].what);
	}
}

/*
 * /dev/seqshm_apitest_check: write() a u64 region size (native byte order; 0: unknown) and
 * then a struct seqshm_header, in one buffer; read() then returns "<errno> <why>\n", the
 * result of seqshm_check_header() on it. The tests put the same headers through the
 * userspace check and compare: one source, one verdict, one sentence, on both sides.
 */
struct apitest_verdict {
	struct seqshm_header hdr;
	int ret;
	char why[256];
};

static int apitest_check_open(struct inode *inode, struct file *file)
{
	struct apitest_verdict *v = kzalloc(sizeof(*v), GFP_KERNEL);

	if (!v)
		return -ENOMEM;
	v->ret = -ENODATA;
	strscpy(v->why, "no header written yet", sizeof(v->why));
	file->private_data = v;
	return 0;
}

static int apitest_check_release(struct inode *inode, struct file *file)
{
	kfree(file->private_data);
	return 0;
}

static ssize_t apitest_check_write(struct file *file, const char __user *buf, size_t len,
				   loff_t *ppos)
{
	struct apitest_verdict *v = file->private_data;
	u64 region_size;

	if (len != sizeof(region_size) + sizeof(v->hdr))
		return -EINVAL;
	if (copy_from_user(&region_size, buf, sizeof(region_size)) ||
	    copy_from_user(&v->hdr, buf + sizeof(region_size), sizeof(v->hdr)))
		return -EFAULT;
	v->why[0] = '\0';
	v->ret = seqshm_check_header(&v->hdr, region_size, v->why, sizeof(v->why));
	*ppos = 0;	/* the next read() returns this verdict from its start */
	return len;
}

static ssize_t apitest_check_read(struct file *file, char __user *buf, size_t len,
				  loff_t *ppos)
{
	struct apitest_verdict *v = file->private_data;
	char line[sizeof(v->why) + 16];
	int n = scnprintf(line, sizeof(line), "%d %s\n", v->ret, v->why);

	return simple_read_from_buffer(buf, len, ppos, line, n);
}

static const struct file_operations apitest_check_fops = {
	.owner = THIS_MODULE,
	.open = apitest_check_open,
	.release = apitest_check_release,
	.read = apitest_check_read,
	.write = apitest_check_write,
};

static struct miscdevice apitest_check_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "seqshm_apitest_check",
	.mode = 0600,
	.fops = &apitest_check_fops,
};

static int __init apitest_init(void)
{
	/* 0.0, 1.0, 2.0, 3.0, 4.0, 5.0 as binary64 */
	static const u64 b[6] = {
		0, 0x3ff0000000000000ULL, 0x4000000000000000ULL, 0x4008000000000000ULL,
		0x4010000000000000ULL, 0x4014000000000000ULL,
	};
	struct seqshm_channel_config cfg = apitest_cfg;
	struct apitest_rec recs[6] = {};
	struct apitest_rec *p;
	int i, ret;

	apitest_bad_configs();
	cfg.mode = mode;
	apitest_ch = seqshm_channel_create(&cfg);
	if (IS_ERR(apitest_ch))
		return PTR_ERR(apitest_ch);
	ret = misc_register(&apitest_check_dev);
	if (ret) {
		seqshm_channel_destroy(apitest_ch);
		return ret;
	}

	/* Write 1 through publish(), write 2 through begin/end with a given timestamp. */
	for (i = 0; i < 6; i++) {
		recs[i].a = -i;
		recs[i].b = b[i];
		memset(recs[i].c, i, sizeof(recs[i].c));
	}
	if (seqshm_publish(apitest_ch, recs, sizeof(recs) + 1) != -EINVAL)
		failures++;
	checks++;
	seqshm_publish(apitest_ch, recs, sizeof(recs));
	p = seqshm_write_begin(apitest_ch, NULL);
	for (i = 0; i < 6; i++) {
		p[i] = recs[i];
		p[i].a = 100 + i;
	}
	seqshm_write_end(apitest_ch, 12345);
	pr_info("%u checks, %u failures\n", checks, failures);
	return 0;
}

static void __exit apitest_exit(void)
{
	misc_deregister(&apitest_check_dev);
	seqshm_channel_destroy(apitest_ch);
}

module_init(apitest_init);
module_exit(apitest_exit);

MODULE_DESCRIPTION("Test-only producer of seqshm channels, for the guest tests");
MODULE_LICENSE("GPL");
