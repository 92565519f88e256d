# aarch64-linux-gnu.cmake: cross build for 64-bit Arm Linux (phones running a glibc userland,
# boards, servers) with Debian's cross gcc and the arm64 -dev packages installed by multiarch
# (dpkg --add-architecture arm64). scripts/test-arm64.sh installs both and uses this file:
#   cmake -S . -B build-arm64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake
# The tests run under qemu-aarch64 (CMAKE_CROSSCOMPILING_EMULATOR), so ctest works as usual.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(PK_CROSS_TRIPLE aarch64-linux-gnu)

set(CMAKE_C_COMPILER ${PK_CROSS_TRIPLE}-gcc)
set(CMAKE_AR ${PK_CROSS_TRIPLE}-ar CACHE FILEPATH "")
set(CMAKE_RANLIB ${PK_CROSS_TRIPLE}-ranlib CACHE FILEPATH "")
# cmake/PkSoname.cmake reads libcurl's SONAME with objdump: the cross one reads arm64 ELF files.
set(CMAKE_OBJDUMP ${PK_CROSS_TRIPLE}-objdump CACHE FILEPATH "")

# Multiarch: the arm64 libraries live in /usr/lib/aarch64-linux-gnu beside the host's, and their
# headers in /usr/include (arch-specific ones in /usr/include/aarch64-linux-gnu), which Debian's
# cross gcc searches by itself. pkg-config must see only the arm64 .pc files.
set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/${PK_CROSS_TRIPLE}/pkgconfig:/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")
set(CMAKE_LIBRARY_ARCHITECTURE ${PK_CROSS_TRIPLE})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)

# ctest runs every test binary through the emulator (libc6:arm64 puts the loader at
# /lib/ld-linux-aarch64.so.1, so qemu needs no -L).
find_program(PK_QEMU_AARCH64 NAMES qemu-aarch64 qemu-aarch64-static)
if(PK_QEMU_AARCH64)
    set(CMAKE_CROSSCOMPILING_EMULATOR ${PK_QEMU_AARCH64})
endif()
