/* run.c: libpocketllm's training, eval, generation and sync (pocketllm.h). The trainer loop is
 * train/'s pk_trainer stepped here so a cancel request (pocketllm_cancel or the progress
 * callback) stops it at a step boundary; eval and generation use mezo/, model/ and tokenizer/;
 * sync is net/'s round. Nothing here prints. */
#include "api_impl.h"
#include "api_sync.h"

#include "pk_model.h"
#include "pk_net.h"
#include "pk_tokenizer.h"
#include "pk_train.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Copies s into a fixed field, refusing what does not fit. */
static int copy_field(char *dst, size_t n, const char *s)
{
    if (s == NULL) {
        dst[0] = '\0';
        return 0;
    }
    if (strlen(s) >= n)
        return -1;
    memcpy(dst, s, strlen(s) + 1);
    return 0;
}

/* ---- train
 * --------------------------------------------------------------------------------------- */

pocketllm_train_params pocketllm_train_default_params(void)
{
    pk_train_config c = pk_train_config_default();
    pocketllm_train_params p;
    memset(&p, 0, sizeof p);
    p.objective = POCKETLLM_OBJECTIVE_LM;
    p.steps = c.steps;
    p.batch = c.batch;
    p.seq_len = c.seq_len;
    p.accumulate = c.accumulate;
    p.lr = c.mezo.lr;
    p.eps = c.mezo.eps;
    p.schedule = pk_schedule_name(c.mezo.schedule);
    p.warmup = c.mezo.warmup;
    p.weight_decay = c.mezo.weight_decay;
    p.spsa_q = c.mezo.spsa_q;
    p.estimator = pk_estimator_name(c.mezo.estimator);
    p.perturbations = c.mezo.perturbations;
    p.fzoo_baseline = pk_fzoo_baseline_name(c.mezo.fzoo_mean);
    p.hessian_smooth = c.mezo.hessian_smooth;
    p.hessian_budget = c.mezo.hessian_budget;
    p.hessian_every = c.mezo.hessian_every;
    p.perturb_layers = c.mezo.perturb_layers;
    p.perturb_stages = c.mezo.perturb_stages;
    p.clip_g = c.mezo.clip_g;
    p.trainable = "all";
    p.seed = c.mezo.seed;
    p.z = "gaussian";
    p.eval_every = c.eval_every;
    p.early_stop = c.early_stop;
    p.checkpoint_every = c.checkpoint_every;
    return p;
}

/* The enumerations given as names. */
static pk_status train_enums(pocketllm_home *h, const pocketllm_train_params *p, pk_train_config *c)
{
    if (p->schedule && pk_schedule_parse(p->schedule, &c->mezo.schedule) != 0)
        return (pk_status)api_fail(h, PK_ERR_ARG, "schedule '%s': want constant, linear or cosine",
                                   p->schedule);
    if (p->estimator && pk_estimator_parse(p->estimator, &c->mezo.estimator) != 0)
        return (pk_status)api_fail(h, PK_ERR_ARG, "estimator '%s': want spsa, fzoo or hizoo",
                                   p->estimator);
    if (p->fzoo_baseline && pk_fzoo_baseline_parse(p->fzoo_baseline, &c->mezo.fzoo_mean) != 0)
        return (pk_status)api_fail(h, PK_ERR_ARG, "fzoo_baseline '%s': want unperturbed or mean",
                                   p->fzoo_baseline);
    if (p->perturb_stages < 0 || p->perturb_layers < 0 ||
        (p->perturb_stages > 0 && p->perturb_layers > 0))
        return (pk_status)api_fail(h, PK_ERR_ARG,
                                   "perturb_stages %d, perturb_layers %d: one of them at most",
                                   p->perturb_stages, p->perturb_layers);
    if (p->z && strcmp(p->z, "gaussian") != 0 && strcmp(p->z, "rademacher") != 0)
        return (pk_status)api_fail(h, PK_ERR_ARG, "z '%s': want gaussian or rademacher", p->z);
    c->mezo.z = p->z && !strcmp(p->z, "rademacher") ? PK_Z_RADEMACHER : PK_Z_GAUSSIAN;
    if ((int)p->objective < 0 || p->objective > POCKETLLM_OBJECTIVE_ACCURACY)
        return (pk_status)api_fail(h, PK_ERR_ARG, "unknown objective %d", (int)p->objective);
    c->objective = (pk_objective_kind)p->objective;
    return PK_OK;
}

