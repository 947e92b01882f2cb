"""``vddkpy check KEY=VALUE ...``: a preflight of a VDDK set-up.

Run outside nbdkit, it first asks whether ``nbdkit vddk`` is vddkpy (the
``vddkpy status`` install check), then executes nbdkit on
``nbdkit_script.py`` with the same parameters, where ``inside`` runs the
remaining steps.  Exit status 0, or 1 when a step fails; ``--json``
prints one JSON document instead of the lines.
"""

import errno
import os
import sys

from ..install.nbdkit_host import Missing, nbdkit_path, plugindir, plugin_script
from .report import ENVIRONMENT, FAIL, OK, WARN, Result, handover

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      "nbdkit_script.py")
USAGE = ("usage: vddkpy check [--json] [-r] [-u USER] [-g GROUP] KEY=VALUE "
         "...  (the plugin's parameters; -r, -u, -g: nbdkit's options of the "
         "run checked)")
_READONLY = ("-r", "--readonly", "--read-only")
_IDENTITY = {"-u": "-u", "--user": "-u", "-g": "-g", "--group": "-g"}


def install_step():
    """The ``install`` step: whether ``nbdkit vddk`` runs vddkpy."""
    from ..install.status import check
    try:
        ok, warning = check()
    except Missing as e:
        return Result(_severity(), "install", str(e))   # says what to do
    if warning:
        return Result(WARN, "install", "%s; but %s" % (ok, warning))
    return Result(OK, "install", ok)


def _severity():
    """Without a vddk plugin at all the tools that run ``nbdkit vddk``
    fail, but this vddkpy can still check the rest; anything else wrong
    in nbdkit's Python fails the step."""
    try:
        script = plugin_script(plugindir(nbdkit_path()), "vddk")
    except Missing:
        return FAIL
    return FAIL if os.path.exists(script) else WARN


def _options(argv):
    """(--json, nbdkit's options, the parameters), or None for a usage
    error."""
    as_json, options, args = False, [], []
    words = iter(argv)
    for word in words:
        name, eq, value = word.partition("=")
        if word == "--json":
            as_json = True
        elif word in _READONLY:
            options.append("-r")
        elif name in _IDENTITY and name.startswith("--") and eq:
            options += [_IDENTITY[name], value]
        elif word in _IDENTITY:
            value = next(words, None)
            if value is None:
                return None
            options += [_IDENTITY[word], value]
        elif "=" not in word or word.startswith("-"):
            return None
        else:
            args.append(word)
    return as_json, options, args


def main(argv):
    parsed = _options(argv)
    if parsed is None:
        print(USAGE, file=sys.stderr)
        return 2
    as_json, options, args = parsed
    first = install_step()
    try:
        nbdkit = nbdkit_path()
    except Missing as e:
        print(first.line() if not as_json else e, file=sys.stderr)
        return 1
    env = dict(os.environ)
    env[ENVIRONMENT] = handover(as_json, [first])
    sys.stdout.flush()
    command = [nbdkit] + options + ["python", SCRIPT]
    try:
        os.execve(nbdkit, command + args, env)
    except OSError as e:
        print("vddkpy check: cannot run %s: %s%s" % (
            nbdkit, e.strerror, _too_long(args) if e.errno == errno.E2BIG
            else ""), file=sys.stderr)
        return 1


def _too_long(args):
    size = sum(len(os.fsencode(a)) + 1 for a in args)
    return (" (the parameters take %d bytes; give long values through a "
            "file: password=+FILE, config=FILE)" % size)
