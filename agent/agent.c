/* agent.c: the agent loop (DESIGN 13). While the device conditions hold it trains the current
 * chained run a slice at a time; when examples were imported since the run began, it starts a
 * new run chained from the best evaluated point on the union of its datasets; otherwise it
 * sleeps with no model mapped. What it does goes to the store's agent row (status, stop request)
 * and to the event callback; the training itself is pk_trainer's (train/). */
#include "pk_agent.h"

#include <cjson/cJSON.h>
#include <errno.h>
#ifdef __GLIBC__
#include <malloc.h> /* malloc_trim */
#endif
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_DATASETS 32
#define MAX_FAILURES 3 /* training errors in a row before the agent gives up */

typedef struct best {
    int64_t run, step; /* the best evaluated point: run and step (0: none yet) */
    double loss;       /* its eval loss */
    int64_t upto;      /* the example set it was evaluated on (examples_upto of its run) */
} best;

typedef struct agent {
    pk_store *s;              /* borrowed */
    const pk_agent_params *p; /* borrowed */
    int64_t ds[MAX_DATASETS]; /* dataset ids, in the order of p->datasets */
    size_t n_ds;
    pk_trainer *t;         /* open only while training: nothing is mapped while waiting */
    int64_t run, run_upto; /* the current run and its example set (0: none yet) */
    int64_t eval_every;    /* the current run's eval interval (its stored settings) */
    int run_done;          /* the current run finished (its steps, or early stopping) */
    best best;
    char state[16];   /* "starting", "training", "waiting", "idle", "stopping" */
    char reason[700]; /* why it waits, or what it trains on */
    int day;          /* yyyymmdd of steps_today */
    int64_t steps_today;
    int64_t step;                            /* next step of the current run */
    double next_sync, sync_delay, last_sync; /* unix seconds; 0: never */
    char sync_status[700];
    char written[2048]; /* the status last written, so an unchanged one is not */
    double written_at;
    int stop;    /* asked to stop: finish at this step boundary */
    int no_eval; /* the run holds no examples out: the latest point is the best */
} agent;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int today(void)
{
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    return (tm.tm_year + 1900) * 10000 + (tm.tm_mon + 1) * 100 + tm.tm_mday;
}

static void emit(agent *a, pk_agent_event kind, const char *fmt, ...) PK_PRINTF(3, 4);
static void emit(agent *a, pk_agent_event kind, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (a->p->on_event)
        a->p->on_event(a->p->event_user, kind, line);
}

pk_agent_params pk_agent_default_params(void)
{
    pk_agent_params p;
    memset(&p, 0, sizeof p);
    p.train = pk_train_config_default();
    p.train.checkpoint_every = 50; /* each slice reopens the run: keep its replay short */
    p.holdout = 10;
    p.eval_every = 50;
    p.early_stop = 3;
    p.slice_steps = 25;
    p.poll_s = 30;
    p.threads = 1;
    p.cond = pk_agent_conditions_default();
    return p;
}

/* ---- memory kept in the store (sync_state keys "agent.*") ----------------------------------- */

static void save_best(agent *a)
{
    char v[160];
    snprintf(v, sizeof v, "%lld %lld %a %lld", (long long)a->best.run, (long long)a->best.step,
             a->best.loss, (long long)a->best.upto);
    if (pk_store_state_set(a->s, "agent.best", v, NULL, 0) != PK_OK)
        emit(a, PK_AGENT_WARN, "could not record the best point");
}

static void save_today(agent *a)
{
    char v[64];
    snprintf(v, sizeof v, "%d %lld", a->day, (long long)a->steps_today);
    if (pk_store_state_set(a->s, "agent.steps_today", v, NULL, 0) != PK_OK)
        emit(a, PK_AGENT_WARN, "could not record today's steps");
}

static void load_memory(agent *a)
{
    char *v = NULL;
    long long r = 0, st = 0, up = 0, n = 0;
    int day = 0;
    if (pk_store_state_get(a->s, "agent.best", &v, NULL, 0) == PK_OK &&
        sscanf(v, "%lld %lld %la %lld", &r, &st, &a->best.loss, &up) == 4) {
        a->best.run = r;
        a->best.step = st;
        a->best.upto = up;
    }
    free(v);
    v = NULL;
    if (pk_store_state_get(a->s, "agent.steps_today", &v, NULL, 0) == PK_OK &&
        sscanf(v, "%d %lld", &day, &n) == 2 && day == today()) {
        a->day = day;
        a->steps_today = n;
    }
    free(v);
}

