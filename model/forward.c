/* forward.c: the batched forward pass of every architecture, the MeZO perturbation hook (weights
 * widened block by block to fp32 + scale * z just before their GEMM), the LM head in vocabulary
 * row blocks (loss and chosen logits without materializing [B*T, V]) and activation reservation.
 * Thread safety: parallelism is either one cblas_sgemm (OpenBLAS threads) or an omp parallel for
 * on an outer loop; the per-(batch, head) attention GEMMs run inside an omp loop, where OpenBLAS
 * (OpenMP build) runs single-threaded, so the two never nest. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <omp.h>

#include "internal.h"

#define WROWS 256 /* rows per widened weight block */

int pk_is_perturbed(const pk_model *m, const pk_perturb *pert, int ti)
{
    (void)m;
    return pert && ti >= 0 && pert->scale != 0.0f && (!pert->trainable || pert->trainable[ti]);
}

void pk_fetch_rows(const pk_model *m, const pk_perturb *pert, int ti, size_t r0, size_t n,
                   float *dst)
{
    const pk_tensor *t = &m->t[ti];
    size_t es = pk_dtype_size(t->dtype);
    pk_widen(t->dtype, (const unsigned char *)t->data + r0 * t->cols * es, n * t->cols, dst);
    if (pk_is_perturbed(m, pert, ti))
        pk_z_axpy(pert->seed, t->key, (uint64_t)(r0 * t->cols), n * t->cols, pert->kind,
                  pert->scale, dst);
}

/* Same, split over threads by rows (not called from inside a parallel region). */
static void fetch_block(const pk_model *m, const pk_perturb *pert, int ti, size_t r0, size_t n,
                        float *dst)
{
    const pk_tensor *t = &m->t[ti];
    if (n * t->cols < 65536) {
        pk_fetch_rows(m, pert, ti, r0, n, dst);
        return;
    }
    long chunks = (long)((n + 7) / 8);
#pragma omp parallel for schedule(static)
    for (long c = 0; c < chunks; c++) {
        size_t a = (size_t)c * 8, k = n - a < 8 ? n - a : 8;
        pk_fetch_rows(m, pert, ti, r0 + a, k, dst + a * t->cols);
    }
}

/* A vector (bias / norm weight), widened + perturbed into dst; NULL if ti < 0. */
static const float *fetch_vec(const pk_model *m, const pk_perturb *pert, int ti, float *dst)
{
    if (ti < 0)
        return NULL;
    const pk_tensor *t = &m->t[ti];
    if (t->dtype == PK_DTYPE_F32 && !pk_is_perturbed(m, pert, ti))
        return t->data;
    pk_fetch_rows(m, pert, ti, 0, 1, dst);
    return dst;
}

static void add_bias(float *y, int ldy, int N, int n, const float *b)
{
#pragma omp parallel for schedule(static)
    for (int r = 0; r < N; r++) {
        for (int j = 0; j < n; j++)
            y[(size_t)r * ldy + j] += b[j];
    }
}

/* y[N, out] (ldy) = (accumulate ? y : 0) + x[N, in] (ldx) @ W^T + b.
 * W is a Linear weight [out, in], or with m->conv1d a GPT-2 Conv1D weight [in, out]. */
static void linear(pk_model *m, const pk_perturb *pert, const float *x, int ldx, int N, int wi,
                   int bi, float *y, int ldy, int accumulate)
{
    const pk_tensor *w = &m->t[wi];
    int conv = m->conv1d;
    int in = (int)(conv ? w->rows : w->cols), out = (int)(conv ? w->cols : w->rows);
    float beta = accumulate ? 1.0f : 0.0f;
    if (w->dtype == PK_DTYPE_F32 && !pk_is_perturbed(m, pert, wi)) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, conv ? CblasNoTrans : CblasTrans, N, out, in, 1.0f,
                    x, ldx, w->data, conv ? out : in, beta, y, ldy);
    } else if (!conv) {
        /* x (N,in) @ Wblk^T (nr,in) -> y[:, r0:r0+nr] */
        int R = (int)(m->wscr_n / (size_t)in);
        for (int r0 = 0; r0 < out; r0 += R) {
            int nr = out - r0 < R ? out - r0 : R;
            fetch_block(m, pert, wi, (size_t)r0, (size_t)nr, m->wscr);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, nr, in, 1.0f, x, ldx, m->wscr,
                        in, beta, y + r0, ldy);
        }
    } else {
        /* x[:, r0:r0+nr] (N,nr) @ Wblk (nr,out), accumulated over input blocks */
        int R = (int)(m->wscr_n / (size_t)out);
        for (int r0 = 0; r0 < in; r0 += R) {
            int nr = in - r0 < R ? in - r0 : R;
            fetch_block(m, pert, wi, (size_t)r0, (size_t)nr, m->wscr);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, out, nr, 1.0f, x + r0, ldx,
                        m->wscr, out, r0 == 0 ? beta : 1.0f, y, ldy);
        }
    }
    if (bi >= 0)
        add_bias(y, ldy, N, out, fetch_vec(m, pert, bi, m->vscr));
}

