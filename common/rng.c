/* rng.c: the MeZO z generator (pk_rng.h, DESIGN 4, docs/ZGEN.md).
 *
 * Definition (docs/ZGEN.md is the normative text):
 *   key     = (k0, k1) = (lo32(seed), hi32(seed))
 *   counter = (c0, c1, c2, c3) = (lo32(b), hi32(b), lo32(tkey), hi32(tkey)),  b = i / 4
 *   (w0, w1, w2, w3) = Philox4x32-10(counter, key)
 *   element i takes word / pair slot i % 4:
 *     Rademacher: z = (w[i%4] >> 31) ? -1 : +1
 *     Gaussian:   Box-Muller on the pairs (w0, w1) -> (z0, z1) and (w2, w3) -> (z2, z3):
 *                 r = sqrtf(-2 * ln_approx(u)), u = ((wa >> 8) + 1) * 2^-24 in (0, 1]
 *                 angle = q * pi/2 + x, q = wb >> 30, x = (((wb >> 8) & 0x3fffff) - 2^21) *
 * (pi/2^23) (x in [-pi/4, pi/4)); cos/sin of x by fixed polynomials, rotated by q quarters; z_even
 * = r * cos(angle), z_odd = r * sin(angle). Only +, -, *, / and sqrtf (all correctly rounded in
 * IEEE binary32) are used, in a fixed order, with FMA contraction off (common/CMakeLists.txt), so
 * the bits are the same on every machine, build type, vector width and thread count. The loops
 * below are written for gcc's auto-vectorizer: blocks of CH counters in plain arrays, no branches
 * in the hot loops. */
#include "pk_rng.h"

#include <math.h>
#include <string.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

#define CH 64 /* counters per block: 256 values, 4 KiB of scratch on the stack */

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__) &&                  \
    !defined(__clang__)
/* Same operations, wider vectors; FMA is not enabled by "avx2" alone and contraction is off. */
#define PK_RNG_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define PK_RNG_CLONES
#endif
/* The helpers must be inlined into each clone, or the clones would call the baseline code. */
#if defined(__GNUC__)
#define PK_RNG_INLINE static inline __attribute__((always_inline))
#else
#define PK_RNG_INLINE static inline
#endif

/* Internal: one raw Philox4x32-10 block, exported for the known-answer test only (tests/test_rng.c
 * declares the same prototype). */
void pk_rng_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

void pk_rng_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c0 = n0;
        c1 = (uint32_t)p1;
        c2 = n2;
        c3 = (uint32_t)p0;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

uint64_t pk_rng_tensor_key(const char *name)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ull;
    }
    return h;
}

