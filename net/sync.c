/* sync.c: the federated round (DESIGN 7, docs/SYNC.md): registration, the outbox, the task and its
 * seed pool, catch-up with the hash-chained global log (checked and stored), local MeZO steps
 * through the caller's model ops, the signed upload, the wait for the round to close and the
 * replay of the log on the base model. Only seeds (pool indices), scalars, counts and signatures
 * leave the device. The wire format is sync_wire.c, HTTP http.c, the privacy accountant dp.c;
 * the weights stay behind the ops. */
#include "pk_crypto.h"
#include "pk_mezo.h"
#include "pk_store.h"
#include "sync_impl.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct sess {
    pk_store *s;
    const pk_sync_params *p;
    const pk_sync_model_ops *ops;
    pk_http *h;
    int srv_n; /* length of p->server without trailing '/' (for messages naming a URL) */
    char *err;
    size_t errlen;
    char device_id[24];
    sync_task t;
    pk_sync_report *rep;
    int64_t have_version; /* log entries verified and stored locally */
    uint8_t have_hash[SYNC_HASH];
} sess;

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

/* ---- requests to the coordinator ------------------------------------------------------------- */

/* One request; *json owned (cJSON_Delete). A 4xx/5xx answer is PK_OK with *status set, its error
 * code in code[64] and a message naming the URL, status and code in x->err. */
static pk_status call(sess *x, const char *method, const char *path, const char *body, long *status,
                      cJSON **json, char code[64])
{
    char *resp = NULL, why[384];
    size_t n = 0;
    *json = NULL;
    code[0] = '\0';
    pk_status st = pk_http_request(x->h, method, path, body, body ? strlen(body) : 0, PK_HTTP_JSON,
                                   status, &resp, &n, why, sizeof why);
    if (st != PK_OK)
        return fail(x, st, "coordinator: %s", why);
    *json = cJSON_ParseWithLength(resp, n);
    free(resp);
    if (!*json)
        return fail(x, PK_ERR_FORMAT, "%s %.*s%s: HTTP %ld with a body that is not JSON", method,
                    x->srv_n, x->p->server, path, *status);
    if (*status >= 400) {
        const char *m = NULL;
        sync_answer_error(*json, code, &m);
        fail(x, PK_ERR_HTTP, "%s %.*s%s: HTTP %ld %s: %s", method, x->srv_n, x->p->server, path,
             *status, code, m ? m : "(no message)");
    }
    return PK_OK;
}

/* An answer whose status is not the one expected; call() already described a 4xx/5xx. */
static pk_status unexpected(sess *x, const char *method, const char *path, long status)
{
    if (status >= 400)
        return PK_ERR_HTTP;
    return fail(x, PK_ERR_HTTP, "%s %.*s%s: unexpected HTTP %ld", method, x->srv_n, x->p->server,
                path, status);
}

/* ---- sync state (store key/value, not secret) ---------------------------------------------- */

static pk_status state_get(sess *x, const char *key, char **val)
{
    char serr[512] = ""; /* what the store says on failure */
    pk_status st = pk_store_state_get(x->s, key, val, serr, sizeof serr);
    if (st != PK_OK && st != PK_ERR_NOTFOUND)
        return fail(x, st, "store: reading %s: %s", key, serr);
    return st;
}

static pk_status state_set(sess *x, const char *key, const char *val)
{
    char serr[512] = ""; /* what the store says on failure */
    pk_status st = pk_store_state_set(x->s, key, val, serr, sizeof serr);
    if (st != PK_OK)
        return fail(x, st, "store: writing %s: %s", key, serr);
    return PK_OK;
}

static void task_key(const sess *x, const char *what, char *out, size_t n)
{
    snprintf(out, n, "sync.%s.%s", x->t.id, what);
}

/* ---- registration ---------------------------------------------------------------------------- */

