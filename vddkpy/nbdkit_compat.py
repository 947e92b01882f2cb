"""What nbdkit gives a C plugin but not a Python one.

* The ``-D vddk.FLAG=N`` debug flags and ``-v``: the server applies them
  only to C plugins, so they are read from nbdkit's own command line, with
  nbdkit's rules (every spelling, first occurrence wins).
* ``nbdkit_error`` / ``nbdkit_debug`` and the server's parsers, called
  through cffi so messages are exactly the server's.
* Failing at start-up the way nbdkit does: one error line, exit status 1.
"""

import sys

from .native import ffi, process, to_bytes

# nbdkit's options that take an argument (nbdkit 1.32 .. 1.45), so that
# their values are not mistaken for options.
_SHORT_WITH_ARG = set("DegipPtuU")
_LONG_WITH_ARG = {
    "debug", "export", "export-name", "exportname", "filter", "group",
    "ip-addr", "ipaddr", "log", "mask-handshake", "pid-file", "pidfile",
    "port", "run", "selinux-label", "threads", "tls", "tls-certificates",
    "tls-psk", "unix", "user", "timeout", "keepalive",
}
_DEFAULT_FLAGS = {"datapath": 1, "diskinfo": 0, "extents": 0, "stats": 0}


def read_cmdline(path="/proc/self/cmdline"):
    """nbdkit's argv, from the kernel."""
    with open(path, "rb") as f:
        data = f.read()
    return [a.decode("utf-8", "surrogateescape")
            for a in data.split(b"\0")[:-1]]


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


def _options(argv):
    """Yield (option, value) for nbdkit's options in argv, as getopt would."""
    args = iter(argv[1:])
    for arg in args:
        if arg == "--":
            return
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            if not eq and name in _LONG_WITH_ARG:
                value = next(args, "")
            yield name, value
        elif arg.startswith("-") and len(arg) > 1:
            for i, letter in enumerate(arg[1:], 1):
                if letter in _SHORT_WITH_ARG:
                    value = arg[i + 1:] or next(args, "")
                    yield letter, value
                    break
                yield letter, None


def parse_debug_flags(argv, plugin="vddk"):
    """(verbose, {flag: value}) with nbdkit's first-occurrence-wins rule."""
    verbose = False
    seen = {}
    for option, value in _options(argv):
        if option in ("v", "verbose"):
            verbose = True
        elif option in ("D", "debug"):
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
        return read_cmdline()
    except (ImportError, OSError):
        return []


debug_flags = Debug(_nbdkit_argv())


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
