// SPDX-License-Identifier: GPL-2.0
/*
 * seqshm: the module's entry points. The device core needs no set-up (channels appear as
 * producers create them); what starts here are the producers built into seqshm.ko.
 *
 * cpustat and selftest are clients of the public API (<linux/seqshm.h>) only, like any
 * producer module, but they stay in seqshm.ko rather than in modules of their own: loading
 * seqshm gives the cpustat channel, the one most users load it for (as node_exporter's
 * default collectors come with it); their parameters keep their documented home,
 * /sys/module/seqshm/parameters/; and DKMS builds and signs one module. Splitting them out
 * is a Kbuild change only. The parser of their device mode parameters is here, shared.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/init.h>
#include <linux/module.h>
#include <linux/printk.h>

#include <linux/seqshm.h>

#include "seqshm_producers.h"

/*
 * Parses a device mode at load (the parameters that take it are read-only afterwards: a
 * device's mode is fixed when it is registered). Octal always, as chmod(1) and ls(1) show a
 * mode: "444" is 0444, not 0674, which base 0 would read as decimal.
 */
static int seqshm_param_mode_set(const char *val, const struct kernel_param *kp)
{
	unsigned int mode;

	if (kstrtouint(val, 8, &mode) || !mode || mode & ~SEQSHM_MODE_READ_BITS)
		return -EINVAL;
	*(umode_t *)kp->arg = mode;
	return 0;
}

static int seqshm_param_mode_get(char *buf, const struct kernel_param *kp)
{
	/* @buf is a page, as for the kernel's own getters (param_get_uint() and the like). */
	return scnprintf(buf, PAGE_SIZE, "%04o\n", *(umode_t *)kp->arg);
}

const struct kernel_param_ops seqshm_param_mode_ops = {
	.set = seqshm_param_mode_set,
	.get = seqshm_param_mode_get,
};

static int __init seqshm_init(void)
{
	int ret;

	ret = seqshm_selftest_init();
	if (ret)
		return ret;
	ret = seqshm_cpustat_init();
	if (ret) {
		seqshm_selftest_exit();
		return ret;
	}
	pr_info("loaded\n");
	return 0;
}

static void __exit seqshm_exit(void)
{
	seqshm_cpustat_exit();
	seqshm_selftest_exit();
}

module_init(seqshm_init);
module_exit(seqshm_exit);

MODULE_DESCRIPTION("Seqlock-protected shared memory channels from kernel producers to userspace readers");
MODULE_AUTHOR("seqshm project");
MODULE_LICENSE("GPL");
