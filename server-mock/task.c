/* task.c: the coordinator's task file (docs/PROTOCOL.md section 2): parse, validate with errors
 * that name the key, and render the task members of GET /v1/task. */
#include "server_impl.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int get_num(const cJSON *o, const char *key, int required, double lo, double hi, double *out,
                   char *err, size_t errlen)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) {
        if (required)
            snprintf(err, errlen, "task: missing key \"%s\"", key);
        return !required;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < lo ||
        v->valuedouble > hi) {
        snprintf(err, errlen, "task: key \"%s\" must be a number in [%g, %g]", key, lo, hi);
        return 0;
    }
    *out = v->valuedouble;
    return 1;
}

static int get_int(const cJSON *o, const char *key, int required, double lo, double hi, double *out,
                   char *err, size_t errlen)
{
    if (!get_num(o, key, required, lo, hi, out, err, errlen))
        return 0;
    if (*out != floor(*out)) {
        snprintf(err, errlen, "task: key \"%s\" must be an integer", key);
        return 0;
    }
    return 1;
}

static int get_str(const cJSON *o, const char *key, int required, char *out, size_t cap, char *err,
                   size_t errlen)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) {
        if (required)
            snprintf(err, errlen, "task: missing key \"%s\"", key);
        return !required;
    }
    if (!cJSON_IsString(v) || strlen(v->valuestring) == 0 || strlen(v->valuestring) >= cap) {
        snprintf(err, errlen, "task: key \"%s\" must be a string of 1..%zu chars", key, cap - 1);
        return 0;
    }
    memcpy(out, v->valuestring, strlen(v->valuestring) + 1);
    return 1;
}

/* A trainable subset: a name, or a LoRA spec ("lora:r=8,alpha=16,seed=0,targets=q_proj|v_proj"),
 * so ':', ',', '=' and '|' too (none needs escaping in the JSON the task is served as). */
static int trainable_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > PKP_MAX_NAME)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c[2] = {s[i], 0};
        if (!pkp_name_ok(c) && !strchr(":,=|", s[i]))
            return 0;
    }
    return 1;
}

static int parse_fields(const cJSON *o, srv_task *t, char *err, size_t errlen)
{
    char seed_hex[80] = "";
    double k = 0, lr = 0, eps = 0, steps = 0, batch = 8, quorum = 0, dl = 0;
    double maxg = 1e6, maxex = 1e6;
    int ok = get_str(o, "task_id", 1, t->task_id, sizeof t->task_id, err, errlen) &&
             get_str(o, "base_model_hash", 1, t->base_model_hash, sizeof t->base_model_hash, err,
                     errlen) &&
             get_int(o, "pool_size", 1, 1, 65535, &k, err, errlen) &&
             get_str(o, "pool_seed", 1, seed_hex, sizeof seed_hex, err, errlen) &&
             get_str(o, "z_kind", 0, t->z_kind, sizeof t->z_kind, err, errlen) &&
             get_num(o, "lr", 1, 0, 1e3, &lr, err, errlen) &&
             get_num(o, "eps", 1, 1e-12, 1e3, &eps, err, errlen) &&
             get_int(o, "local_steps", 1, 1, 1e6, &steps, err, errlen) &&
             get_int(o, "batch_size", 0, 1, 1e6, &batch, err, errlen) &&
             get_str(o, "trainable", 0, t->trainable, sizeof t->trainable, err, errlen) &&
             get_int(o, "quorum", 1, 1, 1e9, &quorum, err, errlen) &&
             get_num(o, "deadline_seconds", 1, 0.01, 1e7, &dl, err, errlen) &&
             get_num(o, "max_abs_g", 0, 1e-30, 1e30, &maxg, err, errlen) &&
             get_int(o, "max_examples", 0, 1, 1e15, &maxex, err, errlen);
    if (!ok)
        return 0;
    for (const char *c = t->base_model_hash; *c; c++) {
        if (*c < 0x21 || *c > 0x7e || *c == '"' || *c == '\\') {
            snprintf(err, errlen,
                     "task: key \"base_model_hash\" must be printable ASCII "
                     "without quotes or backslashes");
            return 0;
        }
    }
    if (!trainable_ok(t->trainable)) {
        snprintf(err, errlen, "task: key \"trainable\" must be 1..63 chars of [A-Za-z0-9._-:,=|]");
        return 0;
    }
    if (!pkp_name_ok(t->task_id)) {
        snprintf(err, errlen, "task: key \"task_id\" must be 1..64 chars of [A-Za-z0-9._-]");
        return 0;
    }
    if (pkp_unhex(seed_hex, t->pool_seed, 32) != PK_OK) {
        snprintf(err, errlen, "task: key \"pool_seed\" must be 64 hex chars (32 bytes)");
        return 0;
    }
    if (strcmp(t->z_kind, "gaussian") != 0 && strcmp(t->z_kind, "rademacher") != 0) {
        snprintf(err, errlen, "task: key \"z_kind\" must be \"gaussian\" or \"rademacher\"");
        return 0;
    }
    t->pool_size = (uint32_t)k;
    t->lr = (float)lr;
    t->eps = (float)eps;
    t->local_steps = (int)steps;
    t->batch_size = (int)batch;
    t->quorum = (int)quorum;
    t->deadline_s = dl;
    t->max_abs_g = maxg;
    t->max_examples = (int64_t)maxex;
    return 1;
}