/* The run settings of a new run from p; the trainer checks the ranges. */
static pk_status train_config(pocketllm_home *h, const pocketllm_train_params *p,
                              pk_train_config *c)
{
    *c = pk_train_config_default();
    if (p->model_dir && p->parent_run > 0)
        return (pk_status)api_fail(h, PK_ERR_ARG,
                                   "a run from a parent run uses the parent's base model: give "
                                   "no model_dir");
    if (!p->dataset || !*p->dataset || (!p->model_dir && p->parent_run <= 0))
        return (pk_status)api_fail(h, PK_ERR_ARG,
                                   "a new run needs a dataset and a model_dir (or a parent_run)");
    if (p->model_dir && realpath(p->model_dir, c->model_dir) == NULL)
        return (pk_status)api_fail(h, PK_ERR_NOTFOUND, "model %s: no such directory", p->model_dir);
    if (copy_field(c->dataset, sizeof c->dataset, p->dataset) ||
        copy_field(c->datasets, sizeof c->datasets, p->datasets) ||
        copy_field(c->eval_dataset, sizeof c->eval_dataset, p->eval_dataset) ||
        copy_field(c->trainable, sizeof c->trainable, p->trainable ? p->trainable : "all") ||
        copy_field(c->template_, sizeof c->template_, p->template_text) ||
        copy_field(c->labels, sizeof c->labels, p->labels))
        return (pk_status)api_fail(h, PK_ERR_ARG, "a name, template or label list is too long");
    pk_status st = train_enums(h, p, c);
    if (st != PK_OK)
        return st;
    c->steps = p->steps;
    c->batch = p->batch;
    c->seq_len = p->seq_len;
    c->accumulate = p->accumulate;
    c->mezo.lr = p->lr;
    c->lr_auto = p->lr_auto != 0;
    /* the guard: with the searched rate unless turned off, with a given one when turned on */
    if (p->lr_guard < 0 || p->lr_guard > 2)
        return (pk_status)api_fail(h, PK_ERR_ARG, "lr_guard %d: want 0 (default), 1 or 2",
                                   p->lr_guard);
    c->lr_guard = pk_lr_guard_on(p->lr_guard, c->lr_auto);
    c->mezo.eps = p->eps;
    c->mezo.warmup = p->warmup;
    c->mezo.weight_decay = p->weight_decay;
    c->mezo.spsa_q = p->spsa_q;
    c->mezo.perturbations = p->perturbations;
    c->mezo.hessian_smooth = p->hessian_smooth;
    c->mezo.hessian_budget = p->hessian_budget;
    c->mezo.hessian_every = p->hessian_every < 1 ? 1 : p->hessian_every;
    c->mezo.perturb_layers = p->perturb_layers;
    c->mezo.perturb_stages = p->perturb_stages;
    c->mezo.clip_g = p->clip_g;
    c->mezo.seed = p->seed;
    c->mezo.steps_total = p->steps;
    c->eval_every = p->eval_every;
    c->early_stop = p->early_stop;
    c->checkpoint_every = p->checkpoint_every;
    c->parent_run = p->parent_run;
    c->holdout = p->holdout;
    return PK_OK;
}

/* What the trainer's hooks saw during one pk_trainer_step: reported after it returns, so the
 * progress callback sees the step and the eval that fell due at it together. */
typedef struct train_ctx {
    const pocketllm_train_params *p;
    pocketllm_step_info info;
    int stepped;
    pocketllm_home *h; /* its cancel flag, polled by lr_auto's search */
} train_ctx;

static void hook_start(void *user, int64_t run_id, int64_t first_step)
{
    train_ctx *c = user;
    c->info.run_id = run_id;
    if (c->p->on_start)
        c->p->on_start(c->p->user, run_id, first_step);
}

