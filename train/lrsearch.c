/* lrsearch.c: the learning-rate search of `train --lr auto` (pk_train.h, DESIGN 4): a few
 * candidate rates, each trained for a handful of steps from the same starting weights on all but
 * a held-back slice of the training examples, judged by the loss on that slice. A candidate whose
 * step diverges or whose held-back loss is not finite is never chosen; a long constant-rate run
 * takes a fraction of the winner (backoff()). The weights are restored (checkpoint blob) after
 * each candidate, so the run starts from where the search started. */
#include "pk_train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A candidate whose mean training loss over its last half of steps is above BLOWUP x its first
 * step's has diverged (the first step's loss is the starting weights', the same for every
 * candidate; a loss that is not positive, the accuracy objective's, is not checked). */
#define BLOWUP 2.0
/* A candidate within this fraction of the best improvement of the lowest loss ties with it. */
#define TIE 0.25
/* The run's rate stays below the smallest rate that diverged by this factor (before backoff()). */
#define EDGE 10.0f

/* The coarse grid, then x3 and /3 around its best: PK_LR_CANDIDATES rates in all. */
static const float coarse[] = {1e-6f, 1e-5f, 1e-4f, 1e-3f, 1e-2f};
#define N_COARSE 5

typedef struct search {
    pk_model *m;
    const uint8_t *mask;
    pk_objective *obj;
    const pk_train_config *cfg;
    const pk_train_hooks *hooks; /* stop(), polled before each step; may be NULL */
    size_t n_train, n_held;      /* examples [0, n_train) train, [n_train, n) are held back */
    size_t *idx;                 /* [batch] */
} search;

/* The unperturbed loss over the held-back examples (token- or example-weighted mean). */
static pk_status held_loss(search *x, double *out)
{
    size_t B = (size_t)x->cfg->batch, n = x->n_train + x->n_held;
    double sum = 0, w = 0;
    for (size_t s = x->n_train; s < n; s += B) {
        size_t k = n - s < B ? n - s : B;
        for (size_t j = 0; j < k; j++)
            x->idx[j] = s + j;
        double l = 0, t = 0;
        pk_status st = pk_objective_select(x->obj, x->idx, k);
        if (st == PK_OK)
            st = pk_objective_loss(x->obj, x->m, NULL, &l, NULL, &t);
        if (st != PK_OK)
            return st;
        sum += l * t;
        w += t;
    }
    *out = w > 0 ? sum / w : (double)NAN;
    return PK_OK;
}

/* A step's training loss: the mean of its rows' two losses (spsa l+ and l-, fzoo l_i and l0,
 * hizoo's Hessian rows l0 twice), each a mean over the step's micro-batches. */
static double rows_loss(const pk_step_row *rows, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++)
        s += 0.5 * ((double)rows[i].loss_plus + (double)rows[i].loss_minus);
    return n > 0 ? s / n : 0.0;
}

/* One candidate: `steps` steps at constant rate lr, then the held-back loss (INFINITY if it
 * diverged), then the starting weights back from blob. */
