#!/usr/bin/env bash
# ASan + UBSan run (CI: called by tests/run_all.sh): one build tree with
# PYPATCH_SANITIZE=address,undefined for the C++ tests, the examples and pypatch._core (the core
# is compiled once for all of them), then ctest, then a short Python smoke run (search, save,
# load, scan, threads, file errors) against the sanitized _core with the ASan runtime preloaded.
# Usage: bash tests/run_sanitizers.sh   (PYTHON=... picks the interpreter; it needs pybind11)
# -O1 -g1 keeps the build quick and the reports symbolised. Any ASan or UBSan finding fails the
# run (UBSan is compiled without recover; ASan aborts).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
python=${PYTHON:-python}
build=build/sanitize
pkg=$build/py  # the package's .py files next to the sanitized _core (never the checkout's pypatch/)
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

start=$SECONDS
if ! pyb=$("$python" -c "import pybind11; print(pybind11.get_cmake_dir())" 2>/dev/null); then
  echo "sanitizers: $python cannot import pybind11 (pip install pybind11)"; exit 1
fi
rm -rf "$pkg/pypatch" && mkdir -p "$pkg" && cp -r pypatch "$pkg/" \
  && find "$pkg/pypatch" \( -name '_core*.so' -o -name __pycache__ \) -prune -exec rm -rf {} + \
  && cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug "-DCMAKE_CXX_FLAGS_DEBUG=-O1 -g1" \
       -DPYPATCH_SANITIZE=address,undefined -DPYPATCH_BUILD_TESTS=ON -DPYPATCH_BUILD_EXAMPLES=ON \
       -DPYPATCH_BUILD_PYTHON=ON -DPYPATCH_PYTHON_OUTPUT_DIR="$root/$pkg/pypatch" \
       -DPython_EXECUTABLE="$(command -v "$python")" -Dpybind11_DIR="$pyb" >/dev/null \
  && cmake --build "$build" -j "${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
build_status=$?
echo "sanitizers: build done in $((SECONDS - start)) s (status $build_status)"
[ "$build_status" -eq 0 ] || exit 1

start=$SECONDS
ctest --test-dir "$build" --output-on-failure
cpp_status=$?
echo "sanitizers: C++ tests done in $((SECONDS - start)) s (status $cpp_status)"

# Python is not instrumented: preload the ASan runtime, and libstdc++ with it (else ASan's
# __cxa_throw interceptor finds no real __cxa_throw and aborts at the first C++ exception).
# Python's own allocations would be reported as leaks at exit, so leak checking is off (every
# access is still checked).
start=$SECONDS
preload="$(${CXX:-c++} -print-file-name=libasan.so) $(${CXX:-c++} -print-file-name=libstdc++.so)"
(cd "$pkg" && export LD_PRELOAD="$preload" ASAN_OPTIONS="$ASAN_OPTIONS:detect_leaks=0" \
  && "$python" -c "from pypatch import _core; import sys; print('sanitized core:', _core.__file__); sys.exit('sanitize' not in _core.__file__)" \
  && "$python" -m pytest -q -p no:cacheprovider -x \
       "$root/tests/index/test_scan.py" "$root/tests/index/test_flat.py" "$root/tests/index/test_index_file.py" \
       "$root/tests/index/test_threads.py" "$root/tests/index/test_transform_section.py" \
       "$root/tests/index/test_save_files.py" "$root/tests/index/test_index_limits.py" \
       "$root/tests/index/test_fastscan4.py" "$root/tests/index/test_nonfinite.py")
py_status=$?
echo "sanitizers: Python smoke done in $((SECONDS - start)) s (status $py_status)"
[ "$cpp_status" -eq 0 ] && [ "$py_status" -eq 0 ]
