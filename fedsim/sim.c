/* sim.c: the round loop of `pocketllm fedsim` (docs/FEDSIM.md): starts the coordinator (or uses
 * a given one), picks each round's devices, dropouts and stragglers from the seed, runs the
 * uploading devices as `pocketllm fedsim device` processes (at most `parallel` at once), waits
 * for the round to close, replays the global log in the observer home and evaluates it, then
 * checks the log against the devices' records and runs the centralized baseline. The homes are
 * sim_data.c's, the device role device.c's, the baseline baseline.c's, the protocol net/'s. */
#include "fedsim_impl.h"
#include "pk_crypto.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <time.h>
#include <unistd.h>

#define DEADLINE_S 3600 /* rounds close at quorum; the deadline is only a safety net */

pk_fedsim_params pk_fedsim_default_params(void)
{
    pk_fedsim_params p;
    memset(&p, 0, sizeof p);
    p.devices = 8;
    p.rounds = 10;
    p.local_steps = 8;
    p.pool = 4096;
    p.participation = 1.0;
    p.straggle_s = 0.5;
    p.parallel = 1;
    p.seed = 1;
    p.dp_delta = 1e-5;
    p.cfg = pk_train_config_default();
    p.round_timeout_s = 600.0;
    return p;
}

/* ---- the task and the coordinator ------------------------------------------------------------ */

static char *task_json(const fs_sim *x, const char *base_hash)
{
    const pk_fedsim_params *p = x->p;
    uint8_t pool_seed[32];
    char hex[65];
    fs_rng r = fs_rng_make(p->seed, 0x9001, 0); /* the pool follows the seed, too */
    for (int i = 0; i < 4; i++) {
        uint64_t v = fs_next(&r);
        memcpy(pool_seed + 8 * i, &v, 8);
    }
    pk_hex_encode(hex, sizeof hex, pool_seed, sizeof pool_seed);
    cJSON *t = cJSON_CreateObject(), *pr;
    cJSON_AddStringToObject(t, "task_id", "fedsim");
    cJSON_AddStringToObject(t, "base_model_hash", base_hash);
    cJSON_AddNumberToObject(t, "pool_size", p->pool);
    cJSON_AddStringToObject(t, "pool_seed", hex);
    int fzoo = p->cfg.mezo.estimator == PK_EST_FZOO; /* FZOO's perturbations are Rademacher */
    cJSON_AddStringToObject(t, "z_kind",
                            p->cfg.mezo.z == PK_Z_RADEMACHER || fzoo ? "rademacher" : "gaussian");
    cJSON_AddNumberToObject(t, "lr", (double)p->cfg.mezo.lr);
    cJSON_AddNumberToObject(t, "eps", (double)p->cfg.mezo.eps);
    /* a FZOO step is N local steps of the round (device.c) */
    cJSON_AddNumberToObject(t, "local_steps",
                            (double)(p->local_steps * (fzoo ? p->cfg.mezo.perturbations : 1)));
    cJSON_AddNumberToObject(t, "batch_size", p->cfg.batch);
    cJSON_AddStringToObject(t, "trainable", p->cfg.trainable);
    cJSON_AddNumberToObject(t, "quorum", (double)x->quorum);
    cJSON_AddNumberToObject(t, "deadline_seconds", DEADLINE_S);
    pr = cJSON_AddObjectToObject(t, "privacy");
    cJSON_AddNumberToObject(pr, "dp_clip", p->dp_clip);
    cJSON_AddNumberToObject(pr, "dp_noise", p->dp_noise);
    char *s = cJSON_PrintUnformatted(t);
    cJSON_Delete(t);
    return s;
}

/* Participants per round: picked M, of whom D drop out; the quorum is M - D (every survivor). */
static pk_status plan(fs_sim *x)
{
    const pk_fedsim_params *p = x->p;
    int M = (int)floor(p->participation * x->n_dev + 0.5);
    M = M < 1 ? 1 : M > x->n_dev ? x->n_dev : M;
    int D = (int)floor(p->dropout * M + 0.5);
    D = D > M - 1 ? M - 1 : D;
    x->picked = M;
    x->dropped = D;
    x->quorum = M - D;
    return PK_OK;
}

