/* sync.c: the federated round of the agent (DESIGN 7, docs/PROTOCOL.md, docs/SYNC.md):
 * registration, the task and its seed pool, local MeZO steps through the caller's model ops,
 * the signed sparse upload through the store's outbox, and the hash-chained global log, checked
 * and replayed. Only seeds (pool indices), scalars, counts and signatures leave the device.
 * HTTP mechanics live in http.c, the privacy accountant in dp.c, weights behind the ops. */
#include "pk_store.h"
#include "pk_net.h"

#include <cJSON.h>
#include <math.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define POOL_MAX 65535
#define ID_MAX   64

typedef struct task {
    char id[ID_MAX + 1];
    char base_hash[129];
    int64_t K; /* pool size */
    uint8_t pool_seed[32];
    pk_z_kind kind;
    float lr, eps;
    int64_t local_steps;
    double max_abs_g;
    int64_t max_examples;
    double dp_clip, dp_noise;
    char trainable[64];  /* the task's trainable subset name ("" if not given) */
    int64_t round;       /* the open round */
    int64_t log_version; /* newest log entry on the coordinator */
    uint64_t *seeds;     /* [K] the pool */
} task;

typedef struct sess {
    pk_store *s;
    const pk_sync_params *p;
    const pk_sync_model_ops *ops;
    pk_http *h;
    char *err;
    size_t errlen;
    char device_id[24];
    task t;
    pk_sync_report *rep;
    int64_t have_version; /* log entries verified and stored locally */
    uint8_t have_hash[32];
} sess;

typedef struct pair {
    uint32_t k;
    float v;
} pair;

static pk_status fail(sess *x, pk_status st, const char *fmt, ...) PK_PRINTF(3, 4);
static pk_status fail(sess *x, pk_status st, const char *fmt, ...)
{
    if (x->err && x->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(x->err, x->errlen, fmt, ap);
        va_end(ap);
    }
    return st;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void to_hex(const uint8_t *b, size_t n, char *out)
{
    sodium_bin2hex(out, 2 * n + 1, b, n);
}

static int from_hex(const char *hex, uint8_t *out, size_t n)
{
    size_t got = 0;
    if (strlen(hex) != 2 * n)
        return -1;
    if (sodium_hex2bin(out, n, hex, 2 * n, NULL, &got, NULL) != 0 || got != n)
        return -1;
    return 0;
}

uint64_t pk_sync_pool_seed(const uint8_t pool_seed[32], uint32_t k)
{
    uint8_t in[36], h[32];
    memcpy(in, pool_seed, 32);
    put_u32(in + 32, k);
    crypto_generichash(h, sizeof h, in, sizeof in, NULL, 0);
    uint64_t s = 0;
    for (int i = 7; i >= 0; i--)
        s = s << 8 | h[i];
    return s;
}

pk_sync_params pk_sync_default_params(void)
{
    pk_sync_params p = {
        .server = NULL,
        .task_id = NULL,
        .dp_delta = 1e-5,
        .wait_s = 60.0,
        .upload = 1,
        .http = pk_http_default_params(),
    };
    return p;
}

/* ---- packed updates (PROTOCOL 3) ----------------------------------------------------------- */

/* pairs -> n x (u16le k || f32le v); *out owned (free()). */
static pk_status pack_pairs(const pair *pr, size_t n, uint8_t **out)
{
    *out = malloc(n * 6 + 1);
    if (!*out)
        return PK_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &pr[i].v, 4);
        (*out)[6 * i] = (uint8_t)(pr[i].k & 0xff);
        (*out)[6 * i + 1] = (uint8_t)(pr[i].k >> 8);
        put_u32(*out + 6 * i + 2, bits);
    }
    return PK_OK;
}

/* base64 -> validated pairs (ascending k < K, finite values). *raw (may be NULL) gets the packed
 * bytes (owned). */
static pk_status unpack_b64(const char *b64, int64_t K, pair **out, size_t *n, uint8_t **raw,
                            size_t *raw_len)
{
    size_t len = strlen(b64), got = 0;
    uint8_t *bin = malloc(len / 4 * 3 + 3);
    pair *pr = NULL;
    pk_status st = PK_ERR_FORMAT;
    if (!bin)
        return PK_ERR_NOMEM;
    if (len && sodium_base642bin(bin, len / 4 * 3 + 3, b64, len, NULL, &got, NULL,
                                 sodium_base64_VARIANT_ORIGINAL) != 0)
        goto out;
    if (got % 6 != 0)
        goto out;
    pr = malloc((got / 6 + 1) * sizeof *pr);
    if (!pr) {
        st = PK_ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < got / 6; i++) {
        uint32_t bits = get_u32(bin + 6 * i + 2);
        pr[i].k = (uint32_t)bin[6 * i] | (uint32_t)bin[6 * i + 1] << 8;
        memcpy(&pr[i].v, &bits, 4);
        if ((int64_t)pr[i].k >= K || !isfinite(pr[i].v) || (i > 0 && pr[i].k <= pr[i - 1].k))
            goto out;
    }
    *out = pr;
    pr = NULL;
    *n = got / 6;
    if (raw) {
        *raw = bin;
        *raw_len = got;
        bin = NULL;
    }
    st = PK_OK;
out:
    free(pr);
    free(bin);
    return st;
}

static char *b64_encode(const uint8_t *b, size_t n)
{
    size_t cap = sodium_base64_encoded_len(n, sodium_base64_VARIANT_ORIGINAL);
    char *s = malloc(cap);
    if (s)
        sodium_bin2base64(s, cap, b, n, sodium_base64_VARIANT_ORIGINAL);
    return s;
}

