/* test_http.c: the HTTP wrapper against a tiny libmicrohttpd server started in the test on
 * 127.0.0.1 with an ephemeral port and canned replies: success, echo, 5xx then success,
 * truncated bodies, non-JSON bodies, timeouts, oversized answers, 4xx (not retried), a refused
 * connection, the byte counters, and the messages in the caller's err buffer (URL, status,
 * attempt; empty after a success). */
#include "pk_net.h"
#include "pk_test.h"
#include "test_mhd_util.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct server {
    struct MHD_Daemon *d;
    int port;
    mhd_router router; /* route, this server */
    atomic_int hits_flaky, hits_trunc, hits_badjson, hits_404, hits_always;
} server;

/* A body announced as 64 bytes of which only 10 arrive before the connection closes. */
static ssize_t trunc_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)cls;
    if (pos >= 10)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    size_t n = 10 - (size_t)pos < max ? 10 - (size_t)pos : max;
    memset(buf, 'x', n);
    return (ssize_t)n;
}

static enum MHD_Result route(void *user, struct MHD_Connection *c, const char *url,
                             const char *method, const mhd_body *cb)
{
    server *s = user;
    if (!strcmp(url, "/ok"))
        return mhd_send_json(c, 200, "{\"ok\":true}");
    if (!strcmp(url, "/echo")) {
        const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
        char out[512];
        snprintf(out, sizeof out, "{\"method\":\"%s\",\"ct\":\"%s\",\"len\":%zu}", method,
                 ct ? ct : "", cb->len);
        return mhd_send_json(c, 200, out);
    }
    if (!strcmp(url, "/flaky"))
        return atomic_fetch_add(&s->hits_flaky, 1) < 2 ? mhd_send_json(c, 503, "{\"e\":1}")
                                                       : mhd_send_json(c, 200, "{\"ok\":2}");
    if (!strcmp(url, "/always503")) {
        atomic_fetch_add(&s->hits_always, 1);
        return mhd_send_json(c, 503, "{\"error\":{\"code\":\"injected_fault\"}}");
    }
    if (!strcmp(url, "/missing")) {
        atomic_fetch_add(&s->hits_404, 1);
        return mhd_send_json(c, 404, "{\"error\":{\"code\":\"not_found\"}}");
    }
    if (!strcmp(url, "/badjson"))
        return atomic_fetch_add(&s->hits_badjson, 1) < 1 ? mhd_send_json(c, 200, "{\"ok\":tr")
                                                         : mhd_send_json(c, 200, "{\"ok\":true}");
    if (!strcmp(url, "/trunc")) {
        if (atomic_fetch_add(&s->hits_trunc, 1) < 1) {
            struct MHD_Response *r =
                MHD_create_response_from_callback(64, 64, trunc_reader, NULL, NULL);
            enum MHD_Result ret = MHD_queue_response(c, 200, r);
            MHD_destroy_response(r);
            return ret;
        }
        return mhd_send_json(c, 200, "{\"whole\":true}");
    }
    if (!strcmp(url, "/slow")) {
        usleep(1500 * 1000);
        return mhd_send_json(c, 200, "{\"late\":true}");
    }
    if (!strcmp(url, "/big")) {
        size_t n = 300000;
        char *big = malloc(n);
        if (!big)
            return MHD_NO;
        memset(big, ' ', n);
        big[0] = '[';
        big[n - 1] = ']';
        struct MHD_Response *r = MHD_create_response_from_buffer(n, big, MHD_RESPMEM_MUST_FREE);
        enum MHD_Result ret = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
        return ret;
    }
    return mhd_send_json(c, 404, "{}");
}

