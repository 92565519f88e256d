/* test_determinism_cli.c: training is bit-exact by construction (docs/DETERMINISM.md), through
 * the built `pocketllm` on stories260k. Under each OpenBLAS kernel (OPENBLAS_CORETYPE unset,
 * Haswell and, where the CPU has AVX-512, SkylakeX; the test sets the variable for its child
 * processes): the same run under --threads 1, 2 and 3 ends with the same weights hash, and a run
 * killed with SIGKILL at one thread count then resumed at another ends there too, without a
 * kernel warning. A run records the kernel it started on; resumed under another kernel it says so
 * in one line and still finishes; exporting a run under another kernel (a replay of its step log,
 * which never recomputes a loss) gives its weights bit for bit. */
#include "pk_common.h"
#include "pk_test.h"
/* this test starts no server-mock: the header's server helpers stay unused */
#include "test_product_util.h"
#include "test_util.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>

#define STORIES PK_STORIES_DIR
#define PASS    "determinism-cli-test-passphrase"
#define STEPS   20
#define STR_(x) #x
#define STR(x)  STR_(x)
/* every run here: q = 2, accumulation, weight decay, a cosine schedule with warm-up, checkpoints */
#define TRAIN_ARGS                                                                                 \
    " --model " STORIES " --dataset pip --objective lm --lr 2e-4 --batch 4 --seq-len 64"           \
    " --spsa-q 2 --accumulate 2 --weight-decay 0.01 --schedule cosine --warmup 3"                  \
    " --checkpoint-every 6 --seed 11 --steps " STR(STEPS)
#define WARNING "exact only on the same kernel"

static char tmp[128];  /* the test's temporary directory */
static char home[256]; /* the agent home inside it */

/* OPENBLAS_CORETYPE for the children ("" = unset). */
static void use_kernel(const char *core)
{
    if (core[0])
        setenv("OPENBLAS_CORETYPE", core, 1);
    else
        unsetenv("OPENBLAS_CORETYPE");
}

/* Lines of s containing WARNING. */
static int warnings(const char *s)
{
    int n = 0;
    for (const char *p = s; p && (p = strstr(p, WARNING)) != NULL; p++)
        n++;
    return n;
}

/* The final JSON line of a `train` (its last stdout line): run id and weights hash. */
static int64_t parse_train(char *out, char *hash, size_t n)
{
    cJSON *j = cJSON_Parse(last_line(out));
    const cJSON *run = cJSON_GetObjectItemCaseSensitive(j, "run");
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(j, "weights");
    int64_t id = cJSON_IsNumber(run) ? (int64_t)run->valuedouble : -1;
    snprintf(hash, n, "%s", cJSON_IsString(w) ? w->valuestring : "");
    cJSON_Delete(j);
    return id;
}

/* `train ARGS` (stderr into the output too); its run id and hash, *warn its kernel warnings. */
static int64_t train(const char *args, int threads, char *hash, size_t n, int *warn)
{
    char *o = NULL;
    int rc = run_fmt(&o, RUN_SHOW_FAILURE, "%s train %s --threads %d --quiet --home %s 2>&1",
                     POCKETLLM, args, threads, home);
    int64_t id = rc == 0 ? parse_train(o, hash, n) : -1;
    if (warn)
        *warn = warnings(o);
    if (id < 0)
        fprintf(stderr, "train %s: %s\n", args, o ? o : "");
    free(o);
    return id;
}

/* `runs show ID --json`: steps done, status and the recorded kernel. */
static int64_t run_state(int64_t run, char *status, char *kernel, size_t n)
{
    char *o = NULL;
    int64_t done = -1;
    status[0] = kernel[0] = '\0';
    if (run_fmt(&o, RUN_SHOW_FAILURE, "%s runs show %lld --json --home %s", POCKETLLM,
                (long long)run, home) == 0) {
        cJSON *j = cJSON_Parse(last_line(o));
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "status");
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "steps_done");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(j, "config");
        const cJSON *k = cJSON_GetObjectItemCaseSensitive(c, "kernel");
        snprintf(status, n, "%s", cJSON_IsString(s) ? s->valuestring : "");
        snprintf(kernel, n, "%s", cJSON_IsString(k) ? k->valuestring : "");
        done = cJSON_IsNumber(d) ? (int64_t)d->valuedouble : -1;
        cJSON_Delete(j);
    }
    free(o);
    return done;
}

/* Starts `train TRAIN_ARGS --json` at `threads`, kills it with SIGKILL once its progress says at
 * least 4 steps are done; returns the killed run's id (the newest run), or -1. */
static int64_t train_and_kill(int threads)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "exec %s train" TRAIN_ARGS " --threads %d --home %s --json",
             POCKETLLM, threads, home);
    if (kill_train_at(cmd, 4) != 0)
        return -1;
    char *o = NULL; /* the killed run is the newest: first line of `runs list --json` */
    int64_t run = -1;
    if (run_fmt(&o, RUN_SHOW_FAILURE, "%s runs list --json --home %s", POCKETLLM, home) == 0 &&
        o != NULL) {
        o[strcspn(o, "\n")] = '\0';
        cJSON *j = cJSON_Parse(o);
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "run");
        run = cJSON_IsNumber(r) ? (int64_t)r->valuedouble : -1;
        cJSON_Delete(j);
    }
    free(o);
    return run;
}