/* ---- canonical encodings (PROTOCOL 5 and 6) ------------------------------------------------ */

static size_t put_str(uint8_t *p, const char *s)
{
    size_t n = strlen(s);
    put_u32(p, (uint32_t)n);
    memcpy(p + 4, s, n);
    return 4 + n;
}

/* The signed upload message; *out owned. */
static pk_status upload_msg(const char *task_id, int64_t round, const char *device_id,
                            const char *idem, int64_t examples, const uint8_t *packed, size_t plen,
                            uint8_t **out, size_t *out_len)
{
    static const char tag[] = "pocketllm-upload-v1";
    size_t cap =
        19 + 4 + strlen(task_id) + 8 + 4 + strlen(device_id) + 4 + strlen(idem) + 8 + 4 + plen;
    uint8_t *m = malloc(cap), *p = m;
    if (!m)
        return PK_ERR_NOMEM;
    memcpy(p, tag, 19);
    p += 19;
    p += put_str(p, task_id);
    put_u64(p, (uint64_t)round);
    p += 8;
    p += put_str(p, device_id);
    p += put_str(p, idem);
    put_u64(p, (uint64_t)examples);
    p += 8;
    put_u32(p, (uint32_t)(plen / 6));
    p += 4;
    if (plen)
        memcpy(p, packed, plen);
    p += plen;
    *out = m;
    *out_len = (size_t)(p - m);
    return PK_OK;
}

/* hash_v = BLAKE2b-256(prev || entry_v). */
static pk_status entry_hash(const char *task_id, int64_t v, float lr, int64_t uploads,
                            int64_t examples, const uint8_t *packed, size_t plen,
                            const uint8_t prev[32], uint8_t out[32])
{
    static const char tag[] = "pocketllm-log-v1";
    size_t cap = 32 + 16 + 4 + strlen(task_id) + 8 + 4 + 4 + 8 + 4 + plen;
    uint8_t *m = malloc(cap), *p = m;
    uint32_t lrbits;
    if (!m)
        return PK_ERR_NOMEM;
    memcpy(p, prev, 32);
    p += 32;
    memcpy(p, tag, 16);
    p += 16;
    p += put_str(p, task_id);
    put_u64(p, (uint64_t)v);
    p += 8;
    memcpy(&lrbits, &lr, 4);
    put_u32(p, lrbits);
    p += 4;
    put_u32(p, (uint32_t)uploads);
    p += 4;
    put_u64(p, (uint64_t)examples);
    p += 8;
    put_u32(p, (uint32_t)(plen / 6));
    p += 4;
    if (plen)
        memcpy(p, packed, plen);
    p += plen;
    crypto_generichash(out, 32, m, (size_t)(p - m), NULL, 0);
    free(m);
    return PK_OK;
}

/* ---- JSON and HTTP helpers ------------------------------------------------------------------ */

static const char *jstr(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* A finite number field; integral and within [lo, hi] when integral != 0. */
static int jnum(const cJSON *o, const char *key, int integral, double lo, double hi, double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return -1;
    double d = v->valuedouble;
    if (integral && d != floor(d))
        return -1;
    if (d < lo || d > hi)
        return -1;
    *out = d;
    return 0;
}

/* One request; *json owned (cJSON_Delete). A 4xx/5xx answer is PK_OK with *status set; the
 * error code (if any) goes to code[64]. */
static pk_status call(sess *x, const char *method, const char *path, const char *body, long *status,
                      cJSON **json, char code[64])
{
    char *resp = NULL;
    size_t n = 0;
    *json = NULL;
    code[0] = '\0';
    pk_status st = pk_http_request(x->h, method, path, body, body ? strlen(body) : 0, PK_HTTP_JSON,
                                   status, &resp, &n);
    if (st != PK_OK)
        return fail(x, st, "coordinator %s: %s", x->p->server, pk_http_errmsg(x->h));
    *json = cJSON_ParseWithLength(resp, n);
    free(resp);
    if (!*json)
        return fail(x, PK_ERR_FORMAT, "%s %s: HTTP %ld with a body that is not JSON", method, path,
                    *status);
    if (*status >= 400) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(*json, "error");
        const char *c = jstr(e, "code"), *m = jstr(e, "message");
        snprintf(code, 64, "%s", c ? c : "unknown");
        fail(x, PK_ERR_HTTP, "%s %s: HTTP %ld %s: %s", method, path, *status, code,
             m ? m : "(no message)");
    }
    return PK_OK;
}

/* ---- sync state (store key/value, not secret) ---------------------------------------------- */

static pk_status state_get(sess *x, const char *key, char **val)
{
    pk_status st = pk_store_state_get(x->s, key, val);
    if (st != PK_OK && st != PK_ERR_NOTFOUND)
        return fail(x, st, "store: reading %s: %s", key, pk_store_errmsg(x->s));
    return st;
}

static pk_status state_set(sess *x, const char *key, const char *val)
{
    pk_status st = pk_store_state_set(x->s, key, val);
    if (st != PK_OK)
        return fail(x, st, "store: writing %s: %s", key, pk_store_errmsg(x->s));
    return PK_OK;
}

static void task_key(const sess *x, const char *what, char *out, size_t n)
{
    snprintf(out, n, "sync.%s.%s", x->t.id, what);
}

/* ---- registration ---------------------------------------------------------------------------- */

