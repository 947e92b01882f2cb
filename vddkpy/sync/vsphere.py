"""The VM as a sync round sees it through vSphere (pyvmomi, in the
plugin's own session: certificate pinned to thumbprint=, nothing sent
before it matches): its power state and change tracking, its disks as of
a snapshot, the changed areas of each, and snapshots made and removed,
every task waited for (a snapshot removal consolidates disks: the next
snapshot must not start before it ends)."""

import copy
import time

from ..cbt.tracked import FullCopyNeeded, TrackedDisk, vm_moref
from ..errors import PluginError
from ..printable import printable
from ..vsphere.session import VsphereSession

TASK_POLL_SECONDS = (0.05, 1.0)     # first and longest pause between polls


class VsphereError(Exception):
    """A vSphere step failed (the message is one line)."""


class ChangeIdRefused(VsphereError):
    """vSphere does not know the changeId any more (tracking reset)."""


class DiskInfo:
    """One virtual disk of the VM (or of a snapshot)."""

    def __init__(self, file, key, capacity, change_id):
        self.file = file
        self.key = key
        self.capacity = capacity
        self.change_id = change_id


def _fault_text(fault):
    """A pyvmomi fault as ``Name: message`` (like the streamed call's
    ``answer.Fault.text()``), not yet escaped."""
    message = getattr(fault, "msg", None) or ""
    name = type(fault).__name__.rpartition(".")[2]
    return "%s: %s" % (name, message) if message else name


class Vm:
    """vm=moref=ID of server=, through one logged-in session."""

    def __init__(self, params, task_timeout):
        self.params = params
        self.moref = vm_moref(params.vm)
        self.task_timeout = task_timeout
        try:
            self.session = VsphereSession(params)
        except PluginError as e:            # pyvmomi missing
            raise VsphereError(str(e)) from None
        self.vim = self.session.vim

    def close(self):
        """Log out (bounded): None, or why not (one line; the session then
        stays until it times out)."""
        return self.session.close()

    def _call(self, function, *args):
        try:
            return self.session.call(function, *args)
        except PluginError as e:
            raise VsphereError(str(e)) from None
        except self.session.vmodl.MethodFault as e:
            raise VsphereError("vSphere %s: %s" % (
                self.session.address, printable(_fault_text(e)))) from None

    def _vm(self, stub):
        return self.vim.VirtualMachine(self.moref, stub)

    # -- reading -----------------------------------------------------------

    def power_state(self):
        def read(stub):
            try:
                return str(self._vm(stub).runtime.powerState)
            except self.session.vmodl.fault.ManagedObjectNotFound:
                raise VsphereError("vSphere %s has no VM %s" % (
                    self.session.address, printable(self.params.vm))) \
                    from None
        return self._call(read)

    def tracking_enabled(self):
        return bool(self._call(
            lambda stub: self._vm(stub).config.changeTrackingEnabled))

    def disks(self, snapshot=None):
        """The disks of the VM (as of ``snapshot``), in device order."""
        def read(stub):
            owner = self._vm(stub) if snapshot is None else \
                self.vim.vm.Snapshot(snapshot, stub)
            return [DiskInfo(d.backing.fileName, d.key,
                             d.capacityInBytes or d.capacityInKB * 1024,
                             getattr(d.backing, "changeId", None) or None)
                    for d in owner.config.hardware.device
                    if isinstance(d, self.vim.vm.device.VirtualDisk)]
        return self._call(read)

    def snapshot_names(self):
        """{moref: name} of every snapshot of the VM."""
        def read(stub):
            found = {}
            tree = self._vm(stub).snapshot
            pending = list(tree.rootSnapshotList) if tree else []
            while pending:
                node = pending.pop()
                found[node.snapshot._moId] = node.name
                pending.extend(node.childSnapshotList or ())
            return found
        return self._call(read)

    def changed_areas(self, file, since, snapshot, capacity_at_since=None):
        """[(start, length)] of ``file`` changed since changeId ``since``
        (FULL: every area in use), as of ``snapshot``, through the
        plugin's own paging and checks of QueryChangedDiskAreas
        (``capacity_at_since``: the disk's capacity at ``since``, if
        known).  ChangeIdRefused when only a full copy is right."""
        params = copy.copy(self.params)
        params.snapshot = snapshot
        params.changed_since = since
        params.changed_since_capacity = capacity_at_since
        disk = TrackedDisk(self.session, params, file)
        try:
            disk.look_up()
            return disk.areas(since).merged()
        except FullCopyNeeded as e:
            raise ChangeIdRefused("vSphere refused changeId %s of %s (%s)"
                                  % (printable(e.change_id), printable(file),
                                     printable(e.fault.text()))) from None
        except PluginError as e:
            raise VsphereError(str(e)) from None

    # -- changing ------------------------------------------------------------

    def enable_tracking(self):
        spec = self.vim.vm.ConfigSpec(changeTrackingEnabled=True)
        self._task("enabling change tracking", lambda stub: self._vm(
            stub).ReconfigVM_Task(spec))

    def create_snapshot(self, name, quiesce):
        """A snapshot without memory; its moref."""
        def start(stub):
            return self._vm(stub).CreateSnapshot_Task(
                name=name, description="vddkpy sync", memory=False,
                quiesce=quiesce)
        return self._task("creating snapshot %s" % printable(name),
                          start)._moId

    def remove_snapshot(self, moref):
        """Remove the snapshot and wait until its disks are consolidated."""
        self._task("removing snapshot %s" % printable(moref), lambda stub:
                   self.vim.vm.Snapshot(moref, stub).RemoveSnapshot_Task(
                       removeChildren=False))

    def _task(self, what, start):
        """Run a task to its end (bounded by task_timeout); its result."""
        task = self._call(start)
        deadline = time.monotonic() + self.task_timeout
        pause = TASK_POLL_SECONDS[0]
        while True:
            info = self._call(lambda stub: self.vim.Task(task._moId,
                                                         stub).info)
            if info.state == "success":
                return info.result
            if info.state == "error":
                raise VsphereError("vSphere %s: %s failed: %s" % (
                    self.session.address, what, printable(
                        getattr(info.error, "localizedMessage", None)
                        or _fault_text(info.error.fault))))
            if time.monotonic() > deadline:
                raise VsphereError("vSphere %s: %s did not end within %d s"
                                   % (self.session.address, what,
                                      self.task_timeout))
            time.sleep(pause)
            pause = min(pause * 2, TASK_POLL_SECONDS[1])
