#!/bin/sh
# test-arm64.sh: the unit suite on aarch64 under qemu, and the cross-architecture goldens. On a
# fresh Debian 12 (root or sudo) it installs the aarch64 cross gcc, qemu-user-static and Debian's
# arm64 builds of every dependency (multiarch), cross-builds Release with -Werror
# (cmake/aarch64-linux-gnu.cmake) into build-arm64, runs the unit label through qemu-aarch64,
# then crosses the store and seed-log fixtures of test_golden: written by the x86-64 build and
# read by the aarch64 one, and the reverse. README "Building for a phone" says what it verifies.
# PK_ARM64_BUILD (default build-arm64) and PK_NATIVE_BUILD (default build-ci, built here if
# absent) name the build directories; PK_SHARED_DIR the test-vector bundle as in test.sh.
set -eu
cd "$(dirname "$0")/.."
SHARED="${PK_SHARED_DIR:-$(dirname "$(pwd)")/shared}"
BUILD="${PK_ARM64_BUILD:-build-arm64}"
NATIVE="${PK_NATIVE_BUILD:-build-ci}"
JOBS="$(nproc)"
# The arm64 twins of scripts/setup.sh's libraries (keep the two lists in step).
LIBS="libopenblas-openmp-dev libsodium-dev libsqlite3-dev libcjson-dev libcurl4-openssl-dev
libmicrohttpd-dev libpcre2-dev libutf8proc-dev"
TOOLS="gcc-aarch64-linux-gnu binutils-aarch64-linux-gnu qemu-user-static"
# Left out under qemu (measured on 2 shared cores: the full unit label took 23.6 min with 8
# failures, each listed here), and why:
# - test_plain_clone builds its own pocketllm from a clone with the host's compiler (an x86-64
#   build: nothing of aarch64 in it) and takes minutes;
# - too slow under qemu, each past its timeout or most of the budget, and arch-neutral beyond
#   what runs here: test_determinism_cli and test_determinism (every pass at 1, 2 and 3
#   threads; test_golden replays at 1 and 2 threads), test_model (its reference logits of every
#   bundle model are checked in test_golden), test_trainer, test_product_cli, test_demo_fed
#   (training runs; test_sync_cli trains and replays through the CLI here), test_cli_opts and
#   test_cli_homes (option tables, home states), test_store_crash (kill -9 trials; test_store
#   and test_store_cli run);
# - test_agent_cli: too slow under qemu, not broken by it: alone it took 6.4 min at load average
#   3 and 20.2 min at 12 (the whole script already takes about 22 min without it), and its
#   checks timed for native speed fail there: a 30 s wait for 3 training steps (the agent
#   trains at SCHED_IDLE), and the new-examples check expects run 1 to have evaluated past step
#   0 before the import lands (under qemu it has not, so run 2 starts from the base model). Its
#   lease checks pass there (a second agent refused naming the first's pid, `agent status` and
#   `agent stop`, kill -9 and a bit-exact resume). test_agent_sync and test_store_home run: a
#   lease holder's liveness is its lock on HOME/leases.lock (DESIGN 13, "Leases"), which
#   qemu-user passes through, no longer /proc/PID/stat's start time, which qemu-user fakes for a
#   guest's own process.
# - test_estimator and test_estim_cli (every estimator trained, replayed and resumed; 16 and 10
#   min under qemu against 6 and 3 s natively), test_agent_resume (an agent trained to its early
#   stop twice, its waits timed for native speed: 74 s alone at load 3, past its wait at load
#   14): the estimators' rows are replayed by the same pk_mezo_replay_ex whose z, updates and
#   hashes test_golden and test_mezo check here bit for bit.
# - test_fedsim (simulations of several devices and rounds, each a process: past its 12 min
#   timeout under qemu, 34 s natively); the protocol it drives runs here in test_sync_fed,
#   test_sync_cli and test_agent_sync.
EXCLUDE='^(test_agent_cli|test_estimator|test_estim_cli|test_agent_resume|test_fedsim|test_plain_clone|test_determinism_cli|test_determinism|test_model|test_trainer|test_product_cli|test_demo_fed|test_cli_opts|test_cli_homes|test_store_crash)$'

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

