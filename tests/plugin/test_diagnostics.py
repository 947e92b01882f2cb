"""Debug flags, statistics, --dump-plugin, re-exec, VDDK logs."""

import json
import os
import re
import subprocess

import pytest

from bed import (PLUGIN, REMOTE, REMOTE_DISK_ARGS, THUMB,
                      assert_no_traceback, assert_server_survived,
                      install_standin, random_file, random_vmdk, read_calls,
                      remote_disk, run_nbdkit, server_calls, server_config,
                      standin_env)

FUNCTIONS = [
    "InitEx", "Exit", "ListTransportModes", "GetErrorText", "FreeErrorText",
    "FreeConnectParams", "ConnectEx", "Open", "GetTransportMode", "Close",
    "Disconnect", "GetInfo", "FreeInfo", "Read", "Write", "Create", "Flush",
    "ReadAsync", "WriteAsync", "Wait", "QueryAllocatedBlocks",
    "FreeBlockList", "AllocateConnectParams"]


def debug_messages(stderr):
    return [line.split("debug: ", 1)[1] for line in stderr.splitlines()
            if "debug: " in line]


def copy_workload(tmp_path):
    """nbdcopy a random file in, then out again."""
    source = random_file(tmp_path / "src.raw", 4 * 1024 * 1024, seed=3)
    return ('nbdcopy %s "$uri" && nbdcopy "$uri" %s'
            % (source, tmp_path / "out.raw"))


@pytest.mark.parametrize("spelling", [
    ["-D", "vddk.stats=1"], ["-Dvddk.stats=1"], ["--debug", "vddk.stats=1"],
    ["--debug=vddk.stats=1"]])
def test_stats_table_every_spelling(tmp_path, libdir, spelling):
    disk = tmp_path / "disk.raw"
    disk.write_bytes(bytes(4 * 1024 * 1024))
    result = run_nbdkit(tmp_path, libdir, ["file=%s" % disk],
                        options=spelling + ["-D", "vddk.datapath=0"],
                        run=copy_workload(tmp_path))
    assert result.returncode == 0, result.stderr
    messages = debug_messages(result.stderr)
    start = messages.index("VDDK function stats (-D vddk.stats=1):")
    assert messages[start + 1] == (
        "VixDiskLib_...                        us calls           bytes")
    rows = {}
    for line in messages[start + 2:]:
        match = re.match(r"^  (\w+) +(\d+) +(\d+)(?: +(\d+))?$", line)
        if not match:
            break
        rows[match.group(1)] = tuple(int(g or 0) for g in match.groups()[1:])
    usecs = [r[0] for r in rows.values()]
    assert usecs == sorted(usecs, reverse=True) and min(usecs) > 0
    logged = read_calls(tmp_path / "calls.jsonl")
    # A local disk uses the file transport: synchronous Read and Write.
    for name in ("Read", "Write", "GetInfo", "Open", "Close",
                 "ConnectEx", "Disconnect", "InitEx", "Exit"):
        count = len([c for c in logged if c["fn"] == name])
        assert count and rows[name][1] == count, (name, rows.get(name))
    for name in ("Read", "Write"):
        nbytes = sum(c["count"] * 512 for c in logged if c["fn"] == name)
        assert rows[name][2] == nbytes == 4 * 1024 * 1024
    # -D vddk.datapath=0 silences exactly the datapath lines.
    assert not any(re.search(r"VixDiskLib_(Read|Write)", m) for m in messages)
    assert "VDDK call: VixDiskLib_Open (connection, %s, 0, &handle)" % disk \
        in messages


def test_first_flag_wins(tmp_path, libdir):
    disk = random_file(tmp_path / "disk.raw", 65536)
    on = run_nbdkit(tmp_path, libdir, ["file=%s" % disk],
                    options=["-D", "vddk.stats=1", "-D", "vddk.stats=0"],
                    run='nbdinfo "$uri"')
    off = run_nbdkit(tmp_path, libdir, ["file=%s" % disk],
                     options=["-D", "vddk.stats=0", "-D", "vddk.stats=1"],
                     run='nbdinfo "$uri"')
    assert "VDDK function stats" in on.stderr
    assert "VDDK function stats" not in off.stderr


def datapath_messages(tmp_path, libdir, args, config=None):
    script = ("import nbd; h = nbd.NBD(); h.connect_uri('%s'); "
              "h.pwrite(b'x' * 1024, 512); h.pread(1024, 512)")
    result = run_nbdkit(tmp_path, libdir, args, config=config,
                        run='/usr/bin/python3 -c "%s"' % (script % "$uri"))
    assert result.returncode == 0, result.stderr
    return debug_messages(result.stderr)