/* ---- the status row ------------------------------------------------------------------------- */

static cJSON *status_json(const agent *a)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "state", a->state);
    cJSON_AddStringToObject(o, "reason", a->reason);
    cJSON_AddNumberToObject(o, "run", (double)a->run);
    cJSON_AddNumberToObject(o, "step", (double)a->step);
    cJSON_AddNumberToObject(o, "steps_today", (double)a->steps_today);
    cJSON_AddStringToObject(o, "datasets", a->p->datasets);
    cJSON_AddNumberToObject(o, "threads", a->p->threads);
    if (a->best.run > 0) {
        cJSON *b = cJSON_AddObjectToObject(o, "best");
        cJSON_AddNumberToObject(b, "run", (double)a->best.run);
        cJSON_AddNumberToObject(b, "step", (double)a->best.step);
        if (isfinite(a->best.loss))
            cJSON_AddNumberToObject(b, "eval_loss", a->best.loss);
        else
            cJSON_AddNullToObject(b, "eval_loss"); /* no held-out examples: the latest point */
    } else {
        cJSON_AddNullToObject(o, "best");
    }
    if (a->last_sync > 0 || a->sync_status[0]) {
        cJSON *y = cJSON_AddObjectToObject(o, "last_sync");
        cJSON_AddNumberToObject(y, "at", a->last_sync);
        cJSON_AddStringToObject(y, "result", a->sync_status);
    } else {
        cJSON_AddNullToObject(o, "last_sync");
    }
    return o;
}

/* Writes the status when it changed, or when `force` (at most every second while training). */
static void write_status(agent *a, int force)
{
    cJSON *o = status_json(a);
    char *j = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    double t = now_s();
    int changed = j != NULL && strcmp(j, a->written) != 0;
    if (j != NULL && (force || (changed && t - a->written_at >= 1.0) ||
                      (changed && strcmp(a->state, "training") != 0))) {
        if (pk_store_agent_set_status(a->s, j, NULL, 0) == PK_OK) {
            snprintf(a->written, sizeof a->written, "%s", j);
            a->written_at = t;
        }
        if (a->p->on_status)
            a->p->on_status(a->p->event_user, j);
    }
    free(j);
}

static void set_state(agent *a, const char *state, const char *reason)
{
    int same = !strcmp(a->state, state) && !strcmp(a->reason, reason);
    snprintf(a->state, sizeof a->state, "%s", state);
    snprintf(a->reason, sizeof a->reason, "%s", reason);
    if (!same) {
        emit(a, PK_AGENT_INFO, "%s: %s", state, reason);
        write_status(a, 1);
    }
}

/* pk_interrupted (SIGTERM, SIGINT) or `pocketllm agent stop` (the row's flag). */
static int should_stop(agent *a)
{
    int flag = 0;
    if (!a->stop && (pk_interrupted() ||
                     (pk_store_agent_stop_requested(a->s, &flag, NULL, 0) == PK_OK && flag)))
        a->stop = 1;
    return a->stop;
}

/* ---- runs ----------------------------------------------------------------------------------- */

/* The dataset ids of p->datasets; PK_ERR_NOTFOUND naming a dataset not imported yet. */
static pk_status resolve_datasets(agent *a, char *err, size_t errlen)
{
    char name[128], serr[512] = "";
    a->n_ds = 0;
    for (const char *c = a->p->datasets; *c;) {
        size_t k = strcspn(c, ",");
        snprintf(name, sizeof name, "%.*s", (int)(k < sizeof name ? k : sizeof name - 1), c);
        if (a->n_ds == MAX_DATASETS) {
            pk_seterr(err, errlen, "more than %d datasets", MAX_DATASETS);
            return PK_ERR_ARG;
        }
        pk_status st = pk_store_dataset_id(a->s, name, &a->ds[a->n_ds++], serr, sizeof serr);
        if (st != PK_OK) {
            pk_seterr(err, errlen, "%s", serr);
            return st;
        }
        c += k + (c[k] == ',');
    }
    return PK_OK;
}

