# run_common.sh: what scripts/convergence.sh and scripts/quality13.sh share (sourced, not run):
# the pocketllm binary, the work directory's out/, and a store home with its passphrase file.
# Needs ROOT (the source tree, the current directory), DIR (the work directory) and PASSPHRASE
# (the passphrase file's text). Sets P (the binary: PK_POCKETLLM, or build/ after a Release
# build), HOME_DIR, PASS and H (the --home and --passphrase-file options).
if [ -z "${PK_POCKETLLM:-}" ]; then
    cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build build -j 2 --target pocketllm >/dev/null
    PK_POCKETLLM=$ROOT/build/cli/pocketllm
fi
P=$PK_POCKETLLM
mkdir -p "$DIR/out"
HOME_DIR="$DIR/home"
PASS="$DIR/pass"
printf '%s\n' "$PASSPHRASE" >"$PASS"
chmod 600 "$PASS"
H="--home $HOME_DIR --passphrase-file $PASS"
