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
import sys
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


class Disk:
    """One disk of the VM: its fileName, descriptor, data file, size."""

    def __init__(self, file, path, data_path, size):
        self.file = file
        self.path = path
        self.data_path = data_path
        self.size = size


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
    when nothing changed), as conftest.py does for the stand-in."""
    if shutil.which("go") and subprocess.run(
            [str(VCSIM_DIR / "build.sh")]).returncode != 0:
        raise NotBuilt("tests/bed/vcsim/build.sh failed (its output is above): "
                       "run scripts/setup.sh")
    if not VCSIM.exists():
        raise NotBuilt("%s is missing: run scripts/setup.sh" % VCSIM)


class Vcsim:
    """One running vcsim with its VM, disk and stand-in configuration."""

    def __init__(self, directory, size=16 << 20, seed=None, power_on=True,
                 user="root", password="sekret", more_disks=(),
                 lock_running_disks=False, version=VERSION):
        """``more_disks``: sizes of further disks (vm/vm_1.vmdk, ...);
        ``lock_running_disks``: the stand-in refuses to open a disk of the
        powered-on VM without a snapshot, as ESXi does (the guest's own
        writes then go through ``guest_config()``); ``version``: the
        vSphere version the simulated vCenter reports."""
        ensure_built()
        self.dir = Path(directory)
        self.power_on = power_on
        self.user = user
        self.password = password
        self.version = version
        self.size = size
        self.lock_running_disks = lock_running_disks
        self.datastore = self.dir / DATASTORE
        self.disk_file = DISK_FILE
        self.disk_path = self.datastore / "vm" / "vm.vmdk"
        self.data_path = self.datastore / "vm" / "vm-flat.vmdk"
        self.state_path = self.dir / "state.json"
        self.password_file = self.dir / "password"
        self.power_file = self.dir / "powered-on"
        self.snapshots_dir = self.dir / "snapshots"
        self.stderr_path = self.dir / "vcsim.stderr"
        self.disks = [Disk(DISK_FILE, self.disk_path, self.data_path, size)]
        for n, extra_size in enumerate(more_disks, 1):
            name = "vm_%d" % n
            self.disks.append(Disk(
                "[%s] vm/%s.vmdk" % (DATASTORE, name),
                self.datastore / "vm" / (name + ".vmdk"),
                self.datastore / "vm" / (name + "-flat.vmdk"), extra_size))
        for n, disk in enumerate(self.disks):
            self._make_disk(disk, None if seed is None else seed + n)
        self.password_file.write_text(self.password)
        self.proc = None
        self._si = None

    @staticmethod
    def _make_disk(disk, seed):
        from bed import flat_vmdk, random_file
        disk.data_path.parent.mkdir(parents=True, exist_ok=True)
        if seed is None:
            with open(disk.data_path, "wb") as f:
                f.truncate(disk.size)
        else:
            random_file(disk.data_path, disk.size, seed)
        flat_vmdk(disk.path, disk.data_path)

    # ---- life cycle ----

    def start(self):
        inventory = {
            "user": self.user, "password": self.password,
            "datastores": {DATASTORE: str(self.datastore)},
            "vm": {"name": "vm", "power_on": self.power_on,
                   "disks": [{"fileName": d.file, "capacity": d.size}
                             for d in self.disks]},
            "snapshots_dir": str(self.snapshots_dir),
            "state": str(self.state_path),
            "power_file": str(self.power_file),
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

    def vm_args(self, password=None):
        """The plugin parameters naming the VM (no file=: every disk)."""
        return [a for a in self.plugin_args(password)
                if not a.startswith("file=")]

    def guest_config(self):
        """FAKEVDDK_CONFIG for the guest's own writes: the running VM's
        disks are open to it (no lock), each write recorded by change
        tracking."""
        return self.standin_config(locked=False)

    def standin_config(self, extra="", cookies=(), locked=None):
        """FAKEVDDK_CONFIG text: ``extra`` directives, then this host as a
        ``server`` block (its VM, datastore and snapshots: the listed ones,
        and any made later, found in the snapshots directory); ``cookies``
        are session cookies the stand-in accepts for the user.  ``locked``
        (default: lock_running_disks): a disk of the powered-on VM opens
        only through a snapshot."""
        st = self.state
        lines = [extra.rstrip("\n"),
                 "server %s" % st["host"],
                 "  port %d" % st["port"],
                 "  thumbprint %s" % st["thumbprint"],
                 "  user %s %s" % (self.user, self.password)]
        lines += ["  cookie %s %s" % (c, self.user) for c in cookies]
        lines += ["  vm moref=%s" % st["vm"],
                  "    datastore %s %s" % (DATASTORE, self.datastore),
                  "    snapshots %s" % self.snapshots_dir]
        if self.lock_running_disks if locked is None else locked:
            lines.append("    running_while %s" % self.power_file)
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

    def sessions(self):
        """The sessions vSphere holds now (the fixture's own included):
        each log-in that never logs out stays until it times out."""
        return len(self.si.content.sessionManager.sessionList)

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

    def snapshot_morefs(self):
        """The VM's snapshots, as vSphere lists them (its whole tree)."""
        def walk(trees):
            for tree in trees or ():
                yield tree.snapshot._moId
                yield from walk(tree.childSnapshotList)
        snapshot = self.vm_object().snapshot
        return [] if snapshot is None else list(walk(snapshot.rootSnapshotList))

    def stop_vm(self):
        self._run_task(self.vm_object().PowerOffVM_Task())

    def start_vm(self):
        self._run_task(self.vm_object().PowerOnVM_Task())

    def grow(self, capacity, disk=0):
        """Extend disk number ``disk`` to ``capacity`` bytes (its new tail
        reads as zeros and is not recorded as changed)."""
        self._control(grow={"fileName": self.disks[disk].file,
                            "capacity": capacity})
        self.disks[disk].size = capacity
        if disk == 0:
            self.size = capacity

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

    def set_hostile(self, kind, **fields):
        """Answer QueryChangedDiskAreas with a hostile answer
        (tests/bed/vcsim/hostile.go): ``kind`` "shift" (``shift=N``: as if
        asked N bytes later), "raw" (``status``, ``body`` with "{offset}",
        ``content_type``, ``location``), "areas" (``count`` areas of
        ``length`` every ``stride`` bytes) or "stall" (no answer); for
        ``calls=N`` calls after ``after=M`` normal ones (default: every
        call).  reset() ends it."""
        self._control(hostile=dict(fields, kind=kind))

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


# ---- the bed outside pytest: python3 -m bed.vcenter (scripts/bed.sh) ----

USAGE = """\
usage: PYTHONPATH=tests python3 -m bed.vcenter start DIR [--size BYTES] [--disks N]
       PYTHONPATH=tests python3 -m bed.vcenter stop-vm|start-vm DIR
       PYTHONPATH=tests python3 -m bed.vcenter write DIR OFFSET TEXT [DISK]

start: the simulated vCenter with one VM (change tracking on, powered on,
disks of random bytes) and the VDDK stand-in installed in DIR/vddk; prints
the parameters to give vddkpy and writes them to DIR/bed.env (shell); runs
until interrupted.  stop-vm / start-vm: power the VM off / on.  write: the
guest writes TEXT at OFFSET of disk DISK (0: the first), recorded by
change tracking."""


def _bed_env(directory, bed, libdir):
    """What a user needs, written to DIR/bed.env (shell) and DIR/bed.json."""
    config = directory / "fakevddk.conf"
    config.write_text(bed.standin_config())
    guest = directory / "guest.conf"
    guest.write_text(bed.guest_config())
    return {"FAKEVDDK_CONFIG": str(config), "BED_GUEST_CONFIG": str(guest),
            "BED_PARAMS": ["libdir=%s" % libdir] + bed.vm_args(),
            "BED_FILES": [d.file for d in bed.disks],
            "BED_DATA": [str(d.data_path) for d in bed.disks]}


def _start(directory, size, disks):
    import shlex
    import signal
    from bed import install_standin
    directory.mkdir(parents=True, exist_ok=True)
    libdir = install_standin(directory / "vddk")
    bed = Vcsim(directory / "vcenter", size=size, seed=1,
                more_disks=[size] * (disks - 1), lock_running_disks=True)
    bed.start()
    try:
        bed.enable_cbt()
        env = _bed_env(directory, bed, libdir)
        (directory / "bed.json").write_text(json.dumps(env, indent=2))
        (directory / "bed.env").write_text("".join(
            "%s=%s\n" % (k, shlex.quote(v if isinstance(v, str)
                                         else " ".join(map(shlex.quote, v))))
            for k, v in env.items()))
        print("export FAKEVDDK_CONFIG=%s" % shlex.quote(
            env["FAKEVDDK_CONFIG"]))
        print("vddkpy sync %s --to COPY_DIR"
              % " ".join(map(shlex.quote, env["BED_PARAMS"])))
        print("(all of it in %s; Ctrl-C stops the bed)"
              % (directory / "bed.env"), flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            while bed.proc.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    finally:
        bed.stop()


def _attached(directory):
    """The running bed of DIR (started by ``start``)."""
    bed = Vcsim.__new__(Vcsim)
    bed.dir = directory / "vcenter"
    bed.state_path = bed.dir / "state.json"
    bed.user, bed.password = "root", (bed.dir / "password").read_text()
    bed._si = None
    bed.proc = None
    return bed


def _guest_write(directory, offset, text, disk):
    """The guest writes ``text`` at ``offset`` (through the stand-in, which
    records it for change tracking)."""
    import nbd
    env = json.loads((directory / "bed.json").read_text())
    plugin = Path(__file__).resolve().parents[2] / "plugin" / "plugin.py"
    command = ["env", "FAKEVDDK_CONFIG=" + env["BED_GUEST_CONFIG"],
               "nbdkit", "-s", "--exit-with-parent", "python", str(plugin)] \
        + env["BED_PARAMS"] + ["file=" + env["BED_FILES"][disk]]
    h = nbd.NBD()
    h.connect_command(command)
    data = text.encode()
    start = offset // 512 * 512
    end = -(-(offset + len(data)) // 512) * 512
    sectors = bytearray(h.pread(end - start, start))
    sectors[offset - start:offset - start + len(data)] = data
    h.pwrite(bytes(sectors), start)
    h.flush()
    h.shutdown()


def main(argv):
    if len(argv) < 2 or argv[0] not in ("start", "stop-vm", "start-vm",
                                        "write"):
        print(USAGE, file=sys.stderr)
        return 2
    directory = Path(argv[1]).resolve()
    if argv[0] == "start":
        options = dict(zip(argv[2::2], argv[3::2]))
        if len(argv) % 2 or set(options) - {"--size", "--disks"}:
            print(USAGE, file=sys.stderr)
            return 2
        _start(directory, int(options.get("--size", 64 << 20)),
               int(options.get("--disks", 1)))
    elif argv[0] == "write":
        _guest_write(directory, int(argv[2]), argv[3],
                     int(argv[4]) if len(argv) > 4 else 0)
    else:
        bed = _attached(directory)
        bed.stop_vm() if argv[0] == "stop-vm" else bed.start_vm()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
