/* test_agent_resume.c: what the agent remembers across a kill -9, and keep-best.
 * - Early stopping across resumes: the agent loop (pk_agent_run) runs in a child process that
 *   SIGKILLs itself at a chosen eval (after one, then after two evals without a new best, the
 *   latter being the eval that ends the run); a restarted agent ends the run at the same step,
 *   with the same evals and the same seed log as an uninterrupted one.
 * - Keep-best through the CLI: after worse evals, `agent status --json` (no passphrase) names
 *   the best evaluated run and step with its eval loss, and the run chained when new examples
 *   arrive starts from that point (run lineage in the store), not from the latest step; after
 *   a kill -9 the agent.status file it leaves reads as "not running". */
#include "pk_agent.h"
#include "pk_crypto.h"
#include "pk_test.h"
#include "test_agent_util.h"
#include "test_product_util.h"
#include "test_util.h"

#include <math.h>

#define PASS    "agent resume passphrase"
#define STORIES PK_STORIES_DIR
/* lr 3e-4 on these notes: the held-out loss improves for a few evals, then gets worse */
#define TRAIN_ARGS                                                                                 \
    "--poll 0.05 --batch 2 --seq-len 32 --holdout 20 --eval-every 5 --slice-steps 5 "              \
    "--early-stop 3 --steps 400 --seed 7 --lr 0.0003"

static char tmp[256], pass[300], sysdir[300], loadavg[300];

static int make_home(const char *home, int i0, int n)
{
    char notes[400];
    snprintf(notes, sizeof notes, "%s.notes%d.txt", home, i0);
    return agent_make_home(home, pass, notes, i0, n, i0 == 0);
}

/* ---- the agent loop in a child process ------------------------------------------------------ */

typedef struct watcher {
    int kill_after_bad; /* SIGKILL at the eval after this many evals without a new best (0: no) */
    int bad;            /* evals since the last new best */
    int pending;        /* the last eval has not (yet) been followed by a new best */
} watcher;

/* Reads the agent's event lines: "eval: ..." then "best: ..." when it improved. */
static void on_event(void *user, pk_agent_event kind, const char *line)
{
    watcher *w = user;
    (void)kind;
    if (!strncmp(line, "eval: ", 6)) {
        w->bad += w->pending;
        if (w->kill_after_bad > 0 && w->bad >= w->kill_after_bad)
            raise(SIGKILL); /* the eval is logged; nothing after it is */
        w->pending = 1;
    } else if (!strncmp(line, "best: ", 6)) {
        w->pending = 0;
        w->bad = 0;
    } else if (strstr(line, "early stop after") || strstr(line, "done after") ||
               !strncmp(line, "idle: ", 6)) {
        pk_interrupt_raise(); /* the run ended: stop the agent */
    }
}

/* An agent on home in a child process; returns how the child ended (exit code, or 128 +
 * signal). */
static int agent_child(const char *home, int kill_after_bad)
{
    pid_t pid = fork();
    if (pid == 0) {
        pk_store *s = NULL;
        char err[512] = "";
        watcher w = {kill_after_bad, 0, 0};
        pk_agent_params p = pk_agent_default_params();
        snprintf(p.train.model_dir, sizeof p.train.model_dir, "%s", STORIES);
        snprintf(p.datasets, sizeof p.datasets, "notes");
        p.train.batch = 2;
        p.train.seq_len = 32;
        p.train.steps = 400;
        p.train.mezo.seed = 7;
        p.train.mezo.lr = 3e-4f;
        p.holdout = 20;
        p.eval_every = 5;
        p.early_stop = 3;
        p.slice_steps = 5;
        p.poll_s = 0.05;
        snprintf(p.cond.sysfs_root, sizeof p.cond.sysfs_root, "%s", sysdir);
        snprintf(p.cond.loadavg_path, sizeof p.cond.loadavg_path, "%s", loadavg);
        p.on_event = on_event;
        p.event_user = &w;
        if (pk_store_open(home, PASS, strlen(PASS), &s, err, sizeof err) != PK_OK)
            _exit(3);
        pk_status st = pk_agent_run(s, &p, err, sizeof err);
        pk_store_close(s);
        if (st != PK_OK)
            fprintf(stderr, "agent child: %s\n", err);
        _exit(st == PK_OK ? 0 : 1);
    }
    return wait_exit(pid, 120);
}

/* Run 1 of home: its steps, status and evals (losses into loss[], at most 128). */
typedef struct run_view {
    int64_t steps_done, parent_run, parent_steps;
    char status[16];
    size_t n_evals;
    int64_t eval_step[128];
    double eval_loss[128];
} run_view;

