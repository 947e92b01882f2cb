"""nbdkit's ``-u USER`` and ``-g GROUP``: the server loads the plugin and
its library as the user who started it, then serves as USER (VDDK's
InitEx, every disk open).  The check does the same: it becomes USER after
the load step, so that what USER may not read or write fails the step
that the run would fail."""

import grp
import os
import pwd

from ..nbdkit import cmdline
from .report import FAIL, OK, Result


def identity():
    """(user, group) given to nbdkit (either may be None), or None."""
    given = {option: value for option, value in
             cmdline.options(cmdline.read_cmdline(), cmdline.server_version)
             if option in ("u", "g")}
    if not given:
        return None
    return given.get("u"), given.get("g")


def _uid(user):
    entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def _gid(group):
    return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid


def become(user, group):
    """The ``user`` step: this process now runs as nbdkit -u/-g would."""
    try:
        uid, gid = _uid(user) if user is not None else (None, None)
        if group is not None:
            gid = _gid(group)
    except (KeyError, ValueError):
        return Result(FAIL, "user", "no user %s or group %s on this machine"
                      % (user, group), "-u and -g name an existing user "
                      "and group")
    try:
        if gid is not None:
            os.setgroups([gid])
            os.setgid(gid)
        if uid is not None:
            os.setuid(uid)
    except OSError as e:
        return Result(FAIL, "user", "cannot become %s: %s" % (
            user or group, e.strerror), "run the check as root, as nbdkit "
            "-u needs")
    return Result(OK, "user", "the steps below run as uid %d gid %d, as "
                  "nbdkit -u/-g serves" % (os.getuid(), os.getgid()))
