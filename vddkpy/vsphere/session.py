"""A vSphere API session (pyvmomi) for changed block tracking.

pyvmomi is imported only when changed-since= is given, so a plain start-up
does not pay for it.  The TLS session is pinned to thumbprint=: pyvmomi's
own ``thumbprint=`` is not enough (6.7.1 checks it once per pooled
connection, not when http.client reconnects it; newer versions check it
only when CA verification failed, and SmartConnect's version probe never
does), so the check is made in the SSL context, on every handshake, before
a byte of a request is sent.  With a password the session logs in again
once when the server says it is no longer authenticated.
"""

import http.client
import socket
import ssl
import sys
import threading

from ..errors import PluginError
from .thumbprint import format_thumbprint

API_VERSION = "vim.version.version10"     # vSphere 6.0: has every call used
_COOKIE_NAME = "vmware_soap_session"


def pyvmomi_missing_message():
    return ("changed-since needs pyvmomi, which is not installed for Python "
            "%d.%d: apt install python3-pyvmomi" % sys.version_info[:2])


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


class VsphereSession:
    """One logged-in vSphere session, shared by a process's connections
    (each makes its own calls; nothing they learn is shared)."""

    def __init__(self, params):
        self.params = params
        self.address = "%s:%d" % (params.server, params.port or 443)
        self._lock = threading.Lock()
        self._stub = None
        self.vim, self.vmodl, self._adapter_class = import_pyvmomi()

    def call(self, function, *args, **kwargs):
        """function(*args, **kwargs) in a logged-in session: logs in first,
        and once more if the server says the session ended."""
        stub = self._logged_in()
        try:
            return self._guarded(function, stub, *args, **kwargs)
        except self.vim.fault.NotAuthenticated:
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
        except (OSError, http.client.HTTPException) as e:
            raise PluginError("cannot reach vSphere %s: %s"
                              % (self.address, _reason(e))) from None

    def _logged_in(self):
        with self._lock:
            if self._stub is None:
                self._stub = self._guarded(self._login)
            return self._stub

    def _login(self):
        p = self.params
        stub = self._adapter_class(
            host=p.server, port=p.port or 443, version=API_VERSION,
            sslContext=PinnedContext(p.thumbprint))
        content = self.vim.ServiceInstance("ServiceInstance",
                                           stub).RetrieveContent()
        if p.cookie is not None:
            stub.cookie = _cookie_header(p.cookie)
        else:
            try:
                content.sessionManager.Login(p.user, p.password)
            except self.vim.fault.InvalidLogin as e:
                raise PluginError("vSphere %s refused the login of user %s: "
                                  "%s" % (self.address, p.user, e.msg)) \
                    from None
        return stub


def _cookie_header(cookie):
    """cookie= is the value of the vmware_soap_session cookie (or the
    whole NAME=VALUE)."""
    if cookie.startswith(_COOKIE_NAME + "="):
        return cookie
    return '%s="%s"' % (_COOKIE_NAME, cookie.strip('"'))


def fault_text(fault):
    """A vSphere fault as ``Name: message``."""
    message = getattr(fault, "msg", None) or getattr(fault, "faultMessage",
                                                     None) or ""
    name = type(fault).__name__.rpartition(".")[2]
    return "%s: %s" % (name, message) if message else name


def _reason(error):
    if isinstance(error, socket.gaierror):
        return error.strerror or str(error)
    return getattr(error, "strerror", None) or str(error)
