/* mezo.c: the MeZO optimizer (pk_mezo.h, DESIGN 4): step seeds, schedules, trainable masks and
 * LoRA specs, the update sweep (16-bit weights with seeded stochastic rounding), projected
 * gradients, the step and the weights hash.
 *
 * Reproducibility: the update arithmetic is w - lr * ((g * z) + (wd * w)), each operation rounded
 * once. gcc in ISO C mode (-std=c11, as CMake builds us) never contracts to FMA; clang is told
 * not to by the pragma below. Blocks are fixed-size ranges of one tensor, so the value written
 * for an element never depends on how blocks are spread over threads; the rounding noise of an
 * element is a pure function of (step seed, tensor key, index). */
#include "pk_mezo.h"

#include "mezo_impl.h"

#include "pk_crypto.h"

#include <inttypes.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __clang__
#pragma clang fp contract(off)
#endif

#define UPDATE_BLOCK 4096

pk_mezo_params pk_mezo_default_params(void)
{
    pk_mezo_params p;
    memset(&p, 0, sizeof p);
    p.eps = 1e-3f;
    p.lr = 1e-5f;
    p.weight_decay = 0.0f;
    p.clip_g = 0.0f;
    p.schedule = PK_SCHEDULE_CONSTANT;
    p.warmup = 0;
    p.steps_total = 0;
    p.spsa_q = 1;
    p.z = PK_Z_GAUSSIAN;
    p.seed = 0;
    p.estimator = PK_EST_SPSA;
    p.perturbations = 8;
    p.hessian_smooth = 1e-8f; /* 1e-6 grew H into a rate decay (README "Faster convergence") */
    p.hessian_budget = 0.10f;
    p.hessian_every = 16; /* H holds no per-element curvature on stories260k (README) */
    p.perturb_layers = 0;
    p.perturb_stages = 0;
    p.rounding = PK_ROUND_STOCHASTIC;
    return p;
}

int pk_rounding_parse(const char *s, pk_rounding *out)
{
    if (s != NULL && !strcmp(s, "stochastic"))
        *out = PK_ROUND_STOCHASTIC;
    else if (s != NULL && !strcmp(s, "nearest"))
        *out = PK_ROUND_NEAREST;
    else
        return -1;
    return 0;
}

const char *pk_rounding_name(pk_rounding r)
{
    return r == PK_ROUND_NEAREST ? "nearest" : "stochastic";
}

float pk_mezo_lr_at(const pk_mezo_params *p, int64_t step)
{
    double lr = (double)p->lr;
    if (p->warmup > 0 && step < p->warmup)
        return (float)(lr * (double)(step + 1) / (double)p->warmup);
    if (p->schedule == PK_SCHEDULE_CONSTANT || p->steps_total <= p->warmup)
        return p->lr;
    double frac = (double)(step - p->warmup) / (double)(p->steps_total - p->warmup);
    if (frac > 1.0)
        frac = 1.0;
    if (frac < 0.0)
        frac = 0.0;
    if (p->schedule == PK_SCHEDULE_LINEAR)
        return (float)(lr * (1.0 - frac));
    /* cosine: libm cos is fine here, the value is logged and replay uses the logged lr */
    return (float)(lr * 0.5 * (1.0 + cos(3.14159265358979323846 * frac)));
}

uint64_t pk_mezo_step_seed(uint64_t run_seed, int64_t step, int q)
{
    uint64_t h = pk_splitmix64(run_seed ^ 0x4d655a4f53454544ull); /* "MeZOSEED" */
    h = pk_splitmix64(h ^ (uint64_t)step);
    return pk_splitmix64(h ^ ((uint64_t)(uint32_t)q << 32));
}

/* One item of a LoRA spec before targets=: r=, alpha= or seed=. 0 if well formed. */
static int lora_item(const char *tok, pk_lora_params *p)
{
    char *end = NULL;
    const char *eq = strchr(tok, '=');
    if (!strncmp(tok, "r=", 2)) {
        long v = strtol(tok + 2, &end, 10);
        p->r = v >= 1 && v <= PK_LORA_MAX_RANK ? (int)v : -1;
    } else if (!strncmp(tok, "alpha=", 6)) {
        p->alpha = strtof(tok + 6, &end);
    } else if (!strncmp(tok, "seed=", 5) && tok[5] != '-') {
        p->seed = strtoull(tok + 5, &end, 10);
    }
    return end == NULL || *end != 0 || end == eq + 1 || p->r < 0 || !(p->alpha > 0.0f) ||
                   !isfinite(p->alpha)
               ? -1
               : 0;
}

