"""vddkpy: VMware VDDK (libvixDiskLib) through cffi, served by nbdkit."""

__version__ = "0.1.0"


def incomplete(error, program):
    """The one line a command prints when a part of vddkpy is missing."""
    import os
    return "%s: error: vddkpy in %s is incomplete (no module %s)" % (
        program, os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        error.name)


def run_renamed(old, new, command):
    """Run ``command()`` for the old spelling OLD of a command, then name
    the new one on stderr, once, after the command's own output (whose
    first lines programs may read)."""
    import sys
    try:
        return command()
    finally:
        print("vddkpy: note: '%s' is now '%s'" % (old, new), file=sys.stderr)
