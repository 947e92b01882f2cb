"""The results as a Markdown table with the ranking and goals, a JSON
document and a PNG chart of vddkpy's ratios."""

import json

from .servers import ROLES

RATIOS = (("vddkpy", "c-vddk"), ("vddkpy", "py-empty"))


def fmt_num(x):
    if x is None:
        return ""
    if x >= 1000:
        return "%.0f" % x
    return "%.3g" % x


def fmt_cell(case, kind):
    if kind in case.errors:
        return "error"
    values = case.samples.get(kind)
    if not values:
        return ""
    return "%s [%s–%s]" % (fmt_num(case.median(kind)), fmt_num(min(values)),
                           fmt_num(max(values)))


def notes(case):
    out = []
    for kind in case.kinds:
        cpu = case.extra_median(kind, "server_cpu_us")
        if cpu is not None:
            out.append("%s %.1f µs CPU/request" % (kind, cpu))
    for kind in case.kinds:
        cpu = case.extra_median(kind, "cpu_seconds")
        if case.whole_command and cpu is not None:
            out.append("%s %s s CPU/run" % (kind, fmt_num(cpu)))
    for kind in case.kinds:
        calls = case.extra.get(kind, {}).get("QueryAllocatedBlocks")
        if calls:
            out.append("%s QAB %s" % (kind, "/".join(
                "%g" % n for n in sorted(set(calls)))))
    others = [(k, case.others_share(k)) for k in case.kinds]
    shown = ["%s %.0f %%" % (k, s * 100) for k, s in others if s is not None]
    if shown:
        out.append("other work: " + ", ".join(shown))
    return "; ".join(out)


def table(cases, kinds):
    ratio_cols = [r for r in RATIOS if r[1] in kinds and "vddkpy" in kinds]
    head = (["case"] + kinds + ["%s / %s" % r for r in ratio_cols]
            + ["notes"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case in cases:
        row = ([case.name] + [fmt_cell(case, k) for k in kinds]
               + ["%.2f" % case.ratio(*r) if case.ratio(*r) else ""
                  for r in ratio_cols] + [notes(case)])
        lines.append("| " + " | ".join(row) + " |")
    return lines


def goal_line(case):
    goal = case.goal
    ratio = case.goal_ratio()
    if ratio is None:
        return "- %s: goal %s not measured" % (
            case.name, goal.text(case.higher_is_better))
    return "- %s: vddkpy %s %s = %.2f× %s's %s (goal %s): %s" % (
        case.name, fmt_num(case.median("vddkpy")), case.unit, ratio,
        goal.against(), fmt_num(case.goal_figure()),
        goal.text(case.higher_is_better),
        "met" if case.goal_met() else "not met")


def markdown(cases, kinds, meta, no_ranking):
    lines = ["# vddkpy benchmark, %s" % meta.get("date", ""), "",
             "%s, Python %s, %s CPUs; %d rounds, servers taking "
             "turns; cells: median [min–max]; s = wall seconds (hyperfine), "
             "IOPS from fio; ratios of medians (s: > 1 = vddkpy slower; "
             "IOPS: < 1 = vddkpy slower)." % (meta.get("versions", {}).get("nbdkit"),
                                 meta.get("python"), meta.get("cpus"),
                                 meta.get("repeat", 0)), ""]
    lines += ["- %s: %s" % (k, ROLES[k]) for k in kinds] + [""]
    lines += table(cases, kinds) + [""]
    for case in cases:
        lines.append("- %s: %s" % (case.name, case.title))
        for kind, error in case.errors.items():
            lines.append("  - %s failed: %s" % (kind, error.splitlines()[0]))
    lines.append("")
    if no_ranking:
        lines.append("**No ranking**: %s." % no_ranking)
    else:
        lines.append("**Ranking and goals** (the baseline reached its known "
                     "rate and other work stayed under the cap):")
        lines += [goal_line(c) for c in cases if c.goal is not None]
    return "\n".join(lines) + "\n"


def to_json(cases, meta, no_ranking):
    return {"meta": meta, "no_ranking": no_ranking,
            "cases": {c.name: c.to_json() for c in cases}}


def write_json(path, cases, meta, no_ranking):
    with open(path, "w") as f:
        json.dump(to_json(cases, meta, no_ranking), f, indent=2)
        f.write("\n")


def write_png(path, cases):
    """Bars of vddkpy's median over the goal's server's, goal marked;
    False when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    shown = [c for c in cases if c.goal and c.goal_ratio()]
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.5 * max(1, len(shown))))
    for y, case in enumerate(shown):
        ratio = case.goal_ratio()
        ax.barh(y, ratio, color="tab:green" if case.goal_met() else
                "tab:red")
        ax.plot([case.goal.factor] * 2, [y - 0.4, y + 0.4], "k--")
        ax.text(ratio, y, " %.2f" % ratio, va="center")
    ax.set_yticks(range(len(shown)))
    ax.set_yticklabels(["%s (vs %s)" % (c.name, c.goal.against())
                        for c in shown])
    ax.set_xlabel("vddkpy median / other server's median (dashed: goal)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True

