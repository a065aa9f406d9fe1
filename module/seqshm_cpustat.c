// SPDX-License-Identifier: GPL-2.0
/*
 * seqshm: the "cpustat" channel: per-CPU time statistics (what /proc/stat shows, in ns),
 * sampled by delayed work at cpustat_hz.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/cpumask.h>
#include <linux/jiffies.h>
#include <linux/kernel_stat.h>
#include <linux/moduleparam.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/stddef.h>
#include <linux/tick.h>
#include <linux/workqueue.h>

#include <linux/seqshm.h>

#include "seqshm_producers.h"

#define CPUSTAT_HZ_MAX		1000
#define CPUSTAT_SLOTS		4

/*
 * struct seqshm_cpustat - one CPU's element: cumulative times in ns since boot, as
 * /proc/stat reports them (there in USER_HZ ticks: ns / (NSEC_PER_SEC / USER_HZ)); user
 * includes guest and nice includes guest_nice, as in /proc/stat. @online is 1 if the CPU
 * was online at the sample, else 0. Array index = CPU number; impossible CPUs are all zero.
 * Idle and iowait never decrease from one sample to the next (unlike /proc/stat's).
 */
struct seqshm_cpustat {
	u64 user_ns;
	u64 nice_ns;
	u64 system_ns;
	u64 idle_ns;
	u64 iowait_ns;
	u64 irq_ns;
	u64 softirq_ns;
	u64 steal_ns;
	u64 guest_ns;
	u64 guest_nice_ns;
	u64 online;
};

#define CPUSTAT_FIELD(f) {						\
	.name = #f,							\
	.offset = offsetof(struct seqshm_cpustat, f),			\
	.count = 1,							\
	.kind = SEQSHM_KIND_UINT,					\
	.size = sizeof(u64),						\
}

static const struct seqshm_field seqshm_cpustat_fields[] = {
	CPUSTAT_FIELD(user_ns),
	CPUSTAT_FIELD(nice_ns),
	CPUSTAT_FIELD(system_ns),
	CPUSTAT_FIELD(idle_ns),
	CPUSTAT_FIELD(iowait_ns),
	CPUSTAT_FIELD(irq_ns),
	CPUSTAT_FIELD(softirq_ns),
	CPUSTAT_FIELD(steal_ns),
	CPUSTAT_FIELD(guest_ns),
	CPUSTAT_FIELD(guest_nice_ns),
	CPUSTAT_FIELD(online),
};

/* Guards cpustat_ch against a sysfs write racing with module init and exit. */
static DEFINE_MUTEX(cpustat_mutex);
static struct seqshm_channel *cpustat_ch;
static struct seqshm_cpustat *cpustat_buf;
static struct delayed_work cpustat_work;
static unsigned int cpustat_hz = 10;
/* What /proc/stat shows every user: readable by all unless the administrator says otherwise. */
static umode_t cpustat_mode = 0444;

static unsigned long seqshm_cpustat_delay(unsigned int hz)
{
	return max_t(unsigned long, 1UL, DIV_ROUND_CLOSEST(HZ, hz));
}

/* Idle and iowait as fs/proc/stat.c computes them: from NO_HZ accounting when it runs. */
static u64 seqshm_cpustat_idle(const struct kernel_cpustat *kcs, int cpu, bool iowait)
{
	u64 us = -1ULL;

	if (cpu_online(cpu))
		us = iowait ? get_cpu_iowait_time_us(cpu, NULL) : get_cpu_idle_time_us(cpu, NULL);
	if (us == -1ULL)
		return kcs->cpustat[iowait ? CPUTIME_IOWAIT : CPUTIME_IDLE];
	return us * NSEC_PER_USEC;
}

/* Process context (system workqueue): sample every CPU, publish, re-arm. */
static void seqshm_cpustat_sample(struct work_struct *work)
{
	unsigned int hz = READ_ONCE(cpustat_hz);
	int cpu;

	for_each_possible_cpu(cpu) {
		struct seqshm_cpustat *r = &cpustat_buf[cpu];
		struct kernel_cpustat kcs;

		kcpustat_cpu_fetch(&kcs, cpu);
		r->user_ns = kcs.cpustat[CPUTIME_USER];
		r->nice_ns = kcs.cpustat[CPUTIME_NICE];
		r->system_ns = kcs.cpustat[CPUTIME_SYSTEM];
		/*
		 * The NO_HZ idle/iowait estimates of a CPU can step back a little between two
		 * calls (and /proc/stat shows it); a cumulative time published here never does.
		 */
		r->idle_ns = max(r->idle_ns, seqshm_cpustat_idle(&kcs, cpu, false));
		r->iowait_ns = max(r->iowait_ns, seqshm_cpustat_idle(&kcs, cpu, true));
		r->irq_ns = kcs.cpustat[CPUTIME_IRQ];
		r->softirq_ns = kcs.cpustat[CPUTIME_SOFTIRQ];
		r->steal_ns = kcs.cpustat[CPUTIME_STEAL];
		r->guest_ns = kcs.cpustat[CPUTIME_GUEST];
		r->guest_nice_ns = kcs.cpustat[CPUTIME_GUEST_NICE];
		r->online = cpu_online(cpu);
	}
	seqshm_publish(cpustat_ch, cpustat_buf, nr_cpu_ids * sizeof(*cpustat_buf));
	if (hz)
		schedule_delayed_work(&cpustat_work, seqshm_cpustat_delay(hz));
}

