/* forward.c: the batched forward pass of every architecture, the MeZO perturbation hook (weights
 * widened block by block to fp32 + scale * z just before their GEMM) and the LM head in
 * vocabulary row blocks (loss and chosen logits without materializing [B*T, V]). The activation
 * arena is arena.c; the evaluation entry points (loss, select, logits) and the sweeps that group
 * their passes are sweep.c; what the three share is forward_impl.h.
 *
 * Determinism (docs/DETERMINISM.md): every output is a pure function of the weights, the batch,
 * the perturbation and the BLAS kernel, whatever the thread count. Each GEMM is cut into fixed
 * tiles (token rows x output columns that depend only on the token count and the layer's
 * shape: tok_tile, out_tile), each tile
 * one single-threaded sgemm over its whole reduction; our threads share out the tiles. Every sum
 * of ours runs in a fixed order inside one thread (per row, per block, blocks merged in order).
 *
 * Thread safety: OpenMP loops on outer dimensions only. OpenBLAS never threads: each thread of a
 * region that calls it first sets its own task's OpenMP thread count to 1 (blas_serial), which
 * is what OpenBLAS's OpenMP build consults; pk_threads_set sets its pthreads build to 1. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <omp.h>

#include "forward_impl.h"
#include "model_impl.h"

int pk_is_perturbed(const pk_model *m, const pk_perturb *pert, int ti)
{
    (void)m;
    return pert && ti >= 0 && pert->scale != 0.0f && (!pert->trainable || pert->trainable[ti]);
}

static inline int perturbs(const fwd *f, int k, int ti)
{
    return pk_is_perturbed(f->m, &f->pp[k], ti);
}

/* Passes a and b are a MeZO pair (the same z at +scale and -scale): one z serves both. */
static int mirrored(const pk_perturb *a, const pk_perturb *b)
{
    return a->seed == b->seed && a->kind == b->kind && b->scale == -a->scale;
}

/* Elements [start, start+cnt) of tensor ti widened to fp32, + scale * z where pass k perturbs
 * ti, into dst[k] + off for each pass with dst[k] != NULL. The passes that do not perturb ti get
 * one widened copy (copied on to the others); a pass and the next one mirroring it get theirs
 * from one z (pk_z_perturb's two outputs), each the bits of a pass alone. */
static void fetch_span(const fwd *f, int ti, size_t start, size_t cnt, float *const *dst,
                       size_t off)
{
    const pk_model *m = f->m;
    const pk_tensor *t = &m->t[ti];
    if (t->scales) { /* --trainable scales: the blocks decoded with their fp32 scales */
        for (int k = 0; k < f->np; k++) {
            if (dst[k] == NULL)
                continue;
            float *d1 = NULL;
            int si = t->scales - 1; /* the scales tensor is what a pass perturbs */
            if (k + 1 < f->np && dst[k + 1] && mirrored(&f->pp[k], &f->pp[k + 1]) &&
                perturbs(f, k, si) == perturbs(f, k + 1, si))
                d1 = dst[k + 1] + off;
            pk_scales_fetch(m, &f->pp[k], ti, start, cnt, dst[k] + off, d1);
            k += d1 != NULL;
        }
        return;
    }
    /* block types: start and cnt fall on block boundaries (whole rows, block-aligned column
     * slices: linear_kblocks) */
    const void *src = (const unsigned char *)t->data + pk_dtype_row_bytes(t->dtype, start);
    const float *h = m->hdiag ? m->hdiag[ti] : NULL;
    const float *plain = NULL;
    for (int k = 0; k < f->np; k++) {
        if (dst[k] == NULL)
            continue;
        float *d = dst[k] + off, *d1 = NULL;
        const pk_perturb *p = &f->pp[k];
        if (!perturbs(f, k, ti)) {
            if (plain) {
                memcpy(d, plain, cnt * 4);
            } else {
                pk_widen(t->dtype, src, cnt, d);
                plain = d;
            }
            continue;
        }
        if (k + 1 < f->np && dst[k + 1] && perturbs(f, k + 1, ti) && mirrored(p, &f->pp[k + 1]))
            d1 = dst[++k] + off;
        /* f32 tensors are 4-byte aligned (the loader copies any that are not) */
        const float *w = src;
        if (t->dtype != PK_DTYPE_F32) {
            pk_widen(t->dtype, src, cnt, d);
            w = d;
        }
        if (h)
            pk_z_perturb_diag(p->seed, t->key, (uint64_t)start, cnt, p->kind, p->scale, h + start,
                              w, d, d1);
        else
            pk_z_perturb(p->seed, t->key, (uint64_t)start, cnt, p->kind, p->scale, w, d, d1);
    }
}

/* Rows [r0, r0+n) x columns [c0, c0+kc) of tensor ti (as [rows, cols]) into dst[k] + off
 * [n, kc], as fetch_span. */
static void fetch_rows(const fwd *f, int ti, size_t r0, size_t n, size_t c0, size_t kc,
                       float *const *dst, size_t off)
{
    size_t cols = f->m->t[ti].cols;
    if (kc == cols) {
        fetch_span(f, ti, r0 * cols, n * cols, dst, off);
        return;
    }
    for (size_t r = 0; r < n; r++)
        fetch_span(f, ti, (r0 + r) * cols + c0, kc, dst, off + r * kc);
}

/* Same into dst[k] [n, kc], split over threads by rows (not called from inside a parallel
 * region). */
static void fetch_block(const fwd *f, int ti, size_t r0, size_t n, size_t c0, size_t kc,
                        float *const *dst)
{
    if (n * kc < 65536) {
        fetch_rows(f, ti, r0, n, c0, kc, dst, 0);
        return;
    }
    long chunks = (long)((n + 7) / 8);
#pragma omp parallel for schedule(static)
    for (long c = 0; c < chunks; c++) {
        size_t a = (size_t)c * 8, k = n - a < 8 ? n - a : 8;
        fetch_rows(f, ti, r0 + a, k, c0, kc, dst, a * kc);
    }
}

/* Where each pass reads tensor ti: rd[k]. Stored fp32 weights a pass does not perturb are read in
 * place (rd[k] = the tensor's data, wr[k] = NULL) when `direct`; the others from pass copies of
 * the scratch `base` (in pass 0's arena): a pass that perturbs ti has its own (wr[k] = rd[k]), the
 * passes that do not share the first one's (wr[k] = NULL but for that one). Returns the number of
 * copies to fill. */
static int plan(const fwd *f, int ti, const float *base, int direct, float **wr, const float **rd)
{
    const pk_tensor *t = &f->m->t[ti];
    int shared = -1, fill = 0;
    for (int k = 0; k < f->np; k++) {
        int own = perturbs(f, k, ti);
        wr[k] = NULL;
        if (!own && direct && t->dtype == PK_DTYPE_F32) {
            rd[k] = t->data;
            continue;
        }
        if (!own && shared < 0)
            shared = k;
        int slot = own ? k : shared;
        rd[k] = pass_f(f->m, base, slot);
        if (slot == k) {
            wr[k] = pass_f(f->m, base, k);
            fill++;
        }
    }
    return fill;
}

/* A vector (bias / norm weight) for each pass, widened + perturbed into vscr slot `slot`;
 * v[k] = NULL if ti < 0. */
static void fetch_vec(const fwd *f, int ti, int slot, const float **v)
{
    pk_model *m = f->m;
    for (int k = 0; k < f->np; k++)
        v[k] = NULL;
    if (ti < 0)
        return;
    float *wr[SWEEP_MAX];
    if (plan(f, ti, m->vscr + (size_t)slot * m->vmax, 1, wr, v) > 0)
        fetch_span(f, ti, 0, m->t[ti].numel, wr, 0);
}

