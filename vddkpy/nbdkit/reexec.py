"""Re-executing nbdkit so VDDK's bundled libraries come first.

VDDK ships its own libssl, libcrypto and libstdc++; the dynamic loader
reads LD_LIBRARY_PATH only at process start, so once the library's
directory is known nbdkit is executed again with it prepended.  The new
process gets ``reexeced_=ORIGINAL`` so it can give ``--run`` commands the
original value back, and the secrets (password=, cookie=) travel through
inherited, already-unlinked files instead of the command line, where
``ps`` would show them for the server's life and nbdkit's ``-v`` would
print them once more.  A process holding a secret is made non-dumpable:
no core dump, no ptrace by other processes of the user.

The process that re-executes pays for every module it imported, for
nothing: get_ready and --dump-plugin decide the re-exec with only the
modules that configuration needs and this one (``load_library``), and
import the session and the data path afterwards.
"""

import os
import sys

from .cmdline import read_cmdline
from ..vddk.library import Library, LoadError, libdir_of
from .compat import debug, fail_startup
from .native import ffi, not_dumpable, process

SECRETS = ("password", "cookie", "cookie_")     # cookie_: -FD, read once


def load_library(params):
    """get_ready's VDDK, in a process whose LD_LIBRARY_PATH has its
    directory; exits with upstream's message if no library loads."""
    if params.password is not None or params.cookie is not None:
        not_dumpable()
    try:
        library = Library(libdir_of(params))
    except LoadError as e:
        fail_startup(str(e))
    reexec_if_needed(library.directory, params)
    return library


def _needed(directory, params):
    if params.noreexec or params.reexeced_ is not None:
        return False
    current = os.environ.get("LD_LIBRARY_PATH")
    return current is None or (":%s:" % directory) not in (":%s:" % current)


def _password_fd(password):
    """A secret in an inherited 0600 descriptor: an anonymous memory file
    (never on a disk), or an unlinked file in /tmp where the kernel has
    no memfd_create."""
    try:
        fd = _anonymous_file()
        os.fchmod(fd, 0o600)
        data = password.encode("utf-8", "surrogateescape")
        if os.write(fd, data) != len(data):
            fail_startup("write: short write")
        os.lseek(fd, 0, os.SEEK_SET)
        os.set_inheritable(fd, True)
    except OSError as e:
        fail_startup("%s: %s" % (e.filename or "write", e.strerror))
    return fd


def _anonymous_file():
    try:
        return os.memfd_create("vddkpy-secret")
    except (AttributeError, OSError):
        import tempfile     # only then: it costs start-up time
        fd, path = tempfile.mkstemp(prefix="", dir="/tmp")
        os.unlink(path)
        return fd


def reexec_if_needed(directory, params):
    """Exec nbdkit again with ``directory`` in LD_LIBRARY_PATH, if needed.

    Returns only when no re-exec happened.
    """
    if not _needed(directory, params):
        return
    try:
        argv = read_cmdline()
    except OSError as e:
        debug("open: /proc/self/cmdline: %s" % e.strerror)
        return
    debug("original command line occupies %d bytes"
          % sum(len(a.encode("utf-8", "surrogateescape")) + 1 for a in argv))

    new_argv = [a for a in argv
                if not a.startswith(tuple(s + "=" for s in SECRETS))]
    if len(new_argv) != len(argv) and params.password is not None:
        new_argv.append("password=-%d" % _password_fd(params.password))
    original = os.environ.get("LD_LIBRARY_PATH", "")
    debug("adding reexeced_=%s" % original)
    new_argv.append("reexeced_=%s" % original)
    if params.cookie is not None:       # cookie_: the cookie read from -FD
        new_argv.append("cookie_=-%d" % _password_fd(params.cookie))
    if params.cbt_agent_ is not None:   # its socket is inherited
        new_argv.append("cbt_agent_=%s" % params.cbt_agent_)
    library_path = "%s:%s" % (directory, original) if original else directory
    os.environ["LD_LIBRARY_PATH"] = library_path
    debug("re-executing with updated LD_LIBRARY_PATH=%s" % library_path)

    sys.stdout.flush()
    sys.stderr.flush()
    process.fflush(ffi.NULL)
    try:
        os.execv("/proc/self/exe", new_argv)
    except OSError as e:
        debug("execvp: /proc/self/exe: %s" % e.strerror)
