/* trainer.c: the MeZO training loop over a store dataset (pk_mezo.h): a trainer opens a run (new
 * or resumed), takes one logged step at a time and checkpoints and evaluates on schedule. A
 * step's batch is a pure function of (run seed, step, micro-batch) and its update a pure function
 * of the logged row, so a resumed run (base + checkpoint + log, then the remaining steps) ends
 * with the same bits as an uninterrupted one. */
#include "pk_train.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum trainer_state {
    TRAINER_RUNNING = 0, /* steps are left to take */
    TRAINER_FINISHED,    /* status "done" or "stopped" written, final_hash set */
    TRAINER_FAILED,      /* a step failed: memory and log may disagree, only free is left */
} trainer_state;

struct pk_trainer {
    pk_store *s;          /* borrowed */
    pk_train_config cfg;  /* the run's settings (read back from the run row on resume) */
    pk_train_hooks hooks; /* zeroed when the caller passed none */
    pk_model *m;
    int parent_failed;      /* a new run from a run whose status is "failed" */
    uint8_t *mask;          /* [n_tensors] 1 = trainable */
    pk_objective *obj;      /* the training examples */
    pk_objective *eval_obj; /* the eval examples, NULL without an eval dataset */
    size_t *idx;            /* [batch] example indices of the current micro-batch */
    pk_step_row *rows;      /* [n_rows] the rows of the last step */
    int n_rows;             /* rows a step logs at most (pk_mezo_rows_per_step) */
    pk_mezo_state *est;     /* the estimator's state (NULL for plain spsa) */
    int64_t step;           /* next 0-based step = steps logged so far */
    double best_eval;       /* lowest eval loss so far (early stopping) */
    double seconds_before;  /* training seconds of earlier processes (the last eval's, resumed) */
    int bad_evals;          /* evals since best_eval improved */
    trainer_state state;
    int leased;        /* this process holds the run's lease (pk_store_lease_acquire) */
    pk_lr_guard guard; /* cfg.lr_guard: the rate's cuts so far (DESIGN 4) */
    float lr_base;     /* cfg.lr_guard: the rate before any cut (the search's) */
    pk_train_result res;
};

static void dataset_error(const char *serr, const char *dataset, pk_status st, char *err,
                          size_t errlen)
{
    pk_seterr(err, errlen, "dataset '%s': %s", dataset,
              st == PK_ERR_NOTFOUND ? "not found (see pocketllm data list)" : serr);
}

/* Which examples of a run's datasets an objective gets. */
typedef enum part {
    PART_ALL = 0, /* every example (eval of a model or run on a named dataset) */
    PART_TRAIN,   /* ids <= examples_upto, not held out */
    PART_HELDOUT, /* ids <= examples_upto, held out */
} part;

/* An example is held out by a hash of its id: ids are never reused, so an example stays on its
 * side as datasets grow, and the split does not depend on the other examples. */
int pk_train_held_out(int64_t id, int pct)
{
    return pct > 0 && pk_splitmix64((uint64_t)id ^ 0x686f6c646f7574ull) % 100 < (uint64_t)pct;
}

static int wanted(int64_t id, const pk_train_config *cfg, part p)
{
    if (p == PART_ALL)
        return 1;
    if (cfg->examples_upto > 0 && id > cfg->examples_upto)
        return 0;
    return pk_train_held_out(id, cfg->holdout) == (p == PART_HELDOUT);
}

/* Growing list of opened examples (secure memory, each freed by pk_example_free). */
typedef struct ex_list {
    pk_example **v;
    size_t n, cap;
} ex_list;

static void ex_list_free(ex_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        pk_example_free(l->v[i]);
    free(l->v);
}

/* Appends the wanted examples of dataset `name`, in id order. */
static pk_status add_dataset(pk_store *s, const char *name, const pk_train_config *cfg, part p,
                             ex_list *l, char *err, size_t errlen)
{
    char serr[512] = ""; /* what the store says on failure */
    int64_t ds = 0, n = 0, *ids = NULL;
    pk_status st = pk_store_dataset_id(s, name, &ds, serr, sizeof serr);
    if (st != PK_OK) {
        dataset_error(serr, name, st, err, errlen);
        return st;
    }
    st = pk_store_example_ids(s, ds, &ids, &n, serr, sizeof serr);
    if (st != PK_OK)
        pk_seterr(err, errlen, "dataset '%s': %s", name, serr);
    for (int64_t i = 0; st == PK_OK && i < n; i++) {
        if (!wanted(ids[i], cfg, p))
            continue;
        if (l->n == l->cap) {
            size_t cap = l->cap ? l->cap * 2 : 64;
            pk_example **v = realloc(l->v, cap * sizeof *v);
            if (v == NULL) {
                st = PK_ERR_NOMEM;
                break;
            }
            l->v = v;
            l->cap = cap;
        }
        st = pk_store_example_get(s, ds, ids[i], &l->v[l->n], serr, sizeof serr);
        if (st != PK_OK)
            pk_seterr(err, errlen, "dataset '%s', example %lld: %s", name, (long long)ids[i],
                      st == PK_ERR_AUTH ? "authentication failed (tampered record)" : serr);
        else
            l->n++;
    }
    free(ids);
    return st;
}

