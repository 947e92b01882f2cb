"""nbdkit-vddk-plugin in Python: serve VMware disks through VDDK.

Run as:  nbdkit python plugin/plugin.py [libdir=DIR] file=/abs/disk.vmdk
This module only adapts nbdkit's Python callbacks to ``vddkpy``.
(Defining ``open`` hides the builtin here: use ``builtins.open`` if needed.)
"""

import os
import sys

import nbdkit

try:
    import vddkpy                                    # installed
except ImportError:                                  # run from a checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(
        os.path.realpath(__file__))))
    import vddkpy

from vddkpy.errors import install_reporting
from vddkpy.params import Params
from vddkpy.session import Session

API_VERSION = 2

install_reporting()
params = Params()
session = Session(params)


def thread_model():
    return nbdkit.THREAD_MODEL_PARALLEL


def dump_plugin():
    session.dump()


def config(key, value):
    params.set(key, value)


def config_complete():
    params.complete()


def get_ready():
    session.load()


def after_fork():
    session.initialize()


def cleanup():
    session.shutdown()


def open(readonly):
    try:
        export_name = nbdkit.export_name()
    except RuntimeError:
        export_name = None
    return session.open_disk(readonly, export_name)


def close(disk):
    session.close_disk(disk)


def get_size(disk):
    return disk.get_size()


def block_size(disk):
    return disk.block_size()


def can_flush(disk):
    return True


def can_fua(disk):
    return nbdkit.FUA_NATIVE


def can_extents(disk):
    return disk.extents_supported()


def pread(disk, buf, offset, flags):
    disk.pread(buf, offset)


def pwrite(disk, buf, offset, flags):
    disk.pwrite(buf, offset, flags & nbdkit.FLAG_FUA)


def flush(disk, flags):
    disk.flush()


def extents(disk, count, offset, flags):
    return disk.extents(offset, count, flags & nbdkit.FLAG_REQ_ONE)
