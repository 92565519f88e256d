/* server.c: the coordinator's HTTP layer on libmicrohttpd: body collection with caps, fault
 * injection, request capture, and the /v1 API of docs/PROTOCOL.md (register, task, upload, log,
 * health). State lives in db.c; hub files in hub.c.
 * Thread safety: handlers run on MHD's thread pool; they share only srv (read-only task, the
 * self-locking srv_db, atomics). */
#include "server_impl.h"
#include "srv_client.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct req {
    char *body;      /* collected request body (NUL-terminated) */
    size_t len, cap; /* bytes */
    size_t limit;    /* body cap for this route */
    int too_big;
    int answered; /* a response was queued early (413 by Content-Length) */
    srv_fault fault;
    double delay_ms;
    uint64_t id;
} req;

double srv_wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- replies --------------------------------------------------------------------------------- */

typedef struct trunc_body {
    char *data;
    size_t half;
} trunc_body;

static ssize_t trunc_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    trunc_body *t = cls;
    if (pos >= t->half)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    size_t n = t->half - (size_t)pos;
    if (n > max)
        n = max;
    memcpy(buf, t->data + pos, n);
    return (ssize_t)n;
}

static void trunc_free(void *cls)
{
    trunc_body *t = cls;
    free(t->data);
    free(t);
}

int srv_reply(struct MHD_Connection *c, unsigned status, const char *json, srv_fault fault)
{
    if (fault == SRV_FAULT_DROP)
        return MHD_NO; /* the request was handled; the answer is lost */
    size_t len = strlen(json);
    struct MHD_Response *r = NULL;
    if (fault == SRV_FAULT_TRUNCATE && len > 1) {
        trunc_body *t = malloc(sizeof *t);
        char *copy = malloc(len);
        if (!t || !copy) {
            free(t);
            free(copy);
            return MHD_NO;
        }
        memcpy(copy, json, len);
        t->data = copy;
        t->half = len / 2;
        r = MHD_create_response_from_callback(len, 4096, trunc_read, t, trunc_free);
        if (!r) {
            trunc_free(t);
            return MHD_NO;
        }
    } else {
        r = MHD_create_response_from_buffer(len, (void *)(uintptr_t)json, MHD_RESPMEM_MUST_COPY);
        if (!r)
            return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "application/json");
    int ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

/* Appends s to out as JSON string contents (quotes, backslashes and controls escaped). */
static void json_escape(const char *s, char *out, size_t cap)
{
    size_t o = 0;
    for (; *s && o + 7 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            out[o++] = '\\';
            out[o++] = (char)ch;
        } else if (ch < 0x20) {
            o += (size_t)snprintf(out + o, cap - o, "\\u%04x", ch);
        } else {
            out[o++] = (char)ch;
        }
    }
    out[o] = '\0';
}

int srv_reply_error(struct MHD_Connection *c, unsigned status, const char *code, srv_fault fault,
                    const char *fmt, ...)
{
    char msg[512], esc[1100], body[1300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_escape(msg, esc, sizeof esc);
    snprintf(body, sizeof body, "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}", code, esc);
    return srv_reply(c, status, body, fault);
}

/* ---- /v1 handlers ---------------------------------------------------------------------------- */

static int h_health(srv *s, struct MHD_Connection *c, srv_fault f)
{
    srv_round r;
    char body[128];
    srv_db_round_get(s->db, &r);
    snprintf(body, sizeof body, "{\"ok\":true,\"round\":%lld,\"log_version\":%lld}",
             (long long)r.round, (long long)r.log_version);
    return srv_reply(c, 200, body, f);
}

static cJSON *parse_body(struct MHD_Connection *c, const req *q, srv_fault f, int *ret)
{
    cJSON *o = cJSON_ParseWithLength(q->body ? q->body : "", q->len);
    if (!o || !cJSON_IsObject(o)) {
        cJSON_Delete(o);
        *ret = srv_reply_error(c, 400, "bad_json", f, "the body is not a JSON object");
        return NULL;
    }
    return o;
}

/* A string member: NULL after queueing a 400 (missing or wrong type). */
static const char *want_str(struct MHD_Connection *c, const cJSON *o, const char *key, srv_fault f,
                            int *ret)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) {
        *ret = srv_reply_error(c, 400, "missing_field", f, "missing field \"%s\"", key);
        return NULL;
    }
    if (!cJSON_IsString(v)) {
        *ret = srv_reply_error(c, 400, "bad_field", f, "field \"%s\" must be a string", key);
        return NULL;
    }
    return v->valuestring;
}

