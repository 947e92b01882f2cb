"""One disk's copy: the plugin serves the disk (as of the round's
snapshot) from an nbdkit child, read-only; the image is served by a
destination NBD server (nbdkit's file plugin for a raw file or a block
device, qemu-nbd for qcow2) or is an NBD URI; libnbd moves exactly the
areas asked for, several requests in flight on each side.  Areas that
read as zeros are written as zeros (holes where the destination can).

VDDK runs only in the nbdkit child: its OpenSSL never meets the Python
``ssl`` of this process, which talks to vSphere."""

import functools
import os
import select
import socket
import subprocess
import time

from .plan import requests
from ..printable import printable

IN_FLIGHT = 8                   # requests on each side of one disk
REQUEST_LIMIT = 4 << 20         # bytes, when a server names no maximum
ZERO_LIMIT = 1 << 30            # bytes of one zero request
STALL_SECONDS = 300             # no request finished for this long: failed
_POLL_SLICE = 0.5               # how often a waiting copy looks at cancel
EXIT_SECONDS = 300              # a server ends after VDDK's Close and Exit


class CopyError(Exception):
    """A disk's copy failed (the message is one line)."""


class Cancelled(Exception):
    """The round was interrupted, or another disk's copy failed."""


@functools.lru_cache(maxsize=None)
def plugin_command():
    """How nbdkit runs the plugin: this checkout's plugin/plugin.py when
    vddkpy runs from one, else the installed plugin under its own name
    ``vddkpy`` (``vddk`` may be upstream's C plugin) or as ``vddk``."""
    checkout = os.path.join(os.path.dirname(os.path.dirname(
        os.path.dirname(os.path.abspath(__file__)))), "plugin", "plugin.py")
    if os.path.exists(checkout):
        return ("python", checkout)
    from ..install.nbdkit_host import (Missing, nbdkit_path, plugin_script,
                                       plugindir)
    try:
        own = plugin_script(plugindir(nbdkit_path()), "vddkpy")
    except (Missing, OSError):
        own = None
    return ("vddkpy",) if own and os.access(own, os.X_OK) else ("vddk",)


