"""Where a disk is copied to: an image in the destination directory (raw
or qcow2, made by the first round, never truncated or re-created), a block
device, or an NBD server named by a URI (``--target DISK=DEST``: both
exist already, at least as large as the disk, and are never resized)."""

import json
import os
import stat
import subprocess

from . import plan
from .copy import CopyError, NbdUri, image_server
from ..printable import printable


def target_for(directory, image_format, entry, new_name, given, kept_by):
    """The target of one disk: ``given`` (--target), else the state's
    ``entry``, else a new image ``new_name``.  ``kept_by``: the file
    ``entry`` comes from, as ``plan.keeper()`` names it."""
    if given is not None:
        kind = "nbd" if "://" in given else "device"
        if entry is not None and (entry["format"], entry["image"]) != \
                (kind, given):
            raise plan.PlanError(
                "%s keeps this disk in %s (%s), not in %s: move that "
                "copy away first" % (kept_by, printable(entry["image"]),
                                     entry["format"], printable(given)))
        return (NbdTarget if kind == "nbd" else DeviceTarget)(given)
    if entry is not None:
        if entry["format"] in ("nbd", "device"):
            raise plan.PlanError(
                "%s keeps this disk in %s: give --target DISK=%s"
                % (kept_by, printable(entry["image"]),
                   printable(entry["image"])))
        if entry["format"] != image_format:
            raise plan.PlanError("%s keeps this disk as %s, not %s"
                                 % (kept_by, entry["format"], image_format))
        return ImageTarget(directory, entry["image"], image_format)
    return ImageTarget(directory, new_name, image_format)


class ImageTarget:
    """An image file of the destination directory."""

    def __init__(self, directory, name, image_format):
        self.name = name
        self.kind = image_format
        self.path = os.path.join(directory, name)
        self.new = False            # made by this round: reads as zeros

    @property
    def shown(self):
        return self.path

    def check_new(self, capacity):
        if os.path.lexists(self.path):
            raise plan.PlanError("%s exists and is not in %s: move it away "
                                 "(an image is never overwritten)"
                                 % (printable(self.path), plan.STATE_NAME))

    def create(self, capacity):
        if self.kind == "qcow2":
            _run(["qemu-img", "create", "-q", "-f", "qcow2", self.path,
                  str(capacity)])
        else:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL |
                         os.O_CLOEXEC, 0o600)
            try:
                os.ftruncate(fd, capacity)
            finally:
                os.close(fd)
        self.new = True
        return plan.identity_of(os.lstat(self.path))

    def problem(self, entry, capacity, kept_by):
        """Why this is not the copy ``entry`` (of ``kept_by``) describes,
        or None."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return "is missing, but %s describes it" % kept_by
        except OSError as e:
            return "cannot be examined: %s" % e.strerror
        return plan.destination_problem(entry, st, self.size(), capacity,
                                        kept_by)

    def size(self):
        if self.kind == "qcow2":
            info = json.loads(_run(["qemu-img", "info", "-U",
                                    "--output=json", "-f", "qcow2",
                                    self.path]))
            return info["virtual-size"]
        return os.stat(self.path).st_size

    def grow(self, capacity):
        if self.size() >= capacity:
            return
        if self.kind == "qcow2":
            _run(["qemu-img", "resize", "-q", "-f", "qcow2", self.path,
                  str(capacity)])
        else:
            os.truncate(self.path, capacity)

    def open(self, log):
        return image_server(self.path, self.kind, log)

    def sync(self):
        _fsync(self.path)


class DeviceTarget(ImageTarget):
    """A block device (its content is unknown before the first copy)."""

    kind = "device"

    def __init__(self, path):
        self.name = self.path = path
        self.new = False

    def check_new(self, capacity):
        problem = self._device_problem(capacity)
        if problem:
            raise plan.PlanError("--target %s: %s" % (printable(self.path),
                                                      problem))

    def _device_problem(self, capacity):
        try:
            st = os.stat(self.path)
        except OSError as e:
            return e.strerror
        if not stat.S_ISBLK(st.st_mode):
            return "not a block device"
        if self.size() < capacity:
            return "holds %d bytes, the disk %d" % (self.size(), capacity)
        return None

    def create(self, capacity):
        return [0, os.stat(self.path).st_rdev]

    def problem(self, entry, capacity, kept_by):
        problem = self._device_problem(capacity)
        if problem is None and [0, os.stat(self.path).st_rdev] != \
                entry["identity"]:
            problem = "is not the device %s describes" % kept_by
        return problem

    def size(self):
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return os.lseek(fd, 0, os.SEEK_END)
        finally:
            os.close(fd)

    def grow(self, capacity):
        pass                        # problem() refused a smaller device

    def open(self, log):
        return image_server(self.path, "raw", log)


class NbdTarget(DeviceTarget):
    """An NBD server (its content is unknown before the first copy),
    named by its URI."""

    kind = "nbd"

    def _device_problem(self, capacity):
        try:
            size = self.size()
        except CopyError as e:
            return str(e)
        if size < capacity:
            return "holds %d bytes, the disk %d" % (size, capacity)
        return None

    def create(self, capacity):
        return [0, 0]

    def problem(self, entry, capacity, kept_by):
        return self._device_problem(capacity)

    def size(self):
        destination = NbdUri(self.path)
        try:
            return destination.handle.get_size()
        finally:
            destination.close()

    def open(self, log):
        return NbdUri(self.path)

    def sync(self):
        pass                        # the copy's flush went to the server


def _fsync(path):
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _run(argv):
    try:
        result = subprocess.run(argv, capture_output=True, text=True,
                                timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CopyError("%s: %s" % (argv[0], printable(str(e)))) from None
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or [
            "exit status %d" % result.returncode]
        raise CopyError("%s: %s" % (argv[0], printable(lines[-1])))
    return result.stdout