/* y = LayerNorm(x) * w + b per row (w, b may be NULL); in place allowed. */
static void layernorm(const float *x, int ldx, float *y, int ldy, int N, int C, const float *w,
                      const float *b, double eps)
{
#pragma omp parallel for schedule(static)
    for (int r = 0; r < N; r++) {
        const float *xr = x + (size_t)r * ldx;
        float *yr = y + (size_t)r * ldy;
        double mean = 0, var = 0;
        for (int j = 0; j < C; j++)
            mean += (double)xr[j];
        mean /= C;
        for (int j = 0; j < C; j++) {
            double d = (double)xr[j] - mean;
            var += d * d;
        }
        var /= C;
        float rs = (float)(1.0 / sqrt(var + eps)), mu = (float)mean;
        for (int j = 0; j < C; j++) {
            float v = (xr[j] - mu) * rs;
            if (w)
                v *= w[j];
            if (b)
                v += b[j];
            yr[j] = v;
        }
    }
}

static void rmsnorm(const float *x, int ldx, float *y, int ldy, int N, int C, const float *w,
                    double eps)
{
#pragma omp parallel for schedule(static)
    for (int r = 0; r < N; r++) {
        const float *xr = x + (size_t)r * ldx;
        float *yr = y + (size_t)r * ldy;
        double ss = 0;
        for (int j = 0; j < C; j++)
            ss += (double)xr[j] * (double)xr[j];
        float rs = (float)(1.0 / sqrt(ss / C + eps));
        for (int j = 0; j < C; j++)
            yr[j] = w[j] * (xr[j] * rs);
    }
}

static float act1(int act, float v)
{
    switch (act) {
    case ACT_SILU:
        return v / (1.0f + expf(-v));
    case ACT_RELU:
        return v > 0.0f ? v : 0.0f;
    case ACT_GELU:
        return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    default: /* gelu_new: tanh approximation */
        return 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
    }
}

/* a[N, n] (lda) = act(a), or for gated MLPs a = act(a) * up (up[N, n], same ld). */
static void activate(int act, float *a, int lda, int N, int n, const float *up)
{
#pragma omp parallel for schedule(static)
    for (int r = 0; r < N; r++) {
        float *ar = a + (size_t)r * lda;
        const float *ur = up ? up + (size_t)r * lda : NULL;
        for (int j = 0; j < n; j++)
            ar[j] = ur ? act1(act, ar[j]) * ur[j] : act1(act, ar[j]);
    }
}

/* inv_freq[i] for RoPE (with llama3 rope_scaling), in double. */
static double rope_inv_freq(const pk_cfg *c, int i)
{
    double inv = 1.0 / pow(c->rope_theta, (2.0 * i) / c->hd);
    if (!c->rope_llama3)
        return inv;
    double lo_wl = c->rope_orig_max / c->rope_low, hi_wl = c->rope_orig_max / c->rope_high;
    double wl = 2.0 * M_PI / inv;
    if (wl < hi_wl)
        return inv;
    if (wl > lo_wl)
        return inv / c->rope_factor;
    double s = (c->rope_orig_max / wl - c->rope_low) / (c->rope_high - c->rope_low);
    return (1.0 - s) * inv / c->rope_factor + s * inv;
}

