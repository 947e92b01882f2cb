"""The checks of the VDDK library: where it is, that it loads, InitEx."""

import os

from ..vddk.binding import ffi
from ..vddk.library import (DEFAULT_LIBDIRS, Library, LoadError, MissingSymbol,
                       sonames_on_disk, too_old_message)
from ..nbdkit.native import RTLD_NOW, c_string, process, to_bytes
from ..vddk import log as vddklog
from . import layout, probe
from .report import FAIL, OK, WARN, Result

FULL_DISTRIBUTION = ("libdir= must name the directory VDDK's tarball "
                     "unpacks (vmware-vix-disklib-distrib, holding lib64/)")
X86_64_VDDK = ("download VDDK for Linux x86-64 (VMware-vix-disklib-*."
               "x86_64.tar.gz) and unpack it whole")
READABLE = ("let the user nbdkit runs as read VDDK: chmod -R a+rX %s (or "
            "unpack it as that user)")


class Crashed(LoadError):
    """Loading the library killed the (child) process."""

    def __init__(self, libdir, signal_name):
        present = layout.first_present(libdir)
        super().__init__("loading the library killed the process (%s)"
                         % signal_name, present[0] if present else libdir,
                         signal_name)


def load(libdir):
    """(Library or None, LoadError or None): the plugin's own loading,
    once a child survived it."""
    signal_name = probe.killer(lambda: Library(libdir))
    if signal_name:
        return None, Crashed(libdir, signal_name)
    try:
        return Library(libdir), None
    except LoadError as e:
        return None, e


def where(params, libdir):
    """The ``library`` step: which libvixDiskLib.so.N and why."""
    if params.libdir is None and not os.path.isdir(libdir):
        return Result(FAIL, "library", "no libdir= given and none of %s "
                      "exists" % ", ".join(DEFAULT_LIBDIRS),
                      "libdir=/path/to/vmware-vix-disklib-distrib")
    present = layout.first_present(libdir)
    if present is None:
        return _absent(libdir)
    path, major = present
    named = layout.link_as_text(path)
    if named:
        return Result(FAIL, "library", "%s is a text file saying %s: a "
                      "symbolic link stored as a file (VDDK copied with a "
                      "tool that does not keep links: zip, a Windows share)"
                      % (path, named), "unpack VDDK's tarball on this "
                      "machine with tar, which keeps the links")
    if not os.access(path, os.R_OK):
        return Result(FAIL, "library", "cannot read %s: Permission denied"
                      % path, READABLE % libdir)
    problem = layout.elf_problem(path)
    if problem:
        return Result(FAIL, "library", problem, X86_64_VDDK)
    others = sorted(set(sonames_on_disk(libdir)) - {major}, reverse=True)
    why = "the newest libvixDiskLib.so.N there; lib64/ is tried first"
    if others:
        why += "; also there: " + ", ".join(".so.%d" % m for m in others)
    return Result(OK, "library", "%s (VDDK %d: %s)" % (path, major, why))


def _absent(libdir):
    closed = layout.closed_directories(libdir)
    if closed:
        return Result(FAIL, "library", "cannot look into %s: Permission "
                      "denied" % closed[0], READABLE % libdir)
    dangling = layout.dangling_links(libdir)
    if dangling:
        return Result(FAIL, "library", "%s is a symbolic link to %s, which "
                      "does not exist" % dangling[0], "unpack the whole VDDK "
                      "tarball again with tar (the library the link names "
                      "is missing)")
    tarball = layout.tarballs(libdir)
    if tarball:
        return Result(FAIL, "library", "no libvixDiskLib.so.N in %s/lib64 or "
                      "%s, but VDDK's tarball %s is there, not unpacked"
                      % (libdir, libdir, tarball[0]), "tar xzf %s -C %s, "
                      "then libdir=%s/vmware-vix-disklib-distrib"
                      % (tarball[0], os.path.dirname(tarball[0]),
                         os.path.dirname(tarball[0])))
    too_old = too_old_message(libdir)
    if too_old:
        return Result(FAIL, "library", too_old,
                      "install VDDK 6.7 or newer")
    misses = layout.near_misses(libdir)
    if misses:
        return Result(FAIL, "library",
                      "no libvixDiskLib.so.N in %s/lib64 or %s, but %s is "
                      "there (VDDK unpacked one level too deep?)"
                      % (libdir, libdir, misses[0]),
                      "libdir=%s" % layout.libdir_for(misses[0]))
    return Result(FAIL, "library", "no libvixDiskLib.so.N (N >= 6) in "
                  "%s/lib64 or %s" % (libdir, libdir), FULL_DISTRIBUTION)


def loading(library, problem, libdir):
    """The ``load`` step: dlopen and the required symbols."""
    if library is not None:
        return Result(OK, "load", "loaded %s" % (library.dll()
                                                 or library.path))
    if isinstance(problem, Crashed):
        return Result(FAIL, "load", "loading %s killed the process (%s)"
                      % (problem.path, problem.reason), "the file is damaged "
                      "(a broken or partial download?): " + X86_64_VDDK)
    if isinstance(problem, MissingSymbol):
        return Result(FAIL, "load", str(problem).split(". ")[0],
                      "install VDDK 6.7 or newer")
    needed = layout.missing_dependency(problem.reason)
    if needed is None and problem.path and layout.noexec(problem.path):
        return Result(FAIL, "load", "%s is on a filesystem mounted noexec: "
                      "the loader may not map it (%s)"
                      % (problem.path, _loader_said(problem)),
                      "put VDDK on a filesystem mounted without noexec "
                      "(/opt, /usr/local), or remount this one with exec")
    if needed is None:
        return Result(FAIL, "load", _loader_said(problem), X86_64_VDDK)
    return Result(FAIL, "load", "%s needs %s, which the loader does not "
                  "find" % (problem.path, needed),
                  _dependency_fix(libdir, needed))


