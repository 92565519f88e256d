/* lse.c: the exponentials and row sums of the forward pass in fixed sequences of IEEE operations.
 *
 * One float e^x of ours (exp_f, below) serves the LM head's sum of exponentials, the attention
 * softmax and the SiLU / tanh-GELU activations; the row sums go into LANES interleaved double
 * partial sums added pairwise at the end. No libm call and no fused multiply-add (contraction is
 * off for this file, see model/CMakeLists.txt), so the bits are the same on every machine, vector
 * width and thread count (docs/DETERMINISM.md, "The LM head's exponentials"). */
#include <stdint.h>
#include <string.h>

#include "forward_impl.h"

#ifdef __clang__
#pragma clang fp contract(off)
#endif

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__) &&                  \
    !defined(__clang__)
/* Same operations, wider vectors ("avx2" does not enable FMA, and contraction is off). */
#define PK_LSE_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define PK_LSE_CLONES
#endif
#if defined(__GNUC__)
#define PK_LSE_INLINE static inline __attribute__((always_inline))
#else
#define PK_LSE_INLINE static inline
#endif

#define LANES 8
/* the LANES partial sums s[] added pairwise */
#define PAIRWISE(s)                                                                                \
    (((s)[0] + (s)[1]) + ((s)[2] + (s)[3])) + (((s)[4] + (s)[5]) + ((s)[6] + (s)[7]))
#define CHUNK 256 /* a multiple of LANES: element c always goes to partial sum c % LANES */

/* s[c % LANES] += v[c] for c < n, in double: the row sums' one loop (pk_exp_sum, pk_row_sum,
 * pk_exp_row). */
PK_LSE_INLINE void lanes_add(double *s, const float *v, int n)
{
    int c = 0;
    for (; c + LANES <= n; c += LANES)
        for (int l = 0; l < LANES; l++)
            s[l] += (double)v[c + l];
    for (int l = 0; c + l < n; l++)
        s[l] += (double)v[c + l];
}

/* ---- e^x in float: the LM head, the attention softmax and the SiLU / tanh-GELU activations -----
 *
 * x clamped to [-87, 88] (e^-87 is about 1.6e-38, the smallest normal float's order; e^88 about
 * 1.7e38, below FLT_MAX), x = k ln2 + r with k = round(x / ln2) (the float shifter 1.5 * 2^23)
 * and |r| <= ln2 / 2 (ln2 in two parts: LN2F_HI has 15 significant bits, so k * LN2F_HI is exact
 * for |k| <= 128), e^r by its Taylor series to r^7 (the first term left out is below 5.2e-9
 * relative, under float's 6e-8), times 2^k built from k's bits. Within a few ulp of a correctly
 * rounded e^x; the bits depend on nothing but x, so the forward pass does not depend on the C
 * library's expf (glibc, bionic and Apple's differ). NaN passes through. */
#define INV_LN2F 1.44269504088896341f
#define LN2F_HI  0.693145751953125f      /* 0x3f317200 */
#define LN2F_LO  1.42860682030941723e-6f /* ln 2 - LN2F_HI */
#define SHIFTF   12582912.0f             /* 1.5 * 2^23 */

PK_LSE_INLINE float exp_f(float x)
{
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float t = x * INV_LN2F + SHIFTF;
    float k = t - SHIFTF;
    float r = (x - k * LN2F_HI) - k * LN2F_LO;
    float p = 1.0f / 5040.0f; /* 1/7! */
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    /* t's low mantissa bits hold k (t = 1.5 * 2^23 + k); 2^k has exponent field k + 127 */
    uint32_t u;
    memcpy(&u, &t, sizeof u);
    uint32_t sb = (u + 127u) << 23;
    float s;
    memcpy(&s, &sb, sizeof s);
    return p * s;
}

PK_LSE_CLONES float pk_expf(float x)
{
    return exp_f(x);
}

/* The LM head's sum over a row of e^(x - max): the difference rounded to float (as the attention
 * softmax's), exp_f, the terms summed in double in LANES interleaved partial sums (element c goes
 * to partial sum c % LANES whatever vectors the compiler uses). Each term is within 1.2 ulp of
 * e^(float difference) and a float difference d is within |d| 2^-24 of the exact one: test_golden
 * holds its rows' sums within 1e-7 relative of a long double reference (1.5e-8 measured), the
 * order of PyTorch's float32 cross entropy. A row's sum is at least 1 (its maximum contributes
 * e^0), so the clamp at e^-87 changes no sum that matters. NaN passes through. */
PK_LSE_CLONES double pk_exp_sum(const float *row, int n, float max)
{
    double s[LANES] = {0};
    float e[CHUNK];
    for (int c0 = 0; c0 < n; c0 += CHUNK) {
        int m = n - c0 < CHUNK ? n - c0 : CHUNK;
        for (int i = 0; i < m; i++)
            e[i] = exp_f(row[c0 + i] - max);
        lanes_add(s, e, m);
    }
    return PAIRWISE(s);
}

