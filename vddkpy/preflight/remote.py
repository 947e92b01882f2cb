"""The check's steps that talk to vSphere itself (its ports, certificate
and version; its change tracking), run in a child process.

The child is the Python nbdkit embeds, started with the environment the
user gave nbdkit: the re-exec put VDDK's lib64/ first in LD_LIBRARY_PATH,
and VDDK's own libssl, libcrypto, libexpat or libz there would break
Python's ``ssl`` or ``xml`` in the nbdkit process.  The child also bounds
every wait: each step has a deadline (``deadlines``), and the parent kills
a child that outlives ``CHILD_LIMIT``.  The parameters (every one of
the table), password included, travel through a pipe.
"""

import json
import os
import subprocess
import sys

from .report import FAIL, Result

NETWORK, TRACKING = "network", "tracking"
CHILD_LIMIT = 150           # seconds for a whole child: every step's limit
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


# -- the parent's side ----------------------------------------------------

def interpreter():
    """The Python nbdkit embeds, as a program (its sys.executable is the
    first python3 on PATH, maybe another one: pyenv, a venv)."""
    embedded = os.path.join(sys.base_prefix, "bin",
                            "python%d.%d" % sys.version_info[:2])
    return embedded if os.access(embedded, os.X_OK) else sys.executable


def child_environment(original_library_path):
    """nbdkit's environment before the re-exec (``reexeced_``), with this
    vddkpy importable."""
    env = dict(os.environ)
    env.pop("VDDKPY_CHECK", None)
    env.pop("LD_LIBRARY_PATH", None)
    if original_library_path:
        env["LD_LIBRARY_PATH"] = original_library_path
    env["PYTHONPATH"] = _PACKAGE_PARENT + (
        ":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def ask(kind, params, step, **more):
    """Run the ``kind`` steps in a child; their results (a failure of the
    child itself is one FAIL line of ``step``).  ``more``: values the
    steps need besides the parameters."""
    # Every parameter of the table, so that a step cannot miss a new one
    # (imported here: the child has no use for the plugin's parsing).
    from ..params import PARAMETERS
    values = {parameter.attribute: getattr(params, parameter.attribute)
              for parameter in PARAMETERS}
    values.update(more)
    request = json.dumps({"kind": kind, "params": values})
    try:
        done = subprocess.run(
            [interpreter(), "-c", "from vddkpy.preflight.remote import "
             "main; main()"], input=request.encode("utf-8",
                                                   "surrogateescape"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=child_environment(params.reexeced_), timeout=CHILD_LIMIT)
    except subprocess.TimeoutExpired:
        return [Result(FAIL, step, "no result within %d s" % CHILD_LIMIT,
                       "check the network to server=")]
    except OSError as e:
        return [Result(FAIL, step, "cannot run %s: %s"
                       % (interpreter(), e.strerror), "please report it")]
    try:
        return [Result.from_dict(d) for d in json.loads(done.stdout)]
    except ValueError:
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()
        return [Result(FAIL, step, "the check's child process failed "
                       "(status %d): %s" % (done.returncode, said[-1]
                                            if said else "no message"),
                       "please report it")]


# -- the child's side -----------------------------------------------------

class _Params:
    def __init__(self, values):
        self.__dict__.update(values)


def main():
    request = json.loads(sys.stdin.buffer.read().decode("utf-8",
                                                        "surrogateescape"))
    params = _Params(request["params"])
    if request["kind"] == NETWORK:
        from . import network_steps
        results = network_steps.run(params)
    else:
        from . import tracking
        results = [r for r in [tracking.change_tracking(params)] if r]
    sys.stdout.write(json.dumps([r.handed_over() for r in results]))
    sys.stdout.flush()
