"""A reader that stops (SIGSTOP) or dies in the middle of reading cannot slow the kernel
writer: the selftest channel's write rate stays what it was."""

import os
import signal
import subprocess
import sys
import time

import pytest

if not os.path.isdir("/dev/seqshm"):
    pytest.skip("no /dev/seqshm: the seqshm module is not loaded here (runs in the VM)",
                allow_module_level=True)

READER = """
import mmap, os, struct, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
m = mmap.mmap(fd, 4096, prot=mmap.PROT_READ)
rs = struct.unpack_from('=Q', m, 16)[0]
m.close()
m = mmap.mmap(fd, rs, prot=mmap.PROT_READ)
print('ready', flush=True)
n = 0
while True:
    # a seqlock read by hand, and a read() system call, over and over
    seq = struct.unpack_from('=I', m, 2048)[0]
    data = m[4096:8192]
    os.read(fd, 1 << 24)
    n += 1
"""


def test_stopped_and_killed_readers_leave_writer_rate_unchanged(dev):
    fd = os.open(dev.SELFTEST, os.O_RDONLY)
    children = []
    try:
        base = dev.rate(fd, 1.0)
        assert base > 100, f"selftest writer too slow to judge: {base:.0f}/s"
        for _ in range(2):
            c = subprocess.Popen([sys.executable, "-c", READER, dev.SELFTEST],
                                 stdout=subprocess.PIPE)
            assert c.stdout.readline().strip() == b"ready"
            children.append(c)
        time.sleep(0.2)
        for c in children:
            os.kill(c.pid, signal.SIGSTOP)  # wherever it was: mid-copy, mid-read()
        stopped = dev.rate(fd, 1.0)
        os.kill(children[0].pid, signal.SIGKILL)
        children[0].wait()
        killed = dev.rate(fd, 1.0)
        print(f"writes/s: alone {base:.0f}, readers stopped {stopped:.0f}, "
              f"one killed {killed:.0f}")
        # Under TCG the rate wanders with host load; a writer that waited for readers would
        # show 0 here, not a few tens of percent.
        assert stopped > 0.3 * base
        assert killed > 0.3 * base
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
                c.wait()
            c.stdout.close()
        os.close(fd)
