#!/bin/sh
# convergence.sh: time to quality of the estimators on the real stories260k (models/), two tasks:
#   lm:       the demo's personal notes (demo/data/train.txt), held-out loss on heldout.txt
#   classify: a happy/sad story task generated below in the style the model knows (label words
#             " happy" / " sad", k=16 examples per class, 240 held-out test examples)
# For each configuration and seed it runs `pocketllm train --json` with 40 evals over a budget of
# loss evaluations equal to default MeZO's at the reference step count, then reports, against the quality default MeZO (spsa) reaches at the reference step count
# (800 lm, 1000 classify; mean over the seeds): steps, loss evaluations and training seconds to
# reach it (mean and min-max over seeds), and the final quality. Evaluations and steps are
# exact; seconds depend on the machine's load.
# Environment: PK_CONV_DIR (work dir, default /tmp/pocketllm-conv), PK_CONV_SEEDS ("1 2 3"),
# PK_CONV_CONFIGS (names below), PK_CONV_TASKS ("lm classify"), PK_CONV_THREADS (2),
# PK_POCKETLLM (binary; default: build/ after a Release build).
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DIR="${PK_CONV_DIR:-/tmp/pocketllm-conv}"
SEEDS="${PK_CONV_SEEDS:-1 2 3}"
TASKS="${PK_CONV_TASKS:-lm classify}"
CONFIGS="${PK_CONV_CONFIGS:-spsa fzoo fzoo-cosine hizoo spsa-layers fzoo-layers}"
T="${PK_CONV_THREADS:-2}"
if [ -z "${PK_POCKETLLM:-}" ]; then
    cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build build -j "$T" --target pocketllm >/dev/null
    PK_POCKETLLM=$ROOT/build/cli/pocketllm
fi
P=$PK_POCKETLLM
MODEL=$ROOT/models/stories260k
mkdir -p "$DIR/out"
HOME_DIR="$DIR/home"
PASS="$DIR/pass"
printf 'convergence benchmark\n' >"$PASS"
chmod 600 "$PASS"
H="--home $HOME_DIR --passphrase-file $PASS"

# The classification task: a short story, then "They felt" and the label word.
gen_classify() { # gen_classify SEED COUNT_PER_CLASS OUT
    awk -v seed="$1" -v k="$2" 'BEGIN {
        srand(seed);
        split("Lily Tom Sue Ben Anna Max Mia Sam Lucy Tim", name, " ");
        split("got a new red ball|found a pretty flower in the garden|played with a kind friend|ate a big sweet cake|saw a rainbow in the sky|won the race at the park|got a hug from mom|made a new friend at school|found a shiny stone by the lake|got a puppy for her birthday", good, "|");
        split("lost the red ball|fell and hurt a knee|broke a favorite cup|saw the rain ruin the picnic|could not find mom in the shop|dropped the ice cream on the ground|had a toy taken by a big boy|missed the bus to the park|saw the kite tear in the tree|got lost in the dark woods", bad, "|");
        for (i = 0; i < 2 * k; i++) {
            c = i % 2; n = 1 + int(rand() * 10); e = 1 + int(rand() * 10);
            ev = c == 0 ? good[e] : bad[e];
            printf "{\"text\": \"One day, %s %s.\", \"label\": %d}\n", name[n], ev, c;
        }
    }' >"$3"
}

setup() {
    [ -f "$DIR/ready" ] && return 0
    rm -rf "$HOME_DIR"
    $P init $H --opslimit 1 --memlimit 8192 >/dev/null
    $P import "$ROOT/demo/data/train.txt" --dataset notes $H >/dev/null
    $P import "$ROOT/demo/data/heldout.txt" --dataset notes-heldout $H >/dev/null
    gen_classify 11 16 "$DIR/cls-train.jsonl"  # k = 16 per class
    gen_classify 23 120 "$DIR/cls-test.jsonl"  # 240 held-out examples
    $P import "$DIR/cls-train.jsonl" --dataset cls $H >/dev/null
    $P import "$DIR/cls-test.jsonl" --dataset cls-test $H >/dev/null
    touch "$DIR/ready"
}

# The settings of each configuration (after the task's own). Rates: spsa, hizoo and spsa-layers
# the demo's; fzoo and fzoo-layers chosen by --lr auto on the training set's held-back slice;
# fzoo-cosine the rate --lr auto chose for fzoo on the notes, decayed (cosine) to 0.
config_args() {
    case $1 in
    spsa) echo "--estimator spsa --lr $2" ;;
    fzoo) echo "--estimator fzoo --perturbations 8 --lr auto" ;;
    fzoo-cosine) echo "--estimator fzoo --perturbations 8 --lr 3e-3 --schedule cosine" ;;
    hizoo) echo "--estimator hizoo --hessian-budget 1.5 --hessian-smooth 1e-6 --lr $2" ;;
    spsa-layers) echo "--estimator spsa --perturb-layers 2 --lr $2" ;;
    fzoo-layers) echo "--estimator fzoo --perturbations 8 --perturb-layers 2 --lr auto" ;;
    *) echo "unknown configuration $1" >&2; exit 2 ;;
    esac
}

# Every configuration gets default MeZO's budget of loss evaluations (2 per step x the
# reference steps), so its step count is that budget over its evaluations per step.
evals_per_step() {
    case $1 in
    fzoo*) echo 9 ;;
    hizoo*) echo 3 ;;
    *) echo 2 ;;
    esac
}

