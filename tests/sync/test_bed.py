"""The warm-migration side of the bed: snapshots made through the
simulated vCenter are readable by the stand-in as they are made, removing
snapshots in any order leaves the running disk's files alone, and the VM
can be powered off, grow a disk and hold several disks."""

import hashlib

import nbd
import pytest

from . import guest


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_disk(bed, libdir, directory, disk=0, snapshot=None):
    """The whole disk number ``disk`` read through nbdkit + stand-in with
    the config written before any snapshot existed."""
    extra = [] if snapshot is None else ["snapshot=%s" % snapshot]
    with guest.opened(bed, libdir, directory, config_of(bed), disk, extra,
                      readonly=True) as h:
        size = h.get_size()
        return b"".join(h.pread(min(1 << 20, size - o), o)
                        for o in range(0, size, 1 << 20))


def config_of(bed):
    if not hasattr(bed, "first_config"):
        bed.first_config = bed.standin_config()
    return bed.first_config


@pytest.mark.parametrize("order", [(0, 2, 1), (2, 1, 0), (0, 1, 2),
                                   (1, 0, 2)])
def test_removing_snapshots_in_any_order_keeps_the_disk_files(
        vcsim, order):
    bed = vcsim(size=1 << 20, seed=5)
    bed.enable_cbt()
    before = {f.name: digest(f) for f in bed.disk_path.parent.iterdir()
              if f.suffix == ".vmdk"}
    assert sorted(before) == ["vm-ctk.vmdk", "vm-flat.vmdk", "vm.vmdk"]
    snaps = [bed.create_snapshot("s%d" % n)[0] for n in range(3)]
    for n in order:
        bed.remove_snapshot(snaps[n])
    # The disk's files as they were; the snapshots' own files gone.
    assert {f.name: digest(f) for f in bed.disk_path.parent.iterdir()
            if f.suffix == ".vmdk"} == before
    assert not [f for f in bed.disk_path.parent.iterdir()
                if f.suffix == ".vmsn"]
    assert bed.snapshot_morefs() == []
    assert bed.state["snapshots"] == []


def test_standin_reads_snapshots_made_after_its_config(vcsim, libdir,
                                                      tmp_path):
    bed = vcsim(size=1 << 20, seed=1, lock_running_disks=True)
    config_of(bed)
    bed.enable_cbt()
    snap, _ = bed.create_snapshot()
    frozen = bed.data_path.read_bytes()
    guest.write(bed, libdir, tmp_path / "guest", [(4096, b"x" * 5000)])
    assert read_disk(bed, libdir, tmp_path / "r", snapshot=snap) == frozen
    assert bed.data_path.read_bytes() != frozen


def test_running_disk_opens_only_through_a_snapshot_until_powered_off(
        vcsim, libdir, tmp_path):
    bed = vcsim(size=1 << 20, seed=2, lock_running_disks=True)
    with pytest.raises(nbd.Error, match="no export"):
        read_disk(bed, libdir, tmp_path / "r1")
    bed.stop_vm()
    assert read_disk(bed, libdir, tmp_path / "r2") == \
        bed.data_path.read_bytes()
    bed.start_vm()
    with pytest.raises(nbd.Error, match="no export"):
        read_disk(bed, libdir, tmp_path / "r3")


def test_grown_disk(vcsim, libdir, tmp_path):
    bed = vcsim(size=1 << 20, seed=3)
    old = bed.data_path.read_bytes()
    bed.grow(3 << 20)
    assert bed.disk_device().capacityInBytes == 3 << 20
    assert read_disk(bed, libdir, tmp_path / "r") == \
        old + bytes(2 << 20)
    bed.enable_cbt()
    guest.write(bed, libdir, tmp_path / "g", [((3 << 20) - 512, b"t" * 512)])
    snap, change_id = bed.create_snapshot()
    info = bed.query_changed_areas("*", snapshot=snap)
    assert info.length == 3 << 20


def test_two_disk_vm(vcsim, libdir, tmp_path):
    bed = vcsim(size=1 << 20, seed=4, more_disks=[2 << 20])
    from pyVmomi import vim
    disks = [d for d in bed.vm_object().config.hardware.device
             if isinstance(d, vim.vm.device.VirtualDisk)]
    assert [(d.backing.fileName, d.capacityInBytes) for d in disks] == \
        [("[datastore1] vm/vm.vmdk", 1 << 20),
         ("[datastore1] vm/vm_1.vmdk", 2 << 20)]
    assert read_disk(bed, libdir, tmp_path / "r", disk=1) == \
        bed.disks[1].data_path.read_bytes()


def test_bed_command_outside_pytest(tmp_path):
    """``python3 -m bed.vcenter start DIR`` runs the bed until stopped and
    prints what to give vddkpy sync; a round with exactly that works, and
    ``write`` and ``stop-vm`` act on the running bed."""
    import json
    import os
    import signal
    import subprocess
    import sys
    from bed import ROOT
    env = dict(os.environ, PYTHONPATH="%s:%s" % (ROOT / "tests", ROOT))
    env.pop("FAKEVDDK_CONFIG", None)
    directory = tmp_path / "bed"
    bed = subprocess.Popen([sys.executable, "-m", "bed.vcenter", "start",
                            str(directory), "--size", str(2 << 20)],
                           env=env, stdout=subprocess.PIPE, text=True)
    try:
        lines = [bed.stdout.readline() for _ in range(3)]
        assert lines[0] == "export FAKEVDDK_CONFIG=%s\n" % (
            directory / "fakevddk.conf")
        assert lines[1].startswith("vddkpy sync libdir=%s server=127.0.0.1 "
                                   "port=" % (directory / "vddk"))
        assert lines[1].endswith(" --to COPY_DIR\n")
        params = json.loads((directory / "bed.json").read_text())
        copy = tmp_path / "copy"
        copy.mkdir()
        sync_env = dict(env, FAKEVDDK_CONFIG=params["FAKEVDDK_CONFIG"])
        argv = [sys.executable, "-m", "vddkpy.sync"] + \
            params["BED_PARAMS"] + ["--to", str(copy)]

        def round_(*options):
            result = subprocess.run(argv + list(options), env=sync_env,
                                    capture_output=True, text=True,
                                    timeout=300)
            assert result.returncode == 0, result.stderr
        round_()
        subprocess.run([sys.executable, "-m", "bed.vcenter", "write",
                        str(directory), "4099", "hello"], env=env,
                       check=True, timeout=120)
        subprocess.run([sys.executable, "-m", "bed.vcenter", "stop-vm",
                        str(directory)], env=env, check=True, timeout=120)
        round_("--final")
        data = open(params["BED_DATA"][0], "rb").read()
        assert data[4099:4104] == b"hello"
        assert (copy / "vm.raw").read_bytes() == data
    finally:
        bed.send_signal(signal.SIGTERM)
        assert bed.wait(60) == 0