/* The newest run of this agent (its model and datasets): the one to continue after a restart,
 * found from the runs themselves so a kill -9 between creating a run and noting it loses
 * nothing. */
static pk_status find_current_run(agent *a, char *err, size_t errlen)
{
    int64_t *ids = NULL, n = 0;
    pk_status st = pk_store_run_list(a->s, &ids, &n, err, errlen);
    a->run = a->run_upto = 0;
    for (int64_t i = 0; st == PK_OK && i < n && a->run == 0; i++) {
        pk_run_info ri;
        pk_train_config c;
        if (pk_run_load_config(a->s, ids[i], &ri, &c, NULL, 0) == PK_OK &&
            !strcmp(c.datasets, a->p->datasets) && !strcmp(c.model_dir, a->p->train.model_dir)) {
            a->run = ids[i];
            a->run_upto = c.examples_upto;
            a->eval_every = c.eval_every;
            a->step = ri.steps_done;
            a->run_done = !strcmp(ri.status, "done") || ri.steps_done >= c.steps;
        }
        pk_run_info_clear(&ri);
    }
    free(ids);
    return st;
}

static void on_eval(void *user, int64_t step, double loss, double acc)
{
    agent *a = user;
    (void)acc;
    emit(a, PK_AGENT_INFO, "eval: run %lld step %lld loss %.6f", (long long)a->run, (long long)step,
         loss);
    /* keep-best within one example set: a new set re-evaluates its starting point first */
    if (a->best.upto != a->run_upto || a->best.run == 0 || loss < a->best.loss) {
        a->best = (best){a->run, step, loss, a->run_upto};
        save_best(a);
        emit(a, PK_AGENT_INFO, "best: run %lld step %lld", (long long)a->run, (long long)step);
    }
}

/* --lr auto's guard cut the rate (pk_lr_guard): said in the log, as train says it on stderr */
static void on_lr_cut(void *user, int64_t step, float lr, double loss, double lowest)
{
    agent *a = user;
    emit(
        a, PK_AGENT_INFO,
        "run %lld step %lld: the training loss rose to %.4f (lowest %.4f): learning rate cut to %g",
        (long long)a->run, (long long)step + 1, loss, lowest, (double)lr);
}

/* A new run's --lr auto search ends early on a stop (should_stop) or when the device stops
 * allowing training (the conditions of a slice): the next turn searches again. */
static int search_stop(void *user)
{
    agent *a = user;
    char why[256];
    return should_stop(a) ||
           !pk_agent_conditions_ok(&a->p->cond, (double)a->p->threads, why, sizeof why);
}

static void on_step(void *user, int64_t step, int64_t total, const pk_step_row *rows, int q)
{
    agent *a = user;
    (void)total;
    (void)rows;
    (void)q;
    if (a->day != today()) {
        a->day = today();
        a->steps_today = 0;
    }
    a->steps_today++;
    a->step = step + 1;
    /* Tests stop the agent here, step N logged, with POCKETLLM_PAUSE_AT=agent.step.N. */
    char at[48];
    snprintf(at, sizeof at, "agent.step.%lld", (long long)a->step);
    pk_pause_point(at);
    if (a->no_eval) { /* nothing to compare on: keep the latest point */
        a->best = (best){a->run, a->step, (double)NAN, a->run_upto};
        save_best(a);
    }
}

/* Evaluates the trainer's current point (on_eval keeps the best); a run without held-out
 * examples has no eval, and then the latest point counts as the best. */
static pk_status eval_now(agent *a, char *err, size_t errlen)
{
    double loss = 0;
    pk_status st = pk_trainer_eval(a->t, &loss, err, errlen);
    a->no_eval = st == PK_ERR_ARG;
    return a->no_eval ? PK_OK : st;
}

/* Where a new run starts: the best point, expressed as (parent run, its steps). Step 0 of a run
 * is its own starting point, so it is named through the run's parent (or the base model). */
