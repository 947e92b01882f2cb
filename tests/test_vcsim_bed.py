"""The changed-block-tracking test bed itself (tests/vcsim.py,
tests/vcsim/): vcsim answers pyvmomi with the server's thumbprint
verified, the stand-in serves the VM's disk to nbdkit, and what is written
through it comes back from QueryChangedDiskAreas."""

import pytest


def test_login_verifies_the_thumbprint_and_finds_vm_and_disk(vcsim):
    bed = vcsim(size=8 << 20)
    si = bed.connect()
    from pyVmomi import vim
    vm = vim.VirtualMachine(bed.vm, si._stub)
    assert vm.name == "vm"
    assert vm.runtime.powerState == "poweredOn"
    assert vm.config.changeTrackingEnabled is False
    disk = bed.disk_device(vm.config)
    assert disk.key == bed.disk_key == 2000
    assert disk.backing.fileName == "[datastore1] vm/vm.vmdk"
    assert disk.capacityInBytes == 8 << 20
    assert disk.backing.changeId is None
    assert bed.calls("Login") == 1


def test_wrong_thumbprint_refused_by_pyvmomi(vcsim):
    bed = vcsim()
    wrong = "00:" * 19 + "00"
    with pytest.raises(Exception) as e:
        bed.connect(thumbprint=wrong)
    assert "Server has wrong SHA1 thumbprint" in str(e.value)
    assert bed.thumbprint.replace(":", "").lower() in str(e.value)
    assert bed.calls("Login") == 0


def test_wrong_password_refused(vcsim):
    bed = vcsim()
    from pyVmomi import vim
    with pytest.raises(vim.fault.InvalidLogin):
        bed.connect(password="wrong")


def test_nbdkit_reads_the_vms_disk_through_the_standin(vcsim, nbdkit):
    bed = vcsim(size=4 << 20, seed=7)
    server = nbdkit(*bed.plugin_args(), config=bed.standin_config(),
                    readonly=True)
    h = server.connect()
    assert h.get_size() == 4 << 20
    assert h.pread(1 << 20, 1 << 20) == \
        bed.data_path.read_bytes()[1 << 20:2 << 20]
    opened = server.calls("Open")
    assert [c["path"] for c in opened] == ["[datastore1] vm/vm.vmdk"]
    assert server.calls("ConnectEx")[0]["thumbPrint"] == bed.thumbprint


def test_standin_refuses_another_thumbprint(vcsim, nbdkit):
    bed = vcsim()
    args = [a for a in bed.plugin_args() if not a.startswith("thumbprint=")]
    wrong = "AA:" * 19 + "AA"
    server = nbdkit(*args, "thumbprint=" + wrong,
                    config=bed.standin_config(), readonly=True)
    import nbd
    with pytest.raises(nbd.Error):
        server.connect()
    assert "actual thumbprint=%s expected=%s" % (bed.thumbprint, wrong) \
        in server.stderr
