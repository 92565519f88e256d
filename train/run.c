/* run.c: a training run's settings (JSON in the store) and its weights: base model + newest
 * checkpoint + the step log after it (pk_mezo.h). */
#include "pk_train.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

pk_train_config pk_train_config_default(void)
{
    pk_train_config c;
    memset(&c, 0, sizeof c);
    c.mezo = pk_mezo_default_params();
    c.objective = PK_OBJ_LM;
    c.accumulate = 1;
    c.batch = 8;
    c.seq_len = 128;
    c.steps = 1000;
    c.eval_every = 0;
    c.early_stop = 0;
    c.checkpoint_every = 500;
    strcpy(c.trainable, "all");
    return c;
}

/* "lr_search": {"chosen", "steps_each", "held_examples", "start_loss", "candidates":
 * [{"lr", "loss" (null: diverged)}]}: a record of how the rate was chosen, not read back. */
static void add_lr_search(cJSON *o, const pk_lr_search *r)
{
    cJSON *s = cJSON_AddObjectToObject(o, "lr_search");
    cJSON_AddNumberToObject(s, "chosen", (double)r->chosen);
    cJSON_AddNumberToObject(s, "steps_each", r->steps_each);
    cJSON_AddNumberToObject(s, "held_examples", r->held_examples);
    cJSON_AddNumberToObject(s, "start_loss", r->start_loss);
    cJSON *a = cJSON_AddArrayToObject(s, "candidates");
    for (int i = 0; i < r->n; i++) {
        cJSON *c = cJSON_CreateObject();
        cJSON_AddNumberToObject(c, "lr", (double)r->lr[i]);
        if (isfinite(r->loss[i]))
            cJSON_AddNumberToObject(c, "loss", r->loss[i]);
        else
            cJSON_AddNullToObject(c, "loss");
        cJSON_AddItemToArray(a, c);
    }
}

/* The continual-run settings, only when set (a plain run's JSON is as before). */
static void add_lineage(cJSON *o, const pk_train_config *c)
{
    if (c->parent_run > 0) {
        cJSON_AddNumberToObject(o, "parent_run", (double)c->parent_run);
        cJSON_AddNumberToObject(o, "parent_steps", (double)c->parent_steps);
    }
    if (c->datasets[0])
        cJSON_AddStringToObject(o, "datasets", c->datasets);
    if (c->examples_upto > 0)
        cJSON_AddNumberToObject(o, "examples_upto", (double)c->examples_upto);
    if (c->holdout > 0)
        cJSON_AddNumberToObject(o, "holdout", c->holdout);
}

