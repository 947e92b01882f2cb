"""Text from the disk (descriptor values, file names), from
VDDK (its log messages, GetErrorText) and from clients reaches the log
escaped one way (``vddkpy.printable``), backslash included: no terminal
control sequence gets through, no line can be forged, and a typed
backslash-n is told apart from a newline."""

from bed import (REMOTE, THUMB, random_file, raw_controls, run_nbdkit,
                 server_config)

# OSC "retitle the terminal", "clear the screen", a bell, a typed "\n".
PARENT = "p\x1b]0;retitled\x07\x1b[2J\\nq.vmdk"
PARENT_SHOWN = r"p\x1b]0;retitled\x07\x1b[2J\\nq.vmdk"
# A carriage return: the rest would overwrite the line on a terminal.
UUID = "60 00\x1b[2J\x07\rnbdkit: error: forged"
UUID_SHOWN = r"60 00\x1b[2J\x07\rnbdkit: error: forged"


def flat_descriptor(extent, sectors, extra=""):
    return ('# Disk DescriptorFile\nversion=1\nCID=fffffffe\n'
            'parentCID=ffffffff\ncreateType="monolithicFlat"\n%s\n'
            'RW %d FLAT "%s" 0\n' % (extra, sectors, extent))


def hostile_chain(directory):
    """child.vmdk whose parent's file name and whose uuid hold control
    sequences (both are VMDKs the stand-in opens)."""
    random_file(directory / "base-flat.vmdk", 65536, seed=1)
    random_file(directory / "child-flat.vmdk", 65536, seed=2)
    (directory / PARENT).write_text(flat_descriptor("base-flat.vmdk", 128))
    child = directory / "child.vmdk"
    child.write_text(flat_descriptor(
        "child-flat.vmdk", 128, 'parentFileNameHint="%s"\n' % PARENT)
        + 'ddb.uuid = "%s"\n' % UUID)
    return child


def shown(line, expected):
    """``line`` ends with ``expected`` (nbdkit >= 1.35.2 escapes debug
    lines once more, doubling each backslash of ours)."""
    return line.endswith(expected) or \
        line.endswith(expected.replace("\\", "\\\\"))


def assert_no_forged_lines(stderr):
    assert raw_controls(stderr) == [], repr(stderr)
    assert not [line for line in stderr.splitlines()
                if line.startswith("nbdkit: error: forged")], stderr


def test_descriptor_values_in_diskinfo_are_escaped(tmp_path, libdir):
    child = hostile_chain(tmp_path)
    result = run_nbdkit(tmp_path, libdir, ["file=%s" % child],
                        options=["-D", "vddk.diskinfo=1"],
                        run='nbdinfo --size "$uri"')
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip("\n") == "65536"     # (1.6: a blank line)
    assert_no_forged_lines(result.stderr)
    lines = result.stderr.splitlines()
    assert [line for line in lines if shown(
        line, "debug: disk info: parent filename hint: " + PARENT_SHOWN)]
    assert [line for line in lines if shown(
        line, "debug: disk info: uuid: " + UUID_SHOWN)]


def open_missing(tmp_path, libdir, name, config=None):
    """The plugin's Open error line for the missing file ``name``."""
    result = run_nbdkit(tmp_path, libdir, ["file=%s" % (tmp_path / name)],
                        config=config, run='nbdinfo --size "$uri"',
                        verbose=False)
    assert result.returncode != 0
    assert_no_forged_lines(result.stderr)
    (line,) = [line for line in result.stderr.splitlines()
               if "VixDiskLib_Open" in line]
    return line


def test_newline_and_typed_backslash_n_print_differently(tmp_path, libdir):
    newline = open_missing(tmp_path, libdir, "a\nnbdkit: error: forged")
    typed = open_missing(tmp_path, libdir, "a\\nnbdkit: error: forged")
    assert newline.endswith(
        r"error: VixDiskLib_Open: %s/a\nnbdkit: error: forged: A file was "
        r"not found" % tmp_path)
    assert typed.endswith(
        r"error: VixDiskLib_Open: %s/a\\nnbdkit: error: forged: A file was "
        r"not found" % tmp_path)


def test_vddk_log_lines_naming_the_file_are_escaped(tmp_path, libdir):
    # VDDK logs "Cannot open disk" for disks on a server.  Under -v nbdkit
    # 1.32 echoes file= as it is (its config line): only the plugin's
    # lines, and VDDK's that it relays, are checked here.
    name = "[datastore1] Fedora/x\x1b]0;retitled\x07\\n.vmdk"
    datastore = tmp_path / "datastore1"
    (datastore / "Fedora").mkdir(parents=True)
    result = run_nbdkit(tmp_path, libdir, REMOTE + [
        "thumbprint=%s" % THUMB, "file=%s" % name],
        config=server_config(datastore), run='nbdinfo --size "$uri"')
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines()
            if "VixDiskLib_Open" in line]
    assert raw_controls("".join(ours)) == [], ours
    escaped = r"[datastore1] Fedora/x\x1b]0;retitled\x07\\n.vmdk"
    for expected in (
            "debug: VDDK call: VixDiskLib_Open (connection, %s, 0, &handle)"
            % escaped,
            "debug: VixDiskLib: VixDiskLib_OpenEx: Cannot open disk %s. "
            "Error 4" % escaped,
            "error: VixDiskLib_Open: %s: A file was not found" % escaped):
        assert [line for line in ours if expected in line
                or expected.replace("\\", "\\\\") in line], (expected, ours)


def test_vddk_error_text_is_escaped(tmp_path, libdir):
    # The stand-in's config unescapes \n and \\ inside quotes; ESC and BEL
    # are written as they are.
    config = 'error_text "no\\nnbdkit: error: forged\x1b[2J\x07 a\\\\nb"\n'
    line = open_missing(tmp_path, libdir, "missing.vmdk", config=config)
    assert line.endswith(
        r"error: VixDiskLib_Open: %s/missing.vmdk: no\nnbdkit: error: "
        r"forged\x1b[2J\x07 a\\nb" % tmp_path)