def last_error(log):
    """The last error line a child wrote to ``log``, made printable: the
    last complete one (another of its threads may be halfway through a
    line of its own: nbdkit writes one in several pieces), else its last
    line."""
    try:
        with open(log, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = text.splitlines()
    written = lines if text.endswith("\n") else lines[:-1]
    errors = [line for line in written if "error" in line.lower()]
    return printable((errors or lines or [""])[-1].strip())


class Served:
    """An NBD server run as this process's own child, so that its exit
    status is seen: a server that fails after the last request (VDDK at
    close, qemu-nbd writing out its image, a crash) fails the copy.

    The server gets a socket already connected to us on stdin and stdout
    (``nbdkit -s``), or, given ``listen`` (a path in a private
    directory), a listening socket there that we are the first to
    connect to, handed over by systemd socket activation (qemu-nbd).
    ``secrets`` [(key, value)] reach it as ``key=-FD``, through pipes
    only it inherits: never in a file, never on its command line."""

    def __init__(self, argv, log, name, secrets=(), listen=None):
        import nbd
        self.log = log
        self.name = name
        self.process = None
        try:
            ours, theirs = _server_socket(listen)
        except OSError as e:
            raise CopyError("%s: %s" % (name, printable(str(e)))) from None
        pipes = [os.pipe() for _ in secrets]
        argv = list(argv) + ["%s=-%d" % (key, read) for (key, _), (read, _)
                             in zip(secrets, pipes)]
        if listen is not None:
            argv = _socket_activated(argv, theirs.fileno())
        inherited = [read for read, _ in pipes] + \
            ([theirs.fileno()] if listen is not None else [])
        stdio = theirs if listen is None else subprocess.DEVNULL
        try:
            with open(log, "ab") as stderr:
                self.process = subprocess.Popen(
                    argv, stdin=stdio, stdout=stdio, stderr=stderr,
                    pass_fds=inherited)
        except OSError as e:
            ours.close()
            raise CopyError("%s: %s" % (argv[0], printable(str(e)))) \
                from None
        finally:
            # Only the server holds its end: when it dies, we see it.
            theirs.close()
            for read, write in pipes:
                os.close(read)
            for (_, value), (_, write) in zip(secrets, pipes):
                _write_secret(write, value)
        self.handle = nbd.NBD()
        try:
            self.handle.connect_socket(ours.detach())
        except nbd.Error as e:
            self.close()
            raise CopyError("%s could not start: %s" % (
                name, last_error(log) or printable(str(e)))) from None

    def close(self):
        """Disconnect and reap the server (each wait bounded): None when it
        exited cleanly, else what went wrong, in one line."""
        import nbd
        deadline = time.monotonic() + EXIT_SECONDS
        try:
            self.handle.aio_disconnect(0)
            while not (self.handle.aio_is_closed() or
                       self.handle.aio_is_dead()) and \
                    time.monotonic() < deadline:
                self.handle.poll(int(_POLL_SLICE * 1000))
        except nbd.Error:
            pass                # it is gone: its exit status says why
        try:
            status = self.process.wait(max(0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return "%s did not exit within %d s" % (self.name, EXIT_SECONDS)
        if status < 0:
            return "%s was killed by signal %d" % (self.name, -status)
        if status > 0:
            reason = last_error(self.log)
            return "%s exited with status %d%s" % (
                self.name, status, ": " + reason if reason else "")
        return None


def _server_socket(listen):
    """(our connected socket, the server's end): a socket pair, or a
    socket listening on ``listen`` with our connection already queued
    (no wait for the server to start) and its path removed (no one else
    connects, even to a server that lives on)."""
    if listen is None:
        return socket.socketpair()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ours = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(listen)
        server.listen(1)
        ours.connect(listen)
        os.unlink(listen)
    except OSError:
        server.close()
        ours.close()
        raise
    return ours, server


def _socket_activated(argv, fd):
    """``argv`` run with ``fd`` as its socket-activation socket: fd 3,
    LISTEN_FDS=1 and LISTEN_PID its own pid (the shell's, kept by exec)."""
    moved = "" if fd == 3 else " 3<&%d %d<&-" % (fd, fd)
    return ["/bin/sh", "-c", "LISTEN_PID=$$ LISTEN_FDS=1; export LISTEN_PID "
            'LISTEN_FDS; exec "$@"' + moved, "sh"] + list(argv)


def _write_secret(fd, value):
    """``value`` and a newline into a pipe, closed after (a server that
    died before reading it fails its handshake, which says why)."""
    data = (value + "\n").encode("utf-8", "surrogateescape")
    try:
        with open(fd, "wb") as pipe:
            pipe.write(data)
    except BrokenPipeError:
        pass


class Source(Served):
    """The disk served by the plugin in an nbdkit child (``-r``).  The
    secrets reach it through pipes: password= as ``password=-FD``, and
    cookie= as the plugin's internal ``cookie_=-FD`` (its public cookie=
    is the cookie itself, even one that starts with ``-``)."""

    def __init__(self, plugin_args, file, snapshot, log, password=None,
                 cookie=None):
        argv = ["nbdkit", "-s", "--exit-with-parent", "-r"] + \
            list(plugin_command()) + list(plugin_args) + ["file=" + file]
        if snapshot is not None:
            argv.append("snapshot=" + snapshot)
        secrets = [(key, value) for key, value in (("password", password),
                                                   ("cookie_", cookie))
                   if value is not None]
        super().__init__(argv, log, "the plugin's nbdkit for %s"
                         % printable(file), secrets)

    @property
    def size(self):
        return self.handle.get_size()


def image_server(path, image_format, log):
    """The server of a raw file or block device (nbdkit file), or of a
    qcow2 image (qemu-nbd, its socket beside ``log``), our child; the
    image is never truncated."""
    if image_format == "qcow2":
        return Served(["qemu-nbd", "-f", "qcow2", "--discard=unmap",
                       "--cache=writeback", path], log,
                      "qemu-nbd for %s" % printable(path),
                      listen=os.path.splitext(log)[0] + ".sock")
    return Served(["nbdkit", "-s", "--exit-with-parent", "file",
                   "file=" + path], log, "nbdkit for %s" % printable(path))


class NbdUri:
    """An image served by an NBD server named by a URI (not ours)."""

    def __init__(self, uri):
        import nbd
        self.handle = nbd.NBD()
        try:
            self.handle.connect_uri(uri)
        except nbd.Error as e:
            raise CopyError("cannot open %s: %s" % (
                printable(uri), printable(str(e)))) from None

    def close(self):
        """Disconnect (whether that server is well is its own affair)."""
        import nbd
        try:
            self.handle.shutdown()
        except nbd.Error:
            pass
        return None


def close_all(*sides):
    """Close every side that was opened; the first problem, or None."""
    problems = [side.close() for side in sides if side is not None]
    return next((p for p in problems if p), None)


# -- moving bytes ----------------------------------------------------------

def request_limit(*handles):
    import nbd
    limit = REQUEST_LIMIT
    for h in handles:
        maximum = h.get_block_size(nbd.SIZE_MAXIMUM)
        if maximum:
            limit = min(limit, maximum)
    return limit


def minimum_request(handle):
    import nbd
    return max(1, handle.get_block_size(nbd.SIZE_MINIMUM))


class Transfer:
    """Copies areas from one handle to another, ``IN_FLIGHT`` requests on
    each side, and writes zeros over others; ``progress(n)`` is told of
    every n bytes done; ``cancelled()`` is looked at while waiting."""

    def __init__(self, source, destination, progress, cancelled):
        import nbd
        self.nbd = nbd
        self.src = source
        self.dst = destination
        self.progress = progress
        self.cancelled = cancelled
        self.bytes_read = 0
        self.limit = request_limit(source, destination)
        self.can_zero = destination.can_zero()

    def run(self, copy_areas, zero_areas):
        """Copy ``copy_areas`` then zero ``zero_areas``; flush."""
        pending = list(requests(copy_areas, self.limit))
        pending.reverse()
        # Zero requests carry no data: large ones, unless written as data.
        zeros = list(requests(zero_areas,
                              ZERO_LIMIT if self.can_zero else self.limit))
        zeros.reverse()
        reads = []              # (cookie, buffer, offset, length), in order
        writes = []             # (cookie, length)
        last_progress = time.monotonic()
        while pending or zeros or reads or writes:
            while pending and len(reads) + len(writes) < IN_FLIGHT:
                offset, length = pending.pop()
                buf = self.nbd.Buffer(length)
                reads.append((self.src.aio_pread(buf, offset), buf, offset,
                              length))
            while not pending and zeros and len(writes) < IN_FLIGHT:
                offset, length = zeros.pop()
                writes.append((self._zero(offset, length), 0))
            self._wait()
            finished = self._retire(reads, writes)
            now = time.monotonic()
            if finished:
                last_progress = now
            elif now - last_progress > STALL_SECONDS:
                raise CopyError("no request finished for %d s"
                                % STALL_SECONDS)
        if self.dst.can_flush():
            self.dst.flush()

    def _retire(self, reads, writes):
        finished = False
        while reads and self.src.aio_command_completed(reads[0][0]):
            _, buf, offset, length = reads.pop(0)
            self.bytes_read += length
            data = buf.to_bytearray()
            if data.count(0) == length:
                writes.append((self._zero(offset, length), length))
            else:
                writes.append((self.dst.aio_pwrite(buf, offset), length))
            finished = True
        kept = []
        for cookie, length in writes:
            if self.dst.aio_command_completed(cookie):
                self.progress(length)
                finished = True
            else:
                kept.append((cookie, length))
        writes[:] = kept
        return finished

    def _zero(self, offset, length):
        if self.can_zero:
            # Without NO_HOLE the server may punch a hole.
            return self.dst.aio_zero(length, offset)
        # nbd.Buffer(n) is uninitialised memory (libnbd 1.6 sends it as is).
        return self.dst.aio_pwrite(
            self.nbd.Buffer.from_bytearray(bytearray(length)), offset)

    def _wait(self):
        """Until one of the two connections can make progress (or a
        slice has passed, to look at cancelled())."""
        if self.cancelled():
            raise Cancelled()
        readable, writable, handles = [], [], {}
        for h in (self.src, self.dst):
            fd = h.aio_get_fd()
            handles[fd] = h
            direction = h.aio_get_direction()
            if direction & self.nbd.AIO_DIRECTION_READ:
                readable.append(fd)
            if direction & self.nbd.AIO_DIRECTION_WRITE:
                writable.append(fd)
        r, w, _ = select.select(readable, writable, [], _POLL_SLICE)
        for fd in r:
            handles[fd].aio_notify_read()
        for fd in w:
            handles[fd].aio_notify_write()
