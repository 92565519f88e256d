/* train_test_util.h: helpers shared by the trainer tests (test_trainer.c, test_estimator.c): the
 * store of the test's home, a whole training run through it, and the weights hash of a logged
 * run rebuilt with a given thread count. Header-only (static functions); the test sets `home`
 * (an initialized store, TEST_PASS) before calling them. */
#ifndef PK_TRAIN_TEST_UTIL_H
#define PK_TRAIN_TEST_UTIL_H

#include "pk_test.h"
#include "pk_train.h"
#include "store_test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char home[512]; /* the store the helpers open */

/* The store of `home`; exits the test when it cannot be opened (nothing else can run). */
static inline pk_store *open_store(void)
{
    pk_store *s = NULL;
    char err[256] = "";
    pk_status st = pk_store_open(home, TEST_PASS, strlen(TEST_PASS), &s, err, sizeof err);
    if (st != PK_OK) {
        fprintf(stderr, "FATAL: open %s: %s\n", home, err);
        exit(1);
    }
    return s;
}

/* pk_train on a store of its own (opened and closed here); a failure's message on stderr. */
static inline pk_status run(const pk_train_config *c, int64_t resume, const pk_train_hooks *h,
                            pk_train_result *r)
{
    pk_store *s = open_store();
    char err[512] = "";
    pk_status st = pk_train(s, c, resume, h, r, err, sizeof err);
    if (st != PK_OK)
        fprintf(stderr, "pk_train: %s\n", err);
    pk_store_close(s);
    return st;
}

/* The weights hash of run_id rebuilt (base + checkpoint + log) with `threads` threads; "" and a
 * failed check when it cannot be. */
static inline void hash_of_run(int64_t run_id, int threads, char hex[65])
{
    pk_store *s = open_store();
    pk_model *m = NULL;
    char err[256] = "";
    int old = pk_threads_get();
    pk_threads_set(threads);
    PK_CHECK(pk_run_materialize(s, run_id, &m, err, sizeof err) == PK_OK);
    pk_threads_set(old);
    hex[0] = 0;
    if (m != NULL)
        PK_CHECK(pk_weights_hash(m, hex) == PK_OK);
    pk_model_free(m);
    pk_store_close(s);
}

#endif /* PK_TRAIN_TEST_UTIL_H */
