"""The check inside nbdkit: nbdkit parses the parameters with the plugin's
own code (``Params``: the server's parsers, every password form), then
``config_complete`` runs the steps and exits; nothing is served.

The library is loaded first, without a word, because loading may re-exec
nbdkit with the library's directory in LD_LIBRARY_PATH (as the plugin
does): the lines are printed by the process that stays.
"""

import os

from ..vddk.calls import Vddk
from ..vddk.library import default_libdir
from ..nbdkit.native import c_string, ffi, not_dumpable, process
from ..params import Params
from ..nbdkit.compat import readonly_server
from ..nbdkit.reexec import reexec_if_needed
from . import library_steps, remote, run_as, server_steps
from .report import FAIL, OK, WARN, Report, Result

params = Params()
missing_paths = []      # libdir= or config= naming nothing: reported


def config(key, value):
    # The parser would end nbdkit here (realpath fails); the check says so
    # in its parameters line and goes on with the default instead.
    if key in ("libdir", "config") and not os.path.exists(value):
        missing_paths.append("%s=%s does not exist" % (key, value))
        return
    params.set(key, value)


def config_complete():
    if params.password is not None or params.cookie is not None:
        not_dumpable()              # as the plugin: no core with a secret
    report = Report()
    libdir = params.libdir or default_libdir()
    library, problem = library_steps.load(libdir)
    broken = None
    if library is not None:
        broken = library_steps.reexec_problem(library.directory)
        if broken is None:
            reexec_if_needed(library.directory, params)
    report.start()
    try:
        run(report, libdir, library, problem, broken)
    except Exception as e:          # a bug here must still end in one line
        report.add(Result(FAIL, "check", "internal error: %r" % e,
                          "please report it"))
    status = report.finish()
    process.fflush(ffi.NULL)
    process.exit(status)


def run(report, libdir, library, problem, broken=None):
    problems = missing_paths + list(params.problems())
    report.add(_parameters(problems))
    if missing_paths:
        return
    if report.add(library_steps.where(params, libdir)).status == FAIL:
        return
    if report.add(library_steps.loading(library, problem,
                                        libdir)).status == FAIL:
        return
    if broken is not None:
        report.add(broken)
        return
    identity = run_as.identity()
    if identity is not None:
        if report.add(run_as.become(*identity)).status == FAIL:
            return
    vddk = Vddk(library, False)
    messages = library_steps.Messages()
    if report.add(library_steps.initialise(vddk, libdir, params.config,
                                           messages)).status == FAIL:
        return
    try:
        if not problems:
            _vddk_steps(report, vddk, library.version)
    finally:
        vddk.call("Exit", "")


def _parameters(problems):
    if problems:
        return Result(FAIL, "parameters", "; ".join(problems),
                      "correct them: the plugin refuses them the same way"
                      + ("; a read-only run is checked with vddkpy check -r"
                         if any("with -r" in p for p in problems) else ""))
    if not params.is_remote:
        return Result(OK, "parameters", "local disk %s" % params.file)
    return Result(OK, "parameters", "disk %s of vm=%s on %s, user %s, "
                  "password %s" % (params.file or "(export=%s)"
                                   % params.export, params.vm,
                                   params.server, params.user,
                                   "given" if params.password else "empty"))


def _vddk_steps(report, vddk, version):
    risk = params.is_remote and library_steps.local_risk(
        version, params.transports)
    if risk:
        report.add(risk)
    nfc_failed = False
    if params.is_remote:
        network = _add_all(report, remote.ask(
            remote.NETWORK, params, "network", vddk_major=version))
        if not _matched(network):
            return                  # no credential to an unchecked server
        nfc_failed = any(r.step == "nfc-port" and r.status == FAIL
                         for r in network)
        results = server_steps.login(vddk, params)
        _add_all(report, results)
        if any(r.status == FAIL for r in results):
            return
    unreadable = _not_to_read()
    if unreadable:
        report.add(unreadable)
    else:
        _disk_steps(report, vddk, risk, nfc_failed)
    if params.is_remote:
        _add_all(report, remote.ask(remote.TRACKING, params, "cbt"))


def _disk_steps(report, vddk, risk, nfc_failed):
    """Read the disk over each transport that can be tried; for a
    read-write run, open it for writing too (nothing is written)."""
    read = []
    for transport in _transports(vddk, risk):
        if transport == "san" and risk:
            continue
        if transport in ("nbd", "nbdssl") and nfc_failed:
            continue
        read.append((transport, report.add(
            server_steps.read_disk(vddk, params, transport))))
    if not read and not nfc_failed:
        report.add(Result(FAIL, "transports", "no mode of transports=%s can "
                          "work here: san reaches the datastore's LUNs "
                          "through this machine's SCSI disks, and it has "
                          "none (no /sys/class/scsi_disk)"
                          % params.transports, "transports=nbdssl:nbd"))
        return
    working = [t for t, result in read if result.status == OK]
    if working and not readonly_server():
        report.add(server_steps.write_access(vddk, params, working[0]))


def _add_all(report, results):
    for result in results:
        report.add(result)
    return results


def _matched(network):
    """Whether the server's certificate matched thumbprint=."""
    return any(r.step == "thumbprint" and r.status == OK for r in network)


def _transports(vddk, risk):
    """The transports= modes, one at a time; without transports=, VDDK's
    own choice, but from its modes without san where san risks the crash
    (the check must not crash where it warns of one)."""
    if params.transports:
        return params.transports.split(":")
    if not risk:
        return [None]
    modes = (c_string(vddk.call("ListTransportModes", "")) or "").split(":")
    return [":".join(m for m in modes if m != "san")]


def _not_to_read():
    """Why there is no disk to read (the ``disk`` step's warning), or None."""
    if params.file is None:
        return Result(WARN, "disk", "export= lets the client name the disk",
                      "add file=NAME to check one disk")
    if params.create and not os.path.exists(params.file):
        return Result(WARN, "disk", "create=true would create %s; the check "
                      "creates nothing" % params.file)
    return None


# nbdkit's python plugin wants these; config_complete never lets it serve.
def open(readonly):
    return None


def get_size(h):
    return 0


def pread(h, buf, offset, flags):
    pass
