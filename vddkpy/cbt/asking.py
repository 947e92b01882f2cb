"""The questions a changed-since= server asks vSphere, in the process that
asks them (``cbt.agent``): the log-in, each connection's disk lookup and
its pass of changed areas, on the process's one vSphere session.

What the first connection will need is asked ahead, as the server starts
(``begin_ahead``): vSphere's answers then come while nbdkit starts again,
the client connects and VDDK opens the disk, not after.  Only as of a
snapshot, whose changes are fixed: a powered-off VM's own disk could be
written before the client comes.  A failure asked ahead that is over when
the connection comes is not handed to it (vSphere may be back): the
connection asks again.  Without a snapshot (or with export=) only the
log-in is made ahead, which depends on no disk (its imports included:
tens of milliseconds of them).
"""

import time
import _thread

from .areas import RANGES
from ..errors import PluginError
from ..nbdkit.compat import debug
from ..vsphere import stopped_waiting
from ..vsphere.background import Background, Stopped

# How long stop waits for the questions asked ahead to end (they stop at
# their next look at interrupted()).
STOP_SECONDS = 5


def _import_pass_modules():
    """What a pass needs, imported on the main thread before any thread
    asks for one (Python 3.9 fails a "from ... import" of a module that
    another thread is still importing)."""
    from . import answer, tracked  # noqa: F401


class Asker:
    """The vSphere side of one changed-since= server."""

    def __init__(self, params, stats=None):
        self.params = params
        self.stats = stats
        self._stopping = False
        self._lock = _thread.allocate_lock()
        self._vsphere_lock = _thread.allocate_lock()
        self._vsphere = None
        self._ahead = None          # Background: what begin_ahead asks
        self._login_ahead = None    # Background: or only the log-in
        self._ahead_file = None     # its file, until a connection takes it

    def interrupted(self):
        """Whether to stop waiting for vSphere: the server is stopping."""
        return self._stopping

    def vsphere(self):
        """The session, made on first use; none once stopping (it would
        never be logged out)."""
        with self._vsphere_lock:
            if self._stopping:
                raise stopped_waiting(self.params)
            if self._vsphere is None:
                from ..vsphere.session import VsphereSession
                self._vsphere = VsphereSession(self.params, self.interrupted)
            return self._vsphere

    def begin_ahead(self):
        """At the server's start: begin asking, on a thread of its own,
        what the first connection will need (the log-in, the disk's
        lookup, its pass of changed areas), if it is known now (file=, not
        export=) and cannot change before the client comes (as of
        snapshot=); otherwise the log-in only.  On the process's main
        thread, first: the modules the log-in needs are imported, and
        those a pass needs (before the log-in made ahead: while it waits
        for vSphere)."""
        try:
            self.vsphere()
        except PluginError:     # said by each question, which asks again
            pass
        if self.params.export is None and self.params.snapshot is not None:
            _import_pass_modules()
            self._ahead_file = self.params.file
            self._ahead = Background(self._ask_ahead, self.params.file)
        else:
            self._login_ahead = Background(self._log_in_ahead)
            _import_pass_modules()

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

    def take_ahead(self, filename):
        """What was asked ahead, for the first connection to its file, if
        it has not failed before that connection came."""
        with self._lock:
            if filename != self._ahead_file:
                return None
            self._ahead_file = None
            return None if self._ahead.failed() else self._ahead

    def changes(self, filename):
        """(the looked-up TrackedDisk, its complete Pass) for a connection
        to ``filename``: what was asked ahead for it, or asked now."""
        ahead = self.take_ahead(filename)
        if ahead is None:
            return self._ask(filename)
        try:
            return ahead.result(self.interrupted)
        except Stopped:
            raise stopped_waiting(self.params) from None

    def _ask(self, filename):
        from .tracked import TrackedDisk, changed_pass  # (begin_ahead's)
        vsphere = self.vsphere()
        # The pass's connections are made while the lookup is asked.
        vsphere.prepare(RANGES)
        disk = TrackedDisk(vsphere, self.params, filename, self.stats)
        disk.look_up()
        return disk, changed_pass(disk)

    def stop(self):
        """At the server's stop: every wait for vSphere ends, and what was
        asked ahead has ended before this returns (or STOP_SECONDS have
        passed), taken or not.  Then the vSphere session is logged out."""
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
