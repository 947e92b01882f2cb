"""NBD handshakes sent as raw bytes, for what libnbd will not send."""

import socket
import struct

NBD_OPT_GO, NBD_REP_ACK, NBD_REP_INFO = 7, 1, 3
OPTION_REPLY_MAGIC = 0x3E889045565A9


def _recv(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("server closed the connection")
        data += chunk
    return data


def negotiate_export(path, name):
    """Fixed-newstyle handshake asking NBD_OPT_GO for the raw bytes ``name``
    (libnbd sends only str).  Returns the final reply type: NBD_REP_ACK if
    the server opened the export, else its NBD_REP_ERR_* value."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(60)
        sock.connect(path)
        magic, opt_magic, _flags = struct.unpack(">8s8sH", _recv(sock, 18))
        assert (magic, opt_magic) == (b"NBDMAGIC", b"IHAVEOPT")
        sock.sendall(struct.pack(">I", 3))  # fixed newstyle, no zeroes
        data = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
        sock.sendall(b"IHAVEOPT" + struct.pack(">II", NBD_OPT_GO, len(data))
                     + data)
        while True:
            magic, option, reply, length = struct.unpack(
                ">QIII", _recv(sock, 20))
            assert (magic, option) == (OPTION_REPLY_MAGIC, NBD_OPT_GO)
            _recv(sock, length)
            if reply != NBD_REP_INFO:
                return reply
