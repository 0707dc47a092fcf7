"""Build glue: `pip install .` configures and builds CMakeLists.txt into pypatch/_core*.so.

All compile logic lives in CMakeLists.txt (the cmake_example shape); this file only passes the
extension directory, the Python interpreter, pybind11's CMake dir and the build type, and honours
CMAKE_ARGS and CMAKE_BUILD_PARALLEL_LEVEL from the environment.

Nothing is built inside the checkout: setuptools' build/ and egg-info, and the CMake build tree,
live in one throwaway folder per setup.py process. A CMake cache left in the checkout would pin
the tools of pip's isolated (and since deleted) build environment, so a second `pip install .`
in the same checkout would fail at configure. Developers who want incremental native builds set
PYPATCH_CMAKE_BUILD_DIR to a folder of their own (or use CMakeLists.txt directly).
"""
from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent.resolve()
SCRATCH = Path(tempfile.mkdtemp(prefix="pypatch-build-"))
atexit.register(shutil.rmtree, SCRATCH, ignore_errors=True)


class CMakeExtension(Extension):
    def __init__(self, name: str, sourcedir: str = "") -> None:
        super().__init__(name, sources=[])
        self.sourcedir = os.fspath(Path(sourcedir).resolve())


class CMakeBuild(build_ext):
    def build_extension(self, ext: CMakeExtension) -> None:
        import pybind11  # a build requirement (pyproject.toml)

        ext_fullpath = Path.cwd() / self.get_ext_fullpath(ext.name)
        extdir = ext_fullpath.parent.resolve()
        cfg = "Debug" if self.debug else "Release"
        cmake_args = [
            f"-DPYPATCH_PYTHON_OUTPUT_DIR={extdir}{os.sep}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DCMAKE_BUILD_TYPE={cfg}",
            "-DPYPATCH_BUILD_PYTHON=ON",
            "-DPYPATCH_BUILD_TESTS=OFF",
        ]
        if "CMAKE_ARGS" in os.environ:
            cmake_args += [a for a in os.environ["CMAKE_ARGS"].split(" ") if a]
        if not any(a.startswith("-G") for a in cmake_args) and "CMAKE_GENERATOR" not in os.environ:
            try:
                import ninja  # noqa: F401  (a build requirement; fall back to make without it)

                cmake_args.append("-GNinja")
            except ImportError:
                pass
        build_args = ["--target", "_core"]
        if "CMAKE_BUILD_PARALLEL_LEVEL" not in os.environ:
            build_args += ["-j", "2"]
        build_temp = Path(os.environ.get("PYPATCH_CMAKE_BUILD_DIR") or SCRATCH / "cmake")
        build_temp.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cmake", ext.sourcedir, *cmake_args], cwd=build_temp, check=True)
        subprocess.run(["cmake", "--build", ".", *build_args], cwd=build_temp, check=True)


setup(
    ext_modules=[CMakeExtension("pypatch._core", sourcedir=str(ROOT))],
    cmdclass={"build_ext": CMakeBuild},
    options={"build": {"build_base": str(SCRATCH / "build")},
             "egg_info": {"egg_base": str(SCRATCH)}},
)
