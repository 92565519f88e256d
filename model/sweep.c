/* sweep.c: the evaluation entry points (pk_model_loss / select / logits and their _sweep forms),
 * the sweeps that run their evaluations side by side grouped by shared prefix (forward_impl.h,
 * DESIGN 4), and the FLOP count and sgemm rate the benches compare against. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "forward_impl.h"
#include "pk_common.h"

/* Copies rows[i] of the final hidden state m->xn into big, compact [M, Hh], for every pass. */
static void gather(const fwd *f, const int32_t *rows, int M)
{
    pk_model *m = f->m;
    int Hh = pk_head_dim(m);
    for (int k = 0; k < f->np; k++) {
        float *dst = pass_f(m, m->big, k);
        const float *src = pass_f(m, m->xn, k);
        for (int i = 0; i < M; i++)
            memcpy(dst + (size_t)i * Hh, src + (size_t)rows[i] * Hh, (size_t)Hh * 4);
    }
}

int pk_sweep_evals(const pk_sweep *s)
{
    if (s == NULL)
        return 1;
    return (s->base ? 1 : 0) + (s->n > 0 ? s->n : 1) * (s->pert.both ? 2 : 1);
}

/* Evaluation e (0 <= e < pk_sweep_evals(s)) as one pass's perturbation: one seed, one sign;
 * scale 0 for the unperturbed evaluation (s NULL: the only one). */
static pk_perturb eval_of(const pk_sweep *s, int e)
{
    pk_perturb p;
    memset(&p, 0, sizeof p);
    if (s == NULL)
        return p;
    p.kind = s->pert.kind;
    if (s->base && e-- == 0)
        return p;
    int per = s->pert.both ? 2 : 1, i = e / per;
    p.seed = s->n > 0 ? s->seeds[i] : s->pert.seed;
    p.scale = e % per ? -s->pert.scale : s->pert.scale;
    p.trainable = s->n > 0 && s->masks ? s->masks[i] : s->pert.trainable;
    return p;
}

/* pert as a sweep of its one (both: two) evaluations; NULL stays NULL. */
static const pk_sweep *as_sweep(const pk_perturb *pert, pk_sweep *s)
{
    if (pert == NULL)
        return NULL;
    memset(s, 0, sizeof *s);
    s->pert = *pert;
    return s;
}

/* One sweep of an evaluation: f's passes are evaluations f->ev[0 .. f->np). */
typedef pk_status (*sweep_fn)(const fwd *f, const pk_batch *b, void *ctx);

/* run_sweeps' state: the passes being gathered into the next sweep (r->f), all after r->level
 * shared stages. */
typedef struct sweep_run {
    const pk_batch *b;
    const pk_sweep *sw;
    sweep_fn fn;
    void *ctx;
    int w;     /* passes side by side at most */
    int level; /* the gathered passes' shared prefix */
    pk_status st;
    fwd f;
} sweep_run;

static void flush(sweep_run *r)
{
    if (r->f.np > 0 && r->st == PK_OK) {
        r->f.prefix = r->level;
        r->st = r->fn(&r->f, r->b, r->ctx);
    }
    r->f.np = 0;
}

/* Adds evaluation e, whose passes share `level` stages, to the next sweep; `pair`: e is a + pass
 * whose - pass comes next, kept in the same sweep where the width allows (they share z). */
static void add_eval(sweep_run *r, int e, int level, int pair)
{
    if (r->f.np > 0 && (level != r->level || r->f.np == r->w || (pair && r->f.np + 2 > r->w)))
        flush(r);
    r->level = level;
    r->f.pp[r->f.np] = eval_of(r->sw, e);
    r->f.ev[r->f.np++] = e;
}

/* Runs every evaluation of sw (pk_sweep_evals) in sweeps of at most pk_model_sweep_width passes.
 * A perturbation's level is its shared prefix (shared_prefix: the stages, block halves, below its
 * lowest perturbed one); the perturbations go level by level, lowest first (in index order
 * within a level, a + pass and its - pass in one sweep where the width allows: they share z),
 * the unperturbed evaluation with the highest level. A sweep holds one level: its shared stages
 * come from the prefix cache, which runs each stage once per call (forward_prefix), so the
 * stages below the lowest perturbed one run once however many passes, sweeps or levels follow. Each
 * evaluation's results go to its own place: the same bits however they are grouped. */
