"""The thumbprint tool agrees with openssl on a real TLS server."""

import socket
import ssl
import subprocess
import sys
import threading

from bed import ROOT


from bed.tls import tls_server


def run_tool(address):
    return subprocess.run([sys.executable, "-m", "vddkpy.thumbprint",
                           address], capture_output=True, text=True,
                          cwd=ROOT, timeout=30)


def test_matches_openssl(tmp_path):
    with tls_server(tmp_path) as server:
        result = run_tool("127.0.0.1:%d" % server.port)
    expected = subprocess.run(
        ["openssl", "x509", "-in", str(server.cert), "-noout", "-fingerprint",
         "-sha1"], capture_output=True, text=True, check=True).stdout
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected.strip().split("=", 1)[1]


def test_unreachable_and_not_tls(tmp_path):
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    result = run_tool("127.0.0.1:%d" % port)
    assert result.returncode == 1
    assert result.stderr.startswith(
        "vddkpy.thumbprint: cannot connect to 127.0.0.1:%d: " % port)
    assert "Traceback" not in result.stderr

    plain = socket.create_server(("127.0.0.1", 0))

    def answer_plaintext():
        conn, _ = plain.accept()
        conn.sendall(b"220 not TLS\r\n" * 10)
        conn.close()

    threading.Thread(target=answer_plaintext, daemon=True).start()
    with plain:
        result = run_tool("127.0.0.1:%d" % plain.getsockname()[1])
    assert result.returncode == 1
    assert "did not complete a TLS handshake" in result.stderr
    assert "Traceback" not in result.stderr
