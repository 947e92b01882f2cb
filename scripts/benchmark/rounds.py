"""Servers take turns: in every round each server of a case is measured
once, so slow drifts of the machine fall on all of them alike."""

import contextlib
import subprocess
import sys

from .servers import BenchError


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def take_turns(ctx, case):
    """``ctx.repeat`` rounds of ``case``; a server that fails is dropped
    from the case (its error recorded), the others go on."""
    kinds = [k for k in case.kinds if k in ctx.kinds]
    session = case.session(ctx, case) if case.session else \
        contextlib.nullcontext()
    log("== %s (%s)" % (case.name, ", ".join(kinds)))
    with session as state:
        kinds = [k for k in kinds if k not in case.errors]  # did not start
        for r in range(ctx.repeat):
            kinds = [k for k in kinds if turn(ctx, case, k, state, r)]


def turn(ctx, case, kind, state, r):
    """One measurement of ``kind`` in round ``r``; False if it failed."""
    try:
        value, extra = case.measure(ctx, case, kind, state, r == 0)
    except (BenchError, OSError, ValueError,
            subprocess.TimeoutExpired) as e:
        case.errors[kind] = "%s: %s" % (type(e).__name__, e)
        log("ERROR in %s / %s:\n%s" % (case.name, kind, e))
        ctx.failed = True
        return False
    case.add(kind, value, **extra)
    log("  %s / %s: round %d/%d: %.4g %s" % (case.name, kind, r + 1,
                                             ctx.repeat, value, case.unit))
    return True
