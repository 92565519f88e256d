/* test_fedsim.c: `pocketllm model-info` and `pocketllm fedsim` through the built CLI on
 * stories260k with a small generated classification task (label words " good" / " bad"):
 *  - model-info --json gives the library's pk_weights_hash (what a task names), for the
 *    directory and for a file in it; a missing model exits 1;
 *  - fedsim, 3 devices, Dirichlet 0.5 split, one dropout per round, stragglers, --baseline:
 *    exit 0; rounds.jsonl has round 0..R with the contract's fields; summary.json and the --json
 *    last line agree; the log check passed (bit for bit); curves.svg has its panels; the
 *    device homes are gone; the global model moved;
 *  - the same seed with --parallel 3 and coordinator faults gives the same global hashes;
 *  - with DP noise the log check still compares every coefficient (the devices record their
 *    uploads as sent, noise included): it passes, and after one recorded value is changed it
 *    fails (the coordinator restarted on the run's database, pk_fedsim_verify_log);
 *  - --estimator fzoo (N local steps per FZOO step): exit 0, the log check passes bit for bit,
 *    (N + 1) loss evaluations per FZOO step, the eval loss falls; --estimator hizoo is refused
 *    (exit 2) by fedsim and by fedsim device, naming why;
 *  - --baseline-lr auto where the rate the search chooses diverges later (the task of
 *    scripts/fedsim.sh, 1114 baseline steps): the baseline backs off to a third of the rate,
 *    logs it, counts the spent evaluations and ends below the base loss;
 *  - Ctrl-C in the middle of the rounds: exit 130, no process left, the homes removed;
 *  - bad input: --devices 0 (exit 2), no eval set (exit 2), more devices than examples, an
 *    eval file or dataset missing, a coordinator that never answers (exit 1, clear messages,
 *    homes removed);
 *  - after every run, no process of this test's directory is left (scan of /proc).
 * The CLI runs as an exec'd binary (libgomp is not fork-safe). */
#include "pk_crypto.h"
#include "pk_fedsim.h"
#include "pk_mezo.h"
#include "pk_model.h"
#include "pk_test.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function" /* not every helper is used here */
#include "test_product_util.h"
#include "test_util.h"
#pragma GCC diagnostic pop

#include <arpa/inet.h>
#include <cJSON.h>
#include <dirent.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <sys/socket.h>

#define STORIES PK_STORIES_DIR
#define ROUNDS  2
#define TASK    "--objective classify --template '{text} It was' --labels ' good, bad'"

static char g_tmp[128];

static const char *const NAMES[] = {"Lily", "Tom", "Sue", "Ben", "Mia", "Max", "Amy", "Sam"};
static const char *const GOOD[] = {"found a shiny toy and smiled", "got a big hug from mom",
                                   "played in the sun with a friend"};
static const char *const BAD[] = {"broke the red toy and cried", "lost the ball in the rain",
                                  "fell down and hurt a knee"};

/* n examples, labels alternating, into path (jsonl). */
static int write_task(const char *path, int n, int offset)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    for (int i = 0; i < n; i++) {
        int k = i + offset, good = k % 2 == 0;
        fprintf(f, "{\"text\":\"%s %s.\",\"label\":\"%s\"}\n", NAMES[k % 8],
                good ? GOOD[(k / 2) % 3] : BAD[(k / 2) % 3], good ? "good" : "bad");
    }
    return fclose(f);
}

