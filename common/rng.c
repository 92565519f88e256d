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
 *                 angle = q * pi/2 + x, q = wb >> 30, x = (((wb >> 8) & 0x3fffff) - 2^21) * (pi/2^23)
 *                 (x in [-pi/4, pi/4)); cos/sin of x by fixed polynomials, rotated by q quarters;
 *                 z_even = r * cos(angle), z_odd = r * sin(angle).
 * Only +, -, *, / and sqrtf (all correctly rounded in IEEE binary32) are used, in a fixed order,
 * with FMA contraction off (common/CMakeLists.txt), so the bits are the same on every machine,
 * build type, vector width and thread count. The loops below are written for gcc's
 * auto-vectorizer: blocks of CH counters in plain arrays, no branches in the hot loops. */
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
        float f = m - 1.0f;                                          /* exact (Sterbenz) */
        float s = f / (2.0f + f);                                    /* |s| <= 0.1716 */
        float s2 = s * s;
        /* ln(m) = 2 atanh(s) = 2 s (1 + s^2/3 + s^4/5 + s^6/7 + s^8/9); next term < 2e-9 */
        float poly = 1.0f + s2 * (0.33333333f + s2 * (0.2f + s2 * (0.14285715f + s2 * 0.11111111f)));
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
        float cs = 1.0f +
                   x2 * (-0.5f + x2 * (4.16666667e-2f +
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

PK_RNG_CLONES void pk_z_fill(uint64_t seed, uint64_t key, uint64_t start, size_t n,
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
            gen_block(seed, key, b, kind, out + done);
        } else {
            gen_block(seed, key, b, kind, buf);
            memcpy(out + done, buf + skip, take * sizeof(float));
        }
        done += take;
        skip = 0;
        b += CH;
    }
}

PK_RNG_CLONES void pk_z_axpy(uint64_t seed, uint64_t key, uint64_t start, size_t n,
                                        pk_z_kind kind, float alpha, float *y)
{
    float buf[4 * CH];
    uint64_t b = start / 4;
    size_t skip = (size_t)(start % 4);
    size_t done = 0;
    while (done < n) {
        size_t avail = 4 * CH - skip;
        size_t take = n - done < avail ? n - done : avail;
        gen_block(seed, key, b, kind, buf);
        const float *z = buf + skip;
        float *yy = y + done;
        for (size_t j = 0; j < take; j++) {
            float t = alpha * z[j];
            yy[j] = yy[j] + t;
        }
        done += take;
        skip = 0;
        b += CH;
    }
}
