/* estimator.c: the zeroth-order estimators beside plain MeZO (pk_mezo.h, DESIGN 4): FZOO's batch
 * of one-sided Rademacher perturbations with a step normalized by the spread of its losses,
 * HiZOO's two-sided step scaled by a diagonal Hessian estimate, layer sampling for any of them,
 * and their replay from the logged rows; the names of the estimators and schedules. Plain spsa
 * is pk_mezo_step (mezo.c), untouched.
 *
 * Reproducibility as in mezo.c: one rounding per operation (no FMA; clang told below), fixed
 * 4096-element blocks, so an element's new value never depends on the thread count. */
#include "pk_mezo.h"

#include "mezo_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __clang__
#pragma clang fp contract(off)
#endif

#define UPDATE_BLOCK 4096
#define MAX_LAYERS   4096 /* layer sampling: more transformer blocks than any model has */

struct pk_mezo_state {
    size_t n_t;
    float **h;     /* [n_t] hizoo: Hessian diagonal of each trainable tensor [numel], else NULL */
    size_t *h_n;   /* [n_t] hizoo: the elements of h[i] (0 where h[i] is NULL) */
    uint8_t *mask; /* [n_t] the tensors of the current perturbation (replay) */
    /* a step's sweep: its perturbations (np: fzoo N, else q) and evaluations (ne) */
    int np, ne;
    uint64_t *seeds;         /* [np] */
    uint8_t *masks;          /* [np * n_t] the tensors each perturbation touches */
    const uint8_t **mask_of; /* [np] pointers into masks */
    double *mean, *one;      /* [ne] the evaluations' means over the micro-batches, one's */
};

/* ---- names ---------------------------------------------------------------------------------- */

/* The names of the estimators and schedules, one table each (indexed by the enum value); parse
 * and name both read them. */
static const char *const estimator_names[] = {
    [PK_EST_SPSA] = "spsa",
    [PK_EST_FZOO] = "fzoo",
    [PK_EST_HIZOO] = "hizoo",
};
static const char *const schedule_names[] = {
    [PK_SCHEDULE_CONSTANT] = "constant",
    [PK_SCHEDULE_LINEAR] = "linear",
    [PK_SCHEDULE_COSINE] = "cosine",
};
#define N_NAMES(t) ((int)(sizeof t / sizeof t[0]))

/* The index of s in names[n], or -1. */
static int name_index(const char *const *names, int n, const char *s)
{
    for (int i = 0; s != NULL && i < n; i++)
        if (names[i] != NULL && !strcmp(s, names[i]))
            return i;
    return -1;
}

int pk_estimator_parse(const char *s, pk_estimator *out)
{
    int i = name_index(estimator_names, N_NAMES(estimator_names), s);
    if (i < 0)
        return -1;
    *out = (pk_estimator)i;
    return 0;
}

const char *pk_estimator_name(pk_estimator e)
{
    return (int)e >= 0 && (int)e < N_NAMES(estimator_names) ? estimator_names[e]
                                                            : estimator_names[PK_EST_SPSA];
}

static const char *const baseline_names[] = {"unperturbed", "mean"};

int pk_fzoo_baseline_parse(const char *s, int *mean)
{
    int i = name_index(baseline_names, N_NAMES(baseline_names), s);
    if (i < 0)
        return -1;
    *mean = i;
    return 0;
}

const char *pk_fzoo_baseline_name(int mean)
{
    return baseline_names[mean != 0];
}

double pk_fzoo_sigma(const double *l, int n, double *mean)
{
    double m = 0, var = 0;
    for (int i = 0; i < n; i++)
        m += l[i];
    m /= (double)n;
    for (int i = 0; i < n; i++)
        var += (l[i] - m) * (l[i] - m);
    *mean = m;
    return sqrt(var / (double)n);
}

int pk_schedule_parse(const char *s, pk_schedule *out)
{
    int i = name_index(schedule_names, N_NAMES(schedule_names), s);
    if (i < 0)
        return -1;
    *out = (pk_schedule)i;
    return 0;
}

const char *pk_schedule_name(pk_schedule s)
{
    return (int)s >= 0 && (int)s < N_NAMES(schedule_names) ? schedule_names[s]
                                                           : schedule_names[PK_SCHEDULE_CONSTANT];
}

