"""The serving process's end of vddkpy's vSphere process (cbt.agent.Agent),
against a stand-in for that process on a thread: answers handed over as
they were sent, its errors raised in one line, anything else (garbage, an
answer cut short, no answer) one line saying the process has ended, and a
wait that nbdkit's stop ends."""

import marshal
import os
import socket
import threading

import pytest

from vddkpy.cbt import agent
from vddkpy.errors import PluginError

GONE = "changed-since: vddkpy's vSphere process has ended: start nbdkit again"
ANSWER = {"capacity": 1 << 30, "base_capacity": None,
          "next_change_id": "52 aa/7", "alignment": 512,
          "coverage": {"calls": 1, "complete": True},
          "begins": [0, 4096], "ends": [512, 8192],
          "calls": [("QueryChangedDiskAreas", 1234)]}


class StandIn:
    """The vSphere process: each question gets ``reply(filename)`` (bytes,
    or None for no answer until the end of the test)."""

    def __init__(self, reply, goodbye=b""):
        ours, self.theirs = socket.socketpair()
        self.agent = agent.Agent("%d:%d" % (ours.detach(), os.getpid()))
        self.reply, self.goodbye = reply, goodbye
        self.asked = []
        self.held = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            message, fds, _, _ = socket.recv_fds(self.theirs, 1, 1)
            if message == agent.STOP:
                self.theirs.sendall(self.goodbye)
                self.theirs.close()
                return
            with socket.socket(fileno=fds[0]) as channel:
                filename = marshal.loads(agent._received(channel))
                self.asked.append(filename)
                data = self.reply(filename)
                if data is None:
                    self.held.append(channel.dup())
                else:
                    channel.sendall(data)

    def close(self):
        calls = self.agent.close()
        self.thread.join(10)
        for channel in self.held:
            channel.close()
        return calls


def test_an_answer_is_handed_over_as_sent():
    stand_in = StandIn(lambda filename: marshal.dumps(ANSWER))
    answer = stand_in.agent.changes("[ds] vm/vm.vmdk", None)
    disk, pass_, calls = answer.disk, answer.pass_, answer.calls
    assert answer.error is None
    assert stand_in.asked == ["[ds] vm/vm.vmdk"]
    assert (disk.capacity, disk.base_capacity, disk.next_change_id) == (
        1 << 30, None, "52 aa/7")
    assert pass_.alignment == 512
    assert pass_.bounds() == ([0, 4096], [512, 8192])
    assert pass_.coverage() == {"calls": 1, "complete": True}
    assert calls == [("QueryChangedDiskAreas", 1234)]
    assert stand_in.close() == []


def test_the_processs_error_comes_with_its_errno_and_the_calls_made():
    sent = {"error": "changed-since: vSphere 127.0.0.1:443 has no VM vm-9",
            "errno": 2, "calls": [("QueryChangedDiskAreas", 99)]}
    stand_in = StandIn(lambda filename: marshal.dumps(sent))
    answer = stand_in.agent.changes("[ds] vm/vm.vmdk", None)
    assert (str(answer.error), answer.error.errno) == (sent["error"], 2)
    assert isinstance(answer.error, PluginError)
    assert answer.calls == [("QueryChangedDiskAreas", 99)]
    assert answer.disk is None and answer.pass_ is None
    stand_in.close()


@pytest.mark.parametrize("data", [
    b"", b"not marshal", marshal.dumps(ANSWER)[:-3], marshal.dumps([1, 2]),
    marshal.dumps({"capacity": 1}), marshal.dumps({"calls": []}),
    marshal.dumps({"error": "no errno", "calls": []})])
def test_anything_else_says_the_process_has_ended(data):
    stand_in = StandIn(lambda filename: data)
    with pytest.raises(PluginError, match="^%s$" % GONE):
        stand_in.agent.changes("[ds] vm/vm.vmdk", None)
    stand_in.close()


def test_a_process_gone_before_the_question():
    stand_in = StandIn(lambda filename: b"")
    assert stand_in.close() == []
    with pytest.raises(PluginError, match="^%s$" % GONE):
        stand_in.agent.changes("[ds] vm/vm.vmdk", None)


def test_a_wait_ends_when_nbdkit_stops_it():
    stand_in = StandIn(lambda filename: None)
    looks = []

    def interrupted():
        looks.append(1)
        return len(looks) == 3
    assert stand_in.agent.changes("[ds] vm/vm.vmdk", interrupted) is None
    assert len(looks) == 3
    stand_in.close()


def test_the_goodbye_hands_over_the_calls_not_handed_over_yet():
    calls = [("QueryChangedDiskAreas", 10), ("QueryChangedDiskAreas", 20)]
    stand_in = StandIn(lambda filename: None, marshal.dumps(calls))
    assert stand_in.close() == calls
