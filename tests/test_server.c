/* test_server.c: the coordinator (server-mock) end to end on 127.0.0.1 with ephemeral ports:
 * the protocol's golden vectors, every endpoint, each rejection (forged signature, replayed or
 * duplicate upload, oversized body, non-finite value, seed outside the pool, unknown device),
 * quorum and deadline aggregation, the hash chain, a kill -9 restart mid-round, every fault
 * kind, the hub layout with Range, request capture, and bytes per device per round at K=4096.
 * The server binary is started from PK_BUILD_DIR and killed at the end of each case. */
#include "pk_test.h"
#include "sha_test_util.h"
#include "srv_client.h"
#include "srv_proto.h"
#include "test_util.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define POOL_SEED_HEX "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

typedef struct server {
    pid_t pid;
    int port;
} server;

typedef struct dev {
    uint8_t pk[32], sk[64];
    char id[PKP_DEVICE_ID_LEN + 1];
} dev;

static char tmpdir[256];

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void write_text(const char *path, const char *text)
{
    PK_CHECK(write_all(path, text, strlen(text)) == 0);
}

/* Writes a task file with K, quorum and deadline; returns its path (static per name). */
static void write_task(const char *path, int K, int quorum, double deadline, int steps)
{
    char buf[1024];
    snprintf(buf, sizeof buf,
             "{\"task_id\":\"demo\",\"base_model_hash\":\"feedbeef\",\"pool_size\":%d,"
             "\"pool_seed\":\"%s\",\"lr\":0.001,\"eps\":0.001,\"local_steps\":%d,"
             "\"quorum\":%d,\"deadline_seconds\":%g,\"max_abs_g\":1000,"
             "\"privacy\":{\"dp_clip\":1,\"dp_noise\":0.5}}",
             K, POOL_SEED_HEX, steps, quorum, deadline);
    write_text(path, buf);
}