/* With an external coordinator the task's quorum decides: Q uploads, plus the dropouts. */
static pk_status plan_external(fs_sim *x, int64_t quorum)
{
    double d = x->p->dropout;
    int D = (int)floor((double)quorum * d / (1.0 - d) + 0.5);
    if (quorum + D > x->n_dev) {
        pk_seterr(x->err, x->errlen,
                  "the coordinator's task has quorum %lld: with %d dropouts a round needs %lld "
                  "devices, there are %d",
                  (long long)quorum, D, (long long)quorum + D, x->n_dev);
        return PK_ERR_ARG;
    }
    x->quorum = quorum;
    x->dropped = D;
    x->picked = (int)quorum + D;
    return PK_OK;
}

static double num(const cJSON *j, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    return cJSON_IsNumber(v) ? v->valuedouble : (double)NAN;
}

/* GET /v1/task with short timeouts: a coordinator that does not answer fails here, before any
 * device runs. Checks the base model; takes lr, eps, local steps, K, quorum and the open round. */
static pk_status read_task(fs_sim *x, const char *base_hash)
{
    pk_http_params hp = pk_http_default_params();
    hp.connect_timeout_ms = 3000;
    hp.timeout_ms = 5000;
    hp.max_attempts = 3;
    pk_http *h = NULL;
    char *resp = NULL, herr[512] = "";
    long status = 0;
    pk_status st = pk_http_create(x->url, hp, &h, herr, sizeof herr);
    if (st == PK_OK)
        st = pk_http_request(h, "GET", "/v1/task", NULL, 0, PK_HTTP_JSON, &status, &resp, NULL,
                             herr, sizeof herr);
    pk_http_destroy(h);
    cJSON *j = st == PK_OK && status == 200 ? cJSON_Parse(resp) : NULL;
    free(resp);
    if (!j) {
        pk_seterr(x->err, x->errlen, "the coordinator %s does not answer GET /v1/task: %s", x->url,
                  herr[0]  ? herr
                  : status ? "a non-JSON or non-200 answer"
                           : pk_status_str(st));
        return PK_ERR_HTTP;
    }
    const cJSON *bh = cJSON_GetObjectItemCaseSensitive(j, "base_model_hash");
    st = cJSON_IsString(bh) && !strcmp(bh->valuestring, base_hash) ? PK_OK : PK_ERR_ARG;
    if (st != PK_OK)
        pk_seterr(x->err, x->errlen, "the coordinator's task needs the base model %s, %s is %s",
                  cJSON_IsString(bh) ? bh->valuestring : "?", x->p->model_dir, base_hash);
    x->lr = (float)num(j, "lr");
    x->eps = (float)num(j, "eps");
    x->local_steps = (int64_t)num(j, "local_steps");
    x->K = (int64_t)num(j, "pool_size");
    x->coord_round = (int64_t)num(j, "round");
    double q = num(j, "quorum");
    cJSON_Delete(j);
    if (st == PK_OK && x->p->server_url)
        st = plan_external(x, (int64_t)q);
    return st;
}

static pk_status start_coordinator(fs_sim *x, const char *base_hash)
{
    if (x->p->server_url) {
        snprintf(x->url, sizeof x->url, "%s", x->p->server_url);
        return read_task(x, base_hash);
    }
    snprintf(x->coord_dir, sizeof x->coord_dir, "%s/coordinator", x->p->out_dir);
    fs_remove_tree(x->coord_dir); /* a new task needs a new database */
    char *task = task_json(x, base_hash);
    if (!task)
        return PK_ERR_NOMEM;
    pk_status st = pk_fedsim_coord_start(x->p->server_bin, x->coord_dir, task, x->p->faults, NULL,
                                         &x->coord, x->err, x->errlen);
    cJSON_free(task);
    if (st != PK_OK)
        return st;
    snprintf(x->url, sizeof x->url, "%s", pk_fedsim_coord_url(x->coord));
    fs_note(x, "coordinator on %s (quorum %lld, pool %d)", x->url, (long long)x->quorum,
            x->p->pool);
    return read_task(x, base_hash);
}

/* ---- the observer: the global model, evaluated ------------------------------------------------
 */

static pk_status obs_grad(void *u, uint64_t seed, pk_z_kind k, float e, float *g, int64_t *n)
{
    (void)u, (void)seed, (void)k, (void)e, (void)g, (void)n;
    return PK_ERR_ARG; /* the observer never takes local steps */
}

