"""Old spellings of ``vddkpy thumbprint``, kept for a release: the
``vddkpy-thumbprint`` command (``main``) and ``python3 -m
vddkpy.thumbprint``.  Each runs it, then names the new spelling."""
import sys

from . import run_renamed


def _thumbprint(old, new, argv):
    from .vsphere.thumbprint import main
    return run_renamed(old, new, lambda: main(argv))


def main(argv=None):
    return _thumbprint("vddkpy-thumbprint", "vddkpy thumbprint", argv)


if __name__ == "__main__":
    sys.exit(_thumbprint("python3 -m vddkpy.thumbprint",
                         "python3 -m vddkpy thumbprint", None))
