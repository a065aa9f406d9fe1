#!/usr/bin/env bash
# Provisions what the VM tests need: host packages and three Debian kernels (image + headers) in
# tests/vm/.cache.
#
# Usage: tests/vm/provision.sh [KERNEL...]     KERNEL is "6.1", "6.12" and/or "6.12-rt"
#                                              (default: all three)
#
# Idempotent: when everything is in place it only runs dpkg-query/apt-cache (well under a second).
# For each kernel it writes tests/vm/.cache/kernels/<KERNEL>/kernel.env (shell syntax, read by
# the Python harness) with:
#   KVER       the kernel release (uname -r of the guest), e.g. 6.1.0-56-amd64
#   PKG_VERSION the Debian package version of image and headers
#   VMLINUZ    the kernel image to boot
#   MODDIR     the guest's /lib/modules/$KVER (in-tree modules, e.g. virtio and 9p)
#   KDIR       the headers directory to build external modules against (make -C $KDIR M=...)
#
# 6.1: the bookworm kernel whose headers the linux-headers-amd64 meta-package installs into
#      /usr/src; the matching image is fetched (apt-get download + dpkg -x), never installed.
# 6.12: linux-image-6.12-amd64 / linux-headers-6.12-amd64 from bookworm-security; image,
#      headers, -common headers and kbuild are all extracted into the cache, never installed.
# 6.12-rt: the same for the PREEMPT_RT flavour, linux-image-6.12-rt-amd64 /
#      linux-headers-6.12-rt-amd64 (its headers need -common-rt instead of -common).
# Versions are resolved from apt's metadata each time, so a new upload is picked up after
# `apt-get update`.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${SEQSHM_VM_CACHE:-$here/.cache}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

log() { printf 'provision: %s\n' "$*" >&2; }
die() { printf 'provision: error: %s\n' "$*" >&2; exit 1; }

need_root() {
	[ "$(id -u)" = 0 ] || die "$1 needs root: run tests/vm/provision.sh as root once"
}

kernels=("$@")
[ ${#kernels[@]} -gt 0 ] || kernels=(6.1 6.12 6.12-rt)
for k in "${kernels[@]}"; do
	case $k in 6.1|6.12|6.12-rt) ;; *) die "unknown kernel '$k' (expected 6.1, 6.12 or 6.12-rt)" ;; esac
done

# One provisioning at a time per cache (two pytest sessions may start together).
exec 9>"$cache/.provision.lock"
flock 9

export DEBIAN_FRONTEND=noninteractive
apt_updated=0
apt_update() {
	if [ $apt_updated = 0 ]; then
		need_root "apt-get update"
		log "apt-get update"
		apt-get update -q >&2 || die "apt-get update failed"
		apt_updated=1
	fi
}

# ---- host packages ---------------------------------------------------------------------------
# qemu-system-x86: the VM; busybox-static: the initramfs (and insmod/rmmod inside the guest's
# chroot); linux-headers-amd64: the 6.1 headers; make/gcc: kbuild; pahole + libelf1/libssl3/zlib1g:
# what the extracted 6.12 linux-kbuild package depends on; sparse (`make C=2`), perl and xz-utils
# (checkpatch.pl, extracted from linux-source's .tar.xz): check_module.sh.
# (6.12's .ko.xz are decompressed by the harness with Python's lzma.)
host_pkgs=(qemu-system-x86 busybox-static linux-headers-amd64 make gcc libc6-dev libelf1 libssl3
	zlib1g pahole sparse perl xz-utils util-linux)
# (dpkg-query fails for names it has never seen, as on a fresh machine: only its output counts.)
installed=" $( { dpkg-query -W -f='${db:Status-Abbrev}${Package}\n' "${host_pkgs[@]}" 2>/dev/null ||
	true; } | awk '/^ii/ { printf "%s ", $2 }') "
missing=()
for p in "${host_pkgs[@]}"; do
	case $installed in *" $p "*) ;; *) missing+=("$p") ;; esac
