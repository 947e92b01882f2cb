"""changed-since= against a vSphere that answers QueryChangedDiskAreas
badly (tests/bed/vcsim/hostile.go): a range it did not report on is
served as changed, never as unchanged; an answer that pages too slowly, a
huge answer past what the disk can hold, and malformed answers (bad XML,
no returnval, non-numeric fields, HTML, redirects) are one error line
without a traceback; a stalled vSphere gives up after vsphere-timeout= and
never holds up nbdkit's exit on SIGTERM or SIGINT."""

import json
import signal
import socket
import subprocess
import threading
import time

import pytest

from bed import assert_no_traceback, error_lines, listening

MiB = 1 << 20
DATA = b"\5" * 4096


def tracked_bed(vcsim, nbdkit, size=8 * MiB):
    """Change tracking on, 4 KiB written at 1 MiB between two snapshots:
    (bed, the second snapshot, the changeId before the write)."""
    from test_changed_since import write_through_nbdkit
    bed = vcsim(size=size)
    bed.enable_cbt()
    _, before = bed.create_snapshot("s0")
    write_through_nbdkit(nbdkit, bed, [(MiB, DATA)], None)
    snapshot, _ = bed.create_snapshot("s1")
    bed.reset()
    return bed, snapshot, before


def served(nbdkit, bed, *args, **kw):
    kw.setdefault("readonly", True)
    return nbdkit(*bed.plugin_args(), *args, config=bed.standin_config(),
                  **kw)


def refused_open(server):
    """The one error line of an open the plugin refused."""
    import nbd
    with pytest.raises(nbd.Error):
        server.connect()
    server.stop()
    assert_no_traceback(server.stderr)
    lines = [line for line in error_lines(server.stderr)
             if ": open: error: " in line]
    assert len(lines) == 1, server.stderr
    return lines[0].split(": open: error: ", 1)[1]


def test_a_range_not_reported_on_is_served_as_changed(vcsim, nbdkit,
                                                      tmp_path):
    """The first answer starts 2 MiB after the offset asked for: the
    write at 1 MiB lies in the gap, which is read from the snapshot."""
    bed, snapshot, before = tracked_bed(vcsim, nbdkit)
    bed.set_hostile("shift", shift=2 * MiB, calls=1)
    stats = tmp_path / "stats.json"
    server = served(nbdkit, bed, "changed-since=" + before,
                    "snapshot=" + snapshot, "stats-file=%s" % stats)
    h = server.connect()
    assert h.pread(4096, MiB) == DATA
    h.shutdown()
    server.stop()
    connection, = json.loads(stats.read_text())["change_tracking"][
        "connections"]
    assert connection["coverage"]["unreported_bytes"] == 2 * MiB
    assert connection["coverage"]["changed_bytes"] == 2 * MiB
    assert error_lines(server.stderr) == []


def test_tiny_pages_are_refused_at_the_first(vcsim, nbdkit):
    bed, snapshot, before = tracked_bed(vcsim, nbdkit)
    bed.set_page_bytes(512)
    server = served(nbdkit, bed, "changed-since=" + before,
                    "snapshot=" + snapshot)
    assert refused_open(server) == (
        "vSphere's answer to QueryChangedDiskAreas at offset 0 covers [0, "
        "512): it must end at 65536 or later (at least 65536 bytes further, "
        "or the end of the disk: no disk of 8388608 bytes needs more than "
        "128 calls)")
    assert bed.calls("QueryChangedDiskAreas") == 1


def peak_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_huge_answers(vcsim, nbdkit):
    """400 000 areas in one answer: within what a 1 GiB disk can hold,
    served with the memory of a small map; past what an 8 MiB disk can
    hold, refused at the first area too many."""
    bed, snapshot, before = tracked_bed(vcsim, nbdkit, size=1 << 30)
    server = served(nbdkit, bed, "changed-since=" + before,
                    "snapshot=" + snapshot, verbose=False)
    h = server.connect()
    assert h.pread(4096, MiB) == DATA
    h.shutdown()
    baseline = peak_rss_kib(server.proc.pid)
    bed.set_hostile("areas", count=400000, stride=2048, length=512)
    h = server.connect()
    assert h.pread(4096, 2048 * 400000 - 4096) == bytes(4096)
    assert h.pread(4096, MiB) == DATA
    h.shutdown()
    grown = peak_rss_kib(server.proc.pid) - baseline
    server.stop()
    assert error_lines(server.stderr) == []
    assert grown < 16 * 1024, grown

    bed, snapshot, before = tracked_bed(vcsim, nbdkit)
    bed.set_hostile("areas", count=400000, stride=0, length=512)
    assert refused_open(served(nbdkit, bed, "changed-since=" + before,
                               "snapshot=" + snapshot)) == (
        "vSphere's answer to QueryChangedDiskAreas at offset 0 makes 16385 "
        "areas: a disk of 8388608 bytes has at most 16384")


