"""vddkpy's vSphere process (cbt.agent): forked by nbdkit before it loads
VDDK, it asks vSphere for the serving process.  It holds nothing of
nbdkit's but stderr, ends with nbdkit whichever way nbdkit ends (its
session logged out first), and a serving process whose vSphere process
has gone says so in one line."""

import os
import signal

import nbd
import pytest

from bed import assert_no_traceback, error_lines
from test_asked_ahead import logged_in_ahead
from test_changed_since import data_extents
from test_hostile_vsphere import wait_until

MiB = 1 << 20
NAME = "vddkpy-vsphere"


def vsphere_process(server):
    """The pid of the vSphere process nbdkit (-f, no --run) forked."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/stat" % pid) as f:
                stat = f.read()
        except OSError:                 # ended meanwhile
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if name == NAME and parent == server.proc.pid:
            found.append(int(pid))
    assert len(found) == 1, found
    return found[0]


def ended(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def logged_in_server(vcsim, nbdkit):
    bed, server = logged_in_ahead(vcsim, nbdkit)
    return bed, server, vsphere_process(server)


def test_the_vsphere_process_holds_no_descriptor_of_nbdkits(vcsim, nbdkit):
    """Its standard input and output are /dev/null (under -s they would
    be the client's socket), and every other descriptor but stderr is one
    of its own sockets (to nbdkit, to vSphere)."""
    bed, server, pid = logged_in_server(vcsim, nbdkit)
    targets = {int(fd): os.readlink("/proc/%d/fd/%s" % (pid, fd))
               for fd in os.listdir("/proc/%d/fd" % pid)}
    assert targets[0] == targets[1] == "/dev/null"
    assert targets[2] == str(server.stderr_path)
    others = [t for fd, t in targets.items() if fd > 2]
    assert others and all(t.startswith("socket:") for t in others), targets
    # The serving process's end is not handed to --run commands.
    serving = {os.readlink("/proc/%d/fd/%s" % (server.proc.pid, fd))
               for fd in os.listdir("/proc/%d/fd" % server.proc.pid)}
    assert any(t.startswith("socket:") for t in serving)
    assert data_extents(server) == [(0, 16 * MiB)]


@pytest.mark.parametrize("how", ["nbdkit killed", "Ctrl-C"])
def test_the_vsphere_process_logs_out_and_ends_with_nbdkit(vcsim, nbdkit,
                                                           how):
    """Killed, nbdkit cannot say stop: its socket closing is enough.  A
    terminal's Ctrl-C reaches both processes: the vSphere process leaves
    it to nbdkit, which stops it in turn."""
    bed, server, pid = logged_in_server(vcsim, nbdkit)
    if how == "nbdkit killed":
        server.proc.kill()
        server.proc.wait(timeout=10)
    else:
        os.kill(pid, signal.SIGINT)
        server.proc.send_signal(signal.SIGINT)
        assert server.proc.wait(timeout=2) == 0
        assert error_lines(server.stderr) == []
    wait_until(lambda: ended(pid), "the vSphere process did not end")
    assert bed.calls("Logout") == 1
    assert_no_traceback(server.stderr)


def test_a_vsphere_process_gone_is_one_line_for_each_connection(vcsim,
                                                                 nbdkit):
    bed, server, pid = logged_in_server(vcsim, nbdkit)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: ended(pid), "the vSphere process did not end")
    for _ in range(2):
        with pytest.raises(nbd.Error):
            server.connect()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=2) == 0
    lines = error_lines(server.stderr)
    assert [line.split(": open: error: ", 1)[1] for line in lines] == [
        "changed-since: vddkpy's vSphere process has ended: start nbdkit "
        "again"] * 2
    assert_no_traceback(server.stderr)