/* OpenBLAS's OpenMP build runs a GEMM on omp_get_max_threads() threads unless called from an
 * active parallel region; setting this task's count to 1 makes it single-threaded in every
 * region, including a one-thread one. The setting ends with the region. */
static inline void blas_serial(void)
{
    omp_set_num_threads(1);
}

/* Whether a region of tiles runs as an OpenMP team: its own condition (enough items and flops)
 * and more than one thread. Otherwise its items run in a plain loop on this thread: libgomp makes
 * a team of one for a region whose if clause is false too, and its barriers cost two futex
 * system calls (about 1.2 us on this VM), which at --threads 1 on stories260k's top block came to
 * 4% of a step. The items are the same calls in the same order either way, so the bits are too. */
static inline int par_on(int cond)
{
    return cond && omp_get_max_threads() > 1;
}

/* Around such a plain loop: OpenBLAS single-threaded, as blas_serial makes it in a team. */
static inline int serial_begin(void)
{
    int n = omp_get_max_threads();
    omp_set_num_threads(1);
    return n;
}

static inline void serial_end(int n)
{
    omp_set_num_threads(n);
}

/* Items 0 .. items-1 of a region of tiles, fn(f, job, it) each: as an OpenMP team (dynamic
 * schedule, OpenBLAS single-threaded in each thread) when par_on(cond), else in a plain loop. */
typedef void (*tile_fn)(const fwd *f, const void *job, int it);

static void run_tiles(const fwd *f, const void *job, int items, int cond, tile_fn fn)
{
    if (!par_on(cond)) {
        int n = serial_begin();
        for (int it = 0; it < items; it++)
            fn(f, job, it);
        serial_end(n);
        return;
    }
#pragma omp parallel
    {
        blas_serial();
#pragma omp for schedule(dynamic) nowait
        for (int it = 0; it < items; it++)
            fn(f, job, it);
    }
}

/* Rows 0 .. n-1 of a row loop (norms, activations, RoPE, the head's merge), fn(job, r) each:
 * split over the threads in a static schedule when par_on(cond), else a plain loop on this
 * thread (no team of one: par_on). Rows are independent, so the bits are the same either way. */
typedef void (*row_fn)(const void *job, int r);

static void run_rows(const void *job, int n, int cond, row_fn fn)
{
    if (!par_on(cond)) {
        for (int r = 0; r < n; r++)
            fn(job, r);
        return;
    }
#pragma omp parallel for schedule(static)
    for (int r = 0; r < n; r++)
        fn(job, r);
}

/* Token rows per GEMM tile of an N-row operand: a function of N alone. */
static inline int tok_tile(int N)
{
    return N >= WIDE_N ? TOK_WIDE : TOK_TILE;
}

/* The output tile width of a linear layer with `out` outputs whose weight blocks hold at most
 * cap output rows, for N token rows: a function of the shapes only. Where the widest tiles (up
 * to OUT_WIDE and cap) still give WIDE_ITEMS tiles per pass, those (x is packed once per output
 * tile); else a multiple of 3 tiles, so that a 512-token batch (2 token tiles) gives 6 tiles per
 * pass, which 2 and 3 threads share evenly, each at most OUT_TILE wide (and cap). Whole
 * 16-column vectors. */
static int out_tile(int out, int cap, int N)
{
    int lim = cap < OUT_WIDE ? cap : OUT_WIDE;
    int tt = tok_tile(N), n = (out + lim - 1) / lim, nt = (N + tt - 1) / tt;
    if (n * nt < WIDE_ITEMS) { /* else enough tiles per pass anyway: the widest, least packing */
        lim = cap < OUT_TILE ? cap : OUT_TILE;
        if (out <= lim && out < 192)
            return out;
        n = 3 * ((out + 3 * lim - 1) / (3 * lim));
    }
    int to = (out + n - 1) / n;
    to = (to + 15) / 16 * 16;
    return to < lim ? to : lim;
}

/* A linear layer's GEMM over output columns [o0, o1) for every pass: y[:, o] = beta * y[:, o] +
 * x (N, K) @ W^T[:, o]. The tiles are `tt` token rows x `to` output columns counted from
 * token 0 and from o0, which is a multiple of `to`: the same tiles whatever the thread count,
 * FFN row chunk or weight block, each one single-threaded sgemm over all of K. */
typedef struct gemm_part {
    const float *x; /* pass 0's input at its first K column, row stride ldx */
    int ldx;
    const float *w[SWEEP_MAX]; /* pass k's weights of output column o0: [K, out] (conv) or
                                  [out, K] */
    int ldw;
    int conv;
    float *y; /* pass 0's output, column 0, row stride ldy */
    int ldy;
    int N, K, o0, o1, to;
    int tt; /* token rows per tile: tok_tile of the rows that set the tiles */
    float beta;
    const int *pass; /* the passes this GEMM runs for: pass[0 .. npass) */
    int npass;
} gemm_part;

/* Tile `it` of gemm_tiles (neighbouring items share a W tile). */
static void gemm_item(const fwd *f, const void *job, int it)
{
    const gemm_part *g = job;
    pk_model *m = f->m;
    int tt = g->tt, nt = (g->N + tt - 1) / tt, no = (g->o1 - g->o0 + g->to - 1) / g->to;
    int per = nt * no;
    int k = g->pass[it / per], o = it % per / nt, t = it % nt;
    int r0 = t * tt, nr = g->N - r0 < tt ? g->N - r0 : tt;
    int c0 = o * g->to, nc = g->o1 - g->o0 - c0 < g->to ? g->o1 - g->o0 - c0 : g->to;
    const float *w = g->w[k] + (size_t)c0 * (g->conv ? 1u : (size_t)g->ldw);
    /* x tile (nr, K) @ W tile^T -> y[r0:r0+nr, o0+c0 : o0+c0+nc] */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, g->conv ? CblasNoTrans : CblasTrans, nr, nc, g->K,
                1.0f, pass_f(m, g->x, k) + (size_t)r0 * g->ldx, g->ldx, w, g->ldw, g->beta,
                pass_f(m, g->y, k) + (size_t)r0 * g->ldy + g->o0 + c0, g->ldy);
}

static void gemm_tiles(const fwd *f, const gemm_part *g)
{
    int tt = g->tt, nt = (g->N + tt - 1) / tt, no = (g->o1 - g->o0 + g->to - 1) / g->to;
    int items = nt * no * g->npass;
    double flops = 2.0 * g->N * (g->o1 - g->o0) * g->K * g->npass;
    run_tiles(f, g, items, items > 1 && flops > PAR_FLOPS, gemm_item);
}

/* Wide-input weights (fc2, down_proj; GPT-2's Conv1D are stored [in, out]) are materialized in
 * blocks of kc inputs (the GEMM's reduction): each block's tiles read their slice of x once and
 * add into y, blocks in order, so x is not packed again per block of outputs. wr / rd: plan. */
static void linear_kblocks(const fwd *f, gemm_part *g, int wi, int in, int out, float *const *wr,
                           const float *const *rd)
{
    pk_model *m = f->m;
    int kc = (int)(m->wscr_n / (size_t)out);
    kc = kc >= 512 ? kc / 256 * 256 : kc; /* whole z blocks of 256 per row slice */
    int qb = (int)pk_dtype_block(m->t[wi].dtype);
    if (!g->conv && qb > 1) { /* a column slice of a block-quantized row is whole blocks */
        kc = kc / qb * qb;
        PK_ASSERT(kc > 0);
    }
    const float *x = g->x;
    float beta = g->beta;
    for (int k = 0; k < f->np; k++)
        g->w[k] = rd[k];
    for (int c0 = 0; c0 < in; c0 += kc) {
        int nk = in - c0 < kc ? in - c0 : kc;
        if (g->conv) /* rows [c0, c0+nk) of W [in, out] */
            fetch_block(f, wi, (size_t)c0, (size_t)nk, 0, (size_t)out, wr);
        else /* columns [c0, c0+nk) of W [out, in], as [out, nk] */
            fetch_block(f, wi, 0, (size_t)out, (size_t)c0, (size_t)nk, wr);
        g->x = x + c0;
        g->K = nk;
        g->ldw = g->conv ? out : nk;
        g->beta = c0 == 0 ? beta : 1.0f;
        gemm_tiles(f, g);
    }
}

