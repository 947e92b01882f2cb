"""``python3 -m vddkpy.install [--uninstall]``: the old spelling of
``python3 -m vddkpy install`` and ``uninstall`` (see installer.py)."""
import sys

from .. import incomplete

try:
    from .installer import main
except ModuleNotFoundError as missing:     # a partial copy
    sys.exit(incomplete(missing, "python3 -m vddkpy.install"))

sys.exit(main(old="python3 -m vddkpy.install", new="python3 -m vddkpy"))
