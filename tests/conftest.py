"""Fixtures shared by every suite; the helpers behind them are in bed/."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bed import Nbdkit, ROOT, STANDIN, install_standin

if int(pytest.__version__.split(".")[0]) < 7:
    # pytest 6 (Debian 11) does not read pyproject's pythonpath setting
    # (tests/, this file's directory, pytest puts on the path itself).
    sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]


UNIT = ROOT / "tests" / "unit"


def pytest_collection_finish(session):
    """Build the VDDK stand-in before the first test, unless every test
    collected is a unit test (tests/unit/ needs no build, and runs as a
    user who cannot write the checkout)."""
    # item.fspath: pytest 6 (Debian 11) has no item.path.
    paths = {Path(str(item.fspath)).resolve() for item in session.items}
    if any(UNIT not in path.parents for path in paths):
        subprocess.run(["make", "-s", "-C", str(STANDIN)], check=True)


def pytest_terminal_summary(terminalreporter):
    from bed import tally
    terminalreporter.write_line("faults/input/load: " + tally.summary())


@pytest.fixture(scope="session")
def private_system():
    """Tests that install plugins run only where installing cannot change
    the machine: inside tests/bed/private-system.sh (scripts/test.sh)."""
    if not os.environ.get("VDDKPY_PRIVATE_SYSTEM"):
        pytest.skip("installs into nbdkit's plugin directory: run through "
                    "tests/bed/private-system.sh (scripts/test.sh does)")


@pytest.fixture
def libdir(tmp_path):
    return install_standin(tmp_path / "vddk")

@pytest.fixture
def nbdkit(tmp_path, libdir):
    """Factory: nbdkit(args..., **kw) -> a started Nbdkit, stopped at end."""
    servers = []

    def start(*args, **kw):
        kw.setdefault("libdir", libdir)
        server = Nbdkit(tmp_path, kw.pop("libdir"), args, **kw)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
    for server in servers:
        server.assert_survived()

@pytest.fixture
def vcsim(tmp_path):
    """Factory: vcsim(size=, seed=, power_on=, ...) -> a started
    tests/bed/vcenter.py Vcsim (govmomi's simulator as the ESXi host of a VM
    whose disk the stand-in serves), stopped at the end.  Fails, never
    skips, when the simulator is not built."""
    from bed.vcenter import NotBuilt, Vcsim
    beds = []

    def start(**kw):
        try:
            bed = Vcsim(tmp_path / ("vcsim%d" % len(beds)), **kw)
        except NotBuilt as e:
            missing = str(e)
        else:
            beds.append(bed)
            return bed.start()
        pytest.fail(missing, pytrace=False)

    yield start
    for bed in beds:
        bed.stop()
