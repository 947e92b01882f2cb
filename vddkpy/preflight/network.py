"""What the check asks a vSphere server over the network itself: TCP to
its ports, and its version from the HTTPS API (``RetrieveServiceContent``
on ``/sdk``, which vSphere answers without a login, as pyvmomi's and
govc's first call)."""

import http.client
import re
import socket
import ssl
import xml.etree.ElementTree as ElementTree

TIMEOUT = 10.0
API_PORT = 443
# ServiceContent is a few KiB; a larger answer is not vSphere's.
MAX_ANSWER = 1 << 20
NFC_PORT = 902

_ABOUT_REQUEST = b"""<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">
<soapenv:Body><RetrieveServiceContent xmlns="urn:vim25">
<_this type="ServiceInstance">ServiceInstance</_this>
</RetrieveServiceContent></soapenv:Body></soapenv:Envelope>"""
_VIM = "{urn:vim25}"


def tcp_problem(host, port):
    """Why a TCP connection to host:port fails, or None."""
    try:
        socket.create_connection((host, port), timeout=TIMEOUT).close()
    except socket.timeout:
        return "no answer from %s:%d within %d s" % (host, port, TIMEOUT)
    except OSError as e:
        return "cannot connect to %s:%d: %s" % (host, port,
                                                e.strerror or e)
    return None


class Timeout(ValueError):
    """The server did not answer completely in time."""


class About:
    """The server's ``ServiceContent.about``: product, version, API type
    (``HostAgent`` for ESXi, ``VirtualCenter`` for vCenter)."""

    def __init__(self, element):
        def text(name):
            return element.findtext(_VIM + name) or ""
        self.full_name = text("fullName")
        self.version = text("version")
        self.api_type = text("apiType")

    @property
    def is_vcenter(self):
        return self.api_type == "VirtualCenter"

    def release(self):
        """(major, minor) of the version, or None."""
        match = re.match(r"(\d+)\.(\d+)", self.version)
        return (int(match.group(1)), int(match.group(2))) if match else None


def about(host, port):
    """The server's About, or raise OSError/ValueError saying why not."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE     # the thumbprint step checks it
    connection = http.client.HTTPSConnection(host, port, timeout=TIMEOUT,
                                             context=context)
    try:
        connection.request("POST", "/sdk", _ABOUT_REQUEST, {
            "Content-Type": "text/xml; charset=utf-8",
            "SOAPAction": "urn:vim25"})
        response = connection.getresponse()
        body = _capped_body(response)
    except http.client.HTTPException as e:    # not HTTP at all
        raise ValueError("POST /sdk: %s" % (e or type(e).__name__)) \
            from None
    finally:
        connection.close()
    if body is None:
        raise ValueError("POST /sdk answered more than %d KiB: not vSphere's "
                         "ServiceContent" % (MAX_ANSWER // 1024))
    if response.status != 200:
        raise ValueError("POST /sdk answered HTTP %d" % response.status)
    try:
        element = ElementTree.fromstring(body).find(".//%sabout" % _VIM)
    except ElementTree.ParseError as e:
        raise ValueError("POST /sdk answered no XML (%s)" % e) from None
    if element is None:
        raise ValueError("POST /sdk answered no ServiceContent.about")
    return About(element)


def _capped_body(response):
    """The body, read in pieces; None when it is longer than MAX_ANSWER
    (whatever Content-Length says: it may be absent or a lie)."""
    if response.length is not None and response.length > MAX_ANSWER:
        return None
    pieces, size = [], 0
    while True:
        piece = response.read1(64 * 1024)
        if not piece:
            return b"".join(pieces)
        size += len(piece)
        if size > MAX_ANSWER:
            return None
        pieces.append(piece)
