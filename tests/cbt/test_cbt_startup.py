"""changed-since= imports pyvmomi once per server, in vddkpy's vSphere
process (cbt.agent), forked by the first nbdkit process before it
re-executes: neither the process that re-executes nor the one that serves
imports it, nor what talking to vSphere takes (ssl, http.client, the XML
parsers), so VDDK's bundled OpenSSL never meets Python's ssl.  The
process that re-executes only checks that pyvmomi is installed, and that
without importlib.util."""

from bed import run_nbdkit

# Loaded by each Python that starts (site imports sitecustomize from
# PYTHONPATH): it writes "start PID" as it starts, then "PID MODULE" for
# each module that process imports (not what it only looks for).
RECORDER = '''\
import builtins, os, sys

LOG = os.environ["VDDKPY_TEST_IMPORTS"]
_import = builtins.__import__


def _write(lines):
    with open(LOG, "a") as log:
        log.writelines(line + "\\n" for line in lines)


def _recording(*args, **kwargs):
    before = set(sys.modules)
    try:
        return _import(*args, **kwargs)
    finally:
        pid = os.getpid()
        _write("%d %s" % (pid, name) for name in set(sys.modules) - before)


_write(["start %d" % os.getpid()])
builtins.__import__ = _recording
'''

HEAVY = {"ssl", "http.client", "urllib.request", "xml.sax",
         "xml.etree.ElementTree", "pyVmomi"}


def imports_by_process(log):
    """[{modules}] of each Python started, in order (what the processes
    it forked imported included), and [{modules}] of each process the
    first one forked (before the second started)."""
    started, forked, owner = [], [], {}
    for line in log.splitlines():
        first, name = line.split()
        if first == "start":
            started.append(set())
            owner[int(name)] = started[-1]
            continue
        if int(first) not in owner and len(started) == 1:
            forked.append(set())
            owner[int(first)] = forked[-1]
        # (The rest are forks of the serving process: nbdkit's --run.)
        owner.setdefault(int(first), started[-1]).add(name)
    return started, forked


def test_pyvmomi_is_imported_by_the_vsphere_process_only(vcsim, libdir,
                                                         tmp_path):
    bed = vcsim(size=4 << 20, power_on=False)
    bed.enable_cbt()
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(RECORDER)
    log = tmp_path / "imports.log"
    result = run_nbdkit(tmp_path, libdir, [*bed.plugin_args(),
                                           "changed-since=*"],
                        options=["-r"], config=bed.standin_config(),
                        env={"PYTHONPATH": str(tmp_path / "site"),
                             "VDDKPY_TEST_IMPORTS": str(log)},
                        run='nbdinfo --size "$uri"', verbose=False)
    assert result.returncode == 0, result.stderr
    # (libnbd 1.6's nbdinfo adds a blank line.)
    assert result.stdout.rstrip("\n") == "%d" % (4 << 20)
    (first, serving), (asking,) = imports_by_process(log.read_text())
    assert "vddkpy.nbdkit.reexec" in first and "vddkpy.cbt.agent" in first
    assert "vddkpy.session" in serving
    assert {"ssl", "http.client", "pyVmomi",
            "xml.etree.ElementTree"} <= asking
    assert HEAVY & (first | serving) == set()
    # (The serving process talks to it through _socket and marshal.)
    assert {"socket", "json", "threading"} & serving == set()
    # (Nor importlib.util and contextlib: the finders are asked directly.)
    assert {"importlib.util", "contextlib"} & first == set()