static pk_status run_sweeps(pk_model *m, const pk_batch *b, const pk_sweep *sw, sweep_fn fn,
                            void *ctx)
{
    if (sw && (sw->n < 0 || (sw->n > 0 && sw->seeds == NULL)))
        return PK_ERR_ARG;
    pk_status st = pk_fwd_check_batch(m, b, 0);
    if (st != PK_OK)
        return st;
    int E = pk_sweep_evals(sw), base = sw && sw->base, per = sw && sw->pert.both ? 2 : 1;
    sweep_run r = {.b = b, .sw = sw, .fn = fn, .ctx = ctx, .st = PK_OK};
    r.w = pk_model_sweep_width(m, b->B, b->T, E);
    /* every sweep's passes fit now, so the prefix cache at the arena's tail stays put */
    st = pk_reserve(m, b->B, b->T, b->T, r.w);
    if (st != PK_OK)
        return st;
    sweep_tail *tl = tail_of(m);
    PK_ASSERT(tl != NULL);
    prefix_cache pc = {(float *)(void *)(tl + 1), -1};
    r.f.m = m;
    r.f.np = 0;
    r.f.cache = &pc;
    int nu = (E - base) / per; /* perturbations (sw NULL: the one unperturbed evaluation) */
    unsigned short lv[UNIT_WINDOW];
    for (int u0 = 0; u0 < nu && r.st == PK_OK; u0 += UNIT_WINDOW) {
        int n = nu - u0 < UNIT_WINDOW ? nu - u0 : UNIT_WINDOW, top = 0;
        for (int i = 0; i < n; i++) {
            pk_perturb p = eval_of(sw, base + (u0 + i) * per);
            lv[i] = (unsigned short)pk_fwd_shared_prefix(m, &p);
            top = lv[i] > top ? lv[i] : top;
        }
        for (int l = 0; l <= top; l++) {
            if (base && u0 == 0 && l == top)
                add_eval(&r, 0, l, 0);
            for (int i = 0; i < n; i++) {
                for (int k = 0; lv[i] == l && k < per; k++)
                    add_eval(&r, base + (u0 + i) * per + k, l, per == 2 && k == 0);
            }
        }
    }
    flush(&r);
    return r.st;
}

typedef struct loss_out {
    const uint8_t *target_mask;
    double *seq_nll;
    int32_t *seq_count;
    double *mean;
} loss_out;

static pk_status loss_sweep(const fwd *f, const pk_batch *b, void *ctx)
{
    pk_model *m = f->m;
    const loss_out *o = ctx;
    pk_status st = pk_fwd_hidden(f, b, NULL, NULL, 0);
    if (st != PK_OK)
        return st;
    int T = b->T, M = 0;
    for (int bi = 0; bi < b->B; bi++) {
        for (int t = 1; t < b->lengths[bi]; t++) {
            size_t n = (size_t)bi * T + t;
            if (o->target_mask && !o->target_mask[n])
                continue;
            m->rows[M] = (int32_t)(n - 1);
            m->tgt[M] = b->ids[n];
            M++;
        }
    }
    gather(f, m->rows, M);
    float *picked[SWEEP_MAX];
    for (int k = 0; k < f->np; k++)
        picked[k] = pass_f(m, m->pick, k);
    if (M > 0)
        pk_fwd_lm_head(f, m->big, M, m->lse, m->tgt, 1, 1, picked, NULL);
    for (int k = 0; k < f->np; k++) {
        const double *lse = pass_d(m, m->lse, k);
        const float *pick = picked[k];
        size_t e = (size_t)f->ev[k];
        double *nllk = o->seq_nll ? o->seq_nll + e * b->B : NULL;
        int32_t *cntk = o->seq_count ? o->seq_count + e * b->B : NULL;
        double total = 0;
        for (int bi = 0; bi < b->B; bi++) {
            if (nllk)
                nllk[bi] = 0;
            if (cntk)
                cntk[bi] = 0;
        }
        for (int i = 0; i < M; i++) {
            double nll = lse[i] - (double)pick[i];
            int bi = m->rows[i] / T;
            if (nllk)
                nllk[bi] += nll;
            if (cntk)
                cntk[bi]++;
            total += nll;
        }
        if (o->mean)
            o->mean[e] = M > 0 ? total / M : (double)NAN;
    }
    return PK_OK;
}

pk_status pk_model_loss_sweep(pk_model *m, const pk_batch *b, const uint8_t *target_mask,
                              const pk_sweep *s, double *seq_nll, int32_t *seq_count, double *mean)
{
    if (m->cfg.arch == ARCH_ROBERTA)
        return PK_ERR_UNSUPPORTED;
    loss_out o = {target_mask, seq_nll, seq_count, mean};
    return run_sweeps(m, b, s, loss_sweep, &o);
}

