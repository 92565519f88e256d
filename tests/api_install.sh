#!/bin/sh
# api_install.sh CMAKE BUILD_DIR SOURCE_DIR CC: installs the build into a temporary prefix and
# builds examples/minimal.c against the installed libpocketllm three ways (pkg-config shared,
# pkg-config --static, CMake find_package), running each on the installed stories260k.
set -eu
cmake=$1 build=$2 src=$3 cc=$4
prefix=$(mktemp -d /tmp/pk_api_install.XXXXXX)
trap 'rm -rf "$prefix"' EXIT
"$cmake" --install "$build" --prefix "$prefix" > "$prefix/install.log"
model=$prefix/share/pocketllm/models/stories260k
for f in bin/pocketllm include/pocketllm.h "$model/config.json"; do
    case $f in /*) p=$f ;; *) p=$prefix/$f ;; esac
    test -e "$p" || { echo "FAIL: cmake --install did not install $f"; exit 1; }
done
pc=$(find "$prefix" -name pocketllm.pc)
libdir=$(dirname "$(dirname "$pc")")
for f in libpocketllm.a libpocketllm.so cmake/pocketllm/pocketllmConfig.cmake \
    cmake/pocketllm/pocketllmConfigVersion.cmake; do
    test -e "$libdir/$f" || { echo "FAIL: no $libdir/$f"; exit 1; }
done
soname=$(objdump -p "$libdir/libpocketllm.so" | awk '/SONAME/ { print $2 }')
echo "SONAME $soname"
case $soname in libpocketllm.so.[0-9]*) ;; *) echo "FAIL: SONAME '$soname'"; exit 1 ;; esac
export PKG_CONFIG_PATH="$libdir/pkgconfig"
echo "pkg-config: $(pkg-config --modversion pocketllm) $(pkg-config --cflags --libs pocketllm)"

run() { # run NAME BINARY: the example must train its 20 steps and generate
    rm -rf "$prefix/home-$1"
    "$2" "$prefix/home-$1" "$model" > "$prefix/$1.out" 2>&1 || {
        echo "FAIL: $1 exited non-zero:"; cat "$prefix/$1.out"; exit 1; }
    grep -q "step 20/20" "$prefix/$1.out" && grep -q "^Pip" "$prefix/$1.out" || {
        echo "FAIL: $1 output:"; cat "$prefix/$1.out"; exit 1; }
    echo "ok: $1 ($(tail -n 1 "$prefix/$1.out"))"
}

# shellcheck disable=SC2046 # pkg-config output is meant to be split
"$cc" -std=c11 -Wall -Wextra -Werror "$src/examples/minimal.c" $(pkg-config --cflags --libs pocketllm) \
    -Wl,-rpath,"$libdir" -o "$prefix/minimal-shared"
run pkg-config-shared "$prefix/minimal-shared"
# shellcheck disable=SC2046
"$cc" -std=c11 -Wall -Wextra -Werror "$src/examples/minimal.c" \
    $(pkg-config --static --cflags pocketllm) "$libdir/libpocketllm.a" \
    $(pkg-config --static --libs-only-l --libs-only-L pocketllm | sed 's/-lpocketllm//') \
    -o "$prefix/minimal-static"
if objdump -p "$prefix/minimal-static" | grep -q 'NEEDED.*libpocketllm'; then
    echo "FAIL: the static build needs libpocketllm.so"; exit 1
fi
run pkg-config-static "$prefix/minimal-static"

mkdir -p "$prefix/fp"
cat > "$prefix/fp/CMakeLists.txt" <<CM
cmake_minimum_required(VERSION 3.20)
project(minimal C)
find_package(pocketllm 0.1 REQUIRED)
add_executable(minimal $src/examples/minimal.c)
target_link_libraries(minimal PRIVATE pocketllm::pocketllm)
set_target_properties(minimal PROPERTIES BUILD_RPATH "$libdir")
CM
"$cmake" -S "$prefix/fp" -B "$prefix/fp/build" -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_C_COMPILER="$cc" > "$prefix/fp.log" 2>&1 || { cat "$prefix/fp.log"; exit 1; }
"$cmake" --build "$prefix/fp/build" > "$prefix/fp-build.log" 2>&1 || {
    cat "$prefix/fp-build.log"; exit 1; }
run find-package "$prefix/fp/build/minimal"
echo "ok: installed library used through pkg-config (shared, static) and find_package"
