"""nbdkit-vddk-plugin in Python: serve VMware disks through VDDK.

    nbdkit python plugin/plugin.py [libdir=DIR] file=/abs/disk.vmdk

The callbacks live in ``vddkpy.callbacks``; this script only makes sure
the package of the checkout it sits in is the one used.
"""

import os
import sys

_checkout = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
if os.path.isdir(os.path.join(_checkout, "vddkpy")):
    sys.path.insert(0, _checkout)

from vddkpy.callbacks import *  # noqa: E402,F401,F403