/* One kernel: threads 1, 2, 3 agree; kill at kill_threads, resume at resume_threads agrees.
 * hash gets the kernel's final weights hash, *run one of its finished runs. */
static void check_kernel(const char *core, int kill_threads, int resume_threads, char *hash,
                         int64_t *run)
{
    char h[3][80], st[32], kernel[160];
    const char *name = core[0] ? core : "(unset)";
    use_kernel(core);
    for (int t = 1; t <= 3; t++) {
        int64_t id = train(TRAIN_ARGS, t, h[t - 1], sizeof h[0], NULL);
        PK_CHECK(id > 0);
        if (t == 1)
            *run = id;
    }
    for (int t = 2; t <= 3; t++) {
        if (strcmp(h[t - 1], h[0]) != 0)
            fprintf(stderr,
                    "OPENBLAS_CORETYPE=%s: %d threads end at %.16s..., 1 thread at "
                    "%.16s...\n",
                    name, t, h[t - 1], h[0]);
        PK_CHECK(strlen(h[0]) == 64 && !strcmp(h[t - 1], h[0]));
    }
    run_state(*run, st, kernel, sizeof kernel);
    fprintf(stderr, "OPENBLAS_CORETYPE=%s: kernel %s, weights %.16s...\n", name, kernel, h[0]);
    if (core[0]) /* the run recorded the kernel the variable chose */
        PK_CHECK(strstr(kernel, core) != NULL);
    snprintf(hash, 80, "%s", h[0]);

    int64_t killed = train_and_kill(kill_threads);
    PK_CHECK(killed > *run);
    int64_t done = run_state(killed, st, kernel, sizeof kernel);
    PK_CHECK(done >= 4 && done < STEPS && !strcmp(st, "running"));
    char args[64], hr[80] = "";
    int warn = -1;
    snprintf(args, sizeof args, "--resume %lld", (long long)killed);
    PK_CHECK_EQ(train(args, resume_threads, hr, sizeof hr, &warn), killed);
    PK_CHECK_EQ(warn, 0); /* same kernel: nothing to say */
    if (strcmp(hr, h[0]) != 0)
        fprintf(stderr,
                "OPENBLAS_CORETYPE=%s: killed at step %lld with %d threads, resumed with "
                "%d: %.16s..., uninterrupted %.16s...\n",
                name, (long long)done, kill_threads, resume_threads, hr, h[0]);
    PK_CHECK(!strcmp(hr, h[0]));
    PK_CHECK_EQ(run_state(killed, st, kernel, sizeof kernel), STEPS);
}

/* A run started under kernel `from`, killed, resumed under `to`: one warning line, and it
 * finishes. Export (replay of the log) under `to` of a run trained under `from` gives its hash. */
static void check_other_kernel(const char *from, const char *to, int64_t from_run,
                               const char *from_hash)
{
    use_kernel(from);
    int64_t killed = train_and_kill(2);
    PK_CHECK(killed > 0);
    use_kernel(to);
    char args[64], hr[80] = "", st[32], kernel[160];
    int warn = -1;
    snprintf(args, sizeof args, "--resume %lld", (long long)killed);
    PK_CHECK_EQ(train(args, 1, hr, sizeof hr, &warn), killed);
    PK_CHECK_EQ(warn, 1);
    PK_CHECK_EQ(run_state(killed, st, kernel, sizeof kernel), STEPS);
    PK_CHECK(!strcmp(st, "done"));
    char *o = NULL;
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE, "%s export --run %lld --out %s/export-%lld --home %s",
                        POCKETLLM, (long long)from_run, tmp, (long long)from_run, home),
                0);
    PK_CHECK(strstr(o ? o : "", from_hash) != NULL);
    free(o);
}

int main(void)
{
    const char *env_core = getenv("OPENBLAS_CORETYPE");
    char saved[64];
    snprintf(saved, sizeof saved, "%s", env_core ? env_core : "");
    PK_CHECK(cli_test_env(PASS, tmp, sizeof tmp, "detcli"));
    snprintf(home, sizeof home, "%s/home", tmp);
    /* the smallest Argon2id limits: every command here derives the key again */
    PK_CHECK_EQ(init_pip_home(home), 0);
    char h_unset[80] = "", h_has[80] = "", h_skx[80] = "";
    int64_t r_unset = 0, r_has = 0, r_skx = 0;
    check_kernel("", 2, 1, h_unset, &r_unset);
    check_kernel("Haswell", 1, 3, h_has, &r_has);
    if (cpu_has_avx512())
        check_kernel("SkylakeX", 3, 2, h_skx, &r_skx);
    else
        fprintf(stderr, "note: this CPU has no AVX-512: the SkylakeX kernel is not tested\n");
    /* across kernels: the default kernel here is Cooperlake (or whatever OpenBLAS detects), so
     * Haswell is another one on any x86-64 CPU with AVX-512 or without */
    char st[32], k_unset[160], k_has[160];
    run_state(r_unset, st, k_unset, sizeof k_unset);
    run_state(r_has, st, k_has, sizeof k_has);
    if (strcmp(k_unset, k_has) != 0)
        check_other_kernel("Haswell", "", r_has, h_has);
    else
        fprintf(stderr, "note: OpenBLAS picks Haswell here by itself: no second kernel to resume "
                        "on\n");
    use_kernel(saved);
    rm_rf(tmp);
    return PK_TEST_DONE();
}
