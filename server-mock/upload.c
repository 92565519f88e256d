/* upload.c: parsing and validation of an upload body (docs/PROTOCOL.md sections 4, 5 and 7),
 * independent of HTTP so it can be fuzzed: JSON shape, field types and bounds, packed updates
 * (base64, pool indices, order, finiteness, magnitude), task id and signature format. The
 * device, signature and round checks that need the state are done by server.c and db.c. */
#include "server_impl.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(srv_err *e, unsigned status, const char *code, const char *fmt, ...)
    PK_PRINTF(4, 5);
static int fail(srv_err *e, unsigned status, const char *code, const char *fmt, ...)
{
    va_list ap;
    e->status = status;
    e->code = code;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return 0;
}

static const char *want_str(const cJSON *o, const char *key, srv_err *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) {
        fail(e, 400, "missing_field", "missing field \"%s\"", key);
        return NULL;
    }
    if (!cJSON_IsString(v)) {
        fail(e, 400, "bad_field", "field \"%s\" must be a string", key);
        return NULL;
    }
    return v->valuestring;
}

static int want_int(const cJSON *o, const char *key, double lo, double hi, int64_t *out, srv_err *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v)
        return fail(e, 400, "missing_field", "missing field \"%s\"", key);
    if (!cJSON_IsNumber(v))
        return fail(e, 400, "bad_field", "field \"%s\" must be a number", key);
    double d = v->valuedouble;
    if (!isfinite(d))
        return fail(e, 400, "non_finite", "field \"%s\" is not finite", key);
    if (d != floor(d) || d < lo || d > hi)
        return fail(e, 400, "out_of_range", "field \"%s\" must be an integer in [%.0f, %.0f]", key,
                    lo, hi);
    *out = (int64_t)d;
    return 1;
}

static int copy_name(const char *key, const char *v, char *out, size_t cap, srv_err *e)
{
    if (!pkp_name_ok(v) || strlen(v) >= cap)
        return fail(e, 400, "bad_field", "field \"%s\" must be 1..%zu chars of [A-Za-z0-9._-]", key,
                    cap - 1);
    memcpy(out, v, strlen(v) + 1);
    return 1;
}

static int scalar_fields(const srv_task *t, const cJSON *o, srv_upload_req *u, srv_err *e)
{
    const char *task = want_str(o, "task_id", e);
    if (!task || !want_int(o, "round", 1, 9e15, &u->round, e))
        return 0;
    const char *dev = want_str(o, "device_id", e);
    if (!dev)
        return 0;
    const char *idem = want_str(o, "idempotency_key", e);
    if (!idem || !want_int(o, "examples", 1, (double)t->max_examples, &u->examples, e))
        return 0;
    if (!copy_name("idempotency_key", idem, u->idem, sizeof u->idem, e))
        return 0;
    if (strlen(dev) != PKP_DEVICE_ID_LEN || !pkp_name_ok(dev))
        return fail(e, 400, "bad_field", "field \"device_id\" is not a device id");
    memcpy(u->device_id, dev, PKP_DEVICE_ID_LEN + 1);
    /* compared with the task after the packed fields (PROTOCOL 4 gives the order) */
    snprintf(u->task_id, sizeof u->task_id, "%s", task);
    u->task_ok = strcmp(task, t->task_id) == 0;
    return 1;
}

static int packed_fields(const srv_task *t, const cJSON *o, srv_upload_req *u, srv_err *e)
{
    const char *b64 = want_str(o, "updates", e);
    if (!b64)
        return 0;
    const char *sig = want_str(o, "signature", e);
    if (!sig)
        return 0;
    pk_status st =
        pkp_b64_decode(b64, (size_t)t->pool_size * PKP_PAIR_BYTES, &u->updates, &u->updates_len);
    if (st == PK_ERR_LIMIT)
        return fail(e, 400, "out_of_range", "updates: more pairs than the pool has seeds (%u)",
                    (unsigned)t->pool_size);
    if (st != PK_OK)
        return fail(e, st == PK_ERR_NOMEM ? 500 : 400,
                    st == PK_ERR_NOMEM ? "internal" : "bad_field", "updates: not valid base64");
    const char *code = pkp_check_updates(u->updates, u->updates_len, t->pool_size, t->max_abs_g,
                                         e->msg, sizeof e->msg);
    if (code) {
        e->status = 400;
        e->code = code;
        return 0;
    }
    if (pkp_unhex(sig, u->sig, 64) != PK_OK)
        return fail(e, 400, "bad_field", "field \"signature\" must be 128 hex chars");
    return 1;
}

int srv_upload_parse(const srv_task *t, const char *body, size_t len, int64_t path_round,
                     srv_upload_req *u, srv_err *e)
{
    memset(u, 0, sizeof *u);
    memset(e, 0, sizeof *e);
    cJSON *o = cJSON_ParseWithLength(body ? body : "", body ? len : 0);
    int ok = 0;
    if (!o || !cJSON_IsObject(o)) {
        fail(e, 400, "bad_json", "the body is not a JSON object");
        goto out;
    }
    if (!scalar_fields(t, o, u, e))
        goto out;
    if (u->round != path_round) {
        fail(e, 400, "bad_field",
             "field \"round\" (%lld) differs from the round in the path "
             "(%lld)",
             (long long)u->round, (long long)path_round);
        goto out;
    }
    if (!packed_fields(t, o, u, e))
        goto out;
    if (!u->task_ok) {
        fail(e, 404, "unknown_task", "task %s is not this coordinator's task", u->task_id);
        goto out;
    }
    ok = 1;
out:
    cJSON_Delete(o);
    if (!ok)
        srv_upload_req_free(u);
    return ok;
}

void srv_upload_req_free(srv_upload_req *u)
{
    if (!u)
        return;
    free(u->updates);
    u->updates = NULL;
    u->updates_len = 0;
}