/* The objective over the wanted examples of the comma-separated datasets `names` (one name
 * when single != 0: a name may hold commas). */
static pk_status objective_load(pk_store *s, const char *names, int single, const pk_model *m,
                                const char *model_dir, const pk_train_config *cfg, part p,
                                pk_objective **out, char *err, size_t errlen)
{
    ex_list l = {NULL, 0, 0};
    pk_tokenizer *tok = NULL;
    char name[128];
    pk_status st = PK_OK;
    *out = NULL;
    for (const char *c = names; st == PK_OK && *c;) {
        size_t k = single ? strlen(c) : strcspn(c, ",");
        snprintf(name, sizeof name, "%.*s", (int)(k < sizeof name ? k : sizeof name - 1), c);
        st = add_dataset(s, name, cfg, p, &l, err, errlen);
        c += k + (c[k] == ',');
    }
    if (st == PK_OK && l.n == 0) {
        if (p == PART_HELDOUT)
            pk_seterr(err, errlen, "datasets '%s': no held-out examples", names);
        else
            pk_seterr(err, errlen, "dataset '%s' is empty", names);
        st = PK_ERR_ARG;
    }
    if (st == PK_OK)
        st = pk_tokenizer_load(model_dir, &tok, err, errlen);
    if (st == PK_OK) {
        pk_objective_params op = {cfg->objective, cfg->seq_len,
                                  cfg->template_[0] ? cfg->template_ : NULL,
                                  cfg->labels[0] ? cfg->labels : NULL};
        st = pk_objective_new(m, tok, op, l.v, l.n, out, err, errlen);
    }
    ex_list_free(&l);
    pk_tokenizer_free(tok);
    return st;
}

pk_status pk_objective_from_store(pk_store *s, const char *dataset, const pk_model *m,
                                  const char *model_dir, const pk_train_config *cfg,
                                  pk_objective **out, char *err, size_t errlen)
{
    if (dataset == NULL && !cfg->datasets[0]) {
        pk_seterr(err, errlen, "no dataset named");
        return PK_ERR_ARG;
    }
    /* dataset NULL: the union cfg->datasets names (a run's own datasets never replace a named
     * one: `eval --run ID --dataset N` evaluates on N) */
    int single = dataset != NULL;
    return objective_load(s, single ? dataset : cfg->datasets, single, m, model_dir, cfg, PART_ALL,
                          out, err, errlen);
}

/* The frozen prefix (DESIGN 4): a trainable set from block F up leaves the embeddings and blocks
 * below F as they are for the whole run, so each training row's stream into block F is computed
 * once by itself and kept; on when the training set's rows fit (pk_objective_freeze_prefix),
 * decided the same way for a new run and a resumed one, so their losses agree. */
static pk_status freeze_prefix(pk_trainer *t)
{
    return pk_objective_freeze_prefix(t->obj, t->m, t->mask);
}

/* The training objective of a run: its dataset, or the union it names; then the frozen prefix. */
static pk_status train_objective(pk_trainer *t, char *err, size_t errlen)
{
    const pk_train_config *c = &t->cfg;
    int single = c->datasets[0] == 0;
    pk_status st = objective_load(t->s, single ? c->dataset : c->datasets, single, t->m,
                                  c->model_dir, c, PART_TRAIN, &t->obj, err, errlen);
    return st == PK_OK ? freeze_prefix(t) : st;
}

/* The eval objective: eval_dataset, else the held-out part of the run's datasets, else none. */
static pk_status eval_objective(pk_trainer *t, char *err, size_t errlen)
{
    const pk_train_config *c = &t->cfg;
    if (c->eval_dataset[0])
        return pk_objective_from_store(t->s, c->eval_dataset, t->m, c->model_dir, c, &t->eval_obj,
                                       err, errlen);
    if (c->holdout <= 0)
        return PK_OK;
    int single = c->datasets[0] == 0;
    pk_status st = objective_load(t->s, single ? c->dataset : c->datasets, single, t->m,
                                  c->model_dir, c, PART_HELDOUT, &t->eval_obj, err, errlen);
    if (st == PK_ERR_ARG && t->eval_obj == NULL) { /* too few examples to hold any out */
        pk_seterr(err, errlen, "%s", "");
        return PK_OK;
    }
    return st;
}

