"""changed-since='s vSphere process: every question to vSphere is asked by
a process of its own (``asking.Asker``), forked by the first nbdkit
process's get_ready, before VDDK is loaded and nbdkit re-executes itself.

- VDDK ships its own OpenSSL, which the re-exec puts first in
  LD_LIBRARY_PATH: Python's ssl module, built for the system's, and
  VDDK's libraries never share a process.
- The vSphere modules' import (ssl, http.client, pyvmomi: tens of
  milliseconds) and the log-in happen on another CPU while nbdkit starts
  again, the client connects and VDDK opens the disk.

The serving process adopts the process's socket (``cbt_agent_=FD:PID``,
handed on by the re-exec) and asks one question per connection, each on
a socket pair of its own passed over the socket (SCM_RIGHTS): the file
name.  The answer (``marshal``: both ends are the same Python) is the
disk's capacities and next changeId, the pass's alignment, coverage and
bounds, or the error's message and errno; and the QueryChangedDiskAreas
calls timed since the last answer, for the statistics.  When the
server stops it says so: the process logs out, sends the call times not
handed over yet and ends.  A process whose server has gone (its socket
closed, whatever the reason) ends too.

This module is imported by the process that re-executes: what it imports
at module level must be light.
"""

import os
import sys

ASK = b"?"
STOP = b"."
# How long the serving process's stop waits for the vSphere process's
# goodbye: its log-out is bounded by LOGOUT_SECONDS (1) and a stalled
# log-in's lock by 0.2 s; nbdkit must end within 2 s of SIGTERM.
GOODBYE_SECONDS = 1.5
NAME = "vddkpy-vsphere"     # its name in ps and top
_MSG_NOSIGNAL = 0x4000      # Linux's: a closed peer is EPIPE, not SIGPIPE


# -- in the first process: the fork ------------------------------------------

def start(params):
    """Fork the vSphere process and note its socket and pid in
    ``params.cbt_agent_`` for the serving process (this one, or the one
    the re-exec makes, which inherits the socket)."""
    import _socket      # socket.py imports enum: not for this process
    from ..nbdkit.compat import fail_startup
    from ..nbdkit.native import ffi, process
    sys.stdout.flush()
    sys.stderr.flush()
    process.fflush(ffi.NULL)        # or the child would print it again
    try:
        ours, theirs = _socket.socketpair(_socket.AF_UNIX,
                                          _socket.SOCK_STREAM)
        pid = os.fork()
    except OSError as e:
        fail_startup("changed-since: cannot start vddkpy's vSphere process: "
                     "%s" % e.strerror)
    if pid == 0:
        ours.close()
        _run(theirs.detach(), params)       # never returns
    theirs.close()
    fd = ours.detach()
    os.set_inheritable(fd, True)
    params.cbt_agent_ = "%d:%d" % (fd, pid)


# -- in the vSphere process ---------------------------------------------------

def _run(fd, params):
    """The vSphere process's life: it never returns into nbdkit."""
    status = 1
    try:
        _set_apart(fd, params)
        _serve(fd, params)
        status = 0
    except SystemExit:                  # SIGTERM, once stopped
        status = 0
    except BaseException:               # a bug: said, never hidden
        import traceback
        traceback.print_exc()
    finally:
        os._exit(status)


def _set_apart(fd, params):
    """Nothing of nbdkit's but stderr: no descriptor (the client's, under
    -s; a listening socket) is held open by this process; Ctrl-C is for
    nbdkit, which stops this process in turn; SIGTERM stops it too."""
    import signal
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    for name in os.listdir("/proc/self/fd"):
        if int(name) > 2 and int(name) != fd:
            try:
                os.close(int(name))
            except OSError:             # the listing's own descriptor
                pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop_on_signal)
    if params.password is not None or params.cookie is not None:
        from ..nbdkit.native import not_dumpable
        not_dumpable()
    try:
        with open("/proc/self/comm", "w") as comm:
            comm.write(NAME)
    except OSError:
        pass


def _stop_on_signal(signum, frame):
    raise SystemExit(0)


def _serve(fd, params):
    """Answer the serving process's questions until it says stop or goes."""
    import socket
    from .asking import Asker
    control = socket.socket(fileno=fd)
    calls = CallTimes()
    asker = Asker(params, calls)
    asker.begin_ahead()
    stopped = False
    try:
        while True:
            message, fds, _, _ = socket.recv_fds(control, 1, 1)
            if message == ASK and fds:
                _thread_answering(asker, calls, fds[0])
            elif not message or message == STOP:
                stopped = message == STOP
                break
    finally:
        asker.stop()
        if stopped:
            _send(control, calls.drain())
        control.close()


def _thread_answering(asker, calls, fd):
    import _thread
    _thread.start_new_thread(_answer, (asker, calls, fd))


def _answer(asker, calls, fd):
    """One question: the map of a file, asked on the socket ``fd``."""
    import errno
    import marshal
    import socket
    from ..errors import PluginError
    with socket.socket(fileno=fd) as channel:
        try:
            filename = marshal.loads(_received(channel))
            disk, pass_ = asker.changes(filename)
            begins, ends = pass_.bounds()
            # (pyvmomi's numbers and texts are subclasses, which marshal
            # refuses.)
            answer = {"capacity": int(disk.capacity),
                      "base_capacity": _plain(int, disk.base_capacity),
                      "next_change_id": _plain(str, disk.next_change_id),
                      "alignment": pass_.alignment,
                      "coverage": pass_.coverage(),
                      "begins": begins, "ends": ends}
        except PluginError as e:            # (its text is escaped already)
            answer = {"error": str(e), "errno": e.errno}
        except Exception as e:              # a bug: its traceback is shown
            import traceback
            traceback.print_exc()
            answer = {"error": "changed-since: vddkpy's vSphere process "
                      "failed (%s, see its traceback)" % type(e).__name__,
                      "errno": errno.EIO}
        answer["calls"] = calls.drain()
        try:
            _send(channel, answer)
        except OSError:                     # the connection stopped waiting
            calls.put_back(answer["calls"])


