"""The changed-block-tracking test bed: govmomi's vCenter simulator
(tests/bed/vcsim/build/vcsim, built by scripts/setup.sh) plays the ESXi host of
one VM whose disk is a flat VMDK on this machine, reached by the plugin
through the VDDK stand-in.  One inventory (written here, completed by the
server in its state file) feeds both.  The API is described in
tests/bed/vcsim/README.md."""

import functools
import json
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

VCSIM_DIR = Path(__file__).resolve().parent / "vcsim"
VCSIM = VCSIM_DIR / "build" / "vcsim"
STARTUP_TIMEOUT = 30
DATASTORE = "datastore1"
DISK_FILE = "[%s] vm/vm.vmdk" % DATASTORE
# The vSphere version the server's About reports: one VDDK 8 supports.
VERSION = "8.0.2"


class NotBuilt(Exception):
    """The vcsim binary is missing."""


def _unverified_tls():
    """A TLS context that leaves the certificate check to the thumbprint
    comparison (vSphere's self-signed certificates have no CA)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@functools.lru_cache(maxsize=None)
def ensure_built():
    """Bring the binary up to date when Go is here (a no-op in a second
    when nothing changed), as pytest_sessionstart does for the stand-in."""
    if shutil.which("go") and subprocess.run(
            [str(VCSIM_DIR / "build.sh")]).returncode != 0:
        raise NotBuilt("tests/bed/vcsim/build.sh failed (its output is above): "
                       "run scripts/setup.sh")
    if not VCSIM.exists():
        raise NotBuilt("%s is missing: run scripts/setup.sh" % VCSIM)


class Vcsim:
    """One running vcsim with its VM, disk and stand-in configuration."""

    def __init__(self, directory, size=16 << 20, seed=None, power_on=True,
                 user="root", password="sekret", version=VERSION):
        ensure_built()
        self.dir = Path(directory)
        self.power_on = power_on
        self.user = user
        self.password = password
        self.version = version
        self.size = size
        self.datastore = self.dir / DATASTORE
        self.disk_file = DISK_FILE
        self.disk_path = self.datastore / "vm" / "vm.vmdk"
        self.data_path = self.datastore / "vm" / "vm-flat.vmdk"
        self.state_path = self.dir / "state.json"
        self.password_file = self.dir / "password"
        self.stderr_path = self.dir / "vcsim.stderr"
        self._make_disk(seed)
        self.proc = None
        self._si = None

    def _make_disk(self, seed):
        from bed import flat_vmdk, random_file
        self.data_path.parent.mkdir(parents=True, exist_ok=True)
        if seed is None:
            with open(self.data_path, "wb") as f:
                f.truncate(self.size)
        else:
            random_file(self.data_path, self.size, seed)
        flat_vmdk(self.disk_path, self.data_path)
        self.password_file.write_text(self.password)

    # ---- life cycle ----

    def start(self):
        inventory = {
            "user": self.user, "password": self.password,
            "datastores": {DATASTORE: str(self.datastore)},
            "vm": {"name": "vm", "power_on": self.power_on,
                   "disks": [{"fileName": self.disk_file,
                              "capacity": self.size}]},
            "snapshots_dir": str(self.dir / "snapshots"),
            "state": str(self.state_path),
            "version": self.version,
        }
        inventory_path = self.dir / "inventory.json"
        inventory_path.write_text(json.dumps(inventory, indent=2))
        with open(self.stderr_path, "wb") as err:
            # Our end of its stdin closes when this process dies, however
            # it dies: the server then exits (-exit-on-eof).
            self.proc = subprocess.Popen(
                [str(VCSIM), "-inventory", str(inventory_path),
                 "-exit-on-eof"],
                stdout=subprocess.DEVNULL, stderr=err,
                stdin=subprocess.PIPE)
        self._wait_ready()
        return self

    def _wait_ready(self):
        """The state file appears once the server listens; then one TCP
        connection proves it accepts."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self.state_path.exists():
            if self.proc.poll() is not None:
                raise AssertionError("vcsim exited %d:\n%s" % (
                    self.proc.returncode, self.stderr))
            if time.monotonic() > deadline:
                raise AssertionError("vcsim did not start:\n" + self.stderr)
            time.sleep(0.02)
        socket.create_connection((self.host, self.port), 5).close()

    def stop(self):
        if self._si is not None:
            from pyVim.connect import Disconnect
            try:
                Disconnect(self._si)
            except Exception:   # the server may already be gone
                pass
            self._si = None
        if self.proc and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def stderr(self):
        return self.stderr_path.read_text(errors="replace") \
            if self.stderr_path.exists() else ""

    # ---- what the server chose (its state file) ----

    @property
    def state(self):
        return json.loads(self.state_path.read_text())

    @property
    def host(self):
        return self.state["host"]

    @property
    def port(self):
        return self.state["port"]

    @property
    def thumbprint(self):
        return self.state["thumbprint"]

    @property
    def vm(self):
        """The VM's moref, e.g. "vm-9"."""
        return self.state["vm"]

    @property
    def disk_key(self):
        return self.state["disks"][0]["key"]

    def plugin_args(self, password=None):
        """The plugin parameters reaching the disk through the stand-in."""
        return ["server=%s" % self.host, "port=%d" % self.port,
                "user=%s" % self.user,
                "password=%s" % (password or "+%s" % self.password_file),
                "thumbprint=%s" % self.thumbprint,
                "vm=moref=%s" % self.vm, "file=%s" % self.disk_file]

    def standin_config(self, extra="", cookies=()):
        """FAKEVDDK_CONFIG text: ``extra`` directives, then this host as a
        ``server`` block (its VM, datastore and snapshots); ``cookies``
        are session cookies the stand-in accepts for the user."""
        st = self.state
        lines = [extra.rstrip("\n"),
                 "server %s" % st["host"],
                 "  port %d" % st["port"],
                 "  thumbprint %s" % st["thumbprint"],
                 "  user %s %s" % (self.user, self.password)]
        lines += ["  cookie %s %s" % (c, self.user) for c in cookies]
        lines += ["  vm moref=%s" % st["vm"],
                 "    datastore %s %s" % (DATASTORE, self.datastore)]
        for snap in st["snapshots"]:
            lines.append("    snapshot %s %s" % (snap["moref"], " ".join(
                "%s=%s" % kv for kv in sorted(snap["datastores"].items()))))
        return "\n".join(lines) + "\n"

    # ---- vSphere API (pyvmomi, the server's thumbprint verified) ----

    def connect(self, thumbprint=None, user=None, password=None):
        """A new pyvmomi session."""
        from pyVim.connect import SmartConnect
        return SmartConnect(host=self.host, port=self.port,
                            user=user or self.user,
                            pwd=password or self.password,
                            sslContext=_unverified_tls(),
                            thumbprint=thumbprint or self.thumbprint)

    @property
    def si(self):
        """The fixture's own session (made on first use)."""
        if self._si is None:
            self._si = self.connect()
        return self._si

    def vm_object(self):
        from pyVmomi import vim
        return vim.VirtualMachine(self.vm, self.si._stub)

    def disk_device(self, config=None):
        """The disk's VirtualDisk in ``config`` (default: the VM's)."""
        from pyVmomi import vim
        config = config or self.vm_object().config
        for dev in config.hardware.device:
            if isinstance(dev, vim.vm.device.VirtualDisk) and \
                    dev.backing.fileName == self.disk_file:
                return dev
        raise AssertionError("no disk %s" % self.disk_file)

    def _run_task(self, task):
        from pyVim.task import WaitForTask
        WaitForTask(task, si=self.si)
        return task.info.result

    def enable_cbt(self, enabled=True):
        """ReconfigVM_Task changeTrackingEnabled=ENABLED (ESXi then creates
        or deletes the disk's -ctk.vmdk)."""
        from pyVmomi import vim
        spec = vim.vm.ConfigSpec(changeTrackingEnabled=enabled)
        self._run_task(self.vm_object().ReconfigVM_Task(spec))

    def change_id(self):
        """The disk's current changeId (None while tracking is off)."""
        return self.disk_device().backing.changeId

    def create_snapshot(self, name="snap"):
        """CreateSnapshot_Task; returns (snapshot moref, the disk's
        changeId in the snapshot)."""
        snap = self._run_task(self.vm_object().CreateSnapshot_Task(
            name=name, description="", memory=False, quiesce=False))
        return snap._moId, self.disk_device(snap.config).backing.changeId

    def snapshot_data_path(self, moref):
        """The file holding the disk's bytes as of snapshot ``moref`` (its
        frozen copy, what ``snapshot=MOREF`` reads)."""
        snap = next(s for s in self.state["snapshots"] if s["moref"] == moref)
        return Path(snap["datastores"][DATASTORE]) / self.data_path.relative_to(
            self.datastore)

    def remove_snapshot(self, moref):
        """RemoveSnapshot_Task (the frozen copy goes too)."""
        from pyVmomi import vim
        self._run_task(vim.vm.Snapshot(moref, self.si._stub)
                       .RemoveSnapshot_Task(removeChildren=False))

    def query_changed_areas(self, change_id, start=0, snapshot=None):
        """One QueryChangedDiskAreas call: the DiskChangeInfo."""
        from pyVmomi import vim
        if snapshot is not None:
            snapshot = vim.vm.Snapshot(snapshot, self.si._stub)
        return self.vm_object().QueryChangedDiskAreas(
            snapshot=snapshot, deviceKey=self.disk_key, startOffset=start,
            changeId=change_id)

    # ---- test knobs and counters (tests/bed/vcsim/control.go) ----

    def _control(self, **request):
        body = json.dumps(request).encode()
        req = urllib.request.Request(
            "https://%s:%d/vddkpy/control" % (self.host, self.port),
            data=body, method="POST",
            headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, context=_unverified_tls(), timeout=10)

    def set_latency(self, method, seconds):
        """Delay every call of SOAP ``method`` by ``seconds``."""
        self._control(latency={method: seconds})

    def set_page_size(self, areas):
        """At most ``areas`` changed areas per QueryChangedDiskAreas
        answer (default 2000, as vSphere)."""
        self._control(page_areas=areas)

    def set_page_bytes(self, nbytes):
        """Each QueryChangedDiskAreas answer covers at most ``nbytes`` of
        the disk (0: no limit), so answers may hold no area."""
        self._control(page_bytes=nbytes)

    def expire_sessions(self):
        """End every client session (as when vCenter's sessions time
        out): the next call of each is NotAuthenticated."""
        self._control(expire_sessions=True)
        self._si = None     # the fixture's own session ended too

    def reset(self):
        """Knobs back to their defaults, call counters to 0."""
        self._control(reset=True)

    def calls(self, method=None):
        """Calls served per SOAP method since start (or reset); with
        ``method``, that method's count."""
        with urllib.request.urlopen(
                "https://%s:%d/vddkpy/calls" % (self.host, self.port),
                context=_unverified_tls(), timeout=10) as r:
            counts = json.loads(r.read())
        return counts if method is None else counts.get(method, 0)
