/* baseline.c: the centralized baseline of `pocketllm fedsim --baseline` (docs/FEDSIM.md section
 * 1.8): one MeZO run (pk_trainer, the trainer of `pocketllm train`) on the union of the devices'
 * examples with the loss evaluations all devices took together, evaluated once per round's worth.
 * With --baseline-lr auto the rate comes from train --lr auto's search (10 steps per candidate),
 * which can pick a rate that diverges later in a run of hundreds of steps; the baseline then
 * watches its own training loss, and when a window of steps (10, and 32 examples at least)
 * averages more than twice the lowest it has seen (or a loss is not finite) it stops, logs it and
 * starts over at a third of the rate with what the budget has left (the evaluations spent count as
 * spent). */
#include "fedsim_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DIVERGE_FACTOR  2.0 /* a window's mean training loss above this x the lowest: diverged */
#define WINDOW_STEPS    10  /* steps per window at least (the search's horizon) ... */
#define WINDOW_EXAMPLES 32  /* ... and examples at least, so a window's mean is not one batch's */

typedef struct base_pt {
    int64_t step;
    double loss, acc;
} base_pt;

typedef struct base_ctx {
    fs_sim *x;
    double offset;    /* evaluations spent before this attempt's first step */
    double per_step;  /* evaluations of one baseline step */
    double per_round; /* evaluations of one federated round */
    /* the divergence watch (auto only) */
    int watch;
    int64_t window;      /* steps per window */
    double sum;          /* training losses of the current window */
    int64_t count;       /* steps in it */
    double start;        /* the search's held-back loss before any step (INFINITY: none) */
    double lowest;       /* lowest window mean of this attempt so far, at most start */
    int diverged;        /* set by on_step */
    double window_mean;  /* the window that diverged */
    int64_t diverged_at; /* its last step (0-based) */
    /* this attempt's evals, handed on once it finishes without diverging */
    base_pt *pts;
    size_t n_pts, cap_pts;
} base_ctx;

static void emit(base_ctx *b, int64_t step, double loss, double acc)
{
    fs_sim *x = b->x;
    x->sum->baseline_loss = loss;
    x->sum->baseline_accuracy = acc;
    if (x->h && x->h->on_baseline)
        x->h->on_baseline(x->h->user, step,
                          step == 0 ? 0.0 : (b->offset + (double)step * b->per_step) / b->per_round,
                          loss, acc);
}

static void on_base_eval(void *user, int64_t step, double loss, double acc)
{
    base_ctx *b = user;
    base_pt *p = pk_grow(b->pts, &b->cap_pts, b->n_pts + 1, sizeof *p, 64);
    if (!p)
        return; /* the point is lost from the curve; the run goes on */
    b->pts = p;
    b->pts[b->n_pts++] = (base_pt){step, loss, acc};
}

/* The training loss of each step (the mean of its rows' two losses) into windows of b->window
 * steps; a window whose mean is not finite or above DIVERGE_FACTOR x the lowest so far
 * marks the attempt diverged. */
static void on_base_step(void *user, int64_t step, int64_t total, const pk_step_row *rows, int q)
{
    base_ctx *b = user;
    (void)total;
    if (!b->watch || b->diverged || q < 1)
        return;
    double l = 0;
    for (int i = 0; i < q; i++)
        l += 0.5 * ((double)rows[i].loss_plus + (double)rows[i].loss_minus);
    b->sum += l / q;
    if (++b->count < b->window)
        return;
    double mean = b->sum / (double)b->count;
    b->sum = 0;
    b->count = 0;
    if (!isfinite(mean) || (isfinite(b->lowest) && mean > DIVERGE_FACTOR * b->lowest)) {
        b->diverged = 1;
        b->window_mean = mean;
        b->diverged_at = step;
    } else if (!isfinite(b->lowest) || mean < b->lowest) {
        b->lowest = mean;
    }
}

/* Loss evaluations (forward passes over one batch) of the rate search of `train --lr auto` on
 * n examples (lrsearch.c): every candidate's steps and its held-back loss, plus the held-back
 * loss before any step. An upper bound: it assumes all PK_LR_CANDIDATES rates are tried. */
