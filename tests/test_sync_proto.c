/* test_sync_proto.c: the sync client against a scripted coordinator (libmicrohttpd in the test,
 * 127.0.0.1, ephemeral port) whose log entries, hashes and signatures are computed here from
 * docs/PROTOCOL.md, independently of net/sync_wire.c: pool-seed golden vectors, catch-up and
 * replay, tampered / rewritten / rolled-back logs refused, the signed upload verified, no re-upload
 * in an open round, the outbox surviving 5xx and being resent with the same idempotency key, a 4xx
 * answer dropping it, a wrong base model refused, malformed answers refused naming the field,
 * and the DP report. */
#include "pk_test.h"
#include "test_mhd_util.h"
#include "test_sync_toy.c"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#define MAX_ENT 8

typedef struct fake {
    struct MHD_Daemon *d;
    int port;
    pthread_mutex_t mu;
    char task[4096];
    char *ent[MAX_ENT]; /* entry JSON of version i+1 */
    int n_ent;
    int head; /* head version announced (normally n_ent) */
    uint8_t pk[32];
    int have_pk;
    int upload_code; /* 200, 503 or 409 */
    int uploads_seen;
    int uploads_ok;
    char last_idem[80];
    int sig_ok; /* last upload's signature verified here */
    int last_pairs;
    long long last_examples;
} fake;

static const char *TASK_ID = "t1";
static const uint8_t POOL_SEED[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11,
                                      12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
                                      23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

/* Verifies an upload body as the coordinator would (PROTOCOL 5). */
static void check_upload(fake *f, const char *body)
{
    cJSON *j = cJSON_Parse(body);
    f->sig_ok = 0;
    if (!j)
        return;
    const char *tid = cJSON_GetObjectItem(j, "task_id")->valuestring;
    const char *did = cJSON_GetObjectItem(j, "device_id")->valuestring;
    const char *idem = cJSON_GetObjectItem(j, "idempotency_key")->valuestring;
    const char *b64 = cJSON_GetObjectItem(j, "updates")->valuestring;
    const char *sig = cJSON_GetObjectItem(j, "signature")->valuestring;
    double round = cJSON_GetObjectItem(j, "round")->valuedouble;
    double ex = cJSON_GetObjectItem(j, "examples")->valuedouble;
    static uint8_t bin[1 << 16];
    size_t got = 0;
    uint8_t sigb[64];
    if (*b64)
        sodium_base642bin(bin, sizeof bin, b64, strlen(b64), NULL, &got, NULL,
                          sodium_base64_VARIANT_ORIGINAL);
    static bytes m;
    m.n = 0;
    b_put(&m, "pocketllm-upload-v1", 19);
    b_str(&m, tid);
    b_u64(&m, (uint64_t)round);
    b_str(&m, did);
    b_str(&m, idem);
    b_u64(&m, (uint64_t)ex);
    b_u32(&m, (uint32_t)(got / 6));
    b_put(&m, bin, got);
    if (sodium_hex2bin(sigb, 64, sig, strlen(sig), NULL, NULL, NULL) == 0 && f->have_pk)
        f->sig_ok = crypto_sign_verify_detached(sigb, m.b, m.n, f->pk) == 0;
    int sorted = got % 6 == 0;
    for (size_t i = 6; i + 6 <= got; i += 6)
        sorted &= (bin[i] | bin[i + 1] << 8) > (bin[i - 6] | bin[i - 5] << 8);
    if (!sorted)
        f->sig_ok = 0;
    f->last_pairs = (int)(got / 6);
    f->last_examples = (long long)ex;
    snprintf(f->last_idem, sizeof f->last_idem, "%s", idem);
    cJSON_Delete(j);
}

static enum MHD_Result route(fake *f, struct MHD_Connection *c, const char *url, const char *method,
                             const mhd_body *q)
{
    char buf[8192];
    if (!strcmp(url, "/v1/devices") && !strcmp(method, "POST")) {
        cJSON *j = cJSON_Parse(q->data ? q->data : "");
        const cJSON *pk = cJSON_GetObjectItem(j, "public_key");
        uint8_t h[32];
        char hex[17];
        if (!cJSON_IsString(pk) ||
            sodium_hex2bin(f->pk, 32, pk->valuestring, 64, NULL, NULL, NULL) != 0) {
            cJSON_Delete(j);
            return mhd_send_json(c, 400, "{\"error\":{\"code\":\"bad_field\",\"message\":\"pk\"}}");
        }
        cJSON_Delete(j);
        f->have_pk = 1;
        crypto_generichash(h, 32, f->pk, 32, NULL, 0);
        sodium_bin2hex(hex, sizeof hex, h, 8);
        snprintf(buf, sizeof buf, "{\"device_id\":\"d%s\"}", hex);
        return mhd_send_json(c, 201, buf);
    }
    if (!strcmp(url, "/v1/task") || !strncmp(url, "/v1/tasks/", 10)) {
        if (!strncmp(url, "/v1/tasks/", 10) && strcmp(url + 10, TASK_ID) != 0)
            return mhd_send_json(c, 404,
                                 "{\"error\":{\"code\":\"unknown_task\",\"message\":\"no\"}}");
        return mhd_send_json(c, 200, f->task);
    }
    if (!strcmp(url, "/v1/health")) {
        snprintf(buf, sizeof buf, "{\"ok\":true,\"round\":%d,\"log_version\":%d}", f->head + 1,
                 f->head);
        return mhd_send_json(c, 200, buf);
    }
    if (!strcmp(url, "/v1/log")) {
        const char *s = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "since");
        int since = s ? atoi(s) : 0;
        size_t off =
            (size_t)snprintf(buf, sizeof buf,
                             "{\"task_id\":\"%s\",\"head\":{\"version\":%d,\"hash\":\"x\"},"
                             "\"more\":false,\"entries\":[",
                             TASK_ID, f->head);
        for (int v = since + 1; v <= f->head && v <= f->n_ent; v++)
            off += (size_t)snprintf(buf + off, sizeof buf - off, "%s%s", v > since + 1 ? "," : "",
                                    f->ent[v - 1]);
        snprintf(buf + off, sizeof buf - off, "]}");
        return mhd_send_json(c, 200, buf);
    }
    if (!strncmp(url, "/v1/rounds/", 11)) {
        f->uploads_seen++;
        check_upload(f, q->data ? q->data : "");
        if (f->upload_code == 503)
            return mhd_send_json(c, 503,
                                 "{\"error\":{\"code\":\"injected_fault\",\"message\":\"x\"}}");
        if (f->upload_code == 409)
            return mhd_send_json(c, 409,
                                 "{\"error\":{\"code\":\"round_closed\",\"message\":\"late\"}}");
        f->uploads_ok++;
        return mhd_send_json(c, 200, "{\"accepted\":true}");
    }
    return mhd_send_json(c, 404, "{\"error\":{\"code\":\"not_found\",\"message\":\"?\"}}");
}