static int h_register(srv *s, struct MHD_Connection *c, const req *q, srv_fault f)
{
    int ret = MHD_NO, created = 0;
    uint8_t pk[32];
    char id[PKP_DEVICE_ID_LEN + 1], hex[65], body[256];
    cJSON *o = parse_body(c, q, f, &ret);
    if (!o)
        return ret;
    const char *key = want_str(c, o, "public_key", f, &ret);
    if (!key)
        goto out;
    if (pkp_unhex(key, pk, 32) != PK_OK) {
        ret = srv_reply_error(c, 400, "bad_field", f,
                              "field \"public_key\" must be 64 hex chars (Ed25519 public key)");
        goto out;
    }
    /* All-zero and small-order points verify forged signatures for any message: refuse them. */
    if (!pkp_pubkey_ok(pk)) {
        ret = srv_reply_error(c, 400, "bad_field", f,
                              "field \"public_key\" is not a valid Ed25519 public key "
                              "(small order or not on the curve)");
        goto out;
    }
    pkp_device_id(pk, id);
    pk_status st = srv_db_device_put(s->db, id, pk, srv_wall_now(), &created);
    if (st == PK_ERR_AUTH) {
        ret = srv_reply_error(c, 409, "device_id_collision", f, "device id %s is taken", id);
        goto out;
    }
    if (st != PK_OK) {
        ret = srv_reply_error(c, 500, "internal", f, "database error");
        goto out;
    }
    pkp_hex(pk, 32, hex);
    snprintf(body, sizeof body, "{\"device_id\":\"%s\",\"public_key\":\"%s\"}", id, hex);
    ret = srv_reply(c, created ? 201 : 200, body, f);
out:
    cJSON_Delete(o);
    return ret;
}

static void tick(srv *s)
{
    if (srv_db_tick(s->db, srv_wall_now()) != PK_OK)
        pk_log(PK_LOG_ERROR, "server: closing the round at its deadline failed");
}

static int h_task(srv *s, struct MHD_Connection *c, srv_fault f)
{
    srv_round r;
    char head[65];
    tick(s);
    srv_db_round_get(s->db, &r);
    pkp_hex(r.head, PKP_HASH_BYTES, head);
    char *prefix = srv_task_json_prefix(&s->task);
    if (!prefix)
        return srv_reply_error(c, 500, "internal", f, "out of memory");
    size_t cap = strlen(prefix) + 512;
    char *body = malloc(cap);
    int ret;
    if (!body) {
        ret = srv_reply_error(c, 500, "internal", f, "out of memory");
    } else {
        double left = r.deadline - srv_wall_now();
        snprintf(body, cap,
                 "%s,\"round\":%lld,\"round_opened_at\":%.3f,\"round_deadline\":%.3f,"
                 "\"deadline_in\":%.3f,\"round_uploads\":%lld,\"log_version\":%lld,"
                 "\"log_head\":\"%s\"}",
                 prefix, (long long)r.round, r.opened_at, r.deadline, left > 0 ? left : 0.0,
                 (long long)r.uploads, (long long)r.log_version, head);
        ret = srv_reply(c, 200, body, f);
    }
    free(body);
    free(prefix);
    return ret;
}

