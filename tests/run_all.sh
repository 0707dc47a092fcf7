#!/usr/bin/env bash
# The project's test command: Python tests against the installed package, then the C++ tests.
# Run from the repository root after `pip install ".[test]"` (or `pip install -e ".[test]"`).
set -uo pipefail
cd "$(dirname "$0")/.."

# `pytest` (not `python -m pytest`) so the installed package, with its compiled _core, is tested.
pytest tests "$@"
py_status=$?
if [ "$py_status" -eq 5 ]; then py_status=0; fi   # 5 = no tests collected

build_dir=build/ctest
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DPYPATCH_BUILD_PYTHON=OFF -DPYPATCH_BUILD_TESTS=ON -DPYPATCH_BUILD_EXAMPLES=ON >/dev/null \
  && cmake --build "$build_dir" -j "${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
  && ctest --test-dir "$build_dir" --output-on-failure
cpp_status=$?

echo "pytest exit status: $py_status, ctest exit status: $cpp_status"
[ "$py_status" -eq 0 ] && [ "$cpp_status" -eq 0 ]
