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
reports failed reads to it.  With snapshot=, the first connection's
questions are asked ahead, as the server starts (``begin_ahead``):
vSphere's answers then come while the client connects and VDDK opens the
disk, not after.  Only as of a snapshot, whose changes are fixed: a
powered-off VM's own disk could be written before the client comes.
A failure asked ahead that is over when the connection comes is not
handed to it (vSphere may be back): the connection asks again.  Without
a snapshot (or with export=) only the log-in is made ahead, which
depends on no disk (its imports included: tens of milliseconds of them).
"""

import time
import _thread

# Imported here, on nbdkit's main thread, before any thread asks vSphere
# (Python 3.9 fails a "from ... import" of a module that another thread
# is still importing).
from . import answer  # noqa: F401
from .areas import RANGES
from .tracked import TrackedDisk, changed_pass, served_map
from ..errors import PluginError
from ..nbdkit.compat import debug
from ..printable import printable
from ..vsphere import stopped_waiting
from ..vsphere.background import Background, Stopped

# How long the server's stop waits for the questions asked ahead to end
# (they stop at their next look at interrupted()).
STOP_SECONDS = 5


class Run:
    """The change tracking of one nbdkit process (changed-since=)."""

    def __init__(self, params, stats=None, interrupted=None):
        self.params = params
        self.stats = stats
        self._nbdkit_says_stop = interrupted
        self._stopping = False
        self._lock = _thread.allocate_lock()
        self._vsphere_lock = _thread.allocate_lock()
        self._vsphere = None
        self._connections = []
        self._ahead = None          # Background: what begin_ahead asks
        self._login_ahead = None    # Background: or only the log-in
        self._ahead_file = None     # its file, until a connection takes it

    def interrupted(self):
        """Whether to stop waiting for vSphere: the run is stopping, or
        nbdkit is (or the calling thread's client has gone)."""
        return self._stopping or (self._nbdkit_says_stop is not None
                                  and self._nbdkit_says_stop())

    def vsphere(self):
        with self._vsphere_lock:
            if self._vsphere is None:
                from ..vsphere.session import VsphereSession
                self._vsphere = VsphereSession(self.params, self.interrupted)
            return self._vsphere

    def begin_ahead(self):
        """At the serving process's start: begin asking, on a thread of
        its own, what the first connection will need (the log-in, the
        disk's lookup, its pass of changed areas), if it is known now
        (file=, not export=) and cannot change before the client comes
        (as of snapshot=); otherwise the log-in only."""
        if self.params.export is None and self.params.snapshot is not None:
            self._ahead_file = self.params.file
            self._ahead = Background(self._ask_ahead, self.params.file)
        else:
            self._login_ahead = Background(self._log_in_ahead)

    def _log_in_ahead(self):
        try:
            vsphere = self.vsphere()
            vsphere.prepare(RANGES)
            vsphere.log_in()
        except PluginError as e:            # (its text is escaped already)
            debug("changed-since: the log-in made ahead failed (each "
                  "connection logs in if it must): %s" % e)

    def _ask_ahead(self, filename):
        try:
            return self._ask(filename)
        except PluginError as e:            # (its text is escaped already)
            debug("changed-since: what was asked ahead for the first "
                  "connection failed (it asks again if it comes later): %s"
                  % e)
            raise

    def _take_ahead(self, filename):
        """What was asked ahead, for the first connection to its file, if
        it has not failed before that connection came."""
        with self._lock:
            if filename != self._ahead_file:
                return None
            self._ahead_file = None
            return None if self._ahead.failed() else self._ahead

    def changes(self, filename, ahead=None):
        """(the looked-up TrackedDisk, its complete Pass) for a connection
        to ``filename``: what was asked ahead for it (``ahead``), or asked
        now."""
        if ahead is None:
            return self._ask(filename)
        try:
            return ahead.result(self.interrupted)
        except Stopped:
            raise stopped_waiting(self.params) from None

    def _ask(self, filename):
        vsphere = self.vsphere()
        # The pass's connections are made while the lookup is asked.
        vsphere.prepare(RANGES)
        disk = TrackedDisk(vsphere, self.params, filename, self.stats)
        disk.look_up()
        return disk, changed_pass(disk)

    def stop(self):
        """At the server's stop: every wait for vSphere ends, and what was
        asked ahead has ended before this returns (or STOP_SECONDS have
        passed), taken or not: no thread of ours may run Python code once
        it is finalised.  Then the vSphere session is logged out."""
        self._stopping = True
        deadline = time.monotonic() + STOP_SECONDS
        for ahead in (self._ahead, self._login_ahead):
            if ahead is not None:
                ahead.wait(timeout=max(0, deadline - time.monotonic()))
        with self._vsphere_lock:
            vsphere, self._vsphere = self._vsphere, None
        problem = vsphere and vsphere.close()
        if problem:
            debug("changed-since: %s (the session ends when it times out)"
                  % problem)

    def connection(self, filename):
        """The record of a new connection serving ``filename``."""
        connection = Connection(self, filename, self._take_ahead(filename))
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

    def __init__(self, run, filename, ahead=None):
        self.run = run
        self.filename = filename
        self.ahead = ahead          # what was asked ahead for it, if any
        self.next_change_id = None
        self.capacity = self.base_capacity = None
        self.coverage = None
        self.failed_reads = 0

    def served_map(self, size):
        """The DiskMap to serve for a disk of ``size`` bytes (VDDK's)."""
        disk, pass_ = self.run.changes(self.filename, self.ahead)
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