static int h_log(srv *s, struct MHD_Connection *c, srv_fault f)
{
    const char *sv = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "since");
    const char *lv = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "limit");
    char *end = NULL;
    long long since = 0, limit = 64;
    if (sv) {
        errno = 0;
        since = strtoll(sv, &end, 10);
        if (end == sv || *end || since < 0 || errno)
            return srv_reply_error(c, 400, "bad_query", f, "since must be an integer >= 0");
    }
    if (lv) {
        errno = 0;
        limit = strtoll(lv, &end, 10);
        if (end == lv || *end || limit < 1 || limit > 256 || errno)
            return srv_reply_error(c, 400, "bad_query", f, "limit must be an integer in [1, 256]");
    }
    tick(s);
    char *json = NULL;
    if (srv_db_log_json(s->db, since, (int)limit, &json) != PK_OK)
        return srv_reply_error(c, 500, "internal", f, "database error");
    int ret = srv_reply(c, 200, json, f);
    free(json);
    return ret;
}

/* ---- upload ---------------------------------------------------------------------------------- */

static int submit_answer(struct MHD_Connection *c, srv_submit_result res, const char *response,
                         const srv_upload_req *u, srv_fault f)
{
    switch (res) {
    case SRV_SUB_ACCEPTED:
    case SRV_SUB_REPEAT:
        return srv_reply(c, 200, response, f);
    case SRV_SUB_IDEM_CONFLICT:
        return srv_reply_error(c, 409, "idempotency_conflict", f,
                               "idempotency key %s was used "
                               "by device %s for a different upload",
                               u->idem, u->device_id);
    case SRV_SUB_ROUND_CLOSED:
        return srv_reply_error(c, 409, "round_closed", f, "round %lld is closed",
                               (long long)u->round);
    case SRV_SUB_ROUND_NOT_OPEN:
        return srv_reply_error(c, 409, "round_not_open", f, "round %lld is not open yet",
                               (long long)u->round);
    case SRV_SUB_DUPLICATE:
        return srv_reply_error(c, 409, "duplicate_upload", f,
                               "device %s already uploaded in "
                               "round %lld",
                               u->device_id, (long long)u->round);
    }
    return srv_reply_error(c, 500, "internal", f, "unknown submit result");
}

/* Device, signature, then the database decision. */
static int upload_commit(srv *s, struct MHD_Connection *c, const srv_upload_req *u, srv_fault f)
{
    uint8_t pk[32], *msg = NULL;
    size_t mlen = 0;
    char *response = NULL;
    srv_submit_result res = SRV_SUB_ACCEPTED;
    int ret;
    pk_status st = srv_db_device_get(s->db, u->device_id, pk);
    if (st == PK_ERR_NOTFOUND)
        return srv_reply_error(c, 403, "unknown_device", f, "device %s is not registered",
                               u->device_id);
    if (st != PK_OK)
        return srv_reply_error(c, 500, "internal", f, "database error");
    if (pkp_upload_msg(u->task_id, (uint64_t)u->round, u->device_id, u->idem, (uint64_t)u->examples,
                       u->updates, u->updates_len, &msg, &mlen) != PK_OK)
        return srv_reply_error(c, 500, "internal", f, "out of memory");
    if (crypto_sign_verify_detached(u->sig, msg, mlen, pk) != 0) {
        free(msg);
        return srv_reply_error(c, 401, "bad_signature", f,
                               "signature does not verify for "
                               "device %s",
                               u->device_id);
    }
    srv_upload up = {u->round, u->device_id, u->idem, u->examples, u->updates, u->updates_len, {0}};
    pkp_blake2b(msg, mlen, up.msg_hash);
    free(msg);
    tick(s);
    st = srv_db_submit(s->db, &up, srv_wall_now(), &res, &response);
    if (st != PK_OK)
        ret = srv_reply_error(c, 500, "internal", f, "database error");
    else
        ret = submit_answer(c, res, response, u, f);
    free(response);
    return ret;
}