/* Starts the server with argv extras (NULL-terminated); reads the port from its first line. */
static int server_start(server *s, const char *db, const char *task, const char *const *extra)
{
    char bin[1024];
    const char *argv[32];
    int n = 0, fds[2];
    snprintf(bin, sizeof bin, "%s/server-mock/pocketllm-server-mock", PK_BUILD_DIR);
    argv[n++] = bin;
    argv[n++] = "--db";
    argv[n++] = db;
    argv[n++] = "--port";
    argv[n++] = "0";
    if (task) {
        argv[n++] = "--task";
        argv[n++] = task;
    }
    for (int i = 0; extra && extra[i] && n < 30; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    if (pipe(fds) != 0)
        return 0;
    s->pid = fork();
    if (s->pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execv(bin, (char *const *)(uintptr_t)argv);
        _exit(127);
    }
    close(fds[1]);
    char line[128] = "";
    size_t len = 0;
    struct pollfd pfd = {fds[0], POLLIN, 0};
    while (len + 1 < sizeof line && poll(&pfd, 1, 10000) > 0) {
        ssize_t r = read(fds[0], line + len, 1);
        if (r <= 0 || line[len] == '\n')
            break;
        len++;
    }
    line[len] = '\0';
    close(fds[0]);
    s->port = 0;
    if (sscanf(line, "listening on 127.0.0.1:%d", &s->port) != 1 || s->port <= 0) {
        fprintf(stderr, "server did not start: \"%s\"\n", line);
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        return 0;
    }
    return 1;
}

/* The files of one test case: a database and a task. */
typedef struct case_files {
    char db[512], task[512];
} case_files;

/* Writes the task tmpdir/<name>-task.json (pool K, quorum, deadline in seconds, local steps) and
 * starts the server on the fresh database tmpdir/<name>.db with it and the argv extras; the
 * paths go to *f (may be NULL). */
static int start_case(server *s, const char *name, int K, int quorum, double deadline, int steps,
                      const char *const *extra, case_files *f)
{
    case_files local;
    if (!f)
        f = &local;
    snprintf(f->db, sizeof f->db, "%s/%s.db", tmpdir, name);
    snprintf(f->task, sizeof f->task, "%s/%s-task.json", tmpdir, name);
    write_task(f->task, K, quorum, deadline, steps);
    return server_start(s, f->db, f->task, extra);
}

/* SIGTERM (clean) or SIGKILL; returns the exit status (or -signal). */
static int server_stop(server *s, int sig)
{
    int status = 0;
    kill(s->pid, sig);
    for (int i = 0; i < 500; i++) {
        if (waitpid(s->pid, &status, WNOHANG) == s->pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
        sleep_ms(10);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &status, 0);
    return -999;
}

/* One request on a fresh connection. */
static pk_status call(const server *s, const char *method, const char *path, const char *extra,
                      const char *body, size_t len, pkc_response *r)
{
    pkc_conn *c = NULL;
    memset(r, 0, sizeof *r);
    pk_status st = pkc_connect("127.0.0.1", s->port, 10.0, &c);
    if (st != PK_OK)
        return st;
    st = pkc_request(c, method, path, extra, body, body ? len : 0, r);
    pkc_close(c);
    return st;
}

/* Request + JSON parse; returns the status (0 on a transport failure), *out the JSON (owned). */
static int call_json(const server *s, const char *method, const char *path, const char *body,
                     cJSON **out)
{
    pkc_response r;
    pk_status st = call(s, method, path, NULL, body, body ? strlen(body) : 0, &r);
    int status = st == PK_OK ? r.status : 0;
    if (out)
        *out = st == PK_OK ? cJSON_Parse(r.body) : NULL;
    pkc_response_free(&r);
    return status;
}

static const char *err_code(const cJSON *o)
{
    const cJSON *e = cJSON_GetObjectItem(o, "error");
    const cJSON *c = e ? cJSON_GetObjectItem(e, "code") : NULL;
    return cJSON_IsString(c) ? c->valuestring : "";
}

static double num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItem(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : -1.0;
}

static void dev_new(dev *d, int i)
{
    uint8_t seed[32] = {0};
    seed[0] = (uint8_t)i;
    seed[1] = (uint8_t)(i >> 8);
    seed[31] = 0x5a;
    crypto_sign_seed_keypair(d->pk, d->sk, seed);
    pkp_device_id(d->pk, d->id);
}

static int dev_register(const server *s, const dev *d)
{
    char hex[65], body[128];
    pkp_hex(d->pk, 32, hex);
    snprintf(body, sizeof body, "{\"public_key\":\"%s\"}", hex);
    return call_json(s, "POST", "/v1/devices", body, NULL);
}

/* A signed upload body; forge != 0 flips a signature bit. Owned result. */
static char *upload_body(const dev *d, const char *task, long long round, const char *idem,
                         long long examples, const pkp_pair *pairs, size_t n, int forge)
{
    uint8_t packed[PKP_PAIR_BYTES * 512], sig[64], *msg = NULL;
    size_t mlen = 0;
    char sighex[129];
    PK_CHECK(n <= 512);
    pkp_pack(pairs, n, packed);
    if (pkp_upload_msg(task, (uint64_t)round, d->id, idem, (uint64_t)examples, packed,
                       n * PKP_PAIR_BYTES, &msg, &mlen) != PK_OK)
        return NULL;
    crypto_sign_detached(sig, NULL, msg, mlen, d->sk);
    free(msg);
    if (forge)
        sig[7] ^= 1;
    pkp_hex(sig, 64, sighex);
    char *b64 = pkp_b64_encode(packed, n * PKP_PAIR_BYTES);
    size_t cap = strlen(b64) + 512;
    char *body = malloc(cap);
    snprintf(body, cap,
             "{\"task_id\":\"%s\",\"round\":%lld,\"device_id\":\"%s\",\"idempotency_key\":\"%s\","
             "\"examples\":%lld,\"updates\":\"%s\",\"signature\":\"%s\"}",
             task, round, d->id, idem, examples, b64, sighex);
    free(b64);
    return body;
}

static int post_upload(const server *s, long long round, const char *body, cJSON **out, char **raw)
{
    char path[64];
    pkc_response r;
    snprintf(path, sizeof path, "/v1/rounds/%lld/updates", round);
    pk_status st = call(s, "POST", path, NULL, body, strlen(body), &r);
    int status = st == PK_OK ? r.status : 0;
    if (out)
        *out = st == PK_OK ? cJSON_Parse(r.body) : NULL;
    if (raw)
        *raw = st == PK_OK ? strdup(r.body) : NULL;
    pkc_response_free(&r);
    return status;
}

/* ---- golden vectors ------------------------------------------------------------------------ */

static void test_vectors(void)
{
    uint8_t ps[32], zero[32] = {0};
    for (int i = 0; i < 32; i++)
        ps[i] = (uint8_t)i;
    PK_CHECK(pkp_pool_seed(ps, 0) == 925856025389211567ull);
    PK_CHECK(pkp_pool_seed(ps, 1) == 15383498379122569998ull);
    PK_CHECK(pkp_pool_seed(ps, 4095) == 14890602615546679275ull);
    char id[PKP_DEVICE_ID_LEN + 1];
    pkp_device_id(zero, id);
    PK_CHECK(strcmp(id, "d89eb0d6a8a691dae") == 0);
    pkp_pair p[2] = {{3, 1.5f}, {7, -0.25f}}, q[2];
    uint8_t packed[12];
    pkp_pack(p, 2, packed);
    char *b64 = pkp_b64_encode(packed, 12);
    PK_CHECK(strcmp(b64, "AwAAAMA/BwAAAIC+") == 0);
    uint8_t *back = NULL;
    size_t blen = 0;
    PK_CHECK(pkp_b64_decode(b64, 64, &back, &blen) == PK_OK && blen == 12);
    pkp_unpack(back, 12, q);
    PK_CHECK(q[0].k == 3 && q[0].v == 1.5f && q[1].k == 7 && q[1].v == -0.25f);
    free(back);
    PK_CHECK(pkp_b64_decode("AwAAAMA/BwAAAIC", 64, &back, &blen) == PK_ERR_FORMAT);
    free(b64);
    char msg[128];
    PK_CHECK(pkp_check_updates(packed, 12, 8, 10.0, msg, sizeof msg) == NULL);
    PK_CHECK(strcmp(pkp_check_updates(packed, 12, 7, 10.0, msg, sizeof msg), "seed_not_in_pool") ==
             0);
    PK_CHECK(strcmp(pkp_check_updates(packed, 12, 8, 1.0, msg, sizeof msg), "out_of_range") == 0);
    PK_CHECK(strcmp(pkp_check_updates(packed, 11, 8, 10.0, msg, sizeof msg), "bad_field") == 0);
}

/* ---- the API ------------------------------------------------------------------------------- */

static void check_task(const server *s, long long round, long long uploads)
{
    cJSON *t = NULL;
    PK_CHECK_EQ(call_json(s, "GET", "/v1/task", NULL, &t), 200);
    PK_CHECK_EQ((long long)num(t, "round"), round);
    PK_CHECK_EQ((long long)num(t, "round_uploads"), uploads);
    PK_CHECK_EQ((long long)num(t, "log_version"), round - 1);
    PK_CHECK_EQ((long long)num(t, "pool_size"), 4096);
    const cJSON *seed = cJSON_GetObjectItem(t, "pool_seed");
    PK_CHECK(cJSON_IsString(seed) && strcmp(seed->valuestring, POOL_SEED_HEX) == 0);
    PK_CHECK_NEAR(num(t, "lr"), 0.001, 1e-9);
    cJSON_Delete(t);
}

/* Keys whose signatures prove nothing (all zero, the identity, a point of order 2, a point off
 * the curve) are refused at registration. */
static void test_register_bad_keys(const server *s)
{
    static const char *const bad[] = {
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "0200000000000000000000000000000000000000000000000000000000000000",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char body[128];
        cJSON *o = NULL;
        snprintf(body, sizeof body, "{\"public_key\":\"%s\"}", bad[i]);
        PK_CHECK_EQ(call_json(s, "POST", "/v1/devices", body, &o), 400);
        PK_CHECK(o && strcmp(err_code(o), "bad_field") == 0);
        cJSON_Delete(o);
    }
}

static void test_register_and_task(const server *s)
{
    dev d;
    cJSON *o = NULL;
    dev_new(&d, 1);
    PK_CHECK_EQ(dev_register(s, &d), 201);
    PK_CHECK_EQ(dev_register(s, &d), 200);
    PK_CHECK_EQ(call_json(s, "POST", "/v1/devices", "{\"public_key\":\"zz\"}", &o), 400);
    PK_CHECK(strcmp(err_code(o), "bad_field") == 0);
    cJSON_Delete(o);
    PK_CHECK_EQ(call_json(s, "POST", "/v1/devices", "{\"public_key\":", &o), 400);
    PK_CHECK(strcmp(err_code(o), "bad_json") == 0);
    cJSON_Delete(o);
    test_register_bad_keys(s);
    PK_CHECK_EQ(call_json(s, "GET", "/v1/health", NULL, NULL), 200);
    check_task(s, 1, 0);
    PK_CHECK_EQ(call_json(s, "GET", "/v1/tasks/demo", NULL, NULL), 200);
    PK_CHECK_EQ(call_json(s, "GET", "/v1/tasks/other", NULL, &o), 404);
    PK_CHECK(strcmp(err_code(o), "unknown_task") == 0);
    cJSON_Delete(o);
    PK_CHECK_EQ(call_json(s, "DELETE", "/v1/task", NULL, &o), 405);
    cJSON_Delete(o);
    PK_CHECK_EQ(call_json(s, "GET", "/v1/nothing", NULL, &o), 404);
    PK_CHECK(strcmp(err_code(o), "not_found") == 0);
    cJSON_Delete(o);
    PK_CHECK_EQ(call_json(s, "GET", "/v1/log?since=x", NULL, &o), 400);
    cJSON_Delete(o);
}

/* Posts body and checks status + error code. */
static void expect_reject(const server *s, long long round, char *body, int status,
                          const char *code)
{
    cJSON *o = NULL;
    PK_CHECK(body != NULL);
    if (!body)
        return;
    int got = post_upload(s, round, body, &o, NULL);
    PK_CHECK_EQ(got, status);
    if (strcmp(err_code(o), code) != 0) {
        fprintf(stderr, "expected error code %s, got \"%s\"\n", code, err_code(o));
        PK_CHECK(0);
    }
    cJSON_Delete(o);
    free(body);
}

/* Sends `total` bytes of body with Transfer-Encoding: chunked on a raw socket; returns the
 * answer's HTTP status (0 if none). */
static int chunked_upload_status(const server *s, size_t total)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)s->port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0), status = 0;
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (fd >= 0)
            close(fd);
        return 0;
    }
    static const char head[] = "POST /v1/rounds/1/updates HTTP/1.1\r\nHost: t\r\n"
                               "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    char chunk[4096 + 16];
    memset(chunk, 'x', sizeof chunk);
    ssize_t w = send(fd, head, sizeof head - 1, MSG_NOSIGNAL);
    for (size_t sent = 0; w > 0 && sent < total; sent += 4096) {
        int hl = snprintf(chunk, 16, "%x\r\n", 4096);
        memset(chunk + hl, 'x', 4096);
        memcpy(chunk + hl + 4096, "\r\n", 2);
        w = send(fd, chunk, (size_t)hl + 4096 + 2, MSG_NOSIGNAL);
    }
    if (w > 0)
        w = send(fd, "0\r\n\r\n", 5, MSG_NOSIGNAL);
    char buf[256] = "";
    struct pollfd pfd = {fd, POLLIN, 0};
    if (poll(&pfd, 1, 10000) > 0 && recv(fd, buf, sizeof buf - 1, 0) > 0)
        sscanf(buf, "HTTP/1.1 %d", &status);
    close(fd);
    return status;
}

