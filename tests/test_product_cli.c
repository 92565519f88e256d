/* test_product_cli.c: the product commands end to end through the built `pocketllm` binary on the
 * real stories260k model: a shortened `demo --json`; then, in a fresh home with the Pip notes,
 * a short `train` whose weights go out through `export` (f32 and f16 model directories, a seed
 * log) and come back through `replay` and `forward` bit for bit; a seed log refused by the wrong
 * base model; `train --resume` after kill -9 mid-run ending at the uninterrupted run's hash; and
 * `plot` writing an SVG. Every training command runs with --threads 1: it is the fastest on a
 * loaded 2-core machine, and the weights are the same with any thread count. */
#include "pk_common.h"
#include "pk_test.h"
/* this test starts no server-mock: the header's server helpers stay unused */
#include "json_test_util.h"
#include "test_product_util.h"
#include "test_util.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>

#define STORIES PK_STORIES_DIR /* the copy shipped in models/ */
#define PASS    "product-cli-test-passphrase"
/* BOS + "Once upon a time, Pip the dog" in the stories260k tokenizer (vocab 512) */
#define IDS   "1,403,407,261,378,432,410,460,417,427,265,400,428"
#define N_IDS 13
#define VOCAB 512
/* the settings of every training run here; part 2c adds --steps KILL_STEPS --checkpoint-every 4 */
#define TRAIN_COMMON                                                                               \
    " --model " STORIES " --dataset pip --objective lm --lr 2e-4 --batch 4 --seq-len 64 "          \
    "--threads 1"
#define KILL_STEPS 60
#define STR_(x)    #x
#define STR(x)     STR_(x)
#define KILL_ARGS  "--steps " STR(KILL_STEPS) " --checkpoint-every 4"

static char tmp[128];  /* the test's temporary directory */
static char home[256]; /* the agent home inside it */

/* An integer member; -1 if absent or not an integer. */
static long long inum(const cJSON *j, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!cJSON_IsNumber(v) || !(fabs(v->valuedouble) < 9e15) ||
        v->valuedouble != floor(v->valuedouble))
        return -1;
    return (long long)v->valuedouble;
}

static int is_hash(const char *h)
{
    return strlen(h) == 64 && strspn(h, "0123456789abcdef") == 64;
}

/* Largest |a[i] - b[i]| of two float32 logits files of N_IDS x VOCAB values; -1 on a size
 * mismatch or read error. */
static double max_abs_diff(const char *a, const char *b)
{
    size_t la = 0, lb = 0;
    char *fa = slurp(a, &la), *fb = slurp(b, &lb);
    double d = -1;
    if (fa != NULL && fb != NULL && la == lb && la == (size_t)N_IDS * VOCAB * sizeof(float)) {
        d = 0;
        for (size_t i = 0; i < la / sizeof(float); i++) {
            float x, y;
            memcpy(&x, fa + i * sizeof x, sizeof x);
            memcpy(&y, fb + i * sizeof y, sizeof y);
            double e = fabs((double)x - (double)y);
            if (!(e <= d)) /* also catches NaN */
                d = isnan(e) ? (double)INFINITY : e;
        }
    }
    free(fa);
    free(fb);
    return d;
}

/* `forward --model DIR --ids IDS --out FILE`: 0 if it ran and wrote N_IDS x VOCAB logits. */
static int forward(const char *model, const char *out)
{
    char *o = NULL;
    int rc =
        run_fmt(&o, RUN_SHOW_FAILURE, "%s forward --model %s --ids " IDS " --out %s --threads 1",
                POCKETLLM, model, out);
    int ok = rc == 0 && strstr(o ? o : "", "loss ") != NULL &&
             file_bytes(out) == (long long)N_IDS * VOCAB * (long long)sizeof(float);
    free(o);
    return ok ? 0 : -1;
}

/* ---- 1. demo -------------------------------------------------------------------------------- */

