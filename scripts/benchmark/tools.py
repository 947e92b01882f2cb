"""The programs the benchmark runs, and the Debian package of each."""

import shutil

PACKAGES = {"nbdkit": "nbdkit", "nbdcopy": "libnbd-bin",
            "nbdinfo": "libnbd-bin", "fio": "fio", "hyperfine": "hyperfine"}


def missing_tools(path=None):
    """One line naming what to install, or None when all are found."""
    missing = [t for t in PACKAGES if shutil.which(t, path=path) is None]
    if not missing:
        return None
    packages = sorted({PACKAGES[t] for t in missing})
    return "bench: %s not found: apt install %s" % (
        ", ".join(missing), " ".join(packages))
