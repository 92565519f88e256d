/* pull.c: download a model (config, tokenizer files, safetensors, sharded too) from a Hugging
 * Face-compatible hub over libcurl (loaded at run time, curl_dl.c): HEAD for size and sha256,
 * GET into FILE.part with Range resume and retries, sha256 check, atomic rename. Loading the
 * files is left to model/. */
#include "curl_dl.h"
#include "pk_crypto.h"
#include "pk_net.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#define URL_MAX      2048
#define PATH_MAX_LEN 4096
#define INDEX_MAX    (64u << 20) /* cap on model.safetensors.index.json */
#define MAX_SHARDS   4096

static const char *const optional_files[] = {
    "generation_config.json",  "tokenizer.json", "tokenizer.model", "tokenizer_config.json",
    "special_tokens_map.json", "vocab.json",     "merges.txt",      "vocab.txt",
};

typedef struct pull_ctx {
    const char *repo;
    const char *out_dir;
    const pk_pull_params *p;
    const pk_curl_api *cu; /* libcurl (curl_dl.c) */
    char endpoint[URL_MAX];
    char rev_esc[512];       /* percent-encoded revision */
    struct curl_slist *hdrs; /* owned: User-Agent, Authorization */
    pk_pull_result *res;
    char *err;
    size_t errlen;
} pull_ctx;

/* Headers of the last response (reset at each status line, so redirects do not mix). */
typedef struct hdr_info {
    int64_t content_length; /* -1 if absent */
    int64_t linked_size;    /* X-Linked-Size, -1 if absent */
    int64_t range_total;    /* total from Content-Range, -1 if absent */
    char sha[65];           /* sha256 hex if the hub gave one, else "" */
} hdr_info;

typedef struct xfer {
    const pk_curl_api *cu;
    CURL *curl;
    FILE *f; /* the .part file, opened for append */
    const char *part_path;
    int64_t offset; /* bytes in the .part before this attempt */
    int64_t got;    /* body bytes written this attempt */
    int64_t expect; /* full file size if known, else -1 */
    int checked;    /* the status of this response has been looked at */
    int accept;     /* 1: write the body (200/206), 0: discard it */
    int io_error;
    int too_big;
    const pk_pull_params *p; /* progress callback */
    char label[96];          /* the file, as shown by the progress callback */
    int64_t total;           /* bytes this transfer expects, 0 if unknown */
    hdr_info h;
} xfer;

/* The caller's error buffer of a pull (pk_seterr). */
#define set_err(c, ...) pk_seterr((c)->err, (c)->errlen, __VA_ARGS__)

pk_pull_params pk_pull_default_params(void)
{
    pk_pull_params p = {0};
    p.max_attempts = 5;
    p.connect_timeout_ms = 10000;
    p.stall_timeout_s = 60;
    return p;
}

/* ---- validation ----------------------------------------------------------------------------- */

static int safe_segment(const char *s, size_t n)
{
    return n > 0 && n <= 200 && s[0] != '.' && pk_name_chars_ok(s, n, "._-");
}

/* "name" or "org/name", each segment [A-Za-z0-9._-], not starting with '.'. */
static int valid_repo(const char *r)
{
    const char *slash = strchr(r, '/');
    if (!slash)
        return safe_segment(r, strlen(r));
    return !strchr(slash + 1, '/') && safe_segment(r, (size_t)(slash - r)) &&
           safe_segment(slash + 1, strlen(slash + 1));
}

static int valid_revision(const char *r)
{
    size_t n = strlen(r);
    return n > 0 && n <= 255 && !strstr(r, "..") && r[0] != '/' && pk_name_chars_ok(r, n, "._-/");
}

static int is_hex64(const char *s, size_t n)
{
    if (n != 64)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') ||
              (s[i] >= 'A' && s[i] <= 'F')))
            return 0;
    return 1;
}

/* ---- headers -------------------------------------------------------------------------------- */

static void hdr_reset(hdr_info *h)
{
    h->content_length = -1;
    h->linked_size = -1;
    h->range_total = -1;
    h->sha[0] = '\0';
}

