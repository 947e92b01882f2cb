"""The script ``vddkpy check`` has nbdkit run (``nbdkit python THIS
KEY=VALUE ...``), so that the parameters go through the plugin's own
parser inside nbdkit.  It uses the vddkpy package it sits in."""

import os
import sys

_package_parent = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.realpath(__file__))))
sys.path.insert(0, _package_parent)

from vddkpy.preflight.inside import (config, config_complete,  # noqa: E402
                                     get_size, open, pread)

__all__ = ["config", "config_complete", "open", "get_size", "pread"]
