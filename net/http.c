/* http.c: a small libcurl easy wrapper for the sync client: connect and total timeouts on every
 * attempt, retries with exponential backoff and full jitter on connection errors, timeouts,
 * truncated bodies and 5xx/429, a hard cap on response bodies, byte counters. Knows nothing of
 * the protocol (sync.c) beyond "a JSON body that does not parse was truncated". libcurl is
 * called through the table curl_dl.c loads at run time. */
#include "curl_dl.h"
#include "pk_crypto.h"
#include "pk_net.h"

#include <cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct pk_http {
    const pk_curl_api *cu; /* libcurl (curl_dl.c) */
    CURL *curl;            /* one easy handle: connections are kept alive between requests */
    char *base;            /* base URL without a trailing '/' */
    pk_http_params p;
    pk_http_stats stats;
};

typedef struct body_buf {
    char *data;
    size_t len, cap, max;
    int toobig;
} body_buf;

pk_http_params pk_http_default_params(void)
{
    pk_http_params p = {
        .connect_timeout_ms = 3000,
        .timeout_ms = 15000,
        .max_attempts = 6,
        .backoff_ms = 100,
        .backoff_max_ms = 3000,
        .max_body = (size_t)8 << 20,
    };
    return p;
}

pk_status pk_http_global_init(void)
{
    const pk_curl_api *cu = pk_curl_load();
    if (!cu)
        return PK_ERR_UNSUPPORTED;
    return cu->global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? PK_OK : PK_ERR_HTTP;
}

const char *pk_http_global_errmsg(void)
{
    const char *why = pk_curl_errmsg();
    return why[0] ? why : "curl_global_init failed";
}

void pk_http_global_cleanup(void)
{
    /* after a successful init the library is loaded; if it could not be, this does nothing */
    const pk_curl_api *cu = pk_curl_load();
    if (cu)
        cu->global_cleanup();
}

/* Names the first out-of-range field of params, or returns NULL if they are usable. */
static const char *bad_param(const pk_http_params *p)
{
    if (p->max_attempts < 1)
        return "max_attempts must be >= 1";
    if (p->timeout_ms <= 0 || p->connect_timeout_ms <= 0)
        return "timeout_ms and connect_timeout_ms must be > 0";
    if (p->max_body == 0)
        return "max_body must be > 0";
    if (p->backoff_ms < 0)
        return "backoff_ms must be >= 0";
    return NULL;
}

pk_status pk_http_create(const char *base_url, pk_http_params params, pk_http **out, char *err,
                         size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!out)
        return PK_ERR_ARG;
    *out = NULL;
    const char *why = bad_param(&params);
    if (why) {
        pk_seterr(err, errlen, "http: %s", why);
        return PK_ERR_ARG;
    }
    if (!base_url ||
        (strncmp(base_url, "http://", 7) != 0 && strncmp(base_url, "https://", 8) != 0)) {
        pk_seterr(err, errlen,
                  "http: bad base URL '%s': expected http://HOST[:PORT] or https://HOST",
                  base_url ? base_url : "(null)");
        return PK_ERR_ARG;
    }
    const pk_curl_api *cu = pk_curl_load();
    if (!cu) {
        pk_seterr(err, errlen, "%s", pk_curl_errmsg());
        return PK_ERR_UNSUPPORTED;
    }
    pk_http *h = calloc(1, sizeof *h);
    if (!h)
        return PK_ERR_NOMEM;
    h->cu = cu;
    size_t n = strlen(base_url);
    while (n > 0 && base_url[n - 1] == '/')
        n--;
    h->base = malloc(n + 1);
    h->curl = cu->easy_init();
    if (!h->base || !h->curl) {
        pk_http_destroy(h);
        return PK_ERR_NOMEM;
    }
    memcpy(h->base, base_url, n);
    h->base[n] = '\0';
    h->p = params;
    *out = h;
    return PK_OK;
}

void pk_http_destroy(pk_http *h)
{
    if (!h)
        return;
    if (h->curl)
        h->cu->easy_cleanup(h->curl);
    free(h->base);
    free(h);
}

pk_http_stats pk_http_get_stats(const pk_http *h)
{
    pk_http_stats z = {0};
    return h ? h->stats : z;
}

