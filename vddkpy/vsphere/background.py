"""Work on a thread of its own, waited for without holding up nbdkit.

A caller that waits for vSphere must be able to stop waiting: at a time
limit, or at once when nbdkit is shutting down or the client has gone.
So the work runs on a thread of its own (``_thread``: ``threading`` must
be first imported on nbdkit's main thread, see vddkpy/session.py) and
the caller waits for it in slices, asking ``interrupted()`` between
them; a thread given up on ends by itself, its outcome unused.
"""

import time
import _thread

POLL_SECONDS = 0.05     # how often a wait looks at interrupted()


class Stopped(Exception):
    """A wait ended by ``interrupted()``."""


class TimedOut(Exception):
    """A wait that reached its time limit."""


class Background:
    """``function(*args)`` running on a thread of its own from now on."""

    def __init__(self, function, *args):
        self._done = _thread.allocate_lock()
        self._done.acquire()
        self._outcome = None
        _thread.start_new_thread(self._run, (function, args))

    def _run(self, function, args):
        try:
            self._outcome = (True, function(*args))
        except BaseException as e:      # handed to the waiting thread
            self._outcome = (False, e)
        finally:
            self._done.release()

    def result(self, interrupted=None, timeout=None):
        """The function's value, or its exception raised here; Stopped
        once ``interrupted()`` says so, TimedOut after ``timeout``
        seconds (None: no limit)."""
        ended_first = self._wait(interrupted, timeout)
        if ended_first is not None:
            raise ended_first()
        succeeded, value = self._outcome
        if succeeded:
            return value
        raise value

    def failed(self):
        """Whether the function has ended by raising (without waiting)."""
        outcome = self._outcome
        return outcome is not None and not outcome[0]

    def wait(self, interrupted=None, timeout=None):
        """Whether the function has ended, waiting until it does, until
        ``interrupted()`` or for at most ``timeout`` seconds."""
        return self._wait(interrupted, timeout) is None

    def _wait(self, interrupted, timeout):
        """None once the function has ended, else what ended the wait
        first: Stopped or TimedOut."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done.acquire(timeout=POLL_SECONDS):
            if interrupted is not None and interrupted():
                return Stopped
            if deadline is not None and time.monotonic() >= deadline:
                return TimedOut
        self._done.release()            # for any later wait
        return None
