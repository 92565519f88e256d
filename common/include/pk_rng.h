/* pk_rng.h: the MeZO perturbation generator, DESIGN section 4 (the contract between the forward
 * pass, the optimizer, replay and every device of a federation).
 *
 * z(seed, tensor, i) is a pure function of a 64-bit seed, a 64-bit tensor key and an element
 * index: Philox4x32-10 keyed by the seed, counter from (tensor key, i / 4). Any block of any
 * tensor can be generated on its own, in any order, on any thread, and the value is bit-identical
 * for every thread count, build type and machine (no libm, no FMA contraction in rng.c).
 * docs/ZGEN.md gives the exact definition and golden vectors; tests/test_rng.c pins them.
 * Thread safety: every function here is pure and reentrant. */
#ifndef PK_RNG_H
#define PK_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef enum pk_z_kind {
    PK_Z_GAUSSIAN = 0,   /* standard normal (default) */
    PK_Z_RADEMACHER = 1, /* +1 / -1 with equal probability */
} pk_z_kind;

/* The tensor key: FNV-1a 64 of the Hugging Face tensor name (e.g.
 * "model.layers.0.mlp.up_proj.weight"). Element i of a tensor is its index in the tensor's stored
 * row-major layout. */
uint64_t pk_rng_tensor_key(const char *name);

/* out[j] = z(seed, key, start + j) for j in [0, n). out is borrowed. */
void pk_z_fill(uint64_t seed, uint64_t key, uint64_t start, size_t n, pk_z_kind kind, float *out);

/* y[j] += alpha * z(seed, key, start + j) for j in [0, n); the perturbation hook's kernel.
 * Computed as y[j] + (alpha * z) with one rounding per operation (no FMA). */
void pk_z_axpy(uint64_t seed, uint64_t key, uint64_t start, size_t n, pk_z_kind kind, float alpha,
               float *y);

/* The perturbation of a weight block, from one z: yp[j] = w[j] + (alpha * z) and, when ym is
 * not NULL, ym[j] = w[j] + ((-alpha) * z) (the + and - passes of a MeZO step, generated once).
 * One rounding per operation, so yp is bit-identical to pk_z_axpy on a copy of w. w may be yp. */
void pk_z_perturb(uint64_t seed, uint64_t key, uint64_t start, size_t n, pk_z_kind kind,
                  float alpha, const float *w, float *yp, float *ym);

/* The perturbation scaled per element by a diagonal (hizoo): with d = z / sqrtf(h[j]),
 * yp[j] = w[j] + (alpha * d) and, when ym is not NULL, ym[j] = w[j] + ((-alpha) * d); h holds
 * elements [start, start+n) (h[0] is element start). One rounding per operation (IEEE sqrtf),
 * so the update sweep that recomputes d gets the same bits. w may be yp. */
void pk_z_perturb_diag(uint64_t seed, uint64_t key, uint64_t start, size_t n, pk_z_kind kind,
                       float alpha, const float *h, const float *w, float *yp, float *ym);
/* out[j] = word (start + j) % 4 of Philox4x32-10 keyed by seed at counter ((start + j) / 4, key),
 * the raw 32-bit uniforms behind z (docs/ZGEN.md steps 2-3) for j in [0, n). A pure function
 * like z; give it a seed other than z's (e.g. a splitmix64 of it) for an independent stream. */
void pk_rng_bits(uint64_t seed, uint64_t key, uint64_t start, size_t n, uint32_t *out);

#endif /* PK_RNG_H */
