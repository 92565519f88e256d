/* model_test_util.h: loading a model in a test, the two ways the tests want it: as a check (a
 * failure is counted and the test goes on with NULL) or as a precondition (the test exits).
 * Header-only, on top of pk_test.h. */
#ifndef PK_MODEL_TEST_UTIL_H
#define PK_MODEL_TEST_UTIL_H

#include "pk_model.h"
#include "pk_rng.h"
#include "pk_test.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* The model at dir (a directory or a model file) with the default params: owned, or NULL after
 * saying why on stderr. */
static inline pk_model *load_model_quiet(const char *dir, pk_status *st)
{
    pk_model *m = NULL;
    char err[512] = "";
    *st = pk_model_load(dir, pk_model_default_params(), &m, err, sizeof err);
    if (*st != PK_OK)
        fprintf(stderr, "load %s: %s\n", dir, err);
    return m;
}

/* load_model_quiet, and a failed check unless it loaded. */
static inline pk_model *load_model_checked(const char *dir)
{
    pk_status st;
    pk_model *m = load_model_quiet(dir, &st);
    PK_CHECK_EQ(st, PK_OK);
    return m;
}

/* load_model_quiet, or the test ends with status 1 (the model is the test's precondition). */
static inline pk_model *load_model_or_exit(const char *dir)
{
    pk_status st;
    pk_model *m = load_model_quiet(dir, &st);
    if (st != PK_OK)
        exit(1);
    return m;
}

/* The f16 weights of a after one update W - lr g z of base's (z Gaussian from seed, each element
 * divided by sqrtf of its h when h is given: fp32 values of every tensor in model order, hizoo's
 * diagonal), against stochastic rounding's contract: each element the nearest f16 to its exact
 * update or, when that is not representable, the other neighbour. far counts the elements that
 * took the other one, changed those that moved. */
typedef struct f16_scan {
    size_t n16, bad, far, changed;
} f16_scan;

static inline f16_scan f16_update_scan(const pk_model *a, const pk_model *base, uint64_t seed,
                                       float lr, float g, const float *h)
{
    f16_scan s = {0, 0, 0, 0};
    size_t off = 0;
    for (size_t i = 0; i < pk_model_n_tensors(a); i++) {
        pk_tensor_info ta, t0;
        PK_CHECK(pk_model_tensor(a, i, &ta) == PK_OK && pk_model_tensor(base, i, &t0) == PK_OK);
        const float *hi = h ? h + off : NULL;
        off += ta.numel;
        if (ta.dtype != PK_DTYPE_F16)
            continue;
        s.n16++;
        float *z = malloc(ta.numel * sizeof(float));
        PK_CHECK(z != NULL);
        if (z)
            pk_z_fill(seed, ta.key, 0, ta.numel, PK_Z_GAUSSIAN, z);
        const uint16_t *h0 = t0.data, *h1 = ta.data;
        for (size_t k = 0; z && k < ta.numel; k++) {
            volatile float d = hi ? z[k] / sqrtf(hi[k]) : z[k];
            volatile float x = g * d;
            volatile float u = lr * x;
            float want = pk_f16_to_f32(h0[k]) - u;
            uint16_t near = pk_f32_to_f16(want);
            float nv = pk_f16_to_f32(near);
            uint16_t other = (uint16_t)((nv < want) == (want > 0.0f) ? near + 1 : near - 1);
            s.bad += h1[k] != near && !(h1[k] == other && nv != want);
            s.far += h1[k] != near;
            s.changed += h0[k] != h1[k];
        }
        free(z);
    }
    return s;
}

#endif /* PK_MODEL_TEST_UTIL_H */
