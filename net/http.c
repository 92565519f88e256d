/* http.c: a small libcurl easy wrapper for the sync client: connect and total timeouts on every
 * attempt, retries with exponential backoff and full jitter on connection errors, timeouts,
 * truncated bodies and 5xx/429, a hard cap on response bodies, byte counters. Knows nothing of
 * the protocol (sync.c) beyond "a JSON body that does not parse was truncated". libcurl is
 * called through the table curl_dl.c loads at run time. */
#include "curl_dl.h"
#include "pk_net.h"

#include <cJSON.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct pk_http {
    const pk_curl_api *cu; /* libcurl (curl_dl.c) */
    CURL *curl;            /* one easy handle: connections are kept alive between requests */
    char *base;            /* base URL without a trailing '/' */
    pk_http_params p;
    char err[256]; /* last failure text */
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

pk_status pk_http_create(const char *base_url, pk_http_params params, pk_http **out)
{
    if (!out)
        return PK_ERR_ARG;
    *out = NULL;
    if (!base_url || !*base_url || params.max_attempts < 1 || params.timeout_ms <= 0 ||
        params.connect_timeout_ms <= 0 || params.max_body == 0 || params.backoff_ms < 0)
        return PK_ERR_ARG;
    if (strncmp(base_url, "http://", 7) != 0 && strncmp(base_url, "https://", 8) != 0)
        return PK_ERR_ARG;
    const pk_curl_api *cu = pk_curl_load();
    if (!cu)
        return PK_ERR_UNSUPPORTED;
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

const char *pk_http_errmsg(const pk_http *h)
{
    return h ? h->err : "no handle";
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
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d)
            return 0;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
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
    return (long)randombytes_uniform((uint32_t)d + 1u);
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

/* One transfer. Returns the curl code; *status and the buffer are filled. */
static CURLcode attempt_once(pk_http *h, const char *method, const char *url, const char *body,
                             size_t body_len, struct curl_slist *hdrs, body_buf *b, long *status)
{
    const pk_curl_api *cu = h->cu;
    CURL *c = h->curl;
    cu->easy_reset(c);
    cu->easy_setopt(c, CURLOPT_URL, url);
    cu->easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    cu->easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, h->p.connect_timeout_ms);
    cu->easy_setopt(c, CURLOPT_TIMEOUT_MS, h->p.timeout_ms);
    cu->easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
    cu->easy_setopt(c, CURLOPT_WRITEDATA, b);
    cu->easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)h->p.max_body);
    cu->easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    cu->easy_setopt(c, CURLOPT_USERAGENT, "pocketllm-sync/1");
    cu->easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    uint64_t sent = 0;
    cu->easy_setopt(c, CURLOPT_DEBUGFUNCTION, on_debug);
    cu->easy_setopt(c, CURLOPT_DEBUGDATA, &sent);
    cu->easy_setopt(c, CURLOPT_VERBOSE, 1L); /* only to on_debug, never to stderr */
    if (body) {
        cu->easy_setopt(c, CURLOPT_POSTFIELDS, body);
        cu->easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    if (strcmp(method, "GET") == 0)
        cu->easy_setopt(c, CURLOPT_HTTPGET, 1L);
    else if (!(body && strcmp(method, "POST") == 0))
        cu->easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    CURLcode rc = cu->easy_perform(c);
    *status = 0;
    cu->easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    curl_off_t up = 0;
    long hdr_size = 0;
    cu->easy_getinfo(c, CURLINFO_SIZE_UPLOAD_T, &up);
    cu->easy_getinfo(c, CURLINFO_HEADER_SIZE, &hdr_size);
    h->stats.attempts++;
    h->stats.body_up += (uint64_t)up;
    h->stats.body_down += b->len;
    h->stats.wire_up += sent;
    h->stats.wire_down += (uint64_t)hdr_size + b->len;
    return rc;
}

pk_status pk_http_request(pk_http *h, const char *method, const char *path, const char *body,
                          size_t body_len, int flags, long *status, char **resp, size_t *resp_len)
{
    if (!h || !method || !path || path[0] != '/' || !status || !resp)
        return PK_ERR_ARG;
    *resp = NULL;
    *status = 0;
    if (resp_len)
        *resp_len = 0;
    pk_status st = PK_ERR_HTTP;
    struct curl_slist *hdrs = NULL, *t;
    char *url = malloc(strlen(h->base) + strlen(path) + 1);
    body_buf b = {.max = h->p.max_body};
    if (!url) {
        st = PK_ERR_NOMEM;
        goto out;
    }
    strcpy(url, h->base);
    strcat(url, path);
    /* "Expect:" off: no 100-continue round trip before bodies over 1 KiB */
    static const char *const hv[] = {"Content-Type: application/json", "Accept: application/json",
                                     "Expect:"};
    for (size_t i = 0; i < sizeof hv / sizeof hv[0]; i++) {
        t = h->cu->slist_append(hdrs, hv[i]);
        if (!t) {
            st = PK_ERR_NOMEM;
            goto out;
        }
        hdrs = t;
    }
    h->stats.requests++;
    for (int a = 0; a < h->p.max_attempts; a++) {
        if (a > 0)
            sleep_ms(backoff_delay(&h->p, a - 1));
        b.len = 0;
        b.toobig = 0;
        CURLcode rc = attempt_once(h, method, url, body, body_len, hdrs, &b, status);
        if (b.toobig || rc == CURLE_FILESIZE_EXCEEDED) {
            snprintf(h->err, sizeof h->err, "%s %s: response larger than %zu bytes", method, path,
                     h->p.max_body);
            st = PK_ERR_LIMIT;
            goto out;
        }
        if (rc != CURLE_OK) {
            snprintf(h->err, sizeof h->err, "%s %s%s: %s (attempt %d of %d)", method, h->base, path,
                     h->cu->easy_strerror(rc), a + 1, h->p.max_attempts);
            pk_log(PK_LOG_DEBUG, "http: %s", h->err);
            st = PK_ERR_HTTP;
            if (!retryable_curl(rc))
                goto out;
            continue;
        }
        if (*status >= 500 || *status == 429) {
            snprintf(h->err, sizeof h->err, "%s %s%s: HTTP %ld (attempt %d of %d)", method, h->base,
                     path, *status, a + 1, h->p.max_attempts);
            pk_log(PK_LOG_DEBUG, "http: %s", h->err);
            st = PK_OK; /* if this was the last attempt, the caller sees the 5xx */
            continue;
        }
        if ((flags & PK_HTTP_JSON) && *status >= 200 && *status < 300 &&
            !json_ok(b.data ? b.data : "", b.len)) {
            snprintf(h->err, sizeof h->err,
                     "%s %s%s: HTTP %ld with a truncated or non-JSON body "
                     "(attempt %d of %d)",
                     method, h->base, path, *status, a + 1, h->p.max_attempts);
            pk_log(PK_LOG_DEBUG, "http: %s", h->err);
            st = PK_ERR_HTTP;
            continue;
        }
        st = PK_OK;
        break;
    }
    if (st != PK_OK)
        goto out;
    if (!b.data) {
        b.data = calloc(1, 1);
        if (!b.data) {
            st = PK_ERR_NOMEM;
            goto out;
        }
    }
    *resp = b.data;
    if (resp_len)
        *resp_len = b.len;
    b.data = NULL;
out:
    free(b.data);
    free(url);
    h->cu->slist_free_all(hdrs);
    return st;
}