static void hook_step(void *user, int64_t step, int64_t total, const pk_step_row *rows, int q)
{
    train_ctx *c = user;
    c->stepped = q > 0;
    c->info.step = step;
    c->info.total = total;
    if (q > 0) {
        c->info.loss_plus = (double)rows[0].loss_plus;
        c->info.loss_minus = (double)rows[0].loss_minus;
        c->info.g = (double)rows[0].g;
        c->info.lr = (double)rows[0].lr;
    }
}

static void hook_lr_cut(void *user, int64_t step, float lr, double loss, double lowest)
{
    train_ctx *c = user;
    (void)step; /* the step just logged, which hook_step saw */
    c->info.lr_cut = 1;
    c->info.lr_next = (double)lr;
    c->info.cut_loss = loss;
    c->info.cut_lowest = lowest;
}

/* pocketllm_cancel during lr_auto's search (which runs before the run exists, inside the
 * trainer's open): polled before each of its steps */
static int hook_stop(void *user)
{
    const train_ctx *c = user;
    return atomic_load(&c->h->cancel) != 0;
}

static void hook_eval(void *user, int64_t step, double loss, double acc)
{
    train_ctx *c = user;
    (void)step;
    c->info.has_eval = 1;
    c->info.eval_loss = loss;
    c->info.eval_acc = acc;
}

static void fill_result(pocketllm_train_result *r, const pk_train_result *t, float lr)
{
    memset(r, 0, sizeof *r);
    r->run_id = t->run_id;
    r->steps_done = t->steps_done;
    r->stopped_early = t->stopped_early;
    r->cancelled = t->interrupted;
    r->last_loss = t->last_loss;
    r->forward_s = t->forward_s;
    r->update_s = t->update_s;
    r->evaluations = t->evaluations;
    r->elapsed_s = t->elapsed_s;
    memcpy(r->weights_hash, t->final_hash, sizeof r->weights_hash);
    r->lr = t->lr_search.n > 0 ? t->lr_search.chosen : lr;
    r->lr_cuts = t->lr_cuts;
}

_Static_assert(POCKETLLM_LR_CANDIDATES == PK_LR_CANDIDATES, "lr search size");

/* The lr_auto search the trainer ran when it opened a new run, to the callback. */
static void report_lr_search(const pocketllm_train_params *p, const pk_lr_search *r)
{
    if (r->n == 0 || p->on_lr_search == NULL)
        return;
    pocketllm_lr_search out;
    memset(&out, 0, sizeof out);
    out.n = r->n;
    out.steps_each = r->steps_each;
    out.held_examples = r->held_examples;
    for (int i = 0; i < r->n && i < POCKETLLM_LR_CANDIDATES; i++) {
        out.lr[i] = r->lr[i];
        out.loss[i] = r->loss[i];
    }
    out.start_loss = r->start_loss;
    out.chosen = r->chosen;
    p->on_lr_search(p->user, &out);
}

/* Steps t until done, stopping at a step boundary when a cancel was asked for. */
static pk_status train_loop(pocketllm_home *h, pk_trainer *t, train_ctx *ctx)
{
    pk_status st = PK_OK;
    while (st == PK_OK && !pk_trainer_done(t)) {
        if (atomic_load(&h->cancel)) {
            st = pk_trainer_stop(t, h->err, sizeof h->err);
            break;
        }
        ctx->stepped = 0;
        ctx->info.has_eval = 0;
        ctx->info.lr_cut = 0;
        ctx->info.eval_loss = ctx->info.eval_acc = (double)NAN;
        st = pk_trainer_step(t, h->err, sizeof h->err);
        ctx->info.evaluations = pk_trainer_result(t)->evaluations;
        ctx->info.elapsed_s = pk_trainer_result(t)->elapsed_s;
        if (st == PK_OK && ctx->stepped && ctx->p->progress &&
            ctx->p->progress(ctx->p->user, &ctx->info) != 0)
            atomic_store(&h->cancel, 1);
    }
    return st;
}