install_deps() {
    want=""
    for p in $TOOLS; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            want="$want $p"
    done
    for p in $LIBS; do
        dpkg-query -W -f='${Status}' "$p:arm64" 2>/dev/null | grep -q "install ok installed" ||
            want="$want $p:arm64"
    done
    [ -n "$want" ] || return 0
    echo "test-arm64: installing:$want"
    dpkg --print-foreign-architectures | grep -qx arm64 || $SUDO dpkg --add-architecture arm64
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $want >/dev/null
}

# Tests start the aarch64 pocketllm and server from inside aarch64 processes (popen, fork+exec):
# the kernel needs binfmt_misc to hand those to qemu. Registered from qemu-user-static's own file.
# Tests that never start another aarch64 process (they run without binfmt_misc).
NO_CHILD="test_golden|test_simd|test_rng|test_crypto|test_tokenizer|test_mezo|test_store|test_store_home"
ONLY=""
enable_binfmt() {
    bm=/proc/sys/fs/binfmt_misc
    [ -e "$bm/qemu-aarch64" ] && return 0
    [ -e "$bm/register" ] || $SUDO mount -t binfmt_misc binfmt_misc "$bm" || true
    conf=/usr/lib/binfmt.d/qemu-aarch64.conf
    if [ -w "$bm/register" ] || [ -n "$SUDO" ]; then
        [ -e "$bm/qemu-aarch64" ] || $SUDO sh -c "cat $conf > $bm/register" || true
    fi
    if [ ! -e "$bm/qemu-aarch64" ]; then
        # Without it only the tests that start no aarch64 child process can run: say so loudly
        # rather than fail the whole suite on a host that cannot register an interpreter.
        echo "test-arm64: WARNING: cannot register qemu-aarch64 with binfmt_misc ($bm; a" \
            "container needs CAP_SYS_ADMIN to mount it): ONLY $NO_CHILD run under qemu," \
            "the rest of the unit label is NOT run" >&2
        ONLY="-R ^($NO_CHILD)\$"
    fi
}

install_deps
enable_binfmt

echo "== aarch64 cross build: gcc Release, -Werror ($(aarch64-linux-gnu-gcc -dumpversion))"
cmake -S . -B "$BUILD" -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
    -DPK_SHARED_DIR="$SHARED" -DPK_WERROR=ON -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j "$JOBS"

SKIP="" # as in test.sh: without the bundle the tests labelled shared are left out, and said so
if [ ! -d "$SHARED/testdata" ]; then
    SKIP="-LE shared"
    echo "test-arm64: no test-vector bundle at $SHARED/testdata: the tests labelled shared are" \
        "left out"
fi
echo "== unit label under qemu-aarch64 (left out: $EXCLUDE)"
# shellcheck disable=SC2086
ctest --test-dir "$BUILD" -L unit $SKIP -E "$EXCLUDE" $ONLY -j "$JOBS" --output-on-failure

echo "== a store and a seed log across architectures (test_golden write / read)"
if [ ! -x "$NATIVE/tests/test_golden" ]; then
    cmake -S . -B "$NATIVE" -DPK_SHARED_DIR="$SHARED" -DPK_WERROR=ON \
        -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$NATIVE" -j "$JOBS" --target test_golden
fi
FIX="$(mktemp -d)"
trap 'rm -rf "$FIX"' EXIT
mkdir "$FIX/x86" "$FIX/arm"
"$NATIVE/tests/test_golden" write "$FIX/x86"
qemu-aarch64-static "$BUILD/tests/test_golden" read "$FIX/x86"
qemu-aarch64-static "$BUILD/tests/test_golden" write "$FIX/arm"
"$NATIVE/tests/test_golden" read "$FIX/arm"
echo "test-arm64: passed"
