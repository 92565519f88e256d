/* arena.c: the activation arena of a model (DESIGN 5): the per-pass buffers for a batch shape,
 * laid out once and grown, never shrunk, np copies side by side for a sweep, the sweep's tail
 * (counters and prefix cache) after them; the sweep width the memory allows. */
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "forward_impl.h"

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

/* The per-pass buffers for (B, T) tokens: widths and byte offsets inside one pass's arena copy. */
typedef struct pass_layout {
    int wn, wbig, fchunk, lrows, lgroup, lspan;
    size_t vmax, wscr_n, lfit;
    size_t x, xn, big, wscr, vscr, lmax, lsum, lse, pick, lpmax, lpsum, bytes;
} pass_layout;

static size_t take(size_t *off, size_t bytes)
{
    size_t at = *off;
    *off += (bytes + 63) & ~(size_t)63;
    return at;
}

/* The weight scratch (wscr_n floats: wrows rows of the widest tensor), the vector scratch and the
 * LM head's block rows: functions of the model alone, so the LM head's blocks (and its bits)
 * never depend on the batch reserved for. */
static void layout_weights(const pk_model *m, pass_layout *L)
{
    const pk_cfg *c = &m->cfg;
    size_t maxcols = 1, vmax = (size_t)(c->V > c->H ? c->V : c->H);
    for (size_t i = 0; i < m->n_t; i++) {
        const pk_tensor *t = &m->t[i];
        if (t->ndim >= 2)
            maxcols = t->cols > maxcols ? t->cols : maxcols;
        else
            vmax = t->numel > vmax ? t->numel : vmax;
    }
    L->vmax = vmax;
    L->wscr_n = (size_t)(m->wrows > 0 ? m->wrows : WROWS) * maxcols;
    size_t Hh = (size_t)pk_head_dim(m), lr = c->V < LM_ROWS ? (size_t)c->V : LM_ROWS;
    L->lrows = (int)(L->wscr_n / Hh < lr ? L->wscr_n / Hh : lr);
    /* LM-head blocks the weight scratch holds (at most the vocabulary's); a wide head tile's
     * blocks: as many, at most HEAD_SPAN */
    size_t nb = ((size_t)c->V + (size_t)L->lrows - 1) / (size_t)L->lrows;
    size_t fit = L->wscr_n / ((size_t)L->lrows * Hh);
    fit = fit < nb ? fit : nb;
    L->lfit = fit > 0 ? fit : 1;
    L->lspan = (int)(L->lfit < HEAD_SPAN ? L->lfit : HEAD_SPAN);
}

static void layout(const pk_model *m, int B, int T, pass_layout *L)
{
    const pk_cfg *c = &m->cfg;
    size_t N = (size_t)B * (size_t)T;
    int qd = c->nh * c->hd, kvd = c->nkv * c->hd;
    int wn = c->H;
    wn = qd > wn ? qd : wn;
    wn = c->proj > wn ? c->proj : wn;
    layout_weights(m, L);
    /* big holds per-token rows of wbig: q|k|v, 2H (embedding scratch), project_out, the LM-head
     * gather + at least one block of logits; and the FFN hidden [fchunk, ffn]. Above FFN_CHUNK
     * tokens the FFN runs in row chunks, so a wide FFN does not set the size of big. */
    int wbig = qd + 2 * kvd;
    int ffn = (c->arch == ARCH_LLAMA || c->arch == ARCH_QWEN2) ? 2 * c->inter : c->inter;
    wbig = 2 * c->H > wbig ? 2 * c->H : wbig;
    wbig = c->proj > wbig ? c->proj : wbig;
    int Hh = pk_head_dim(m);
    int head = Hh + L->lspan * L->lrows; /* the gather and a wide tile's logits */
    wbig = head > wbig ? head : wbig;
    size_t big_n = N * (size_t)wbig;
    size_t ffn_rows = N <= FFN_CHUNK ? N : FFN_CHUNK;
    if (ffn_rows * (size_t)ffn > big_n)
        big_n = ffn_rows * (size_t)ffn;
    L->wn = wn;
    L->wbig = (int)(big_n / N);
    L->fchunk = (int)(big_n / (size_t)ffn < N ? big_n / (size_t)ffn : N);
    /* LM-head blocks materialized and evaluated together: as many as the scratch and big hold,
     * in whole spans */
    size_t g = (size_t)(L->wbig - Hh) / (size_t)L->lrows;
    g = L->lfit < g ? L->lfit : g;
    g = g >= (size_t)L->lspan ? g / (size_t)L->lspan * (size_t)L->lspan : g;
    L->lgroup = g > 0 ? (int)g : 1;
    size_t off = 0;
    L->x = take(&off, N * (size_t)c->H * 4);
    L->xn = take(&off, N * (size_t)wn * 4);
    L->big = take(&off, big_n * 4);
    L->wscr = take(&off, L->wscr_n * 4);
    L->vscr = take(&off, 2 * L->vmax * 4);
    L->lmax = take(&off, N * 8);
    L->lsum = take(&off, N * 8);
    L->lse = take(&off, N * 8);
    L->pick = take(&off, N * 4);
    L->lpmax = take(&off, (size_t)L->lgroup * N * 8);
    L->lpsum = take(&off, (size_t)L->lgroup * N * 8);
    L->bytes = off;
}