pocketllm_status pocketllm_train(pocketllm_home *h, const pocketllm_train_params *params,
                                 pocketllm_train_result *result)
{
    pocketllm_status rc = api_check(h);
    if (result) {
        memset(result, 0, sizeof *result);
        result->last_loss = (double)NAN;
    }
    if (rc != POCKETLLM_OK)
        return rc;
    if (params == NULL)
        return api_fail(h, PK_ERR_ARG, "no training parameters");
    atomic_store(&h->cancel, 0);
    pk_train_config cfg;
    pk_status st = PK_OK;
    if (params->resume_run <= 0)
        st = train_config(h, params, &cfg);
    if (st != PK_OK)
        return (pocketllm_status)st;
    train_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.p = params;
    ctx.h = h;
    pk_train_hooks hooks = {&ctx, hook_step, hook_eval, hook_start, hook_lr_cut, hook_stop};
    pk_trainer *t = NULL;
    st = pk_trainer_open(h->s, params->resume_run > 0 ? NULL : &cfg,
                         params->resume_run > 0 ? params->resume_run : 0, &hooks, &t, h->err,
                         sizeof h->err);
    if (st == PK_OK) {
        report_lr_search(params, &pk_trainer_result(t)->lr_search);
        st = train_loop(h, t, &ctx);
    }
    if (t != NULL && result)
        fill_result(result, pk_trainer_result(t), params->lr);
    int cancelled = t != NULL && pk_trainer_result(t)->interrupted;
    pk_trainer_free(t);
    atomic_store(&h->cancel, 0);
    if (st == PK_OK && cancelled) {
        api_fail(h, PK_ERR_INTERRUPTED, "run %lld cancelled after %lld steps: resume it",
                 (long long)(result ? result->run_id : 0),
                 (long long)(result ? result->steps_done : 0));
        return POCKETLLM_ERR_CANCELLED;
    }
    return api_done(h, st);
}

/* ---- eval
 * ------------------------------------------------------------------------------------------ */

pocketllm_eval_params pocketllm_eval_default_params(void)
{
    pocketllm_eval_params p;
    memset(&p, 0, sizeof p);
    p.objective = -1;
    return p;
}

/* The settings to evaluate with: the run's (or the defaults), then what p gives over them. */
static pk_status eval_config(pocketllm_home *h, const pocketllm_eval_params *p, pk_train_config *c,
                             pk_model **m)
{
    pk_status st = PK_OK;
    *c = pk_train_config_default();
    if (p->run_id > 0) {
        pk_run_info ri;
        st = pk_run_load_config(h->s, p->run_id, &ri, c, h->err, sizeof h->err);
        pk_run_info_clear(&ri);
    } else if (realpath(p->model_dir, c->model_dir) == NULL) {
        return (pk_status)api_fail(h, PK_ERR_NOTFOUND, "model %s: no such directory", p->model_dir);
    }
    if (st != PK_OK)
        return st;
    if (p->objective >= 0 && p->objective <= POCKETLLM_OBJECTIVE_ACCURACY)
        c->objective = (pk_objective_kind)p->objective;
    else if (p->objective != -1)
        return (pk_status)api_fail(h, PK_ERR_ARG, "unknown objective %d", p->objective);
    if ((p->template_text && copy_field(c->template_, sizeof c->template_, p->template_text)) ||
        (p->labels && copy_field(c->labels, sizeof c->labels, p->labels)))
        return (pk_status)api_fail(h, PK_ERR_ARG, "template or label list too long");
    if (p->batch > 0)
        c->batch = p->batch;
    if (p->seq_len > 0)
        c->seq_len = p->seq_len;
    if (p->run_id > 0)
        return pk_run_materialize(h->s, p->run_id, m, h->err, sizeof h->err);
    return pk_model_load(c->model_dir, pk_model_default_params(), m, h->err, sizeof h->err);
}