static int parse_privacy(const cJSON *o, srv_task *t, char *err, size_t errlen)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "privacy");
    if (!p)
        return 1;
    if (!cJSON_IsObject(p)) {
        snprintf(err, errlen, "task: key \"privacy\" must be an object");
        return 0;
    }
    return get_num(p, "dp_clip", 0, 0, 1e30, &t->dp_clip, err, errlen) &&
           get_num(p, "dp_noise", 0, 0, 1e30, &t->dp_noise, err, errlen);
}

pk_status srv_task_parse(const char *json, srv_task *t, char *err, size_t errlen)
{
    memset(t, 0, sizeof *t);
    strcpy(t->z_kind, "gaussian");
    strcpy(t->trainable, "all");
    cJSON *o = cJSON_Parse(json);
    pk_status st = PK_ERR_FORMAT;
    if (!o || !cJSON_IsObject(o)) {
        snprintf(err, errlen, "task: not a JSON object");
        goto out;
    }
    if (!parse_fields(o, t, err, errlen) || !parse_privacy(o, t, err, errlen))
        goto out;
    st = PK_OK;
out:
    cJSON_Delete(o);
    return st;
}

char *srv_task_json_prefix(const srv_task *t)
{
    char seed[65], lr[32], eps[32];
    pkp_hex(t->pool_seed, 32, seed);
    pkp_fmt_float(t->lr, lr, sizeof lr);
    pkp_fmt_float(t->eps, eps, sizeof eps);
    size_t cap = 1024 + strlen(t->base_model_hash);
    char *out = malloc(cap);
    if (!out)
        return NULL;
    snprintf(out, cap,
             "{\"task_id\":\"%s\",\"base_model_hash\":\"%s\",\"pool_size\":%u,"
             "\"pool_seed\":\"%s\",\"pool_derivation\":\"blake2b256-u32le-v1\","
             "\"z_kind\":\"%s\",\"lr\":%s,\"eps\":%s,\"local_steps\":%d,\"batch_size\":%d,"
             "\"trainable\":\"%s\",\"quorum\":%d,\"deadline_seconds\":%.17g,"
             "\"max_abs_g\":%.17g,\"max_examples\":%lld,"
             "\"privacy\":{\"dp_clip\":%.17g,\"dp_noise\":%.17g}",
             t->task_id, t->base_model_hash, (unsigned)t->pool_size, seed, t->z_kind, lr, eps,
             t->local_steps, t->batch_size, t->trainable, t->quorum, t->deadline_s, t->max_abs_g,
             (long long)t->max_examples, t->dp_clip, t->dp_noise);
    return out;
}
