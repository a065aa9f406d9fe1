// SPDX-License-Identifier: GPL-2.0
/*
 * seqshm: the "selftest" channel: an hrtimer writing a verifiable pattern (every 64-bit word
 * of write k is k) at a set period, for tests and benchmarks.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/hrtimer.h>
#include <linux/kstrtox.h>
#include <linux/ktime.h>
#include <linux/log2.h>
#include <linux/moduleparam.h>
#include <linux/mutex.h>
#include <linux/sizes.h>

#include <linux/seqshm.h>

#include "seqshm_producers.h"

#define SELFTEST_PERIOD_MIN_US	10
#define SELFTEST_PERIOD_MAX_US	10000000

/* Guards selftest_ch and the parameters below against each other, module init and exit. */
static DEFINE_MUTEX(selftest_mutex);
static struct seqshm_channel *selftest_ch;
static struct hrtimer selftest_timer;
/* selftest_timer was set up by seqshm_selftest_init() (a parameter set before may not touch it). */
static bool selftest_timer_ready;
static bool selftest_hard;
static unsigned int selftest_bytes = 4096;
static unsigned int selftest_slots = 1;
static unsigned int selftest_period_us = 100;
static u64 selftest_period_ns = 100 * NSEC_PER_USEC;
/* A counting pattern, no one's data: readable by all, so benchmarks need not run as root. */
static umode_t selftest_mode = 0444;

/*
 * Hard interrupt context; on PREEMPT_RT only with selftest_hard (HRTIMER_MODE_REL_HARD),
 * else there the timer expires in the softirq thread. One write of the whole pattern.
 */
static enum hrtimer_restart seqshm_selftest_tick(struct hrtimer *timer)
{
	struct seqshm_channel *ch = selftest_ch;
	size_t i, words = seqshm_channel_payload_size(ch) / sizeof(u64);
	u64 period = READ_ONCE(selftest_period_ns);
	u64 *p, k;

	if (!period)
		return HRTIMER_NORESTART;
	p = seqshm_write_begin(ch, &k);
	for (i = 0; i < words; i++)
		p[i] = k;
	seqshm_write_end(ch, 0);
	hrtimer_forward_now(timer, ns_to_ktime(period));
	return HRTIMER_RESTART;
}

/*
 * The timer's mode: HRTIMER_MODE_REL expires in hard interrupt context, except on PREEMPT_RT,
 * which moves such timers to the softirq thread; HRTIMER_MODE_REL_HARD expires in hard
 * interrupt context on every kernel (the API's promise that writers may run there is tested
 * with it on PREEMPT_RT). A timer is started in the mode it was set up with.
 */
static enum hrtimer_mode seqshm_selftest_mode(void)
{
	return selftest_hard ? HRTIMER_MODE_REL_HARD : HRTIMER_MODE_REL;
}

/* Under selftest_mutex (or in init, before anything else uses it), the timer stopped. */
static void seqshm_selftest_timer_setup(void)
{
	hrtimer_init(&selftest_timer, CLOCK_MONOTONIC, seqshm_selftest_mode());
	selftest_timer.function = seqshm_selftest_tick;
	selftest_timer_ready = true;
}

/* Under selftest_mutex, with the channel created. */
static void seqshm_selftest_restart(void)
{
	hrtimer_cancel(&selftest_timer);
	if (selftest_period_ns)
		hrtimer_start(&selftest_timer, ns_to_ktime(selftest_period_ns),
			      seqshm_selftest_mode());
}

/* Under selftest_mutex: a channel with the current selftest_bytes and selftest_slots. */
static struct seqshm_channel *seqshm_selftest_create(void)
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
		.mode = selftest_mode,
	};

	return seqshm_channel_create(&cfg);
}

/*
 * Under selftest_mutex, the channel running: replace it by one with the new geometry. The
 * old channel is destroyed first (the name must be free): files and mappings of it keep
 * the old region (read() then fails with ENODEV, poll() reports EPOLLHUP) until they go.
 * If the new one cannot be created, the old parameters are restored and tried again.
 */