static pk_status do_register(sess *x)
{
    uint8_t pk[32], h[32];
    char pkhex[65], want[24], body[128], code[64];
    char *srv = NULL, *did = NULL;
    cJSON *j = NULL;
    long status = 0;
    pk_status st = pk_store_identity_public(x->s, pk);
    if (st != PK_OK)
        return fail(x, st, "store: device identity: %s", pk_store_errmsg(x->s));
    crypto_generichash(h, sizeof h, pk, sizeof pk, NULL, 0);
    want[0] = 'd';
    to_hex(h, 8, want + 1);
    snprintf(x->device_id, sizeof x->device_id, "%s", want);
    st = state_get(x, "sync.server", &srv);
    if (st == PK_OK)
        st = state_get(x, "sync.device_id", &did);
    if (st == PK_OK && !strcmp(srv, x->p->server) && !strcmp(did, want))
        goto out; /* registered with this coordinator before */
    if (st != PK_OK && st != PK_ERR_NOTFOUND)
        goto out;
    to_hex(pk, 32, pkhex);
    snprintf(body, sizeof body, "{\"public_key\":\"%s\"}", pkhex);
    st = call(x, "POST", "/v1/devices", body, &status, &j, code);
    if (st != PK_OK)
        goto out;
    if (status != 200 && status != 201) {
        st = PK_ERR_HTTP;
        goto out;
    }
    const char *got = jstr(j, "device_id");
    if (!got || strcmp(got, want) != 0) {
        st = fail(x, PK_ERR_FORMAT, "register: the coordinator answered device id %s, expected %s",
                  got ? got : "(none)", want);
        goto out;
    }
    st = state_set(x, "sync.device_id", want);
    if (st == PK_OK)
        st = state_set(x, "sync.server", x->p->server);
out:
    cJSON_Delete(j);
    free(srv);
    free(did);
    return st;
}

/* ---- the task -------------------------------------------------------------------------------- */

