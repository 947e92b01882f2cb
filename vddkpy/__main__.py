"""python3 -m vddkpy: how to run the plugin (nbdkit's --help cannot show
a Python plugin's parameters)."""

from .params import USAGE

print("usage: nbdkit python plugin/plugin.py [libdir=DIR] file=FILENAME "
      "[PARAMETER=VALUE ...]\n       nbdkit vddk ...   (after "
      "python3 -m vddkpy.install)\n\n" + USAGE)