def test_datapath_lines_by_default(tmp_path, libdir):
    disk = random_file(tmp_path / "disk.raw", 65536)
    messages = datapath_messages(tmp_path, libdir, ["file=%s" % disk])
    assert ("VDDK call: VixDiskLib_Write (handle, 1 sectors, 2 sectors, "
            "buffer)") in messages
    assert ("VDDK call: VixDiskLib_Read (handle, 1 sectors, 2 sectors, "
            "buffer)") in messages


def test_datapath_lines_of_asynchronous_requests(tmp_path, libdir):
    config, _ = remote_disk(tmp_path, 65536)
    messages = datapath_messages(tmp_path, libdir, REMOTE_DISK_ARGS, config)
    # As upstream's, the ids count every callback, block_size too (which
    # nbdkit 1.24 never calls).
    write = 3 if server_calls("block_size") else 2
    assert ("VDDK call: VixDiskLib_WriteAsync (handle, 1 sectors, 2 sectors, "
            "buffer, callback, %d)" % write) in messages
    assert "command %d (write) completed" % write in messages
    assert ("VDDK call: VixDiskLib_ReadAsync (handle, 1 sectors, 2 sectors, "
            "buffer, callback, %d)" % (write + 1)) in messages
    assert "command %d (read) completed" % (write + 1) in messages


def test_stats_file_json(tmp_path, libdir):
    config, _ = remote_disk(tmp_path, 4 * 1024 * 1024)
    stats = tmp_path / "stats.json"
    result = run_nbdkit(tmp_path, libdir,
                        REMOTE_DISK_ARGS + ["stats-file=%s" % stats],
                        config=config, run=copy_workload(tmp_path),
                        verbose=False)
    assert result.returncode == 0, result.stderr
    data = json.loads(stats.read_text())["functions"]
    logged = read_calls(tmp_path / "calls.jsonl")
    for name in ("ReadAsync", "WriteAsync", "Open", "InitEx", "Exit"):
        assert data[name]["calls"] == len(
            [c for c in logged if c["fn"] == name])
        latency = data[name]["latency_us"]
        assert latency["p50"] <= latency["p90"] <= latency["p99"] \
            <= latency["max"]
    assert data["ReadAsync"]["bytes"] == 4 * 1024 * 1024


def test_diskinfo(tmp_path):
    libdir = install_standin(tmp_path / "vddk", version=8)
    disk = random_file(tmp_path / "disk.raw", 1027 * 512)
    result = run_nbdkit(tmp_path, libdir, ["file=%s" % disk],
                        options=["-D", "vddk.diskinfo=1"],
                        config="logical_sector_size 512\n"
                               "physical_sector_size 4096\n",
                        run='nbdinfo "$uri"')
    messages = debug_messages(result.stderr)
    assert "disk info: capacity: 1027 sectors" in messages
    assert "disk info: num links: 1" in messages
    assert "disk info: parent filename hint: NULL" in messages
    assert "disk info: sector size: logical 512 physical 4096" in messages
    assert any(m.startswith("disk info: biosGeo: C:") for m in messages)


def test_dump_plugin(tmp_path):
    for version in (7, 9):
        libdir = install_standin(tmp_path / ("v%d" % version),
                                 version=version, layout="lib64")
        result = run_nbdkit(tmp_path, libdir, [], options=["--dump-plugin"],
                            verbose=False)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        ours = lines[lines.index(next(l for l in lines
                                      if l.startswith("vddk_default"))):]
        assert ours[1] == "vddk_has_nfchostport=1"
        assert ours[2] == "vddk_library_version=%d" % version
        assert ours[3] == "vddk_dll=%s/lib64/libvixDiskLib.so.%d" % (
            libdir, version)
        assert ours[4] == "vddk_transport_modes=file:san:hotadd:nbdssl:nbd"
        assert ours[5:] == ["VixDiskLib_%s=1" % f for f in FUNCTIONS]


def test_dump_plugin_into_a_closed_pipe(tmp_path, libdir):
    """`nbdkit … --dump-plugin | head -1`: the reader leaves early; nbdkit
    exits cleanly (1.32's python plugin crashed if dump_plugin raised)."""
    command = ("nbdkit python %s libdir=%s --dump-plugin | head -c 1 "
               ">/dev/null; exit ${PIPESTATUS[0]}" % (PLUGIN, libdir))
    result = subprocess.run(["bash", "-c", command], capture_output=True,
                            text=True, env=standin_env(tmp_path), timeout=60)
    assert result.returncode == 0, result.stderr
    assert_server_survived(result.stderr)


def test_dump_plugin_without_library(tmp_path):
    result = run_nbdkit(tmp_path, tmp_path, ["file=/f", "export=*"],
                        options=["--dump-plugin"], verbose=False)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[-2].startswith("vddk_default_libdir=/")
    assert lines[-1] == "vddk_has_nfchostport=1"


