#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# seqshm: build the module against each given kernel headers/build dir with W=1 and sparse
# (C=2), then run checkpatch --strict; fail on any compiler or sparse warning.
#
#   module/check.sh KDIR [KDIR...]
#   env: CHECKPATCH=path/to/checkpatch.pl (else looked up on PATH; skipped if absent)
#        SPARSE=0 to skip sparse (needs the sparse package)
#        KO_OUT=dir to keep each seqshm.ko as dir/<kernelrelease>/seqshm.ko
#
# Each build runs in a scratch copy of the sources, so builds for different kernels never
# share objects and the source folder stays clean.
#
# checkpatch runs with --ignore LINUX_VERSION_CODE: an out-of-tree module that supports 6.1
# and 6.12 needs one version test (vm_flags_set() arrived in 6.3); nothing else is ignored.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 1 ] || { echo "usage: $0 KDIR [KDIR...]" >&2; exit 2; }
fail=0
srcs="seqshm_main.c seqshm_channel.c seqshm_cpustat.c seqshm_selftest.c seqshm_apitest.c seqshm_example.c
	seqshm_module.c seqshm_internal.h seqshm_producers.h seqshm_env.h protocol/seqshm_protocol.c
	protocol/seqshm_protocol.h"
c_flag=C=2
[ "${SPARSE:-1}" = 0 ] && c_flag=
if [ -n "$c_flag" ] && ! command -v sparse >/dev/null 2>&1; then
	echo "check: sparse not found, building without it" >&2
	c_flag=
fi

for kdir in "$@"; do
	kdir=$(cd "$kdir" && pwd)
	rel=$(make -s -C "$kdir" kernelrelease 2>/dev/null || basename "$kdir")
	work=$(mktemp -d)
	cp -r "$here/Kbuild" "$here/include" "$work/"
	mkdir -p "$work/protocol"
	for f in $srcs; do cp "$here/$f" "$work/$f"; done
	log="$work/build.log"
	echo "== build $rel ($kdir) W=1 $c_flag"
	if ! make -C "$kdir" M="$work" W=1 $c_flag CONFIG_DEBUG_INFO_BTF_MODULES= modules >"$log" 2>&1; then
		cat "$log"; echo "check: build FAILED for $rel"; fail=1
	elif grep -i -E "warning:|error:|undefined" "$log"; then
		echo "check: warnings for $rel"; fail=1
	else
		echo "ok: $rel built without warnings"
		if [ -n "${KO_OUT:-}" ]; then
			mkdir -p "$KO_OUT/$rel"; cp "$work/seqshm.ko" "$KO_OUT/$rel/seqshm.ko"
		fi
	fi
	rm -rf "$work"
done

# The README's producer example is seqshm_example.c's code between its markers, which the builds
# above compiled: the two must not drift apart.
echo "== README example = seqshm_example.c"
readme_ex=$(awk '/^```c$/ { on = 1; next } on && /^```$/ { exit } on' "$here/README.md")
file_ex=$(sed -n '\|/\* README example begin \*/|,\|/\* README example end \*/|p' \
	"$here/seqshm_example.c" | sed '1d;$d')
if [ -n "$file_ex" ] && [ "$readme_ex" = "$file_ex" ]; then
	echo "ok: README example matches seqshm_example.c"
else
	echo "check: README.md's C example differs from seqshm_example.c's (between its markers):"
	tmp=$(mktemp -d)
	printf '%s\n' "$readme_ex" >"$tmp/README.md-example"
	printf '%s\n' "$file_ex" >"$tmp/seqshm_example.c-example"
	(cd "$tmp" && diff -u README.md-example seqshm_example.c-example) || true
	rm -rf "$tmp"
	fail=1
fi

kdoc="$1/scripts/kernel-doc"
if [ -f "$kdoc" ]; then
	echo "== kernel-doc -none"
	out=$(cd "$here" && perl "$kdoc" -none $srcs include/linux/seqshm.h 2>&1)
	if [ -n "$out" ]; then echo "$out"; fail=1; else echo "ok: kernel-doc clean"; fi
fi

cp_bin=${CHECKPATCH:-$(command -v checkpatch.pl || true)}
if [ -n "$cp_bin" ]; then
	echo "== checkpatch --strict"
	if (cd "$here" && "$cp_bin" --no-tree --strict --ignore LINUX_VERSION_CODE --quiet -f \
		$srcs include/linux/seqshm.h); then
		echo "ok: checkpatch clean"
	else
		fail=1
	fi
else
	echo "check: checkpatch.pl not found (set CHECKPATCH=), skipped" >&2
fi
exit $fail
