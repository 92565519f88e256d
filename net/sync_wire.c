/* sync_wire.c: the wire format of the sync protocol (docs/PROTOCOL.md): the seed pool, packed
 * updates, the canonical upload message and log-entry hash, the JSON bodies the client sends,
 * the parsing and validation of the coordinator's answers (each refusal names the field), and
 * the text forms of the sync state in the store. Pure: the round itself (HTTP, the store, the
 * model) is sync.c; hashing, hex and base64 go through pk_crypto.h. */
#include "pk_crypto.h"
#include "sync_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* u32le length || bytes (PROTOCOL 5); returns the bytes written. */
static size_t put_str(uint8_t *p, const char *s)
{
    size_t n = strlen(s);
    pk_put_le32(p, (uint32_t)n);
    memcpy(p + 4, s, n);
    return 4 + n;
}

/* ---------------------------------------------------------------------------------------------- */

int sync_valid_id(const char *s)
{
    size_t n = strlen(s);
    return n >= 1 && n <= SYNC_ID_MAX && pk_name_chars_ok(s, n, "._-");
}

void sync_device_id(const uint8_t pk[32], char out[24])
{
    uint8_t h[PK_HASH_BYTES];
    pk_hash(pk, 32, h);
    out[0] = 'd';
    pk_hex_encode(out + 1, 23, h, 8);
}

void sync_idempotency_key(char out[40])
{
    uint8_t rnd[16];
    pk_crypto_random(rnd, sizeof rnd);
    out[0] = 'u';
    out[1] = '-';
    pk_hex_encode(out + 2, 38, rnd, sizeof rnd);
}

uint64_t pk_sync_pool_seed(const uint8_t pool_seed[32], uint32_t k)
{
    uint8_t in[36], h[PK_HASH_BYTES];
    memcpy(in, pool_seed, 32);
    pk_put_le32(in + 32, k);
    pk_hash(in, sizeof in, h);
    uint64_t s = 0;
    for (int i = 7; i >= 0; i--)
        s = s << 8 | h[i];
    return s;
}

/* ---------------------------------------------------------------------------------------------- */

pk_status sync_pack_pairs(const sync_pair *pr, size_t n, uint8_t **out)
{
    *out = malloc(n * SYNC_PAIR_SIZE + 1);
    if (!*out)
        return PK_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        uint8_t *p = *out + SYNC_PAIR_SIZE * i;
        p[0] = (uint8_t)(pr[i].k & 0xff);
        p[1] = (uint8_t)(pr[i].k >> 8);
        pk_put_le32(p + 2, pk_f32_bits(pr[i].v));
    }
    return PK_OK;
}

/* Decodes the n pairs of bin into pr, checking the invariants of PROTOCOL 3. */
static pk_status decode_pairs(const uint8_t *bin, size_t n, int64_t K, sync_pair *pr, char *err,
                              size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = bin + SYNC_PAIR_SIZE * i;
        uint32_t bits = pk_get_le32(p + 2);
        pr[i].k = (uint32_t)p[0] | (uint32_t)p[1] << 8;
        memcpy(&pr[i].v, &bits, 4);
        if ((int64_t)pr[i].k >= K) {
            pk_seterr(err, errlen, "updates: pair %zu has pool index %u, the pool has %lld", i,
                      (unsigned)pr[i].k, (long long)K);
            return PK_ERR_FORMAT;
        }
        if (!isfinite(pr[i].v) || (i > 0 && pr[i].k <= pr[i - 1].k)) {
            pk_seterr(err, errlen, "updates: pair %zu (index %u) is %s", i, (unsigned)pr[i].k,
                      isfinite(pr[i].v) ? "not in ascending index order" : "not finite");
            return PK_ERR_FORMAT;
        }
    }
    return PK_OK;
}

