"""Every parameter, validated and passed to VDDK as upstream does."""

import os
import subprocess

import nbd
import pytest

from bed import (REMOTE, THUMB, assert_no_traceback, random_file,
                      random_vmdk, run_nbdkit, server_config)


class ServerSays:
    """The error line the server under test prints itself (its parsers'
    wording changes between versions), got from one of its C plugins."""

    def __init__(self, *plugin_args):
        self.plugin_args = list(plugin_args)

    def text(self):
        result = subprocess.run(["nbdkit"] + self.plugin_args +
                                ["--run", "true"], capture_output=True,
                                text=True, timeout=60)
        (line,) = [line for line in result.stderr.splitlines()
                   if line.startswith("nbdkit: error: ")]
        return line[len("nbdkit: error: "):]


def config_error(tmp_path, libdir, args, env=None):
    result = run_nbdkit(tmp_path, libdir, args, verbose=False, env=env)
    assert result.returncode == 1, result.stderr
    assert_no_traceback(result.stderr)
    return [line[len("nbdkit: error: "):]
            for line in result.stderr.splitlines()
            if line.startswith("nbdkit: error: ")]


@pytest.mark.parametrize("args,messages", [
    ([], ["you must supply the file=<FILENAME> parameter after the plugin "
          "name on the command line"]),
    (["file=/f", "export=*"],
     ["file and export parameters cannot be used together"]),
    (["export=*"], ["you must supply the file=<FILENAME> parameter after "
                    "the plugin name on the command line"]),
    (["export=", "file=/f"],
     ["export parameter should be a wildcard, not an empty string"]),
    (["server=x"], ["remote connection requested, either file or export "
                    "parameter is required"]),
    (["server=x", "file=/f"],
     ["remote connection requested, missing parameter: user"]),
    (["server=x", "user=u", "file=/f"],
     ["remote connection requested, missing parameter: password"]),
    (["server=x", "user=u", "password=p", "file=/f"],
     ["remote connection requested, missing parameter: vm"]),
    (["user=u", "file=/f"],
     ["remote connection requested, missing parameter: server"]),
    (["thumbprint=ab", "file=/f"],
     ["remote connection requested, missing parameter: server"]),
    (["cookie=c", "file=/f"],
     ["remote connection requested, missing parameter: server"]),
    (["password=p", "file=/f"],
     ["remote connection requested, missing parameter: server"]),
    (["vm=moref=1", "file=/f"],
     ["remote connection requested, missing parameter: server"]),
    (["port=0x1bb", "file=/f"],
     ["remote connection requested, missing parameter: server"]),
    (["file=/f", "create=true"],
     ["if using create=true you must specify the size using the "
      "create-size parameter"]),
    (REMOTE + ["file=/f", "create=1", "create-size=1M"],
     ["create=true can only be used to create local VMDK files"]),
    (["file=/f", "create-size=100"],
     ["create-size must be greater than zero and a multiple of 512"]),
    (["file=/f", "create-size=0"],
     ["create-size must be greater than zero and a multiple of 512"]),
    (["file=/f", "create-size=10MB"],
     [ServerSays("memory", "size=10MB")]),
    (["file=/f", "compression=lz4"], ["unknown compression type: lz4"]),
    (["file=/f", "create-adapter-type=foo"],
     ["unknown create-adapter-type: foo"]),
    (["file=/f", "create-type=foo"], ["unknown create-type: foo"]),
    (["file=/f", "create-hwversion=foo"],
     ["create-hwversion: empty string where we expected a number",
      "unknown create-hwversion: foo"]),
    (["file=/f", "create-hwversion=70000"],
     ['create-hwversion: could not parse number: "70000": Numerical result '
      'out of range', "unknown create-hwversion: 70000"]),
    (["file=/f", "create-hwversion=-1"],
     ["create-hwversion: negative numbers are not allowed",
      "unknown create-hwversion: -1"]),
    (["file=/f", "create-hwversion=12x"],
     ['create-hwversion: could not parse number: "12x": trailing garbage',
      "unknown create-hwversion: 12x"]),
    (["file=/f", "foo=bar"], ["unknown parameter 'foo'"]),
    (["file=/f", "Key=1"], ["unknown parameter 'Key'"]),
    (["file=/f", "config=/nonexistent"],
     ["realpath: /nonexistent: No such file or directory"]),
    (["file=/f", "config="], ["cannot resolve a null or empty path"]),
    (["file=/f", "noreexec=maybe"], ["could not decipher boolean (maybe)"]),
    (["file=/f", "single-link=2"], ["could not decipher boolean (2)"]),
    (["file=/f", "unbuffered= yes"],
     ["could not decipher boolean ( yes)"]),
    (["file=/f", "port="], ["port: empty string where we expected a number"]),
    (["file=/f", "port=65536"],
     ['port: could not parse number: "65536": Numerical result out of '
      'range']),
    (["file=/f", "port= 44x"],
     ['port: could not parse number: "44x": trailing garbage']),
    (["file=/f", "nfchostport=-5"],
     ["nfchostport: negative numbers are not allowed"]),
    (["file=/f", "port=08"],
     ['port: could not parse number: "08": trailing garbage']),
    (["file=/f", "port=+-7"],
     ["port: empty string where we expected a number"]),
    (["file=/f", "password=+/nonexistent", "server=s"],
     ["open /nonexistent: No such file or directory"]),
    (["file=/f", "password=+"], ["open : No such file or directory"]),
    (["file=/f", "password=-1"],
     ["cannot use password -FD for stdin/stdout/stderr"]),
    (["file=/f", "password=-99"], ["fdopen 99: Bad file descriptor"]),
    (["file=/f", "password=-abc"],
     ["password file descriptor: empty string where we expected a number"]),
    (["file=/f", "password=-3x"],
     ['password file descriptor: could not parse number: "3x": trailing '
      'garbage']),
    (["file=/f", "password=-"],
     ["stdin is not a tty, cannot read password interactively"]),
    (["reexeced_=abc", "file=/f"],
     ["'reexeced_' set with garbled environment"]),
])
def test_configuration_errors(tmp_path, libdir, args, messages):
    expected = [m.text() if isinstance(m, ServerSays) else m
                for m in messages]
    assert config_error(tmp_path, libdir, args) == expected


