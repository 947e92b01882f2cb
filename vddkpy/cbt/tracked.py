"""A virtual disk's change tracking on vSphere: which disk of vm= (or of
its snapshot=) file= is, the changeId to give next time, and its changed
areas through QueryChangedDiskAreas, each call timed for the statistics.

QueryChangedDiskAreas is sent as SOAP of our own and its answer read as it
streams (``answer``), every answer checked (``areas.Pass``); the rest goes
through pyvmomi.  Every text that comes from vSphere or from a client or
operator is escaped (``printable``) where it enters a message.
"""

import time

from . import areas as changed
from ..errors import PluginError
from ..nbdkit.compat import debug, debug_flags
from ..printable import printable
from ..vsphere import pyvmomi_problem

CALL = changed.CALL
ENABLE_HINT = ("enable it (ReconfigVM_Task with changeTrackingEnabled=true, "
               "or the VM option ctkEnabled=TRUE), take a snapshot, and "
               "make a full copy with changed-since=*")
FULL_COPY = ("a full copy is needed: make one with changed-since=* and use "
             "the changeId it reports")

NO_SNAPSHOT_HINT = (" (the changes of a running VM's disk can only be read "
                    "from a snapshot: give snapshot=)")


# ESXi's message key for a disk whose changes are not tracked.
NOT_TRACKED_KEY = "vim.hostd.vmsvc.cbt.noTrack"

_REQUEST = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/'
    'envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>'
    '<QueryChangedDiskAreas xmlns="urn:vim25">'
    '<_this type="VirtualMachine">%(vm)s</_this>%(snapshot)s'
    '<deviceKey>%(key)d</deviceKey><startOffset>%(offset)d</startOffset>'
    '<changeId>%(change_id)s</changeId></QueryChangedDiskAreas>'
    '</soapenv:Body></soapenv:Envelope>')


