"""``vddkpy check`` sends no credential to a server whose certificate does
not match thumbprint=: a man in the middle (a real TLS server with its own
certificate, forwarding to the simulated vCenter) records every byte the
check sends it, and sees no Login."""

import socket
import ssl
import subprocess
import sys
import threading

import pytest

from bed import ROOT, standin_env
from bed.tls import TlsServer


def run_check(tmp_path, args, config, options=()):
    return subprocess.run(
        [sys.executable, "-m", "vddkpy", "check"] + list(options) + args,
        cwd=ROOT, capture_output=True, text=True,
        env=standin_env(tmp_path, config), timeout=300)


def step(result, name):
    found = [line for line in result.stdout.splitlines()
             if line[5:].startswith(name + ": ")]
    assert len(found) == 1, result.stdout + result.stderr
    return found[0]


class ManInTheMiddle(TlsServer):
    """A TLS server with its own certificate forwarding each connection to
    ``upstream`` over TLS; ``received`` holds the plaintext the clients
    sent."""

    def __init__(self, directory, upstream):
        self.upstream = upstream
        self.received = bytearray()
        self._lock = threading.Lock()
        super().__init__(directory, self._relay, name="mitm")

    def _relay(self, client):
        upstream_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        upstream_context.check_hostname = False
        upstream_context.verify_mode = ssl.CERT_NONE
        server = upstream_context.wrap_socket(
            socket.create_connection(self.upstream))
        threading.Thread(target=self._pump, args=(server, client, False),
                         daemon=True).start()
        self._pump(client, server, True)

    def _pump(self, source, sink, record):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if record:
                    with self._lock:
                        self.received += data
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.close()
                except OSError:
                    pass


@pytest.fixture
def bed_behind_mitm(tmp_path, libdir, vcsim):
    """(the vcsim bed, the man in the middle in front of it, plugin
    arguments aimed at the man in the middle, the stand-in's config)."""
    bed = vcsim(password="sekret")
    mitm = ManInTheMiddle(tmp_path, (bed.host, bed.port))
    nfc = socket.create_server(("127.0.0.1", 0))
    nfc_port = nfc.getsockname()[1]
    # VDDK (the stand-in) reaches the server where the check does: through
    # the man in the middle, whose certificate it sees.
    config = bed.standin_config().replace(
        "  vm moref", "  nfc_port %d\n  vm moref" % nfc_port).replace(
        "  port %d\n" % bed.port, "  port %d\n" % mitm.port).replace(
        bed.thumbprint, mitm.thumbprint)
    args = [a for a in bed.plugin_args(password="sekret")
            if not a.startswith(("port=", "thumbprint="))] + [
        "port=%d" % mitm.port, "libdir=%s" % libdir, "transports=nbd",
        "nfchostport=%d" % nfc_port]
    yield bed, mitm, args, config
    mitm.close()
    nfc.close()


def test_no_thumbprint_prints_it_and_logs_in_nowhere(tmp_path,
                                                     bed_behind_mitm):
    """Without thumbprint= the check names the certificate it met and the
    parameter to add, and no request carries a login or the password."""
    bed, mitm, args, config = bed_behind_mitm
    result = run_check(tmp_path, args, config)
    assert result.returncode == 1, result.stdout + result.stderr
    assert step(result, "thumbprint") == (
        "FAIL thumbprint: no thumbprint= given; the server's certificate has "
        "%s; fix: thumbprint=%s" % (mitm.thumbprint, mitm.thumbprint))
    assert b"Login" not in mitm.received
    assert b"sekret" not in mitm.received
    assert bed.calls("Login") == 0


def test_other_certificate_gets_no_login(tmp_path, bed_behind_mitm):
    """thumbprint= names the real server's certificate; the man in the
    middle, with another one, gets no login, and the check says whose
    certificate it met."""
    bed, mitm, args, config = bed_behind_mitm
    result = run_check(tmp_path, args + ["thumbprint=%s" % bed.thumbprint,
                                         "changed-since=*"], config,
                       options=["-r"])
    assert result.returncode == 1, result.stdout + result.stderr
    assert step(result, "thumbprint") == (
        "FAIL thumbprint: the server's certificate has %s, thumbprint= says "
        "%s; fix: thumbprint=%s" % (mitm.thumbprint, bed.thumbprint,
                                    mitm.thumbprint))
    assert b"Login" not in mitm.received
    assert b"sekret" not in mitm.received
    assert bed.calls("Login") == 0