def test_libdir_must_exist(tmp_path):
    assert config_error(tmp_path, "/nonexistent", ["file=/f"]) == [
        "realpath: /nonexistent: No such file or directory"]


def test_garbled_reexec_environment_prefix(tmp_path, libdir):
    env = {"LD_LIBRARY_PATH": "/x/abc"}
    assert config_error(tmp_path, libdir, ["file=/f", "reexeced_=abc"],
                        env=env) == [
        "'reexeced_' set with garbled environment"]


def serve_once(tmp_path, libdir, args, config=None, run='nbdinfo "$uri"',
               env=None, **kw):
    result = run_nbdkit(tmp_path, libdir, args, config=config, run=run,
                        env=env, **kw)
    assert_no_traceback(result.stderr)
    return result


def calls(tmp_path, fn):
    from bed import read_calls
    return read_calls(tmp_path / "calls.jsonl", fn)


@pytest.mark.parametrize("args,flags", [
    ([], 0),
    (["single-link=1", "unbuffered=1", "compression=skipz"], 67),
    (["compression=zlib"], 16),
    (["compression=fastlz"], 32),
    (["compression=none"], 0),
    (["unbuffered=YES", "single-link=On"], 3),
])
def test_open_flags(tmp_path, libdir, args, flags):
    disk = random_file(tmp_path / "d.raw", 65536)
    result = serve_once(tmp_path, libdir, ["file=%s" % disk] + args)
    assert result.returncode == 0, result.stderr
    opened = calls(tmp_path, "Open")[-1]
    assert opened["flags"] == flags
    assert opened["path"] == str(disk)