/* The other weights [out, in] in blocks of whole output tiles (3 at a time where they fit). */
static void linear_rowblocks(const fwd *f, gemm_part *g, int wi, int in, int out, float *const *wr,
                             const float *const *rd)
{
    pk_model *m = f->m;
    int cap = (int)(m->wscr_n / (size_t)in);
    int R = cap / (3 * g->to) * 3 * g->to;
    R = R > 0 ? R : cap / g->to * g->to;
    g->ldw = in;
    for (int k = 0; k < f->np; k++)
        g->w[k] = rd[k];
    for (int r0 = 0; r0 < out; r0 += R) {
        int nr = out - r0 < R ? out - r0 : R;
        fetch_block(f, wi, (size_t)r0, (size_t)nr, 0, (size_t)in, wr);
        g->o0 = r0;
        g->o1 = r0 + nr;
        gemm_tiles(f, g);
    }
}

/* y[r, :n] = b (or += b when accumulating), before the GEMM adds x @ W^T with beta 1: one
 * write of y instead of OpenBLAS's zeroing pass (beta 0) and a second read-modify-write. */
typedef struct {
    float *y;
    const float *b;
    int ldy, n, accumulate;
} bias_job;

static void bias_row(const void *job, int r)
{
    const bias_job *j = job;
    float *yr = j->y + (size_t)r * j->ldy;
    if (j->accumulate) {
        for (int c = 0; c < j->n; c++)
            yr[c] += j->b[c];
    } else {
        memcpy(yr, j->b, (size_t)j->n * sizeof *yr);
    }
}

static void put_bias(float *y, int ldy, int N, int n, const float *b, int accumulate)
{
    bias_job j = {.y = y, .b = b, .ldy = ldy, .n = n, .accumulate = accumulate};
    run_rows(&j, N, 1, bias_row);
}

/* One group of linear_lora's token tiles: slot g0 + it % ng of pass it / ng. */
typedef struct lora_job {
    const float *x;
    float *y;
    int ldx, ldy, N, r, in, out, g0, ng;
    size_t na, nb;
    float sc;
} lora_job;

