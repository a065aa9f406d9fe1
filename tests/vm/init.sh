#!/bin/busybox sh
# /init of the seqshm test guest: mounts the host over 9p, loads seqshm.ko, runs pytest, reports.
#
# Written into the initramfs by tests/vm/vmharness.py together with /etc/seqshm-vm.conf, which
# sets (all host paths are absolute and valid inside `chroot /host` unchanged):
#   VM_KERNEL   "6.1", "6.12" or "6.12-rt" (exported to the tests as SEQSHM_VM_KERNEL)
#   VM_MODULES  in-tree modules to insmod, in dependency order (files under /lib/modules)
#   VM_TMP_KEEP entries of the host's /tmp to keep visible over the guest's tmpfs /tmp
#   VM_REPO     repository root (pytest's cwd and --rootdir)
#   VM_OUT      host scratch directory, exported read-write with mount tag "results"
#   VM_KO       the seqshm.ko to load ("" to load nothing); VM_KO_ARGS its parameters
#   VM_PYTHON   the host's Python (its sys.executable)
#   VM_CMD      shell-quoted command run in the chroot, cwd VM_REPO (pytest, normally)
#   VM_ENV      shell-quoted extra NAME=VALUE words for the command's environment
# Everything the guest prints itself starts with "seqshm-vm: "; the last such line is
#   seqshm-vm: SEQSHM-VM-RESULT rc=<command rc> unload=<rmmod rc> stage=<where it ended> ...
# which the harness parses (the guest's exit status cannot reach QEMU's).
/bin/busybox mkdir -p /dev /proc /sys /host /tmp /bin /sbin
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
/bin/busybox --install -s /bin
export PATH=/bin:/sbin

say() { echo "seqshm-vm: $*"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }
mark() {
	# A line in the kernel log too, so that dmesg can be split at the point where our part begins.
	echo "seqshm-vm: $*" >/dev/kmsg 2>/dev/null
	say "$* uptime=$(uptime_s)"
}

rc=255 unload=none stage=init taint0= out_mounted=
finish() {
	stage=$1
	taint=$(cat /proc/sys/kernel/tainted 2>/dev/null)
	if [ -n "$out_mounted" ]; then
		dmesg >"/host$VM_OUT/dmesg.txt" 2>&1
		echo "rc=$rc unload=$unload stage=$stage taint_before=$taint0 taint=$taint" >"/host$VM_OUT/result.txt"
	fi
	sync
	say "SEQSHM-VM-RESULT rc=$rc unload=$unload stage=$stage taint_before=$taint0 taint=$taint uptime=$(uptime_s)"
	poweroff -f
	sleep 5
	echo o >/proc/sysrq-trigger
}
fail() {
	say "error: $2"
	finish "$1"
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
. /etc/seqshm-vm.conf || fail config "cannot read /etc/seqshm-vm.conf"
mark "init start kernel=$(uname -r)"

# virtio + 9p: the harness ordered them by their modinfo dependencies; some are built in.
for m in $VM_MODULES; do
	out=$(insmod "/lib/modules/$m" 2>&1) || case $out in
		*"File exists"*) ;;
		*) fail modules "insmod $m: $out" ;;
	esac
done

mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /host ||
	fail mount "cannot mount the host root (9p tag hostroot)"

# A writable /tmp for the tests, keeping the host's /tmp entries the run lives in (a clone
# in /tmp, say) visible through bind mounts of the read-only host /tmp.
mkdir -p /hosttmp
mount -o bind /host/tmp /hosttmp || fail mount "bind /host/tmp"
mount -t tmpfs -o mode=1777 tmpfs /host/tmp || fail mount "tmpfs on /host/tmp"
for e in $VM_TMP_KEEP; do
	[ -e "/hosttmp/$e" ] || continue
	if [ -d "/hosttmp/$e" ]; then mkdir -p "/host/tmp/$e"; else touch "/host/tmp/$e"; fi
	mount -o bind "/hosttmp/$e" "/host/tmp/$e" || fail mount "keep /tmp/$e"
done
mount -t proc proc /host/proc || fail mount "proc on /host/proc"
mount -t sysfs sysfs /host/sys || fail mount "sysfs on /host/sys"
mount -t devtmpfs devtmpfs /host/dev || fail mount "devtmpfs on /host/dev"
mkdir -p /host/dev/shm /host/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /host/dev/shm || fail mount "tmpfs on /host/dev/shm"
mount -t devpts devpts /host/dev/pts 2>/dev/null
mkdir -p "/host$VM_OUT"
mount -t 9p -o trans=virtio,version=9p2000.L,rw,msize=262144 results "/host$VM_OUT" ||
	fail mount "cannot mount the results export at $VM_OUT"
out_mounted=1

# Module tools for the tests: the host has no kmod, its busybox-static has insmod/rmmod/lsmod.
mkdir -p /host/tmp/seqshm-vm/bin /host/tmp/seqshm-vm/home
for t in insmod rmmod lsmod; do ln -s /bin/busybox "/host/tmp/seqshm-vm/bin/$t"; done

taint0=$(cat /proc/sys/kernel/tainted)
mark "tests begin"
if [ -n "$VM_KO" ]; then
	out=$(insmod "/host$VM_KO" $VM_KO_ARGS 2>&1) || {
		dmesg | tail -n 30
		fail insmod "insmod $VM_KO $VM_KO_ARGS: $out"
	}
	say "loaded $VM_KO"
fi

eval "set -- $VM_CMD"
eval "set -- env -i \
	PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/tmp/seqshm-vm/bin \
	HOME=/tmp/seqshm-vm/home TMPDIR=/tmp LANG=C.UTF-8 TERM=dumb \
	PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PYTHONSAFEPATH=1 \
	HYPOTHESIS_STORAGE_DIRECTORY=/tmp/seqshm-vm/hypothesis \
	SEQSHM_IN_VM=1 SEQSHM_VM_KERNEL=$VM_KERNEL SEQSHM_VM_OUT=\"\$VM_OUT\" SEQSHM_KO=\"\$VM_KO\" \
	$VM_ENV \"\$@\""
say "running in $VM_REPO: ${VM_CMD}"
chroot /host /bin/sh -c 'cd "$1" && shift && exec "$@"' sh "$VM_REPO" "$@" \
	>"/host$VM_OUT/output.log" 2>&1
rc=$?
mark "tests end rc=$rc"

# Unload: a module that cannot be removed, or that oopses on removal, fails the run too.
name=${VM_KO##*/}
name=${name%.ko}
if [ -n "$VM_KO" ] && [ -d "/sys/module/$name" ]; then
	rmmod "$name"
	unload=$?
fi
finish done
