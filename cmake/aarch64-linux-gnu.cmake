# Cross-compiling the core and its C++ tests for 64-bit ARM Linux with Debian's cross toolchain
# (apt-get install g++-aarch64-linux-gnu qemu-user); tests/run_aarch64.sh uses it. ctest runs
# every test executable through qemu-aarch64, with the target's libraries from the sysroot.
#   cmake -S . -B build/aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake ...
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(_triple aarch64-linux-gnu)
set(CMAKE_C_COMPILER ${_triple}-gcc)
set(CMAKE_CXX_COMPILER ${_triple}-g++)
set(PYPATCH_AARCH64_SYSROOT /usr/${_triple} CACHE PATH "Target libraries (libc, libstdc++) for qemu -L")

# Headers and libraries from the target's tree only; programs (nm, bash) from the host.
set(CMAKE_FIND_ROOT_PATH ${PYPATCH_AARCH64_SYSROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

find_program(PYPATCH_QEMU_AARCH64 qemu-aarch64)
if(PYPATCH_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${PYPATCH_QEMU_AARCH64} -L ${PYPATCH_AARCH64_SYSROOT})
endif()