static void lora_item(const fwd *f, const void *job, int it)
{
    const lora_job *l = job;
    pk_model *m = f->m;
    int k = it / l->ng, slot = it % l->ng, r0 = (l->g0 + slot) * TOK_TILE;
    int nr = l->N - r0 < TOK_TILE ? l->N - r0 : TOK_TILE;
    float *w = pass_f(m, m->wscr, k);
    float *xa = w + l->na + l->nb + (size_t)slot * TOK_TILE * (size_t)l->r;
    /* x tile (nr, in) @ A^T -> xa (nr, r); y tile += sc * xa @ B^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, l->r, l->in, 1.0f,
                pass_f(m, l->x, k) + (size_t)r0 * l->ldx, l->ldx, w, l->in, 0.0f, xa, l->r);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, l->out, l->r, l->sc, xa, l->r,
                w + l->na, l->r, 1.0f, pass_f(m, l->y, k) + (size_t)r0 * l->ldy, l->ldy);
}

/* The LoRA term of an adapted weight, for every pass: y[N, out] += (alpha / r) * (x A^T) B^T.
 * A [r, in] and B [out, r] are fp32 model tensors, widened (+ their perturbation) into the
 * pass's weight scratch, followed there by xa, the [TOK_TILE, r] products of a group of token
 * tiles. Each token tile is two single-threaded sgemms by one thread: the bits do not depend on
 * the thread count. The base weight's dtype does not matter here. */
static void linear_lora(const fwd *f, const float *x, int ldx, int N, int ai, int bi, float *y,
                        int ldy)
{
    pk_model *m = f->m;
    const pk_tensor *A = &m->t[ai], *B = &m->t[bi];
    int r = (int)A->rows, in = (int)A->cols, out = (int)B->rows;
    size_t na = A->numel, nb = B->numel;
    PK_ASSERT(na + nb + (size_t)TOK_TILE * (size_t)r <= m->wscr_n); /* PK_LORA_MAX_RANK */
    float *da[SWEEP_MAX], *db[SWEEP_MAX];
    for (int k = 0; k < f->np; k++) {
        da[k] = pass_f(m, m->wscr, k);
        db[k] = da[k] + na;
    }
    fetch_block(f, ai, 0, (size_t)r, 0, (size_t)in, da);
    fetch_block(f, bi, 0, (size_t)out, 0, (size_t)r, db);
    int nt = (N + TOK_TILE - 1) / TOK_TILE;
    int group = (int)((m->wscr_n - na - nb) / ((size_t)TOK_TILE * (size_t)r));
    double flops = 2.0 * N * (double)r * (in + out) * f->np;
    lora_job l = {.x = x,
                  .y = y,
                  .ldx = ldx,
                  .ldy = ldy,
                  .N = N,
                  .r = r,
                  .in = in,
                  .out = out,
                  .na = na,
                  .nb = nb,
                  .sc = m->lora_scale};
    for (l.g0 = 0; l.g0 < nt; l.g0 += group) {
        l.ng = nt - l.g0 < group ? nt - l.g0 : group;
        int items = l.ng * f->np;
        run_tiles(f, &l, items, items > 1 && flops > PAR_FLOPS, lora_item);
    }
}

/* y[N, out] (ldy) = ((accumulate ? y : 0) + b) + x[N, in] (ldx) @ W^T, for every pass (x and y
 * point into pass 0's activations), + the LoRA term when W has an adapter. W is a Linear weight
 * [out, in], or with m->conv1d a GPT-2 Conv1D weight [in, out]. Stored fp32 weights that are not
 * perturbed are read in place; the others are materialized block by block in the scratch. Either
 * way the output tiles depend on the layer's shape only (out_tile). */
static void linear_in(const fwd *f, const float *x, int ldx, int N, int tn, int wi, int bi,
                      float *y, int ldy, int accumulate)
{
    pk_model *m = f->m;
    const pk_tensor *w = &m->t[wi];
    int conv = m->conv1d;
    int in = (int)(conv ? w->rows : w->cols), out = (int)(conv ? w->cols : w->rows);
    int kblocks = conv || in > out;
    int cap = kblocks ? out : (int)(m->wscr_n / (size_t)in);
    gemm_part g = {.x = x,
                   .ldx = ldx,
                   .conv = conv,
                   .y = y,
                   .ldy = ldy,
                   .N = N,
                   .K = in,
                   .o0 = 0,
                   .o1 = out,
                   .to = out_tile(out, cap, tn),
                   .tt = tok_tile(tn),
                   .beta = accumulate || bi >= 0 ? 1.0f : 0.0f};
    if (bi >= 0) {
        const float *b[SWEEP_MAX];
        fetch_vec(f, bi, 0, b);
        for (int k = 0; k < f->np; k++)
            put_bias(pass_f(m, y, k), ldy, N, out, b[k], accumulate);
    }
    /* the passes reading W in place run one GEMM over all of K; the others go by blocks */
    float *wr[SWEEP_MAX];
    const float *rd[SWEEP_MAX];
    int direct[SWEEP_MAX], nd = 0, blocked[SWEEP_MAX], nb = 0;
    plan(f, wi, m->wscr, 1, wr, rd);
    for (int k = 0; k < f->np; k++) {
        if (rd[k] == w->data)
            direct[nd++] = k;
        else
            blocked[nb++] = k;
    }
    if (nd > 0) {
        for (int k = 0; k < f->np; k++)
            g.w[k] = w->data;
        g.ldw = conv ? out : in;
        g.pass = direct;
        g.npass = nd;
        gemm_tiles(f, &g);
    }
    if (nb > 0) {
        g.pass = blocked;
        g.npass = nb;
        if (kblocks)
            linear_kblocks(f, &g, wi, in, out, wr, rd);
        else
            linear_rowblocks(f, &g, wi, in, out, wr, rd);
    }
    int ai, lb;
    if (pk_lora_of(m, wi, &ai, &lb)) /* after the bias, as PEFT adds it to the layer's output */
        linear_lora(f, x, ldx, N, ai, lb, y, ldy);
}

static void linear(const fwd *f, const float *x, int ldx, int N, int wi, int bi, float *y, int ldy,
                   int accumulate)
{
    linear_in(f, x, ldx, N, N, wi, bi, y, ldy, accumulate);
}

/* A norm's rows: y = LayerNorm(x) * w + b or RMSNorm(x) * w (w, b may be NULL for LayerNorm);
 * in place allowed. */
typedef struct {
    const float *x, *w, *b;
    float *y;
    int ldx, ldy, C;
    double eps;
} norm_job;

static void layernorm_row(const void *job, int r)
{
    const norm_job *n = job;
    const float *xr = n->x + (size_t)r * n->ldx;
    float *yr = n->y + (size_t)r * n->ldy;
    double mean = pk_row_sum(xr, n->C) / n->C;
    double var = pk_row_sqdev(xr, n->C, mean) / n->C;
    float rs = (float)(1.0 / sqrt(var + n->eps)), mu = (float)mean;
    for (int j = 0; j < n->C; j++) {
        float v = (xr[j] - mu) * rs;
        if (n->w)
            v *= n->w[j];
        if (n->b)
            v += n->b[j];
        yr[j] = v;
    }
}

static void rmsnorm_row(const void *job, int r)
{
    const norm_job *n = job;
    const float *xr = n->x + (size_t)r * n->ldx;
    float *yr = n->y + (size_t)r * n->ldy;
    double ss = pk_row_sqdev(xr, n->C, 0.0);
    float rs = (float)(1.0 / sqrt(ss / n->C + n->eps));
    for (int j = 0; j < n->C; j++)
        yr[j] = n->w[j] * (xr[j] * rs);
}

static void layernorm(const float *x, int ldx, float *y, int ldy, int N, int C, const float *w,
                      const float *b, double eps)
{
    norm_job n = {.x = x, .w = w, .b = b, .y = y, .ldx = ldx, .ldy = ldy, .C = C, .eps = eps};
    run_rows(&n, N, 1, layernorm_row);
}

static void rmsnorm(const float *x, int ldx, float *y, int ldy, int N, int C, const float *w,
                    double eps)
{
    norm_job n = {.x = x, .w = w, .y = y, .ldx = ldx, .ldy = ldy, .C = C, .eps = eps};
    run_rows(&n, N, 1, rmsnorm_row);
}

/* One row: a[j] = act(a[j]). SiLU and gelu_new through lse.c's own e^x (vectorized, no libm),
 * ReLU vectorizes as it is, GELU (erf) calls libm's erff per element. */
static inline void act_row(int act, float *a, int n)
{
    switch (act) {
    case ACT_SILU:
        pk_silu_row(a, n);
        break;
    case ACT_RELU:
        for (int j = 0; j < n; j++)
            a[j] = a[j] > 0.0f ? a[j] : 0.0f;
        break;
    case ACT_GELU:
        for (int j = 0; j < n; j++)
            a[j] = 0.5f * a[j] * (1.0f + erff(a[j] * 0.70710678118654752f));
        break;
    default: /* gelu_new: the tanh approximation */
        pk_gelu_tanh_row(a, n);
        break;
    }
}

/* a[N, n] (lda) = act(a), or for gated MLPs a = act(a) * up (up[N, n], same ld): the same
 * operations per element as act(a) * up, in two loops. */
typedef struct {
    float *a;
    const float *up;
    int act, lda, n;
} act_job;

static void activate_row(const void *job, int r)
{
    const act_job *j = job;
    float *ar = j->a + (size_t)r * j->lda;
    act_row(j->act, ar, j->n);
    if (j->up) {
        const float *ur = j->up + (size_t)r * j->lda;
        for (int c = 0; c < j->n; c++)
            ar[c] *= ur[c];
    }
}

static void activate(int act, float *a, int lda, int N, int n, const float *up)
{
    act_job j = {.a = a, .up = up, .act = act, .lda = lda, .n = n};
    run_rows(&j, N, 1, activate_row);
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
typedef struct {
    float *x;
    const float *tab;
    int ld, T, nheads, hd;
} rope_job;

static void rope_row(const void *job, int n)
{
    const rope_job *j = job;
    int half = j->hd / 2;
    const float *cs = j->tab + (size_t)(n % j->T) * j->hd, *sn = cs + half;
    for (int h = 0; h < j->nheads; h++) {
        float *p = j->x + (size_t)n * j->ld + (size_t)h * j->hd;
        for (int i = 0; i < half; i++) {
            float a = p[i], b = p[i + half];
            p[i] = a * cs[i] - b * sn[i];
            p[i + half] = b * cs[i] + a * sn[i];
        }
    }
}

static void rope_apply(float *x, int ld, int N, int T, int nheads, int hd, const float *tab)
{
    rope_job j = {.x = x, .tab = tab, .ld = ld, .T = T, .nheads = nheads, .hd = hd};
    run_rows(&j, N, 1, rope_row);
}

typedef struct attn_job {
    pk_model *m;
    const pk_batch *b;
    const float *q, *k, *v;
    float *out;
    int ldq, ldkv, kv_len, pos0, causal;
    size_t kbs, sstride;
    float scale;
} attn_job;

/* (batch, head) bh of attention, on the calling thread's score scratch. */
static void attn_item(const fwd *f, const void *job, int bh)
{
    const attn_job *a = job;
    (void)f;
    const pk_cfg *c = &a->m->cfg;
    int T = a->b->T, hd = c->hd, nh = c->nh, group = c->nh / c->nkv, qd = nh * hd;
    int bi = bh / nh, h = bh % nh, g = h / group;
    float *S = a->m->att + (size_t)omp_get_thread_num() * a->sstride;
    int tk = a->kv_len > 0 ? a->kv_len : a->b->lengths[bi];
    const float *Q = a->q + (size_t)bi * T * a->ldq + (size_t)h * hd;
    const float *K = a->k + bi * a->kbs + (size_t)g * hd, *Vv = a->v + bi * a->kbs + (size_t)g * hd;
    /* query rows: a row's padding positions (t >= its length) are never read, so their outputs
     * are zeros instead of attention over its keys */
    int tq = a->kv_len > 0 ? T : tk;
    /* S (tq, tk) = Q (tq, hd) @ K^T (hd, tk) * scale */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, tq, tk, hd, a->scale, Q, a->ldq, K,
                a->ldkv, 0.0f, S, tk);
    for (int t = 0; t < tq; t++) {
        float *sr = S + (size_t)t * tk;
        int smax = a->causal && a->pos0 + t + 1 < tk ? a->pos0 + t + 1 : tk;
        double sum = pk_exp_row(sr, smax, pk_row_max(sr, smax));
        float inv = (float)(1.0 / sum);
        for (int s = 0; s < smax; s++)
            sr[s] *= inv;
        for (int s = smax; s < tk; s++)
            sr[s] = 0.0f;
    }
    /* O (tq, hd) = P (tq, tk) @ V (tk, hd) */
    float *O = a->out + (size_t)bi * T * qd + (size_t)h * hd;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, tq, hd, tk, 1.0f, S, tk, Vv, a->ldkv,
                0.0f, O, qd);
    for (int t = tq; t < T; t++)
        memset(O + (size_t)t * qd, 0, (size_t)hd * sizeof(float));
}