static pk_status observer_open(fs_sim *x, char hash[65])
{
    pk_train_config cfg = x->p->cfg;
    pk_status st =
        pk_model_load(x->p->model_dir, pk_model_default_params(), &x->fm.m, x->err, x->errlen);
    if (st == PK_OK)
        st = pk_mezo_trainable(x->fm.m, cfg.trainable, &x->fm.trainable, x->err, x->errlen);
    if (st == PK_OK)
        st = pk_weights_hash(x->fm.m, hash);
    if (st == PK_OK)
        st = pk_objective_from_store(x->obs, "eval", x->fm.m, x->p->model_dir, &cfg, &x->eval,
                                     x->err, x->errlen);
    return st;
}

static pk_status evaluate(fs_sim *x, pk_fedsim_round *r)
{
    double t0 = pk_time_now();
    pk_status st =
        pk_objective_eval(x->eval, x->fm.m, (size_t)x->p->cfg.batch, &r->loss, &r->accuracy);
    if (st != PK_OK)
        pk_seterr(x->err, x->errlen, "eval of the global model: %s", pk_status_str(st));
    r->eval_seconds = pk_time_now() - t0;
    return st;
}

/* Catches the observer up with the coordinator's log (hash chain checked by pk_sync_round),
 * which replays it on the base model; then evaluates. */
static pk_status observe(fs_sim *x, pk_fedsim_round *r)
{
    pk_sync_params sp = pk_sync_default_params();
    sp.server = x->url;
    sp.upload = 0;
    sp.wait_s = 0.0;
    pk_sync_model_ops ops = {obs_grad, fs_model_apply,     fs_model_reset, fs_model_hash,
                             x,        x->p->cfg.trainable};
    pk_sync_report rep;
    char serr[512] = "";
    pk_status st = pk_sync_round(x->obs, &sp, &ops, &rep, serr, sizeof serr);
    if (st != PK_OK) {
        pk_seterr(x->err, x->errlen, "catching up with the global log: %s", serr);
        return st;
    }
    snprintf(r->model_hash, sizeof r->model_hash, "%s", rep.model_hash);
    snprintf(r->log_head, sizeof r->log_head, "%s", rep.log_head);
    return evaluate(x, r);
}

/* ---- device processes ------------------------------------------------------------------------ */

typedef struct argbuf {
    const char *v[64];
    char s[64][1200];
    int n;
} argbuf;

static void arg(argbuf *a, const char *fmt, ...) PK_PRINTF(2, 3);
static void arg(argbuf *a, const char *fmt, ...)
{
    va_list ap;
    if (a->n >= 63)
        return;
    va_start(ap, fmt);
    vsnprintf(a->s[a->n], sizeof a->s[a->n], fmt, ap);
    va_end(ap);
    a->v[a->n] = a->s[a->n];
    a->v[++a->n] = NULL;
}

/* `pocketllm fedsim device ...` for device j; the train options follow the simulation's. */
static void device_argv(const fs_sim *x, int j, double straggle_s, argbuf *a)
{
    const pk_fedsim_params *p = x->p;
    a->n = 0;
    arg(a, "%s", p->pocketllm_bin);
    arg(a, "fedsim");
    arg(a, "device");
    arg(a, "--server=%s", x->url);
    arg(a, "--home=%s", x->home[j]);
    arg(a, "--passphrase-file=%s", x->pass_path);
    arg(a, "--model=%s", x->model_abs);
    arg(a, "--dataset=local");
    arg(a, "--seed=%llu", (unsigned long long)x->dev_seed[j]);
    arg(a, "--objective=%s", pk_objective_name(p->cfg.objective));
    if (p->cfg.template_[0])
        arg(a, "--template=%s", p->cfg.template_);
    if (p->cfg.labels[0])
        arg(a, "--labels=%s", p->cfg.labels);
    arg(a, "--batch=%d", p->cfg.batch);
    arg(a, "--seq-len=%d", p->cfg.seq_len);
    arg(a, "--trainable=%s", p->cfg.trainable);
    arg(a, "--estimator=%s", pk_estimator_name(p->cfg.mezo.estimator));
    if (p->cfg.mezo.estimator == PK_EST_FZOO)
        arg(a, "--perturbations=%d", p->cfg.mezo.perturbations);
    arg(a, "--dp-delta=%.17g", p->dp_delta);
    arg(a, "--straggle=%.17g", straggle_s);
    arg(a, "--record=%s/records.jsonl", x->home[j]);
    arg(a, "--threads=1");
    arg(a, "--json");
}