pk_status sync_unpack_b64(const char *b64, int64_t K, sync_pair **out, size_t *n, uint8_t **raw,
                          size_t *raw_len, char *err, size_t errlen)
{
    size_t len = strlen(b64), got = 0, cap = len / 4 * 3 + 3;
    uint8_t *bin = malloc(cap);
    sync_pair *pr = NULL;
    pk_status st = PK_ERR_NOMEM;
    if (!bin)
        return st;
    st = pk_base64_decode(b64, len, bin, cap, &got);
    if (st != PK_OK || got % SYNC_PAIR_SIZE != 0) {
        pk_seterr(err, errlen, "updates: %s",
                  st != PK_OK ? "not base64" : "not whole 6-byte pairs");
        st = PK_ERR_FORMAT;
        goto out;
    }
    pr = malloc((got / SYNC_PAIR_SIZE + 1) * sizeof *pr);
    st = pr ? decode_pairs(bin, got / SYNC_PAIR_SIZE, K, pr, err, errlen) : PK_ERR_NOMEM;
    if (st != PK_OK)
        goto out;
    *out = pr;
    pr = NULL; /* ownership moved to the caller */
    *n = got / SYNC_PAIR_SIZE;
    if (raw) {
        *raw = bin;
        *raw_len = got;
        bin = NULL;
    }
out:
    free(pr);
    free(bin);
    return st;
}

/* ---------------------------------------------------------------------------------------------- */

pk_status sync_upload_msg(const sync_upload *u, uint8_t **out, size_t *out_len)
{
    static const char tag[] = "pocketllm-upload-v1";
    size_t plen = u->packed_len;
    size_t cap = 19 + 4 + strlen(u->task_id) + 8 + 4 + strlen(u->device_id) + 4 + strlen(u->idem) +
                 8 + 4 + plen;
    uint8_t *m = malloc(cap), *p = m;
    if (!m)
        return PK_ERR_NOMEM;
    memcpy(p, tag, 19);
    p += 19;
    p += put_str(p, u->task_id);
    pk_put_le64(p, (uint64_t)u->round);
    p += 8;
    p += put_str(p, u->device_id);
    p += put_str(p, u->idem);
    pk_put_le64(p, (uint64_t)u->examples);
    p += 8;
    pk_put_le32(p, (uint32_t)(plen / SYNC_PAIR_SIZE));
    p += 4;
    if (plen)
        memcpy(p, u->packed, plen);
    p += plen;
    *out = m;
    *out_len = (size_t)(p - m);
    return PK_OK;
}

pk_status sync_entry_hash(const char *task_id, const sync_entry *e, const uint8_t *packed,
                          size_t plen, const uint8_t prev[SYNC_HASH], uint8_t out[SYNC_HASH])
{
    static const char tag[] = "pocketllm-log-v1";
    size_t cap = SYNC_HASH + 16 + 4 + strlen(task_id) + 8 + 4 + 4 + 8 + 4 + plen;
    uint8_t *m = malloc(cap), *p = m;
    if (!m)
        return PK_ERR_NOMEM;
    memcpy(p, prev, SYNC_HASH);
    p += SYNC_HASH;
    memcpy(p, tag, 16);
    p += 16;
    p += put_str(p, task_id);
    pk_put_le64(p, (uint64_t)e->version);
    p += 8;
    pk_put_le32(p, pk_f32_bits(e->lr));
    p += 4;
    pk_put_le32(p, (uint32_t)e->uploads);
    p += 4;
    pk_put_le64(p, (uint64_t)e->examples);
    p += 8;
    pk_put_le32(p, (uint32_t)(plen / SYNC_PAIR_SIZE));
    p += 4;
    if (plen)
        memcpy(p, packed, plen);
    p += plen;
    pk_hash(m, (size_t)(p - m), out);
    free(m);
    return PK_OK;
}

/* ---------------------------------------------------------------------------------------------- */

void sync_register_body(const uint8_t pk[32], char *out, size_t cap)
{
    char hex[65];
    pk_hex_encode(hex, sizeof hex, pk, 32);
    snprintf(out, cap, "{\"public_key\":\"%s\"}", hex);
}

pk_status sync_upload_body(const sync_upload *u, const uint8_t sig[64], char **out)
{
    char sighex[129], *b64 = NULL;
    *out = NULL;
    pk_hex_encode(sighex, sizeof sighex, sig, 64);
    pk_status st = pk_base64_encode(u->packed, u->packed_len, &b64);
    if (st != PK_OK)
        return st;
    /* every string field is an id, a hex or a base64 string: nothing to escape */
    size_t cap = strlen(b64) + strlen(u->task_id) + strlen(u->device_id) + strlen(u->idem) + 320;
    char *body = malloc(cap);
    if (body)
        snprintf(body, cap,
                 "{\"task_id\":\"%s\",\"round\":%lld,\"device_id\":\"%s\",\"idempotency_key\":"
                 "\"%s\",\"examples\":%lld,\"updates\":\"%s\",\"signature\":\"%s\"}",
                 u->task_id, (long long)u->round, u->device_id, u->idem, (long long)u->examples,
                 b64, sighex);
    free(b64);
    *out = body;
    return body ? PK_OK : PK_ERR_NOMEM;
}

