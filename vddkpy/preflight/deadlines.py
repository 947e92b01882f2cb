"""Every step of the check has a deadline: the limits, and the one way a
step is cut off when it passes one (the child steps of ``remote`` and
the cbt step use it)."""

import signal

STEP_LIMIT = 20             # seconds for one step, network waits included
# The cbt step pages through QueryChangedDiskAreas (about a second a call
# on a real host) to try changed-since=CHANGEID.
TRACKING_LIMIT = 100


class Overdue(BaseException):
    """A step's deadline passed.  Not an Exception: the libraries a step
    calls (pyvmomi, http.client) must not catch it."""


class deadline:
    """``with deadline(seconds):`` raises Overdue when the block runs
    longer (SIGALRM: also interrupts a blocked read)."""

    def __init__(self, seconds):
        self.seconds = seconds

    def __enter__(self):
        def overdue(signum, frame):
            raise Overdue()
        self._previous = signal.signal(signal.SIGALRM, overdue)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._previous)
        return False