/* cos | sin table [T, hd] for positions pos0 .. pos0+T-1. */
static void rope_table(const pk_cfg *c, int T, int pos0, float *tab)
{
    int half = c->hd / 2;
    for (int i = 0; i < half; i++) {
        double inv = rope_inv_freq(c, i);
        for (int t = 0; t < T; t++) {
            double a = (double)(pos0 + t) * inv;
            tab[(size_t)t * c->hd + i] = (float)cos(a);
            tab[(size_t)t * c->hd + half + i] = (float)sin(a);
        }
    }
}

/* Rotate-half RoPE on heads of x[N, ld] (row n at position n % T of the table). */
static void rope_apply(float *x, int ld, int N, int T, int nheads, int hd, const float *tab)
{
    int half = hd / 2;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *cs = tab + (size_t)(n % T) * hd, *sn = cs + half;
        for (int h = 0; h < nheads; h++) {
            float *p = x + (size_t)n * ld + (size_t)h * hd;
            for (int i = 0; i < half; i++) {
                float a = p[i], b = p[i + half];
                p[i] = a * cs[i] - b * sn[i];
                p[i + half] = b * cs[i] + a * sn[i];
            }
        }
    }
}

/* Scaled dot-product attention, per (batch, head): out[b*T+t, h*hd..] (ld nh*hd).
 * q row (b, t) at q + (b*T + t)*ldq; keys of batch b at k + b*kbs + s*ldkv, s < Tk(b), where
 * Tk(b) = kv_len > 0 ? kv_len : lengths[b]. Causal: key s is visible from query t if
 * s <= pos0 + t. Padding keys (s >= Tk(b)) are never visible. */
