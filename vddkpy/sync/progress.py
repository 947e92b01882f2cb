"""What a round tells while it runs: nothing (the default), a progress
bar on a terminal (tqdm, Debian's python3-tqdm), or one JSON object per
line on stdout for orchestrators (``--progress=json``)."""

import json
import sys
import threading
import time

WARNING = "vddkpy sync: warning: %s"


class Quiet:
    """Says nothing but warnings (one line each on stderr)."""

    def step(self, name, **fields):
        pass

    def warning(self, message):
        print(WARNING % message, file=sys.stderr)

    def start_copy(self, total):
        pass

    def advance(self, nbytes):
        pass

    def end_copy(self):
        pass


class JsonLines(Quiet):
    """{"step": NAME, ...} per step; during the copy at most one
    {"step": "copy", "done": N, "total": N} per second, and one at its
    end."""

    def __init__(self, stream=None, interval=1.0):
        self.stream = stream or sys.stdout
        self.interval = interval
        self.lock = threading.Lock()
        self.done = self.total = 0
        self.last = 0.0

    def step(self, name, **fields):
        fields["step"] = name
        with self.lock:
            self.stream.write(json.dumps(fields, sort_keys=True) + "\n")
            self.stream.flush()

    def start_copy(self, total):
        self.done, self.total, self.last = 0, total, time.monotonic()

    def advance(self, nbytes):
        with self.lock:
            self.done += nbytes
            now = time.monotonic()
            if now - self.last < self.interval:
                return
            self.last = now
        self.step("copy", done=self.done, total=self.total)

    def end_copy(self):
        self.step("copy", done=self.done, total=self.total)

    def warning(self, message):
        self.step("warning", message=message)
        super().warning(message)


class Bar(Quiet):
    """A tqdm bar per round on stderr: bytes, rate, time left."""

    def __init__(self):
        self.bar = None
        self.lock = threading.Lock()

    def step(self, name, **fields):
        if name in ("snapshot", "copied", "done"):
            self._write("%s: %s" % (name, " ".join(
                "%s=%s" % kv for kv in sorted(fields.items()))))

    def warning(self, message):
        self._write(WARNING % message)      # (above the bar, if one is)

    def _write(self, line):
        import tqdm
        tqdm.tqdm.write(line, file=sys.stderr)

    def start_copy(self, total):
        import tqdm
        self.bar = tqdm.tqdm(total=total, unit="B", unit_scale=True,
                             unit_divisor=1024, file=sys.stderr,
                             desc="copy", leave=True)

    def advance(self, nbytes):
        with self.lock:
            if self.bar is not None:
                self.bar.update(nbytes)

    def end_copy(self):
        with self.lock:
            if self.bar is not None:
                self.bar.close()
                self.bar = None


def reporter(kind):
    """``kind``: None (a bar when stderr is a terminal and tqdm is there,
    else nothing), "json", "bar" or "none"."""
    if kind == "json":
        return JsonLines()
    if kind == "none":
        return Quiet()
    if kind == "bar" or (kind is None and sys.stderr.isatty()):
        try:
            import tqdm  # noqa: F401
        except ImportError:
            return Quiet()
        return Bar()
    return Quiet()