static int q_of(const pk_mezo_params *p)
{
    return p->spsa_q < 1 ? 1 : p->spsa_q;
}

/* hizoo's Hessian update interval K (<= 0 reads as 1: every step, as before the option). */
static int64_t every_of(const pk_mezo_params *p)
{
    return p->hessian_every < 1 ? 1 : (int64_t)p->hessian_every;
}

int pk_mezo_hessian_step(const pk_mezo_params *p, int64_t step)
{
    return p->estimator == PK_EST_HIZOO && step % every_of(p) == 0;
}

int pk_mezo_rows_per_step(const pk_mezo_params *p)
{
    if (p->estimator == PK_EST_FZOO)
        return p->perturbations;
    if (p->estimator == PK_EST_HIZOO)
        return 2 * q_of(p);
    return q_of(p);
}

int pk_mezo_step_rows(const pk_mezo_params *p, int64_t step)
{
    if (p->estimator == PK_EST_HIZOO && !pk_mezo_hessian_step(p, step))
        return q_of(p); /* the weight rows only */
    return pk_mezo_rows_per_step(p);
}

int pk_mezo_evals_per_step(const pk_mezo_params *p)
{
    if (p->estimator == PK_EST_FZOO)
        return p->perturbations + !p->fzoo_mean;
    if (p->estimator == PK_EST_HIZOO)
        return 2 * q_of(p) + 1; /* one unperturbed loss serves the q pairs */
    return 2 * q_of(p);
}

int64_t pk_mezo_evals_upto(const pk_mezo_params *p, int64_t steps)
{
    if (steps <= 0)
        return 0;
    int64_t n = steps * (int64_t)pk_mezo_evals_per_step(p);
    if (p->estimator != PK_EST_HIZOO)
        return n;
    int64_t updates = (steps + every_of(p) - 1) / every_of(p); /* steps 0, K, 2K, ... below */
    return n - (steps - updates);                              /* the others take no l0 */
}

/* Plain MeZO: no state, and pk_mezo_step does the step. */
static int plain(const pk_mezo_params *p)
{
    return p->estimator == PK_EST_SPSA && p->perturb_layers <= 0 && p->perturb_stages <= 0;
}

/* ---- layers --------------------------------------------------------------------------------- */

int pk_tensor_layer(const char *name)
{
    static const char *const keys[] = {"layers.", "layer.", "h."};
    for (const char *p = name; *p; p++) {
        if (p != name && p[-1] != '.')
            continue;
        for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
            size_t kl = strlen(keys[k]);
            const char *d = p + kl;
            if (strncmp(p, keys[k], kl) != 0 || *d < '0' || *d > '9')
                continue;
            char *end = NULL;
            long v = strtol(d, &end, 10);
            if (*end == '.' && v >= 0 && v < MAX_LAYERS)
                return (int)v;
        }
    }
    return -1;
}

static int tensor_layer_at(const pk_model *m, size_t i)
{
    pk_tensor_info ti;
    pk_status st = pk_model_tensor(m, i, &ti);
    PK_ASSERT(st == PK_OK);
    return pk_tensor_layer(ti.name);
}

/* Selection sampling (each of n units in turn, taken with probability need / left): K distinct
 * units into chosen[n], integer arithmetic only, a pure function of the seed. */
static void choose_units(uint64_t seed, int n, int K, uint8_t *chosen)
{
    uint64_t h = pk_splitmix64(seed ^ 0x4c41594552534b31ull); /* "LAYERSK1" */
    int need = K;
    for (int u = 0; u < n; u++) {
        uint64_t r = pk_splitmix64(h ^ (uint64_t)u) % (uint64_t)(n - u);
        chosen[u] = r < (uint64_t)need;
        need -= chosen[u];
    }
}

/* perturb_stages K: out (the trainable mask) kept on K of the stages holding its tensors. */
static void stage_mask(const pk_model *m, int K, uint64_t seed, uint8_t *out)
{
    size_t nt = pk_model_n_tensors(m);
    uint8_t held[2 * MAX_LAYERS] = {0}, chosen[2 * MAX_LAYERS];
    int n = 0, unit[2 * MAX_LAYERS];
    for (size_t i = 0; i < nt; i++) {
        int s = pk_model_tensor_stage(m, i);
        if (out[i] && s >= 0 && s < 2 * MAX_LAYERS)
            held[s] = 1;
    }
    for (int s = 0; s < 2 * MAX_LAYERS; s++) /* the held stages, in order */
        if (held[s])
            unit[n++] = s;
    if (K >= n)
        return;
    choose_units(seed, n, K, chosen);
    memset(held, 0, sizeof held);
    for (int u = 0; u < n; u++)
        held[unit[u]] = chosen[u];
    for (size_t i = 0; i < nt; i++) {
        int s = pk_model_tensor_stage(m, i);
        if (s < 0 || s >= 2 * MAX_LAYERS || !held[s])
            out[i] = 0;
    }
}

