/* pk_test.h: the tiny test harness (redis testhelp.h, llm.c check_tensor). Each check prints
 * file:line on failure and counts it; PK_TEST_DONE() returns non-zero if anything failed. */
#ifndef PK_TEST_H
#define PK_TEST_H

#include <math.h>
#include <stdio.h>

static int pk_test_failures;
static int pk_test_checks;

#define PK_CHECK(cond)                                                                             \
    do {                                                                                           \
        pk_test_checks++;                                                                          \
        if (!(cond)) {                                                                             \
            pk_test_failures++;                                                                    \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

#define PK_CHECK_EQ(a, b)                                                                          \
    do {                                                                                           \
        pk_test_checks++;                                                                          \
        long long pk_a_ = (long long)(a), pk_b_ = (long long)(b);                                  \
        if (pk_a_ != pk_b_) {                                                                      \
            pk_test_failures++;                                                                    \
            fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n", __FILE__, __LINE__, #a, #b,  \
                    pk_a_, pk_b_);                                                                 \
        }                                                                                          \
    } while (0)

#define PK_CHECK_NEAR(a, b, tol)                                                                   \
    do {                                                                                           \
        pk_test_checks++;                                                                          \
        double pk_a_ = (double)(a), pk_b_ = (double)(b);                                           \
        if (!(fabs(pk_a_ - pk_b_) <= (double)(tol))) {                                             \
            pk_test_failures++;                                                                    \
            fprintf(stderr, "%s:%d: |%s - %s| <= %g failed: %.9g vs %.9g\n", __FILE__, __LINE__,   \
                    #a, #b, (double)(tol), pk_a_, pk_b_);                                          \
        }                                                                                          \
    } while (0)

#define PK_TEST_DONE()                                                                             \
    (fprintf(stderr, "%d checks, %d failed\n", pk_test_checks, pk_test_failures),                  \
     pk_test_failures != 0)

#endif /* PK_TEST_H */
