"""CPU time spent by the whole machine, by one process and by our
children, so that a measurement can tell how much other work shared the
CPUs while it ran."""

import os
import resource

CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def machine_busy_seconds():
    """Busy time of all CPUs since boot (time stolen by the hypervisor
    included), from /proc/stat."""
    with open("/proc/stat") as f:
        user, nice, system, idle, iowait, irq, softirq, steal = (
            int(x) for x in f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICK


def process_cpu_seconds(pid):
    """User + system time of process ``pid`` (all its threads)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def children_cpu_seconds():
    """CPU time of every descendant reaped so far (hyperfine, fio and the
    processes they waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CpuWatch:
    """What the machine, our children and (optionally) one running server
    spent between the start and the end of a ``with`` block."""

    def __init__(self, pid=None):
        self.pid = pid

    def _read(self):
        server = process_cpu_seconds(self.pid) if self.pid else 0.0
        return machine_busy_seconds(), children_cpu_seconds(), server

    def __enter__(self):
        self._start = self._read()
        return self

    def __exit__(self, *exc):
        end = self._read()
        self.machine, self.children, self.server = (
            b - a for a, b in zip(self._start, end))
        return False

    @property
    def others(self):
        """CPU seconds used by processes that are not ours."""
        return max(0.0, self.machine - self.children - self.server)
