/* model_test_util.h: loading a model in a test, the two ways the tests want it: as a check (a
 * failure is counted and the test goes on with NULL) or as a precondition (the test exits).
 * Header-only, on top of pk_test.h. */
#ifndef PK_MODEL_TEST_UTIL_H
#define PK_MODEL_TEST_UTIL_H

#include "pk_model.h"
#include "pk_test.h"

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

/* Stochastic rounding's contract for one f16 element: got (the stored bits) is the nearest f16
 * to want (the exact fp32 update) or, when want is not representable, its other neighbour.
 * Returns 1 if so; *far (may be NULL) counts the elements that took the other one. */
static inline int f16_neighbour_ok(uint16_t got, float want, size_t *far)
{
    uint16_t near = pk_f32_to_f16(want);
    float nv = pk_f16_to_f32(near);
    uint16_t other = (uint16_t)((nv < want) == (want > 0.0f) ? near + 1 : near - 1);
    if (far && got != near)
        (*far)++;
    return got == near || (got == other && nv != want);
}

#endif /* PK_MODEL_TEST_UTIL_H */
