"""changed-since= imports pyvmomi once per server: only the process that
serves (after nbdkit re-executes itself with VDDK's directory) imports it,
and what talking to vSphere takes (ssl, http.client, the XML parsers);
the process that re-executes only checks that pyvmomi is installed, and
that without importlib.util."""

import re

from bed import run_nbdkit


def imports_per_process(stderr):
    """[modules imported] by each Python started, in order (Python's
    PYTHONPROFILEIMPORTTIME log; a new interpreter starts with site)."""
    processes = []
    for line in stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+\d+ \| ( *)(\S+)$", line)
        if match and match.group(2) == "site" and not match.group(1):
            processes.append(set())
        elif match and processes:
            processes[-1].add(match.group(2))
    return processes


def test_pyvmomi_is_imported_by_the_serving_process_only(vcsim, libdir,
                                                         tmp_path):
    bed = vcsim(size=4 << 20, power_on=False)
    bed.enable_cbt()
    result = run_nbdkit(tmp_path, libdir, [*bed.plugin_args(),
                                           "changed-since=*"],
                        options=["-r"], config=bed.standin_config(),
                        env={"PYTHONPROFILEIMPORTTIME": "1"},
                        run='nbdinfo --size "$uri"', verbose=False)
    assert result.returncode == 0, result.stderr
    # (libnbd 1.6's nbdinfo adds a blank line.)
    assert result.stdout.rstrip("\n") == "%d" % (4 << 20)
    first, serving = imports_per_process(result.stderr)
    assert "vddkpy.nbdkit.reexec" in first
    assert "pyVmomi" not in first
    assert "pyVmomi" in serving
    # (Nor importlib.util and contextlib: the finders are asked directly.)
    heavy = {"ssl", "http.client", "urllib.request", "xml.sax",
             "xml.etree.ElementTree", "importlib.util", "contextlib"}
    assert heavy & first == set()
    assert {"ssl", "http.client", "xml.etree.ElementTree"} <= serving
