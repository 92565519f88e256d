/* hub.c: a Hugging Face-hub-like file server for `pocketllm pull` (docs/PROTOCOL.md section 8):
 * GET/HEAD /{repo}/resolve/{revision}/{file} with Content-Length, ETag/X-Linked-Etag and
 * X-Content-Sha256 (sha256 of the whole file), single Range requests (206/416), and the file
 * list GET /api/models/{repo}. Paths are confined to --hub-dir. */
#include "server_impl.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <microhttpd.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CACHE_SLOTS 128
#define LIST_MAX    4096

typedef struct hash_slot {
    char path[1024];
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    char hex[65];
} hash_slot;

struct srv_hash_cache {
    pthread_mutex_t mu;
    hash_slot slot[CACHE_SLOTS];
    unsigned next;
};

srv_hash_cache *srv_hash_cache_new(void)
{
    srv_hash_cache *hc = calloc(1, sizeof *hc);
    if (hc)
        pthread_mutex_init(&hc->mu, NULL);
    return hc;
}

void srv_hash_cache_free(srv_hash_cache *hc)
{
    if (!hc)
        return;
    pthread_mutex_destroy(&hc->mu);
    free(hc);
}

static int same_file(const hash_slot *h, const char *path, const struct stat *st)
{
    return strcmp(h->path, path) == 0 && h->dev == st->st_dev && h->ino == st->st_ino &&
           h->size == st->st_size && h->mtime.tv_sec == st->st_mtim.tv_sec &&
           h->mtime.tv_nsec == st->st_mtim.tv_nsec;
}

static int sha256_fd(int fd, char hex[65])
{
    crypto_hash_sha256_state hs;
    unsigned char buf[65536], out[32];
    off_t off = 0;
    crypto_hash_sha256_init(&hs);
    for (;;) {
        ssize_t n = pread(fd, buf, sizeof buf, off);
        if (n < 0)
            return 0;
        if (n == 0)
            break;
        crypto_hash_sha256_update(&hs, buf, (unsigned long long)n);
        off += n;
    }
    crypto_hash_sha256_final(&hs, out);
    pkp_hex(out, 32, hex);
    return 1;
}

/* sha256 hex of an open file, cached by (path, inode, size, mtime). */
static int file_sha256(srv_hash_cache *hc, const char *path, int fd, const struct stat *st,
                       char hex[65])
{
    pthread_mutex_lock(&hc->mu);
    for (int i = 0; i < CACHE_SLOTS; i++) {
        if (same_file(&hc->slot[i], path, st)) {
            memcpy(hex, hc->slot[i].hex, 65);
            pthread_mutex_unlock(&hc->mu);
            return 1;
        }
    }
    pthread_mutex_unlock(&hc->mu);
    if (!sha256_fd(fd, hex))
        return 0;
    pthread_mutex_lock(&hc->mu);
    hash_slot *h = &hc->slot[hc->next++ % CACHE_SLOTS];
    snprintf(h->path, sizeof h->path, "%s", path);
    h->dev = st->st_dev;
    h->ino = st->st_ino;
    h->size = st->st_size;
    h->mtime = st->st_mtim;
    memcpy(h->hex, hex, 65);
    pthread_mutex_unlock(&hc->mu);
    return 1;
}

/* Each '/'-separated segment of p non-empty, not starting with '.', no backslash. */
/* A path of '/'-separated segments, none empty, none starting with '.' (no "..", no hidden
 * files), no backslash, no control byte, and no "%00" (srv_unescape leaves an encoded NUL
 * encoded, so a NUL can never cut a name short). */
static int segments_ok(const char *p, size_t len, int *count)
{
    size_t start = 0;
    *count = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && (p[i] == '\\' || (unsigned char)p[i] < 0x20))
            return 0;
        if (i + 2 < len && p[i] == '%' && p[i + 1] == '0' && p[i + 2] == '0')
            return 0;
        if (i == len || p[i] == '/') {
            if (i == start || p[start] == '.')
                return 0;
            (*count)++;
            start = i + 1;
        }
    }
    return 1;
}

