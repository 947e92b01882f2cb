"""What the plugin needs before it can even be imported, said in one line.

The plugin binds VDDK through cffi.  When cffi's compiled part
(``_cffi_backend``), or cffi itself where the declarations must be parsed
at run time (``binding``), is missing for the Python that nbdkit embeds,
the import would end in a traceback; instead the plugin prints one nbdkit
error line saying what to install and exits 1, as nbdkit does for a bad
configuration.  cffi is what is missing, so the line goes out through
ctypes, which every CPython has.
"""

import sys

EMBEDDED = "the Python nbdkit embeds"


def cffi_missing_message(version, which=EMBEDDED):
    return ("vddkpy needs python3-cffi, which is not installed for Python %s "
            "(%s): apt install python3-cffi" % (version, which))


def virtual_environment_message(prefix):
    """cffi is missing because nbdkit's Python runs in a virtual environment
    (found through the PATH that activating it set)."""
    return ("vddkpy needs python3-cffi, which the Python nbdkit embeds does "
            "not see: it runs in the virtual environment %s, active here "
            "(nbdkit started by other programs does not): run 'deactivate'"
            % prefix)


def foreign_prefix_message(library, prefix):
    """cffi is missing because nbdkit's libpython took its standard
    library from another Python installation: the first python3 on PATH
    (pyenv, a hand-built Python) when its version matches."""
    return ("vddkpy needs python3-cffi, which the Python nbdkit embeds (%s) "
            "does not see: it took its modules from %s, the installation of "
            "the first python3 on PATH (pyenv?): start nbdkit with a PATH "
            "whose first python3 is %s/bin/python3, or with PYTHONHOME=%s"
            % (library, sys.prefix, _library_prefix(library),
               _library_prefix(library)))


def embedding_library():
    """The libpython nbdkit loaded, when it lies outside sys.base_prefix
    (else None)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps
                     if "/libpython3" in line}
    except OSError:
        return None
    for path in sorted(paths):
        if not path.startswith(sys.base_prefix.rstrip("/") + "/"):
            return path
    return None


def _library_prefix(library):
    return library.split("/lib/")[0] or "/"


def running_version():
    return "%d.%d" % sys.version_info[:2]


def fail(message):
    """Print ``message`` as nbdkit's error line and exit 1, as nbdkit does
    after a configuration error (only ever called inside nbdkit)."""
    import ctypes       # only now: its import costs start-up time
    process = ctypes.CDLL(None)
    process.nbdkit_error(b"%s", message.encode("utf-8", "surrogateescape"))
    sys.stdout.flush()
    sys.stderr.flush()
    process.exit(1)


def cffi_missing(parser=True):
    """True when cffi cannot work in this Python; with ``parser=False``
    only its compiled part is needed (the generated module's case)."""
    try:
        import _cffi_backend  # noqa: F401  (cffi's compiled part)
        if parser:
            import cffi  # noqa: F401
    except ImportError:
        return True
    return False


def require_cffi(parser):
    if cffi_missing(parser):
        if sys.prefix != sys.base_prefix:
            fail(virtual_environment_message(sys.prefix))
        library = embedding_library()
        if library:
            fail(foreign_prefix_message(library, sys.prefix))
        fail(cffi_missing_message(running_version()))
