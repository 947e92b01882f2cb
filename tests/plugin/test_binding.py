"""The generated cffi module is what vddkpy/vddk/abi.py declares, and
vddkpy works without it.

``vddkpy/vddk/_vddk_cffi.py`` is made by every build (scripts/setup.sh for the
checkout) from abi.DECLARATIONS.  Missing or made from other declarations,
the plugin parses the declarations itself and says so in one debug line.
"""

import shutil
import subprocess

import pytest

from bed import (ROOT, TIMEOUT, assert_no_traceback, assert_server_survived,
                 fresh_socket, install_standin, random_file, standin_env)
from bed.embedded import CFFI_LINE
from vddkpy.vddk import abi, binding, ffibuild

GENERATED = ROOT / "vddkpy" / "vddk" / ffibuild.MODULE
GENERATED = GENERATED.with_name(GENERATED.name + ".py")
FALLBACK = ("(python3 -m vddkpy.vddk.ffibuild makes it): parsing the C "
            "declarations at start-up instead")


def test_checkout_module_is_current(tmp_path):
    assert GENERATED.exists(), "no %s: run scripts/setup.sh" % GENERATED
    ffibuild.generate(str(tmp_path))
    again = (tmp_path / GENERATED.name).read_bytes()
    assert again == GENERATED.read_bytes(), \
        "%s is stale: run scripts/setup.sh" % GENERATED


def test_generator_refuses_a_missing_directory(tmp_path):
    result = subprocess.run(
        ["/usr/bin/python3", "-m", "vddkpy.vddk.ffibuild", str(tmp_path / "no")],
        cwd=ROOT, capture_output=True, text=True)
    assert (result.returncode, result.stdout, result.stderr) == (
        1, "", "vddkpy.vddk.ffibuild: error: %s: No such file or directory\n"
        % (tmp_path / "no"))


def test_binding_uses_the_generated_module():
    from vddkpy.vddk import _vddk_cffi
    assert binding.ffi is _vddk_cffi.ffi
    assert binding._generated() == (_vddk_cffi.ffi, None)


def _parsed():
    import cffi
    parsed = cffi.FFI()
    parsed.cdef(abi.DECLARATIONS)
    return parsed


def _shape(ctype, depth=3):
    """What a C type is, down to sizes and offsets (the generated module
    spells a typedef'd struct "struct NAME", the parser by its typedef)."""
    if depth == 0 or ctype.kind in ("primitive", "void", "enum"):
        return (ctype.kind, ctype.cname if ctype.kind != "void" else None)
    if ctype.kind == "pointer":
        return ("pointer", _shape(ctype.item, depth - 1))
    if ctype.kind == "array":
        return ("array", ctype.length, _shape(ctype.item, depth - 1))
    if ctype.kind == "function":
        return ("function", _shape(ctype.result, depth - 1),
                [_shape(a, depth - 1) for a in ctype.args], ctype.ellipsis)
    return (ctype.kind, [(name, field.offset, _shape(field.type, depth - 1))
                         for name, field in ctype.fields or ()])


def test_generated_and_parsed_declarations_agree():
    generated, parsed = binding.ffi, _parsed()
    for ffi in (generated, parsed):
        abi.check_layouts(ffi)
    for name in abi.LAYOUTS:
        assert _shape(generated.typeof(name)) == _shape(parsed.typeof(name))
    for function in abi.FUNCTIONS:
        assert _shape(generated.typeof(function.ctype)) == \
            _shape(parsed.typeof(function.ctype)), function.name
    assert sorted(dir(generated.dlopen(None))) == \
        sorted(dir(parsed.dlopen(None)))


# -- without the generated module -------------------------------------------

def checkout_copy(tmp_path, generated=None):
    """plugin/ and vddkpy/ copied; the generated module replaced by the
    text ``generated`` (None: left out)."""
    copy = tmp_path / "checkout"
    (copy / "plugin").mkdir(parents=True)
    shutil.copy(ROOT / "plugin" / "plugin.py", copy / "plugin")
    shutil.copytree(ROOT / "vddkpy", copy / "vddkpy",
                    ignore=shutil.ignore_patterns("__pycache__",
                                                  GENERATED.name))
    if generated is not None:
        (copy / "vddkpy" / "vddk" / GENERATED.name).write_text(generated)
    return copy / "plugin" / "plugin.py"