typedef struct file_body {
    int fd;
    uint64_t off;  /* first byte served */
    uint64_t stop; /* bytes to serve before stopping (< len when truncating) */
    uint64_t len;  /* bytes announced */
} file_body;

static ssize_t file_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    file_body *b = cls;
    if (pos >= b->stop)
        return b->stop < b->len ? MHD_CONTENT_READER_END_WITH_ERROR
                                : MHD_CONTENT_READER_END_OF_STREAM;
    uint64_t n = b->stop - pos;
    if (n > max)
        n = max;
    ssize_t got = pread(b->fd, buf, (size_t)n, (off_t)(b->off + pos));
    return got > 0 ? got : MHD_CONTENT_READER_END_WITH_ERROR;
}

static void file_free(void *cls)
{
    file_body *b = cls;
    close(b->fd);
    free(b);
}

/* Parses one "bytes=a-b" / "bytes=a-" / "bytes=-n" range: 1 ok, 0 unsatisfiable, -1 ignore. */
static int parse_range(const char *h, uint64_t size, uint64_t *a, uint64_t *b)
{
    if (strncmp(h, "bytes=", 6) != 0 || strchr(h, ','))
        return -1;
    const char *p = h + 6;
    char *end = NULL;
    if (*p == '-') {
        unsigned long long n = strtoull(p + 1, &end, 10);
        if (end == p + 1 || *end)
            return -1;
        if (n == 0 || size == 0)
            return 0;
        *a = n >= size ? 0 : size - n;
        *b = size - 1;
        return 1;
    }
    unsigned long long x = strtoull(p, &end, 10);
    if (end == p || *end != '-')
        return -1;
    p = end + 1;
    unsigned long long y = size ? size - 1 : 0;
    if (*p) {
        y = strtoull(p, &end, 10);
        if (end == p || *end)
            return -1;
    }
    if (x >= size || y < x)
        return 0;
    *a = x;
    *b = y < size ? y : size - 1;
    return 1;
}

/* 1 if path, with every symlink resolved, lies inside the hub directory: a link in the hub
 * that points elsewhere is never followed out of it. */
static int inside_hub(const srv *s, const char *path)
{
    char root[PATH_MAX], real[PATH_MAX];
    if (!realpath(s->hub_dir, root) || !realpath(path, real))
        return 0;
    size_t n = strlen(root);
    return strncmp(real, root, n) == 0 && real[n] == '/';
}

static int open_inside(const srv *s, const char *path)
{
    return inside_hub(s, path) ? open(path, O_RDONLY | O_CLOEXEC) : -1;
}