static void test_rejections(const server *s, const dev *d, const dev *stranger)
{
    pkp_pair ok[2] = {{5, 0.5f}, {9, -1.0f}};
    pkp_pair nan_v[1] = {{5, 0.0f}}, big_k[1] = {{4096, 1.0f}}, unsorted[2] = {{9, 1}, {5, 1}};
    nan_v[0].v = (float)NAN;
    expect_reject(s, 1, upload_body(d, "demo", 1, "f1", 10, ok, 2, 1), 401, "bad_signature");
    expect_reject(s, 1, upload_body(stranger, "demo", 1, "f2", 10, ok, 2, 0), 403,
                  "unknown_device");
    expect_reject(s, 1, upload_body(d, "demo", 1, "f3", 10, nan_v, 1, 0), 400, "non_finite");
    expect_reject(s, 1, upload_body(d, "demo", 1, "f4", 10, big_k, 1, 0), 400, "seed_not_in_pool");
    expect_reject(s, 1, upload_body(d, "demo", 1, "f5", 10, unsorted, 2, 0), 400,
                  "unsorted_updates");
    pkp_pair huge[1] = {{5, 5000.0f}};
    expect_reject(s, 1, upload_body(d, "demo", 1, "f6", 10, huge, 1, 0), 400, "out_of_range");
    expect_reject(s, 1, upload_body(d, "demo", 1, "f7", 0, ok, 2, 0), 400, "out_of_range");
    expect_reject(s, 1, upload_body(d, "other", 1, "f8", 10, ok, 2, 0), 404, "unknown_task");
    expect_reject(s, 2, upload_body(d, "demo", 2, "f9", 10, ok, 2, 0), 409, "round_not_open");
    expect_reject(s, 2, upload_body(d, "demo", 1, "f10", 10, ok, 2, 0), 400, "bad_field");
    expect_reject(s, 1, upload_body(d, "demo", 1, "bad key!", 10, ok, 2, 0), 400, "bad_field");
    expect_reject(s, 1, strdup("{\"task_id\":\"demo\",\"round\":1e999}"), 400, "non_finite");
    /* an upload whose JSON is fine but whose body exceeds 64 KiB */
    size_t big = 70 * 1024;
    char *pad = malloc(big + 64);
    snprintf(pad, big + 64, "{\"x\":\"%*s\"}", (int)big, "");
    expect_reject(s, 1, pad, 413, "body_too_large");
    /* the same in chunks, with no Content-Length to check up front: the collected body is capped */
    PK_CHECK(chunked_upload_status(s, 80 * 1024) == 413);
    PK_CHECK(chunked_upload_status(s, 1024) == 400); /* small: read, then rejected as bad JSON */
}