/* Scaled dot-product attention, per (batch, head): out[b*T+t, h*hd..] (ld nh*hd).
 * q row (b, t) at q + (b*T + t)*ldq; keys of batch b at k + b*kbs + s*ldkv, s < Tk(b), where
 * Tk(b) = kv_len > 0 ? kv_len : lengths[b]. Causal: key s is visible from query t if
 * s <= pos0 + t. Padding keys (s >= Tk(b)) are never visible; without kv_len, padding queries
 * (t >= lengths[b]) are not computed: their outputs are zeros. */
static void attention(pk_model *m, const pk_batch *b, int layer, const float *q, int ldq,
                      const float *k, const float *v, int ldkv, size_t kbs, int kv_len, int pos0,
                      float *out)
{
    const pk_cfg *c = &m->cfg;
    float scale = (float)(1.0 / sqrt((double)c->hd));
    if (c->attn_inv_layer)
        scale /= (float)(layer + 1);
    attn_job a = {.m = m,
                  .b = b,
                  .q = q,
                  .k = k,
                  .v = v,
                  .out = out,
                  .ldq = ldq,
                  .ldkv = ldkv,
                  .kv_len = kv_len,
                  .pos0 = pos0,
                  .causal = c->arch != ARCH_ROBERTA,
                  .kbs = kbs,
                  .sstride = (size_t)m->rT * (size_t)m->rTk,
                  .scale = scale};
    int nbh = b->B * c->nh;
    /* a (batch, head) is one thread's: its GEMMs and softmax never depend on the thread count */
    double flops = 4.0 * nbh * b->T * (kv_len > 0 ? kv_len : b->T) * c->hd;
    run_tiles(NULL, &a, nbh, nbh > 1 && flops > PAR_FLOPS, attn_item);
}

/* Checks a batch against the model; pos0 is the position of its first token. */
pk_status pk_fwd_check_batch(const pk_model *m, const pk_batch *b, int pos0)
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
static void embed(const fwd *f, const pk_batch *b, int pos0)
{
    pk_model *m = f->m;
    const pk_cfg *c = &m->cfg;
    int T = b->T, N = b->B * b->T, H = c->H, E = c->arch == ARCH_OPT ? c->proj : H, np = f->np;
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
        float *d = dst + (size_t)n * E;
        if (t >= b->lengths[bi]) {
            for (int k = 0; k < np; k++)
                memset(pass_f(m, d, k), 0, (size_t)E * 4);
        } else {
            float *dk[SWEEP_MAX];
            for (int k = 0; k < np; k++)
                dk[k] = pass_f(m, d, k);
            fetch_span(f, m->emb, (size_t)b->ids[n] * (size_t)E, (size_t)E, dk, 0);
        }
    }
    if (m->proj_in >= 0)
        linear(f, m->xn, E, N, m->proj_in, -1, m->x, H, 0);
    if (m->pos_emb < 0)
        return;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        int bi = n / T, t = n % T;
        if (t >= b->lengths[bi])
            continue;
        float *tmp = m->big + (size_t)n * m->wbig, *tk[SWEEP_MAX];
        for (int k = 0; k < np; k++)
            tk[k] = pass_f(m, tmp, k);
        fetch_span(f, m->pos_emb, (size_t)m->pos[n] * (size_t)H, (size_t)H, tk, 0);
        if (m->type_emb >= 0) {
            int tt = b->token_type ? b->token_type[n] : 0;
            fetch_span(f, m->type_emb, (size_t)tt * (size_t)H, (size_t)H, tk, (size_t)H);
        }
        for (int k = 0; k < np; k++) {
            float *t0 = tk[k], *xr = pass_f(m, m->x + (size_t)n * H, k);
            if (m->type_emb >= 0) {
                for (int j = 0; j < H; j++)
                    t0[j] += t0[H + j];
            }
            for (int j = 0; j < H; j++)
                xr[j] += t0[j];
        }
    }
    if (c->arch == ARCH_ROBERTA) {
        const float *w[SWEEP_MAX], *bb[SWEEP_MAX];
        fetch_vec(f, m->emb_ln_w, 0, w);
        fetch_vec(f, m->emb_ln_b, 1, bb);
        for (int k = 0; k < np; k++)
            layernorm(pass_f(m, m->x, k), H, pass_f(m, m->x, k), H, N, H, w[k], bb[k], c->eps);
    }
}

/* y = norm(x) for every pass (in place allowed). */
static void norm(const fwd *f, int wi, int bi, const float *x, float *y, int N)
{
    pk_model *m = f->m;
    const pk_cfg *c = &m->cfg;
    const float *w[SWEEP_MAX], *b[SWEEP_MAX];
    fetch_vec(f, wi, 0, w);
    fetch_vec(f, bi, 1, b);
    for (int k = 0; k < f->np; k++) {
        if (c->arch == ARCH_LLAMA || c->arch == ARCH_QWEN2)
            rmsnorm(pass_f(m, x, k), c->H, pass_f(m, y, k), c->H, N, c->H, w[k], c->eps);
        else
            layernorm(pass_f(m, x, k), c->H, pass_f(m, y, k), c->H, N, c->H, w[k], b[k], c->eps);
    }
}

/* The FFN over rows [0, N) of in (ld H), accumulated into x; in row chunks of at most m->fchunk
 * rows (what big holds), of equal size in whole token tiles: the chunks' GEMM tiles are then the
 * tiles of an unchunked pass, and the bits do not depend on the reservation that sets fchunk. */
static void ffn(const fwd *f, const pk_layer *y, const float *in, int N)
{
    pk_model *m = f->m;
    const pk_cfg *c = &m->cfg;
    int H = c->H, ni = c->inter, gated = y->gate_w >= 0, ld = gated ? 2 * ni : ni;
    int tt = tok_tile(N), cap = m->fchunk >= tt ? m->fchunk / tt * tt : m->fchunk;
    int chunks = (N + cap - 1) / cap, rows = (N + chunks - 1) / chunks;
    rows = chunks > 1 ? (rows + tt - 1) / tt * tt : rows;
    for (int r0 = 0; r0 < N; r0 += rows) {
        int n = N - r0 < rows ? N - r0 : rows;
        const float *inr = in + (size_t)r0 * H;
        if (gated) {
            linear_in(f, inr, H, n, N, y->gate_w, y->gate_b, m->big, ld, 0);
            linear_in(f, inr, H, n, N, y->fc1_w, y->fc1_b, m->big + ni, ld, 0);
        } else {
            linear_in(f, inr, H, n, N, y->fc1_w, y->fc1_b, m->big, ld, 0);
        }
        for (int k = 0; k < f->np; k++) {
            float *h = pass_f(m, m->big, k);
            activate(c->act, h, ld, n, ni, gated ? h + ni : NULL);
        }
        linear_in(f, m->big, ld, n, N, y->fc2_w, y->fc2_b, m->x + (size_t)r0 * H, H, 1);
    }
}

/* Block l's attention half (stage 2l, DESIGN 4 "Stages"): ln1 (before the attention, or after
 * its residual in a post-LN block), the projections, RoPE, the attention and its output
 * projection added to x [N, H]. */
