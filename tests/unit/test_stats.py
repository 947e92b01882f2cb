"""VDDK call statistics: latencies kept in a log-scale histogram give
percentiles within 1/16 of the true value and never above the maximum;
upstream's table and the JSON document hold the same figures."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vddkpy.vddk import stats

LATENCIES = st.integers(0, 10 ** 12)


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(LATENCIES)
def test_a_bucket_holds_its_latency_within_a_sixteenth(usecs):
    upper = stats._bucket_upper(stats._bucket(usecs))
    assert usecs <= upper <= usecs + usecs // 16


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(LATENCIES, LATENCIES)
def test_buckets_keep_the_order_of_latencies(a, b):
    if a <= b:
        assert stats._bucket(a) <= stats._bucket(b)


def test_latencies_below_32_us_are_exact_then_pairs():
    assert [stats._bucket_upper(stats._bucket(u)) for u in range(40)] == \
        list(range(32)) + [33, 33, 35, 35, 37, 37, 39, 39]


def true_percentile(samples, fraction):
    ordered = sorted(samples)
    rank = max(1, -(-int(fraction * len(ordered) * 1000) // 1000))
    return ordered[rank - 1]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.99])
def test_percentiles_are_close_and_never_above_max(seed, fraction):
    rng = random.Random(seed)
    samples = [int(rng.lognormvariate(7, 1.5)) for _ in range(2000)]
    function = stats.FunctionStats("Read")
    for usecs in samples:
        function.add(usecs, 512)
    estimate = function.percentile(fraction)
    exact = true_percentile(samples, fraction)
    assert exact <= estimate <= exact + exact // 16
    assert estimate <= max(samples) == function.max


def test_one_call():
    function = stats.FunctionStats("Open")
    function.add(123456, 0)
    assert [function.percentile(f) for f in (0.5, 0.9, 0.99)] == [123456] * 3


def summed():
    table = stats.Stats(["Open", "Read", "Close", "Flush"])
    table.add("Read", 300, 4096)
    table.add("Read", 100, 4096)
    table.add("Open", 1000)
    table.add("Close", 0)
    return table


def test_table_is_upstreams_sorted_by_time():
    assert summed().table() == [
        "VDDK function stats (-D vddk.stats=1):",
        "VixDiskLib_...                        us calls           bytes",
        "  Open                              1000     1",
        "  Read                               400     2            8192"]


def test_json_lists_every_function_called():
    document = summed().as_json()
    assert document == {"functions": {
        "Open": {"us": 1000, "calls": 1, "bytes": 0, "latency_us": {
            "p50": 1000, "p90": 1000, "p99": 1000, "max": 1000}},
        "Read": {"us": 400, "calls": 2, "bytes": 8192, "latency_us": {
            # 100 µs falls into the bucket 100-103 µs.
            "p50": 103, "p90": 300, "p99": 300, "max": 300}},
        "Close": {"us": 0, "calls": 1, "bytes": 0, "latency_us": {
            "p50": 0, "p90": 0, "p99": 0, "max": 0}}}}


def test_an_unknown_function_is_a_programming_error():
    with pytest.raises(KeyError):
        stats.Stats(["Open"]).add("Reed", 1)
