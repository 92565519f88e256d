/* adapter.c: LoRA adapters as ordinary model tensors (pk_model.h, DESIGN 4): attaching A and B
 * to the targeted linear layers (seeded A, zero B), keeping the name-sorted tensor order and
 * every tensor index of the model consistent, and merging the adapters back into the base
 * weights for export. The adapter term itself is computed by forward.c's linear(). */
#include <cblas.h>
#include <math.h>
#include <regex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_impl.h"
#include "quant_impl.h"

/* Rewrites one kept index through the map ctx (old index -> new index, -1 = gone). */
static void remap_index(int *index, const void *ctx)
{
    const long *map = ctx;
    if (*index >= 0)
        *index = (int)map[*index];
}

typedef struct order_item {
    const char *name;
    size_t old;
} order_item;

static int cmp_item(const void *a, const void *b)
{
    return strcmp(((const order_item *)a)->name, ((const order_item *)b)->name);
}

/* Sorts m->t by name again after tensors were appended, rewriting the kept indices. */
static pk_status resort(pk_model *m)
{
    size_t n = m->n_t;
    order_item *it = malloc(n * sizeof *it);
    long *map = malloc(n * sizeof *map);
    pk_tensor *t = malloc(n * sizeof *t);
    pk_status st = it && map && t ? PK_OK : PK_ERR_NOMEM;
    if (st != PK_OK)
        goto out;
    for (size_t i = 0; i < n; i++)
        it[i] = (order_item){m->t[i].name, i};
    qsort(it, n, sizeof *it, cmp_item);
    for (size_t k = 0; k < n; k++) {
        t[k] = m->t[it[k].old];
        map[it[k].old] = (long)k;
    }
    pk_model_each_index(m, remap_index, map);
    memcpy(m->t, t, n * sizeof *t);
    for (size_t k = 0; k < n; k++) {
        if (t[k].lora_a) {
            m->t[k].lora_a = (int)map[t[k].lora_a - 1] + 1;
            m->t[k].lora_b = (int)map[t[k].lora_b - 1] + 1;
        }
        if (t[k].scales)
            m->t[k].scales = (int)map[t[k].scales - 1] + 1;
    }
out:
    free(it);
    free(map);
    free(t);
    return st;
}

const char *pk_model_lora_default_targets(const pk_model *m)
{
    switch (m->cfg.arch) {
    case ARCH_GPT2:
        return "c_attn";
    case ARCH_ROBERTA:
        return "query|value";
    default:
        return "q_proj|v_proj";
    }
}

int pk_model_lora(const pk_model *m, pk_lora_params *out)
{
    if (m->lora.r == 0)
        return 0;
    if (out)
        *out = m->lora;
    return 1;
}

int pk_lora_of(const pk_model *m, int wi, int *a, int *b)
{
    const pk_tensor *t = &m->t[wi];
    *a = t->lora_a - 1;
    *b = t->lora_b - 1;
    return t->lora_a != 0;
}

int pk_model_tensor_is_lora(const pk_model *m, size_t i)
{
    const char *n = m->t[i].name;
    size_t l = strlen(n), s = strlen(".lora_A.weight");
    return l > s && (!strcmp(n + l - s, ".lora_A.weight") || !strcmp(n + l - s, ".lora_B.weight"));
}

/* The linear weights an adapter may target: those forward.c runs through linear(). */
static size_t linear_weights(const pk_model *m, int *out)
{
    size_t n = 0;
    int top[] = {m->proj_in, m->proj_out, m->hd_dense_w};
    for (int l = 0; l < m->cfg.L; l++) {
        const pk_layer *y = &m->layers[l];
        int w[] = {y->q_w, y->k_w, y->v_w, y->o_w, y->gate_w, y->fc1_w, y->fc2_w};
        for (size_t i = 0; i < sizeof w / sizeof w[0]; i++)
            if (w[i] >= 0)
                out[n++] = w[i];
    }
    for (size_t i = 0; i < sizeof top / sizeof top[0]; i++)
        if (top[i] >= 0)
            out[n++] = top[i];
    return n;
}