static int run(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int run(char **out, const char *fmt, ...)
{
    char cmd[4096], full[4400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    snprintf(full, sizeof full, "%s %s 2>%s/stderr.txt", POCKETLLM, cmd, g_tmp);
    return run_capture(full, out);
}

/* What the last run printed on stderr (owned, free()). */
static char *last_stderr(void)
{
    char p[200];
    snprintf(p, sizeof p, "%s/stderr.txt", g_tmp);
    size_t n = 0;
    char *s = slurp(p, &n);
    return s ? s : calloc(1, 1);
}

/* Processes whose command line mentions the test's directory (device or coordinator). */
static int is_stray(const char *pid, const char *cmdline, void *user)
{
    (void)user;
    if (!strstr(cmdline, g_tmp) || strstr(cmdline, "sh -c"))
        return 0;
    fprintf(stderr, "stray process %s: %s\n", pid, cmdline);
    return 1;
}

static int stray_processes(void)
{
    return count_processes(is_stray, NULL);
}
static int exists(const char *dir, const char *name)
{
    char p[400];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

static void test_model_info(void)
{
    char *out = NULL, hash[65] = "";
    pk_model *m = NULL;
    PK_CHECK(pk_model_load(STORIES, pk_model_default_params(), &m, NULL, 0) == PK_OK);
    PK_CHECK(m && pk_weights_hash(m, hash) == PK_OK);
    pk_model_free(m);
    PK_CHECK_EQ(run(&out, "model-info --model %s --json%s", STORIES, ""), 0);
    cJSON *j = cJSON_Parse(last_line(out));
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(j, "weights_hash");
    PK_CHECK(cJSON_IsString(h) && !strcmp(h->valuestring, hash));
    PK_CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "architecture")),
                     "llama"));
    PK_CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "tokenizer")),
                     "sentencepiece"));
    const cJSON *np = cJSON_GetObjectItemCaseSensitive(j, "parameters");
    const cJSON *wb = cJSON_GetObjectItemCaseSensitive(j, "weight_bytes");
    PK_CHECK(cJSON_IsNumber(np) && cJSON_IsNumber(wb) && wb->valuedouble == 4 * np->valuedouble);
    cJSON_Delete(j);
    free(out);
    PK_CHECK_EQ(run(&out, "model-info --model %s/model.safetensors%s", STORIES, ""), 0);
    PK_CHECK(out && strstr(out, hash) != NULL);
    free(out);
    PK_CHECK_EQ(run(&out, "model-info --model %s/nope%s", g_tmp, ""), 1);
    free(out);
}

static cJSON *read_json(const char *dir, const char *name)
{
    char *buf = slurp_at(dir, name, NULL);
    cJSON *j = buf ? cJSON_Parse(buf) : NULL;
    free(buf);
    return j;
}

/* rounds.jsonl: ROUNDS + 1 lines (round 0 = the base model) with the contract's fields. */
static void check_rounds_file(const char *dir)
{
    char p[400], line[8192];
    snprintf(p, sizeof p, "%s/rounds.jsonl", dir);
    FILE *f = fopen(p, "r");
    int n = 0;
    static const char *const keys[] = {
        "round", "loss", "accuracy", "bytes_up_per_device", "bytes_down_per_device", "seconds"};
    while (f && fgets(line, sizeof line, f)) {
        cJSON *j = cJSON_Parse(line);
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
            PK_CHECK(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(j, keys[i])));
        PK_CHECK(cJSON_GetObjectItemCaseSensitive(j, "epsilon") != NULL);
        PK_CHECK_EQ(cJSON_GetObjectItemCaseSensitive(j, "round")->valuedouble, n);
        const cJSON *up = cJSON_GetObjectItemCaseSensitive(j, "bytes_up_per_device");
        const cJSON *dn = cJSON_GetObjectItemCaseSensitive(j, "bytes_down_per_device");
        if (n > 0) { /* the goal: under 16 KB each way */
            PK_CHECK(up && up->valuedouble > 300 && up->valuedouble < 16384);
            PK_CHECK(dn && dn->valuedouble > 300 && dn->valuedouble < 16384);
            PK_CHECK_EQ(cJSON_GetObjectItemCaseSensitive(j, "uploads")->valuedouble, 2);
        }
        cJSON_Delete(j);
        n++;
    }
    if (f)
        fclose(f);
    PK_CHECK_EQ(n, ROUNDS + 1);
}

/* One fedsim run; the summary (owned) or NULL. */
static cJSON *fedsim(const char *out_dir, const char *extra, int want_rc)
{
    char *out = NULL, args[2048];
    snprintf(args, sizeof args,
             "fedsim --model %s --data %s/train.jsonl --eval-data %s/eval.jsonl " TASK
             " --devices 3 --rounds %d --local-steps 2 --batch 4 --seq-len 32 --lr 1e-3"
             " --split dirichlet:0.5 --dropout 0.34 --stragglers 0.5 --straggle 0.1"
             " --seed 7 --json --out %s %s",
             STORIES, g_tmp, g_tmp, ROUNDS, out_dir, extra);
    int rc = run(&out, "%s%s", args, "");
    PK_CHECK_EQ(rc, want_rc);
    if (rc != want_rc) {
        char *e = last_stderr();
        fprintf(stderr, "fedsim %s: %s\n", extra, e);
        free(e);
    }
    cJSON *j = rc == 0 ? cJSON_Parse(last_line(out)) : NULL;
    free(out);
    PK_CHECK_EQ(stray_processes(), 0);
    return j;
}

