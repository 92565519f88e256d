/* test_lora_cli.c: LoRA runs through the pocketllm CLI on the shipped stories260k: train
 * --trainable lora:... at 1 and 2 threads (one weights hash), export --adapter (PEFT's
 * adapter_config.json and tensor names and shapes), export --merged (its logits equal the base's
 * with the exported adapter attached), the seed log replayed to the same hash, a bf16 copy
 * trained full-parameter (stochastic rounding) and with an adapter at 1 and 2 threads and
 * replayed under each BLAS kernel, a full-parameter run refused by --adapter, bench mezo
 * --trainable printing the trainable parameter count, and --trainable scales on a q4_0 copy (also
 * killed and resumed, and with --estimator hizoo). */
#include "json_test_util.h"
#include "pk_model.h"
#include "pk_test.h"
#include "test_product_util.h"
#include "test_util.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>

#define PASS    "lora-cli-test-passphrase"
#define SPEC    "lora:r=4,alpha=8,seed=11"
#define TRAIN   "--dataset pip --batch 4 --seq-len 32 --steps 12"
#define STORIES "--model " PK_STORIES_DIR " --lr 2e-3 "

static char tmp[256], home[300];

static int64_t train(const char *extra, char hash[80])
{
    char *o = NULL;
    int rc = run_fmt(&o, RUN_SHOW_FAILURE, "%s train %s %s --home %s --quiet", POCKETLLM, TRAIN,
                     extra, home);
    cJSON *j = rc == 0 ? last_json(o) : NULL;
    int64_t run = (int64_t)json_num(j, "run");
    json_str_copy(j, "weights", hash, 80);
    cJSON_Delete(j);
    free(o);
    return rc == 0 ? run : -1;
}

static void setup(void)
{
    char pass[300];
    snprintf(home, sizeof home, "%s/home", tmp);
    snprintf(pass, sizeof pass, "%s/pass.txt", tmp);
    PK_CHECK_EQ(init_home(home, pass, PASS), 0);
    PK_CHECK_EQ(run_fmt(NULL, RUN_SHOW_FAILURE,
                        "%s import %s/demo/data/train.txt --dataset pip --format txt --home %s "
                        ">/dev/null",
                        POCKETLLM, PK_SOURCE_DIR, home),
                0);
}

/* The safetensors header of path as JSON (owned), or NULL. */
static cJSON *st_header(const char *path)
{
    size_t len = 0;
    char *buf = slurp(path, &len);
    uint64_t hl = 0;
    cJSON *j = NULL;
    if (buf && len >= 8) {
        memcpy(&hl, buf, 8);
        if (8 + hl <= len)
            j = cJSON_ParseWithLength(buf + 8, (size_t)hl);
    }
    free(buf);
    return j;
}

static void check_adapter_files(const char *dir)
{
    size_t n = 0;
    char *cfg = slurp_at(dir, "adapter_config.json", &n);
    cJSON *c = cJSON_Parse(cfg ? cfg : "");
    char s[128];
    json_str_copy(c, "peft_type", s, sizeof s);
    PK_CHECK(!strcmp(s, "LORA"));
    json_str_copy(c, "task_type", s, sizeof s);
    PK_CHECK(!strcmp(s, "CAUSAL_LM"));
    json_str_copy(c, "base_model_name_or_path", s, sizeof s);
    PK_CHECK(!strcmp(s, PK_STORIES_DIR));
    PK_CHECK(json_num(c, "r") == 4 && json_num(c, "lora_alpha") == 8);
    const cJSON *tm = cJSON_GetObjectItemCaseSensitive(c, "target_modules");
    PK_CHECK(cJSON_GetArraySize(tm) == 2);
    PK_CHECK(!strcmp(cJSON_GetArrayItem(tm, 0)->valuestring, "q_proj") ||
             !strcmp(cJSON_GetArrayItem(tm, 1)->valuestring, "q_proj"));
    cJSON_Delete(c);
    free(cfg);

    char path[400];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    cJSON *h = st_header(path);
    int tensors = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, h) tensors += strcmp(it->string, "__metadata__") != 0;
    PK_CHECK_EQ(tensors, 20);
    for (int l = 0; l < 5; l++) {
        for (int v = 0; v < 2; v++) {
            char a[128], b[128];
            const char *mod = v ? "v_proj" : "q_proj";
            snprintf(a, sizeof a, "base_model.model.model.layers.%d.self_attn.%s.lora_A.weight", l,
                     mod);
            snprintf(b, sizeof b, "base_model.model.model.layers.%d.self_attn.%s.lora_B.weight", l,
                     mod);
            const cJSON *ta = cJSON_GetObjectItemCaseSensitive(h, a);
            const cJSON *tb = cJSON_GetObjectItemCaseSensitive(h, b);
            const cJSON *sa = cJSON_GetObjectItemCaseSensitive(ta, "shape");
            const cJSON *sb = cJSON_GetObjectItemCaseSensitive(tb, "shape");
            PK_CHECK(sa && sb);
            if (!sa || !sb)
                continue;
            PK_CHECK(cJSON_GetArrayItem(sa, 0)->valueint == 4 &&
                     cJSON_GetArrayItem(sa, 1)->valueint == 64);
            PK_CHECK(cJSON_GetArrayItem(sb, 0)->valueint == (v ? 32 : 64) &&
                     cJSON_GetArrayItem(sb, 1)->valueint == 4);
            char dt[16];
            json_str_copy(ta, "dtype", dt, sizeof dt);
            PK_CHECK(!strcmp(dt, "F32"));
        }
    }
    cJSON_Delete(h);
}

