"""A command held at the moment it opens a file, while the test acts:
races between looking at a path and opening it, made deterministic.

``held_open(flags, act)`` gives a command prefix.  The prefix installs a
seccomp filter (inherited by every process the command starts) that
hands each openat(2) whose flags are exactly ``flags`` to this process
(a user notification, Linux 5.5); the first one runs ``act()`` while the
opener waits in the kernel, then every such open goes on as asked.  The
code under test runs unchanged: only the moment of its open is chosen.
x86-64 only (the system call numbers).

Run as a script, this file is the prefix:
``openpause.py SOCKET_FD FLAGS -- COMMAND…``.
"""

import contextlib
import ctypes
import os
import platform
import select
import socket
import struct
import sys
import threading

_SYS_OPENAT = 257
_SYS_SECCOMP = 317
_AUDIT_ARCH_X86_64 = 0xC000003E
_PR_SET_NO_NEW_PRIVS = 38
_SECCOMP_SET_MODE_FILTER = 1
_SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
_SECCOMP_RET_USER_NOTIF = 0x7FC00000
_SECCOMP_RET_ALLOW = 0x7FFF0000
_SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1
# struct seccomp_notif: id, pid, flags, then struct seccomp_data (nr,
# arch, instruction pointer, six arguments); struct seccomp_notif_resp.
_NOTIF = struct.Struct("=QII iIQ6Q")
_RESPONSE = struct.Struct("=QqiI")
_IOCTL_RECV = 0xC0000000 | (_NOTIF.size << 16) | (ord("!") << 8) | 0
_IOCTL_SEND = 0xC0000000 | (_RESPONSE.size << 16) | (ord("!") << 8) | 1
_WAIT = 120       # seconds without any open at all: the command is stuck

SUPPORTED = sys.platform == "linux" and platform.machine() == "x86_64"


def _filter(flags):
    """BPF: openat with exactly ``flags`` goes to the listener."""
    load, jump, ret = 0x20, 0x15, 0x06      # ld [k], jeq #k, ret #k
    program = [
        (load, 0, 0, 4),                    # seccomp_data.arch
        (jump, 0, 5, _AUDIT_ARCH_X86_64),
        (load, 0, 0, 0),                    # seccomp_data.nr
        (jump, 0, 3, _SYS_OPENAT),
        (load, 0, 0, 16 + 2 * 8),           # args[2]: flags (low half)
        (jump, 0, 1, flags),
        (ret, 0, 0, _SECCOMP_RET_USER_NOTIF),
        (ret, 0, 0, _SECCOMP_RET_ALLOW),
    ]
    return b"".join(struct.pack("=HBBI", *op) for op in program)


def _install_and_exec(channel, flags, command):
    libc = ctypes.CDLL(None, use_errno=True)
    code = _filter(flags)
    instructions = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("@HP", len(code) // 8,
                        ctypes.addressof(instructions))
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        sys.exit("openpause: prctl: %s" % os.strerror(ctypes.get_errno()))
    libc.syscall.restype = ctypes.c_long
    listener = libc.syscall(_SYS_SECCOMP, _SECCOMP_SET_MODE_FILTER,
                            _SECCOMP_FILTER_FLAG_NEW_LISTENER,
                            ctypes.c_char_p(fprog))
    if listener < 0:
        sys.exit("openpause: seccomp: %s" % os.strerror(ctypes.get_errno()))
    with socket.socket(fileno=channel) as sock:
        socket.send_fds(sock, [b"l"], [listener])
    os.close(listener)
    os.execvp(command[0], command)


def _answer(listener, stop, act):
    """Let each held open go on, the first after ``act()``, until every
    process of the command has ended or ``stop`` (a socket) is shut."""
    import fcntl
    poller = select.poll()
    poller.register(listener, select.POLLIN)
    poller.register(stop, select.POLLIN)
    acted = False
    while True:
        events = dict(poller.poll(_WAIT * 1000))
        if not events or stop.fileno() in events \
                or events[listener] & (select.POLLHUP | select.POLLERR):
            return acted
        notif = bytearray(_NOTIF.size)
        try:
            fcntl.ioctl(listener, _IOCTL_RECV, notif)
        except OSError:
            continue        # the opener died meanwhile
        if not acted:
            acted = True
            act()
        response = _RESPONSE.pack(_NOTIF.unpack(notif)[0], 0, 0,
                                  _SECCOMP_USER_NOTIF_FLAG_CONTINUE)
        try:
            fcntl.ioctl(listener, _IOCTL_SEND, response)
        except OSError:
            pass            # the opener died meanwhile


class Held:
    """What ``held_open`` gives: ``prefix`` and ``fds`` to start the
    command with; ``acted`` (after the block): whether an open was held."""

    def __init__(self, prefix, fds):
        self.prefix, self.fds, self.acted = prefix, fds, False


@contextlib.contextmanager
def held_open(flags, act):
    """Run ``held.prefix + command`` with ``pass_fds=held.fds`` inside the
    block: its first openat with exactly ``flags`` waits for ``act()``."""
    ours, theirs = socket.socketpair()
    held = Held([sys.executable, os.path.abspath(__file__),
                 str(theirs.fileno()), str(flags), "--"], (theirs.fileno(),))

    def answer():
        _, fds, _, _ = socket.recv_fds(ours, 1, 1)
        if fds:
            try:
                held.acted = _answer(fds[0], ours, act)
            finally:
                os.close(fds[0])

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        with theirs:
            yield held
    finally:
        # Ends the wait for the listener, or the answering.
        ours.shutdown(socket.SHUT_RDWR)
        thread.join(_WAIT)
        ours.close()


@contextlib.contextmanager
def fifo_at(path, flags, at_open):
    """Put a FIFO with a writer and nothing to read at ``path`` (so a
    non-blocking read finds no data rather than its end): at once, or
    with ``at_open`` in one rename at the first open with ``flags``
    (``path`` a regular file until then).  Yields ``held_open``'s
    ``Held``."""
    fifo = "%s.fifo" % path if at_open else str(path)
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    try:
        with held_open(flags, lambda: os.rename(fifo, path)) as held:
            yield held
    finally:
        os.close(writer)


if __name__ == "__main__":
    _install_and_exec(int(sys.argv[1]), int(sys.argv[2]), sys.argv[4:])
