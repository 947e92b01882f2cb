"""Issue 17 item 8: tests/bed/private-system.sh and the suite's own scratch
leave nothing behind however they end, and the private system starts
where / is not a mount point (a plain chroot).

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
# /usr and /etc (bind mounts below it) and the checkout at its path.
PLAIN_CHROOT = r"""
set -e
root=$1; checkout=$2; shift 2
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
for dir in /usr /etc /dev "$checkout"; do
    mount --rbind "$dir" "$root$dir"
done
mount -t proc proc "$root"/proc
cd "$root$checkout"
exec chroot "$root" env --chdir="$checkout" "$@"
"""


def test_private_system_in_a_plain_chroot(tmp_path):
    root = tmp_path / "root"
    plugindir = subprocess.run(["nbdkit", "--dump-config"],
                               capture_output=True, text=True,
                               check=True).stdout
    plugindir = [line.split("=", 1)[1] for line in plugindir.splitlines()
                 if line.startswith("plugindir=")][0]
    probe = os.path.join(plugindir, "nbdkit-vddkpy-private-probe")
    inside = ("mountpoint -q / && echo 'root is a mount point'; "
              "touch %s && stat -f -c %%T %s" % (probe, plugindir))
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         PLAIN_CHROOT, "sh", str(root), str(ROOT), "sh", "-c",
         "mountpoint -q / || echo 'root is not a mount point'; "
         "tests/bed/private-system.sh sh -c \"$0\"", inside],
        capture_output=True, text=True, timeout=TIMEOUT)
    assert result.stderr == ""
    assert result.stdout == ("root is not a mount point\n"
                             "root is a mount point\noverlayfs\n")
    assert result.returncode == 0
    assert not os.path.exists(probe)
    assert os.listdir(root / "tmp") == made_for_the_checkout()


def made_for_the_checkout():
    """What PLAIN_CHROOT itself makes in the root's /tmp: the mount point of
    a checkout that lives under /tmp (CI's fresh clone may)."""
    inside = os.path.relpath(str(ROOT), "/tmp")
    if inside.startswith(".."):
        return []
    return [inside.split(os.sep)[0]]


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
         str(ROOT), "tests/bed/private-system.sh", "echo", "ran"],
        capture_output=True, text=True, timeout=TIMEOUT)
    assert result.stdout == ""
    assert result.stderr == (
        "private-system.sh: / is not a mount point and its file system "
        "shares mounts with another namespace; run in a chroot whose root "
        "is a mount point (scripts/chroot.sh makes one)\n")
    assert result.returncode == 1