pocketllm_status pocketllm_eval(pocketllm_home *h, const pocketllm_eval_params *params,
                                pocketllm_eval_result *result)
{
    pocketllm_status rc = api_check(h);
    if (rc != POCKETLLM_OK)
        return rc;
    if (params == NULL || result == NULL || !params->dataset ||
        (params->run_id > 0) == (params->model_dir != NULL))
        return api_fail(h, PK_ERR_ARG, "eval needs a dataset and one of model_dir / run_id");
    memset(result, 0, sizeof *result);
    pk_train_config cfg;
    pk_model *m = NULL;
    pk_objective *obj = NULL;
    pk_status st = eval_config(h, params, &cfg, &m);
    if (st == PK_OK)
        st = pk_objective_from_store(h->s, params->dataset, m, cfg.model_dir, &cfg, &obj, h->err,
                                     sizeof h->err);
    if (st == PK_OK) {
        st = pk_objective_eval(obj, m, (size_t)cfg.batch, &result->loss, &result->accuracy);
        if (st != PK_OK)
            api_fail(h, st, "evaluating: %s", pk_status_str(st));
    }
    if (st == PK_OK) {
        result->examples = (int64_t)pk_objective_size(obj);
        result->objective = (int)cfg.objective;
    }
    pk_objective_free(obj);
    pk_model_free(m);
    return api_done(h, st);
}

/* ---- generate ----------------------------------------------------------------------------------
 */

pocketllm_generate_params pocketllm_generate_default_params(void)
{
    pocketllm_generate_params p;
    memset(&p, 0, sizeof p);
    p.prompt = "";
    p.max_new = 32;
    p.top_p = 1.0f;
    return p;
}

/* What a generation holds; every pointer owned (gen_free). */
typedef struct gen_state {
    pk_model *m;
    pk_tokenizer *tok; /* NULL: the model directory has no tokenizer files (ids only) */
    pk_tokenizer_stream *ts;
    pk_gen *g;
    pk_sampler *smp;
    int32_t *ids;  /* [n + max_new] the prompt (n ids), then the generated ones (up to n_all) */
    float *logits; /* [vocab] */
    size_t n, n_all;
    char *out; /* caller's buffer */
    size_t cap, used;
} gen_state;

static void gen_free(gen_state *s)
{
    free(s->logits);
    free(s->ids);
    pk_tokenizer_stream_free(s->ts);
    pk_sampler_free(s->smp);
    pk_gen_free(s->g);
    pk_tokenizer_free(s->tok);
    pk_model_free(s->m);
}

/* The model (a run's weights or a directory) and its tokenizer, if the directory has one. */
static pk_status gen_load(pocketllm_home *h, const pocketllm_generate_params *p, gen_state *s)
{
    char dir[1024];
    pk_status st;
    if (p->run_id > 0) {
        pk_train_config cfg;
        pk_run_info ri;
        st = pk_run_load_config(h->s, p->run_id, &ri, &cfg, h->err, sizeof h->err);
        pk_run_info_clear(&ri);
        if (st == PK_OK)
            st = pk_run_materialize(h->s, p->run_id, &s->m, h->err, sizeof h->err);
        if (st == PK_OK)
            snprintf(dir, sizeof dir, "%s", cfg.model_dir);
    } else {
        snprintf(dir, sizeof dir, "%s", p->model_dir);
        st = pk_model_load(dir, pk_model_default_params(), &s->m, h->err, sizeof h->err);
    }
    if (st == PK_OK)
        st = pk_tokenizer_load(dir, &s->tok, h->err, sizeof h->err);
    if (st == PK_ERR_NOTFOUND && s->m != NULL) { /* no tokenizer files: a prompt of ids only */
        h->err[0] = '\0';
        st = PK_OK;
    }
    return st;
}

