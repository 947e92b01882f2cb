"""The house stays readable: CONTRIBUTING.md's layout map names every
module of vddkpy/ and every directory of tests/, and names nothing that
does not exist; README.md stays within 150 lines; vddkpy/ keeps at most
15 top-level modules (new code goes into subpackages)."""

import os
import re

import pytest

from bed import ROOT

CONTRIBUTING = ROOT / "CONTRIBUTING.md"
# A map entry: "- `path` — what it is", at the start of a line.
ENTRY = re.compile(r"^- `([^`]+)` — \S", re.M)
GENERATED = {"vddkpy/vddk/_vddk_cffi.py"}        # made by every build
NOT_SOURCE = {"__pycache__", "build"}             # build outputs


def mapped():
    return ENTRY.findall(CONTRIBUTING.read_text())


def modules():
    """Every module of vddkpy/ as a path from the checkout, and every
    subpackage as "vddkpy/NAME/"; an empty __init__.py is the package."""
    found = set()
    for directory, subdirectories, files in os.walk(ROOT / "vddkpy"):
        subdirectories[:] = [d for d in subdirectories if d not in NOT_SOURCE]
        relative = os.path.relpath(directory, ROOT)
        if relative != "vddkpy":
            found.add(relative + "/")
        for name in files:
            path = os.path.join(relative, name)
            if not name.endswith(".py") or path in GENERATED:
                continue
            if name == "__init__.py" and \
                    os.path.getsize(os.path.join(directory, name)) == 0:
                continue
            found.add(path)
    return found


def suite_directories():
    """Every directory of tests/ that holds sources."""
    found = set()
    for directory, subdirectories, _ in os.walk(ROOT / "tests"):
        subdirectories[:] = [d for d in subdirectories
                             if d not in NOT_SOURCE and not d.startswith(".")]
        relative = os.path.relpath(directory, ROOT)
        if relative != "tests":
            found.add(relative + "/")
    return found


def test_the_map_is_parsed():
    names = mapped()
    assert "vddkpy/callbacks.py" in names and "tests/unit/" in names
    assert len(names) == len(set(names)), "a name is mapped twice"


@pytest.mark.parametrize("kind, find", [
    ("module", modules), ("tests directory", suite_directories)])
def test_everything_is_mapped(kind, find):
    missing = sorted(find() - set(mapped()))
    assert not missing, "CONTRIBUTING.md's layout map lacks the %s(s) %s" % (
        kind, ", ".join(missing))


def test_everything_mapped_exists():
    absent = [name for name in mapped() if not (ROOT / name).exists()]
    assert not absent, "CONTRIBUTING.md maps what does not exist: %s" % (
        ", ".join(absent))


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= 150, "README.md has %d lines; the rest belongs in doc/" \
        % lines


def test_few_top_level_modules():
    top = sorted(name for name in os.listdir(ROOT / "vddkpy")
                 if name.endswith(".py") and name != "__init__.py")
    assert len(top) <= 15, "vddkpy/ has %d top-level modules: %s" % (
        len(top), " ".join(top))