static void attention(pk_model *m, const pk_batch *b, int layer, const float *q, int ldq,
                      const float *k, const float *v, int ldkv, size_t kbs, int kv_len, int pos0,
                      float *out)
{
    const pk_cfg *c = &m->cfg;
    int T = b->T, hd = c->hd, nh = c->nh, group = c->nh / c->nkv, qd = nh * hd;
    int causal = c->arch != ARCH_ROBERTA;
    float scale = (float)(1.0 / sqrt((double)hd));
    if (c->attn_inv_layer)
        scale /= (float)(layer + 1);
    size_t sstride = (size_t)m->rT * (size_t)m->rTk;
    int nbh = b->B * nh;
#pragma omp parallel for schedule(dynamic) num_threads(m->rthreads)
    for (int bh = 0; bh < nbh; bh++) {
        int bi = bh / nh, h = bh % nh, g = h / group;
        float *S = m->att + (size_t)omp_get_thread_num() * sstride;
        int tk = kv_len > 0 ? kv_len : b->lengths[bi];
        const float *Q = q + (size_t)bi * T * ldq + (size_t)h * hd;
        const float *K = k + bi * kbs + (size_t)g * hd, *Vv = v + bi * kbs + (size_t)g * hd;
        /* S (T, tk) = Q (T, hd) @ K^T (hd, tk) * scale */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, tk, hd, scale, Q, ldq, K, ldkv,
                    0.0f, S, tk);
        for (int t = 0; t < T; t++) {
            float *sr = S + (size_t)t * tk;
            int smax = causal && pos0 + t + 1 < tk ? pos0 + t + 1 : tk;
            float mx = sr[0];
            for (int s = 1; s < smax; s++)
                mx = sr[s] > mx ? sr[s] : mx;
            double sum = 0;
            for (int s = 0; s < smax; s++) {
                sr[s] = expf(sr[s] - mx);
                sum += (double)sr[s];
            }
            float inv = (float)(1.0 / sum);
            for (int s = 0; s < smax; s++)
                sr[s] *= inv;
            for (int s = smax; s < tk; s++)
                sr[s] = 0.0f;
        }
        /* O (T, hd) = P (T, tk) @ V (tk, hd) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, tk, 1.0f, S, tk, Vv, ldkv,
                    0.0f, out + (size_t)bi * T * qd + (size_t)h * hd, qd);
    }
}

static void *grow(pk_model *m, void *old, size_t bytes, int *fail)
{
    free(old);
    void *p = malloc(bytes ? bytes : 1);
    if (!p)
        *fail = 1;
    m->n_allocs++;
    m->act_bytes += bytes;
    return p;
}

pk_status pk_reserve(pk_model *m, int B, int T, int Tk)
{
    int thr = omp_get_max_threads();
    if (B <= m->rB && T <= m->rT && Tk <= m->rTk && thr <= m->rthreads)
        return PK_OK;
    const pk_cfg *c = &m->cfg;
    B = B > m->rB ? B : m->rB;
    T = T > m->rT ? T : m->rT;
    Tk = Tk > m->rTk ? Tk : m->rTk;
    Tk = Tk > T ? Tk : T;
    thr = thr > m->rthreads ? thr : m->rthreads;
    size_t N = (size_t)B * (size_t)T;
    int qd = c->nh * c->hd, kvd = c->nkv * c->hd;
    int wn = c->H;
    wn = qd > wn ? qd : wn;
    wn = c->proj > wn ? c->proj : wn;
    int wbig = qd + 2 * kvd;
    int ffn = (c->arch == ARCH_LLAMA || c->arch == ARCH_QWEN2) ? 2 * c->inter : c->inter;
    wbig = ffn > wbig ? ffn : wbig;
    wbig = 2 * c->H > wbig ? 2 * c->H : wbig;
    wbig = c->proj > wbig ? c->proj : wbig;
    int Hh = pk_head_dim(m);
    wbig = Hh + 64 > wbig ? Hh + 64 : wbig;
    size_t maxcols = 1, vmax = (size_t)(c->V > c->H ? c->V : c->H);
    for (size_t i = 0; i < m->n_t; i++) {
        const pk_tensor *t = &m->t[i];
        if (t->ndim >= 2)
            maxcols = t->cols > maxcols ? t->cols : maxcols;
        else
            vmax = t->numel > vmax ? t->numel : vmax;
    }
    int fail = 0;
    m->act_bytes = 0;
    m->x = grow(m, m->x, N * (size_t)c->H * 4, &fail);
    m->xn = grow(m, m->xn, N * (size_t)wn * 4, &fail);
    m->big = grow(m, m->big, N * (size_t)wbig * 4, &fail);
    m->rope = grow(m, m->rope, (size_t)T * (size_t)c->hd * 4, &fail);
    m->pos = grow(m, m->pos, N * 4, &fail);
    m->att = grow(m, m->att, (size_t)thr * (size_t)T * (size_t)Tk * 4, &fail);
    m->wscr_n = WROWS * maxcols;
    m->wscr = grow(m, m->wscr, m->wscr_n * 4, &fail);
    m->vmax = vmax;
    m->vscr = grow(m, m->vscr, 2 * vmax * 4, &fail);
    /* the LM-head logits block lives in big, after the gathered hidden rows [N, Hh] */
    m->lrows = wbig - Hh < WROWS ? wbig - Hh : WROWS;
    m->lrows = c->V < m->lrows ? c->V : m->lrows;
    m->lmax = grow(m, m->lmax, N * 8, &fail);
    m->lsum = grow(m, m->lsum, N * 8, &fail);
    m->lse = grow(m, m->lse, N * 8, &fail);
    m->pick = grow(m, m->pick, N * 4, &fail);
    m->rows = grow(m, m->rows, N * 4, &fail);
    m->tgt = grow(m, m->tgt, N * 4, &fail);
    m->wn = wn;
    m->wbig = wbig;
    if (fail) {
        m->rB = m->rT = m->rTk = m->rthreads = 0;
        return PK_ERR_NOMEM;
    }
    m->rB = B;
    m->rT = T;
    m->rTk = Tk;
    m->rthreads = thr;
    return PK_OK;
}

pk_status pk_model_reserve(pk_model *m, int B, int T)
{
    if (B < 1 || T < 1 || T > m->cfg.max_pos)
        return PK_ERR_ARG;
    return pk_reserve(m, B, T, T);
}

size_t pk_model_activation_bytes(const pk_model *m)
{
    return m->act_bytes;
}

size_t pk_model_alloc_count(const pk_model *m)
{
    return m->n_allocs;
}

int pk_head_dim(const pk_model *m)
{
    return m->cfg.arch == ARCH_OPT ? m->cfg.proj : m->cfg.H;
}

