/* verify.c: no update lost or counted twice. Recomputes every global log entry of a simulation
 * from the devices' own records (what each device uploaded, written by device.c) with the
 * coordinator's aggregation rule (PROTOCOL 6: the example-weighted mean of the per-seed sums,
 * in double, rounded once; uploads taken in device id order) and compares it with what the
 * coordinator serves at GET /v1/log. Independent of the coordinator's code: only the protocol. */
#include "fedsim_impl.h"
#include "pk_crypto.h"
#include "pk_fedsim.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_K     65536
#define MAX_PAIRS 65536

typedef struct rec {
    int64_t round, examples;
    char device_id[32];
    uint8_t *packed; /* owned */
    size_t n;        /* pairs */
    int inexact;     /* 1: DP noise was added after the device recorded its sums (a record of an
                        older device; records marked as_uploaded hold the noised values) */
} rec;

typedef struct recs {
    rec *v;
    size_t n, cap;
} recs;

static pk_status decode_pairs(const char *b64, uint8_t **out, size_t *n)
{
    size_t len = strlen(b64), cap = len / 4 * 3 + 3, got = 0;
    *out = malloc(cap + 1);
    if (!*out)
        return PK_ERR_NOMEM;
    pk_status st = pk_base64_decode(b64, len, *out, cap, &got);
    if (st == PK_OK && got % FS_PAIR_BYTES != 0)
        st = PK_ERR_FORMAT;
    *n = got / FS_PAIR_BYTES;
    return st;
}

static pk_status add_line(recs *r, const char *line, int64_t lo, int64_t hi)
{
    cJSON *j = cJSON_Parse(line);
    const cJSON *rd = cJSON_GetObjectItemCaseSensitive(j, "round");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "device_id");
    const cJSON *ex = cJSON_GetObjectItemCaseSensitive(j, "examples");
    const cJSON *pr = cJSON_GetObjectItemCaseSensitive(j, "pairs");
    pk_status st = PK_OK;
    if (!cJSON_IsNumber(rd) || !cJSON_IsString(id) || !cJSON_IsNumber(ex) || !cJSON_IsString(pr))
        st = PK_ERR_FORMAT;
    else if (rd->valuedouble >= (double)lo && rd->valuedouble <= (double)hi) {
        rec *nv = pk_grow(r->v, &r->cap, r->n + 1, sizeof *nv, 64);
        if (!nv) {
            cJSON_Delete(j);
            return PK_ERR_NOMEM;
        }
        r->v = nv;
        rec *x = &r->v[r->n];
        memset(x, 0, sizeof *x);
        x->round = (int64_t)rd->valuedouble;
        x->examples = (int64_t)ex->valuedouble;
        snprintf(x->device_id, sizeof x->device_id, "%s", id->valuestring);
        x->inexact = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "dp_noise")) &&
                     !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "as_uploaded"));
        st = decode_pairs(pr->valuestring, &x->packed, &x->n);
        if (st == PK_OK)
            r->n++;
        else
            free(x->packed);
    }
    cJSON_Delete(j);
    return st;
}

static pk_status read_records(recs *r, const char *const *paths, size_t n, int64_t lo, int64_t hi,
                              char *err, size_t errlen)
{
    char line[1 << 16];
    for (size_t i = 0; i < n; i++) {
        FILE *f = fopen(paths[i], "r");
        int64_t ln = 0;
        while (f && fgets(line, sizeof line, f)) {
            ln++;
            pk_status st = add_line(r, line, lo, hi);
            if (st != PK_OK) {
                pk_seterr(err, errlen, "%s:%lld: not a device record", paths[i], (long long)ln);
                fclose(f);
                return st;
            }
        }
        if (f)
            fclose(f);
    }
    return PK_OK;
}

static int by_round_device(const void *a, const void *b)
{
    const rec *x = a, *y = b;
    if (x->round != y->round)
        return x->round < y->round ? -1 : 1;
    return strcmp(x->device_id, y->device_id);
}

/* The entry recomputed from records [v, v + m) of one round: packed pairs into out. */
static size_t recompute(const rec *v, size_t m, double *acc, uint8_t *out, int64_t *examples)
{
    double den = 0.0;
    memset(acc, 0, MAX_K * sizeof *acc);
    for (size_t i = 0; i < m; i++) {
        for (size_t j = 0; j < v[i].n; j++) {
            const uint8_t *p = v[i].packed + j * FS_PAIR_BYTES;
            uint32_t k = (uint32_t)p[0] | (uint32_t)p[1] << 8, bits = pk_get_le32(p + 2);
            float f;
            memcpy(&f, &bits, 4);
            acc[k] += (double)v[i].examples * (double)f;
        }
        den += (double)v[i].examples;
    }
    *examples = (int64_t)den;
    size_t n = 0;
    for (uint32_t k = 0; k < MAX_K && den > 0.0; k++) {
        float c = (float)(acc[k] / den);
        if (c == 0.0f)
            continue;
        uint32_t bits;
        memcpy(&bits, &c, 4);
        out[n * FS_PAIR_BYTES] = (uint8_t)(k & 0xff);
        out[n * FS_PAIR_BYTES + 1] = (uint8_t)(k >> 8);
        pk_put_le32(out + n * FS_PAIR_BYTES + 2, bits);
        n++;
    }
    return n;
}

static void mismatch(pk_fedsim_check *c, const char *fmt, ...) PK_PRINTF(2, 3);
static void mismatch(pk_fedsim_check *c, const char *fmt, ...)
{
    va_list ap;
    if (c->first[0] == '\0') {
        va_start(ap, fmt);
        vsnprintf(c->first, sizeof c->first, fmt, ap);
        va_end(ap);
    }
    c->mismatches++;
}