/* route under the fake's lock (the daemon runs a thread per connection). */
static enum MHD_Result locked_route(void *user, struct MHD_Connection *c, const char *url,
                                    const char *method, const mhd_body *q)
{
    fake *f = user;
    pthread_mutex_lock(&f->mu);
    enum MHD_Result r = route(f, c, url, method, q);
    pthread_mutex_unlock(&f->mu);
    return r;
}

/* ---- building a log (PROTOCOL 6), independently of sync.c ---------------------------------- */

typedef struct ent_spec {
    int n;
    uint16_t k[4];
    float coef[4];
    float lr;
} ent_spec;

/* Builds entries 1..n chained from hash_0; tamper_v (or 0) gets a changed coefficient after its
 * hash was computed. */
static void build_log(fake *f, const ent_spec *spec, int n, int tamper_v)
{
    uint8_t prev[32] = {0}, h[32];
    for (int i = 0; i < f->n_ent; i++)
        free(f->ent[i]);
    f->n_ent = 0;
    for (int v = 1; v <= n; v++) {
        const ent_spec *e = &spec[v - 1];
        uint8_t packed[24];
        for (int i = 0; i < e->n; i++) {
            packed[6 * i] = (uint8_t)e->k[i];
            packed[6 * i + 1] = (uint8_t)(e->k[i] >> 8);
            memcpy(packed + 6 * i + 2, &e->coef[i], 4);
        }
        static bytes m;
        m.n = 0;
        b_put(&m, prev, 32);
        b_put(&m, "pocketllm-log-v1", 16);
        b_str(&m, TASK_ID);
        b_u64(&m, (uint64_t)v);
        b_put(&m, &e->lr, 4);
        b_u32(&m, 3);
        b_u64(&m, 12);
        b_u32(&m, (uint32_t)e->n);
        b_put(&m, packed, (size_t)e->n * 6);
        crypto_generichash(h, 32, m.b, m.n, NULL, 0);
        if (v == tamper_v)
            packed[2] ^= 0x01; /* one bit of the first coefficient */
        char b64[64], ph[65], hh[65], *js = malloc(512);
        sodium_bin2base64(b64, sizeof b64, packed, (size_t)e->n * 6,
                          sodium_base64_VARIANT_ORIGINAL);
        sodium_bin2hex(ph, 65, prev, 32);
        sodium_bin2hex(hh, 65, h, 32);
        snprintf(js, 512,
                 "{\"version\":%d,\"round\":%d,\"lr\":%.9g,\"uploads\":3,\"examples\":12,"
                 "\"updates\":\"%s\",\"prev_hash\":\"%s\",\"hash\":\"%s\"}",
                 v, v, (double)e->lr, b64, ph, hh);
        f->ent[f->n_ent++] = js;
        memcpy(prev, h, 32);
    }
    f->head = n;
}