/* Checks a batch against the model; pos0 is the position of its first token. */
static pk_status check_batch(const pk_model *m, const pk_batch *b, int pos0)
{
    const pk_cfg *c = &m->cfg;
    if (!b || b->B < 1 || b->T < 1 || !b->ids || !b->lengths || pos0 + b->T > c->max_pos)
        return PK_ERR_ARG;
    for (int i = 0; i < b->B; i++) {
        if (b->lengths[i] < 1 || b->lengths[i] > b->T)
            return PK_ERR_ARG;
        for (int t = 0; t < b->lengths[i]; t++) {
            int32_t id = b->ids[(size_t)i * b->T + t];
            if (id < 0 || id >= c->V)
                return PK_ERR_ARG;
            if (b->token_type && c->arch == ARCH_ROBERTA) {
                int32_t tt = b->token_type[(size_t)i * b->T + t];
                if (tt < 0 || tt >= c->type_vocab)
                    return PK_ERR_ARG;
            }
        }
    }
    return PK_OK;
}

/* x [N, H] = token embedding (+ positions, token types, LayerNorm as the architecture says). */
static void embed(pk_model *m, const pk_perturb *pert, const pk_batch *b, int pos0)
{
    const pk_cfg *c = &m->cfg;
    int T = b->T, N = b->B * b->T, H = c->H, E = c->arch == ARCH_OPT ? c->proj : H;
    float *dst = m->proj_in >= 0 ? m->xn : m->x;
    if (c->arch == ARCH_ROBERTA) {
        for (int bi = 0; bi < b->B; bi++) {
            int count = 0;
            for (int t = 0; t < T; t++) {
                int valid = t < b->lengths[bi] && b->ids[(size_t)bi * T + t] != c->pad;
                count += valid;
                m->pos[bi * T + t] = valid ? c->pad + count : c->pad;
            }
        }
    } else {
        for (int n = 0; n < N; n++)
            m->pos[n] = pos0 + n % T + (c->arch == ARCH_OPT ? 2 : 0);
    }
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        int bi = n / T, t = n % T;
        if (t >= b->lengths[bi])
            memset(dst + (size_t)n * E, 0, (size_t)E * 4);
        else
            pk_fetch_rows(m, pert, m->emb, (size_t)b->ids[n], 1, dst + (size_t)n * E);
    }
    if (m->proj_in >= 0)
        linear(m, pert, m->xn, E, N, m->proj_in, -1, m->x, H, 0);
    if (m->pos_emb < 0)
        return;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        int bi = n / T, t = n % T;
        if (t >= b->lengths[bi])
            continue;
        float *tmp = m->big + (size_t)n * m->wbig, *xr = m->x + (size_t)n * H;
        pk_fetch_rows(m, pert, m->pos_emb, (size_t)m->pos[n], 1, tmp);
        if (m->type_emb >= 0) {
            int tt = b->token_type ? b->token_type[n] : 0;
            pk_fetch_rows(m, pert, m->type_emb, (size_t)tt, 1, tmp + H);
            for (int j = 0; j < H; j++)
                tmp[j] += tmp[H + j];
        }
        for (int j = 0; j < H; j++)
            xr[j] += tmp[j];
    }
    if (c->arch == ARCH_ROBERTA) {
        const float *w = fetch_vec(m, pert, m->emb_ln_w, m->vscr);
        const float *bb = fetch_vec(m, pert, m->emb_ln_b, m->vscr + m->vmax);
        layernorm(m->x, H, m->x, H, N, H, w, bb, c->eps);
    }
}

static void norm(pk_model *m, const pk_perturb *pert, int wi, int bi, const float *x, float *y,
                 int N)
{
    const pk_cfg *c = &m->cfg;
    const float *w = fetch_vec(m, pert, wi, m->vscr);
    if (c->arch == ARCH_LLAMA || c->arch == ARCH_QWEN2) {
        rmsnorm(x, c->H, y, c->H, N, c->H, w, c->eps);
        return;
    }
    const float *b = fetch_vec(m, pert, bi, m->vscr + m->vmax);
    layernorm(x, c->H, y, c->H, N, c->H, w, b, c->eps);
}