/* The comma-separated items of s (modified in place). */
static int lora_keys(char *s, pk_lora_params *p, char *err, size_t errlen)
{
    while (*s) {
        char *c = strchr(s, ',');
        if (c)
            *c = 0;
        if (*s && lora_item(s, p) != 0) {
            pk_seterr(err, errlen,
                      "LoRA spec: bad item '%s' (want r=1..%d, alpha=X > 0, seed=N, then "
                      "targets=REGEX last)",
                      s, PK_LORA_MAX_RANK);
            return -1;
        }
        if (!c)
            break;
        s = c + 1;
    }
    return 0;
}

int pk_mezo_lora_parse(const char *spec, pk_lora_params *p, char *err, size_t errlen)
{
    if (spec == NULL || strncmp(spec, "lora", 4) != 0 || (spec[4] != 0 && spec[4] != ':'))
        return 0;
    memset(p, 0, sizeof *p);
    p->r = 8;
    p->alpha = 16.0f;
    if (spec[4] == 0)
        return 1;
    char keys[256];
    const char *body = spec + 5, *tg = strstr(body, "targets=");
    if (tg != NULL && tg != body && tg[-1] != ',')
        tg = NULL; /* "targets=" inside another item's value */
    size_t kl = tg ? (size_t)(tg - body) : strlen(body);
    if (kl >= sizeof keys || (tg && strlen(tg + 8) >= sizeof p->targets)) {
        pk_seterr(err, errlen, "LoRA spec too long");
        return -1;
    }
    memcpy(keys, body, kl);
    keys[kl] = 0;
    if (tg)
        strcpy(p->targets, tg + 8);
    return lora_keys(keys, p, err, errlen) == 0 ? 1 : -1;
}

void pk_mezo_trainable_canonical(const char *spec, char *out, size_t n)
{
    pk_lora_params p;
    if (pk_mezo_lora_parse(spec, &p, NULL, 0) != 1) {
        snprintf(out, n, "%s", spec ? spec : "all");
        return;
    }
    int k = snprintf(out, n, "lora:r=%d,alpha=%.9g,seed=%" PRIu64, p.r, (double)p.alpha, p.seed);
    if (p.targets[0] && k > 0 && (size_t)k < n)
        snprintf(out + k, n - (size_t)k, ",targets=%s", p.targets);
}

/* The mask of the tensors for which is(m, i) holds (the attached adapter or scales). */
static pk_status mask_of(const pk_model *m, int (*is)(const pk_model *, size_t), uint8_t **out)
{
    size_t n = pk_model_n_tensors(m);
    uint8_t *mask = calloc(n ? n : 1, 1);
    if (mask == NULL)
        return PK_ERR_NOMEM;
    for (size_t i = 0; i < n; i++)
        mask[i] = (uint8_t)(is(m, i) != 0);
    *out = mask;
    return PK_OK;
}

/* A LoRA spec: the adapter attached (or found attached), its A and B tensors trainable. */
static pk_status lora_mask(pk_model *m, const char *spec, uint8_t **out, char *err, size_t errlen)
{
    pk_lora_params p;
    if (pk_mezo_lora_parse(spec, &p, err, errlen) < 0)
        return PK_ERR_ARG;
    pk_status st = pk_model_lora_attach(m, &p, NULL, err, errlen);
    if (st != PK_OK)
        return st;
    return mask_of(m, pk_model_tensor_is_lora, out);
}

/* "top:K" or "top-mlp:K": K of 1 .. the model's blocks into *k, *mlp set for top-mlp (1), not
 * such a spec (0), a bad K (-1). */