static pk_status try_rate(search *x, float lr, int steps, const void *blob, size_t len,
                          double *loss, char *err, size_t errlen)
{
    pk_mezo_params p = x->cfg->mezo;
    p.lr = lr;
    p.schedule = PK_SCHEDULE_CONSTANT;
    p.warmup = 0;
    int n_rows = pk_mezo_rows_per_step(&p);
    pk_step_row *rows = calloc((size_t)n_rows, sizeof *rows);
    pk_mezo_state *est = NULL;
    pk_status st = rows ? pk_mezo_state_new(x->m, x->mask, &p, &est, err, errlen) : PK_ERR_NOMEM;
    /* the candidate's steps select their micro-batches from the training part only */
    pk_objective_batches b = {.obj = x->obj,
                              .run_seed = x->cfg->mezo.seed,
                              .n_micro = x->cfg->accumulate,
                              .n_examples = x->n_train,
                              .batch = (size_t)x->cfg->batch,
                              .idx = x->idx};
    pk_mezo_loss fn = pk_objective_batches_loss(&b);
    double *train = calloc((size_t)(steps > 0 ? steps : 1), sizeof *train); /* per step */
    if (train == NULL && st == PK_OK)
        st = PK_ERR_NOMEM;
    *loss = (double)INFINITY;
    for (; st == PK_OK && b.step < steps; b.step++) {
        /* Ctrl-C, SIGTERM, a cancel: between two steps, as a run stops */
        if (pk_interrupted() || (x->hooks && x->hooks->stop && x->hooks->stop(x->hooks->user))) {
            pk_seterr(err, errlen,
                      "interrupted during the learning-rate search: no run was created");
            st = PK_ERR_INTERRUPTED;
            break;
        }
        st = pk_mezo_step_sweep(x->m, x->mask, &p, est, b.step, x->cfg->accumulate, &fn, rows, NULL,
                                NULL);
        if (st == PK_OK)
            train[b.step] = rows_loss(rows, pk_mezo_step_rows(&p, b.step));
    }
    if (st == PK_OK)
        st = held_loss(x, loss);
    /* a training loss that blew up is divergence even when the few held-back examples happen
     * to score well (hizoo at 1e-2 on the classify task: held-back loss 0 after exploding) */
    int blew_up = st == PK_OK && pk_lr_search_blew_up(train, steps);
    if (st == PK_ERR_NUMERIC || (st == PK_OK && (!isfinite(*loss) || blew_up))) {
        *loss = (double)INFINITY; /* diverged: never chosen */
        st = PK_OK;
    }
    pk_status rs = pk_checkpoint_unpack(x->m, x->mask, blob, len, st == PK_OK ? err : NULL, errlen);
    pk_mezo_state_free(est);
    free(rows);
    free(train);
    return st != PK_OK ? st : rs;
}

int pk_lr_search_blew_up(const double *train, int steps)
{
    if (steps < 2 || !(train[0] > 0))
        return 0;
    double late = 0;
    for (int i = steps - steps / 2; i < steps; i++)
        late += train[i];
    return !(late / (double)(steps / 2) <= BLOWUP * train[0]);
}

/* What the run's rate is divided by: the winner of PK_LR_SEARCH_STEPS steps is the rate of the
 * fastest early progress, and at a constant rate a run a few times longer drifts up from the
 * noise floor that rate sets (README "Faster convergence": fzoo on stories260k at its winner
 * turned up after 32-64 of 177 steps, spsa's 3e-4 after about 100). So a constant-rate run of
 * up to 3 x PK_LR_SEARCH_STEPS steps trains at the winner, one of 9 x or more at a third of it
 * (one grid step down, as the LR range test backs off from its best), linearly between. A
 * linear or cosine decay brings the rate down itself: it starts at the winner. */
static float backoff(const pk_train_config *cfg)
{
    if (cfg->mezo.schedule != PK_SCHEDULE_CONSTANT)
        return 1.0f;
    double d = (double)cfg->steps / (3.0 * PK_LR_SEARCH_STEPS);
    return d <= 1.0 ? 1.0f : (d >= PK_LR_BACKOFF ? (float)PK_LR_BACKOFF : (float)d);
}

/* Index of the lowest finite loss of r->loss[0..n), -1 if none. */
static int best_of(const pk_lr_search *r, int n)
{
    int b = -1;
    for (int i = 0; i < n; i++)
        if (isfinite(r->loss[i]) && (b < 0 || r->loss[i] < r->loss[b]))
            b = i;
    return b;
}

/* The winner: the largest rate whose held-back loss is within TIE of the best improvement
 * (start_loss - lowest loss) of the lowest, so that a near tie goes to the larger rate (on
 * stories260k spsa's 1e-4 and 3e-4 moved the loss by 0.005 in 10 steps and came out either way
 * by 0.001); the largest rate tried is left out unless it is the only finite one: above it the
 * search saw nothing, so a win there is a rate whose edge it never found (fzoo and fzoo with
 * --perturb-layers 2 on the classify task of scripts/convergence.sh: 3e-2 won 3 of 8 searches
 * at 0.48-0.59 against 0.66-0.68 for the next, and scored 0.75-0.99 where it lost, from a start
 * of 0.76). -1 if no loss is finite. */