static void test_demo(void)
{
    char *o = NULL;
    PK_CHECK_EQ(
        run_fmt(&o, RUN_SHOW_FAILURE, "%s demo --steps 60 --json --quiet --threads 1", POCKETLLM),
        0);
    cJSON *j = last_json(o);
    PK_CHECK(j != NULL);
    if (j != NULL) {
        double before = json_num(j, "loss_before"), after = json_num(j, "loss_after");
        double seedlog = json_num(j, "seed_log_bytes"), weights = json_num(j, "weight_bytes");
        PK_CHECK(isfinite(before) && isfinite(after));
        PK_CHECK(after < before);
        PK_CHECK(seedlog > 0 && seedlog < weights);
        PK_CHECK_EQ(inum(j, "steps"), 60);
        /* the real model the repository ships, found with no --model or POCKETLLM_MODEL */
        PK_CHECK(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(j, "random_model")));
        char model[16];
        json_str_copy(j, "model", model, sizeof model);
        PK_CHECK(!strcmp(model, "shipped"));
        char base[80], fin[80];
        json_str_copy(j, "base_hash", base, sizeof base);
        json_str_copy(j, "final_hash", fin, sizeof fin);
        PK_CHECK(is_hash(base) && is_hash(fin) && strcmp(base, fin) != 0);
        if (!(after < before))
            fprintf(stderr, "demo: %s\n", last_line(o));
    }
    cJSON_Delete(j);
    free(o);
}

/* ---- 2. a fresh home and a short run -------------------------------------------------------- */

static void setup_home(void)
{
    char pass[300];
    snprintf(home, sizeof home, "%s/home", tmp);
    snprintf(pass, sizeof pass, "%s/pass.txt", tmp);
    PK_CHECK_EQ(init_home(home, pass, PASS), 0);
    char *o = NULL;
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE,
                        "%s import %s/demo/data/train.txt --dataset pip --format txt --home %s",
                        POCKETLLM, PK_SOURCE_DIR, home),
                0);
    PK_CHECK(strstr(o ? o : "", "150") != NULL); /* demo/data/train.txt: 150 lines */
    free(o);
    /* a wrong passphrase is refused before anything is read */
    PK_CHECK_EQ(run_fmt(NULL, RUN_SHOW_FAILURE,
                        "POCKETLLM_PASSPHRASE=wrong %s runs list --home %s 2>/dev/null", POCKETLLM,
                        home),
                1);
}

/* Runs `train ARGS --home H --quiet`; fills the run id and final weights hash. */
static int train(const char *args, int64_t *run, char *hash, size_t n)
{
    char *o = NULL;
    int rc = run_fmt(&o, RUN_SHOW_FAILURE, "%s train %s --home %s --quiet", POCKETLLM, args, home);
    cJSON *j = rc == 0 ? last_json(o) : NULL;
    *run = (int64_t)inum(j, "run");
    json_str_copy(j, "weights", hash, n);
    cJSON_Delete(j);
    free(o);
    return rc == 0 && *run > 0 && is_hash(hash) ? 0 : -1;
}

/* ---- 2a. export as a model directory (f32, f16) --------------------------------------------- */

/* The export in e32 of run (weights hash): owner-only files, and a pocketllm_run.json that names
 * the run's weights, not the base's. */
static void check_export_meta(const char *e32, int64_t run, const char *hash)
{
    /* exported weights can memorize private text: owner-only, like data export */
    const char *const private_files[] = {"model.safetensors", "config.json", "pocketllm_run.json"};
    for (size_t i = 0; i < sizeof private_files / sizeof private_files[0]; i++) {
        char fp[400];
        struct stat sb;
        snprintf(fp, sizeof fp, "%s/%s", e32, private_files[i]);
        PK_CHECK(stat(fp, &sb) == 0 && (sb.st_mode & 0777) == 0600);
    }
    char meta[400];
    size_t len = 0;
    snprintf(meta, sizeof meta, "%s/pocketllm_run.json", e32);
    char *mj = slurp(meta, &len);
    cJSON *j = mj ? cJSON_Parse(mj) : NULL;
    char wh[80], dt[16];
    json_str_copy(j, "weights_hash", wh, sizeof wh);
    json_str_copy(j, "dtype", dt, sizeof dt);
    PK_CHECK(!strcmp(wh, hash));
    PK_CHECK(!strcmp(dt, "F32"));
    PK_CHECK_EQ(inum(j, "run_id"), run);
    cJSON_Delete(j);
    free(mj);
}

/* run exported with --dtype f16 into e16: half the bytes of the f32 export e32, logits close
 * to the f32 ones (l32) and far closer than the base's (d_base away). */