/* fork + exec at once (libgomp is not fork-safe); stdout to HOME/last.json, stderr appended to
 * HOME/device.log. The child dies with this process (PR_SET_PDEATHSIG). */
static pk_status spawn_device(fs_sim *x, int j, double straggle_s)
{
    static argbuf a; /* large; only ever used from this thread, between fork and exec */
    char out[1200], log[1200];
    device_argv(x, j, straggle_s, &a);
    snprintf(out, sizeof out, "%s/last.json", x->home[j]);
    snprintf(log, sizeof log, "%s/device.log", x->home[j]);
    int fo = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int fe = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fo >= 0 && fe >= 0 ? fork() : -1;
    if (pid == 0) {
#ifdef __linux__
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
#endif
        if (dup2(fo, 1) < 0 || dup2(fe, 2) < 0)
            _exit(127);
        execv(a.v[0], (char *const *)(uintptr_t)a.v);
        _exit(127);
    }
    (void)parent;
    int e = errno;
    if (fo >= 0)
        close(fo);
    if (fe >= 0)
        close(fe);
    if (pid < 0) {
        pk_seterr(x->err, x->errlen, "cannot start device %d (%s): %s", j, x->home[j], strerror(e));
        return PK_ERR_IO;
    }
    x->pid[j] = pid;
    x->dev_t0[j] = pk_time_now();
    return PK_OK;
}

/* Ends every running device process (SIGKILL: it holds nothing the run still needs). */
static void kill_devices(fs_sim *x)
{
    for (int j = 0; j < x->n_dev; j++)
        if (x->pid[j] > 0) {
            kill(x->pid[j], SIGKILL);
            while (waitpid(x->pid[j], NULL, 0) < 0 && errno == EINTR)
                ;
            x->pid[j] = 0;
        }
}

/* The last non-empty line of device j's log, for error messages. */
static void device_log_tail(const fs_sim *x, int j, char *out, size_t n)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/device.log", x->home[j]);
    fs_last_line(path, out, n);
}

/* Reaps finished device processes: 1 if one failed (err set), 0 otherwise; *running updated. */
static int reap(fs_sim *x, const int *who, int n, int *running)
{
    for (int i = 0; i < n; i++) {
        int j = who[i], stt = 0;
        if (x->pid[j] <= 0 || waitpid(x->pid[j], &stt, WNOHANG) != x->pid[j])
            continue;
        x->pid[j] = 0;
        (*running)--;
        if (!WIFEXITED(stt) || WEXITSTATUS(stt) != 0) {
            char tail[512];
            device_log_tail(x, j, tail, sizeof tail);
            pk_seterr(x->err, x->errlen, "device %d (%s) failed in round %lld (%s %d): %s", j,
                      x->home[j], (long long)x->coord_round, WIFEXITED(stt) ? "exit" : "signal",
                      WIFEXITED(stt) ? WEXITSTATUS(stt) : WTERMSIG(stt), tail);
            return 1;
        }
    }
    return 0;
}

/* Runs devices who[0..n) with at most `parallel` at once; delay[i] is who[i]'s straggle. */
static pk_status run_devices(fs_sim *x, const int *who, const double *delay, int n)
{
    int next = 0, running = 0;
    pk_status st = PK_OK;
    double t_end = pk_time_now() + x->p->round_timeout_s;
    while (st == PK_OK && (next < n || running > 0)) {
        while (st == PK_OK && next < n && running < x->p->parallel) {
            st = spawn_device(x, who[next], delay[next]);
            next++;
            running += st == PK_OK;
        }
        if (st == PK_OK && pk_interrupted()) /* before reaping: Ctrl-C also ends devices */
            st = PK_ERR_INTERRUPTED;
        if (st == PK_OK && reap(x, who, n, &running))
            st = PK_ERR_HTTP;
        if (st == PK_OK && pk_time_now() > t_end) {
            pk_seterr(x->err, x->errlen, "round %lld: devices still running after %.0f s",
                      (long long)x->coord_round, x->p->round_timeout_s);
            st = PK_ERR_HTTP;
        }
        if (st == PK_OK && running > 0)
            (void)pk_sleep(0.005);
    }
    if (st != PK_OK)
        kill_devices(x);
    return st;
}

/* ---- one round ---------------------------------------------------------------------------------
 */