/* The base with an adapter attached and filled from the exported file. */
static pk_model *base_plus_adapter(const char *dir)
{
    pk_model *m = NULL;
    char err[256] = "", path[400];
    PK_CHECK(pk_model_load(PK_STORIES_DIR, pk_model_default_params(), &m, err, sizeof err) ==
             PK_OK);
    pk_lora_params p = {.r = 4, .alpha = 8.0f, .seed = 999}; /* A is overwritten below */
    PK_CHECK(pk_model_lora_attach(m, &p, NULL, err, sizeof err) == PK_OK);
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    size_t len = 0;
    char *buf = slurp(path, &len);
    cJSON *h = st_header(path);
    uint64_t hl = 0;
    memcpy(&hl, buf, 8);
    const cJSON *it;
    int filled = 0;
    cJSON_ArrayForEach(it, h)
    {
        if (strncmp(it->string, "base_model.model.", 17) != 0) /* __metadata__ */
            continue;
        const char *name = it->string + 17;
        int i = pk_model_tensor_index(m, name);
        pk_tensor_info ti;
        const cJSON *off = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
        if (i < 0 || pk_model_tensor(m, (size_t)i, &ti) != PK_OK || !off)
            continue;
        size_t a = (size_t)cJSON_GetArrayItem(off, 0)->valuedouble;
        PK_CHECK((size_t)cJSON_GetArrayItem(off, 1)->valuedouble - a == ti.numel * 4);
        memcpy(ti.data, buf + 8 + hl + a, ti.numel * 4);
        filled++;
    }
    PK_CHECK_EQ(filled, 20);
    cJSON_Delete(h);
    free(buf);
    return m;
}

static void check_merged(const char *adapter_dir, const char *merged_dir)
{
    pk_model *m = base_plus_adapter(adapter_dir), *mm = NULL;
    char err[256] = "";
    PK_CHECK(pk_model_load(merged_dir, pk_model_default_params(), &mm, err, sizeof err) == PK_OK);
    int32_t ids[40], len = 40;
    for (int i = 0; i < 40; i++)
        ids[i] = 1 + (i * 13) % 500;
    pk_batch b = {1, 40, ids, &len, NULL};
    size_t n = 40 * 512;
    float *la = malloc(n * 4), *lb = malloc(n * 4);
    PK_CHECK(pk_model_logits(m, &b, NULL, la) == PK_OK);
    PK_CHECK(pk_model_logits(mm, &b, NULL, lb) == PK_OK);
    double d = 0;
    for (size_t i = 0; i < n; i++)
        d = fabs((double)la[i] - (double)lb[i]) > d ? fabs((double)la[i] - (double)lb[i]) : d;
    fprintf(stderr, "merged vs base + adapter: max |logit diff| %.3g\n", d);
    PK_CHECK(d < 1e-4);
    PK_CHECK_EQ(pk_model_n_tensors(mm), pk_model_n_tensors(m) - 20);
    free(la);
    free(lb);
    pk_model_free(m);
    pk_model_free(mm);
}

