"""The connections the session keeps for QueryChangedDiskAreas: one that
the server closed while it was idle (as vCenter's proxy does) is replaced,
not taken for vSphere being unreachable."""

import threading

from bed.tls import TlsServer
from vddkpy.vsphere.session import VsphereSession

ANSWER = b"<answer/>"


class Params:
    user = "root"
    password = "secret"
    cookie = None
    vsphere_timeout = 10

    def __init__(self, server):
        self.server, self.port = "127.0.0.1", server.port
        self.thumbprint = server.thumbprint


class Stub:
    path = "/sdk"
    cookie = 'vmware_soap_session="s"'
    versionId = '"urn:vim25/6.0"'


def answer_once(server):
    """Each connection: one request answered, then closed without a word
    (no "Connection: close")."""
    def serve(tls):
        request = b""
        while b"\r\n\r\n" not in request:
            request += tls.recv(4096)
        head, _, body = request.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")))
        while len(body) < length:
            body += tls.recv(4096)
        with server.lock:
            server.requests.append(body)
        tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(ANSWER), ANSWER))
    return serve


def test_a_kept_connection_closed_by_the_server_is_replaced(tmp_path):
    server = TlsServer(tmp_path, None)
    server.lock, server.requests = threading.Lock(), []
    server.serve = answer_once(server)
    try:
        session = VsphereSession(Params(server))
        answers = []
        for body in (b"first", b"second", b"third"):
            pieces = []
            session.post(Stub(), body, pieces.append)
            answers.append(b"".join(pieces))
    finally:
        server.close()
    assert answers == [ANSWER] * 3
    assert server.requests == [b"first", b"second", b"third"]