/* value of "Name: value\r\n" if the line has that name, trimmed (quotes and W/ removed). */
static int hdr_value(const char *line, size_t n, const char *name, char *out, size_t cap)
{
    size_t k = strlen(name);
    if (n <= k || strncasecmp(line, name, k) != 0 || line[k] != ':')
        return 0;
    const char *v = line + k + 1, *end = line + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    if (end - v >= 2 && v[0] == 'W' && v[1] == '/')
        v += 2;
    if (end - v >= 2 && *v == '"' && end[-1] == '"') {
        v++;
        end--;
    }
    size_t len = (size_t)(end - v) < cap - 1 ? (size_t)(end - v) : cap - 1;
    memcpy(out, v, len);
    out[len] = '\0';
    return 1;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *user)
{
    hdr_info *h = user;
    size_t n = size * nitems;
    char v[256];
    if (n >= 5 && !strncmp(buf, "HTTP/", 5)) {
        hdr_reset(h);
    } else if (hdr_value(buf, n, "Content-Length", v, sizeof v)) {
        h->content_length = strtoll(v, NULL, 10);
    } else if (hdr_value(buf, n, "X-Linked-Size", v, sizeof v)) {
        h->linked_size = strtoll(v, NULL, 10);
    } else if (hdr_value(buf, n, "Content-Range", v, sizeof v)) {
        const char *slash = strchr(v, '/');
        if (slash && slash[1] != '*')
            h->range_total = strtoll(slash + 1, NULL, 10);
    } else if (hdr_value(buf, n, "X-Content-Sha256", v, sizeof v) ||
               hdr_value(buf, n, "X-Linked-Etag", v, sizeof v) ||
               hdr_value(buf, n, "ETag", v, sizeof v)) {
        /* X-Content-Sha256 wins; an ETag that is not 64 hex digits (a git sha1) is no checksum */
        if (is_hex64(v, strlen(v)) && (h->sha[0] == '\0' || !strncasecmp(buf, "X-Content", 9))) {
            for (size_t i = 0; i < 64; i++)
                h->sha[i] = (char)((v[i] >= 'A' && v[i] <= 'F') ? v[i] - 'A' + 'a' : v[i]);
            h->sha[64] = '\0';
        }
    }
    return n;
}

/* ---- transfers ------------------------------------------------------------------------------ */

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *user)
{
    xfer *x = user;
    size_t n = size * nmemb;
    if (!x->checked) {
        long code = 0;
        x->cu->easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, &code);
        x->checked = 1;
        x->accept = code == 200 || code == 206;
        if (code == 200 && x->offset > 0) {
            /* the server ignored our Range: start the file over */
            if (!freopen(x->part_path, "wb", x->f)) {
                x->f = NULL;
                x->io_error = 1;
                return 0;
            }
            x->offset = 0;
        }
    }
    if (!x->accept)
        return n; /* an error page: read and drop it */
    if (x->expect >= 0 && x->offset + x->got + (int64_t)n > x->expect) {
        x->too_big = 1;
        return 0;
    }
    if (fwrite(ptr, 1, n, x->f) != n) {
        x->io_error = 1;
        return 0;
    }
    x->got += (int64_t)n;
    return n;
}

static int on_progress(void *user, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    xfer *x = user;
    (void)dltotal;
    (void)ultotal;
    (void)ulnow;
    if (x->p->progress && x->accept)
        x->p->progress(x->p->progress_user, x->label, (int64_t)dlnow, x->total, 0);
    return pk_interrupted() ? 1 : 0; /* non-zero aborts the transfer: a clean stop */
}

static void common_opts(pull_ctx *c, CURL *h, const char *url)
{
    c->cu->easy_setopt(h, CURLOPT_URL, url);
    c->cu->easy_setopt(h, CURLOPT_HTTPHEADER, c->hdrs);
    c->cu->easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->p->connect_timeout_ms);
    c->cu->easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    c->cu->easy_setopt(h, CURLOPT_LOW_SPEED_TIME, c->p->stall_timeout_s);
    c->cu->easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    c->cu->easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    c->cu->easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    c->cu->easy_setopt(h, CURLOPT_MAXREDIRS, 10L);
}

typedef enum outcome { OUT_OK, OUT_RETRY, OUT_FAIL } outcome;

/* Maps an HTTP status of url (file) to the outcome; sets the status code and message for
 * failures. */
