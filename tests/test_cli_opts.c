/* test_cli_opts.c: the option tables of the engine and trainer commands (forward, generate,
 * make-model, bench forward, eval, replay, runs, mezo-probe, bench mezo) through the built
 * `pocketllm`: malformed, out-of-range, unknown and value-less options exit 2 naming the flag; a
 * repeated option takes its last value; --threads above the cores is capped with a note; --help
 * exits 0 and lists every option; then the commands themselves on stories260k, in a fresh home
 * with a two-step run. */
#include "pk_common.h"
#include "pk_test.h"
/* this test starts no server-mock: the header's server helpers stay unused */
#include "json_test_util.h"
#include "test_product_util.h"

#include <cjson/cJSON.h>
#include <stdarg.h>

#define STORIES PK_SHARED_DIR "/testdata/models/stories260k"
#define PASS    "cli-opts-test-passphrase"
#define IDS     "1,403,407,261,378,432"

static char tmp[128]; /* the test's temporary directory */

static double num(const cJSON *j, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

/* `pocketllm ARGS` must exit 2 with an error naming flag. */
static void usage_error(const char *args, const char *flag)
{
    PK_CHECK(run_expect(2, flag, "%s %s", POCKETLLM, args));
}

/* ---- 1. parse errors ------------------------------------------------------------------------ */

static const char *const commands[] = {"eval",       "replay",     "runs list",
                                       "mezo-probe", "bench mezo", "forward",
                                       "generate",   "make-model", "bench forward"};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void test_parse_errors(void)
{
    /* out of range */
    usage_error("train --seed 18446744073709551616", "--seed");
    usage_error("eval --batch 0", "--batch");
    usage_error("replay --run 0", "--run");
    usage_error("bench mezo --model " STORIES " --steps 1001", "--steps");
    usage_error("bench mezo --model " STORIES " --perturbations 0", "--perturbations");
    usage_error("generate --top-p 2", "--top-p");
    usage_error("mezo-probe --eps 0", "--eps");
    usage_error("forward --threads 0", "--threads");
    /* malformed */
    usage_error("train --lr abc", "--lr");
    usage_error("eval --seq-len 12x", "--seq-len");
    usage_error("make-model --seed -1", "--seed");
    usage_error("bench forward --reps 1.5", "--reps");
    usage_error("generate --temperature nan", "--temperature");
    usage_error("mezo-probe --z uniform", "--z");
    usage_error("eval --objective mse", "--objective");
    /* the token id lists, one parser for every command */
    usage_error("forward --model " STORIES " --ids 1,,2", "--ids");
    usage_error("mezo-probe --model " STORIES " --ids 1,x", "--ids");
    usage_error("generate --model " STORIES " --ids=-1 --max-new 1", "--ids");
    /* unknown options and missing values, in every command */
    for (size_t i = 0; i < N_COMMANDS; i++) {
        char args[128];
        snprintf(args, sizeof args, "%s --no-such-option", commands[i]);
        usage_error(args, "--no-such-option");
    }
    usage_error("forward --model", "--model");
    usage_error("eval --dataset", "--dataset");
    usage_error("runs list --home", "--home");
    usage_error("bench forward --batch", "--batch");
    usage_error("forward --ids 1 --json", "--json"); /* a flag of other commands */
}

/* ---- 2. --help ------------------------------------------------------------------------------ */

typedef struct help_case {
    const char *cmd;
    const char *opts[16]; /* NULL-terminated */
} help_case;

static const help_case helps[] = {
    {"eval",
     {"--model", "--run", "--dataset", "--objective", "--template", "--labels", "--batch",
      "--seq-len", "--threads", "--home", "--passphrase-file", NULL}},
    {"replay",
     {"--run", "--out", "--seed-log", "--model", "--write-seed-log", "--threads", "--home",
      "--passphrase-file", NULL}},
    {"runs", {"--json", "--home", "--passphrase-file", NULL}},
    {"mezo-probe",
     {"--model", "--ids", "--seed", "--eps", "--z-out", "--trainable", "--z", "--threads", NULL}},
    {"bench mezo", {"--model", "--batch", "--seq", "--steps", "--threads", NULL}},
    {"forward", {"--model", "--ids", "--out", "--threads", NULL}},
    {"generate",
     {"--model", "--run", "--ids", "--prompt", "--max-new", "--temperature", "--top-k", "--top-p",
      "--seed", "--ignore-eos", "--json", "--threads", "--home", "--passphrase-file", NULL}},
    {"make-model", {"--arch", "--preset", "--out", "--dtype", "--seed", NULL}},
    {"bench forward", {"--model", "--batch", "--seq", "--reps", "--threads", NULL}},
};

static void test_help(void)
{
    for (size_t i = 0; i < sizeof helps / sizeof helps[0]; i++) {
        char *o = NULL;
        PK_CHECK_EQ(run_fmt(&o, RUN_MERGE_STDERR, "%s %s --help", POCKETLLM, helps[i].cmd), 0);
        PK_CHECK(o != NULL && strstr(o, "usage: pocketllm ") == o);
        for (int k = 0; helps[i].opts[k]; k++) {
            char line[64]; /* an option line of the help: two spaces, the name, then a space */
            snprintf(line, sizeof line, "\n  %s ", helps[i].opts[k]);
            int listed = o != NULL && strstr(o, line) != NULL;
            PK_CHECK(listed);
            if (!listed)
                fprintf(stderr, "  %s --help does not list %s\n", helps[i].cmd, helps[i].opts[k]);
        }
        free(o);
    }
}

/* ---- 3. repeated options, --threads capping ------------------------------------------------- */

static int make_model(const char *seeds, const char *name)
{
    return run_fmt(NULL, RUN_MERGE_STDERR,
                   "%s make-model --arch llama --preset tiny --out %s/%s %s", POCKETLLM, tmp, name,
                   seeds);
}

static void test_repeated(void)
{
    PK_CHECK_EQ(make_model("--seed 1 --seed 2", "m12"), 0);
    PK_CHECK_EQ(make_model("--seed 2", "m2"), 0);
    PK_CHECK_EQ(make_model("--seed=1", "m1"), 0);
    char a[300], b[300], c[300];
    snprintf(a, sizeof a, "%s/m12/model.safetensors", tmp);
    snprintf(b, sizeof b, "%s/m2/model.safetensors", tmp);
    snprintf(c, sizeof c, "%s/m1/model.safetensors", tmp);
    PK_CHECK(file_bytes(a) > 0);
    PK_CHECK(files_equal(a, b));  /* the last --seed counts ... */
    PK_CHECK(!files_equal(a, c)); /* ... and the seed matters */

    /* generate: the last --max-new bounds the output (greedy, EOS ignored) */
    cJSON *j = NULL;
    PK_CHECK_EQ(run_json(&j, RUN_MERGE_STDERR,
                         "%s generate --model %s --ids 1,403 --max-new 9 --max-new 3 "
                         "--ignore-eos --json --threads 1",
                         POCKETLLM, STORIES),
                0);
    PK_CHECK_EQ(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "ids")), 5);
    PK_CHECK(strncmp(json_str(j, "text"), "Once upon", 9) == 0);
    cJSON_Delete(j);
}