static void best_start(agent *a, int64_t *parent, int64_t *steps)
{
    pk_run_info ri;
    *parent = *steps = 0;
    if (a->best.run <= 0)
        return;
    if (pk_store_run_get(a->s, a->best.run, &ri, NULL, 0) != PK_OK) {
        a->best = (best){0, 0, 0, 0}; /* forgotten with its dataset: start over from the base */
        return;
    }
    *parent = a->best.step > 0 ? a->best.run : ri.parent_run;
    *steps = a->best.step > 0 ? a->best.step : ri.parent_steps;
    pk_run_info_clear(&ri);
}

/* The trainer of a new run on every example so far, chained from the best point; its starting
 * point is evaluated first (the baseline keep-best compares against on this example set). */
static pk_status open_new_run(agent *a, int64_t upto, char *err, size_t errlen)
{
    pk_train_config c = a->p->train;
    pk_train_hooks h = {a, on_step, on_eval, NULL, on_lr_cut, search_stop};
    snprintf(c.datasets, sizeof c.datasets, "%s", a->p->datasets);
    snprintf(c.dataset, sizeof c.dataset, "%.*s", (int)strcspn(a->p->datasets, ","),
             a->p->datasets);
    c.holdout = a->p->holdout;
    c.eval_every = a->p->eval_every;
    c.early_stop = a->p->early_stop;
    c.examples_upto = upto;
    c.mezo.seed = a->p->train.mezo.seed ^ pk_splitmix64((uint64_t)upto); /* new data, new z */
    best_start(a, &c.parent_run, &c.parent_steps);
    if (c.parent_run > 0 && c.parent_steps == 0) /* 0 means "all its steps" to the trainer */
        c.parent_run = 0;
    pk_status st = pk_trainer_open(a->s, &c, 0, &h, &a->t, err, errlen);
    if (st != PK_OK)
        return st;
    a->run = pk_trainer_result(a->t)->run_id;
    a->run_upto = upto;
    a->eval_every = c.eval_every;
    a->run_done = 0;
    a->step = 0;
    emit(a, PK_AGENT_INFO, "run %lld: new, on examples up to id %lld, from %s %lld step %lld",
         (long long)a->run, (long long)upto, c.parent_run ? "run" : "the base model",
         (long long)c.parent_run, (long long)c.parent_steps);
    const pk_lr_search *ls = &pk_trainer_result(a->t)->lr_search;
    if (ls->n > 0)
        emit(a, PK_AGENT_INFO,
             "run %lld: learning rate %g (--lr auto: %d rates x %d steps searched)",
             (long long)a->run, (double)ls->chosen, ls->n, ls->steps_each);
    return eval_now(a, err, errlen);
}

/* The trainer of the current run, resumed from its log (bit-exact). */
static pk_status open_current(agent *a, char *err, size_t errlen)
{
    pk_train_hooks h = {a, on_step, on_eval, NULL, on_lr_cut, search_stop};
    int64_t *steps = NULL;
    double *loss = NULL, *acc = NULL;
    size_t n = 0;
    pk_status st = pk_trainer_open(a->s, NULL, a->run, &h, &a->t, err, errlen);
    if (st == PK_OK)
        st = pk_store_eval_read(a->s, a->run, &steps, &loss, &acc, &n, err, errlen);
    /* killed before its first eval, or between a step's commit and the eval due after it (the
     * same weights give the same loss, so early stopping and keep-best see what an
     * uninterrupted run saw) */
    int due = a->step > 0 && a->eval_every > 0 && a->step % a->eval_every == 0;
    if (st == PK_OK && (n == 0 || (due && steps[n - 1] != a->step)))
        st = eval_now(a, err, errlen);
    free(steps);
    free(loss);
    free(acc);
    return st;
}

static void close_trainer(agent *a)
{
    if (a->t == NULL)
        return;
    pk_trainer_free(a->t); /* unmaps the model: nothing large stays while waiting */
    a->t = NULL;
#ifdef __GLIBC__
    /* the tokenizer and objective leave freed but fragmented heap behind (13 MB after an
     * opt-125m slice): give it back, the agent may now wait for hours */
    (void)malloc_trim(0);
#endif
}

