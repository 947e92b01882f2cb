"""Print a server's SHA1 certificate thumbprint in VDDK's form.

    vddkpy thumbprint HOST[:PORT]

VDDK wants ``thumbprint=XX:XX:...`` (20 hex pairs).  This replaces the
``openssl s_client | openssl x509 -fingerprint -sha1`` pipeline that
users and tools such as CloudStack run by hand.  The certificate is not
verified (that is what the thumbprint is for).
"""

import hashlib
import socket
import ssl
import sys

DEFAULT_PORT = 443


class ThumbprintError(Exception):
    pass


def parse_address(text):
    """HOST, HOST:PORT, [V6ADDR] or [V6ADDR]:PORT -> (host, port)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if not host:
        raise ThumbprintError("no host name in %r" % text)
    if not port:
        return host, DEFAULT_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ThumbprintError("invalid port %r" % port)
    return host, int(port)


def format_thumbprint(der):
    digest = hashlib.sha1(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def thumbprint(host, port=DEFAULT_PORT, timeout=10.0):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        raise ThumbprintError("cannot connect to %s:%d: %s"
                              % (host, port, e.strerror or e)) from None
    with sock:
        try:
            with context.wrap_socket(sock, server_hostname=host) as tls:
                der = tls.getpeercert(binary_form=True)
        except (ssl.SSLError, OSError) as e:
            raise ThumbprintError("%s:%d did not complete a TLS handshake "
                                  "(is it a TLS port?): %s"
                                  % (host, port, e)) from None
    return format_thumbprint(der)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print("usage: vddkpy thumbprint HOST[:PORT]",
              file=sys.stderr)
        return 2
    try:
        print(thumbprint(*parse_address(argv[0])))
    except ThumbprintError as e:
        print("vddkpy.thumbprint: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
