# Sourced by scripts/test and scripts/test-wheel (not run on its own): install_export_tools.
# The export tests and benchmark start Debian's prometheus, promtool and
# prometheus-node-exporter themselves, on loopback (tests/exporting.py), and fail without them.
# Installed here when missing, as root with apt-get, with their system services neither started
# (a policy-rc.d that refuses, for the install only, unless one is there) nor enabled at boot.
install_export_tools() {
	local need=() policy=/usr/sbin/policy-rc.d ours=
	{ command -v prometheus && command -v promtool; } >/dev/null || need+=(prometheus)
	command -v prometheus-node-exporter >/dev/null || need+=(prometheus-node-exporter)
	((${#need[@]})) || return 0
	if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
		echo "seqshm: warning: ${need[*]} missing (sudo apt-get install ${need[*]});" \
			"the export tests will fail" >&2
		return 0
	fi
	echo "seqshm: installing ${need[*]} with apt-get (for the export tests)" >&2
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && ours=1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			"${need[@]}" >/dev/null || echo "seqshm: error: apt-get install ${need[*]} failed" >&2
	[[ -z $ours ]] || rm -f "$policy"
	if command -v systemctl >/dev/null; then
		systemctl disable --now "${need[@]}" >/dev/null 2>&1 || true
	fi
}