void pk_mezo_layer_mask(const pk_model *m, const uint8_t *trainable, const pk_mezo_params *p,
                        uint64_t seed, uint8_t *out)
{
    size_t nt = pk_model_n_tensors(m);
    int L = 0;
    for (size_t i = 0; i < nt; i++) {
        out[i] = trainable ? trainable[i] : 1;
        int l = tensor_layer_at(m, i);
        L = l + 1 > L ? l + 1 : L;
    }
    if (p->perturb_stages > 0) {
        stage_mask(m, p->perturb_stages, seed, out);
        return;
    }
    int K = p->perturb_layers;
    if (K <= 0 || K >= L)
        return;
    uint8_t chosen[MAX_LAYERS];
    choose_units(seed, L, K, chosen);
    for (size_t i = 0; i < nt; i++) {
        int l = tensor_layer_at(m, i);
        if (l < 0 || !chosen[l])
            out[i] = 0;
    }
}

/* ---- state ---------------------------------------------------------------------------------- */

void pk_mezo_state_free(pk_mezo_state *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; s->h && i < s->n_t; i++)
        free(s->h[i]);
    free(s->h);
    free(s->h_n);
    free(s->mask);
    free(s->seeds);
    free(s->masks);
    free(s->mask_of);
    free(s->mean);
    free(s->one);
    free(s);
}

/* bytes in the unit that fits (bytes, KB, MB, GB, TB; powers of 1000) to three significant
 * digits ("512 bytes", "104 KB", "1.04 MB", "2.50 GB"), rounded up (up = 1) or down (0): sizes
 * rounded up and a budget rounded down never print as equal when the need is larger, and a
 * budget under one byte says so rather than 0. out (n bytes) borrowed; returns out. */
static const char *size_text(double bytes, int up, char *out, size_t n)
{
    static const char *const units[] = {"bytes", "KB", "MB", "GB", "TB"};
    if (!up && bytes > 0.0 && bytes < 1.0) {
        snprintf(out, n, "under 1 byte");
        return out;
    }
    int u = 0;
    double scale = 1.0; /* bytes per unit */
    while (bytes >= 1e3 * scale && u < 4) {
        scale *= 1e3;
        u++;
    }
    int dec = u == 0 || bytes >= 100.0 * scale ? 0 : bytes >= 10.0 * scale ? 1 : 2;
    double step = scale / (dec == 2 ? 100.0 : dec == 1 ? 10.0 : 1.0); /* bytes per last digit */
    double k = bytes / step;
    k = up ? ceil(k) : floor(k);
    if (u == 0)
        snprintf(out, n, "%.0f %s", k, k == 1.0 ? "byte" : "bytes");
    else
        snprintf(out, n, "%.*f %s", dec, k * step / scale, units[u]);
    return out;
}

/* hizoo: H = 1 for every trainable element, if its fp32 bytes fit the budget. */
static pk_status hessian_new(const pk_model *m, const uint8_t *trainable, const pk_mezo_params *p,
                             pk_mezo_state *s, char *err, size_t errlen)
{
    size_t need = 0;
    for (size_t i = 0; i < s->n_t; i++) {
        pk_tensor_info ti;
        if (pk_model_tensor(m, i, &ti) == PK_OK && (!trainable || trainable[i]))
            need += ti.numel * sizeof(float);
    }
    double budget = (double)p->hessian_budget * (double)pk_model_weight_bytes(m);
    if ((double)need > budget) {
        char a[32], b[32], c[32];
        pk_seterr(err, errlen,
                  "hizoo: the fp32 Hessian diagonal of the trainable tensors needs %s, more than "
                  "the budget of %s (%g x the %s of weights); train fewer tensors or raise the "
                  "budget",
                  size_text((double)need, 1, a, sizeof a), size_text(budget, 0, b, sizeof b),
                  (double)p->hessian_budget,
                  size_text((double)pk_model_weight_bytes(m), 1, c, sizeof c));
        return PK_ERR_ARG;
    }
    s->h = calloc(s->n_t, sizeof *s->h);
    s->h_n = calloc(s->n_t, sizeof *s->h_n);
    if (s->h == NULL || s->h_n == NULL)
        return PK_ERR_NOMEM;
    for (size_t i = 0; i < s->n_t; i++) {
        pk_tensor_info ti;
        if (pk_model_tensor(m, i, &ti) != PK_OK || (trainable && !trainable[i]))
            continue;
        s->h[i] = malloc((ti.numel ? ti.numel : 1) * sizeof(float));
        if (s->h[i] == NULL)
            return PK_ERR_NOMEM;
        for (size_t j = 0; j < ti.numel; j++)
            s->h[i][j] = 1.0f;
        s->h_n[i] = ti.numel;
    }
    return PK_OK;
}

