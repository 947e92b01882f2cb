"""The password never shows, the re-exec's password file is
private and gone at once, export= and -r keep clients within bounds."""

import errno
import json
import os
import stat

import nbd
import pytest

from bed import (REMOTE_DISK, THUMB, assert_no_traceback, install_standin,
                 random_file, random_vmdk, run_nbdkit, server_config)

SECRET = "Pw-8xQ2-s3cr3t"
EVERY_DEBUG_FLAG = ["-D", "vddk.diskinfo=1", "-D", "vddk.stats=1",
                    "-D", "vddk.extents=1", "-D", "vddk.datapath=1"]
# nbdkit itself logs each key=value at -v before any plugin code runs, so
# a password given literally on the command line is shown once; the forms
# that keep it off the command line avoid that.
SERVER_OWN_LINE = "config key=password, value=%s" % SECRET


@pytest.fixture
def store(tmp_path):
    directory = tmp_path / "datastore1"
    (directory / "Fedora").mkdir(parents=True)
    random_vmdk(directory / "Fedora" / "Fedora.vmdk", 1024 * 1024, seed=4)
    return directory


def secret_config(store, password=SECRET):
    return server_config(store) + "  user root %s\n" % password


def password_argument(tmp_path, form):
    """(the password= argument, fds to pass) for each way to give it."""
    if form == "literal":
        return "password=" + SECRET, ()
    path = tmp_path / "pw"
    path.write_text(SECRET + "\n")
    if form == "file":
        return "password=+%s" % path, ()
    fd = os.open(path, os.O_RDONLY)
    return "password=-%d" % fd, (fd,)


def remote_args(password):
    return ["server=esxi.example.com", "user=root", password, "vm=moref=2",
            "thumbprint=%s" % THUMB, "file=" + REMOTE_DISK]


def assert_secret_hidden(text, form):
    if form == "literal":
        assert text.count(SECRET) == text.count(SERVER_OWN_LINE) == 1, text
    else:
        assert SECRET not in text, text


@pytest.mark.parametrize("form", ["literal", "file", "fd"])
@pytest.mark.parametrize("server_password", [SECRET, "other"],
                         ids=["right", "wrong"])
def test_password_never_printed(tmp_path, libdir, store, form,
                                server_password):
    password, fds = password_argument(tmp_path, form)
    stats = tmp_path / "stats.json"
    try:
        result = run_nbdkit(
            tmp_path, libdir, remote_args(password) + ["stats-file=%s"
                                                       % stats],
            options=EVERY_DEBUG_FLAG, config=secret_config(store,
                                                           server_password),
            run='nbdcopy "$uri" %s' % (tmp_path / "copy.raw"),
            pass_fds=fds)
    finally:
        for fd in fds:
            os.close(fd)
    if server_password == SECRET:
        assert result.returncode == 0, result.stderr
        assert "disk info: capacity: 2048 sectors" in result.stderr
    else:
        assert result.returncode != 0
        assert "VixDiskLib_ConnectEx: Authentication failure" \
            in result.stderr
    assert_secret_hidden(result.stderr, form)
    assert SECRET not in result.stdout
    assert "VDDK function stats (-D vddk.stats=1):" in result.stderr
    assert SECRET not in stats.read_text()
    json.loads(stats.read_text())
    assert_no_traceback(result.stderr)


def test_running_server_hides_password(tmp_path, nbdkit, store):
    libdir = install_standin(tmp_path / "vddk-companion", companion=True)
    server = nbdkit(*remote_args("password=" + SECRET), libdir=libdir,
                    config=secret_config(store))
    h = server.connect()
    assert len(h.pread(512, 0)) == 512
    pid = server.proc.pid
    for name in ("cmdline", "environ"):
        with open("/proc/%d/%s" % (pid, name), "rb") as f:
            assert SECRET.encode() not in f.read(), name
    # A descriptor still holding the password must be the private,
    # unlinked file the re-exec made.
    test_files = {str(server.stderr_path), str(server.log_path)}
    for fd in os.listdir("/proc/%d/fd" % pid):
        path = "/proc/%d/fd/%s" % (pid, fd)
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode) or os.readlink(path) in test_files:
            continue
        with open(path, "rb") as f:
            if SECRET.encode() in f.read():
                assert info.st_nlink == 0
                assert stat.S_IMODE(info.st_mode) == 0o600
    h.shutdown()
    server.stop()
    assert server.calls("ConnectEx")[0]["password"] == SECRET
    assert_secret_hidden(server.stderr, "literal")