static int open_hub_file(const srv *s, const char *repo, size_t rlen, const char *rev, size_t vlen,
                         const char *file, char *path, size_t cap, struct stat *st)
{
    snprintf(path, cap, "%s/%.*s/%.*s/%s", s->hub_dir, (int)rlen, repo, (int)vlen, rev, file);
    int fd = open_inside(s, path);
    if (fd < 0) {
        snprintf(path, cap, "%s/%.*s/%s", s->hub_dir, (int)rlen, repo, file);
        fd = open_inside(s, path);
    }
    if (fd >= 0 && (fstat(fd, st) != 0 || !S_ISREG(st->st_mode))) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static int serve_file(srv *s, struct MHD_Connection *c, int fd, const char *path,
                      const struct stat *st, const char *rev, srv_fault f)
{
    char sha[65], etag[80], cr[96];
    uint64_t size = (uint64_t)st->st_size, a = 0, b = size ? size - 1 : 0;
    unsigned status = 200;
    if (!file_sha256(s->hashes, path, fd, st, sha)) {
        close(fd);
        return srv_reply_error(c, 500, "internal", f, "cannot read %s", path);
    }
    const char *range = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Range");
    int rr = range ? parse_range(range, size, &a, &b) : -1;
    if (rr == 0) {
        close(fd);
        snprintf(cr, sizeof cr, "bytes */%llu", (unsigned long long)size);
        struct MHD_Response *r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
        if (!r)
            return MHD_NO;
        MHD_add_response_header(r, "Content-Range", cr);
        int ret = MHD_queue_response(c, 416, r);
        MHD_destroy_response(r);
        return ret;
    }
    if (f == SRV_FAULT_DROP) {
        close(fd);
        return MHD_NO;
    }
    uint64_t len = size ? b - a + 1 : 0;
    if (rr == 1)
        status = 206;
    file_body *fb = malloc(sizeof *fb);
    if (!fb) {
        close(fd);
        return MHD_NO;
    }
    *fb = (file_body){fd, a, f == SRV_FAULT_TRUNCATE ? len / 2 : len, len};
    struct MHD_Response *r =
        MHD_create_response_from_callback(len, 65536, file_read, fb, file_free);
    if (!r) {
        file_free(fb);
        return MHD_NO;
    }
    snprintf(etag, sizeof etag, "\"%s\"", sha);
    MHD_add_response_header(r, "ETag", etag);
    MHD_add_response_header(r, "X-Linked-Etag", etag);
    MHD_add_response_header(r, "X-Content-Sha256", sha);
    MHD_add_response_header(r, "X-Repo-Commit", rev);
    MHD_add_response_header(r, "Accept-Ranges", "bytes");
    MHD_add_response_header(r, "Content-Type", "application/octet-stream");
    if (status == 206) {
        snprintf(cr, sizeof cr, "bytes %llu-%llu/%llu", (unsigned long long)a,
                 (unsigned long long)b, (unsigned long long)size);
        MHD_add_response_header(r, "Content-Range", cr);
    }
    int ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static int resolve(srv *s, struct MHD_Connection *c, const char *url, srv_fault f)
{
    const char *res = strstr(url, "/resolve/");
    int nrepo = 0, nrev = 0, nfile = 0;
    if (!res || res == url)
        return srv_reply_error(c, 404, "not_found", f, "no such path: %s", url);
    const char *repo = url + 1, *rev = res + 9, *slash = strchr(rev, '/');
    size_t rlen = (size_t)(res - repo);
    if (!slash || !segments_ok(repo, rlen, &nrepo) || nrepo > 2 ||
        !segments_ok(rev, (size_t)(slash - rev), &nrev) ||
        !segments_ok(slash + 1, strlen(slash + 1), &nfile))
        return srv_reply_error(c, 400, "bad_path", f, "bad hub path: %s", url);
    char path[4096], rv[256];
    struct stat st;
    snprintf(rv, sizeof rv, "%.*s", (int)(slash - rev), rev);
    int fd =
        open_hub_file(s, repo, rlen, rev, (size_t)(slash - rev), slash + 1, path, sizeof path, &st);
    if (fd < 0)
        return srv_reply_error(c, 404, "not_found", f, "no file %s in the hub", url);
    return serve_file(s, c, fd, path, &st, rv, f);
}

/* Recursively adds regular files under dir (relative name rel) to arr. */
static int list_dir(srv *s, const char *dir, const char *rel, int depth, cJSON *arr)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d)) && cJSON_GetArraySize(arr) < LIST_MAX) {
        if (e->d_name[0] == '.')
            continue;
        char full[4096], name[2048], sha[65];
        struct stat st;
        snprintf(full, sizeof full, "%s/%s", dir, e->d_name);
        snprintf(name, sizeof name, "%s%s%s", rel, rel[0] ? "/" : "", e->d_name);
        if (!inside_hub(s, full) || stat(full, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode) && depth < 8) {
            list_dir(s, full, name, depth + 1, arr);
            continue;
        }
        int fd = S_ISREG(st.st_mode) ? open(full, O_RDONLY | O_CLOEXEC) : -1;
        if (fd < 0)
            continue;
        int ok = file_sha256(s->hashes, full, fd, &st, sha);
        close(fd);
        cJSON *it = cJSON_CreateObject();
        if (!ok || !it) {
            cJSON_Delete(it);
            continue;
        }
        cJSON_AddStringToObject(it, "rfilename", name);
        cJSON_AddNumberToObject(it, "size", (double)st.st_size);
        cJSON_AddStringToObject(it, "sha256", sha);
        cJSON_AddItemToArray(arr, it);
    }
    closedir(d);
    return 1;
}

