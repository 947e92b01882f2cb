"""A real TLS server on 127.0.0.1 with a fresh self-signed certificate."""

import socket
import ssl
import subprocess
import threading

from vddkpy.vsphere.thumbprint import format_thumbprint

from .core import stop_listening


class TlsServer:
    """Accepts connections until ``close()`` (or the end of its ``with``
    block); each, once its TLS handshake is done, goes to ``serve(tls)``
    on a thread of its own (a failure there just ends the connection).
    ``port``, ``cert`` (the PEM file) and its ``thumbprint`` as
    thumbprint= takes it; ``stopped`` is set by ``close()``, for a
    ``serve`` that goes on until then."""

    def __init__(self, directory, serve, name="tls"):
        key, self.cert = (directory / ("%s-key.pem" % name),
                          directory / ("%s-cert.pem" % name))
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048",
                        "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                        "-keyout", str(key), "-out", str(self.cert)],
                       check=True, capture_output=True)
        self.thumbprint = format_thumbprint(
            ssl.PEM_cert_to_DER_cert(self.cert.read_text()))
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(self.cert, key)
        self.serve = serve
        self.stopped = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,),
                             daemon=True).start()

    def _serve(self, conn):
        try:
            with self.context.wrap_socket(conn, server_side=True) as tls:
                self.serve(tls)
        except (OSError, ssl.SSLError):
            conn.close()

    def close(self):
        self.stopped.set()
        stop_listening(self.listener)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def tls_server(tmp_path):
    """A TlsServer that reads at most a byte of each connection.  Its
    ``close`` (not the listening socket's) ends its thread: a socket
    closed while that thread waits in accept() keeps it waiting."""
    return TlsServer(tmp_path, lambda tls: tls.recv(1))