static void check_summary(const cJSON *s, const char *dir)
{
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(s, "log_check");
    PK_CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "ok")));
    PK_CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "values_compared")));
    PK_CHECK_EQ(cJSON_GetObjectItemCaseSensitive(c, "records")->valuedouble, 2 * ROUNDS);
    PK_CHECK_EQ(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(s, "global_hashes")), ROUNDS);
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(s, "baseline");
    PK_CHECK(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(b, "accuracy")));
    PK_CHECK_EQ(cJSON_GetObjectItemCaseSensitive(b, "steps")->valuedouble, 2 * 2 * ROUNDS);
    /* its own rate (--baseline-lr), the same loss evaluations as the devices' two-point steps */
    PK_CHECK_EQ(cJSON_GetObjectItemCaseSensitive(b, "lr")->valuedouble, (double)5e-4f);
    /* a rate given by hand is never backed off from */
    PK_CHECK(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(b, "backoffs")) &&
             cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(b, "backoffs")) == 0);
    PK_CHECK_EQ(cJSON_GetObjectItemCaseSensitive(b, "evaluations")->valuedouble,
                2 * 2 * 2 * ROUNDS);
    PK_CHECK_EQ(cJSON_GetObjectItemCaseSensitive(s, "device_evaluations")->valuedouble,
                2 * 2 * 2 * ROUNDS);
    /* one eval per round's worth of steps, and the base model's first */
    PK_CHECK_EQ(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(b, "evals")), ROUNDS + 1);
    const char *h = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(s, "model_hash"));
    char base[65] = "";
    pk_model *m = NULL;
    if (pk_model_load(STORIES, pk_model_default_params(), &m, NULL, 0) == PK_OK)
        PK_CHECK(pk_weights_hash(m, base) == PK_OK);
    pk_model_free(m);
    PK_CHECK(h && strlen(h) == 64 && strcmp(h, base) != 0); /* the model moved */
    cJSON *file = read_json(dir, "summary.json");
    PK_CHECK(file &&
             !strcmp(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(file, "model_hash")),
                     h ? h : ""));
    const char *status = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(file, "status"));
    PK_CHECK(status && !strcmp(status, "done") && !cJSON_HasObjectItem(file, "error"));
    cJSON_Delete(file);
    check_rounds_file(dir);
    char *svg = slurp_at(dir, "curves.svg", NULL);
    PK_CHECK(svg && strstr(svg, "<svg") && strstr(svg, "id=\"panel-1\"") &&
             strstr(svg, "id=\"baseline\""));
    free(svg);
    PK_CHECK(!exists(dir, "homes")); /* removed without --keep */
}

static int same_hashes(const cJSON *a, const cJSON *b)
{
    const cJSON *ha = cJSON_GetObjectItemCaseSensitive(a, "global_hashes");
    const cJSON *hb = cJSON_GetObjectItemCaseSensitive(b, "global_hashes");
    int n = cJSON_GetArraySize(ha), same = n == ROUNDS && n == cJSON_GetArraySize(hb);
    for (int i = 0; same && i < n; i++)
        same = !strcmp(cJSON_GetStringValue(cJSON_GetArrayItem(ha, i)),
                       cJSON_GetStringValue(cJSON_GetArrayItem(hb, i)));
    return same;
}

static void test_runs(void)
{
    char a[200], b[200];
    snprintf(a, sizeof a, "%s/run-a", g_tmp);
    snprintf(b, sizeof b, "%s/run-b", g_tmp);
    cJSON *sa = fedsim(a, "--parallel 1 --threads 2 --baseline --baseline-lr 5e-4", 0);
    if (sa)
        check_summary(sa, a);
    cJSON *sb = fedsim(b, "--parallel 3 --threads 1 --faults 5xx=0.05,drop=0.03,seed=3", 0);
    PK_CHECK(sa && sb && same_hashes(sa, sb));
    /* the observer's evals do not depend on its thread count either */
    const cJSON *la = cJSON_GetObjectItemCaseSensitive(sa, "loss");
    const cJSON *lb = cJSON_GetObjectItemCaseSensitive(sb, "loss");
    PK_CHECK(cJSON_IsNumber(la) && cJSON_IsNumber(lb) && la->valuedouble == lb->valuedouble);
    cJSON_Delete(sa);
    cJSON_Delete(sb);
}