size_t pk_mezo_state_bytes(const pk_mezo_state *s)
{
    size_t n = 0;
    for (size_t i = 0; s && s->h && i < s->n_t; i++)
        n += s->h_n[i] * sizeof(float);
    return n;
}

void pk_mezo_state_save(const pk_mezo_state *s, void *out)
{
    unsigned char *b = out;
    for (size_t i = 0; s && s->h && i < s->n_t; i++) {
        memcpy(b, s->h[i], s->h_n[i] * sizeof(float));
        b += s->h_n[i] * sizeof(float);
    }
}

pk_status pk_mezo_state_load(pk_mezo_state *s, const void *in, size_t len)
{
    if (len != pk_mezo_state_bytes(s))
        return PK_ERR_FORMAT;
    const unsigned char *b = in;
    for (size_t i = 0; s && s->h && i < s->n_t; i++) {
        memcpy(s->h[i], b, s->h_n[i] * sizeof(float));
        b += s->h_n[i] * sizeof(float);
    }
    return PK_OK;
}

pk_status pk_mezo_state_new(const pk_model *m, const uint8_t *trainable, const pk_mezo_params *p,
                            pk_mezo_state **out, char *err, size_t errlen)
{
    *out = NULL;
    if (plain(p))
        return PK_OK;
    if (p->estimator == PK_EST_FZOO && (p->perturbations < 2 || p->perturbations > 4096)) {
        pk_seterr(err, errlen, "fzoo needs 2 to 4096 perturbations per step (got %d)",
                  p->perturbations);
        return PK_ERR_ARG;
    }
    if (p->estimator == PK_EST_HIZOO && !(p->hessian_smooth > 0.0f && p->hessian_smooth < 1.0f)) {
        pk_seterr(err, errlen, "hizoo: the Hessian smoothing %g is not in (0, 1)",
                  (double)p->hessian_smooth);
        return PK_ERR_ARG;
    }
    if (p->estimator == PK_EST_HIZOO && p->hessian_every > PK_HESSIAN_EVERY_MAX) {
        pk_seterr(err, errlen, "hizoo: the Hessian update interval %d is above %d",
                  p->hessian_every, PK_HESSIAN_EVERY_MAX);
        return PK_ERR_ARG;
    }
    pk_mezo_state *s = calloc(1, sizeof *s);
    if (s == NULL)
        return PK_ERR_NOMEM;
    s->n_t = pk_model_n_tensors(m);
    s->mask = malloc(s->n_t ? s->n_t : 1);
    s->np = p->estimator == PK_EST_FZOO ? p->perturbations : q_of(p);
    s->ne = pk_mezo_evals_per_step(p);
    s->seeds = calloc((size_t)s->np, sizeof *s->seeds);
    s->masks = malloc((size_t)s->np * (s->n_t ? s->n_t : 1));
    s->mask_of = calloc((size_t)s->np, sizeof *s->mask_of);
    s->mean = calloc((size_t)s->ne, sizeof *s->mean);
    s->one = calloc((size_t)s->ne, sizeof *s->one);
    pk_status st =
        s->mask && s->seeds && s->masks && s->mask_of && s->mean && s->one ? PK_OK : PK_ERR_NOMEM;
    if (st == PK_OK && p->estimator == PK_EST_HIZOO)
        st = hessian_new(m, trainable, p, s, err, errlen);
    if (st != PK_OK) {
        pk_mezo_state_free(s);
        return st;
    }
    *out = s;
    return PK_OK;
}

