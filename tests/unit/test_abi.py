"""The binding's declarations are consistent: every VDDK function of the
table has a C type the declarations define, in upstream's order, with the
data-path and optional functions marked as upstream marks them; the struct
layouts are VMware's (and a wrong declaration is caught); the constant
tables agree with the modules that use them; the generated cffi module is
reproducible."""

import pytest

from vddkpy import vmdkfiles
from vddkpy.vddk import abi, ffibuild


@pytest.fixture(scope="module")
def parsed():
    import cffi
    ffi = cffi.FFI()
    ffi.cdef(abi.DECLARATIONS)
    return ffi


@pytest.mark.parametrize("function", abi.FUNCTIONS, ids=lambda f: f.name)
def test_each_function_has_a_declared_c_type(parsed, function):
    ctype = parsed.typeof(function.ctype)
    assert ctype.kind == "function" and not ctype.ellipsis
    assert function.symbol == "VixDiskLib_" + function.name


def test_function_names_are_unique():
    names = [f.name for f in abi.FUNCTIONS]
    assert len(names) == len(set(names))


def test_upstreams_order_starts_with_init_and_exit():
    assert [f.name for f in abi.FUNCTIONS[:2]] == ["InitEx", "Exit"]


def test_data_path_functions():
    assert {f.name for f in abi.FUNCTIONS if f.datapath} == {
        "Read", "Write", "ReadAsync", "WriteAsync"}


def test_optional_functions():
    # VDDK 6.7 lacks none of the others; these came later or may be absent.
    assert {f.name for f in abi.FUNCTIONS if not f.required} == {
        "QueryAllocatedBlocks", "FreeBlockList", "AllocateConnectParams"}


def test_async_functions_take_the_completion_callback(parsed):
    callback = parsed.typeof("VixDiskLibCompletionCB")
    for function in abi.FUNCTIONS:
        if function.name.endswith("Async"):
            assert callback in parsed.typeof(function.ctype).args


def test_layouts_are_vmwares(parsed):
    abi.check_layouts(parsed)


@pytest.mark.parametrize("declared, mistaken", [
    ("    long privateUse;\n", ""),
    ("    uint32_t port;\n", "    uint64_t port;\n"),
    ("    uint32_t logicalSectorSize;", "    uint64_t logicalSectorSize;"),
    ("    VixDiskLibGeometry physGeo;\n", "")])
def test_a_layout_mismatch_is_caught(declared, mistaken):
    import cffi
    assert declared in abi.DECLARATIONS
    wrong = cffi.FFI()
    wrong.cdef(abi.DECLARATIONS.replace(declared, mistaken))
    with pytest.raises(AssertionError):
        abi.check_layouts(wrong)


def test_disk_types_are_the_ones_whose_files_are_known():
    assert sorted(abi.DISK_TYPES.values()) == list(range(1, 9))
    assert set(vmdkfiles._CREATED_EXTENTS) == set(abi.DISK_TYPES.values())


def test_compression_flags_are_open_flags_of_their_own():
    others = (abi.FLAG_OPEN_UNBUFFERED | abi.FLAG_OPEN_SINGLE_LINK
              | abi.FLAG_OPEN_READ_ONLY)
    flags = [v for k, v in abi.COMPRESSION_FLAGS.items() if k != "none"]
    assert abi.COMPRESSION_FLAGS["none"] == 0
    assert len(set(flags)) == 3
    for flag in flags:
        assert flag & (flag - 1) == 0 and not flag & others


def test_generation_is_reproducible():
    first = ffibuild.module_text()
    assert ffibuild.module_text() == first
    assert first.startswith("# auto-generated file\nimport _cffi_backend\n")
    assert first.endswith("\nDECLARATIONS = %r\n" % abi.DECLARATIONS)


def test_missing_symbols_are_told_apart():
    # Outside nbdkit: glibc's symbols are there, the server's are not.
    from vddkpy.nbdkit import native
    assert native.has_symbol("fnmatch")
    assert not native.has_symbol("nbdkit_error")
