"""vddkpy/vsphere/background.py: work on a thread of its own, its value
or exception handed to whoever waits, a wait ended by interrupted() or a
time limit without the work."""

import _thread

import pytest

from vddkpy.vsphere.background import Background, Stopped, TimedOut


def held():
    """A lock held until the test releases it: work that waits on it
    runs until then."""
    lock = _thread.allocate_lock()
    lock.acquire()
    return lock


def test_the_value_and_every_later_wait():
    work = Background(lambda a, b: a + b, 2, 3)
    assert work.result() == 5
    assert work.wait() and work.result() == 5


def test_the_exception_is_raised_to_the_waiter():
    failure = ValueError("no")

    def fail():
        raise failure

    with pytest.raises(ValueError) as raised:
        Background(fail).result()
    assert raised.value is failure


def test_interrupted_ends_the_wait_not_the_work():
    gate = held()
    work = Background(lambda: gate.acquire() and "done")
    with pytest.raises(Stopped):
        work.result(interrupted=lambda: True)
    assert not work.wait(interrupted=lambda: True)
    gate.release()
    assert work.result() == "done"


def test_a_time_limit_ends_the_wait():
    gate = held()
    work = Background(lambda: gate.acquire() and "done")
    with pytest.raises(TimedOut):
        work.result(interrupted=lambda: False, timeout=0)
    assert not work.wait(timeout=0)
    gate.release()
    assert work.wait(timeout=None)