/* 1 if the regex matches the whole module name (weight name minus ".weight") or its last
 * dot-separated component. */
static int module_matches(const regex_t *re, const char *wname)
{
    char mod[256];
    size_t l = strlen(wname);
    if (l < 8 || l - 7 >= sizeof mod || strcmp(wname + l - 7, ".weight") != 0)
        return 0;
    memcpy(mod, wname, l - 7);
    mod[l - 7] = 0;
    const char *last = strrchr(mod, '.');
    return regexec(re, mod, 0, NULL, 0) == 0 || (last && regexec(re, last + 1, 0, NULL, 0) == 0);
}

/* One new fp32 tensor [d0, d1] named "<module>.lora_X.weight" after weight `wname`; the heap
 * block holds the data and, after it, the initial values (pk_model_restore_base copies them
 * back, as for the loader's heap copies). */
static pk_status new_tensor(pk_tensor *t, const char *wname, const char *which, int64_t d0,
                            int64_t d1)
{
    size_t l = strlen(wname) - 7, nb = (size_t)d0 * (size_t)d1 * 4;
    memset(t, 0, sizeof *t);
    t->name = malloc(l + 16);
    t->owned = calloc(2, nb);
    if (!t->name || !t->owned)
        return PK_ERR_NOMEM;
    memcpy(t->name, wname, l);
    snprintf(t->name + l, 16, ".%s.weight", which);
    t->dtype = PK_DTYPE_F32;
    t->ndim = 2;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->shape[2] = t->shape[3] = 1;
    t->numel = (size_t)d0 * (size_t)d1;
    t->rows = (size_t)d0;
    t->cols = (size_t)d1;
    t->key = pk_rng_tensor_key(t->name);
    t->data = t->owned;
    t->src = (char *)t->owned + nb;
    return PK_OK;
}

/* A [r, in]: uniform in (-1/sqrt(in), 1/sqrt(in)) from 24-bit uniforms of the counter generator
 * (so the bits depend on the seed, the name and the index only). */
static void init_a(pk_tensor *t, uint64_t seed, size_t in)
{
    float *a = t->data, bound = 1.0f / sqrtf((float)in);
    uint32_t u[256];
    for (size_t s = 0; s < t->numel; s += 256) {
        size_t n = t->numel - s < 256 ? t->numel - s : 256;
        pk_rng_bits(seed, t->key, s, n, u);
        for (size_t j = 0; j < n; j++) {
            float x = ((float)(u[j] >> 8) + 0.5f) * 0x1p-23f - 1.0f; /* (-1, 1), exact */
            a[s + j] = x * bound;
        }
    }
    memcpy((void *)(uintptr_t)t->src, t->data, t->numel * 4);
}

static int same_params(const pk_lora_params *a, const pk_lora_params *b)
{
    return a->r == b->r && a->alpha == b->alpha && a->seed == b->seed &&
           !strcmp(a->targets, b->targets);
}

static pk_status check_params(const pk_model *m, const pk_lora_params *p, char *err, size_t errlen)
{
    if (p->r < 1 || p->r > PK_LORA_MAX_RANK || !(p->alpha > 0.0f) || !isfinite(p->alpha)) {
        pk_seterr(err, errlen, "LoRA rank %d / alpha %g out of range (rank 1..%d, alpha > 0)", p->r,
                  (double)p->alpha, PK_LORA_MAX_RANK);
        return PK_ERR_ARG;
    }
    if (m->lora.r != 0 && !same_params(&m->lora, p)) {
        pk_seterr(err, errlen, "the model already has another LoRA adapter (r=%d, targets '%s')",
                  m->lora.r, m->lora.targets);
        return PK_ERR_ARG;
    }
    return PK_OK;
}

