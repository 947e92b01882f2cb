"""A virtual disk's change tracking on vSphere: which disk of vm= (or of
its snapshot=) file= is, the changeId to give next time, and its changed
areas through QueryChangedDiskAreas, each call timed for the statistics."""

import time

from . import areas as changed
from ..errors import PluginError
from ..printable import printable
from ..nbdkit.compat import debug, debug_flags
from ..vsphere.session import fault_text, import_pyvmomi

CALL = "QueryChangedDiskAreas"
ENABLE_HINT = ("enable it (ReconfigVM_Task with changeTrackingEnabled=true, "
               "or the VM option ctkEnabled=TRUE), take a snapshot, and "
               "make a full copy with changed-since=*")

NO_SNAPSHOT_HINT = (" (the changes of a running VM's disk can only be read "
                    "from a snapshot: give snapshot=)")


# ESXi's message key for a disk whose changes are not tracked.
NOT_TRACKED_KEY = "vim.hostd.vmsvc.cbt.noTrack"


def _not_tracked(fault):
    return any(getattr(m, "key", None) == NOT_TRACKED_KEY
               for m in getattr(fault, "faultMessage", None) or ())


def vm_moref(vm):
    """The managed object id of vm=moref=ID, or None."""
    prefix, _, moref = (vm or "").partition("=")
    return moref if prefix == "moref" and moref else None


class TrackedDisk:
    """file= of vm= as of snapshot=, as vSphere's change tracking sees it."""

    def __init__(self, vsphere, params, filename, stats=None):
        self.vsphere = vsphere
        self.params = params
        self.filename = filename
        self.stats = stats
        self.device_key = self.capacity = self.next_change_id = None
        self._where = "VM %s%s" % (params.vm, "" if params.snapshot is None
                                   else " snapshot %s" % params.snapshot)

    def look_up(self):
        self.vsphere.call(self._look_up)
        debug("changed-since: changeId to give next time for %s: %s"
              % (self.filename, self.next_change_id))
        if self.stats is not None:
            self.stats.note_change_id(self.filename, self.next_change_id)

    def _objects(self, stub):
        vim = self.vsphere.vim
        vm = vim.VirtualMachine(vm_moref(self.params.vm), stub)
        snapshot = None if self.params.snapshot is None \
            else vim.vm.Snapshot(self.params.snapshot, stub)
        return vm, snapshot

    def _look_up(self, stub):
        vim = self.vsphere.vim
        vm, snapshot = self._objects(stub)
        try:
            owner = vm if snapshot is None else snapshot
            devices = owner.config.hardware.device
        except self.vsphere.vmodl.fault.ManagedObjectNotFound:
            raise PluginError("changed-since: vSphere %s has no %s"
                              % (self.vsphere.address, self._where)) \
                from None
        disks = [d for d in devices
                 if isinstance(d, vim.vm.device.VirtualDisk)]
        disk = next((d for d in disks
                     if getattr(d.backing, "fileName", None) == self.filename),
                    None)
        if disk is None:
            raise PluginError("changed-since: %s has no disk whose backing "
                              "file is %s (its disks: %s)"
                              % (self._where, self.filename, ", ".join(
                                  getattr(d.backing, "fileName", "?")
                                  for d in disks) or "none"))
        self.next_change_id = getattr(disk.backing, "changeId", None)
        if not self.next_change_id:
            raise PluginError(self._not_enabled())
        self.device_key = disk.key
        self.capacity = disk.capacityInBytes or disk.capacityInKB * 1024

    def _not_enabled(self):
        return ("changed-since: changed block tracking is not enabled on %s "
                "of %s: %s" % (self.filename, self._where, ENABLE_HINT))

    def areas(self, change_id):
        """The raw changed areas since ``change_id`` (or every area in use
        for "*"), over the whole disk."""
        return changed.collect(lambda offset: self.vsphere.call(
            self._query, offset, change_id), self.capacity)

    def _query(self, stub, offset, change_id):
        vm, snapshot = self._objects(stub)
        if debug_flags.verbose:
            debug("vSphere call: %s (deviceKey %d, startOffset %d, changeId "
                  "%s)" % (CALL, self.device_key, offset, change_id))
        started = time.monotonic_ns()
        try:
            info = vm.QueryChangedDiskAreas(
                snapshot=snapshot, deviceKey=self.device_key,
                startOffset=offset, changeId=change_id)
        except self.vsphere.vmodl.fault.InvalidArgument as e:
            raise PluginError(self._refused(change_id, e)) from None
        except self.vsphere.vim.fault.FileFault as e:
            if _not_tracked(e):
                raise PluginError(self._not_enabled()) from None
            raise PluginError("changed-since: vSphere %s: %s: %s%s"
                              % (CALL, self.filename, fault_text(e),
                                 "" if snapshot is not None
                                 else NO_SNAPSHOT_HINT)) \
                from None
        except self.vsphere.vmodl.MethodFault as e:
            raise PluginError("changed-since: vSphere %s: %s: %s"
                              % (CALL, self.filename, fault_text(e))) \
                from None
        finally:
            if self.stats is not None:
                self.stats.add(CALL, (time.monotonic_ns() - started) // 1000)
        return info.startOffset, info.length, [
            (area.start, area.length) for area in info.changedArea or ()]

    def _refused(self, change_id, fault):
        if change_id == changed.ALL:
            return ("changed-since=*: vSphere refused %s for %s (%s)"
                    % (CALL, self.filename, fault_text(fault)))
        return ("changed-since=%s: vSphere refused this changeId for %s (%s): "
                "it is not one of this disk's or has expired (change "
                "tracking was reset): make a full copy with changed-since=* "
                "and use the changeId it reports" % (change_id, self.filename,
                                                     fault_text(fault)))


def parameter_problems(params, readonly):
    """What stops changed-since= from working with these parameters
    (``readonly``: nbdkit's -r), checked at start-up."""
    problem = changed.validate(params.changed_since)
    if problem:
        yield problem
    if params.server is None:
        yield ("changed-since needs a vSphere server (server=, user=, "
               "password= or cookie=, thumbprint=, vm=moref=): changed block "
               "tracking is vSphere's")
    elif params.thumbprint is None:
        yield ("changed-since needs thumbprint= (the vSphere server's "
               "certificate is checked against it; vddkpy-thumbprint %s "
               "prints it)" % params.server)
    if params.server is not None and vm_moref(params.vm) is None:
        yield "changed-since needs vm=moref=ID, not vm=%s" % printable(
            "%s" % params.vm)
    if params.single_link:
        yield ("changed-since cannot be used with single-link=true (vSphere "
               "tracks the whole disk, not one link)")
    if not readonly:
        yield ("changed-since serves a read-only export: run nbdkit with -r "
               "(--readonly)")
    try:
        import_pyvmomi()
    except PluginError as e:
        yield str(e)


def served_map(vsphere, params, filename, size, stats=None):
    """The DiskMap a connection serves for changed-since=: the changed
    areas (widened for a delta) as data, the rest as zero holes.  Bytes
    past what vSphere reports on (a capacity below VDDK's) count as
    changed: unknown is never served as unchanged."""
    disk = TrackedDisk(vsphere, params, filename, stats)
    disk.look_up()
    areas = disk.areas(params.changed_since)
    if disk.capacity < size:
        areas.append((disk.capacity, size - disk.capacity))
    alignment = changed.SECTOR_SIZE if params.changed_since == changed.ALL \
        else changed.DELTA_ALIGNMENT
    return changed.disk_map(changed.merged(areas, size, alignment), size)