static int view_run(const char *home, int64_t run, run_view *v)
{
    pk_store *s = NULL;
    pk_run_info ri;
    int64_t *steps = NULL;
    double *loss = NULL, *acc = NULL;
    size_t n = 0;
    memset(v, 0, sizeof *v);
    memset(&ri, 0, sizeof ri);
    pk_status st = pk_store_open(home, PASS, strlen(PASS), &s, NULL, 0);
    if (st == PK_OK)
        st = pk_store_run_get(s, run, &ri, NULL, 0);
    if (st == PK_OK) {
        v->steps_done = ri.steps_done;
        v->parent_run = ri.parent_run;
        v->parent_steps = ri.parent_steps;
        snprintf(v->status, sizeof v->status, "%s", ri.status);
        st = pk_store_eval_read(s, run, &steps, &loss, &acc, &n, NULL, 0);
    }
    for (size_t i = 0; st == PK_OK && i < n && i < 128; i++) {
        v->eval_step[i] = steps[i];
        v->eval_loss[i] = loss[i];
    }
    v->n_evals = n < 128 ? n : 128;
    pk_run_info_clear(&ri);
    free(steps);
    free(loss);
    free(acc);
    pk_store_close(s);
    return st == PK_OK;
}

static int seedlog_of(const char *home, int run, const char *out)
{
    return run_fmt(NULL, RUN_SHOW_FAILURE,
                   "%s export --run %d --seed-log %s --home %s --passphrase-file %s >/dev/null",
                   POCKETLLM, run, out, home, pass);
}

static int same_evals(const run_view *a, const run_view *b)
{
    if (a->n_evals != b->n_evals)
        return 0;
    for (size_t i = 0; i < a->n_evals; i++)
        if (a->eval_step[i] != b->eval_step[i] ||
            memcmp(&a->eval_loss[i], &b->eval_loss[i], sizeof(double)) != 0)
            return 0;
    return 1;
}

/* The step of the lowest eval loss (the first one on a tie, as keep-best takes a strict <). */
static int64_t best_step(const run_view *v)
{
    size_t b = 0;
    for (size_t i = 1; i < v->n_evals; i++)
        if (v->eval_loss[i] < v->eval_loss[b])
            b = i;
    return v->n_evals ? v->eval_step[b] : -1;
}

/* ---- early stopping across a kill -9 -------------------------------------------------------- */

static void test_early_stop_resume(void)
{
    char ref[300], home[300], la[400], lb[400];
    run_view r, k;
    snprintf(ref, sizeof ref, "%s/ref", tmp);
    PK_CHECK_EQ(make_home(ref, 0, 60), 0);
    PK_CHECK_EQ(agent_child(ref, 0), 0);
    PK_CHECK(view_run(ref, 1, &r));
    /* the premise: the run ended early, after evals without a new best */
    PK_CHECK(!strcmp(r.status, "done") && r.steps_done > 0 && r.steps_done < 400);
    PK_CHECK(r.n_evals >= 4 && best_step(&r) < r.steps_done);
    snprintf(la, sizeof la, "%s/ref.seedlog", tmp);
    PK_CHECK_EQ(seedlog_of(ref, 1, la), 0);
    for (int bad = 1; bad <= 2; bad++) {
        snprintf(home, sizeof home, "%s/killed%d", tmp, bad);
        PK_CHECK_EQ(make_home(home, 0, 60), 0);
        PK_CHECK_EQ(agent_child(home, bad), 128 + SIGKILL);
        PK_CHECK(view_run(home, 1, &k));
        PK_CHECK(strcmp(k.status, "done") != 0 && k.steps_done < r.steps_done + (bad == 2));
        PK_CHECK_EQ(agent_child(home, 0), 0); /* restarted: resumes, counts the logged evals */
        PK_CHECK(view_run(home, 1, &k));
        PK_CHECK(!strcmp(k.status, "done"));
        PK_CHECK_EQ(k.steps_done, r.steps_done);
        PK_CHECK(same_evals(&k, &r));
        snprintf(lb, sizeof lb, "%s/killed%d.seedlog", tmp, bad);
        PK_CHECK_EQ(seedlog_of(home, 1, lb), 0);
        PK_CHECK(files_equal(la, lb));
    }
}

/* ---- keep-best through the CLI ------------------------------------------------------------ */

static pid_t start_agent(const char *home)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "exec %s agent --home %s --passphrase-file %s --model %s --datasets notes "
             "--sysfs-root %s --loadavg-file %s " TRAIN_ARGS " --quiet 2>>%s.stderr",
             POCKETLLM, home, pass, STORIES, sysdir, loadavg, home);
    return spawn_sh(cmd);
}

/* The status once state is `state` (NULL: any) and reason holds `reason` and run >= min_run
 * (owned). */
