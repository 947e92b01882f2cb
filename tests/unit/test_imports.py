"""The package's layers, as CONTRIBUTING.md states them, read from the
source's import statements: no module imports itself back through others
(no cycles); the foundations (vddk/, nbdkit/, vsphere/) use nothing of the
plugin core but ``printable`` and ``errors``; nothing the plugin core or
the foundations import is a command (preflight/, sync/, install/,
cbt/command.py, __main__.py)."""

import ast

import pytest

from bed import ROOT

PACKAGE = ROOT / "vddkpy"
FOUNDATIONS = ("vddkpy.vddk", "vddkpy.nbdkit", "vddkpy.vsphere")
SHARED_CORE = {"vddkpy.printable", "vddkpy.errors"}
COMMANDS = ("vddkpy.preflight", "vddkpy.sync", "vddkpy.install",
            "vddkpy.cbt.command", "vddkpy.__main__", "vddkpy.thumbprint")


def module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(path, name):
    """Every vddkpy module or name ``path`` (module ``name``) imports,
    absolute, wherever the import statement stands."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split("."))
                                           - node.level + 1]
                module = ".".join(base + ([node.module] if node.module
                                          else []))
            else:
                module = node.module
            found.add(module)
            found.update("%s.%s" % (module, a.name) for a in node.names)
    return {n for n in found if n.split(".")[0] == "vddkpy"}


@pytest.fixture(scope="module")
def graph():
    """module -> the vddkpy modules it imports."""
    sources = {module_name(p): p for p in PACKAGE.rglob("*.py")
               if "__pycache__" not in p.parts and p.name != "_vddk_cffi.py"}
    return {name: {n for n in imported_names(path, name)
                   if n in sources and n != name}
            for name, path in sources.items()}


def in_any(name, prefixes):
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_graph_is_read(graph):
    assert "vddkpy.params" in graph["vddkpy.callbacks"]
    assert "vddkpy.vddk.abi" in graph["vddkpy.errors"]


def test_no_cycles(graph):
    # A package's __init__ importing its own modules is not a cycle here:
    # only module-to-module edges count.
    edges = {m: {t for t in ts if not m.startswith(t + ".")}
             for m, ts in graph.items()}
    done, path = set(), []

    def visit(module):
        if module in path:
            return path[path.index(module):] + [module]
        if module in done:
            return None
        path.append(module)
        for target in sorted(edges[module]):
            cycle = visit(target)
            if cycle:
                return cycle
        path.pop()
        done.add(module)
        return None

    for module in sorted(edges):
        cycle = visit(module)
        assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_foundations_use_only_printable_and_errors_of_the_core(graph):
    wrong = sorted("%s -> %s" % (m, t) for m, ts in graph.items()
                   if in_any(m, FOUNDATIONS) for t in ts
                   if not in_any(t, FOUNDATIONS) and t not in SHARED_CORE
                   and t != "vddkpy")
    assert not wrong


def test_nothing_below_the_commands_imports_one(graph):
    wrong = sorted("%s -> %s" % (m, t) for m, ts in graph.items()
                   if not in_any(m, COMMANDS) for t in ts
                   if in_any(t, COMMANDS))
    assert not wrong