def test_local_connect_params_are_empty(tmp_path, libdir):
    disk = random_file(tmp_path / "d.raw", 65536)
    result = serve_once(tmp_path, libdir, ["file=%s" % disk, "port=0",
                                           "nfchostport=0",
                                           "vimapiver=6.5",
                                           "create-size=1M"])
    assert result.returncode == 0, result.stderr
    connect = calls(tmp_path, "ConnectEx")[-1]
    for field in ("vmxSpec", "serverName", "thumbPrint", "userName",
                  "password", "cookie", "snapshotRef", "transportModes"):
        assert connect[field] is None, field
    assert (connect["credType"], connect["port"], connect["nfcHostPort"],
            connect["specType"], connect["readOnly"]) == (0, 0, 0, 0, 0)
    assert calls(tmp_path, "Create") == []


def test_last_file_wins_and_config_is_resolved(tmp_path, libdir):
    disk = random_file(tmp_path / "d.raw", 65536)
    (tmp_path / "cfg").write_text("# VDDK config\n")
    os.symlink(tmp_path / "cfg", tmp_path / "cfg-link")
    result = serve_once(tmp_path, libdir,
                        ["file=/a", "file=%s" % disk, "config=cfg-link"],
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    opened = calls(tmp_path, "Open")[-1]
    assert opened["path"] == str(disk)
    (init,) = calls(tmp_path, "InitEx")
    assert init["configFile"] == str(tmp_path / "cfg")
    assert init["libDir"] == str(libdir)
    assert (init["major"], init["minor"]) == (6, 5)
    assert ("VDDK call: VixDiskLib_InitEx (6, 5, &debug_fn, &error_fn, "
            "&error_fn, %s, %s)" % (libdir, tmp_path / "cfg")) \
        in result.stderr


def test_create_passes_parameters(tmp_path, libdir):
    new = tmp_path / "new.vmdk"
    source = random_file(tmp_path / "in.raw", 1024 * 1024)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2",
                    str(source), str(tmp_path / "input.qcow2")], check=True)
    result = serve_once(
        tmp_path, libdir,
        ["file=%s" % new, "create=true", "create-size=1M",
         "create-type=vmfs-thin", "create-adapter-type=ide",
         "create-hwversion=esx65"],
        run="qemu-img convert -n -O raw %s $uri && nbdinfo $uri"
            % (tmp_path / "input.qcow2"))
    assert result.returncode == 0, result.stderr
    (create,) = calls(tmp_path, "Create")
    assert (create["path"], create["diskType"], create["adapterType"],
            create["hwVersion"], create["capacity"],
            create["logicalSectorSize"], create["physicalSectorSize"]) == \
        (str(new), 7, 1, 13, 2048, 0, 0)
    assert "VDDK call: VixDiskLib_Create (h->connection, %s, &cparams, " \
           "NULL, NULL)" % new in result.stderr
    # Created once, although qemu-img and nbdinfo connected separately.
    assert len(calls(tmp_path, "Open")) >= 2
    # A vmfsThin disk keeps its bytes in the flat extent NAME-flat.vmdk.
    assert (tmp_path / "new-flat.vmdk").read_bytes() == source.read_bytes()


def test_create_defaults_and_existing_file(tmp_path, libdir):
    existing = random_file(tmp_path / "exists.vmdk", 4096)
    result = serve_once(tmp_path, libdir,
                        ["file=%s" % existing, "create=true",
                         "create-size=1M"],
                        run='nbdinfo "$uri"; nbdinfo "$uri"')
    (first, second) = calls(tmp_path, "Create")[:2]
    assert (first["diskType"], first["adapterType"], first["hwVersion"],
            first["capacity"]) == (1, 2, 4, 2048)
    assert first["result"] == 12
    assert "VixDiskLib_Create: %s: " % existing in result.stderr
    # A failed create is tried again by the next connection.
    assert second["path"] == str(existing)
    assert calls(tmp_path, "Open") == []


@pytest.fixture
def datastore(tmp_path):
    directory = tmp_path / "datastore1"
    (directory / "Fedora").mkdir(parents=True)
    random_vmdk(directory / "Fedora" / "Fedora.vmdk", 1024 * 1024, seed=7)
    random_vmdk(directory / "Fedora" / "Other.vmdk", 65536, seed=8)
    return directory


