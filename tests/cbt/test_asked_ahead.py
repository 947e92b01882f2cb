"""With snapshot=, the first connection's questions to vSphere are asked
as the server starts (cbt.asking.Asker.begin_ahead, in vddkpy's vSphere
process): its map is ready sooner and is the same map, a failure that is over before the client
comes is not handed to it, and a server that stops while they wait for a
stalled vSphere stops at once.  Without a snapshot (a powered-off VM's
disk could be written before the client comes) or with export= only the
log-in is made ahead.  (On every nbdkit version: the vSphere process
starts at get_ready.)"""

import json
import signal

import nbd
import pytest

from bed import assert_no_traceback, error_lines
from test_changed_since import (data_extents, grains_of, served,
                                write_through_nbdkit)
from test_hostile_vsphere import wait_until

MiB = 1 << 20
FAILED_AHEAD = ("changed-since: what was asked ahead for the first "
                "connection failed (it asks again if it comes later): "
                "vSphere's answer to QueryChangedDiskAreas at offset 0 is "
                "HTTP 503 Service Unavailable, not SOAP")


def snapshot_after_writes(vcsim, nbdkit, writes):
    bed = vcsim(size=16 * MiB)
    bed.enable_cbt()
    write_through_nbdkit(nbdkit, bed, writes, None)
    snapshot, _ = bed.create_snapshot("s1")
    bed.reset()
    return bed, snapshot


def asked_ahead(bed, calls):
    """Wait until the server, with no client yet, has made ``calls``
    QueryChangedDiskAreas calls."""
    wait_until(lambda: bed.calls("QueryChangedDiskAreas") == calls,
               "the server did not ask vSphere as it started")


def test_the_first_connection_gets_the_pass_asked_as_the_server_started(
        vcsim, nbdkit):
    writes = [(i * MiB, b"\7" * 4096) for i in range(16)]
    bed, snapshot = snapshot_after_writes(vcsim, nbdkit, writes)
    bed.set_page_size(5)
    server = served(nbdkit, bed, "changed-since=*", "snapshot=" + snapshot)
    asked_ahead(bed, 4)                 # 16 areas in pages of 5
    assert data_extents(server) == grains_of(writes)
    assert bed.calls("QueryChangedDiskAreas") == 4
    # Every later connection asks for its own pass.
    assert data_extents(server) == grains_of(writes)
    assert bed.calls("QueryChangedDiskAreas") == 8
    assert bed.calls("Login") == 1


def test_a_failure_asked_ahead_is_asked_again_by_a_later_client(vcsim,
                                                                 nbdkit):
    """vSphere failed the questions asked as the server started: the
    first client, which came after, asks again (vSphere may be back)."""
    bed, snapshot = snapshot_after_writes(vcsim, nbdkit, [(MiB, b"\5" * 512)])
    bed.set_hostile("raw", status=503, content_type="text/html",
                    body="<html>busy</html>", calls=1)
    server = served(nbdkit, bed, "changed-since=*", "snapshot=" + snapshot)
    wait_until(lambda: FAILED_AHEAD in server.stderr,
               "the questions asked ahead did not fail")
    h = server.connect()
    assert h.pread(512, MiB) == b"\5" * 512
    h.shutdown()
    server.stop()
    assert bed.calls("QueryChangedDiskAreas") == 2
    assert error_lines(server.stderr) == []
    assert_no_traceback(server.stderr)


def test_a_server_stopped_while_asking_ahead_stops_at_once(vcsim, nbdkit):
    bed, snapshot = snapshot_after_writes(vcsim, nbdkit, [(MiB, b"\5" * 512)])
    bed.set_hostile("stall")
    server = served(nbdkit, bed, "changed-since=*", "snapshot=" + snapshot)
    asked_ahead(bed, 1)
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=2) == 0
    assert_no_traceback(server.stderr)
    assert error_lines(server.stderr) == []
    server.assert_survived()


def logged_in_ahead(vcsim, nbdkit):
    """(bed, server): a server of a powered-off VM's 16 MiB disk, once it
    has logged in as it started (no client yet)."""
    bed = vcsim(size=16 * MiB, seed=3, power_on=False)
    bed.enable_cbt()
    bed.reset()
    server = served(nbdkit, bed, "changed-since=*")
    wait_until(lambda: bed.calls("Login") == 1,
               "the server did not log in as it started")
    return bed, server