/* Changes one coefficient of the first record of path: a bit of the high mantissa byte of
 * its first pair's f32 (PROTOCOL 3: u16le k, f32le v). 0 on success. */
static int tamper_record(const char *path)
{
    size_t n = 0;
    char *text = slurp(path, &n), *nl = text ? strchr(text, '\n') : NULL;
    if (!nl)
        return -1;
    *nl = '\0';
    cJSON *j = cJSON_Parse(text);
    const char *b64 = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "pairs"));
    uint8_t bin[4096];
    size_t got = 0;
    char *enc = NULL;
    int rc = -1;
    if (b64 && pk_base64_decode(b64, strlen(b64), bin, sizeof bin, &got) == PK_OK && got >= 6) {
        bin[4] ^= 0x08;
        if (pk_base64_encode(bin, got, &enc) == PK_OK) {
            cJSON_ReplaceItemInObjectCaseSensitive(j, "pairs", cJSON_CreateString(enc));
            char *line = cJSON_PrintUnformatted(j);
            FILE *f = fopen(path, "w");
            rc = f && fprintf(f, "%s\n%s", line, nl + 1) > 0 ? 0 : -1;
            if (f && fclose(f) != 0)
                rc = -1;
            cJSON_free(line);
        }
    }
    free(enc);
    cJSON_Delete(j);
    free(text);
    return rc;
}

/* The log check of a run kept with --keep, against its coordinator started again on its
 * database; *check filled. */
static pk_status verify_kept(const char *dir, pk_fedsim_check *check)
{
    char cdir[300], task_path[400], rec[3][400], err[512] = "";
    const char *recs[3] = {rec[0], rec[1], rec[2]};
    snprintf(cdir, sizeof cdir, "%s/coordinator", dir);
    snprintf(task_path, sizeof task_path, "%s/task.json", cdir);
    for (int i = 0; i < 3; i++)
        snprintf(rec[i], sizeof rec[i], "%s/homes/dev-%05d/records.jsonl", dir, i);
    size_t n = 0;
    char *task = slurp(task_path, &n);
    pk_fedsim_coord *c = NULL;
    pk_status st = task ? pk_fedsim_coord_start(SERVER, cdir, task, NULL, NULL, &c, err, sizeof err)
                        : PK_ERR_IO;
    if (st == PK_OK)
        st = pk_fedsim_verify_log(pk_fedsim_coord_url(c), recs, 3, 1, ROUNDS, check, err,
                                  sizeof err);
    if (st != PK_OK)
        fprintf(stderr, "verify_kept: %s\n", err);
    pk_fedsim_coord_stop(c);
    free(task);
    return st;
}

/* DP noise: every coefficient still compared, and a changed record is caught. */
static void test_dp_values(void)
{
    char d[200], rec[300];
    snprintf(d, sizeof d, "%s/run-dp", g_tmp);
    cJSON *s = fedsim(d, "--dp-clip 1 --dp-noise 1 --keep", 0);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(s, "log_check");
    PK_CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "ok")));
    PK_CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "values_compared")));
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(s, "epsilon");
    PK_CHECK(cJSON_IsNumber(e) && e->valuedouble > 0);
    cJSON_Delete(s);
    pk_fedsim_check chk;
    memset(&chk, 0, sizeof chk);
    PK_CHECK(verify_kept(d, &chk) == PK_OK);
    PK_CHECK(chk.entries == ROUNDS && chk.mismatches == 0 && chk.values == 1);
    /* the first device that uploaded: dropouts leave one of the three out each round */
    int tampered = 0;
    for (int i = 0; i < 3 && !tampered; i++) {
        snprintf(rec, sizeof rec, "%s/homes/dev-%05d/records.jsonl", d, i);
        tampered = access(rec, R_OK) == 0 && tamper_record(rec) == 0;
    }
    PK_CHECK(tampered);
    memset(&chk, 0, sizeof chk);
    PK_CHECK(verify_kept(d, &chk) == PK_OK);
    PK_CHECK_EQ(chk.mismatches, 1);
    PK_CHECK(strstr(chk.first, "coefficients differ") != NULL);
    PK_CHECK_EQ(stray_processes(), 0);
}

/* A TCP port that accepts connections (the kernel's backlog) but never answers. */
static int silent_port(int *fd_out)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 16) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        return -1;
    *fd_out = fd;
    return ntohs(a.sin_port);
}