def test_reexec_restores_library_path(tmp_path):
    libdir = install_standin(tmp_path / "vddk", layout="lib64",
                             companion=True)
    disk = random_file(tmp_path / "disk.raw", 65536)
    run = 'echo "L=${LD_LIBRARY_PATH-unset}" && nbdinfo --size "$uri"'
    result = run_nbdkit(tmp_path, libdir, ["file=%s" % disk], run=run)
    assert result.returncode == 0, result.stderr
    assert "L=unset\n65536\n" in result.stdout
    messages = debug_messages(result.stderr)
    assert "adding reexeced_=" in messages
    assert ("re-executing with updated LD_LIBRARY_PATH=%s/lib64" % libdir
            in messages)
    assert "cleaning up after re-exec" in messages

    result = run_nbdkit(tmp_path, libdir, ["file=%s" % disk], run=run,
                        env={"LD_LIBRARY_PATH": "/foo:/bar"})
    assert "L=/foo:/bar\n65536\n" in result.stdout, result.stderr
    assert ("re-executing with updated LD_LIBRARY_PATH=%s/lib64:/foo:/bar"
            % libdir) in debug_messages(result.stderr)


def test_without_reexec_companion_is_missing(tmp_path):
    libdir = install_standin(tmp_path / "vddk", companion=True)
    disk = random_file(tmp_path / "disk.raw", 65536)
    # (No --run where the server calls after_fork: a server that fails in
    # InitEx there leaves a --run command waiting, with upstream's plugin
    # too.  Without after_fork (nbdkit 1.24) InitEx runs at the first
    # open: a client makes it fail.)
    run = None if server_calls("after_fork") else 'nbdinfo --size "$uri"'
    result = run_nbdkit(tmp_path, libdir, ["file=%s" % disk,
                                           "noreexec=true"], run=run)
    assert result.returncode == 1
    assert_no_traceback(result.stderr)
    assert "libfakevddk-companion.so" in result.stderr
    assert "VixDiskLib_InitEx: Unknown error" in result.stderr
    assert "re-executing" not in result.stderr


def test_no_reexec_when_already_in_path(tmp_path):
    libdir = install_standin(tmp_path / "vddk")
    disk = random_file(tmp_path / "disk.raw", 65536)
    result = run_nbdkit(tmp_path, libdir, ["file=%s" % disk],
                        run='nbdinfo --size "$uri"',
                        env={"LD_LIBRARY_PATH": "/x:%s:/y" % libdir})
    assert result.returncode == 0
    assert "re-executing" not in result.stderr


@pytest.mark.parametrize("form", ["literal", "fd", "file"])
def test_reexec_keeps_password_off_cmdline(tmp_path, form):
    libdir = install_standin(tmp_path / "vddk", companion=True)
    store = tmp_path / "datastore1" / "Fedora"
    store.mkdir(parents=True)
    random_vmdk(store / "Fedora.vmdk", 65536)
    (tmp_path / "pw").write_text("sekret\n")
    fd = os.open(tmp_path / "pw", os.O_RDONLY)
    password = {"literal": "password=sekret", "fd": "password=-%d" % fd,
                "file": "password=+%s" % (tmp_path / "pw")}[form]
    pass_fds = (fd,) if form == "fd" else ()
    run = 'tr "\\0" " " < /proc/$PPID/cmdline; echo; nbdinfo --size "$uri"'
    try:
        result = run_nbdkit(
            tmp_path, libdir,
            REMOTE[:2] + [password, "vm=moref=2", "thumbprint=%s" % THUMB,
                          "file=[datastore1] Fedora/Fedora.vmdk"],
            config=server_config(tmp_path / "datastore1"), run=run,
            pass_fds=pass_fds)
    finally:
        os.close(fd)
    assert result.returncode == 0, result.stderr
    cmdline = result.stdout.splitlines()[0]
    assert "sekret" not in cmdline
    assert re.search(r"password=-\d+ reexeced_= $", cmdline), cmdline
    (connect,) = read_calls(tmp_path / "calls.jsonl", "ConnectEx")
    assert connect["password"] == "sekret"


def test_vddk_log_callbacks(tmp_path, libdir):
    disk = random_file(tmp_path / "disk.raw", 65536)
    config = "\n".join([
        'emit InitEx log "log message %d %s\\n"',
        'emit InitEx warn "Get CEIP status failed: x\\n"',
        'emit InitEx warn "VDDK_PhoneHome: something\\n"',
        'emit InitEx warn "a real warning %d\\n"',
        'emit InitEx warn "two newlines\\n\\n"',
        'emit InitEx panic "no newline"', ""])
    result = run_nbdkit(tmp_path, libdir, ["file=%s" % disk], config=config,
                        run='nbdinfo --size "$uri"')
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result.stderr)
    messages = debug_messages(result.stderr)
    assert "log message 42 hello" in messages
    assert "Get CEIP status failed: x" in messages
    assert "VDDK_PhoneHome: something" in messages
    errors = [l.split("error: ", 1)[1] for l in result.stderr.splitlines()
              if "error: " in l]
    assert errors[:3] == ["a real warning 42", "two newlines", "no newline"]
    assert "two newlines\n\n" in result.stderr


