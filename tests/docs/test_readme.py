"""Every `sh` example in README.md runs, against the VDDK stand-in, in
bed/docs.py's sandbox (placeholders mapped to the stand-in and its
emulated servers)."""

import pytest

from bed import ROOT
from bed.docs import run_example, sandbox  # noqa: F401 (the fixture)
from bed.shexamples import sh_examples

README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("command", sh_examples(README))
def test_readme_example(sandbox, command):  # noqa: F811
    run_example(sandbox, command)
