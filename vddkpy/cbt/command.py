"""``vddkpy changed-areas KEY=VALUE ...``: the areas changed-since= would
serve as data, and the changeId to give next time, as JSON, for tools that
copy on their own.  Same parameters as the plugin (server=, user=,
password= in every form or cookie=, thumbprint=, vm=, snapshot=, file=,
changed-since=); no secret is ever printed.

    {"file": ..., "changed_since": ..., "capacity": BYTES,
     "next_change_id": ..., "areas": [[START, LENGTH], ...]}

The areas are vSphere's, sorted, merged and clipped to the disk; nothing
else is changed (the plugin widens a delta's areas for nbdcopy).
"""

import json
import sys

from ..errors import PluginError
from ..nbdkit.compat import fail_startup
from ..params import Params
from .areas import with_tail
from .tracked import TrackedDisk
from ..vsphere.session import VsphereSession

USAGE = ("usage: vddkpy changed-areas server=HOST user=NAME password=SOURCE "
         "thumbprint=XX:.. vm=moref=ID [snapshot=MOREF] file=DISK "
         "changed-since=CHANGEID|*")


def parse(args):
    params = Params()
    for arg in args:
        key, eq, value = arg.partition("=")
        if not eq:
            fail_startup("expected KEY=VALUE, not %s (%s)" % (arg, USAGE))
        params.set(key, value)
    if params.changed_since is None or params.export is not None:
        fail_startup(USAGE)
    params.complete()
    return params


def report(params):
    session = VsphereSession(params)
    try:
        disk = TrackedDisk(session, params, params.file)
        disk.look_up()
        begins, ends = disk.areas(params.changed_since, alignment=1).bounds()
    finally:
        session.close()
    if disk.base_capacity is not None and disk.base_capacity < \
            disk.capacity:
        begins, ends = with_tail(begins, ends, disk.base_capacity,
                                 disk.capacity)
    return {"file": params.file, "changed_since": params.changed_since,
            "capacity": disk.capacity, "next_change_id": disk.next_change_id,
            "areas": [[b, e - b] for b, e in zip(begins, ends)]}



def main(args):
    params = parse(args)
    try:
        document = report(params)
    except PluginError as e:
        fail_startup(str(e))
    except KeyboardInterrupt:       # while waiting for vSphere
        fail_startup("interrupted")
    json.dump(document, sys.stdout)
    sys.stdout.write("\n")
    return 0