static void expect_error(const char *out_dir, const char *args, int want_rc, const char *needle)
{
    char *out = NULL, cmd[3000];
    snprintf(cmd, sizeof cmd, "fedsim --model %s " TASK " --rounds 1 --local-steps 1 --out %s %s",
             STORIES, out_dir, args);
    PK_CHECK_EQ(run(&out, "%s%s", cmd, ""), want_rc);
    char *e = last_stderr();
    if (!strstr(e, needle))
        fprintf(stderr, "expected '%s' in: %s\n", needle, e);
    PK_CHECK(strstr(e, needle) != NULL);
    PK_CHECK(!exists(out_dir, "homes"));
    PK_CHECK_EQ(stray_processes(), 0);
    free(e);
    free(out);
}

/* fzoo rides on the protocol; hizoo is refused with its reason. */
static void test_estimators(void)
{
    char d[200], files[600], args[1500];
    snprintf(d, sizeof d, "%s/run-fzoo", g_tmp);
    cJSON *s = fedsim(d, "--estimator fzoo --perturbations 3", 0);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(s, "log_check");
    PK_CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "ok")));
    PK_CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "values_compared")));
    const char *est = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(s, "estimator"));
    PK_CHECK(est && !strcmp(est, "fzoo"));
    /* 2 uploads x ROUNDS x 2 FZOO steps x (3 + 1) evaluations; each FZOO step is 3 local steps */
    const cJSON *ev = cJSON_GetObjectItemCaseSensitive(s, "device_evaluations");
    PK_CHECK(cJSON_IsNumber(ev) && ev->valuedouble == 2 * ROUNDS * 2 * 4);
    PK_CHECK_EQ(cJSON_GetObjectItemCaseSensitive(s, "device_steps")->valuedouble, 2 * ROUNDS * 6);
    const cJSON *l0 = cJSON_GetObjectItemCaseSensitive(s, "base_loss");
    const cJSON *l1 = cJSON_GetObjectItemCaseSensitive(s, "loss");
    PK_CHECK(cJSON_IsNumber(l0) && cJSON_IsNumber(l1) && l1->valuedouble < l0->valuedouble);
    cJSON_Delete(s);
    check_rounds_file(d);
    /* the top block only: the devices' fzoo groups run on the frozen prefix (l0 and the l_i in
     * one sweep from the same stored rows); the log replays, the loss falls */
    snprintf(d, sizeof d, "%s/run-fzoo-top", g_tmp);
    s = fedsim(d, "--estimator fzoo --perturbations 3 --trainable top:1 --lr 1e-2", 0);
    c = cJSON_GetObjectItemCaseSensitive(s, "log_check");
    PK_CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "ok")));
    l0 = cJSON_GetObjectItemCaseSensitive(s, "base_loss");
    l1 = cJSON_GetObjectItemCaseSensitive(s, "loss");
    PK_CHECK(cJSON_IsNumber(l0) && cJSON_IsNumber(l1) && l1->valuedouble < l0->valuedouble);
    cJSON_Delete(s);
    /* a run that fails (every device refuses top:0) exits 1; its summary says so */
    snprintf(d, sizeof d, "%s/run-top0", g_tmp);
    PK_CHECK(fedsim(d, "--trainable top:0", 1) == NULL);
    s = read_json(d, "summary.json");
    const char *status = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(s, "status"));
    const char *error = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(s, "error"));
    PK_CHECK(status && !strcmp(status, "failed") && error && strstr(error, "top:0"));
    cJSON_Delete(s);
    /* the task's trainable field is 1 to 63 characters: a longer spec is a usage error */
    snprintf(d, sizeof d, "%s/long-trainable", g_tmp);
    snprintf(files, sizeof files, "--data %s/train.jsonl --eval-data %s/eval.jsonl", g_tmp, g_tmp);
    snprintf(args, sizeof args, "%s --devices 2 --trainable '%0*d'", files, 64, 0);
    expect_error(d, args, 2, "--trainable: the task names the trainable set in 1 to 63");
    /* the library refuses it too (an API caller gets the reason, not the coordinator's refusal) */
    pk_fedsim_params fp = pk_fedsim_default_params();
    char errb[256] = "";
    snprintf(fp.cfg.trainable, sizeof fp.cfg.trainable, "%0*d", 64, 0);
    PK_CHECK(pk_fedsim_run(&fp, NULL, NULL, errb, sizeof errb) == PK_ERR_ARG);
    PK_CHECK(strstr(errb, "1 to 63 characters (got 64)") != NULL);
    PK_CHECK(!pk_fedsim_trainable_ok("", errb, sizeof errb) &&
             pk_fedsim_trainable_ok("top:1", NULL, 0));
    snprintf(d, sizeof d, "%s/hizoo", g_tmp);
    snprintf(files, sizeof files, "--data %s/train.jsonl --eval-data %s/eval.jsonl", g_tmp, g_tmp);
    snprintf(args, sizeof args, "%s --devices 2 --estimator hizoo", files);
    expect_error(d, args, 2, "--estimator hizoo: hizoo cannot be carried by the sync protocol");
    char *out = NULL;
    snprintf(args, sizeof args,
             "fedsim device --server http://127.0.0.1:9 --home %s/nohome --model %s "
             "--dataset local --estimator hizoo",
             g_tmp, STORIES);
    PK_CHECK_EQ(run(&out, "%s%s", args, ""), 2);
    free(out);
    char *e = last_stderr();
    PK_CHECK(strstr(e, "Hessian") != NULL);
    free(e);
}