def test_without_a_snapshot_only_the_log_in_is_made_ahead(vcsim, nbdkit):
    bed, server = logged_in_ahead(vcsim, nbdkit)
    assert bed.calls("RetrievePropertiesEx") == 0       # no lookup
    assert bed.calls("QueryChangedDiskAreas") == 0
    assert data_extents(server) == [(0, 16 * MiB)]
    assert bed.calls("Login") == 1
    assert bed.calls("QueryChangedDiskAreas") >= 1
    server.stop()
    assert bed.calls("Logout") == 1
    assert error_lines(server.stderr) == []


def test_no_client_no_change_id(vcsim, nbdkit, tmp_path):
    """A pass asked ahead that no connection took proves nothing."""
    bed, snapshot = snapshot_after_writes(vcsim, nbdkit, [(MiB, b"\5" * 512)])
    stats = tmp_path / "stats.json"
    server = served(nbdkit, bed, "changed-since=*", "snapshot=" + snapshot,
                    "stats-file=%s" % stats)
    asked_ahead(bed, 1)
    server.stop()
    document = json.loads(stats.read_text())
    assert document["complete"] is False and "next_change_ids" not in document
    assert document["change_tracking"]["incomplete_because"] == [
        "no client connected"]



class Asking:
    """Asker._ask's stand-in: fails the first ``failures`` times."""

    def __init__(self, failures=0):
        self.calls = 0
        self.failures = failures

    def __call__(self, filename):
        from vddkpy.errors import PluginError
        self.calls += 1
        if self.calls <= self.failures:
            raise PluginError("vSphere is away")
        return filename, self.calls


def ahead_asker(snapshot="snapshot-7", export=None, asking=None):
    from types import SimpleNamespace
    from vddkpy.cbt.asking import Asker
    asker = Asker(SimpleNamespace(snapshot=snapshot, export=export,
                                  file="[datastore1] vm/vm.vmdk",
                                  server="127.0.0.1", port=443))
    asker._ask = asking or Asking()
    asker.vsphere = lambda: None        # no session: nothing is asked
    asker.begin_ahead()
    return asker


@pytest.mark.parametrize("snapshot, export, asked", [
    ("snapshot-7", None, True), (None, None, False),
    ("snapshot-7", "[datastore1] vm/*.vmdk", False)])
def test_asked_ahead_only_what_cannot_change_before_the_client(
        snapshot, export, asked, monkeypatch):
    from vddkpy.cbt.asking import Asker
    logged_in = []
    monkeypatch.setattr(Asker, "_log_in_ahead",
                        lambda asker: logged_in.append(1))
    asking = Asking()
    asker = ahead_asker(snapshot, export, asking)
    if asked:       # before any connection came
        assert asker._ahead.wait() and asking.calls == 1
    else:
        assert asker._ahead is None and asking.calls == 0
    filename = "[datastore1] vm/vm.vmdk"
    assert asker.changes(filename) == (filename, 1)
    assert asker.changes(filename) == (filename, 2)     # asked again
    asker.stop()
    assert logged_in == ([] if asked else [1])      # or only the log-in


def test_a_failure_over_before_the_client_came_is_asked_again():
    asking = Asking(failures=1)
    asker = ahead_asker(asking=asking)
    assert asker._ahead.wait() and asker._ahead.failed()
    assert asker.changes("[datastore1] vm/vm.vmdk") == (
        "[datastore1] vm/vm.vmdk", 2)
    asker.stop()


def test_a_stopped_asker_makes_no_new_session():
    """A question still under way as the vSphere process stops would log
    in again, and that session would never be logged out."""
    from types import SimpleNamespace
    from vddkpy.cbt.asking import Asker
    from vddkpy.errors import PluginError
    asker = Asker(SimpleNamespace(snapshot=None, export=None, file="f",
                                  server="127.0.0.1", port=443))
    asker.stop()
    with pytest.raises(PluginError, match="^stopped waiting for vSphere "
                       "127.0.0.1:443: nbdkit is shutting down"):
        asker.vsphere()