/* ---- hizoo sweeps --------------------------------------------------------------------------- */

/* H = ((1 - alpha) * H) + (c * (H * (z * z))) over n elements of one tensor (z: theirs). */
static void hessian_block(float *h, const float *z, float keep, float c, size_t n)
{
    for (size_t j = 0; j < n; j++) {
        float hz = h[j] * (z[j] * z[j]);
        h[j] = (keep * h[j]) + (c * hz);
    }
}

/* W = W - lr * ((g * (z / sqrtf(H))) + (wd * W)) over elements [start, start+n) of one tensor
 * (z: theirs); f16/bf16 through fp32 and back under the run's rounding, as mezo.c does. */
static void scaled_block(const pk_tensor_info *ti, const float *h, const float *z, uint64_t seed,
                         float lr, float g, float wd, pk_rounding rounding, size_t start, size_t n,
                         float *w, uint32_t *u)
{
    float *dst = pk_mezo_block_fp32(ti, start, n, w);
    for (size_t j = 0; j < n; j++) {
        float d = z[j] / sqrtf(h[j]);
        float a = g * d;
        float b = wd * dst[j];
        float t = a + b;
        dst[j] = dst[j] - lr * t;
    }
    pk_mezo_block_store(ti, seed, rounding, start, n, w, u);
}

/* Block b (UPDATE_BLOCK elements) of hizoo_apply's sweep over one tensor (H h). */
static void hizoo_block(const pk_tensor_info *ti, float *h, const pk_mezo_params *p,
                        const pk_step_row *hr, const pk_step_row *wr, float keep, float wd, long b)
{
    const pk_step_row *r = hr ? hr : wr;
    float z[UPDATE_BLOCK], w[UPDATE_BLOCK];
    uint32_t u[UPDATE_BLOCK];
    size_t a = (size_t)b * UPDATE_BLOCK;
    size_t n = ti->numel - a < UPDATE_BLOCK ? ti->numel - a : UPDATE_BLOCK;
    pk_z_fill(r->seed, ti->key, a, n, p->z, z);
    if (hr)
        hessian_block(h + a, z, keep, hr->g, n);
    if (wr)
        scaled_block(ti, h + a, z, wr->seed, wr->lr, wr->g, wd, p->rounding, a, n, w, u);
}

/* hizoo rows of one perturbation over the tensors of mask: hr (even q_index: the Hessian update,
 * row g = c) and/or wr (odd: the weight update with the updated H), either may be NULL; both
 * belong to one seed. Given both, one sweep does the two: each block's z is generated once, its
 * H updated, then its weights from that H. Every element sees the same operations in the same
 * order as two sweeps (an element's new H depends only on its old H and z), so the bits are the
 * same either way; the pair in one sweep halves the z generation. */
static void hizoo_apply(pk_model *m, const pk_mezo_state *s, const uint8_t *mask,
                        const pk_mezo_params *p, const pk_step_row *hr, const pk_step_row *wr)
{
    const pk_step_row *r = hr ? hr : wr;
    PK_ASSERT(r != NULL && (hr == NULL || wr == NULL || hr->seed == wr->seed));
    float keep = 1.0f - p->hessian_smooth;
    for (size_t i = 0; i < s->n_t; i++) {
        if (!mask[i] || s->h[i] == NULL)
            continue;
        pk_tensor_info ti;
        pk_status st = pk_model_tensor(m, i, &ti);
        PK_ASSERT(st == PK_OK);
        float wd = ti.is_bias_or_norm ? 0.0f : p->weight_decay;
        float *h = s->h[i];
        long nb = (long)((ti.numel + UPDATE_BLOCK - 1) / UPDATE_BLOCK);
        int nthreads = nb < 4 ? 1 : pk_threads_get();
        if (nthreads == 1) { /* no team: libgomp's team of one pays two futex calls a region */
            for (long b = 0; b < nb; b++)
                hizoo_block(&ti, h, p, hr, wr, keep, wd, b);
            continue;
        }
#pragma omp parallel for schedule(static) num_threads(nthreads)
        for (long b = 0; b < nb; b++)
            hizoo_block(&ti, h, p, hr, wr, keep, wd, b);
    }
}

/* ---- replay --------------------------------------------------------------------------------- */