def serve_copy(tmp_path, plugin, verbose, env=None):
    """nbdcopy a disk out of nbdkit running ``plugin``, without re-exec (the
    library's directory is in LD_LIBRARY_PATH): (result, disk, copy)."""
    libdir = install_standin(tmp_path / "vddk")
    disk = random_file(tmp_path / "disk.raw", 1024 * 1024, seed=18)
    out = tmp_path / "out.raw"
    command = ["nbdkit", "-f", "-U", fresh_socket(tmp_path)] + (
        ["-v"] if verbose else []) + [
        "python", str(plugin), "libdir=%s" % libdir, "file=%s" % disk,
        "--run", 'nbdcopy "$uri" %s' % out]
    extra = {"LD_LIBRARY_PATH": str(libdir)}
    extra.update(env or {})
    result = subprocess.run(command, env=standin_env(tmp_path, extra=extra),
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert_server_survived(result.stderr, result.returncode)
    return result, disk, out


def fallback_lines(stderr):
    return [line.split("debug: ", 1)[1] for line in stderr.splitlines()
            if FALLBACK in line]


@pytest.mark.parametrize("generated, why", [
    (None, "vddkpy/vddk/_vddk_cffi.py is missing"),
    ("import _cffi_backend\n"
     "ffi = _cffi_backend.FFI('vddkpy.vddk._vddk_cffi', _version=0x2fff)\n",
     "vddkpy/vddk/_vddk_cffi.py cannot be loaded: cffi out-of-line Python module "
     "'vddkpy.vddk._vddk_cffi' has unknown version 0x2fff"),
    ("from _cffi_backend import FFI\nffi = FFI()\n"
     "DECLARATIONS = 'void VixDiskLib_Exit(void);'\n",
     "vddkpy/vddk/_vddk_cffi.py was made from other declarations than "
     "vddkpy/vddk/abi.py's")])
def test_serves_with_one_line_without_a_usable_module(tmp_path, generated,
                                                       why):
    plugin = checkout_copy(tmp_path, generated)
    result, disk, out = serve_copy(tmp_path, plugin, verbose=True)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == disk.read_bytes()
    assert fallback_lines(result.stderr) == ["vddkpy: %s %s" % (why, FALLBACK)]
    assert_no_traceback(result.stderr)


def test_fallback_is_silent_without_verbose(tmp_path):
    result, disk, out = serve_copy(tmp_path, checkout_copy(tmp_path),
                                   verbose=False)
    assert (result.returncode, result.stderr) == (0, "")
    assert out.read_bytes() == disk.read_bytes()


def shadow(tmp_path, *modules):
    """PYTHONPATH making ``import MODULE`` fail as when it is not
    installed."""
    directory = tmp_path / "shadow"
    directory.mkdir()
    for module in modules:
        (directory / ("%s.py" % module)).write_text(
            "raise ModuleNotFoundError(\"No module named '%s'\", name='%s')\n"
            % (module, module))
    return {"PYTHONPATH": str(directory)}


def test_generated_module_needs_only_the_cffi_backend(tmp_path):
    result, disk, out = serve_copy(tmp_path, ROOT / "plugin" / "plugin.py",
                                   verbose=False,
                                   env=shadow(tmp_path, "cffi"))
    assert (result.returncode, result.stderr) == (0, "")
    assert out.read_bytes() == disk.read_bytes()


def test_fallback_without_cffi_says_what_to_install(tmp_path):
    result, _, out = serve_copy(tmp_path, checkout_copy(tmp_path),
                                verbose=False, env=shadow(tmp_path, "cffi"))
    assert result.returncode == 1
    assert result.stderr == "nbdkit: error: %s\n" % CFFI_LINE
    assert not out.exists()