def test_probe_failure_is_silent(tmp_path, libdir):
    disk = random_file(tmp_path / "disk.raw", 1024 * 1024)
    config = ('fail QueryAllocatedBlocks 6\n'
              'emit QueryAllocatedBlocks warn "probe warning\\n"\n'
              'emit QueryAllocatedBlocks log "probe log\\n"\n')
    result = run_nbdkit(tmp_path, libdir, ["file=%s" % disk], config=config,
                        run='nbdinfo --map "$uri"')
    assert result.returncode == 0, result.stderr
    assert "probe warning" not in result.stderr
    assert "probe log" in result.stderr
    assert ("can_extents: VixDiskLib_QueryAllocatedBlocks test failed, "
            "extents support will be disabled: original error: ") \
        in result.stderr
    assert result.stdout.split()[:3] == ["0", "1048576", "0"]
    # One probe per open, not retried.  (nbdinfo from libnbd 1.22 makes
    # nbdkit open the plugin twice per connection: once to answer
    # NBD_OPT_INFO, once for NBD_OPT_GO.)
    opens = read_calls(tmp_path / "calls.jsonl", "Open")
    assert len(read_calls(tmp_path / "calls.jsonl",
                          "QueryAllocatedBlocks")) == len(opens) >= 1


def test_dump_plugin_transport_modes_unavailable(tmp_path, libdir):
    for config in ("transport_modes NULL\n", "fail InitEx 1\n"):
        result = run_nbdkit(tmp_path, libdir, ["noreexec=1"],
                            options=["--dump-plugin"], config=config,
                            verbose=False)
        assert result.returncode == 0
        assert "vddk_library_version=8\n" in result.stdout
        assert "vddk_transport_modes=" not in result.stdout
        assert "VixDiskLib_Open=1\n" in result.stdout
    last = read_calls(tmp_path / "calls.jsonl")[-1]
    assert (last["fn"], last["result"]) == ("InitEx", 1)    # no Exit after


def test_dump_plugin_reexec_prints_server_lines_twice(tmp_path, libdir):
    once = run_nbdkit(tmp_path, libdir, ["noreexec=1"],
                      options=["--dump-plugin"], verbose=False)
    twice = run_nbdkit(tmp_path, libdir, [], options=["--dump-plugin"],
                       verbose=False)
    assert once.stdout.count("python_version=") == 1
    assert twice.stdout.count("python_version=") == 2      # as upstream
    assert twice.stdout.count("vddk_library_version=") == 1


@pytest.mark.parametrize("given,expected", [("abc", "abc"), ("", "unset")])
def test_reexeced_marker_restores(tmp_path, libdir, given, expected):
    disk = random_file(tmp_path / "disk.raw", 65536)
    env = {"LD_LIBRARY_PATH": "%s/abc" % libdir if given else str(libdir)}
    result = run_nbdkit(tmp_path, libdir, ["file=%s" % disk,
                                           "reexeced_=%s" % given],
                        run='echo "L=${LD_LIBRARY_PATH-unset}"', env=env)
    assert result.returncode == 0, result.stderr
    assert "L=%s\n" % expected in result.stdout
    assert "re-executing" not in result.stderr


def test_extents_debug_and_rhel_hint(tmp_path, libdir):
    disk = tmp_path / "disk.raw"
    with open(disk, "wb") as f:
        f.truncate(1027 * 512)
        f.write(b"\1" * 256 * 512)
        f.seek(512 * 512)
        f.write(b"\2" * 128 * 512)
    result = run_nbdkit(tmp_path, libdir, ["file=%s" % disk],
                        options=["-D", "vddk.extents=1"],
                        run='nbdinfo --map "$uri"')
    messages = debug_messages(result.stderr)
    assert "adding extent type hole at [131072...262143] (length 131072)" \
        in messages
    assert ("adding extent type allocated data at [524288...525823] "
            "(length 1536)") in messages
    assert ("QueryAllocatedBlocks returned allocated block at 0-131071 "
            "(length 131072)") in messages
    hint = ("if nbdkit crashes when you open a connection, read this link "
            "for workarounds: https://issues.redhat.com/browse/RHEL-54377")
    assert (hint in messages) == (not os.path.exists("/sys/class/scsi_disk"))
    with_transports = run_nbdkit(tmp_path, libdir,
                                 ["file=%s" % disk, "transports=file"],
                                 run="true")
    assert hint not in debug_messages(with_transports.stderr)