/* ---- opening a run -------------------------------------------------------------------------- */

/* The shapes a step relies on (pk_train_config_from_json checks the same on resume). */
static pk_status check_config(const pk_train_config *c, char *err, size_t errlen)
{
    if (c->mezo.spsa_q < 1 || c->accumulate < 1 || c->batch < 1 || c->seq_len < 2 || c->steps < 0 ||
        !(c->mezo.eps > 0.0f)) {
        pk_seterr(err, errlen,
                  "run settings out of range (spsa_q %d, accumulate %d, batch %d, seq_len %d, "
                  "steps %lld, eps %g)",
                  c->mezo.spsa_q, c->accumulate, c->batch, c->seq_len, (long long)c->steps,
                  (double)c->mezo.eps);
        return PK_ERR_ARG;
    }
    return PK_OK;
}

/* Loss evaluations of the first `steps` steps (a pure function of the settings). */
static int64_t evaluations_at(const pk_train_config *c, int64_t steps)
{
    return pk_mezo_evals_upto(&c->mezo, steps) * (int64_t)c->accumulate;
}

/* A new run: the base model, its mask and hash, the training objective, then the run row. */
/* Losses are bit-identical for any thread count on one BLAS kernel (pk_model_kernel), not across
 * kernels: a run continued on another kernel trains on, but not exactly as it would have. Says
 * so once. Runs created before the kernel was recorded say nothing. */
static void note_kernel(const char *config_json, int64_t run_id)
{
    char now[160];
    cJSON *o = cJSON_Parse(config_json ? config_json : "");
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(o, "kernel");
    pk_model_kernel(now, sizeof now);
    if (cJSON_IsString(k) && strcmp(k->valuestring, now) != 0)
        pk_log(PK_LOG_WARN,
               "run %lld started on %s and continues on %s: the continuation is exact only on "
               "the same kernel (replaying its step log stays exact anywhere)",
               (long long)run_id, k->valuestring, now);
    cJSON_Delete(o);
}

/* The trainable tensors into memory of the process's own before the first update writes them
 * (copy-on-write faults page by page made the first step ~5x a normal one); a no-op where
 * replaying already wrote them. */
static pk_status make_writable(pk_trainer *t, char *err, size_t errlen)
{
    pk_status st = pk_model_make_writable(t->m, t->mask);
    if (st != PK_OK)
        pk_seterr(err, errlen, "%s: preparing the weights for training: %s", t->cfg.model_dir,
                  pk_status_str(st));
    return st;
}

/* --lr auto: the search from the starting weights, its result kept in the run's settings. */
static pk_status search_lr(pk_trainer *t, char *err, size_t errlen)
{
    pk_train_config *c = &t->cfg;
    pk_status st = PK_OK;
    if (c->lr_auto) {
        st = pk_lr_search_run(t->m, t->mask, t->obj, c, &t->hooks, &c->lr_search, err, errlen);
        if (st == PK_OK)
            c->mezo.lr = c->lr_search.chosen;
        t->res.lr_search = c->lr_search;
    }
    t->lr_base = c->mezo.lr;
    return st;
}

/* The weights a new run starts from: the base model, or (chained, DESIGN 13) its parent's after
 * parent_steps of the parent's steps (0: all it logged), on the parent's base model. hex gets
 * the base hash the run records: the root base model's, which its seed log replays on. */
static pk_status starting_weights(pk_trainer *t, char hex[65], char *err, size_t errlen)
{
    pk_train_config *c = &t->cfg;
    pk_run_info ri;
    pk_train_config pc;
    if (c->parent_run <= 0) {
        pk_status st = pk_model_load(c->model_dir, pk_model_default_params(), &t->m, err, errlen);
        return st == PK_OK ? pk_weights_hash(t->m, hex) : st;
    }
    pk_status st = pk_run_load_config(t->s, c->parent_run, &ri, &pc, err, errlen);
    t->parent_failed = st == PK_OK && !strcmp(ri.status, "failed");
    if (st == PK_OK && c->parent_steps > ri.steps_done) {
        pk_seterr(err, errlen, "run %lld has %lld steps, not %lld", (long long)c->parent_run,
                  (long long)ri.steps_done, (long long)c->parent_steps);
        st = PK_ERR_ARG;
    }
    if (st == PK_OK) {
        memcpy(c->model_dir, pc.model_dir, sizeof c->model_dir);
        if (c->parent_steps <= 0)
            c->parent_steps = ri.steps_done;
        memcpy(hex, ri.base_hash, 65);
    }
    pk_run_info_clear(&ri);
    if (st == PK_OK)
        st = pk_run_materialize_ex(t->s, c->parent_run, c->parent_steps, &t->m, NULL, NULL, err,
                                   errlen);
    return st;
}