pk_status pk_model_loss(pk_model *m, const pk_batch *b, const uint8_t *target_mask,
                        const pk_perturb *pert, double *seq_nll, int32_t *seq_count, double *mean)
{
    pk_sweep s;
    return pk_model_loss_sweep(m, b, target_mask, as_sweep(pert, &s), seq_nll, seq_count, mean);
}

typedef struct select_out {
    size_t n_sel, n_ids;
    const int32_t *sel_b, *sel_t, *ids;
    float *out;
    int logprob;
} select_out;

static pk_status select_sweep(const fwd *f, const pk_batch *b, void *ctx)
{
    pk_model *m = f->m;
    const select_out *o = ctx;
    pk_status st = pk_fwd_hidden(f, b, NULL, NULL, 0);
    if (st != PK_OK)
        return st;
    int M = (int)o->n_sel;
    size_t per = o->n_sel * o->n_ids;
    float *out[SWEEP_MAX];
    for (int k = 0; k < f->np; k++)
        out[k] = o->out + (size_t)f->ev[k] * per;
    for (int s = 0; s < M; s++)
        m->rows[s] = o->sel_b[s] * b->T + o->sel_t[s];
    gather(f, m->rows, M);
    if (M == 0)
        return PK_OK;
    pk_fwd_lm_head(f, m->big, M, o->logprob ? m->lse : NULL, o->ids, 0, (int)o->n_ids, out, NULL);
    for (int k = 0; o->logprob && k < f->np; k++) {
        const double *lse = pass_d(m, m->lse, k);
        float *ok = out[k];
        for (size_t s = 0; s < o->n_sel; s++) {
            for (size_t j = 0; j < o->n_ids; j++)
                ok[s * o->n_ids + j] = (float)((double)ok[s * o->n_ids + j] - lse[s]);
        }
    }
    return PK_OK;
}

static pk_status select_common(pk_model *m, const pk_batch *b, const pk_sweep *sw, size_t n_sel,
                               const int32_t *sel_b, const int32_t *sel_t, size_t n_ids,
                               const int32_t *ids, float *out, int logprob)
{
    pk_status st = pk_fwd_check_batch(m, b, 0);
    if (st != PK_OK)
        return st;
    if (n_sel > (size_t)b->B * (size_t)b->T)
        return PK_ERR_ARG;
    for (size_t s = 0; s < n_sel; s++) {
        if (sel_b[s] < 0 || sel_b[s] >= b->B || sel_t[s] < 0 || sel_t[s] >= b->lengths[sel_b[s]])
            return PK_ERR_ARG;
    }
    for (size_t j = 0; j < n_ids; j++) {
        if (ids[j] < 0 || ids[j] >= m->cfg.V)
            return PK_ERR_ARG;
    }
    select_out o = {n_sel, n_ids, sel_b, sel_t, ids, out, logprob};
    return run_sweeps(m, b, sw, select_sweep, &o);
}

pk_status pk_model_select_logits(pk_model *m, const pk_batch *b, const pk_perturb *pert,
                                 size_t n_sel, const int32_t *sel_b, const int32_t *sel_t,
                                 size_t n_ids, const int32_t *ids, float *out)
{
    pk_sweep s;
    return select_common(m, b, as_sweep(pert, &s), n_sel, sel_b, sel_t, n_ids, ids, out, 0);
}

pk_status pk_model_select_logprobs(pk_model *m, const pk_batch *b, const pk_perturb *pert,
                                   size_t n_sel, const int32_t *sel_b, const int32_t *sel_t,
                                   size_t n_ids, const int32_t *ids, float *out)
{
    pk_sweep s;
    return select_common(m, b, as_sweep(pert, &s), n_sel, sel_b, sel_t, n_ids, ids, out, 1);
}

pk_status pk_model_select_sweep(pk_model *m, const pk_batch *b, const pk_sweep *s, size_t n_sel,
                                const int32_t *sel_b, const int32_t *sel_t, size_t n_ids,
                                const int32_t *ids, int logprobs, float *out)
{
    return select_common(m, b, s, n_sel, sel_b, sel_t, n_ids, ids, out, logprobs != 0);
}

