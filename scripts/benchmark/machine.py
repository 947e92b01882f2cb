"""CPU time spent by the whole machine, by one process and by our
children, so that a measurement can tell how much other work shared the
CPUs while it ran."""

import os
import resource

CLOCK_TICK = os.sysconf("SC_CLK_TCK")
PR_SET_CHILD_SUBREAPER = 36


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


def adopt_orphans(adopt=True):
    """Become (or stop being) the parent of our descendants whose parent
    ends first, as vddkpy's vSphere process (changed-since=) does when
    nbdkit's --run exits: its CPU time is the command's, not other work,
    once reaped here."""
    import ctypes
    ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, int(adopt), 0, 0, 0)


def reap_orphans():
    """Reap the adopted descendants that have ended: their CPU seconds.
    (Also any child of ours that has ended unwaited for, which subprocess
    then finds gone.)"""
    seconds = 0.0
    while True:
        try:
            pid, _, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return seconds
        if pid == 0:
            return seconds
        seconds += usage.ru_utime + usage.ru_stime


def children_cpu_seconds():
    """CPU time of every descendant reaped so far (hyperfine, fio and the
    processes they waited for, and adopted ones: ``adopt_orphans``)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CpuWatch:
    """What the machine, our children and (optionally) one running server
    spent between the start and the end of a ``with`` block."""

    def __init__(self, pid=None):
        self.pid = pid
        self.adopted = 0.0      # CPU seconds of the orphans reaped

    def _read(self):
        self.adopted += reap_orphans()
        server = process_cpu_seconds(self.pid) if self.pid else 0.0
        return machine_busy_seconds(), children_cpu_seconds(), server

    def __enter__(self):
        adopt_orphans()
        self._start = self._read()
        self.adopted = 0.0          # (those reaped by that read were not ours)
        return self

    def __exit__(self, *exc):
        end = self._read()
        adopt_orphans(False)
        self.machine, self.children, self.server = (
            b - a for a, b in zip(self._start, end))
        return False

    @property
    def others(self):
        """CPU seconds used by processes that are not ours."""
        return max(0.0, self.machine - self.children - self.server)