static pk_status do_register(sess *x)
{
    char serr[512] = ""; /* what the store says on failure */
    uint8_t pk[32];
    char body[128], code[64];
    char *srv = NULL, *did = NULL;
    cJSON *j = NULL;
    long status = 0;
    pk_status st = pk_store_identity_public(x->s, pk, serr, sizeof serr);
    if (st != PK_OK)
        return fail(x, st, "store: device identity: %s", serr);
    sync_device_id(pk, x->device_id);
    st = state_get(x, "sync.server", &srv);
    if (st == PK_OK)
        st = state_get(x, "sync.device_id", &did);
    if (st == PK_OK && !strcmp(srv, x->p->server) && !strcmp(did, x->device_id))
        goto out; /* registered with this coordinator before */
    if (st != PK_OK && st != PK_ERR_NOTFOUND)
        goto out;
    sync_register_body(pk, body, sizeof body);
    st = call(x, "POST", "/v1/devices", body, &status, &j, code);
    if (st == PK_OK && status != 200 && status != 201)
        st = unexpected(x, "POST", "/v1/devices", status);
    const char *got = st == PK_OK ? sync_answer_device_id(j) : NULL;
    if (st == PK_OK && (!got || strcmp(got, x->device_id) != 0))
        st = fail(x, PK_ERR_FORMAT, "POST %.*s/v1/devices: field device_id is %.32s, expected %s",
                  x->srv_n, x->p->server, got ? got : "(missing)", x->device_id);
    if (st == PK_OK)
        st = state_set(x, "sync.device_id", x->device_id);
    if (st == PK_OK)
        st = state_set(x, "sync.server", x->p->server);
out:
    cJSON_Delete(j);
    free(srv);
    free(did);
    return st;
}

/* ---- the task -------------------------------------------------------------------------------- */

static pk_status fetch_task(sess *x)
{
    char path[128], code[64], why[256];
    cJSON *j = NULL;
    long status = 0;
    if (x->p->task_id)
        snprintf(path, sizeof path, "/v1/tasks/%s", x->p->task_id);
    else
        snprintf(path, sizeof path, "/v1/task");
    pk_status st = call(x, "GET", path, NULL, &status, &j, code);
    if (st == PK_OK && status == 404)
        st = fail(x, PK_ERR_NOTFOUND, "GET %.*s%s: HTTP 404: the coordinator has no task%s%s",
                  x->srv_n, x->p->server, path, x->p->task_id ? " " : "",
                  x->p->task_id ? x->p->task_id : "");
    else if (st == PK_OK && status != 200)
        st = unexpected(x, "GET", path, status);
    if (st == PK_OK) {
        st = sync_task_parse(j, &x->t, why, sizeof why);
        if (st != PK_OK)
            fail(x, st, "GET %.*s%s: %s", x->srv_n, x->p->server, path, why);
    }
    cJSON_Delete(j);
    if (st != PK_OK)
        return st;
    if (x->p->task_id && strcmp(x->p->task_id, x->t.id) != 0)
        return fail(x, PK_ERR_FORMAT, "asked for task %s, the coordinator answered %s",
                    x->p->task_id, x->t.id);
    return sync_task_pool(&x->t);
}

/* The base model must be the task's and train the same subset: every device must update the
 * same tensors from the same weights, or replaying the log diverges. */
static pk_status check_model(sess *x)
{
    char hash[65];
    pk_status st = x->ops->reset(x->ops->user);
    if (st == PK_OK)
        st = x->ops->hash(x->ops->user, hash);
    if (st != PK_OK)
        return fail(x, st, "model: cannot hash the base weights");
    if (strcmp(hash, x->t.base_hash) != 0)
        return fail(x, PK_ERR_ARG,
                    "the task %s needs the base model with hash %s, this model has %s", x->t.id,
                    x->t.base_hash, hash);
    /* a LoRA spec compares in its canonical form (r, alpha and seed explicit) */
    char want[256] = "", have[256] = "";
    pk_mezo_trainable_canonical(x->t.trainable, want, sizeof want);
    if (x->ops->trainable)
        pk_mezo_trainable_canonical(x->ops->trainable, have, sizeof have);
    if (x->ops->trainable && x->t.trainable[0] && strcmp(have, want) != 0)
        return fail(x, PK_ERR_ARG,
                    "the task %s trains the subset '%s', this device's trainable subset is '%s'",
                    x->t.id, x->t.trainable, x->ops->trainable);
    return PK_OK;
}