static void check_export_f16(int64_t run, const char *e32, const char *e16, const char *l32,
                             double d_base)
{
    char l16[300], st32[400], st16[400], *o = NULL;
    snprintf(l16, sizeof l16, "%s/f16.logits", tmp);
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE, "%s export --run %lld --out %s --dtype f16 --home %s",
                        POCKETLLM, (long long)run, e16, home),
                0);
    free(o);
    snprintf(st32, sizeof st32, "%s/model.safetensors", e32);
    snprintf(st16, sizeof st16, "%s/model.safetensors", e16);
    long long b32 = file_bytes(st32), b16 = file_bytes(st16);
    PK_CHECK(b32 > 0 && b16 > 0 && b16 < b32 * 6 / 10); /* 2 bytes per weight, not 4 */
    PK_CHECK_EQ(forward(e16, l16), 0);
    double d16 = max_abs_diff(l32, l16);
    PK_CHECK(d16 > 0);           /* rounded to f16: not the same bits */
    PK_CHECK(d16 < 0.1);         /* ... but close (f16 has 11 significant bits; logits are O(10)) */
    PK_CHECK(d16 * 10 < d_base); /* far closer to the run than the base model is */
    if (!(d16 > 0 && d16 < 0.1))
        fprintf(stderr, "f16 vs f32 logits: max |diff| %g (base: %g)\n", d16, d_base);
}

static void test_export_dir(int64_t run, const char *hash)
{
    char e32[300], e16[300], rdir[300], l32[300], lr[300], lbase[300];
    snprintf(e32, sizeof e32, "%s/export-f32", tmp);
    snprintf(e16, sizeof e16, "%s/export-f16", tmp);
    snprintf(rdir, sizeof rdir, "%s/replay-run", tmp);
    snprintf(l32, sizeof l32, "%s/f32.logits", tmp);
    snprintf(lr, sizeof lr, "%s/replay.logits", tmp);
    snprintf(lbase, sizeof lbase, "%s/base.logits", tmp);

    char *o = NULL;
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE, "%s export --run %lld --out %s --home %s", POCKETLLM,
                        (long long)run, e32, home),
                0);
    PK_CHECK(strstr(o ? o : "", hash) != NULL);
    free(o);
    o = NULL;
    check_export_meta(e32, run, hash);

    /* the run's weights rebuilt from the store (with 2 threads: same bits as 1) */
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE, "%s replay --run %lld --out %s --threads 2 --home %s",
                        POCKETLLM, (long long)run, rdir, home),
                0);
    PK_CHECK(json_weights_are(o, hash));
    free(o);
    o = NULL;

    PK_CHECK_EQ(forward(e32, l32), 0);
    PK_CHECK_EQ(forward(rdir, lr), 0);
    PK_CHECK_EQ(forward(STORIES, lbase), 0);
    PK_CHECK(files_equal(l32, lr));
    PK_CHECK(!files_equal(l32, lbase)); /* an export of the base weights would fail here */
    double d_base = max_abs_diff(l32, lbase);
    PK_CHECK(d_base > 1e-3);
    check_export_f16(run, e32, e16, l32, d_base);

    /* usage errors */
    PK_CHECK_EQ(run_fmt(NULL, RUN_SHOW_FAILURE,
                        "%s export --run %lld --out %s --dtype f8 --home %s 2>/dev/null", POCKETLLM,
                        (long long)run, e16, home),
                2);
    PK_CHECK_EQ(run_fmt(NULL, RUN_SHOW_FAILURE,
                        "%s export --run 999 --out %s/nope --home %s 2>/dev/null", POCKETLLM, tmp,
                        home),
                1);
}

/* ---- 2b. seed log export, replay on the right and on wrong base models ---------------------- */

