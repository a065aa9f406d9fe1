// SPDX-License-Identifier: GPL-2.0
/*
 * seqshm: the "selftest" channel: an hrtimer writing a verifiable pattern (every 64-bit word
 * of write k is k) at a set period, for tests and benchmarks.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/hrtimer.h>
#include <linux/ktime.h>
#include <linux/log2.h>
#include <linux/moduleparam.h>
#include <linux/mutex.h>
#include <linux/sizes.h>

#include "seqshm_internal.h"

#define SELFTEST_PERIOD_MIN_US	10
#define SELFTEST_PERIOD_MAX_US	10000000

static unsigned int selftest_bytes = 4096;
module_param(selftest_bytes, uint, 0444);
MODULE_PARM_DESC(selftest_bytes,
		 "selftest payload bytes, a multiple of 8 from 8 to 16 MiB (load time only; default 4096)");

static unsigned int selftest_slots = 1;
module_param(selftest_slots, uint, 0444);
MODULE_PARM_DESC(selftest_slots,
		 "selftest slots, a power of two from 1 to 1024 (load time only; default 1)");

/* Guards selftest_ch against a sysfs write racing with module init and exit. */
static DEFINE_MUTEX(selftest_mutex);
static struct seqshm_channel *selftest_ch;
static struct hrtimer selftest_timer;
static unsigned int selftest_period_us = 100;
static u64 selftest_period_ns = 100 * NSEC_PER_USEC;

/* Hard interrupt context (softirq on PREEMPT_RT): one write of the whole pattern. */
static enum hrtimer_restart seqshm_selftest_tick(struct hrtimer *timer)
{
	u64 period = READ_ONCE(selftest_period_ns);
	size_t i, words = selftest_bytes / sizeof(u64);
	u64 *p, k;

	if (!period)
		return HRTIMER_NORESTART;
	p = seqshm_write_begin(selftest_ch, &k);
	for (i = 0; i < words; i++)
		p[i] = k;
	seqshm_write_end(selftest_ch, 0);
	hrtimer_forward_now(timer, ns_to_ktime(period));
	return HRTIMER_RESTART;
}

/* Under selftest_mutex, with the channel created. */
static void seqshm_selftest_restart(void)
{
	hrtimer_cancel(&selftest_timer);
	if (selftest_period_ns)
		hrtimer_start(&selftest_timer, ns_to_ktime(selftest_period_ns), HRTIMER_MODE_REL);
}

static int seqshm_selftest_period_set(const char *val, const struct kernel_param *kp)
{
	unsigned int us;
	int ret;

	ret = kstrtouint(val, 0, &us);
	if (ret)
		return ret;
	if (us && (us < SELFTEST_PERIOD_MIN_US || us > SELFTEST_PERIOD_MAX_US))
		return -EINVAL;
	mutex_lock(&selftest_mutex);
	selftest_period_us = us;
	WRITE_ONCE(selftest_period_ns, (u64)us * NSEC_PER_USEC);
	if (selftest_ch)
		seqshm_selftest_restart();
	mutex_unlock(&selftest_mutex);
	return 0;
}

static const struct kernel_param_ops seqshm_selftest_period_ops = {
	.set = seqshm_selftest_period_set,
	.get = param_get_uint,
};

module_param_cb(selftest_period_us, &seqshm_selftest_period_ops, &selftest_period_us, 0644);
MODULE_PARM_DESC(selftest_period_us,
		 "selftest write period in us, 10 to 10000000, 0 = stopped (default 100; writable at run time)");

/**
 * seqshm_selftest_init() - create /dev/seqshm/selftest and start its timer.
 *
 * Return: 0, -EINVAL for bad selftest_bytes/selftest_slots, or a channel creation error.
 */
int seqshm_selftest_init(void)
{
	static const struct seqshm_field word = {
		.offset = 0,
		.count = 1,
		.kind = SEQSHM_KIND_UINT,
		.size = sizeof(u64),
	};
	u64 shape = selftest_bytes / sizeof(u64);
	struct seqshm_channel_config cfg = {
		.name = "selftest",
		.record = false,
		.fields = &word,
		.nr_fields = 1,
		.itemsize = sizeof(u64),
		.ndim = 1,
		.shape = &shape,
		.nr_slots = selftest_slots,
	};
	struct seqshm_channel *ch;

	if (selftest_bytes < 8 || selftest_bytes > SZ_16M || selftest_bytes % 8) {
		pr_err("selftest_bytes=%u: not a multiple of 8 from 8 to 16 MiB\n", selftest_bytes);
		return -EINVAL;
	}
	if (selftest_slots > SEQSHM_MAX_SLOTS || !is_power_of_2(selftest_slots)) {
		pr_err("selftest_slots=%u: not a power of two from 1 to %u\n", selftest_slots,
		       SEQSHM_MAX_SLOTS);
		return -EINVAL;
	}
	ch = seqshm_channel_create(&cfg);
	if (IS_ERR(ch)) {
		pr_err("cannot create the selftest channel: %pe\n", ch);
		return PTR_ERR(ch);
	}
	hrtimer_init(&selftest_timer, CLOCK_MONOTONIC, HRTIMER_MODE_REL);
	selftest_timer.function = seqshm_selftest_tick;
	mutex_lock(&selftest_mutex);
	selftest_ch = ch;
	seqshm_selftest_restart();
	mutex_unlock(&selftest_mutex);
	return 0;
}

/**
 * seqshm_selftest_exit() - stop the timer and destroy the selftest channel.
 */
void seqshm_selftest_exit(void)
{
	struct seqshm_channel *ch;

	mutex_lock(&selftest_mutex);
	ch = selftest_ch;
	/*
	 * The timer first (it waits for a running callback and stops a re-arming one), the
	 * pointer after: the callback uses selftest_ch. Under the mutex no sysfs write restarts
	 * the timer in between.
	 */
	if (ch)
		hrtimer_cancel(&selftest_timer);
	selftest_ch = NULL;
	mutex_unlock(&selftest_mutex);
	seqshm_channel_destroy(ch);
}