/* The run row with its lineage (DESIGN 13): the ids of its datasets and its parent. */
static pk_status insert_run(pk_trainer *t, const char *json, const char *hex, char *err,
                            size_t errlen)
{
    char serr[512] = "", name[128]; /* serr: what the store says on failure */
    const pk_train_config *c = &t->cfg;
    const char *names = c->datasets[0] ? c->datasets : c->dataset;
    int64_t ids[32];
    size_t n = 0;
    pk_status st = PK_OK;
    for (const char *p = names; st == PK_OK && *p && n < 32;) {
        size_t k = c->datasets[0] ? strcspn(p, ",") : strlen(p);
        snprintf(name, sizeof name, "%.*s", (int)(k < sizeof name ? k : sizeof name - 1), p);
        st = pk_store_dataset_id(t->s, name, &ids[n++], serr, sizeof serr);
        p += k + (p[k] == ',');
    }
    pk_store_run_new r = {ids, n, c->parent_run, c->parent_steps};
    if (st == PK_OK)
        st = pk_store_run_create_ex(t->s, &r, json, hex, c->steps, &t->res.run_id, serr,
                                    sizeof serr);
    if (st != PK_OK)
        pk_seterr(err, errlen, "creating the run: %s", serr);
    return st;
}

/* The objective (bad labels or templates fail before a run row exists), the learning-rate
 * search if asked for, then the run row with the settings as they will run. */
static pk_status create_run(pk_trainer *t, const char *hex, char *err, size_t errlen)
{
    char *json = NULL;
    pk_status st = train_objective(t, err, errlen);
    if (st == PK_OK)
        st = search_lr(t, err, errlen);
    if (st == PK_OK)
        st = pk_train_config_to_json(&t->cfg, &json);
    if (st == PK_OK)
        st = insert_run(t, json, hex, err, errlen);
    free(json);
    return st;
}

static pk_status open_new_run(pk_trainer *t, char *err, size_t errlen)
{
    char serr[512] = ""; /* what the store says on failure */
    pk_train_config *c = &t->cfg;
    char hex[65];
    int64_t ds = 0;
    c->mezo.steps_total = c->steps;
    pk_status st = check_config(c, err, errlen);
    if (c->mezo.estimator == PK_EST_FZOO)
        c->mezo.z = PK_Z_RADEMACHER; /* FZOO's perturbations are Rademacher by definition */
    /* the base hash before pk_mezo_trainable: a LoRA spec adds the adapter's tensors, which
     * replay re-creates from the spec after checking the base */
    if (st == PK_OK)
        st = starting_weights(t, hex, err, errlen);
    if (st == PK_OK)
        st = pk_mezo_trainable(t->m, c->trainable, &t->mask, err, errlen);
    if (st == PK_OK)
        st = pk_mezo_state_new(t->m, t->mask, &c->mezo, &t->est, err, errlen);
    if (st == PK_OK)
        st = make_writable(t, err, errlen);
    if (st != PK_OK)
        return st;
    st = pk_store_dataset_id(t->s, c->dataset, &ds, serr, sizeof serr);
    if (st != PK_OK) {
        dataset_error(serr, c->dataset, st, err, errlen);
        return st;
    }
    return create_run(t, hex, err, errlen);
}

/* The training seconds a resumed run goes on from: the last timed eval's at or before the
 * resume step (the seconds between that eval and the stop are not counted). */
static pk_status seconds_before(pk_trainer *t, char *err, size_t errlen)
{
    char serr[512] = ""; /* what the store says on failure */
    int64_t *steps = NULL;
    double *secs = NULL;
    size_t n = 0;
    pk_status st = pk_store_eval_seconds(t->s, t->res.run_id, &steps, &secs, &n, serr, sizeof serr);
    if (st != PK_OK)
        pk_seterr(err, errlen, "run %lld: eval seconds: %s", (long long)t->res.run_id, serr);
    for (size_t i = 0; st == PK_OK && i < n && steps[i] <= t->step; i++)
        t->seconds_before = secs[i];
    free(steps);
    free(secs);
    return st;
}