static int server_start(server *s)
{
    memset(s, 0, sizeof *s);
    s->router = (mhd_router){route, s};
    s->d = mhd_start_loopback(&s->router, &s->port);
    if (!s->d)
        return -1;
    return s->port > 0 ? 0 : -1;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static pk_http *client(int port, long timeout_ms)
{
    char url[64], err[256] = "x";
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", port);
    pk_http_params p = pk_http_default_params();
    p.timeout_ms = timeout_ms;
    p.connect_timeout_ms = 1000;
    p.max_attempts = 4;
    p.backoff_ms = 10;
    p.backoff_max_ms = 40;
    p.max_body = 64 * 1024;
    pk_http *h = NULL;
    PK_CHECK_EQ(pk_http_create(url, p, &h, err, sizeof err), PK_OK);
    PK_CHECK_EQ(err[0], '\0');
    return h;
}

/* GET path with flags (0 or PK_HTTP_JSON), checking that it returns want; the answer (owned) or
 * NULL. err holds 256 bytes. */
static char *get(pk_http *h, const char *path, int flags, pk_status want, long *status, char *err)
{
    char *r = NULL;
    PK_CHECK_EQ(pk_http_request(h, "GET", path, NULL, 0, flags, status, &r, NULL, err, 256), want);
    return r;
}

/* wire bytes are headers + body, the body counted once: a 64 KiB body adds 64 KiB */
static void check_big_upload(pk_http *h)
{
    size_t big_n = 65536;
    char *big = malloc(big_n + 1), *r = NULL, err[256];
    long status = 0;
    PK_CHECK(big != NULL);
    if (!big)
        return;
    memset(big, 'x', big_n);
    big[0] = '"';
    big[big_n - 1] = '"';
    big[big_n] = '\0';
    pk_http_stats before = pk_http_get_stats(h);
    PK_CHECK_EQ(pk_http_request(h, "POST", "/echo", big, big_n, PK_HTTP_JSON, &status, &r, NULL,
                                err, sizeof err),
                PK_OK);
    free(r);
    pk_http_stats after = pk_http_get_stats(h);
    uint64_t sent = after.body_up - before.body_up, wire = after.wire_up - before.wire_up;
    PK_CHECK_EQ(sent, big_n);
    PK_CHECK(wire > sent && wire < sent + 2048);
    free(big);
}

static void test_basic(server *s)
{
    pk_http *h = client(s->port, 3000);
    if (!h)
        return;
    long status = 0;
    char *r = NULL, err[256] = "stale";
    size_t n = 0;
    PK_CHECK_EQ(
        pk_http_request(h, "GET", "/ok", NULL, 0, PK_HTTP_JSON, &status, &r, &n, err, sizeof err),
        PK_OK);
    PK_CHECK_EQ(status, 200);
    PK_CHECK(r && !strcmp(r, "{\"ok\":true}"));
    PK_CHECK_EQ(n, 11);
    PK_CHECK_EQ(err[0], '\0'); /* a success leaves no message */
    free(r);
    const char *body = "{\"hello\":\"world\"}";
    PK_CHECK_EQ(pk_http_request(h, "POST", "/echo", body, strlen(body), PK_HTTP_JSON, &status, &r,
                                NULL, NULL, 0),
                PK_OK); /* err may be NULL */
    PK_CHECK(r && strstr(r, "\"method\":\"POST\""));
    PK_CHECK(r && strstr(r, "\"ct\":\"application/json\""));
    PK_CHECK(r && strstr(r, "\"len\":17"));
    free(r);
    pk_http_stats st = pk_http_get_stats(h);
    PK_CHECK_EQ(st.requests, 2);
    PK_CHECK_EQ(st.attempts, 2);
    PK_CHECK_EQ(st.body_up, 17);
    PK_CHECK(st.body_down > 11 + 20);
    PK_CHECK(st.wire_up > st.body_up && st.wire_down > st.body_down);
    check_big_upload(h);
    pk_http_reset_stats(h);
    PK_CHECK_EQ(pk_http_get_stats(h).requests, 0);
    pk_http_destroy(h);
}

static void test_retries(server *s)
{
    pk_http *h = client(s->port, 3000);
    if (!h)
        return;
    long status = 0;
    char err[256];
    /* 5xx twice, then success: three attempts, and no message left from the failed ones */
    char *r = get(h, "/flaky", PK_HTTP_JSON, PK_OK, &status, err);
    PK_CHECK_EQ(status, 200);
    PK_CHECK(r && !strcmp(r, "{\"ok\":2}"));
    PK_CHECK_EQ(err[0], '\0');
    free(r);
    PK_CHECK_EQ(pk_http_get_stats(h).attempts, 3);
    /* a truncated body (connection closed early) is retried */
    r = get(h, "/trunc", 0, PK_OK, &status, err);
    PK_CHECK(r && !strcmp(r, "{\"whole\":true}"));
    free(r);
    PK_CHECK_EQ(atomic_load(&s->hits_trunc), 2);
    /* 200 with broken JSON: retried with PK_HTTP_JSON */
    r = get(h, "/badjson", PK_HTTP_JSON, PK_OK, &status, err);
    PK_CHECK(r && !strcmp(r, "{\"ok\":true}"));
    free(r);
    PK_CHECK_EQ(atomic_load(&s->hits_badjson), 2);
    /* a 4xx is definitive: one attempt, PK_OK, the caller reads the status */
    r = get(h, "/missing", PK_HTTP_JSON, PK_OK, &status, err);
    PK_CHECK_EQ(status, 404);
    PK_CHECK(r && strstr(r, "not_found"));
    free(r);
    PK_CHECK_EQ(atomic_load(&s->hits_404), 1);
    /* always 5xx: max_attempts tries, then the 5xx is returned, err naming URL and status */
    double t0 = now();
    r = get(h, "/always503", PK_HTTP_JSON, PK_OK, &status, err);
    PK_CHECK_EQ(status, 503);
    free(r);
    PK_CHECK_EQ(atomic_load(&s->hits_always), 4);
    PK_CHECK(now() - t0 < 1.0); /* backoff capped at 40 ms */
    PK_CHECK(strstr(err, "GET http://127.0.0.1:") && strstr(err, "/always503: HTTP 503") &&
             strstr(err, "attempt 4 of 4"));
    pk_http_destroy(h);
}

static void test_limits(server *s)
{
    pk_http *h = client(s->port, 3000);
    if (!h)
        return;
    long status = 0;
    char *r = (char *)1, err[256];
    /* oversized answer */
    PK_CHECK_EQ(pk_http_request(h, "GET", "/big", NULL, 0, 0, &status, &r, NULL, err, sizeof err),
                PK_ERR_LIMIT);
    PK_CHECK(r == NULL);
    PK_CHECK(strstr(err, "larger than") != NULL && strstr(err, "/big") != NULL);
    /* bad arguments */
    PK_CHECK_EQ(pk_http_request(h, "GET", "ok", NULL, 0, 0, &status, &r, NULL, err, sizeof err),
                PK_ERR_ARG);
    PK_CHECK(err[0] != '\0');
    pk_http_destroy(h);
}

static void test_timeout(server *s)
{
    pk_http *h = client(s->port, 200);
    if (!h)
        return;
    long status = 0;
    char err[256];
    double t0 = now();
    char *r = get(h, "/slow", 0, PK_ERR_HTTP, &status, err);
    double dt = now() - t0;
    PK_CHECK(dt >= 0.75 && dt < 3.0); /* 4 attempts x 200 ms + backoff */
    PK_CHECK(strstr(err, "attempt 4 of 4") != NULL && strstr(err, "/slow") != NULL);
    PK_CHECK(r == NULL);
    PK_CHECK_EQ(pk_http_get_stats(h).attempts, 4);
    pk_http_destroy(h);
}

static void test_refused(void)
{
    /* a port with nobody listening: bind, read the port, close */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    PK_CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    PK_CHECK(getsockname(fd, (struct sockaddr *)&a, &al) == 0);
    close(fd);
    pk_http *h = client(ntohs(a.sin_port), 500);
    if (!h)
        return;
    long status = 0;
    char err[256];
    free(get(h, "/ok", 0, PK_ERR_HTTP, &status, err)); /* NULL */
    PK_CHECK(strstr(err, "attempt 4 of 4") != NULL);
    pk_http_destroy(h);
    /* bad base URLs and params: the message names the URL or the field */
    pk_http *bad = (pk_http *)1;
    PK_CHECK_EQ(pk_http_create("ftp://x", pk_http_default_params(), &bad, err, sizeof err),
                PK_ERR_ARG);
    PK_CHECK(bad == NULL);
    PK_CHECK(strstr(err, "ftp://x") != NULL);
    PK_CHECK_EQ(pk_http_create("", pk_http_default_params(), &bad, NULL, 0), PK_ERR_ARG);
    pk_http_params p = pk_http_default_params();
    p.max_attempts = 0;
    PK_CHECK_EQ(pk_http_create("http://127.0.0.1:1", p, &bad, err, sizeof err), PK_ERR_ARG);
    PK_CHECK(strstr(err, "max_attempts") != NULL);
}

int main(void)
{
    if (sodium_init() < 0 || pk_http_global_init() != PK_OK)
        return 1;
    server s;
    if (server_start(&s) != 0) {
        fprintf(stderr, "cannot start the test server\n");
        return 1;
    }
    test_basic(&s);
    test_retries(&s);
    test_limits(&s);
    test_timeout(&s);
    test_refused();
    MHD_stop_daemon(s.d);
    pk_http_global_cleanup();
    return PK_TEST_DONE();
}