/* Compares one log entry (JSON) with the records of its round. */
static pk_status check_entry(const cJSON *e, const rec *v, size_t m, double *acc, uint8_t *buf,
                             pk_fedsim_check *c)
{
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(e, "version");
    const cJSON *up = cJSON_GetObjectItemCaseSensitive(e, "uploads");
    const cJSON *ex = cJSON_GetObjectItemCaseSensitive(e, "examples");
    const cJSON *pr = cJSON_GetObjectItemCaseSensitive(e, "updates");
    if (!cJSON_IsNumber(ver) || !cJSON_IsNumber(up) || !cJSON_IsNumber(ex) || !cJSON_IsString(pr))
        return PK_ERR_FORMAT;
    int64_t version = (int64_t)ver->valuedouble, examples = 0;
    uint8_t *served = NULL;
    size_t n_served = 0;
    pk_status st = decode_pairs(pr->valuestring, &served, &n_served);
    if (st != PK_OK) {
        free(served);
        return st;
    }
    size_t n = recompute(v, m, acc, buf, &examples);
    int inexact = 0;
    for (size_t i = 0; i < m; i++)
        inexact |= v[i].inexact;
    c->values = c->values && !inexact;
    if ((int64_t)up->valuedouble != (int64_t)m)
        mismatch(c, "log entry %lld: %lld uploads, the devices recorded %lld", (long long)version,
                 (long long)up->valuedouble, (long long)m);
    else if ((int64_t)ex->valuedouble != examples)
        mismatch(c, "log entry %lld: %lld examples, the devices recorded %lld", (long long)version,
                 (long long)ex->valuedouble, (long long)examples);
    else if (!inexact && (n != n_served || memcmp(buf, served, n * FS_PAIR_BYTES) != 0))
        mismatch(c, "log entry %lld: %lld coefficients differ from the %lld recomputed",
                 (long long)version, (long long)n_served, (long long)n);
    c->entries++;
    free(served);
    return PK_OK;
}

/* GET /v1/log from `since`, parsed; *more says whether entries beyond these exist. */
static pk_status fetch_log(pk_http *h, int64_t since, cJSON **out, char *err, size_t errlen)
{
    char path[96], *resp = NULL;
    long status = 0;
    snprintf(path, sizeof path, "/v1/log?since=%lld&limit=256", (long long)since);
    pk_status st =
        pk_http_request(h, "GET", path, NULL, 0, PK_HTTP_JSON, &status, &resp, NULL, err, errlen);
    if (st == PK_OK && status != 200) {
        pk_seterr(err, errlen, "GET %s: HTTP %ld", path, status);
        st = PK_ERR_HTTP;
    }
    *out = st == PK_OK ? cJSON_Parse(resp) : NULL;
    free(resp);
    if (st == PK_OK && !*out) {
        pk_seterr(err, errlen, "GET %s: not JSON", path);
        st = PK_ERR_FORMAT;
    }
    return st;
}

static pk_status compare(pk_http *h, const recs *r, int64_t lo, int64_t hi, pk_fedsim_check *c,
                         char *err, size_t errlen)
{
    double *acc = malloc(MAX_K * sizeof *acc);
    uint8_t *buf = malloc((size_t)MAX_PAIRS * FS_PAIR_BYTES);
    pk_status st = acc && buf ? PK_OK : PK_ERR_NOMEM;
    size_t at = 0;
    for (int64_t since = lo - 1; st == PK_OK && since < hi;) {
        cJSON *j = NULL;
        st = fetch_log(h, since, &j, err, errlen);
        const cJSON *es = cJSON_GetObjectItemCaseSensitive(j, "entries"), *e;
        int64_t before = since;
        cJSON_ArrayForEach(e, es)
        {
            const cJSON *ver = cJSON_GetObjectItemCaseSensitive(e, "version");
            int64_t v = cJSON_IsNumber(ver) ? (int64_t)ver->valuedouble : -1;
            if (st != PK_OK || v <= since || v > hi)
                continue;
            size_t m = 0;
            while (at < r->n && r->v[at].round < v)
                at++; /* records of a round without a log entry are caught by the count */
            while (at + m < r->n && r->v[at + m].round == v)
                m++;
            st = check_entry(e, r->v + at, m, acc, buf, c);
            since = v;
        }
        cJSON_Delete(j);
        if (st == PK_OK && since == before) {
            pk_seterr(err, errlen, "the coordinator's log ends at version %lld, before %lld",
                      (long long)since, (long long)hi);
            st = PK_ERR_FORMAT;
        }
    }
    free(acc);
    free(buf);
    return st;
}

pk_status pk_fedsim_verify_log(const char *url, const char *const *records, size_t n,
                               int64_t first_round, int64_t last_round, pk_fedsim_check *check,
                               char *err, size_t errlen)
{
    recs r = {NULL, 0, 0};
    pk_http *h = NULL;
    memset(check, 0, sizeof *check);
    check->values = 1;
    pk_status st = read_records(&r, records, n, first_round, last_round, err, errlen);
    check->records = (int64_t)r.n;
    if (st == PK_OK && r.n)
        qsort(r.v, r.n, sizeof *r.v, by_round_device);
    if (st == PK_OK)
        st = pk_http_create(url, pk_http_default_params(), &h, err, errlen);
    if (st == PK_OK)
        st = compare(h, &r, first_round, last_round, check, err, errlen);
    pk_http_destroy(h);
    for (size_t i = 0; i < r.n; i++)
        free(r.v[i].packed);
    free(r.v);
    return st;
}
