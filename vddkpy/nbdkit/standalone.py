"""nbdkit's parameter helpers for the ``vddkpy`` command, where no nbdkit
runs: the same accepted forms (booleans, ports, every password form),
messages on stderr as ``vddkpy: error: ...``, and exit status 1.

nbdkit_compat uses these when the process is not an nbdkit server.
"""

import getpass
import os
import sys

_TRUE = ("1", "true", "t", "yes", "y", "on")
_FALSE = ("0", "false", "f", "no", "n", "off")


def error(message):
    print("vddkpy: error: %s" % message, file=sys.stderr)


def exit_startup():
    sys.exit(1)


def _fail(message):
    error(message)
    exit_startup()


def readonly_server():
    return True             # nothing is served, nothing can be written


def parse_bool(value):
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    _fail("could not decipher boolean (%s)" % value)


def parse_uint16(label, value):
    try:
        number = int(value, 0)
    except ValueError:
        number = -1
    if not 0 <= number <= 0xFFFF:
        error('%s: could not parse number: "%s"' % (label, value))
        return None
    return number


def parse_size(value):
    _fail("create-size: not used by this command")


def realpath(path):
    if not os.path.exists(path):
        _fail("realpath: %s: No such file or directory" % path)
    return os.path.realpath(path)


def read_password(value):
    """password=: -, -FD, +FILE or the password itself (the first line of
    what is read, without its newline)."""
    if value == "-":
        if not sys.stdin.isatty():
            _fail("stdin is not a tty, cannot read password interactively")
        return getpass.getpass("password: ")
    if value.startswith("-"):
        return _password_from_fd(value[1:])
    if value.startswith("+"):
        try:
            fd = os.open(value[1:], os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            _fail("open %s: %s" % (value[1:], e.strerror))
        return _first_line(fd, value[1:])
    return value


def _password_from_fd(text):
    try:
        fd = int(text)
    except ValueError:
        # (The text is not shown: it may be a password written by mistake.)
        _fail("password file descriptor: could not parse number")
    if fd in (0, 1, 2):
        _fail("cannot use password -FD for stdin/stdout/stderr")
    return _first_line(fd, text)


def _first_line(fd, what):
    try:
        with os.fdopen(fd, "rb") as f:
            line = f.readline()
    except OSError as e:
        _fail("could not read password from %s: %s" % (what, e.strerror))
    if line.endswith(b"\n"):
        line = line[:-1]
    return line.decode("utf-8", "surrogateescape")