/* ---- the global log ------------------------------------------------------------------------ */

/* The newest verified entry, one value so it changes atomically (sync_head_format). */
static pk_status load_head(sess *x)
{
    char key[128], *v = NULL;
    task_key(x, "log_head", key, sizeof key);
    x->have_version = 0;
    memset(x->have_hash, 0, SYNC_HASH);
    pk_status st = state_get(x, key, &v);
    if (st == PK_ERR_NOTFOUND)
        return PK_OK;
    if (st != PK_OK)
        return st;
    if (sync_head_parse(v, &x->have_version, x->have_hash) != PK_OK)
        st = fail(x, PK_ERR_FORMAT, "store: corrupt sync state %s", key);
    free(v);
    return st;
}

static pk_status save_head(sess *x)
{
    char key[128], val[96];
    task_key(x, "log_head", key, sizeof key);
    sync_head_format(x->have_version, x->have_hash, val, sizeof val);
    return state_set(x, key, val);
}

/* Recomputes the hash of entry e chained onto have_hash (PROTOCOL 6) into mine; PK_ERR_AUTH if
 * it is not the hash the entry claims. */
static pk_status verify_entry_hash(sess *x, const sync_entry *e, uint8_t mine[SYNC_HASH])
{
    sync_pair *pr = NULL;
    uint8_t *raw = NULL;
    size_t n = 0, rlen = 0;
    char why[192] = "out of memory";
    pk_status st = sync_unpack_b64(e->updates, x->t.K, &pr, &n, &raw, &rlen, why, sizeof why);
    if (st != PK_OK)
        return fail(x, st, "log: entry %lld: %s", (long long)e->version, why);
    st = sync_entry_hash(x->t.id, e, raw, rlen, x->have_hash, mine);
    if (st == PK_OK && pk_secure_memcmp(mine, e->hash, SYNC_HASH) != 0)
        st = fail(x, PK_ERR_AUTH, "log: entry %lld does not match its hash (tampered entry)",
                  (long long)e->version);
    free(raw);
    free(pr);
    return st;
}

/* Stores a verified entry (sync_log_value_format) and advances the head to it. */
static pk_status store_entry(sess *x, const sync_entry *e, const uint8_t hash[SYNC_HASH])
{
    char key[160], *val = NULL;
    pk_status st = sync_log_value_format(e->lr, e->updates, &val);
    if (st != PK_OK)
        return st;
    snprintf(key, sizeof key, "sync.%s.log.%lld", x->t.id, (long long)e->version);
    st = state_set(x, key, val);
    free(val);
    if (st != PK_OK)
        return st;
    x->have_version = e->version;
    memcpy(x->have_hash, hash, SYNC_HASH);
    return save_head(x);
}

/* Checks one entry against the chain and stores it. */
static pk_status accept_entry(sess *x, const cJSON *je)
{
    sync_entry e;
    uint8_t mine[SYNC_HASH];
    char why[192];
    pk_status st = sync_entry_parse(je, &e, why, sizeof why);
    if (st != PK_OK)
        return fail(x, st, "%s (the entry after version %lld)", why, (long long)x->have_version);
    if (e.version != x->have_version + 1)
        return fail(x, PK_ERR_AUTH, "log: expected version %lld, got %lld (history rewritten?)",
                    (long long)x->have_version + 1, (long long)e.version);
    if (pk_secure_memcmp(e.prev, x->have_hash, SYNC_HASH) != 0)
        return fail(x, PK_ERR_AUTH,
                    "log: entry %lld does not chain onto the history this device accepted "
                    "(rewritten history)",
                    (long long)e.version);
    st = verify_entry_hash(x, &e, mine);
    if (st == PK_OK)
        st = store_entry(x, &e, mine);
    return st;
}

/* One page of the log after have_version; *count entries were accepted, *more says if the
 * coordinator has more. */
