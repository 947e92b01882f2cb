"""A minute of eight clients against one nbdkit
with latency injected -- no mismatch, no lost write, no threading-rule
abort, and nbdkit's memory flat once warmed up.  scripts/soak.py runs the
same soak for longer."""

from bed import tally
from bed import assert_no_traceback
from bed.soak import soak

SECONDS = 60
CLIENTS = 8
# Allowed RSS growth after warm-up: Python's allocator and glibc's arenas
# settle in steps, a leak per request would grow without bound.
RSS_SLACK_KIB = 8 * 1024


def test_soak(tmp_path):
    result = soak(tmp_path, SECONDS, CLIENTS)
    print(result.summary())
    tally.add("soak operations", result.operations)
    tally.add("lost writes", result.lost_writes)
    tally.peak("peak RSS KiB", result.peak_rss_kib)
    assert not result.client_errors, result.client_errors
    assert result.operations > 0
    assert result.mismatches == 0
    assert result.lost_writes == 0
    assert "threading violation" not in result.stderr
    assert_no_traceback(result.stderr)
    assert result.rss_growth_kib <= RSS_SLACK_KIB, result.summary()