static void set_task(fake *f, const char *base_hash, int round)
{
    char ps[65];
    sodium_bin2hex(ps, sizeof ps, POOL_SEED, 32);
    snprintf(f->task, sizeof f->task,
             "{\"task_id\":\"%s\",\"base_model_hash\":\"%s\",\"pool_size\":4096,"
             "\"pool_seed\":\"%s\",\"pool_derivation\":\"blake2b256-u32le-v1\","
             "\"z_kind\":\"gaussian\",\"lr\":0.05,\"eps\":0.001,\"local_steps\":16,"
             "\"quorum\":3,\"deadline_seconds\":60,\"max_abs_g\":1000000,"
             "\"max_examples\":1000000,\"privacy\":{\"dp_clip\":0,\"dp_noise\":0},"
             "\"round\":%d,\"log_version\":%d}",
             TASK_ID, base_hash, ps, round, round - 1);
}

static void expect_replay(const fake *f, int upto, const toy *t, const char *got_hash)
{
    float w[TOY_D];
    char want[65], buf[4096];
    size_t off = (size_t)snprintf(buf, sizeof buf, "{\"entries\":[");
    for (int v = 1; v <= upto; v++)
        off +=
            (size_t)snprintf(buf + off, sizeof buf - off, "%s%s", v > 1 ? "," : "", f->ent[v - 1]);
    snprintf(buf + off, sizeof buf - off, "]}");
    memcpy(w, t->base, sizeof w);
    PK_CHECK_EQ(ref_replay(buf, POOL_SEED, PK_Z_GAUSSIAN, t->key, w), upto);
    hash_floats(w, want);
    PK_CHECK(!strcmp(want, got_hash));
}

static const ent_spec SPEC[3] = {
    {2, {3, 4000}, {0.5f, -1.25f}, 0.05f},
    {1, {17}, {2.0f}, 0.05f},
    {3, {0, 9, 4095}, {-0.75f, 0.125f, 3.0f}, 0.05f},
};

static void test_pool_golden(void)
{
    uint8_t ps[32];
    for (int i = 0; i < 32; i++)
        ps[i] = (uint8_t)i;
    PK_CHECK(pk_sync_pool_seed(ps, 0) == 925856025389211567ull);
    PK_CHECK(pk_sync_pool_seed(ps, 1) == 15383498379122569998ull);
    PK_CHECK(pk_sync_pool_seed(ps, 4095) == 14890602615546679275ull);
    PK_CHECK(ref_pool_seed(ps, 4095) == 14890602615546679275ull);
}

static int run(pk_store *s, fake *f, toy *t, pk_sync_params p, pk_sync_report *rep, char *err)
{
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", f->port);
    p.server = url;
    p.http.max_attempts = 2;
    p.http.backoff_ms = 5;
    p.http.timeout_ms = 5000;
    pk_sync_model_ops ops = toy_ops(t);
    return (int)pk_sync_round(s, &p, &ops, rep, err, 256);
}

/* One agent home going through the phases of test_log_and_upload in order; each phase starts
 * from the state the previous one left (the store's log head, outbox and upload round). */
typedef struct agent {
    fake *f;
    pk_store *s;
    toy t;
    char base_hash[65];
    char err[256];
    pk_sync_params p;
    pk_sync_report rep;
} agent;

static int agent_run(agent *a)
{
    return run(a->s, a->f, &a->t, a->p, &a->rep, a->err);
}

/* Catch-up; tampered, rewritten and rolled-back logs refused; the genuine entry then accepted.
 * The global model's hash after entry 3 goes to global3. */