static int top_spec(const pk_model *m, const char *spec, int *k, int *mlp, char *err, size_t errlen)
{
    size_t skip = 0;
    if (spec != NULL && strncmp(spec, "top:", 4) == 0)
        skip = 4;
    else if (spec != NULL && strncmp(spec, "top-mlp:", 8) == 0)
        skip = 8;
    if (skip == 0)
        return 0;
    int L = pk_model_n_layers(m);
    char *end = NULL;
    long v = spec[skip] >= '0' && spec[skip] <= '9' ? strtol(spec + skip, &end, 10) : 0;
    if (end == NULL || *end != '\0' || v < 1 || v > L) {
        pk_seterr(err, errlen,
                  "trainable tensors '%s': want %.*sK, the last K of the model's %d blocks "
                  "(K from 1 to %d)",
                  spec, (int)skip, spec, L, L);
        return -1;
    }
    *k = (int)v;
    *mlp = skip == 8;
    return 1;
}

/* "all", "bitfit", "top:K" (the tensors of the last K blocks), "top-mlp:K" (their MLP halves:
 * the norm before or after the FFN and the FFN, pk_model_tensor_stage) or a regex over tensor
 * names. */
static pk_status regex_mask(const pk_model *m, const char *spec, uint8_t **out, char *err,
                            size_t errlen)
{
    size_t n = pk_model_n_tensors(m);
    uint8_t *mask = calloc(n ? n : 1, 1);
    regex_t re;
    int have_re = 0;
    size_t count = 0;
    pk_status st = PK_OK;
    *out = NULL;
    if (mask == NULL)
        return PK_ERR_NOMEM;
    int all = spec == NULL || !strcmp(spec, "all");
    int bitfit = spec != NULL && !strcmp(spec, "bitfit");
    int top = 0, mlp = 0, is_top = top_spec(m, spec, &top, &mlp, err, errlen);
    int first = pk_model_n_layers(m) - top; /* top:K: blocks first .. L-1 */
    if (is_top < 0) {
        st = PK_ERR_ARG;
        goto out;
    }
    if (!all && !bitfit && !is_top) {
        int rc = regcomp(&re, spec, REG_EXTENDED | REG_NOSUB);
        if (rc != 0) {
            char msg[128];
            regerror(rc, &re, msg, sizeof msg);
            pk_seterr(err, errlen, "trainable tensors '%s': bad regular expression: %s", spec, msg);
            st = PK_ERR_ARG;
            goto out;
        }
        have_re = 1;
    }
    for (size_t i = 0; i < n; i++) {
        pk_tensor_info ti;
        st = pk_model_tensor(m, i, &ti);
        if (st != PK_OK)
            goto out;
        int on = all || (bitfit && ti.is_bias_or_norm) ||
                 (is_top && pk_tensor_layer(ti.name) >= first &&
                  (!mlp || pk_model_tensor_stage(m, i) % 2 == 1)) ||
                 (have_re && regexec(&re, ti.name, 0, NULL, 0) == 0);
        mask[i] = (uint8_t)(on != 0);
        count += (size_t)(on != 0);
    }
    if (count == 0) {
        pk_seterr(err, errlen, "trainable tensors '%s' match no tensor of the model", spec);
        st = PK_ERR_ARG;
        goto out;
    }
    *out = mask;
    mask = NULL;
out:
    if (have_re)
        regfree(&re);
    free(mask);
    return st;
}

/* "scales": the fp32 block scales of the Q8_0 / Q4_0 weights (attached on first use). */
static pk_status scales_mask(pk_model *m, uint8_t **out, char *err, size_t errlen)
{
    pk_status st = pk_model_scales_attach(m, NULL, err, errlen);
    if (st != PK_OK)
        return st;
    return mask_of(m, pk_model_tensor_is_scales, out);
}

pk_status pk_mezo_trainable(pk_model *m, const char *spec, uint8_t **out, char *err, size_t errlen)
{
    pk_lora_params p;
    *out = NULL;
    if (spec != NULL && !strcmp(spec, "scales"))
        return scales_mask(m, out, err, errlen);
    if (pk_mezo_lora_parse(spec, &p, NULL, 0) != 0)
        return lora_mask(m, spec, out, err, errlen);
    return regex_mask(m, spec, out, err, errlen);
}

/* The stochastic-rounding stream of a step: Philox under a key of its own, derived from the step
 * seed, so the rounding noise is independent of z (pk_rng_bits with z's seed would reuse its
 * words). "SRNDSEED" */
static uint64_t sr_seed(uint64_t seed)
{
    return pk_splitmix64(seed ^ 0x53524e4453454544ull);
}

