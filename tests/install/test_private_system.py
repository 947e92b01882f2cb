"""tests/bed/private-system.sh and the suite's own scratch leave nothing
behind however they end, and the private system starts where / is not a
mount point (a plain chroot), wherever the nbdkit under test is installed
(Debian's under /usr, an upstream build under /opt or /tmp: run with
NBDKIT=/path/to/nbdkit).

Each run gets a TMPDIR of its own, which must be empty afterwards.
"""

import os
import signal
import subprocess
import sys

import pytest

from bed import ROOT, TIMEOUT

PRIVATE_SYSTEM = ROOT / "tests" / "bed" / "private-system.sh"


def start(command, tmpdir):
    """``command`` running with TMPDIR=``tmpdir``, in a session of its own
    (so that whatever it leaves running can be killed), once it has
    printed "ready"."""
    process = subprocess.Popen(
        [str(c) for c in command], env=dict(os.environ, TMPDIR=str(tmpdir)),
        stdout=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=_interrupt_as_at_a_terminal)
    assert process.stdout.readline() == "ready\n"
    return process


def _interrupt_as_at_a_terminal():
    # A suite started in the background of a non-interactive shell (as CI
    # may be) inherits SIGINT ignored, and a shell cannot undo an ignore it
    # inherits: give the command the disposition a terminal's job has.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def kill(process, how):
    if how == "ctrl-c":         # the terminal signals the whole group
        os.killpg(process.pid, signal.SIGINT)
    else:
        process.send_signal(how)
    try:
        process.wait(timeout=TIMEOUT)
    finally:
        try:                    # what an older version left running
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.stdout.close()


KILLS = [signal.SIGTERM, signal.SIGKILL, "ctrl-c"]


@pytest.mark.parametrize("how", KILLS, ids=["SIGTERM", "SIGKILL", "ctrl-c"])
def test_killed_private_system_leaves_nothing(tmp_path, how):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    process = start([PRIVATE_SYSTEM, "sh", "-c",
                     "touch /usr/local/.vddkpy-private-probe && "
                     "echo ready && exec sleep 600"], tmpdir)
    kill(process, how)
    assert sorted(os.listdir(tmpdir)) == []
    assert not os.path.exists("/usr/local/.vddkpy-private-probe")


@pytest.mark.parametrize("how", KILLS, ids=["SIGTERM", "SIGKILL", "ctrl-c"])
def test_killed_suite_leaves_no_bin_directory(tmp_path, how):
    """conftest's directory of tools first on PATH (made when pytest
    imports it)."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    process = start([sys.executable, "-c",
                     "import sys, time; sys.path[:0] = ['tests', '.']; "
                     "import conftest; print('ready', flush=True); "
                     "time.sleep(600)"], tmpdir)
    kill(process, how)
    assert sorted(os.listdir(tmpdir)) == []


# A root directory that is not a mount point, made of the machine's own
# /usr and /etc (bind mounts below it), the checkout and the directories
# of the nbdkit under test (a list, when not under /usr) at their paths.
PLAIN_CHROOT = r"""
set -e
root=$1; checkout=$2; nbdkit_dirs=$3; shift 3
mkdir -p "$root"/usr "$root"/etc "$root"/dev "$root"/proc "$root"/tmp \
    "$root$checkout"
chmod 1777 "$root"/tmp
for dir in bin sbin lib lib64; do
    if [ -L /$dir ]; then
        ln -s "$(readlink /$dir)" "$root/$dir"
    elif [ -d /$dir ]; then
        mkdir "$root/$dir" && mount --rbind /$dir "$root/$dir"
    fi
done
for dir in /usr /etc /dev "$checkout" $nbdkit_dirs; do
    mkdir -p "$root$dir"
    mount --rbind "$dir" "$root$dir"