/* w[k][j] = word k of Philox(counter b0 + j) for j < CH. */
PK_RNG_INLINE void philox_block(uint32_t k0, uint32_t k1, uint64_t b0, uint32_t t0, uint32_t t1,
                                uint32_t w[4][CH])
{
    uint32_t *c0 = w[0], *c1 = w[1], *c2 = w[2], *c3 = w[3];
    for (int j = 0; j < CH; j++) {
        uint64_t b = b0 + (uint64_t)j;
        c0[j] = (uint32_t)b;
        c1[j] = (uint32_t)(b >> 32);
        c2[j] = t0;
        c3[j] = t1;
    }
    for (int r = 0; r < 10; r++) {
        for (int j = 0; j < CH; j++) {
            uint64_t p0 = (uint64_t)PHILOX_M0 * c0[j];
            uint64_t p1 = (uint64_t)PHILOX_M1 * c2[j];
            uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1[j] ^ k0;
            uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3[j] ^ k1;
            c0[j] = n0;
            c1[j] = (uint32_t)p1;
            c2[j] = n2;
            c3[j] = (uint32_t)p0;
        }
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
}

static inline float bits_to_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint32_t float_to_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* Box-Muller on word pairs: za[j] = r cos(angle), zb[j] = r sin(angle). */
PK_RNG_INLINE void box_muller(const uint32_t *wa, const uint32_t *wb, float *za, float *zb)
{
    for (int j = 0; j < CH; j++) {
        /* radius: u in (0, 1], a normal float (>= 2^-24), so the bit split below is exact */
        float u = (float)((wa[j] >> 8) + 1u) * 0x1p-24f;
        uint32_t ix = float_to_bits(u) + (0x3f800000u - 0x3f3504f3u);
        int e = (int)(ix >> 23) - 0x7f;
        float m = bits_to_float((ix & 0x007fffffu) + 0x3f3504f3u); /* [sqrt(1/2), sqrt(2)) */
        float f = m - 1.0f;                                        /* exact (Sterbenz) */
        float s = f / (2.0f + f);                                  /* |s| <= 0.1716 */
        float s2 = s * s;
        /* ln(m) = 2 atanh(s) = 2 s (1 + s^2/3 + s^4/5 + s^6/7 + s^8/9); next term < 2e-9 */
        float poly =
            1.0f + s2 * (0.33333333f + s2 * (0.2f + s2 * (0.14285715f + s2 * 0.11111111f)));
        float lnu = (float)e * 0.69314718f + 2.0f * s * poly;
        float rad = sqrtf(-2.0f * lnu); /* correctly rounded; argument >= 0 */

        /* angle = q * pi/2 + x, x in [-pi/4, pi/4) */
        uint32_t v = wb[j] >> 8;
        uint32_t q = v >> 22;
        float x = (float)((int32_t)(v & 0x3fffffu) - 0x200000) * 3.74507039e-07f; /* pi / 2^23 */
        float x2 = x * x;
        /* |x| <= pi/4: Taylor to x^9 (sin) and x^10 (cos); truncation error < 2e-9 */
        float sn =
            x * (1.0f + x2 * (-0.16666667f +
                              x2 * (8.3333333e-3f + x2 * (-1.98412698e-4f + x2 * 2.75573192e-6f))));
        float cs = 1.0f + x2 * (-0.5f + x2 * (4.16666667e-2f +
                                              x2 * (-1.38888889e-3f +
                                                    x2 * (2.48015873e-5f + x2 * -2.75573192e-7f))));
        /* rotate (cs, sn) by q quarter turns */
        float c = (q & 1u) ? sn : cs;
        float sv = (q & 1u) ? cs : sn;
        c = (q == 1u || q == 2u) ? -c : c;
        sv = (q >= 2u) ? -sv : sv;
        za[j] = rad * c;
        zb[j] = rad * sv;
    }
}

/* out[4j + k] = z for counter b0 + j, slot k, j < CH. */
PK_RNG_INLINE void gen_block(uint64_t seed, uint64_t key, uint64_t b0, pk_z_kind kind,
                             float out[4 * CH])
{
    uint32_t w[4][CH];
    philox_block((uint32_t)seed, (uint32_t)(seed >> 32), b0, (uint32_t)key, (uint32_t)(key >> 32),
                 w);
    if (kind == PK_Z_RADEMACHER) {
        for (int j = 0; j < CH; j++)
            for (int k = 0; k < 4; k++)
                out[4 * j + k] = (w[k][j] >> 31) ? -1.0f : 1.0f;
        return;
    }
    float z[4][CH];
    box_muller(w[0], w[1], z[0], z[1]);
    box_muller(w[2], w[3], z[2], z[3]);
    for (int j = 0; j < CH; j++)
        for (int k = 0; k < 4; k++)
            out[4 * j + k] = z[k][j];
}

/* The block loops of pk_z_fill / pk_z_perturb over a block generator (inlined into each caller, so
 * every path runs its own generator in its own instruction set). */
typedef void (*gen_fn)(uint64_t seed, uint64_t key, uint64_t b0, pk_z_kind kind, float *out);

PK_RNG_INLINE void fill_with(gen_fn gen, uint64_t seed, uint64_t key, uint64_t start, size_t n,
                             pk_z_kind kind, float *out)
{
    float buf[4 * CH];
    uint64_t b = start / 4;
    size_t skip = (size_t)(start % 4);
    size_t done = 0;
    while (done < n) {
        size_t avail = 4 * CH - skip;
        size_t take = n - done < avail ? n - done : avail;
        if (skip == 0 && take == 4 * CH) {
            gen(seed, key, b, kind, out + done);
        } else {
            gen(seed, key, b, kind, buf);
            memcpy(out + done, buf + skip, take * sizeof(float));
        }
        done += take;
        skip = 0;
        b += CH;
    }
}

/* yp[j] = w[j] + (alpha * z), and ym[j] = w[j] + ((-alpha) * z) when ym is not NULL (the + and -
 * perturbations of one weight block from one z); w may be yp (in place). */
PK_RNG_INLINE void perturb_with(gen_fn gen, uint64_t seed, uint64_t key, uint64_t start, size_t n,
                                pk_z_kind kind, float alpha, const float *w, float *yp, float *ym)
{
    float buf[4 * CH];
    uint64_t b = start / 4;
    size_t skip = (size_t)(start % 4);
    size_t done = 0;
    float beta = -alpha;
    while (done < n) {
        size_t avail = 4 * CH - skip;
        size_t take = n - done < avail ? n - done : avail;
        gen(seed, key, b, kind, buf);
        const float *z = buf + skip, *ww = w + done;
        float *pp = yp + done;
        if (ym != NULL) {
            float *mm = ym + done;
            for (size_t j = 0; j < take; j++) {
                float tp = alpha * z[j], tm = beta * z[j], x = ww[j];
                pp[j] = x + tp;
                mm[j] = x + tm;
            }
        } else {
            for (size_t j = 0; j < take; j++) {
                float t = alpha * z[j];
                pp[j] = ww[j] + t;
            }
        }
        done += take;
        skip = 0;
        b += CH;
    }
}

/* z_fill_<path> and z_perturb_<path>: the two loops over the block generator gen, compiled with
 * attr (the instruction set of that path). */
#define PK_Z_PATH(attr, path, gen)                                                                 \
    attr static void z_fill_##path(uint64_t seed, uint64_t key, uint64_t start, size_t n,          \
                                   pk_z_kind kind, float *out)                                     \
    {                                                                                              \
        fill_with(gen, seed, key, start, n, kind, out);                                            \
    }                                                                                              \
    attr static void z_perturb_##path(uint64_t seed, uint64_t key, uint64_t start, size_t n,       \
                                      pk_z_kind kind, float alpha, const float *w, float *yp,      \
                                      float *ym)                                                   \
    {                                                                                              \
        perturb_with(gen, seed, key, start, n, kind, alpha, w, yp, ym);                            \
    }

