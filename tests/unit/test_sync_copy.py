"""What a sync round tells of a child server's failure: the last error
line of its log, never one another of its threads is still writing."""

from vddkpy.sync.copy import last_error

FAILED = "nbdkit: python.3: error: pread: The host is shutting down\n"


def test_the_last_complete_error_line(tmp_path):
    log = tmp_path / "source.log"
    log.write_text("nbdkit: debug: open\n" + FAILED + "nbdkit: debug: x\n")
    assert last_error(log) == FAILED.strip()


def test_a_line_still_being_written_is_not_the_error(tmp_path):
    """nbdkit writes a line in pieces: a read between them sees half."""
    log = tmp_path / "source.log"
    log.write_text(FAILED + "nbdkit: python.6: error:")
    assert last_error(log) == FAILED.strip()


def test_without_a_complete_error_line_the_last_line(tmp_path):
    log = tmp_path / "source.log"
    log.write_text("nbdkit: debug: open\nnbdkit: python.6: error: pre")
    assert last_error(log) == "nbdkit: python.6: error: pre"
    log.write_text("qemu-nbd: Failed to blk_new_open\n")
    assert last_error(log) == "qemu-nbd: Failed to blk_new_open"
    assert last_error(tmp_path / "missing.log") == ""


def test_control_characters_are_escaped(tmp_path):
    log = tmp_path / "source.log"
    log.write_bytes(b"nbdkit: error: \x1b[31mred\n")
    assert "\x1b" not in last_error(log)