static outcome classify(pull_ctx *c, long code, const char *file, const char *url, pk_status *st)
{
    if (code >= 200 && code < 300)
        return OUT_OK;
    if (code == 404) {
        *st = PK_ERR_NOTFOUND;
        set_err(c,
                "%s not found in %s at revision %s (HTTP 404 from %s): check the repo id and "
                "the revision",
                file, c->repo, c->p->revision ? c->p->revision : "main", url);
        return OUT_FAIL;
    }
    if (code == 401 || code == 403) {
        *st = PK_ERR_AUTH;
        set_err(c,
                "%s: access denied (HTTP %ld from %s): the repo is gated or private; accept "
                "its terms on the hub and set HF_TOKEN",
                file, code, url);
        return OUT_FAIL;
    }
    if (code >= 500 || code == 429 || code == 408 || code == 0) {
        *st = PK_ERR_HTTP;
        set_err(c, "%s: HTTP %ld from %s", file, code, url);
        return OUT_RETRY;
    }
    *st = PK_ERR_HTTP;
    set_err(c, "%s: unexpected HTTP %ld from %s", file, code, url);
    return OUT_FAIL;
}

/* 0 if the URL fits in n bytes (it always does for validated parts; checked anyway). */
static int build_url(pull_ctx *c, const char *file, char *url, size_t n)
{
    int k = snprintf(url, n, "%s/%s/resolve/%s/%s", c->endpoint, c->repo, c->rev_esc, file);
    return k >= 0 && (size_t)k < n ? 0 : -1;
}

/* HEAD without following redirects: the hub's first answer carries X-Linked-Etag/-Size for
 * files stored elsewhere (LFS/CDN); a plain answer carries ETag and Content-Length. */
static outcome do_head(pull_ctx *c, const char *file, hdr_info *h, int64_t *size, pk_status *st)
{
    char url[URL_MAX];
    if (build_url(c, file, url, sizeof url) != 0) {
        *st = PK_ERR_ARG;
        set_err(c, "URL too long for %s", file);
        return OUT_FAIL;
    }
    const pk_curl_api *cu = c->cu;
    CURL *curl = cu->easy_init();
    if (!curl) {
        *st = PK_ERR_NOMEM;
        return OUT_FAIL;
    }
    hdr_reset(h);
    common_opts(c, curl, url);
    cu->easy_setopt(curl, CURLOPT_NOBODY, 1L);
    cu->easy_setopt(curl, CURLOPT_TIMEOUT_MS, c->p->connect_timeout_ms * 3);
    cu->easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    cu->easy_setopt(curl, CURLOPT_HEADERDATA, h);
    CURLcode rc = cu->easy_perform(curl);
    long code = 0;
    cu->easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
    cu->easy_cleanup(curl);
    if (rc != CURLE_OK) {
        *st = PK_ERR_HTTP;
        set_err(c, "%s: %s (%s)", file, cu->easy_strerror(rc), url);
        return OUT_RETRY;
    }
    *size = -1;
    if (code >= 300 && code < 400) {
        *size = h->linked_size;
        return OUT_OK;
    }
    outcome o = classify(c, code, file, url, st);
    if (o == OUT_OK)
        *size = h->linked_size >= 0 ? h->linked_size : h->content_length;
    return o;
}

static int64_t file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (int64_t)sb.st_size : -1;
}

static pk_status sha256_file(const char *path, char hex[65])
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return PK_ERR_IO;
    pk_sha256_state s;
    pk_sha256_init(&s);
    unsigned char buf[1 << 16], out[PK_SHA256_BYTES];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        pk_sha256_update(&s, buf, n);
    int bad = ferror(f);
    fclose(f);
    pk_sha256_final(&s, out); /* also when bad: final wipes the state */
    if (bad)
        return PK_ERR_IO;
    pk_hex_encode(hex, 65, out, sizeof out);
    return PK_OK;
}

/* Opens part_path for append and an easy handle for one GET of file, resuming at the .part's
 * size; tells the progress callback the transfer starts. OUT_FAIL with *st on failure. */