/* v to a bf16 value: the upper neighbour with probability (v - lower) / spacing, from the low 16
 * bits of u (adding them to the magnitude's bits carries into the kept part exactly that often;
 * the carry crosses binades and the subnormal boundary correctly). Exact in bf16. */
static float sr_bf16(float v, uint32_t u)
{
    uint32_t b;
    memcpy(&b, &v, 4);
    if ((b & 0x7f800000u) == 0x7f800000u) /* inf, NaN */
        return v;
    b = (b + (u & 0xffffu)) & 0xffff0000u;
    memcpy(&v, &b, 4);
    return v;
}

/* The same for f16: in its normal range 13 mantissa bits go; below 2^-14 (f16 subnormals) the
 * grid is the multiples of 2^-24, rounded up when a 24-bit uniform falls below the fraction.
 * Beyond 65504 the result overflows to inf as round-to-nearest would. Exact in f16. */
static float sr_f16(float v, uint32_t u)
{
    uint32_t b;
    memcpy(&b, &v, 4);
    uint32_t mag = b & 0x7fffffffu;
    if (mag >= 0x7f800000u)
        return v;
    if (mag >= 0x38800000u) { /* 2^-14 */
        b = (b + (u & 0x1fffu)) & ~0x1fffu;
        memcpy(&v, &b, 4);
        return v;
    }
    float q = fabsf(v) * 0x1p24f; /* exact: a power-of-two scaling, q < 2^10 */
    float fl = floorf(q);
    float frac = q - fl;                  /* exact */
    float r = (float)(u >> 8) * 0x1p-24f; /* [0, 1) */
    float k = r < frac ? fl + 1.0f : fl;  /* an integer below 2^10: exact */
    float out = k * 0x1p-24f;
    return v < 0.0f ? -out : out;
}

/* n updated fp32 values w rounded stochastically to dt, then narrowed (exact by then). */
static void narrow_stochastic(pk_dtype dt, float *w, const uint32_t *u, size_t n, void *dst)
{
    if (dt == PK_DTYPE_BF16) {
        for (size_t j = 0; j < n; j++)
            w[j] = sr_bf16(w[j], u[j]);
    } else {
        for (size_t j = 0; j < n; j++)
            w[j] = sr_f16(w[j], u[j]);
    }
    pk_narrow(dt, w, n, dst);
}

void pk_mezo_block_store(const pk_tensor_info *ti, uint64_t seed, pk_rounding rounding,
                         size_t start, size_t n, float *w, uint32_t *u)
{
    if (ti->dtype == PK_DTYPE_F32)
        return;
    if (rounding == PK_ROUND_NEAREST) {
        pk_narrow(ti->dtype, w, n, (char *)ti->data + start * 2);
    } else {
        pk_rng_bits(sr_seed(seed), ti->key, start, n, u);
        narrow_stochastic(ti->dtype, w, u, n, (char *)ti->data + start * 2);
    }
}

/* Per-thread scratch of the update sweep. */
typedef struct update_scratch {
    float z[UPDATE_BLOCK], w[UPDATE_BLOCK];
    uint32_t u[UPDATE_BLOCK];
} update_scratch;

float *pk_mezo_block_fp32(const pk_tensor_info *ti, size_t start, size_t n, float *w)
{
    if (ti->dtype == PK_DTYPE_F32)
        return (float *)ti->data + start;
    pk_widen(ti->dtype, (const char *)ti->data + start * 2, n, w);
    return w;
}

/* One block of one tensor: w[j] = w[j] - lr * ((g * z[j]) + (wd * w[j])); 16-bit tensors through
 * fp32, back with stochastic rounding (or to nearest: a run from before it). */
static void update_block(const pk_tensor_info *ti, uint64_t seed, pk_z_kind kind, float lr, float g,
                         float wd, pk_rounding rounding, size_t start, size_t n, update_scratch *s)
{
    float *z = s->z, *w = s->w;
    pk_z_fill(seed, ti->key, start, n, kind, z);
    float *dst = pk_mezo_block_fp32(ti, start, n, w);
    if (wd != 0.0f) {
        for (size_t j = 0; j < n; j++) {
            float a = g * z[j];
            float b = wd * dst[j];
            float t = a + b;
            dst[j] = dst[j] - lr * t;
        }
    } else {
        for (size_t j = 0; j < n; j++) {
            float a = g * z[j];
            dst[j] = dst[j] - lr * a;
        }
    }
    pk_mezo_block_store(ti, seed, rounding, start, n, w, s->u);
}