def _xml_text(text):
    """``text`` as the content of an XML element."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class NotFound(PluginError):
    """vSphere has no such VM or snapshot (``vm=``, ``snapshot=``)."""


class NoSuchDisk(PluginError):
    """The VM (or snapshot) has no disk backed by ``file=``."""


class TrackingOff(PluginError):
    """Change tracking is off for the disk: ``saw`` says where, ``fix``
    how to turn it on."""

    def __init__(self, saw):
        super().__init__("changed-since: %s: %s" % (saw, ENABLE_HINT))
        self.saw = saw
        self.fix = ENABLE_HINT


class FullCopyNeeded(PluginError):
    """vSphere cannot give the changes since ``change_id``: it refused the
    changeId (not one of the disk's, or expired), or answered it with a
    FileFault (ESXi's answer once change tracking was reset).  Only a full
    copy is right, never an empty delta; ``fault`` is vSphere's answer
    (``answer.Fault``)."""

    def __init__(self, message, change_id, fault):
        super().__init__(message)
        self.change_id = change_id
        self.fault = fault


def vm_moref(vm):
    """The managed object id of vm=moref=ID, or None."""
    prefix, _, moref = (vm or "").partition("=")
    return moref if prefix == "moref" and moref else None


def capacity_problem(change_id, base, capacity):
    """Why a delta since ``change_id``, taken when the disk had ``base``
    bytes (None: unknown), cannot be served for a disk of ``capacity``
    bytes, or None (a grown disk's new tail is served as changed)."""
    if base is not None and base > capacity:
        return ("changed-since=%s: the disk has shrunk from %d to %d bytes "
                "since this changeId: %s"
                % (printable(change_id), base, capacity, FULL_COPY))
    return None


class TrackedDisk:
    """file= of vm= as of snapshot=, as vSphere's change tracking sees it."""

    def __init__(self, vsphere, params, filename, stats=None):
        self.vsphere = vsphere
        self.params = params
        self.filename = filename
        self.shown = printable(filename)
        self.stats = stats
        self.device_key = self.capacity = self.next_change_id = None
        self.base_capacity = None       # the capacity at changed-since=
        self._where = "VM %s%s" % (
            printable(params.vm), "" if params.snapshot is None
            else " snapshot %s" % printable(params.snapshot))

    def look_up(self):
        """The disk's key, capacity and changeId in snapshot=, and its
        capacity when changed-since= was its changeId: as given
        (changed-since-capacity=), or from the VM's snapshot that has
        that changeId, if one is left."""
        self.vsphere.call(self._look_up)
        if self.params.changed_since == changed.ALL:
            return
        self.base_capacity = self.params.changed_since_capacity
        if self.base_capacity is None:
            self.base_capacity = self.vsphere.call(self._capacity_at,
                                                   self.params.changed_since)

    def _objects(self, stub):
        vim = self.vsphere.vim
        vm = vim.VirtualMachine(vm_moref(self.params.vm), stub)
        snapshot = None if self.params.snapshot is None \
            else vim.vm.Snapshot(self.params.snapshot, stub)
        return vm, snapshot

    def _disks(self, config):
        vim = self.vsphere.vim
        return [d for d in config.hardware.device
                if isinstance(d, vim.vm.device.VirtualDisk)]

    def _look_up(self, stub):
        vm, snapshot = self._objects(stub)
        try:
            owner = vm if snapshot is None else snapshot
            disks = self._disks(owner.config)
        except self.vsphere.vmodl.fault.ManagedObjectNotFound:
            raise NotFound("changed-since: vSphere %s has no %s"
                           % (self.vsphere.address, self._where)) from None
        disk = next((d for d in disks
                     if getattr(d.backing, "fileName", None) == self.filename),
                    None)
        if disk is None:
            raise NoSuchDisk("changed-since: %s has no disk whose backing "
                             "file is %s (its disks: %s)"
                             % (self._where, self.shown, ", ".join(
                                 printable(getattr(d.backing, "fileName",
                                                   None) or "?")
                                 for d in disks) or "none"))
        self.next_change_id = getattr(disk.backing, "changeId", None)
        if not self.next_change_id:
            raise self._not_enabled()
        self.device_key = disk.key
        self.capacity = disk.capacityInBytes or disk.capacityInKB * 1024

    def _capacity_at(self, stub, change_id):
        """The disk's capacity in the VM's snapshot whose changeId is
        ``change_id``, or None when no snapshot has it any more."""
        vm, _ = self._objects(stub)
        pending = list(getattr(vm.snapshot, "rootSnapshotList", None) or ())
        while pending:
            tree = pending.pop()
            pending.extend(tree.childSnapshotList or ())
            for disk in self._disks(tree.snapshot.config):
                if disk.key == self.device_key and \
                        getattr(disk.backing, "changeId", None) == change_id:
                    return disk.capacityInBytes or disk.capacityInKB * 1024
        return None

    def _not_enabled(self):
        return TrackingOff("changed block tracking is not enabled on %s of "
                           "%s" % (self.shown, self._where))

    def areas(self, change_id, alignment=changed.SECTOR_SIZE):
        """The complete, checked ``Pass`` of changed areas since
        ``change_id`` (or every area in use for "*") over the whole disk,
        merged at ``alignment``."""
        problem = capacity_problem(change_id, self.base_capacity,
                                   self.capacity)
        if problem:
            raise PluginError(problem)
        # Imported before collect's threads ask for their ranges (Python
        # 3.9 fails a "from ... import" of a module that another thread is
        # still importing), and not at module level: the process that only
        # re-executes nbdkit imports this module too.
        from . import answer  # noqa: F401
        return changed.collect(lambda pass_: self.vsphere.call(
            self._query, pass_, change_id), self.capacity, alignment)

    def _query(self, stub, pass_, change_id):
        """One QueryChangedDiskAreas call at pass_.offset, its answer fed
        to ``pass_``."""
        from .answer import AnswerReader        # imported by areas()
        from ..vsphere.session import UnexpectedStatus
        offset = pass_.offset
        if debug_flags.verbose:
            debug("vSphere call: %s (deviceKey %d, startOffset %d, changeId "
                  "%s)" % (CALL, self.device_key, offset,
                           printable(change_id)))
        snapshot = "" if self.params.snapshot is None else (
            '<snapshot type="VirtualMachineSnapshot">%s</snapshot>'
            % _xml_text(self.params.snapshot))
        body = _REQUEST % {"vm": _xml_text(vm_moref(self.params.vm)),
                           "snapshot": snapshot, "key": self.device_key,
                           "offset": offset, "change_id": _xml_text(change_id)}
        reader = AnswerReader(pass_)
        started = time.monotonic_ns()
        try:
            self.vsphere.post(stub, body.encode(), reader.feed)
            fault = reader.close()
        except UnexpectedStatus as e:
            pass_.refuse("is %s, not SOAP" % e.text())
        finally:
            if self.stats is not None:
                self.stats.add(CALL, (time.monotonic_ns() - started) // 1000)
        if fault is not None:
            self._raise(fault, change_id)

    def _raise(self, fault, change_id):
        if fault.name == "NotAuthenticated":
            from ..vsphere.session import SessionEnded
            raise SessionEnded()
        if fault.name == "ManagedObjectNotFound":
            raise NotFound("changed-since: vSphere %s has no %s"
                           % (self.vsphere.address, self._where))
        if fault.name == "InvalidArgument" and change_id == changed.ALL:
            raise PluginError("changed-since=*: vSphere refused %s for %s "
                              "(%s)" % (CALL, self.shown,
                                        printable(fault.text())))
        if fault.name == "InvalidArgument":
            raise FullCopyNeeded(self._refused(change_id, fault), change_id,
                                 fault)
        if fault.name == "FileFault" and NOT_TRACKED_KEY in fault.keys:
            raise self._not_enabled()
        message = "changed-since: vSphere %s: %s: %s" % (
            CALL, self.shown, printable(fault.text()))
        if fault.name == "FileFault" and self.params.snapshot is None:
            message += NO_SNAPSHOT_HINT
        elif fault.name == "FileFault" and change_id != changed.ALL:
            raise FullCopyNeeded(
                message + " (change tracking may have been reset since "
                "changeId %s): %s" % (printable(change_id), FULL_COPY),
                change_id, fault)
        raise PluginError(message)

    def _refused(self, change_id, fault):
        return ("changed-since=%s: vSphere refused this changeId for %s (%s): "
                "it is not one of this disk's or has expired (change "
                "tracking was reset): %s"
                % (printable(change_id), self.shown,
                   printable(fault.text()), FULL_COPY))


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
               "prints it)" % printable(params.server))
    if params.server is not None and vm_moref(params.vm) is None:
        yield "changed-since needs vm=moref=ID, not vm=%s" % printable(
            params.vm or "")
    if params.single_link:
        yield ("changed-since cannot be used with single-link=true (vSphere "
               "tracks the whole disk, not one link)")
    if not readonly:
        yield ("changed-since serves a read-only export: run nbdkit with -r "
               "(--readonly)")
    problem = pyvmomi_problem()
    if problem:
        yield problem


def changed_pass(disk):
    """The complete, checked Pass of changed areas the looked-up
    TrackedDisk ``disk`` serves: since changed-since=, widened for a
    delta (not "*")."""
    change_id = disk.params.changed_since
    alignment = changed.SECTOR_SIZE if change_id == changed.ALL \
        else changed.DELTA_ALIGNMENT
    return disk.areas(change_id, alignment)


def served_map(disk, pass_, size):
    """The DiskMap a connection serves for changed-since= on a disk of
    ``size`` bytes (VDDK's), from the looked-up TrackedDisk ``disk`` and
    its ``changed_pass``: the changed areas as data, the rest as zero
    holes.  Bytes past what vSphere reports on (a capacity below VDDK's,
    a disk grown since the changeId) count as changed: unknown is never
    served as unchanged."""
    begins, ends = pass_.bounds()
    tail = min(disk.capacity, size)
    if disk.base_capacity is not None:
        tail = min(tail, disk.base_capacity)
    if tail < size:
        begins, ends = changed.with_tail(
            begins, ends, tail // pass_.alignment * pass_.alignment, size)
    return changed.disk_map(begins, ends, size)