static outcome xfer_open(pull_ctx *c, const char *file, const char *part_path, int64_t size,
                         xfer *x, pk_status *st)
{
    x->cu = c->cu;
    x->p = c->p;
    x->part_path = part_path;
    x->offset = file_size(part_path);
    x->offset = x->offset < 0 ? 0 : x->offset;
    x->expect = size;
    hdr_reset(&x->h);
    x->f = fopen(part_path, "ab");
    if (!x->f) {
        *st = PK_ERR_IO;
        set_err(c, "cannot write %s: %s", part_path, strerror(errno));
        return OUT_FAIL;
    }
    x->curl = c->cu->easy_init();
    if (!x->curl) {
        fclose(x->f);
        *st = PK_ERR_NOMEM;
        return OUT_FAIL;
    }
    if (x->offset > 0)
        c->res->resumed++;
    snprintf(x->label, sizeof x->label, "%s%s", file, x->offset > 0 ? " (resumed)" : "");
    x->total = size >= 0 ? size - x->offset : 0;
    if (c->p->progress)
        c->p->progress(c->p->progress_user, x->label, 0, x->total, 0);
    return OUT_OK;
}

/* Runs the transfer x was opened for; returns the curl code, *code the HTTP status. Closes the
 * handle and the file, counts the bytes and tells the progress callback it ended. */
static CURLcode xfer_run(pull_ctx *c, xfer *x, const char *url, long *code)
{
    const pk_curl_api *cu = c->cu;
    char range[64];
    common_opts(c, x->curl, url);
    cu->easy_setopt(x->curl, CURLOPT_FOLLOWLOCATION, 1L);
    if (x->offset > 0) {
        snprintf(range, sizeof range, "%lld-", (long long)x->offset);
        cu->easy_setopt(x->curl, CURLOPT_RANGE, range);
    }
    cu->easy_setopt(x->curl, CURLOPT_WRITEFUNCTION, on_write);
    cu->easy_setopt(x->curl, CURLOPT_WRITEDATA, x);
    cu->easy_setopt(x->curl, CURLOPT_HEADERFUNCTION, on_header);
    cu->easy_setopt(x->curl, CURLOPT_HEADERDATA, &x->h);
    cu->easy_setopt(x->curl, CURLOPT_NOPROGRESS, 0L);
    cu->easy_setopt(x->curl, CURLOPT_XFERINFOFUNCTION, on_progress);
    cu->easy_setopt(x->curl, CURLOPT_XFERINFODATA, x);
    CURLcode rc = cu->easy_perform(x->curl);
    *code = 0;
    cu->easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, code);
    cu->easy_cleanup(x->curl);
    x->curl = NULL;
    if (x->f && fclose(x->f) != 0)
        x->io_error = 1;
    x->f = NULL;
    c->res->bytes += x->got;
    if (c->p->progress)
        c->p->progress(c->p->progress_user, x->label, x->got, x->total, 1);
    return rc;
}

/* What a finished GET attempt came to (rc, HTTP code); sets *st and the message on failure. */
static outcome xfer_outcome(pull_ctx *c, const char *file, const xfer *x, const char *url,
                            CURLcode rc, long code, pk_status *st)
{
    const char *part_path = x->part_path;
    if (x->io_error) {
        *st = PK_ERR_IO;
        set_err(c, "cannot write %s: %s", part_path, strerror(errno));
        return OUT_FAIL;
    }
    if (rc == CURLE_ABORTED_BY_CALLBACK && pk_interrupted()) {
        *st = PK_ERR_INTERRUPTED;
        set_err(c, "interrupted: %s kept %lld bytes; run the same pull again to resume", part_path,
                (long long)file_size(part_path));
        return OUT_FAIL;
    }
    if (x->too_big) {
        remove(part_path);
        *st = PK_ERR_FORMAT;
        set_err(c, "%s: the server sent more than the announced %lld bytes (%s)", file,
                (long long)x->expect, url);
        return OUT_RETRY;
    }
    if (code == 416) {
        remove(part_path); /* our .part does not fit the file any more: start over */
        *st = PK_ERR_HTTP;
        set_err(c, "%s: range not satisfiable (HTTP 416 from %s), restarting the download", file,
                url);
        return OUT_RETRY;
    }
    if (rc != CURLE_OK) {
        *st = PK_ERR_HTTP;
        set_err(c, "%s: %s after %lld bytes (%s)", file, c->cu->easy_strerror(rc),
                (long long)file_size(part_path), url);
        return code >= 400 ? classify(c, code, file, url, st) : OUT_RETRY;
    }
    return classify(c, code, file, url, st);
}

