"""The old spelling ``python3 -m vddkpy.thumbprint`` (and the
``vddkpy-thumbprint`` script's module), kept for one release."""
import sys

from .vsphere.thumbprint import main

if __name__ == "__main__":
    sys.exit(main())
