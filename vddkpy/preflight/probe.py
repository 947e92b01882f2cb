"""Trying in a child process what may kill the process that tries: loading
an unknown file as a library (a truncated one dies of SIGBUS inside the
dynamic loader) and VDDK's InitEx.  The check calls these in its own
process only after a forked copy of it survived them."""

import os
import signal
import sys

from ..nbdkit.native import ffi, process


def killer(function):
    """Run ``function()`` in a forked child: the signal's name if it
    killed the child, else None (whatever the function returned or
    raised: the caller runs it again itself to see that)."""
    sys.stdout.flush()
    sys.stderr.flush()
    process.fflush(ffi.NULL)
    pid = os.fork()
    if pid == 0:                                # the child
        try:
            function()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            return signal.Signals(number).name
        except ValueError:
            return "signal %d" % number
    return None