/* One transformer block over x [N, H]. */
static void block(pk_model *m, const pk_perturb *pert, const pk_batch *b, int l, float **kv_k,
                  float **kv_v, int pos0)
{
    const pk_cfg *c = &m->cfg;
    const pk_layer *y = &m->layers[l];
    int N = b->B * b->T, H = c->H, qd = c->nh * c->hd, kvd = c->nkv * c->hd;
    int pre = c->pre_ln, W3 = qd + 2 * kvd;
    float *q = m->big, *k = m->big + qd, *v = m->big + qd + kvd;
    const float *in = m->x;
    if (pre) {
        norm(m, pert, y->ln1_w, y->ln1_b, m->x, m->xn, N);
        in = m->xn;
    }
    if (y->k_w < 0) { /* gpt2 fused c_attn: [q | k | v] per row */
        linear(m, pert, in, H, N, y->q_w, y->q_b, q, W3, 0);
    } else {
        linear(m, pert, in, H, N, y->q_w, y->q_b, q, W3, 0);
        linear(m, pert, in, H, N, y->k_w, y->k_b, k, W3, 0);
        linear(m, pert, in, H, N, y->v_w, y->v_b, v, W3, 0);
    }
    if (c->arch == ARCH_LLAMA || c->arch == ARCH_QWEN2) {
        rope_apply(q, W3, N, b->T, c->nh, c->hd, m->rope);
        rope_apply(k, W3, N, b->T, c->nkv, c->hd, m->rope);
    }
    if (kv_k) { /* generation: append to the cache, attend over it (B == 1) */
        for (int t = 0; t < b->T; t++) {
            memcpy(kv_k[l] + (size_t)(pos0 + t) * kvd, k + (size_t)t * W3, (size_t)kvd * 4);
            memcpy(kv_v[l] + (size_t)(pos0 + t) * kvd, v + (size_t)t * W3, (size_t)kvd * 4);
        }
        attention(m, b, l, q, W3, kv_k[l], kv_v[l], kvd, 0, pos0 + b->T, pos0, m->xn);
    } else {
        attention(m, b, l, q, W3, k, v, W3, (size_t)b->T * W3, 0, 0, m->xn);
    }
    linear(m, pert, m->xn, qd, N, y->o_w, y->o_b, m->x, H, 1);
    if (!pre)
        norm(m, pert, y->ln1_w, y->ln1_b, m->x, m->x, N);
    in = m->x;
    if (pre) {
        norm(m, pert, y->ln2_w, y->ln2_b, m->x, m->xn, N);
        in = m->xn;
    }
    if (y->gate_w >= 0) {
        linear(m, pert, in, H, N, y->gate_w, y->gate_b, m->big, 2 * c->inter, 0);
        linear(m, pert, in, H, N, y->fc1_w, y->fc1_b, m->big + c->inter, 2 * c->inter, 0);
        activate(c->act, m->big, 2 * c->inter, N, c->inter, m->big + c->inter);
        linear(m, pert, m->big, 2 * c->inter, N, y->fc2_w, y->fc2_b, m->x, H, 1);
    } else {
        linear(m, pert, in, H, N, y->fc1_w, y->fc1_b, m->big, c->inter, 0);
        activate(c->act, m->big, c->inter, N, c->inter, NULL);
        linear(m, pert, m->big, c->inter, N, y->fc2_w, y->fc2_b, m->x, H, 1);
    }
    if (!pre)
        norm(m, pert, y->ln2_w, y->ln2_b, m->x, m->x, N);
}

