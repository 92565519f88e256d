#!/bin/sh
# quality13.sh: the 16-bit, quantized and adapter quality runs on the real stories260k (models/) and the demo's personal
# notes (demo/data/train.txt, held-out loss on demo/data/heldout.txt, as `pocketllm demo`
# measures it: batch 16, 64 tokens, 800 steps, run seed 20261121). For each configuration it
# trains with `pocketllm train --json`, replays the run's seed log onto the base
# (`export --seed-log`, `replay --seed-log`) and checks the replayed weights hash against the
# run's, then prints the held-out loss before and after and the reduction as a share of f32
# full-parameter MeZO's.
# Environment: PK_Q13_DIR (work dir, default /tmp/pocketllm-q13), PK_Q13_CONFIGS (names below),
# PK_Q13_THREADS (threads per run, default 1), PK_Q13_STEPS (800), PK_POCKETLLM (binary;
# default: build/ after a Release build).
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DIR="${PK_Q13_DIR:-/tmp/pocketllm-q13}"
CONFIGS="${PK_Q13_CONFIGS:-f32 bf16 lora-qv lora-all q4-lora-all q4-scales}"
T="${PK_Q13_THREADS:-1}"
STEPS="${PK_Q13_STEPS:-800}"
PASSPHRASE='quality13 benchmark'
. "$ROOT/scripts/run_common.sh"
F32=$ROOT/models/stories260k
ALL='q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj'

# The home with the demo's datasets, a bf16 copy (a 1-step run at lr 0 exported as bf16) and a
# q4_0 copy (stories260k's rows are 64 wide: q4_k's 256-blocks do not apply).
setup() {
    [ -f "$DIR/ready" ] && return 0
    rm -rf "$HOME_DIR" "$DIR/bf16" "$DIR/q4_0"
    $P init $H --opslimit 1 --memlimit 8192 >/dev/null
    $P import "$ROOT/demo/data/train.txt" --dataset pip $H >/dev/null
    $P import "$ROOT/demo/data/heldout.txt" --dataset pip-heldout $H >/dev/null
    run=$($P train --model "$F32" --dataset pip --steps 1 --lr 0 --json --quiet --checkpoint-every 0 \
        --threads "$T" $H | sed -n 's/.*"run":\([0-9]*\).*/\1/p' | tail -n 1)
    $P export --run "$run" --out "$DIR/bf16" --dtype bf16 $H >/dev/null
    $P quantize --model "$F32" --out "$DIR/q4_0" --type q4_0 >/dev/null
    touch "$DIR/ready"
}

# config_args NAME: the base model, then the settings (each with the rate tuned for it).
config_model() {
    case $1 in
    f32 | lora-*) echo "$F32" ;;
    bf16) echo "$DIR/bf16" ;;
    q4-*) echo "$DIR/q4_0" ;;
    *) echo "unknown configuration $1" >&2; exit 2 ;;
    esac
}
config_args() {
    case $1 in
    f32 | bf16) echo "--lr 1e-4 --eps 1e-3" ;; # the demo's rate (2e-4 overshoots)
    lora-qv) echo "--trainable lora:r=8,alpha=16 --lr 2e-3 --eps 1e-2 --schedule cosine" ;;
    lora-all) echo "--trainable lora:r=8,alpha=16,targets=$ALL --lr 1e-3 --eps 1e-2 --schedule cosine" ;;
    q4-lora-all) echo "--trainable lora:r=8,alpha=16,targets=$ALL --lr 7e-4 --eps 1e-2 --schedule cosine" ;;
    q4-scales) echo "--trainable scales --lr 1e-5 --eps 1e-4" ;; # a scale weighs 32 weights
    esac
}

heldout_loss() { # heldout_loss MODEL
    $P eval --model "$1" --dataset pip-heldout --batch 16 --seq-len 64 --threads "$T" $H |
        sed -n 's/.*"loss":\([-0-9.eE+]*\).*/\1/p'
}

run_one() { # run_one CONFIG: out/CONFIG.jsonl (training), out/CONFIG.replay (the replay's line)
    out="$DIR/out/$1.jsonl"
    [ -s "$DIR/out/$1.replay" ] && return 0
    m=$(config_model "$1")
    echo "run $1" >&2
    heldout_loss "$m" >"$DIR/out/$1.before"
    $P train --model "$m" --dataset pip --eval-dataset pip-heldout --objective lm --batch 16 \
        --seq-len 64 --steps "$STEPS" --eval-every $((STEPS / 8)) --seed 20261121 --threads "$T" \
        --json --quiet --checkpoint-every 0 $(config_args "$1") $H >"$out"
    run=$(sed -n 's/.*"run":\([0-9]*\).*/\1/p' "$out" | tail -n 1)
    rm -f "$DIR/out/$1.seedlog"
    $P export --run "$run" --seed-log "$DIR/out/$1.seedlog" $H >/dev/null
    rm -rf "$DIR/out/$1-replayed"
    $P replay --seed-log "$DIR/out/$1.seedlog" --model "$m" --out "$DIR/out/$1-replayed" \
        --threads 2 $H | tail -n 1 >"$DIR/out/$1.replay"
}

field() { # field KEY FILE: the last value of "KEY": in FILE
    sed -n "s/.*\"$1\":\"\{0,1\}\([-0-9a-zA-Z.+]*\).*/\1/p" "$2" | tail -n 1
}

summarize() {
    f32_before=$(cat "$DIR/out/f32.before")
    f32_after=$(grep '"event":"eval"' "$DIR/out/f32.jsonl" | tail -n 1 | sed 's/.*"loss":\([-0-9.eE+]*\).*/\1/')
    printf '%-12s %-9s %-9s %-9s %-9s %-10s %s\n' config before best after reduction "of f32" replay
    for c in $CONFIGS; do
        [ -s "$DIR/out/$c.replay" ] || { printf '%-12s (not run)\n' "$c"; continue; }
        before=$(cat "$DIR/out/$c.before")
        evals=$(grep '"event":"eval"' "$DIR/out/$c.jsonl" | sed 's/.*"loss":\([-0-9.eE+]*\).*/\1/')
        after=$(echo "$evals" | tail -n 1)
        best=$(echo "$evals" | sort -g | head -n 1)
        trained=$(field weights "$DIR/out/$c.jsonl")
        replayed=$(field weights "$DIR/out/$c.replay")
        same=$([ "$trained" = "$replayed" ] && echo bit-exact || echo "DIFFERS ($trained vs $replayed)")
        awk -v c="$c" -v b="$before" -v best="$best" -v a="$after" -v fb="$f32_before" -v fa="$f32_after" -v s="$same" \
            'BEGIN { printf "%-12s %-9.4f %-9.4f %-9.4f %-9.4f %-10.2f %s\n", c, b, best, a, b - a, (b - a) / (fb - fa), s }'
    done
}

setup
for c in $CONFIGS; do run_one "$c"; done
summarize
