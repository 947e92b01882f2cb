"""export= matches bytes as upstream does whatever the
locale, and the client's export name is printed escaped.  As in
nbdkit 1.46, without FNM_PATHNAME ("*" matches "/")."""

import json
import shutil
import subprocess

import nbd
import pytest

from bed import REMOTE, THUMB, random_vmdk, raw_controls, server_config
from bed.handshake import NBD_REP_ACK, negotiate_export

WILDCARD = r"\[datastore1\] Fedora/?.vmdk"
UTF8_LOCALE = "fr_FR.UTF-8"


@pytest.fixture(scope="session")
def locpath(tmp_path_factory):
    """A directory holding a compiled UTF-8 locale other than C.UTF-8,
    made with localedef (package locales), for LOCPATH: nothing is
    installed on the machine."""
    directory = tmp_path_factory.mktemp("locales")
    subprocess.run(["localedef", "-i", "fr_FR", "-f", "UTF-8",
                    str(directory / UTF8_LOCALE)], check=True, timeout=120,
                   capture_output=True)
    return directory


LOCALES = {
    "LC_ALL=C": {"LC_ALL": "C"},
    "LANG=C.UTF-8": {"LC_ALL": "", "LC_CTYPE": "", "LANG": "C.UTF-8"},
    "LC_ALL=C.UTF-8": {"LC_ALL": "C.UTF-8"},
    "LANG=" + UTF8_LOCALE: {"LC_ALL": "", "LC_CTYPE": "",
                            "LANG": UTF8_LOCALE},
}


@pytest.fixture
def datastore(tmp_path):
    directory = tmp_path / "datastore1"
    (directory / "Fedora").mkdir(parents=True)
    for name in ("a.vmdk", "é.vmdk"):
        random_vmdk(directory / "Fedora" / name, 65536)
    return directory


def serve(nbdkit, datastore, wildcard, env=None, **kw):
    return nbdkit(*REMOTE, "thumbprint=%s" % THUMB, "export=%s" % wildcard,
                  config=server_config(datastore), env=env, **kw)


def locale_env(name, locpath):
    env = dict(LOCALES[name], LOCPATH=str(locpath))
    # Check that the locale exists, else glibc would quietly fall back to C.
    check = subprocess.run(["locale"], env=env, capture_output=True,
                           text=True)
    assert "Cannot set" not in check.stderr, check.stderr
    return env


@pytest.mark.parametrize("name", list(LOCALES))
def test_wildcard_matches_bytes_in_every_locale(tmp_path, nbdkit, datastore,
                                                locpath, name):
    server = serve(nbdkit, datastore, WILDCARD, locale_env(name, locpath))
    # "é" is two bytes in UTF-8: "?" matches one.
    with pytest.raises(nbd.Error):
        server.connect(export="[datastore1] Fedora/é.vmdk")
    assert ('access denied: client requested "[datastore1] Fedora/é.vmdk" '
            'which does not match export="%s"' % WILDCARD) in server.stderr
    h = server.connect(export="[datastore1] Fedora/a.vmdk")
    assert h.pread(512, 0) == \
        (datastore / "Fedora" / "a-flat.vmdk").read_bytes()[:512]
    h.shutdown()
    server.stop()
    assert [c["path"] for c in server.calls("Open")] == \
        ["[datastore1] Fedora/a.vmdk"]


def test_name_that_is_not_utf8_is_matched_as_bytes(tmp_path, nbdkit,
                                                   datastore):
    # Latin-1 "é" is one byte, which "?" matches, as in upstream's plugin.
    name = b"[datastore1] Fedora/\xe9.vmdk"
    folder = bytes(datastore / "Fedora")
    shutil.copy(folder + b"/a.vmdk", folder + b"/\xe9.vmdk")
    server = serve(nbdkit, datastore, WILDCARD)
    assert negotiate_export(server.socket, name) == NBD_REP_ACK
    server.stop()
    # The stand-in logs the path's bytes as they are.
    log = server.log_path.read_bytes().decode("utf-8", "surrogateescape")
    (opened,) = [c for c in map(json.loads, log.splitlines())
                 if c["fn"] == "Open"]
    assert opened["result"] == 0
    assert opened["path"].encode("utf-8", "surrogateescape") == name


HOSTILE = "evil\nnbdkit: error: forged line\x1b[31m\x7f\x9b\"\\"
ESCAPED = r'"evil\nnbdkit: error: forged line\x1b[31m\x7f\x9b\"\\"'


def test_denied_name_is_printed_escaped(tmp_path, nbdkit, datastore):
    server = serve(nbdkit, datastore, WILDCARD, verbose=False)
    with pytest.raises(nbd.Error):
        server.connect(export=HOSTILE)
    server.stop()
    stderr = server.stderr
    assert raw_controls(stderr) == [], repr(stderr)
    (line,) = stderr.splitlines()
    assert line.endswith('error: access denied: client requested %s which '
                         'does not match export="%s"' % (ESCAPED, WILDCARD))