pk_status pk_train_config_to_json(const pk_train_config *c, char **json)
{
    char seed[32];
    *json = NULL;
    cJSON *o = cJSON_CreateObject();
    if (o == NULL)
        return PK_ERR_NOMEM;
    snprintf(seed, sizeof seed, "%" PRIu64, c->mezo.seed);
    cJSON_AddStringToObject(o, "model", c->model_dir);
    cJSON_AddStringToObject(o, "dataset", c->dataset);
    cJSON_AddStringToObject(o, "eval_dataset", c->eval_dataset);
    cJSON_AddStringToObject(o, "objective", pk_objective_name(c->objective));
    cJSON_AddStringToObject(o, "template", c->template_);
    cJSON_AddStringToObject(o, "labels", c->labels);
    /* a LoRA spec with its rank, alpha and adapter seed spelled out: the run (and its seed log)
     * then names everything that re-creates the adapter's initial values */
    char spec[sizeof c->trainable];
    pk_lora_params lp;
    pk_mezo_trainable_canonical(c->trainable, spec, sizeof spec);
    cJSON_AddStringToObject(o, "trainable", spec);
    if (pk_mezo_lora_parse(spec, &lp, NULL, 0) == 1) {
        char aseed[32];
        snprintf(aseed, sizeof aseed, "%" PRIu64, lp.seed);
        cJSON_AddStringToObject(o, "adapter_seed", aseed);
    }
    cJSON_AddStringToObject(o, "seed", seed);
    cJSON_AddStringToObject(o, "z", c->mezo.z == PK_Z_RADEMACHER ? "rademacher" : "gaussian");
    cJSON_AddStringToObject(o, "schedule", pk_schedule_name(c->mezo.schedule));
    /* floats are stored through double: exact for float values */
    cJSON_AddNumberToObject(o, "eps", (double)c->mezo.eps);
    cJSON_AddNumberToObject(o, "lr", (double)c->mezo.lr);
    cJSON_AddNumberToObject(o, "weight_decay", (double)c->mezo.weight_decay);
    cJSON_AddNumberToObject(o, "clip_g", (double)c->mezo.clip_g);
    cJSON_AddNumberToObject(o, "warmup", (double)c->mezo.warmup);
    cJSON_AddNumberToObject(o, "spsa_q", c->mezo.spsa_q);
    cJSON_AddNumberToObject(o, "accumulate", c->accumulate);
    cJSON_AddNumberToObject(o, "batch", c->batch);
    cJSON_AddNumberToObject(o, "seq_len", c->seq_len);
    cJSON_AddNumberToObject(o, "steps", (double)c->steps);
    cJSON_AddNumberToObject(o, "eval_every", (double)c->eval_every);
    cJSON_AddNumberToObject(o, "early_stop", c->early_stop);
    cJSON_AddNumberToObject(o, "checkpoint_every", (double)c->checkpoint_every);
    /* the estimator (optional keys: runs created before them are spsa) */
    cJSON_AddStringToObject(o, "estimator", pk_estimator_name(c->mezo.estimator));
    cJSON_AddNumberToObject(o, "perturbations", c->mezo.perturbations);
    if (c->mezo.fzoo_mean) /* only when set: a run without it compared with l0, as before */
        cJSON_AddStringToObject(o, "fzoo_baseline", "mean");
    cJSON_AddNumberToObject(o, "hessian_smooth", (double)c->mezo.hessian_smooth);
    cJSON_AddNumberToObject(o, "hessian_budget", (double)c->mezo.hessian_budget);
    cJSON_AddNumberToObject(o, "hessian_every", c->mezo.hessian_every);
    cJSON_AddNumberToObject(o, "perturb_layers", c->mezo.perturb_layers);
    if (c->mezo.perturb_stages > 0) /* written only when on: older configs read as before */
        cJSON_AddNumberToObject(o, "perturb_stages", c->mezo.perturb_stages);
    /* 16-bit update rounding (runs created before the key rounded to nearest) */
    cJSON_AddStringToObject(o, "rounding", pk_rounding_name(c->mezo.rounding));
    if (c->lr_search.n > 0)
        add_lr_search(o, &c->lr_search);
    if (c->lr_guard) /* only when set: a run without it reads as before */
        cJSON_AddTrueToObject(o, "lr_guard");
    /* not a setting: the BLAS kernel of the process creating the run, as a record (losses are
     * exact across thread counts, not across kernels; pk_train warns on resuming elsewhere) */
    char kernel[160];
    cJSON_AddStringToObject(o, "kernel", pk_model_kernel(kernel, sizeof kernel));
    add_lineage(o, c);
    *json = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return *json ? PK_OK : PK_ERR_NOMEM;
}

static int get_str(const cJSON *o, const char *k, char *out, size_t n)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsString(v) || strlen(v->valuestring) >= n)
        return -1;
    strcpy(out, v->valuestring);
    return 0;
}

static int get_num(const cJSON *o, const char *k, double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return -1;
    *out = v->valuedouble;
    return 0;
}