void pk_mezo_update(pk_model *m, const uint8_t *trainable, uint64_t seed, pk_z_kind kind, float lr,
                    float g, float wd)
{
    pk_mezo_update_ex(m, trainable, seed, kind, lr, g, wd, PK_ROUND_STOCHASTIC);
}

/* Block b (UPDATE_BLOCK elements) of a tensor's update. */
static void update_nth(const pk_tensor_info *ti, uint64_t seed, pk_z_kind kind, float lr, float g,
                       float wd, pk_rounding rounding, long b, update_scratch *sc)
{
    size_t start = (size_t)b * UPDATE_BLOCK;
    size_t n = ti->numel - start < UPDATE_BLOCK ? ti->numel - start : UPDATE_BLOCK;
    update_block(ti, seed, kind, lr, g, wd, rounding, start, n, sc);
}

void pk_mezo_update_ex(pk_model *m, const uint8_t *trainable, uint64_t seed, pk_z_kind kind,
                       float lr, float g, float wd, pk_rounding rounding)
{
    size_t nt = pk_model_n_tensors(m);
    for (size_t i = 0; i < nt; i++) {
        if (trainable != NULL && !trainable[i])
            continue;
        pk_tensor_info ti;
        pk_status st = pk_model_tensor(m, i, &ti);
        PK_ASSERT(st == PK_OK);
        float twd = ti.is_bias_or_norm ? 0.0f : wd;
        long nb = (long)((ti.numel + UPDATE_BLOCK - 1) / UPDATE_BLOCK);
        int nthreads = nb < 4 ? 1 : pk_threads_get();
        if (nthreads == 1) { /* no team: libgomp's team of one pays two futex calls a region */
            update_scratch sc;
            for (long b = 0; b < nb; b++)
                update_nth(&ti, seed, kind, lr, g, twd, rounding, b, &sc);
            continue;
        }
#pragma omp parallel num_threads(nthreads)
        {
            update_scratch sc;
#pragma omp for schedule(static) nowait
            for (long b = 0; b < nb; b++)
                update_nth(&ti, seed, kind, lr, g, twd, rounding, b, &sc);
        }
    }
}

void pk_mezo_replay_rows(pk_model *m, const uint8_t *trainable, pk_z_kind kind, float wd,
                         const pk_step_row *rows, size_t n)
{
    for (size_t r = 0; r < n; r++)
        pk_mezo_update(m, trainable, rows[r].seed, kind, rows[r].lr, rows[r].g, wd);
}

pk_status pk_mezo_projected_grad(pk_model *m, const uint8_t *trainable, uint64_t seed,
                                 pk_z_kind kind, float eps, int n_micro, pk_mezo_loss_fn fn,
                                 void *user, double *g, double *loss_plus, double *loss_minus)
{
    if (n_micro < 1 || !(eps > 0.0f))
        return PK_ERR_ARG;
    double lp = 0.0, lm = 0.0;
    for (int k = 0; k < n_micro; k++) {
        /* both passes in one call: the model runs them side by side where it pairs the shape */
        pk_perturb pert = {seed, eps, kind, trainable, 1};
        double l[2] = {0.0, 0.0};
        pk_status st = fn(user, m, k, &pert, l);
        if (st != PK_OK)
            return st;
        lp += l[0];
        lm += l[1];
    }
    lp /= (double)n_micro;
    lm /= (double)n_micro;
    if (loss_plus)
        *loss_plus = lp;
    if (loss_minus)
        *loss_minus = lm;
    if (g)
        *g = (lp - lm) / (2.0 * (double)eps);
    return PK_OK;
}

typedef struct lm_batch_ctx {
    const pk_batch *batch;
    const uint8_t *mask;
} lm_batch_ctx;

static pk_status lm_batch_loss(void *user, pk_model *m, int micro, const pk_perturb *pert,
                               double *loss)
{
    const lm_batch_ctx *c = user;
    (void)micro;
    return pk_model_loss(m, c->batch, c->mask, pert, NULL, NULL, loss);
}