static int seqshm_selftest_recreate(unsigned int *param, unsigned int value)
{
	unsigned int old = *param;
	struct seqshm_channel *ch;

	hrtimer_cancel(&selftest_timer);
	seqshm_channel_destroy(selftest_ch);
	selftest_ch = NULL;
	*param = value;
	ch = seqshm_selftest_create();
	if (IS_ERR(ch)) {
		int ret = PTR_ERR(ch);

		*param = old;
		ch = seqshm_selftest_create();
		if (IS_ERR(ch)) {
			pr_err("selftest channel lost: %pe\n", ch);
			return ret;
		}
		selftest_ch = ch;
		seqshm_selftest_restart();
		return ret;
	}
	selftest_ch = ch;
	seqshm_selftest_restart();
	return 0;
}

static int seqshm_selftest_geometry_set(const char *val, const struct kernel_param *kp)
{
	unsigned int v;
	int ret;

	ret = seqshm_param_uint(val, &v);
	if (ret)
		return ret;
	if (kp->arg == &selftest_bytes && (v < 8 || v > SZ_16M || v % 8))
		return -EINVAL;
	if (kp->arg == &selftest_slots && (v > SEQSHM_MAX_SLOTS || !is_power_of_2(v)))
		return -EINVAL;
	mutex_lock(&selftest_mutex);
	if (selftest_ch)
		ret = seqshm_selftest_recreate(kp->arg, v);
	else
		*(unsigned int *)kp->arg = v;
	mutex_unlock(&selftest_mutex);
	return ret;
}

static const struct kernel_param_ops seqshm_selftest_geometry_ops = {
	.set = seqshm_selftest_geometry_set,
	.get = param_get_uint,
};

module_param_cb(selftest_bytes, &seqshm_selftest_geometry_ops, &selftest_bytes, 0644);
MODULE_PARM_DESC(selftest_bytes,
		 "selftest payload bytes, a multiple of 8 from 8 to 16 MiB (default 4096; a change at run time recreates the channel)");

module_param_cb(selftest_slots, &seqshm_selftest_geometry_ops, &selftest_slots, 0644);
MODULE_PARM_DESC(selftest_slots,
		 "selftest slots, a power of two from 1 to 1024 (default 1; a change at run time recreates the channel)");

static int seqshm_selftest_period_set(const char *val, const struct kernel_param *kp)
{
	unsigned int us;
	int ret;

	ret = seqshm_param_uint(val, &us);
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

static int seqshm_selftest_hard_set(const char *val, const struct kernel_param *kp)
{
	bool hard;
	int ret;

	ret = kstrtobool(val, &hard);
	if (ret)
		return ret;
	mutex_lock(&selftest_mutex);
	if (selftest_timer_ready && hard != selftest_hard) {
		/* A timer's expiry mode is fixed when it is set up: stop, set up again, start. */
		hrtimer_cancel(&selftest_timer);
		selftest_hard = hard;
		seqshm_selftest_timer_setup();
		if (selftest_ch)
			seqshm_selftest_restart();
	} else {
		selftest_hard = hard;
	}
	mutex_unlock(&selftest_mutex);
	return 0;
}

static const struct kernel_param_ops seqshm_selftest_hard_ops = {
	.set = seqshm_selftest_hard_set,
	.get = param_get_bool,
};

module_param_cb(selftest_hard, &seqshm_selftest_hard_ops, &selftest_hard, 0644);
MODULE_PARM_DESC(selftest_hard,
		 "1: the selftest timer expires in hard interrupt context on PREEMPT_RT too (HRTIMER_MODE_REL_HARD; default 0; writable at run time)");

module_param_cb(selftest_mode, &seqshm_param_mode_ops, &selftest_mode, 0444);
MODULE_PARM_DESC(selftest_mode,
		 "mode of /dev/seqshm/selftest, octal, read bits only: 0400, 0440 or 0444 (default 0444; load time only, kept when the channel is recreated)");

/**
 * seqshm_selftest_init() - create /dev/seqshm/selftest and start its timer.
 *
 * Return: 0 or a channel creation error.
 */
int seqshm_selftest_init(void)
{
	struct seqshm_channel *ch;

	mutex_lock(&selftest_mutex);
	seqshm_selftest_timer_setup();
	ch = seqshm_selftest_create();
	if (IS_ERR(ch)) {
		selftest_timer_ready = false;
		mutex_unlock(&selftest_mutex);
		pr_err("cannot create the selftest channel: %pe\n", ch);
		return PTR_ERR(ch);
	}
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
	if (selftest_timer_ready)
		hrtimer_cancel(&selftest_timer);
	selftest_timer_ready = false;
	selftest_ch = NULL;
	mutex_unlock(&selftest_mutex);
	seqshm_channel_destroy(ch);
}
