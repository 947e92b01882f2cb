"""Which files make up a local VMDK (the files stats-file= must never
replace), read from its descriptors: the descriptor, its extents, the
parent chain link after link with each link's extents, the files
create=true will make; whatever the spelling (a symbolic link to the
directory, a hard link), and without ever failing on garbage."""

import os

import pytest

from vddkpy import vmdkfiles
from vddkpy.vmdkfiles import (CREATED, EXTENT, PARENT, PARENT_EXTENT, SERVED,
                              local_disk)


def descriptor(extents=(), parent=None, newline="\n"):
    lines = ["# Disk DescriptorFile", "version=1", "CID=fffffffe",
             'createType="monolithicFlat"']
    if parent is not None:
        lines.append('parentFileNameHint="%s"' % parent)
    lines += ['RW 2048 FLAT "%s" 0' % name for name in extents]
    return newline.join(lines) + newline


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def sparse(path, embedded):
    """A monolithic sparse file (KDMV header) embedding ``embedded`` as
    its descriptor at sector 1."""
    header = bytearray(512)
    header[0:4] = b"KDMV"
    header[28:36] = (1).to_bytes(8, "little")
    header[36:44] = (2).to_bytes(8, "little")
    body = embedded.encode().ljust(1024, b"\0")
    path.write_bytes(bytes(header) + body + bytes(4096))
    return path


def roles(files, directory, names):
    return {name: files.role_of(str(directory / name)) for name in names}


def test_flat_disk_and_its_extent(tmp_path):
    disk = write(tmp_path / "disk.vmdk", descriptor(["disk-flat.vmdk"]))
    files = local_disk(str(disk))
    assert roles(files, tmp_path, ["disk.vmdk", "disk-flat.vmdk",
                                   "other.vmdk", "stats.json"]) == {
        "disk.vmdk": SERVED, "disk-flat.vmdk": EXTENT,
        "other.vmdk": None, "stats.json": None}


def test_several_extents_and_crlf_lines(tmp_path):
    disk = write(tmp_path / "d.vmdk", descriptor(
        ["d-s001.vmdk", "d-s002.vmdk"], newline="\r\n"))
    files = local_disk(str(disk))
    assert files.role_of(str(tmp_path / "d-s001.vmdk")) == EXTENT
    assert files.role_of(str(tmp_path / "d-s002.vmdk")) == EXTENT


def test_parent_chain_link_after_link(tmp_path):
    write(tmp_path / "base" / "base.vmdk", descriptor(["base-flat.vmdk"]))
    write(tmp_path / "mid" / "mid.vmdk",
          descriptor(["mid-delta.vmdk"], parent="../base/base.vmdk"))
    top = write(tmp_path / "top.vmdk",
                descriptor(["top-delta.vmdk"], parent="mid/mid.vmdk"))
    files = local_disk(str(top))
    assert roles(files, tmp_path, [
        "top-delta.vmdk", "mid/mid.vmdk", "mid/mid-delta.vmdk",
        "base/base.vmdk", "base/base-flat.vmdk", "mid/base-flat.vmdk"]) == {
        "top-delta.vmdk": EXTENT, "mid/mid.vmdk": PARENT,
        "mid/mid-delta.vmdk": PARENT_EXTENT, "base/base.vmdk": PARENT,
        "base/base-flat.vmdk": PARENT_EXTENT, "mid/base-flat.vmdk": None}


def test_a_chain_that_loops_ends(tmp_path):
    write(tmp_path / "a.vmdk", descriptor(["a-flat.vmdk"], parent="b.vmdk"))
    write(tmp_path / "b.vmdk", descriptor(["b-flat.vmdk"], parent="a.vmdk"))
    files = local_disk(str(tmp_path / "a.vmdk"))
    assert files.role_of(str(tmp_path / "b-flat.vmdk")) == PARENT_EXTENT
    assert files.role_of(str(tmp_path / "a.vmdk")) == SERVED


def test_embedded_descriptor_of_a_sparse_file(tmp_path):
    write(tmp_path / "parent.vmdk", descriptor(["parent-flat.vmdk"]))
    disk = sparse(tmp_path / "child.vmdk",
                  descriptor(['child.vmdk'], parent="parent.vmdk"))
    files = local_disk(str(disk))
    assert roles(files, tmp_path, ["child.vmdk", "parent.vmdk",
                                   "parent-flat.vmdk"]) == {
        "child.vmdk": SERVED, "parent.vmdk": PARENT,
        "parent-flat.vmdk": PARENT_EXTENT}


