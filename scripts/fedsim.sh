#!/bin/sh
# fedsim.sh: the fedsim experiments of docs/FEDSIM.md, reproducible from this script.
#   sh scripts/fedsim.sh data DIR          writes DIR/train.jsonl and DIR/eval.jsonl: a small
#                                          two-label task ("good" / "bad" short stories)
#   sh scripts/fedsim.sh measure BUILD OUT accuracy vs rounds for K = 4096 and 64, with and
#                                          without DP, against the centralized baseline (auto);
#                                          two runs at a time
#   sh scripts/fedsim.sh baselines BUILD OUT  the K = 4096 run with the centralized baseline at
#                                          rates 1e-5, 3e-5, 5e-5, 1e-4 (one run each)
#   sh scripts/fedsim.sh fedlr BUILD OUT   the federated runs (K = 64, 4096) at lr 1e-4 and 5e-4
#   sh scripts/fedsim.sh fzoo BUILD OUT    the same task with --estimator fzoo (7 perturbations,
#                                          1 FZOO step a round: the same 640 evaluations),
#                                          federated lr 2e-4 / 2e-3 / 1e-2, baselines 3e-3 / 1e-2 / 3e-2
#   sh scripts/fedsim.sh scale BUILD OUT   200 devices x 10 rounds (lm objective), log check
# BUILD is a cmake build directory (BUILD/cli/pocketllm); OUT receives one folder per run.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
model="$here/models/stories260k"

# Deterministic: every (name, event) pair once, labels from the event list.
gen_data() {
    mkdir -p "$1"
    awk -v out="$1" 'BEGIN {
        split("Lily Tom Sue Ben Mia Max Amy Sam Tim Zoe Kim Dan Ann Joe Eva Bob", nm, " ");
        split("found a shiny red ball and smiled|got a big hug from mom and laughed|" \
              "played in the warm sun with a friend|ate a sweet cake at the party|" \
              "saw a pretty bird sing in the tree|won the race and jumped with joy|" \
              "made a new friend at the park|got a kind gift from grandma", good, "|");
        split("broke the little toy and cried|lost the ball in the cold rain|" \
              "fell down and hurt a knee|was alone and scared in the dark|" \
              "dropped the ice cream on the ground|saw the old dog get sick|" \
              "could not find mom in the big store|had a bad dream and woke up crying", bad, "|");
        n = 0;
        for (i = 1; i <= 16; i++)
            for (j = 1; j <= 8; j++) {
                for (g = 0; g < 2; g++) {
                    ev = g == 0 ? good[j] : bad[j];
                    lab = g == 0 ? "good" : "bad";
                    line = sprintf("{\"text\":\"%s %s.\",\"label\":\"%s\"}", nm[i], ev, lab);
                    # every fifth pair is held out for eval
                    f = (n % 5 == 4) ? out "/eval.jsonl" : out "/train.jsonl";
                    print line > f;
                    n++;
                }
            }
    }'
}


cmd=${1:-}
case "$cmd" in
data)
    gen_data "${2:?DIR}"
    ;;
measure)
    # the five runs, two at a time (each --parallel 1; the machine is shared), as measured for
    # docs/FEDSIM.md; the baseline (on the k4096 run) searches its own rate (auto, backed off
    # while it diverges); k64-dp8 is the DP setting with epsilon ~8
    build=${2:?BUILD}; out=${3:?OUT}
    gen_data "$out/data"
    n=0
    for cfg in "k4096 --pool 4096 --baseline --baseline-lr auto" "k64 --pool 64" \
        "k4096-dp --pool 4096 --dp-clip 5 --dp-noise 1" "k64-dp --pool 64 --dp-clip 5 --dp-noise 1" \
        "k64-dp8 --pool 64 --dp-clip 1 --dp-noise 8"; do
        name=${cfg%% *}; flags=${cfg#* }
        # shellcheck disable=SC2086 # flags are words
        "$build/cli/pocketllm" fedsim --model "$model" --data "$out/data/train.jsonl" \
            --eval-data "$out/data/eval.jsonl" --objective classify \
            --template '{text} The day was' --labels ' good, bad' --devices 8 \
            --split dirichlet:0.5 --rounds 10 --local-steps 4 --batch 8 --seq-len 32 \
            --lr 2e-4 --eps 1e-3 --seed 11 --parallel 1 --json $flags --out "$out/$name" \
            > "$out/$name.jsonl" 2> "$out/$name.err" &
        n=$((n + 1))
        if [ $((n % 2)) -eq 0 ]; then wait; fi
    done
    wait
    for name in k4096 k64 k4096-dp k64-dp k64-dp8; do
        echo "$name: $(tail -n 1 "$out/$name.jsonl")"
    done
    ;;
baselines)
    build=${2:?BUILD}; out=${3:?OUT}
    gen_data "$out/data"
    for lr in 1e-5 3e-5 5e-5 1e-4; do
        "$build/cli/pocketllm" fedsim --model "$model" --data "$out/data/train.jsonl" \
            --eval-data "$out/data/eval.jsonl" --objective classify \
            --template '{text} The day was' --labels ' good, bad' --devices 8 \
            --split dirichlet:0.5 --rounds 10 --local-steps 4 --batch 8 --seq-len 32 \
            --lr 2e-4 --eps 1e-3 --seed 11 --parallel 1 --json --pool 4096 \
            --baseline --baseline-lr "$lr" --out "$out/bl-$lr" \
            > "$out/bl-$lr.jsonl" 2> "$out/bl-$lr.err" &
    done
    wait
    for lr in 1e-5 3e-5 5e-5 1e-4; do
        echo "baseline lr $lr: $(tail -n 1 "$out/bl-$lr.jsonl" | sed 's/.*"baseline":{"steps"/{"steps"/')"
    done
    ;;