/* Device j's report (its --json line): traffic, the round it uploaded to, epsilon. */
static pk_status device_report(fs_sim *x, int j, pk_fedsim_round *r)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/last.json", x->home[j]);
    FILE *f = fopen(path, "r");
    char buf[4096] = "";
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    buf[n] = '\0';
    if (f)
        fclose(f);
    cJSON *jr = cJSON_Parse(buf);
    const cJSON *up = cJSON_GetObjectItemCaseSensitive(jr, "uploaded");
    double round = num(jr, "round"), bu = num(jr, "bytes_up"), bd = num(jr, "bytes_down");
    double ex = num(jr, "examples");
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(jr, "epsilon");
    pk_status st = cJSON_IsTrue(up) && (int64_t)round == x->coord_round ? PK_OK : PK_ERR_FORMAT;
    if (st != PK_OK)
        pk_seterr(x->err, x->errlen, "device %d (%s): no upload to round %lld in its report: %s", j,
                  x->home[j], (long long)x->coord_round, buf);
    if (e)
        x->dev_eps[j] = cJSON_IsNumber(e) ? e->valuedouble : (double)INFINITY;
    if (st == PK_OK) {
        r->uploads++;
        r->examples += (int64_t)ex;
        r->bytes_up_per_device += bu;
        r->bytes_down_per_device += bd;
        r->max_bytes_up = fmax(r->max_bytes_up, bu);
        r->max_bytes_down = fmax(r->max_bytes_down, bd);
        x->total_bytes += bu + bd;
    }
    cJSON_Delete(jr);
    return st;
}

/* Polls GET /v1/health until the coordinator's log reaches the round (it closes at quorum). */
static pk_status wait_close(fs_sim *x)
{
    pk_http *h = NULL;
    pk_status st = pk_http_create(x->url, pk_http_default_params(), &h, x->err, x->errlen);
    double t_end = pk_time_now() + x->p->round_timeout_s;
    int closed = 0;
    while (st == PK_OK && !closed) {
        char *resp = NULL;
        long status = 0;
        st = pk_http_request(h, "GET", "/v1/health", NULL, 0, PK_HTTP_JSON, &status, &resp, NULL,
                             x->err, x->errlen);
        cJSON *j = st == PK_OK ? cJSON_Parse(resp) : NULL;
        closed = (int64_t)num(j, "log_version") >= x->coord_round;
        cJSON_Delete(j);
        free(resp);
        if (st == PK_OK && !closed && pk_time_now() > t_end) {
            pk_seterr(x->err, x->errlen, "round %lld did not close within %.0f s",
                      (long long)x->coord_round, x->p->round_timeout_s);
            st = PK_ERR_HTTP;
        }
        if (st == PK_OK && !closed && pk_sleep(0.020)) {
            pk_seterr(x->err, x->errlen, "interrupted while waiting for round %lld to close",
                      (long long)x->coord_round);
            st = PK_ERR_INTERRUPTED;
        }
    }
    pk_http_destroy(h);
    return st;
}

static double max_epsilon(const fs_sim *x)
{
    double e = (double)NAN;
    for (int j = 0; j < x->n_dev; j++)
        if (!isnan(x->dev_eps[j]) && (isnan(e) || x->dev_eps[j] > e)) /* no fmax reduction */
            e = x->dev_eps[j];
    return e;
}

/* Loss evaluations of one round's local steps: 2 per two-point (spsa) step; N + 1 per FZOO
 * step of N local steps. */
static int64_t evaluations_per_round(const fs_sim *x)
{
    const pk_mezo_params *m = &x->p->cfg.mezo;
    if (m->estimator == PK_EST_FZOO)
        return x->quorum * (x->local_steps / m->perturbations) * (m->perturbations + 1);
    return x->quorum * x->local_steps * 2;
}

/* Round r: pick M devices (seeded), the first M - D upload, some of them late; run them, wait
 * for the close, replay and evaluate. */
