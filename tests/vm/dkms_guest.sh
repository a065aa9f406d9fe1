#!/bin/sh
# Runs in the QEMU guest, as root, chrooted into the Debian root where seqshm-dkms was installed
# (tests/vm/dkms_root.sh; read-only over 9p): the boot steps that load the packaged module and
# apply its udev rule, then a non-root user in the group the rule names reads cpustat.
# Not PID 1 systemd: the guest's /init (tests/vm/init.sh) runs this instead, and this runs the
# programs systemd runs at boot for these steps (systemd-modules-load, systemd-udevd + udevadm
# trigger). Prints a transcript; exits non-zero on the first check that fails.
set -u
say() { echo "== $*"; }
fail() { echo "FAIL: $*"; exit 1; }
kver=$(uname -r)
say "guest kernel $kver; /lib/modules/$kver/updates/dkms: $(ls "/lib/modules/$kver/updates/dkms" 2>&1 | tr '\n' ' ')"
grep -q '^seqshm ' /proc/modules && fail "seqshm is loaded before modules-load.d ran"

# systemd-udevd and udevadm refuse to act in a chroot ("Running in chroot, ignoring request")
# unless told that this chroot is the system.
export SYSTEMD_IGNORE_CHROOT=1
mount -t tmpfs -o mode=0755 tmpfs /run || fail "tmpfs on /run"
say "systemd-modules-load (modules-load.d: $(grep -hv '^#' /usr/lib/modules-load.d/seqshm.conf))"
/lib/systemd/systemd-modules-load || fail "systemd-modules-load exited $?"
grep '^seqshm ' /proc/modules || fail "seqshm not loaded by systemd-modules-load"
loaded_from=$(modinfo -n seqshm)
say "modinfo -n seqshm: $loaded_from"
# DKMS compresses the module as the kernel's own are (6.12: .ko.xz; 6.1: .ko).
case $loaded_from in
"/lib/modules/$kver/updates/dkms/seqshm.ko" | "/lib/modules/$kver/updates/dkms/seqshm.ko."*) ;;
*) fail "modprobe's seqshm is $loaded_from, not DKMS's" ;;
esac
built="/var/lib/dkms/seqshm/kernel-$kver-$(uname -m)/module/${loaded_from##*/}"
cmp "$loaded_from" "$built" || fail "the installed module is not DKMS's build for $kver ($built)"
say "modinfo seqshm: vermagic $(modinfo -F vermagic seqshm); signer $(modinfo -F signer seqshm)"

say "systemd-udevd, udevadm trigger (the package's rule: $(grep -v '^#' /lib/udev/rules.d/60-seqshm.rules))"
/lib/systemd/systemd-udevd --daemon || fail "systemd-udevd"
udevadm trigger --action=add --subsystem-match=misc
udevadm settle --timeout=60 || fail "udevadm settle"
ls -l /dev/seqshm/
group=$(stat -c %G /dev/seqshm/cpustat)
[ "$group" = seqshm ] || fail "/dev/seqshm/cpustat belongs to group $group, not seqshm"

say "id alice; id bob"
id alice
id bob
say "runuser -u alice -- seqshm info cpustat"
runuser -u alice -- /opt/seqshm/bin/seqshm info cpustat || fail "alice could not read cpustat"
say "runuser -u alice -- python: two lines that read cpustat"
runuser -u alice -- /opt/seqshm/bin/python -c '
import seqshm
cpus = seqshm.snapshot("cpustat")
print(cpus.dtype.names[:4], len(cpus), "CPUs; cpu0 user_ns:", cpus["user_ns"][0])' ||
	fail "alice could not snapshot cpustat"
mode=$(stat -c %a /dev/seqshm/cpustat)
if [ "$mode" = 440 ]; then
	say "cpustat is 0440: bob, not in the group, must be refused"
	if runuser -u bob -- /opt/seqshm/bin/seqshm info cpustat; then
		fail "bob read a 0440 cpustat without being in group seqshm"
	fi
else
	say "cpustat is 0$mode (the producer's mode; the rule sets the group only)"
fi

say "the example producer (DKMS, BUILD_DEPENDS=seqshm): modprobe seqshm_example"
example=$(modinfo -n seqshm_example) || fail "no seqshm_example for $kver"
say "modinfo seqshm_example: $example; depends: $(modinfo -F depends seqshm_example)"
case $example in
"/lib/modules/$kver/updates/dkms/seqshm_example.ko"*) ;;
*) fail "seqshm_example is $example, not DKMS's" ;;
esac
# With the kernel's CONFIG_MODVERSIONS, loading checks the CRCs the example was linked with
# (seqshm's Module.symvers from the package's build) against the loaded seqshm's.
modprobe seqshm_example || fail "modprobe seqshm_example"
udevadm settle --timeout=60
runuser -u alice -- /opt/seqshm/bin/seqshm info mysensor || fail "alice could not read mysensor"
rmmod seqshm_example || fail "rmmod seqshm_example"
udevadm control --exit 2>/dev/null
rmmod seqshm || fail "rmmod seqshm"
say "all checks passed on $kver"