/* Early stopping across resumes: the best eval loss and the evals since it, from the logged
 * eval points (a run resumed slice by slice, as the agent does, stops where an uninterrupted
 * one would). */
static pk_status replay_evals(pk_trainer *t, char *err, size_t errlen)
{
    char serr[512] = ""; /* what the store says on failure */
    int64_t *steps = NULL;
    double *loss = NULL, *acc = NULL;
    size_t n = 0;
    pk_status st =
        pk_store_eval_read(t->s, t->res.run_id, &steps, &loss, &acc, &n, serr, sizeof serr);
    if (st != PK_OK)
        pk_seterr(err, errlen, "run %lld: evals: %s", (long long)t->res.run_id, serr);
    for (size_t i = 0; st == PK_OK && i < n; i++) {
        if (loss[i] < t->best_eval) {
            t->best_eval = loss[i];
            t->bad_evals = 0;
        } else {
            t->bad_evals++;
        }
    }
    /* killed after its stopping eval was logged, before the run was marked done */
    if (st == PK_OK && t->cfg.early_stop > 0 && t->bad_evals >= t->cfg.early_stop)
        t->res.stopped_early = 1;
    free(steps);
    free(loss);
    free(acc);
    return st == PK_OK ? seconds_before(t, err, errlen) : st;
}

/* The run's rate after the guard's cuts so far, for the steps from here. */
static void guarded_rate(pk_trainer *t)
{
    t->cfg.mezo.lr = pk_lr_guard_rate(t->lr_base, t->guard.cuts);
    t->res.lr_cuts = t->guard.cuts;
}

/* An --lr auto run's guard after the logged steps, from their rows' losses, and the rate it
 * left the run at: what the uninterrupted run had at this step. */
static pk_status replay_guard(pk_trainer *t, char *err, size_t errlen)
{
    char serr[512] = "";         /* what the store says on failure */
    t->lr_base = t->cfg.mezo.lr; /* the run's settings keep the rate before any cut */
    if (!t->cfg.lr_guard || t->step == 0)
        return PK_OK;
    pk_step_row *rows = NULL;
    size_t n = 0;
    pk_status st =
        pk_store_steps_read(t->s, t->res.run_id, 0, t->step, &rows, &n, serr, sizeof serr);
    if (st != PK_OK) {
        pk_seterr(err, errlen, "run %lld: steps: %s", (long long)t->res.run_id, serr);
        return st;
    }
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && rows[j].step == rows[i].step)
            j++;
        pk_lr_guard_step(&t->guard, rows + i, (int)(j - i));
        i = j;
    }
    free(rows);
    guarded_rate(t);
    return PK_OK;
}

/* A run of the store: its settings, then its weights after the logged steps. */
static pk_status open_resumed_run(pk_trainer *t, int64_t run_id, char *err, size_t errlen)
{
    pk_run_info ri;
    t->res.run_id = run_id;
    pk_status st = pk_run_load_config(t->s, run_id, &ri, &t->cfg, err, errlen);
    if (st == PK_OK && ri.steps_done < t->cfg.steps)
        note_kernel(ri.config_json, run_id);
    pk_run_info_clear(&ri);
    if (st == PK_OK)
        st = pk_run_materialize_state(t->s, run_id, -1, &t->m, &t->mask, &t->est, &t->step, err,
                                      errlen);
    if (st == PK_OK)
        st = make_writable(t, err, errlen);
    if (st == PK_OK)
        st = replay_evals(t, err, errlen);
    if (st == PK_OK)
        st = replay_guard(t, err, errlen);
    return st;
}

/* The run exists: objectives, step buffers, status "running", then on_start. */
static pk_status start_running(pk_trainer *t, char *err, size_t errlen)
{
    char serr[512] = ""; /* what the store says on failure */
    const pk_train_config *c = &t->cfg;
    pk_status st = PK_OK;
    if (t->obj == NULL)
        st = train_objective(t, err, errlen);
    if (st == PK_OK)
        st = eval_objective(t, err, errlen);
    if (st != PK_OK)
        return st;
    t->idx = malloc((size_t)c->batch * sizeof(size_t));
    t->n_rows = pk_mezo_rows_per_step(&c->mezo);
    t->rows = calloc((size_t)t->n_rows, sizeof *t->rows);
    if (t->idx == NULL || t->rows == NULL)
        return PK_ERR_NOMEM;
    /* the lease: a second trainer of this run, a rekey and a forget of its data all refuse */
    st = pk_store_lease_acquire(t->s, t->res.run_id, serr, sizeof serr);
    t->leased = st == PK_OK;
    if (st == PK_OK)
        st = pk_store_run_set_status(t->s, t->res.run_id, "running", serr, sizeof serr);
    if (st != PK_OK) {
        pk_seterr(err, errlen, "%s", serr);
        return st;
    }
    t->res.steps_done = t->step;
    t->res.evaluations = evaluations_at(c, t->step);
    if (t->hooks.on_start)
        t->hooks.on_start(t->hooks.user, t->res.run_id, t->step);
    return PK_OK;
}

