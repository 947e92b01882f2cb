"""Generating ``vddkpy/vddk/_vddk_cffi.py``, the compiled form of abi.DECLARATIONS.

    python3 -m vddkpy.vddk.ffibuild [DIRECTORY]     (default: the package's own)

cffi's out-of-line ABI mode turns the C declarations into a pure-Python
module of type tables: loading it needs only ``_cffi_backend``, where
``cffi.FFI().cdef()`` parses the text with pycparser at every start (about
55 ms, paid twice because of the re-exec).  No C compiler is involved.
Every build runs this: scripts/setup.sh (the checkout), vddkpy.install,
scripts/build-deb.sh, and ``pip install`` (setup.py).  The module records a
copy of the declarations it was made from, so ``binding`` notices a
module older than abi.py (by comparing two strings, at no cost) and parses
the text instead.
"""

import os
import sys

from . import abi

MODULE = abi.GENERATED_MODULE
QUALIFIED = abi.GENERATED_QUALIFIED


def module_text():
    """The generated module's text: cffi's output, then the declarations
    it was made from."""
    import cffi
    import tempfile
    builder = cffi.FFI()
    builder.cdef(abi.DECLARATIONS)
    builder.set_source(QUALIFIED, None)
    with tempfile.TemporaryDirectory() as scratch:
        builder.compile(tmpdir=scratch, verbose=False)
        with open(os.path.join(scratch, *QUALIFIED.split(".")) + ".py") as f:
            text = f.read()
    return ("%s\n# What binding compares with abi.DECLARATIONS.\n"
            "DECLARATIONS = %r\n" % (text, abi.DECLARATIONS))


def generate(directory=None):
    """Write the module into ``directory`` (the package's by default),
    atomically: a server starting meanwhile sees the old or the new one."""
    import tempfile     # here: binding imports this module at every start
    directory = directory or os.path.dirname(os.path.abspath(__file__))
    target = os.path.join(directory, MODULE + ".py")
    fd, temporary = tempfile.mkstemp(prefix="." + MODULE, dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(module_text())
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        os.unlink(temporary)
        raise
    return target


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    usage = "usage: " + __doc__.strip().splitlines()[2].strip()
    if argv in (["-h"], ["--help"]):
        print(usage)
        return 0
    if len(argv) > 1:
        print(usage, file=sys.stderr)
        return 2
    directory = argv[0] if argv else None
    try:
        generate(directory)
    except OSError as e:
        print("vddkpy.vddk.ffibuild: error: %s: %s"
              % (directory or e.filename, e.strerror), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