static int seqshm_cpustat_hz_set(const char *val, const struct kernel_param *kp)
{
	unsigned int hz;
	int ret;

	ret = seqshm_param_uint(val, &hz);
	if (ret)
		return ret;
	if (hz > CPUSTAT_HZ_MAX)
		return -EINVAL;
	mutex_lock(&cpustat_mutex);
	WRITE_ONCE(cpustat_hz, hz);
	if (cpustat_ch) {
		if (hz)
			mod_delayed_work(system_wq, &cpustat_work, 0);
		else
			cancel_delayed_work_sync(&cpustat_work);
	}
	mutex_unlock(&cpustat_mutex);
	return 0;
}

static const struct kernel_param_ops seqshm_cpustat_hz_ops = {
	.set = seqshm_cpustat_hz_set,
	.get = param_get_uint,
};

module_param_cb(cpustat_hz, &seqshm_cpustat_hz_ops, &cpustat_hz, 0644);
MODULE_PARM_DESC(cpustat_hz,
		 "cpustat samples per second, 0 (stopped) to 1000, at most one per jiffy (default 10; writable at run time)");

module_param_cb(cpustat_mode, &seqshm_param_mode_ops, &cpustat_mode, 0444);
MODULE_PARM_DESC(cpustat_mode,
		 "mode of /dev/seqshm/cpustat, octal, read bits only: 0400, 0440 or 0444 (default 0444, as /proc/stat; load time only)");

/**
 * seqshm_cpustat_init() - create /dev/seqshm/cpustat and start sampling.
 *
 * Return: 0, -ENOMEM, or a channel creation error.
 */
int seqshm_cpustat_init(void)
{
	u64 shape = nr_cpu_ids;
	struct seqshm_channel_config cfg = {
		.name = "cpustat",
		.record = true,
		.fields = seqshm_cpustat_fields,
		.nr_fields = ARRAY_SIZE(seqshm_cpustat_fields),
		.itemsize = sizeof(struct seqshm_cpustat),
		.ndim = 1,
		.shape = &shape,
		.nr_slots = CPUSTAT_SLOTS,
		.mode = cpustat_mode,
	};
	struct seqshm_channel *ch;

	cpustat_buf = kcalloc(nr_cpu_ids, sizeof(*cpustat_buf), GFP_KERNEL);
	if (!cpustat_buf)
		return -ENOMEM;
	ch = seqshm_channel_create(&cfg);
	if (IS_ERR(ch)) {
		pr_err("cannot create the cpustat channel: %pe\n", ch);
		kfree(cpustat_buf);
		cpustat_buf = NULL;
		return PTR_ERR(ch);
	}
	INIT_DELAYED_WORK(&cpustat_work, seqshm_cpustat_sample);
	mutex_lock(&cpustat_mutex);
	cpustat_ch = ch;
	/* The first sample right away, so readers never see the all-zero copy for long. */
	schedule_delayed_work(&cpustat_work, 0);
	mutex_unlock(&cpustat_mutex);
	return 0;
}

/**
 * seqshm_cpustat_exit() - stop sampling and destroy the cpustat channel.
 */
void seqshm_cpustat_exit(void)
{
	struct seqshm_channel *ch;

	mutex_lock(&cpustat_mutex);
	ch = cpustat_ch;
	/*
	 * The work first (it re-arms itself; the _sync variant waits for it and cancels the
	 * re-arm), the pointer after: the work uses cpustat_ch. Under the mutex no sysfs write
	 * re-queues it in between.
	 */
	if (ch)
		cancel_delayed_work_sync(&cpustat_work);
	cpustat_ch = NULL;
	mutex_unlock(&cpustat_mutex);
	seqshm_channel_destroy(ch);
	kfree(cpustat_buf);
	cpustat_buf = NULL;
}