static void test_seedlog(int64_t run, const char *hash)
{
    char log[300], r3[300], tiny[300], r4[300], r5[300], e32[300], a[400], b[400];
    snprintf(log, sizeof log, "%s/run.seedlog", tmp);
    snprintf(r3, sizeof r3, "%s/replay-seedlog", tmp);
    snprintf(tiny, sizeof tiny, "%s/tiny-llama", tmp);
    snprintf(r4, sizeof r4, "%s/replay-wrong", tmp);
    snprintf(r5, sizeof r5, "%s/replay-twice", tmp);
    snprintf(e32, sizeof e32, "%s/export-f32", tmp);

    char *o = NULL;
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE, "%s export --run %lld --seed-log %s --home %s",
                        POCKETLLM, (long long)run, log, home),
                0);
    free(o);
    o = NULL;
    long long lb = file_bytes(log);
    /* the log's "base_hash HEX" line: stories260k's weights; the error below names its prefix */
    char base[17] = "";
    size_t len = 0;
    char *text = slurp(log, &len);
    const char *bh = text ? strstr(text, "\nbase_hash ") : NULL;
    if (bh != NULL)
        snprintf(base, sizeof base, "%.16s", bh + 11);
    PK_CHECK(strlen(base) == 16 && strspn(base, "0123456789abcdef") == 16);
    free(text);
    snprintf(a, sizeof a, "%s/model.safetensors", e32);
    PK_CHECK(lb > 0 && lb * 100 < file_bytes(a)); /* kilobytes instead of the weights */
    /* to a symlink (as to /dev/stdout): written through, the link kept, the file private, the
     * same bytes; the "wrote" line goes to stderr */
    snprintf(a, sizeof a, "%s/via.seedlog", tmp);
    snprintf(b, sizeof b, "%s/link.seedlog", tmp);
    PK_CHECK(symlink(a, b) == 0);
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE, "%s export --run %lld --seed-log %s --home %s",
                        POCKETLLM, (long long)run, b, home),
                0);
    PK_CHECK(o && strstr(o, "wrote") == NULL);
    free(o);
    o = NULL;
    struct stat sb;
    PK_CHECK(lstat(b, &sb) == 0 && S_ISLNK(sb.st_mode));
    PK_CHECK(stat(a, &sb) == 0 && (sb.st_mode & 0777) == 0600 && sb.st_size == lb);

    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE,
                        "%s replay --seed-log %s --model %s --out %s --threads 1", POCKETLLM, log,
                        STORIES, r3),
                0);
    PK_CHECK(json_weights_are(o, hash));
    free(o);
    o = NULL;
    snprintf(a, sizeof a, "%s/replay-run/model.safetensors", tmp);
    snprintf(b, sizeof b, "%s/model.safetensors", r3);
    PK_CHECK(file_bytes(b) > 0);
    PK_CHECK(files_equal(a, b)); /* the same tensors, bit for bit, as the run's replay */

    /* another architecture: refused, with the two hashes named */
    PK_CHECK_EQ(run_fmt(NULL, RUN_SHOW_FAILURE, "%s make-model --arch llama --preset tiny --out %s",
                        POCKETLLM, tiny),
                0);
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE,
                        "%s replay --seed-log %s --model %s --out %s --threads 1 2>&1", POCKETLLM,
                        log, tiny, r4),
                1);
    PK_CHECK(strstr(o ? o : "", "seed log's base") != NULL);
    PK_CHECK(base[0] && strstr(o ? o : "", base) != NULL); /* names the base it needs */
    if (!strstr(o ? o : "", "seed log's base"))
        fprintf(stderr, "replay on the wrong base said: %s\n", o ? o : "(nothing)");
    free(o);
    o = NULL;
    snprintf(a, sizeof a, "%s/model.safetensors", r4);
    PK_CHECK(file_bytes(a) < 0);
    /* the same shapes but other weights (the fine-tuned model itself): refused too */
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE,
                        "%s replay --seed-log %s --model %s --out %s --threads 1 2>&1", POCKETLLM,
                        log, e32, r5),
                1);
    PK_CHECK(strstr(o ? o : "", "seed log's base") != NULL);
    free(o);
    snprintf(a, sizeof a, "%s/model.safetensors", r5);
    PK_CHECK(file_bytes(a) < 0);
}

/* ---- 2c. kill -9 mid-run, then --resume ----------------------------------------------------- */

