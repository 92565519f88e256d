/* test_fedsim_split.c: the dataset splits of fedsim (fedsim/split.c): every device gets an
 * example, IID sizes differ by at most one, the same seed gives the same split and another seed
 * another one, Dirichlet 0.1 skews the labels far more than IID, shards:1 gives each device
 * about one class, too few examples is an error, and the specs parse. */
#include "pk_fedsim.h"
#include "pk_test.h"

#include <string.h>

#define N     400
#define DEV   8
#define CLASS 4

/* Mean over devices of the share of the device's most common class. */
static double purity(const int32_t *cls, const int32_t *dev)
{
    double tot = 0;
    for (int j = 0; j < DEV; j++) {
        int cnt[CLASS] = {0}, n = 0, best = 0;
        for (int i = 0; i < N; i++)
            if (dev[i] == j) {
                cnt[cls[i]]++;
                n++;
            }
        for (int c = 0; c < CLASS; c++)
            best = cnt[c] > best ? cnt[c] : best;
        tot += n ? (double)best / n : 0.0;
    }
    return tot / DEV;
}

static void sizes(const int32_t *dev, size_t n, int *lo, int *hi)
{
    int cnt[DEV] = {0};
    for (size_t i = 0; i < n; i++)
        cnt[dev[i]]++;
    *lo = *hi = cnt[0];
    for (int j = 1; j < DEV; j++) {
        *lo = cnt[j] < *lo ? cnt[j] : *lo;
        *hi = cnt[j] > *hi ? cnt[j] : *hi;
    }
}

int main(void)
{
    static int32_t cls[N], a[N], b[N], c[N];
    pk_split sp;
    int lo, hi;
    for (int i = 0; i < N; i++)
        cls[i] = i % CLASS;
    PK_CHECK(pk_fedsim_split_parse("iid", &sp, NULL, 0) == PK_OK);
    PK_CHECK(pk_fedsim_split(&sp, cls, N, DEV, 1, a, NULL, 0) == PK_OK);
    sizes(a, N, &lo, &hi);
    PK_CHECK(lo == N / DEV && hi == N / DEV);
    double p_iid = purity(cls, a);

    PK_CHECK(pk_fedsim_split_parse("dirichlet:0.1", &sp, NULL, 0) == PK_OK);
    PK_CHECK(sp.kind == PK_SPLIT_DIRICHLET && sp.alpha == 0.1);
    PK_CHECK(pk_fedsim_split(&sp, cls, N, DEV, 5, a, NULL, 0) == PK_OK);
    PK_CHECK(pk_fedsim_split(&sp, cls, N, DEV, 5, b, NULL, 0) == PK_OK);
    PK_CHECK(pk_fedsim_split(&sp, cls, N, DEV, 6, c, NULL, 0) == PK_OK);
    PK_CHECK(memcmp(a, b, sizeof a) == 0);
    PK_CHECK(memcmp(a, c, sizeof a) != 0);
    sizes(a, N, &lo, &hi);
    PK_CHECK(lo >= 1);
    PK_CHECK(purity(cls, a) > p_iid + 0.25);

    PK_CHECK(pk_fedsim_split_parse("shards:1", &sp, NULL, 0) == PK_OK);
    PK_CHECK(pk_fedsim_split(&sp, cls, N, DEV, 9, a, NULL, 0) == PK_OK);
    sizes(a, N, &lo, &hi);
    PK_CHECK(lo == N / DEV && hi == N / DEV);
    PK_CHECK(purity(cls, a) > 0.99);

    /* more devices than examples; a device left empty by the draw still gets one */
    PK_CHECK(pk_fedsim_split(&sp, cls, 5, DEV, 1, a, NULL, 0) == PK_ERR_ARG);
    PK_CHECK(pk_fedsim_split_parse("dirichlet:0.01", &sp, NULL, 0) == PK_OK);
    PK_CHECK(pk_fedsim_split(&sp, cls, DEV, DEV, 3, a, NULL, 0) == PK_OK);
    sizes(a, DEV, &lo, &hi);
    PK_CHECK(lo == 1 && hi == 1);

    char err[200] = "";
    PK_CHECK(pk_fedsim_split_parse("dirichlet:0", &sp, err, sizeof err) == PK_ERR_ARG);
    PK_CHECK(strstr(err, "dirichlet:0") != NULL);
    PK_CHECK(pk_fedsim_split_parse("shards:x", &sp, NULL, 0) == PK_ERR_ARG);
    PK_CHECK(pk_fedsim_split_parse("noniid", &sp, NULL, 0) == PK_ERR_ARG);
    return PK_TEST_DONE();
}