/* Sends an upload and returns the raw body of a 200 answer (owned) or NULL. */
static char *accept_upload(const server *s, const dev *d, long long round, const char *idem,
                           long long examples, const pkp_pair *p, size_t n)
{
    char *body = upload_body(d, "demo", round, idem, examples, p, n, 0), *raw = NULL;
    int st = post_upload(s, round, body, NULL, &raw);
    PK_CHECK_EQ(st, 200);
    free(body);
    if (st != 200) {
        fprintf(stderr, "upload answer: %s\n", raw ? raw : "(none)");
        free(raw);
        return NULL;
    }
    return raw;
}

/* Verifies the hash chain of GET /v1/log?since=0 and returns the entries (owned JSON). */
static cJSON *fetch_verified_log(const server *s, long long want_versions)
{
    cJSON *o = NULL;
    PK_CHECK_EQ(call_json(s, "GET", "/v1/log?since=0", NULL, &o), 200);
    const cJSON *entries = cJSON_GetObjectItem(o, "entries");
    PK_CHECK_EQ(cJSON_GetArraySize(entries), want_versions);
    uint8_t prev[32] = {0}, h[32];
    long long v = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, entries)
    {
        v++;
        char hex[65];
        uint8_t *upd = NULL;
        size_t ulen = 0;
        PK_CHECK_EQ((long long)num(e, "version"), v);
        PK_CHECK(pkp_b64_decode(cJSON_GetObjectItem(e, "updates")->valuestring, 1 << 20, &upd,
                                &ulen) == PK_OK);
        pkp_hex(prev, 32, hex);
        PK_CHECK(strcmp(cJSON_GetObjectItem(e, "prev_hash")->valuestring, hex) == 0);
        pkp_log_hash(prev, "demo", (uint64_t)v, (float)num(e, "lr"), (uint32_t)num(e, "uploads"),
                     (uint64_t)num(e, "examples"), upd, ulen, h);
        pkp_hex(h, 32, hex);
        PK_CHECK(strcmp(cJSON_GetObjectItem(e, "hash")->valuestring, hex) == 0);
        /* a tampered entry (one coefficient bit) no longer matches its hash */
        if (ulen) {
            uint8_t t[32];
            upd[ulen - 1] ^= 0x01;
            pkp_log_hash(prev, "demo", (uint64_t)v, (float)num(e, "lr"),
                         (uint32_t)num(e, "uploads"), (uint64_t)num(e, "examples"), upd, ulen, t);
            PK_CHECK(memcmp(t, h, 32) != 0);
        }
        memcpy(prev, h, 32);
        free(upd);
    }
    const cJSON *head = cJSON_GetObjectItem(o, "head");
    char hex[65];
    pkp_hex(prev, 32, hex);
    PK_CHECK_EQ((long long)num(head, "version"), want_versions);
    PK_CHECK(strcmp(cJSON_GetObjectItem(head, "hash")->valuestring, hex) == 0);
    return o;
}

/* Finds the coefficient of pool index k in entry e (0 if absent). */
static float coef_of(const cJSON *e, unsigned k)
{
    uint8_t *upd = NULL;
    size_t ulen = 0;
    float out = 0.0f;
    if (pkp_b64_decode(cJSON_GetObjectItem(e, "updates")->valuestring, 1 << 20, &upd, &ulen) !=
        PK_OK)
        return NAN;
    pkp_pair *p = malloc(ulen / PKP_PAIR_BYTES * sizeof *p + 1);
    pkp_unpack(upd, ulen, p);
    for (size_t i = 0; i < ulen / PKP_PAIR_BYTES; i++)
        if (p[i].k == k)
            out = p[i].v;
    free(p);
    free(upd);
    return out;
}