int pk_lr_search_winner(const pk_lr_search *r)
{
    int top = 0, b = -1;
    for (int i = 1; i < r->n; i++)
        if (r->lr[i] > r->lr[top])
            top = i;
    for (int i = 0; i < r->n; i++)
        if (i != top && isfinite(r->loss[i]) && (b < 0 || r->loss[i] < r->loss[b]))
            b = i;
    if (b < 0)
        return r->n > 0 && isfinite(r->loss[top]) ? top : -1;
    double gain = r->start_loss - r->loss[b];
    double within = r->loss[b] + (gain > 0 ? TIE * gain : 0.0);
    for (int i = 0; i < r->n; i++)
        if (i != top && isfinite(r->loss[i]) && r->loss[i] <= within && r->lr[i] > r->lr[b])
            b = i;
    return b;
}

/* The winner's rate, capped at a tenth (EDGE) of the smallest rate that diverged: ten steps
 * cannot tell a rate just below the edge of stability from a good one, and a run of hundreds
 * of steps finds the edge. On scripts/convergence.sh every run that collapsed or climbed from
 * its start had a winner within 3x of a diverged rate (classify spsa and hizoo, seeds 2 and 5:
 * 1e-3 won and 3e-3 diverged, the run at 3.3e-4 climbed from step 50-70; lm fzoo seed 4: 1e-2
 * won and 3e-2 diverged, at 3.3e-3 the loss climbed from step 72), and every run whose larger
 * rates stayed finite trained well. Then the backoff of a long constant-rate run. */
float pk_lr_search_rate(const pk_lr_search *r, int b, const pk_train_config *cfg)
{
    if (b < 0 || b >= r->n)
        return 0.0f;
    float lr = r->lr[b], edge = 0.0f;
    for (int i = 0; i < r->n; i++)
        if (!isfinite(r->loss[i]) && (edge == 0.0f || r->lr[i] < edge))
            edge = r->lr[i];
    /* (a winner at a tenth of a diverged grid rate, 1e-3 and 1e-2, keeps its own float) */
    if (edge > 0.0f && (double)lr > (double)edge / (double)EDGE * 1.0001)
        lr = edge / EDGE;
    return lr / backoff(cfg);
}

static pk_status run_grid(search *x, const void *blob, size_t len, pk_lr_search *r, char *err,
                          size_t errlen)
{
    pk_status st = held_loss(x, &r->start_loss);
    for (int i = 0; st == PK_OK && i < N_COARSE; i++) {
        r->lr[r->n] = coarse[i];
        st = try_rate(x, coarse[i], r->steps_each, blob, len, &r->loss[r->n], err, errlen);
        r->n++;
    }
    int b = st == PK_OK ? best_of(r, r->n) : -1;
    float around[2] = {b >= 0 ? r->lr[b] * 3.0f : 0.0f, b >= 0 ? r->lr[b] / 3.0f : 0.0f};
    for (int i = 0; st == PK_OK && b >= 0 && i < 2; i++) {
        r->lr[r->n] = around[i];
        st = try_rate(x, around[i], r->steps_each, blob, len, &r->loss[r->n], err, errlen);
        r->n++;
    }
    return st;
}

pk_status pk_lr_search_run(pk_model *m, const uint8_t *trainable, pk_objective *obj,
                           const pk_train_config *cfg, const pk_train_hooks *hooks, pk_lr_search *r,
                           char *err, size_t errlen)
{
    search x = {m, trainable, obj, cfg, hooks, 0, 0, NULL};
    size_t n = pk_objective_size(obj), blob_len = 0;
    void *blob = NULL;
    memset(r, 0, sizeof *r);
    r->steps_each = PK_LR_SEARCH_STEPS;
    x.n_held = n / 8 < 1 ? 1 : (n / 8 > 64 ? 64 : n / 8);
    if (n < 2 || x.n_held >= n) {
        pk_seterr(err, errlen, "the learning-rate search needs at least 2 training examples");
        return PK_ERR_ARG;
    }
    x.n_train = n - x.n_held;
    r->held_examples = (int)x.n_held;
    x.idx = malloc((size_t)cfg->batch * sizeof *x.idx);
    pk_status st = x.idx ? pk_checkpoint_pack(m, trainable, &blob, &blob_len) : PK_ERR_NOMEM;
    if (st == PK_OK)
        st = run_grid(&x, blob, blob_len, r, err, errlen);
    int b = st == PK_OK ? pk_lr_search_winner(r) : -1;
    if (st == PK_OK && b < 0) {
        pk_seterr(err, errlen,
                  "the learning-rate search diverged at every rate from %g to %g: try a smaller "
                  "eps or a rate by hand",
                  (double)coarse[0], (double)coarse[N_COARSE - 1]);
        st = PK_ERR_NUMERIC;
    }
    if (st == PK_OK)
        r->chosen = pk_lr_search_rate(r, b, cfg);
    free(blob);
    free(x.idx);
    return st;
}