/* One GET attempt appending to part_path from its current size. */
static outcome do_get(pull_ctx *c, const char *file, const char *part_path, int64_t size,
                      pk_status *st)
{
    char url[URL_MAX];
    if (build_url(c, file, url, sizeof url) != 0) {
        *st = PK_ERR_ARG;
        set_err(c, "URL too long for %s", file);
        return OUT_FAIL;
    }
    xfer x = {0};
    outcome o = xfer_open(c, file, part_path, size, &x, st);
    if (o != OUT_OK)
        return o;
    long code = 0;
    CURLcode rc = xfer_run(c, &x, url, &code);
    return xfer_outcome(c, file, &x, url, rc, code, st);
}

static void backoff(int attempt)
{
    long ms = 200L << (attempt < 5 ? attempt : 5);
    (void)pk_sleep((double)ms / 1000.0); /* the caller looks at pk_interrupted() next */
}

/* Verifies a complete .part (size, sha256) and renames it into place. */
static pk_status finish_file(pull_ctx *c, const char *file, const char *part, const char *final,
                             int64_t size, const char *sha)
{
    int64_t have = file_size(part);
    if (size >= 0 && have != size) {
        set_err(c, "%s: got %lld of %lld bytes", file, (long long)have, (long long)size);
        return PK_ERR_HTTP;
    }
    if (sha[0]) {
        char got[65];
        pk_status st = sha256_file(part, got);
        if (st != PK_OK) {
            set_err(c, "cannot read %s", part);
            return st;
        }
        if (strcmp(got, sha) != 0) {
            remove(part);
            set_err(c,
                    "%s: sha256 mismatch (hub says %s, got %s); the partial file was "
                    "removed, run pull again",
                    file, sha, got);
            return PK_ERR_AUTH;
        }
        c->res->verified++;
    }
    if (rename(part, final) != 0) {
        set_err(c, "cannot rename %s to %s: %s", part, final, strerror(errno));
        return PK_ERR_IO;
    }
    return PK_OK;
}

/* Is an existing final file the one the hub has? (sha256 if given, else size.) */
static int up_to_date(const char *final, int64_t size, const char *sha)
{
    int64_t have = file_size(final);
    if (have < 0 || (size >= 0 && have != size))
        return 0;
    if (sha[0]) {
        char got[65];
        return sha256_file(final, got) == PK_OK && !strcmp(got, sha);
    }
    return size >= 0;
}

static pk_status fetch_file(pull_ctx *c, const char *file)
{
    char part[PATH_MAX_LEN], final[PATH_MAX_LEN];
    if (snprintf(final, sizeof final, "%s/%s", c->out_dir, file) >= (int)sizeof final ||
        snprintf(part, sizeof part, "%s/%s.part", c->out_dir, file) >= (int)sizeof part) {
        set_err(c, "output path too long: %s/%s", c->out_dir, file);
        return PK_ERR_ARG;
    }
    pk_status st = PK_ERR_HTTP;
    int attempts = c->p->max_attempts > 0 ? c->p->max_attempts : 1;
    for (int a = 0; a < attempts; a++) {
        if (a > 0)
            backoff(a - 1);
        if (pk_interrupted()) {
            set_err(c, "interrupted; run the same pull again to resume");
            return PK_ERR_INTERRUPTED;
        }
        hdr_info h;
        int64_t size = -1;
        outcome o = do_head(c, file, &h, &size, &st);
        if (o == OUT_FAIL)
            return st;
        if (o == OUT_RETRY)
            continue;
        char sha[65];
        memcpy(sha, h.sha, sizeof sha);
        if (up_to_date(final, size, sha)) {
            remove(part);
            c->res->up_to_date++;
            c->res->files++;
            return PK_OK;
        }
        int64_t have = file_size(part);
        if (size >= 0 && have > size)
            remove(part);
        if (!(size >= 0 && have == size)) {
            o = do_get(c, file, part, size, &st);
            if (o == OUT_FAIL)
                return st;
            if (o == OUT_RETRY)
                continue;
        }
        st = finish_file(c, file, part, final, size, sha);
        if (st == PK_ERR_HTTP)
            continue; /* short body (a dropped connection): resume on the next attempt */
        if (st == PK_OK) {
            c->res->downloaded++;
            c->res->files++;
        }
        return st;
    }
    return st;
}

