"""The benchmark's cases, one module per kind of measurement.  Each module
has ``define(ctx) -> [Case]``; a new case is a module added to MODULES."""

from . import cbt_map, copies, maps, random_io, startup, sync_delta

MODULES = (startup, copies, random_io, maps, cbt_map, sync_delta)


def all_cases(ctx):
    return [case for module in MODULES for case in module.define(ctx)]