static pk_status one_round(fs_sim *x, int64_t r, pk_fedsim_round *out)
{
    int n = x->n_dev, Q = (int)x->quorum;
    int32_t *order = malloc((size_t)n * sizeof *order);
    double *delay = calloc((size_t)n, sizeof *delay);
    int *who = malloc((size_t)n * sizeof *who);
    pk_status st = order && delay && who ? PK_OK : PK_ERR_NOMEM;
    memset(out, 0, sizeof *out);
    out->round = r;
    out->coord_round = x->coord_round;
    out->participants = x->picked;
    out->dropped = x->dropped;
    fs_rng rng = fs_rng_make(x->p->seed, 0x707, (uint64_t)r);
    for (int i = 0; st == PK_OK && i < n; i++)
        order[i] = i;
    if (st == PK_OK)
        fs_shuffle(&rng, order, (size_t)n);
    for (int i = 0; st == PK_OK && i < Q; i++) {
        who[i] = order[i];
        if (fs_uniform(&rng) < x->p->straggler) {
            delay[i] = x->p->straggle_s;
            out->stragglers++;
        }
    }
    double t0 = pk_time_now();
    if (st == PK_OK)
        st = run_devices(x, who, delay, Q);
    for (int i = 0; st == PK_OK && i < Q; i++)
        st = device_report(x, who[i], out);
    if (st == PK_OK)
        st = wait_close(x);
    out->seconds = pk_time_now() - t0;
    if (st == PK_OK) {
        out->bytes_up_per_device /= Q;
        out->bytes_down_per_device /= Q;
        out->total_bytes = x->total_bytes;
        out->epsilon = max_epsilon(x);
        x->sum->device_steps += (int64_t)Q * x->local_steps;
        x->sum->device_evaluations += evaluations_per_round(x);
        st = observe(x, out);
    }
    free(order);
    free(delay);
    free(who);
    return st;
}

/* ---- the check -----------------------------------------------------------------
 */

static pk_status check_log(fs_sim *x, int64_t first, int64_t last)
{
    char(*paths)[1200] = malloc((size_t)x->n_dev * sizeof *paths);
    const char **pv = malloc((size_t)x->n_dev * sizeof *pv);
    pk_status st = paths && pv ? PK_OK : PK_ERR_NOMEM;
    for (int j = 0; st == PK_OK && j < x->n_dev; j++) {
        snprintf(paths[j], sizeof paths[j], "%s/records.jsonl", x->home[j]);
        pv[j] = paths[j];
    }
    if (st == PK_OK)
        st = pk_fedsim_verify_log(x->url, pv, (size_t)x->n_dev, first, last, &x->sum->check, x->err,
                                  x->errlen);
    if (st == PK_OK)
        fs_note(x, "log check: %lld entries against %lld device records: %s%s",
                (long long)x->sum->check.entries, (long long)x->sum->check.records,
                x->sum->check.mismatches ? "MISMATCH " : "equal",
                x->sum->check.mismatches ? x->sum->check.first : "");
    free(paths);
    free(pv);
    return st;
}

/* ---- the run ------------------------------------------------------------------------------------
 */

int pk_fedsim_trainable_ok(const char *spec, char *err, size_t errlen)
{
    size_t n = spec ? strlen(spec) : 0;
    if (n >= 1 && n <= 63)
        return 1;
    pk_seterr(err, errlen, "the task names the trainable set in 1 to 63 characters (got %zu)", n);
    return 0;
}

static pk_status check_params(fs_sim *x)
{
    const pk_fedsim_params *p = x->p;
    if (!pk_fedsim_trainable_ok(p->cfg.trainable, x->err, x->errlen))
        return PK_ERR_ARG;
    const char *bad = p->devices < 1       ? "devices must be >= 1"
                      : p->rounds < 1      ? "rounds must be >= 1"
                      : p->local_steps < 1 ? "local steps must be >= 1"
                      : !(p->participation > 0 && p->participation <= 1) ? "participation in (0, 1]"
                      : !(p->dropout >= 0 && p->dropout < 1)             ? "dropout in [0, 1)"
                      : p->parallel < 1                                  ? "parallel must be >= 1"
                      : !p->model_dir || !p->out_dir || !p->pocketllm_bin ? "model, out, binary"
                      : !p->data_file && !(p->src && p->src_dataset)      ? "no training data"
                      : !p->eval_file && !(p->src && p->eval_dataset)     ? "no eval data"
                      : !p->server_url && !p->server_bin                  ? "no coordinator"
                                                                          : NULL;
    if (bad) {
        pk_seterr(x->err, x->errlen, "fedsim settings: %s", bad);
        return PK_ERR_ARG;
    }
    const char *why = NULL;
    if (!pk_fedsim_estimator_carried(p->cfg.mezo.estimator, &why)) {
        pk_seterr(x->err, x->errlen, "%s", why);
        return PK_ERR_ARG;
    }
    int N = p->cfg.mezo.perturbations;
    if (p->cfg.mezo.estimator == PK_EST_FZOO && (N < 2 || N > 4096 || p->local_steps * N > 65535)) {
        pk_seterr(x->err, x->errlen,
                  "fzoo takes %d local steps of the round per step (2 to 4096 perturbations): "
                  "%lld steps x %d is more than the protocol's 65535",
                  N, (long long)p->local_steps, N);
        return PK_ERR_ARG;
    }
    if (!realpath(p->model_dir, x->model_abs)) {
        pk_seterr(x->err, x->errlen, "model %s: %s", p->model_dir, strerror(errno));
        return PK_ERR_IO;
    }
    return PK_OK;
}