/* generate's refusals of bad input name the flag to change, never the library's terms
 * (prompt_ids, max_new, token ids); exit 1. Models: stories260k (512 ids, 512 positions) and
 * test_repeated's m1 (no tokenizer files). */
static void test_generate_errors(void)
{
    PK_CHECK(run_expect(1, "pocketllm generate: --ids: id 600 is outside the vocabulary (size 512)",
                        "%s generate --model %s --ids 1,600 --max-new 2", POCKETLLM, STORIES));
    PK_CHECK(run_expect(1,
                        "pocketllm generate: --max-new 600: the prompt's 2 tokens and 600 new "
                        "ones exceed the model's 512 positions (at most --max-new 510 here)",
                        "%s generate --model %s --ids 1,403 --max-new 600", POCKETLLM, STORIES));
    PK_CHECK(run_expect(1, "pocketllm generate: --max-new 1000: the prompt's ",
                        "%s generate --model %s --prompt 'Once upon a time' --max-new 1000",
                        POCKETLLM, STORIES));
    char words[2100] = "";
    for (int i = 0; i < 520; i++)
        strcat(words, "cat ");
    PK_CHECK(run_expect(1, " tokens leave no room in the model's 512 positions",
                        "%s generate --model %s --prompt '%s' --max-new 1", POCKETLLM, STORIES,
                        words));
    PK_CHECK(run_expect(1,
                        "pocketllm generate: --prompt: the model directory has no tokenizer "
                        "files to encode a text prompt; give the prompt as token ids with --ids",
                        "%s generate --model %s/m1 --prompt hi --max-new 2", POCKETLLM, tmp));
    PK_CHECK(run_expect(1, "pocketllm generate: --model: /nonexistent-pk-model/config.json: ",
                        "%s generate --model /nonexistent-pk-model --ids 1 --max-new 2",
                        POCKETLLM));
    char *o = NULL;
    PK_CHECK_EQ(run_fmt(&o, RUN_MERGE_STDERR, "%s generate --model %s --ids 1,600 --max-new 600",
                        POCKETLLM, STORIES),
                1);
    PK_CHECK(o != NULL && strstr(o, "max_new") == NULL && strstr(o, "prompt id") == NULL);
    free(o);
}

