"""stats-file=: where the JSON statistics go, checked before serving and
written safely at exit.

nbdkit often runs as root and may write in a shared directory, so the
target is refused at start-up (one error line, exit 1) unless it is a
regular file or absent, is not a symbolic link (never followed), and is not
the disk being served; at exit the JSON goes to a new 0600 file in the same
directory, which is then renamed over the target (a rename replaces a link
planted meanwhile instead of following it, and a reader never sees half a
file).
"""

import os
import stat


def problem(path, served_file=None):
    """Why ``path`` (absolute) cannot be the stats file, or None.

    ``served_file`` is file= of a local disk (it may not exist yet with
    create=true).
    """
    directory, name = os.path.split(path)
    reason = _directory_problem(directory) if name else "Is a directory"
    if reason is None:
        reason = _target_problem(path, served_file)
    return None if reason is None else "stats-file: %s: %s" % (path, reason)


def _directory_problem(directory):
    try:
        if not stat.S_ISDIR(os.stat(directory).st_mode):
            return "%s: Not a directory" % directory
    except OSError as e:
        return "%s: %s" % (directory, e.strerror)
    if not os.access(directory, os.W_OK | os.X_OK):
        return "cannot create files in %s: Permission denied" % directory
    return None


def _target_problem(path, served_file):
    if served_file is not None and os.path.abspath(served_file) == path:
        return "is the disk being served (file=)"
    try:
        target = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        return e.strerror
    if stat.S_ISLNK(target.st_mode):
        return "is a symbolic link (not followed)"
    if stat.S_ISDIR(target.st_mode):
        return "Is a directory"
    if not stat.S_ISREG(target.st_mode):
        return "is not a regular file"
    if served_file is not None and _same_file(target, served_file):
        return "is the disk being served (file=)"
    return None


def _same_file(target, other_path):
    try:
        other = os.stat(other_path)
    except OSError:
        return False
    return (target.st_dev, target.st_ino) == (other.st_dev, other.st_ino)


def write(path, document):
    """Write ``document`` as JSON to a new file renamed over ``path``."""
    import json         # here: every start checks the path, few write
    import tempfile
    directory, name = os.path.split(path)
    fd, temporary = tempfile.mkstemp(prefix=".%s." % name, dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(document, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
