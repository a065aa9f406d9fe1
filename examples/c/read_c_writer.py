"""Read what examples/c/c_writer.c publishes: every write, in order, as a NumPy record."""

import sys
import time

import seqshm

name = sys.argv[1] if len(sys.argv) > 1 else "c_demo"
deadline = time.monotonic() + 10
while True:  # start this or the writer first: wait up to 10 s for the channel
    try:
        reader = seqshm.open(name)
        break
    except FileNotFoundError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.05)

with reader:
    print(f"{reader.path}: {reader.dtype} x {reader.shape}, {reader.nr_slots} slots")
    for s in reader.follow():  # ends when the C writer closes the channel
        rec = s.data
        print(f"write {s.seq}: t={float(rec['t']):.2f} count={int(rec['count'])} "
              f"xyz={[round(float(v), 3) for v in rec['xyz']]} lost={s.lost}")
print("the writer closed the channel")