pk_status pk_trainer_open(pk_store *s, const pk_train_config *cfg, int64_t resume_run,
                          const pk_train_hooks *hooks, pk_trainer **out, char *err, size_t errlen)
{
    *out = NULL;
    if (resume_run <= 0 && cfg == NULL) {
        pk_seterr(err, errlen, "a new run needs its settings");
        return PK_ERR_ARG;
    }
    pk_trainer *t = calloc(1, sizeof *t);
    if (t == NULL)
        return PK_ERR_NOMEM;
    t->s = s;
    if (cfg != NULL)
        t->cfg = *cfg;
    if (hooks != NULL)
        t->hooks = *hooks;
    t->best_eval = (double)INFINITY;
    t->res.last_loss = (double)NAN;
    t->guard = pk_lr_guard_new();
    pk_status st = resume_run > 0 ? open_resumed_run(t, resume_run, err, errlen)
                                  : open_new_run(t, err, errlen);
    if (st == PK_OK)
        st = start_running(t, err, errlen);
    if (st != PK_OK) {
        pk_trainer_free(t);
        return st;
    }
    *out = t;
    return PK_OK;
}

void pk_trainer_free(pk_trainer *t)
{
    char serr[512] = ""; /* what the store says on failure */
    if (t == NULL)
        return;
    if (t->leased && pk_store_lease_release(t->s, t->res.run_id, serr, sizeof serr) != PK_OK)
        pk_log(PK_LOG_WARN, "run %lld: could not release its lease: %s", (long long)t->res.run_id,
               serr);
    free(t->idx);
    free(t->rows);
    pk_mezo_state_free(t->est);
    free(t->mask);
    pk_objective_free(t->obj);
    pk_objective_free(t->eval_obj);
    pk_model_free(t->m);
    free(t);
}

/* ---- one step ------------------------------------------------------------------------------- */

/* A failed pk_mezo_step: the message, and the run marked "failed". */
static pk_status step_failed(pk_trainer *t, pk_status st, char *err, size_t errlen)
{
    if (st == PK_ERR_NUMERIC) {
        /* pk_mezo_step left the diverging perturbation in the first non-finite row */
        int n = pk_mezo_step_rows(&t->cfg.mezo, t->step);
        const pk_step_row *r = t->rows, *last = t->rows + n - 1;
        while (r < last && pk_mezo_row_ok(r))
            r++;
        if (t->step == 0 && t->parent_failed) /* it started where a diverged run ended */
            pk_seterr(err, errlen,
                      "step 0: the starting weights already diverge (loss+ %g, loss- %g): "
                      "they are run %lld's after step %lld, and that run failed; start from its "
                      "base model or from another run",
                      (double)r->loss_plus, (double)r->loss_minus, (long long)t->cfg.parent_run,
                      (long long)t->cfg.parent_steps);
        else
            pk_seterr(err, errlen,
                      "step %lld: the run diverged: loss+ %g, loss- %g, projected gradient %g "
                      "(a lower learning rate or eps may help)",
                      (long long)t->step, (double)r->loss_plus, (double)r->loss_minus,
                      (double)r->g);
    } else {
        pk_seterr(err, errlen, "step %lld: %s", (long long)t->step, pk_status_str(st));
    }
    pk_status st2 = pk_store_run_set_status(t->s, t->res.run_id, "failed", NULL, 0);
    (void)st2; /* the step's error is the one to report */
    return st;
}

/* The passphrase changed under the run (its keys are stale, so nothing more can be sealed or
 * logged): stop at the last logged step, status "stopped", resumable with the new passphrase.
 * The step just computed is not logged; a resume recomputes it bit for bit. */
static pk_status rekeyed(pk_trainer *t, char *err, size_t errlen)
{
    t->res.interrupted = 1;
    pk_status st = pk_store_run_set_status(t->s, t->res.run_id, "stopped", NULL, 0);
    (void)st; /* the stale key is the error to report */
    pk_seterr(err, errlen,
              "the passphrase changed while run %lld trained: it stopped after step %lld; "
              "resume it with the new passphrase",
              (long long)t->res.run_id, (long long)t->step);
    return PK_ERR_STALE_KEY;
}

