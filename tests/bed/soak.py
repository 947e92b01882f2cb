"""The soak test: several NBD clients doing random reads, writes and flushes
against one nbdkit for a while, checked against an in-memory model.

Used by tests/plugin/test_soak.py (short, in CI) and scripts/soak.py (as long as
you like).  Each client owns a region it reads and writes at will; a shared
region is written by everyone in slots, one client at a time per slot (the
NBD protocol leaves concurrent overlapping writes undefined, so that is
all a model can check); a read-only region is read by everyone at once.
"""

import random
import threading
import time
from dataclasses import dataclass, field

import nbd

from bed import REMOTE_DISK_ARGS, Nbdkit, install_standin, remote_disk
from bed.tally import rss_kib

KiB = 1024
MiB = 1024 * KiB
OWN_REGION = 2 * MiB
SLOT = 64 * KiB
SHARED_SLOTS = 32
READ_ONLY_REGION = 2 * MiB
# The disk is on the emulated ESXi host (network transport, so VDDK's
# asynchronous requests overlap), with latency in every data call.
STANDIN_CONFIG = """\
async_threads 2
latency ReadAsync 300
latency WriteAsync 500
latency Flush 2000
"""


@dataclass
class SoakResult:
    operations: int = 0
    mismatches: int = 0             # reads that differed from the model
    lost_writes: int = 0            # sectors of the file that differ
    client_errors: list = field(default_factory=list)
    rss_kib: list = field(default_factory=list)   # (seconds, KiB)
    warmup_seconds: float = 0
    stderr: str = ""

    @property
    def rss_after_warmup(self):
        return [kib for t, kib in self.rss_kib if t >= self.warmup_seconds]

    @property
    def peak_rss_kib(self):
        return max((kib for _, kib in self.rss_kib), default=0)

    @property
    def rss_growth_kib(self):
        """How far RSS rose above its first sample after warm-up."""
        after = self.rss_after_warmup
        return max(after) - after[0] if after else 0

    def summary(self):
        return ("%d operations, %d mismatches, %d lost writes, %d client "
                "errors; nbdkit RSS after %.0f s warm-up: %s KiB (growth "
                "%d KiB), peak %d KiB"
                % (self.operations, self.mismatches, self.lost_writes,
                   len(self.client_errors), self.warmup_seconds,
                   " -> ".join(str(k) for k in self.rss_after_warmup[:1]
                               + self.rss_after_warmup[-1:]),
                   self.rss_growth_kib, self.peak_rss_kib))


class Layout:
    def __init__(self, clients):
        self.clients = clients
        self.shared = clients * OWN_REGION
        self.read_only = self.shared + SHARED_SLOTS * SLOT
        self.size = self.read_only + READ_ONLY_REGION


class Model:
    """What the disk must hold, and the slot locks of the shared region."""

    def __init__(self, data, layout):
        self.data = bytearray(data)
        self.layout = layout
        self.slot_locks = [threading.Lock() for _ in range(SHARED_SLOTS)]


def _random_span(rng, base, length):
    count = rng.randrange(1, 129) * 512
    count = min(count, length)
    offset = base + rng.randrange(0, (length - count) // 512 + 1) * 512
    return offset, count


class Client:
    def __init__(self, index, server, model, deadline):
        self.index = index
        self.rng = random.Random(index)
        self.server = server
        self.model = model
        self.deadline = deadline
        self.operations = 0
        self.mismatches = 0

    def run(self):
        h = self.server.connect()
        try:
            while time.monotonic() < self.deadline:
                self.step(h)
                self.operations += 1
        finally:
            h.shutdown()

    def check(self, h, offset, count):
        if h.pread(count, offset) != bytes(self.model.data[offset:offset
                                                           + count]):
            self.mismatches += 1

    def write(self, h, offset, count):
        block = self.rng.randbytes(count)
        fua = nbd.CMD_FLAG_FUA if self.rng.random() < 0.05 else 0
        h.pwrite(block, offset, fua)
        self.model.data[offset:offset + count] = block

    def step(self, h):
        layout, rng = self.model.layout, self.rng
        choice = rng.random()
        if choice < 0.05:
            h.flush()
        elif choice < 0.55:
            offset, count = _random_span(rng, self.index * OWN_REGION,
                                         OWN_REGION)
            if rng.random() < 0.5:
                self.write(h, offset, count)
            else:
                self.check(h, offset, count)
        elif choice < 0.85:
            slot = rng.randrange(SHARED_SLOTS)
            offset, count = _random_span(rng, layout.shared + slot * SLOT,
                                         SLOT)
            with self.model.slot_locks[slot]:
                if rng.random() < 0.5:
                    self.write(h, offset, count)
                else:
                    self.check(h, offset, count)
        else:
            self.check(h, *_random_span(rng, layout.read_only,
                                        READ_ONLY_REGION))


def _run_clients(clients):
    errors = []

    def guarded(client):
        try:
            client.run()
        except Exception as e:          # reported in the result
            errors.append("client %d: %r" % (client.index, e))

    threads = [threading.Thread(target=guarded, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    return threads, errors


def soak(workdir, seconds, clients=8, libdir=None, sample_every=1.0):
    """Run the soak in ``workdir``; returns a SoakResult."""
    libdir = libdir or install_standin(workdir / "vddk")
    layout = Layout(clients)
    config, disk = remote_disk(workdir, layout.size, seed=99)
    model = Model(disk.read_bytes(), layout)
    server = Nbdkit(workdir, libdir, REMOTE_DISK_ARGS,
                    config=STANDIN_CONFIG + config, verbose=False).start()
    result = SoakResult(warmup_seconds=min(10.0, seconds / 4))
    try:
        started = time.monotonic()
        workers = [Client(i, server, model, started + seconds)
                   for i in range(clients)]
        threads, errors = _run_clients(workers)
        while any(t.is_alive() for t in threads):
            result.rss_kib.append((time.monotonic() - started,
                                   rss_kib(server.proc.pid)))
            threads[0].join(sample_every)
        for t in threads:
            t.join()
        result.client_errors = errors
        result.operations = sum(w.operations for w in workers)
        result.mismatches = sum(w.mismatches for w in workers)
    finally:
        server.stop()
    result.stderr = server.stderr
    written = disk.read_bytes()
    result.lost_writes = sum(
        written[o:o + 512] != bytes(model.data[o:o + 512])
        for o in range(0, layout.size, 512))
    return result