static void phase_catch_up(agent *a, char global3[65])
{
    fake *f = a->f;
    /* catch up with two valid entries */
    set_task(f, a->base_hash, 3);
    build_log(f, SPEC, 2, 0);
    PK_CHECK_EQ(agent_run(a), PK_OK);
    PK_CHECK_EQ(a->rep.log_version, 2);
    PK_CHECK(a->rep.device_id[0] == 'd' && strlen(a->rep.device_id) == 17);
    expect_replay(f, 2, &a->t, a->rep.model_hash);
    /* a tampered entry 3 */
    set_task(f, a->base_hash, 4);
    build_log(f, SPEC, 3, 3);
    PK_CHECK_EQ(agent_run(a), PK_ERR_AUTH);
    PK_CHECK(strstr(a->err, "tampered") != NULL);
    /* a rewritten history: entry 1 changed and the chain recomputed */
    ent_spec alt[3];
    memcpy(alt, SPEC, sizeof alt);
    alt[0].coef[0] = 0.75f;
    build_log(f, alt, 3, 0);
    PK_CHECK_EQ(agent_run(a), PK_ERR_AUTH);
    PK_CHECK(strstr(a->err, "rewritten") != NULL);
    /* a rollback: the head goes back to version 1 */
    build_log(f, SPEC, 1, 0);
    set_task(f, a->base_hash, 2);
    PK_CHECK_EQ(agent_run(a), PK_ERR_AUTH);
    PK_CHECK(strstr(a->err, "rolled-back") != NULL);
    /* the genuine entry 3 is still accepted after all that */
    build_log(f, SPEC, 3, 0);
    set_task(f, a->base_hash, 4);
    PK_CHECK_EQ(agent_run(a), PK_OK);
    PK_CHECK_EQ(a->rep.log_version, 3);
    expect_replay(f, 3, &a->t, a->rep.model_hash);
    snprintf(global3, 65, "%s", a->rep.model_hash);
}

/* An upload to round 4, verified by the fake; the round stays open, so a second run uploads
 * nothing new. */
static void phase_upload(agent *a, const char *global3)
{
    fake *f = a->f;
    a->p.upload = 1;
    a->p.wait_s = 0.2;
    f->upload_code = 200;
    long grads0 = a->t.grads;
    PK_CHECK_EQ(agent_run(a), PK_OK);
    PK_CHECK_EQ(a->rep.uploaded, 1);
    PK_CHECK_EQ(a->rep.round, 4);
    PK_CHECK_EQ(a->rep.round_closed, 0);
    PK_CHECK_EQ(a->rep.steps, 16);
    PK_CHECK_EQ(a->t.grads - grads0, 16);
    PK_CHECK_EQ(f->uploads_ok, 1);
    PK_CHECK(f->sig_ok);
    PK_CHECK(f->last_pairs >= 1 && f->last_pairs <= 16);
    PK_CHECK_EQ(a->rep.pairs, f->last_pairs);
    PK_CHECK_EQ(f->last_examples, 16 * 4);
    /* local steps discarded: still the global model */
    PK_CHECK(!strcmp(a->rep.model_hash, global3));
    PK_CHECK(a->rep.upload_body_bytes > 0 && a->rep.upload_body_bytes < 16384);
    /* again while round 4 is open: nothing new is uploaded */
    PK_CHECK_EQ(agent_run(a), PK_OK);
    PK_CHECK_EQ(f->uploads_seen, 1);
    PK_CHECK_EQ(a->t.grads - grads0, 16);
}

/* Round 5: 5xx on every attempt keeps the update in the outbox; once the coordinator is back
 * the same body is resent first, with no new local steps. */
static void phase_outbox(agent *a)
{
    fake *f = a->f;
    char idem_first[80], *ik = NULL, *body = NULL;
    set_task(f, a->base_hash, 5);
    build_log(f, SPEC, 3, 0);
    f->upload_code = 503;
    int seen0 = f->uploads_seen;
    PK_CHECK_EQ(agent_run(a), PK_ERR_HTTP);
    PK_CHECK_EQ(f->uploads_seen - seen0, 2);
    PK_CHECK(strstr(a->err, "/v1/rounds/5/updates") && strstr(a->err, "503"));
    snprintf(idem_first, sizeof idem_first, "%s", f->last_idem);
    PK_CHECK_EQ(pk_store_outbox_peek(a->s, &ik, &body, NULL, 0), PK_OK);
    PK_CHECK(ik && !strcmp(ik, idem_first));
    free(ik);
    free(body);
    f->upload_code = 200;
    long grads1 = a->t.grads;
    PK_CHECK_EQ(agent_run(a), PK_OK);
    PK_CHECK(!strcmp(f->last_idem, idem_first));
    PK_CHECK(f->sig_ok);
    PK_CHECK_EQ(a->rep.flushed, 1);
    PK_CHECK_EQ(a->rep.uploaded, 1);
    PK_CHECK_EQ(a->t.grads, grads1);
    PK_CHECK_EQ(pk_store_outbox_peek(a->s, &ik, &body, NULL, 0), PK_ERR_NOTFOUND);
}