/* The row max: two 8-float vectors of running maxima (GCC / clang vector extensions: gcc kept the
 * plain loop's 8 interleaved maxima in 8 scalar chains, 39 ns for a 256-wide LM-head block
 * against 12.6 ns so, AVX-512 clone), the rest and rows under 16 in a scan. A max does not
 * depend on the order it is taken in (NaN is skipped unless it is row[0], as in a scan; +0 and
 * -0 may come out either way, and x - max is the same for both), so this is a scan's value. */
typedef float pk_v8f __attribute__((vector_size(32)));
typedef int32_t pk_v8i __attribute__((vector_size(32)));

/* *m = a > *m ? a : *m, per element (pointers: a vector passed by value changes the ABI between
 * the clones, which gcc warns about) */
PK_LSE_INLINE void vmax8(pk_v8f *m, const pk_v8f *a)
{
    pk_v8i k = *a > *m;
    *m = (pk_v8f)(((pk_v8i)*a & k) | ((pk_v8i)*m & ~k));
}

PK_LSE_CLONES float pk_row_max(const float *row, int n)
{
    float r = row[0];
    int c = 0;
    if (n >= 16) {
        pk_v8f m0, m1;
        for (int l = 0; l < 8; l++)
            m0[l] = m1[l] = r;
        for (; c + 16 <= n; c += 16) {
            pk_v8f a, b;
            memcpy(&a, row + c, sizeof a);
            memcpy(&b, row + c + 8, sizeof b);
            vmax8(&m0, &a);
            vmax8(&m1, &b);
        }
        vmax8(&m0, &m1);
        for (int l = 0; l < 8; l++)
            r = m0[l] > r ? m0[l] : r;
    }
    for (; c < n; c++)
        r = row[c] > r ? row[c] : r;
    return r;
}

/* The norms' row statistics, the same way: each element's term goes to partial sum c % LANES,
 * the partial sums added pairwise at the end (no contraction: d * d is rounded before it is
 * added). The same bits for every vector width; vectorized, unlike a sequential double sum. */

PK_LSE_CLONES double pk_row_sum(const float *row, int n)
{
    double s[LANES] = {0};
    lanes_add(s, row, n);
    return PAIRWISE(s);
}

PK_LSE_CLONES double pk_row_sqdev(const float *row, int n, double mean)
{
    double s[LANES] = {0};
    int c = 0;
    for (; c + LANES <= n; c += LANES)
        for (int l = 0; l < LANES; l++) {
            double d = (double)row[c + l] - mean;
            s[l] += d * d;
        }
    for (int l = 0; c + l < n; l++) {
        double d = (double)row[c + l] - mean;
        s[l] += d * d;
    }
    return PAIRWISE(s);
}

PK_LSE_CLONES double pk_exp_row(float *row, int n, float max)
{
    double s[LANES] = {0};
    for (int c = 0; c < n; c++)
        row[c] = exp_f(row[c] - max);
    lanes_add(s, row, n);
    return PAIRWISE(s);
}

/* The activations apply their element function in blocks of FV: a fixed-length loop the compiler
 * turns into whole vectors (one AVX-512 vector, two AVX2, four SSE2), and the last n % FV
 * elements go through the same block in a zero-padded copy. gcc's scalar remainder of the plain
 * loop cost more than its vectors at an MLP row's width (stories260k's 172: 1.35 ns per element
 * against 0.57, AVX-512). Each element's operations are the same whichever way it goes, so the
 * bits are too. (The attention rows keep the plain loop: most are shorter than FV, where the
 * copy costs more than it saves.) */
#define FV 16
#define FV_ROW(a, n, block)                                                                        \
    do {                                                                                           \
        int c_ = 0;                                                                                \
        for (; c_ + FV <= (n); c_ += FV)                                                           \
            block((a) + c_);                                                                       \
        if (c_ < (n)) {                                                                            \
            float t_[FV] = {0};                                                                    \
            memcpy(t_, (a) + c_, (size_t)((n)-c_) * sizeof t_[0]);                                 \
            block(t_);                                                                             \
            memcpy((a) + c_, t_, (size_t)((n)-c_) * sizeof t_[0]);                                 \
        }                                                                                          \
    } while (0)

PK_LSE_INLINE void silu_block(float *p)
{
    for (int l = 0; l < FV; l++)
        p[l] = p[l] / (1.0f + exp_f(-p[l]));
}

PK_LSE_CLONES void pk_silu_row(float *a, int n)
{
    FV_ROW(a, n, silu_block);
}

PK_LSE_INLINE void gelu_tanh_block(float *p)
{
    for (int l = 0; l < FV; l++) {
        float v = p[l];
        float u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
        p[l] = v / (1.0f + exp_f(-2.0f * u));
    }
}

PK_LSE_CLONES void pk_gelu_tanh_row(float *a, int n)
{
    FV_ROW(a, n, gelu_tanh_block);
}
