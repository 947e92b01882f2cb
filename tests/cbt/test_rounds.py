"""A changed-since= run hands out the changeId to give next time only when
it is proven complete: stats-file= has ``next_change_ids`` only if every
connection's map came from a complete, checked pass and no read failed,
``"complete": false`` and the reasons otherwise, and the coverage of each
connection either way.  The documented recipe, pasted into a shell as is,
moves its changeId only after a zero exit: a round that fails in the
middle (the ESXi data path down mid-copy) leaves it, and the next round
repairs the copy."""

import json

import pytest

from bed import assert_no_traceback, error_lines
from test_changed_since import (cmp, documented_commands, frozen_copy,
                                grains_of, run_documented,
                                write_through_nbdkit)

MiB = 1 << 20
DISK = "[datastore1] vm/vm.vmdk"


def tracked_bed(vcsim, nbdkit, size=8 * MiB):
    bed = vcsim(size=size)
    bed.enable_cbt()
    _, before = bed.create_snapshot("s0")
    write_through_nbdkit(nbdkit, bed, [(MiB, b"\5" * 4096)], None)
    snapshot, after = bed.create_snapshot("s1")
    bed.reset()
    return bed, snapshot, before, after


def serve(nbdkit, bed, tmp_path, *args):
    return nbdkit(*bed.plugin_args(), *args,
                  "stats-file=%s" % (tmp_path / "stats.json"),
                  config=bed.standin_config(), readonly=True)


def stats_of(tmp_path):
    return json.loads((tmp_path / "stats.json").read_text())


def test_a_complete_run_hands_out_the_next_change_id(vcsim, nbdkit,
                                                     tmp_path):
    bed, snapshot, before, after = tracked_bed(vcsim, nbdkit)
    server = serve(nbdkit, bed, tmp_path, "changed-since=" + before,
                   "snapshot=" + snapshot)
    h = server.connect()
    assert h.pread(4096, MiB) == b"\5" * 4096
    h.shutdown()
    server.stop()
    stats = stats_of(tmp_path)
    assert stats["complete"] is True
    assert stats["next_change_ids"] == {DISK: after}
    assert stats["change_tracking"] == {
        "changed_since": before, "incomplete_because": [],
        "connections": [{
            "file": DISK, "capacity": 8 * MiB,
            "capacity_at_changed_since": 8 * MiB, "failed_reads": 0,
            "coverage": {"calls": 1, "answered": [0, 8 * MiB], "areas": 1,
                         "reported_bytes": 64 * 1024,
                         "unreported_bytes": 0,
                         "changed_bytes": 256 * 1024, "complete": True}}]}
    assert "changed-since: changeId to give next time for %s: %s" % (
        DISK, after) in server.stderr


@pytest.mark.parametrize("change_id, reason", [
    ("52 00 bogus/1", "the map of %s could not be built" % DISK),
    (None, "no client connected"),
])
def test_an_incomplete_run_hands_out_no_change_id(vcsim, nbdkit, tmp_path,
                                                  change_id, reason):
    import nbd
    bed, snapshot, before, after = tracked_bed(vcsim, nbdkit)
    server = serve(nbdkit, bed, tmp_path,
                   "changed-since=" + (change_id or before),
                   "snapshot=" + snapshot)
    if change_id is not None:
        with pytest.raises(nbd.Error):
            server.connect()
    server.stop()
    stats = stats_of(tmp_path)
    assert stats["complete"] is False
    assert "next_change_ids" not in stats
    assert stats["change_tracking"]["incomplete_because"] == [reason]
    if change_id is not None:       # every call counts, a failed pass's too
        assert stats["functions"]["QueryChangedDiskAreas"]["calls"] == \
            bed.calls("QueryChangedDiskAreas") > 0
    assert after not in json.dumps(stats)
    assert "changeId to give next time for" not in server.stderr
    assert after not in server.stderr
    assert "changed-since: no changeId to give next time: %s" % reason \
        in server.stderr
    assert_no_traceback(server.stderr)


def test_a_failed_read_hands_out_no_change_id(vcsim, nbdkit, tmp_path):
    import nbd
    bed, snapshot, before, after = tracked_bed(vcsim, nbdkit)
    server = nbdkit(*bed.plugin_args(), "changed-since=" + before,
                    "snapshot=" + snapshot,
                    "stats-file=%s" % (tmp_path / "stats.json"),
                    config=bed.standin_config()
                    # ConnectEx, Open, GetInfo, then the read fails.
                    + "  down_for calls=1 after=3 code=14009\n",
                    readonly=True)
    h = server.connect()
    with pytest.raises(nbd.Error):
        h.pread(4096, MiB)
    h.shutdown()
    server.stop()
    stats = stats_of(tmp_path)
    assert stats["complete"] is False and "next_change_ids" not in stats
    assert stats["change_tracking"]["incomplete_because"] == [
        "1 read(s) of %s failed" % DISK]
    assert stats["change_tracking"]["connections"][0]["failed_reads"] == 1