static void test_threads_cap(void)
{
    char *o = NULL;
    PK_CHECK_EQ(run_fmt(&o, RUN_MERGE_STDERR, "%s forward --model %s --ids " IDS " --threads 64",
                        POCKETLLM, STORIES),
                0);
    PK_CHECK(o != NULL && strstr(o, "loss ") != NULL);
    if (sysconf(_SC_NPROCESSORS_ONLN) < 64)
        PK_CHECK(o != NULL && strstr(o, "note: --threads 64 is more than the") != NULL);
    free(o);
}

/* ---- 4. the commands on stories260k --------------------------------------------------------- */

static void test_probe_and_bench(void)
{
    char *o = NULL, *o2 = NULL;
    PK_CHECK_EQ(run_fmt(&o, RUN_MERGE_STDERR,
                        "%s mezo-probe --model %s --ids " IDS " --seed 3 --seed 4 --eps 1e-3 "
                        "--threads 1",
                        POCKETLLM, STORIES),
                0);
    PK_CHECK_EQ(run_fmt(&o2, RUN_MERGE_STDERR,
                        "%s mezo-probe --model %s --ids " IDS " --seed 4 --eps 1e-3 "
                        "--threads 1",
                        POCKETLLM, STORIES),
                0);
    PK_CHECK(o != NULL && o2 != NULL && strcmp(o, o2) == 0); /* bit-identical, last seed */
    cJSON *j = last_json(o);
    PK_CHECK(num(j, "loss_plus") > 0 && num(j, "loss_minus") > 0);
    PK_CHECK(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(j, "g")));
    cJSON_Delete(j);
    free(o);
    free(o2);

    PK_CHECK_EQ(run_json(&j, RUN_MERGE_STDERR,
                         "%s bench mezo --model %s --batch 1 --seq 8 --steps 1 --threads 1",
                         POCKETLLM, STORIES),
                0);
    PK_CHECK_EQ(num(j, "batch"), 1);
    PK_CHECK(num(j, "step_s") >= 0 && num(j, "weight_bytes") > 0);
    PK_CHECK(cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(j, "paired")));
    PK_CHECK(num(j, "gflops_sgemm") > 0 && num(j, "gemm_floor_s") > 0 && num(j, "floor_ratio") > 0);
    PK_CHECK(cJSON_GetObjectItemCaseSensitive(j, "sweep_eval_s") == NULL); /* no --perturbations */
    cJSON_Delete(j);
    /* N perturbations in one sweep against N separate passes: the same losses */
    PK_CHECK_EQ(run_json(&j, RUN_MERGE_STDERR,
                         "%s bench mezo --model %s --batch 2 --seq 8 --steps 1 --threads 2 "
                         "--perturbations 3",
                         POCKETLLM, STORIES),
                0);
    PK_CHECK_EQ(num(j, "perturbations"), 3);
    PK_CHECK(num(j, "sweep_eval_s") > 0 && num(j, "separate_eval_s") > 0);
    PK_CHECK(num(j, "sweep_speedup") > 0 && num(j, "pass_bytes") > 0);
    PK_CHECK(num(j, "sweep_width_auto") >= 1 && num(j, "sweep_width_auto") <= 3);
    PK_CHECK(num(j, "sweep_activation_bytes") >= 3 * num(j, "pass_bytes"));
    PK_CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "sweep_same_bits")));
    cJSON_Delete(j);
    PK_CHECK_EQ(run_json(&j, RUN_MERGE_STDERR,
                         "%s bench forward --model %s --batch 1 --seq 8 --reps 1 --threads 1",
                         POCKETLLM, STORIES),
                0);
    PK_CHECK(!strcmp(json_str(j, "arch"), "llama") && num(j, "tokens_per_s") > 0);
    PK_CHECK(num(j, "gemm_floor_s") > 0 && num(j, "floor_ratio") > 0);
    cJSON_Delete(j);
}

/* init + import + a two-step run in tmp/home; returns the run id (0 on failure), its hash. */
static long long setup_run(char *hash, size_t n)
{
    char home[200];
    snprintf(home, sizeof home, "%s/home", tmp);
    PK_CHECK_EQ(init_pip_home(home), 0);
    cJSON *j = NULL;
    PK_CHECK_EQ(run_json(&j, RUN_MERGE_STDERR,
                         "%s train --model %s --dataset pip --steps 2 --batch 2 --seq-len 32 "
                         "--threads 1 --quiet --home %s/home",
                         POCKETLLM, STORIES, tmp),
                0);
    long long run = (long long)num(j, "run");
    snprintf(hash, n, "%s", json_str(j, "weights"));
    cJSON_Delete(j);
    return run > 0 && strlen(hash) == 64 ? run : 0;
}