fedlr)
    build=${2:?BUILD}; out=${3:?OUT}
    gen_data "$out/data"
    for cfg in "k64-lr1e-4 --pool 64 --lr 1e-4" "k64-lr5e-4 --pool 64 --lr 5e-4" \
        "k4096-lr1e-4 --pool 4096 --lr 1e-4" "k4096-lr5e-4 --pool 4096 --lr 5e-4"; do
        name=${cfg%% *}; flags=${cfg#* }
        # shellcheck disable=SC2086 # flags are words
        "$build/cli/pocketllm" fedsim --model "$model" --data "$out/data/train.jsonl" \
            --eval-data "$out/data/eval.jsonl" --objective classify \
            --template '{text} The day was' --labels ' good, bad' --devices 8 \
            --split dirichlet:0.5 --rounds 10 --local-steps 4 --batch 8 --seq-len 32 \
            --eps 1e-3 --seed 11 --parallel 1 --json $flags --out "$out/$name" \
            > "$out/$name.jsonl" 2> "$out/$name.err" &
    done
    wait
    for name in k64-lr1e-4 k64-lr5e-4 k4096-lr1e-4 k4096-lr5e-4; do
        echo "$name: $(tail -n 1 "$out/$name.jsonl")"
    done
    ;;
fzoo)
    build=${2:?BUILD}; out=${3:?OUT}
    gen_data "$out/data"
    for cfg in "fz-k64-lr2e-4 --pool 64 --lr 2e-4" "fz-k64-lr2e-3 --pool 64 --lr 2e-3" \
        "fz-k64-lr1e-2-bl3e-3 --pool 64 --lr 1e-2 --baseline --baseline-lr 3e-3" \
        "fz-k64-lr1e-2-bl3e-2 --pool 64 --lr 1e-2 --baseline --baseline-lr 3e-2" \
        "fz-k4096-lr1e-2-bl1e-2 --pool 4096 --lr 1e-2 --baseline --baseline-lr 1e-2"; do
        name=${cfg%% *}; flags=${cfg#* }
        # shellcheck disable=SC2086 # flags are words
        "$build/cli/pocketllm" fedsim --model "$model" --data "$out/data/train.jsonl" \
            --eval-data "$out/data/eval.jsonl" --objective classify \
            --template '{text} The day was' --labels ' good, bad' --devices 8 \
            --split dirichlet:0.5 --rounds 10 --local-steps 1 --estimator fzoo \
            --perturbations 7 --batch 8 --seq-len 32 --eps 1e-3 --seed 11 --parallel 1 --json \
            $flags --out "$out/$name" > "$out/$name.jsonl" 2> "$out/$name.err" &
    done
    wait
    for name in fz-k64-lr2e-4 fz-k64-lr2e-3 fz-k64-lr1e-2-bl3e-3 fz-k64-lr1e-2-bl3e-2 \
        fz-k4096-lr1e-2-bl1e-2; do
        echo "$name: $(tail -n 1 "$out/$name.jsonl")"
    done
    ;;
scale)
    build=${2:?BUILD}; out=${3:?OUT}
    gen_data "$out/data"
    /usr/bin/time -v "$build/cli/pocketllm" fedsim --model "$model" \
        --data "$out/data/train.jsonl" --eval-data "$out/data/eval.jsonl" \
        --devices 200 --rounds 10 --local-steps 2 --pool 4096 --trainable bitfit --batch 1 \
        --seq-len 32 --lr 1e-3 \
        --split iid --seed 5 --parallel 2 --json --out "$out/scale200" \
        2> "$out/scale200.time" | tee "$out/scale200.jsonl" | tail -n 1 > "$out/scale200.summary.json"
    cat "$out/scale200.summary.json"
    grep -E "Elapsed|Maximum resident" "$out/scale200.time"
    ;;
*)
    sed -n 2,14p "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
