"""changed-since=: every way it can be refused is one exact error line from
a real nbdkit, without a traceback, before a byte is served; and the TLS
session to vSphere is pinned to thumbprint= before anything is sent."""

import socket
import ssl
import subprocess
import threading

import pytest

from bed import (REMOTE_DISK, THUMB, assert_no_traceback, error_lines,
                 listening, random_vmdk, run_nbdkit, server_config)

VSPHERE = ["user=root", "password=sekret", "vm=moref=2",
           "thumbprint=%s" % THUMB, "file=" + REMOTE_DISK]


def startup_error(tmp_path, libdir, args, options=("-r",), env=None):
    result = run_nbdkit(tmp_path, libdir, args, options=options,
                        verbose=False, env=env, run="true")
    assert result.returncode == 1, result.stderr
    assert_no_traceback(result.stderr)
    return error_lines(result.stderr)


@pytest.mark.parametrize("args, options, message", [
    (["file=/dev/null", "changed-since=52 a/4"], ("-r",),
     "changed-since needs a vSphere server (server=, user=, password= or "
     "cookie=, thumbprint=, vm=moref=): changed block tracking is "
     "vSphere's"),
    (["server=esxi.example.com", "changed-since=52 a/4"] + VSPHERE, (),
     "changed-since serves a read-only export: run nbdkit with -r "
     "(--readonly)"),
    (["server=esxi.example.com", "changed-since="] + VSPHERE, ("-r",),
     "changed-since: expected a changeId (from the last copy) or * (the "
     "whole disk), not an empty string"),
    (["server=esxi.example.com", "changed-since=*", "user=root",
      "password=sekret", "vm=moref=2", "file=" + REMOTE_DISK], ("-r",),
     "changed-since needs thumbprint= (the vSphere server's certificate is "
     "checked against it; vddkpy-thumbprint esxi.example.com prints it)"),
    (["server=esxi.example.com", "changed-since=*", "user=root",
      "password=sekret", "vm=2", "thumbprint=%s" % THUMB,
      "file=" + REMOTE_DISK], ("-r",),
     "changed-since needs vm=moref=ID, not vm=2"),
    (["server=esxi.example.com", "changed-since=*", "single-link=true"]
     + VSPHERE, ("-r",),
     "changed-since cannot be used with single-link=true (vSphere tracks "
     "the whole disk, not one link)"),
])
def test_refused_at_startup(tmp_path, libdir, args, options, message):
    lines = startup_error(tmp_path, libdir, args, options)
    assert lines == ["nbdkit: error: " + message]


def test_readonly_in_a_cluster_of_options(tmp_path, libdir):
    """-fr is -f and -r, as nbdkit reads its options: accepted (no client
    connects, so vSphere is never asked)."""
    result = run_nbdkit(tmp_path, libdir, ["server=esxi.example.com",
                                           "changed-since=*"] + VSPHERE,
                        options=["-fr"], verbose=False, run="true")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_pyvmomi_missing(tmp_path, libdir):
    """A Python without python3-pyvmomi: an import hook makes its import
    fail exactly as it does when the package is not installed."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import sys\n"
        "class HidePyvmomi:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] in ('pyVmomi', 'pyVim'):\n"
        "            raise ModuleNotFoundError('No module named %r' % name,\n"
        "                                      name=name)\n"
        "sys.meta_path.insert(0, HidePyvmomi())\n")
    lines = startup_error(
        tmp_path, libdir, ["server=esxi.example.com", "changed-since=*"]
        + VSPHERE, env={"PYTHONPATH": str(hide)})
    version = subprocess.run(
        ["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True, text=True, check=True).stdout.strip()
    assert lines == ["nbdkit: error: changed-since needs pyvmomi, which is "
                     "not installed for Python %s: apt install "
                     "python3-pyvmomi" % version]


def test_dump_plugin_says_changed_since(tmp_path, libdir):
    result = run_nbdkit(tmp_path, libdir, [], options=["--dump-plugin"],
                        verbose=False)
    assert result.returncode == 0, result.stderr
    assert "vddkpy_changed_since=1" in result.stdout.splitlines()


# -- at open: the VDDK side works, vSphere does not ---------------------------

def loopback_disk(tmp_path, port):
    """A disk on the stand-in's host 127.0.0.1:``port`` (VDDK reaches it);
    returns the stand-in config."""
    datastore = tmp_path / "datastore1"
    (datastore / "Fedora").mkdir(parents=True)
    random_vmdk(datastore / "Fedora" / "Fedora.vmdk", 1 << 20)
    return (server_config(datastore)
            .replace("esxi.example.com", "127.0.0.1")
            .replace("port 443", "port %d" % port))


def open_error(tmp_path, libdir, port):
    args = ["server=127.0.0.1", "port=%d" % port,
            "changed-since=*"] + VSPHERE
    result = run_nbdkit(tmp_path, libdir, args, options=["-r"],
                        config=loopback_disk(tmp_path, port), verbose=False,
                        run='nbdinfo --size "$uri"')
    assert result.returncode != 0, result.stderr
    assert_no_traceback(result.stderr)
    return [line for line in error_lines(result.stderr)
            if line.startswith("nbdkit: ")]


def test_server_unreachable(tmp_path, libdir):
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    lines = open_error(tmp_path, libdir, port)
    assert lines[0].endswith(
        "error: cannot reach vSphere 127.0.0.1:%d: Connection refused" % port)


def tls_listener(tmp_path):
    """A TLS server with a certificate of its own; records what a client
    sent it after the handshake."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048",
                    "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    fingerprint = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-fingerprint",
         "-sha1"], capture_output=True, text=True, check=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    received = []

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    received.append(tls.recv(65536))
            except (ssl.SSLError, OSError):
                received.append(b"")

    threading.Thread(target=serve, daemon=True).start()
    return listener, fingerprint.stdout.strip().split("=", 1)[1], received