PK_Z_PATH(PK_RNG_CLONES, generic, gen_block)

/* ---- AVX-512 path ------------------------------------------------------------------------------
 * The same operations as above, written with intrinsics (gcc's auto-vectorizer widens the 32x32
 * products to 64-bit multiplies and gets about 2.4 ns per value; this path uses vpmuludq on the
 * even and odd lanes). Integer steps are exact; every float step is the same IEEE binary32
 * operation on the same operands in the same order (no FMA: contraction is off for this file), so
 * the bits equal the generic path's: tests/test_rng.c compares both paths bit for bit. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#include <stdatomic.h>
#include <stdlib.h>

#define PK_AVX512 __attribute__((target("avx512f")))

/* hi and lo 32 bits of the 16 unsigned products m * a. */
PK_AVX512 static inline void mulhilo16(__m512i a, __m512i m, __m512i *hi, __m512i *lo)
{
    __m512i pe = _mm512_mul_epu32(a, m);                        /* even lanes, 64-bit products */
    __m512i po = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), m); /* odd lanes */
    *lo = _mm512_mullo_epi32(a, m);
    *hi = _mm512_mask_blend_epi32((__mmask16)0xAAAA, _mm512_srli_epi64(pe, 32), po);
}

/* Philox4x32-10 on G groups of 16 counters at once: c[g][word]. The groups are independent
 * dependency chains, so the multiplies of one hide the latency of the others. */
