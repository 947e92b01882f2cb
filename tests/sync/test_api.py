"""The manual's Python example of the sync API runs as written against the
bed (its parameters and directory swapped for the bed's): a first round
copies the disk, a second one after a guest write only the change."""

import re
import subprocess
import sys

from bed import ROOT

from . import guest

MANUAL = ROOT / "doc" / "nbdkit-vddk-plugin.md"


def manual_example():
    text = MANUAL.read_text()
    section = text.split("# WARM MIGRATION WITH VDDKPY SYNC", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_manual_python_example_runs(started, libdir, tmp_path):
    bed, run, to = started(size=2 << 20, seed=31, to="backup")
    example = manual_example()
    params = ["libdir=%s" % libdir] + bed.vm_args()
    example, n = re.subn(r"params = \[.*?\]\n", "params = %r\n" % params,
                         example, flags=re.S)
    assert n == 1
    assert example.count('"/var/backups/fedora"') == 1
    example = example.replace('"/var/backups/fedora"', repr(str(to)))

    def run_example():
        return subprocess.run([sys.executable, "-c", example], env=run.env(),
                              capture_output=True, text=True, timeout=300,
                              cwd=str(tmp_path))
    first = run_example()
    assert first.returncode == 0, first.stderr
    change_id = bed.change_id()
    assert first.stdout == "[datastore1] vm/vm.vmdk %s True %d %s\n" % (
        to / "vm.raw", 2 << 20, change_id)
    guest.write(bed, libdir, tmp_path / "guest", [(777, b"api")])
    second = run_example()
    assert second.returncode == 0, second.stderr
    assert second.stdout.split()[3:5] == ["False", str(64 << 10)]
    assert (to / "vm.raw").read_bytes() == bed.data_path.read_bytes()
    bed.stop()
    failed = run_example()
    assert failed.returncode == 1
    assert failed.stderr.startswith(
        "backup failed, the previous one is intact: cannot reach vSphere ")
    assert len(failed.stderr.splitlines()) == 1, failed.stderr