static int valid_id(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static pk_status parse_task(sess *x, const cJSON *j)
{
    task *t = &x->t;
    const char *id = jstr(j, "task_id"), *bh = jstr(j, "base_model_hash");
    const char *ps = jstr(j, "pool_seed"), *zk = jstr(j, "z_kind");
    double K, lr, eps, steps, round, lv, mag = 1e6, mex = 1e6;
    if (!id || !valid_id(id))
        return fail(x, PK_ERR_FORMAT, "task: missing or bad task_id");
    if (!bh || strlen(bh) < 1 || strlen(bh) > 128)
        return fail(x, PK_ERR_FORMAT, "task: missing or bad base_model_hash");
    if (!ps || from_hex(ps, t->pool_seed, 32) != 0)
        return fail(x, PK_ERR_FORMAT, "task: pool_seed must be 64 hex characters");
    if (jnum(j, "pool_size", 1, 1, POOL_MAX, &K) || jnum(j, "lr", 0, -1e9, 1e9, &lr) ||
        jnum(j, "eps", 0, 1e-30, 1e9, &eps) || jnum(j, "local_steps", 1, 0, 1e7, &steps) ||
        jnum(j, "round", 1, 1, 9e15, &round) || jnum(j, "log_version", 1, 0, 9e15, &lv))
        return fail(x, PK_ERR_FORMAT,
                    "task: pool_size, lr, eps, local_steps, round and log_version must be "
                    "numbers in range");
    if (cJSON_HasObjectItem(j, "max_abs_g") && jnum(j, "max_abs_g", 0, 0, 1e38, &mag))
        return fail(x, PK_ERR_FORMAT, "task: bad max_abs_g");
    if (cJSON_HasObjectItem(j, "max_examples") && jnum(j, "max_examples", 1, 1, 9e15, &mex))
        return fail(x, PK_ERR_FORMAT, "task: bad max_examples");
    const char *pd = jstr(j, "pool_derivation");
    if (pd && strcmp(pd, "blake2b256-u32le-v1") != 0)
        return fail(x, PK_ERR_UNSUPPORTED, "task: unknown pool_derivation %s", pd);
    if (zk && strcmp(zk, "gaussian") && strcmp(zk, "rademacher"))
        return fail(x, PK_ERR_UNSUPPORTED, "task: unknown z_kind %s", zk);
    const cJSON *priv = cJSON_GetObjectItemCaseSensitive(j, "privacy");
    double clip = 0, noise = 0;
    if (priv &&
        (jnum(priv, "dp_clip", 0, 0, 1e30, &clip) || jnum(priv, "dp_noise", 0, 0, 1e30, &noise)))
        return fail(x, PK_ERR_FORMAT, "task: bad privacy.dp_clip / dp_noise");
    const char *tr = jstr(j, "trainable");
    if (tr && strlen(tr) >= sizeof t->trainable)
        return fail(x, PK_ERR_FORMAT, "task: trainable is too long");
    snprintf(t->trainable, sizeof t->trainable, "%s", tr ? tr : "");
    snprintf(t->id, sizeof t->id, "%s", id);
    snprintf(t->base_hash, sizeof t->base_hash, "%s", bh);
    t->K = (int64_t)K;
    t->kind = (zk && !strcmp(zk, "rademacher")) ? PK_Z_RADEMACHER : PK_Z_GAUSSIAN;
    t->lr = (float)lr;
    t->eps = (float)eps;
    t->local_steps = (int64_t)steps;
    t->max_abs_g = mag;
    t->max_examples = (int64_t)mex;
    t->dp_clip = clip;
    t->dp_noise = noise;
    t->round = (int64_t)round;
    t->log_version = (int64_t)lv;
    return PK_OK;
}

static pk_status fetch_task(sess *x)
{
    char path[128], code[64];
    cJSON *j = NULL;
    long status = 0;
    if (x->p->task_id)
        snprintf(path, sizeof path, "/v1/tasks/%s", x->p->task_id);
    else
        snprintf(path, sizeof path, "/v1/task");
    pk_status st = call(x, "GET", path, NULL, &status, &j, code);
    if (st == PK_OK && status == 404)
        st = fail(x, PK_ERR_NOTFOUND, "the coordinator %s has no task %s", x->p->server,
                  x->p->task_id ? x->p->task_id : "");
    else if (st == PK_OK && status != 200)
        st = PK_ERR_HTTP;
    if (st == PK_OK)
        st = parse_task(x, j);
    cJSON_Delete(j);
    if (st != PK_OK)
        return st;
    if (x->p->task_id && strcmp(x->p->task_id, x->t.id) != 0)
        return fail(x, PK_ERR_FORMAT, "asked for task %s, the coordinator answered %s",
                    x->p->task_id, x->t.id);
    free(x->t.seeds);
    x->t.seeds = malloc((size_t)x->t.K * sizeof *x->t.seeds);
    if (!x->t.seeds)
        return PK_ERR_NOMEM;
    for (int64_t k = 0; k < x->t.K; k++)
        x->t.seeds[k] = pk_sync_pool_seed(x->t.pool_seed, (uint32_t)k);
    return PK_OK;
}

/* ---- the global log ------------------------------------------------------------------------ */

/* "<version>:<hash hex>" of the newest verified entry, one value so it changes atomically. */
static pk_status load_head(sess *x)
{
    char key[128], *v = NULL;
    task_key(x, "log_head", key, sizeof key);
    x->have_version = 0;
    memset(x->have_hash, 0, 32);
    pk_status st = state_get(x, key, &v);
    if (st == PK_ERR_NOTFOUND)
        return PK_OK;
    if (st != PK_OK)
        return st;
    char *colon = strchr(v, ':');
    long long ver = colon ? strtoll(v, NULL, 10) : -1;
    if (!colon || ver < 0 || from_hex(colon + 1, x->have_hash, 32) != 0)
        st = fail(x, PK_ERR_FORMAT, "store: corrupt sync state %s", key);
    else
        x->have_version = ver;
    free(v);
    return st;
}

static pk_status save_head(sess *x)
{
    char key[128], val[96], hex[65];
    task_key(x, "log_head", key, sizeof key);
    to_hex(x->have_hash, 32, hex);
    snprintf(val, sizeof val, "%lld:%s", (long long)x->have_version, hex);
    return state_set(x, key, val);
}

/* Checks one entry against the chain and stores it; advances have_version/have_hash. */
static pk_status accept_entry(sess *x, const cJSON *e)
{
    double v, lr, up, ex;
    const char *b64 = jstr(e, "updates"), *prev = jstr(e, "prev_hash"), *hash = jstr(e, "hash");
    uint8_t prevb[32], hashb[32], mine[32];
    pair *pr = NULL;
    uint8_t *raw = NULL;
    size_t n = 0, rlen = 0;
    char key[160], *val = NULL, lrhex[16];
    if (jnum(e, "version", 1, 1, 9e15, &v) || jnum(e, "lr", 0, -1e30, 1e30, &lr) ||
        jnum(e, "uploads", 1, 0, 4294967295.0, &up) || jnum(e, "examples", 1, 0, 9e15, &ex) ||
        !b64 || !prev || !hash || from_hex(prev, prevb, 32) || from_hex(hash, hashb, 32))
        return fail(x, PK_ERR_FORMAT, "log entry after version %lld: missing or bad fields",
                    (long long)x->have_version);
    if ((int64_t)v != x->have_version + 1)
        return fail(x, PK_ERR_AUTH, "log: expected version %lld, got %lld (history rewritten?)",
                    (long long)x->have_version + 1, (long long)v);
    if (sodium_memcmp(prevb, x->have_hash, 32) != 0)
        return fail(x, PK_ERR_AUTH,
                    "log: entry %lld does not chain onto the history this device accepted "
                    "(rewritten history)",
                    (long long)v);
    pk_status st = unpack_b64(b64, x->t.K, &pr, &n, &raw, &rlen);
    if (st != PK_OK) {
        st = fail(x, st == PK_ERR_NOMEM ? st : PK_ERR_FORMAT, "log: entry %lld has bad updates",
                  (long long)v);
        goto out;
    }
    float lrf = (float)lr;
    st = entry_hash(x->t.id, (int64_t)v, lrf, (int64_t)up, (int64_t)ex, raw, rlen, x->have_hash,
                    mine);
    if (st != PK_OK)
        goto out;
    if (sodium_memcmp(mine, hashb, 32) != 0) {
        st = fail(x, PK_ERR_AUTH, "log: entry %lld does not match its hash (tampered entry)",
                  (long long)v);
        goto out;
    }
    uint32_t bits;
    memcpy(&bits, &lrf, 4);
    snprintf(lrhex, sizeof lrhex, "%08x", (unsigned)bits);
    val = malloc(strlen(b64) + 16);
    if (!val) {
        st = PK_ERR_NOMEM;
        goto out;
    }
    sprintf(val, "%s:%s", lrhex, b64);
    snprintf(key, sizeof key, "sync.%s.log.%lld", x->t.id, (long long)v);
    st = state_set(x, key, val);
    if (st != PK_OK)
        goto out;
    x->have_version = (int64_t)v;
    memcpy(x->have_hash, mine, 32);
    st = save_head(x);
out:
    free(val);
    free(raw);
    free(pr);
    return st;
}

/* Downloads and verifies every entry after have_version. */
static pk_status pull_log(sess *x)
{
    for (;;) {
        char path[96], code[64];
        cJSON *j = NULL;
        long status = 0;
        snprintf(path, sizeof path, "/v1/log?since=%lld&limit=256", (long long)x->have_version);
        pk_status st = call(x, "GET", path, NULL, &status, &j, code);
        if (st == PK_OK && status != 200)
            st = PK_ERR_HTTP;
        const cJSON *head = cJSON_GetObjectItemCaseSensitive(j, "head");
        const cJSON *ents = cJSON_GetObjectItemCaseSensitive(j, "entries");
        double hv = 0;
        const char *tid = jstr(j, "task_id");
        if (st == PK_OK && (!tid || strcmp(tid, x->t.id) ||
                            jnum(head, "version", 1, 0, 9e15, &hv) || !cJSON_IsArray(ents)))
            st = fail(x, PK_ERR_FORMAT, "log: malformed answer (task_id, head, entries)");
        if (st == PK_OK && (int64_t)hv < x->have_version)
            st = fail(x, PK_ERR_AUTH,
                      "log: the coordinator's head is version %lld but this device already "
                      "accepted version %lld (rolled-back history refused)",
                      (long long)hv, (long long)x->have_version);
        const cJSON *e;
        int count = 0;
        if (st == PK_OK) {
            cJSON_ArrayForEach(e, ents)
            {
                st = accept_entry(x, e);
                if (st != PK_OK)
                    break;
                count++;
            }
        }
        int more = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "more"));
        cJSON_Delete(j);
        if (st != PK_OK)
            return st;
        if (!more || count == 0)
            return PK_OK;
    }
}