static void test_round(const server *s)
{
    dev a, b, c, x;
    dev_new(&a, 10), dev_new(&b, 11), dev_new(&c, 12), dev_new(&x, 13);
    PK_CHECK_EQ(dev_register(s, &a), 201);
    PK_CHECK_EQ(dev_register(s, &b), 201);
    PK_CHECK_EQ(dev_register(s, &c), 201);
    test_rejections(s, &a, &x);
    pkp_pair pa[2] = {{5, 0.5f}, {9, -1.0f}}, pb[2] = {{5, 2.0f}, {100, 4.0f}};
    pkp_pair pc[1] = {{4095, -3.0f}};
    char *first = accept_upload(s, &a, 1, "a-1", 10, pa, 2);
    /* a retry with the same key returns the first answer, byte for byte */
    char *again = accept_upload(s, &a, 1, "a-1", 10, pa, 2);
    PK_CHECK(first && again && strcmp(first, again) == 0);
    check_task(s, 1, 1);
    expect_reject(s, 1, upload_body(&a, "demo", 1, "a-1", 11, pa, 2, 0), 409,
                  "idempotency_conflict");
    expect_reject(s, 1, upload_body(&a, "demo", 1, "a-2", 10, pa, 2, 0), 409, "duplicate_upload");
    free(accept_upload(s, &b, 1, "b-1", 30, pb, 2));
    free(accept_upload(s, &c, 1, "c-1", 60, pc, 1)); /* quorum 3: closes round 1 */
    check_task(s, 2, 0);
    expect_reject(s, 1, upload_body(&x, "demo", 1, "x-1", 10, pa, 1, 0), 403, "unknown_device");
    PK_CHECK_EQ(dev_register(s, &x), 201);
    expect_reject(s, 1, upload_body(&x, "demo", 1, "x-1", 10, pa, 1, 0), 409, "round_closed");
    /* the repeat still answers after the round closed */
    char *late = accept_upload(s, &a, 1, "a-1", 10, pa, 2);
    PK_CHECK(first && late && strcmp(first, late) == 0);
    cJSON *log = fetch_verified_log(s, 1);
    const cJSON *e = cJSON_GetArrayItem(cJSON_GetObjectItem(log, "entries"), 0);
    PK_CHECK_EQ((long long)num(e, "uploads"), 3);
    PK_CHECK_EQ((long long)num(e, "examples"), 100);
    /* example-weighted means: (10*0.5 + 30*2)/100, (10*-1)/100, (30*4)/100, (60*-3)/100 */
    PK_CHECK(coef_of(e, 5) == (float)((10.0 * 0.5 + 30.0 * 2.0) / 100.0));
    PK_CHECK(coef_of(e, 9) == (float)(-10.0 / 100.0));
    PK_CHECK(coef_of(e, 100) == (float)(120.0 / 100.0));
    PK_CHECK(coef_of(e, 4095) == (float)(-180.0 / 100.0));
    PK_CHECK(coef_of(e, 6) == 0.0f);
    cJSON_Delete(log);
    cJSON *o = NULL;
    PK_CHECK_EQ(call_json(s, "GET", "/v1/log?since=1", NULL, &o), 200);
    PK_CHECK_EQ(cJSON_GetArraySize(cJSON_GetObjectItem(o, "entries")), 0);
    cJSON_Delete(o);
    free(first);
    free(again);
    free(late);
}

static void test_api(void)
{
    server s;
    PK_CHECK(start_case(&s, "api", 4096, 3, 600, 16, NULL, NULL));
    if (!s.port)
        return;
    test_register_and_task(&s);
    test_round(&s);
    PK_CHECK_EQ(server_stop(&s, SIGTERM), 0);
}

/* ---- restart and deadline ------------------------------------------------------------------- */

static void test_restart(void)
{
    case_files f;
    server s;
    dev d[3];
    pkp_pair p[1] = {{1, 1.0f}};
    PK_CHECK(start_case(&s, "restart", 4096, 3, 600, 16, NULL, &f));
    for (int i = 0; i < 3; i++) {
        dev_new(&d[i], 20 + i);
        PK_CHECK_EQ(dev_register(&s, &d[i]), 201);
    }
    char *a0 = accept_upload(&s, &d[0], 1, "r0", 5, p, 1);
    free(accept_upload(&s, &d[1], 1, "r1", 5, p, 1));
    PK_CHECK_EQ(server_stop(&s, SIGKILL), -SIGKILL); /* mid-round, no clean shutdown */
    PK_CHECK(server_start(&s, f.db, NULL, NULL));    /* the task comes from the database */
    check_task(&s, 1, 2);
    PK_CHECK_EQ(dev_register(&s, &d[0]), 200);
    char *a0b = accept_upload(&s, &d[0], 1, "r0", 5, p, 1);
    PK_CHECK(a0 && a0b && strcmp(a0, a0b) == 0);
    free(accept_upload(&s, &d[2], 1, "r2", 5, p, 1));
    cJSON *log = fetch_verified_log(&s, 1);
    const cJSON *e = cJSON_GetArrayItem(cJSON_GetObjectItem(log, "entries"), 0);
    PK_CHECK_EQ((long long)num(e, "uploads"), 3);
    PK_CHECK_EQ((long long)num(e, "examples"), 15);
    PK_CHECK(coef_of(e, 1) == 1.0f);
    cJSON_Delete(log);
    PK_CHECK_EQ(server_stop(&s, SIGTERM), 0);
    /* a different task on the same database is refused with a clear message */
    write_task(f.task, 1024, 3, 600, 16);
    server bad;
    PK_CHECK(!server_start(&bad, f.db, f.task, NULL));
    free(a0);
    free(a0b);
}

static void test_deadline(void)
{
    server s;
    dev d;
    pkp_pair p[1] = {{7, 2.0f}};
    PK_CHECK(start_case(&s, "deadline", 4096, 100, 0.4, 16, NULL, NULL));
    dev_new(&d, 30);
    PK_CHECK_EQ(dev_register(&s, &d), 201);
    sleep_ms(600); /* an empty round at its deadline stays open */
    check_task(&s, 1, 0);
    free(accept_upload(&s, &d, 1, "dl1", 4, p, 1));
    sleep_ms(700);
    check_task(&s, 2, 0);
    cJSON *log = fetch_verified_log(&s, 1);
    const cJSON *e = cJSON_GetArrayItem(cJSON_GetObjectItem(log, "entries"), 0);
    PK_CHECK_EQ((long long)num(e, "uploads"), 1);
    PK_CHECK(coef_of(e, 7) == 2.0f);
    cJSON_Delete(log);
    PK_CHECK_EQ(server_stop(&s, SIGTERM), 0);
}

/* ---- concurrency: the quorum is exact under parallel uploads -------------------------------- */

typedef struct race_arg {
    const server *s;
    dev *devs; /* [10] */
    int ok, closed, other;
} race_arg;

