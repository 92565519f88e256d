/* split.c: dealing a dataset's examples to simulated devices: IID, Dirichlet label skew (the
 * usual non-IID benchmark split) and McMahan-style class shards. Pure functions of a seed; the
 * examples themselves stay in the stores (sim.c copies them). */
#include "fedsim_impl.h"
#include "pk_fedsim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

pk_status pk_fedsim_split_parse(const char *spec, pk_split *out, char *err, size_t errlen)
{
    char *end = NULL;
    memset(out, 0, sizeof *out);
    if (spec && !strcmp(spec, "iid")) {
        out->kind = PK_SPLIT_IID;
        return PK_OK;
    }
    if (spec && !strncmp(spec, "dirichlet:", 10)) {
        out->kind = PK_SPLIT_DIRICHLET;
        out->alpha = strtod(spec + 10, &end);
        if (end != spec + 10 && *end == '\0' && out->alpha > 0 && out->alpha <= 1e6)
            return PK_OK;
    } else if (spec && !strncmp(spec, "shards:", 7)) {
        out->kind = PK_SPLIT_SHARDS;
        long k = strtol(spec + 7, &end, 10);
        out->shards = (int)k;
        if (end != spec + 7 && *end == '\0' && k >= 1 && k <= 1 << 20)
            return PK_OK;
    }
    pk_seterr(err, errlen,
              "split '%s': expected iid, dirichlet:ALPHA (ALPHA > 0) or shards:K (K >= 1)",
              spec ? spec : "");
    return PK_ERR_ARG;
}

/* Standard normal (Box-Muller) and Gamma(a, 1) (Marsaglia and Tsang 2000; a < 1 by the
 * a + 1 boost), from the seeded stream. */
static double normal(fs_rng *r)
{
    double u1 = fs_uniform(r), u2 = fs_uniform(r);
    return sqrt(-2.0 * log(1.0 - u1)) * cos(6.283185307179586 * u2);
}

static double gamma_draw(fs_rng *r, double a)
{
    if (a < 1.0) {
        double u = fs_uniform(r);
        return gamma_draw(r, a + 1.0) * pow(1.0 - u, 1.0 / a);
    }
    double d = a - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x = normal(r), v = 1.0 + c * x;
        if (v <= 0.0)
            continue;
        v = v * v * v;
        double u = 1.0 - fs_uniform(r);
        if (log(u) < 0.5 * x * x + d - d * v + d * log(v))
            return d * v;
    }
}

/* Examples of class c (ascending index) shuffled, then cut by cumulative Dirichlet shares. */
static void split_dirichlet(const pk_split *sp, const int32_t *cls, size_t n, int n_dev,
                            uint64_t seed, int32_t *dev, int32_t *tmp, double *share)
{
    int32_t n_cls = 0;
    for (size_t i = 0; i < n; i++)
        n_cls = cls[i] + 1 > n_cls ? cls[i] + 1 : n_cls;
    for (int32_t c = 0; c < n_cls; c++) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            if (cls[i] == c)
                tmp[m++] = (int32_t)i;
        fs_rng r = fs_rng_make(seed, 0x5d1c, (uint64_t)c);
        fs_shuffle(&r, tmp, m);
        double tot = 0.0;
        for (int j = 0; j < n_dev; j++)
            tot += share[j] = gamma_draw(&r, sp->alpha);
        double cum = 0.0;
        size_t at = 0;
        for (int j = 0; j < n_dev; j++) {
            cum += share[j];
            size_t to = j == n_dev - 1 ? m : (size_t)floor(cum / tot * (double)m + 0.5);
            for (; at < to && at < m; at++)
                dev[tmp[at]] = j;
        }
    }
}

/* Shuffled, stably grouped by class, cut into n_dev * K shards dealt at random. */
static void split_shards(const pk_split *sp, const int32_t *cls, size_t n, int n_dev, uint64_t seed,
                         int32_t *dev, int32_t *tmp)
{
    fs_rng r = fs_rng_make(seed, 0x54a7d, 0);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        tmp[i] = (int32_t)i;
    fs_shuffle(&r, tmp, n);
    int32_t *order = tmp + n;
    int32_t n_cls = 0;
    for (size_t i = 0; i < n; i++)
        n_cls = cls[i] + 1 > n_cls ? cls[i] + 1 : n_cls;
    for (int32_t c = 0; c < n_cls; c++) /* counting sort keeps the shuffled order per class */
        for (size_t i = 0; i < n; i++)
            if (cls[tmp[i]] == c)
                order[m++] = tmp[i];
    size_t S = (size_t)n_dev * (size_t)sp->shards;
    int32_t *owner = malloc(S * sizeof *owner);
    if (!owner)
        return; /* the caller's fix-up then deals round-robin */
    for (size_t s = 0; s < S; s++)
        owner[s] = (int32_t)(s / (size_t)sp->shards);
    fs_shuffle(&r, owner, S);
    for (size_t i = 0; i < m; i++)
        dev[order[i]] = owner[i * S / m];
    free(owner);
}

/* Every device gets >= 1 example: an empty device takes one from the currently largest. */
static void fill_empty(size_t n, int n_dev, int32_t *dev)
{
    size_t *cnt = calloc((size_t)n_dev, sizeof *cnt);
    if (!cnt) {
        for (size_t i = 0; i < n; i++)
            dev[i] = (int32_t)(i % (size_t)n_dev);
        return;
    }
    for (size_t i = 0; i < n; i++)
        cnt[dev[i]]++;
    for (int j = 0; j < n_dev; j++) {
        if (cnt[j] > 0)
            continue;
        int big = 0;
        for (int k = 1; k < n_dev; k++)
            big = cnt[k] > cnt[big] ? k : big;
        for (size_t i = n; i-- > 0;) /* its last example */
            if (dev[i] == big) {
                dev[i] = j;
                cnt[big]--;
                cnt[j]++;
                break;
            }
    }
    free(cnt);
}

pk_status pk_fedsim_split(const pk_split *sp, const int32_t *cls, size_t n, int n_dev,
                          uint64_t seed, int32_t *dev, char *err, size_t errlen)
{
    if (n_dev < 1 || n < (size_t)n_dev) {
        pk_seterr(err, errlen, "%d devices need at least %d examples, the dataset has %zu", n_dev,
                  n_dev, n);
        return PK_ERR_ARG;
    }
    int32_t *tmp = malloc(2 * n * sizeof *tmp);
    double *share = malloc((size_t)n_dev * sizeof *share);
    if (!tmp || !share) {
        free(tmp);
        free(share);
        return PK_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++)
        tmp[i] = (int32_t)i;
    if (sp->kind == PK_SPLIT_IID) {
        fs_rng r = fs_rng_make(seed, 0x11d, 0);
        fs_shuffle(&r, tmp, n);
        for (size_t i = 0; i < n; i++)
            dev[tmp[i]] = (int32_t)(i % (size_t)n_dev);
    } else if (sp->kind == PK_SPLIT_DIRICHLET) {
        split_dirichlet(sp, cls, n, n_dev, seed, dev, tmp, share);
    } else {
        for (size_t i = 0; i < n; i++)
            dev[i] = (int32_t)(i % (size_t)n_dev); /* overwritten unless out of memory */
        split_shards(sp, cls, n, n_dev, seed, dev, tmp);
    }
    fill_empty(n, n_dev, dev);
    free(tmp);
    free(share);
    return PK_OK;
}