/* The targeted linear weights into sel[] (capacity 10 * L + 3). */
static pk_status select_targets(const pk_model *m, const char *targets, int *sel, size_t *n_sel,
                                char *err, size_t errlen)
{
    char pat[200];
    regex_t re;
    snprintf(pat, sizeof pat, "^(%s)$", targets);
    int rc = regcomp(&re, pat, REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
        char msg[128];
        regerror(rc, &re, msg, sizeof msg);
        pk_seterr(err, errlen, "LoRA targets '%s': bad regular expression: %s", targets, msg);
        return PK_ERR_ARG;
    }
    size_t n = linear_weights(m, sel), k = 0;
    for (size_t i = 0; i < n; i++)
        if (module_matches(&re, m->t[sel[i]].name))
            sel[k++] = sel[i];
    regfree(&re);
    *n_sel = k;
    if (k == 0) {
        pk_seterr(err, errlen,
                  "LoRA targets '%s' match no linear layer of the model (modules are named "
                  "like %.*s)",
                  targets, (int)strlen(m->t[m->layers[0].q_w].name) - 7,
                  m->t[m->layers[0].q_w].name);
        return PK_ERR_ARG;
    }
    return PK_OK;
}

/* Appends the A and B tensors of each selected weight, then restores the name order. */
static pk_status add_pairs(pk_model *m, const pk_lora_params *p, const int *sel, size_t k)
{
    size_t n0 = m->n_t;
    pk_tensor *t = realloc(m->t, (n0 + 2 * k) * sizeof *t);
    if (!t)
        return PK_ERR_NOMEM;
    m->t = t;
    for (size_t i = 0; i < k; i++) {
        pk_tensor *w = &m->t[sel[i]], *a = &m->t[n0 + 2 * i], *b = a + 1;
        int64_t in = (int64_t)(m->conv1d ? w->rows : w->cols);
        int64_t out = (int64_t)(m->conv1d ? w->cols : w->rows);
        pk_status st = new_tensor(a, w->name, "lora_A", p->r, in);
        if (st == PK_OK)
            st = new_tensor(b, w->name, "lora_B", out, p->r);
        m->n_t = n0 + 2 * i + 2; /* so pk_model_free releases what was made */
        if (st != PK_OK)
            return st;
        init_a(a, p->seed, (size_t)in);
        w->lora_a = (int)(n0 + 2 * i) + 1;
        w->lora_b = (int)(n0 + 2 * i) + 2;
        m->weight_bytes += (a->numel + b->numel) * 4;
    }
    return resort(m);
}

pk_status pk_model_lora_attach(pk_model *m, const pk_lora_params *p, size_t *n_adapted, char *err,
                               size_t errlen)
{
    pk_lora_params q = *p;
    if (!q.targets[0])
        snprintf(q.targets, sizeof q.targets, "%s", pk_model_lora_default_targets(m));
    pk_status st = check_params(m, &q, err, errlen);
    if (st != PK_OK)
        return st;
    int *sel = malloc((10 * (size_t)m->cfg.L + 3) * sizeof *sel);
    size_t k = 0;
    if (!sel)
        return PK_ERR_NOMEM;
    st = select_targets(m, q.targets, sel, &k, err, errlen);
    if (st == PK_OK && m->lora.r == 0) {
        st = add_pairs(m, &q, sel, k);
        if (st == PK_OK) {
            m->lora = q;
            m->lora_scale = q.alpha / (float)q.r;
            m->rB = m->rT = m->rTk = m->rthreads = m->rnp = 0; /* re-laid out at next reserve */
        }
    }
    if (st == PK_OK && n_adapted)
        *n_adapted = k;
    free(sel);
    return st;
}

/* w (fp32 [rows, cols]) += scale * B A, transposed for GPT-2's Conv1D ([in, out]). */
static void fold(const pk_model *m, float *w, const pk_tensor *a, const pk_tensor *b)
{
    int r = (int)a->rows, in = (int)a->cols, out = (int)b->rows;
    if (m->conv1d) /* W [in, out] += scale * A^T B^T */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasTrans, in, out, r, m->lora_scale, a->data, in,
                    b->data, r, 1.0f, w, out);
    else /* W [out, in] += scale * B A */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, out, in, r, m->lora_scale, b->data,
                    r, a->data, in, 1.0f, w, in);
}

/* t becomes the fp32 values w[0, numel) (heap, 2 * numel floats, owned by t from now on): the
 * second half a copy of the first, the base pk_model_restore_base goes back to. */