/* ---- the guard of an --lr auto run ----------------------------------------------------------- */

/* A window whose mean is above best + max(RISE x (first - best), min(FLOOR x best, max(NOISE x
 * se, MINRISE x best))) has lost RISE of the progress made since the first window, or risen well
 * above the best: the rate is cut. "Well above" is NOISE standard errors of a window mean (se:
 * the larger of the two windows' step-loss standard deviation / sqrt(WINDOW)), at least MINRISE
 * and at most FLOOR of the best, so a noisy plateau does not cut, and a slow climb on a task
 * whose step losses vary little does.
 * On the classify task of scripts/convergence.sh spsa at a third of its 10-step winner went
 * from 0.09 to 0.8 within 50 steps at step 750 on one seed and climbed from step 50 on
 * another; the window slides by PK_LR_GUARD_EVERY steps: judged every 25 steps, the climbing
 * seed was cut at step 75 with its window at 1.9, too late to recover; every 5, at step 55
 * with it at 0.8. On the lm task fzoo at 3.3e-3 (seed 4) climbed from 1.70 at step 105 to
 * 1.88 at 177 (step losses' se about 0.017): FLOOR x best alone (0.43) never cut it. The
 * rule was checked against the 40 `--lr auto` logs of that benchmark (README "Faster
 * convergence"): it cuts where the runs climbed, and no other run. */
#define RISE    0.3
#define FLOOR   0.25
#define NOISE   4.0
#define MINRISE 0.02

pk_lr_guard pk_lr_guard_new(void)
{
    pk_lr_guard g;
    memset(&g, 0, sizeof g);
    g.first = g.best = g.last = g.prior = (double)NAN;
    return g;
}

int pk_lr_guard_step(pk_lr_guard *g, const pk_step_row *rows, int n)
{
    g->loss[g->n % PK_LR_GUARD_WINDOW] = rows_loss(rows, n);
    g->n++;
    if (g->n < PK_LR_GUARD_WINDOW || (g->n - PK_LR_GUARD_WINDOW) % PK_LR_GUARD_EVERY != 0)
        return 0;
    double sum = 0, dev = 0; /* oldest first: a fixed order, so a resume sums the same bits */
    for (int i = 0; i < PK_LR_GUARD_WINDOW; i++)
        sum += g->loss[(g->n + i) % PK_LR_GUARD_WINDOW];
    double m = sum / PK_LR_GUARD_WINDOW;
    for (int i = 0; i < PK_LR_GUARD_WINDOW; i++) {
        double d = g->loss[(g->n + i) % PK_LR_GUARD_WINDOW] - m;
        dev += d * d;
    }
    double se = sqrt(dev / (PK_LR_GUARD_WINDOW - 1) / PK_LR_GUARD_WINDOW);
    g->last = m;
    if (!isfinite(m) || m <= 0) /* the accuracy objective's losses are not positive */
        return 0;
    if (isnan(g->first)) {
        g->first = g->best = m;
        g->best_se = se;
        return 0;
    }
    double noise = NOISE * (se > g->best_se ? se : g->best_se);
    noise = noise > MINRISE * g->best ? noise : MINRISE * g->best;
    double above = FLOOR * g->best < noise ? FLOOR * g->best : noise;
    double gain = g->first - g->best, rise = RISE * gain > above ? RISE * gain : above;
    if (m > g->best + rise && g->cuts < PK_LR_GUARD_CUTS) {
        g->cuts++;
        g->prior = g->best;
        /* start over: the next reference is the first whole window at the new rate */
        g->n = 0;
        g->first = g->best = (double)NAN;
        return 1;
    }
    if (m < g->best) {
        g->best = m;
        g->best_se = se;
    }
    return 0;
}

int pk_lr_guard_on(int setting, int lr_auto)
{
    return setting == PK_LR_GUARD_ON || (setting == PK_LR_GUARD_AUTO && lr_auto);
}

float pk_lr_guard_rate(float chosen, int cuts)
{
    float lr = chosen;
    for (int i = 0; i < cuts; i++)
        lr = lr / 3.0f;
    return lr;
}