def test_reexec_secret_is_private_anonymous_memory():
    """The re-exec hands a secret on in a 0600 descriptor that names no
    file: memfd_create's anonymous memory here, never a disk."""
    from vddkpy.nbdkit.reexec import _password_fd
    fd = _password_fd(SECRET)
    try:
        info = os.fstat(fd)
        assert stat.S_IMODE(info.st_mode) == 0o600
        assert info.st_nlink == 0
        assert os.readlink("/proc/self/fd/%d" % fd).startswith("/memfd:")
        assert os.read(fd, 100) == SECRET.encode()
    finally:
        os.close(fd)


def test_readonly_never_writes(tmp_path, nbdkit):
    disk = random_file(tmp_path / "disk.raw", 1024 * 1024)
    original = disk.read_bytes()
    server = nbdkit("file=%s" % disk, readonly=True)
    h = server.connect(strict=False)
    for request in (lambda: h.pwrite(b"x" * 512, 0),
                    lambda: h.pwrite(b"x" * 512, 0, nbd.CMD_FLAG_FUA),
                    lambda: h.zero(512, 0), lambda: h.trim(512, 0)):
        with pytest.raises(nbd.Error) as failure:
            request()
        assert failure.value.errnum in (errno.EPERM, errno.EINVAL)
    h.flush()       # advertised as upstream does, and kept from VDDK
    assert h.pread(4096, 0) == original[:4096]
    h.shutdown()
    assert server.stop() == 0
    names = {c["fn"] for c in server.calls()}
    assert not names & {"Write", "WriteAsync", "Flush", "Create"}
    assert disk.read_bytes() == original
    assert_no_traceback(server.stderr)


