"""Per-function VDDK statistics: upstream's table, and a JSON document
(written by ``statsfile``).

Latencies are kept in a log-scale histogram (16 buckets per power of two,
so percentiles are within ~4 %) rather than as samples: a migration makes
millions of calls and memory must stay flat.
"""

import _thread

_SUB_BUCKETS = 16


def _bucket(usecs):
    if usecs < _SUB_BUCKETS:
        return usecs
    shift = usecs.bit_length() - 5          # keep the top 5 bits
    return (shift + 1) * _SUB_BUCKETS + ((usecs >> shift) - _SUB_BUCKETS)


def _bucket_upper(index):
    """Largest latency (µs) that falls into bucket ``index``."""
    if index < _SUB_BUCKETS:
        return index
    shift = index // _SUB_BUCKETS - 1
    mantissa = index % _SUB_BUCKETS + _SUB_BUCKETS
    return ((mantissa + 1) << shift) - 1


class FunctionStats:
    __slots__ = ("name", "usecs", "calls", "bytes", "max", "histogram")

    def __init__(self, name):
        self.name = name
        self.usecs = self.calls = self.bytes = self.max = 0
        self.histogram = {}

    def add(self, usecs, nbytes):
        self.usecs += usecs
        self.calls += 1
        self.bytes += nbytes
        self.max = max(self.max, usecs)
        index = _bucket(usecs)
        self.histogram[index] = self.histogram.get(index, 0) + 1

    def percentile(self, fraction):
        rank = fraction * self.calls
        seen = 0
        for index in sorted(self.histogram):
            seen += self.histogram[index]
            if seen >= rank:
                return min(_bucket_upper(index), self.max)
        return self.max


class Stats:
    """Thread-safe accumulation of (function, µs, bytes)."""

    def __init__(self, names):
        self._lock = _thread.allocate_lock()
        self._functions = {name: FunctionStats(name) for name in names}

    def add(self, name, usecs, nbytes=0):
        with self._lock:
            self._functions[name].add(usecs, nbytes)

    def table(self):
        """Upstream's table, line by line (rows with 0 µs left out)."""
        lines = ["VDDK function stats (-D vddk.stats=1):",
                 "%-24s %15s %5s %15s" % ("VixDiskLib_...", "us", "calls",
                                          "bytes")]
        with self._lock:
            rows = sorted((f for f in self._functions.values() if f.usecs),
                          key=lambda f: f.usecs, reverse=True)
            for f in rows:
                line = "  %-22s %15d %5d" % (f.name, f.usecs, f.calls)
                if f.bytes:
                    line += " %15d" % f.bytes
                lines.append(line)
        return lines

    def as_json(self):
        with self._lock:
            functions = {
                f.name: {
                    "us": f.usecs, "calls": f.calls, "bytes": f.bytes,
                    "latency_us": {
                        "p50": f.percentile(0.50), "p90": f.percentile(0.90),
                        "p99": f.percentile(0.99), "max": f.max,
                    },
                }
                for f in self._functions.values() if f.calls
            }
        return {"functions": functions}
