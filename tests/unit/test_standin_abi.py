"""The VDDK stand-in's C header (tests/bed/standin/vixabi.h) and the
plugin's Python declarations (vddkpy/vddk/abi.py) describe the same ABI:
every struct layout in ``abi.LAYOUTS`` has the same size and offsets in the
header, and every VixError code vddkpy names has the header's value.  The
two are written twice by nature (C for the stand-in, cffi for the plugin);
this keeps them from drifting apart.  A small C program compiled with the
header prints what the compiler makes of it."""

import shutil
import subprocess

import pytest

from bed.core import STANDIN
from vddkpy.vddk import abi

HEADER = STANDIN / "vixabi.h"
CODES = sorted(name for name in vars(abi)
               if name.startswith("VIX_") and isinstance(getattr(abi, name),
                                                         int))


def probe_source():
    lines = ['#include "vixabi.h"', "#include <stdio.h>", "int main(void) {"]
    for struct, (_, fields) in abi.LAYOUTS.items():
        lines.append('printf("%s %%zu\\n", sizeof(%s));' % (struct, struct))
        for field in fields:
            lines.append('printf("%s.%s %%zu\\n", offsetof(%s, %s));'
                         % (struct, field, struct, field))
    for name in CODES:
        lines.append('printf("%s %%llu\\n", (unsigned long long)%s);'
                     % (name, name))
    lines += ["return 0;", "}"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def header_says(tmp_path_factory):
    """What the compiled header says: name -> number."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed (scripts/setup.sh installs it)")
    work = tmp_path_factory.mktemp("abi")
    (work / "probe.c").write_text(probe_source())
    subprocess.run(["gcc", "-I", str(HEADER.parent), "-o", str(work / "probe"),
                    str(work / "probe.c")], check=True)
    out = subprocess.run([str(work / "probe")], check=True,
                         stdout=subprocess.PIPE, universal_newlines=True)
    return {name: int(value) for name, value in
            (line.split() for line in out.stdout.splitlines())}


@pytest.mark.parametrize("struct", sorted(abi.LAYOUTS))
def test_struct_layouts_agree(header_says, struct):
    size, fields = abi.LAYOUTS[struct]
    assert header_says[struct] == size
    assert {field: header_says["%s.%s" % (struct, field)]
            for field in fields} == fields


@pytest.mark.parametrize("name", CODES)
def test_error_codes_agree(header_says, name):
    assert header_says[name] == getattr(abi, name)
