"""The ``cbt`` step: whether vSphere tracks the disk's changed blocks, as
the plugin's changed-since= reads them: through the plugin's own vSphere
session (``VsphereSession``: TLS pinned to thumbprint= in every
handshake, so no credential reaches a server whose certificate does not
match) and its ``TrackedDisk``, as of snapshot= when it is given.  Warm
migrations (virt-v2v, CDI, Forklift) copy only what changed since a
changeId, so they need it on at the snapshot they copy from; with
changed-since= the step also asks vSphere about that changeId.

Runs in the child process of ``remote``, only once the thumbprint step
has matched."""

from ..cbt import areas as changed
from ..cbt.tracked import (FullCopyNeeded, NoSuchDisk, NotFound,
                           TrackedDisk, TrackingOff, vm_moref)
from ..errors import PluginError
from ..vsphere.session import VsphereSession, pyvmomi_missing_message
from .deadlines import TRACKING_LIMIT, Overdue, deadline
from .report import FAIL, OK, WARN, Result

PREFIX = "changed-since: "


def change_tracking(params):
    """The step's result, or None when there is nothing to look at (no
    file=, no vm=moref=, or no pyvmomi and no changed-since=)."""
    if params.file is None or vm_moref(params.vm) is None:
        return None
    failing = FAIL if params.changed_since is not None else WARN
    try:
        with deadline(TRACKING_LIMIT):
            return _step(params, failing)
    except Overdue:
        return Result(failing, "cbt", "vSphere %s did not answer within %d s"
                      % (params.server, TRACKING_LIMIT),
                      "check server= and the network to it")


def _step(params, failing):
    try:
        session = VsphereSession(params)
    except PluginError:
        if params.changed_since is None:
            return None
        return Result(FAIL, "cbt", pyvmomi_missing_message())
    try:
        return _tracking(session, params, failing)
    finally:
        session.close()


def _tracking(session, params, failing):
    disk = TrackedDisk(session, params, params.file)
    try:
        disk.look_up()
        if params.changed_since not in (None, changed.ALL):
            disk.areas(params.changed_since)
    except FullCopyNeeded as e:         # its message says what to do
        return _failed(e, failing)
    except TrackingOff as e:
        return Result(failing, "cbt", e.saw + ": each warm-migration pass "
                      "would copy the whole disk", e.fix, escaped=True)
    except NoSuchDisk as e:
        return _failed(e, failing, "file= names the disk as the VM's "
                       "configuration does")
    except NotFound as e:
        return _failed(e, failing, "vm=moref= and snapshot= must name "
                       "objects that exist (a removed snapshot is gone: take "
                       "a new one)")
    except PluginError as e:
        return _failed(e, failing, "check server=, user= and the password "
                       "(or cookie=)")
    except Exception as e:          # pyvmomi's faults, a server not vSphere
        return Result(failing, "cbt", "could not ask the vSphere API: %s"
                      % _first_line(e), "check that server= is a vCenter or "
                      "ESXi host")
    where = "" if params.snapshot is None else \
        " at snapshot=%s" % params.snapshot
    saw = "changed block tracking is on%s; the disk's changeId is %s" % (
        where, disk.next_change_id)
    if params.changed_since not in (None, changed.ALL):
        saw += "; vSphere accepts changed-since=%s" % params.changed_since
    return Result(OK, "cbt", saw)


def _failed(error, failing, fix=None):
    """The plugin's message (escaped already), without its
    ``changed-since: ``, as the step's line."""
    message = str(error)
    saw = message[len(PREFIX):] if message.startswith(PREFIX) else message
    return Result(failing, "cbt", saw, fix, escaped=True)


def _first_line(error):
    lines = str(error).strip().splitlines()
    return "%s: %s" % (type(error).__name__, lines[0]) if lines \
        else type(error).__name__