/* Whether rows a and b are one hizoo perturbation's Hessian row and its weight row. */
static int hizoo_pair(const pk_step_row *a, const pk_step_row *b)
{
    return a->q_index % 2 == 0 && b->q_index == a->q_index + 1 && a->step == b->step &&
           a->seed == b->seed;
}

/* The logged rows from r on: the tensors the perturbation touched, then the estimator's sweep
 * (a hizoo pair in one). Returns how many rows it applied. */
static size_t apply_rows(pk_model *m, const uint8_t *trainable, const pk_mezo_params *p,
                         pk_mezo_state *s, const pk_step_row *rows, size_t r, size_t n)
{
    const pk_step_row *a = &rows[r];
    pk_mezo_layer_mask(m, trainable, p, a->seed, s->mask);
    if (p->estimator != PK_EST_HIZOO) {
        pk_mezo_update_ex(m, s->mask, a->seed, p->z, a->lr, a->g, p->weight_decay, p->rounding);
        return 1;
    }
    if (r + 1 < n && hizoo_pair(a, &rows[r + 1])) {
        hizoo_apply(m, s, s->mask, p, a, &rows[r + 1]);
        return 2;
    }
    int hess = a->q_index % 2 == 0;
    hizoo_apply(m, s, s->mask, p, hess ? a : NULL, hess ? NULL : a);
    return 1;
}

void pk_mezo_replay_ex(pk_model *m, const uint8_t *trainable, const pk_mezo_params *p,
                       pk_mezo_state *s, const pk_step_row *rows, size_t n)
{
    if (plain(p) || s == NULL) {
        PK_ASSERT(plain(p));
        for (size_t r = 0; r < n; r++) /* pk_mezo_replay_rows under p's rounding */
            pk_mezo_update_ex(m, trainable, rows[r].seed, p->z, rows[r].lr, rows[r].g,
                              p->weight_decay, p->rounding);
        return;
    }
    for (size_t r = 0; r < n;)
        r += apply_rows(m, trainable, p, s, rows, r, n);
}

/* ---- steps ---------------------------------------------------------------------------------- */

/* The step's sweep: base (the unperturbed evaluation) and, for perturbation i < s->np, seed
 * pk_mezo_step_seed(run, step, i) touching the tensors of its layer mask, at +eps (and -eps with
 * both). Rows are built from s->mean in this order. */
static pk_sweep step_sweep(const pk_model *m, const uint8_t *trainable, const pk_mezo_params *p,
                           pk_mezo_state *s, int64_t step, int base, int both)
{
    for (int i = 0; i < s->np; i++) {
        uint8_t *mk = s->masks + (size_t)i * s->n_t;
        s->seeds[i] = pk_mezo_step_seed(p->seed, step, i);
        pk_mezo_layer_mask(m, trainable, p, s->seeds[i], mk);
        s->mask_of[i] = mk;
    }
    pk_sweep sw = {{0, p->eps, p->z, NULL, both}, s->np, s->seeds, s->mask_of, base};
    return sw;
}

/* s->mean [pk_sweep_evals(sw)]: each evaluation's mean over the step's micro-batches, one
 * loss->sweep call per micro-batch; without one, evaluation by evaluation through loss->fn (a
 * perturbation's + and - in one call), as the estimators did before sweeps. The same sums in the
 * same order either way: the same bits. */
static pk_status sweep_means(pk_model *m, pk_mezo_state *s, const pk_sweep *sw, int n_micro,
                             const pk_mezo_loss *loss)
{
    int E = pk_sweep_evals(sw), per = sw->pert.both ? 2 : 1, base = sw->base;
    pk_status st = PK_OK;
    PK_ASSERT(E <= s->ne);
    for (int e = 0; e < E; e++)
        s->mean[e] = 0.0;
    for (int k = 0; loss->sweep && st == PK_OK && k < n_micro; k++) {
        st = loss->sweep(loss->user, m, k, sw, s->one);
        for (int e = 0; st == PK_OK && e < E; e++)
            s->mean[e] += s->one[e];
    }
    for (int k = 0; !loss->sweep && base && st == PK_OK && k < n_micro; k++) {
        double l[2] = {0.0, 0.0};
        st = loss->fn(loss->user, m, k, NULL, l);
        s->mean[0] += l[0];
    }
    for (int i = 0; !loss->sweep && st == PK_OK && i < sw->n; i++) {
        pk_perturb pert = {sw->seeds[i], sw->pert.scale, sw->pert.kind, sw->masks[i], per == 2};
        double *out = s->mean + base + i * per;
        for (int k = 0; st == PK_OK && k < n_micro; k++) {
            double l[2] = {0.0, 0.0};
            st = loss->fn(loss->user, m, k, &pert, l);
            out[0] += l[0];
            if (per == 2)
                out[1] += l[1];
        }
    }
    for (int e = 0; e < E; e++)
        s->mean[e] /= (double)n_micro;
    return st;
}