pk_status pk_forward_hidden(pk_model *m, const pk_batch *b, const pk_perturb *pert, float **kv_k,
                            float **kv_v, int pos0)
{
    const pk_cfg *c = &m->cfg;
    pk_status st = check_batch(m, b, pos0);
    if (st != PK_OK)
        return st;
    if (kv_k && b->B != 1)
        return PK_ERR_ARG;
    st = pk_reserve(m, b->B, b->T, kv_k ? pos0 + b->T : b->T);
    if (st != PK_OK)
        return st;
    int N = b->B * b->T, H = c->H;
    if (c->arch == ARCH_LLAMA || c->arch == ARCH_QWEN2)
        rope_table(c, b->T, pos0, m->rope);
    embed(m, pert, b, pos0);
    for (int l = 0; l < c->L; l++)
        block(m, pert, b, l, kv_k, kv_v, pos0);
    switch (c->arch) {
    case ARCH_LLAMA:
    case ARCH_QWEN2:
    case ARCH_GPT2:
        norm(m, pert, m->fin_w, m->fin_b, m->x, m->xn, N);
        break;
    case ARCH_OPT:
        if (c->final_ln)
            norm(m, pert, m->fin_w, m->fin_b, m->x, m->xn, N);
        else
            memcpy(m->xn, m->x, (size_t)N * H * 4);
        if (m->proj_out >= 0) {
            linear(m, pert, m->xn, H, N, m->proj_out, -1, m->big, c->proj, 0);
            memcpy(m->xn, m->big, (size_t)N * c->proj * 4);
        }
        break;
    default: /* roberta MLM transform: dense -> gelu -> LayerNorm */
        linear(m, pert, m->x, H, N, m->hd_dense_w, m->hd_dense_b, m->xn, H, 0);
        activate(c->act, m->xn, H, N, H, NULL);
        layernorm(m->xn, H, m->xn, H, N, H, fetch_vec(m, pert, m->hd_ln_w, m->vscr),
                  fetch_vec(m, pert, m->hd_ln_b, m->vscr + m->vmax), c->eps);
        break;
    }
    return PK_OK;
}