static void adopt_f32(pk_model *m, pk_tensor *t, float *w)
{
    size_t nb = t->numel * 4;
    memcpy((char *)w + nb, w, nb);
    m->weight_bytes += nb - pk_dtype_row_bytes(t->dtype, t->numel);
    free(t->owned);
    t->owned = w;
    t->data = w;
    t->src = (char *)w + nb;
    t->dtype = PK_DTYPE_F32;
}

/* Weight t becomes an fp32 heap copy of itself plus its adapter's product. */
static pk_status merge_one(pk_model *m, pk_tensor *t)
{
    size_t nb = t->numel * 4;
    float *w = malloc(2 * nb); /* data, then the merged values again for pk_model_restore_base */
    if (!w)
        return PK_ERR_NOMEM;
    pk_widen(t->dtype, t->data, t->numel, w);
    fold(m, w, &m->t[t->lora_a - 1], &m->t[t->lora_b - 1]);
    adopt_f32(m, t, w);
    t->lora_a = t->lora_b = 0;
    return PK_OK;
}

/* Weight t (with trainable block scales) becomes an fp32 heap copy of its blocks decoded with
 * those scales. */
static pk_status merge_scales(pk_model *m, pk_tensor *t)
{
    size_t nb = t->numel * 4, qb = pk_dtype_block(t->dtype);
    float *w = malloc(2 * nb); /* data, then the merged values again for pk_model_restore_base */
    if (!w)
        return PK_ERR_NOMEM;
    pk_quant_decode_scaled(t->dtype, t->data, t->numel / qb, m->t[t->scales - 1].data, w);
    adopt_f32(m, t, w);
    return PK_OK;
}

pk_status pk_model_lora_merge(pk_model *m)
{
    int scales = 0;
    for (size_t i = 0; i < m->n_t; i++)
        scales |= m->t[i].scales != 0;
    if (m->lora.r == 0 && !scales)
        return PK_OK;
    long *map = malloc(m->n_t * sizeof *map);
    if (!map)
        return PK_ERR_NOMEM;
    for (size_t i = 0; i < m->n_t; i++) /* -1: an adapter or scales tensor, dropped below */
        map[i] = pk_model_tensor_is_lora(m, i) || pk_model_tensor_is_scales(m, i) ? -1 : 0;
    for (size_t i = 0; i < m->n_t; i++) {
        pk_status st = PK_OK;
        if (m->t[i].lora_a)
            st = merge_one(m, &m->t[i]);
        else if (m->t[i].scales)
            st = merge_scales(m, &m->t[i]);
        m->t[i].scales = 0;
        if (st != PK_OK) {
            free(map);
            return st;
        }
    }
    size_t k = 0;
    for (size_t i = 0; i < m->n_t; i++) {
        if (map[i] < 0) {
            m->weight_bytes -= m->t[i].numel * 4;
            free(m->t[i].name);
            free(m->t[i].owned);
            continue;
        }
        map[i] = (long)k;
        m->t[k++] = m->t[i];
    }
    m->n_t = k;
    pk_model_each_index(m, remap_index, map);
    free(map);
    memset(&m->lora, 0, sizeof m->lora);
    m->lora_scale = 0.0f;
    m->rB = m->rT = m->rTk = m->rthreads = m->rnp = 0;
    return PK_OK;
}

/* ---- trainable block scales ----------------------------------------------------------------- */

int pk_model_tensor_is_scales(const pk_model *m, size_t i)
{
    for (size_t j = 0; j < m->n_t; j++)
        if (m->t[j].scales == (int)i + 1)
            return 1;
    return 0;
}

/* One fp32 tensor "<W name>.scales" [rows, cols / 32] for quantized weight w, holding its
 * stored block scales; the heap block holds the data and, after it, the initial values (for
 * pk_model_restore_base, as new_tensor). */
