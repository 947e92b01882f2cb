"""What nbdkit gives a C plugin but not a Python one.

* The ``-D vddk.FLAG=N`` debug flags and ``-v``: the server applies them
  only to C plugins, so they are read from nbdkit's own command line
  (``cmdline``), with nbdkit's rules (first occurrence wins).
* ``nbdkit_error`` / ``nbdkit_debug`` and the server's parsers, called
  through cffi so messages are exactly the server's.
* Failing at start-up the way nbdkit does: one error line, exit status 1.
* The callbacks older servers never call (``ServingProcess``): nbdkit 1.24
  has no ``after_fork``, ``cleanup``, ``preconnect`` or ``block_size``.
"""

import atexit
import gc
import sys
import _thread

from . import cmdline
from .native import ffi, has_symbol, process, to_bytes

_DEFAULT_FLAGS = {"datapath": 1, "diskinfo": 0, "extents": 0, "stats": 0}


def _c_int(text):
    """strtol(text, NULL, 0) for the values nbdkit has already accepted."""
    text = text.strip()
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("+-")
    if digits[:2].lower() == "0x":
        return sign * int(digits[2:], 16)
    if digits.startswith("0") and len(digits) > 1:
        return sign * int(digits, 8)
    return sign * int(digits or "0")


def parse_debug_flags(argv, version=cmdline.server_version, plugin="vddk"):
    """(verbose, {flag: value}) with nbdkit's first-occurrence-wins rule;
    ``version`` gives the server's version when a prefix needs it."""
    verbose = False
    seen = {}
    for option, value in cmdline.options(argv, version):
        if option == "v":
            verbose = True
        elif option == "D":
            name, eq, number = value.partition("=")
            prefix, dot, flag = name.partition(".")
            if eq and dot and prefix == plugin and flag not in seen:
                seen[flag] = _c_int(number)
    flags = dict(_DEFAULT_FLAGS)
    flags.update(seen)
    return verbose, flags


class Debug:
    """The debug switches of this process (read once, at import)."""

    def __init__(self, argv):
        self.verbose, flags = parse_debug_flags(argv)
        self.stats = bool(flags["stats"])
        self.diskinfo = self.verbose and bool(flags["diskinfo"])
        self.extents = self.verbose and bool(flags["extents"])
        self.datapath = self.verbose and bool(flags["datapath"])


def _nbdkit_argv():
    """nbdkit's command line, or [] when not running inside nbdkit."""
    try:
        import nbdkit  # noqa: F401  (only present inside nbdkit)
        return cmdline.read_cmdline()
    except (ImportError, OSError):
        return []


_ARGV = _nbdkit_argv()
debug_flags = Debug(_ARGV)


def readonly_server():
    """Whether nbdkit was started with -r (its clients can only read)."""
    return any(option == "r"
               for option, _ in cmdline.options(_ARGV, cmdline.server_version))


def _c_text(text):
    return ffi.new("char[]", to_bytes(text))


def error(message):
    """An nbdkit error line that does not by itself fail the callback."""
    process.nbdkit_error(b"%s", _c_text(message))


def debug(message):
    if debug_flags.verbose:
        process.nbdkit_debug(b"%s", _c_text(message))


def exit_startup():
    """Exit as nbdkit does after a configuration error (already printed)."""
    sys.stdout.flush()
    sys.stderr.flush()
    process.exit(1)


def fail_startup(message):
    error(message)
    exit_startup()


class ServingProcess:
    """Work that must run in the process that serves (``start``: it may
    start threads, which nbdkit's fork after get_ready would lose) and its
    undoing before Python is finalised (``stop``: no thread of a library
    may call into Python then), run once each, whichever callbacks the
    server has.

    nbdkit calls ``after_fork`` in the serving process from 1.26 and
    ``cleanup`` before it finalises Python from 1.28; 1.24 calls neither.
    So ``start`` runs at after_fork or, on a server that never called it,
    at the first open (always in the serving process), under a lock so
    that concurrent first opens start once.  ``stop`` runs at cleanup or,
    on a server without it, from an atexit handler: the python plugin's
    unload finalises Python, which runs atexit handlers before it tears
    down threads (and only the serving process unloads: the process that
    forked exits without it).
    """

    def __init__(self, start, stop):
        self._start = start
        self._stop = stop
        # Reentrant: a start that fails ends the process, and where that
        # finalises Python, stop runs on the same thread.
        self._lock = _thread.RLock()
        self._started = False
        self._stopped = False
        atexit.register(self.stop)

    def after_fork(self):
        self._start_once("after_fork")

    def before_open(self):
        if not self._started:           # (read without the lock: cheap)
            self._start_once("the first open, the server has no after_fork")

    def _start_once(self, when):
        with self._lock:
            if not self._started:
                debug("starting in the serving process at %s" % when)
                self._start()
                self._started = True

    def stop(self):
        """At cleanup and at exit: only the first call does the work.
        Then every object left is frozen: the process is ending, and
        Python's finalisation would otherwise look through all of them
        for cycles.
        Nothing is lost: what they hold that matters was closed by
        ``stop``, and the system takes back the rest."""
        with self._lock:
            if not self._stopped:
                self._stopped = True
                try:
                    self._stop()
                finally:
                    gc.freeze()


# The server's parsers.  Each prints its own error; the caller exits.

def parse_bool(value):
    r = process.nbdkit_parse_bool(_c_text(value))
    if r == -1:
        exit_startup()
    return bool(r)


def parse_uint16(label, value):
    result = ffi.new("uint16_t *")
    if process.nbdkit_parse_uint16_t(_c_text(label), _c_text(value),
                                     result) == -1:
        return None
    return result[0]


def parse_size(value):
    r = process.nbdkit_parse_size(_c_text(value))
    if r == -1:
        exit_startup()
    return r


def realpath(path):
    resolved = process.nbdkit_realpath(_c_text(path))
    if resolved == ffi.NULL:
        exit_startup()
    try:
        return ffi.string(resolved).decode("utf-8", "surrogateescape")
    finally:
        process.free(resolved)


def read_password(value):
    password = ffi.new("char **")
    if process.nbdkit_read_password(_c_text(value), password) == -1:
        exit_startup()
    try:
        return ffi.string(password[0]).decode("utf-8", "surrogateescape")
    finally:
        process.free(password[0])


if not has_symbol("nbdkit_error"):
    # The vddkpy command parses the same parameters without a server.
    from .standalone import (error, exit_startup, parse_bool,  # noqa: F811
                             parse_size, parse_uint16, read_password,
                             readonly_server, realpath)