/* ---- slices --------------------------------------------------------------------------------- */

/* Examples imported after the current run began (ids only grow). */
static int new_examples(agent *a, int64_t *upto)
{
    int64_t max_id = 0;
    if (pk_store_examples_max_id(a->s, a->ds, a->n_ds, &max_id, NULL, 0) != PK_OK)
        return 0;
    *upto = max_id;
    return max_id > 0 && (a->run == 0 || max_id > a->run_upto);
}

/* The training examples a new run on examples up to id upto gets (not held out), or -1. */
static int64_t training_examples(agent *a, int64_t upto)
{
    int64_t n = 0;
    for (size_t d = 0; d < a->n_ds; d++) {
        int64_t *ids = NULL, k = 0;
        if (pk_store_example_ids(a->s, a->ds[d], &ids, &k, NULL, 0) != PK_OK)
            return -1;
        for (int64_t i = 0; i < k; i++)
            n += ids[i] <= upto && !pk_train_held_out(ids[i], a->p->holdout);
        free(ids);
    }
    return n;
}

/* Up to slice_steps steps while the conditions hold and nobody asks to stop. Returns 1 when the
 * trainer should stay open for the next slice. */
static int train_slice(agent *a, pk_status *st, char *err, size_t errlen)
{
    char why[256];
    for (int64_t i = 0; i < a->p->slice_steps; i++) {
        if (should_stop(a)) {
            pk_interrupt_raise(); /* the trainer ends the run "stopped" at this boundary */
            *st = pk_trainer_step(a->t, err, errlen);
            return 0;
        }
        if (!pk_agent_conditions_ok(&a->p->cond, (double)a->p->threads, why, sizeof why)) {
            set_state(a, "waiting", why);
            return 0;
        }
        *st = pk_trainer_step(a->t, err, errlen);
        if (*st != PK_OK)
            return 0;
        write_status(a, 0);
        if (pk_trainer_done(a->t)) {
            const pk_train_result *r = pk_trainer_result(a->t);
            a->run_done = !r->interrupted;
            emit(a, PK_AGENT_INFO, "run %lld: %s after %lld steps", (long long)r->run_id,
                 r->stopped_early ? "early stop"
                 : r->interrupted ? "stopped"
                                  : "done",
                 (long long)r->steps_done);
            save_today(a);
            return 0;
        }
    }
    save_today(a);
    return 1;
}

/* Opens the run to train: a new chained run when examples arrived, else the current one.
 * Returns 0 (and sets the state) when there is nothing to train. */
static int open_trainer(agent *a, pk_status *st, char *err, size_t errlen)
{
    int64_t upto = 0;
    char why[300];
    if (resolve_datasets(a, why, sizeof why) != PK_OK) { /* not imported yet, or forgotten */
        set_state(a, "idle", why);
        return 0;
    }
    pk_run_info ri;
    memset(&ri, 0, sizeof ri);
    if (a->run > 0 && pk_store_run_get(a->s, a->run, &ri, NULL, 0) == PK_ERR_NOTFOUND)
        a->run = a->run_upto = a->run_done = 0; /* forgotten with its data (--with-runs) */
    pk_run_info_clear(&ri);
    int fresh = new_examples(a, &upto);
    if (upto == 0) {
        set_state(a, "idle", "no examples in the datasets yet");
        return 0;
    }
    if (!fresh && a->run_done) {
        set_state(a, "idle", "up to date: the run finished; waiting for new examples");
        return 0;
    }
    int64_t n_train = fresh && a->p->train.lr_auto ? training_examples(a, upto) : 2;
    if (n_train >= 0 && n_train < 2) { /* the search would fail: wait for data instead */
        snprintf(why, sizeof why,
                 "--lr auto: its search needs 2 training examples, the datasets give %lld; "
                 "waiting for new examples",
                 (long long)n_train);
        set_state(a, "idle", why);
        return 0;
    }
    *st = fresh ? open_new_run(a, upto, err, errlen) : open_current(a, err, errlen);
    if (*st != PK_OK) {
        close_trainer(a);
        return 0;
    }
    char what[640];
    snprintf(what, sizeof what, "run %lld on %s", (long long)a->run, a->p->datasets);
    set_state(a, "training", what);
    return 1;
}