task_args() { # task_args TASK CONFIG
    ref=$( [ "$1" = lm ] && echo 800 || echo 1000 )
    steps=$((ref * 2 / $(evals_per_step "$2")))
    every=$((steps / 40))
    case $1 in
    lm) echo "--dataset notes --eval-dataset notes-heldout --objective lm --batch 16 --seq-len 64 --steps $steps --eval-every $every" ;;
    classify) echo "--dataset cls --eval-dataset cls-test --objective classify --template {text}_They_felt --labels _happy,_sad --batch 16 --seq-len 48 --steps $steps --eval-every $every" ;;
    esac
}

task_lr() { echo 1e-4; } # the demo's rate (2e-4 overshoots on the notes)

run_one() { # run_one TASK CONFIG SEED
    out="$DIR/out/$1-$2-$3.jsonl"
    [ -s "$out" ] && grep -q '"weights"' "$out" && return 0
    # the template and labels carry spaces: '_' in task_args stands for one
    args=$(task_args "$1" "$2")
    tmpl=$(echo "$args" | sed -n 's/.*--template \([^ ]*\).*/\1/p' | tr _ ' ')
    labs=$(echo "$args" | sed -n 's/.*--labels \([^ ]*\).*/\1/p' | tr _ ' ')
    args=$(echo "$args" | sed 's/--template [^ ]*//; s/--labels [^ ]*//')
    echo "run $1 $2 seed $3" >&2
    if [ -n "$tmpl" ]; then
        $P train --model "$MODEL" $args --template "$tmpl" --labels "$labs" $(config_args "$2" "$(task_lr "$1")") \
            --seed "$3" --threads "$T" --json --checkpoint-every 0 $H >"$out"
    else
        $P train --model "$MODEL" $args $(config_args "$2" "$(task_lr "$1")") \
            --seed "$3" --threads "$T" --json --checkpoint-every 0 $H >"$out"
    fi
}

# One line per (task, config): the quality target from spsa's final evals, then per seed the
# first eval event at or past it.
summarize() { # summarize TASK
    ref_steps=$( [ "$1" = lm ] && echo 800 || echo 1000 )
    files=""
    for c in $CONFIGS; do for s in $SEEDS; do files="$files $DIR/out/$1-$c-$s.jsonl"; done; done
    awk -v task="$1" -v ref="$ref_steps" -v configs="$CONFIGS" -v seeds="$SEEDS" -v dir="$DIR/out" '
    function num(line, key,   m) {
        if (match(line, "\"" key "\":[-0-9.eE+]+")) return substr(line, RSTART + length(key) + 3, RLENGTH - length(key) - 3) + 0;
        return "";
    }
    BEGIN {
        nc = split(configs, C, " "); ns = split(seeds, S, " ");
        metric = task == "lm" ? "loss" : "accuracy";
        # the target: spsa at the reference step, mean over seeds
        t = 0; tn = 0;
        for (j = 1; j <= ns; j++) {
            f = dir "/" task "-spsa-" S[j] ".jsonl";
            while ((getline l < f) > 0)
                if (l ~ /"event":"eval"/ && num(l, "step") == ref) { t += num(l, metric); tn++ }
            close(f);
        }
        if (tn == 0) { print task ": no spsa reference yet"; exit }
        target = t / tn;
        printf "%s: target %s %s %.4f (spsa at step %d, mean of %d seeds)\n", task, (task == "lm" ? "held-out loss <=" : "test accuracy >="), "", target, ref, tn;
        printf "  %-12s %-22s %-26s %-22s %s\n", "config", "steps mean [min-max]", "evaluations mean [min-max]", "seconds mean [min-max]", "final " metric;
        for (i = 1; i <= nc; i++) {
            split("", st); split("", ev); split("", se); hit = 0; fin = 0; nf = 0;
            for (j = 1; j <= ns; j++) {
                f = dir "/" task "-" C[i] "-" S[j] ".jsonl"; got = 0; last = "";
                while ((getline l < f) > 0) {
                    if (l !~ /"event":"eval"/) continue;
                    v = num(l, metric); last = v;
                    ok = task == "lm" ? v <= target : v >= target;
                    if (ok && !got) { got = 1; hit++; st[hit] = num(l, "step"); ev[hit] = num(l, "evaluations"); se[hit] = num(l, "elapsed_s") }
                }
                close(f);
                if (last != "") { fin += last; nf++ }
            }
            printf "  %-12s ", C[i];
            if (hit == 0) { printf "%-22s %-26s %-22s", "not reached", "-", "-" }
            else {
                printf "%-22s %-26s %-22s", stat(st, hit), stat(ev, hit), stat(se, hit);
            }
            printf " %s (%d/%d seeds reached)\n", nf ? sprintf("%.4f", fin / nf) : "-", hit, ns;
        }
    }
    function stat(a, n,   i, s, lo, hi) {
        s = 0; lo = a[1]; hi = a[1];
        for (i = 1; i <= n; i++) { s += a[i]; if (a[i] < lo) lo = a[i]; if (a[i] > hi) hi = a[i] }
        return sprintf("%.0f [%g-%g]", s / n, lo, hi);
    }' </dev/null
}

setup
# seeds outermost: an interrupted benchmark has whole seeds to summarize
for s in $SEEDS; do
    for task in $TASKS; do
        for c in $CONFIGS; do run_one "$task" "$c" "$s"; done
    done
done
for task in $TASKS; do summarize "$task"; done
