"""The checks of a vSphere server over the network, before any login: its
API and NFC ports, its certificate against thumbprint=, and its version
(run in the child process of ``remote``; nothing here sends a
credential)."""

from ..vsphere import thumbprint
from . import compatibility, network
from .deadlines import STEP_LIMIT, Overdue, deadline
from .report import FAIL, OK, WARN, Result


def run(params):
    """The steps' results, in order."""
    results = [_bounded(api_port, params)]
    about = None
    if results[0].status != FAIL:
        about = _bounded(server_about, params)
        results.append(_bounded(certificate, params))
        results.append(version(about, params.vddk_major))
    results.append(_bounded(nfc_port, params,
                            about if isinstance(about, network.About)
                            else None))
    return results


def _bounded(function, *args):
    try:
        with deadline(STEP_LIMIT):
            return function(*args)
    except Overdue:
        timeout = network.Timeout("no complete answer from %s within %d s"
                                  % (args[0].server, STEP_LIMIT))
        if function is server_about:
            return timeout
        step = {api_port: "api-port", certificate: "thumbprint",
                nfc_port: "nfc-port"}[function]
        return Result(FAIL, step, str(timeout),
                      "check server= and the network to it")


def api_port(params):
    port = params.port or network.API_PORT
    problem = network.tcp_problem(params.server, port)
    if problem:
        return Result(FAIL, "api-port", problem, "check server= and port= "
                      "(vSphere's HTTPS port, 443), and the firewall")
    return Result(OK, "api-port", "%s:%d answers" % (params.server, port))


def nfc_port(params, about):
    port = params.nfchostport or network.NFC_PORT
    if about is not None and about.is_vcenter:
        return Result(WARN, "nfc-port", "server= is a vCenter (%s): NBD and "
                      "NBDSSL connect to the ESXi host running the VM, not "
                      "to it" % about.full_name, "make sure that host's TCP "
                      "port %d is reachable from here" % port)
    problem = network.tcp_problem(params.server, port)
    if problem:
        return Result(FAIL, "nfc-port", problem, "open TCP port %d (NFC, "
                      "nfchostport=) from this machine to the ESXi host: "
                      "the nbd and nbdssl transports need it" % port)
    return Result(OK, "nfc-port", "%s:%d answers" % (params.server, port))


def certificate(params):
    port = params.port or network.API_PORT
    try:
        actual = thumbprint.thumbprint(params.server, port)
    except thumbprint.ThumbprintError as e:
        return Result(FAIL, "thumbprint", str(e), "check server= and port=")
    given = params.thumbprint
    if given is None:
        return Result(FAIL, "thumbprint", "no thumbprint= given; the "
                      "server's certificate has %s" % actual,
                      "thumbprint=%s" % actual)
    if given.upper() != actual:
        return Result(FAIL, "thumbprint", "the server's certificate has %s, "
                      "thumbprint= says %s" % (actual, given),
                      "thumbprint=%s" % actual)
    return Result(OK, "thumbprint", "%s matches the server's certificate"
                  % actual)


def server_about(params):
    """The server's About, or the exception saying why it has none."""
    try:
        return network.about(params.server, params.port or network.API_PORT)
    except (OSError, ValueError) as e:
        return e


def version(about, vddk_major):
    if not isinstance(about, network.About):
        return _unknown_version(about)
    if about.release() is None:
        return _unknown_version("it says %r" % about.version)
    oldest, newest = compatibility.supported(vddk_major)
    verdict = compatibility.verdict(vddk_major, about.release())
    saw = "%s; VDDK %d supports vSphere %s to %s" % (
        about.full_name or about.version, vddk_major,
        compatibility.text(oldest), compatibility.text(newest))
    if verdict == compatibility.OK:
        return Result(OK, "version", saw)
    if verdict == compatibility.NEXT:
        return Result(OK, "version", saw + " (the next release: except new "
                      "features)")
    if verdict == compatibility.TOO_OLD:
        suggested = compatibility.vddk_for(about.release())
        return Result(FAIL, "version", saw + "; it is too old (VDDK opens "
                      "disks there but fails reading them)",
                      "use VDDK %s" % compatibility.text(suggested)
                      if suggested else
                      "no VDDK this plugin loads (>= 6.7) supports it")
    return Result(WARN, "version", saw + "; it is newer than VDDK %d "
                  "supports" % vddk_major, "use VDDK %s" % compatibility.text(
                      compatibility.release(*about.release())))


def _unknown_version(why):
    return Result(WARN, "version", "could not read the server's vSphere "
                  "version: %s" % why, "check that server= is a vCenter or "
                  "ESXi host")