/* The text prompt's ids into *ids (owned result, *n of them): BOS alone for an empty prompt. */
static pk_status gen_encode(pocketllm_home *h, const char *prompt, gen_state *s, int32_t **ids,
                            size_t *n)
{
    if (s->tok == NULL)
        return (pk_status)api_fail(h, PK_ERR_ARG,
                                   "the model directory has no tokenizer files: a text prompt "
                                   "needs them (give the prompt as token ids)");
    pk_status st = pk_tokenizer_encode(s->tok, prompt, strlen(prompt), 1, ids, n);
    if (st != PK_OK)
        return (pk_status)api_fail(h, st, "cannot tokenize the prompt");
    if (*n > 0)
        return PK_OK;
    free(*ids);
    *ids = malloc(sizeof **ids);
    if (*ids == NULL)
        return PK_ERR_NOMEM;
    if (pk_model_bos_id(s->m) < 0)
        return (pk_status)api_fail(h, PK_ERR_ARG, "empty prompt and the model has no BOS token");
    (*ids)[0] = pk_model_bos_id(s->m);
    *n = 1;
    return PK_OK;
}

/* s->ids: the prompt (prompt_ids, else the text encoded), checked against the vocabulary and
 * the positions, with room for max_new more. */
static pk_status gen_prompt(pocketllm_home *h, const pocketllm_generate_params *p, gen_state *s)
{
    int32_t *enc = NULL;
    const int32_t *src = p->prompt_ids;
    size_t n = p->n_prompt_ids;
    pk_status st = PK_OK;
    if (src == NULL)
        st = gen_encode(h, p->prompt, s, &enc, &n);
    if (st != PK_OK)
        goto out;
    if (src == NULL)
        src = enc;
    int V = pk_model_vocab_size(s->m), maxp = pk_model_max_positions(s->m);
    for (size_t i = 0; i < n; i++) {
        if (src[i] < 0 || src[i] >= V) {
            st = (pk_status)api_fail(
                h, PK_ERR_ARG, "prompt id %d is outside the vocabulary (size %d)", (int)src[i], V);
            goto out;
        }
    }
    if ((long long)n + p->max_new > maxp) {
        st = (pk_status)api_fail(h, PK_ERR_ARG,
                                 "prompt (%zu) + max_new (%d) exceeds the model's %d positions", n,
                                 p->max_new, maxp);
        goto out;
    }
    s->ids = malloc((n + (size_t)p->max_new) * sizeof *s->ids);
    if (s->ids == NULL) {
        st = PK_ERR_NOMEM;
        goto out;
    }
    memcpy(s->ids, src, n * sizeof *s->ids);
    s->n = s->n_all = n;
out:
    free(enc);
    return st;
}

/* The prompt, the KV cache, the sampler, the text stream (with a tokenizer). */
static pk_status gen_start(pocketllm_home *h, const pocketllm_generate_params *p, gen_state *s)
{
    pk_status st = gen_prompt(h, p, s);
    if (st != PK_OK)
        return st;
    pk_sampler_params sp = {p->temperature, p->top_k, p->top_p, p->seed};
    st = pk_gen_create(s->m, (int)s->n + p->max_new, &s->g);
    if (st == PK_OK)
        st = pk_sampler_create(sp, pk_model_vocab_size(s->m), &s->smp);
    if (st == PK_OK && s->tok)
        st = pk_tokenizer_stream_new(s->tok, 1, &s->ts);
    s->logits = malloc((size_t)pk_model_vocab_size(s->m) * sizeof *s->logits);
    if (st == PK_OK && s->logits == NULL)
        st = PK_ERR_NOMEM;
    return st;
}

/* Appends bytes to the caller's buffer, cut at cap - 1 (always NUL-terminated). */
static void gen_append(gen_state *s, const char *bytes, size_t len)
{
    if (s->cap == 0)
        return;
    size_t room = s->cap - 1 - s->used;
    size_t k = len < room ? len : room;
    memcpy(s->out + s->used, bytes, k);
    s->used += k;
    s->out[s->used] = '\0';
}

/* Token t's text (none without a tokenizer) to the buffer and the callback; *stop when the
 * callback asks. An id the tokenizer does not know (a padded vocabulary) gives no text. */
