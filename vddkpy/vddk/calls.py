"""The one way vddkpy calls VDDK: traced, timed and error-checked.

Each call prints upstream's ``VDDK call: VixDiskLib_NAME (ARGS)`` debug
line (datapath calls only with ``-D vddk.datapath``), and with statistics
on adds its time and bytes.  When neither is on a call is a bare cffi call.
"""

import time

from .abi import FUNCTIONS, VIX_OK
from .binding import ffi
from ..errors import VddkError
from ..nbdkit.compat import debug, debug_flags
from ..nbdkit.native import c_string
from ..printable import printable
from .stats import Stats


def _traced(function):
    if function.datapath:
        return debug_flags.datapath
    return debug_flags.verbose


class Vddk:
    """A loaded library's functions, called through the instrumentation."""

    def __init__(self, library, collect_stats):
        self.library = library
        self.version = library.version
        self.functions = library.functions
        # QueryChangedDiskAreas (vSphere's, for changed-since=) is timed too.
        self.stats = Stats([f.name for f in FUNCTIONS]
                           + ["QueryChangedDiskAreas"]) if collect_stats \
            else None
        self._traced = {f.name: _traced(f) for f in FUNCTIONS}

    def has(self, name):
        return name in self.functions

    def call(self, name, args_text, *args, nbytes=0):
        """Call VixDiskLib_NAME(*args).

        ``args_text`` is for the debug line: a string, or on the data path a
        function returning it, so that nothing is formatted untraced.
        """
        if self._traced[name]:
            if callable(args_text):
                args_text = args_text()
            debug("VDDK call: VixDiskLib_%s (%s)" % (name, args_text))
        if self.stats is None:
            return self.functions[name](*args)
        start = time.monotonic_ns()
        result = self.functions[name](*args)
        self.stats.add(name, (time.monotonic_ns() - start) // 1000, nbytes)
        return result

    def check(self, name, args_text, *args, prefix=None, nbytes=0):
        """Call, and raise VddkError unless it returned VIX_OK."""
        code = self.call(name, args_text, *args, nbytes=nbytes)
        if code != VIX_OK:
            raise self.error(prefix or "VixDiskLib_" + name, code)

    def error(self, prefix, code):
        """The VddkError for ``code``, with VDDK's own text."""
        text = self.call("GetErrorText", "%d" % code, code, ffi.NULL)
        try:
            message = c_string(text)
        finally:
            self.call("FreeErrorText", "", text)
        return VddkError(prefix, code,
                         "(null)" if message is None else message)

    def error_text_quietly(self, code):
        """VDDK's text for ``code`` without tracing (upstream's probe)."""
        text = self.functions["GetErrorText"](code, ffi.NULL)
        try:
            message = c_string(text)
            return None if message is None else printable(message)
        finally:
            self.functions["FreeErrorText"](text)

    def record_async(self, name, start_ns, nbytes):
        """Statistics for an async call, timed from submit to completion."""
        self.stats.add(name, (time.monotonic_ns() - start_ns) // 1000, nbytes)
