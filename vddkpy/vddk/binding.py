"""The cffi ``ffi`` for abi.DECLARATIONS, as cheaply as this install allows.

Normally it comes from the module ``ffibuild`` generated at build time
(``_vddk_cffi``: type tables only, loaded in about a millisecond by
``_cffi_backend``).  If that module is missing, cannot be loaded, or was
made from other declarations than abi.py's (abi.py edited since the last
build), the declarations are parsed here with cffi and pycparser: the
plugin works the same, starts some 55 ms slower, and says why in one
debug line (``nbdkit -v``).
"""

import sys

from . import abi


def _generated():
    """(the generated module's ffi, None) or (None, why it is not used)."""
    module = abi.GENERATED_MODULE
    try:
        # (``from . import`` would hide that the module is missing;
        # importlib costs start-up time.)
        __import__(abi.GENERATED_QUALIFIED)
        generated = sys.modules[abi.GENERATED_QUALIFIED]
    except ImportError as e:
        if isinstance(e, ModuleNotFoundError) and e.name == abi.GENERATED_QUALIFIED:
            return None, "vddkpy/vddk/%s.py is missing" % module
        return None, "vddkpy/vddk/%s.py cannot be loaded: %s" % (module, e)
    if getattr(generated, "DECLARATIONS", None) != abi.DECLARATIONS:
        return None, ("vddkpy/vddk/%s.py was made from other declarations than "
                      "vddkpy/vddk/abi.py's" % module)
    return generated.ffi, None


def _parsed(why):
    from ..nbdkit.prerequisites import require_cffi
    require_cffi(parser=True)
    _say("%s (python3 -m vddkpy.vddk.ffibuild makes it): parsing the C "
         "declarations at start-up instead" % why)
    import cffi
    parsed = cffi.FFI()
    parsed.cdef(abi.DECLARATIONS)
    return parsed


def _say(message):
    """A debug line inside nbdkit (shown with -v); elsewhere nothing."""
    try:
        import nbdkit
    except ImportError:
        return
    nbdkit.debug("vddkpy: " + message)


def load():
    ffi, why = _generated()
    return ffi if ffi is not None else _parsed(why)


ffi = load()