#define PHILOX_G (CH / 16)
PK_AVX512 static inline void philox16x(__m512i c[PHILOX_G][4], uint32_t k0, uint32_t k1)
{
    const __m512i m0 = _mm512_set1_epi32((int)PHILOX_M0), m1 = _mm512_set1_epi32((int)PHILOX_M1);
    for (int r = 0; r < 10; r++) {
        const __m512i kk0 = _mm512_set1_epi32((int)k0), kk1 = _mm512_set1_epi32((int)k1);
        for (int g = 0; g < PHILOX_G; g++) {
            __m512i h0, l0, h1, l1;
            mulhilo16(c[g][0], m0, &h0, &l0);
            mulhilo16(c[g][2], m1, &h1, &l1);
            __m512i n0 = _mm512_xor_si512(_mm512_xor_si512(h1, c[g][1]), kk0);
            __m512i n2 = _mm512_xor_si512(_mm512_xor_si512(h0, c[g][3]), kk1);
            c[g][0] = n0;
            c[g][1] = l1;
            c[g][2] = n2;
            c[g][3] = l0;
        }
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
}

#define SPS(x) _mm512_set1_ps(x)

/* box_muller() for 16 pairs, operation for operation. */
PK_AVX512 static inline void box_muller16(__m512i wa, __m512i wb, __m512 *za, __m512 *zb)
{
    const __m512 one = SPS(1.0f);
    __m512i ua = _mm512_add_epi32(_mm512_srli_epi32(wa, 8), _mm512_set1_epi32(1));
    __m512 u = _mm512_mul_ps(_mm512_cvtepi32_ps(ua), SPS(0x1p-24f));
    __m512i ix = _mm512_add_epi32(_mm512_castps_si512(u),
                                  _mm512_set1_epi32((int)(0x3f800000u - 0x3f3504f3u)));
    __m512i e = _mm512_sub_epi32(_mm512_srli_epi32(ix, 23), _mm512_set1_epi32(0x7f));
    __m512 m = _mm512_castsi512_ps(_mm512_add_epi32(
        _mm512_and_si512(ix, _mm512_set1_epi32(0x007fffff)), _mm512_set1_epi32(0x3f3504f3)));
    __m512 f = _mm512_sub_ps(m, one);
    __m512 s = _mm512_div_ps(f, _mm512_add_ps(SPS(2.0f), f));
    __m512 s2 = _mm512_mul_ps(s, s);
    __m512 poly = _mm512_add_ps(SPS(0.14285715f), _mm512_mul_ps(s2, SPS(0.11111111f)));
    poly = _mm512_add_ps(SPS(0.2f), _mm512_mul_ps(s2, poly));
    poly = _mm512_add_ps(SPS(0.33333333f), _mm512_mul_ps(s2, poly));
    poly = _mm512_add_ps(one, _mm512_mul_ps(s2, poly));
    __m512 lnu = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(e), SPS(0.69314718f)),
                               _mm512_mul_ps(_mm512_mul_ps(SPS(2.0f), s), poly));
    __m512 rad = _mm512_sqrt_ps(_mm512_mul_ps(SPS(-2.0f), lnu));

    __m512i v = _mm512_srli_epi32(wb, 8);
    __m512i q = _mm512_srli_epi32(v, 22);
    __m512i xi = _mm512_sub_epi32(_mm512_and_si512(v, _mm512_set1_epi32(0x3fffff)),
                                  _mm512_set1_epi32(0x200000));
    __m512 x = _mm512_mul_ps(_mm512_cvtepi32_ps(xi), SPS(3.74507039e-07f));
    __m512 x2 = _mm512_mul_ps(x, x);
    __m512 sn = _mm512_add_ps(SPS(-1.98412698e-4f), _mm512_mul_ps(x2, SPS(2.75573192e-6f)));
    sn = _mm512_add_ps(SPS(8.3333333e-3f), _mm512_mul_ps(x2, sn));
    sn = _mm512_add_ps(SPS(-0.16666667f), _mm512_mul_ps(x2, sn));
    sn = _mm512_mul_ps(x, _mm512_add_ps(one, _mm512_mul_ps(x2, sn)));
    __m512 cs = _mm512_add_ps(SPS(2.48015873e-5f), _mm512_mul_ps(x2, SPS(-2.75573192e-7f)));
    cs = _mm512_add_ps(SPS(-1.38888889e-3f), _mm512_mul_ps(x2, cs));
    cs = _mm512_add_ps(SPS(4.16666667e-2f), _mm512_mul_ps(x2, cs));
    cs = _mm512_add_ps(SPS(-0.5f), _mm512_mul_ps(x2, cs));
    cs = _mm512_add_ps(one, _mm512_mul_ps(x2, cs));

    const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
    __mmask16 odd = _mm512_test_epi32_mask(q, _mm512_set1_epi32(1));
    __mmask16 negc = _mm512_cmpeq_epi32_mask(q, _mm512_set1_epi32(1)) |
                     _mm512_cmpeq_epi32_mask(q, _mm512_set1_epi32(2));
    __mmask16 negs = _mm512_cmpge_epu32_mask(q, _mm512_set1_epi32(2));
    __m512i c = _mm512_castps_si512(_mm512_mask_blend_ps(odd, cs, sn));
    __m512i sv = _mm512_castps_si512(_mm512_mask_blend_ps(odd, sn, cs));
    c = _mm512_mask_xor_epi32(c, negc, c, sign);
    sv = _mm512_mask_xor_epi32(sv, negs, sv, sign);
    *za = _mm512_mul_ps(rad, _mm512_castsi512_ps(c));
    *zb = _mm512_mul_ps(rad, _mm512_castsi512_ps(sv));
}