static pk_status alloc_devices(fs_sim *x)
{
    int n = x->n_dev = x->p->devices;
    x->home = calloc((size_t)n, sizeof *x->home);
    x->dev_seed = calloc((size_t)n, sizeof *x->dev_seed);
    x->dev_eps = calloc((size_t)n, sizeof *x->dev_eps);
    x->pid = calloc((size_t)n, sizeof *x->pid);
    x->dev_t0 = calloc((size_t)n, sizeof *x->dev_t0);
    if (!x->home || !x->dev_seed || !x->dev_eps || !x->pid || !x->dev_t0)
        return PK_ERR_NOMEM;
    for (int j = 0; j < n; j++) {
        fs_rng r = fs_rng_make(x->p->seed, 0xde71ce, (uint64_t)j);
        x->dev_seed[j] = fs_next(&r) | 1; /* 0 would mean "random" to the device */
        x->dev_eps[j] = (double)NAN;
    }
    return PK_OK;
}

static void sim_free(fs_sim *x)
{
    kill_devices(x);
    pk_fedsim_coord_stop(x->coord);
    pk_objective_free(x->eval);
    free(x->fm.trainable);
    pk_model_free(x->fm.m);
    pk_store_close(x->obs);
    if (!x->p->keep && x->homes[0])
        fs_remove_tree(x->homes);
    free(x->home);
    free(x->dev_seed);
    free(x->dev_eps);
    free(x->pid);
    free(x->dev_t0);
    pk_secure_wipe(x->pass, sizeof x->pass);
}

static pk_status rounds(fs_sim *x)
{
    pk_status st = PK_OK;
    int64_t first = x->coord_round;
    for (int r = 1; st == PK_OK && r <= x->p->rounds; r++) {
        st = one_round(x, r, &x->sum->last);
        if (st != PK_OK)
            break;
        x->sum->rounds_done = r;
        if (x->h && x->h->on_round)
            x->h->on_round(x->h->user, &x->sum->last);
        x->coord_round++;
    }
    if (st == PK_OK)
        st = check_log(x, first, x->coord_round - 1);
    return st;
}

pk_status pk_fedsim_run(const pk_fedsim_params *p, const pk_fedsim_hooks *hooks,
                        pk_fedsim_summary *sum, char *err, size_t errlen)
{
    pk_fedsim_summary local;
    fs_sim x;
    char hash[65] = "";
    memset(&x, 0, sizeof x);
    if (!sum)
        sum = &local;
    memset(sum, 0, sizeof *sum);
    x.p = p;
    x.h = hooks;
    x.sum = sum;
    x.err = err;
    x.errlen = errlen;
    double t0 = pk_time_now();
    pk_status st = check_params(&x);
    if (st == PK_OK)
        st = alloc_devices(&x);
    if (st == PK_OK)
        st = plan(&x);
    if (st == PK_OK)
        st = fs_setup_homes(&x);
    if (st == PK_OK)
        st = observer_open(&x, hash);
    if (st == PK_OK)
        st = start_coordinator(&x, hash);
    if (st == PK_OK) {
        snprintf(sum->url, sizeof sum->url, "%s", x.url);
        sum->quorum = x.quorum;
        sum->local_steps = x.local_steps;
        sum->lr = x.lr;
        sum->eps = x.eps;
        snprintf(sum->base.model_hash, sizeof sum->base.model_hash, "%s", hash);
        sum->base.epsilon = (double)NAN;
        st = evaluate(&x, &sum->base);
    }
    if (st == PK_OK && hooks && hooks->on_round)
        hooks->on_round(hooks->user, &sum->base);
    if (st == PK_OK)
        st = rounds(&x);
    if (st == PK_OK && p->baseline)
        st = fs_baseline(&x);
    if (st == PK_OK && pk_interrupted())
        st = PK_ERR_INTERRUPTED;
    sum->seconds = pk_time_now() - t0;
    sim_free(&x);
    return st;
}
