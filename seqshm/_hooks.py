"""Test and benchmark hooks (not API): baselines and a C-speed pattern source, kept out of the
shipped Reader and Writer classes."""

from __future__ import annotations

from seqshm._core import _bench_copy_unlocked as copy_unlocked
from seqshm._core import _bench_noop as noop
from seqshm._core import _bench_stall_mid_write as stall_mid_write
from seqshm._core import _bench_wake_enable as wake_enable
from seqshm._core import _bench_wake_stats as wake_stats
from seqshm._core import _bench_write_pattern as write_pattern

__all__ = ["copy_unlocked", "noop", "stall_mid_write", "wake_enable", "wake_stats",
           "write_pattern"]