static void test_runs(long long run)
{
    char *o = NULL;
    cJSON *j = NULL;
    PK_CHECK_EQ(
        run_json(&j, RUN_MERGE_STDERR, "%s runs list --json --home %s/home", POCKETLLM, tmp), 0);
    PK_CHECK_EQ(num(j, "run"), run);
    PK_CHECK(!strcmp(json_str(j, "dataset"), "pip") && !strcmp(json_str(j, "objective"), "lm"));
    cJSON_Delete(j);
    PK_CHECK_EQ(run_json(&j, RUN_MERGE_STDERR, "%s runs show %lld --json --home %s/home", POCKETLLM,
                         run, tmp),
                0);
    PK_CHECK(!strcmp(json_str(j, "status"), "done") && num(j, "steps_done") == 2);
    PK_CHECK(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(j, "config")));
    PK_CHECK(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, "evals")));
    cJSON_Delete(j);
    PK_CHECK_EQ(
        run_fmt(&o, RUN_MERGE_STDERR, "%s runs show %lld --home %s/home", POCKETLLM, run, tmp), 0);
    PK_CHECK(o != NULL && strstr(o, "status done\nsteps 2/2\n") != NULL);
    free(o);
    PK_CHECK_EQ(run_fmt(NULL, RUN_MERGE_STDERR, "%s runs show 999 --home %s/home", POCKETLLM, tmp),
                1);
}

static void test_eval_generate(long long run)
{
    cJSON *j = NULL;
    PK_CHECK_EQ(run_json(&j, RUN_MERGE_STDERR,
                         "%s eval --run %lld --dataset pip --batch 4 --threads 1 --home %s/home",
                         POCKETLLM, run, tmp),
                0);
    PK_CHECK(!strcmp(json_str(j, "dataset"), "pip") && !strcmp(json_str(j, "objective"), "lm"));
    PK_CHECK(num(j, "examples") > 0 && num(j, "loss") > 0 && num(j, "perplexity") > 1);
    cJSON_Delete(j);
    PK_CHECK_EQ(run_json(&j, RUN_MERGE_STDERR,
                         "%s eval --model %s --dataset pip --seq-len 32 --threads 1 --home "
                         "%s/home",
                         POCKETLLM, STORIES, tmp),
                0);
    PK_CHECK(num(j, "loss") > 0);
    cJSON_Delete(j);
    PK_CHECK_EQ(run_json(&j, RUN_MERGE_STDERR,
                         "%s generate --run %lld --prompt Pip --max-new 4 --ignore-eos --json "
                         "--threads 1 --home %s/home",
                         POCKETLLM, run, tmp),
                0);
    PK_CHECK(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "ids")) >= 5);
    PK_CHECK(strncmp(json_str(j, "text"), "Pip", 3) == 0);
    cJSON_Delete(j);
    PK_CHECK(run_expect(1, "pocketllm generate: --run 999: no such run",
                        "%s generate --run 999 --ids 1 --max-new 2 --home %s/home", POCKETLLM,
                        tmp));
}

static void test_replay(long long run, const char *hash)
{
    char *o = NULL;
    cJSON *j = NULL;
    PK_CHECK_EQ(run_json(&j, RUN_MERGE_STDERR,
                         "%s replay --run %lld --out %s/r1 --write-seed-log %s/run.seedlog "
                         "--threads 1 --home %s/home",
                         POCKETLLM, run, tmp, tmp, tmp),
                0);
    PK_CHECK(!strcmp(json_str(j, "weights"), hash) && num(j, "threads") == 1);
    cJSON_Delete(j);
    PK_CHECK_EQ(run_fmt(&o, RUN_MERGE_STDERR,
                        "%s replay --seed-log %s/run.seedlog --model %s --out %s/r2 "
                        "--threads 1",
                        POCKETLLM, tmp, STORIES, tmp),
                0);
    PK_CHECK(json_weights_are(o, hash));
    free(o);
}

int main(void)
{
    PK_CHECK(cli_test_env(PASS, tmp, sizeof tmp, "cliopts"));

    test_parse_errors();
    test_help();
    test_repeated();
    test_generate_errors();
    test_threads_cap();
    test_probe_and_bench();
    char hash[80] = "";
    long long run = setup_run(hash, sizeof hash);
    PK_CHECK(run > 0);
    if (run > 0) {
        test_runs(run);
        test_eval_generate(run);
        test_replay(run, hash);
    }
    rm_rf(tmp);
    return PK_TEST_DONE();
}
