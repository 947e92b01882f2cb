"""What a start of the plugin imports.

Every ``nbdkit vddk`` start pays for its imports, twice when nbdkit is
re-executed with VDDK's directory in LD_LIBRARY_PATH.  The process that
re-executes imports only what configuration and loading the library need;
``--dump-plugin`` never imports the session and data path; no start parses
the C declarations (pycparser).  Python's own import log
(PYTHONPROFILEIMPORTTIME, read by the Python nbdkit embeds) says which
modules each process imported, so this is checked without timing anything.
"""

import re

from bed import random_file, run_nbdkit

DATA_PATH = {"vddkpy.session", "vddkpy.disk", "vddkpy.nbdkit.threadstate",
             "vddkpy.vddk.calls", "vddkpy.extents", "vddkpy.errors", "ctypes"}
# cffi's parser, what only some paths need (password=, stats-file=, an
# abbreviated nbdkit option), the CBT package (changed-since= only), and
# modules whose imports cost more than what they would do here (_thread
# and str methods do it; collections, 3 ms, comes with functools, array
# and namedtuple).
NEVER = {"pycparser", "cffi", "subprocess", "tempfile", "json",
         "threading", "re", "contextlib", "importlib", "collections",
         "functools", "vddkpy.cbt"}


def imports_per_process(stderr):
    """[set of modules imported] for each Python started, in order."""
    processes = []
    for line in stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+\d+ \| ( *)(\S+)$", line)
        if not match:
            continue
        if match.group(2) == "site" and not match.group(1):
            # A new interpreter: what its site imported is listed before.
            processes.append(set())
        elif processes:
            processes[-1].add(match.group(2))
    return processes


def test_reexecuting_process_skips_the_data_path(tmp_path, libdir):
    disk = random_file(tmp_path / "disk.raw", 1024 * 1024)
    result = run_nbdkit(tmp_path, libdir, ["file=%s" % disk],
                        env={"PYTHONPROFILEIMPORTTIME": "1"},
                        run='nbdinfo --size "$uri"', verbose=False)
    assert result.returncode == 0, result.stderr
    # (libnbd 1.6's nbdinfo adds a blank line.)
    assert result.stdout.rstrip("\n") == "%d" % (1024 * 1024)
    first, serving = imports_per_process(result.stderr)
    assert {"vddkpy.nbdkit.reexec", "vddkpy.vddk.binding", "_cffi_backend"} <= first
    assert first & DATA_PATH == set()
    assert DATA_PATH <= serving
    assert (first | serving) & NEVER == set()


def test_dump_plugin_skips_the_data_path(tmp_path, libdir):
    result = run_nbdkit(tmp_path, libdir, [], options=["--dump-plugin"],
                        env={"PYTHONPROFILEIMPORTTIME": "1"}, verbose=False)
    assert result.returncode == 0, result.stderr
    assert "VixDiskLib_ReadAsync=1" in result.stdout
    processes = imports_per_process(result.stderr)
    assert len(processes) == 2          # --dump-plugin re-executes too
    for imported in processes:
        assert "vddkpy.dump" in imported
        assert imported & (DATA_PATH | NEVER) == set()