/* The optional estimator keys (absent: the defaults, plain spsa). NULL or the bad key. */
static const char *estimator_from_json(const cJSON *o, pk_mezo_params *p)
{
    char name[32];
    double d;
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "estimator");
    if (e != NULL &&
        (get_str(o, "estimator", name, sizeof name) || pk_estimator_parse(name, &p->estimator)))
        return "estimator";
    if (cJSON_GetObjectItemCaseSensitive(o, "perturbations") != NULL) {
        if (get_num(o, "perturbations", &d) || d < 1 || d > 4096)
            return "perturbations";
        p->perturbations = (int)d;
    }
    p->fzoo_mean = 0;
    if (cJSON_GetObjectItemCaseSensitive(o, "fzoo_baseline") != NULL) {
        if (get_str(o, "fzoo_baseline", name, sizeof name) ||
            pk_fzoo_baseline_parse(name, &p->fzoo_mean))
            return "fzoo_baseline";
    }
    if (cJSON_GetObjectItemCaseSensitive(o, "perturb_layers") != NULL) {
        if (get_num(o, "perturb_layers", &d) || d < 0 || d > 4096)
            return "perturb_layers";
        p->perturb_layers = (int)d;
    }
    if (cJSON_GetObjectItemCaseSensitive(o, "perturb_stages") != NULL) {
        if (get_num(o, "perturb_stages", &d) || d < 1 || d > 8192)
            return "perturb_stages";
        p->perturb_stages = (int)d;
    }
    if (cJSON_GetObjectItemCaseSensitive(o, "hessian_smooth") != NULL) {
        if (get_num(o, "hessian_smooth", &d))
            return "hessian_smooth";
        p->hessian_smooth = (float)d;
    }
    if (cJSON_GetObjectItemCaseSensitive(o, "hessian_budget") != NULL) {
        if (get_num(o, "hessian_budget", &d))
            return "hessian_budget";
        p->hessian_budget = (float)d;
    }
    /* a run from before the Hessian interval has no key: it updated H every step */
    p->hessian_every = 1;
    if (cJSON_GetObjectItemCaseSensitive(o, "hessian_every") != NULL) {
        if (get_num(o, "hessian_every", &d) || d < 1 || d > PK_HESSIAN_EVERY_MAX)
            return "hessian_every";
        p->hessian_every = (int)d;
    }
    /* a run from before stochastic rounding has no key: it rounded its 16-bit updates to
     * nearest, and its resume and replay must too */
    p->rounding = PK_ROUND_NEAREST;
    if (cJSON_GetObjectItemCaseSensitive(o, "rounding") != NULL &&
        (get_str(o, "rounding", name, sizeof name) || pk_rounding_parse(name, &p->rounding)))
        return "rounding";
    return NULL;
}

/* Reads what add_lineage wrote; absent keys keep their defaults. 0, or -1 on a bad value. */
static int get_lineage(const cJSON *o, pk_train_config *c)
{
    double d;
    const cJSON *ds = cJSON_GetObjectItemCaseSensitive(o, "datasets");
    if (ds != NULL && (!cJSON_IsString(ds) || strlen(ds->valuestring) >= sizeof c->datasets))
        return -1;
    if (ds != NULL)
        strcpy(c->datasets, ds->valuestring);
    if (get_num(o, "parent_run", &d) == 0)
        c->parent_run = (int64_t)d;
    if (get_num(o, "parent_steps", &d) == 0)
        c->parent_steps = (int64_t)d;
    if (get_num(o, "examples_upto", &d) == 0)
        c->examples_upto = (int64_t)d;
    if (get_num(o, "holdout", &d) == 0)
        c->holdout = (int)d;
    return c->parent_run < 0 || c->parent_steps < 0 || c->holdout < 0 || c->holdout > 90 ? -1 : 0;
}