static void attn_half(const fwd *f, const pk_batch *b, int l, float **kv_k, float **kv_v, int pos0)
{
    pk_model *m = f->m;
    const pk_cfg *c = &m->cfg;
    const pk_layer *y = &m->layers[l];
    int N = b->B * b->T, H = c->H, qd = c->nh * c->hd, kvd = c->nkv * c->hd;
    int pre = c->pre_ln, W3 = qd + 2 * kvd;
    float *q = m->big, *k = m->big + qd, *v = m->big + qd + kvd;
    const float *in = m->x;
    if (pre) {
        norm(f, y->ln1_w, y->ln1_b, m->x, m->xn, N);
        in = m->xn;
    }
    linear(f, in, H, N, y->q_w, y->q_b, q, W3, 0);
    if (y->k_w >= 0) { /* else gpt2's fused c_attn: [q | k | v] per row */
        linear(f, in, H, N, y->k_w, y->k_b, k, W3, 0);
        linear(f, in, H, N, y->v_w, y->v_b, v, W3, 0);
    }
    for (int p = 0; p < f->np; p++) {
        float *qp = pass_f(m, q, p), *kp = pass_f(m, k, p), *vp = pass_f(m, v, p);
        if (c->arch == ARCH_LLAMA || c->arch == ARCH_QWEN2) {
            rope_apply(qp, W3, N, b->T, c->nh, c->hd, m->rope);
            rope_apply(kp, W3, N, b->T, c->nkv, c->hd, m->rope);
        }
        if (kv_k) { /* generation: append to the cache, attend over it (B == 1, one pass) */
            for (int t = 0; t < b->T; t++) {
                memcpy(kv_k[l] + (size_t)(pos0 + t) * kvd, kp + (size_t)t * W3, (size_t)kvd * 4);
                memcpy(kv_v[l] + (size_t)(pos0 + t) * kvd, vp + (size_t)t * W3, (size_t)kvd * 4);
            }
            attention(m, b, l, qp, W3, kv_k[l], kv_v[l], kvd, 0, pos0 + b->T, pos0, m->xn);
        } else {
            attention(m, b, l, qp, W3, kp, vp, W3, (size_t)b->T * W3, 0, 0, pass_f(m, m->xn, p));
        }
    }
    linear(f, m->xn, qd, N, y->o_w, y->o_b, m->x, H, 1);
    if (!pre)
        norm(f, y->ln1_w, y->ln1_b, m->x, m->x, N);
}

/* Block l's MLP half (stage 2l + 1): ln2 (before the FFN, or after its residual in a post-LN
 * block) and the FFN added to x. */
static void mlp_half(const fwd *f, const pk_batch *b, int l)
{
    pk_model *m = f->m;
    const pk_layer *y = &m->layers[l];
    int N = b->B * b->T;
    const float *in = m->x;
    if (m->cfg.pre_ln) {
        norm(f, y->ln2_w, y->ln2_b, m->x, m->xn, N);
        in = m->xn;
    }
    ffn(f, y, in, N);
    if (!m->cfg.pre_ln)
        norm(f, y->ln2_w, y->ln2_b, m->x, m->x, N);
}

/* Stage s over x [N, H]: block s / 2's attention half (s even) or MLP half (s odd). */
static void stage(const fwd *f, const pk_batch *b, int s, float **kv_k, float **kv_v, int pos0)
{
    sweep_tail *tl = tail_of(f->m);
    if (tl)
        tl->stages += (uint64_t)f->np;
    if (s % 2 == 0)
        attn_half(f, b, s / 2, kv_k, kv_v, pos0);
    else
        mlp_half(f, b, s / 2);
}

/* The tensor indices of block y's attention half (h = 0: ln1, q, k, v, o with their biases) or
 * MLP half (h = 1: ln2, gate, fc1, fc2 with theirs) into ix, -1 where the model has none; returns
 * their count. */
enum { HALF_TENSORS = 10 };
static int half_tensors(const pk_layer *y, int h, int ix[HALF_TENSORS])
{
    const int attn[] = {y->ln1_w, y->ln1_b, y->q_w, y->q_b, y->k_w,
                        y->k_b,   y->v_w,   y->v_b, y->o_w, y->o_b};
    const int mlp[] = {y->ln2_w, y->ln2_b, y->gate_w, y->gate_b,
                       y->fc1_w, y->fc1_b, y->fc2_w,  y->fc2_b};
    _Static_assert(sizeof attn + sizeof mlp == sizeof(pk_layer), "every pk_layer index is listed");
    _Static_assert(sizeof attn <= HALF_TENSORS * sizeof(int), "HALF_TENSORS holds a half");
    size_t n = h ? sizeof mlp / sizeof mlp[0] : sizeof attn / sizeof attn[0];
    memcpy(ix, h ? mlp : attn, n * sizeof(int));
    return (int)n;
}

int pk_model_tensor_stage(const pk_model *m, size_t ti)
{
    for (int l = 0; m && l < m->cfg.L; l++) {
        for (int h = 0; h < 2; h++) {
            int ix[HALF_TENSORS], n = half_tensors(&m->layers[l], h, ix);
            for (int j = 0; j < n; j++)
                if (ix[j] >= 0 && (size_t)ix[j] == ti)
                    return 2 * l + h;
        }
    }
    return -1;
}

/* The shared prefix of a perturbation, in stages (two per block: attention half, MLP half):
 * the number of leading stages that no perturbed tensor belongs to, when no tensor before the
 * blocks (the embeddings, their norm, OPT's input projection; a tied LM head is the token
 * embedding) is perturbed: 2L when only tensors after the blocks are (the final norm, an untied
 * head, OPT's output projection, RoBERTa's MLM head). 0 when a perturbed tensor is before the
 * blocks or belongs to none of these (a LoRA tensor). Those stages compute the same values for
 * every pass (layer sampling, a trainable set, DESIGN 4), so they run once and their output
 * feeds each pass. */
int pk_fwd_shared_prefix(const pk_model *m, const pk_perturb *pert)
{
    if (pert == NULL || pert->scale == 0.0f || pert->trainable == NULL)
        return 0;
    const int before[] = {m->emb, m->pos_emb, m->type_emb, m->emb_ln_w, m->emb_ln_b, m->proj_in};
    const int after[] = {m->fin_w,      m->fin_b,      m->proj_out, m->head_w, m->head_b,
                         m->hd_dense_w, m->hd_dense_b, m->hd_ln_w,  m->hd_ln_b};
    for (size_t j = 0; j < sizeof before / sizeof before[0]; j++)
        if (before[j] >= 0 && pert->trainable[before[j]])
            return 0;
    size_t known = 0, perturbed = 0;
    int first = 2 * m->cfg.L;
    for (size_t i = 0; i < m->n_t; i++)
        perturbed += pert->trainable[i] != 0;
    for (size_t j = 0; j < sizeof after / sizeof after[0]; j++)
        known += after[j] >= 0 && pert->trainable[after[j]];
    for (int l = 0; l < m->cfg.L; l++) {
        for (int h = 0; h < 2; h++) {
            int ix[HALF_TENSORS], n = half_tensors(&m->layers[l], h, ix);
            for (int j = 0; j < n; j++) {
                if (ix[j] < 0 || !pert->trainable[ix[j]])
                    continue;
                known++;
                first = 2 * l + h < first ? 2 * l + h : first;
            }
        }
    }
    return known == perturbed && perturbed > 0 ? first : 0;
}

/* The residual stream after the first F = pk_model_frozen_level stages for every row of b, from
 * the frozen prefix's store (frozen.c): a row not held is computed by itself (a batch of that one
 * row, unperturbed) and offered to the store, so a row's bits never depend on its batch nor on the
 * store's contents. Rows go from the last to the first: a row computed in place, at the start of
 * m->x, overwrites only row 0's place, which is filled last. Padding positions are zero. */
static void frozen_rows(const fwd *one, const pk_batch *b)
{
    pk_model *m = one->m;
    int F = pk_model_frozen_level(m), T = b->T, H = m->cfg.H;
    for (int r = b->B - 1; r >= 0; r--) {
        int len = b->lengths[r];
        const int32_t *ids = b->ids + (size_t)r * T;
        const int32_t *types = b->token_type ? b->token_type + (size_t)r * T : NULL;
        float *dst = m->x + (size_t)r * T * H;
        const float *x = pk_frozen_find(m, ids, types, len);
        if (x == NULL) {
            pk_batch row = {1, len, ids, &b->lengths[r], types};
            embed(one, &row, 0);
            for (int s = 0; s < F; s++)
                stage(one, &row, s, NULL, NULL, 0);
            pk_frozen_put(m, ids, types, len, m->x);
            x = m->x;
        }
        if (x != dst)
            memcpy(dst, x, (size_t)len * H * sizeof(float));
        memset(dst + (size_t)len * H, 0, (size_t)(T - len) * H * sizeof(float));
    }
}