static pk_status new_scales(pk_tensor *s, const pk_tensor *w)
{
    size_t qb = pk_dtype_block(w->dtype), nblk = w->numel / qb, nb = nblk * 4;
    size_t l = strlen(w->name);
    memset(s, 0, sizeof *s);
    s->name = malloc(l + 8);
    s->owned = calloc(2, nb);
    if (!s->name || !s->owned)
        return PK_ERR_NOMEM;
    memcpy(s->name, w->name, l);
    memcpy(s->name + l, ".scales", 8);
    s->dtype = PK_DTYPE_F32;
    s->ndim = 2;
    s->shape[0] = (int64_t)w->rows;
    s->shape[1] = (int64_t)(w->cols / qb);
    s->shape[2] = s->shape[3] = 1;
    s->numel = nblk;
    s->rows = w->rows;
    s->cols = w->cols / qb;
    s->key = pk_rng_tensor_key(s->name);
    s->is_bias_or_norm = 1; /* no weight decay, as for norms: it would shrink whole blocks */
    s->data = s->owned;
    s->src = (char *)s->owned + nb;
    pk_quant_block_scales(w->dtype, w->data, nblk, s->data);
    memcpy((void *)(uintptr_t)s->src, s->data, nb);
    return PK_OK;
}

pk_status pk_model_scales_attach(pk_model *m, size_t *n_tensors, char *err, size_t errlen)
{
    size_t n0 = m->n_t, k = 0;
    for (size_t i = 0; i < n0; i++)
        k += (size_t)(pk_quant_has_block_scale(m->t[i].dtype) || m->t[i].scales != 0);
    if (k == 0) {
        pk_seterr(err, errlen,
                  "trainable block scales: the model has no Q8_0 or Q4_0 weight (quantize it "
                  "with --type q4_0 or q8_0; other block types have no single scale per block)");
        return PK_ERR_ARG;
    }
    if (n_tensors)
        *n_tensors = k;
    for (size_t i = 0; i < n0; i++)
        if (m->t[i].scales)
            return PK_OK; /* attached before */
    pk_tensor *t = realloc(m->t, (n0 + k) * sizeof *t);
    if (!t)
        return PK_ERR_NOMEM;
    m->t = t;
    size_t j = n0;
    for (size_t i = 0; i < n0; i++) {
        if (!pk_quant_has_block_scale(m->t[i].dtype))
            continue;
        pk_status st = new_scales(&m->t[j], &m->t[i]);
        m->n_t = j + 1; /* so pk_model_free releases what was made */
        if (st != PK_OK)
            return st;
        m->t[i].scales = (int)j + 1;
        m->weight_bytes += m->t[j].numel * 4;
        j++;
    }
    return resort(m);
}

void pk_scales_fetch(const pk_model *m, const pk_perturb *pert, int ti, size_t start, size_t cnt,
                     float *dst, float *dst1)
{
    const pk_tensor *t = &m->t[ti];
    int si = t->scales - 1;
    const pk_tensor *s = &m->t[si];
    size_t qb = pk_dtype_block(t->dtype), bb = pk_dtype_row_bytes(t->dtype, qb);
    size_t b0 = start / qb, nblk = cnt / qb;
    PK_ASSERT(start % qb == 0 && cnt % qb == 0);
    const unsigned char *src = (const unsigned char *)t->data + b0 * bb;
    const float *d = (const float *)s->data + b0;
    int on = pk_is_perturbed(m, pert, si);
    const float *h = on && m->hdiag ? m->hdiag[si] : NULL;
    float dp[64], dm[64];
    for (size_t k = 0; k < nblk; k += 64) {
        size_t n = nblk - k < 64 ? nblk - k : 64;
        const float *dk = d + k;
        if (on && h)
            pk_z_perturb_diag(pert->seed, s->key, (uint64_t)(b0 + k), n, pert->kind, pert->scale,
                              h + b0 + k, dk, dp, dst1 ? dm : NULL);
        else if (on)
            pk_z_perturb(pert->seed, s->key, (uint64_t)(b0 + k), n, pert->kind, pert->scale, dk, dp,
                         dst1 ? dm : NULL);
        pk_quant_decode_scaled(t->dtype, src + k * bb, n, on ? dp : dk, dst + k * qb);
        if (dst1 && on)
            pk_quant_decode_scaled(t->dtype, src + k * bb, n, dm, dst1 + k * qb);
        else if (dst1)
            memcpy(dst1 + k * qb, dst + k * qb, n * qb * 4);
    }
}
