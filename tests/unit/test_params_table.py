"""The table of parameters (vddkpy.params.PARAMETERS) and the manual agree:
every key users write has an entry under PARAMETERS in
doc/nbdkit-vddk-plugin.md, every key the manual documents there is in the
table, and the table drives the defaults, the usage text and the
``--dump-plugin`` announcements."""

import re

from bed import ROOT
from vddkpy import params

MANUAL = ROOT / "doc" / "nbdkit-vddk-plugin.md"
PUBLIC = [p for p in params.PARAMETERS if p.help is not None]


def manual_entries():
    """{first key of an entry: every key its term names}, for the
    definition-list entries of the PARAMETERS section."""
    text = MANUAL.read_text()
    section = text.split("\n# PARAMETERS\n", 1)[1].split("\n# ", 1)[0]
    entries = {}
    term = []
    for line in section.splitlines():
        if line.startswith(":   ") and term:
            keys = re.findall(r"\*\*([a-z][a-z0-9_-]*)=", " ".join(term))
            if keys:
                entries[keys[0]] = set(keys)
            term = []
        elif line.startswith("**"):
            term.append(line)
        else:
            term = []
    return entries


def test_manual_documents_every_key_under_its_anchor():
    entries = manual_entries()
    for parameter in PUBLIC:
        assert parameter.anchor in entries, parameter.key
        assert parameter.key in entries[parameter.anchor], parameter.key


def test_every_key_the_manual_documents_is_in_the_table():
    documented = set().union(*manual_entries().values())
    assert documented == {p.key for p in PUBLIC}


def test_keys_are_unique_and_internal_keys_undocumented():
    keys = [p.key for p in params.PARAMETERS]
    assert len(keys) == len(set(keys))
    internal = [p for p in params.PARAMETERS if p.help is None]
    assert [p.key for p in internal] == ["reexeced_", "cookie_", "cbt_agent_"]
    assert all(p.anchor is None and p.value is None for p in internal)


def test_defaults_come_from_the_table():
    fresh = params.Params()
    for parameter in params.PARAMETERS:
        assert getattr(fresh, parameter.attribute) == parameter.default
    assert fresh.file_at_start is None


def test_usage_has_one_entry_per_public_key_in_table_order():
    heads = [line.split()[0] for line in params.usage().splitlines()
             if line and not line.startswith(" ")]
    assert heads == ["%s=%s" % (p.key, p.value) for p in PUBLIC]
    assert all(len(line) <= 79 for line in params.usage().splitlines())


def test_announcements_split_vddkpy_lines_from_upstream_lines():
    assert params.announcements("vddkpy_") == ["vddkpy_changed_since=1"]
    assert params.announcements("vddk_") == ["vddk_has_nfchostport=1"]


def test_attributes_spell_dashes_as_underscores():
    table = {p.key: p.attribute for p in params.PARAMETERS}
    assert table["create-adapter-type"] == "create_adapter_type"
    assert table["stats-file"] == "stats_file"
    assert table["file"] == "file"