/* ---- the shard index ------------------------------------------------------------------------ */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The index file as parsed JSON (*out owned, cJSON_Delete; NULL if it is not JSON). */
static pk_status load_index(pull_ctx *c, const char *path, cJSON **out)
{
    *out = NULL;
    int64_t len = file_size(path);
    if (len < 0 || len > (int64_t)INDEX_MAX) {
        set_err(c, "%s: missing or larger than %u bytes", path, INDEX_MAX);
        return PK_ERR_FORMAT;
    }
    char *buf = malloc((size_t)len + 1);
    FILE *f = fopen(path, "rb");
    size_t got = (buf && f) ? fread(buf, 1, (size_t)len, f) : 0;
    if (f)
        fclose(f);
    if (!buf || got != (size_t)len) {
        free(buf);
        set_err(c, "cannot read %s", path);
        return buf ? PK_ERR_IO : PK_ERR_NOMEM;
    }
    buf[len] = '\0';
    *out = cJSON_Parse(buf);
    free(buf);
    return PK_OK;
}

/* Adds the shard names of weight_map to v[0..*k) once each (v has MAX_SHARDS slots). */
static pk_status collect_shards(pull_ctx *c, const char *path, const cJSON *map, char **v,
                                size_t *k)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, map)
    {
        if (!cJSON_IsString(e) || !safe_segment(e->valuestring, strlen(e->valuestring))) {
            set_err(c, "%s: weight_map[\"%.64s\"] is not a plain file name", path,
                    e->string ? e->string : "?");
            return PK_ERR_FORMAT;
        }
        int dup = 0;
        for (size_t i = 0; i < *k && !dup; i++)
            dup = !strcmp(v[i], e->valuestring);
        if (dup)
            continue;
        if (*k == MAX_SHARDS) {
            set_err(c, "%s: more than %d shards", path, MAX_SHARDS);
            return PK_ERR_LIMIT;
        }
        v[*k] = strdup(e->valuestring);
        if (!v[*k])
            return PK_ERR_NOMEM;
        (*k)++;
    }
    if (*k == 0) {
        set_err(c, "%s: weight_map names no shard", path);
        return PK_ERR_FORMAT;
    }
    return PK_OK;
}

/* Unique shard names from the index's weight_map, sorted; *names owned (free each, then it). */
static pk_status read_index(pull_ctx *c, const char *path, char ***names, size_t *n)
{
    cJSON *j = NULL;
    char **v = NULL;
    size_t k = 0;
    *names = NULL;
    *n = 0;
    pk_status st = load_index(c, path, &j);
    if (st != PK_OK)
        return st;
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(j, "weight_map");
    if (!cJSON_IsObject(map)) {
        set_err(c, "%s: not JSON with a \"weight_map\" object", path);
        st = PK_ERR_FORMAT;
        goto out;
    }
    v = calloc(MAX_SHARDS, sizeof *v);
    st = v ? collect_shards(c, path, map, v, &k) : PK_ERR_NOMEM;
    if (st != PK_OK)
        goto out;
    qsort(v, k, sizeof *v, cmp_str);
    *names = v;
    *n = k;
    v = NULL; /* ownership moved to the caller */
out:
    if (v)
        for (size_t i = 0; i < k; i++)
            free(v[i]);
    free(v);
    cJSON_Delete(j);
    return st;
}

static pk_status fetch_weights(pull_ctx *c)
{
    pk_status st = fetch_file(c, "model.safetensors");
    if (st != PK_ERR_NOTFOUND)
        return st;
    st = fetch_file(c, "model.safetensors.index.json");
    if (st == PK_ERR_NOTFOUND) {
        set_err(c,
                "%s has neither model.safetensors nor model.safetensors.index.json "
                "(other weight formats are not supported: convert to safetensors)",
                c->repo);
        return PK_ERR_UNSUPPORTED;
    }
    if (st != PK_OK)
        return st;
    char path[PATH_MAX_LEN], **names = NULL;
    size_t n = 0;
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", c->out_dir);
    st = read_index(c, path, &names, &n);
    for (size_t i = 0; i < n; i++) {
        if (st == PK_OK)
            st = fetch_file(c, names[i]);
        free(names[i]);
    }
    free(names);
    return st;
}

