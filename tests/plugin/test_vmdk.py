"""Real VMDK files through the plugin and the stand-in, judged by qemu's
own VMDK driver: what qemu-img reads, maps, checks and compares must agree
with what the plugin serves and writes."""

import json
import os
import random
import signal
import struct
import subprocess

import pytest

from bed import TIMEOUT, assert_no_traceback, run_nbdkit

SIZE = 4 * 1024 * 1024
# Data runs at grain-aligned and unaligned offsets, holes in between.
DATA_RUNS = [(0, 70000), (1024 * 1024 + 4096, 65536), (3 * 1024 * 1024, 5000)]

CREATE_TYPES = {                 # plugin create-type -> VMDK createType
    "monolithic-sparse": "monolithicSparse",
    "monolithic-flat": "monolithicFlat",
    "split-sparse": "twoGbMaxExtentSparse",
    "split-flat": "twoGbMaxExtentFlat",
    "vmfs-flat": "vmfs",
    "stream-optimized": "streamOptimized",
    "vmfs-thin": "vmfsThin",
    "vmfs-sparse": "vmfsSparse",
}
SPARSE_TYPES = {"monolithic-sparse", "split-sparse", "stream-optimized",
                "vmfs-sparse"}
# qemu's VMDK driver refuses createType "vmfsThin" ("Unsupported image
# type"), so that one is judged by reading it back through the plugin.
QEMU_CANNOT_OPEN = {"vmfs-thin"}


def holey_source(path, seed=1):
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(SIZE)
        for offset, length in DATA_RUNS:
            f.seek(offset)
            f.write(rng.randbytes(length))
    return path


def qemu_img(*args):
    return subprocess.run(["qemu-img"] + [str(a) for a in args], check=True,
                          capture_output=True, text=True).stdout


def qemu_info(image):
    return json.loads(qemu_img("info", "--output=json", image))


def descriptor(image):
    """The descriptor text: embedded in a sparse file, or the file itself."""
    data = image.read_bytes()
    if data[:4] == b"KDMV":
        offset, size = struct.unpack_from("<QQ", data, 28)
        data = data[offset * 512:(offset + size) * 512]
    return data.split(b"\0")[0].decode()


def serve(tmp_path, libdir, args, run, **kw):
    result = run_nbdkit(tmp_path, libdir, args, run=run, cwd=tmp_path, **kw)
    assert_no_traceback(result.stderr)
    assert result.returncode == 0, result.stderr
    return result


def read_through_plugin(tmp_path, libdir, image, *args, readonly=False):
    out = tmp_path / "out.raw"
    if out.exists():
        out.unlink()
    serve(tmp_path, libdir, ["file=%s" % image] + list(args),
          run='nbdcopy "$uri" %s' % out, verbose=False,
          options=["-r"] if readonly else [])
    return out.read_bytes()


def merge(ranges):
    merged = []
    for start, end in sorted(ranges):
        if merged and merged[-1][1] == start:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    return merged


def qemu_allocated(image):
    """Byte ranges qemu maps as data (in this image or its backing)."""
    entries = json.loads(qemu_img("map", "--output=json", image))
    return merge((e["start"], e["start"] + e["length"])
                 for e in entries if e["data"])


def nbd_map(tmp_path, libdir, image, *args):
    """nbdinfo --map of the plugin serving IMAGE: [(start, end, type)]."""
    result = serve(tmp_path, libdir, ["file=%s" % image] + list(args),
                   run='nbdinfo --map --json "$uri"', verbose=False)
    return [(e["offset"], e["offset"] + e["length"], e["type"])
            for e in json.loads(result.stdout)]


def plugin_allocated(extents):
    return merge((start, end) for start, end, kind in extents
                 if not kind & 1)