pk_status pk_mezo_projected_grad_batch(pk_model *m, const uint8_t *trainable, uint64_t seed,
                                       pk_z_kind kind, float eps, const pk_batch *batch,
                                       const uint8_t *target_mask, double *g, double *loss_plus,
                                       double *loss_minus)
{
    lm_batch_ctx c = {batch, target_mask};
    return pk_mezo_projected_grad(m, trainable, seed, kind, eps, 1, lm_batch_loss, &c, g, loss_plus,
                                  loss_minus);
}

int pk_mezo_row_ok(const pk_step_row *r)
{
    return isfinite(r->g) && isfinite(r->loss_plus) && isfinite(r->loss_minus) &&
           (double)r->loss_plus <= PK_MEZO_LOSS_DIVERGED &&
           (double)r->loss_minus <= PK_MEZO_LOSS_DIVERGED;
}

pk_status pk_mezo_step(pk_model *m, const uint8_t *trainable, const pk_mezo_params *p, int64_t step,
                       int n_micro, pk_mezo_loss_fn fn, void *user, pk_step_row *rows,
                       double *forward_s, double *update_s)
{
    int q = p->spsa_q < 1 ? 1 : p->spsa_q;
    float lr = pk_mezo_lr_at(p, step);
    float lr_q = lr / (float)q;
    double t0 = pk_time_now();
    for (int k = 0; k < q; k++) {
        uint64_t seed = pk_mezo_step_seed(p->seed, step, k);
        double g = 0, lp = 0, lm = 0;
        pk_status st = pk_mezo_projected_grad(m, trainable, seed, p->z, p->eps, n_micro, fn, user,
                                              &g, &lp, &lm);
        if (st != PK_OK)
            return st;
        /* g is not finite when a loss is not: the run diverged. Such a g is not clipped (inf
         * would clip to a finite g); rows[k] keeps it so the caller can say what happened. */
        if (isfinite(g) && p->clip_g > 0.0f) {
            double c = (double)p->clip_g;
            g = g > c ? c : (g < -c ? -c : g);
        }
        rows[k].step = step;
        rows[k].q_index = k;
        rows[k].seed = seed;
        rows[k].g = (float)g;
        rows[k].loss_plus = (float)lp;
        rows[k].loss_minus = (float)lm;
        rows[k].lr = lr_q;
        rows[k].eps = p->eps;
        if (!pk_mezo_row_ok(&rows[k])) /* also values beyond the float range */
            return PK_ERR_NUMERIC;
    }
    double t1 = pk_time_now();
    /* all q gradients were taken at the same weights; now the q sweeps */
    for (int k = 0; k < q; k++)
        pk_mezo_update_ex(m, trainable, rows[k].seed, p->z, rows[k].lr, rows[k].g, p->weight_decay,
                          p->rounding);
    double t2 = pk_time_now();
    if (forward_s)
        *forward_s = t1 - t0;
    if (update_s)
        *update_s = t2 - t1;
    return PK_OK;
}

static void hash_le64(pk_hash_state *h, int64_t v)
{
    unsigned char b[8];
    uint64_t u = (uint64_t)v;
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(u >> (8 * i));
    pk_hash_update(h, b, sizeof b);
}

pk_status pk_weights_hash(const pk_model *m, char hex[65])
{
    pk_hash_state h;
    uint8_t out[PK_HASH_BYTES];
    pk_hash_init(&h);
    size_t nt = pk_model_n_tensors(m);
    for (size_t i = 0; i < nt; i++) {
        pk_tensor_info ti;
        pk_status s = pk_model_tensor(m, i, &ti);
        if (s != PK_OK)
            return s; /* the state holds nothing to release */
        const char *dn = pk_dtype_name(ti.dtype);
        pk_hash_update(&h, ti.name, strlen(ti.name) + 1);
        pk_hash_update(&h, dn, strlen(dn) + 1);
        hash_le64(&h, ti.ndim);
        for (int d = 0; d < ti.ndim; d++)
            hash_le64(&h, ti.shape[d]);
        pk_hash_update(&h, ti.data, pk_dtype_row_bytes(ti.dtype, ti.numel));
    }
    pk_hash_final(&h, out);
    pk_hex_encode(hex, 65, out, sizeof out);
    return PK_OK;
}
