"""The Python that nbdkit embeds, as the installer sees it, and the line
vddkpy prints when that Python lacks cffi."""

from vddkpy.install.nbdkit_host import EmbeddedPython, nbdkit_path, plugindir

NBDKIT = nbdkit_path()
PLUGINDIR = plugindir(NBDKIT)
EMBEDDED = EmbeddedPython(NBDKIT, PLUGINDIR)
PYTHON = EMBEDDED.version
CFFI_LINE = ("vddkpy needs python3-cffi, which is not installed for Python "
             "%s (the Python nbdkit embeds): apt install python3-cffi"
             % PYTHON)
