"""What a sync round does, decided without a server: the state file (its
format, reading it safely, writing it atomically), the image each disk
goes to, whether a disk needs a full copy or its changes, and whether a
destination still is the copy the state describes.

The state file (``vddkpy-sync.json`` in the destination directory) says,
for one VM, which image holds which disk and up to which changeId it is
complete.  A disk whose ``change_id`` is null has an image that is not
known to be complete: the next round copies it whole.  Images a round
made are recorded beside it (``.vddkpy-sync.new-images.json``, the same
format) until the state takes them: a round that fails leaves the state
as it was, and the next one recognises those images as its own.
"""

import errno
import json
import os
import re
import stat
import tempfile

from ..printable import printable

STATE_NAME = "vddkpy-sync.json"
NEW_IMAGES_NAME = ".vddkpy-sync.new-images.json"
FORMAT = "vddkpy-sync/1"
FORMATS = ("raw", "qcow2")             # images in the directory
TARGET_KINDS = ("device", "nbd")       # --target DISK=DEST
_MAX_STATE = 1024 * 1024
SECTOR = 512


class PlanError(Exception):
    """The round cannot go on (the message is one line for the user)."""


# -- the state file ---------------------------------------------------------

def new_state(server, vm):
    return {"format": FORMAT, "server": server, "vm": vm, "disks": {}}


def read_state(directory, name=STATE_NAME):
    """The state of ``directory`` (or its record ``name``), or None when
    it has none."""
    path = os.path.join(directory, name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise PlanError("%s: %s" % (printable(path), e.strerror)) from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise PlanError("%s: not a regular file" % printable(path))
        text = f.read(_MAX_STATE + 1)
    try:
        state = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        state = None
    problem = state_problem(state) if len(text) <= _MAX_STATE \
        else "too large"
    if problem:
        raise PlanError("%s is not a vddkpy sync state (%s): it was not "
                        "written by vddkpy sync, or was damaged"
                        % (printable(path), problem))
    return state


def state_problem(state):
    """What is wrong with a parsed state document, or None."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        return "no format %s" % FORMAT
    if not all(isinstance(state.get(k), str) for k in ("server", "vm")):
        return "server and vm must be strings"
    disks = state.get("disks")
    if not isinstance(disks, dict):
        return "disks must be an object"
    for name, disk in disks.items():
        problem = _disk_problem(disk)
        if problem:
            return "disk %s: %s" % (printable(name), problem)
    return None


def _disk_problem(disk):
    if not isinstance(disk, dict):
        return "not an object"
    kind = disk.get("format")
    if kind not in FORMATS + TARGET_KINDS:
        return "format must be one of %s" % ", ".join(FORMATS + TARGET_KINDS)
    image = disk.get("image")
    if not isinstance(image, str) or not (
            safe_image_name(image) if kind in FORMATS else
            image.startswith("/") if kind == "device" else "://" in image):
        return "image must be a plain file name (a device: its path, NBD: " \
            "a URI)"
    capacity = disk.get("capacity")
    if not isinstance(capacity, int) or isinstance(capacity, bool) or \
            capacity <= 0 or capacity % SECTOR:
        return "capacity must be a positive multiple of %d" % SECTOR
    if disk.get("change_id") is not None and \
            not isinstance(disk.get("change_id"), str):
        return "change_id must be a string or null"
    identity = disk.get("identity")
    if not (isinstance(identity, list) and len(identity) == 2 and
            all(isinstance(n, int) for n in identity)):
        return "identity must be [device, inode]"
    return None


def write_state(directory, state, name=STATE_NAME):
    """Replace the state file (or record ``name``) atomically: a new file,
    written and synced, takes the name, and the directory is synced."""
    data = (json.dumps(state, indent=2, sort_keys=True) + "\n").encode()
    fd, tmp = tempfile.mkstemp(prefix=".vddkpy-sync-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(directory, name))
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_directory(directory)


def remove_record(directory, name):
    try:
        os.unlink(os.path.join(directory, name))
    except FileNotFoundError:
        pass


def fsync_directory(directory):
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- images ------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def safe_image_name(name):
    """A plain, visible file name that is not the state's (the lock file
    and temporary files start with a dot)."""
    return name not in ("", ".", "..") and "/" not in name and \
        not name.startswith(".") and name != STATE_NAME


def image_names(files, image_format, taken=()):
    """{backing fileName: image file name}: the disk's own name with the
    format's extension ("[ds] vm/vm_1.vmdk" -> "vm_1.raw"); disks of the
    same name in other folders or datastores, or whose name another disk
    has (``taken``: images of the state), get those in front
    ("ds-vm-vm_1.raw")."""
    short = {f: _plain(_disk_path(f)[-1:]) for f in files}
    names = {}
    for f in files:
        clash = list(short.values()).count(short[f]) > 1 or \
            "%s.%s" % (short[f], image_format) in taken
        name = _plain(_disk_path(f)) if clash else short[f]
        names[f] = "%s.%s" % (name, image_format)
    return names


def _disk_path(file):
    """"[ds] a/b.vmdk" -> ["ds", "a", "b"]."""
    datastore, rel = "", file
    if file.startswith("[") and "]" in file:
        datastore, _, rel = file[1:].partition("]")
    rel = re.sub(r"\.vmdk$", "", rel.strip())
    return [p for p in [datastore.strip()] + rel.split("/") if p]


def _plain(parts):
    return _UNSAFE.sub("_", "-".join(parts)).strip("._-") or "disk"


def identity_of(st):
    """What tells an image file from another one that took its name."""
    return [st.st_dev, st.st_ino]


def keeper(name):
    """How a refusal names the file a disk's entry comes from: the state
    (STATE_NAME), or the record of new images (NEW_IMAGES_NAME)."""
    if name == NEW_IMAGES_NAME:
        return "%s (images made by a round that did not finish)" % name
    return "the state %s" % name


def destination_problem(entry, st, virtual_size, capacity, kept_by):
    """Why the existing image (``st``: its lstat, ``virtual_size``: the
    disk size it holds) is not the copy ``entry`` describes, or None.
    ``capacity``: the disk's size now (an image already grown to it by a
    round that did not finish is the copy); ``kept_by``: the file
    ``entry`` comes from, as keeper() names it."""
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if identity_of(st) != entry["identity"]:
        return ("is not the file %s describes (it was replaced or copied)"
                % kept_by)
    if virtual_size not in (entry["capacity"], capacity) or \
            virtual_size < entry["capacity"]:
        return ("holds %d bytes, %s says %d"
                % (virtual_size, kept_by, entry["capacity"]))
    return None


# -- what a disk needs ----------------------------------------------------

FULL = "*"


class DiskPlan:
    """One disk's part of a round: the changeId to ask changes since
    (FULL: every area in use), the capacity its image must have, and the
    tail a grown disk adds (copied whole)."""

    def __init__(self, file, image, since, capacity, grown_from=None,
                 warning=None):
        self.file = file
        self.image = image
        self.since = since
        self.capacity = capacity
        self.grown_from = grown_from
        self.warning = warning

    @property
    def full(self):
        return self.since == FULL


def tracking_id(change_id):
    """The tracking id part of vSphere's "ID/SEQUENCE" changeId."""
    return change_id.rpartition("/")[0] if change_id else ""