static void test_lora_run(void)
{
    char h1[80] = "", h2[80] = "", dir[300], mdir[300], log[300];
    int64_t r1 = train(STORIES "--trainable " SPEC " --threads 1", h1);
    int64_t r2 = train(STORIES "--trainable " SPEC " --threads 2", h2);
    PK_CHECK(r1 > 0 && r2 > 0);
    PK_CHECK(h1[0] && !strcmp(h1, h2));
    char *o = NULL;
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE, "%s runs show %lld --json --home %s", POCKETLLM,
                        (long long)r1, home),
                0);
    PK_CHECK(o && strstr(o, "lora:r=4,alpha=8,seed=11") && strstr(o, "\"adapter_seed\""));
    free(o);

    snprintf(dir, sizeof dir, "%s/adapter", tmp);
    snprintf(mdir, sizeof mdir, "%s/merged", tmp);
    snprintf(log, sizeof log, "%s/lora.seedlog", tmp);
    PK_CHECK_EQ(run_fmt(NULL, RUN_SHOW_FAILURE, "%s export --run %lld --adapter %s --home %s",
                        POCKETLLM, (long long)r1, dir, home),
                0);
    check_adapter_files(dir);
    PK_CHECK_EQ(run_fmt(NULL, RUN_SHOW_FAILURE, "%s export --run %lld --merged %s --home %s",
                        POCKETLLM, (long long)r1, mdir, home),
                0);
    check_merged(dir, mdir);
    /* the seed log and the base rebuild the adapter bit for bit */
    PK_CHECK_EQ(run_fmt(NULL, RUN_SHOW_FAILURE, "%s export --run %lld --seed-log %s --home %s",
                        POCKETLLM, (long long)r1, log, home),
                0);
    char rdir[300];
    snprintf(rdir, sizeof rdir, "%s/replayed", tmp);
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE, "%s replay --seed-log %s --model %s --out %s",
                        POCKETLLM, log, PK_STORIES_DIR, rdir),
                0);
    PK_CHECK(json_weights_are(o, h1));
    free(o);
}

/* The CPU can run OpenBLAS's SkylakeX kernels. */
static int have_avx512(void)
{
    char *c = slurp("/proc/cpuinfo", NULL);
    int yes = c && strstr(c, " avx512f") != NULL;
    free(c);
    return yes;
}

/* Replays a seed log under OPENBLAS_CORETYPE=core ("" = unset) into tmp/DIR; 0 and the weights
 * hash, or -1. */
static int replay_under(const char *core, const char *log, const char *model, char hash[80])
{
    char *o = NULL, dir[300];
    snprintf(dir, sizeof dir, "%s/replay-%s", tmp, core[0] ? core : "default");
    int rc = run_fmt(&o, RUN_SHOW_FAILURE, "%s%s %s replay --seed-log %s --model %s --out %s",
                     core[0] ? "env OPENBLAS_CORETYPE=" : "env -u OPENBLAS_CORETYPE", core,
                     POCKETLLM, log, model, dir);
    cJSON *j = rc == 0 ? last_json(o) : NULL;
    json_str_copy(j, "weights", hash, 80);
    cJSON_Delete(j);
    free(o);
    return rc == 0 ? 0 : -1;
}

/* A bf16 base trained full-parameter (stochastic rounding) and with an adapter: one hash at 1
 * and 2 threads, and the seed log replays to it under every BLAS kernel (replay never runs a
 * GEMM's loss; the rounding is integer work on the counter generator's bits). */
static void test_bf16_runs(void)
{
    char bdir[300], h[80] = "", log[300], cmd[600];
    snprintf(bdir, sizeof bdir, "%s/bf16", tmp);
    int64_t r0 = train("--model " PK_STORIES_DIR " --trainable all --steps 1 --lr 0", h);
    PK_CHECK(r0 > 0);
    PK_CHECK_EQ(run_fmt(NULL, RUN_SHOW_FAILURE,
                        "%s export --run %lld --out %s --dtype bf16 "
                        "--home %s >/dev/null",
                        POCKETLLM, (long long)r0, bdir, home),
                0);
    static const char *const specs[] = {"all", SPEC};
    for (int k = 0; k < 2; k++) {
        char h1[80] = "", h2[80] = "";
        snprintf(cmd, sizeof cmd, "--model %s --trainable %s --lr 1e-4 --threads 1", bdir,
                 specs[k]);
        int64_t r1 = train(cmd, h1);
        snprintf(cmd, sizeof cmd, "--model %s --trainable %s --lr 1e-4 --threads 2", bdir,
                 specs[k]);
        int64_t r2 = train(cmd, h2);
        PK_CHECK(r1 > 0 && r2 > 0 && h1[0] && !strcmp(h1, h2));
        snprintf(log, sizeof log, "%s/bf16-%d.seedlog", tmp, k);
        PK_CHECK_EQ(run_fmt(NULL, RUN_SHOW_FAILURE, "%s export --run %lld --seed-log %s --home %s",
                            POCKETLLM, (long long)r1, log, home),
                    0);
        const char *cores[] = {"", "Haswell", "SkylakeX"};
        for (int c = 0; c < (have_avx512() ? 3 : 2); c++) {
            char hr[80] = "";
            PK_CHECK_EQ(replay_under(cores[c], log, bdir, hr), 0);
            PK_CHECK(!strcmp(hr, h1));
        }
    }
}