def test_remote_connect_params(tmp_path, libdir, datastore):
    result = serve_once(
        tmp_path, libdir,
        REMOTE + ["thumbprint=%s" % THUMB, "port=443", "nfchostport=902",
                  "snapshot=snapshot-1", "transports=nbd:nbdssl",
                  "file=[datastore1] Fedora/Fedora.vmdk"],
        config=server_config(datastore), run='nbdcopy "$uri" %s'
        % (tmp_path / "out.raw"))
    assert result.returncode == 0, result.stderr
    connect = calls(tmp_path, "ConnectEx")[-1]
    assert connect["vmxSpec"] == "moref=2"
    assert connect["serverName"] == "esxi.example.com"
    assert connect["thumbPrint"] == THUMB
    assert (connect["credType"], connect["userName"],
            connect["password"]) == (1, "root", "sekret")
    assert (connect["port"], connect["nfcHostPort"], connect["specType"]) \
        == (443, 902, 0)
    assert connect["snapshotRef"] == "snapshot-1"
    assert connect["transportModes"] == "nbd:nbdssl"
    assert "transport mode: nbd" in result.stderr
    assert (tmp_path / "out.raw").read_bytes() == \
        (datastore / "Fedora" / "Fedora-flat.vmdk").read_bytes()
    assert "sekret" not in result.stderr.replace(
        "config key=password, value=sekret", "")


def test_cookie_uses_session_id(tmp_path, libdir, datastore):
    result = serve_once(
        tmp_path, libdir,
        ["server=esxi.example.com", "user=root", "password=thekey",
         "cookie=COOKIE42", "vm=moref=2", "thumbprint=%s" % THUMB,
         "file=[datastore1] Fedora/Fedora.vmdk"],
        config=server_config(datastore))
    assert result.returncode == 0, result.stderr
    connect = calls(tmp_path, "ConnectEx")[-1]
    assert (connect["credType"], connect["cookie"], connect["userName"],
            connect["key"]) == (2, "COOKIE42", "root", "thekey")
    assert connect["password"] is None


def test_wrong_thumbprint_gives_hint(tmp_path, libdir, datastore):
    result = serve_once(
        tmp_path, libdir,
        REMOTE + ["thumbprint=12", "file=[datastore1] Fedora/Fedora.vmdk"],
        config=server_config(datastore))
    assert result.returncode != 0
    assert ("VixDiskLibVim: Failed to verify SSL certificate: actual "
            "thumbprint=%s expected=12" % THUMB) in result.stderr
    errors = [l for l in result.stderr.splitlines() if "error:" in l]
    assert any("VixDiskLib_Open: [datastore1] Fedora/Fedora.vmdk: Unknown "
               "error" in l for l in errors), result.stderr
    assert any('VDDK "Unknown error" can be caused by several problems.  '
               'Refer to nbdkit-vddk-plugin(1) section "Error 1 (Unknown '
               'error) when opening a disk" for details.' in l
               for l in errors), result.stderr


def remote_server(nbdkit, datastore, *args, **kw):
    return nbdkit(*(REMOTE + ["thumbprint=%s" % THUMB] + list(args)),
                  config=server_config(datastore, **kw.pop("server", {})),
                  **kw)


