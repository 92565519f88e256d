/* test_rng.c: the z generator (common/pk_rng.h, docs/ZGEN.md). Pins the Philox4x32-10 known
 * answers (Random123), FNV-1a keys, golden z bits, agreement with a double-precision libm
 * reference of the same definition, block/slice consistency and statistical sanity. */
#include "pk_rng.h"
#include "pk_test.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Internal to common/rng.c, exported only for these tests. */
void pk_rng_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);
void pk_rng_force_generic(int on); /* 1: the generic (auto-vectorized) path; 0: automatic */

static uint32_t fbits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static void test_philox_kat(void)
{
    /* Random123 kat_vectors, philox4x32 10 rounds */
    static const uint32_t ctr[3][4] = {{0, 0, 0, 0},
                                       {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
                                       {0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}};
    static const uint32_t key[3][2] = {
        {0, 0}, {0xffffffffu, 0xffffffffu}, {0xa4093822u, 0x299f31d0u}};
    static const uint32_t want[3][4] = {{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u},
                                        {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu},
                                        {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}};
    for (int t = 0; t < 3; t++) {
        uint32_t out[4];
        pk_rng_philox4x32_10(ctr[t], key[t], out);
        for (int k = 0; k < 4; k++)
            PK_CHECK_EQ(out[k], want[t][k]);
    }
}

static void test_tensor_key(void)
{
    PK_CHECK(pk_rng_tensor_key("") == 0xcbf29ce484222325ull);
    PK_CHECK(pk_rng_tensor_key("a") == 0xaf63dc4c8601ec8cull);
    PK_CHECK(pk_rng_tensor_key("foobar") == 0x85944171f73967e8ull);
    PK_CHECK(pk_rng_tensor_key("lm_head.weight") != pk_rng_tensor_key("lm_head.bias"));
}

/* The definition of docs/ZGEN.md evaluated in double with libm. */
static double z_reference(uint64_t seed, uint64_t key, uint64_t i, pk_z_kind kind)
{
    uint64_t b = i / 4;
    uint32_t ctr[4] = {(uint32_t)b, (uint32_t)(b >> 32), (uint32_t)key, (uint32_t)(key >> 32)};
    uint32_t k[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    uint32_t w[4];
    pk_rng_philox4x32_10(ctr, k, w);
    unsigned slot = (unsigned)(i % 4);
    if (kind == PK_Z_RADEMACHER)
        return (w[slot] >> 31) ? -1.0 : 1.0;
    uint32_t wa = w[slot & 2u], wb = w[(slot & 2u) + 1u];
    double u = ((double)(wa >> 8) + 1.0) * 0x1p-24;
    double r = sqrt(-2.0 * log(u));
    uint32_t v = wb >> 8;
    double x = ((double)(v & 0x3fffffu) - 2097152.0) * (3.14159265358979323846 / 8388608.0);
    double angle = (double)(v >> 22) * (3.14159265358979323846 / 2.0) + x;
    return (slot & 1u) ? r * sin(angle) : r * cos(angle);
}

static void test_reference(void)
{
    enum { N = 1 << 16 };
    static float z[N];
    const uint64_t seeds[3] = {0, 42, 0xdeadbeefcafef00dull};
    double maxerr = 0;
    for (int s = 0; s < 3; s++) {
        uint64_t key = pk_rng_tensor_key("model.layers.3.self_attn.q_proj.weight");
        uint64_t start = (uint64_t)s * 1000003u;
        pk_z_fill(seeds[s], key, start, N, PK_Z_GAUSSIAN, z);
        for (int j = 0; j < N; j++) {
            double ref = z_reference(seeds[s], key, start + (uint64_t)j, PK_Z_GAUSSIAN);
            double err = fabs((double)z[j] - ref) / (1.0 + fabs(ref));
            if (err > maxerr)
                maxerr = err;
        }
        pk_z_fill(seeds[s], key, start, 4096, PK_Z_RADEMACHER, z);
        int bad = 0;
        for (int j = 0; j < 4096; j++)
            bad += (double)z[j] != z_reference(seeds[s], key, start + (uint64_t)j, PK_Z_RADEMACHER);
        PK_CHECK_EQ(bad, 0);
    }
    /* float polynomials against libm double: a few ulps */
    PK_CHECK(maxerr < 1e-6); /* measured 1.3e-7 */
    fprintf(stderr, "max relative error vs libm reference: %.3g\n", maxerr);
}

/* Golden vectors: docs/ZGEN.md lists the same table. Changing any bit breaks every stored run. */
struct golden {
    uint64_t seed;
    const char *name;
    uint64_t index;
    pk_z_kind kind;
    uint32_t bits;
};

static const struct golden goldens[] = {
    {0x0000000000000000ull, "model.embed_tokens.weight", 0ull, PK_Z_GAUSSIAN,
     0x3ee0e5c9u}, /* 0.439253122 */
    {0x0000000000000000ull, "model.embed_tokens.weight", 0ull, PK_Z_RADEMACHER,
     0xbf800000u}, /* -1 */
    {0x0000000000000000ull, "model.embed_tokens.weight", 7ull, PK_Z_GAUSSIAN,
     0x3f7ec1e7u},                                                               /* 0.995146215 */
    {0x0000000000000000ull, "lm_head.weight", 1ull, PK_Z_GAUSSIAN, 0x3eeff2a1u}, /* 0.468647987 */
    {0x0000000000000000ull, "lm_head.weight", 1000003ull, PK_Z_GAUSSIAN,
     0x3f92d64au}, /* 1.14716458 */
    {0x0000000000000000ull, "model.decoder.layers.11.fc2.bias", 2ull, PK_Z_GAUSSIAN,
     0x3f6586afu}, /* 0.896586359 */
    {0x0000000000000000ull, "model.decoder.layers.11.fc2.bias", 4294967301ull, PK_Z_GAUSSIAN,
     0x3f254b10u}, /* 0.645676613 */
    {0x0000000000000000ull, "model.decoder.layers.11.fc2.bias", 4294967301ull, PK_Z_RADEMACHER,
     0x3f800000u}, /* 1 */
    {0x0000000000000001ull, "model.embed_tokens.weight", 3ull, PK_Z_GAUSSIAN,
     0x3fbb67c5u}, /* 1.46410429 */
    {0x0000000000000001ull, "model.embed_tokens.weight", 3ull, PK_Z_RADEMACHER,
     0x3f800000u},                                                                 /* 1 */
    {0x0000000000000001ull, "lm_head.weight", 0ull, PK_Z_GAUSSIAN, 0xbfb7c925u},   /* -1.43582594 */
    {0x0000000000000001ull, "lm_head.weight", 0ull, PK_Z_RADEMACHER, 0x3f800000u}, /* 1 */
    {0x0000000000000001ull, "lm_head.weight", 7ull, PK_Z_GAUSSIAN, 0xbf139133u}, /* -0.576434314 */
    {0x0000000000000001ull, "model.decoder.layers.11.fc2.bias", 1ull, PK_Z_GAUSSIAN,
     0x3ee5ed8fu}, /* 0.449078053 */
    {0x0000000000000001ull, "model.decoder.layers.11.fc2.bias", 1000003ull, PK_Z_GAUSSIAN,
     0x3f17b1aeu}, /* 0.592554927 */
    {0x000000000000002aull, "model.embed_tokens.weight", 2ull, PK_Z_GAUSSIAN,
     0xbf818beau}, /* -1.01208234 */
    {0x000000000000002aull, "model.embed_tokens.weight", 4294967301ull, PK_Z_GAUSSIAN,
     0x3eb097a8u}, /* 0.344907045 */
    {0x000000000000002aull, "model.embed_tokens.weight", 4294967301ull, PK_Z_RADEMACHER,
     0x3f800000u},                                                               /* 1 */
    {0x000000000000002aull, "lm_head.weight", 3ull, PK_Z_GAUSSIAN, 0xbebddbb2u}, /* -0.370816767 */
    {0x000000000000002aull, "lm_head.weight", 3ull, PK_Z_RADEMACHER, 0xbf800000u}, /* -1 */
    {0x000000000000002aull, "model.decoder.layers.11.fc2.bias", 0ull, PK_Z_GAUSSIAN,
     0xbe872f18u}, /* -0.264031172 */
    {0x000000000000002aull, "model.decoder.layers.11.fc2.bias", 0ull, PK_Z_RADEMACHER,
     0xbf800000u}, /* -1 */
    {0x000000000000002aull, "model.decoder.layers.11.fc2.bias", 7ull, PK_Z_GAUSSIAN,
     0x3f8dc91cu}, /* 1.10769987 */
    {0xdeadbeefcafef00dull, "model.embed_tokens.weight", 1ull, PK_Z_GAUSSIAN,
     0x3f48f4aau}, /* 0.784983277 */
    {0xdeadbeefcafef00dull, "model.embed_tokens.weight", 1000003ull, PK_Z_GAUSSIAN,
     0xbfbe6f4du},                                                               /* -1.48777163 */
    {0xdeadbeefcafef00dull, "lm_head.weight", 2ull, PK_Z_GAUSSIAN, 0x3f00bba1u}, /* 0.50286299 */
    {0xdeadbeefcafef00dull, "lm_head.weight", 4294967301ull, PK_Z_GAUSSIAN,
     0x3f82ffa6u}, /* 1.02342677 */
    {0xdeadbeefcafef00dull, "lm_head.weight", 4294967301ull, PK_Z_RADEMACHER, 0x3f800000u}, /* 1 */
    {0xdeadbeefcafef00dull, "model.decoder.layers.11.fc2.bias", 3ull, PK_Z_GAUSSIAN,
     0x40359a8au}, /* 2.83755732 */
    {0xdeadbeefcafef00dull, "model.decoder.layers.11.fc2.bias", 3ull, PK_Z_RADEMACHER,
     0x3f800000u}, /* 1 */
};

static void test_golden(void)
{
    size_t n = sizeof goldens / sizeof goldens[0];
    PK_CHECK(n >= 16);
    for (size_t t = 0; t < n; t++) {
        float z;
        pk_z_fill(goldens[t].seed, pk_rng_tensor_key(goldens[t].name), goldens[t].index, 1,
                  goldens[t].kind, &z);
        if (fbits(z) != goldens[t].bits)
            fprintf(stderr, "golden %zu: got 0x%08x want 0x%08x\n", t, (unsigned)fbits(z),
                    (unsigned)goldens[t].bits);
        PK_CHECK(fbits(z) == goldens[t].bits);
    }
}

static uint64_t lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

static void test_slices(void)
{
    enum { N = 5000 };
    static float whole[N], part[N], y0[N], y1[N], y2[N];
    const uint64_t bases[2] = {0, (1ull << 33) + 3};
    uint64_t rs = 12345;
    for (int kind = 0; kind < 2; kind++) {
        for (int bi = 0; bi < 2; bi++) {
            uint64_t key = pk_rng_tensor_key("lm_head.weight");
            pk_z_fill(7, key, bases[bi], N, (pk_z_kind)kind, whole);
            int bad = 0;
            for (int t = 0; t < 200; t++) {
                size_t a = (size_t)(lcg(&rs) % N);
                size_t len = (size_t)(lcg(&rs) % (N - a + 1));
                memset(part, 0, sizeof part);
                pk_z_fill(7, key, bases[bi] + a, len, (pk_z_kind)kind, part);
                bad += memcmp(part, whole + a, len * sizeof(float)) != 0;
            }
            PK_CHECK_EQ(bad, 0);
            /* axpy: one call == pieces in any order == y + (alpha * z) with one rounding each */
            const float alpha = -3.0e-3f;
            for (int j = 0; j < N; j++)
                y0[j] = y1[j] = y2[j] = (float)((double)(lcg(&rs) % 2001) / 1000.0 - 1.0);
            pk_z_axpy(7, key, bases[bi], N, (pk_z_kind)kind, alpha, y1);
            size_t cuts[] = {N, 4097, 255, 3, 1, 0}; /* pieces applied last-first */
            for (int c = 0; c < 5; c++) {
                size_t lo = cuts[c + 1], hi = cuts[c];
                pk_z_axpy(7, key, bases[bi] + lo, hi - lo, (pk_z_kind)kind, alpha, y2 + lo);
            }
            int bad1 = 0, bad2 = 0;
            for (int j = 0; j < N; j++) {
                volatile float t = alpha * whole[j];
                float want = y0[j] + t;
                bad1 += fbits(y1[j]) != fbits(want);
                bad2 += fbits(y2[j]) != fbits(want);
            }
            PK_CHECK_EQ(bad1, 0);
            PK_CHECK_EQ(bad2, 0);
        }
    }
    /* n == 0 writes nothing */
    float sentinel = 123.0f;
    pk_z_fill(1, 2, 3, 0, PK_Z_GAUSSIAN, &sentinel);
    PK_CHECK(sentinel == 123.0f);
}

static void test_statistics(void)
{
    enum { N = 1 << 20 };
    float *z = malloc(N * sizeof(float));
    float *z2 = malloc(N * sizeof(float));
    PK_CHECK(z != NULL && z2 != NULL);
    if (z == NULL || z2 == NULL)
        goto out;
    pk_z_fill(2024, pk_rng_tensor_key("model.decoder.layers.0.fc1.weight"), 0, N, PK_Z_GAUSSIAN, z);
    double s1 = 0, s2 = 0, s4 = 0, lag = 0, maxabs = 0;
    long below[3] = {0, 0, 0}, tail3 = 0;
    for (int j = 0; j < N; j++) {
        double v = (double)z[j];
        s1 += v;
        s2 += v * v;
        s4 += v * v * v * v;
        if (j > 0)
            lag += v * (double)z[j - 1];
        below[0] += v < -1.0;
        below[1] += v < 0.0;
        below[2] += v < 1.0;
        tail3 += fabs(v) > 3.0;
        if (fabs(v) > maxabs)
            maxabs = fabs(v);
    }
    double mean = s1 / N, var = s2 / N - mean * mean, kurt = s4 / N / (var * var);
    fprintf(stderr, "gaussian: mean %.5f var %.5f kurtosis %.4f lag1 %.5f P(|z|>3) %.5f max %.3f\n",
            mean, var, kurt, lag / N, (double)tail3 / N, maxabs);
    PK_CHECK(fabs(mean) < 0.005);      /* sd 0.001 */
    PK_CHECK(fabs(var - 1.0) < 0.01);  /* sd 0.0014 */
    PK_CHECK(fabs(kurt - 3.0) < 0.05); /* sd 0.005 */
    PK_CHECK(fabs(lag / N) < 0.005);
    PK_CHECK(fabs((double)below[0] / N - 0.158655) < 0.002);
    PK_CHECK(fabs((double)below[1] / N - 0.5) < 0.002);
    PK_CHECK(fabs((double)below[2] / N - 0.841345) < 0.002);
    PK_CHECK(fabs((double)tail3 / N - 0.0026998) < 0.0004);
    PK_CHECK(maxabs > 4.0 && maxabs < 5.8); /* 24-bit uniforms: |z| <= sqrt(48 ln 2) = 5.77 */

    /* different seed and different tensor: uncorrelated streams */
    double c = 0;
    pk_z_fill(2025, pk_rng_tensor_key("model.decoder.layers.0.fc1.weight"), 0, N, PK_Z_GAUSSIAN,
              z2);
    for (int j = 0; j < N; j++)
        c += (double)z[j] * (double)z2[j];
    PK_CHECK(fabs(c / N) < 0.005);
    c = 0;
    pk_z_fill(2024, pk_rng_tensor_key("model.decoder.layers.0.fc2.weight"), 0, N, PK_Z_GAUSSIAN,
              z2);
    for (int j = 0; j < N; j++)
        c += (double)z[j] * (double)z2[j];
    PK_CHECK(fabs(c / N) < 0.005);

    pk_z_fill(99, 5, 0, N, PK_Z_RADEMACHER, z);
    long plus = 0, other = 0;
    double rlag = 0;
    for (int j = 0; j < N; j++) {
        plus += z[j] == 1.0f;
        other += z[j] != 1.0f && z[j] != -1.0f;
        if (j > 0)
            rlag += (double)z[j] * (double)z[j - 1];
    }
    PK_CHECK_EQ(other, 0);
    PK_CHECK(fabs((double)plus / N - 0.5) < 0.003);
    PK_CHECK(fabs(rlag / N) < 0.005);
out:
    free(z);
    free(z2);
}

/* The automatic path (AVX-512 where the CPU has it) and the generic path give the same bits, for
 * both kinds, unaligned starts, counters that cross 2^32 and lengths that end mid-block. */
static void test_paths_agree(void)
{
    enum { N = 300007 };
    float *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b);
    float *ya = malloc(N * sizeof *ya), *yb = malloc(N * sizeof *yb);
    PK_CHECK(a && b && ya && yb);
    if (!a || !b || !ya || !yb)
        goto out;
    const uint64_t starts[3] = {0, 13, (1ull << 34) - 1001};
    const uint64_t seeds[2] = {2024, 0xfedcba9876543210ull};
    int bad = 0;
    for (int kind = 0; kind < 2; kind++)
        for (int si = 0; si < 3; si++)
            for (int sd = 0; sd < 2; sd++) {
                uint64_t key = pk_rng_tensor_key("model.decoder.layers.7.fc2.weight");
                pk_rng_force_generic(1);
                pk_z_fill(seeds[sd], key, starts[si], N, (pk_z_kind)kind, a);
                for (int j = 0; j < N; j++)
                    ya[j] = yb[j] = (float)j * 1e-6f - 0.1f;
                pk_z_axpy(seeds[sd], key, starts[si], N, (pk_z_kind)kind, 0.37f, ya);
                pk_rng_force_generic(0);
                pk_z_fill(seeds[sd], key, starts[si], N, (pk_z_kind)kind, b);
                pk_z_axpy(seeds[sd], key, starts[si], N, (pk_z_kind)kind, 0.37f, yb);
                bad += memcmp(a, b, N * sizeof *a) != 0;
                bad += memcmp(ya, yb, N * sizeof *ya) != 0;
            }
    PK_CHECK_EQ(bad, 0);
out:
    pk_rng_force_generic(0);
    free(a);
    free(b);
    free(ya);
    free(yb);
}

/* pk_z_perturb: yp = w + alpha z bit-identical to pk_z_axpy on a copy of w, ym the same at
 * -alpha, from the same call; in place (w == yp) too; on both paths. */
static void test_perturb_pair(void)
{
    enum { N = 70001 };
    float *w = malloc(N * sizeof *w), *p = malloc(N * sizeof *p), *mi = malloc(N * sizeof *mi);
    float *ep = malloc(N * sizeof *ep), *em = malloc(N * sizeof *em);
    PK_CHECK(w && p && mi && ep && em);
    if (!w || !p || !mi || !ep || !em)
        goto out;
    int bad = 0, moved = 0;
    uint64_t key = pk_rng_tensor_key("model.layers.3.mlp.up_proj.weight");
    for (int path = 0; path < 2; path++)
        for (int kind = 0; kind < 2; kind++)
            for (uint64_t start = 0; start < 7; start += 3) {
                pk_rng_force_generic(path);
                for (int j = 0; j < N; j++)
                    w[j] = (float)((j * 7919) % 2001 - 1000) * 1e-3f;
                memcpy(ep, w, N * sizeof *w);
                memcpy(em, w, N * sizeof *w);
                pk_z_axpy(31, key, start, N, (pk_z_kind)kind, 1e-3f, ep);
                pk_z_axpy(31, key, start, N, (pk_z_kind)kind, -1e-3f, em);
                pk_z_perturb(31, key, start, N, (pk_z_kind)kind, 1e-3f, w, p, mi);
                bad += memcmp(p, ep, N * sizeof *p) != 0;
                bad += memcmp(mi, em, N * sizeof *mi) != 0;
                moved += memcmp(p, mi, N * sizeof *p) != 0;
                pk_z_perturb(31, key, start, N, (pk_z_kind)kind, 1e-3f, w, w, mi); /* in place */
                bad += memcmp(w, ep, N * sizeof *w) != 0;
                bad += memcmp(mi, em, N * sizeof *mi) != 0;
            }
    PK_CHECK_EQ(bad, 0);
    PK_CHECK_EQ(moved, 12);
out:
    pk_rng_force_generic(0);
    free(w);
    free(p);
    free(mi);
    free(ep);
    free(em);
}

int main(void)
{
    test_paths_agree();
    test_perturb_pair();
    test_philox_kat();
    test_tensor_key();
    test_reference();
    test_golden();
    test_slices();
    test_statistics();
    return PK_TEST_DONE();
}
