/* test_simd.c: every vector path equals the generic C it replaces, bit for bit, on many inputs:
 * z (pk_z_fill / pk_z_perturb: the AVX-512 path on x86-64, NEON on aarch64, against
 * PK_RNG_GENERIC's plain C) and the f16/bf16 widening (pk_widen against the scalar definitions
 * pk_f16_to_f32 / pk_bf16_to_f32, every bit pattern). It also prints each path's time per value
 * (a sanity check only: under qemu these are not the machine's timings). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pk_model.h"
#include "pk_rng.h"
#include "pk_test.h"

void pk_rng_force_generic(int on); /* common/rng.c, for tests: 1 = the generic C path */

static uint64_t next(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 11;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* z and both perturbations of one random case on the vector path and on the generic one. */
static int z_case(uint64_t *rs, float *a, float *b, float *w, size_t cap)
{
    uint64_t seed = next(rs) ^ (next(rs) << 40), key = next(rs) ^ (next(rs) << 32);
    uint64_t start = next(rs) % 3 == 0 ? next(rs) % 1000 : next(rs) ^ (next(rs) << 30);
    size_t n = 1 + (size_t)(next(rs) % cap);
    pk_z_kind kind = next(rs) % 2 ? PK_Z_RADEMACHER : PK_Z_GAUSSIAN;
    float alpha = (float)(next(rs) % 2000) * 1e-6f + 1e-4f;
    for (size_t j = 0; j < n; j++)
        w[j] = (float)((int)(next(rs) % 20001) - 10000) * 1e-4f;
    int same = 1;
    for (int path = 0; path < 2; path++) {
        float *o = path ? b : a;
        pk_rng_force_generic(path);
        pk_z_fill(seed, key, start, n, kind, o);
        pk_z_perturb(seed, key, start, n, kind, alpha, w, o + n, o + 2 * n);
    }
    pk_rng_force_generic(0);
    same = memcmp(a, b, 3 * n * sizeof(float)) == 0;
    if (!same)
        fprintf(stderr, "z differs: seed %llu key %llu start %llu n %zu kind %d\n",
                (unsigned long long)seed, (unsigned long long)key, (unsigned long long)start, n,
                (int)kind);
    return same;
}

static void test_z_paths(void)
{
    enum { CAP = 5000 };
    float *a = malloc(3 * CAP * sizeof(float)), *b = malloc(3 * CAP * sizeof(float));
    float *w = malloc(CAP * sizeof(float));
    uint64_t rs = 12345;
    int bad = 0;
    for (int c = 0; c < 400 && a && b && w; c++)
        bad += !z_case(&rs, a, b, w, CAP);
    PK_CHECK(a && b && w);
    PK_CHECK_EQ(bad, 0);
    free(a);
    free(b);
    free(w);
}

/* ns per value of pk_z_fill on one path (Gaussian), for the log. */
static double z_ns(int generic, float *out, size_t n)
{
    pk_rng_force_generic(generic);
    double t = now();
    for (int r = 0; r < 3; r++)
        pk_z_fill((uint64_t)r, 99, 0, n, PK_Z_GAUSSIAN, out);
    t = now() - t;
    pk_rng_force_generic(0);
    return t * 1e9 / (3.0 * (double)n);
}

/* pk_widen of h[0..n) equals the scalar definition of dt element by element. */
static int widen_matches(pk_dtype dt, const uint16_t *h, size_t n, float *out)
{
    pk_widen(dt, h, n, out);
    for (size_t i = 0; i < n; i++) {
        float want = dt == PK_DTYPE_F16 ? pk_f16_to_f32(h[i]) : pk_bf16_to_f32(h[i]);
        if (memcmp(&want, &out[i], 4) != 0) {
            fprintf(stderr, "%s widening of 0x%04x differs\n", pk_dtype_name(dt), h[i]);
            return 0;
        }
    }
    return 1;
}

static void test_widen(void)
{
    enum { N = 65536 };
    uint16_t *all = malloc(N * 2), *finite = malloc(N * 2);
    float *out = malloc(N * 4);
    size_t nf = 0;
    PK_CHECK(all && finite && out);
    if (!all || !finite || !out)
        goto out;
    for (size_t i = 0; i < N; i++) {
        all[i] = (uint16_t)i;
        if ((i & 0x7c00) != 0x7c00)
            finite[nf++] = (uint16_t)i; /* every finite f16, subnormals and zeros included */
    }
    for (int dt = 0; dt < 2; dt++) {
        pk_dtype t = dt ? PK_DTYPE_BF16 : PK_DTYPE_F16;
        PK_CHECK(widen_matches(t, finite, nf, out));
        PK_CHECK(widen_matches(t, finite + 1, nf - 3, out)); /* odd start, ragged tail */
        PK_CHECK(widen_matches(t, all, N, out));             /* NaN and infinity bits too */
        PK_CHECK(widen_matches(t, all + 0x7bfb, 37, out));   /* a block across the infinities */
        PK_CHECK(widen_matches(t, all + 5, 7, out));         /* shorter than a vector */
    }
out:
    free(all);
    free(finite);
    free(out);
}

/* ns per value of pk_widen and of the scalar loop it stands for, for the log. */
static void time_widen(pk_dtype dt, const uint16_t *h, size_t n, float *out)
{
    double t0 = now();
    for (int r = 0; r < 5; r++)
        pk_widen(dt, h, n, out);
    double t1 = now();
    for (int r = 0; r < 5; r++)
        for (size_t i = 0; i < n; i++)
            out[i] = dt == PK_DTYPE_F16 ? pk_f16_to_f32(h[i]) : pk_bf16_to_f32(h[i]);
    double t2 = now();
    fprintf(stderr, "%s widening: pk_widen %.3f ns/value, scalar %.3f ns/value\n",
            pk_dtype_name(dt), (t1 - t0) * 1e9 / (5.0 * (double)n),
            (t2 - t1) * 1e9 / (5.0 * (double)n));
}

static void timings(void)
{
    enum { N = 1 << 20 };
    float *out = malloc(N * sizeof(float));
    uint16_t *h = malloc(N * 2);
    if (!out || !h) {
        PK_CHECK(!"no memory");
        goto out;
    }
    fprintf(stderr, "z Gaussian: default path %.3f ns/value, generic %.3f ns/value\n",
            z_ns(0, out, N), z_ns(1, out, N));
    for (size_t i = 0; i < N; i++)
        h[i] = (uint16_t)(0x3c00 + (i % 1021)); /* finite values near 1 */
    time_widen(PK_DTYPE_F16, h, N, out);
    time_widen(PK_DTYPE_BF16, h, N, out);
out:
    free(out);
    free(h);
}

int main(void)
{
    test_z_paths();
    test_widen();
    timings();
    return PK_TEST_DONE();
}