def test_readonly_does_not_create(tmp_path, libdir):
    target = tmp_path / "new.raw"
    result = run_nbdkit(tmp_path, libdir,
                        ["file=%s" % target, "create=true",
                         "create-size=1M"], options=["-r"],
                        run='nbdinfo --size "$uri"')
    assert result.returncode != 0
    assert ("open: error: create=true: cannot create %s on a read-only "
            "connection" % target) in result.stderr
    calls = [json.loads(line)["fn"] for line in
             (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert "Create" not in calls and not target.exists()
    assert_no_traceback(result.stderr)


COOKIE = "52e1a7b9-cookie-d1f0"


def _serves_with_the_cookie_hidden(server, cookie):
    """A read works, the serving nbdkit's command line does not hold
    ``cookie``, and VDDK's ConnectEx got it; the server is then stopped."""
    h = server.connect()
    assert len(h.pread(512, 0)) == 512
    with open("/proc/%d/cmdline" % server.proc.pid, "rb") as f:
        assert cookie.encode() not in f.read()
    h.shutdown()
    server.stop()
    assert server.calls("ConnectEx")[0]["cookie"] == cookie


def test_cookie_leaves_the_command_line(tmp_path, nbdkit, store):
    """cookie= is moved off the re-executed server's command line (to an
    unlinked file, as password=), so ps does not show it and nbdkit's -v
    echoes it only in the process the user started."""
    libdir = install_standin(tmp_path / "vddk-companion", companion=True)
    password, _ = password_argument(tmp_path, "file")
    args = ["server=esxi.example.com", "user=root", "cookie=" + COOKIE,
            password, "vm=moref=2", "thumbprint=%s" % THUMB, "file=" + REMOTE_DISK]
    server = nbdkit(*args, libdir=libdir, config=server_config(store)
                    + "  cookie %s root\n" % COOKIE)
    _serves_with_the_cookie_hidden(server, COOKIE)
    assert server.stderr.count(COOKIE) == server.stderr.count(
        "config key=cookie, value=%s" % COOKIE) == 1, server.stderr
    assert_no_traceback(server.stderr)


@pytest.mark.parametrize("given, cookie", [
    ("cookie_", COOKIE), ("cookie=-" + COOKIE, "-" + COOKIE)],
    ids=["internal-fd", "public-verbatim"])
def test_cookie_from_a_descriptor_only_by_the_internal_key(
        tmp_path, nbdkit, store, given, cookie):
    """cookie_=-FD (what vddkpy sync gives its children, never users)
    reads the cookie from an inherited descriptor, so no command line
    holds it, not even the one nbdkit's -v echoes; the public cookie= is
    the cookie itself, also when it starts with "-"."""
    libdir = install_standin(tmp_path / "vddk-companion", companion=True)
    password, _ = password_argument(tmp_path, "file")
    read, write = os.pipe()
    os.write(write, (cookie + "\n").encode())
    os.close(write)
    argument = "cookie_=-%d" % read if given == "cookie_" else given
    try:
        server = nbdkit(
            "server=esxi.example.com", "user=root", argument, password,
            "vm=moref=2", "thumbprint=%s" % THUMB, "file=" + REMOTE_DISK,
            libdir=libdir, pass_fds=(read,),
            config=server_config(store) + "  cookie %s root\n" % cookie)
    finally:
        os.close(read)
    _serves_with_the_cookie_hidden(server, cookie)
    echoed = 0 if given == "cookie_" else 1     # nbdkit -v, as for cookie=
    assert server.stderr.count(cookie) == echoed, server.stderr
    assert_no_traceback(server.stderr)


def _core_dumped(tmp_path, libdir, args, config):
    """Whether the serving nbdkit, killed by SIGABRT while serving, leaves
    a core file (core_pattern "core": in its working directory)."""
    import resource
    import signal
    import subprocess
    import time
    from bed import PLUGIN, standin_env
    directory = tmp_path / ("cwd%d" % len(list(tmp_path.glob("cwd*"))))
    directory.mkdir()
    sock = directory / "nbd.sock"
    proc = subprocess.Popen(
        ["nbdkit", "-f", "-U", str(sock), "python", str(PLUGIN),
         "libdir=%s" % libdir] + args, cwd=directory,
        env=standin_env(tmp_path, config), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, preexec_fn=lambda: resource.setrlimit(
            resource.RLIMIT_CORE, (resource.RLIM_INFINITY,
                                   resource.RLIM_INFINITY)))
    try:
        h = nbd.NBD()
        for _ in range(1000):
            if sock.exists():
                break
            assert proc.poll() is None
            time.sleep(0.02)
        h.connect_unix(str(sock))
        assert len(h.pread(512, 0)) == 512     # serving, secret in memory
        proc.send_signal(signal.SIGABRT)
        assert proc.wait(60) == -signal.SIGABRT
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    cores = list(directory.glob("core*"))
    for core in cores:
        core.unlink()
    return bool(cores)


@pytest.mark.skipif(open("/proc/sys/kernel/core_pattern").read().strip()
                    != "core", reason="core files are not written to the "
                    "process's directory here (kernel.core_pattern)")
def test_process_holding_a_password_leaves_no_core(tmp_path, libdir, store):
    """A server holding a password or cookie is not dumpable: killed, it
    leaves no core file; one serving a local file (no secret) does."""
    disk = random_file(tmp_path / "disk.raw", 1024 * 1024)
    assert _core_dumped(tmp_path, libdir, ["file=%s" % disk], None)
    assert not _core_dumped(tmp_path, libdir, remote_args(
        "password=" + SECRET), secret_config(store))