ENVELOPE = ('<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv='
            '"http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>'
            '<QueryChangedDiskAreasResponse xmlns="urn:vim25">%s'
            '</QueryChangedDiskAreasResponse></soapenv:Body>'
            '</soapenv:Envelope>')
PREFIX = "vSphere's answer to QueryChangedDiskAreas at offset 0 "


@pytest.mark.parametrize("answer, message", [
    (dict(status=200, body='<soapenv:Envelope xmlns:soapenv="http://'
          'schemas.xmlsoap.org/soap/envelope/"><unclosed'),
     PREFIX + "is not well-formed XML (unclosed token)"),
    (dict(status=200, body=ENVELOPE % ""),
     PREFIX + "holds no returnval (DiskChangeInfo)"),
    (dict(status=200, body=ENVELOPE % (
        "<returnval><startOffset>{offset}x</startOffset><length>8388608"
        "</length></returnval>")),
     PREFIX + 'startOffset is not a number: "0x"'),
    (dict(status=200, body=ENVELOPE % (
        "<returnval><startOffset>0</startOffset><length>8388608</length>"
        "<changedArea><start>one</start><length>512</length></changedArea>"
        "</returnval>")),
     PREFIX + 'start is not a number: "one"'),
    (dict(status=200, content_type="text/html",
          body="<html><body><h1>Maintenance</h1></body></html>"),
     PREFIX + "is not a SOAP document (its root element is <html>)"),
    (dict(status=302, location="https://sso.example.com/login", body=""),
     PREFIX + "is HTTP 302 Found (to https://sso.example.com/login), not "
     "SOAP"),
    (dict(status=503, content_type="text/html", body="<html>busy</html>"),
     PREFIX + "is HTTP 503 Service Unavailable, not SOAP"),
])
def test_malformed_answers_are_one_line(vcsim, nbdkit, answer, message):
    bed, snapshot, before = tracked_bed(vcsim, nbdkit)
    bed.set_hostile("raw", **answer)
    server = served(nbdkit, bed, "changed-since=" + before,
                    "snapshot=" + snapshot)
    assert refused_open(server) == message


def test_a_fault_message_cannot_forge_a_log_line(vcsim, nbdkit):
    bed, snapshot, before = tracked_bed(vcsim, nbdkit)
    bed.set_hostile("raw", status=500, body=(
        '<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://'
        'schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/'
        '2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault><faultcode>'
        'ServerFaultCode</faultcode><faultstring>busy\nnbdkit: python[1]: '
        'error: forged\x7f\u0085\u202e</faultstring><detail>'
        '<SystemErrorFault xmlns="urn:vim25" xsi:type="SystemError">'
        '</SystemErrorFault></detail></soapenv:Fault></soapenv:Body>'
        '</soapenv:Envelope>'))
    server = served(nbdkit, bed, "changed-since=" + before,
                    "snapshot=" + snapshot)
    assert refused_open(server) == (
        "changed-since: vSphere QueryChangedDiskAreas: [datastore1] "
        "vm/vm.vmdk: SystemError: busy\\nnbdkit: python[1]: error: "
        "forged\\x7f\\x85\\u202e")
    assert not [line for line in server.stderr.splitlines()
                if "forged" in line and "busy" not in line]


# -- a vSphere that never answers --------------------------------------------