/* One MeZO step, its rows logged in one store transaction, then on_step. */
static pk_status take_step(pk_trainer *t, char *err, size_t errlen)
{
    char serr[512] = ""; /* what the store says on failure */
    const pk_train_config *c = &t->cfg;
    double fs = 0, us = 0;
    pk_objective_batches b = {.obj = t->obj,
                              .run_seed = c->mezo.seed,
                              .step = t->step,
                              .n_micro = c->accumulate,
                              .n_examples = pk_objective_size(t->obj),
                              .batch = (size_t)c->batch,
                              .idx = t->idx};
    pk_mezo_loss loss = pk_objective_batches_loss(&b);
    pk_status st = pk_mezo_step_sweep(t->m, t->mask, &c->mezo, t->est, t->step, c->accumulate,
                                      &loss, t->rows, &fs, &us);
    if (st != PK_OK)
        return step_failed(t, st, err, errlen);
    t->res.forward_s += fs;
    t->res.update_s += us;
    int n_rows = pk_mezo_step_rows(&c->mezo, t->step); /* hizoo: fewer between H updates */
    st = pk_store_steps_append(t->s, t->res.run_id, t->rows, (size_t)n_rows, serr, sizeof serr);
    if (st == PK_ERR_STALE_KEY)
        return rekeyed(t, err, errlen);
    if (st != PK_OK) {
        pk_seterr(err, errlen, "step %lld: logging: %s", (long long)t->step, serr);
        return st;
    }
    /* fzoo and hizoo's Hessian steps took the unperturbed loss: row 0's loss_minus */
    int l0 = c->mezo.estimator == PK_EST_FZOO || pk_mezo_hessian_step(&c->mezo, t->step);
    t->res.last_loss = l0 ? (double)t->rows[0].loss_minus
                          : 0.5 * ((double)t->rows[0].loss_plus + (double)t->rows[0].loss_minus);
    if (t->hooks.on_step)
        t->hooks.on_step(t->hooks.user, t->step, c->steps, t->rows, n_rows);
    /* (the last step is not judged: no step would train at a cut rate) */
    if (c->lr_guard && t->step + 1 < c->steps && pk_lr_guard_step(&t->guard, t->rows, n_rows)) {
        guarded_rate(t); /* the steps after this one train at the cut rate (their rows say so) */
        if (t->hooks.on_lr_cut)
            t->hooks.on_lr_cut(t->hooks.user, t->step, t->cfg.mezo.lr, t->guard.last,
                               t->guard.prior);
    }
    t->step++;
    t->res.steps_done = t->step;
    t->res.evaluations = evaluations_at(c, t->step);
    return PK_OK;
}

/* A checkpoint every checkpoint_every steps, but none at the end (the log is enough). */
static pk_status maybe_checkpoint(pk_trainer *t, char *err, size_t errlen)
{
    char serr[512] = ""; /* what the store says on failure */
    int64_t every = t->cfg.checkpoint_every, done = t->step;
    if (every <= 0 || done % every != 0 || done >= t->cfg.steps)
        return PK_OK;
    void *blob = NULL;
    size_t len = 0;
    /* with the estimator's state: hizoo's Hessian diagonal */
    pk_status st = pk_checkpoint_pack_state(t->m, t->mask, t->est, &blob, &len);
    if (st == PK_OK) {
        st = pk_store_checkpoint_put(t->s, t->res.run_id, done, blob, len, serr, sizeof serr);
        if (st != PK_OK && st != PK_ERR_STALE_KEY)
            pk_seterr(err, errlen, "checkpoint at step %lld: %s", (long long)done, serr);
    }
    free(blob);
    return st == PK_ERR_STALE_KEY ? rekeyed(t, err, errlen) : st;
}

/* An eval every eval_every steps and after the last; early stopping after early_stop evals
 * without a new best. */
static pk_status maybe_eval(pk_trainer *t, char *err, size_t errlen)
{
    const pk_train_config *c = &t->cfg;
    int64_t done = t->step;
    if (t->eval_obj == NULL || c->eval_every <= 0 ||
        (done % c->eval_every != 0 && done != c->steps))
        return PK_OK;
    double el = 0;
    return pk_trainer_eval(t, &el, err, errlen);
}