/* ---------------------------------------------------------------------------------------------- */

static const char *jstr(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* A finite number field, integral when `integral`, within [lo, hi]; 0 if it is, else -1. */
static int jnum(const cJSON *o, const char *key, int integral, double lo, double hi, double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return -1;
    double d = v->valuedouble;
    if ((integral && d != floor(d)) || d < lo || d > hi)
        return -1;
    *out = d;
    return 0;
}

/* jnum, and on failure "<where>: <key> is missing / not a number / X, expected ..." in err. */
static int need_num(const cJSON *o, const char *where, const char *key, int integral, double lo,
                    double hi, double *out, char *err, size_t errlen)
{
    if (jnum(o, key, integral, lo, hi, out) == 0)
        return 0;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v)
        pk_seterr(err, errlen, "%s: field %s is missing", where, key);
    else if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        pk_seterr(err, errlen, "%s: field %s is not a finite number", where, key);
    else
        pk_seterr(err, errlen, "%s: field %s is %.17g, expected %s in [%g, %g]", where, key,
                  v->valuedouble, integral ? "an integer" : "a number", lo, hi);
    return -1;
}

/* 64 hex digits of a string field into out; else the field is named in err. */
static int need_hash(const cJSON *o, const char *where, const char *key, uint8_t out[32], char *err,
                     size_t errlen)
{
    const char *s = jstr(o, key);
    if (s && pk_hex_decode(out, 32, s) == PK_OK)
        return 0;
    pk_seterr(err, errlen, "%s: field %s is %s", where, key,
              s ? "not 64 hex digits" : "missing or not a string");
    return -1;
}

/* ---------------------------------------------------------------------------------------------- */

/* The strings of a task: id, base model hash, pool seed, pool derivation, z kind, trainable. */
static pk_status task_strings(const cJSON *j, sync_task *t, char *err, size_t errlen)
{
    const char *id = jstr(j, "task_id"), *bh = jstr(j, "base_model_hash");
    const char *pd = jstr(j, "pool_derivation"), *zk = jstr(j, "z_kind"),
               *tr = jstr(j, "trainable");
    if (!id || !sync_valid_id(id)) {
        pk_seterr(err, errlen, "task: field task_id is %s",
                  id ? "not 1-64 of [A-Za-z0-9._-]" : "missing or not a string");
        return PK_ERR_FORMAT;
    }
    if (!bh || strlen(bh) < 1 || strlen(bh) > 128) {
        pk_seterr(err, errlen, "task: field base_model_hash is missing or not 1-128 characters");
        return PK_ERR_FORMAT;
    }
    if (need_hash(j, "task", "pool_seed", t->pool_seed, err, errlen))
        return PK_ERR_FORMAT;
    if (pd && strcmp(pd, "blake2b256-u32le-v1") != 0) {
        pk_seterr(err, errlen, "task: unknown pool_derivation %s", pd);
        return PK_ERR_UNSUPPORTED;
    }
    if (zk && strcmp(zk, "gaussian") && strcmp(zk, "rademacher")) {
        pk_seterr(err, errlen, "task: unknown z_kind %s", zk);
        return PK_ERR_UNSUPPORTED;
    }
    if (tr && strlen(tr) >= sizeof t->trainable) {
        pk_seterr(err, errlen, "task: field trainable is longer than %zu characters",
                  sizeof t->trainable - 1);
        return PK_ERR_FORMAT;
    }
    snprintf(t->trainable, sizeof t->trainable, "%s", tr ? tr : "");
    snprintf(t->id, sizeof t->id, "%s", id);
    snprintf(t->base_hash, sizeof t->base_hash, "%s", bh);
    t->kind = (zk && !strcmp(zk, "rademacher")) ? PK_Z_RADEMACHER : PK_Z_GAUSSIAN;
    return PK_OK;
}