def disk_plan(file, entry, capacity, current_change_id, image):
    """How to bring ``entry`` (the state's, or None: a new image) up to
    the disk as it is now (``capacity`` bytes, ``current_change_id``)."""
    if entry is None:
        return DiskPlan(file, image, FULL, capacity)
    if capacity < entry["capacity"]:
        raise PlanError(
            "%s shrank from %d to %d bytes: its image %s cannot shrink; "
            "move it away to make a new full copy"
            % (printable(file), entry["capacity"], capacity,
               printable(entry["image"])))
    grown_from = entry["capacity"] if capacity > entry["capacity"] else None
    since = entry.get("change_id")
    if since is None:
        return DiskPlan(file, image, FULL, capacity, grown_from)
    if tracking_id(since) != tracking_id(current_change_id):
        return DiskPlan(file, image, FULL, capacity, grown_from, warning=(
            "change tracking of %s was reset (changeId %s is not one of its "
            "current ones): copying it whole" % (printable(file),
                                                 printable(since))))
    return DiskPlan(file, image, since, capacity, grown_from)


# -- areas -------------------------------------------------------------------

def normalised(areas, size, alignment=SECTOR):
    """``areas`` [(start, length)] sorted, widened to ``alignment``
    (the source's smallest request), clipped to the disk, merged."""
    result = []
    for start, length in sorted(areas):
        if length <= 0:
            continue
        begin = max(0, start // alignment * alignment)
        end = min(size, -(-(start + length) // alignment) * alignment)
        if begin >= end:
            continue
        if result and begin <= result[-1][1]:
            result[-1][1] = max(result[-1][1], end)
        else:
            result.append([begin, end])
    return [(begin, end - begin) for begin, end in result]


def complement(areas, size):
    """The parts of [0, size) outside the merged ``areas``."""
    gaps = []
    position = 0
    for start, length in areas:
        if start > position:
            gaps.append((position, start - position))
        position = start + length
    if position < size:
        gaps.append((position, size - position))
    return gaps


def requests(areas, limit):
    """``areas`` cut into requests of at most ``limit`` bytes."""
    for start, length in areas:
        end = start + length
        while start < end:
            n = min(limit, end - start)
            yield start, n
            start += n


def check_directory(directory):
    """The destination directory must exist and be one."""
    try:
        st = os.stat(directory)
    except OSError as e:
        raise PlanError("--to %s: %s" % (printable(directory),
                                         e.strerror)) from None
    if not stat.S_ISDIR(st.st_mode):
        raise PlanError("--to %s: %s" % (printable(directory),
                                         os.strerror(errno.ENOTDIR)))