/* Base weights + every stored entry, in version order then ascending k. */
static pk_status replay(sess *x)
{
    pk_status st = x->ops->reset(x->ops->user);
    if (st != PK_OK)
        return fail(x, st, "model: cannot restore the base weights");
    for (int64_t v = 1; v <= x->have_version; v++) {
        char key[160], *val = NULL;
        pair *pr = NULL;
        size_t n = 0;
        snprintf(key, sizeof key, "sync.%s.log.%lld", x->t.id, (long long)v);
        st = state_get(x, key, &val);
        if (st == PK_ERR_NOTFOUND)
            st = fail(x, PK_ERR_FORMAT, "store: global log entry %lld is missing", (long long)v);
        if (st != PK_OK)
            return st;
        unsigned bits = 0;
        char *colon = strchr(val, ':');
        if (!colon || sscanf(val, "%8x", &bits) != 1 ||
            unpack_b64(colon + 1, x->t.K, &pr, &n, NULL, NULL) != PK_OK) {
            free(val);
            return fail(x, PK_ERR_FORMAT, "store: corrupt global log entry %s", key);
        }
        free(val);
        float lr;
        uint32_t b32 = bits;
        memcpy(&lr, &b32, 4);
        for (size_t i = 0; i < n && st == PK_OK; i++)
            st = x->ops->apply(x->ops->user, x->t.seeds[pr[i].k], x->t.kind, lr, pr[i].v);
        free(pr);
        if (st != PK_OK)
            return fail(x, st, "model: replaying global log entry %lld failed", (long long)v);
    }
    return PK_OK;
}

/* ---- uploads and the outbox ------------------------------------------------------------------ */

/* Sends one outbox body until a definitive answer. *accepted: 1 accepted, 0 refused (4xx). */
static pk_status send_upload(sess *x, const char *idem, const char *body, int *accepted,
                             int64_t *round_out)
{
    cJSON *b = cJSON_Parse(body), *j = NULL;
    double r = 0;
    char path[96], code[64], tid[ID_MAX + 1];
    long status = 0;
    *accepted = 0;
    const char *t = jstr(b, "task_id");
    if (!b || jnum(b, "round", 1, 1, 9e15, &r) || !t || !valid_id(t)) {
        cJSON_Delete(b);
        pk_log(PK_LOG_WARN, "sync: dropping malformed outbox entry %s", idem);
        return pk_store_outbox_done(x->s, idem);
    }
    snprintf(tid, sizeof tid, "%s", t); /* the entry's task, not necessarily the current one */
    cJSON_Delete(b);
    *round_out = (int64_t)r;
    snprintf(path, sizeof path, "/v1/rounds/%lld/updates", (long long)r);
    uint64_t before = pk_http_get_stats(x->h).body_up;
    pk_status st = call(x, "POST", path, body, &status, &j, code);
    if (x->rep)
        x->rep->upload_body_bytes += pk_http_get_stats(x->h).body_up - before;
    if (st != PK_OK || status >= 500) {
        cJSON_Delete(j);
        return st != PK_OK ? st : PK_ERR_HTTP; /* stays in the outbox */
    }
    if (status == 200 && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "accepted")))
        *accepted = 1;
    else
        pk_log(PK_LOG_WARN, "sync: upload %s for round %lld refused: HTTP %ld %s", idem,
               (long long)r, status, code);
    cJSON_Delete(j);
    /* definitive (2xx or 4xx): never resend this body */
    st = pk_store_outbox_done(x->s, idem);
    if (st != PK_OK)
        return fail(x, st, "store: outbox: %s", pk_store_errmsg(x->s));
    if (*accepted) {
        char key[128], val[32];
        snprintf(key, sizeof key, "sync.%s.upload_round", tid);
        snprintf(val, sizeof val, "%lld", (long long)r);
        st = state_set(x, key, val);
    }
    return st;
}