pk_status pk_reserve(pk_model *m, int B, int T, int Tk, int np)
{
    int thr = omp_get_max_threads();
    if (B <= m->rB && T <= m->rT && Tk <= m->rTk && thr <= m->rthreads && np <= m->rnp)
        return PK_OK;
    const pk_cfg *c = &m->cfg;
    B = B > m->rB ? B : m->rB;
    T = T > m->rT ? T : m->rT;
    Tk = Tk > m->rTk ? Tk : m->rTk;
    Tk = Tk > T ? Tk : T;
    thr = thr > m->rthreads ? thr : m->rthreads;
    np = np > m->rnp ? np : m->rnp;
    size_t N = (size_t)B * (size_t)T;
    pass_layout L;
    layout(m, B, T, &L);
    int fail = 0;
    const sweep_tail *old = tail_of(m);
    uint64_t stages = old ? old->stages : 0;
    m->act_bytes = 0;
    m->arena = grow(m, m->arena, (size_t)np * L.bytes + sizeof(sweep_tail) + N * c->H * 4, &fail);
    m->rope = grow(m, m->rope, (size_t)T * (size_t)c->hd * 4, &fail);
    m->pos = grow(m, m->pos, N * 4, &fail);
    m->att = grow(m, m->att, (size_t)thr * (size_t)T * (size_t)Tk * 4, &fail);
    m->rows = grow(m, m->rows, N * 4, &fail);
    m->tgt = grow(m, m->tgt, N * 4, &fail);
    if (fail) {
        m->rB = m->rT = m->rTk = m->rthreads = m->rnp = 0;
        return PK_ERR_NOMEM;
    }
    char *a = m->arena;
    m->pstride = L.bytes;
    m->x = (float *)(void *)(a + L.x);
    m->xn = (float *)(void *)(a + L.xn);
    m->big = (float *)(void *)(a + L.big);
    m->wscr = (float *)(void *)(a + L.wscr);
    m->vscr = (float *)(void *)(a + L.vscr);
    m->lmax = (double *)(void *)(a + L.lmax);
    m->lsum = (double *)(void *)(a + L.lsum);
    m->lse = (double *)(void *)(a + L.lse);
    m->pick = (float *)(void *)(a + L.pick);
    m->lpmax = (double *)(void *)(a + L.lpmax);
    m->lpsum = (double *)(void *)(a + L.lpsum);
    m->wscr_n = L.wscr_n;
    m->vmax = L.vmax;
    m->wn = L.wn;
    m->wbig = L.wbig;
    m->fchunk = L.fchunk;
    m->lrows = L.lrows;
    m->lgroup = L.lgroup;
    m->lspan = L.lspan;
    m->rB = B;
    m->rT = T;
    m->rTk = Tk;
    m->rthreads = thr;
    m->rnp = np;
    sweep_tail *tl = tail_of(m);
    if (tl)
        tl->stages = stages;
    return PK_OK;
}

uint64_t pk_model_stage_evals(const pk_model *m)
{
    const sweep_tail *t = tail_of(m);
    return t ? t->stages : 0;
}

uint64_t pk_model_block_evals(const pk_model *m)
{
    return pk_model_stage_evals(m) / 2;
}

void pk_model_set_block_rows(pk_model *m, int rows)
{
    m->wrows = rows;
    m->rB = m->rT = m->rTk = m->rthreads = m->rnp = 0; /* re-laid out at the next reserve */
}

void pk_model_set_pairing(pk_model *m, pk_pairing mode)
{
    m->pairing = (int)mode;
}

void pk_model_set_perturb_diag(pk_model *m, const float *const *hdiag)
{
    m->hdiag = hdiag;
}

int pk_model_sweep_width(const pk_model *m, int B, int T, int evals)
{
    int w = evals < SWEEP_MAX ? evals : SWEEP_MAX;
    if (w <= 1 || m->pairing == PK_PAIRING_OFF)
        return 1;
    if (m->pairing == PK_PAIRING_ON)
        return w;
    if (B < 1 || T < 1)
        return 1;
    pass_layout L;
    layout(m, B, T, &L);
    /* np passes together within a pair's budget (np = 2: one pass <= 3%, as AUTO pairing) */
    while (w > 1 && (double)L.bytes * (double)w / 2.0 > PAIR_BUDGET * (double)m->weight_bytes)
        w--;
    return w;
}

size_t pk_model_pass_bytes(const pk_model *m, int B, int T)
{
    if (B < 1 || T < 1)
        return 0;
    pass_layout L;
    layout(m, B, T, &L);
    return L.bytes;
}

int pk_model_pairs(const pk_model *m, int B, int T)
{
    return pk_model_sweep_width(m, B, T, 2) == 2;
}

pk_status pk_model_reserve(pk_model *m, int B, int T)
{
    if (B < 1 || T < 1 || T > m->cfg.max_pos)
        return PK_ERR_ARG;
    return pk_reserve(m, B, T, T, pk_model_pairs(m, B, T) ? 2 : 1);
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