# Unquoted, as in the Open lines: the same escapes, backslash included.
UNQUOTED = ESCAPED[1:-1].replace(r"\"", '"')


def test_matching_name_is_printed_escaped(tmp_path, nbdkit, datastore):
    # "*" matches control characters: the name reaches VDDK, which fails
    # to open it and says so, naming it.
    server = serve(nbdkit, datastore, r"\[datastore1\] Fedora/*",
                   verbose=False)
    with pytest.raises(nbd.Error):
        server.connect(export="[datastore1] Fedora/" + HOSTILE)
    server.stop()
    stderr = server.stderr
    assert raw_controls(stderr) == [], repr(stderr)
    (line,) = stderr.splitlines()
    assert line.endswith("error: VixDiskLib_Open: [datastore1] Fedora/%s: A "
                         "file was not found" % UNQUOTED)


def test_debug_lines_naming_the_client_file_are_escaped(tmp_path, nbdkit,
                                                        datastore):
    # At -v nbdkit 1.32 itself echoes the export name as it is (its own
    # negotiation lines); the plugin's lines, and VDDK's that it relays,
    # are escaped.  (nbdkit >= 1.35.2 escapes debug lines once more, "\"
    # included: there the check is that each stays one line.)
    server = serve(nbdkit, datastore, r"\[datastore1\] Fedora/*")
    with pytest.raises(nbd.Error):
        server.connect(export="[datastore1] Fedora/" + HOSTILE)
    server.stop()
    ours = [line for line in server.stderr.splitlines()
            if "VixDiskLib_Open" in line]
    assert len(ours) == 3, ours
    for expected in (
            "debug: VDDK call: VixDiskLib_Open (connection, [datastore1] "
            "Fedora/%s, 0, &handle)" % UNQUOTED,
            "debug: VixDiskLib: VixDiskLib_OpenEx: Cannot open disk "
            "[datastore1] Fedora/%s. Error 4" % UNQUOTED,
            "error: VixDiskLib_Open: [datastore1] Fedora/%s: A file was not "
            "found" % UNQUOTED):
        assert any(expected in line or expected.replace("\\", "\\\\")
                   in line for line in ours), (expected, ours)


# -- nbdkit 1.46: "*" crosses "/" (no FNM_PATHNAME) ---------------------------

def test_one_server_for_disks_in_two_folders(tmp_path, nbdkit):
    """virt-v2v's single instance for all disks of a VM: export= is the
    escaped common prefix of the disks' names followed by "*.vmdk", and one
    disk sits in a subfolder."""
    datastore = tmp_path / "datastore1"
    (datastore / "vm" / "sub").mkdir(parents=True)
    (datastore / "vmx").mkdir()
    disks = {"[datastore1] vm/disk.vmdk":
             random_vmdk(datastore / "vm" / "disk.vmdk", 65536, seed=1),
             "[datastore1] vm/sub/disk_1.vmdk":
             random_vmdk(datastore / "vm" / "sub" / "disk_1.vmdk", 65536,
                         seed=2)}
    random_vmdk(datastore / "vmx" / "disk.vmdk", 65536, seed=3)
    wildcard = r"\[datastore1\] vm/*.vmdk"
    server = serve(nbdkit, datastore, wildcard)
    for name, data in disks.items():
        h = server.connect(export=name)
        assert h.get_size() == 65536
        assert h.pread(65536, 0) == data.read_bytes()
        h.shutdown()
    for refused in ("[datastore1] vmx/disk.vmdk",
                    "[datastore1] vm/sub/disk_1-flat.vmdk.bak"):
        with pytest.raises(nbd.Error):
            server.connect(export=refused)
        assert ('access denied: client requested "%s" which does not match '
                'export="%s"' % (refused, wildcard)) in server.stderr
    # The wildcard matches this name, which leads out of vm/.
    climbing = "[datastore1] vm/../vmx/disk.vmdk"
    with pytest.raises(nbd.Error):
        server.connect(export=climbing)
    assert ('access denied: client requested "%s" which has a ".." path '
            'component' % climbing) in server.stderr
    server.stop()
    assert [c["path"] for c in server.calls("Open")] == list(disks)


def test_question_mark_matches_a_slash(tmp_path, nbdkit, datastore):
    server = serve(nbdkit, datastore, r"\[datastore1\] Fedora?a.vmdk")
    h = server.connect(export="[datastore1] Fedora/a.vmdk")
    assert h.pread(512, 0) == \
        (datastore / "Fedora" / "a-flat.vmdk").read_bytes()[:512]
    h.shutdown()
