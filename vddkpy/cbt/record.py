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
owns the process's one vSphere session; Disk holds its Connection and
reports failed reads to it.
"""

import _thread

from .tracked import TrackedDisk, served_map
from ..printable import printable


class Run:
    """The change tracking of one nbdkit process (changed-since=)."""

    def __init__(self, params, stats=None, interrupted=None):
        self.params = params
        self.stats = stats
        self.interrupted = interrupted
        self._lock = _thread.allocate_lock()
        self._vsphere = None
        self._connections = []

    def vsphere(self):
        with self._lock:
            if self._vsphere is None:
                from ..vsphere.session import VsphereSession
                self._vsphere = VsphereSession(self.params, self.interrupted)
            return self._vsphere

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
        disk = TrackedDisk(self.run.vsphere(), self.run.params,
                           self.filename, self.run.stats)
        disk.look_up()
        disk_map, pass_ = served_map(disk, size)
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