/* `runs show ID --json`: status and steps done (-1 if unreadable). */
static int64_t run_state(int64_t run, char *status, size_t n)
{
    char *o = NULL;
    int64_t done = -1;
    status[0] = '\0';
    if (run_fmt(&o, RUN_SHOW_FAILURE, "%s runs show %lld --json --home %s", POCKETLLM,
                (long long)run, home) == 0) {
        cJSON *j = last_json(o);
        json_str_copy(j, "status", status, n);
        PK_CHECK_EQ(inum(j, "run"), run);
        done = inum(j, "steps_done");
        cJSON_Delete(j);
    }
    free(o);
    return done;
}

/* `train ... --json`, killed with SIGKILL once 5 steps are done; 0 if it died from that. */
static int train_and_kill(void)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "exec %s train" TRAIN_COMMON " %s --home %s --json", POCKETLLM,
             KILL_ARGS, home);
    return kill_train_at(cmd, 5);
}

static void test_kill_resume(int64_t first_run)
{
    char args[1024], ref_hash[80], hash[80], status[32];
    int64_t ref = 0, run = 0;
    snprintf(args, sizeof args, TRAIN_COMMON " " KILL_ARGS);
    PK_CHECK_EQ(train(args, &ref, ref_hash, sizeof ref_hash), 0); /* uninterrupted */
    PK_CHECK(ref > first_run);

    PK_CHECK_EQ(train_and_kill(), 0);
    /* the killed run is the newest: first line of `runs list --json` */
    char *o = NULL;
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE, "%s runs list --json --home %s", POCKETLLM, home), 0);
    if (o)
        o[strcspn(o, "\n")] = '\0';
    cJSON *first = o ? cJSON_Parse(o) : NULL;
    run = inum(first, "run");
    cJSON_Delete(first);
    free(o);
    PK_CHECK(run > ref);
    int64_t done = run_state(run, status, sizeof status);
    PK_CHECK(done >= 5 && done < KILL_STEPS); /* really stopped mid-run ... */
    PK_CHECK(!strcmp(status, "running"));     /* ... with no chance to record it */
    fprintf(stderr, "killed run %lld: status '%s', %lld of %d steps logged\n", (long long)run,
            status, (long long)done, KILL_STEPS);

    cJSON *j = NULL;
    PK_CHECK_EQ(run_json(&j, RUN_SHOW_FAILURE,
                         "%s train --resume %lld --threads 1 --quiet --home %s", POCKETLLM,
                         (long long)run, home),
                0);
    json_str_copy(j, "weights", hash, sizeof hash);
    PK_CHECK_EQ(inum(j, "run"), run);
    PK_CHECK_EQ(inum(j, "steps"), KILL_STEPS);
    PK_CHECK(is_hash(hash) && !strcmp(hash, ref_hash));
    if (strcmp(hash, ref_hash) != 0)
        fprintf(stderr, "resumed run %lld ended at %s, the uninterrupted run at %s\n",
                (long long)run, hash, ref_hash);
    cJSON_Delete(j);
    PK_CHECK_EQ(run_state(run, status, sizeof status), KILL_STEPS);
    PK_CHECK(!strcmp(status, "done"));
}

/* ---- 2d. plot ------------------------------------------------------------------------------- */

/* Number of points in the d attribute of the <path> whose id is exactly `id` (-1 if none). */
static int path_points(const char *svg, const char *id)
{
    char key[80];
    snprintf(key, sizeof key, "id=\"%s\"", id);
    const char *p = strstr(svg, key);
    const char *end = p ? strchr(p, '>') : NULL;
    const char *d = p ? strstr(p, " d=\"") : NULL;
    if (p == NULL || end == NULL || d == NULL || d > end)
        return -1;
    int n = 0;
    for (d += 4; *d && *d != '"'; d++)
        n += *d == 'M' || *d == 'L';
    return n;
}

/* plot --out: "-" is stdout (the SVG alone); an existing symlink is written through and stays a
 * symlink; a directory is refused with exit 1, left as it was. */
