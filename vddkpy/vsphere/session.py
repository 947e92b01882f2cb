"""A vSphere API session (pyvmomi) for changed block tracking.

pyvmomi is imported only when changed-since= is given, so a plain start-up
does not pay for it.  The TLS session is pinned to thumbprint=: pyvmomi's
own ``thumbprint=`` is not enough (6.7.1 checks it once per pooled
connection, not when http.client reconnects it; newer versions check it
only when CA verification failed, and SmartConnect's version probe never
does), so the check is made in the SSL context, on every handshake, before
a byte of a request is sent.  With a password the session logs in again
once when the server says it is no longer authenticated.

Nothing waits for vSphere without a bound: every socket operation
(connect, TLS handshake, sending, each read of an answer) times out after
vsphere-timeout= seconds, and each call as a whole (log-in included) is
made on a thread of its own that the caller stops waiting for after the
same time, or at once when ``interrupted()`` says so (nbdkit is shutting
down, or the client went away), so a stalled server never holds up a
connection or nbdkit's exit.

A session logged in with a password is logged out when its user is done
(``close``; one whose log-in is still under way then, as soon as it is
made; a closed session logs in no more): vSphere keeps an abandoned
session until it times out (30 minutes by default on vCenter), and a
host holding too many refuses new log-ins, which a backup tool starting
nbdkit per disk and per round would soon reach.  cookie='s session is
whoever gave it's, and stays.
"""

import http.client
import socket
import ssl
import threading

from ..errors import PluginError
from ..printable import printable
from . import (address, pyvmomi_missing_message,  # noqa: F401
               pyvmomi_problem, stopped_waiting)
from .background import Background, Stopped, TimedOut
from .thumbprint import format_thumbprint

DEFAULT_TIMEOUT = 120     # seconds: vsphere-timeout='s default
_READ_SIZE = 64 * 1024
_IDLE_CONNECTIONS = 8     # post()'s connections kept alive between calls
LOGOUT_SECONDS = 1        # the most close() waits for vSphere's goodbye
_LOCK_SECONDS = 0.2       # and for the session's lock (held by a log-in)

API_VERSION = "vim.version.version10"     # vSphere 6.0: has every call used
_COOKIE_NAME = "vmware_soap_session"


def import_pyvmomi():
    """(vim, vmodl, SoapStubAdapter), or PluginError saying what to
    install."""
    try:
        from pyVmomi import SoapStubAdapter, vim, vmodl
    except ImportError:
        raise PluginError(pyvmomi_missing_message()) from None
    return vim, vmodl, SoapStubAdapter


def _normal(thumbprint):
    return thumbprint.replace(":", "").upper()


class ThumbprintMismatch(ssl.SSLError):
    def __init__(self, expected, actual):
        super().__init__("certificate thumbprint %s, not thumbprint=%s"
                         % (actual, expected))