/* The optional numbers of a task: bounds and the privacy settings. */
static pk_status task_options(const cJSON *j, sync_task *t, char *err, size_t errlen)
{
    double mag = 1e6, mex = 1e6, clip = 0, noise = 0;
    if (cJSON_HasObjectItem(j, "max_abs_g") &&
        need_num(j, "task", "max_abs_g", 0, 0, 1e38, &mag, err, errlen))
        return PK_ERR_FORMAT;
    if (cJSON_HasObjectItem(j, "max_examples") &&
        need_num(j, "task", "max_examples", 1, 1, 9e15, &mex, err, errlen))
        return PK_ERR_FORMAT;
    const cJSON *priv = cJSON_GetObjectItemCaseSensitive(j, "privacy");
    if (priv && (need_num(priv, "task: privacy", "dp_clip", 0, 0, 1e30, &clip, err, errlen) ||
                 need_num(priv, "task: privacy", "dp_noise", 0, 0, 1e30, &noise, err, errlen)))
        return PK_ERR_FORMAT;
    t->max_abs_g = mag;
    t->max_examples = (int64_t)mex;
    t->dp_clip = clip;
    t->dp_noise = noise;
    return PK_OK;
}

pk_status sync_task_parse(const cJSON *j, sync_task *t, char *err, size_t errlen)
{
    double K, lr, eps, steps, round, lv;
    pk_status st = task_strings(j, t, err, errlen);
    if (st != PK_OK)
        return st;
    if (need_num(j, "task", "pool_size", 1, 1, SYNC_POOL_MAX, &K, err, errlen) ||
        need_num(j, "task", "lr", 0, -1e9, 1e9, &lr, err, errlen) ||
        need_num(j, "task", "eps", 0, 1e-30, 1e9, &eps, err, errlen) ||
        need_num(j, "task", "local_steps", 1, 0, 1e7, &steps, err, errlen) ||
        need_num(j, "task", "round", 1, 1, 9e15, &round, err, errlen) ||
        need_num(j, "task", "log_version", 1, 0, 9e15, &lv, err, errlen))
        return PK_ERR_FORMAT;
    st = task_options(j, t, err, errlen);
    if (st != PK_OK)
        return st;
    t->K = (int64_t)K;
    t->lr = (float)lr;
    t->eps = (float)eps;
    t->local_steps = (int64_t)steps;
    t->round = (int64_t)round;
    t->log_version = (int64_t)lv;
    return PK_OK;
}

pk_status sync_task_pool(sync_task *t)
{
    free(t->seeds);
    t->seeds = malloc((size_t)t->K * sizeof *t->seeds);
    if (!t->seeds)
        return PK_ERR_NOMEM;
    for (int64_t k = 0; k < t->K; k++)
        t->seeds[k] = pk_sync_pool_seed(t->pool_seed, (uint32_t)k);
    return PK_OK;
}

pk_status sync_log_page_parse(const cJSON *j, const char *task_id, int64_t *head,
                              const cJSON **entries, int *more, char *err, size_t errlen)
{
    const char *tid = jstr(j, "task_id");
    double hv = 0;
    if (!tid || strcmp(tid, task_id) != 0) {
        pk_seterr(err, errlen, "log: field task_id is '%.64s', expected '%s'",
                  tid ? tid : "(missing)", task_id);
        return PK_ERR_FORMAT;
    }
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(j, "head");
    if (need_num(h, "log: head", "version", 1, 0, 9e15, &hv, err, errlen))
        return PK_ERR_FORMAT;
    *entries = cJSON_GetObjectItemCaseSensitive(j, "entries");
    if (!cJSON_IsArray(*entries)) {
        pk_seterr(err, errlen, "log: field entries is missing or not an array");
        return PK_ERR_FORMAT;
    }
    *head = (int64_t)hv;
    *more = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "more"));
    return PK_OK;
}

pk_status sync_entry_parse(const cJSON *e, sync_entry *out, char *err, size_t errlen)
{
    double v, lr, up, ex;
    if (need_num(e, "log entry", "version", 1, 1, 9e15, &v, err, errlen) ||
        need_num(e, "log entry", "lr", 0, -1e30, 1e30, &lr, err, errlen) ||
        need_num(e, "log entry", "uploads", 1, 0, 4294967295.0, &up, err, errlen) ||
        need_num(e, "log entry", "examples", 1, 0, 9e15, &ex, err, errlen) ||
        need_hash(e, "log entry", "prev_hash", out->prev, err, errlen) ||
        need_hash(e, "log entry", "hash", out->hash, err, errlen))
        return PK_ERR_FORMAT;
    out->updates = jstr(e, "updates");
    if (!out->updates) {
        pk_seterr(err, errlen, "log entry: field updates is missing or not a string");
        return PK_ERR_FORMAT;
    }
    out->version = (int64_t)v;
    out->lr = (float)lr;
    out->uploads = (int64_t)up;
    out->examples = (int64_t)ex;
    return PK_OK;
}