/* Sends every pending outbox entry (left by a crash or a network failure). */
static pk_status flush_outbox(sess *x, int64_t *last_round, int *last_accepted)
{
    for (;;) {
        char *idem = NULL, *body = NULL;
        pk_status st = pk_store_outbox_peek(x->s, &idem, &body);
        if (st == PK_ERR_NOTFOUND)
            return PK_OK;
        if (st != PK_OK)
            return fail(x, st, "store: outbox: %s", pk_store_errmsg(x->s));
        st = send_upload(x, idem, body, last_accepted, last_round);
        free(idem);
        free(body);
        if (st != PK_OK)
            return st;
        if (x->rep)
            x->rep->flushed++;
    }
}

static pk_status dp_account(sess *x, double q, double sigma_eff, int64_t steps)
{
    char key[128], *v = NULL, *buf = NULL;
    double rdp[PK_DP_N_ORDERS];
    memset(rdp, 0, sizeof rdp);
    task_key(x, "dp_rdp", key, sizeof key);
    pk_status st = state_get(x, key, &v);
    if (st == PK_OK) {
        char *p = v;
        for (int j = 0; j < PK_DP_N_ORDERS; j++) {
            char *end = NULL;
            rdp[j] = strtod(p, &end);
            if (end == p || !(rdp[j] >= 0.0)) {
                st = fail(x, PK_ERR_FORMAT, "store: corrupt sync state %s", key);
                goto out;
            }
            p = *end == ',' ? end + 1 : end;
        }
    } else if (st != PK_ERR_NOTFOUND) {
        goto out;
    }
    if (sigma_eff > 0.0) {
        st = pk_dp_rdp_add(q, sigma_eff, steps, rdp);
    } else {
        for (int j = 0; j < PK_DP_N_ORDERS; j++)
            rdp[j] = (double)INFINITY; /* clipping without noise: no guarantee */
        st = PK_OK;
    }
    if (st != PK_OK)
        goto out;
    buf = malloc((size_t)PK_DP_N_ORDERS * 26 + 1);
    if (!buf) {
        st = PK_ERR_NOMEM;
        goto out;
    }
    size_t off = 0;
    for (int j = 0; j < PK_DP_N_ORDERS; j++)
        off += (size_t)sprintf(buf + off, "%s%.17g", j ? "," : "", rdp[j]);
    st = state_set(x, key, buf);
out:
    free(v);
    free(buf);
    return st;
}

/* Reports epsilon spent so far on this task (if DP was ever used). */
static pk_status dp_report(sess *x)
{
    char key[128], *v = NULL;
    double rdp[PK_DP_N_ORDERS];
    task_key(x, "dp_rdp", key, sizeof key);
    pk_status st = state_get(x, key, &v);
    if (st == PK_ERR_NOTFOUND)
        return PK_OK;
    if (st != PK_OK)
        return st;
    char *p = v;
    int inf = 0;
    for (int j = 0; j < PK_DP_N_ORDERS; j++) {
        char *end = NULL;
        rdp[j] = strtod(p, &end);
        inf |= isinf(rdp[j]);
        p = *end == ',' ? end + 1 : end;
    }
    free(v);
    x->rep->delta = x->p->dp_delta;
    if (inf) {
        x->rep->epsilon = (double)INFINITY;
        return PK_OK;
    }
    if (pk_dp_epsilon(rdp, x->p->dp_delta, &x->rep->epsilon, NULL) != PK_OK)
        x->rep->epsilon = (double)INFINITY;
    return PK_OK;
}

/* ---- local steps and the signed upload ------------------------------------------------------- */

static int cmp_pair(const void *a, const void *b)
{
    const pair *x = a, *y = b;
    return (x->k > y->k) - (x->k < y->k);
}

/* Runs the local steps from the global model; fills pairs (ascending k, non-zero sums). */
static pk_status local_steps(sess *x, double clip, double noise, pair **out, size_t *n_out,
                             int64_t *examples)
{
    const task *t = &x->t;
    double *sum = calloc((size_t)t->K, sizeof *sum);
    uint8_t *used = calloc((size_t)t->K, 1);
    pair *pr = NULL;
    pk_status st = PK_OK;
    size_t n = 0;
    *examples = 0;
    if (!sum || !used) {
        st = PK_ERR_NOMEM;
        goto out;
    }
    for (int64_t i = 0; i < t->local_steps; i++) {
        uint32_t k = randombytes_uniform((uint32_t)t->K);
        float g = 0.0f;
        int64_t nb = 0;
        st = x->ops->grad(x->ops->user, t->seeds[k], t->kind, t->eps, &g, &nb);
        if (st != PK_OK) {
            st = fail(x, st, "model: local step %lld failed", (long long)i);
            goto out;
        }
        if (!isfinite(g)) {
            pk_log(PK_LOG_WARN, "sync: local step %lld gave a non-finite g; skipped", (long long)i);
            g = 0.0f;
        }
        if (clip > 0.0)
            g = pk_dp_clip(g, (float)clip);
        /* the local model moves with the clean (clipped) g; it is discarded after the round */
        st = x->ops->apply(x->ops->user, t->seeds[k], t->kind, t->lr, g);
        if (st != PK_OK) {
            st = fail(x, st, "model: local update %lld failed", (long long)i);
            goto out;
        }
        double up = (double)g;
        if (clip > 0.0 && noise > 0.0)
            up += pk_dp_gaussian(noise * clip);
        sum[k] += up;
        used[k] = 1;
        *examples += nb > 0 ? nb : 1;
        if (x->rep)
            x->rep->steps++;
    }
    pr = malloc(((size_t)t->local_steps + 1) * sizeof *pr);
    if (!pr) {
        st = PK_ERR_NOMEM;
        goto out;
    }
    for (int64_t k = 0; k < t->K; k++) {
        if (!used[k])
            continue;
        double v = sum[k];
        if (v > t->max_abs_g || v < -t->max_abs_g) {
            pk_log(PK_LOG_WARN, "sync: sum of g for pool index %lld clamped to the task bound",
                   (long long)k);
            v = v > 0 ? t->max_abs_g : -t->max_abs_g;
        }
        if ((float)v == 0.0f)
            continue;
        pr[n].k = (uint32_t)k;
        pr[n].v = (float)v;
        n++;
    }
    qsort(pr, n, sizeof *pr, cmp_pair); /* already ascending; kept as the invariant's guard */
    if (*examples > t->max_examples)
        *examples = t->max_examples;
    *out = pr;
    pr = NULL;
    *n_out = n;
out:
    free(pr);
    free(used);
    free(sum);
    return st;
}