static void test_plot_out(int64_t run)
{
    char target[300], link[300], *o = NULL;
    snprintf(target, sizeof target, "%s/target.svg", tmp);
    snprintf(link, sizeof link, "%s/link.svg", tmp);
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE, "%s plot --run %lld --out - --home %s", POCKETLLM,
                        (long long)run, home),
                0);
    PK_CHECK(o && !strncmp(o, "<?xml", 5) && strstr(o, "</svg>") && !strstr(o, "wrote"));
    free(o);
    PK_CHECK(symlink(target, link) == 0);
    PK_CHECK_EQ(run_fmt(NULL, RUN_SHOW_FAILURE, "%s plot --run %lld --out %s --home %s >/dev/null",
                        POCKETLLM, (long long)run, link, home),
                0);
    struct stat sb;
    PK_CHECK(lstat(link, &sb) == 0 && S_ISLNK(sb.st_mode));
    PK_CHECK(file_bytes(target) > 100);
    PK_CHECK_EQ(run_fmt(&o, RUN_MERGE_STDERR, "%s plot --run %lld --out %s --home %s", POCKETLLM,
                        (long long)run, tmp, home),
                1);
    PK_CHECK(o && strstr(o, "is a directory") != NULL);
    free(o);
    PK_CHECK(stat(tmp, &sb) == 0 && S_ISDIR(sb.st_mode));
}

static void test_plot(int64_t run, int steps)
{
    char svgp[300];
    snprintf(svgp, sizeof svgp, "%s/loss.svg", tmp);
    char *o = NULL;
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE, "%s plot --run %lld --out %s --home %s", POCKETLLM,
                        (long long)run, svgp, home),
                0);
    free(o);
    size_t len = 0;
    char *svg = slurp(svgp, &len);
    PK_CHECK(svg != NULL && len > 0);
    if (svg == NULL)
        return;
    const char *p = svg;
    if (!strncmp(p, "<?xml", 5)) /* an XML declaration may come first */
        p = strstr(p, "?>") ? strstr(p, "?>") + 2 : p;
    p += strspn(p, " \t\r\n");
    PK_CHECK(!strncmp(p, "<svg", 4) && strstr(p, "xmlns=\"http://www.w3.org/2000/svg\"") != NULL);
    PK_CHECK(len > 6 && strstr(svg + len - 8, "</svg>") != NULL);
    /* the raw train loss: one point per step; the smoothed curve beside it */
    PK_CHECK_EQ(path_points(svg, "train-loss-raw"), steps);
    PK_CHECK_EQ(path_points(svg, "train-loss"), steps);
    free(svg);
    /* no such run: an error that says so, and no file */
    snprintf(svgp, sizeof svgp, "%s/none.svg", tmp);
    PK_CHECK_EQ(run_fmt(&o, RUN_MERGE_STDERR, "%s plot --run 999 --out %s --home %s", POCKETLLM,
                        svgp, home),
                1);
    PK_CHECK(o && strstr(o, "run 999: no such run") != NULL);
    free(o);
    PK_CHECK(file_bytes(svgp) < 0);
    test_plot_out(run);
}

int main(void)
{
    unsetenv("POCKETLLM_MODEL"); /* the demo must find the shipped stories260k itself */
    PK_CHECK(cli_test_env(PASS, tmp, sizeof tmp, "prodcli"));

    test_demo();

    setup_home();
    int64_t run = 0;
    char hash[80] = "";
    PK_CHECK_EQ(train(TRAIN_COMMON " --steps 20", &run, hash, sizeof hash), 0);
    if (run > 0) {
        test_export_dir(run, hash);
        test_seedlog(run, hash);
        /* resuming a finished run is a no-op that still prints its JSON line */
        int64_t again = 0;
        char h2[80] = "";
        char args[64];
        snprintf(args, sizeof args, "--resume %lld --threads 1", (long long)run);
        PK_CHECK_EQ(train(args, &again, h2, sizeof h2), 0);
        PK_CHECK_EQ(again, run);
        PK_CHECK(!strcmp(h2, hash));
        /* settings given with --resume: the run keeps its own, and a note names what was left */
        char *o = NULL;
        PK_CHECK_EQ(run_fmt(&o, RUN_MERGE_STDERR,
                            "%s train --resume %lld --steps 3 --lr 1 --quiet --home %s", POCKETLLM,
                            (long long)run, home),
                    0);
        PK_CHECK(o && strstr(o, "note: --resume continues run") && strstr(o, "ignoring --lr, ") &&
                 strstr(o, "--steps") && strstr(o, hash));
        free(o);
        test_kill_resume(run);
        test_plot(run, 20);
    }
    rm_rf(tmp);
    return PK_TEST_DONE();
}
