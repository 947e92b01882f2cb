"""The connections the session keeps for QueryChangedDiskAreas: one that
the server closed while it was idle (as vCenter's proxy does) is replaced,
not taken for vSphere being unreachable; those made ahead (``prepare``)
are the ones the posts use, and one that could not be made is not kept."""

import threading

import pytest

from bed.tls import TlsServer
from test_hostile_vsphere import wait_until
from vddkpy.errors import PluginError
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


def counting_server(tmp_path):
    """A TlsServer whose connections each answer requests until closed;
    ``server.handshakes`` counts the connections made."""
    server = TlsServer(tmp_path, None)
    server.lock, server.requests, server.handshakes = threading.Lock(), [], 0

    def serve(tls):
        with server.lock:
            server.handshakes += 1
        pending = b""
        while True:
            while b"\r\n\r\n" not in pending:
                data = tls.recv(4096)
                if not data:
                    return
                pending += data
            head, _, pending = pending.partition(b"\r\n\r\n")
            length = int(next(
                line.split(b":")[1] for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")))
            while len(pending) < length:
                pending += tls.recv(4096)
            body, pending = pending[:length], pending[length:]
            with server.lock:
                server.requests.append(body)
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                        % (len(ANSWER), ANSWER))
    server.serve = serve
    return server


def test_connections_prepared_ahead_are_the_ones_posts_use(tmp_path):
    """prepare(3) makes three connections (handshakes done, no request
    sent); three posts at once then use them and make none of their own."""
    server = counting_server(tmp_path)
    try:
        session = VsphereSession(Params(server))
        session.prepare(3)
        session.prepare(2)          # three already: nothing more
        wait_until(lambda: len(session._idle) == 3, "no connection kept")
        assert (server.handshakes, server.requests) == (3, [])
        threads = [threading.Thread(target=session.post,
                                    args=(Stub(), b"%d" % i, lambda d: None))
                   for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert server.handshakes == 3
        assert sorted(server.requests) == [b"0", b"1", b"2"]
        assert session.close() is None
        assert session._idle == []
    finally:
        server.close()


def test_a_connection_that_cannot_be_prepared_is_not_kept(tmp_path):
    """The pin does not match: nothing is kept, and the post says why."""
    server = counting_server(tmp_path)
    params = Params(server)
    params.thumbprint = "00:" * 19 + "00"
    try:
        session = VsphereSession(params)
        session.prepare(2)
        wait_until(lambda: session._opening == 0, "still connecting")
        assert session._idle == [] and server.requests == []
        with pytest.raises(PluginError) as e:
            session._guarded(session.post, Stub(), b"x", lambda d: None)
        assert str(e.value).startswith(
            "vSphere 127.0.0.1:%d has certificate thumbprint %s, not "
            "thumbprint=%s" % (server.port, server.thumbprint,
                               params.thumbprint))
    finally:
        server.close()


def test_a_log_in_that_ends_after_close_is_logged_out(vcsim):
    """close() does not wait for a stalled log-in; the session it makes
    is logged out as soon as it is made, and a closed session makes no
    other (a backup tool may keep the object)."""
    bed = vcsim()
    params = Params(bed)
    params.server, params.user = bed.host, bed.user
    params.password = bed.password
    sessions = bed.sessions()
    bed.reset()
    bed.set_latency("Login", 5)
    session = VsphereSession(params)
    failures = []

    def log_in():
        with pytest.raises(PluginError) as e:
            session.log_in()
        failures.append(str(e.value))
    thread = threading.Thread(target=log_in)
    thread.start()
    wait_until(lambda: bed.calls("Login") == 1, "no Login")
    assert session.close() == (
        "a log-in to vSphere %s:%d was still under way (its session is "
        "logged out if it is made before this process ends)"
        % (bed.host, bed.port))
    thread.join()
    closed = "the session with vSphere %s:%d is closed" % (bed.host,
                                                           bed.port)
    assert failures == [closed]
    assert (bed.calls("Login"), bed.calls("Logout")) == (1, 1)
    assert bed.sessions() == sessions
    with pytest.raises(PluginError) as e:
        session.call(lambda stub: None)
    assert str(e.value) == closed
    assert bed.calls("Login") == 1