static int cmp_item(const void *a, const void *b)
{
    const cJSON *x = *(const cJSON *const *)a, *y = *(const cJSON *const *)b;
    return strcmp(cJSON_GetObjectItem(x, "rfilename")->valuestring,
                  cJSON_GetObjectItem(y, "rfilename")->valuestring);
}

/* Sorted copy of the siblings array (readdir order is arbitrary). */
static cJSON *sorted(cJSON *arr)
{
    int n = cJSON_GetArraySize(arr);
    cJSON **v = calloc((size_t)n + 1, sizeof *v), *out = cJSON_CreateArray();
    if (!v || !out) {
        free(v);
        cJSON_Delete(out);
        return NULL;
    }
    for (int i = 0; i < n; i++)
        v[i] = cJSON_Duplicate(cJSON_GetArrayItem(arr, i), 1);
    qsort(v, (size_t)n, sizeof *v, cmp_item);
    for (int i = 0; i < n; i++)
        cJSON_AddItemToArray(out, v[i]);
    free(v);
    return out;
}

static int list_repo(srv *s, struct MHD_Connection *c, const char *url, srv_fault f)
{
    const char *repo = url + strlen("/api/models/");
    const char *revp = strstr(repo, "/revision/");
    size_t rlen = revp ? (size_t)(revp - repo) : strlen(repo);
    int nrepo = 0, nrev = 0;
    if (!segments_ok(repo, rlen, &nrepo) || nrepo > 2 ||
        (revp && !segments_ok(revp + 10, strlen(revp + 10), &nrev)) || nrev > 1)
        return srv_reply_error(c, 400, "bad_path", f, "bad repo path: %s", url);
    char dir[4096];
    struct stat st;
    snprintf(dir, sizeof dir, "%s/%.*s/%s", s->hub_dir, (int)rlen, repo, revp ? revp + 10 : "main");
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        snprintf(dir, sizeof dir, "%s/%.*s", s->hub_dir, (int)rlen, repo);
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || !inside_hub(s, dir))
        return srv_reply_error(c, 404, "not_found", f, "no repo %.*s in the hub", (int)rlen, repo);
    cJSON *o = cJSON_CreateObject(), *arr = cJSON_CreateArray(), *sarr = NULL;
    char *json = NULL, id[512];
    int ret;
    snprintf(id, sizeof id, "%.*s", (int)rlen, repo);
    if (o && arr && list_dir(s, dir, "", 0, arr))
        sarr = sorted(arr);
    if (sarr) {
        cJSON_AddStringToObject(o, "id", id);
        cJSON_AddItemToObject(o, "siblings", sarr);
        json = cJSON_PrintUnformatted(o);
    }
    ret = json ? srv_reply(c, 200, json, f) : srv_reply_error(c, 500, "internal", f, "listing");
    cJSON_free(json);
    cJSON_Delete(o);
    cJSON_Delete(arr);
    return ret;
}

int srv_hub_handle(srv *s, struct MHD_Connection *c, const char *method, const char *url,
                   srv_fault f)
{
    if (!s->hub_dir)
        return srv_reply_error(c, 404, "not_found", f, "no such endpoint: %s %s (no --hub-dir)",
                               method, url);
    if (strncmp(url, "/api/models/", 12) == 0)
        return list_repo(s, c, url, f);
    return resolve(s, c, url, f);
}