pk_status pk_train_config_from_json(const char *json, pk_train_config *c, char *err, size_t errlen)
{
    *c = pk_train_config_default();
    cJSON *o = cJSON_Parse(json);
    char buf[64];
    const char *bad = NULL;
    double d[13];
    if (o == NULL) {
        snprintf(err, errlen, "run config: not JSON");
        return PK_ERR_FORMAT;
    }
    if (get_str(o, "model", c->model_dir, sizeof c->model_dir))
        bad = "model";
    else if (get_str(o, "dataset", c->dataset, sizeof c->dataset))
        bad = "dataset";
    else if (get_str(o, "eval_dataset", c->eval_dataset, sizeof c->eval_dataset))
        bad = "eval_dataset";
    else if (get_str(o, "template", c->template_, sizeof c->template_))
        bad = "template";
    else if (get_str(o, "labels", c->labels, sizeof c->labels))
        bad = "labels";
    else if (get_str(o, "trainable", c->trainable, sizeof c->trainable))
        bad = "trainable";
    else if (get_str(o, "objective", buf, sizeof buf) || pk_objective_parse(buf, &c->objective))
        bad = "objective";
    else if (get_str(o, "schedule", buf, sizeof buf) || pk_schedule_parse(buf, &c->mezo.schedule))
        bad = "schedule";
    else if (get_str(o, "z", buf, sizeof buf) ||
             (strcmp(buf, "gaussian") != 0 && strcmp(buf, "rademacher") != 0))
        bad = "z";
    if (bad == NULL) {
        c->mezo.z = !strcmp(buf, "rademacher") ? PK_Z_RADEMACHER : PK_Z_GAUSSIAN;
        char *end = NULL;
        if (get_str(o, "seed", buf, sizeof buf) ||
            (c->mezo.seed = strtoull(buf, &end, 10), end == buf || *end != 0))
            bad = "seed";
    }
    static const char *const nums[13] = {
        "eps",        "lr",         "weight_decay",    "clip_g",  "warmup",
        "spsa_q",     "accumulate", "batch",           "seq_len", "steps",
        "eval_every", "early_stop", "checkpoint_every"};
    for (int i = 0; bad == NULL && i < 13; i++)
        if (get_num(o, nums[i], &d[i]))
            bad = nums[i];
    if (bad == NULL)
        bad = estimator_from_json(o, &c->mezo);
    if (bad == NULL && get_lineage(o, c) != 0)
        bad = "parent_run";
    c->lr_guard = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "lr_guard"));
    cJSON_Delete(o);
    if (bad != NULL) {
        snprintf(err, errlen, "run config: missing or bad key '%s'", bad);
        return PK_ERR_FORMAT;
    }
    c->mezo.eps = (float)d[0];
    c->mezo.lr = (float)d[1];
    c->mezo.weight_decay = (float)d[2];
    c->mezo.clip_g = (float)d[3];
    c->mezo.warmup = (int64_t)d[4];
    c->mezo.spsa_q = (int)d[5];
    c->accumulate = (int)d[6];
    c->batch = (int)d[7];
    c->seq_len = (int)d[8];
    c->steps = (int64_t)d[9];
    c->eval_every = (int64_t)d[10];
    c->early_stop = (int)d[11];
    c->checkpoint_every = (int64_t)d[12];
    c->mezo.steps_total = c->steps;
    if (c->mezo.spsa_q < 1 || c->accumulate < 1 || c->batch < 1 || c->seq_len < 2 || c->steps < 0 ||
        !(c->mezo.eps > 0.0f)) {
        snprintf(err, errlen, "run config: values out of range");
        return PK_ERR_FORMAT;
    }
    return PK_OK;
}

pk_status pk_run_load_config(pk_store *s, int64_t run_id, pk_run_info *ri, pk_train_config *cfg,
                             char *err, size_t errlen)
{
    char serr[512] = ""; /* what the store says on failure */
    memset(ri, 0, sizeof *ri);
    pk_status st = pk_store_run_get(s, run_id, ri, serr, sizeof serr);
    if (st != PK_OK) {
        snprintf(err, errlen, "run %lld: %s", (long long)run_id,
                 st == PK_ERR_NOTFOUND ? "no such run (see pocketllm runs list)" : serr);
        return st;
    }
    return pk_train_config_from_json(ri->config_json, cfg, err, errlen);
}

/* Brings the base model m to step `target` of the run: the newest checkpoint at or before it,
 * then the logged steps after the checkpoint. */
static pk_status apply_log(pk_store *s, int64_t run_id, const pk_train_config *cfg, pk_model *m,
                           const uint8_t *mask, pk_mezo_state *est, int64_t target, char *err,
                           size_t errlen)
{
    char serr[512] = ""; /* what the store says on failure */
    void *blob = NULL;
    size_t blob_len = 0, n_rows = 0;
    pk_step_row *rows = NULL;
    int64_t from = 0, cstep = 0;
    pk_status st = pk_model_make_writable(m, mask); /* the checkpoint and log write every page */
    if (st != PK_OK) {
        snprintf(err, errlen, "%s: %s", cfg->model_dir, pk_status_str(st));
        return st;
    }
    /* a hizoo checkpoint carries its Hessian diagonal (est) */
    pk_status cs =
        pk_store_checkpoint_get(s, run_id, target, &cstep, &blob, &blob_len, serr, sizeof serr);
    if (cs == PK_OK) {
        st = pk_checkpoint_unpack_state(m, mask, est, blob, blob_len, serr, sizeof serr);
        if (st != PK_OK)
            snprintf(err, errlen, "run %lld: checkpoint at step %lld: %s", (long long)run_id,
                     (long long)cstep, serr);
        from = cstep;
        pk_store_blob_free(blob, blob_len);
    } else if (cs != PK_ERR_NOTFOUND) {
        st = cs;
        snprintf(err, errlen, "run %lld: checkpoint: %s", (long long)run_id, serr);
    }
    if (st != PK_OK)
        return st;
    st = pk_store_steps_read(s, run_id, from, target, &rows, &n_rows, serr, sizeof serr);
    if (st != PK_OK) {
        snprintf(err, errlen, "run %lld: step log: %s", (long long)run_id, serr);
        return st;
    }
    pk_mezo_replay_ex(m, mask, &cfg->mezo, est, rows, n_rows);
    free(rows);
    return PK_OK;
}

