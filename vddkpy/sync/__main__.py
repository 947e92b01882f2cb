"""python3 -m vddkpy.sync: the ``vddkpy sync`` command."""

import sys

from .command import main

sys.exit(main(sys.argv[1:]))