static pk_status gen_emit(const pocketllm_generate_params *p, gen_state *s, int32_t t, int *stop)
{
    const char *bytes = NULL;
    size_t bl = 0;
    if (s->ts) {
        pk_status st = pk_tokenizer_stream_push(s->ts, t, &bytes, &bl);
        if (st != PK_OK && st != PK_ERR_ARG)
            return st;
        if (st != PK_OK || bytes == NULL) {
            bytes = "";
            bl = 0;
        }
        gen_append(s, bytes, bl);
    }
    if (p->on_token && p->on_token(p->user, t, bytes, bl) != 0)
        *stop = 1;
    return PK_OK;
}

/* The whole sequence to on_sequence: its ids and, with a tokenizer, its text. */
static pk_status gen_sequence(const pocketllm_generate_params *p, const gen_state *s)
{
    char *text = NULL;
    size_t tl = 0;
    pk_status st = PK_OK;
    if (s->tok)
        st = pk_tokenizer_decode(s->tok, s->ids, s->n_all, 1, &text, &tl);
    if (st == PK_ERR_ARG) /* an id the tokenizer does not know: no text */
        st = PK_OK;
    if (st == PK_OK)
        p->on_sequence(p->user, s->ids, s->n_all, text, text ? tl : 0);
    free(text);
    return st;
}

static pk_status gen_loop(const pocketllm_generate_params *p, gen_state *s, int *n_tokens)
{
    int eos = pk_model_eos_id(s->m), stop = 0;
    pk_status st = pk_gen_feed(s->g, s->ids, (int)s->n, NULL, s->logits);
    for (int i = 0; st == PK_OK && i < p->max_new; i++) {
        int32_t t = pk_sampler_sample(s->smp, s->logits);
        s->ids[s->n_all++] = t;
        *n_tokens = i + 1;
        st = gen_emit(p, s, t, &stop);
        if (st != PK_OK || stop || (t == eos && !p->ignore_eos))
            break;
        if (i + 1 < p->max_new)
            st = pk_gen_feed(s->g, &t, 1, NULL, s->logits);
    }
    const char *bytes = NULL;
    size_t bl = 0;
    if (st == PK_OK && s->ts && pk_tokenizer_stream_flush(s->ts, &bytes, &bl) == PK_OK && bl) {
        gen_append(s, bytes, bl);
        if (p->on_token)
            (void)p->on_token(p->user, -1, bytes, bl);
    }
    if (st == PK_OK && p->on_sequence)
        st = gen_sequence(p, s);
    return st;
}

pocketllm_status pocketllm_generate(pocketllm_home *h, const pocketllm_generate_params *params,
                                    char *out, size_t cap, int *n_tokens)
{
    int nt = 0;
    if (n_tokens)
        *n_tokens = 0;
    if (h == NULL)
        return POCKETLLM_ERR_ARG;
    api_init();
    h->err[0] = '\0';
    if (params == NULL || (params->run_id > 0) == (params->model_dir != NULL) ||
        (params->prompt == NULL && params->prompt_ids == NULL) || params->max_new < 0 ||
        (out == NULL && cap > 0))
        return api_fail(h, PK_ERR_ARG,
                        "generate needs a prompt, max_new >= 0 and one of model_dir / run_id");
    if (params->prompt_ids != NULL && params->n_prompt_ids == 0)
        return api_fail(h, PK_ERR_ARG, "prompt_ids holds no id (n_prompt_ids is 0)");
    if (params->run_id > 0 && h->s == NULL)
        return api_check(h);
    if (cap > 0)
        out[0] = '\0';
    gen_state s;
    memset(&s, 0, sizeof s);
    s.out = out;
    s.cap = cap;
    pk_status st = gen_load(h, params, &s);
    if (st == PK_OK)
        st = gen_start(h, params, &s);
    if (st == PK_OK) {
        st = gen_loop(params, &s, &nt);
        if (st == PK_ERR_NUMERIC)
            api_fail(h, st, "generation failed: the logits are not finite (non-finite weights?)");
    }
    gen_free(&s);
    if (n_tokens)
        *n_tokens = nt;
    return api_done(h, st);
}

/* ---- sync
 * ---------------------------------------------------------------------------------------- */