static int64_t search_evaluations(const pk_train_config *cfg, int64_t n)
{
    int64_t held = n / 8 < 1 ? 1 : n / 8 > 64 ? 64 : n / 8;
    int64_t held_passes = (held + cfg->batch - 1) / cfg->batch;
    int64_t per_step = (int64_t)pk_mezo_evals_per_step(&cfg->mezo) * cfg->accumulate;
    return PK_LR_CANDIDATES * (PK_LR_SEARCH_STEPS * per_step + held_passes) + held_passes;
}

/* The baseline's settings: the union, the task's eps, its own rate (given, searched or the
 * task's) and as many steps as the devices' loss evaluations pay for, after the search. */
static pk_status baseline_config(fs_sim *x, pk_train_config *cfg, base_ctx *b)
{
    const pk_fedsim_params *p = x->p;
    pk_fedsim_summary *s = x->sum;
    *cfg = p->cfg;
    snprintf(cfg->model_dir, sizeof cfg->model_dir, "%s", x->model_abs);
    snprintf(cfg->dataset, sizeof cfg->dataset, "union");
    snprintf(cfg->eval_dataset, sizeof cfg->eval_dataset, "eval");
    cfg->checkpoint_every = 0;
    cfg->accumulate = 1;
    cfg->mezo.eps = x->eps;
    cfg->mezo.seed = p->seed;
    cfg->mezo.lr = p->baseline_lr > 0.0f ? p->baseline_lr : x->lr;
    cfg->lr_auto = p->baseline_lr_auto;
    int64_t per_step = pk_mezo_evals_per_step(&cfg->mezo);
    int64_t search = cfg->lr_auto ? search_evaluations(cfg, s->examples) : 0;
    cfg->steps = (s->device_evaluations - search) / per_step;
    if (cfg->steps < 1) {
        pk_seterr(x->err, x->errlen,
                  "the baseline's learning-rate search alone takes %lld loss evaluations, the "
                  "devices took %lld in all: run more rounds or local steps, or give the "
                  "baseline a rate",
                  (long long)search, (long long)s->device_evaluations);
        return PK_ERR_ARG;
    }
    cfg->mezo.steps_total = cfg->steps;
    b->x = x;
    b->offset = (double)search;
    b->per_step = (double)per_step;
    b->per_round = (double)(s->device_evaluations / (s->rounds_done > 0 ? s->rounds_done : 1));
    /* one eval per round's worth of evaluations */
    cfg->eval_every =
        (int64_t)(b->per_round / b->per_step) > 0 ? (int64_t)(b->per_round / b->per_step) : 1;
    b->watch = cfg->lr_auto;
    int64_t w = (WINDOW_EXAMPLES + cfg->batch - 1) / cfg->batch;
    b->window = w > WINDOW_STEPS ? w : WINDOW_STEPS;
    s->baseline_search_evaluations = search;
    s->baseline_evaluations = search + cfg->steps * per_step;
    s->baseline_steps = cfg->steps;
    return PK_OK;
}

/* One attempt at cfg's rate: steps until done or (watching) diverged. *steps gets the steps it
 * took. A diverged attempt is stopped (PK_OK, b->diverged set); PK_ERR_NUMERIC from a step counts
 * as diverged when watching, else it is the run's error. */
static pk_status attempt(fs_sim *x, const pk_train_config *cfg, base_ctx *b, int64_t *steps,
                         pk_train_result *res)
{
    pk_train_hooks hk = {b, on_base_step, on_base_eval, NULL, NULL, NULL};
    pk_trainer *t = NULL;
    b->sum = 0;
    b->count = 0;
    b->diverged = 0;
    b->n_pts = 0;
    pk_status st = pk_trainer_open(x->obs, cfg, 0, &hk, &t, x->err, x->errlen);
    if (st == PK_OK && cfg->lr_auto) {
        const pk_lr_search *r = &pk_trainer_result(t)->lr_search;
        if (r->n > 0 && isfinite(r->start_loss))
            b->start = r->start_loss; /* the loss before any step, for every attempt */
    }
    b->lowest = b->start; /* each attempt starts from the base model again */
    while (st == PK_OK && !pk_trainer_done(t) && !b->diverged)
        st = pk_trainer_step(t, x->err, x->errlen);
    if (st == PK_ERR_NUMERIC && b->watch) {
        b->diverged = 1; /* the trainer said so (err names the step); no more steps */
        b->window_mean = (double)NAN;
        b->diverged_at = t ? pk_trainer_result(t)->steps_done : 0;
        st = PK_OK;
    } else if (st == PK_OK && b->diverged) {
        st = pk_trainer_stop(t, x->err, x->errlen);
    }
    if (t) {
        *res = *pk_trainer_result(t);
        *steps = res->steps_done;
    }
    pk_trainer_free(t);
    return st;
}