void pk_http_reset_stats(pk_http *h)
{
    if (h)
        memset(&h->stats, 0, sizeof h->stats);
}

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *user)
{
    body_buf *b = user;
    size_t n = size * nmemb;
    if (n > b->max - b->len) {
        b->toobig = 1;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    return pk_text_append(&b->data, &b->len, &b->cap, ptr, n, 4096) == 0 ? n : 0;
}

/* Full jitter (AWS architecture blog): uniform in [0, min(cap, base * 2^attempt)]. */
static long backoff_delay(const pk_http_params *p, int attempt)
{
    long d = p->backoff_ms;
    for (int i = 0; i < attempt && d < p->backoff_max_ms; i++)
        d *= 2;
    if (d > p->backoff_max_ms)
        d = p->backoff_max_ms;
    if (d <= 0)
        return 0;
    return (long)pk_crypto_random_uniform((uint32_t)d + 1u);
}

static int retryable_curl(CURLcode c)
{
    switch (c) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
        return 1;
    default:
        return 0;
    }
}

static int json_ok(const char *s, size_t n)
{
    cJSON *j = cJSON_ParseWithLength(s, n);
    int ok = j != NULL;
    cJSON_Delete(j);
    return ok;
}

/* Counts the bytes curl sends (request line and headers, then the body): CURLINFO_REQUEST_SIZE
 * alone includes the body only when curl sent it in the same write as the headers. */
static int on_debug(CURL *c, curl_infotype type, char *data, size_t size, void *user)
{
    (void)c;
    (void)data;
    if (type == CURLINFO_HEADER_OUT || type == CURLINFO_DATA_OUT)
        *(uint64_t *)user += size;
    return 0;
}

/* One request as it goes through its attempts. */
typedef struct request {
    const char *method;
    char *url; /* base + path (owned) */
    const char *body;
    size_t body_len;
    int flags;
    struct curl_slist *hdrs; /* owned */
    body_buf b;              /* the answer of the current attempt */
    long status;             /* HTTP status of the current attempt (0: none) */
    char *err;               /* the caller's buffer (may be NULL) */
    size_t errlen;
} request;

/* What one attempt came to. */
typedef enum attempt_end { END_DONE, END_RETRY, END_FAIL } attempt_end;

static void set_options(pk_http *h, const request *rq, uint64_t *sent)
{
    const pk_curl_api *cu = h->cu;
    CURL *c = h->curl;
    cu->easy_reset(c);
    cu->easy_setopt(c, CURLOPT_URL, rq->url);
    cu->easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    cu->easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, h->p.connect_timeout_ms);
    cu->easy_setopt(c, CURLOPT_TIMEOUT_MS, h->p.timeout_ms);
    cu->easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
    cu->easy_setopt(c, CURLOPT_WRITEDATA, &rq->b);
    cu->easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)h->p.max_body);
    cu->easy_setopt(c, CURLOPT_HTTPHEADER, rq->hdrs);
    cu->easy_setopt(c, CURLOPT_USERAGENT, "pocketllm-sync/1");
    cu->easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    cu->easy_setopt(c, CURLOPT_DEBUGFUNCTION, on_debug);
    cu->easy_setopt(c, CURLOPT_DEBUGDATA, sent);
    cu->easy_setopt(c, CURLOPT_VERBOSE, 1L); /* only to on_debug, never to stderr */
    if (rq->body) {
        cu->easy_setopt(c, CURLOPT_POSTFIELDS, rq->body);
        cu->easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->body_len);
    }
    if (strcmp(rq->method, "GET") == 0)
        cu->easy_setopt(c, CURLOPT_HTTPGET, 1L);
    else if (!(rq->body && strcmp(rq->method, "POST") == 0))
        cu->easy_setopt(c, CURLOPT_CUSTOMREQUEST, rq->method);
}

/* One transfer into rq->b; sets rq->status and adds to the counters. Returns the curl code. */
static CURLcode attempt_once(pk_http *h, request *rq)
{
    const pk_curl_api *cu = h->cu;
    uint64_t sent = 0;
    rq->b.len = 0;
    rq->b.toobig = 0;
    set_options(h, rq, &sent);
    CURLcode rc = cu->easy_perform(h->curl);
    rq->status = 0;
    cu->easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &rq->status);
    curl_off_t up = 0;
    long hdr_size = 0;
    cu->easy_getinfo(h->curl, CURLINFO_SIZE_UPLOAD_T, &up);
    cu->easy_getinfo(h->curl, CURLINFO_HEADER_SIZE, &hdr_size);
    h->stats.attempts++;
    h->stats.body_up += (uint64_t)up;
    h->stats.body_down += rq->b.len;
    h->stats.wire_up += sent;
    h->stats.wire_down += (uint64_t)hdr_size + rq->b.len;
    return rc;
}

/* "METHOD URL: what (attempt a of n)" into the caller's buffer and the debug log. */
static void attempt_failed(const pk_http *h, request *rq, int a, const char *fmt, ...)
    PK_PRINTF(4, 5);