def test_export_wildcard(tmp_path, nbdkit, datastore):
    server = remote_server(nbdkit, datastore,
                           r"export=\[datastore1\] Fedora/*.vmdk")
    h = server.connect(export="[datastore1] Fedora/Fedora.vmdk")
    assert h.pread(4096, 0) == \
        (datastore / "Fedora" / "Fedora-flat.vmdk").read_bytes()[:4096]
    h.shutdown()
    info = subprocess.run(
        ["nbdinfo", "--size",
         "nbd+unix:///%5bdatastore1%5d%20Fedora/Other.vmdk?socket="
         + server.socket], capture_output=True, text=True)
    assert info.stdout.strip() == "65536", info.stderr
    for name in ("[datastore2] Fedora/Fedora.vmdk", ""):
        with pytest.raises(nbd.Error):
            server.connect(export=name)
        assert ('access denied: client requested "%s" which does not match '
                r'export="\[datastore1\] Fedora/*.vmdk"' % name) \
            in server.stderr
    # "*" matches "/" (nbdkit 1.46), but never lets a name climb out.
    for name in ("[datastore1] Fedora/../other.vmdk",
                 "[datastore1] Fedora/x/../../other.vmdk"):
        with pytest.raises(nbd.Error):
            server.connect(export=name)
        assert ('access denied: client requested "%s" which has a ".." path '
                'component' % name) in server.stderr
    with pytest.raises(nbd.Error):      # matches, but is not on the host
        server.connect(export="[datastore1] Fedora/sub/F.vmdk")
    server.stop()
    opened = [c["path"] for c in server.calls("Open")]
    assert opened[0] == "[datastore1] Fedora/Fedora.vmdk"
    assert set(opened[1:]) == {"[datastore1] Fedora/Other.vmdk",
                               "[datastore1] Fedora/sub/F.vmdk"}
    assert_no_traceback(server.stderr)


@pytest.mark.parametrize("wildcard,name,allowed", [
    ("[ab]*", "a1", True), ("[ab]*", "c1", False), (".*", ".hidden", True),
    ("*", "", True),
])
def test_export_glibc_rules(tmp_path, nbdkit, datastore, wildcard, name,
                            allowed):
    server = remote_server(nbdkit, datastore, "export=%s" % wildcard)
    if allowed:
        # Allowed by the wildcard; the emulated server then refuses it.
        with pytest.raises(nbd.Error):
            server.connect(export=name)
        assert [c["path"] for c in server.calls("Open")] == [name] * \
            len(server.calls("Open")) and server.calls("Open")
    else:
        with pytest.raises(nbd.Error):
            server.connect(export=name)
        assert server.calls("AllocateConnectParams") == []


def test_password_from_fd(tmp_path, libdir, datastore):
    for content in (b"sekret\n", b""):
        (tmp_path / "calls.jsonl").unlink(missing_ok=True)
        r, w = os.pipe()
        os.write(w, content)
        os.close(w)
        try:
            serve_once(tmp_path, libdir,
                       REMOTE[:2] + ["password=-%d" % r, "vm=moref=2",
                                     "thumbprint=%s" % THUMB,
                                     "file=[datastore1] Fedora/Fedora.vmdk"],
                       config=server_config(datastore), pass_fds=(r,))
        finally:
            os.close(r)
        connect = calls(tmp_path, "ConnectEx")[-1]
        assert connect["password"] == content.decode().rstrip("\n")


@pytest.mark.parametrize("content,expected", [
    ("S3cr3tA", "S3cr3tA"), ("L1neOne\nline2\n", "L1neOne"),
    ("PwCr9\r\n", "PwCr9\r")], ids=["plain", "two-lines", "crlf"])
def test_password_from_file(tmp_path, libdir, datastore, content, expected):
    (tmp_path / "pw").write_text(content)
    result = serve_once(tmp_path, libdir,
                        REMOTE[:2] + ["password=+%s" % (tmp_path / "pw"),
                                      "vm=moref=2", "thumbprint=%s" % THUMB,
                                      "file=[datastore1] Fedora/Fedora.vmdk"],
                        config=server_config(datastore))
    connect = calls(tmp_path, "ConnectEx")[-1]
    assert connect["password"] == expected
    assert expected.strip() not in result.stderr


def test_password_typed_at_terminal(tmp_path, libdir, datastore):
    pexpect = pytest.importorskip("pexpect")
    from bed import PLUGIN, fresh_socket, standin_env
    env = standin_env(tmp_path, server_config(datastore))
    command = ["nbdkit", "-f", "-U", fresh_socket(tmp_path),
               "--run", 'nbdinfo --size "$uri"', "python", str(PLUGIN),
               "libdir=%s" % libdir] + REMOTE[:2] + [
        "password=-", "vm=moref=2", "thumbprint=%s" % THUMB,
        "file=[datastore1] Fedora/Fedora.vmdk"]
    child = pexpect.spawn(command[0], command[1:], env=env, timeout=60)
    child.expect("ssword: ")
    child.sendline("sekret")
    child.expect(pexpect.EOF)
    output = child.before.decode()
    child.close()
    assert child.exitstatus == 0, output
    assert output.count("password: ") == 0 and "1048576" in output
    connect = calls(tmp_path, "ConnectEx")[-1]
    assert connect["password"] == "sekret"