static void *race_worker(void *p)
{
    race_arg *a = p;
    pkp_pair pr[1] = {{2, 1.0f}};
    for (int i = 0; i < 10; i++) {
        char idem[32];
        snprintf(idem, sizeof idem, "race-%s", a->devs[i].id);
        char *body = upload_body(&a->devs[i], "demo", 1, idem, 1, pr, 1, 0);
        cJSON *o = NULL;
        int st = post_upload(a->s, 1, body, &o, NULL);
        if (st == 200)
            a->ok++;
        else if (st == 409 && strcmp(err_code(o), "round_closed") == 0)
            a->closed++;
        else
            a->other++;
        cJSON_Delete(o);
        free(body);
    }
    return NULL;
}

static void test_concurrent_quorum(void)
{
    server s;
    enum { T = 4, QUORUM = 25 };
    dev devs[T][10];
    race_arg args[T];
    pthread_t th[T];
    PK_CHECK(start_case(&s, "race", 4096, QUORUM, 600, 16, NULL, NULL));
    for (int t = 0; t < T; t++)
        for (int i = 0; i < 10; i++) {
            dev_new(&devs[t][i], 100 + t * 10 + i);
            PK_CHECK_EQ(dev_register(&s, &devs[t][i]), 201);
        }
    for (int t = 0; t < T; t++) {
        args[t] = (race_arg){&s, devs[t], 0, 0, 0};
        PK_CHECK(pthread_create(&th[t], NULL, race_worker, &args[t]) == 0);
    }
    int ok = 0, closed = 0, other = 0;
    for (int t = 0; t < T; t++) {
        pthread_join(th[t], NULL);
        ok += args[t].ok, closed += args[t].closed, other += args[t].other;
    }
    PK_CHECK_EQ(ok, QUORUM);
    PK_CHECK_EQ(closed, T * 10 - QUORUM);
    PK_CHECK_EQ(other, 0);
    cJSON *log = fetch_verified_log(&s, 1);
    const cJSON *e = cJSON_GetArrayItem(cJSON_GetObjectItem(log, "entries"), 0);
    PK_CHECK_EQ((long long)num(e, "uploads"), QUORUM);
    PK_CHECK(coef_of(e, 2) == 1.0f);
    cJSON_Delete(log);
    check_task(&s, 2, 0);
    PK_CHECK_EQ(server_stop(&s, SIGTERM), 0);
}

/* ---- faults ---------------------------------------------------------------------------------- */

static void test_faults(void)
{
    server s;
    const char *extra[] = {"--faults", "delay=0.2:60ms,drop=0.2,5xx=0.2,truncate=0.2,seed=3", NULL};
    case_files f;
    PK_CHECK(start_case(&s, "faults", 4096, 1, 600, 16, extra, &f));
    int n5xx = 0, ndrop = 0, ntrunc = 0, nok = 0, ndelay = 0;
    for (int i = 0; i < 60; i++) {
        pkc_response r;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        pk_status st = call(&s, "GET", "/v1/task", NULL, NULL, 0, &r);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
        ndelay += ms >= 55.0;
        if (st == PK_OK && r.status == 503)
            n5xx++;
        else if (st == PK_OK && r.status == 200)
            nok++;
        else if (r.status == 200 && r.truncated)
            ntrunc++;
        else if (r.status == 0)
            ndrop++;
        pkc_response_free(&r);
    }
    fprintf(stderr, "faults over 60 requests: ok %d, 5xx %d, drop %d, truncate %d, delayed %d\n",
            nok, n5xx, ndrop, ntrunc, ndelay);
    PK_CHECK(n5xx > 0 && ndrop > 0 && ntrunc > 0 && nok > 0 && ndelay > 0);
    PK_CHECK_EQ(nok + n5xx + ndrop + ntrunc, 60);
    /* a client resending one upload until it gets an answer is counted exactly once */
    dev d;
    dev_new(&d, 40);
    int reg = 0;
    for (int i = 0; i < 50 && reg != 201 && reg != 200; i++)
        reg = dev_register(&s, &d);
    PK_CHECK(reg == 200 || reg == 201);
    pkp_pair p[1] = {{3, 1.0f}};
    char *body = upload_body(&d, "demo", 1, "once", 1, p, 1, 0);
    int st = 0, tries = 0;
    for (; tries < 50 && st != 200; tries++)
        st = post_upload(&s, 1, body, NULL, NULL);
    PK_CHECK_EQ(st, 200);
    free(body);
    cJSON *o = NULL;
    for (int i = 0; i < 50 && !o; i++)
        if (call_json(&s, "GET", "/v1/log?since=0", NULL, &o) != 200) {
            cJSON_Delete(o);
            o = NULL;
        }
    PK_CHECK(o != NULL);
    const cJSON *entries = cJSON_GetObjectItem(o, "entries");
    PK_CHECK_EQ(cJSON_GetArraySize(entries), 1);
    PK_CHECK_EQ((long long)num(cJSON_GetArrayItem(entries, 0), "uploads"), 1);
    cJSON_Delete(o);
    PK_CHECK_EQ(server_stop(&s, SIGTERM), 0);
    /* a bad spec is refused */
    const char *bad[] = {"--faults", "drop=2", NULL};
    server b;
    PK_CHECK(!server_start(&b, f.db, f.task, bad));
}

/* ---- hub ------------------------------------------------------------------------------------- */

static void write_bytes(const char *path, size_t n, unsigned salt)
{
    FILE *fp = fopen(path, "wb");
    PK_CHECK(fp != NULL);
    if (!fp)
        return;
    for (size_t i = 0; i < n; i++)
        fputc((int)((i * 131 + salt) & 0xff), fp);
    fclose(fp);
}