static void attempt_failed(const pk_http *h, request *rq, int a, const char *fmt, ...)
{
    char what[192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    pk_seterr(rq->err, rq->errlen, "%s %s: %s (attempt %d of %d)", rq->method, rq->url, what, a + 1,
              h->p.max_attempts);
    pk_log(PK_LOG_DEBUG, "http: %s %s: %s (attempt %d of %d)", rq->method, rq->url, what, a + 1,
           h->p.max_attempts);
}

/* Decides what attempt a (0-based) came to; *st is the status if it was the last one. */
static attempt_end judge(const pk_http *h, request *rq, CURLcode rc, int a, pk_status *st)
{
    if (rq->b.toobig || rc == CURLE_FILESIZE_EXCEEDED) {
        pk_seterr(rq->err, rq->errlen, "%s %s: response larger than %zu bytes", rq->method, rq->url,
                  h->p.max_body);
        *st = PK_ERR_LIMIT;
        return END_FAIL;
    }
    if (rc != CURLE_OK) {
        attempt_failed(h, rq, a, "%s", h->cu->easy_strerror(rc));
        *st = PK_ERR_HTTP;
        return retryable_curl(rc) ? END_RETRY : END_FAIL;
    }
    if (rq->status >= 500 || rq->status == 429) {
        attempt_failed(h, rq, a, "HTTP %ld", rq->status);
        *st = PK_OK; /* if this was the last attempt, the caller sees the 5xx */
        return END_RETRY;
    }
    if ((rq->flags & PK_HTTP_JSON) && rq->status >= 200 && rq->status < 300 &&
        !json_ok(rq->b.data ? rq->b.data : "", rq->b.len)) {
        attempt_failed(h, rq, a, "HTTP %ld with a truncated or non-JSON body", rq->status);
        *st = PK_ERR_HTTP;
        return END_RETRY;
    }
    if (rq->err && rq->errlen)
        rq->err[0] = '\0'; /* a definitive answer: earlier attempts' failures do not matter */
    *st = PK_OK;
    return END_DONE;
}

/* The URL and the header list of a request. */
static pk_status request_open(pk_http *h, request *rq, const char *path)
{
    /* "Expect:" off: no 100-continue round trip before bodies over 1 KiB */
    static const char *const hv[] = {"Content-Type: application/json", "Accept: application/json",
                                     "Expect:"};
    rq->url = malloc(strlen(h->base) + strlen(path) + 1);
    if (!rq->url)
        return PK_ERR_NOMEM;
    strcpy(rq->url, h->base);
    strcat(rq->url, path);
    for (size_t i = 0; i < sizeof hv / sizeof hv[0]; i++) {
        struct curl_slist *t = h->cu->slist_append(rq->hdrs, hv[i]);
        if (!t)
            return PK_ERR_NOMEM;
        rq->hdrs = t;
    }
    return PK_OK;
}

static pk_status run_attempts(pk_http *h, request *rq)
{
    pk_status st = PK_ERR_HTTP;
    h->stats.requests++;
    for (int a = 0; a < h->p.max_attempts; a++) {
        if (a > 0 && pk_sleep((double)backoff_delay(&h->p, a - 1) / 1000.0))
            break; /* Ctrl-C during the backoff: no more attempts, the last one's status */
        CURLcode rc = attempt_once(h, rq);
        if (judge(h, rq, rc, a, &st) != END_RETRY)
            break;
    }
    return st;
}

pk_status pk_http_request(pk_http *h, const char *method, const char *path, const char *body,
                          size_t body_len, int flags, long *status, char **resp, size_t *resp_len,
                          char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!h || !method || !path || path[0] != '/' || !status || !resp) {
        pk_seterr(err, errlen,
                  "http: bad request (a handle, a method, a path starting with '/' "
                  "and status and resp pointers are needed)");
        return PK_ERR_ARG;
    }
    *resp = NULL;
    *status = 0;
    if (resp_len)
        *resp_len = 0;
    request rq = {.method = method,
                  .body = body,
                  .body_len = body_len,
                  .flags = flags,
                  .b = {.max = h->p.max_body},
                  .err = err,
                  .errlen = errlen};
    pk_status st = request_open(h, &rq, path);
    if (st == PK_OK)
        st = run_attempts(h, &rq);
    *status = rq.status;
    if (st == PK_OK && !rq.b.data)
        rq.b.data = calloc(1, 1); /* an empty body is still a string */
    if (st == PK_OK && !rq.b.data)
        st = PK_ERR_NOMEM;
    if (st == PK_OK) {
        *resp = rq.b.data;
        if (resp_len)
            *resp_len = rq.b.len;
        rq.b.data = NULL; /* ownership moved to the caller */
    }
    free(rq.b.data);
    free(rq.url);
    h->cu->slist_free_all(rq.hdrs);
    return st;
}
