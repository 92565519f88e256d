/* faults.c: --faults SPEC (docs/PROTOCOL.md section 10): parse, and draw each request's faults
 * from a counter-based RNG (splitmix64 of seed and request number), so a seed replays. */
#include "server_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double unit(uint64_t x)
{
    return (double)(x >> 11) * (1.0 / 9007199254740992.0);
}

static int parse_prob(const char *v, double *p)
{
    char *end = NULL;
    *p = strtod(v, &end);
    return end != v && *p >= 0.0 && *p <= 1.0 && (*end == '\0' || *end == ':');
}

static int parse_item(char *item, srv_faults *f)
{
    char *eq = strchr(item, '=');
    if (!eq)
        return 0;
    *eq = '\0';
    const char *k = item, *v = eq + 1;
    char *end = NULL;
    if (strcmp(k, "delay") == 0) {
        const char *colon = strchr(v, ':');
        if (!parse_prob(v, &f->delay_p) || !colon)
            return 0;
        f->delay_ms = strtod(colon + 1, &end);
        if (end == colon + 1 || f->delay_ms < 0 || f->delay_ms > 60000)
            return 0;
        if (strcmp(end, "s") == 0)
            f->delay_ms *= 1000.0;
        else if (strcmp(end, "ms") != 0 && *end != '\0')
            return 0;
        return f->delay_ms <= 60000;
    }
    if (strcmp(k, "drop") == 0)
        return parse_prob(v, &f->drop_p) && !strchr(v, ':');
    if (strcmp(k, "5xx") == 0)
        return parse_prob(v, &f->err_p) && !strchr(v, ':');
    if (strcmp(k, "truncate") == 0)
        return parse_prob(v, &f->trunc_p) && !strchr(v, ':');
    if (strcmp(k, "seed") == 0) {
        f->seed = strtoull(v, &end, 10);
        return end != v && *end == '\0';
    }
    return 0;
}

pk_status srv_faults_parse(const char *spec, srv_faults *f, char *err, size_t errlen)
{
    f->delay_p = f->delay_ms = f->drop_p = f->err_p = f->trunc_p = 0.0;
    f->seed = 1;
    atomic_init(&f->counter, 0);
    char *copy = strdup(spec);
    if (!copy)
        return PK_ERR_NOMEM;
    pk_status st = PK_OK;
    char *save = NULL;
    for (char *it = strtok_r(copy, ",", &save); it; it = strtok_r(NULL, ",", &save)) {
        char shown[64];
        snprintf(shown, sizeof shown, "%s", it);
        if (!parse_item(it, f)) {
            snprintf(err, errlen,
                     "--faults: bad item \"%s\" (want delay=P:MSms, drop=P, 5xx=P, "
                     "truncate=P, seed=N with P in [0,1])",
                     shown);
            st = PK_ERR_ARG;
            break;
        }
    }
    free(copy);
    if (st == PK_OK && f->drop_p + f->err_p + f->trunc_p > 1.0) {
        snprintf(err, errlen, "--faults: drop + 5xx + truncate probabilities exceed 1");
        st = PK_ERR_ARG;
    }
    return st;
}

srv_fault srv_faults_draw(srv_faults *f, double *delay_ms)
{
    uint64_t n = atomic_fetch_add(&f->counter, 1);
    uint64_t base = pk_splitmix64(f->seed ^ pk_splitmix64(n));
    *delay_ms = unit(pk_splitmix64(base + 1)) < f->delay_p ? f->delay_ms : 0.0;
    double u = unit(pk_splitmix64(base + 2));
    if (u < f->err_p)
        return SRV_FAULT_5XX;
    if (u < f->err_p + f->drop_p)
        return SRV_FAULT_DROP;
    if (u < f->err_p + f->drop_p + f->trunc_p)
        return SRV_FAULT_TRUNCATE;
    return SRV_FAULT_NONE;
}
