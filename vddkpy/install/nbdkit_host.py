"""What this host's nbdkit offers a Python plugin, asked of nbdkit itself.

The installer and ``vddkpy status`` share these questions:
where nbdkit and its plugin directory are, whether its python plugin is
installed, and what the Python it embeds sees (version, package
directories, a virtual environment, cffi).  Each missing piece is a
``Missing`` whose message says in one line what to install or do.
"""

import os
import re
import shutil
import subprocess
import tempfile

from ..nbdkit.prerequisites import cffi_missing_message

PACKAGE = "nbdkit-plugin-vddkpy"     # the Debian package built from here


class Missing(Exception):
    """A piece vddkpy needs is missing; the message says what to do."""


def _output(command, env=None):
    try:
        return subprocess.run(command, capture_output=True, text=True,
                              check=True, env=env).stdout
    except OSError as e:
        raise Missing("%s: %s" % (command[0], e.strerror)) from None
    except subprocess.CalledProcessError as e:
        last = (e.stderr.strip().splitlines() or ["exit status %d"
                                                  % e.returncode])[-1]
        raise Missing("%s failed: %s" % (" ".join(command), last)) from None


def nbdkit_path():
    path = shutil.which("nbdkit")
    if path is None:
        raise Missing("nbdkit is not installed: apt install nbdkit")
    return os.path.realpath(path)


def plugindir(nbdkit):
    match = re.search(r"^plugindir=(.*)$",
                      _output([nbdkit, "--dump-config"]), re.M)
    if not match:
        raise Missing("nbdkit --dump-config printed no plugindir")
    return match.group(1)


def plugin_script(directory, name):
    """Where nbdkit looks for an executable script plugin NAME (it runs it
    in preference to ``nbdkit-NAME-plugin.so``)."""
    return os.path.join(directory, "nbdkit-%s-plugin" % name)


_PROBE = """
import os, sys
def dump_plugin():
    sys.stdout.flush()
    print("vddkpy_python=%d.%d" % sys.version_info[:2])
    print("vddkpy_prefix=" + sys.prefix)
    print("vddkpy_base_prefix=" + sys.base_prefix)
    for entry in sys.path:
        if entry.endswith(("site-packages", "dist-packages")):
            print("vddkpy_site_packages=" + entry)
        if os.path.isfile(os.path.join(entry, "vddkpy", "__init__.py")):
            print("vddkpy_copy=" + os.path.join(entry, "vddkpy"))
    try:
        import _cffi_backend, cffi
        print("vddkpy_cffi=yes")
    except ImportError:
        print("vddkpy_cffi=no")
    sys.stdout.flush()
def open(readonly): pass
def get_size(h): pass
def pread(h, buf, offset, flags): pass
"""


# Byte-compiles a directory with the embedded Python, as dh_python3 does
# for a package: the servers of users who cannot write there would
# otherwise compile every module at each start (about 2x the start-up).
_COMPILER = """
import compileall
def dump_plugin():
    compiled = compileall.compile_dir(%r, quiet=1)
    print("vddkpy_compiled=" + ("yes" if compiled else "no"), flush=True)
def open(readonly): pass
def get_size(h): pass
def pread(h, buf, offset, flags): pass
"""


def version_of(copy):
    """The __version__ a copy of the vddkpy package declares (read, not
    imported: it may be another version's)."""
    try:
        with open(os.path.join(copy, "__init__.py")) as f:
            match = re.search(r'^__version__ = "(.*)"$', f.read(), re.M)
    except OSError:
        match = None
    return match.group(1) if match else "of unknown version"


def _run_probe(nbdkit, text):
    """What the plugin script ``text`` prints from its dump_plugin."""
    with tempfile.NamedTemporaryFile("w", suffix=".py") as probe:
        probe.write(text)
        probe.flush()
        return _output([nbdkit, "python", probe.name, "--dump-plugin"])


class EmbeddedPython:
    """The Python that nbdkit's python plugin embeds, as it reports itself
    through a probe script run by nbdkit."""

    def __init__(self, nbdkit, directory):
        python_plugin = os.path.join(directory, "nbdkit-python-plugin.so")
        if not os.path.exists(python_plugin):
            raise Missing("nbdkit's python plugin is not installed (no %s): "
                          "apt install nbdkit-plugin-python" % python_plugin)
        self.nbdkit = nbdkit
        lines = re.findall(r"^vddkpy_(\w+)=(.*)$", _run_probe(nbdkit, _PROBE),
                           re.M)
        answers = {}
        for key, value in lines:
            answers.setdefault(key, value)
        # Every copy of vddkpy on its sys.path, the one it imports first.
        self.copies = [value for key, value in lines if key == "copy"]
        self.version = answers["python"]
        self.prefix = answers["prefix"]
        self.base_prefix = answers["base_prefix"]
        self.site_packages = answers.get("site_packages")
        self.has_cffi = answers["cffi"] == "yes"

    def compile(self, directory):
        """Byte-compile ``directory`` for this Python."""
        output = _run_probe(self.nbdkit, _COMPILER % directory)
        if "vddkpy_compiled=yes" not in output:
            raise Missing("byte-compiling %s with nbdkit's Python failed"
                          % directory)

    def check(self):
        """Refuse what would not work for nbdkit started by other programs."""
        if self.prefix != self.base_prefix:
            raise Missing(
                "nbdkit's Python sees the virtual environment %s only because "
                "it is active here; nbdkit started by virt-v2v, CloudStack or "
                "a service will not: run 'deactivate', then install as root "
                "(or apt install ./%s_*.deb)" % (self.prefix, PACKAGE))
        if not self.has_cffi:
            raise Missing(cffi_missing_message(self.version))
        if self.site_packages is None:
            raise Missing("Python %s, which nbdkit embeds, has no "
                          "site-packages directory" % self.version)
        return self
