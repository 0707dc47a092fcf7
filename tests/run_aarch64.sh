#!/usr/bin/env bash
# aarch64 run (CI: called by tests/run_all.sh when PYPATCH_AARCH64_CI=1 or CI=true): cross-compiles
# the C++ core and its C++ tests for 64-bit ARM with Debian's g++-aarch64-linux-gnu
# (cmake/aarch64-linux-gnu.cmake) and runs ctest under qemu-aarch64 (qemu-user), so the NEON
# kernels (csrc/pypatch/simd/README.md) are compared with the scalar ones bit for bit on every
# run. Release build, no Python module and no examples (under qemu the example's training alone
# takes ~2 minutes); the tests themselves take ~12 s under qemu.
# Usage: bash tests/run_aarch64.sh
# Without the cross compiler or qemu-aarch64 it says so and exits 0 (skipped), as the browser
# test does without chromium; .ci/run installs both when it may.
set -uo pipefail
cd "$(dirname "$0")/.."
build=build/aarch64
cxx=aarch64-linux-gnu-g++
sysroot=/usr/aarch64-linux-gnu

missing=""
command -v "$cxx" >/dev/null 2>&1 || missing="$missing $cxx (apt-get install g++-aarch64-linux-gnu)"
command -v qemu-aarch64 >/dev/null 2>&1 || missing="$missing qemu-aarch64 (apt-get install qemu-user)"
if [ -n "$missing" ]; then
  echo "aarch64: SKIPPED, missing:$missing"
  exit 0
fi

start=$SECONDS
cmake -S . -B "$build" -G Ninja -DCMAKE_TOOLCHAIN_FILE="$(pwd)/cmake/aarch64-linux-gnu.cmake" \
      -DPYPATCH_AARCH64_SYSROOT="$sysroot" -DCMAKE_BUILD_TYPE=Release \
      -DPYPATCH_BUILD_PYTHON=OFF -DPYPATCH_BUILD_TESTS=ON -DPYPATCH_BUILD_EXAMPLES=OFF >/dev/null \
  && cmake --build "$build" -j "${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
build_status=$?
echo "aarch64: cross build done in $((SECONDS - start)) s (status $build_status)"
[ "$build_status" -eq 0 ] || exit 1

start=$SECONDS
# The toolchain file makes ctest run every test executable through qemu-aarch64 -L $sysroot.
ctest --test-dir "$build" --output-on-failure -j "${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
cpp_status=$?
echo "aarch64: C++ tests under qemu done in $((SECONDS - start)) s (status $cpp_status)"

# The tests compare every usable level with scalar; make sure neon was one of them (a build that
# failed to detect aarch64 would pass at scalar alone).
kernels=$(qemu-aarch64 -L "$sysroot" "$build/test_kernels" 2>/dev/null | grep '^quantised scan kernels:')
echo "aarch64: $kernels"
if [ "$kernels" != "quantised scan kernels: neon" ]; then
  echo "aarch64: the NEON kernels were not tested"; exit 1
fi
[ "$cpp_status" -eq 0 ]
