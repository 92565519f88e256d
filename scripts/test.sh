#!/bin/sh
# test.sh: the README's test command. Installs what is missing, then builds and runs the default
# test suite twice: gcc Release with warnings as errors, and gcc Debug under ASan+UBSan; then a
# short libFuzzer smoke run of every fuzz target (clang). First, clang-format must find nothing
# to change in any C file. Slow tests: PK_TEST_LABELS=slow. Tests labelled release_only run in
# the Release build only (README "The two commands" says which and why). Then a line gives the
# seconds each part took.
# PK_TEST_BUILDS picks the builds (default "release asan fuzz").
# The test-vector bundle is ../shared (beside the repo; PK_SHARED_DIR overrides it). Without it
# the tests labelled `shared` (they read testdata/) are left out, everything else runs, and the
# last line says how many were left out and how to provide the bundle. With CI=true a missing
# bundle is an error: CI never passes without those tests.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
SHARED="${PK_SHARED_DIR:-$(dirname "$(pwd)")/shared}"
JOBS="$(nproc)"
LABELS="${PK_TEST_LABELS:-unit}"
BUILDS="${PK_TEST_BUILDS:-release asan fuzz}"
case "${CI:-}" in true | TRUE | True | 1) IN_CI=1 ;; *) IN_CI=0 ;; esac
HAVE_SHARED=1
[ -d "$SHARED/testdata" ] || HAVE_SHARED=0
SKIP="" # ctest arguments that leave out the tests needing the bundle
[ "$HAVE_SHARED" = 1 ] || SKIP="-LE shared"
# The sanitized build also leaves out release_only. One -LE regex: ctest excludes a test only
# when it matches every -LE given.
ASAN_SKIP="-LE release_only"
[ "$HAVE_SHARED" = 1 ] || ASAN_SKIP="-LE release_only|shared"
TIMES="" # "part seconds" of each part run so far
T0=$(date +%s)
stamp() { # stamp PART: adds the seconds since the last stamp to TIMES
    t=$(date +%s)
    TIMES="$TIMES $1 $((t - T0))s,"
    T0=$t
}
NEEDS="$(mktemp)" # names of the tests left out, one per line (a test may be in several builds)
trap 'rm -f "$NEEDS"' EXIT

configure() { # configure DIR CMAKE-ARGS...
    dir=$1; shift
    cmake -S . -B "$dir" -DPK_SHARED_DIR="$SHARED" -DPK_WERROR=ON "$@" >/dev/null
}

build() { # build DIR CMAKE-ARGS...
    dir=$1; shift
    configure "$dir" "$@"
    cmake --build "$dir" -j "$JOBS"
}

# Records the tests of label $2 in build dir $1 that need the bundle; prints how many there are.
needs_bundle() {
    ctest --test-dir "$1" -N -L "$2" -L shared | sed -n 's/^ *Test *#[0-9]*: //p' >>"$NEEDS"
    sort -u "$NEEDS" | wc -l | tr -d ' '
}

how_to_get() {
    echo "put the bundle (a folder holding testdata/) at $(dirname "$(pwd)")/shared, beside the" \
        "repository, or set PK_SHARED_DIR=/path/to/it"
}

echo "== clang-format (.clang-format, every tracked C file)"
# shellcheck disable=SC2046
clang-format --dry-run -Werror $(git ls-files '*.c' '*.h' 2>/dev/null || find . -name '*.[ch]' \
    -not -path './build*')
stamp clang-format

if [ "$HAVE_SHARED" = 0 ]; then
    configure build-ci -DCMAKE_BUILD_TYPE=Release
    n=$(needs_bundle build-ci "$LABELS")
    if [ "$IN_CI" = 1 ]; then
        echo "test.sh: error: CI=true and the test-vector bundle is missing (no $SHARED/testdata):" \
            "$n tests need it and CI must run them; $(how_to_get)" >&2
        exit 1
    fi
    echo "== no test-vector bundle at $SHARED/testdata: the $n tests that need it are left out"
fi

for b in $BUILDS; do
    case $b in
    release)
        echo "== gcc Release, -Werror"
        build build-ci -DCMAKE_BUILD_TYPE=Release
        # shellcheck disable=SC2086
        ctest --test-dir build-ci -L "$LABELS" $SKIP -j "$JOBS" --output-on-failure
        ;;
    asan)
        # -O1: ASan's recommended level (the forward passes at -O0 are several times slower)
        echo "== gcc Debug -O1, ASan+UBSan"
        build build-asan -DCMAKE_BUILD_TYPE=Debug "-DCMAKE_C_FLAGS_DEBUG=-g -O1" \
            -DPK_SANITIZE=address,undefined
        # The tests labelled release_only are not run here (tests/*.cmake says why for each).
        # shellcheck disable=SC2086
        ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
            ctest --test-dir build-asan -L "$LABELS" $ASAN_SKIP -j "$JOBS" --output-on-failure
        ;;
    fuzz)
        echo "== clang libFuzzer smoke run"
        CC=clang build build-fuzz -DCMAKE_BUILD_TYPE=Debug "-DCMAKE_C_FLAGS_DEBUG=-g -O1" \
            -DPK_FUZZ=ON -DPK_SANITIZE=address,undefined -DPK_FUZZ_SECONDS="${PK_FUZZ_SECONDS:-20}"
        [ "$HAVE_SHARED" = 1 ] || needs_bundle build-fuzz fuzz >/dev/null
        # shellcheck disable=SC2086
        # and test_threads (label threads): clang's OpenMP runtime runs the engine's loops
        ctest --test-dir build-fuzz -L 'fuzz|threads' $SKIP -j "$JOBS" --output-on-failure
        ;;
    *)
        echo "test.sh: unknown build '$b' in PK_TEST_BUILDS (release, asan, fuzz)" >&2
        exit 2
        ;;
    esac
    stamp "$b"
done

echo "test.sh: seconds per part (build and tests):${TIMES%,}"
n=$(sort -u "$NEEDS" | wc -l | tr -d ' ')
if [ "$n" -gt 0 ]; then
    echo "test.sh: passed, but $n tests were NOT run: they need the test-vector bundle," \
        "missing at $SHARED/testdata; $(how_to_get)"
fi

# aarch64: the unit suite cross-built and run under qemu, and the cross-architecture goldens
# (scripts/test-arm64.sh; README "Building for a phone"). PK_TEST_ARM64=0 leaves it out.
if [ "${PK_TEST_ARM64:-1}" != 0 ]; then
    echo "== aarch64 under qemu (scripts/test-arm64.sh; PK_TEST_ARM64=0 leaves it out)"
    PK_SHARED_DIR="$SHARED" PK_NATIVE_BUILD=build-ci sh scripts/test-arm64.sh
fi
