"""One sync round: snapshot (of a running VM) -> the changes of every disk
copied onto its image -> images flushed and synced -> the new state
written atomically -> the snapshot removed, its task waited for.  Any
failure, or an interruption, leaves the state as it was and removes the
snapshot the round made; the next round repairs the copy."""

import concurrent.futures
import contextlib
import fcntl
import os
import shutil
import signal
import sys
import tempfile
import threading
import time

from . import plan
from .copy import (Cancelled, CopyError, Source, Transfer, close_all,
                   last_error, minimum_request)
from .targets import target_for
from .plan import PlanError
from .progress import Quiet
from .vsphere import ChangeIdRefused, Vm, VsphereError
from ..printable import printable

SNAPSHOT_PREFIX = "vddkpy-sync-"
LOCK_NAME = ".vddkpy-sync.lock"
MAX_DISKS_AT_ONCE = 4       # NFC: one connection per open disk, ~50 a host
TASK_TIMEOUT = 3600         # a snapshot removal may consolidate for long

# Parameters a round sets itself, or that make no sense for a copy.
_REFUSED = {"changed-since", "create", "create-size", "create-type",
            "create-adapter-type", "create-hwversion", "export", "snapshot",
            "stats-file", "single-link", "noreexec", "reexeced_",
            "cookie_"}


class SyncError(Exception):
    """The round failed; the state is unchanged (the message is one
    line)."""


class DiskResult:
    """One disk of a finished round."""

    def __init__(self, file, image, full, bytes_read, change_id, capacity):
        self.file = file
        self.image = image
        self.full = full
        self.bytes_read = bytes_read
        self.change_id = change_id
        self.capacity = capacity


def parse_params(args):
    """The plugin's KEY=VALUE parameters: (Params, the ones forwarded to
    the plugin as given, except the secrets: password=, cookie=)."""
    from ..params import Params
    params = Params()
    forwarded = []
    for arg in args:
        key, eq, value = arg.partition("=")
        if not eq:
            raise SyncError("expected KEY=VALUE, not %s" % printable(arg))
        if key in _REFUSED:
            why = (" (a round chooses its own snapshot and changes)"
                   if key in ("changed-since", "snapshot") else "")
            raise SyncError("%s= is not a sync parameter%s"
                            % (printable(key), why))
        try:
            params.set(key, value)
        except SystemExit:
            raise SyncError("parameter %s= refused (see above)"
                            % printable(key)) from None
        if key not in ("password", "cookie", "file"):   # Source's own
            forwarded.append(arg)
    for key in ("server", "thumbprint", "vm"):
        if getattr(params, key) is None:
            raise SyncError("sync needs %s= (and user=, password=): change "
                            "tracking is vSphere's" % key)
    if not params.vm.startswith("moref=") or params.vm == "moref=":
        raise SyncError("sync needs vm=moref=ID, not vm=%s"
                        % printable(params.vm))
    if params.user is None or params.password is None:
        # As the plugin (and upstream's): password= also with cookie=.
        raise SyncError("sync needs user= and password= (also with "
                        "cookie=, as the plugin)")
    try:
        import nbd  # noqa: F401
    except ImportError:
        raise SyncError("sync needs libnbd's Python module: apt install "
                        "python3-libnbd") from None
    return params, forwarded