def grains_of(runs, grain):
    return merge((offset // grain * grain, -(-(offset + length) // grain) * grain)
                 for offset, length in runs)


# ---- Create: every create-type writes a real VMDK ----

@pytest.mark.parametrize("create_type", sorted(CREATE_TYPES))
def test_create_type(tmp_path, libdir, create_type):
    source = holey_source(tmp_path / "src.raw")
    image = tmp_path / "new.vmdk"
    serve(tmp_path, libdir,
          ["file=%s" % image, "create=true", "create-type=%s" % create_type,
           "create-size=%d" % SIZE, "create-adapter-type=scsi-lsilogic",
           "create-hwversion=esx65"],
          run='nbdcopy %s "$uri"' % source, verbose=False)
    text = descriptor(image)
    assert 'createType="%s"' % CREATE_TYPES[create_type] in text
    assert 'ddb.adapterType = "lsilogic"' in text
    assert 'ddb.virtualHWVersion = "13"' in text
    if create_type in QEMU_CANNOT_OPEN:
        assert "RW %d VMFS \"new-flat.vmdk\"" % (SIZE // 512) in text
        assert read_through_plugin(tmp_path, libdir, image) == \
            source.read_bytes()
        return
    info = qemu_info(image)
    assert info["format"] == "vmdk"
    assert info["virtual-size"] == SIZE
    assert info["format-specific"]["data"]["create-type"] == \
        CREATE_TYPES[create_type]
    qemu_img("compare", "-f", "raw", "-F", "vmdk", source, image)
    if create_type in SPARSE_TYPES:
        qemu_img("check", image)
        # Only grains holding data were allocated (VMFS sparse grains are
        # one sector, hosted sparse ones 64 KiB).
        grain = 512 if create_type == "vmfs-sparse" else 65536
        assert qemu_allocated(image) == grains_of(DATA_RUNS, grain)


def test_create_ide_geometry_and_info(tmp_path, libdir):
    image = tmp_path / "ide.vmdk"
    result = serve(tmp_path, libdir,
                   ["file=%s" % image, "create=true", "create-size=%d" % SIZE,
                    "create-adapter-type=ide", "create-hwversion=workstation6"],
                   run='nbdinfo "$uri"', options=["-D", "vddk.diskinfo=1"])
    text = descriptor(image)
    assert 'ddb.adapterType = "ide"' in text
    assert 'ddb.geometry.heads = "16"' in text
    assert 'ddb.virtualHWVersion = "6"' in text
    uuid = [line for line in text.splitlines()
            if line.startswith("ddb.uuid")][0].split('"')[1]
    # GetInfo reports what the descriptor says.
    assert "disk info: adapter type: 1" in result.stderr
    assert "disk info: physGeo: C:8 H:16 S:63" in result.stderr
    assert "disk info: uuid: %s" % uuid in result.stderr
    assert "disk info: num links: 1" in result.stderr


# ---- VMDKs made by qemu-img ----

QEMU_SUBFORMATS = ["monolithicSparse", "monolithicFlat",
                   "twoGbMaxExtentSparse", "twoGbMaxExtentFlat",
                   "streamOptimized"]


@pytest.mark.parametrize("compat6", [False, True], ids=["", "compat6"])
@pytest.mark.parametrize("subformat", QEMU_SUBFORMATS)
def test_qemu_made_image(tmp_path, libdir, subformat, compat6):
    source = holey_source(tmp_path / "src.raw", seed=2)
    image = tmp_path / "img.vmdk"
    options = "subformat=%s%s" % (subformat, ",compat6" if compat6 else "")
    qemu_img("convert", "-f", "raw", "-O", "vmdk", "-o", options, source,
             image)
    expected = tmp_path / "expected.raw"
    qemu_img("convert", "-f", "vmdk", "-O", "raw", image, expected)
    assert read_through_plugin(tmp_path, libdir, image, readonly=True) == \
        expected.read_bytes()
    if "Flat" not in subformat:
        assert plugin_allocated(nbd_map(tmp_path, libdir, image)) == \
            qemu_allocated(image)


# ---- chains ----

def make_chain(tmp_path):
    """base.vmdk (data everywhere in the first MiB, and at 3 MiB) and a
    child holding one grain of its own at 64 KiB and one at 2 MiB."""
    base_raw = tmp_path / "base.raw"
    with open(base_raw, "wb") as f:
        f.truncate(SIZE)
        f.write(random.Random(3).randbytes(1024 * 1024))
        f.seek(3 * 1024 * 1024)
        f.write(random.Random(4).randbytes(65536))
    qemu_img("convert", "-f", "raw", "-O", "vmdk", base_raw,
             tmp_path / "base.vmdk")
    child = tmp_path / "child.vmdk"
    qemu_img("create", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", child)
    subprocess.run(["qemu-io", "-f", "vmdk", "-c", "write -P 0x55 64k 64k",
                    "-c", "write -P 0x66 2M 64k", str(child)], check=True,
                   capture_output=True)
    return child


def test_chain_read_merged(tmp_path, libdir):
    child = make_chain(tmp_path)
    merged = tmp_path / "merged.raw"
    qemu_img("convert", "-f", "vmdk", "-O", "raw", child, merged)
    assert read_through_plugin(tmp_path, libdir, child, readonly=True) == \
        merged.read_bytes()
    extents = nbd_map(tmp_path, libdir, child)
    assert plugin_allocated(extents) == qemu_allocated(child)
    assert all(kind == 3 for _, _, kind in extents if kind & 1)


def test_chain_single_link(tmp_path, libdir):
    child = make_chain(tmp_path)
    extents = nbd_map(tmp_path, libdir, child, "single-link=true")
    # Only the child's own grains are data; the rest are holes that are
    # not known to read as zeros (the parent may hold data there).
    assert plugin_allocated(extents) == [[65536, 131072],
                                         [2097152, 2162688]]
    assert {kind for _, _, kind in extents} == {0, 1}


def test_chain_info(tmp_path, libdir):
    child = make_chain(tmp_path)
    result = serve(tmp_path, libdir, ["file=%s" % child],
                   run='nbdinfo "$uri"', options=["-D", "vddk.diskinfo=1"])
    assert "disk info: parent filename hint: base.vmdk" in result.stderr
    assert "disk info: num links: 2" in result.stderr


# ---- writes ----

def test_write_monolithic_sparse(tmp_path, libdir):
    image = tmp_path / "disk.vmdk"
    qemu_img("create", "-f", "vmdk", image, SIZE)
    source = holey_source(tmp_path / "src.raw", seed=5)
    serve(tmp_path, libdir, ["file=%s" % image],
          run='nbdcopy %s "$uri"' % source, verbose=False)
    qemu_img("check", image)
    qemu_img("compare", "-f", "raw", "-F", "vmdk", source, image)


def qemu_read(tmp_path, image):
    out = tmp_path / "qemu-view.raw"
    qemu_img("convert", "-f", "vmdk", "-O", "raw", image, out)
    return out.read_bytes()


def test_write_into_child_copies_parent(tmp_path, libdir):
    """A partial write to a child grain it does not hold yet keeps the
    parent's bytes around it (copy on write through the chain), and the
    parent stays untouched."""
    child = make_chain(tmp_path)
    base = tmp_path / "base.vmdk"
    expected = bytearray(qemu_read(tmp_path, child))
    expected[4096:4608] = b"Z" * 512
    base_before = qemu_read(tmp_path, base)
    script = ("/usr/bin/python3 -c \"import nbd; h = nbd.NBD(); "
              "h.connect_uri('$uri'); h.pwrite(b'Z' * 512, 4096); "
              "h.flush()\"")
    serve(tmp_path, libdir, ["file=%s" % child], run=script, verbose=False)
    qemu_img("check", child)
    assert qemu_read(tmp_path, child) == expected
    assert qemu_read(tmp_path, base) == base_before
    assert plugin_allocated(nbd_map(tmp_path, libdir, child,
                                    "single-link=true"))[0] == [0, 131072]


def test_flush_then_sigkill(tmp_path, nbdkit):
    image = tmp_path / "disk.vmdk"
    qemu_img("create", "-f", "vmdk", image, SIZE)
    server = nbdkit("file=%s" % image)
    h = server.connect()
    payload = random.Random(6).randbytes(3 * 65536 + 512)
    h.pwrite(payload, 65536 - 512)
    h.pwrite(b"\x77" * 4096, 3 * 1024 * 1024)
    h.flush()
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(TIMEOUT)
    qemu_img("check", image)
    out = tmp_path / "after.raw"
    qemu_img("convert", "-f", "vmdk", "-O", "raw", image, out)
    data = out.read_bytes()
    assert data[65536 - 512:65536 - 512 + len(payload)] == payload
    assert data[3 * 1024 * 1024:3 * 1024 * 1024 + 4096] == b"\x77" * 4096


def test_stream_optimized_written_by_plugin_shrinks(tmp_path, libdir):
    """stream-optimized stores compressed grains: zeros cost nothing and
    compressible data is stored small."""
    image = tmp_path / "s.vmdk"
    source = tmp_path / "src.raw"
    with open(source, "wb") as f:
        f.truncate(SIZE)
        f.write(b"abcd" * 65536)
    serve(tmp_path, libdir,
          ["file=%s" % image, "create=true", "create-type=stream-optimized",
           "create-size=%d" % SIZE],
          run='nbdcopy %s "$uri"' % source, verbose=False)
    qemu_img("compare", "-f", "raw", "-F", "vmdk", source, image)
    assert image.stat().st_size < 128 * 1024


def test_every_handle_closed_before_exit(tmp_path, libdir):
    """A stream-optimized disk is complete only once closed: the plugin
    closes every handle before VixDiskLib_Exit, even when nbdkit unloads
    before a finished connection's close callback ran."""
    image = tmp_path / "s.vmdk"
    source = holey_source(tmp_path / "src.raw")
    serve(tmp_path, libdir,
          ["file=%s" % image, "create=true", "create-type=stream-optimized",
           "create-size=%d" % SIZE],
          run='nbdcopy %s "$uri"' % source, verbose=False)
    names = [json.loads(line)["fn"] for line in
             (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert names.count("Open") == names.count("Close") >= 1
    assert names.index("Exit") > max(i for i, n in enumerate(names)
                                     if n == "Close")
    qemu_img("compare", "-f", "raw", "-F", "vmdk", source, image)


def test_stream_optimized_rewrites_across_sessions(tmp_path, libdir):
    """Grains may come in any order, be rewritten, and a later session
    appends after the grains of the first (over its old footer)."""
    image = tmp_path / "s.vmdk"
    first = ("h.pwrite(b'A' * 100352, 0); h.flush(); "
             "h.pwrite(b'B' * 70144, 2097152); h.pwrite(b'C' * 512, 512)")
    second = "h.pwrite(b'D' * 4096, 3145728); h.pwrite(b'E' * 4096, 0)"
    for i, writes in enumerate((first, second)):
        args = ["file=%s" % image]
        if i == 0:
            args += ["create=true", "create-type=stream-optimized",
                     "create-size=%d" % SIZE]
        serve(tmp_path, libdir, args, verbose=False,
              run="/usr/bin/python3 -c \"import nbd; h = nbd.NBD(); "
                  "h.connect_uri('$uri'); %s\"" % writes)
    expected = bytearray(SIZE)
    for offset, data in ((0, b"A" * 100352), (2097152, b"B" * 70144),
                         (512, b"C" * 512), (3145728, b"D" * 4096),
                         (0, b"E" * 4096)):
        expected[offset:offset + len(data)] = data
    qemu_img("check", image)
    assert qemu_read(tmp_path, image) == expected
    assert read_through_plugin(tmp_path, libdir, image, readonly=True) == \
        expected


# ---- not a VMDK ----

def test_corrupt_vmdk_fails_like_vddk(tmp_path, libdir):
    bogus = tmp_path / "bogus.vmdk"
    bogus.write_bytes(random.Random(7).randbytes(65536))
    result = run_nbdkit(tmp_path, libdir, ["file=%s" % bogus],
                        run='nbdinfo "$uri"')
    assert_no_traceback(result.stderr)
    assert result.returncode != 0
    assert "VixDiskLib_Open: %s: One of the parameters supplied is invalid" \
        % bogus in result.stderr
    opens = [json.loads(line) for line in
             (tmp_path / "calls.jsonl").read_text().splitlines()
             if '"fn":"Open"' in line.replace(" ", "")]
    assert opens and all(o["result"] == 16000 for o in opens)


def test_missing_extent_is_file_not_found(tmp_path, libdir):
    image = tmp_path / "flat.vmdk"
    qemu_img("create", "-f", "vmdk", "-o", "subformat=monolithicFlat", image,
             SIZE)
    (tmp_path / "flat-flat.vmdk").unlink()
    result = run_nbdkit(tmp_path, libdir, ["file=%s" % image],
                        run='nbdinfo "$uri"')
    assert "VixDiskLib_Open: %s: A file was not found" % image \
        in result.stderr