pocketllm_sync_params pocketllm_sync_default_params(void)
{
    pk_sync_params d = pk_sync_default_params();
    pocketllm_sync_params p;
    memset(&p, 0, sizeof p);
    p.batch = 8;
    p.seq_len = 64;
    p.dp_delta = d.dp_delta;
    p.wait_s = d.wait_s;
    return p;
}

static pthread_once_t http_once = PTHREAD_ONCE_INIT;
static pk_status http_status = PK_OK;

static void http_init_fn(void)
{
    http_status = pk_http_global_init();
}

void pk_api_sync_result(pocketllm_sync_result *r, const pk_sync_report *s)
{
    memset(r, 0, sizeof *r);
    memcpy(r->device_id, s->device_id, sizeof r->device_id);
    memcpy(r->task_id, s->task_id, sizeof r->task_id);
    r->round = s->round;
    r->uploaded = s->uploaded;
    r->flushed = s->flushed;
    r->steps = s->steps;
    r->pairs = s->pairs;
    r->examples = s->examples;
    r->round_closed = s->round_closed;
    r->log_version = s->log_version;
    memcpy(r->log_head, s->log_head, sizeof r->log_head);
    memcpy(r->model_hash, s->model_hash, sizeof r->model_hash);
    r->dp = s->dp;
    r->epsilon = s->epsilon;
    r->delta = s->delta;
    r->upload_body_bytes = s->upload_body_bytes;
    r->bytes_up = s->http.wire_up;
    r->bytes_down = s->http.wire_down;
    r->body_bytes_up = s->http.body_up;
    r->body_bytes_down = s->http.body_down;
    r->requests = s->http.requests;
    r->attempts = s->http.attempts;
}

pocketllm_status pocketllm_sync(pocketllm_home *h, const pocketllm_sync_params *params,
                                pocketllm_sync_result *result)
{
    pocketllm_status rc = api_check(h);
    if (rc != POCKETLLM_OK)
        return rc;
    if (params == NULL || !params->server || !params->model_dir ||
        (!params->catch_up && !params->dataset && !params->datasets))
        return api_fail(h, PK_ERR_ARG,
                        "sync needs a server, a model_dir and a dataset or datasets (or "
                        "catch_up)");
    if (params->dataset && params->datasets)
        return api_fail(h, PK_ERR_ARG, "sync takes dataset or datasets, not both");
    (void)pthread_once(&http_once, http_init_fn);
    if (http_status != PK_OK)
        return api_fail(h, http_status, "%s", pk_http_global_errmsg());
    pk_sync_params p = pk_sync_default_params();
    p.server = params->server;
    p.task_id = params->task_id;
    p.dp_clip = params->dp_clip;
    p.dp_noise = params->dp_noise;
    p.dp_delta = params->dp_delta;
    p.wait_s = params->wait_s;
    p.upload = !params->catch_up;
    if (params->timeout_s > 0)
        p.http.timeout_ms = (long)(params->timeout_s * 1000.0);
    pk_sync_mezo *mz = NULL;
    pk_sync_report rep;
    memset(&rep, 0, sizeof rep);
    const char *one = params->datasets ? params->datasets : params->dataset;
    pk_status st = pk_sync_mezo_open(h->s, params->model_dir, p.upload ? one : NULL,
                                     p.upload ? params->datasets : NULL,
                                     params->trainable ? params->trainable : "all", params->batch,
                                     params->seq_len, &mz, h->err, sizeof h->err);
    if (st == PK_OK) {
        pk_sync_model_ops ops = pk_sync_mezo_ops(mz);
        st = pk_sync_round(h->s, &p, &ops, &rep, h->err, sizeof h->err);
    }
    if (st == PK_OK && result)
        pk_api_sync_result(result, &rep);
    if (st == PK_OK && params->out_dir) {
        char e[512] = "";
        st = pk_model_save(pk_sync_mezo_model(mz), params->out_dir, PK_DTYPE_F32, e, sizeof e);
        if (st != PK_OK)
            api_fail(h, st, "writing the global model to %s: %s", params->out_dir,
                     e[0] ? e : pk_status_str(st));
    }
    pk_sync_mezo_free(mz);
    return api_done(h, st);
}