void pk_lm_head(pk_model *m, const pk_perturb *pert, const float *h, int M, double *lse,
                const int32_t *ids, int id_stride, int n_ids, float *picked, float *full)
{
    const pk_cfg *c = &m->cfg;
    int V = c->V, Hh = pk_head_dim(m);
    const pk_tensor *w = &m->t[m->head_w];
    int direct = w->dtype == PK_DTYPE_F32 && !pk_is_perturbed(m, pert, m->head_w);
    int R = m->lrows;
    const float *bias = fetch_vec(m, pert, m->head_b, m->vscr);
    if (lse) {
        for (int r = 0; r < M; r++) {
            m->lmax[r] = -(double)INFINITY;
            m->lsum[r] = 0;
        }
    }
    for (int v0 = 0; v0 < V; v0 += R) {
        int nr = V - v0 < R ? V - v0 : R;
        const float *wb = (const float *)w->data + (size_t)v0 * Hh;
        if (!direct) {
            fetch_block(m, pert, m->head_w, (size_t)v0, (size_t)nr, m->wscr);
            wb = m->wscr;
        }
        float *dst = full ? full + v0 : h == m->big ? m->big + (size_t)M * Hh : m->big;
        int ld = full ? V : nr;
        /* logits (M, nr) = h (M, Hh) @ Wblk^T (nr, Hh) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, nr, Hh, 1.0f, h, Hh, wb, Hh, 0.0f,
                    dst, ld);
#pragma omp parallel for schedule(static)
        for (int r = 0; r < M; r++) {
            float *row = dst + (size_t)r * ld;
            if (bias) {
                for (int j = 0; j < nr; j++)
                    row[j] += bias[v0 + j];
            }
            if (lse) {
                float bm = row[0];
                for (int j = 1; j < nr; j++)
                    bm = row[j] > bm ? row[j] : bm;
                if ((double)bm > m->lmax[r]) {
                    m->lsum[r] *= exp(m->lmax[r] - (double)bm);
                    m->lmax[r] = (double)bm;
                }
                double s = 0, mx = m->lmax[r];
                for (int j = 0; j < nr; j++)
                    s += exp((double)row[j] - mx);
                m->lsum[r] += s;
            }
            for (int j = 0; j < n_ids; j++) {
                int id = ids[(size_t)r * id_stride + j];
                if (id >= v0 && id < v0 + nr)
                    picked[(size_t)r * n_ids + j] = row[id - v0];
            }
        }
    }
    if (lse) {
        for (int r = 0; r < M; r++)
            lse[r] = m->lmax[r] + log(m->lsum[r]);
    }
}

/* Copies rows[i] of the final hidden state m->xn into big, compact [M, Hh]. */
static void gather(pk_model *m, const int32_t *rows, int M)
{
    int Hh = pk_head_dim(m);
    for (int i = 0; i < M; i++)
        memcpy(m->big + (size_t)i * Hh, m->xn + (size_t)rows[i] * Hh, (size_t)Hh * 4);
}

pk_status pk_model_loss(pk_model *m, const pk_batch *b, const uint8_t *target_mask,
                        const pk_perturb *pert, double *seq_nll, int32_t *seq_count, double *mean)
{
    if (m->cfg.arch == ARCH_ROBERTA)
        return PK_ERR_UNSUPPORTED;
    pk_status st = pk_forward_hidden(m, b, pert, NULL, NULL, 0);
    if (st != PK_OK)
        return st;
    int T = b->T, M = 0;
    for (int bi = 0; bi < b->B; bi++) {
        for (int t = 1; t < b->lengths[bi]; t++) {
            size_t n = (size_t)bi * T + t;
            if (target_mask && !target_mask[n])
                continue;
            m->rows[M] = (int32_t)(n - 1);
            m->tgt[M] = b->ids[n];
            M++;
        }
    }
    gather(m, m->rows, M);
    if (M > 0)
        pk_lm_head(m, pert, m->big, M, m->lse, m->tgt, 1, 1, m->pick, NULL);
    double total = 0;
    for (int bi = 0; bi < b->B; bi++) {
        if (seq_nll)
            seq_nll[bi] = 0;
        if (seq_count)
            seq_count[bi] = 0;
    }
    for (int i = 0; i < M; i++) {
        double nll = m->lse[i] - (double)m->pick[i];
        int bi = m->rows[i] / T;
        if (seq_nll)
            seq_nll[bi] += nll;
        if (seq_count)
            seq_count[bi]++;
        total += nll;
    }
    if (mean)
        *mean = M > 0 ? total / M : (double)NAN;
    return PK_OK;
}

static pk_status select_common(pk_model *m, const pk_batch *b, const pk_perturb *pert, size_t n_sel,
                               const int32_t *sel_b, const int32_t *sel_t, size_t n_ids,
                               const int32_t *ids, float *out, int logprob)
{
    pk_status st = check_batch(m, b, 0);
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
    st = pk_forward_hidden(m, b, pert, NULL, NULL, 0);
    if (st != PK_OK)
        return st;
    int M = (int)n_sel;
    for (int s = 0; s < M; s++)
        m->rows[s] = sel_b[s] * b->T + sel_t[s];
    gather(m, m->rows, M);
    if (M == 0)
        return PK_OK;
    pk_lm_head(m, pert, m->big, M, logprob ? m->lse : NULL, ids, 0, (int)n_ids, out, NULL);
    if (logprob) {
        for (size_t s = 0; s < n_sel; s++) {
            for (size_t j = 0; j < n_ids; j++)
                out[s * n_ids + j] = (float)((double)out[s * n_ids + j] - m->lse[s]);
        }
    }
    return PK_OK;
}

pk_status pk_model_select_logits(pk_model *m, const pk_batch *b, const pk_perturb *pert,
                                 size_t n_sel, const int32_t *sel_b, const int32_t *sel_t,
                                 size_t n_ids, const int32_t *ids, float *out)
{
    return select_common(m, b, pert, n_sel, sel_b, sel_t, n_ids, ids, out, 0);
}

pk_status pk_model_select_logprobs(pk_model *m, const pk_batch *b, const pk_perturb *pert,
                                   size_t n_sel, const int32_t *sel_b, const int32_t *sel_t,
                                   size_t n_ids, const int32_t *ids, float *out)
{
    return select_common(m, b, pert, n_sel, sel_b, sel_t, n_ids, ids, out, 1);
}

pk_status pk_model_logits(pk_model *m, const pk_batch *b, const pk_perturb *pert, float *out)
{
    pk_status st = pk_forward_hidden(m, b, pert, NULL, NULL, 0);
    if (st != PK_OK)
        return st;
    pk_lm_head(m, pert, m->xn, b->B * b->T, NULL, NULL, 0, 0, NULL, out);
    return PK_OK;
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
     * which runs as ceil(V / lrows) GEMMs of (N, lrows, Hh), exactly as the forward pass does */
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