def test_remote_failures_keep_serving(tmp_path, nbdkit, datastore):
    server = remote_server(nbdkit, datastore,
                           r"export=\[datastore1\] Fedora/*.vmdk")
    with pytest.raises(nbd.Error):
        server.connect(export="[datastore1] Fedora/Missing.vmdk")
    h = server.connect(export="[datastore1] Fedora/Fedora.vmdk")
    assert len(h.pread(512, 0)) == 512
    h.shutdown()
    assert "VixDiskLib_Open: [datastore1] Fedora/Missing.vmdk: " \
        in server.stderr
    assert_no_traceback(server.stderr)


def names(tmp_path):
    return [c["fn"] for c in calls(tmp_path, None)]


def test_connect_failure_frees_params_only(tmp_path, libdir):
    disk = random_file(tmp_path / "d.raw", 65536)
    result = serve_once(tmp_path, libdir, ["file=%s" % disk],
                        config="fail ConnectEx 14009\n")
    assert "VixDiskLib_ConnectEx: " in result.stderr
    seen = names(tmp_path)
    assert "FreeConnectParams" in seen
    assert "Open" not in seen and "Disconnect" not in seen


@pytest.mark.parametrize("code,remote,hint", [
    (1, False, False), (1, True, True), (4, True, False),
    (4294967297, True, False)])
def test_open_failure(tmp_path, libdir, datastore, code, remote, hint):
    target = "[datastore1] Fedora/Fedora.vmdk"
    args = (REMOTE + ["thumbprint=%s" % THUMB, "file=%s" % target]
            if remote else ["file=%s" % random_file(tmp_path / "d.raw",
                                                    65536)])
    result = serve_once(tmp_path, libdir, args,
                        config=server_config(datastore) +
                        "fail Open %d\n" % code)
    name = target if remote else str(tmp_path / "d.raw")
    assert "VixDiskLib_Open: %s: " % name in result.stderr
    assert ('VDDK "Unknown error" can be caused by several problems.'
            in result.stderr) == hint
    assert "VDDK call: VixDiskLib_GetErrorText (%d)" % code in result.stderr
    seen = names(tmp_path)
    assert "Close" not in seen
    assert "Disconnect" in seen and "FreeConnectParams" in seen


def test_null_error_text(tmp_path, libdir):
    result = serve_once(tmp_path, libdir, ["file=/nonexistent.vmdk"],
                        config="error_text_null 1\n")
    assert "VixDiskLib_Open: /nonexistent.vmdk: (null)" in result.stderr


def test_manual_create_example(tmp_path, libdir):
    """The manual's example, as written (plus file= and the plugin path)."""
    source = random_file(tmp_path / "in.raw", 3 * 1024 * 1024, seed=4)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2",
                    str(source), str(tmp_path / "input.qcow2")], check=True)
    output = tmp_path / "output.vmdk"
    result = serve_once(tmp_path, libdir,
                        ["file=%s" % output, "create=true",
                         "create-size=100M"],
                        run="qemu-img convert input.qcow2 $uri",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (create,) = calls(tmp_path, "Create")
    assert create["capacity"] == 100 * 2048
    subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "vmdk",
                    str(source), str(output)], check=True)


def test_nbdsh_chooses_export(tmp_path, nbdkit, datastore):
    server = remote_server(nbdkit, datastore,
                           r"export=\[datastore1\] Fedora/*.vmdk")
    result = subprocess.run(
        ["nbdsh", "-c", 'h.set_export_name("[datastore1] Fedora/Fedora.vmdk")',
         "-c", "h.connect_unix(%r)" % server.socket,
         "-c", "print(h.get_size())"], capture_output=True, text=True)
    assert result.stdout.strip() == "1048576", result.stderr
