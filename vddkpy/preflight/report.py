"""What ``vddkpy check`` says: one line per step, or JSON for tools.

A step ends ``ok``, ``warn`` (works, but a known risk) or ``FAIL``
(the plugin would fail here), with what was seen and, unless ok, the fix.
"""

import json
import os
import sys

from ..printable import printable

OK, WARN, FAIL = "ok", "warn", "FAIL"

# How the command outside nbdkit hands its results to the one inside.
ENVIRONMENT = "VDDKPY_CHECK"


class Result:
    """``saw`` is raw text, escaped when printed, or with ``escaped`` the
    message of a plugin error, which escaped what it quotes already."""

    def __init__(self, status, step, saw, fix=None, escaped=False):
        self.status = status
        self.step = step
        self.saw = saw
        self.fix = fix
        self.escaped = escaped

    def line(self):
        """The text line; what it quotes from the server, the library or
        the disk cannot forge lines or drive the terminal (``printable``,
        once)."""
        saw = self.saw if self.escaped else printable(self.saw)
        text = "%-4s %s: %s" % (self.status, self.step, saw)
        return text + ("; fix: %s" % printable(self.fix) if self.fix else "")

    def as_dict(self):
        """The step in the --json document."""
        return {"status": self.status, "step": self.step, "saw": self.saw,
                "fix": self.fix}

    def handed_over(self):
        """The step as one of the check's processes hands it to another."""
        return dict(self.as_dict(), escaped=self.escaped)

    @classmethod
    def from_dict(cls, d):
        return cls(d["status"], d["step"], d["saw"], d["fix"],
                   d.get("escaped", False))


def handover(as_json, results):
    """The environment value carrying the options and earlier results."""
    return json.dumps({"json": as_json,
                       "results": [r.handed_over() for r in results]})


class Report:
    """The results so far; lines are printed as they come (text mode)."""

    def __init__(self):
        given = json.loads(os.environ.get(ENVIRONMENT) or "{}")
        self.as_json = given.get("json", False)
        self.results = []
        self._earlier = [Result.from_dict(d)
                         for d in given.get("results", [])]

    def start(self):
        for result in self._earlier:
            self.add(result)

    def add(self, result):
        self.results.append(result)
        if not self.as_json:
            print(result.line())
            sys.stdout.flush()
        return result

    def failed(self):
        return any(r.status == FAIL for r in self.results)

    def finish(self):
        """Print the JSON document (if asked); the exit status."""
        status = 1 if self.failed() else 0
        if self.as_json:
            print(json.dumps({"status": FAIL if status else OK,
                              "steps": [r.as_dict() for r in self.results]},
                             indent=2))
        sys.stdout.flush()
        return status
