"""The benchmark's disks: random data, and a 99 % sparse disk for maps."""

import os
import random

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


def human(n):
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size and n % size == 0:
            return "%d %s" % (n // size, unit)
    return "%d bytes" % n


def parse_size(text):
    text = text.strip().upper()
    for suffix, mult in (("K", KiB), ("M", MiB), ("G", GiB)):
        if text.endswith(suffix):
            return int(float(text[:-1]) * mult)
    return int(text)


def make_random_file(path, size, chunk=8 * MiB):
    with open(path, "wb") as f:
        for offset in range(0, size, chunk):
            f.write(os.urandom(min(chunk, size - offset)))
        # Written back now, so that background writeback of fresh dirty
        # pages does not disturb the first cases (they stay cached).
        os.fsync(f.fileno())


def make_sparse_file(path, size, chunk=64 * KiB, fraction=0.01, seed=1):
    """``fraction`` of the ``chunk``-sized chunks hold random data at
    random aligned offsets, the rest are holes.  Returns the data chunks."""
    count = size // chunk
    picked = random.Random(seed).sample(range(count),
                                        max(1, round(count * fraction)))
    with open(path, "wb") as f:
        f.truncate(size)
        for i in sorted(picked):
            os.pwrite(f.fileno(), os.urandom(chunk), i * chunk)
        os.fsync(f.fileno())
    return len(picked)
