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
 * is a Kbuild change only.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/init.h>
#include <linux/module.h>
#include <linux/printk.h>

#include "seqshm_producers.h"

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