static void hub_get(const server *s, const char *path, const char *range, int want_status,
                    size_t want_len, const char *want_sha)
{
    pkc_response r;
    char hdr[128] = "", v[128];
    if (range)
        snprintf(hdr, sizeof hdr, "Range: %s\r\n", range);
    pk_status st = call(s, "GET", path, range ? hdr : NULL, NULL, 0, &r);
    PK_CHECK(st == PK_OK);
    PK_CHECK_EQ(r.status, want_status);
    if (want_status == 200 || want_status == 206) {
        PK_CHECK_EQ((long long)r.body_len, (long long)want_len);
        PK_CHECK(pkc_header(&r, "X-Content-Sha256", v, sizeof v) && strcmp(v, want_sha) == 0);
        PK_CHECK(pkc_header(&r, "ETag", v, sizeof v) && strstr(v, want_sha) != NULL);
        PK_CHECK(pkc_header(&r, "Accept-Ranges", v, sizeof v));
    }
    if (want_status == 200) {
        uint8_t h[32];
        char hex[65];
        crypto_hash_sha256(h, (const uint8_t *)r.body, r.body_len);
        pkp_hex(h, 32, hex);
        PK_CHECK(strcmp(hex, want_sha) == 0);
    }
    pkc_response_free(&r);
}

static void test_hub(void)
{
    char hub[512], p[1024], sha1[65], sha2[65], shar[65];
    server s;
    snprintf(hub, sizeof hub, "%s/hub", tmpdir);
    snprintf(p, sizeof p, "%s/hub/org/tiny/v2", tmpdir);
    PK_CHECK(mkdir(hub, 0700) == 0);
    snprintf(p, sizeof p, "%s/hub/org", tmpdir), mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/hub/org/tiny", tmpdir), mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/hub/org/tiny/v2", tmpdir), mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/hub/org/tiny/model-00001-of-00002.safetensors", tmpdir);
    write_bytes(p, 300000, 1);
    file_sha256_hex(p, sha1);
    snprintf(p, sizeof p, "%s/hub/org/tiny/model-00002-of-00002.safetensors", tmpdir);
    write_bytes(p, 1000, 2);
    file_sha256_hex(p, sha2);
    snprintf(p, sizeof p, "%s/hub/org/tiny/model.safetensors.index.json", tmpdir);
    write_text(p, "{\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\","
                  "\"b\":\"model-00002-of-00002.safetensors\"}}");
    snprintf(p, sizeof p, "%s/hub/org/tiny/v2/config.json", tmpdir);
    write_text(p, "{\"rev\":2}");
    file_sha256_hex(p, shar);
    const char *extra[] = {"--hub-dir", hub, NULL};
    PK_CHECK(start_case(&s, "hub", 4096, 3, 600, 16, extra, NULL));
    const char *f1 = "/org/tiny/resolve/main/model-00001-of-00002.safetensors";
    hub_get(&s, f1, NULL, 200, 300000, sha1);
    hub_get(&s, "/org/tiny/resolve/main/model-00002-of-00002.safetensors", NULL, 200, 1000, sha2);
    hub_get(&s, f1, "bytes=1000-1999", 206, 1000, sha1);
    hub_get(&s, f1, "bytes=299990-", 206, 10, sha1);
    hub_get(&s, f1, "bytes=-5", 206, 5, sha1);
    hub_get(&s, f1, "bytes=300000-", 416, 0, NULL);
    hub_get(&s, "/org/tiny/resolve/v2/config.json", NULL, 200, 9, shar);
    hub_get(&s, "/org/tiny/resolve/main/config.json", NULL, 404, 0, NULL);
    hub_get(&s, "/org/tiny/resolve/main/.hidden", NULL, 400, 0, NULL);
    /* the Range body is the right slice */
    pkc_response r;
    PK_CHECK(call(&s, "GET", f1, "Range: bytes=1000-1003\r\n", NULL, 0, &r) == PK_OK);
    char v[128];
    PK_CHECK(pkc_header(&r, "Content-Range", v, sizeof v) &&
             strcmp(v, "bytes 1000-1003/300000") == 0);
    for (size_t i = 0; i < 4 && r.body_len == 4; i++)
        PK_CHECK_EQ((unsigned char)r.body[i], (unsigned)(((1000 + i) * 131 + 1) & 0xff));
    pkc_response_free(&r);
    PK_CHECK(call(&s, "HEAD", f1, NULL, NULL, 0, &r) == PK_OK);
    PK_CHECK_EQ(r.status, 200);
    PK_CHECK_EQ(r.content_len, 300000);
    PK_CHECK_EQ((long long)r.body_len, 0);
    pkc_response_free(&r);
    cJSON *o = NULL;
    PK_CHECK_EQ(call_json(&s, "GET", "/api/models/org/tiny", NULL, &o), 200);
    const cJSON *sib = cJSON_GetObjectItem(o, "siblings");
    PK_CHECK_EQ(cJSON_GetArraySize(sib), 4);
    cJSON_Delete(o);
    PK_CHECK_EQ(server_stop(&s, SIGTERM), 0);
}

/* The hub serves only what lies inside its directory: a symlink that leads out of it is not
 * followed (file or repo), and a name holding an encoded NUL is refused rather than cut short. */