/* The base model of a run without a parent, checked against the run's base hash. */
static pk_status load_base(const pk_train_config *cfg, const pk_run_info *ri, pk_model **m,
                           char *err, size_t errlen)
{
    char hex[65];
    pk_status st = pk_model_load(cfg->model_dir, pk_model_default_params(), m, err, errlen);
    if (st == PK_OK)
        st = pk_weights_hash(*m, hex);
    if (st == PK_OK && strcmp(hex, ri->base_hash) != 0) {
        snprintf(err, errlen,
                 "%s: weights changed since run %lld started (hash %.16s..., run base %.16s...)",
                 cfg->model_dir, (long long)ri->id, hex, ri->base_hash);
        st = PK_ERR_ARG;
    }
    return st;
}

/* A chained run starts where its parent was after parent_steps steps (DESIGN 13): the parent's
 * own chain, base and log, replayed first; the parent's trainable spec may differ. */
static pk_status start_from_parent(pk_store *s, const pk_run_info *ri, pk_model **m, char *err,
                                   size_t errlen)
{
    int64_t applied = 0;
    pk_status st =
        pk_run_materialize_ex(s, ri->parent_run, ri->parent_steps, m, NULL, &applied, err, errlen);
    if (st == PK_OK && applied != ri->parent_steps) {
        snprintf(err, errlen, "run %lld starts at step %lld of run %lld, which has only %lld",
                 (long long)ri->id, (long long)ri->parent_steps, (long long)ri->parent_run,
                 (long long)applied);
        st = PK_ERR_FORMAT;
    }
    return st;
}

pk_status pk_run_materialize_ex(pk_store *s, int64_t run_id, int64_t up_to_step, pk_model **out,
                                uint8_t **trainable_out, int64_t *steps_applied, char *err,
                                size_t errlen)
{
    return pk_run_materialize_state(s, run_id, up_to_step, out, trainable_out, NULL, steps_applied,
                                    err, errlen);
}

pk_status pk_run_materialize_state(pk_store *s, int64_t run_id, int64_t up_to_step, pk_model **out,
                                   uint8_t **trainable_out, pk_mezo_state **state_out,
                                   int64_t *steps_applied, char *err, size_t errlen)
{
    pk_mezo_state *est = NULL;
    pk_run_info ri;
    pk_train_config cfg;
    pk_model *m = NULL;
    uint8_t *mask = NULL;
    memset(&ri, 0, sizeof ri);
    *out = NULL;
    if (trainable_out)
        *trainable_out = NULL;
    if (state_out)
        *state_out = NULL;
    pk_status st = pk_run_load_config(s, run_id, &ri, &cfg, err, errlen);
    if (st == PK_OK)
        st = ri.parent_run > 0 ? start_from_parent(s, &ri, &m, err, errlen)
                               : load_base(&cfg, &ri, &m, err, errlen);
    if (st != PK_OK)
        goto out;
    st = pk_mezo_trainable(m, cfg.trainable, &mask, err, errlen);
    if (st == PK_OK)
        st = pk_mezo_state_new(m, mask, &cfg.mezo, &est, err, errlen);
    if (st != PK_OK)
        goto out;
    int64_t target = ri.steps_done;
    if (up_to_step >= 0 && up_to_step < target)
        target = up_to_step;
    if (target > 0)
        st = apply_log(s, run_id, &cfg, m, mask, est, target, err, errlen);
    if (st != PK_OK)
        goto out;
    if (steps_applied)
        *steps_applied = target;
    *out = m;
    m = NULL;
    if (trainable_out) {
        *trainable_out = mask;
        mask = NULL;
    }
    if (state_out) {
        *state_out = est;
        est = NULL;
    }
out:
    pk_mezo_state_free(est);
    free(mask);
    pk_model_free(m);
    pk_run_info_clear(&ri);
    return st;
}

pk_status pk_run_materialize(pk_store *s, int64_t run_id, pk_model **out, char *err, size_t errlen)
{
    return pk_run_materialize_ex(s, run_id, -1, out, NULL, NULL, err, errlen);
}