@pytest.mark.parametrize("content", [
    b"", b"\0" * 100000, b"KDMV" + b"\xff" * 60, b"COWD" + bytes(2000),
    bytes(range(256)) * 300, b'RW 1 FLAT "\0" 0\nparentFileNameHint="\0"\n',
    b'RW 1 FLAT "' + b"x" * 5000 + b'" 0\n'])
def test_garbage_gives_the_file_itself(tmp_path, content):
    disk = tmp_path / "disk.vmdk"
    disk.write_bytes(content)
    files = local_disk(str(disk))
    assert files.role_of(str(disk)) == SERVED
    assert files.role_of(str(tmp_path / "x")) is None


def test_a_fifo_is_not_waited_for(tmp_path):
    fifo = tmp_path / "disk.vmdk"
    os.mkfifo(fifo)
    assert local_disk(str(fifo)).role_of(str(fifo)) == SERVED


def test_reached_through_a_symbolic_link_to_the_directory(tmp_path):
    real = tmp_path / "real"
    write(real / "disk.vmdk", descriptor(["disk-flat.vmdk"]))
    (tmp_path / "alias").symlink_to(real)
    files = local_disk(str(tmp_path / "alias" / "disk.vmdk"))
    assert files.role_of(str(real / "disk-flat.vmdk")) == EXTENT
    assert files.role_of(str(real / "disk.vmdk")) == SERVED
    assert files.role_of(str(tmp_path / "alias" / "disk-flat.vmdk")) == EXTENT


def test_another_name_of_the_same_file(tmp_path):
    disk = write(tmp_path / "disk.vmdk", descriptor(["disk-flat.vmdk"]))
    (tmp_path / "disk-flat.vmdk").write_bytes(bytes(512))
    os.link(tmp_path / "disk-flat.vmdk", tmp_path / "other-name")
    files = local_disk(str(disk))
    other = tmp_path / "other-name"
    assert files.role_of(str(other)) is None           # the name alone
    assert files.role_of(str(other), os.lstat(other)) == EXTENT


@pytest.mark.parametrize("create_type, made, not_made", [
    (1, [], ["new-flat.vmdk", "new-s001.vmdk"]),
    (2, ["new-flat.vmdk"], ["new-f001.vmdk", "new-delta.vmdk"]),
    (3, ["new-s001.vmdk", "new-s123.vmdk"], ["new-s.vmdk", "new-f001.vmdk"]),
    (4, ["new-f001.vmdk", "new-f9999.vmdk"], ["new-s001.vmdk"]),
    (5, ["new-flat.vmdk"], ["new-delta.vmdk"]),
    (6, [], ["new-flat.vmdk"]),
    (7, ["new-flat.vmdk"], ["new-flat.vmdk.bak"]),
    (8, ["new-delta.vmdk"], ["new-flat.vmdk", "other-delta.vmdk"]),
])
def test_files_create_will_make(tmp_path, create_type, made, not_made):
    files = local_disk(str(tmp_path / "new.vmdk"), create_type)
    assert files.role_of(str(tmp_path / "new.vmdk")) == SERVED
    for name in made:
        assert files.role_of(str(tmp_path / name)) == CREATED, name
    for name in not_made:
        assert files.role_of(str(tmp_path / name)) is None, name


def test_created_names_are_literal(tmp_path):
    # The disk's name is not a pattern: "d.x" must not admit "dax".
    files = local_disk(str(tmp_path / "d.x.vmdk"), 2)
    assert files.role_of(str(tmp_path / "d.x-flat.vmdk")) == CREATED
    assert files.role_of(str(tmp_path / "dax-flat.vmdk")) is None


def test_parse_reads_extent_kinds_and_the_last_parent():
    text = ('RW 8 SPARSE "a.vmdk"\nRDONLY 8 FLAT "b.vmdk" 0\n'
            'NOACCESS 8 ZERO "c.vmdk"\nparentFileNameHint="p1.vmdk"\n'
            'parentFileNameHint = p2.vmdk\nparentFileNameHint=""\n')
    assert vmdkfiles._parse(text) == (["a.vmdk", "b.vmdk", "c.vmdk"],
                                      "p2.vmdk")
