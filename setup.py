"""pip's build step for what pyproject.toml cannot say: the package's cffi
module (vddkpy/vddk/_vddk_cffi.py) is generated from vddkpy/vddk/abi.py into the
build, as every other build path does (see vddkpy/vddk/ffibuild.py)."""

import os
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vddkpy.vddk import ffibuild  # noqa: E402


class build_py_with_ffi(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            ffibuild.generate()             # the source tree is what runs
        else:
            ffibuild.generate(os.path.join(self.build_lib, "vddkpy", "vddk"))


setup(cmdclass={"build_py": build_py_with_ffi})