static void test_refusals(void)
{
    char h[80] = "", dir[300];
    int64_t full = train(STORIES "--trainable all --steps 2", h);
    PK_CHECK(full > 0);
    snprintf(dir, sizeof dir, "%s/no-adapter", tmp);
    PK_CHECK(run_expect(1, "not a LoRA adapter", "%s export --run %lld --adapter %s --home %s",
                        POCKETLLM, (long long)full, dir, home));
    /* the library's message, the CLI naming the flag before it */
    PK_CHECK(run_expect(1,
                        "pocketllm train: --trainable: LoRA targets 'nothing' match no linear "
                        "layer",
                        "%s train %s %s --trainable lora:targets=nothing --home %s --quiet",
                        POCKETLLM, TRAIN, STORIES, home));
    PK_CHECK(run_expect(1,
                        "pocketllm bench mezo: --trainable: trainable tensors '^nothing$' match "
                        "no tensor",
                        "%s bench mezo --model %s --batch 2 --seq 16 --steps 1 --trainable "
                        "'^nothing$'",
                        POCKETLLM, PK_STORIES_DIR));
    PK_CHECK(run_expect(1, "pocketllm train: --hessian-budget: hizoo: the fp32 Hessian diagonal",
                        "%s train %s %s --estimator hizoo --hessian-budget 0.5 --home %s --quiet",
                        POCKETLLM, TRAIN, STORIES, home));
}

static void test_bench(void)
{
    cJSON *j = NULL;
    PK_CHECK_EQ(run_json(&j, RUN_SHOW_FAILURE,
                         "%s bench mezo --model %s --batch 2 --seq 16 --steps 1 --trainable "
                         "lora:r=4",
                         POCKETLLM, PK_STORIES_DIR),
                0);
    /* 5 layers: q A [4, 64] + B [64, 4], v A [4, 64] + B [32, 4] */
    PK_CHECK(json_num(j, "trainable_params") == 5 * (256 + 256 + 256 + 128));
    cJSON_Delete(j);
}

/* The newest run of the home (the first line of `runs list --json`), or -1. */
static int64_t newest_run(void)
{
    char *o = NULL;
    int64_t run = -1;
    if (run_fmt(&o, RUN_SHOW_FAILURE, "%s runs list --json --home %s", POCKETLLM, home) == 0 && o) {
        o[strcspn(o, "\n")] = '\0';
        cJSON *j = cJSON_Parse(o);
        run = (int64_t)json_num(j, "run");
        cJSON_Delete(j);
    }
    free(o);
    return run;
}

/* Trains `--trainable scales EXTRA--lr 1e-5 --eps 1e-4` on the q4_0 copy at 1 and 2 threads:
 * both runs end at one weights hash (h1, 80 bytes); the first run's seed log goes to log. */
static void train_scales_twice(const char *q4, const char *extra, char *h1, const char *log)
{
    char args[600], h2[80] = "";
    snprintf(args, sizeof args, "--model %s --trainable scales %s--lr 1e-5 --eps 1e-4 --threads 1",
             q4, extra);
    int64_t r1 = train(args, h1);
    snprintf(args, sizeof args, "--model %s --trainable scales %s--lr 1e-5 --eps 1e-4 --threads 2",
             q4, extra);
    int64_t r2 = train(args, h2);
    PK_CHECK(r1 > 0 && r2 > 0 && h1[0] && !strcmp(h1, h2));
    PK_CHECK_EQ(run_fmt(NULL, RUN_SHOW_FAILURE, "%s export --run %lld --seed-log %s --home %s",
                        POCKETLLM, (long long)r1, log, home),
                0);
}

/* A --trainable scales run on the q4_0 copy killed with SIGKILL mid-run and resumed (at the
 * other thread count) ends at the uninterrupted run's weights hash; and with --estimator hizoo
 * (its diagonal Hessian estimate over the fp32 scales) one hash at 1 and 2 threads that the
 * seed log replays to. */