static cJSON *wait_status(const char *home, const char *state, const char *reason, double min_run)
{
    for (int i = 0; i < 600; i++) {
        cJSON *j = agent_status(home);
        if (j && (state == NULL || !strcmp(json_str(j, "state"), state)) &&
            strstr(json_str(j, "reason"), reason) && jnum(j, "run") >= min_run)
            return j;
        cJSON_Delete(j);
        sleep_ms(100);
    }
    fprintf(stderr, "timed out waiting for state %s (%s, run >= %g)\n", state ? state : "any",
            reason, min_run);
    return NULL;
}

/* `eval --run 1 --dataset other` of an agent's run (its settings name datasets "notes")
 * evaluates on `other`, not on the run's own datasets. */
static void check_eval_named_dataset(const char *home)
{
    char path[400], *o = NULL;
    snprintf(path, sizeof path, "%s.other.txt", home);
    PK_CHECK_EQ(write_string(path, "one\ntwo\nthree\nfour\nfive\nsix\nseven\n"), 0);
    PK_CHECK_EQ(run_fmt(NULL, RUN_SHOW_FAILURE,
                        "%s import %s --dataset other --format txt --home %s --passphrase-file %s "
                        ">/dev/null",
                        POCKETLLM, path, home, pass),
                0);
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE,
                        "%s eval --run 1 --dataset other --home %s --passphrase-file %s", POCKETLLM,
                        home, pass),
                0);
    cJSON *j = o ? cJSON_Parse(last_line(o)) : NULL;
    PK_CHECK(j && !strcmp(json_str(j, "dataset"), "other") && jnum(j, "examples") == 7);
    cJSON_Delete(j);
    free(o);
}

static void test_keep_best(void)
{
    char home[300];
    run_view r1, r2;
    snprintf(home, sizeof home, "%s/best", tmp);
    PK_CHECK_EQ(make_home(home, 0, 60), 0);
    pid_t pid = start_agent(home);
    cJSON *j = wait_status(home, "idle", "up to date", 1);
    PK_CHECK(j != NULL);
    PK_CHECK(view_run(home, 1, &r1));
    int64_t bs = best_step(&r1);
    PK_CHECK(bs >= 0 && bs < r1.steps_done); /* the latest evals were worse than the best */
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(j, "best");
    PK_CHECK(cJSON_IsObject(b) && jnum(b, "run") == 1 && jnum(b, "step") == (double)bs);
    for (size_t i = 0; i < r1.n_evals; i++)
        if (r1.eval_step[i] == bs)
            PK_CHECK_NEAR(jnum(b, "eval_loss"), r1.eval_loss[i], 1e-12);
    cJSON_Delete(j);
    /* new examples: a run chained from the best point, not from run 1's last step. Run 2 may
     * train and finish between two polls (on 20 examples it can end within a second), so this
     * waits for the status to name run 2 in any state, not for "training". */
    PK_CHECK_EQ(make_home(home, 1000, 20), 0);
    j = wait_status(home, NULL, "", 2);
    PK_CHECK(j != NULL);
    cJSON_Delete(j);
    kill(pid, SIGKILL); /* its status file stays behind, naming a dead process */
    PK_CHECK_EQ(wait_exit(pid, 60), 128 + SIGKILL);
    PK_CHECK(view_run(home, 2, &r2));
    PK_CHECK_EQ(r2.parent_run, 1);
    PK_CHECK_EQ(r2.parent_steps, bs);
    PK_CHECK(r2.parent_steps != r1.steps_done);
    char path[400];
    struct stat sb;
    snprintf(path, sizeof path, "%s/agent.status", home);
    PK_CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0600);
    j = agent_status(home);
    PK_CHECK(j && cJSON_IsFalse(cJSON_GetObjectItem(j, "running")));
    PK_CHECK(j && cJSON_GetObjectItem(j, "state") == NULL); /* nothing of the dead agent's */
    cJSON_Delete(j);
    PK_CHECK(run_expect(1, "no agent home at", "%s agent status --home %s/nohome", POCKETLLM, tmp));
    check_eval_named_dataset(home);
}

int main(void)
{
    if (pk_crypto_global_init() != PK_OK || !make_tmpdir(tmp, sizeof tmp, "agentres"))
        return 1;
    snprintf(pass, sizeof pass, "%s/pass.txt", tmp);
    PK_CHECK_EQ(write_string(pass, PASS "\n"), 0);
    snprintf(sysdir, sizeof sysdir, "%s/sys", tmp); /* no supplies, no zones: on AC, cool */
    mkdir(sysdir, 0700);
    snprintf(loadavg, sizeof loadavg, "%s/loadavg", tmp);
    put(loadavg, "0.00 0.00 0.00 1/1 1\n");
    test_early_stop_resume();
    test_keep_best();
    rm_rf_if_passed(tmp, pk_test_failures);
    return PK_TEST_DONE();
}