def test_the_recipe_survives_a_round_that_fails(vcsim, nbdkit, libdir,
                                                tmp_path):
    """Full copy; writes; a delta round during which the ESXi host goes
    down mid-copy (nbdcopy fails, nbdkit exits non-zero; libnbd 1.6's
    nbdcopy exits 0 and the recipe's python3 line refuses the stats):
    changeid stays, stats-file says incomplete; the same round again
    repairs the copy and only then moves changeid."""
    import random
    rng = random.Random(24)
    size = 64 * MiB
    bed = vcsim(size=size, seed=3)
    bed.enable_cbt()
    first, change_a = bed.create_snapshot("full")
    full, delta = documented_commands()
    work = tmp_path / "work"
    work.mkdir()
    run_documented(full, bed, libdir, [first], work)
    assert (work / "changeid").read_text().strip() == change_a

    writes = [(g * 256 * 1024 + rng.randrange(0, 2048) * 512,
               rng.randbytes(rng.choice((512, 4096, 65536))))
              for g in rng.sample(range(size // (256 * 1024) - 1), 60)]
    writes.append((size - 512, b"\7" * 512))
    write_through_nbdkit(nbdkit, bed, writes, tmp_path)
    second, change_b = bed.create_snapshot("delta")
    expected = frozen_copy(bed, tmp_path / "expected.raw")
    assert len(grains_of(writes)) > 40

    outage = bed.standin_config() + "  down_for calls=3 after=20 code=14009\n"
    failed = run_documented(delta, bed, libdir, [first, second], work,
                            config=outage, status=None)
    assert failed.returncode != 0
    assert (work / "changeid").read_text().strip() == change_a
    assert cmp(work / "previous.raw", expected).returncode != 0
    assert error_lines(failed.stderr)
    # nbdkit 1.32 may abort when nbdcopy hangs up in the middle of its
    # replies ("raw_send_socket: Assertion `sock >= 0' failed"), before
    # any statistics are written; when they are, they hand out nothing.
    if (work / "delta.json").exists():
        stats = json.loads((work / "delta.json").read_text())
        assert stats["complete"] is False and "next_change_ids" not in stats
        assert [r for r in stats["change_tracking"]["incomplete_because"]
                if r.endswith("read(s) of %s failed" % DISK)], stats
    else:
        assert "Assertion" in failed.stderr, failed.stderr

    run_documented(delta, bed, libdir, [first, second], work)
    assert cmp(work / "previous.raw", expected).returncode == 0
    assert (work / "changeid").read_text().strip() == change_b


@pytest.mark.parametrize("stats, changeid", [
    (None, None), ("", None), ('{"next_change_ids": {"', None),
    ("[]", None), ('{"complete": false}', None),
    ('{"next_change_ids": {}}', None),
    ('{"next_change_ids": ["52 x/2"]}', None),
    ('{"next_change_ids": {"%s": "52 new/9"}}' % DISK, "52 new/9"),
])
def test_the_recipe_moves_changeid_only_from_a_stats_file_naming_it(
        tmp_path, stats, changeid):
    """The recipe's changeId step, as the manual writes it, once nbdkit
    exited 0: a stats file that is missing (nbdkit failed before writing
    it), empty, malformed or without a next changeId gives one line and a
    non-zero status, and changeid stays as it was."""
    import subprocess
    for command, name in zip(documented_commands(),
                             ("full.json", "delta.json")):
        step = command[command.index("python3 -c"):]
        (tmp_path / "changeid").write_text("52 old/7\n")
        if stats is not None:
            (tmp_path / name).write_text(stats)
        result = subprocess.run(["bash", "-c", step], cwd=tmp_path,
                                capture_output=True, text=True, timeout=60)
        if changeid is None:
            assert result.returncode == 1
            assert result.stderr == \
                "%s: incomplete copy: changeid kept\n" % name
        else:
            assert (result.returncode, result.stderr) == (0, "")
        assert (tmp_path / "changeid").read_text() == \
            (changeid or "52 old/7") + "\n"
