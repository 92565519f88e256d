#!/bin/sh
# bench.sh: the benchmarks behind the README's performance table. Builds Release, writes the
# random models of the real shapes (pocketllm make-model) into $PK_BENCH_DIR (default
# /tmp/pocketllm-bench; about 7 GB of disk for opt-1.3b and roberta-large), then prints one JSON
# line per benchmark, prefixed with its name. Needs ../shared for the tokenizer and store figures.
# PK_BENCH_QUICK=1 skips the 1.3B/large models. Takes about 10 minutes on 2 cores.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
SHARED="${PK_SHARED_DIR:-$(pwd)/../shared}"
DIR="${PK_BENCH_DIR:-/tmp/pocketllm-bench}"
T="${PK_BENCH_THREADS:-2}"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DPK_SHARED_DIR="$SHARED" >/dev/null
cmake --build build -j "$(nproc)" --target pocketllm pocketllm-server-mock pocketllm-loadgen >/dev/null
P=./build/cli/pocketllm
mkdir -p "$DIR"

model() { # model ARCH PRESET
    [ -f "$DIR/$2/model.safetensors" ] || $P make-model --arch "$1" --preset "$2" --out "$DIR/$2" >/dev/null
}
run() { # run NAME CMD...
    name=$1; shift
    printf '%s ' "$name"
    "$@" | tail -n 1
}

model opt opt-125m
run "forward opt-125m B=16 T=128" $P bench forward --model "$DIR/opt-125m" --batch 16 --seq 128 --threads "$T"
run "mezo opt-125m B=8 T=64" $P bench mezo --model "$DIR/opt-125m" --batch 8 --seq 64 --threads "$T" --steps 11
run "mezo opt-125m B=16 T=128" $P bench mezo --model "$DIR/opt-125m" --batch 16 --seq 128 --threads "$T" --steps 5
for n in 2 4 8; do # N perturbations in one sweep against N separate passes
    run "sweep opt-125m B=8 T=64 N=$n" $P bench mezo --model "$DIR/opt-125m" --batch 8 --seq 64 --threads "$T" --steps 3 --perturbations $n
    run "sweep stories260k B=8 T=64 N=$n" $P bench mezo --model "$SHARED/testdata/models/stories260k" --batch 8 --seq 64 --threads "$T" --steps 5 --perturbations $n
done
if [ "${PK_BENCH_QUICK:-0}" != 1 ]; then
    model opt opt-1.3b
    run "forward opt-1.3b B=4 T=128" $P bench forward --model "$DIR/opt-1.3b" --batch 4 --seq 128 --threads "$T" --reps 1
    run "mezo opt-1.3b B=8 T=64" $P bench mezo --model "$DIR/opt-1.3b" --batch 8 --seq 64 --threads "$T" --steps 2
    model roberta roberta-large
    run "mezo roberta-large B=8 T=64" $P bench mezo --model "$DIR/roberta-large" --batch 8 --seq 64 --threads "$T" --steps 2
fi
cut -f1 "$SHARED/data/sst2/train.tsv" | tail -n +2 > "$DIR/prose.txt"
run "tokenize gpt2 (sst2 sentences)" $P bench tokenize --model "$SHARED/testdata/tokenizers/gpt2" --file "$DIR/prose.txt"
run "store (1 KB examples, interactive Argon2id)" $P bench store --examples 20000
# the coordinator under the project's own load generator, on loopback
sh server-mock/loadtest.sh ./build 20000 4 | sed 's/^/loadgen: /'
