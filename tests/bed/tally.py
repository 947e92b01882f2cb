"""Counters the fault, hostile-input and soak tests add to; conftest.py
prints them as one line at the end of the run."""

_COUNTS = {"faults injected": 0, "faults survived": 0,
           "bad inputs tried": 0, "soak operations": 0, "lost writes": 0}
_PEAKS = {"peak RSS KiB": 0}


def add(name, amount=1):
    _COUNTS[name] += amount


def peak(name, value):
    _PEAKS[name] = max(_PEAKS[name], value)


def summary():
    parts = ["%s %d" % item for item in _COUNTS.items()]
    parts += ["%s %d" % item for item in _PEAKS.items()]
    return ", ".join(parts)


def rss_kib(pid):
    """Resident set size of process ``pid`` in KiB (0 if it is gone)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0