static pk_status logits_sweep(const fwd *f, const pk_batch *b, void *ctx)
{
    float *out = ctx, *full[SWEEP_MAX];
    pk_status st = pk_fwd_hidden(f, b, NULL, NULL, 0);
    if (st != PK_OK)
        return st;
    size_t M = (size_t)b->B * (size_t)b->T;
    for (int k = 0; k < f->np; k++)
        full[k] = out + (size_t)f->ev[k] * M * f->m->cfg.V;
    pk_fwd_lm_head(f, f->m->xn, (int)M, NULL, NULL, 0, 0, NULL, full);
    return PK_OK;
}

pk_status pk_model_logits_sweep(pk_model *m, const pk_batch *b, const pk_sweep *s, float *out)
{
    return run_sweeps(m, b, s, logits_sweep, out);
}

pk_status pk_model_logits(pk_model *m, const pk_batch *b, const pk_perturb *pert, float *out)
{
    pk_sweep s;
    return run_sweeps(m, b, as_sweep(pert, &s), logits_sweep, out);
}

double pk_model_forward_flops(const pk_model *m, int B, int T)
{
    double N = (double)B * (double)T, f = 0;
    for (int l = 0; l < m->cfg.L; l++) {
        const pk_layer *y = &m->layers[l];
        int w[] = {y->q_w, y->k_w, y->v_w, y->o_w, y->gate_w, y->fc1_w, y->fc2_w};
        for (size_t i = 0; i < sizeof w / sizeof w[0]; i++) {
            if (w[i] >= 0)
                f += 2.0 * N * (double)m->t[w[i]].numel;
        }
    }
    int extra[] = {m->proj_in, m->proj_out, m->hd_dense_w, m->head_w};
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) {
        if (extra[i] >= 0)
            f += 2.0 * N * (double)m->t[extra[i]].numel;
    }
    return f;
}

double pk_model_bench_sgemm(const pk_model *m, int B, int T, int reps)
{
    /* the GEMMs of one block (each linear once, as every block is the same) and of the LM head,
     * ceil(V / lrows) GEMMs of (N, lrows, Hh), each one multi-threaded OpenBLAS call: the
     * roofline that the forward pass's fixed single-threaded tiles are measured against */
    size_t N = (size_t)B * (size_t)T;
    int shapes[16][3], ns = 0; /* out, in, count */
    const pk_layer *y = &m->layers[0];
    int w[] = {y->q_w,   y->k_w,   y->v_w,     y->o_w,      y->gate_w,
               y->fc1_w, y->fc2_w, m->proj_in, m->proj_out, m->hd_dense_w};
    size_t maxa = 0, maxb = 0, maxc = 0;
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++) {
        if (w[i] < 0)
            continue;
        const pk_tensor *t = &m->t[w[i]];
        shapes[ns][0] = (int)(m->conv1d ? t->cols : t->rows);
        shapes[ns][1] = (int)(m->conv1d ? t->rows : t->cols);
        shapes[ns][2] = 1;
        ns++;
    }
    int lr = m->lrows > 0 ? m->lrows : 256, Hh = pk_head_dim(m);
    shapes[ns][0] = lr;
    shapes[ns][1] = Hh;
    shapes[ns][2] = (m->cfg.V + lr - 1) / lr;
    ns++;
    for (int s = 0; s < ns; s++) {
        size_t o = (size_t)shapes[s][0], in = (size_t)shapes[s][1];
        maxa = N * in > maxa ? N * in : maxa;
        maxb = o * in > maxb ? o * in : maxb;
        maxc = N * o > maxc ? N * o : maxc;
    }
    float *a = malloc(maxa * 4), *bm = malloc(maxb * 4), *cm = malloc(maxc * 4);
    double best = 0;
    if (!a || !bm || !cm)
        goto out;
    for (size_t i = 0; i < maxa; i++)
        a[i] = (float)((i * 2654435761u) % 1000) * 0.001f - 0.5f;
    for (size_t i = 0; i < maxb; i++)
        bm[i] = (float)((i * 40503u) % 1000) * 0.001f - 0.5f;
    memset(cm, 0, maxc * 4);
    for (int r = 0; r < reps; r++) {
        double flops = 0, t0 = pk_time_now();
        for (int s = 0; s < ns; s++) {
            int o = shapes[s][0], in = shapes[s][1];
            for (int k = 0; k < shapes[s][2]; k++) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, o, in, 1.0f, a, in, bm,
                            in, 0.0f, cm, o);
                flops += 2.0 * (double)N * o * in;
            }
        }
        double g = flops / (pk_time_now() - t0) / 1e9;
        best = g > best ? g : best;
    }
out:
    free(a);
    free(bm);
    free(cm);
    return best;
}