def open_in_background(server):
    """Start an NBD open (nbdinfo) that will wait on vSphere."""
    return subprocess.Popen(["nbdinfo", "--size", server.uri],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def wait_until(condition, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stalled_vsphere_never_holds_up_the_exit(vcsim, nbdkit, sig):
    bed, snapshot, before = tracked_bed(vcsim, nbdkit)
    bed.set_hostile("stall")
    server = served(nbdkit, bed, "changed-since=" + before,
                    "snapshot=" + snapshot)
    client = open_in_background(server)
    try:
        wait_until(lambda: bed.calls("QueryChangedDiskAreas") >= 1,
                   "the open never asked vSphere")
        server.proc.send_signal(sig)
        server.proc.wait(timeout=2)
    finally:
        client.kill()
        client.wait()
    assert_no_traceback(server.stderr)
    server.assert_survived()


def test_a_stalled_vsphere_times_out(vcsim, nbdkit):
    bed, snapshot, before = tracked_bed(vcsim, nbdkit)
    bed.set_hostile("stall")
    server = served(nbdkit, bed, "changed-since=" + before,
                    "snapshot=" + snapshot, "vsphere-timeout=1")
    assert refused_open(server) == (
        "vSphere %s:%d did not answer within 1 s (vsphere-timeout=)"
        % (bed.host, bed.port))


def silent_listener():
    """A TCP server that accepts and never says a word (not even TLS)."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def accept():
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return listener, accepted


def test_a_silent_server_at_the_handshake(tmp_path, libdir, nbdkit):
    """The vSphere port accepts and never completes TLS: the open gives
    up after vsphere-timeout=, and SIGTERM ends nbdkit at once."""
    from test_changed_since_errors import VSPHERE, loopback_disk
    listener, accepted = silent_listener()
    with listening(listener):
        port = listener.getsockname()[1]
        config = loopback_disk(tmp_path, port)
        args = ["server=127.0.0.1", "port=%d" % port, "changed-since=*",
                "vsphere-timeout=1"] + VSPHERE
        server = nbdkit(*args, config=config, readonly=True)
        assert refused_open(server) == (
            "vSphere 127.0.0.1:%d did not answer within 1 s "
            "(vsphere-timeout=)" % port)
        before = len(accepted)
        server = nbdkit(*args[:3], *VSPHERE, config=config, readonly=True)
        client = open_in_background(server)
        try:
            wait_until(lambda: len(accepted) > before,
                       "no connection to vSphere")
            server.proc.send_signal(signal.SIGTERM)
            server.proc.wait(timeout=2)
        finally:
            client.kill()
            client.wait()
    assert_no_traceback(server.stderr)
    server.assert_survived()


def test_vsphere_timeout_is_checked_at_startup(tmp_path, libdir):
    from bed import run_nbdkit
    from test_changed_since_errors import VSPHERE
    result = run_nbdkit(tmp_path, libdir, ["server=esxi.example.com",
                                           "changed-since=*",
                                           "vsphere-timeout=soon"] + VSPHERE,
                        options=["-r"], verbose=False, run="true")
    assert result.returncode == 1
    assert error_lines(result.stderr) == [
        "nbdkit: error: vsphere-timeout: expected a number of seconds "
        "greater than 0, not soon"]


def test_a_file_fault_on_a_change_id_needs_a_full_copy(vcsim, nbdkit):
    """ESXi answers a changeId from before a change-tracking reset with a
    FileFault: one line saying a full copy is needed, never an empty
    delta."""
    bed, snapshot, before = tracked_bed(vcsim, nbdkit)
    bed.set_hostile("raw", status=500, body=(
        '<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://'
        'schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/'
        '2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault><faultcode>'
        'ServerFaultCode</faultcode><faultstring>Error caused by file '
        '/vmfs/volumes/ds/vm/vm.vmdk</faultstring><detail><FileFaultFault '
        'xmlns="urn:vim25" xsi:type="FileFault"><file>/vmfs/volumes/ds/vm/'
        'vm.vmdk</file></FileFaultFault></detail></soapenv:Fault>'
        '</soapenv:Body></soapenv:Envelope>'))
    server = served(nbdkit, bed, "changed-since=" + before,
                    "snapshot=" + snapshot)
    assert refused_open(server) == (
        "changed-since: vSphere QueryChangedDiskAreas: [datastore1] "
        "vm/vm.vmdk: FileFault: Error caused by file /vmfs/volumes/ds/vm/"
        "vm.vmdk (change tracking may have been reset since changeId %s): a "
        "full copy is needed: make one with changed-since=* and use the "
        "changeId it reports" % before)


def test_a_session_ended_during_paging_logs_in_again(vcsim, nbdkit):
    """NotAuthenticated in answer to QueryChangedDiskAreas (the session
    expired during a long pass): one new log-in, the same call again."""
    bed, snapshot, before = tracked_bed(vcsim, nbdkit)
    bed.set_hostile("raw", calls=1, status=500, body=(
        '<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://'
        'schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/'
        '2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault><faultcode>'
        'ServerFaultCode</faultcode><faultstring>The session is not '
        'authenticated.</faultstring><detail><NotAuthenticatedFault '
        'xmlns="urn:vim25" xsi:type="NotAuthenticated"><object type='
        '"SessionManager">SessionManager</object><privilegeId>System.View'
        '</privilegeId></NotAuthenticatedFault></detail></soapenv:Fault>'
        '</soapenv:Body></soapenv:Envelope>'))
    server = served(nbdkit, bed, "changed-since=" + before,
                    "snapshot=" + snapshot)
    h = server.connect()
    assert h.pread(4096, MiB) == DATA
    h.shutdown()
    server.stop()
    assert bed.calls("Login") == 2
    assert bed.calls("QueryChangedDiskAreas") == 2
    assert error_lines(server.stderr) == []
