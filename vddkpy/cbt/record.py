"""What a changed-since= run proved, for the changeId to give next time.

A copy made from this run is complete only if every connection served a
whole-disk map built from a complete, checked pass of vSphere's answers
and no read failed; only then is the changeId of snapshot= handed out
(in stats-file= as ``next_change_ids``, in the -D vddk.stats=1 table, at
-v).  Otherwise the run says ``"complete": false`` and why, and hands out
no changeId: a tool that moved its changeId forward after a failed round
would silently miss that round's changes next time.  What nbdkit cannot
see (the client failing to write its copy, nbdkit stopped before the
client finished) is left to the client's exit status: move the changeId
only after it is zero.

Each connection (``Connection``) gets its map through this record, which
asks vddkpy's vSphere process for it (``agent``: what was asked ahead
there, as the server started, or asked then); Disk holds its Connection
and reports failed reads to it.
"""

import _thread

from .agent import Agent
from .tracked import served_map
from ..printable import printable
from ..vsphere import stopped_waiting


class Run:
    """The change tracking of one nbdkit process (changed-since=)."""

    def __init__(self, params, stats=None, interrupted=None):
        self.params = params
        self.stats = stats
        self._nbdkit_says_stop = interrupted
        self._stopping = False
        self._lock = _thread.allocate_lock()
        self._connections = []
        self._agent = Agent(params.cbt_agent_)

    def interrupted(self):
        """Whether to stop waiting for vSphere: the run is stopping, or
        nbdkit is (or the calling thread's client has gone)."""
        return self._stopping or (self._nbdkit_says_stop is not None
                                  and self._nbdkit_says_stop())

    def changes(self, filename):
        """(the looked-up disk, its complete pass) for a connection to
        ``filename``, as the vSphere process answered."""
        answer = self._agent.changes(filename, self.interrupted)
        if answer is None:
            raise stopped_waiting(self.params)
        self._count(answer.calls)
        if answer.error is not None:
            raise answer.error
        return answer.disk, answer.pass_

    def _count(self, calls):
        if self.stats is not None:
            for name, usecs in calls:
                self.stats.add(name, usecs)

    def stop(self):
        """At the server's stop: every wait for vSphere ends, and the
        vSphere process logs out and ends (within agent.GOODBYE_SECONDS)."""
        self._stopping = True
        self._count(self._agent.close())

    def connection(self, filename):
        """The record of a new connection serving ``filename``."""
        connection = Connection(self, filename)
        with self._lock:
            self._connections.append(connection)
        return connection

    def outcome(self):
        """(complete, {file: next changeId} or None, why not complete,
        [coverage of each connection])."""
        with self._lock:
            connections = list(self._connections)
        reasons = []
        if not connections:
            reasons.append("no client connected")
        ids = {}
        for c in connections:
            if c.coverage is None or not c.coverage["complete"]:
                reasons.append("the map of %s could not be built"
                               % printable(c.filename))
            elif ids.setdefault(c.filename, c.next_change_id) \
                    != c.next_change_id:
                reasons.append("connections to %s were given different "
                               "changeIds" % printable(c.filename))
            if c.failed_reads:
                reasons.append("%d read(s) of %s failed"
                               % (c.failed_reads, printable(c.filename)))
        reasons = list(dict.fromkeys(reasons))
        return (not reasons, None if reasons else ids, reasons,
                [c.summary() for c in connections])

    def document(self):
        """The stats-file= part: ``complete``, ``next_change_ids`` when
        complete, ``change_tracking`` (why not, and each connection's
        coverage)."""
        complete, ids, reasons, coverage = self.outcome()
        document = {"complete": complete,
                    "change_tracking": {
                        "changed_since": self.params.changed_since,
                        "incomplete_because": reasons,
                        "connections": coverage}}
        if complete:
            document["next_change_ids"] = ids
        return document


class Connection:
    """One connection's map and reads."""

    def __init__(self, run, filename):
        self.run = run
        self.filename = filename
        self.next_change_id = None
        self.capacity = self.base_capacity = None
        self.coverage = None
        self.failed_reads = 0

    def served_map(self, size):
        """The DiskMap to serve for a disk of ``size`` bytes (VDDK's)."""
        disk, pass_ = self.run.changes(self.filename)
        disk_map = served_map(disk, pass_, size)
        self.capacity, self.base_capacity = disk.capacity, disk.base_capacity
        self.next_change_id = disk.next_change_id
        self.coverage = pass_.coverage()
        return disk_map

    def read_failed(self):
        self.failed_reads += 1

    def summary(self):
        return {"file": self.filename, "capacity": self.capacity,
                "capacity_at_changed_since": self.base_capacity,
                "failed_reads": self.failed_reads,
                "coverage": self.coverage}