/* Embedding and stages [0, s0), s0 = f->prefix (no pass perturbs them): they run once,
 * unperturbed, in pass 0's activations, continuing from the sweep's prefix cache where it holds
 * fewer stages (and then holding these), and every pass starts from a copy of that residual
 * stream: the same bits as computing them per pass. Returns s0. */
static int forward_prefix(const fwd *f, const pk_batch *b, float **kv_k, float **kv_v, int pos0)
{
    pk_model *m = f->m;
    int s0 = kv_k ? 0 : f->prefix, from = 0;
    if (s0 == 0) {
        embed(f, b, pos0);
        return 0;
    }
    size_t bytes = (size_t)b->B * b->T * m->cfg.H * sizeof(float);
    prefix_cache *pc = f->cache;
    fwd one = *f;
    one.np = 1;
    memset(&one.pp[0], 0, sizeof one.pp[0]); /* unperturbed: no pass perturbs these */
    /* the frozen prefix (pk_model_freeze_prefix): stages [0, F) from the store, row by row */
    int F = pk_model_frozen_level(m), frozen = F > 0 && s0 >= F && pos0 == 0;
    if (pc && pc->stages >= 0 && pc->stages <= s0 && (!frozen || pc->stages >= F)) {
        memcpy(m->x, pc->x, bytes);
        from = pc->stages;
    } else if (frozen) {
        frozen_rows(&one, b);
        from = F;
    } else {
        embed(&one, b, pos0);
    }
    for (int s = from; s < s0; s++)
        stage(&one, b, s, kv_k, kv_v, pos0);
    if (pc && s0 > pc->stages) {
        memcpy(pc->x, m->x, bytes);
        pc->stages = s0;
    }
    for (int k = 1; k < f->np; k++)
        memcpy(pass_f(m, m->x, k), m->x, bytes);
    return s0;
}

pk_status pk_fwd_hidden(const fwd *f, const pk_batch *b, float **kv_k, float **kv_v, int pos0)
{
    pk_model *m = f->m;
    const pk_cfg *c = &m->cfg;
    pk_status st = pk_fwd_check_batch(m, b, pos0);
    if (st != PK_OK)
        return st;
    if (kv_k && (b->B != 1 || f->np != 1))
        return PK_ERR_ARG;
    st = pk_reserve(m, b->B, b->T, kv_k ? pos0 + b->T : b->T, f->np);
    if (st != PK_OK)
        return st;
    int N = b->B * b->T, H = c->H;
    if (c->arch == ARCH_LLAMA || c->arch == ARCH_QWEN2)
        rope_table(c, b->T, pos0, m->rope);
    for (int s = forward_prefix(f, b, kv_k, kv_v, pos0); s < 2 * c->L; s++)
        stage(f, b, s, kv_k, kv_v, pos0);
    switch (c->arch) {
    case ARCH_LLAMA:
    case ARCH_QWEN2:
    case ARCH_GPT2:
        norm(f, m->fin_w, m->fin_b, m->x, m->xn, N);
        break;
    case ARCH_OPT:
        if (c->final_ln) {
            norm(f, m->fin_w, m->fin_b, m->x, m->xn, N);
        } else {
            for (int k = 0; k < f->np; k++)
                memcpy(pass_f(m, m->xn, k), pass_f(m, m->x, k), (size_t)N * H * 4);
        }
        if (m->proj_out >= 0) {
            linear(f, m->xn, H, N, m->proj_out, -1, m->big, c->proj, 0);
            for (int k = 0; k < f->np; k++)
                memcpy(pass_f(m, m->xn, k), pass_f(m, m->big, k), (size_t)N * c->proj * 4);
        }
        break;
    default: { /* roberta MLM transform: dense -> gelu -> LayerNorm */
        linear(f, m->x, H, N, m->hd_dense_w, m->hd_dense_b, m->xn, H, 0);
        const float *w[SWEEP_MAX], *bb[SWEEP_MAX];
        fetch_vec(f, m->hd_ln_w, 0, w);
        fetch_vec(f, m->hd_ln_b, 1, bb);
        for (int k = 0; k < f->np; k++) {
            float *xk = pass_f(m, m->xn, k);
            activate(c->act, xk, H, N, H, NULL);
            layernorm(xk, H, xk, H, N, H, w[k], bb[k], c->eps);
        }
        break;
    }
    }
    return PK_OK;
}

/* One pass under pert's seed and scale (pert NULL: unperturbed; both, n, base ignored). */
static void single(fwd *f, pk_model *m, const pk_perturb *pert)
{
    f->m = m;
    f->np = 1;
    f->prefix = 0;
    f->cache = NULL;
    f->ev[0] = 0;
    memset(&f->pp[0], 0, sizeof f->pp[0]);
    if (pert) {
        f->pp[0].seed = pert->seed;
        f->pp[0].scale = pert->scale;
        f->pp[0].kind = pert->kind;
        f->pp[0].trainable = pert->trainable;
    }
}

pk_status pk_forward_hidden(pk_model *m, const pk_batch *b, const pk_perturb *pert, float **kv_k,
                            float **kv_v, int pos0)
{
    fwd f;
    single(&f, m, pert);
    return pk_fwd_hidden(&f, b, kv_k, kv_v, pos0);
}

/* One LM-head evaluation (see lm_head): its operands and the group of vocabulary blocks at hand. */
typedef struct head_job {
    const float *h; /* pass 0's gathered rows [M, Hh] */
    int M, Hh, V, LR;
    const float *w[SWEEP_MAX];    /* pass k's weight rows from vocabulary row b0 * LR on */
    const float *bias[SWEEP_MAX]; /* pass k's bias [V] or NULL */
    int lse;                      /* per-row (max, sum of exponentials) wanted */
    const int32_t *ids;
    int id_stride, n_ids;
    float *picked[SWEEP_MAX]; /* pass k's picked logits [M, n_ids], or NULL */
    float *full[SWEEP_MAX];   /* pass k's logits [M, V], or NULL: logits go to the slots in scr */
    float *scr; /* pass 0's logits slots: slot s (block b0 + s) is [M, LR] at scr + s * M * LR;
                   with wide head tiles a span's slots hold its blocks side by side */
    int b0, g;  /* the group: blocks b0 .. b0+g-1 */
} head_job;

/* Rows [r0, r0+n) of the logits of vocabulary block slot s (logit j of row i at lg[i * ld + j],
 * vocabulary v0 .. v0+nr) of pass k: bias, picked ids, and the block's max and sum of
 * exp(logit - max) per row, for head_merge. */
static void head_rows(const fwd *f, const head_job *j, int k, int s, float *lg, int ld, int r0,
                      int n, int v0, int nr)
{
    pk_model *m = f->m;
    const float *bk = j->bias[k];
    double *pm = pass_d(m, m->lpmax, k) + (size_t)s * j->M;
    double *ps = pass_d(m, m->lpsum, k) + (size_t)s * j->M;
    float *pk = j->picked[k];
    for (int i = 0; i < n; i++) {
        int r = r0 + i;
        float *row = lg + (size_t)i * ld;
        if (bk) {
            for (int c = 0; c < nr; c++)
                row[c] += bk[v0 + c];
        }
        if (j->lse) {
            float bm = pk_row_max(row, nr);
            pm[r] = (double)bm;
            ps[r] = pk_exp_sum(row, nr, bm);
        }
        for (int q = 0; q < j->n_ids; q++) {
            int id = j->ids[(size_t)r * j->id_stride + q];
            if (id >= v0 && id < v0 + nr)
                pk[(size_t)r * j->n_ids + q] = row[id - v0];
        }
    }
}