/* One sync when it is due, with a doubling retry delay after a failure. */
static void maybe_sync(agent *a)
{
    char err[512] = "";
    double t = now_s();
    if (a->p->sync == NULL || a->p->sync_every_s <= 0 || t < a->next_sync)
        return;
    set_state(a, "syncing", "uploading seeds and scalars, applying the global log");
    pk_status st = a->p->sync(a->p->sync_user, err, sizeof err);
    if (st == PK_OK) {
        a->last_sync = t;
        a->sync_delay = 0;
        a->next_sync = t + a->p->sync_every_s;
        snprintf(a->sync_status, sizeof a->sync_status, "ok");
        emit(a, PK_AGENT_INFO, "sync: ok");
    } else {
        double d = a->sync_delay > 0 ? a->sync_delay * 2 : a->p->poll_s;
        a->sync_delay = d < a->p->sync_every_s ? d : a->p->sync_every_s;
        a->next_sync = t + a->sync_delay;
        snprintf(a->sync_status, sizeof a->sync_status, "failed (%s); retry in %.0f s",
                 err[0] ? err : pk_status_str(st), a->sync_delay);
        emit(a, PK_AGENT_WARN, "sync: %s", a->sync_status);
    }
    write_status(a, 1);
}

/* One turn of the loop: train a slice if the device allows it and there is work, else wait.
 * Returns the training error, if any. */
static pk_status turn(agent *a, char *err, size_t errlen)
{
    char why[256];
    pk_status st = PK_OK;
    if (a->t == NULL) {
        if (!pk_agent_conditions_ok(&a->p->cond, 0, why, sizeof why)) {
            set_state(a, "waiting", why);
            (void)pk_sleep(a->p->poll_s); /* SIGTERM (agent stop) wakes it */
            return PK_OK;
        }
        maybe_sync(a);
        if (!open_trainer(a, &st, err, errlen)) {
            if (st == PK_OK)
                (void)pk_sleep(a->p->poll_s); /* SIGTERM (agent stop) wakes it */
            return st;
        }
    }
    int64_t upto = 0;
    if (!train_slice(a, &st, err, errlen) || st != PK_OK || new_examples(a, &upto) ||
        (a->p->sync && a->p->sync_every_s > 0 && now_s() >= a->next_sync))
        close_trainer(a);
    return st;
}

pk_status pk_agent_run(pk_store *s, const pk_agent_params *p, char *err, size_t errlen)
{
    agent *a = calloc(1, sizeof *a);
    int failures = 0;
    if (a == NULL)
        return PK_ERR_NOMEM;
    a->s = s;
    a->p = p;
    a->best.loss = (double)INFINITY;
    a->next_sync = now_s(); /* a first sync as soon as the conditions allow */
    pk_status st = pk_store_agent_claim(s, err, errlen);
    if (st != PK_OK) {
        free(a);
        return st;
    }
    st = find_current_run(a, err, errlen);
    if (st == PK_OK) {
        load_memory(a);
        set_state(a, "starting", a->run ? "continuing its run" : "no run yet");
    }
    while (st == PK_OK && !should_stop(a)) {
        st = turn(a, err, errlen);
        if (st == PK_ERR_INTERRUPTED) /* a new run's --lr auto search ended by search_stop */
            st = PK_OK;
        /* a bad setting (PK_ERR_ARG: the trainable set, the estimator's) fails the same way
         * every time: no retry */
        if (st != PK_OK && st != PK_ERR_ARG && ++failures < MAX_FAILURES &&
            st != PK_ERR_STALE_KEY) {
            emit(a, PK_AGENT_WARN, "training failed (%s); retrying", err);
            st = PK_OK;
        } else if (st == PK_OK && a->t != NULL) {
            failures = 0;
        }
    }
    close_trainer(a);
    set_state(a, "stopping", st == PK_OK ? "asked to stop" : err && err[0] ? err : "an error");
    if (pk_store_agent_release(s, NULL, 0) != PK_OK)
        emit(a, PK_AGENT_WARN, "could not release the agent row");
    free(a);
    return st;
}