static void test_hub_confined(void)
{
    char hub[512], p[1024], q[1024], sha[65];
    server s;
    snprintf(hub, sizeof hub, "%s/hubc", tmpdir);
    PK_CHECK(mkdir(hub, 0700) == 0);
    snprintf(p, sizeof p, "%s/org", hub), mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/org/m", hub), mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/org/m/a", hub);
    write_text(p, "inside");
    file_sha256_hex(p, sha);
    snprintf(q, sizeof q, "%s/secret.txt", tmpdir); /* outside the hub */
    write_text(q, "outside");
    snprintf(p, sizeof p, "%s/org/m/leak.txt", hub);
    PK_CHECK(symlink(q, p) == 0);
    snprintf(q, sizeof q, "%s/org/m/alias", hub); /* a link that stays inside is fine */
    PK_CHECK(symlink("a", q) == 0);
    snprintf(p, sizeof p, "%s/org/out", hub); /* a repo that is a link to a folder outside */
    PK_CHECK(symlink(tmpdir, p) == 0);
    const char *extra[] = {"--hub-dir", hub, NULL};
    PK_CHECK(start_case(&s, "hubc", 4096, 3, 600, 16, extra, NULL));
    hub_get(&s, "/org/m/resolve/main/a", NULL, 200, 6, sha);
    hub_get(&s, "/org/m/resolve/main/alias", NULL, 200, 6, sha);
    hub_get(&s, "/org/m/resolve/main/leak.txt", NULL, 404, 0, NULL);
    hub_get(&s, "/org/out/resolve/main/secret.txt", NULL, 404, 0, NULL);
    hub_get(&s, "/org/m/resolve/main/a%00.json", NULL, 400, 0, NULL);
    hub_get(&s, "/org/m/resolve/main/a%00", NULL, 400, 0, NULL);
    hub_get(&s, "/org/m/resolve/main/%61", NULL, 200, 6, sha); /* other escapes still decode */
    cJSON *o = NULL;
    PK_CHECK_EQ(call_json(&s, "GET", "/api/models/org/m", NULL, &o), 200);
    PK_CHECK_EQ(cJSON_GetArraySize(cJSON_GetObjectItem(o, "siblings")), 2); /* a, alias */
    cJSON_Delete(o);
    PK_CHECK_EQ(call_json(&s, "GET", "/api/models/org/out", NULL, NULL), 404);
    PK_CHECK_EQ(server_stop(&s, SIGTERM), 0);
}

/* ---- capture and bytes per round --------------------------------------------------------------
 */

static int dir_count(const char *dir, const char *needle, long long *total)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    *total = 0;
    while (d && (e = readdir(d))) {
        if (!strstr(e->d_name, needle))
            continue;
        char p[1024];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (stat(p, &st) == 0)
            *total += st.st_size;
        n++;
    }
    if (d)
        closedir(d);
    return n;
}

/* One device's round at K = 4096: GET task, POST upload (steps distinct seeds), GET log. */
static void device_round(const server *s, const dev *d, long long round, int steps, unsigned salt,
                         size_t *up, size_t *down)
{
    pkp_pair p[512];
    for (int i = 0; i < steps; i++) {
        p[i].k = (uint16_t)(i * 61 + salt) % 4096;
        p[i].v = 0.001f * (float)(i + 1) - 0.01f;
    }
    for (int i = 1; i < steps; i++) /* insertion sort by index */
        for (int j = i; j > 0 && p[j].k < p[j - 1].k; j--) {
            pkp_pair t = p[j];
            p[j] = p[j - 1];
            p[j - 1] = t;
        }
    char idem[32], path[64];
    snprintf(idem, sizeof idem, "u-%s-%lld", d->id, round);
    char *body = upload_body(d, "demo", round, idem, 32, p, (size_t)steps, 0);
    pkc_response r;
    PK_CHECK(call(s, "GET", "/v1/task", NULL, NULL, 0, &r) == PK_OK);
    *up += r.bytes_out, *down += r.bytes_in;
    pkc_response_free(&r);
    snprintf(path, sizeof path, "/v1/rounds/%lld/updates", round);
    PK_CHECK(call(s, "POST", path, NULL, body, strlen(body), &r) == PK_OK);
    PK_CHECK_EQ(r.status, 200);
    *up += r.bytes_out, *down += r.bytes_in;
    pkc_response_free(&r);
    free(body);
}

static void test_capture_and_bytes(void)
{
    char cap[512];
    server s;
    enum { DEVICES = 3, STEPS = 64 };
    snprintf(cap, sizeof cap, "%s/capture", tmpdir);
    PK_CHECK(mkdir(cap, 0700) == 0);
    const char *extra[] = {"--capture", cap, NULL};
    PK_CHECK(start_case(&s, "bytes", 4096, DEVICES, 600, STEPS, extra, NULL));
    dev d[DEVICES];
    size_t up[DEVICES] = {0}, down[DEVICES] = {0};
    for (int i = 0; i < DEVICES; i++) {
        dev_new(&d[i], 50 + i);
        PK_CHECK_EQ(dev_register(&s, &d[i]), 201);
    }
    for (int i = 0; i < DEVICES; i++)
        device_round(&s, &d[i], 1, STEPS, (unsigned)i * 7, &up[i], &down[i]);
    for (int i = 0; i < DEVICES; i++) {
        pkc_response r;
        PK_CHECK(call(&s, "GET", "/v1/log?since=0", NULL, NULL, 0, &r) == PK_OK);
        PK_CHECK_EQ(r.status, 200);
        up[i] += r.bytes_out, down[i] += r.bytes_in;
        pkc_response_free(&r);
        fprintf(stderr,
                "bytes per device per round (K=4096, %d devices x %d seeds, HTTP "
                "headers included): up %zu, down %zu\n",
                DEVICES, STEPS, up[i], down[i]);
        PK_CHECK(up[i] <= 16384 && down[i] <= 16384);
    }
    long long total = 0;
    PK_CHECK_EQ(dir_count(cap, "POST-_v1_rounds_1_updates", &total), DEVICES);
    PK_CHECK(total > 0);
    PK_CHECK_EQ(dir_count(cap, "POST-_v1_devices", &total), DEVICES);
    PK_CHECK_EQ(server_stop(&s, SIGTERM), 0);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/pk_test_server_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        fprintf(stderr, "mkdtemp failed: %s\n", strerror(errno));
        return 1;
    }
    test_vectors();
    test_api();
    test_restart();
    test_deadline();
    test_concurrent_quorum();
    test_faults();
    test_hub();
    test_hub_confined();
    test_capture_and_bytes();
    if (remove_tree(tmpdir) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return PK_TEST_DONE();
}