/* The group's tiles for every pass: tok_tile(M) rows x one vocabulary block, each one
 * single-threaded sgemm and head_rows. From WIDE_N rows on (a function of M alone), a tile
 * spans m->lspan blocks instead (a function of the model; groups start at multiples of it, so
 * the spans do not depend on the reservation that sets lgroup): one sgemm packs the tile's
 * rows once for them (their logits side by side, [M, span] in their slots), then head_rows
 * per block. */
/* Tile `it` of head_tiles. */
static void head_item(const fwd *f, const void *job, int it)
{
    const head_job *j = job;
    pk_model *m = f->m;
    int tt = tok_tile(j->M), nt = (j->M + tt - 1) / tt;
    int gs = j->M >= WIDE_N ? m->lspan : 1;
    int per = (j->g + gs - 1) / gs * nt;
    int k = it / per, s0 = it % per / nt * gs, t = it % nt;
    int v0 = (j->b0 + s0) * j->LR, span = (j->g - s0 < gs ? j->g - s0 : gs) * j->LR;
    int nr = j->V - v0 < span ? j->V - v0 : span;
    int r0 = t * tt, n = j->M - r0 < tt ? j->M - r0 : tt;
    const float *wb = j->w[k] + (size_t)s0 * j->LR * j->Hh;
    int ld = j->full[k] ? j->V : span;
    float *lg = j->full[k] ? j->full[k] + (size_t)r0 * j->V + v0
                           : pass_f(m, j->scr, k) + (size_t)s0 * j->M * j->LR + (size_t)r0 * span;
    /* logits (n, nr) = h rows (n, Hh) @ Wblk^T (nr, Hh) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, nr, j->Hh, 1.0f,
                pass_f(m, j->h, k) + (size_t)r0 * j->Hh, j->Hh, wb, j->Hh, 0.0f, lg, ld);
    for (int s = 0; s < gs && s * j->LR < nr; s++) {
        int nrs = nr - s * j->LR < j->LR ? nr - s * j->LR : j->LR;
        head_rows(f, j, k, s0 + s, lg + (size_t)s * j->LR, ld, r0, n, v0 + s * j->LR, nrs);
    }
}

static void head_tiles(const fwd *f, const head_job *j)
{
    pk_model *m = f->m;
    int tt = tok_tile(j->M), nt = (j->M + tt - 1) / tt;
    int gs = j->M >= WIDE_N ? m->lspan : 1; /* blocks per tile; lgroup is a multiple of lspan */
    int items = (j->g + gs - 1) / gs * nt * f->np;
    double flops = 2.0 * j->M * j->g * j->LR * j->Hh * f->np;
    run_tiles(f, j, items, items > 1 && flops > PAR_FLOPS, head_item);
}

/* Folds the group's per-block (max, sum) into each row's running log-sum-exp, one block at a time
 * in vocabulary order: the same operations whatever the group size or thread count. */
typedef struct {
    double *lmax, *lsum;
    const double *pm, *ps;
    int M, g;
} merge_job;

static void merge_row(const void *job, int r)
{
    const merge_job *j = job;
    double *lmax = j->lmax, *lsum = j->lsum;
    for (int s = 0; s < j->g; s++) {
        double bm = j->pm[(size_t)s * j->M + r], bs = j->ps[(size_t)s * j->M + r];
        if (bm > lmax[r]) { /* rescale the running sum to the new max */
            lsum[r] = lsum[r] * exp(lmax[r] - bm) + bs;
            lmax[r] = bm;
        } else {
            lsum[r] += bs * exp(bm - lmax[r]);
        }
    }
}

static void head_merge(const fwd *f, const head_job *j)
{
    pk_model *m = f->m;
    for (int k = 0; k < f->np; k++) {
        merge_job mj = {.lmax = pass_d(m, m->lmax, k),
                        .lsum = pass_d(m, m->lsum, k),
                        .pm = pass_d(m, m->lpmax, k),
                        .ps = pass_d(m, m->lpsum, k),
                        .M = j->M,
                        .g = j->g};
        run_rows(&mj, j->M, j->M * j->g > 4096, merge_row);
    }
}

/* The LM head over M gathered rows h [M, Hh] (in pass 0's activations), for every pass: per row
 * the log-sum-exp (lse, in the activations, or NULL), the logits of ids [M*id_stride + j],
 * j < n_ids (picked [M, n_ids], pass k's at picked[k], or picked NULL), or all logits
 * (full [M, V], pass k's at full[k], or full NULL). The vocabulary runs in blocks of
 * m->lrows rows, m->lgroup blocks at a time (their weights materialized together, their logits
 * side by side in big after h). */
void pk_fwd_lm_head(const fwd *f, const float *h, int M, double *lse, const int32_t *ids,
                    int id_stride, int n_ids, float *const *picked, float *const *full)
{
    pk_model *m = f->m;
    int V = m->cfg.V, Hh = pk_head_dim(m), LR = m->lrows;
    const pk_tensor *w = &m->t[m->head_w];
    float *wr[SWEEP_MAX];
    const float *rd[SWEEP_MAX];
    int fill = plan(f, m->head_w, m->wscr, 1, wr, rd);
    head_job j = {.h = h,
                  .M = M,
                  .Hh = Hh,
                  .V = V,
                  .LR = LR,
                  .lse = lse != NULL,
                  .ids = ids,
                  .id_stride = id_stride,
                  .n_ids = n_ids,
                  .scr = h == m->big ? m->big + (size_t)M * Hh : m->big};
    for (int k = 0; k < f->np; k++) {
        j.picked[k] = picked ? picked[k] : NULL;
        j.full[k] = full ? full[k] : NULL;
    }
    fetch_vec(f, m->head_b, 0, j.bias);
    for (int k = 0; lse && k < f->np; k++) {
        double *lmax = pass_d(m, m->lmax, k), *lsum = pass_d(m, m->lsum, k);
        for (int r = 0; r < M; r++) {
            lmax[r] = -(double)INFINITY;
            lsum[r] = 0;
        }
    }
    int nb = (V + LR - 1) / LR;
    for (j.b0 = 0; j.b0 < nb; j.b0 += j.g) {
        j.g = nb - j.b0 < m->lgroup ? nb - j.b0 : m->lgroup;
        size_t v0 = (size_t)j.b0 * LR, nv = (size_t)j.g * LR;
        nv = nv < (size_t)V - v0 ? nv : (size_t)V - v0;
        if (fill > 0)
            fetch_block(f, m->head_w, v0, nv, 0, (size_t)Hh, wr);
        for (int k = 0; k < f->np; k++) /* in place, or the group's block in the scratch */
            j.w[k] = rd[k] == w->data ? (const float *)w->data + v0 * Hh : rd[k];
        head_tiles(f, &j);
        if (lse)
            head_merge(f, &j);
    }
    for (int k = 0; lse && k < f->np; k++) {
        double *lk = pass_d(m, lse, k), *lmax = pass_d(m, m->lmax, k),
               *lsum = pass_d(m, m->lsum, k);
        for (int r = 0; r < M; r++)
            lk[r] = lmax[r] + log(lsum[r]);
    }
}

void pk_lm_head(pk_model *m, const pk_perturb *pert, const float *h, int M, double *lse,
                const int32_t *ids, int id_stride, int n_ids, float *picked, float *full)
{
    fwd f;
    single(&f, m, pert);
    pk_fwd_lm_head(&f, h, M, lse, ids, id_stride, n_ids, picked ? &picked : NULL,
                   full ? &full : NULL);
}
