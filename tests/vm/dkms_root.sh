#!/usr/bin/env bash
# The seqshm-dkms package installed as a user installs it, in a Debian 12 root on the host that
# the QEMU guests then boot into (tests/vm/test_dkms.py; the guest side: dkms_guest.sh).
#
#   dkms_root.sh make    BASE K61 K612        a bookworm root (mmdebstrap, minbase) with the 6.1 and
#                                             6.12 kernels installed (image and headers), udev,
#                                             systemd, python3-venv, users alice and bob, and a
#                                             venv /opt/seqshm holding numpy and rich; kept while
#                                             BASE/.seqshm-root names the same kernels and recipe
#   dkms_root.sh install BASE ROOT DEB WHEEL RTDEBS...
#                                             ROOT made a fresh copy of BASE (a failed run never
#                                             leaves BASE half-installed), then in ROOT:
#                                             apt-get install ./seqshm-dkms_*.deb (builds for 6.1
#                                             and 6.12), alice into group seqshm, the wheel into
#                                             /opt/seqshm, the package's example producer with DKMS
#                                             (BUILD_DEPENDS=seqshm), then the PREEMPT_RT kernel (a
#                                             kernel added later: DKMS's kernel hook builds both)
#   dkms_root.sh remove  ROOT                 the example out, apt-get remove seqshm-dkms, and the
#                                             checks that nothing of seqshm is left in any kernel
# Every chroot command runs in a private mount namespace (proc, sys, /dev bound, a tmpfs /run)
# with a clean environment; the logs go to stdout.
set -euo pipefail
say() { printf '== %s\n' "$*"; }
die() { printf 'dkms_root: error: %s\n' "$*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "needs root (mmdebstrap, chroot)"

# in_root ROOT CMD...: CMD inside ROOT, as a boot would see it (no host environment).
in_root() {
	local root=$1
	shift
	unshare --mount --propagation private -- /bin/sh -c '
		root=$1; shift
		mount -t proc proc "$root/proc" && mount --rbind /dev "$root/dev" &&
		mount -t sysfs sysfs "$root/sys" && mount -t tmpfs tmpfs "$root/run" || exit 1
		exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
			LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"' sh "$root" "$@"
}

# make_root ROOT K61 K612: the base root. Its text is part of the cache stamp: editing it remakes
# the root, editing the rest of this script does not.
make_root() {
	local root=$1 k61=$2 k612=$3
	command -v mmdebstrap >/dev/null || {
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null ||
			die "apt-get install mmdebstrap failed"
	}
	rm -rf "$root"
	mkdir -p "$(dirname "$root")"
	say "mmdebstrap bookworm $root (kernels $k61, $k612)"
	mmdebstrap --variant=minbase \
		--include="dkms,udev,systemd,kmod,adduser,python3,python3-venv,ca-certificates" \
		--include="linux-image-$k61,linux-headers-$k61,linux-image-$k612,linux-headers-$k612" \
		bookworm "$root" \
		"deb http://deb.debian.org/debian bookworm main" \
		"deb http://deb.debian.org/debian-security bookworm-security main" ||
		die "mmdebstrap failed"
	cp /etc/resolv.conf "$root/etc/resolv.conf"
	# The host's trust store, for pip: it may hold a CA this machine's network needs that
	# Debian's ca-certificates lacks.
	cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/host-ca.crt"
	in_root "$root" useradd --create-home --shell /bin/sh alice
	in_root "$root" useradd --create-home --shell /bin/sh bob
	# What the wheel needs from PyPI, once (the wheel itself changes from run to run).
	in_root "$root" python3 -m venv /opt/seqshm
	in_root "$root" /opt/seqshm/bin/pip install --quiet --disable-pip-version-check \
		--cert /etc/ssl/certs/host-ca.crt --only-binary=:all: "numpy>=1.26" "rich>=13" ||
		die "pip install numpy rich failed"
}

cmd=${1:-}
shift || true
case $cmd in
make)
	base=$1 k61=$2 k612=$3
	stamp="bookworm $k61 $k612 $(declare -f make_root in_root | sha256sum | cut -c1-16)"
	if [[ -f $base/.seqshm-root ]] && [[ $(cat "$base/.seqshm-root") == "$stamp" ]]; then
		say "root $base up to date ($stamp)"
		exit 0
	fi
	make_root "$base" "$k61" "$k612"
	echo "$stamp" >"$base/.seqshm-root" # written last: a root cut short is remade
	say "root ready: $(du -sh "$base" | cut -f1)"
	;;
install)
	base=$1 root=$2 deb=$3 wheel=$4
	shift 4
	[[ -f $base/.seqshm-root ]] || die "$base is not a finished root (dkms_root.sh make)"
	rm -rf "$root"
	cp -a "$base" "$root"
	mkdir -p "$root/tmp/seqshm-pkg"
	cp "$deb" "$wheel" "$@" "$root/tmp/seqshm-pkg/"
	say "installed kernels: $(ls "$root/lib/modules" | tr '\n' ' ')"
	say "apt-get install ./$(basename "$deb")"
	in_root "$root" apt-get install -y --no-install-recommends "/tmp/seqshm-pkg/$(basename "$deb")"
	say "dkms status"
	in_root "$root" dkms status
	say "usermod -aG seqshm alice"
	in_root "$root" usermod -aG seqshm alice
	in_root "$root" id alice
	in_root "$root" id bob
	say "pip install $(basename "$wheel") into /opt/seqshm (the Python package, as a user installs it)"
	in_root "$root" /opt/seqshm/bin/pip install --disable-pip-version-check --only-binary=:all: \
		--no-index --find-links /tmp/seqshm-pkg "/tmp/seqshm-pkg/$(basename "$wheel")"
	say "the example producer, with DKMS, against the installed package (BUILD_DEPENDS=seqshm)"
	in_root "$root" cp -r /usr/share/doc/seqshm-dkms/examples/producer /usr/src/seqshm-example-1
	in_root "$root" dkms add seqshm-example/1
	for k in "$root"/lib/modules/*/build; do
		k=${k%/build}
		in_root "$root" dkms install seqshm-example/1 -k "${k##*/}"
	done
	say "a kernel installed after the package: apt-get install the PREEMPT_RT image and headers"
	rt=()
	for f in "$@"; do rt+=("/tmp/seqshm-pkg/$(basename "$f")"); done
	in_root "$root" apt-get install -y --no-install-recommends "${rt[@]}"
	say "dkms status"
	in_root "$root" dkms status
	say "installed modules"
	(cd "$root" && find lib/modules -path '*/updates/dkms/*' -name '*seqshm*' | sort)
	;;
remove)
	root=$1
	say "dkms remove seqshm-example/1 --all (the example producer)"
	in_root "$root" dkms remove seqshm-example/1 --all
	rm -rf "$root/usr/src/seqshm-example-1"
	say "apt-get remove seqshm-dkms"
	in_root "$root" apt-get remove -y seqshm-dkms
	say "what is left of seqshm"
	left=$(cd "$root" && find lib/modules usr/lib/modules var/lib/dkms usr/src -name '*seqshm*' 2>/dev/null |
		sort -u || true)
	printf '%s\n' "${left:-(nothing)}"
	status=$(in_root "$root" dkms status)
	printf 'dkms status: %s\n' "${status:-(empty)}"
	[[ -z $left && -z $status ]] || die "seqshm-dkms left files or DKMS entries behind"
	;;
*)
	die "usage: dkms_root.sh make|install|remove ..."
	;;
esac