static double clip(double g, float c)
{
    if (!isfinite(g) || !(c > 0.0f))
        return g;
    return g > (double)c ? (double)c : (g < -(double)c ? -(double)c : g);
}

static void set_row(pk_step_row *r, int64_t step, int q, uint64_t seed, double g, double lp,
                    double lm, float lr, float eps)
{
    r->step = step;
    r->q_index = q;
    r->seed = seed;
    r->g = (float)g;
    r->loss_plus = (float)lp;
    r->loss_minus = (float)lm;
    r->lr = lr;
    r->eps = eps;
}

/* spsa with layer sampling: pk_mezo_step's arithmetic on each perturbation's layers, the q pairs
 * in one sweep. */
static pk_status spsa_layers(pk_model *m, const uint8_t *trainable, const pk_mezo_params *p,
                             pk_mezo_state *s, int64_t step, int n_micro, const pk_mezo_loss *loss,
                             pk_step_row *rows)
{
    int q = q_of(p);
    float lr_q = pk_mezo_lr_at(p, step) / (float)q;
    pk_sweep sw = step_sweep(m, trainable, p, s, step, 0, 1);
    pk_status st = sweep_means(m, s, &sw, n_micro, loss);
    if (st != PK_OK)
        return st;
    for (int k = 0; k < q; k++) {
        double lp = s->mean[2 * k], lm = s->mean[2 * k + 1];
        double g = (lp - lm) / (2.0 * (double)p->eps);
        set_row(&rows[k], step, k, s->seeds[k], clip(g, p->clip_g), lp, lm, lr_q, p->eps);
        if (!pk_mezo_row_ok(&rows[k]))
            return PK_ERR_NUMERIC;
    }
    return PK_OK;
}

/* fzoo: l0 unperturbed, l_i at W + eps u_i (N one-sided passes), sigma the population standard
 * deviation of the l_i; row i: g = (l_i - b) / sigma (0 when sigma is 0), loss_plus l_i,
 * loss_minus b, lr = lr_at(step) / N, so W -= (lr / N) sum_i g_i u_i. The baseline b is l0, or
 * with fzoo_mean the mean of the l_i, and l0 is not evaluated: the one-sided differences' common
 * second-order part (eps^2 u^T H u / 2, about the same for every u) cancels, and a step costs N
 * evaluations instead of N + 1 (README "Faster convergence"). */
static pk_status fzoo(pk_model *m, const uint8_t *trainable, const pk_mezo_params *p,
                      pk_mezo_state *s, int64_t step, int n_micro, const pk_mezo_loss *loss,
                      pk_step_row *rows)
{
    int N = p->perturbations, base = !p->fzoo_mean;
    float lr_n = pk_mezo_lr_at(p, step) / (float)N;
    double mean = 0;
    pk_sweep sw = step_sweep(m, trainable, p, s, step, base, 0);
    pk_status st = sweep_means(m, s, &sw, n_micro, loss);
    if (st != PK_OK)
        return st;
    const double *li = s->mean + base; /* the perturbed losses */
    double sigma = pk_fzoo_sigma(li, N, &mean), b = base ? s->mean[0] : mean;
    for (int i = 0; i < N; i++) {
        double g = sigma > 0.0 ? (li[i] - b) / sigma : 0.0;
        if (!isfinite(sigma))
            g = sigma;
        set_row(&rows[i], step, i, s->seeds[i], clip(g, p->clip_g), li[i], b, lr_n, p->eps);
        if (!pk_mezo_row_ok(&rows[i]))
            return PK_ERR_NUMERIC;
    }
    return PK_OK;
}