static void test_scales_resume_hizoo(const char *q4)
{
    char cmd[1200], args[600], h1[80] = "", hr[80] = "", log[300];
    snprintf(args, sizeof args,
             "--model %s --trainable scales --lr 1e-5 --eps 1e-4 --steps 60 --checkpoint-every 4",
             q4);
    int64_t ref = train(args, h1);
    PK_CHECK(ref > 0 && h1[0]);
    snprintf(cmd, sizeof cmd, "exec %s train %s %s --threads 2 --home %s --json", POCKETLLM, TRAIN,
             args, home);
    PK_CHECK_EQ(kill_train_at(cmd, 5), 0);
    int64_t killed = newest_run();
    PK_CHECK(killed > ref);
    char *o = NULL;
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE, "%s runs show %lld --json --home %s", POCKETLLM,
                        (long long)killed, home),
                0);
    cJSON *j = cJSON_Parse(o ? last_line(o) : "");
    char status[32];
    json_str_copy(j, "status", status, sizeof status);
    double done = json_num(j, "steps_done");
    PK_CHECK(!strcmp(status, "running") && done >= 4 && done < 60); /* really stopped mid-run */
    cJSON_Delete(j);
    free(o);
    snprintf(args, sizeof args, "--resume %lld --threads 1", (long long)killed);
    PK_CHECK_EQ(train(args, hr), killed);
    PK_CHECK(!strcmp(hr, h1));

    snprintf(log, sizeof log, "%s/scales-hizoo.seedlog", tmp);
    train_scales_twice(q4, "--estimator hizoo ", h1, log);
    hr[0] = '\0';
    PK_CHECK_EQ(replay_under("", log, q4, hr), 0);
    PK_CHECK(!strcmp(hr, h1));
}

/* --trainable scales on a q4_0 copy: one hash at 1 and 2 threads, the seed log replays to it
 * under each BLAS kernel (replay --out writes the scales folded into fp32 weights), bench mezo
 * counts the scales, an f32 base (no block scales) is refused, and then the q4_0 copy is
 * trained again: killed and resumed, and with --estimator hizoo. */
static void test_scales(void)
{
    char q4[300], h1[80] = "", log[300];
    snprintf(q4, sizeof q4, "%s/q4", tmp);
    PK_CHECK_EQ(run_fmt(NULL, RUN_SHOW_FAILURE,
                        "%s quantize --model %s --out %s --type q4_0 --json", POCKETLLM,
                        PK_STORIES_DIR, q4),
                0);
    snprintf(log, sizeof log, "%s/scales.seedlog", tmp);
    train_scales_twice(q4, "", h1, log);
    char *text = slurp(log, NULL);
    PK_CHECK(text && strstr(text, "\ntrainable scales\n") &&
             strstr(text, "\nrounding stochastic\n"));
    free(text);
    const char *cores[] = {"", "Haswell"};
    for (int c = 0; c < 2; c++) {
        char hr[80] = "";
        PK_CHECK_EQ(replay_under(cores[c], log, q4, hr), 0);
        PK_CHECK(!strcmp(hr, h1));
    }
    cJSON *j = NULL;
    PK_CHECK_EQ(run_json(&j, RUN_SHOW_FAILURE,
                         "%s bench mezo --model %s --batch 2 --seq 16 --steps 1 --trainable scales",
                         POCKETLLM, q4),
                0);
    /* one scale per 32 weights of the 31 Q4_0 matrices: embeddings 512 x 64, and per layer q and
     * o 64 x 64, k and v 32 x 64, gate and up 172 x 64 */
    PK_CHECK(json_num(j, "trainable_params") == 512 * 2 + 5 * (2 * 128 + 2 * 64 + 2 * 344));
    cJSON_Delete(j);
    PK_CHECK(run_expect(1,
                        "pocketllm train: --trainable: trainable block scales: the model has no "
                        "Q8_0 or Q4_0 weight",
                        "%s train %s %s --trainable scales --home %s --quiet", POCKETLLM, TRAIN,
                        STORIES, home));
    test_scales_resume_hizoo(q4);
}

int main(void)
{
    PK_CHECK(cli_test_env(PASS, tmp, sizeof tmp, "loracli"));
    setup();
    test_lora_run();
    test_bf16_runs();
    test_refusals();
    test_bench();
    test_scales();
    rm_rf(tmp);
    return PK_TEST_DONE();
}
