"""The baseline rule: a run ranks servers only if, in that run, nbdkit's
file plugin reached its known rate under fio and other work on the machine
stayed under the cap in every case; otherwise one line says why not."""

BASELINE_CASE = "fio-randread-4k"


def worst_other_work(cases):
    """(share of a CPU, case name) of the case where other processes used
    the most CPU (over each server's runs in the case)."""
    worst = (0.0, None)
    for case in cases:
        for kind in case.kinds:
            share = case.others_share(kind)
            if share is not None and share > worst[0]:
                worst = (share, "%s (%s's runs)" % (case.name, kind))
    return worst


def why_no_ranking(cases, baseline_iops, max_other_work):
    """None when the run may rank servers, else the reason, one line."""
    baseline = next((c for c in cases if c.name == BASELINE_CASE), None)
    rate = baseline.median("file") if baseline else None
    if rate is None:
        return ("the baseline (nbdkit's file plugin under fio, case %s) was "
                "not measured in this run" % BASELINE_CASE)
    if rate < baseline_iops:
        return ("the baseline, nbdkit's file plugin, reached only %.0f IOPS "
                "(median) under fio, short of its known rate "
                "(--baseline-iops %.0f)" % (rate, baseline_iops))
    share, where = worst_other_work(cases)
    if share > max_other_work:
        return ("other work used %.0f %% of a CPU during %s (at most "
                "%.0f %% allowed)" % (share * 100, where, max_other_work * 100))
    return None
