/* test_threads.c: the thread count reaches the engine in every build (DESIGN 10). A clang build
 * once compiled its OpenMP loops for libgomp, which clang does not generate code for: every loop
 * ran on one thread, and the GEMM tiles' omp_set_num_threads(1) then set the whole process to 1.
 * Here: a parallel region of this build's OpenMP runs on the threads pk_threads_set asked for,
 * and a forward pass of stories260k (its tiles, its norms, its LM head) leaves that count set. */
#include "pk_model.h"
#include "pk_test.h"

#include <omp.h>
#include <stdint.h>
#include <stdlib.h>

static int team_size(void)
{
    int n = 0;
#pragma omp parallel
    {
#pragma omp atomic
        n++;
    }
    return n;
}

int main(void)
{
    pk_model *m = NULL;
    char err[256] = "";
    PK_CHECK(pk_model_load(PK_STORIES_DIR, pk_model_default_params(), &m, err, sizeof err) ==
             PK_OK);
    if (m == NULL)
        return PK_TEST_DONE();
    enum { B = 4, T = 64 };
    int32_t ids[B * T], lens[B];
    for (int i = 0; i < B * T; i++)
        ids[i] = (int32_t)((i * 37 + 11) % pk_model_vocab_size(m));
    for (int b = 0; b < B; b++)
        lens[b] = T - 5 * b;
    pk_batch bt = {B, T, ids, lens, NULL};
    float *logits = malloc((size_t)B * T * (size_t)pk_model_vocab_size(m) * sizeof *logits);
    PK_CHECK(logits != NULL);
    for (int th = 2; th >= 1 && logits; th--) {
        PK_CHECK_EQ(pk_threads_set(th), th);
        PK_CHECK_EQ(team_size(), th);
        PK_CHECK(pk_model_logits(m, &bt, NULL, logits) == PK_OK);
        PK_CHECK_EQ(pk_threads_get(), th); /* not set to 1 by the pass */
        PK_CHECK_EQ(team_size(), th);
    }
    free(logits);
    pk_model_free(m);
    return PK_TEST_DONE();
}
