/* SPDX-License-Identifier: GPL-2.0 */
/*
 * seqshm: the producers built into seqshm.ko (cpustat, selftest), for the module's entry
 * points. Producers are clients of the public in-kernel API (<linux/seqshm.h>) only: the
 * device core knows nothing of them.
 */
#ifndef _SEQSHM_PRODUCERS_H
#define _SEQSHM_PRODUCERS_H

#include <linux/kstrtox.h>
#include <linux/moduleparam.h>

/**
 * seqshm_param_uint() - parse an unsigned int module parameter as kstrtouint() does.
 * @val: the text written (sysfs) or given at load.
 * @v: receives the value.
 *
 * A number too large for the type is just another bad value: -EINVAL, not kstrtouint()'s
 * -ERANGE, so that every bad parameter value fails the same way.
 *
 * Return: 0 or -EINVAL.
 */
static inline int seqshm_param_uint(const char *val, unsigned int *v)
{
	int ret = kstrtouint(val, 0, v);

	return ret == -ERANGE ? -EINVAL : ret;
}

/*
 * A device mode parameter (umode_t): octal as chmod(1) takes it ("440" or "0440"), read bits
 * only (SEQSHM_MODE_READ_BITS) and not 0; anything else is -EINVAL. Shown as "0440".
 */
extern const struct kernel_param_ops seqshm_param_mode_ops;

int seqshm_cpustat_init(void);
void seqshm_cpustat_exit(void);
int seqshm_selftest_init(void);
void seqshm_selftest_exit(void);

#endif /* _SEQSHM_PRODUCERS_H */