done
mount -t proc proc "$root"/proc
cd "$root$checkout"
exec chroot "$root" env --chdir="$checkout" "$@"
"""


def nbdkit_config():
    """The nbdkit under test's --dump-config, as {key: value}."""
    text = subprocess.run(["nbdkit", "--dump-config"], capture_output=True,
                          text=True, check=True).stdout
    return dict(line.split("=", 1) for line in text.splitlines()
                if "=" in line)


SYSTEM_DIRS = ("/usr", "/etc", "/dev", "/bin", "/sbin", "/lib", "/lib64")


def nbdkit_dirs(config):
    """The directories the chroot needs for the nbdkit under test beyond
    the system's: its prefix (what its binary and plugin directory have
    in common), or each of them when they share only /."""
    binary_dir = os.path.dirname(os.path.realpath(config["binary"]))
    dirs = [binary_dir, config["plugindir"]]
    prefix = os.path.commonpath(dirs)
    if prefix != "/":
        dirs = [prefix]
    checkout = str(ROOT)
    return [d for d in dirs
            if not any(d == s or d.startswith(s + "/")
                       for s in SYSTEM_DIRS + (checkout,))]


def test_private_system_in_a_plain_chroot(tmp_path):
    root = tmp_path / "root"
    config = nbdkit_config()
    plugindir = config["plugindir"]
    extra = nbdkit_dirs(config)
    assert not any(" " in d for d in extra), extra
    probe = os.path.join(plugindir, "nbdkit-vddkpy-private-probe")
    inside = ("mountpoint -q / && echo 'root is a mount point'; "
              "touch %s && stat -f -c %%T %s" % (probe, plugindir))
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         PLAIN_CHROOT, "sh", str(root), str(ROOT), " ".join(extra), "sh", "-c",
         "mountpoint -q / || echo 'root is not a mount point'; "
         "tests/bed/private-system.sh sh -c \"$0\"", inside],
        capture_output=True, text=True, timeout=TIMEOUT)
    assert result.stderr == ""
    assert result.stdout == ("root is not a mount point\n"
                             "root is a mount point\noverlayfs\n")
    assert result.returncode == 0
    assert not os.path.exists(probe)
    assert sorted(os.listdir(root / "tmp")) == made_in_tmp([str(ROOT)] + extra)


def made_in_tmp(bound):
    """What PLAIN_CHROOT itself makes in the root's /tmp: the mount points
    of the directories it binds that live under /tmp (CI's fresh clone, an
    nbdkit built there)."""
    made = set()
    for path in bound:
        inside = os.path.relpath(path, "/tmp")
        if not inside.startswith(".."):
            made.add(inside.split(os.sep)[0])
    return sorted(made)


def test_private_system_refuses_a_chroot_on_a_shared_mount(tmp_path):
    """Where the chroot's file system shares its mounts (here with a peer
    in the same namespace), nothing the script mounts may reach the peer:
    it refuses, in one line, and takes back what it made."""
    shared, peer = tmp_path / "shared", tmp_path / "peer"
    shared.mkdir()
    peer.mkdir()
    setup = ('shared=$0 peer=$1 chroot=$2; shift 2; '
             'mount -t tmpfs tmpfs "$shared" && '
             'mount --make-shared "$shared" && '
             'mount --bind "$shared" "$peer" && sh -c "$chroot" sh "$@"; '
             'status=$?; mountpoint -q "$peer/root/tmp" && '
             'echo "left on the peer"; exit $status')
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         setup, str(shared), str(peer), PLAIN_CHROOT, str(shared / "root"),
         str(ROOT), "", "tests/bed/private-system.sh", "echo", "ran"],
        capture_output=True, text=True, timeout=TIMEOUT)
    assert result.stdout == ""
    assert result.stderr == (
        "private-system.sh: / is not a mount point and its file system "
        "shares mounts with another namespace; run in a chroot whose root "
        "is a mount point (scripts/chroot.sh makes one)\n")
    assert result.returncode == 1