done
if [ ${#missing[@]} -gt 0 ]; then
	need_root "installing ${missing[*]}"
	apt_update
	log "apt-get install ${missing[*]}"
	apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 ||
		die "apt-get install ${missing[*]} failed"
fi

# ---- helpers -------------------------------------------------------------------------------
# depends_matching PKG REGEX: the names of PKG's dependencies (candidate version) matching REGEX.
# PKG "-" reads `apt-cache show` output from stdin instead.
depends_matching() {
	if [ "$1" = - ]; then cat; else apt-cache show --no-all-versions "$1" 2>/dev/null; fi |
		sed -n 's/^Depends: //p' | head -n1 |
		tr ',|' '\n\n' | sed 's/^ *//; s/ .*//' | grep -E "$2" || true
}

# fetch DIR PKG=VERSION...: apt-get download into DIR/debs (kept, so a re-extract needs no network).
fetch() {
	local dir=$1; shift
	mkdir -p "$cache/debs"
	local spec name ver f
	for spec in "$@"; do
		name=${spec%%=*}; ver=${spec#*=}
		f=$(ls "$cache/debs/${name}_${ver//:/%3a}_"*.deb 2>/dev/null | head -n1 || true)
		if [ -z "$f" ]; then
			log "apt-get download $spec"
			(cd "$cache/debs" && apt-get download -q -o APT::Sandbox::User=root "$spec" >&2) || {
				apt_update
				(cd "$cache/debs" && apt-get download -q -o APT::Sandbox::User=root "$spec" >&2)
			} || die "apt-get download $spec failed"
			f=$(ls "$cache/debs/${name}_${ver//:/%3a}_"*.deb | head -n1)
		fi
		log "dpkg -x $(basename "$f")"
		dpkg -x "$f" "$dir"
	done
}

# write_env NAME KVER PKG_VERSION ROOT KDIR: record a provisioned kernel for the harness.
write_env() {
	local name=$1 kver=$2 pv=$3 root=$4 kdir=$5
	local vmlinuz=$root/boot/vmlinuz-$kver moddir=$root/lib/modules/$kver
	[ -f "$vmlinuz" ] || die "$vmlinuz missing after extraction"
	[ -d "$moddir/kernel" ] || die "$moddir/kernel missing after extraction"
	[ -f "$kdir/Makefile" ] || die "$kdir/Makefile missing"
	cat >"$cache/kernels/$name/kernel.env.tmp" <<-EOF
	# Written by tests/vm/provision.sh; do not edit.
	KERNEL=$name
	KVER=$kver
	PKG_VERSION=$pv
	VMLINUZ=$vmlinuz
	MODDIR=$moddir
	KDIR=$kdir
	EOF
	mv "$cache/kernels/$name/kernel.env.tmp" "$cache/kernels/$name/kernel.env"
	log "$name ready: $kver ($pv)"
}

# up_to_date NAME KVER PKG_VERSION: the cache already holds exactly this kernel.
up_to_date() {
	local envf=$cache/kernels/$1/kernel.env
	[ -f "$envf" ] || return 1
	grep -qx "KVER=$2" "$envf" && grep -qx "PKG_VERSION=$3" "$envf" || return 1
	local v
	for v in VMLINUZ MODDIR KDIR; do
		[ -e "$(sed -n "s/^$v=//p" "$envf")" ] || return 1
	done
}

# ---- 6.1: headers from the installed linux-headers-amd64, matching image extracted -------------
provision_61() {
	local dep hdr pv kver root
	dep=$(dpkg-query -W -f='${Depends}' linux-headers-amd64) # linux-headers-6.1.0-NN-amd64 (= V)
	hdr=$(printf '%s\n' "$dep" | tr ',' '\n' | sed -n 's/^ *\(linux-headers-[^ ]*-amd64\).*/\1/p' | head -n1)
	[ -n "$hdr" ] || die "cannot tell which headers linux-headers-amd64 depends on ('$dep')"
	pv=$(dpkg-query -W -f='${Version}' "$hdr")
	kver=${hdr#linux-headers-}
	case $kver in 6.1.*) ;; *) die "linux-headers-amd64 points at $kver, expected a 6.1 kernel" ;; esac
	[ -f "/usr/src/$hdr/Makefile" ] || die "/usr/src/$hdr is not installed"
	if up_to_date 6.1 "$kver" "$pv"; then
		log "6.1 up to date: $kver ($pv)"
		return
	fi
	root=$cache/kernels/6.1/root
	rm -rf "$cache/kernels/6.1"
	mkdir -p "$root"
	fetch "$root" "linux-image-$kver=$pv"
	write_env 6.1 "$kver" "$pv" "$root" "/usr/src/$hdr"
}

# ---- 6.12 and 6.12-rt: image, headers, -common headers and kbuild all extracted into the cache --
# provision_612 NAME FLAVOUR: NAME is the cache name (6.12, 6.12-rt), FLAVOUR the Debian flavour
# (amd64, rt-amd64) of the meta-packages linux-image-6.12-FLAVOUR / linux-headers-6.12-FLAVOUR.
provision_612() {
	local name=$1 flavour=$2
	local img pv kver root common kbuild kdir
	local meta
	meta=$(apt-cache show --no-all-versions "linux-image-6.12-$flavour" 2>/dev/null || true)
	if [ -z "$meta" ]; then
		apt_update
		meta=$(apt-cache show --no-all-versions "linux-image-6.12-$flavour" 2>/dev/null || true)
	fi
	pv=$(printf '%s\n' "$meta" | sed -n 's/^Version: //p' | head -n1)
	[ -n "$pv" ] || die "no linux-image-6.12-$flavour in apt's sources (needs bookworm-security)"
	img=$(printf '%s\n' "$meta" | depends_matching - "^linux-image-6\\.12\\..*-$flavour\$" | head -n1)
	[ -n "$img" ] || die "cannot resolve the image linux-image-6.12-$flavour depends on"
	kver=${img#linux-image-}
	if up_to_date "$name" "$kver" "$pv"; then
		log "$name up to date: $kver ($pv)"
		return
	fi
	# -common for amd64, -common-rt for rt-amd64.
	common=$(depends_matching "linux-headers-$kver" '^linux-headers-.*-common(-rt)?$' | head -n1)
	kbuild=$(depends_matching "linux-headers-$kver" '^linux-kbuild-' | head -n1)
	[ -n "$common" ] && [ -n "$kbuild" ] ||
		die "cannot resolve -common/kbuild packages of linux-headers-$kver"
	root=$cache/kernels/$name/root
	rm -rf "${cache:?}/kernels/$name"
	mkdir -p "$root"
	fetch "$root" "linux-image-$kver=$pv" "linux-headers-$kver=$pv" "$common=$pv" "$kbuild=$pv"
	kdir=$root/usr/src/linux-headers-$kver
	# The arch headers' Makefile includes the -common one by its absolute /usr/src path: point
	# it at the extracted copy. (scripts/ and tools/ are relative symlinks into usr/lib, fine.)
	sed -i "s|/usr/src/|$root/usr/src/|g" "$kdir/Makefile"
	grep -q "$root/usr/src/linux-headers-" "$kdir/Makefile" || die "unexpected $kdir/Makefile"
	[ -x "$kdir/scripts/basic/fixdep" ] || die "$kdir/scripts/basic/fixdep missing (kbuild package)"
	write_env "$name" "$kver" "$pv" "$root" "$kdir"
}

mkdir -p "$cache/kernels"
for k in "${kernels[@]}"; do
	case $k in
	6.1) provision_61 ;;
	6.12) provision_612 6.12 amd64 ;;
	6.12-rt) provision_612 6.12-rt rt-amd64 ;;
	esac
done
