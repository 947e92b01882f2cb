"""Process-wide plugin state and the nbdkit lifecycle around VDDK.

Made by get_ready once the library is loaded and nbdkit re-executed if
needed (``reexec.load_library``), so a process that re-executes never
imports this module and the data path behind it.  InitEx runs in the
serving process (VDDK starts threads there, which a fork would lose), and
Exit, with the statistics, before Python is finalised, at whichever
callbacks the server has (``nbdkit.compat.ServingProcess``).
"""

import errno
import os
import _thread

from .vddk.calls import Vddk
from .disk import Disk
from .errors import PluginError
from .nbdkit.compat import debug, debug_flags, error, fail_startup
from .nbdkit.native import (FNM_NOMATCH, fnmatch_bytes, has_symbol,
                            process, to_bytes)
from .printable import printable, quoted
from .vddk.log import error_function, log_function

RHEL_54377_HINT = (
    "if nbdkit crashes when you open a connection, read this link for "
    "workarounds: https://issues.redhat.com/browse/RHEL-54377")


def _shown_wildcard(wildcard):
    """export= in quotes: as typed (upstream's text; its backslashes are
    the wildcard's own), escaped when it holds what could forge a line or
    drive a terminal."""
    return '"%s"' % wildcard if wildcard.isprintable() else quoted(wildcard)


def _climbs(name):
    """Whether a file name ("[datastore] dir/file.vmdk" or a local path)
    has a ".." component."""
    return ".." in name.replace("] ", "/").split("/")


def _nbdkit_stopping():
    """A function telling whether nbdkit is shutting down or this thread's
    client has gone: nbdkit_nanosleep returns at once with an error then
    (the plugin cannot see nbdkit's quit flag otherwise).  None outside
    nbdkit."""
    if not has_symbol("nbdkit_nanosleep"):
        return None
    return lambda: process.nbdkit_nanosleep(0, 0) != 0


class Session:
    def __init__(self, params, library):
        self.params = params
        self.library = library
        self.initialized = False
        self.open_close_lock = _thread.allocate_lock()
        self.create_pending = params.create
        self.disks = set()              # open, until close_disk
        collect = debug_flags.stats or params.stats_file is not None
        self.vddk = Vddk(library, collect)
        self.changes = None             # changed-since=: what the run proved
        if params.changed_since is not None:
            from .cbt.record import Run
            self.changes = Run(params, self.vddk.stats, _nbdkit_stopping())
        if (library.version >= 8 and params.transports is None
                and not os.path.exists("/sys/class/scsi_disk")):
            debug(RHEL_54377_HINT)

    # -- lifecycle ----------------------------------------------------------

    def initialize(self):
        """VixDiskLib_InitEx, in the serving process."""
        config = self.params.config
        code = self.vddk.call(
            "InitEx", "6, 5, &debug_fn, &error_fn, &error_fn, %s, %s"
            % (self.library.libdir, config or "NULL"),
            6, 5, log_function, error_function, error_function,
            *self.library.init_directories(config))
        if code != 0:
            fail_startup(str(self.vddk.error("VixDiskLib_InitEx", code)))
        self.initialized = True

    def shutdown(self):
        """At cleanup or exit: no VDDK thread may call into Python after
        this.

        nbdkit may run cleanup with connections whose close callback never
        ran: it skips close when it quits on SIGTERM (after their threads
        have ended), and may unload before a finished connection's close.
        VDDK wants every disk closed before Exit (its requests waited for,
        the server session ended, a stream-optimized disk completed), so
        what is still open is closed here.
        """
        if self.changes is not None:
            self.changes.stop()
        for disk in list(self.disks):
            self.close_disk(disk)
        if self.initialized:
            self.vddk.call("Exit", "")
            self.initialized = False
        self._report_stats(self._report_changes())

    def _report_changes(self):
        """changed-since=: the changeIds to give next time, only if the
        run is complete (cbt.record); the stats-file= part."""
        if self.changes is None:
            return {}
        document = self.changes.document()
        ids = document.get("next_change_ids")
        if ids is None:
            debug("changed-since: no changeId to give next time: %s"
                  % "; ".join(document["change_tracking"]
                              ["incomplete_because"]))
        for filename, change_id in sorted((ids or {}).items()):
            debug("changed-since: changeId to give next time for %s: %s"
                  % (printable(filename), printable(change_id)))
        return document

    def _report_stats(self, changes):
        stats = self.vddk.stats
        if stats is None:
            return
        if debug_flags.stats:
            for line in stats.table():
                debug(line)
            for filename, change_id in sorted(
                    changes.get("next_change_ids", {}).items()):
                debug("next changed-since for %s: %s"
                      % (printable(filename), printable(change_id)))
        path = self.params.stats_file
        if path:
            from . import statsfile  # json, re, tempfile: only for this
            try:
                document = stats.as_json()
                document.update(changes)
                statsfile.write(path, document, self.params.disk_files())
            except statsfile.Refused as e:
                error(str(e))
            except OSError as e:
                error("stats-file: %s: %s" % (printable(path), e.strerror))

    # -- connections --------------------------------------------------------

    def open_disk(self, readonly, export_name):
        filename = self._choose_file(export_name)
        changes = None if self.changes is None \
            else self.changes.connection(filename)
        disk = Disk(self, filename, readonly, changes)
        with self.open_close_lock:
            disk.open()
        try:
            disk.start()
        except BaseException:
            self.close_disk(disk)
            raise
        self.disks.add(disk)
        return disk

    def close_disk(self, disk):
        with self.open_close_lock:
            self.disks.discard(disk)
            disk.close()

    def create_if_pending(self, disk):
        """Create the local disk on the first connection (until it works)."""
        if self.create_pending:
            if disk.readonly:
                raise PluginError("create=true: cannot create %s on a "
                                  "read-only connection"
                                  % printable(self.params.file),
                                  errno.EROFS)
            disk.create()
            self.create_pending = False

    def _choose_file(self, export_name):
        """The file to open: file=, or the client's export name (bytes)
        if it matches export=."""
        wildcard = self.params.export
        if wildcard is None:
            return self.params.file
        if export_name is None:
            raise PluginError("'export' parameter used, but the client did "
                              "not negotiate an export name.  Using oldstyle "
                              "protocol?")
        # No FNM_PATHNAME, as upstream since 1.45.11: "*" crosses "/", so
        # one server serves a VM's disks in several folders of a datastore.
        r = fnmatch_bytes(to_bytes(wildcard), export_name, 0)
        name = export_name.decode("utf-8", "surrogateescape")
        if r == 0 and _climbs(name):
            # "*" would also admit "dir/../elsewhere": not what the
            # wildcard names (upstream passes it on to VDDK).
            raise PluginError('access denied: client requested %s which has '
                              'a ".." path component' % quoted(name))
        if r == 0:
            return name
        if r == FNM_NOMATCH:
            raise PluginError('access denied: client requested %s which '
                              'does not match export=%s'
                              % (quoted(name), _shown_wildcard(wildcard)))
        raise PluginError("fnmatch returned error code %d" % r)
