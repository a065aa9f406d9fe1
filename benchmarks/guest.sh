#!/usr/bin/env bash
# Runs benchmarks/test_bench_kernel.py inside the QEMU guest (tests/vm) for each kernel given
# (default: 6.1 6.12) and copies the JSON to benchmarks/results/kernel-<kernel>.json;
# `python benchmarks/report.py` then adds those files to the report.
#
# The guest imports seqshm from the Python given by GUEST_PYTHON (default: a venv made here,
# /tmp/seqshm-bench-venv, holding a non-editable build of HEAD plus pytest-benchmark): an
# editable install cannot work in the guest, which sees the host read-only. The seed answer's
# ioctl-mutex model (module/bench) is built against each kernel's headers and loaded beside
# seqshm.ko.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
kernels=("${@:-6.1 6.12}")
kernels=(${kernels[@]})
# Outside /tmp: the guest keeps only one host /tmp entry named in the command visible (the
# Python's), over its own tmpfs /tmp.
work=${SEQSHM_BENCH_WORK:-${XDG_CACHE_HOME:-$HOME/.cache}/seqshm-bench-guest}
py=${GUEST_PYTHON:-}
mkdir -p "$work" benchmarks/results

if [[ -z $py ]]; then
	venv=/tmp/seqshm-bench-venv
	if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import seqshm, pytest_benchmark, psutil' 2>/dev/null; then
		rm -rf "$venv" "$work/src" "$work/wheel"
		python3 -m venv "$venv"
		"$venv/bin/pip" install -q numpy pytest pytest-benchmark rich psutil
		mkdir -p "$work/src"
		git archive HEAD | tar -x -C "$work/src"
		python3 -m pip wheel -q --no-build-isolation --no-deps "$work/src" -w "$work/wheel"
		"$venv/bin/pip" install -q --no-deps "$work"/wheel/seqshm-*.whl
	fi
	py=$venv/bin/python
fi

python3 tests/vm/run.py --provision-only >/dev/null
for k in "${kernels[@]}"; do
	kdir=$(sed -n 's/^KDIR=//p' "tests/vm/.cache/kernels/$k/kernel.env")
	mod=$work/mutex-$k
	rm -rf "$mod" && mkdir -p "$mod"
	cp module/bench/Kbuild module/bench/seqshm_bench_mutex.c "$mod/"
	make -s -C "$kdir" M="$mod" CONFIG_DEBUG_INFO_BTF_MODULES= modules >/dev/null
	log=$work/run-$k.log
	python3 tests/vm/run.py --kernel "$k" --skip-provision --guest-cmd \
		"insmod $mod/seqshm_bench_mutex.ko; $py -P -m pytest -p no:cacheprovider -q \
		benchmarks/test_bench_kernel.py --benchmark-json=\$SEQSHM_VM_OUT/kernel.json \
		--benchmark-max-time=0.3 --benchmark-min-rounds=5 --benchmark-min-time=0.0001 \
		--benchmark-columns=median,rounds" | tee "$log"
	run=$(sed -n 's/.*(logs: \(.*\))$/\1/p' "$log" | tail -1)
	# without every round's time (MBs), as report.py stores its own JSON
	python3 -c 'import json, sys; d = json.load(open(sys.argv[1]))
for b in d["benchmarks"]: b["stats"].pop("data", None)
json.dump(d, open(sys.argv[2], "w"), indent=1)' "$run/guest/kernel.json" "benchmarks/results/kernel-$k.json"
	echo "wrote benchmarks/results/kernel-$k.json"
done