static pk_status mkdirs(pull_ctx *c, const char *dir)
{
    char tmp[PATH_MAX_LEN];
    if (snprintf(tmp, sizeof tmp, "%s", dir) >= (int)sizeof tmp)
        return PK_ERR_ARG;
    for (char *q = tmp + 1; *q; q++) {
        if (*q != '/')
            continue;
        *q = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            goto fail;
        *q = '/';
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
        goto fail;
    return PK_OK;
fail:
    set_err(c, "cannot create %s: %s", tmp, strerror(errno));
    return PK_ERR_IO;
}

static pk_status setup(pull_ctx *c)
{
    const pk_pull_params *p = c->p;
    const char *ep = p->endpoint ? p->endpoint : getenv("HF_ENDPOINT");
    if (!ep || !*ep)
        ep = "https://huggingface.co";
    if ((strncmp(ep, "http://", 7) && strncmp(ep, "https://", 8)) ||
        snprintf(c->endpoint, sizeof c->endpoint, "%s", ep) >= (int)sizeof c->endpoint) {
        set_err(c, "bad endpoint '%s': expected http://HOST[:PORT] or https://HOST", ep);
        return PK_ERR_ARG;
    }
    size_t n = strlen(c->endpoint);
    while (n > 0 && c->endpoint[n - 1] == '/')
        c->endpoint[--n] = '\0';
    const char *rev = p->revision ? p->revision : "main";
    if (!valid_repo(c->repo)) {
        set_err(c, "bad repo id '%s': expected NAME or ORG/NAME ([A-Za-z0-9._-])", c->repo);
        return PK_ERR_ARG;
    }
    if (!valid_revision(rev)) {
        set_err(c, "bad revision '%s': a branch, tag or commit ([A-Za-z0-9._/-])", rev);
        return PK_ERR_ARG;
    }
    c->cu = pk_curl_load();
    if (!c->cu) {
        set_err(c, "%s", pk_curl_errmsg());
        return PK_ERR_UNSUPPORTED;
    }
    char *esc = c->cu->easy_escape(NULL, rev, 0);
    if (!esc)
        return PK_ERR_NOMEM;
    snprintf(c->rev_esc, sizeof c->rev_esc, "%s", esc);
    c->cu->free(esc);
    c->hdrs = c->cu->slist_append(NULL, "User-Agent: pocketllm/0.1");
    const char *tok = p->token ? p->token : getenv("HF_TOKEN");
    if (c->hdrs && tok && *tok) {
        size_t len = strlen(tok) + 32;
        char *h = malloc(len);
        if (!h)
            return PK_ERR_NOMEM;
        snprintf(h, len, "Authorization: Bearer %s", tok);
        struct curl_slist *l = c->cu->slist_append(c->hdrs, h);
        pk_secure_wipe(h, len);
        free(h);
        if (!l)
            return PK_ERR_NOMEM;
        c->hdrs = l;
    }
    return c->hdrs ? mkdirs(c, c->out_dir) : PK_ERR_NOMEM;
}

pk_status pk_pull(const char *repo, const char *out_dir, const pk_pull_params *p,
                  pk_pull_result *res, char *err, size_t errlen)
{
    pk_pull_result local;
    pk_pull_params defaults = pk_pull_default_params();
    pull_ctx c = {.repo = repo ? repo : "",
                  .out_dir = out_dir,
                  .p = p ? p : &defaults,
                  .res = res ? res : &local,
                  .err = err,
                  .errlen = errlen};
    memset(c.res, 0, sizeof *c.res);
    if (err && errlen)
        err[0] = '\0';
    if (!out_dir || !*out_dir) {
        set_err(&c, "no output directory");
        return PK_ERR_ARG;
    }
    pk_status st = setup(&c);
    if (st == PK_OK)
        st = fetch_file(&c, "config.json");
    for (size_t i = 0; st == PK_OK && i < sizeof optional_files / sizeof optional_files[0]; i++) {
        st = fetch_file(&c, optional_files[i]);
        if (st == PK_ERR_NOTFOUND)
            st = PK_OK; /* optional */
    }
    if (st == PK_OK)
        st = fetch_weights(&c);
    if (st == PK_OK && err && errlen)
        err[0] = '\0';
    if (c.hdrs) {
        /* the list may hold the token: the strings are curl's copies, freed here */
        c.cu->slist_free_all(c.hdrs);
    }
    return st;
}
