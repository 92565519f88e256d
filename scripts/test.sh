#!/bin/sh
# test.sh: the README's test command. Installs what is missing, then builds and runs the default
# test suite twice: gcc Release with warnings as errors, and gcc Debug under ASan+UBSan; then a
# short libFuzzer smoke run of every fuzz target (clang). Slow tests: PK_TEST_LABELS=slow.
# ../shared (beside the repo) holds the test vectors; PK_SHARED_DIR overrides it.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
SHARED="${PK_SHARED_DIR:-$(pwd)/../shared}"
JOBS="$(nproc)"
LABELS="${PK_TEST_LABELS:-unit}"

build() { # build DIR CMAKE-ARGS...
    dir=$1; shift
    cmake -S . -B "$dir" -DPK_SHARED_DIR="$SHARED" -DPK_WERROR=ON "$@" >/dev/null
    cmake --build "$dir" -j "$JOBS"
}

echo "== gcc Release, -Werror"
build build-ci -DCMAKE_BUILD_TYPE=Release
ctest --test-dir build-ci -L "$LABELS" -j "$JOBS" --output-on-failure

# -O1: ASan's recommended level (the forward passes at -O0 are several times slower)
echo "== gcc Debug -O1, ASan+UBSan"
build build-asan -DCMAKE_BUILD_TYPE=Debug "-DCMAKE_C_FLAGS_DEBUG=-g -O1" -DPK_SANITIZE=address,undefined
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build-asan -L "$LABELS" -j "$JOBS" --output-on-failure

echo "== clang libFuzzer smoke run"
CC=clang build build-fuzz -DCMAKE_BUILD_TYPE=Debug "-DCMAKE_C_FLAGS_DEBUG=-g -O1" -DPK_FUZZ=ON -DPK_SANITIZE=address,undefined \
    -DPK_FUZZ_SECONDS="${PK_FUZZ_SECONDS:-20}"
ctest --test-dir build-fuzz -L fuzz -j "$JOBS" --output-on-failure
