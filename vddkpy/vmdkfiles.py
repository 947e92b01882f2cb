"""The files a local VMDK is made of, read from its descriptors.

stats-file= must never replace one of them, so the start-up check (before
VDDK is loaded) and the check at exit read the descriptor text here, with
a small parser that never raises: a file= holding garbage, binary data, a
huge file or a chain that loops gives the files it can find, and the file
itself is always one of them.

Which files (VMware's layouts, as VDDK reads and creates them):

* the descriptor named by file=; each extent line's file
  (``RW 2048 FLAT "disk-flat.vmdk" 0``), relative to the descriptor's
  directory; a monolithic sparse or stream-optimized file (``KDMV``) is
  its own extent and embeds its descriptor;
* ``parentFileNameHint``, link after link, each relative to the directory
  of the link naming it, with that link's extents;
* with create=true, what VixDiskLib_Create will make: the descriptor and
  its extents, named as VMware's "VMDK File Naming" table has them
  (``NAME-flat.vmdk``; ``NAME-s001.vmdk``, ``NAME-f001.vmdk`` ... for
  split disks, whatever their number; ``NAME-delta.vmdk``).

A relative name is tried from the directory as spelled and from its real
directory, since a descriptor may be reached through a symbolic link.
"""

import os
import re
import stat

_DESCRIPTOR_BYTES = 64 * 1024     # VMware's descriptors are a few KiB
_MAX_LINKS = 64                   # a deeper chain is a loop, most likely
_SECTOR = 512

_EXTENT = re.compile(r'(?:RW|RDONLY|NOACCESS)\s+\d+\s+\w+\s+"([^"]*)"')
_PARENT = re.compile(r'parentFileNameHint\s*=\s*"?([^"]*)"?\s*$')

SERVED = "the disk being served"
EXTENT = "an extent of the disk being served"
PARENT = "a parent of the disk being served"
PARENT_EXTENT = "an extent of a parent of the disk being served"
CREATED = "a file that create=true will make"

# VixDiskLib disk type -> how Create names the extent files beside
# NAME.vmdk (a regular expression for the part after "NAME-"), or None
# when the descriptor is embedded in the one file.
_CREATED_EXTENTS = {
    1: None,                # monolithic-sparse
    2: "flat",              # monolithic-flat
    3: r"s\d+",             # split-sparse
    4: r"f\d+",             # split-flat
    5: "flat",              # vmfs-flat
    6: None,                # stream-optimized
    7: "flat",              # vmfs-thin
    8: "delta",             # vmfs-sparse
}


def _real_spelling(path):
    """``path`` with its directory resolved (the name itself is not)."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(os.path.realpath(directory), name)


def _spellings(path):
    """Names of ``path`` whose directories are real: the name as given,
    and where a symbolic link of that name leads (existing or not)."""
    return {_real_spelling(path), os.path.realpath(path)}


def _directories(path):
    """Where names relative to the descriptor ``path`` may be found."""
    return {os.path.dirname(os.path.abspath(path)),
            os.path.dirname(os.path.realpath(path))}


def _read(path, offset, size):
    """Up to ``size`` bytes at ``offset`` of the regular file ``path``
    (b"" on any failure; O_NONBLOCK: opening a FIFO must not wait)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, ValueError):
        return b""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
        return os.pread(fd, size, offset)
    except (OSError, ValueError, OverflowError):
        return b""
    finally:
        os.close(fd)


def _descriptor_text(path):
    """The descriptor of the VMDK ``path`` ("" if it has none)."""
    data = _read(path, 0, _DESCRIPTOR_BYTES)
    if data[:4] == b"KDMV" and len(data) >= 44:
        # The embedded descriptor: sectors (offset, size), little-endian
        # 64-bit, at bytes 28 and 36 of the sparse header.
        offset = int.from_bytes(data[28:36], "little")
        size = int.from_bytes(data[36:44], "little")
        data = _read(path, offset * _SECTOR,
                     min(size * _SECTOR, _DESCRIPTOR_BYTES)) if offset else b""
    elif data[:4] == b"COWD":
        return ""
    return data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _parse(text):
    """(extent file names, parent file name or None) of a descriptor."""
    extents, parent = [], None
    for line in text.split("\n"):     # as VDDK splits: a CR is in a name
        line = line.strip(" \t\r")
        match = _EXTENT.match(line)
        if match:
            extents.append(match.group(1))
            continue
        match = _PARENT.match(line)
        if match and match.group(1):
            parent = match.group(1)
    return extents, parent


class DiskFiles:
    """The files of one local disk, each with the part it plays."""

    def __init__(self):
        self._roles = {}            # real spelling -> role
        self._inodes = {}           # (st_dev, st_ino) -> role
        self._patterns = []         # (real directory, name regex, role)

    def add(self, path, role):
        try:     # a name from a descriptor may be anything: NUL, too long
            for spelling in _spellings(path):
                self._roles.setdefault(spelling, role)
            st = os.stat(path)
        except (OSError, ValueError):
            return
        self._inodes.setdefault((st.st_dev, st.st_ino), role)

    def add_pattern(self, descriptor, name_regex, role):
        for directory in _directories(descriptor):
            self._patterns.append((os.path.realpath(directory),
                                   re.compile(name_regex), role))

    def role_of(self, path, st=None):
        """The part ``path`` plays in the disk (None: none).  ``st`` is
        lstat of ``path`` if it exists."""
        spelling = _real_spelling(path)
        if spelling in self._roles:
            return self._roles[spelling]
        if st is not None and (st.st_dev, st.st_ino) in self._inodes:
            return self._inodes[(st.st_dev, st.st_ino)]
        directory, name = os.path.split(spelling)
        for where, regex, role in self._patterns:
            if where == directory and regex.fullmatch(name):
                return role
        return None


def local_disk(file, create_type=None):
    """The DiskFiles of file= (``create_type``: create=true's disk type)."""
    files = DiskFiles()
    files.add(file, SERVED)
    _add_chain(files, file)
    if create_type is not None:
        _add_created(files, file, create_type)
    return files


def _add_chain(files, file):
    seen = set()
    pending = [(file, 0)]
    while pending and len(seen) < _MAX_LINKS:
        link, depth = pending.pop()
        try:
            real = os.path.realpath(link)
            directories = _directories(link)
        except (OSError, ValueError):
            continue
        if real in seen:
            continue
        seen.add(real)
        if depth:
            files.add(link, PARENT)
        extents, parent = _parse(_descriptor_text(link))
        for directory in directories:
            for extent in extents:
                files.add(os.path.join(directory, extent),
                          PARENT_EXTENT if depth else EXTENT)
            if parent is not None:
                pending.append((os.path.join(directory, parent), depth + 1))


def _add_created(files, file, create_type):
    suffix = _CREATED_EXTENTS.get(create_type)
    if suffix is None:
        return
    base = os.path.basename(file)
    if base.lower().endswith(".vmdk"):
        base = base[:-5]
    files.add_pattern(file, re.escape(base) + "-" + suffix + r"\.vmdk",
                      CREATED)