static int h_upload(srv *s, struct MHD_Connection *c, const req *q, int64_t path_round, srv_fault f)
{
    srv_upload_req u;
    srv_err e;
    if (!srv_upload_parse(&s->task, q->body, q->len, path_round, &u, &e))
        return srv_reply_error(c, e.status, e.code, f, "%s", e.msg);
    int ret = upload_commit(s, c, &u, f);
    srv_upload_req_free(&u);
    return ret;
}

/* ---- routing --------------------------------------------------------------------------------- */

/* "/v1/rounds/{n}/updates" -> n, or -1 */
static int64_t upload_round(const char *url)
{
    static const char pre[] = "/v1/rounds/";
    if (strncmp(url, pre, sizeof pre - 1) != 0)
        return -1;
    const char *p = url + sizeof pre - 1;
    int64_t n = 0;
    int digits = 0;
    for (; *p >= '0' && *p <= '9' && digits < 16; p++, digits++)
        n = n * 10 + (*p - '0');
    return digits && strcmp(p, "/updates") == 0 ? n : -1;
}

static size_t body_limit(const char *url)
{
    return upload_round(url) >= 0 ? SRV_UPLOAD_BODY_MAX : SRV_SMALL_BODY_MAX;
}

static int method_is(const char *m, const char *want)
{
    return strcmp(m, want) == 0;
}

static int route(srv *s, struct MHD_Connection *c, const char *url, const char *method,
                 const req *q, srv_fault f)
{
    int get = method_is(method, "GET"), post = method_is(method, "POST");
    int64_t round = upload_round(url);
    if (strcmp(url, "/v1/health") == 0 && get)
        return h_health(s, c, f);
    if (strcmp(url, "/v1/devices") == 0 && post)
        return h_register(s, c, q, f);
    if (strcmp(url, "/v1/task") == 0 && get)
        return h_task(s, c, f);
    if (strncmp(url, "/v1/tasks/", 10) == 0 && get) {
        if (strcmp(url + 10, s->task.task_id) == 0)
            return h_task(s, c, f);
        return srv_reply_error(c, 404, "unknown_task", f, "no task \"%.64s\" here", url + 10);
    }
    if (round >= 0 && post)
        return h_upload(s, c, q, round, f);
    if (strcmp(url, "/v1/log") == 0 && get)
        return h_log(s, c, f);
    int known = strcmp(url, "/v1/health") == 0 || strcmp(url, "/v1/devices") == 0 ||
                strcmp(url, "/v1/task") == 0 || strcmp(url, "/v1/log") == 0 || round >= 0 ||
                strncmp(url, "/v1/tasks/", 10) == 0;
    if (known)
        return srv_reply_error(c, 405, "method_not_allowed", f, "%s is not allowed on %s", method,
                               url);
    if (strncmp(url, "/v1/", 4) != 0 && (get || method_is(method, "HEAD")))
        return srv_hub_handle(s, c, method, url, f);
    return srv_reply_error(c, 404, "not_found", f, "no such endpoint: %s %s", method, url);
}

static void capture(const srv *s, const req *q, const char *method, const char *url)
{
    char name[160], path[4096];
    size_t o = 0;
    for (const char *p = url; *p && o + 1 < sizeof name; p++)
        name[o++] = (*p == '/' || *p == '.') ? '_' : *p;
    name[o] = '\0';
    snprintf(path, sizeof path, "%s/%06llu-%s-%s.body", s->capture_dir, (unsigned long long)q->id,
             method, name);
    FILE *fp = fopen(path, "wb");
    if (!fp) {
        pk_log(PK_LOG_WARN, "capture: cannot write %s", path);
        return;
    }
    if (q->len && fwrite(q->body, 1, q->len, fp) != q->len)
        pk_log(PK_LOG_WARN, "capture: short write to %s", path);
    fclose(fp);
}

static int collect(req *q, const char *data, size_t n)
{
    if (q->too_big || q->len + n > q->limit) {
        q->too_big = 1;
        return 1;
    }
    return pk_text_append(&q->body, &q->len, &q->cap, data, n, 1024) == 0;
}

