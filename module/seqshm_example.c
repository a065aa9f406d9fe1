// SPDX-License-Identifier: GPL-2.0
/*
 * seqshm_example: the in-kernel producer example of module/README.md, built so that it is
 * known to compile (check.sh also checks that the README shows exactly the code between the
 * markers below). Test-only, not installed by DKMS: loaded, it publishes one write of 16
 * made-up sensor readings on /dev/seqshm/mysensor, which tests/device checks.
 */
#include <linux/kernel.h>
#include <linux/module.h>

/* README example begin */
#include <linux/math.h>
#include <linux/math64.h>
#include <linux/seqshm.h>

/* One element per sensor. The kernel does no floating point: integers in fixed units. */
struct mysensor_rec {
	s64 temp_mc;	/* millidegrees Celsius */
	u32 raw;	/* the ADC reading, 0..4095 */
	u32 avg_raw;	/* mean of the last readings */
};

static const struct seqshm_field mysensor_fields[] = {
	{ .name = "temp_mc", .offset = offsetof(struct mysensor_rec, temp_mc), .count = 1,
	  .kind = SEQSHM_KIND_INT, .size = 8 },
	{ .name = "raw", .offset = offsetof(struct mysensor_rec, raw), .count = 1,
	  .kind = SEQSHM_KIND_UINT, .size = 4 },
	{ .name = "avg_raw", .offset = offsetof(struct mysensor_rec, avg_raw), .count = 1,
	  .kind = SEQSHM_KIND_UINT, .size = 4 },
};

static const u64 mysensor_shape[] = { 16 };
static const struct seqshm_channel_config mysensor_cfg = {
	.name = "mysensor", .record = true,
	.fields = mysensor_fields, .nr_fields = ARRAY_SIZE(mysensor_fields),
	.itemsize = sizeof(struct mysensor_rec), .ndim = 1, .shape = mysensor_shape,
	.nr_slots = 4,
	.mode = 0444,	/* every user may read it; 0 (the default) is 0400: root only */
};

static struct seqshm_channel *mysensor_ch;

/* Process context (probe, module init): creates /dev/seqshm/mysensor. */
static int mysensor_start(void)
{
	mysensor_ch = seqshm_channel_create(&mysensor_cfg);
	return PTR_ERR_OR_ZERO(mysensor_ch);
}

/* Any context but NMI, hard interrupt included (PREEMPT_RT too); never sleeps. */
static void mysensor_publish(const u32 *raw, const u64 *sum, u32 n, u64 when_ns)
{
	struct mysensor_rec *r = seqshm_write_begin(mysensor_ch, NULL); /* raw spinlock, irqsave */
	int i;

	for (i = 0; i < 16; i++) {
		r[i].raw = raw[i];
		/* 0..4095 -> -40000..125000 millidegrees: integer scaling, no double */
		r[i].temp_mc = (s64)mult_frac(raw[i], 165000U, 4095U) - 40000;
		r[i].avg_raw = n ? (u32)div_u64(sum[i], n) : raw[i];
	}
	seqshm_write_end(mysensor_ch, when_ns);	/* 0 = now; publishes, unlocks, wakes pollers */
	/* or, from a filled buffer: seqshm_publish(mysensor_ch, buf, len); */
}

/* Process context (remove, module exit); no write may follow or run concurrently. */
static void mysensor_stop(void)
{
	seqshm_channel_destroy(mysensor_ch);
}

/* README example end */

static int __init seqshm_example_init(void)
{
	u32 raw[16];
	u64 sum[16];
	int i, ret;

	ret = mysensor_start();
	if (ret)
		return ret;
	for (i = 0; i < 16; i++) {
		raw[i] = i * 273;	/* 0, 273, ..., 4095 */
		sum[i] = 3ULL * raw[i] + 3;	/* three readings averaging raw[i] + 1 */
	}
	mysensor_publish(raw, sum, 3, 0);
	return 0;
}

static void __exit seqshm_example_exit(void)
{
	mysensor_stop();
}

module_init(seqshm_example_init);
module_exit(seqshm_example_exit);

MODULE_DESCRIPTION("The in-kernel producer example of the seqshm README");
MODULE_LICENSE("GPL");