/* Definitive refusals: a 409, a wrong base model, another trainable subset, an unknown task. */
static void phase_refusals(agent *a)
{
    fake *f = a->f;
    char *ik = NULL, *body = NULL;
    /* round 6 answered 409: definitive, the entry leaves the outbox, the error is reported */
    set_task(f, a->base_hash, 6);
    f->upload_code = 409;
    PK_CHECK_EQ(agent_run(a), PK_ERR_HTTP);
    PK_CHECK(strstr(a->err, "round_closed") != NULL || strstr(a->err, "refused") != NULL);
    PK_CHECK_EQ(pk_store_outbox_peek(a->s, &ik, &body, NULL, 0), PK_ERR_NOTFOUND);
    /* a wrong base model is refused before anything else */
    set_task(f, "00ff", 6);
    PK_CHECK_EQ(agent_run(a), PK_ERR_ARG);
    PK_CHECK(strstr(a->err, "base model") != NULL);
    /* a task that trains another subset than this device is refused before anything else */
    set_task(f, a->base_hash, 6);
    char *q = strstr(f->task, "\"quorum\"");
    char tail[2048];
    PK_CHECK(q != NULL);
    if (q) {
        snprintf(tail, sizeof tail, "%s", q);
        snprintf(q, sizeof f->task - (size_t)(q - f->task), "\"trainable\":\"bitfit\",%s", tail);
        PK_CHECK_EQ(agent_run(a), PK_ERR_ARG);
        /* the library names both subsets; the CLI names its flag */
        PK_CHECK(strstr(a->err, "bitfit") != NULL && strstr(a->err, "trainable") != NULL);
        PK_CHECK_EQ(pk_store_outbox_peek(a->s, &ik, &body, NULL, 0), PK_ERR_NOTFOUND);
    }
    /* an unknown task id */
    set_task(f, a->base_hash, 6);
    a->p.task_id = "nope";
    PK_CHECK_EQ(agent_run(a), PK_ERR_NOTFOUND);
    a->p.task_id = NULL;
}

/* make_home of dir/name (opened), or NULL after a failed check. */
static pk_store *agent_home(const char *dir, const char *name)
{
    char home[512];
    snprintf(home, sizeof home, "%s/%s", dir, name);
    pk_store *s = make_home(home);
    PK_CHECK(s != NULL);
    return s;
}

static void test_log_and_upload(fake *f, const char *dir)
{
    agent a;
    char global3[65];
    memset(&a, 0, sizeof a);
    a.f = f;
    a.s = agent_home(dir, "a");
    if (!a.s)
        return;
    toy_init(&a.t, "agent A private diary: meet Pip at the lighthouse");
    hash_floats(a.t.base, a.base_hash);
    a.p = pk_sync_default_params();
    a.p.upload = 0;
    a.p.wait_s = 0;
    phase_catch_up(&a, global3);
    phase_upload(&a, global3);
    phase_outbox(&a);
    phase_refusals(&a);
    pk_store_close(a.s);
}

/* Replaces the first occurrence of `from` in text (cap bytes) by `to`; 1 if it was there. */
static int replace_in(char *text, size_t cap, const char *from, const char *to)
{
    char *at = strstr(text, from), tail[4096];
    if (!at)
        return 0;
    snprintf(tail, sizeof tail, "%s", at + strlen(from));
    snprintf(at, cap - (size_t)(at - text), "%s%s", to, tail);
    return 1;
}