class Round:
    """Everything one round needs and makes."""

    def __init__(self, args, to, image_format="raw", final=False,
                 enable_cbt=False, quiesce=False, progress=None,
                 max_disks=MAX_DISKS_AT_ONCE, task_timeout=TASK_TIMEOUT,
                 targets=None):
        if image_format not in plan.FORMATS:
            raise SyncError("--format must be raw or qcow2, not %s"
                            % printable(image_format))
        self.params, self.forwarded = parse_params(args)
        self.to = os.path.abspath(to)
        self.image_format = image_format
        self.targets = dict(targets or {})    # disk file -> device or URI
        self.final = final
        self.enable_cbt = enable_cbt
        self.quiesce = quiesce
        self.progress = progress or Quiet()
        self.max_disks = max_disks
        self.task_timeout = task_timeout
        self.cancel = threading.Event()
        self.snapshot = None
        self.vm = None
        self.private = None
        self.lock_fd = None
        self.new_images = {}        # made, not in the state file yet

    # -- the round -------------------------------------------------------

    def run(self):
        try:
            plan.check_directory(self.to)
            self._lock_directory()
            state = plan.read_state(self.to)
            self.vm = Vm(self.params, self.task_timeout)
            state = self._check_state(state)
            self._adopt_new_images(state)
            running = self._check_vm()
            self.private = tempfile.mkdtemp(prefix="vddkpy-sync-")
            if running:
                self._warn_leftovers()
                name = "%s%d" % (SNAPSHOT_PREFIX, int(time.time()))
                with _signals_held():
                    self.snapshot = self.vm.create_snapshot(name,
                                                            self.quiesce)
                self.progress.step("snapshot", moref=self.snapshot)
            results = self._copy_disks(state)
            self.progress.step("state", file=plan.STATE_NAME)
            return results
        except (PlanError, VsphereError, CopyError) as e:
            self.cancel.set()
            raise SyncError(str(e)) from None
        except BaseException:
            self.cancel.set()
            raise
        finally:
            self._clean_up()

    def _clean_up(self):
        """Remove the round's snapshot (waiting for the task), always."""
        failing = sys.exc_info()[1]         # the round's own failure, if any
        went_well = failing is None
        with _signals_held():
            try:
                self._remove_snapshot()
            except SyncError as e:
                went_well = False
                if isinstance(failing, (PlanError, VsphereError, CopyError,
                                        SyncError)):
                    raise SyncError("%s; then %s" % (failing, e)) from None
                raise
            finally:
                if self.vm is not None:
                    self._log_out(went_well)
                if self.private is not None:
                    shutil.rmtree(self.private, ignore_errors=True)
                if self.lock_fd is not None:
                    os.close(self.lock_fd)
                    self.lock_fd = None

    def _log_out(self, went_well):
        """A log-out that fails is a warning after a round that went well
        (after one that failed, the error line is the one to read)."""
        problem = self.vm.close()
        if problem and went_well:
            self._warn("%s: the session stays on vSphere until it times "
                       "out" % problem)

    def _remove_snapshot(self):
        if self.snapshot is None:
            return
        snapshot, self.snapshot = self.snapshot, None
        try:
            self.vm.remove_snapshot(snapshot)
        except VsphereError as e:
            raise SyncError("%s (remove snapshot %s by hand)"
                            % (e, printable(snapshot))) from None
        self.progress.step("snapshot-removed", moref=snapshot)

    def _lock_directory(self):
        """One round at a time in a directory (held until the process
        ends or the round's lock file is closed)."""
        path = os.path.join(self.to, LOCK_NAME)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC |
                     os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise PlanError("another vddkpy sync is running on %s"
                            % printable(self.to)) from None
        self.lock_fd = fd

    def _warn_leftovers(self):
        """Snapshots of earlier rounds that never ended (killed outright)
        are named, not removed: another round of this VM (another disk,
        another directory) may be running."""
        for moref, name in sorted(self.vm.snapshot_names().items()):
            if name.startswith(SNAPSHOT_PREFIX):
                self._warn("VM %s has snapshot %s (%s) of a round that did "
                           "not end: remove it unless another vddkpy sync "
                           "of this VM is running" % (
                               printable(self.params.vm), printable(moref),
                               printable(name)))

    def _check_state(self, state):
        server, vm = self.params.server, self.params.vm
        if state is None:
            return plan.new_state(server, vm)
        if (state["server"], state["vm"]) != (server, vm):
            raise PlanError("%s holds VM %s of %s, not %s of %s"
                            % (printable(self.to), printable(state["vm"]),
                               printable(state["server"]), printable(vm),
                               printable(server)))
        return state

    def _adopt_new_images(self, state):
        """Images made by a round that did not finish (recorded beside
        the state) are this directory's: the state takes them in memory,
        with no changeId (copied whole)."""
        record = plan.read_state(self.to, plan.NEW_IMAGES_NAME)
        if record is None:
            return
        self._check_state(record)           # another VM's: refused
        for file, entry in record["disks"].items():
            if file not in state["disks"]:
                self.new_images[file] = state["disks"][file] = dict(
                    entry, change_id=None)

    def _check_vm(self):
        """Whether the VM runs (then the round needs a snapshot); change
        tracking on (or turned on with --enable-cbt)."""
        power = self.vm.power_state()
        if self.final and power != "poweredOff":
            raise PlanError("--final: VM %s is %s: shut it down first (the "
                            "last round copies a VM that no longer writes)"
                            % (printable(self.params.vm), printable(power)))
        if not self.vm.tracking_enabled():
            if not self.enable_cbt:
                raise PlanError("change tracking is off on VM %s: run again "
                                "with --enable-cbt (turns it on; the next "
                                "round copies every disk whole)"
                                % printable(self.params.vm))
            self.vm.enable_tracking()
            self._warn("change tracking turned on for VM %s"
                       % printable(self.params.vm))
        return power != "poweredOff"       # suspended: disks held too

    # -- disks ---------------------------------------------------------------

    def _chosen_disks(self):
        disks = self.vm.disks(self.snapshot)
        if self.params.file is not None:
            disks = [d for d in disks if d.file == self.params.file]
            if not disks:
                raise PlanError("VM %s has no disk %s" % (
                    printable(self.params.vm), printable(self.params.file)))
        if not disks:
            raise PlanError("VM %s has no disk" % printable(self.params.vm))
        for disk in disks:
            if disk.change_id is None:
                raise PlanError("change tracking is not active on %s yet "
                                "(it starts at the VM's next snapshot or "
                                "power-on): run again" % printable(disk.file))
        return disks

    def _copy_disks(self, state):
        disks = self._chosen_disks()
        unknown = set(self.targets) - {d.file for d in disks}
        if unknown:
            raise PlanError("--target: VM %s has no disk %s" % (
                printable(self.params.vm), printable(sorted(unknown)[0])))
        names = plan.image_names(
            [d.file for d in disks if d.file not in state["disks"]],
            self.image_format,
            taken={e["image"] for e in state["disks"].values()})
        jobs = [self._prepare(state, disk, names.get(disk.file))
                for disk in disks]
        self._register_new(state, jobs)
        jobs = [(disk, p, target, self._areas(disk, p, target))
                for disk, p, target in jobs]
        total = sum(length for *_, (areas, _) in jobs
                    for _, length in areas)
        self.progress.start_copy(total)
        try:
            results = self._run_jobs(jobs)
        finally:
            self.progress.end_copy()
        for _, _, target, _ in jobs:
            target.sync()
        plan.fsync_directory(self.to)
        for result in results:
            entry = state["disks"][result.file]
            entry["change_id"] = result.change_id
            entry["capacity"] = result.capacity
        plan.write_state(self.to, state)
        plan.remove_record(self.to, plan.NEW_IMAGES_NAME)
        return results

    def _prepare(self, state, disk, new_name):
        """(disk, its plan, its target): the target checked (new: that
        nothing is overwritten; known: that it is the state's copy) and
        grown with the disk."""
        entry = state["disks"].get(disk.file)
        kept_by = plan.keeper(plan.NEW_IMAGES_NAME if disk.file in
                              self.new_images else plan.STATE_NAME)
        try:
            target = target_for(self.to, self.image_format, entry, new_name,
                                self.targets.get(disk.file), kept_by)
        except PlanError as e:
            raise PlanError("%s: %s" % (printable(disk.file), e)) from None
        p = plan.disk_plan(disk.file, entry, disk.capacity, disk.change_id,
                           target.name)
        if entry is None:
            target.check_new(disk.capacity)
            return disk, p, target
        problem = target.problem(entry, disk.capacity, kept_by)
        if problem:
            raise PlanError("%s %s: refusing to write it" % (
                printable(target.shown), problem))
        if p.warning:
            self._warn(p.warning)
        if p.grown_from is not None:
            target.grow(disk.capacity)
        return disk, p, target

    def _register_new(self, state, jobs):
        """New images are made and recorded beside the state (which only
        a complete round changes) before a byte is copied, so that a
        round that fails is repaired by the next, never refused (each
        recorded as soon as it exists)."""
        new = [(d, p, t) for d, p, t in jobs if d.file not in state["disks"]]
        for disk, p, target in new:
            identity = target.create(disk.capacity)
            self.new_images[disk.file] = state["disks"][disk.file] = {
                "image": target.name, "format": target.kind,
                "capacity": disk.capacity, "change_id": None,
                "identity": identity}
            plan.write_state(self.to, dict(state, disks=self.new_images),
                             plan.NEW_IMAGES_NAME)

    def _warn(self, message):
        """A warning line on stderr (and a step for orchestrators)."""
        self.progress.warning(message)

    def _areas(self, disk, p, target):
        """(areas to copy, areas to zero) of one disk."""
        since = p.since
        capacity_at_since = p.capacity if p.grown_from is None \
            else p.grown_from
        try:
            areas = self.vm.changed_areas(disk.file, since, self.snapshot,
                                          capacity_at_since)
        except ChangeIdRefused as e:
            self._warn("%s: copying it whole" % e)
            since = p.since = plan.FULL
            areas = self.vm.changed_areas(disk.file, since, self.snapshot)
        if p.grown_from is not None:
            areas.append((p.grown_from, disk.capacity - p.grown_from))
        areas = plan.normalised(areas, disk.capacity)
        zeros = []
        if p.full and not target.new:
            # Onto an earlier copy: what is not in use now reads as zeros.
            zeros = plan.complement(areas, disk.capacity)
        return areas, zeros

    def _run_jobs(self, jobs):
        """Every disk's copy, at most max_disks at once; the first failure
        cancels the others and is the round's."""
        workers = max(1, min(self.max_disks, len(jobs)))
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(self._copy_one, *job) for job in jobs]
            try:
                concurrent.futures.wait(
                    futures, return_when=concurrent.futures.FIRST_EXCEPTION)
            finally:
                if any(f.done() and f.exception() for f in futures) or \
                        not all(f.done() for f in futures):
                    self.cancel.set()
        failures = [f.exception() for f in futures
                    if f.exception() is not None
                    and not isinstance(f.exception(), Cancelled)]
        if failures:
            raise failures[0]
        return [f.result() for f in futures]

    def _copy_one(self, disk, p, target, areas_and_zeros):
        areas, zeros = areas_and_zeros
        import nbd
        tag = "%d" % id(p)
        source_log = os.path.join(self.private, tag + ".source.log")
        destination_log = os.path.join(self.private, tag + ".image.log")
        path = target.shown
        source = destination = None
        try:
            source = Source(self.forwarded, disk.file, self.snapshot,
                            source_log, self.params.password,
                            self.params.cookie)
            if source.size != disk.capacity:
                raise CopyError("the plugin serves %s as %d bytes, vSphere "
                                "says %d" % (printable(disk.file),
                                             source.size, disk.capacity))
            destination = target.open(destination_log)
            step = minimum_request(source.handle)
            areas = plan.normalised(areas, disk.capacity, step)
            transfer = Transfer(source.handle, destination.handle,
                                self.progress.advance, self.cancel.is_set)
            transfer.run(areas, zeros)
        except nbd.Error as e:
            raise CopyError("copying %s: %s" % (printable(disk.file), (
                last_error(source_log) or last_error(destination_log)
                or printable(str(e))))) from None
        finally:
            # Also after the last byte: a server that then fails fails
            # the copy (the changes are in, but not known to be right).
            problem = close_all(source, destination)
        if problem:
            raise CopyError(problem)
        self.progress.step("copied", file=disk.file, image=path,
                           full=p.full, bytes=transfer.bytes_read)
        return DiskResult(disk.file, path, p.full, transfer.bytes_read,
                          disk.change_id, disk.capacity)


@contextlib.contextmanager
def _signals_held():
    """SIGINT and SIGTERM wait until the block ends (a snapshot being made
    or removed is never abandoned half way); they then interrupt."""
    held = (signal.SIGINT, signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)