static int first_call(srv *s, struct MHD_Connection *c, const char *url, void **con_cls)
{
    req *q = calloc(1, sizeof *q);
    if (!q)
        return MHD_NO;
    q->id = atomic_fetch_add(&s->n_requests, 1);
    q->limit = body_limit(url);
    if (s->faults_on && strcmp(url, "/v1/health") != 0)
        q->fault = srv_faults_draw(&s->faults, &q->delay_ms);
    *con_cls = q;
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    if (cl && strtoull(cl, NULL, 10) > q->limit) {
        q->too_big = q->answered = 1;
        return srv_reply_error(c, 413, "body_too_large", SRV_FAULT_NONE,
                               "the body (%s bytes) "
                               "exceeds the limit of %zu bytes for %s",
                               cl, q->limit, url);
    }
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *data_size, void **con_cls)
{
    srv *s = cls;
    req *q = *con_cls;
    (void)version;
    if (!q)
        return first_call(s, c, url, con_cls) == MHD_YES ? MHD_YES : MHD_NO;
    if (*data_size) {
        int ok = q->answered || collect(q, data, *data_size);
        *data_size = 0;
        return ok ? MHD_YES : MHD_NO;
    }
    if (q->answered)
        return MHD_YES;
    if (s->capture_dir && q->len)
        capture(s, q, method, url);
    if (q->delay_ms > 0) {
        struct timespec ts = {(time_t)(q->delay_ms / 1000.0),
                              (long)(fmod(q->delay_ms, 1000.0) * 1e6)};
        nanosleep(&ts, NULL);
    }
    if (q->fault == SRV_FAULT_5XX)
        return srv_reply_error(c, 503, "injected_fault", SRV_FAULT_NONE,
                               "fault injected (--faults); retry") == MHD_YES
                   ? MHD_YES
                   : MHD_NO;
    if (q->too_big)
        return srv_reply_error(c, 413, "body_too_large", q->fault,
                               "the body exceeds the limit "
                               "of %zu bytes for %s",
                               q->limit, url) == MHD_YES
                   ? MHD_YES
                   : MHD_NO;
    return route(s, c, url, method, q, q->fault) == MHD_YES ? MHD_YES : MHD_NO;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    req *q = *con_cls;
    if (!q)
        return;
    free(q->body);
    free(q);
    *con_cls = NULL;
}

/* MHD's own messages (e.g. a connection closed by an injected fault) go to the log at INFO. */
static void mhd_log(void *cls, const char *fmt, va_list ap) PK_PRINTF(2, 0);
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    (void)cls;
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    pk_log(PK_LOG_INFO, "mhd: %s", msg);
}

/* Percent-decoding of URLs and arguments in place, as libmicrohttpd's default does, except that
 * "%00" stays encoded: a decoded NUL would silently cut a path or value short (the hub then
 * refuses the name). Returns the new length. */
static size_t srv_unescape(void *cls, struct MHD_Connection *c, char *str)
{
    (void)cls;
    (void)c;
    char *w = str;
    for (const char *r = str; *r; r++) {
        int hi = r[0] == '%' ? pkp_hexval(r[1]) : -1, lo = hi >= 0 ? pkp_hexval(r[2]) : -1;
        if (lo >= 0 && (hi | lo) != 0) {
            *w++ = (char)(hi * 16 + lo);
            r += 2;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
    return (size_t)(w - str);
}

struct MHD_Daemon *srv_start(srv *s, const char *host, int port, int threads, int *bound_port)
{
    struct sockaddr_in sa;
    if (pkc_ipv4(host, port, &sa) != 0)
        return NULL;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&sa, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)threads,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)4096, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
        MHD_OPTION_UNESCAPE_CALLBACK, srv_unescape, NULL, MHD_OPTION_END);
    if (!d)
        return NULL;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    *bound_port = info ? (int)info->port : port;
    return d;
}
