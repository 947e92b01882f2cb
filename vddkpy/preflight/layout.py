"""The library directory as the plugin searches it (``library``), and the
near misses users make: VDDK unpacked one level too deep (``lib64/lib64``,
``vmware-vix-disklib-distrib/vmware-vix-disklib-distrib``), libdir= naming
a sibling (``bin64``), the tarball not unpacked, a link whose library is
missing, links stored as text files (copied through a tool that does not
keep them), a directory the user cannot look into, a file built for
another machine or not a library at all, a dependency the loader cannot
find."""

import builtins
import os
import re

from ..vddk.library import candidates, sonames_on_disk

X86_64 = 62
_MACHINES = {3: "32-bit x86", 8: "MIPS", 20: "PowerPC", 21: "64-bit PowerPC",
             22: "s390", 40: "32-bit ARM", 183: "AArch64 (ARM64)",
             243: "RISC-V"}
_SEARCH_DEPTH = 4
_MISSING = re.compile(r"^([^/:]+): cannot open shared object file")


def elf_problem(path):
    """Why ``path`` cannot be an x86-64 ELF shared library, or None."""
    try:
        with builtins.open(path, "rb") as f:
            head = f.read(64)
            size = os.fstat(f.fileno()).st_size
    except OSError as e:
        return "cannot read %s: %s" % (path, e.strerror)
    if head[:4] != b"\x7fELF":
        return "%s is not an ELF library (it begins %r)" % (path, head[:12])
    if head[4] != 2:
        return "%s is a 32-bit library" % path
    machine = int.from_bytes(head[18:20],
                             "little" if head[5] == 1 else "big")
    if machine != X86_64:
        return "%s is built for %s, not x86-64" % (
            path, _MACHINES.get(machine, "ELF machine %d" % machine))
    described = _described_size(head)
    if described > size:
        return ("%s is truncated: %d bytes, but its ELF header describes %d "
                "(a broken or partial download?)" % (path, size, described))
    return None


def _described_size(head):
    """The file size an x86-64 ELF header implies: where its section
    header table ends (the last thing a linker writes)."""
    if len(head) < 64:
        return 64
    shoff = int.from_bytes(head[40:48], "little")
    entry_size = int.from_bytes(head[58:60], "little")
    count = int.from_bytes(head[60:62], "little")
    return shoff + entry_size * count


def link_as_text(path):
    """The library name a small text file at ``path`` holds (a symbolic
    link copied as a file), or None."""
    try:
        if os.path.islink(path) or os.path.getsize(path) > 255:
            return None
        with builtins.open(path, "rb") as f:
            text = f.read().decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if re.fullmatch(r"libvixDiskLib\.so[.0-9]*", text) else None


def dangling_links(libdir):
    """(link, what it names) of libvixDiskLib.so.N links whose target is
    missing."""
    found = []
    for path, _ in candidates(libdir):
        if os.path.islink(path) and not os.path.exists(path):
            found.append((path, os.readlink(path)))
    return found


def closed_directories(libdir):
    """The directories of the search this user cannot look into."""
    return [d for d in (libdir, os.path.join(libdir, "lib64"))
            if os.path.isdir(d) and not os.access(d, os.R_OK | os.X_OK)]


def tarballs(libdir):
    """VDDK tarballs lying in ``libdir`` (or its parent), not unpacked."""
    found = []
    for directory in (libdir, os.path.dirname(libdir)):
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        found += [os.path.join(directory, n) for n in sorted(names)
                  if n.startswith("VMware-vix-disklib")
                  and n.endswith((".tar.gz", ".tgz", ".tar"))]
    return found


def noexec(path):
    """Whether the filesystem holding ``path`` is mounted noexec."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_NOEXEC)
    except OSError:
        return False


def first_present(libdir):
    """(path, major) of the candidate the plugin would load first."""
    for path, major in candidates(libdir):
        if os.path.exists(path):
            return path, major
    return None


def _walk(top, depth=_SEARCH_DEPTH):
    """(directory, file names) under ``top``, at most ``depth`` down."""
    top = top.rstrip("/") or "/"
    for directory, subdirs, files in os.walk(top):
        if directory[len(top):].count("/") >= depth:
            subdirs[:] = []
        yield directory, files


def near_misses(libdir):
    """libvixDiskLib.so.N files the plugin will not find from ``libdir``:
    deeper inside it, or in its parent (libdir= naming bin64/)."""
    looked = {os.path.normpath(libdir), os.path.join(libdir, "lib64")}
    found = set(sonames_on_disk(os.path.dirname(libdir)).values())
    for directory, files in _walk(libdir):
        if os.path.normpath(directory) not in looked:
            found.update(os.path.join(directory, f) for f in files
                         if f.startswith("libvixDiskLib.so."))
    return sorted(found)


def libdir_for(path):
    """The libdir= value under which the plugin finds ``path``."""
    directory = os.path.dirname(path)
    if os.path.basename(directory) == "lib64":
        return os.path.dirname(directory)
    return directory


def missing_dependency(reason):
    """The library the loader could not find, from its message, or None."""
    match = _MISSING.match(reason or "")
    return match.group(1) if match else None


def find_file(libdir, name):
    """The directory under ``libdir`` holding ``name``, or None."""
    for directory, files in _walk(libdir):
        if name in files:
            return directory
    return None


def shadowed(directory):
    """Libraries in ``directory`` of which this process has loaded a copy
    from elsewhere (/proc/self/maps)."""
    try:
        with builtins.open("/proc/self/maps") as maps:
            mapped = {line.split()[-1] for line in maps if ".so" in line}
        present = set(os.listdir(directory))
    except OSError:
        return []
    elsewhere = [os.path.basename(p) for p in mapped
                 if os.path.dirname(p) != directory]
    # A soname names the file it links to: libexpat.so.1 -> .so.1.8.10.
    return sorted(name for name in present
                  if ".so" in name and not name.startswith("libvixDiskLib")
                  and any(m == name or m.startswith(name + ".")
                          for m in elsewhere))
