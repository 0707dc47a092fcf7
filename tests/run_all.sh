#!/usr/bin/env bash
# The project's test command: Python tests against the installed package, then the C++ tests,
# then (in CI) the sanitizer run and the aarch64 run.
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

# CI (and anyone with PYPATCH_SANITIZE_CI=1) also runs the C++ tests and a Python smoke run
# under ASan + UBSan (tests/run_sanitizers.sh; about 2 CPU-minutes, mostly the build).
san_status=0
if [ "${PYPATCH_SANITIZE_CI:-}" = 1 ] || [ "${CI:-}" = true ]; then
  bash tests/run_sanitizers.sh
  san_status=$?
fi

# CI (and anyone with PYPATCH_AARCH64_CI=1) also cross-compiles the core and the C++ tests for
# aarch64 and runs them under qemu-user, NEON kernels against scalar (tests/run_aarch64.sh;
# about 1 CPU-minute, mostly the build; skipped with a message without the cross toolchain).
arm_status=0
if [ "${PYPATCH_AARCH64_CI:-}" = 1 ] || [ "${CI:-}" = true ]; then
  bash tests/run_aarch64.sh
  arm_status=$?
fi

echo "pytest exit status: $py_status, ctest exit status: $cpp_status, sanitizers exit status: $san_status," \
     "aarch64 exit status: $arm_status"
[ "$py_status" -eq 0 ] && [ "$cpp_status" -eq 0 ] && [ "$san_status" -eq 0 ] && [ "$arm_status" -eq 0 ]