def _loader_said(problem):
    """The loader's message as it wrote it (the plugin's LoadError has it
    escaped for its own error line; the report escapes it once)."""
    if problem.path:
        process.dlopen(to_bytes(problem.path), RTLD_NOW)   # fails again
        said = c_string(process.dlerror())
        if said:
            return said
    return problem.reason or str(problem)


def _dependency_fix(libdir, needed):
    found = layout.find_file(libdir, needed)
    if found:
        return ("it is in %s: start nbdkit with LD_LIBRARY_PATH=%s (the "
                "plugin adds that directory only once the library has "
                "loaded)" % (found, found))
    if needed.startswith(("libssl.so.3", "libcrypto.so.3")):
        return ("VDDK >= 8.0.2 needs OpenSSL 3, which RHEL 8 lacks: use "
                "VDDK 8.0.1 there (RHEL-28533)")
    return ("it is not under %s either: unpack the whole VDDK tarball, or "
            "install the package providing %s" % (libdir, needed))


class Messages:
    """VDDK's log and warning lines during the check, kept as VDDK wrote
    them (the report escapes them), not printed."""

    def __init__(self):
        self.lines = []

        # Never let an exception escape into VDDK's thread.
        @ffi.callback("VixDiskLibGenericLogFunc",
                      onerror=lambda exception, value, traceback: None)
        def keep(fmt, args):
            text = vddklog.format_raw(fmt, args)
            if text is not None:
                vddklog.note_thumbprint(text)
                self.lines.append(text.rstrip("\n"))
        self.callback = keep


def initialise(vddk, libdir, config, messages):
    """The ``init`` step: VixDiskLib_InitEx, the version, the transports
    (InitEx first in a child: VDDK may crash in it)."""
    signal_name = probe.killer(lambda: _init_and_exit(vddk, libdir, config,
                                                      messages))
    if signal_name:
        return Result(FAIL, "init", "VixDiskLib_InitEx killed the process "
                      "(%s)" % signal_name, "unpack the whole VDDK tarball "
                      "again; config= names VDDK's configuration file")
    code = _init(vddk, libdir, config, messages)
    if code != 0:
        said = "; VDDK said: %s" % messages.lines[-1] if messages.lines \
            else ""
        return Result(FAIL, "init", "%s%s" % (vddk.error(
            "VixDiskLib_InitEx", code).unescaped(), said),
            _init_fix(messages.lines))
    modes = c_string(vddk.call("ListTransportModes", ""))
    return Result(OK, "init", "InitEx works; VDDK %s; transport modes %s"
                  % (_full_version(vddk.library), modes))


def _init_and_exit(vddk, libdir, config, messages):
    if _init(vddk, libdir, config, messages) == 0:
        vddk.call("Exit", "")


def _init(vddk, libdir, config, messages):
    return vddk.call("InitEx", "", 6, 5, messages.callback,
                     messages.callback, messages.callback, to_bytes(libdir),
                     ffi.NULL if config is None else to_bytes(config))


def _init_fix(lines):
    needed = [layout.missing_dependency(line) for line in lines]
    needed = [n for n in needed if n]
    if needed:
        return ("VDDK could not load %s: unpack the whole VDDK tarball "
                "(the plugin puts its lib64/ in LD_LIBRARY_PATH)" % needed[0])
    return "see VDDK's message; config= names VDDK's configuration file"


def _full_version(library):
    """8.0.3 from libvixDiskLib.so.8.0.3 (the file the soname links to)."""
    name = os.path.basename(library.dll() or library.path)
    version = name.partition(".so.")[2]
    return version or str(library.version)


def local_risk(version, transports):
    """The ``san`` step: VDDK >= 8 may crash without /sys/class/scsi_disk
    when it tries the SAN transport (RHEL-54377), or None."""
    modes = transports.split(":") if transports else None
    if version < 8 or os.path.exists("/sys/class/scsi_disk") or \
            (modes is not None and "san" not in modes):
        return None
    why = "san is in transports=" if modes else \
        "transports= is not given, so VDDK tries san"
    return Result(WARN, "san", "VDDK %d may crash nbdkit opening a disk on "
                  "a machine without /sys/class/scsi_disk (RHEL-54377); %s"
                  % (version, why), "transports=nbdssl:nbd (without san)")


def reexec_problem(directory):
    """The ``reexec`` step's failure, or None: the plugin re-executes
    nbdkit with ``directory`` first in LD_LIBRARY_PATH, and a library
    there that this process took from elsewhere (VDDK's own libexpat or
    libz) then replaces it for nbdkit's Python.  Tried in a child:
    whether nbdkit still loads its python plugin so."""
    shadowed = layout.shadowed(directory)
    if not shadowed:
        return None
    env = dict(os.environ)
    current = env.get("LD_LIBRARY_PATH")
    env["LD_LIBRARY_PATH"] = directory + (":" + current if current else "")
    import subprocess
    try:
        done = subprocess.run(["/proc/self/exe", "python", "--dump-plugin"],
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, env=env, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        said = str(e)
    else:
        if done.returncode == 0:
            return None
        said = (done.stderr.decode("utf-8", "replace").strip().splitlines()
                or ["status %d" % done.returncode])[0]
    return Result(FAIL, "reexec", "with %s first in LD_LIBRARY_PATH (as the "
                  "plugin re-executes nbdkit), VDDK's %s replaces the "
                  "system's for nbdkit's Python, which then fails: %s"
                  % (directory, ", ".join(shadowed), said),
                  "move %s out of %s: the system's copy serves VDDK as well"
                  % (" and ".join(shadowed), directory))