static pk_status pull_page(sess *x, int *count, int *more)
{
    char path[96], code[64], why[192];
    cJSON *j = NULL;
    const cJSON *ents = NULL, *e;
    long status = 0;
    int64_t head = 0;
    snprintf(path, sizeof path, "/v1/log?since=%lld&limit=256", (long long)x->have_version);
    pk_status st = call(x, "GET", path, NULL, &status, &j, code);
    if (st == PK_OK && status != 200)
        st = unexpected(x, "GET", path, status);
    if (st == PK_OK && sync_log_page_parse(j, x->t.id, &head, &ents, more, why, sizeof why))
        st = fail(x, PK_ERR_FORMAT, "GET %.*s%s: %s", x->srv_n, x->p->server, path, why);
    if (st == PK_OK && head < x->have_version)
        st = fail(x, PK_ERR_AUTH,
                  "log: the coordinator's head is version %lld but this device already "
                  "accepted version %lld (rolled-back history refused)",
                  (long long)head, (long long)x->have_version);
    if (st == PK_OK) {
        cJSON_ArrayForEach(e, ents)
        {
            st = accept_entry(x, e);
            if (st != PK_OK)
                break;
            (*count)++;
        }
    }
    cJSON_Delete(j);
    return st;
}

/* Downloads and verifies every entry after have_version. */
static pk_status pull_log(sess *x)
{
    for (;;) {
        int count = 0, more = 0;
        pk_status st = pull_page(x, &count, &more);
        if (st != PK_OK)
            return st;
        if (!more || count == 0)
            return PK_OK;
    }
}

/* Applies stored entry v to the model, in ascending k. */
static pk_status replay_entry(sess *x, int64_t v)
{
    char key[160], *val = NULL;
    sync_pair *pr = NULL;
    size_t n = 0;
    float lr = 0.0f;
    snprintf(key, sizeof key, "sync.%s.log.%lld", x->t.id, (long long)v);
    pk_status st = state_get(x, key, &val);
    if (st == PK_ERR_NOTFOUND)
        return fail(x, PK_ERR_FORMAT, "store: global log entry %lld is missing", (long long)v);
    if (st != PK_OK)
        return st;
    st = sync_log_value_parse(val, x->t.K, &lr, &pr, &n);
    free(val);
    if (st != PK_OK)
        return fail(x, PK_ERR_FORMAT, "store: corrupt global log entry %s", key);
    for (size_t i = 0; i < n && st == PK_OK; i++)
        st = x->ops->apply(x->ops->user, x->t.seeds[pr[i].k], x->t.kind, lr, pr[i].v);
    free(pr);
    if (st != PK_OK)
        return fail(x, st, "model: replaying global log entry %lld failed", (long long)v);
    return PK_OK;
}

/* Base weights + every stored entry, in version order. */
static pk_status replay(sess *x)
{
    pk_status st = x->ops->reset(x->ops->user);
    if (st != PK_OK)
        return fail(x, st, "model: cannot restore the base weights");
    for (int64_t v = 1; v <= x->have_version && st == PK_OK; v++)
        st = replay_entry(x, v);
    return st;
}

/* ---- uploads and the outbox ------------------------------------------------------------------ */

static pk_status outbox_done(sess *x, const char *idem)
{
    char serr[512] = ""; /* what the store says on failure */
    pk_status st = pk_store_outbox_done(x->s, idem, serr, sizeof serr);
    return st == PK_OK ? st : fail(x, st, "store: outbox: %s", serr);
}

/* Sends one outbox body until a definitive answer. *accepted: 1 accepted, 0 refused (4xx, whose
 * status and code go to refusal[96]). */
