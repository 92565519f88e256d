/* forward_impl.h: what the forward pass's three sources share (forward.c: the pass and the LM
 * head; arena.c: the activation arena; sweep.c: the evaluation entry points and their sweeps).
 * Private to model/.
 *
 * Sweeps: a MeZO step evaluates the loss of one batch under several perturbations (W + eps z and
 * W - eps z; fzoo's N one-sided ones and the unperturbed weights). A sweep (pk_sweep) runs up to
 * SWEEP_MAX of them side by side (np passes): every stage runs for pass 0, 1, .. np-1, each with
 * its own activations (the arena's copy k, k * m->pstride bytes after the first), and each
 * weight block is materialized for all of them while it is hot: one widened copy for the passes
 * that do not perturb it (stored fp32 weights are read in place), one perturbed copy per pass
 * that does, a + pass and its - pass from one z (pk_z_perturb). Every GEMM and every reduction
 * is the same call on the same data as in separate passes: the results are the same bits. */
#ifndef PK_FORWARD_IMPL_H
#define PK_FORWARD_IMPL_H

#include <stdint.h>

#include "model_impl.h"

#define WROWS     256  /* rows per widened weight block */
#define FFN_CHUNK 1024 /* the FFN runs in row chunks only above this many tokens */
/* AUTO: one pass's activations <= 3% of the weight bytes; a sweep's passes together <= 2 * 3%
 * (the memory of a paired step) */
#define PAIR_BUDGET 0.03
#define SWEEP_MAX   64  /* passes side by side at most */
#define TOK_TILE    256 /* token rows per GEMM tile */
/* From WIDE_N rows on, a GEMM's operands are packed less often (docs/DETERMINISM.md): token
 * tiles of TOK_WIDE rows, output tiles up to OUT_WIDE wide where the token tiles alone give
 * WIDE_ITEMS tiles, and an LM-head tile spans m->lspan vocabulary blocks (at most HEAD_SPAN). */
#define WIDE_N      1024
#define TOK_WIDE    512
#define OUT_WIDE    1024
#define WIDE_ITEMS  4
#define HEAD_SPAN   4    /* LM-head blocks per wide head tile at most */
#define OUT_TILE    512  /* widest output tile of a linear layer's GEMM */
#define LM_ROWS     256  /* vocabulary rows per LM-head block */
#define PAR_FLOPS   4e6  /* less work than this runs in the calling thread (results unchanged) */
#define UNIT_WINDOW 1024 /* perturbations of a sweep ordered by their shared prefix at a time */

/* sum over c < n of exp(row[c] - max), max >= every row[c]: the LM head's sum of exponentials in
 * a fixed order of IEEE operations, the same bits on every machine (lse.c). */
double pk_exp_sum(const float *row, int n, float max);
/* The largest of row[0 .. n), n >= 1, in LANES interleaved running maxima: without NaN the same
 * value as a sequential scan (a set's maximum does not depend on the order; of +0 and -0 either
 * may come back, which no use of it tells apart); with a NaN in the row, its sum is NaN anyway. */
float pk_row_max(const float *row, int n);
/* sum over c < n of row[c], and of (row[c] - mean)^2 (mean 0: the sum of squares), in doubles
 * summed in LANES interleaved partial sums (lse.c): the norms' statistics, vectorized, the same
 * bits for every vector width and thread count. */
double pk_row_sum(const float *row, int n);
double pk_row_sqdev(const float *row, int n, double mean);
/* e^x in float from IEEE operations alone (lse.c: within a few ulp, the same bits on every
 * machine, vector width and C library), and the rows built on it: pk_exp_row sets row[c] =
 * e^(row[c] - max) and returns their sum (doubles in LANES partial sums, added pairwise: the
 * attention softmax); pk_silu_row a = a / (1 + e^-a); pk_gelu_tanh_row a = a / (1 + e^-2u),
 * u = sqrt(2/pi) (a + 0.044715 a^3), which is 0.5 a (1 + tanh(u)) (gelu_new). */
float pk_expf(float x);
double pk_exp_row(float *row, int n, float max);
void pk_silu_row(float *a, int n);
void pk_gelu_tanh_row(float *a, int n);

/* The unperturbed residual stream of one run_sweeps call's batch after its first `stages` stages
 * (two per block: pk_fwd_shared_prefix; -1: none yet), kept at the arena's tail (sweep_tail):
 * the prefix that several groups of evaluations start from, computed once per batch. */
typedef struct prefix_cache {
    float *x; /* [B*T, H] */
    int stages;
} prefix_cache;

/* One sweep: np passes side by side over the same batch, pass k under its own perturbation pp[k]
 * (one seed, one sign; scale 0 = unperturbed), its results going to evaluation ev[k] of the
 * caller's outputs. */
typedef struct fwd {
    pk_model *m;
    int np;
    int prefix; /* leading stages no pass perturbs, run once for all passes (shared_prefix) */
    prefix_cache *cache; /* NULL outside run_sweeps */
    pk_perturb pp[SWEEP_MAX];
    int ev[SWEEP_MAX];
} fwd;

/* What the arena keeps after the rnp passes' copies: the counters, then the prefix cache's
 * [rB*rT, H] floats. The counters are carried over when the arena is reserved again. */
typedef struct sweep_tail {
    uint64_t stages; /* pk_model_stage_evals */
    uint64_t pad[7]; /* 64 bytes: the cache after it stays aligned */
} sweep_tail;

static inline sweep_tail *tail_of(const pk_model *m)
{
    if (m->arena == NULL || m->rnp < 1)
        return NULL;
    return (sweep_tail *)(void *)((char *)m->arena + (size_t)m->rnp * m->pstride);
}

/* Pass k's copy of an arena buffer (p points into pass 0's). */
static inline float *pass_f(const pk_model *m, const float *p, int k)
{
    return (float *)(uintptr_t)((const char *)p + (size_t)k * m->pstride);
}

static inline double *pass_d(const pk_model *m, const double *p, int k)
{
    return (double *)(uintptr_t)((const char *)p + (size_t)k * m->pstride);
}

/* Checks a batch against the model; pos0 is the position of its first token. */
pk_status pk_fwd_check_batch(const pk_model *m, const pk_batch *b, int pos0);

/* The stages (block halves: attention 2l, MLP 2l + 1) before a perturbation's lowest perturbed
 * one, when it perturbs only block tensors (layer sampling, a trainable set); 0 otherwise. */
int pk_fwd_shared_prefix(const pk_model *m, const pk_perturb *pert);
/* The frozen prefix's store (frozen.c): the residual stream after the first
 * pk_model_frozen_level stages of a token row computed by itself, or NULL (a miss); a row's
 * stream kept if it fits the cap; the store freed. */
const float *pk_frozen_find(pk_model *m, const int32_t *ids, const int32_t *types, int len);
void pk_frozen_put(pk_model *m, const int32_t *ids, const int32_t *types, int len, const float *x);
void pk_frozen_free(pk_model *m);

/* f's passes through the embedding, the blocks and the final norm: the final hidden state in
 * m->xn of each pass (kv_k / kv_v: generation's cache, one pass of one sequence only). */
pk_status pk_fwd_hidden(const fwd *f, const pk_batch *b, float **kv_k, float **kv_v, int pos0);

/* The LM head over M gathered rows h [M, Hh] for every pass of f (forward.c has the contract). */
void pk_fwd_lm_head(const fwd *f, const float *h, int M, double *lse, const int32_t *ids,
                    int id_stride, int n_ids, float *const *picked, float *const *full);

#endif