pk_status pk_trainer_eval(pk_trainer *t, double *loss, char *err, size_t errlen)
{
    char serr[512] = ""; /* what the store says on failure */
    const pk_train_config *c = &t->cfg;
    int64_t done = t->step;
    double el = 0, ea = 0;
    if (t->eval_obj == NULL) {
        pk_seterr(err, errlen, "run %lld has no eval examples", (long long)t->res.run_id);
        return PK_ERR_ARG;
    }
    pk_status st = pk_objective_eval(t->eval_obj, t->m, (size_t)c->batch, &el, &ea);
    if (st != PK_OK) {
        pk_seterr(err, errlen, "eval at step %lld: %s", (long long)done, pk_status_str(st));
        return st;
    }
    *loss = el;
    st = pk_store_eval_append(t->s, t->res.run_id, done, el, ea, serr, sizeof serr);
    if (st == PK_OK)
        st = pk_store_eval_set_seconds(t->s, t->res.run_id, done,
                                       t->seconds_before + t->res.elapsed_s, serr, sizeof serr);
    if (st != PK_OK) {
        pk_seterr(err, errlen, "eval at step %lld: %s", (long long)done, serr);
        return st;
    }
    if (t->hooks.on_eval)
        t->hooks.on_eval(t->hooks.user, done, el, ea);
    if (el < t->best_eval) {
        t->best_eval = el;
        t->bad_evals = 0;
    } else if (c->early_stop > 0 && ++t->bad_evals >= c->early_stop) {
        t->res.stopped_early = 1;
    }
    return PK_OK;
}

/* The end of the run: status "stopped" (interrupted) or "done", and the final weights hash. */
static pk_status finish(pk_trainer *t, char *err, size_t errlen)
{
    char serr[512] = ""; /* what the store says on failure */
    const char *status = t->res.interrupted ? "stopped" : "done";
    pk_status st = pk_store_run_set_status(t->s, t->res.run_id, status, serr, sizeof serr);
    if (st != PK_OK) {
        pk_seterr(err, errlen, "run %lld: %s", (long long)t->res.run_id, serr);
        return st;
    }
    st = pk_weights_hash(t->m, t->res.final_hash);
    if (st != PK_OK)
        return st;
    t->state = TRAINER_FINISHED;
    return PK_OK;
}

pk_status pk_trainer_step(pk_trainer *t, char *err, size_t errlen)
{
    if (t->state == TRAINER_FINISHED)
        return PK_OK;
    if (t->state == TRAINER_FAILED) {
        pk_seterr(err, errlen, "run %lld: an earlier step failed (resume the run to go on)",
                  (long long)t->res.run_id);
        return PK_ERR_ARG;
    }
    pk_status st = PK_OK;
    if (t->res.stopped_early) {
        /* resumed past its early stop: finish without another step */
    } else if (t->step < t->cfg.steps && pk_interrupted()) {
        t->res.interrupted = 1; /* at a step boundary: everything so far is logged */
    } else if (t->step < t->cfg.steps) {
        double t0 = pk_time_now();
        st = take_step(t, err, errlen);
        if (st == PK_OK)
            st = maybe_checkpoint(t, err, errlen);
        t->res.elapsed_s += pk_time_now() - t0; /* the eval below is not training time */
        if (st == PK_OK)
            st = maybe_eval(t, err, errlen);
    }
    if (st == PK_OK && (t->step >= t->cfg.steps || t->res.interrupted || t->res.stopped_early))
        st = finish(t, err, errlen);
    if (st != PK_OK)
        t->state = TRAINER_FAILED;
    return st;
}

pk_status pk_trainer_stop(pk_trainer *t, char *err, size_t errlen)
{
    if (t->state != TRAINER_RUNNING)
        return PK_OK;
    t->res.interrupted = 1; /* between two calls of pk_trainer_step: a step boundary */
    pk_status st = finish(t, err, errlen);
    if (st != PK_OK)
        t->state = TRAINER_FAILED;
    return st;
}

int pk_trainer_done(const pk_trainer *t)
{
    return t->state != TRAINER_RUNNING;
}

const pk_train_result *pk_trainer_result(const pk_trainer *t)
{
    return &t->res;
}

pk_status pk_train(pk_store *s, const pk_train_config *cfg, int64_t resume_run,
                   const pk_train_hooks *hooks, pk_train_result *res, char *err, size_t errlen)
{
    pk_trainer *t = NULL;
    memset(res, 0, sizeof *res);
    res->last_loss = (double)NAN;
    pk_status st = pk_trainer_open(s, cfg, resume_run, hooks, &t, err, errlen);
    while (st == PK_OK && !pk_trainer_done(t))
        st = pk_trainer_step(t, err, errlen);
    if (t != NULL)
        *res = *pk_trainer_result(t);
    pk_trainer_free(t);
    return st;
}
