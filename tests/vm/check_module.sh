#!/usr/bin/env bash
# Compile checks of module/ against the three provisioned kernels (W=1 and sparse warnings fail)
# plus checkpatch --strict, by running the module's own module/check.sh with the right headers.
#
# Usage: tests/vm/check_module.sh [KERNEL...]     KERNEL is 6.1, 6.12 and/or 6.12-rt (default: all three)
# env:   CHECKPATCH=/path/to/checkpatch.pl to use that one; otherwise it is taken from PATH,
#        from the cache, or extracted once from Debian's linux-source-6.1 package into
#        tests/vm/.cache/checkpatch/ (the installed /usr/src tarball if present, else
#        `apt-get download`). SEQSHM_NO_CHECKPATCH=1 skips it.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${SEQSHM_VM_CACHE:-$here/.cache}
log() { printf 'check_module: %s\n' "$*" >&2; }

kernels=("$@")
[ ${#kernels[@]} -gt 0 ] || kernels=(6.1 6.12 6.12-rt)
[ -x "$repo/module/check.sh" ] || { log "error: $repo/module/check.sh missing"; exit 1; }

"$here/provision.sh" "${kernels[@]}"
kdirs=()
for k in "${kernels[@]}"; do
	kdirs+=("$(sed -n 's/^KDIR=//p' "$cache/kernels/$k/kernel.env")")
done

checkpatch_from_debian() {
	local dest=$cache/checkpatch tarball tmp deb
	mkdir -p "$dest"
	tarball=$(ls /usr/src/linux-source-*.tar.xz 2>/dev/null | head -n1 || true)
	tmp=$(mktemp -d)
	if [ -z "$tarball" ]; then
		log "fetching checkpatch.pl from Debian's linux-source-6.1 (apt-get download)"
		(cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root linux-source-6.1 >&2)
		deb=$(ls "$tmp"/linux-source-6.1_*.deb)
		dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" --wildcards './usr/src/linux-source-*.tar.xz'
		tarball=$(ls "$tmp"/usr/src/linux-source-*.tar.xz)
	fi
	log "extracting checkpatch.pl from $tarball (once)"
	local top
	top=$(basename "$tarball" .tar.xz)
	tar -xJf "$tarball" -C "$dest" --strip-components=2 "$top/scripts/checkpatch.pl" \
		"$top/scripts/spelling.txt" "$top/scripts/const_structs.checkpatch"
	rm -rf "$tmp"
}

if [ "${SEQSHM_NO_CHECKPATCH:-0}" = 1 ]; then
	log "checkpatch skipped (SEQSHM_NO_CHECKPATCH=1)"
	export CHECKPATCH=
	# module/check.sh falls back to PATH: hide it there too.
	PATH=$(printf '%s' "$PATH" | tr ':' '\n' | while read -r d; do
		[ -x "$d/checkpatch.pl" ] || printf '%s:' "$d"; done)
elif [ -z "${CHECKPATCH:-}" ] && ! command -v checkpatch.pl >/dev/null; then
	[ -x "$cache/checkpatch/checkpatch.pl" ] || checkpatch_from_debian
	export CHECKPATCH=$cache/checkpatch/checkpatch.pl
fi

log "module/check.sh ${kdirs[*]}"
exec "$repo/module/check.sh" "${kdirs[@]}"