/* out[0..63] = the 4 values of each of the 16 counters, counter-major (z[k] = slot k). */
PK_AVX512 static inline void interleave16(__m512 z0, __m512 z1, __m512 z2, __m512 z3, float *out)
{
    __m512 ab_lo = _mm512_unpacklo_ps(z0, z1), ab_hi = _mm512_unpackhi_ps(z0, z1);
    __m512 cd_lo = _mm512_unpacklo_ps(z2, z3), cd_hi = _mm512_unpackhi_ps(z2, z3);
    /* r_i, 128-bit lane L: the 4 values of counter 4L + i */
    __m512 r0 =
        _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(ab_lo), _mm512_castps_pd(cd_lo)));
    __m512 r1 =
        _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(ab_lo), _mm512_castps_pd(cd_lo)));
    __m512 r2 =
        _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(ab_hi), _mm512_castps_pd(cd_hi)));
    __m512 r3 =
        _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(ab_hi), _mm512_castps_pd(cd_hi)));
    __m512 t0 = _mm512_shuffle_f32x4(r0, r1, 0x44), t1 = _mm512_shuffle_f32x4(r2, r3, 0x44);
    __m512 t2 = _mm512_shuffle_f32x4(r0, r1, 0xEE), t3 = _mm512_shuffle_f32x4(r2, r3, 0xEE);
    _mm512_storeu_ps(out, _mm512_shuffle_f32x4(t0, t1, 0x88));
    _mm512_storeu_ps(out + 16, _mm512_shuffle_f32x4(t0, t1, 0xDD));
    _mm512_storeu_ps(out + 32, _mm512_shuffle_f32x4(t2, t3, 0x88));
    _mm512_storeu_ps(out + 48, _mm512_shuffle_f32x4(t2, t3, 0xDD));
}

/* gen_block() with 16 counters per vector. */
PK_AVX512 static void gen_block_avx512(uint64_t seed, uint64_t key, uint64_t b0, pk_z_kind kind,
                                       float out[4 * CH])
{
    uint32_t lo[CH], hi[CH];
    for (int j = 0; j < CH; j++) {
        uint64_t b = b0 + (uint64_t)j;
        lo[j] = (uint32_t)b;
        hi[j] = (uint32_t)(b >> 32);
    }
    __m512i c[PHILOX_G][4];
    for (int g = 0; g < PHILOX_G; g++) {
        c[g][0] = _mm512_loadu_si512(lo + 16 * g);
        c[g][1] = _mm512_loadu_si512(hi + 16 * g);
        c[g][2] = _mm512_set1_epi32((int)(uint32_t)key);
        c[g][3] = _mm512_set1_epi32((int)(uint32_t)(key >> 32));
    }
    philox16x(c, (uint32_t)seed, (uint32_t)(seed >> 32));
    __m512 z[PHILOX_G][4];
    if (kind == PK_Z_RADEMACHER) {
        for (int g = 0; g < PHILOX_G; g++)
            for (int k = 0; k < 4; k++)
                z[g][k] =
                    _mm512_mask_blend_ps(_mm512_cmplt_epi32_mask(c[g][k], _mm512_setzero_si512()),
                                         SPS(1.0f), SPS(-1.0f));
    } else {
        /* all eight Box-Mullers in one block: independent chains for the scheduler */
        for (int g = 0; g < PHILOX_G; g++) {
            box_muller16(c[g][0], c[g][1], &z[g][0], &z[g][1]);
            box_muller16(c[g][2], c[g][3], &z[g][2], &z[g][3]);
        }
    }
    for (int g = 0; g < PHILOX_G; g++)
        interleave16(z[g][0], z[g][1], z[g][2], z[g][3], out + 64 * g);
}