class PinnedContext(ssl.SSLContext):
    """TLS that trusts exactly the certificate whose SHA-1 is
    ``expected``, checked in every handshake this context makes."""

    def __new__(cls, expected):
        context = super().__new__(cls, ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE     # the pin replaces the CA
        context.expected = expected
        return context

    def wrap_socket(self, sock, *args, **kwargs):
        tls = super().wrap_socket(sock, *args, **kwargs)
        der = tls.getpeercert(binary_form=True)
        if _normal(format_thumbprint(der)) != _normal(self.expected):
            tls.close()
            raise ThumbprintMismatch(self.expected, format_thumbprint(der))
        return tls


class SessionEnded(Exception):
    """The server answered NotAuthenticated (to a request made without
    pyvmomi)."""


class UnexpectedStatus(Exception):
    """An HTTP answer that is neither a SOAP result nor a SOAP fault."""

    def __init__(self, status, reason, location):
        super().__init__(status, reason, location)
        self.status, self.reason, self.location = status, reason, location

    def text(self):
        text = "HTTP %d %s" % (self.status, printable(self.reason or ""))
        if self.location:
            text += " (to %s)" % printable(self.location)
        return text


class VsphereSession:
    """One logged-in vSphere session, shared by a process's connections
    (each makes its own calls; nothing they learn is shared).
    ``interrupted()``, if given, says when to stop waiting for vSphere."""

    def __init__(self, params, interrupted=None):
        self.params = params
        self.address = address(params)
        self.timeout = getattr(params, "vsphere_timeout", None) \
            or DEFAULT_TIMEOUT
        self.interrupted = interrupted
        self._lock = threading.Lock()   # held for a whole log-in
        self._stub = None
        self._session_manager = None    # the logged-in stub's
        self._context = PinnedContext(params.thumbprint)
        self._pool_lock = threading.Lock()
        self._idle = []             # post()'s connections, kept alive
        self._opening = 0           # and those prepare() has under way
        self._closed = False
        self.vim, self.vmodl, self._adapter_class = import_pyvmomi()

    def call(self, function, *args, **kwargs):
        """function(stub, *args, **kwargs) in a logged-in session: logs in
        first, and once more if the server says the session ended; all of
        it within vsphere-timeout= seconds."""
        return self._bounded(self._call, function, args, kwargs)

    def log_in(self):
        """Log in now if not logged in yet (within vsphere-timeout=)."""
        self._bounded(self._logged_in)

    def _bounded(self, function, *args):
        """function(*args) on a thread of its own, waited for at most
        self.timeout seconds, and no longer once interrupted()."""
        if self.interrupted is not None and self.interrupted():
            raise stopped_waiting(self.params)
        try:
            return Background(function, *args).result(self.interrupted,
                                                      self.timeout)
        except Stopped:
            raise stopped_waiting(self.params) from None
        except TimedOut:
            raise self._timed_out() from None

    def _timed_out(self):
        return PluginError("vSphere %s did not answer within %g s "
                           "(vsphere-timeout=)" % (self.address, self.timeout))

    def _call(self, function, args, kwargs):
        stub = self._logged_in()
        try:
            return self._guarded(function, stub, *args, **kwargs)
        except (self.vim.fault.NotAuthenticated, SessionEnded):
            if self.params.cookie is not None:
                raise PluginError("vSphere %s no longer accepts cookie= "
                                  "(its session has ended)"
                                  % self.address) from None
            with self._lock:
                if self._stub is stub:
                    self._stub = None
            return self._guarded(function, self._logged_in(), *args,
                                 **kwargs)

    def _guarded(self, function, *args, **kwargs):
        """function(*args, **kwargs), network failures said in one line.
        (Not a contextlib manager: it sets __traceback__ on exceptions
        passing through, which pyvmomi's faults refuse.)"""
        try:
            return function(*args, **kwargs)
        except ThumbprintMismatch as e:
            raise PluginError("vSphere %s has %s (vddkpy-thumbprint %s "
                              "prints it)" % (self.address, e.args[0],
                                              self.address)) from None
        except socket.timeout:
            raise self._timed_out() from None
        except (OSError, http.client.HTTPException) as e:
            raise PluginError("cannot reach vSphere %s: %s"
                              % (self.address, _reason(e))) from None
        except (PluginError, SessionEnded, UnexpectedStatus,
                self.vmodl.MethodFault):
            raise
        except Exception as e:      # pyvmomi on an answer it cannot read
            raise PluginError("vSphere %s gave an answer that cannot be "
                              "read (%s: %s)"
                              % (self.address, type(e).__name__,
                                 printable(str(e)[:200]))) from None

    def _logged_in(self):
        with self._lock:
            if self._closed:
                raise self._closed_error()
            if self._stub is None:
                stub = self._guarded(self._login)
                if self._closed:        # close() came during the log-in
                    self._log_out(stub)
                    raise self._closed_error()
                self._stub = stub
            return self._stub

    def _closed_error(self):
        return PluginError("the session with vSphere %s is closed"
                           % self.address)

    def _login(self):
        p = self.params
        stub = self._adapter_class(
            host=p.server, port=p.port or 443, version=API_VERSION,
            sslContext=self._context)
        # Every connection of the stub: connect, handshake, each read.
        stub.schemeArgs["timeout"] = self.timeout
        content = self.vim.ServiceInstance("ServiceInstance",
                                           stub).RetrieveContent()
        if p.cookie is not None:
            stub.cookie = _cookie_header(p.cookie)
        else:
            try:
                content.sessionManager.Login(p.user, p.password)
            except self.vim.fault.InvalidLogin as e:
                raise PluginError("vSphere %s refused the login of user %s: "
                                  "%s" % (self.address, printable(p.user),
                                          printable(e.msg or ""))) \
                    from None
        self._session_manager = content.sessionManager
        return stub

    def close(self):
        """Log out the session this object logged in (not cookie='s),
        waiting LOGOUT_SECONDS at most, even while nbdkit is stopping, and
        close the kept connections.  None, or why the log-out failed (one
        line): the session then ends when it times out, as it would have."""
        with self._pool_lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
        # The lock is held for a whole log-in: one still under way (vSphere
        # stalled) is not waited for.
        if not self._lock.acquire(timeout=_LOCK_SECONDS):
            return ("a log-in to vSphere %s was still under way (its "
                    "session is logged out if it is made before this "
                    "process ends)" % self.address)
        try:
            stub, self._stub = self._stub, None
        finally:
            self._lock.release()
        return self._log_out(stub)

    def _log_out(self, stub):
        """Log out ``stub``'s session if this object logged it in: None,
        or why not (one line)."""
        if stub is None or self.params.cookie is not None:
            return None
        try:
            Background(self._guarded, self._session_manager.Logout) \
                .result(timeout=LOGOUT_SECONDS)
        except TimedOut:
            return ("vSphere %s did not answer the log-out within %g s"
                    % (self.address, LOGOUT_SECONDS))
        except PluginError as e:            # (its text is escaped already)
            return str(e)
        except self.vmodl.MethodFault as e:
            return "vSphere %s refused the log-out: %s" % (
                self.address, printable(e.msg or type(e).__name__))
        return None

    def post(self, stub, body, sink):
        """POST the SOAP request ``body`` (bytes) in the session of
        ``stub``, on a pinned connection of this session's own (several
        threads may post at once: pyvmomi's stub is not made for that),
        handing the answer's bytes to ``sink`` as they arrive;
        UnexpectedStatus for an answer that is neither a result (200) nor
        a fault (500)."""
        connection, reused = self._connection()
        finished = False
        try:
            try:
                answer = self._send(connection, stub, body)
            except (ConnectionError, http.client.BadStatusLine,
                    ssl.SSLEOFError):
                if not reused:
                    raise
                # The server closed the kept connection while it was idle
                # (nothing was answered, so asking again is safe).
                connection.close()
                answer = self._send(connection, stub, body)
            cookie = answer.getheader("set-cookie")
            if cookie:
                stub.cookie = cookie
            if answer.status not in (200, 500):
                raise UnexpectedStatus(answer.status, answer.reason,
                                       answer.getheader("location"))
            while True:
                data = answer.read(_READ_SIZE)
                if not data:
                    break
                sink(data)
            finished = True
        finally:
            if not (finished and self._keep(connection)):
                connection.close()

    @staticmethod
    def _send(connection, stub, body):
        connection.request("POST", stub.path, body, {
            "Cookie": stub.cookie, "SOAPAction": stub.versionId,
            "Content-Type": "text/xml; charset=utf-8", "User-Agent": "vddkpy"})
        return connection.getresponse()

    def _connection(self):
        """(an idle connection of post(), True) or (a new one, False)."""
        with self._pool_lock:
            if self._idle:
                return self._idle.pop(), True
        return self._new_connection(), False

    def _new_connection(self):
        """A connection to vSphere, not yet made: the certificate pinned,
        every socket operation bounded by vsphere-timeout=."""
        return http.client.HTTPSConnection(
            self.params.server, self.params.port or 443,
            timeout=self.timeout, context=self._context)

    def _keep(self, connection):
        """Whether ``connection`` went to the idle ones (at most
        _IDLE_CONNECTIONS, none once closed)."""
        with self._pool_lock:
            kept = not self._closed and len(self._idle) < _IDLE_CONNECTIONS
            if kept:
                self._idle.append(connection)
        return kept

    def prepare(self, count):
        """Begin making connections for post() (TCP, the TLS handshake,
        the pin checked), each on a thread of its own, until ``count`` are
        kept or under way: a pass asks several ranges at once, each on a
        connection of its own, and the round trips of their handshakes can
        pass while the log-in and the lookup are asked.  A connection that
        cannot be made is not kept: post() then makes its own and says
        why."""
        with self._pool_lock:
            wanted = min(count, _IDLE_CONNECTIONS) - len(self._idle) \
                - self._opening
            self._opening += max(0, wanted)
        for _ in range(wanted):
            Background(self._make_connection)

    def _make_connection(self):
        connection = self._new_connection()
        try:
            connection.connect()
        except (OSError, http.client.HTTPException):
            connection.close()
            connection = None
        finally:
            with self._pool_lock:
                self._opening -= 1
        if connection is not None and not self._keep(connection):
            connection.close()


def _cookie_header(cookie):
    """cookie= is the value of the vmware_soap_session cookie (or the
    whole NAME=VALUE)."""
    if cookie.startswith(_COOKIE_NAME + "="):
        return cookie
    return '%s="%s"' % (_COOKIE_NAME, cookie.strip('"'))


def _reason(error):
    if isinstance(error, socket.gaierror):
        return printable(error.strerror or str(error))
    return printable(getattr(error, "strerror", None) or str(error))