def test_wrong_thumbprint_sends_nothing(tmp_path, libdir):
    listener, actual, received = tls_listener(tmp_path)
    with listening(listener):
        port = listener.getsockname()[1]
        lines = open_error(tmp_path, libdir, port)
    assert lines[0].endswith(
        "error: vSphere 127.0.0.1:%d has certificate thumbprint %s, not "
        "thumbprint=%s (vddkpy-thumbprint 127.0.0.1:%d prints it)"
        % (port, actual, THUMB, port))
    assert received and not any(received), received


def test_every_handshake_is_pinned(tmp_path):
    """http.client (under every pyvmomi) reconnects by itself when a
    server closes a kept-alive connection; the pinned context checks that
    handshake too, before the request is sent: here the second connection
    meets another certificate."""
    import http.client
    import sys
    from bed import ROOT
    from vddkpy.vsphere.session import PinnedContext, ThumbprintMismatch
    contexts, prints = [], []
    for name in ("a", "b"):
        key, cert = tmp_path / (name + ".key"), tmp_path / (name + ".pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048",
                        "-nodes", "-days", "1", "-subj", "/CN=" + name,
                        "-keyout", str(key), "-out", str(cert)],
                       check=True, capture_output=True)
        prints.append(subprocess.run(
            ["openssl", "x509", "-in", str(cert), "-noout", "-fingerprint",
             "-sha1"], capture_output=True, text=True,
            check=True).stdout.strip().split("=", 1)[1])
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        contexts.append(context)
    listener = socket.create_server(("127.0.0.1", 0))
    requests = []

    def serve():
        for context in contexts:
            conn, _ = listener.accept()
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    data = b""
                    while not data.endswith((b"first", b"second")):
                        chunk = tls.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    requests.append(data)
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                                b"Connection: close\r\n\r\nok")
            except (ssl.SSLError, OSError):
                requests.append(b"")

    threading.Thread(target=serve, daemon=True).start()
    with listening(listener):
        conn = http.client.HTTPSConnection(
            "127.0.0.1", listener.getsockname()[1],
            context=PinnedContext(prints[0]), timeout=30)
        conn.request("POST", "/sdk", b"first")
        assert conn.getresponse().read() == b"ok"
        with pytest.raises(ThumbprintMismatch) as e:
            conn.request("POST", "/sdk", b"second")
    assert e.value.args[0] == ("certificate thumbprint %s, not "
                                 "thumbprint=%s" % (prints[1], prints[0]))
    assert requests[0].startswith(b"POST /sdk ")
    assert len(requests) == 1 or requests[1] == b""
