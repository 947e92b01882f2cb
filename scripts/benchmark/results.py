"""A case: what is measured, on which servers, and the samples."""

import statistics
from dataclasses import dataclass, field
from typing import Callable, Optional


@dataclass
class Goal:
    """vddkpy's median against ``other``'s: at most (time) or at least
    (rate) ``factor`` times it; ``other``'s in the case ``case`` when
    given (the same server doing the same work another way), else in the
    goal's own case."""
    other: str
    factor: float
    case: Optional["Case"] = None

    def against(self):
        """What the goal compares with: "c-vddk", or "CASE (vddkpy)"."""
        if self.case is None:
            return self.other
        return "%s (%s)" % (self.case.name, self.other)

    def text(self, higher_is_better):
        return "%s %g× %s" % ("≥" if higher_is_better else "≤", self.factor,
                              self.against())


@dataclass
class Case:
    name: str
    title: str
    unit: str                   # "s" or "IOPS"
    kinds: list
    # measure(ctx, case, kind, state, first) -> (value, {extra figures})
    measure: Callable
    higher_is_better: bool = False
    goal: Optional[Goal] = None
    # session(ctx, case) -> context manager yielding ``state`` (e.g. the
    # long-running servers of the case); None: state is None.
    session: Optional[Callable] = None
    # The timed command runs the server itself (nbdkit … --run): its CPU
    # time is the server's and the client's.
    whole_command: bool = False
    samples: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)

    def add(self, kind, value, **extra):
        self.samples.setdefault(kind, []).append(value)
        for key, x in extra.items():
            self.extra.setdefault(kind, {}).setdefault(key, []).append(x)

    def median(self, kind):
        values = self.samples.get(kind)
        return statistics.median(values) if values else None

    def extra_median(self, kind, key):
        values = [x for x in self.extra.get(kind, {}).get(key, [])
                  if isinstance(x, (int, float))]
        return statistics.median(values) if values else None

    def others_share(self, kind):
        """Other work's share of a CPU over all of ``kind``'s runs: pooled,
        since /proc/stat counts in ticks of 10 ms, as long as a whole
        start-up of the C plugin, and one short window's share is noise."""
        extra = self.extra.get(kind, {})
        window = sum(extra.get("window_seconds", []))
        return sum(extra.get("others_seconds", [])) / window if window \
            else None

    def ratio(self, kind, other):
        a, b = self.median(kind), self.median(other)
        return a / b if a and b else None

    def goal_figure(self):
        """The median the goal holds vddkpy's to, or None."""
        held_to = self.goal.case or self
        return held_to.median(self.goal.other)

    def goal_ratio(self):
        """vddkpy's median over the goal's figure, or None."""
        a, b = self.median("vddkpy"), self.goal_figure()
        return a / b if a and b else None

    def goal_met(self):
        """True/False, or None when a server of the goal has no figure."""
        if self.goal is None:
            return None
        r = self.goal_ratio()
        if r is None:
            return None
        if self.higher_is_better:
            return r >= self.goal.factor
        return r <= self.goal.factor

    def to_json(self):
        servers = {}
        for kind in self.kinds:
            if kind not in self.samples and kind not in self.errors:
                continue                # not among the servers run
            entry = {}
            values = self.samples.get(kind)
            if values:
                entry.update(median=self.median(kind), min=min(values),
                             max=max(values), samples=values)
            entry.update(self.extra.get(kind, {}))
            if kind in self.errors:
                entry["error"] = self.errors[kind]
            servers[kind] = entry
        out = {"title": self.title, "unit": self.unit, "servers": servers,
               "higher_is_better": self.higher_is_better}
        if self.goal is not None:
            out["goal"] = {"other": self.goal.other,
                           "factor": self.goal.factor,
                           "ratio": self.goal_ratio(),
                           "met": self.goal_met()}
            if self.goal.case is not None:
                out["goal"]["case"] = self.goal.case.name
        return out
