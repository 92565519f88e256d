/* fuzz_model_util.h: what the fuzz targets that load a fuzzed model file share (fuzz_model,
 * fuzz_gguf): the load, whose failure must come with a message and no model, and a loss on a
 * fixed short sequence. Header-only; a broken contract aborts (libFuzzer reports it). */
#ifndef PK_FUZZ_MODEL_UTIL_H
#define PK_FUZZ_MODEL_UTIL_H

#include <stdint.h>
#include <stdlib.h>

#include "pk_model.h"

/* The model at path (owned: pk_model_free), or NULL if it does not load; aborts if a failed load
 * left a model or no message. */
static inline pk_model *fuzz_load_model(const char *path)
{
    pk_model *m = NULL;
    char err[512] = "";
    pk_status st = pk_model_load(path, pk_model_default_params(), &m, err, sizeof err);
    if (st != PK_OK && (m != NULL || err[0] == '\0'))
        abort();
    return st == PK_OK ? m : NULL;
}

/* pk_model_loss of m on one sequence of the ids 1, 3, 5, 7 (each modulo the vocabulary size). */
static inline pk_status fuzz_model_loss(pk_model *m)
{
    int32_t ids[4] = {1, 3, 5, 7}, len = 4;
    for (int i = 0; i < 4; i++)
        ids[i] %= pk_model_vocab_size(m);
    pk_batch b = {1, 4, ids, &len, NULL};
    double mean = 0;
    return pk_model_loss(m, &b, NULL, NULL, NULL, NULL, &mean);
}

#endif /* PK_FUZZ_MODEL_UTIL_H */