PK_Z_PATH(PK_AVX512, fast, gen_block_avx512)

static int fast_path_supported(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}

#define PK_RNG_HAVE_FAST 1
#endif

/* ---- NEON path (aarch64) -----------------------------------------------------------------------
 * The AVX-512 path's twin for 64-bit Arm, chosen at compile time (__ARM_NEON): Philox with
 * vmull_u32 for the 64-bit products and four groups of 4 counters in flight, Box-Muller operation
 * for operation (vdivq/vsqrtq are IEEE-exact), vst4q for the counter-major interleave. Contraction
 * is off for this file, so no vmul+vadd becomes an fmla: the bits equal the generic path's
 * (tests/test_rng.c and tests/test_golden.c compare them under qemu-aarch64). */
#if defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#include <stdatomic.h>
#include <stdlib.h>

/* hi and lo 32 bits of the 4 unsigned products m * a */
static inline void mulhilo4(uint32x4_t a, uint32x4_t m, uint32x4_t *hi, uint32x4_t *lo)
{
    uint64x2_t p0 = vmull_u32(vget_low_u32(a), vget_low_u32(m));
    uint64x2_t p1 = vmull_high_u32(a, m);
    *lo = vmulq_u32(a, m);
    *hi = vuzp2q_u32(vreinterpretq_u32_u64(p0), vreinterpretq_u32_u64(p1));
}

