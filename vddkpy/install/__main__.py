"""python3 -m vddkpy.install: see installer.py."""
import sys

from .installer import main

sys.exit(main())