/* Malformed answers are refused with PK_ERR_FORMAT and a message naming the field. */
static void test_malformed(fake *f, const char *dir)
{
    toy t;
    char err[256], base_hash[65];
    pk_store *s = agent_home(dir, "c");
    if (!s)
        return;
    toy_init(&t, "agent C private notes");
    hash_floats(t.base, base_hash);
    pk_sync_params p = pk_sync_default_params();
    p.upload = 0;
    p.wait_s = 0;
    pk_sync_report rep;
    build_log(f, SPEC, 1, 0);
    set_task(f, base_hash, 2);
    PK_CHECK(replace_in(f->task, sizeof f->task, "\"lr\":0.05,", ""));
    PK_CHECK_EQ(run(s, f, &t, p, &rep, err), PK_ERR_FORMAT);
    PK_CHECK(strstr(err, "field lr is missing") != NULL);
    set_task(f, base_hash, 2);
    PK_CHECK(replace_in(f->task, sizeof f->task, "\"pool_size\":4096", "\"pool_size\":70000"));
    PK_CHECK_EQ(run(s, f, &t, p, &rep, err), PK_ERR_FORMAT);
    PK_CHECK(strstr(err, "pool_size is 70000") != NULL);
    /* a log entry whose prev_hash is not hex, then one whose updates are not base64 */
    set_task(f, base_hash, 2);
    PK_CHECK(replace_in(f->ent[0], 512, "\"prev_hash\":\"0", "\"prev_hash\":\"z"));
    PK_CHECK_EQ(run(s, f, &t, p, &rep, err), PK_ERR_FORMAT);
    PK_CHECK(strstr(err, "prev_hash") != NULL);
    build_log(f, SPEC, 1, 0);
    PK_CHECK(replace_in(f->ent[0], 512, "\"updates\":\"", "\"updates\":\"!"));
    PK_CHECK_EQ(run(s, f, &t, p, &rep, err), PK_ERR_FORMAT);
    PK_CHECK(strstr(err, "updates: not base64") != NULL);
    /* the genuine entry is accepted afterwards */
    build_log(f, SPEC, 1, 0);
    PK_CHECK_EQ(run(s, f, &t, p, &rep, err), PK_OK);
    PK_CHECK_EQ(rep.log_version, 1);
    pk_store_close(s);
}

static void test_dp_report(fake *f, const char *dir)
{
    char err[256], base_hash[65];
    pk_store *s = agent_home(dir, "b");
    if (!s)
        return;
    toy t;
    toy_init(&t, "agent B private notes");
    hash_floats(t.base, base_hash);
    build_log(f, SPEC, 3, 0);
    f->upload_code = 200;
    pk_sync_params p = pk_sync_default_params();
    p.wait_s = 0;
    p.dp_clip = 0.5;
    p.dp_noise = 1.0;
    pk_sync_report rep;
    double e1 = 0, e2 = 0;
    set_task(f, base_hash, 4);
    PK_CHECK_EQ(run(s, f, &t, p, &rep, err), PK_OK);
    PK_CHECK_EQ(rep.dp, 1);
    PK_CHECK(isfinite(rep.epsilon) && rep.epsilon > 0.0);
    PK_CHECK_NEAR(rep.delta, 1e-5, 0.0);
    /* q = 1 whatever the batch (no subsampling amplification is claimed: docs/SYNC.md) */
    PK_CHECK_EQ(pk_dp_epsilon_for(1.0, 0.5, 16, 1e-5, &e1), PK_OK);
    PK_CHECK_NEAR(rep.epsilon, e1, 1e-9);
    set_task(f, base_hash, 5);
    PK_CHECK_EQ(run(s, f, &t, p, &rep, err), PK_OK);
    PK_CHECK_EQ(pk_dp_epsilon_for(1.0, 0.5, 32, 1e-5, &e2), PK_OK);
    PK_CHECK_NEAR(rep.epsilon, e2, 1e-9);
    PK_CHECK(e2 > e1);
    /* noise without a clip is a usage error */
    p.dp_clip = 0;
    PK_CHECK_EQ(run(s, f, &t, p, &rep, err), PK_ERR_ARG);
    pk_store_close(s);
}

int main(void)
{
    if (sodium_init() < 0 || pk_http_global_init() != PK_OK)
        return 1;
    test_pool_golden();
    char dir[] = "/tmp/pk-sync-proto-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    static fake f;
    pthread_mutex_init(&f.mu, NULL);
    static const mhd_router router = {locked_route, &f};
    f.d = mhd_start_loopback(&router, &f.port);
    PK_CHECK(f.d != NULL);
    if (f.d) {
        test_log_and_upload(&f, dir);
        test_malformed(&f, dir);
        test_dp_report(&f, dir);
        MHD_stop_daemon(f.d);
    }
    for (int i = 0; i < f.n_ent; i++)
        free(f.ent[i]);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    pk_http_global_cleanup();
    return PK_TEST_DONE();
}