int64_t sync_health_version(const cJSON *j)
{
    double lv = 0;
    return jnum(j, "log_version", 1, 0, 9e15, &lv) == 0 ? (int64_t)lv : -1;
}

const char *sync_answer_device_id(const cJSON *j)
{
    return jstr(j, "device_id");
}

int sync_answer_accepted(const cJSON *j)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "accepted"));
}

void sync_answer_error(const cJSON *j, char code[64], const char **message)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    const char *c = jstr(e, "code");
    snprintf(code, 64, "%s", c ? c : "unknown");
    *message = jstr(e, "message");
}

pk_status sync_outbox_parse(const char *body, int64_t *round, char task_id[SYNC_ID_MAX + 1])
{
    cJSON *b = cJSON_Parse(body);
    double r = 0;
    const char *t = jstr(b, "task_id");
    pk_status st = PK_ERR_FORMAT;
    if (b && jnum(b, "round", 1, 1, 9e15, &r) == 0 && t && sync_valid_id(t)) {
        *round = (int64_t)r;
        snprintf(task_id, SYNC_ID_MAX + 1, "%s", t);
        st = PK_OK;
    }
    cJSON_Delete(b);
    return st;
}

/* ---------------------------------------------------------------------------------------------- */

void sync_head_format(int64_t version, const uint8_t hash[SYNC_HASH], char *out, size_t cap)
{
    char hex[2 * SYNC_HASH + 1];
    pk_hex_encode(hex, sizeof hex, hash, SYNC_HASH);
    snprintf(out, cap, "%lld:%s", (long long)version, hex);
}

pk_status sync_head_parse(const char *v, int64_t *version, uint8_t hash[SYNC_HASH])
{
    const char *colon = strchr(v, ':');
    long long ver = colon ? strtoll(v, NULL, 10) : -1;
    if (!colon || ver < 0 || pk_hex_decode(hash, SYNC_HASH, colon + 1) != PK_OK)
        return PK_ERR_FORMAT;
    *version = ver;
    return PK_OK;
}

pk_status sync_log_value_format(float lr, const char *b64, char **out)
{
    size_t cap = strlen(b64) + 16;
    *out = malloc(cap);
    if (!*out)
        return PK_ERR_NOMEM;
    snprintf(*out, cap, "%08x:%s", (unsigned)pk_f32_bits(lr), b64);
    return PK_OK;
}

pk_status sync_log_value_parse(const char *v, int64_t K, float *lr, sync_pair **pr, size_t *n)
{
    unsigned bits = 0;
    const char *colon = strchr(v, ':');
    if (!colon || sscanf(v, "%8x", &bits) != 1 ||
        sync_unpack_b64(colon + 1, K, pr, n, NULL, NULL, NULL, 0) != PK_OK)
        return PK_ERR_FORMAT;
    uint32_t b32 = bits;
    memcpy(lr, &b32, 4);
    return PK_OK;
}

pk_status sync_rdp_format(const double rdp[PK_DP_N_ORDERS], char **out)
{
    size_t cap = (size_t)PK_DP_N_ORDERS * 26 + 1, off = 0;
    char *buf = malloc(cap);
    *out = buf;
    if (!buf)
        return PK_ERR_NOMEM;
    for (int j = 0; j < PK_DP_N_ORDERS; j++)
        off += (size_t)snprintf(buf + off, cap - off, "%s%.17g", j ? "," : "", rdp[j]);
    return PK_OK;
}

pk_status sync_rdp_parse(const char *v, double rdp[PK_DP_N_ORDERS])
{
    const char *p = v;
    for (int j = 0; j < PK_DP_N_ORDERS; j++) {
        char *end = NULL;
        rdp[j] = strtod(p, &end);
        if (end == p || !(rdp[j] >= 0.0))
            return PK_ERR_FORMAT;
        p = *end == ',' ? end + 1 : end;
    }
    return PK_OK;
}