/* The task of scripts/fedsim.sh data (docs/FEDSIM.md section 5): 16 names x 8 good and 8 bad
 * events, every fifth story held out; 205 training and 51 eval examples under g_tmp/story-*. */
static int write_stories(void)
{
    static const char *const nm[] = {"Lily", "Tom", "Sue", "Ben", "Mia", "Max", "Amy", "Sam",
                                     "Tim",  "Zoe", "Kim", "Dan", "Ann", "Joe", "Eva", "Bob"};
    static const char *const ev[2][8] = {
        {"found a shiny red ball and smiled", "got a big hug from mom and laughed",
         "played in the warm sun with a friend", "ate a sweet cake at the party",
         "saw a pretty bird sing in the tree", "won the race and jumped with joy",
         "made a new friend at the park", "got a kind gift from grandma"},
        {"broke the little toy and cried", "lost the ball in the cold rain",
         "fell down and hurt a knee", "was alone and scared in the dark",
         "dropped the ice cream on the ground", "saw the old dog get sick",
         "could not find mom in the big store", "had a bad dream and woke up crying"}};
    char p[2][200];
    snprintf(p[0], sizeof p[0], "%s/story-train.jsonl", g_tmp);
    snprintf(p[1], sizeof p[1], "%s/story-eval.jsonl", g_tmp);
    FILE *f[2] = {fopen(p[0], "w"), fopen(p[1], "w")};
    int n = 0;
    for (int i = 0; f[0] && f[1] && i < 16; i++)
        for (int j = 0; j < 8; j++)
            for (int g = 0; g < 2; g++, n++)
                fprintf(f[n % 5 == 4], "{\"text\":\"%s %s.\",\"label\":\"%s\"}\n", nm[i], ev[g][j],
                        g == 0 ? "good" : "bad");
    int rc = (f[0] ? fclose(f[0]) : -1) | (f[1] ? fclose(f[1]) : -1);
    return n == 256 ? rc : -1;
}

/* --baseline-lr auto on a run where the rate train --lr auto chooses still diverges: its 10-step
 * search's winner (3e-4; docs/FEDSIM.md section 5: over 234 steps it ended at eval loss 15.0
 * before the back-off) divided by 3 for a long constant-rate run, 1e-4, diverges at step 639 of
 * this baseline's 1114: the baseline notices it in its training loss, starts over at a third of
 * the rate with what its budget has left, says so, and ends below the base model's loss. */