#define NEON_G 4 /* groups of 4 counters per Philox call: independent dependency chains */
static inline void philox4x(uint32x4_t c[NEON_G][4], uint32_t k0, uint32_t k1)
{
    const uint32x4_t m0 = vdupq_n_u32(PHILOX_M0), m1 = vdupq_n_u32(PHILOX_M1);
    for (int r = 0; r < 10; r++) {
        const uint32x4_t kk0 = vdupq_n_u32(k0), kk1 = vdupq_n_u32(k1);
        for (int g = 0; g < NEON_G; g++) {
            uint32x4_t h0, l0, h1, l1;
            mulhilo4(c[g][0], m0, &h0, &l0);
            mulhilo4(c[g][2], m1, &h1, &l1);
            c[g][0] = veorq_u32(veorq_u32(h1, c[g][1]), kk0);
            c[g][1] = l1;
            c[g][2] = veorq_u32(veorq_u32(h0, c[g][3]), kk1);
            c[g][3] = l0;
        }
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
}

#define F4(x) vdupq_n_f32(x)

/* ln(u) of box_muller(), u from the word wa */
static inline float32x4_t ln_u4(uint32x4_t wa)
{
    uint32x4_t ua = vaddq_u32(vshrq_n_u32(wa, 8), vdupq_n_u32(1));
    float32x4_t u = vmulq_f32(vcvtq_f32_u32(ua), F4(0x1p-24f));
    uint32x4_t ix = vaddq_u32(vreinterpretq_u32_f32(u), vdupq_n_u32(0x3f800000u - 0x3f3504f3u));
    int32x4_t e = vsubq_s32(vreinterpretq_s32_u32(vshrq_n_u32(ix, 23)), vdupq_n_s32(0x7f));
    float32x4_t m = vreinterpretq_f32_u32(
        vaddq_u32(vandq_u32(ix, vdupq_n_u32(0x007fffffu)), vdupq_n_u32(0x3f3504f3u)));
    float32x4_t f = vsubq_f32(m, F4(1.0f));
    float32x4_t s = vdivq_f32(f, vaddq_f32(F4(2.0f), f));
    float32x4_t s2 = vmulq_f32(s, s);
    float32x4_t poly = vaddq_f32(F4(0.14285715f), vmulq_f32(s2, F4(0.11111111f)));
    poly = vaddq_f32(F4(0.2f), vmulq_f32(s2, poly));
    poly = vaddq_f32(F4(0.33333333f), vmulq_f32(s2, poly));
    poly = vaddq_f32(F4(1.0f), vmulq_f32(s2, poly));
    return vaddq_f32(vmulq_f32(vcvtq_f32_s32(e), F4(0.69314718f)),
                     vmulq_f32(vmulq_f32(F4(2.0f), s), poly));
}

/* box_muller() for 4 pairs */
static inline void box_muller4(uint32x4_t wa, uint32x4_t wb, float32x4_t *za, float32x4_t *zb)
{
    float32x4_t rad = vsqrtq_f32(vmulq_f32(F4(-2.0f), ln_u4(wa)));
    uint32x4_t v = vshrq_n_u32(wb, 8);
    uint32x4_t q = vshrq_n_u32(v, 22);
    int32x4_t xi = vsubq_s32(vreinterpretq_s32_u32(vandq_u32(v, vdupq_n_u32(0x3fffffu))),
                             vdupq_n_s32(0x200000));
    float32x4_t x = vmulq_f32(vcvtq_f32_s32(xi), F4(3.74507039e-07f));
    float32x4_t x2 = vmulq_f32(x, x);
    float32x4_t sn = vaddq_f32(F4(-1.98412698e-4f), vmulq_f32(x2, F4(2.75573192e-6f)));
    sn = vaddq_f32(F4(8.3333333e-3f), vmulq_f32(x2, sn));
    sn = vaddq_f32(F4(-0.16666667f), vmulq_f32(x2, sn));
    sn = vmulq_f32(x, vaddq_f32(F4(1.0f), vmulq_f32(x2, sn)));
    float32x4_t cs = vaddq_f32(F4(2.48015873e-5f), vmulq_f32(x2, F4(-2.75573192e-7f)));
    cs = vaddq_f32(F4(-1.38888889e-3f), vmulq_f32(x2, cs));
    cs = vaddq_f32(F4(4.16666667e-2f), vmulq_f32(x2, cs));
    cs = vaddq_f32(F4(-0.5f), vmulq_f32(x2, cs));
    cs = vaddq_f32(F4(1.0f), vmulq_f32(x2, cs));

    const uint32x4_t sign = vdupq_n_u32(0x80000000u), one = vdupq_n_u32(1), two = vdupq_n_u32(2);
    uint32x4_t odd = vtstq_u32(q, one);
    uint32x4_t negc = vorrq_u32(vceqq_u32(q, one), vceqq_u32(q, two));
    uint32x4_t negs = vcgeq_u32(q, two);
    uint32x4_t c = vreinterpretq_u32_f32(vbslq_f32(odd, sn, cs));
    uint32x4_t sv = vreinterpretq_u32_f32(vbslq_f32(odd, cs, sn));
    c = veorq_u32(c, vandq_u32(negc, sign));
    sv = veorq_u32(sv, vandq_u32(negs, sign));
    *za = vmulq_f32(rad, vreinterpretq_f32_u32(c));
    *zb = vmulq_f32(rad, vreinterpretq_f32_u32(sv));
}

/* gen_block() with 4 counters per vector; vst4q writes slot k of counter j at out[4j + k]. */
static void gen_block_neon(uint64_t seed, uint64_t key, uint64_t b0, pk_z_kind kind,
                           float out[4 * CH])
{
    const uint32x4_t sign = vdupq_n_u32(0x80000000u), one = vdupq_n_u32(0x3f800000u);
    for (int g0 = 0; g0 < CH; g0 += 4 * NEON_G) {
        uint32x4_t c[NEON_G][4];
        for (int g = 0; g < NEON_G; g++) {
            uint32_t lo[4], hi[4];
            for (int j = 0; j < 4; j++) {
                uint64_t b = b0 + (uint64_t)(g0 + 4 * g + j);
                lo[j] = (uint32_t)b;
                hi[j] = (uint32_t)(b >> 32);
            }
            c[g][0] = vld1q_u32(lo);
            c[g][1] = vld1q_u32(hi);
            c[g][2] = vdupq_n_u32((uint32_t)key);
            c[g][3] = vdupq_n_u32((uint32_t)(key >> 32));
        }
        philox4x(c, (uint32_t)seed, (uint32_t)(seed >> 32));
        for (int g = 0; g < NEON_G; g++) {
            float32x4x4_t z;
            if (kind == PK_Z_RADEMACHER) {
                /* +-1.0f: the word's top bit becomes the sign of 1.0f */
                for (int k = 0; k < 4; k++)
                    z.val[k] = vreinterpretq_f32_u32(vorrq_u32(one, vandq_u32(c[g][k], sign)));
            } else {
                box_muller4(c[g][0], c[g][1], &z.val[0], &z.val[1]);
                box_muller4(c[g][2], c[g][3], &z.val[2], &z.val[3]);
            }
            vst4q_f32(out + 4 * (g0 + 4 * g), z);
        }
    }
}

PK_Z_PATH(, fast, gen_block_neon)

static int fast_path_supported(void)
{
    return 1; /* chosen at compile time: every aarch64 CPU with __ARM_NEON has it */
}

#define PK_RNG_HAVE_FAST 1
#endif

/* ---- the choice of path: the fast one (AVX-512 or NEON) where the CPU has it, unless
 * PK_RNG_GENERIC=1 or a test forces the generic one. */
#ifdef PK_RNG_HAVE_FAST
static atomic_int rng_path = -1; /* -1 unknown, 0 generic, 1 fast */

/* Internal (tests/test_rng.c): 1 forces the generic path, 0 restores the automatic choice. */
void pk_rng_force_generic(int on);
void pk_rng_force_generic(int on)
{
    atomic_store(&rng_path, on ? 0 : -1);
}

static int use_fast(void)
{
    int p = atomic_load_explicit(&rng_path, memory_order_relaxed);
    if (p < 0) {
        const char *env = getenv("PK_RNG_GENERIC"); /* for comparisons: PK_RNG_GENERIC=1 */
        p = fast_path_supported() && !(env && *env == '1') ? 1 : 0;
        atomic_store_explicit(&rng_path, p, memory_order_relaxed);
    }
    return p;
}
#else
void pk_rng_force_generic(int on); /* no other path on this target: nothing to force */
void pk_rng_force_generic(int on)
{
    (void)on;
}
#endif

/* Raw words for consumers other than z (stochastic rounding, adapter initialization): the same
 * counter layout, so any block is generated alone; callers pick a seed of their own so the
 * stream never coincides with z's. */
PK_RNG_CLONES void pk_rng_bits(uint64_t seed, uint64_t key, uint64_t start, size_t n, uint32_t *out)
{
    uint32_t w[4][CH];
    uint64_t b = start / 4;
    size_t skip = (size_t)(start % 4), done = 0;
    while (done < n) {
        philox_block((uint32_t)seed, (uint32_t)(seed >> 32), b, (uint32_t)key,
                     (uint32_t)(key >> 32), w);
        for (size_t e = skip; e < 4 * CH && done < n; e++)
            out[done++] = w[e % 4][e / 4];
        skip = 0;
        b += CH;
    }
}

void pk_z_fill(uint64_t seed, uint64_t key, uint64_t start, size_t n, pk_z_kind kind, float *out)
{
#ifdef PK_RNG_HAVE_FAST
    if (use_fast()) {
        z_fill_fast(seed, key, start, n, kind, out);
        return;
    }
#endif
    z_fill_generic(seed, key, start, n, kind, out);
}

void pk_z_perturb(uint64_t seed, uint64_t key, uint64_t start, size_t n, pk_z_kind kind,
                  float alpha, const float *w, float *yp, float *ym)
{
#ifdef PK_RNG_HAVE_FAST
    if (use_fast()) {
        z_perturb_fast(seed, key, start, n, kind, alpha, w, yp, ym);
        return;
    }
#endif
    z_perturb_generic(seed, key, start, n, kind, alpha, w, yp, ym);
}

void pk_z_axpy(uint64_t seed, uint64_t key, uint64_t start, size_t n, pk_z_kind kind, float alpha,
               float *y)
{
    pk_z_perturb(seed, key, start, n, kind, alpha, y, y, NULL);
}

void pk_z_perturb_diag(uint64_t seed, uint64_t key, uint64_t start, size_t n, pk_z_kind kind,
                       float alpha, const float *h, const float *w, float *yp, float *ym)
{
    float z[256];
    float beta = -alpha;
    for (size_t o = 0; o < n; o += 256) {
        size_t k = n - o < 256 ? n - o : 256;
        pk_z_fill(seed, key, start + o, k, kind, z);
        for (size_t j = 0; j < k; j++) {
            float d = z[j] / sqrtf(h[o + j]);
            float wj = w[o + j]; /* read before yp is written: w may be yp */
            yp[o + j] = wj + (alpha * d);
            if (ym)
                ym[o + j] = wj + (beta * d);
        }
    }
}