def _plain(kind, value):
    return None if value is None else kind(value)


def _send(channel, value):
    import marshal
    channel.sendall(marshal.dumps(value), _MSG_NOSIGNAL)


class CallTimes:
    """The vSphere calls timed (``add``, as vddk.stats.Stats), until they
    are handed to the serving process's statistics (``drain``)."""

    def __init__(self):
        import _thread
        self._lock = _thread.allocate_lock()
        self._calls = []

    def add(self, name, usecs, nbytes=0):
        with self._lock:
            self._calls.append((name, usecs))

    def drain(self):
        with self._lock:
            calls, self._calls = self._calls, []
        return calls

    def put_back(self, calls):
        with self._lock:
            self._calls[:0] = [tuple(call) for call in calls]


# -- in the serving process ---------------------------------------------------

class Answer:
    """One question's answer: the vSphere calls timed since the last one
    (``calls``, for the statistics), and the disk and its pass, or the
    ``error`` the vSphere process met."""

    def __init__(self, answer):
        from ..errors import PluginError
        self.calls = answer["calls"]
        self.error = self.disk = self.pass_ = None
        if "error" in answer:
            self.error = PluginError(answer["error"], answer["errno"])
        else:
            self.disk, self.pass_ = AnsweredDisk(answer), AnsweredPass(answer)


class AnsweredDisk:
    """What the lookup found (as ``tracked.TrackedDisk``)."""

    def __init__(self, answer):
        self.capacity = answer["capacity"]
        self.base_capacity = answer["base_capacity"]
        self.next_change_id = answer["next_change_id"]


class AnsweredPass:
    """A complete, checked pass (as ``areas.Pass``, for served_map)."""

    def __init__(self, answer):
        self.alignment = answer["alignment"]
        self._coverage = answer["coverage"]
        self._bounds = answer["begins"], answer["ends"]

    def bounds(self):
        return self._bounds

    def coverage(self):
        return self._coverage


class Agent:
    """The serving process's end of the vSphere process (``cbt_agent_``:
    FD:PID).  (``_socket``, not ``socket``: its enum and selectors are
    not needed here.)"""

    def __init__(self, value):
        import _socket
        import _thread
        from ..errors import PluginError
        from ..printable import printable
        try:
            fd, pid = (int(part) for part in value.split(":"))
            os.set_inheritable(fd, False)   # not for --run commands
            self._control = _socket.socket(fileno=fd)
        except (ValueError, OSError):
            raise PluginError("cbt_agent_=%s: not the socket of vddkpy's "
                              "vSphere process" % printable(value)) from None
        self._pid = pid
        self._lock = _thread.allocate_lock()

    def changes(self, filename, interrupted):
        """The Answer for a connection to ``filename``; None once
        ``interrupted()`` says to stop waiting."""
        import marshal
        import _socket
        mine, theirs = _socket.socketpair(_socket.AF_UNIX,
                                          _socket.SOCK_STREAM)
        try:
            with self._lock:
                self._control.sendmsg(
                    [ASK], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                             theirs.fileno().to_bytes(4, sys.byteorder))],
                    _MSG_NOSIGNAL)
            theirs.close()      # the answer's end comes when theirs close
            mine.sendall(marshal.dumps(filename), _MSG_NOSIGNAL)
            mine.shutdown(_socket.SHUT_WR)
            data = _received(mine, interrupted)
        except OSError:
            raise self._gone() from None
        finally:
            theirs.close()
            mine.close()
        if data is None:
            return None
        try:
            return Answer(marshal.loads(data))
        except (EOFError, ValueError, TypeError, KeyError):
            raise self._gone() from None

    def _gone(self):
        from ..errors import PluginError
        return PluginError("changed-since: vddkpy's vSphere process has "
                           "ended: start nbdkit again")

    def close(self):
        """Tell the vSphere process the server stops and wait for its
        goodbye (GOODBYE_SECONDS at most): the calls timed and not handed
        over yet ([] if it does not say goodbye)."""
        import marshal
        import time
        data = None
        try:
            with self._lock:
                self._control.sendall(STOP, _MSG_NOSIGNAL)
            deadline = time.monotonic() + GOODBYE_SECONDS
            data = _received(self._control,
                             lambda: time.monotonic() >= deadline)
        except OSError:
            pass
        finally:
            self._control.close()
            self._reap(data is not None)
        try:
            return list(marshal.loads(data))
        except (EOFError, ValueError, TypeError):
            return []

    def _reap(self, ended):
        """Wait for the vSphere process if it is this process's child (no
        re-exec, or nbdkit -f); one that did not say goodbye is killed."""
        import signal
        try:
            if not ended and os.waitpid(self._pid, os.WNOHANG) == (0, 0):
                os.kill(self._pid, signal.SIGKILL)
            os.waitpid(self._pid, 0)
        except ChildProcessError:       # not a child: init reaps it
            pass


def _received(channel, interrupted=None):
    """Everything ``channel`` sends until it closes, or None once
    ``interrupted()``, if given, says to stop waiting."""
    import _socket
    from ..vsphere.background import POLL_SECONDS
    chunks = []
    channel.settimeout(POLL_SECONDS)
    while True:
        try:
            data = channel.recv(1 << 18)
        except _socket.timeout:
            if interrupted is not None and interrupted():
                return None
            continue
        if not data:
            return b"".join(chunks)
        chunks.append(data)