static void test_baseline_backoff(void)
{
    char d[200], args[2000], *out = NULL;
    PK_CHECK(write_stories() == 0);
    snprintf(d, sizeof d, "%s/run-auto", g_tmp);
    snprintf(args, sizeof args,
             "fedsim --model %s --data %s/story-train.jsonl --eval-data %s/story-eval.jsonl"
             " --objective classify --template '{text} The day was' --labels ' good, bad'"
             " --devices 2 --rounds 2 --local-steps 300 --batch 8 --seq-len 32 --lr 2e-4"
             " --eps 1e-3 --seed 11 --parallel 2 --baseline --baseline-lr auto --out %s",
             STORIES, g_tmp, g_tmp, d);
    PK_CHECK_EQ(run(&out, "%s%s", args, ""), 0);
    PK_CHECK(out && strstr(out, "diverged at step") && strstr(out, "starting over at"));
    PK_CHECK_EQ(stray_processes(), 0);
    cJSON *s = read_json(d, "summary.json");
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(s, "baseline");
    const cJSON *bo = cJSON_GetObjectItemCaseSensitive(b, "backoffs");
    const cJSON *ls = cJSON_GetObjectItemCaseSensitive(b, "lr_search");
    PK_CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(b, "lr_auto")));
    PK_CHECK(cJSON_GetArraySize(ls) == PK_LR_CANDIDATES && cJSON_GetArraySize(bo) >= 1);
    /* the search's choice (here the lowest held-back loss: no larger rate ties with it and it
     * is not the largest rate tried; over 3 for a long constant-rate run: train/lrsearch.c) is
     * the rate that diverged first */
    double winner = 0, best = 1e30;
    for (int i = 0; i < cJSON_GetArraySize(ls); i++) {
        const cJSON *c = cJSON_GetArrayItem(ls, i), *l = cJSON_GetArrayItem(c, 1);
        if (cJSON_IsNumber(l) && l->valuedouble < best) {
            best = l->valuedouble;
            winner = cJSON_GetArrayItem(c, 0)->valuedouble;
        }
    }
    PK_CHECK(winner > 0 && winner < 1e-2);
    double chosen = (double)((float)winner / (float)PK_LR_BACKOFF);
    const cJSON *first = cJSON_GetArrayItem(bo, 0);
    PK_CHECK(first && (float)cJSON_GetArrayItem(first, 0)->valuedouble == (float)chosen);
    /* rates are floats, printed with 15 digits: compared as floats */
    double lr = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(b, "lr"));
    float want = (float)chosen;
    for (int i = 0; i < cJSON_GetArraySize(bo); i++)
        want /= 3.0f;
    PK_CHECK((float)lr == want && lr < chosen);
    /* the budget: the search, the diverged attempts and the last one's steps, all counted */
    double spent = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(b, "search_evaluations"));
    for (int i = 0; i < cJSON_GetArraySize(bo); i++)
        spent += cJSON_GetArrayItem(cJSON_GetArrayItem(bo, i), 4)->valuedouble;
    double steps = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(b, "steps"));
    double evals = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(b, "evaluations"));
    double dev = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(s, "device_evaluations"));
    PK_CHECK(steps >= 1 && evals == spent + 2 * steps && evals <= dev && dev == 2400);
    /* it learned instead of diverging */
    const cJSON *base = cJSON_GetObjectItemCaseSensitive(s, "base_loss");
    const cJSON *bl = cJSON_GetObjectItemCaseSensitive(b, "loss");
    PK_CHECK(cJSON_IsNumber(base) && cJSON_IsNumber(bl) && bl->valuedouble < base->valuedouble);
    if (bl && base)
        printf("baseline auto: %d back-off(s), lr %g, loss %.4f (base %.4f)\n",
               cJSON_GetArraySize(bo), lr, bl->valuedouble, base->valuedouble);
    cJSON_Delete(s);
    free(out);
}

/* Ctrl-C in the middle of the rounds: exit 130, the coordinator and the device processes gone,
 * the homes removed. */
static void test_interrupt(void)
{
    char d[200], rounds[300], cmd[3000];
    snprintf(d, sizeof d, "%s/run-int", g_tmp);
    snprintf(rounds, sizeof rounds, "%s/rounds.jsonl", d);
    snprintf(cmd, sizeof cmd,
             "exec %s fedsim --model %s --data %s/train.jsonl --eval-data %s/eval.jsonl " TASK
             " --devices 3 --rounds 50 --local-steps 2 --batch 4 --seq-len 32 --stragglers 1"
             " --straggle 0.2 --parallel 1 --seed 7 --out %s > %s/int.out 2> %s/int.err",
             POCKETLLM, STORIES, g_tmp, g_tmp, d, g_tmp, g_tmp);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    PK_CHECK(pid > 0);
    /* round 0 (the base model's eval) is written once the homes and the coordinator are up */
    int up = 0;
    for (int i = 0; i < 6000 && !up; i++) {
        size_t n = 0;
        char *r = slurp(rounds, &n);
        up = r && strchr(r, '\n') != NULL;
        free(r);
        if (!up)
            usleep(10000);
    }
    PK_CHECK(up);
    usleep(300000); /* a straggling device is running now */
    int ws = 0, done = 0;
    if (pid > 0) {
        kill(pid, SIGINT);
        for (int i = 0; i < 6000 && !done; i++) {
            done = waitpid(pid, &ws, WNOHANG) == pid;
            if (!done)
                usleep(10000);
        }
        if (!done) {
            kill(pid, SIGKILL);
            waitpid(pid, &ws, 0);
        }
    }
    PK_CHECK(done && WIFEXITED(ws) && WEXITSTATUS(ws) == 130);
    PK_CHECK(!exists(d, "homes"));
    PK_CHECK_EQ(stray_processes(), 0);
}