/* hizoo: per perturbation k, l+ and l- at W +- eps z / sqrt(H) (paired). On a Hessian step
 * (pk_mezo_hessian_step: step % K == 0) also the step's one unperturbed l0, all in one sweep;
 * c = alpha |l+ + l- - 2 l0| / (2 eps^2). Rows 2k: the Hessian update (g = c, both losses l0,
 * lr 0: a plain replay of it changes nothing); 2k+1: the weight update (g = (l+ - l-) / 2eps
 * clipped, lr = lr_at(step) / q). Other steps take no l0 and write the weight rows only
 * (q_index 2k+1, H as it is), 2q evaluations: replay tells them apart by their rows. alpha is
 * the weight of each Hessian estimate, not scaled by K (DESIGN 4). */
static pk_status hizoo(pk_model *m, const uint8_t *trainable, const pk_mezo_params *p,
                       pk_mezo_state *s, int64_t step, int n_micro, const pk_mezo_loss *loss,
                       pk_step_row *rows)
{
    int q = q_of(p), hess = pk_mezo_hessian_step(p, step);
    float lr_q = pk_mezo_lr_at(p, step) / (float)q;
    double e2 = 2.0 * (double)p->eps * (double)p->eps;
    pk_sweep sw = step_sweep(m, trainable, p, s, step, hess, 1);
    pk_model_set_perturb_diag(m, (const float *const *)s->h);
    pk_status st = sweep_means(m, s, &sw, n_micro, loss);
    pk_model_set_perturb_diag(m, NULL);
    double l0 = hess ? s->mean[0] : 0.0;
    for (int k = 0; st == PK_OK && k < q; k++) {
        double lp = s->mean[hess + 2 * k], lm = s->mean[hess + 2 * k + 1];
        double g = (lp - lm) / (2.0 * (double)p->eps);
        pk_step_row *w = hess ? &rows[2 * k + 1] : &rows[k]; /* k's weight row */
        if (hess) {
            double c = (double)p->hessian_smooth * fabs(lp + lm - 2.0 * l0) / e2;
            set_row(&rows[2 * k], step, 2 * k, s->seeds[k], c, l0, l0, 0.0f, p->eps);
            if (!pk_mezo_row_ok(&rows[2 * k]))
                st = PK_ERR_NUMERIC;
        }
        set_row(w, step, 2 * k + 1, s->seeds[k], clip(g, p->clip_g), lp, lm, lr_q, p->eps);
        if (!pk_mezo_row_ok(w))
            st = PK_ERR_NUMERIC;
    }
    return st;
}

pk_status pk_mezo_step_ex(pk_model *m, const uint8_t *trainable, const pk_mezo_params *p,
                          pk_mezo_state *s, int64_t step, int n_micro, pk_mezo_loss_fn fn,
                          void *user, pk_step_row *rows, double *forward_s, double *update_s)
{
    pk_mezo_loss loss = {fn, NULL, user};
    return pk_mezo_step_sweep(m, trainable, p, s, step, n_micro, &loss, rows, forward_s, update_s);
}

pk_status pk_mezo_step_sweep(pk_model *m, const uint8_t *trainable, const pk_mezo_params *p,
                             pk_mezo_state *s, int64_t step, int n_micro, const pk_mezo_loss *loss,
                             pk_step_row *rows, double *forward_s, double *update_s)
{
    if (plain(p))
        return pk_mezo_step(m, trainable, p, step, n_micro, loss->fn, loss->user, rows, forward_s,
                            update_s);
    if (s == NULL || n_micro < 1 || !(p->eps > 0.0f) || loss->fn == NULL)
        return PK_ERR_ARG;
    double t0 = pk_time_now();
    pk_status st = p->estimator == PK_EST_FZOO ? fzoo(m, trainable, p, s, step, n_micro, loss, rows)
                   : p->estimator == PK_EST_HIZOO
                       ? hizoo(m, trainable, p, s, step, n_micro, loss, rows)
                       : spsa_layers(m, trainable, p, s, step, n_micro, loss, rows);
    if (st != PK_OK)
        return st;
    double t1 = pk_time_now();
    /* every loss was taken at the same weights (and H); now the sweeps, in row order */
    pk_mezo_replay_ex(m, trainable, p, s, rows, (size_t)pk_mezo_step_rows(p, step));
    double t2 = pk_time_now();
    if (forward_s)
        *forward_s = t1 - t0;
    if (update_s)
        *update_s = t2 - t1;
    return PK_OK;
}