/* One centralized MeZO run (pk_trainer) on the union of the devices' data with the loss
 * evaluations all devices took together, evaluated once per round's worth; with auto, backed off
 * to a third of the rate while it diverges (at most PK_FEDSIM_BACKOFFS times). */
pk_status fs_baseline(fs_sim *x)
{
    pk_train_config cfg;
    base_ctx b;
    pk_train_result res;
    pk_fedsim_summary *s = x->sum;
    if (s->device_evaluations < 1)
        return PK_OK;
    memset(&b, 0, sizeof b);
    b.start = (double)INFINITY;
    pk_status st = baseline_config(x, &cfg, &b);
    if (st != PK_OK)
        return st;
    fs_note(x, "baseline: %lld centralized MeZO steps on the union (%lld loss evaluations%s)",
            (long long)cfg.steps, (long long)s->baseline_evaluations,
            cfg.lr_auto ? ", the rate search included" : "");
    double t0 = pk_time_now();
    emit(&b, 0, s->base.loss, s->base.accuracy);
    int64_t per_step = (int64_t)b.per_step, spent = (int64_t)b.offset,
            budget = s->device_evaluations;
    s->baseline_backoffs = 0;
    for (;;) {
        int64_t steps = 0;
        memset(&res, 0, sizeof res);
        st = attempt(x, &cfg, &b, &steps, &res);
        if (cfg.lr_auto)
            s->baseline_search = res.lr_search;
        float lr = cfg.lr_auto ? res.lr_search.chosen : cfg.mezo.lr;
        s->baseline_lr = lr;
        if (st != PK_OK || !b.diverged)
            break;
        /* diverged: the steps taken are spent; start over at lr / 3 with what is left */
        spent += steps * per_step;
        int64_t left = (budget - spent) / per_step;
        if (s->baseline_backoffs < PK_FEDSIM_BACKOFFS) {
            pk_fedsim_backoff *bo = &s->baseline_backoff[s->baseline_backoffs];
            bo->lr = lr;
            bo->step = b.diverged_at;
            bo->loss = b.window_mean;
            bo->lowest = b.lowest;
            bo->evaluations = steps * per_step;
        }
        if (s->baseline_backoffs >= PK_FEDSIM_BACKOFFS || left < 1) {
            pk_seterr(x->err, x->errlen,
                      "the baseline diverged at rate %g after %lld steps and %s: give it a rate "
                      "by hand (--baseline-lr F)",
                      (double)lr, (long long)steps,
                      left < 1 ? "its budget of loss evaluations is spent"
                               : "at every smaller rate tried");
            s->baseline_backoffs += s->baseline_backoffs < PK_FEDSIM_BACKOFFS;
            st = PK_ERR_NUMERIC;
            break;
        }
        s->baseline_backoffs++;
        fs_note(x,
                "baseline: rate %g diverged at step %lld (mean training loss %.4g over the last "
                "%lld steps, lowest %.4g); starting over at %g with the %lld steps left",
                (double)lr, (long long)b.diverged_at + 1, b.window_mean, (long long)b.window,
                b.lowest, (double)(lr / 3.0f), (long long)left);
        cfg.lr_auto = 0;
        cfg.mezo.lr = lr / 3.0f;
        cfg.steps = left;
        cfg.mezo.steps_total = left;
        b.offset = (double)spent;
    }
    if (st == PK_OK)
        for (size_t i = 0; i < b.n_pts; i++)
            emit(&b, b.pts[i].step, b.pts[i].loss, b.pts[i].acc);
    s->baseline = st == PK_OK;
    s->baseline_steps = st == PK_OK ? cfg.steps : 0;
    s->baseline_evaluations = spent + (st == PK_OK ? cfg.steps * per_step : 0);
    s->baseline_seconds = pk_time_now() - t0;
    free(b.pts);
    return st;
}