static pk_status send_upload(sess *x, const char *idem, const char *body, int *accepted,
                             int64_t *round_out, char refusal[96])
{
    char path[96], code[64], tid[SYNC_ID_MAX + 1];
    cJSON *j = NULL;
    long status = 0;
    int64_t r = 0;
    *accepted = 0;
    if (sync_outbox_parse(body, &r, tid) != PK_OK) {
        pk_log(PK_LOG_WARN, "sync: dropping malformed outbox entry %s", idem);
        return outbox_done(x, idem);
    }
    *round_out = r; /* tid: the entry's task, not necessarily the current one */
    snprintf(path, sizeof path, "/v1/rounds/%lld/updates", (long long)r);
    uint64_t before = pk_http_get_stats(x->h).body_up;
    pk_status st = call(x, "POST", path, body, &status, &j, code);
    if (x->rep)
        x->rep->upload_body_bytes += pk_http_get_stats(x->h).body_up - before;
    if (st == PK_OK && status < 500)
        *accepted = status == 200 && sync_answer_accepted(j);
    cJSON_Delete(j);
    if (st != PK_OK || status >= 500)
        return st != PK_OK ? st : PK_ERR_HTTP; /* stays in the outbox */
    snprintf(refusal, 96, "HTTP %ld %s", status, code);
    if (!*accepted)
        pk_log(PK_LOG_WARN, "sync: upload %s for round %lld refused: %s", idem, (long long)r,
               refusal);
    st = outbox_done(x, idem); /* definitive (2xx or 4xx): never resend this body */
    if (st == PK_OK && *accepted) {
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
    char serr[512] = ""; /* what the store says on failure */
    for (;;) {
        char *idem = NULL, *body = NULL, refusal[96];
        pk_status st = pk_store_outbox_peek(x->s, &idem, &body, serr, sizeof serr);
        if (st == PK_ERR_NOTFOUND)
            return PK_OK;
        if (st != PK_OK)
            return fail(x, st, "store: outbox: %s", serr);
        st = send_upload(x, idem, body, last_accepted, last_round, refusal);
        free(idem);
        free(body);
        if (st != PK_OK)
            return st;
        if (x->rep)
            x->rep->flushed++;
    }
}

/* ---- privacy accounting -------------------------------------------------------------------- */

/* The task's accumulated RDP from the sync state; *found 0 (and all zero) if never accounted. */
static pk_status dp_load(sess *x, const char *key, double rdp[PK_DP_N_ORDERS], int *found)
{
    char *v = NULL;
    memset(rdp, 0, PK_DP_N_ORDERS * sizeof *rdp);
    *found = 0;
    pk_status st = state_get(x, key, &v);
    if (st == PK_ERR_NOTFOUND)
        return PK_OK;
    if (st != PK_OK)
        return st;
    *found = 1;
    if (sync_rdp_parse(v, rdp) != PK_OK)
        st = fail(x, PK_ERR_FORMAT, "store: corrupt sync state %s", key);
    free(v);
    return st;
}

static pk_status dp_account(sess *x, double q, double sigma_eff, int64_t steps)
{
    char key[128], *buf = NULL;
    double rdp[PK_DP_N_ORDERS];
    int found = 0;
    task_key(x, "dp_rdp", key, sizeof key);
    pk_status st = dp_load(x, key, rdp, &found);
    if (st != PK_OK)
        return st;
    if (sigma_eff > 0.0) {
        st = pk_dp_rdp_add(q, sigma_eff, steps, rdp);
        if (st != PK_OK)
            return fail(x, st, "dp: cannot account %lld steps at q %g, noise multiplier %g",
                        (long long)steps, q, sigma_eff);
    } else {
        for (int j = 0; j < PK_DP_N_ORDERS; j++)
            rdp[j] = (double)INFINITY; /* clipping without noise: no guarantee */
    }
    st = sync_rdp_format(rdp, &buf);
    if (st == PK_OK)
        st = state_set(x, key, buf);
    free(buf);
    return st;
}

/* Reports epsilon spent so far on this task (if DP was ever used). */
static pk_status dp_report(sess *x)
{
    char key[128];
    double rdp[PK_DP_N_ORDERS];
    int found = 0, inf = 0;
    task_key(x, "dp_rdp", key, sizeof key);
    pk_status st = dp_load(x, key, rdp, &found);
    if (st != PK_OK || !found)
        return st;
    for (int j = 0; j < PK_DP_N_ORDERS; j++)
        inf |= isinf(rdp[j]);
    x->rep->delta = x->p->dp_delta;
    if (inf || pk_dp_epsilon(rdp, x->p->dp_delta, &x->rep->epsilon, NULL) != PK_OK)
        x->rep->epsilon = (double)INFINITY;
    return PK_OK;
}

/* ---- local steps and the signed upload ------------------------------------------------------- */

/* Per pool index: the sum of the uploaded g of the local steps that drew it. */
typedef struct step_sums {
    double *sum;      /* [K] */
    uint8_t *used;    /* [K] 1 if a step drew k */
    int64_t examples; /* examples seen by all steps */
} step_sums;

/* Runs the task's local steps from the global model, adding each step's g to ss. */
static pk_status run_steps(sess *x, double clip, double noise, step_sums *ss)
{
    const sync_task *t = &x->t;
    for (int64_t i = 0; i < t->local_steps; i++) {
        uint32_t k = x->p->pick
                         ? x->p->pick(x->p->pick_user, t->round, i, (uint32_t)t->K) % (uint32_t)t->K
                         : pk_crypto_random_uniform((uint32_t)t->K);
        float g = 0.0f;
        int64_t nb = 0;
        pk_status st = x->ops->grad(x->ops->user, t->seeds[k], t->kind, t->eps, &g, &nb);
        if (st != PK_OK)
            return fail(x, st, "model: local step %lld failed", (long long)i);
        if (!isfinite(g)) {
            pk_log(PK_LOG_WARN, "sync: local step %lld gave a non-finite g; skipped", (long long)i);
            g = 0.0f;
        }
        if (clip > 0.0)
            g = pk_dp_clip(g, (float)clip);
        /* the local model moves with the clean (clipped) g; it is discarded after the round */
        st = x->ops->apply(x->ops->user, t->seeds[k], t->kind, t->lr, g);
        if (st != PK_OK)
            return fail(x, st, "model: local update %lld failed", (long long)i);
        double up = (double)g;
        if (clip > 0.0 && noise > 0.0)
            up += pk_dp_gaussian(noise * clip);
        ss->sum[k] += up;
        ss->used[k] = 1;
        ss->examples += nb > 0 ? nb : 1;
        if (x->rep)
            x->rep->steps++;
    }
    return PK_OK;
}

static int cmp_pair(const void *a, const void *b)
{
    const sync_pair *x = a, *y = b;
    return (x->k > y->k) - (x->k < y->k);
}

/* The non-zero sums as pairs in ascending k, each clamped to the task's bound; *out owned. */
static pk_status collect_pairs(const sync_task *t, const step_sums *ss, sync_pair **out,
                               size_t *n_out)
{
    sync_pair *pr = malloc(((size_t)t->local_steps + 1) * sizeof *pr);
    size_t n = 0;
    if (!pr)
        return PK_ERR_NOMEM;
    for (int64_t k = 0; k < t->K; k++) {
        if (!ss->used[k])
            continue;
        double v = ss->sum[k];
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
    *out = pr;
    *n_out = n;
    return PK_OK;
}

/* Runs the local steps; fills the pairs to upload and the example count (capped by the task). */
static pk_status local_steps(sess *x, double clip, double noise, sync_pair **out, size_t *n_out,
                             int64_t *examples)
{
    step_sums ss = {calloc((size_t)x->t.K, sizeof(double)), calloc((size_t)x->t.K, 1), 0};
    pk_status st = (ss.sum && ss.used) ? run_steps(x, clip, noise, &ss) : PK_ERR_NOMEM;
    if (st == PK_OK)
        st = collect_pairs(&x->t, &ss, out, n_out);
    *examples = ss.examples < x->t.max_examples ? ss.examples : x->t.max_examples;
    free(ss.used);
    free(ss.sum);
    return st;
}

/* Signs the upload and writes it to the outbox. */
static pk_status make_upload(sess *x, const sync_pair *pr, size_t n, int64_t examples)
{
    char serr[512] = ""; /* what the store says on failure */
    uint8_t *packed = NULL, *msg = NULL, sig[PK_SIGN_BYTES];
    size_t mlen = 0;
    char *body = NULL, idem[40];
    pk_status st = sync_pack_pairs(pr, n, &packed);
    if (st != PK_OK)
        return st;
    sync_idempotency_key(idem);
    sync_upload u = {.task_id = x->t.id,
                     .round = x->t.round,
                     .device_id = x->device_id,
                     .idem = idem,
                     .examples = examples,
                     .packed = packed,
                     .packed_len = n * SYNC_PAIR_SIZE};
    st = sync_upload_msg(&u, &msg, &mlen);
    if (st == PK_OK) {
        st = pk_store_identity_sign(x->s, msg, mlen, sig, serr, sizeof serr);
        if (st != PK_OK)
            st = fail(x, st, "store: signing: %s", serr);
    }
    if (st == PK_OK)
        st = sync_upload_body(&u, sig, &body);
    if (st == PK_OK) {
        /* the outbox first: from here on a crash or a lost answer never loses or duplicates it */
        st = pk_store_outbox_put(x->s, idem, body, serr, sizeof serr);
        if (st != PK_OK)
            st = fail(x, st, "store: outbox: %s", serr);
    }
    if (st == PK_OK && x->p->on_upload)
        x->p->on_upload(x->p->upload_user, x->t.round, packed, n, examples);
    free(body);
    free(msg);
    free(packed);
    return st;
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
        pk_status st = call(x, "GET", "/v1/health", NULL, &status, &j, code);
        if (st == PK_OK && status == 200 && sync_health_version(j) >= version)
            *closed = 1;
        cJSON_Delete(j);
        if (st != PK_OK)
            return st;
        if (*closed || pk_time_now() >= t_end)
            return PK_OK;
        if (pk_sleep(0.05))
            return PK_OK; /* Ctrl-C: as if wait_s had passed */
    }
}

/* ---- the round ------------------------------------------------------------------------------- */

/* Sends the upload make_upload just queued (the outbox's oldest entry: flush_outbox emptied it). */
static pk_status send_new_upload(sess *x)
{
    char serr[512] = ""; /* what the store says on failure */
    char *idem = NULL, *body = NULL, refusal[96] = "";
    int accepted = 0;
    int64_t r = 0;
    pk_status st = pk_store_outbox_peek(x->s, &idem, &body, serr, sizeof serr);
    if (st != PK_OK) {
        st = fail(x, st, "store: outbox: %s", serr);
    } else {
        st = send_upload(x, idem, body, &accepted, &r, refusal);
        if (st == PK_OK && !accepted)
            st = fail(x, PK_ERR_HTTP, "the coordinator refused the update for round %lld (%s)",
                      (long long)r, refusal);
    }
    x->rep->uploaded = accepted;
    free(idem);
    free(body);
    return st;
}

static pk_status upload_round(sess *x, int64_t uploaded_round)
{
    double clip = x->p->dp_clip > 0 ? x->p->dp_clip : x->t.dp_clip;
    double noise = x->p->dp_noise > 0 ? x->p->dp_noise : x->t.dp_noise;
    sync_pair *pr = NULL;
    size_t n = 0;
    int64_t examples = 0;
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
        st = make_upload(x, pr, n, examples);
    free(pr);
    if (st != PK_OK)
        return st;
    x->rep->round = x->t.round;
    x->rep->pairs = (int64_t)n;
    x->rep->examples = examples;
    return send_new_upload(x);
}

/* The round this device last uploaded to for the task (0: none). */
static pk_status uploaded_round(sess *x, int64_t *round)
{
    char key[128], *v = NULL;
    task_key(x, "upload_round", key, sizeof key);
    *round = 0;
    pk_status st = state_get(x, key, &v);
    if (st == PK_OK)
        *round = strtoll(v, NULL, 10);
    free(v);
    return st == PK_ERR_NOTFOUND ? PK_OK : st;
}

/* After the upload: wait for the round to close, fetch and replay what is new, report. */
static pk_status finish_round(sess *x)
{
    int closed = 0;
    pk_status st = PK_OK;
    if (x->rep->round > 0 && x->p->wait_s > 0)
        st = wait_close(x, x->rep->round, &closed);
    int64_t before = x->have_version;
    if (st == PK_OK)
        st = pull_log(x);
    if (st == PK_OK && x->have_version != before)
        st = replay(x);
    if (st == PK_OK) {
        st = x->ops->hash(x->ops->user, x->rep->model_hash);
        if (st != PK_OK)
            return fail(x, st, "model: cannot hash the global weights");
    }
    if (st != PK_OK)
        return st;
    x->rep->round_closed = x->rep->round > 0 && x->have_version >= x->rep->round;
    x->rep->log_version = x->have_version;
    pk_hex_encode(x->rep->log_head, sizeof x->rep->log_head, x->have_hash, SYNC_HASH);
    return dp_report(x);
}

static pk_status run_round(sess *x)
{
    int64_t last_round = 0, up_round = 0;
    int last_acc = 0;
    pk_status st = do_register(x);
    if (st == PK_OK)
        st = flush_outbox(x, &last_round, &last_acc);
    if (st == PK_OK)
        st = fetch_task(x);
    if (st != PK_OK)
        return st;
    snprintf(x->rep->task_id, sizeof x->rep->task_id, "%s", x->t.id);
    snprintf(x->rep->device_id, sizeof x->rep->device_id, "%s", x->device_id);
    st = check_model(x);
    if (st == PK_OK)
        st = load_head(x);
    if (st == PK_OK)
        st = pull_log(x);
    if (st == PK_OK)
        st = replay(x);
    if (st == PK_OK)
        st = uploaded_round(x, &up_round);
    if (st != PK_OK)
        return st;
    if (x->p->upload && x->t.round > x->have_version) {
        st = upload_round(x, up_round);
        if (st != PK_OK)
            return st;
    } else if (last_acc) {
        x->rep->round = last_round;
        x->rep->uploaded = 1;
    }
    return finish_round(x);
}

/* The parameters' own consistency; err names the field. */
static pk_status check_params(sess *x, pk_store *s, const pk_sync_params *p,
                              const pk_sync_model_ops *ops)
{
    if (!s || !p || !p->server || !ops || !ops->grad || !ops->apply || !ops->reset || !ops->hash)
        return fail(x, PK_ERR_ARG, "sync: missing store, server or model");
    if (!(p->dp_clip >= 0.0) || !(p->dp_noise >= 0.0) || !(p->dp_delta > 0.0 && p->dp_delta < 1.0))
        return fail(x, PK_ERR_ARG, "sync: dp_clip and dp_noise must be >= 0, delta in (0, 1)");
    if (p->dp_noise > 0.0 && !(p->dp_clip > 0.0))
        return fail(x, PK_ERR_ARG,
                    "sync: dp_noise needs dp_clip > 0 (the noise is relative to it)");
    if (p->task_id && !sync_valid_id(p->task_id))
        return fail(x, PK_ERR_ARG, "sync: bad task id '%s'", p->task_id);
    return PK_OK;
}

pk_status pk_sync_round(pk_store *s, const pk_sync_params *p, const pk_sync_model_ops *ops,
                        pk_sync_report *rep, char *err, size_t errlen)
{
    pk_sync_report local;
    sess x;
    char why[256] = "";
    memset(&x, 0, sizeof x);
    if (!rep)
        rep = &local;
    memset(rep, 0, sizeof *rep);
    if (err && errlen)
        err[0] = '\0';
    x.err = err;
    x.errlen = errlen;
    pk_status st = check_params(&x, s, p, ops);
    if (st != PK_OK)
        return st;
    x.s = s;
    x.p = p;
    x.ops = ops;
    x.rep = rep;
    x.srv_n = (int)strlen(p->server);
    while (x.srv_n > 0 && p->server[x.srv_n - 1] == '/')
        x.srv_n--;
    st = pk_http_create(p->server, p->http, &x.h, why, sizeof why);
    if (st != PK_OK)
        return fail(&x, st, "sync: %s", why);
    st = run_round(&x);
    rep->http = pk_http_get_stats(x.h);
    pk_http_destroy(x.h);
    free(x.t.seeds);
    return st;
}