/* Signs the upload and writes it to the outbox; *idem_out owned. */
static pk_status make_upload(sess *x, const pair *pr, size_t n, int64_t examples, char **idem_out)
{
    uint8_t *packed = NULL, *msg = NULL, sig[64], rnd[16];
    size_t mlen = 0;
    char *b64 = NULL, *body = NULL, idem[40], sighex[129];
    pk_status st = pack_pairs(pr, n, &packed);
    if (st != PK_OK)
        goto out;
    randombytes_buf(rnd, sizeof rnd);
    idem[0] = 'u';
    idem[1] = '-';
    to_hex(rnd, sizeof rnd, idem + 2);
    st = upload_msg(x->t.id, x->t.round, x->device_id, idem, examples, packed, n * 6, &msg, &mlen);
    if (st != PK_OK)
        goto out;
    st = pk_store_identity_sign(x->s, msg, mlen, sig);
    if (st != PK_OK) {
        st = fail(x, st, "store: signing: %s", pk_store_errmsg(x->s));
        goto out;
    }
    to_hex(sig, 64, sighex);
    b64 = b64_encode(packed, n * 6);
    body = b64 ? malloc(strlen(b64) + 512) : NULL;
    if (!body) {
        st = PK_ERR_NOMEM;
        goto out;
    }
    sprintf(body,
            "{\"task_id\":\"%s\",\"round\":%lld,\"device_id\":\"%s\",\"idempotency_key\":\"%s\","
            "\"examples\":%lld,\"updates\":\"%s\",\"signature\":\"%s\"}",
            x->t.id, (long long)x->t.round, x->device_id, idem, (long long)examples, b64, sighex);
    /* the outbox first: from here on a crash or a lost answer never loses or duplicates it */
    st = pk_store_outbox_put(x->s, idem, body);
    if (st != PK_OK) {
        st = fail(x, st, "store: outbox: %s", pk_store_errmsg(x->s));
        goto out;
    }
    *idem_out = strdup(idem);
    if (!*idem_out)
        st = PK_ERR_NOMEM;
out:
    free(body);
    free(b64);
    free(msg);
    free(packed);
    return st;
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* Polls /v1/health until the log reaches `version` or wait_s passes; *closed 1 if it did. */
static pk_status wait_close(sess *x, int64_t version, int *closed)
{
    double t_end = pk_time_now() + x->p->wait_s;
    *closed = 0;
    for (;;) {
        cJSON *j = NULL;
        long status = 0;
        char code[64];
        double lv = 0;
        pk_status st = call(x, "GET", "/v1/health", NULL, &status, &j, code);
        if (st == PK_OK && status == 200 && !jnum(j, "log_version", 1, 0, 9e15, &lv) &&
            (int64_t)lv >= version)
            *closed = 1;
        cJSON_Delete(j);
        if (st != PK_OK)
            return st;
        if (*closed || pk_time_now() >= t_end)
            return PK_OK;
        sleep_s(0.05);
    }
}

/* ---- the round ------------------------------------------------------------------------------- */

static pk_status upload_round(sess *x, int64_t uploaded_round)
{
    double clip = x->p->dp_clip > 0 ? x->p->dp_clip : x->t.dp_clip;
    double noise = x->p->dp_noise > 0 ? x->p->dp_noise : x->t.dp_noise;
    pair *pr = NULL;
    size_t n = 0;
    int64_t examples = 0;
    char *idem = NULL, *body = NULL;
    int accepted = 0;
    if (uploaded_round == x->t.round) {
        x->rep->round = x->t.round; /* already in; just wait for the round to close */
        x->rep->uploaded = 1;
        return PK_OK;
    }
    pk_status st = local_steps(x, clip, noise, &pr, &n, &examples);
    if (st == PK_OK)
        st = replay(x); /* back to the global model: the local steps are only the update */
    if (st == PK_OK && clip > 0.0) {
        /* q = 1: no amplification by subsampling is claimed. Batches come from a per-epoch
         * shuffle (not Poisson sampling) and the local weights move with the clean clipped g, so
         * a step whose batch lacks an example still depends on it; every released value is in
         * [-C, C] plus noise whatever the weights, so q = 1 composition is a proven bound. */
        const double q = 1.0;
        /* g of a batch clipped to [-C, C] changes by up to 2C when one example changes, so the
         * noise multiplier against that sensitivity is noise / 2 (docs/SYNC.md). Accounted
         * before the outbox holds the update: a crash between the two may over-count a round
         * that was never sent, never send one that was not counted. */
        st = dp_account(x, q, noise / 2.0, x->t.local_steps);
        x->rep->dp = 1;
    }
    if (st == PK_OK)
        st = make_upload(x, pr, n, examples, &idem);
    if (st == PK_OK) {
        x->rep->round = x->t.round;
        x->rep->pairs = (int64_t)n;
        x->rep->examples = examples;
        /* send it (the outbox holds it; the oldest entry first, which is this one) */
        char *pi = NULL;
        st = pk_store_outbox_peek(x->s, &pi, &body);
        if (st == PK_OK) {
            int64_t r = 0;
            st = send_upload(x, pi, body, &accepted, &r);
            if (st == PK_OK && !accepted)
                st = fail(x, PK_ERR_HTTP, "the coordinator refused the update for round %lld",
                          (long long)r);
        } else {
            st = fail(x, st, "store: outbox: %s", pk_store_errmsg(x->s));
        }
        free(pi);
    }
    x->rep->uploaded = accepted;
    free(body);
    free(idem);
    free(pr);
    return st;
}

static pk_status run_round(sess *x)
{
    int64_t last_round = 0, uploaded_round = 0;
    int last_acc = 0, closed = 0;
    char key[128], *v = NULL, hash[65];
    pk_status st = do_register(x);
    if (st == PK_OK)
        st = flush_outbox(x, &last_round, &last_acc);
    if (st == PK_OK)
        st = fetch_task(x);
    if (st != PK_OK)
        return st;
    snprintf(x->rep->task_id, sizeof x->rep->task_id, "%s", x->t.id);
    snprintf(x->rep->device_id, sizeof x->rep->device_id, "%s", x->device_id);
    st = x->ops->reset(x->ops->user);
    if (st == PK_OK)
        st = x->ops->hash(x->ops->user, hash);
    if (st != PK_OK)
        return fail(x, st, "model: cannot hash the base weights");
    if (strcmp(hash, x->t.base_hash) != 0)
        return fail(x, PK_ERR_ARG,
                    "the task %s needs the base model with hash %s, this model has %s", x->t.id,
                    x->t.base_hash, hash);
    /* Every device must update the same tensors, or replaying the log diverges. */
    if (x->ops->trainable && x->t.trainable[0] && strcmp(x->ops->trainable, x->t.trainable) != 0)
        return fail(x, PK_ERR_ARG,
                    "the task %s trains the subset '%s', this device '%s' (use --trainable %s)",
                    x->t.id, x->t.trainable, x->ops->trainable, x->t.trainable);
    st = load_head(x);
    if (st == PK_OK)
        st = pull_log(x);
    if (st == PK_OK)
        st = replay(x);
    if (st != PK_OK)
        return st;
    task_key(x, "upload_round", key, sizeof key);
    st = state_get(x, key, &v);
    if (st == PK_OK)
        uploaded_round = strtoll(v, NULL, 10);
    free(v);
    if (st != PK_OK && st != PK_ERR_NOTFOUND)
        return st;
    if (x->p->upload && x->t.round > x->have_version) {
        st = upload_round(x, uploaded_round);
        if (st != PK_OK)
            return st;
    } else if (last_acc) {
        x->rep->round = last_round;
        x->rep->uploaded = 1;
    }
    if (x->rep->round > 0 && x->p->wait_s > 0) {
        st = wait_close(x, x->rep->round, &closed);
        if (st != PK_OK)
            return st;
    }
    int64_t before = x->have_version;
    st = pull_log(x);
    if (st == PK_OK && x->have_version != before)
        st = replay(x);
    if (st == PK_OK)
        st = x->ops->hash(x->ops->user, x->rep->model_hash);
    if (st != PK_OK)
        return st;
    x->rep->round_closed = x->rep->round > 0 && x->have_version >= x->rep->round;
    x->rep->log_version = x->have_version;
    to_hex(x->have_hash, 32, x->rep->log_head);
    return dp_report(x);
}

pk_status pk_sync_round(pk_store *s, const pk_sync_params *p, const pk_sync_model_ops *ops,
                        pk_sync_report *rep, char *err, size_t errlen)
{
    pk_sync_report local;
    sess x;
    memset(&x, 0, sizeof x);
    if (!rep)
        rep = &local;
    memset(rep, 0, sizeof *rep);
    if (err && errlen)
        err[0] = '\0';
    x.err = err;
    x.errlen = errlen;
    if (!s || !p || !p->server || !ops || !ops->grad || !ops->apply || !ops->reset || !ops->hash)
        return fail(&x, PK_ERR_ARG, "sync: missing store, server or model");
    if (!(p->dp_clip >= 0.0) || !(p->dp_noise >= 0.0) || !(p->dp_delta > 0.0 && p->dp_delta < 1.0))
        return fail(&x, PK_ERR_ARG, "sync: dp_clip and dp_noise must be >= 0, delta in (0, 1)");
    if (p->dp_noise > 0.0 && !(p->dp_clip > 0.0))
        return fail(&x, PK_ERR_ARG, "sync: --dp-noise needs --dp-clip (noise is relative to it)");
    if (p->task_id && !valid_id(p->task_id))
        return fail(&x, PK_ERR_ARG, "sync: bad task id '%s'", p->task_id);
    x.s = s;
    x.p = p;
    x.ops = ops;
    x.rep = rep;
    pk_status st = pk_http_create(p->server, p->http, &x.h);
    if (st == PK_ERR_UNSUPPORTED)
        return fail(&x, st, "sync: %s", pk_http_global_errmsg());
    if (st != PK_OK)
        return fail(&x, st, "sync: bad server URL '%s' (expected http://host:port)", p->server);
    st = run_round(&x);
    rep->http = pk_http_get_stats(x.h);
    pk_http_destroy(x.h);
    free(x.t.seeds);
    return st;
}
