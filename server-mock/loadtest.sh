#!/bin/sh
# loadtest.sh BUILD_DIR [UPLOADS] [CONNECTIONS]: starts pocketllm-server-mock on an ephemeral port
# with a task whose quorum exceeds the upload count, runs pocketllm-loadgen against it and fails
# unless every registration and every signed upload was accepted. Prints the loadgen figures.
set -eu
BUILD=$1
UPLOADS=${2:-5000}
CONNS=${3:-4}
DIR=$(mktemp -d /tmp/pk_loadtest_XXXXXX)
SP=
cleanup() {
    [ -n "$SP" ] && kill "$SP" 2>/dev/null && wait "$SP" 2>/dev/null
    rm -rf "$DIR"
}
trap cleanup EXIT
cat > "$DIR/task.json" <<JSON
{"task_id":"load","base_model_hash":"load","pool_size":4096,
 "pool_seed":"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
 "lr":0.0001,"eps":0.001,"local_steps":16,"quorum":1000000000,"deadline_seconds":1000000}
JSON
"$BUILD/server-mock/pocketllm-server-mock" --db "$DIR/s.db" --task "$DIR/task.json" --port 0 \
    > "$DIR/out.txt" &
SP=$!
i=0
while ! grep -q listening "$DIR/out.txt" 2>/dev/null; do
    i=$((i + 1))
    [ $i -gt 100 ] && { echo "server did not start" >&2; exit 1; }
    sleep 0.1
done
PORT=$(sed -n 's/^listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$DIR/out.txt")
"$BUILD/server-mock/pocketllm-loadgen" --server "127.0.0.1:$PORT" --uploads "$UPLOADS" \
    --connections "$CONNS" --max-seconds 60 | tee "$DIR/report.txt"
grep -q "^register: $UPLOADS sent, $UPLOADS ok" "$DIR/report.txt"
grep -q "^signed uploads: $UPLOADS sent, $UPLOADS ok (HTTP 200), 0 failed" "$DIR/report.txt"
kill "$SP"
wait "$SP"
SP=
echo "load test passed"
