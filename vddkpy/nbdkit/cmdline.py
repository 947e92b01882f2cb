"""nbdkit's own command line, read the way the running server reads it.

nbdkit applies ``-v`` and ``-D vddk.FLAG=N`` to C plugins only, so the
plugin finds them in the server's argv.  nbdkit parses that with glibc's
getopt_long: short options may be clustered (``-vD vddk.stats=1``), a long
option may be abbreviated to any unambiguous prefix (``--deb``), clusters
and options after the plugin name are still options (GNU permutation,
unless POSIXLY_CORRECT is set), and ``--`` ends the options.  Which long
options exist depends on the server's version (``--keepalive``, which takes
no argument, appeared in 1.41.6; ``--timeout``, which takes one, in
1.41.3), and that decides whether the next word is an option or a value.
"""

import os

# The short options of every nbdkit from 1.32 on (server/options.h).
SHORT_OPTIONS = "46D:e:fg:i:nop:P:rst:u:U:vV"

# nbdkit's long options: (name, takes an argument, the option it is, the
# first version that has it).  Aliases share the option; an option with a
# short form is named by its letter.  None was removed or changed its
# argument between 1.32 and 1.45.
_OLDEST = (1, 32)
LONG_OPTIONS = (
    ("ipv4-only", False, "4", _OLDEST),
    ("ipv6-only", False, "6", _OLDEST),
    ("debug", True, "D", _OLDEST),
    ("dump-config", False, "dump-config", _OLDEST),
    ("dump-plugin", False, "dump-plugin", _OLDEST),
    ("exit-with-parent", False, "exit-with-parent", _OLDEST),
    ("export", True, "e", _OLDEST),
    ("export-name", True, "e", _OLDEST),
    ("exportname", True, "e", _OLDEST),
    ("filter", True, "filter", _OLDEST),
    ("foreground", False, "f", _OLDEST),
    ("no-fork", False, "f", _OLDEST),
    ("group", True, "g", _OLDEST),
    ("help", False, "help", _OLDEST),
    ("ip-addr", True, "i", _OLDEST),
    ("ipaddr", True, "i", _OLDEST),
    ("log", True, "log", _OLDEST),
    ("long-options", False, "long-options", _OLDEST),
    ("mask-handshake", True, "mask-handshake", _OLDEST),
    ("new-style", False, "n", _OLDEST),
    ("newstyle", False, "n", _OLDEST),
    ("no-sr", False, "no-sr", _OLDEST),
    ("old-style", False, "o", _OLDEST),
    ("oldstyle", False, "o", _OLDEST),
    ("pid-file", True, "P", _OLDEST),
    ("pidfile", True, "P", _OLDEST),
    ("port", True, "p", _OLDEST),
    ("read-only", False, "r", _OLDEST),
    ("readonly", False, "r", _OLDEST),
    ("run", True, "run", _OLDEST),
    ("selinux-label", True, "selinux-label", _OLDEST),
    ("short-options", False, "short-options", _OLDEST),
    ("single", False, "s", _OLDEST),
    ("stdin", False, "s", _OLDEST),
    ("swap", False, "swap", _OLDEST),
    ("threads", True, "t", _OLDEST),
    ("tls", True, "tls", _OLDEST),
    ("tls-certificates", True, "tls-certificates", _OLDEST),
    ("tls-psk", True, "tls-psk", _OLDEST),
    ("tls-verify-peer", False, "tls-verify-peer", _OLDEST),
    ("unix", True, "U", _OLDEST),
    ("user", True, "u", _OLDEST),
    ("verbose", False, "v", _OLDEST),
    ("version", False, "V", _OLDEST),
    ("vsock", False, "vsock", _OLDEST),
    ("no-mc", False, "no-mc", (1, 37, 9)),
    ("no-meta-contexts", False, "no-mc", (1, 37, 9)),
    ("no-structured-replies", False, "no-sr", (1, 37, 10)),
    ("print-uri", False, "print-uri", (1, 39, 6)),
    ("print-url", False, "print-uri", (1, 39, 6)),
    ("show-uri", False, "print-uri", (1, 39, 6)),
    ("show-url", False, "print-uri", (1, 39, 6)),
    ("timeout", True, "timeout", (1, 41, 3)),
    ("time-out", True, "timeout", (1, 41, 3)),
    ("keepalive", False, "keepalive", (1, 41, 6)),
    ("keep-alive", False, "keepalive", (1, 41, 6)),
)
_BY_NAME = {name: (takes_arg, option)
            for name, takes_arg, option, _ in LONG_OPTIONS}


def long_options(version):
    """{name: (takes an argument, option)} of nbdkit ``version``."""
    return {name: (takes_arg, option)
            for name, takes_arg, option, since in LONG_OPTIONS
            if version >= since}


def _resolve_long(name, version):
    """getopt_long's choice for ``--name``: an exact name, or a prefix
    whose candidates all are one option.  ``version`` is a function, called
    only for prefixes (exact names mean the same in every version)."""
    if name in _BY_NAME:
        return _BY_NAME[name]
    candidates = {entry for full, entry in long_options(version()).items()
                  if full.startswith(name)}
    if len(candidates) == 1:
        return candidates.pop()
    # Unknown or ambiguous: the server refused it, or is newer than this
    # table; either way it is not an option we look for.
    return (False, None)


def _takes_arg(letter):
    at = SHORT_OPTIONS.find(letter)
    return at >= 0 and SHORT_OPTIONS[at + 1:at + 2] == ":"


def options(argv, version, permute=None):
    """Yield (option, value) for the server options in argv as nbdkit's
    getopt_long sees them; long options are named as in LONG_OPTIONS' third
    column, value is None for options without an argument."""
    if permute is None:
        permute = "POSIXLY_CORRECT" not in os.environ
    args = iter(argv[1:])
    for arg in args:
        if arg == "--":
            return
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            takes_arg, option = _resolve_long(name, version)
            if takes_arg and not eq:
                value = next(args, "")
            yield option, (value if takes_arg else None)
        elif arg.startswith("-") and len(arg) > 1:
            for i, letter in enumerate(arg[1:], 1):
                if _takes_arg(letter):
                    yield letter, arg[i + 1:] or next(args, "")
                    break
                yield letter, None
        elif not permute:
            return


def server_version(executable="/proc/self/exe"):
    """(major, minor, micro) of the nbdkit running us, from its --version;
    the newest known table's version if it cannot be asked."""
    import re           # only for an abbreviated option: not at every start
    import subprocess
    try:
        out = subprocess.run([executable, "--version"], capture_output=True,
                             text=True, timeout=10).stdout
        match = re.search(r"(\d+)\.(\d+)\.(\d+)", out)
        if match:
            return tuple(int(n) for n in match.groups())
    except (OSError, subprocess.SubprocessError):
        pass
    return max(since for _, _, _, since in LONG_OPTIONS)


def read_cmdline(path="/proc/self/cmdline"):
    """nbdkit's argv, from the kernel."""
    with open(path, "rb") as f:
        data = f.read()
    return [a.decode("utf-8", "surrogateescape")
            for a in data.split(b"\0")[:-1]]