static void test_bad_input(void)
{
    char d[200], files[600], home[200], pw[200], args[1500];
    snprintf(d, sizeof d, "%s/bad", g_tmp);
    snprintf(files, sizeof files, "--data %s/train.jsonl --eval-data %s/eval.jsonl", g_tmp, g_tmp);
    snprintf(args, sizeof args, "%s --devices 0", files);
    expect_error(d, args, 2, "--devices");
    snprintf(args, sizeof args, "%s --devices 2 --baseline --baseline-lr fast", files);
    expect_error(d, args, 2, "--baseline-lr fast: want a rate in (0, 100] or auto");
    snprintf(args, sizeof args, "%s --devices 2 --baseline-lr 1e-4", files);
    expect_error(d, args, 2, "--baseline-lr needs --baseline");
    /* 2 devices x 1 step x 1 round = 4 evaluations: the rate search alone takes more */
    snprintf(args, sizeof args, "%s --devices 2 --baseline --baseline-lr auto", files);
    expect_error(d, args, 1, "the baseline's learning-rate search alone takes");
    /* no eval set, or an eval file that is not there */
    snprintf(args, sizeof args, "--data %s/train.jsonl --devices 2", g_tmp);
    expect_error(d, args, 2, "give the eval set as --eval-data FILE or as --eval-dataset NAME");
    snprintf(args, sizeof args, "--data %s/train.jsonl --eval-data %s/nope.jsonl --devices 2",
             g_tmp, g_tmp);
    expect_error(d, args, 1, "nope.jsonl: No such file or directory");
    snprintf(args, sizeof args, "%s --devices 100", files);
    expect_error(d, args, 1, "--devices: 100 devices need at least 100 training examples");
    snprintf(home, sizeof home, "%s/src-home", g_tmp);
    snprintf(pw, sizeof pw, "%s/pw", g_tmp);
    PK_CHECK(write_string(pw, "test passphrase\n") == 0);
    char *out = NULL;
    snprintf(args, sizeof args, "--home %s --passphrase-file %s --opslimit 1 --memlimit 8192", home,
             pw);
    PK_CHECK_EQ(run(&out, "init %s%s", args, ""), 0);
    free(out);
    snprintf(args, sizeof args, "%s/train.jsonl --dataset d --home %s --passphrase-file %s", g_tmp,
             home, pw);
    PK_CHECK_EQ(run(&out, "import %s%s", args, ""), 0);
    free(out);
    snprintf(args, sizeof args,
             "--home %s --passphrase-file %s --dataset d --eval-dataset nope --devices 2", home,
             pw);
    expect_error(d, args, 1, "--eval-dataset: dataset nope");
    int fd = -1, port = silent_port(&fd);
    PK_CHECK(port > 0);
    snprintf(args, sizeof args, "%s --devices 2 --server http://127.0.0.1:%d", files, port);
    double t0 = pk_time_now();
    expect_error(d, args, 1, "does not answer");
    PK_CHECK(pk_time_now() - t0 < 60.0);
    if (fd >= 0)
        close(fd);
}

int main(void)
{
    char p[200];
    if (!make_tmpdir(g_tmp, sizeof g_tmp, "fedsim"))
        return 1;
    snprintf(p, sizeof p, "%s/train.jsonl", g_tmp);
    PK_CHECK(write_task(p, 24, 0) == 0);
    snprintf(p, sizeof p, "%s/eval.jsonl", g_tmp);
    PK_CHECK(write_task(p, 8, 3) == 0);
    test_model_info();
    test_runs();
    test_dp_values();
    test_estimators();
    test_baseline_backoff();
    test_interrupt();
    test_bad_input();
    if (!pk_test_failures)
        rm_rf(g_tmp);
    else
        fprintf(stderr, "kept %s\n", g_tmp);
    return PK_TEST_DONE();
}
