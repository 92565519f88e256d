/* test_pull.c: pk_pull against a hub on 127.0.0.1 (an in-test libmicrohttpd server with the
 * PROTOCOL 8 layout: /{repo}/resolve/{rev}/{file}, ETag = sha256, Range -> 206, and a fault that
 * cuts a body in half). Covers: a plain repo, a sharded repo, a download cut in half and resumed
 * by a second pull (Range from the .part), automatic resume within one pull, an up-to-date file
 * not fetched again, a wrong checksum refused, 404 and bad repo ids, and Ctrl-C. */
#include "pk_crypto.h"
#include "pk_net.h"
#include "pk_test.h"
#include "sha_test_util.h"
#include "test_util.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- the hub -------------------------------------------------------------------------------- */

typedef struct hub {
    char dir[256];     /* files live in dir/{repo}/{file} */
    int truncate_gets; /* the next N GETs send half of their body, then close */
    int corrupt_etag;  /* 1: announce a wrong sha256 */
    int gets, heads, ranged;
    struct MHD_Daemon *d;
    unsigned short port;
} hub;

typedef struct body {
    FILE *f;
    uint64_t limit; /* bytes to send before failing (the truncate fault) */
    uint64_t sent;
} body;

static ssize_t read_body(void *cls, uint64_t pos, char *buf, size_t max)
{
    body *b = cls;
    (void)pos;
    if (b->sent >= b->limit)
        return MHD_CONTENT_READER_END_WITH_ERROR; /* closes the connection mid-body */
    if (max > b->limit - b->sent)
        max = (size_t)(b->limit - b->sent);
    size_t n = fread(buf, 1, max, b->f);
    if (n == 0)
        return MHD_CONTENT_READER_END_OF_STREAM;
    b->sent += n;
    return (ssize_t)n;
}

static void free_body(void *cls)
{
    body *b = cls;
    fclose(b->f);
    free(b);
}

static enum MHD_Result reply_status(struct MHD_Connection *conn, unsigned code)
{
    static const char msg[] = "{\"error\":{\"code\":\"not_found\",\"message\":\"no such file\"}}";
    struct MHD_Response *r = MHD_create_response_from_buffer(sizeof msg - 1, (void *)(uintptr_t)msg,
                                                             MHD_RESPMEM_PERSISTENT);
    enum MHD_Result ret = MHD_queue_response(conn, code, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **con_cls)
{
    hub *h = cls;
    (void)version;
    (void)upload;
    (void)upload_size;
    (void)con_cls;
    /* /{org}/{name}/resolve/{rev}/{file} */
    char org[64], name[64], rev[64], file[128];
    if (sscanf(url, "/%63[^/]/%63[^/]/resolve/%63[^/]/%127s", org, name, rev, file) != 4 ||
        strstr(url, ".."))
        return reply_status(conn, MHD_HTTP_NOT_FOUND);
    char path[512];
    snprintf(path, sizeof path, "%s/%s/%s/%s", h->dir, org, name, file);
    struct stat sb;
    if (stat(path, &sb) != 0)
        return reply_status(conn, MHD_HTTP_NOT_FOUND);
    uint64_t size = (uint64_t)sb.st_size, from = 0;
    int head = !strcmp(method, "HEAD");
    head ? h->heads++ : h->gets++;
    const char *range = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Range");
    unsigned long long a = 0;
    if (range && sscanf(range, "bytes=%llu-", &a) == 1) {
        if (a >= size)
            return reply_status(conn, MHD_HTTP_RANGE_NOT_SATISFIABLE);
        from = a;
        h->ranged++;
    }
    body *b = calloc(1, sizeof *b);
    b->f = fopen(path, "rb");
    fseek(b->f, (long)from, SEEK_SET);
    b->limit = size - from;
    if (!head && h->truncate_gets > 0) {
        h->truncate_gets--;
        b->limit /= 2;
    }
    struct MHD_Response *r =
        MHD_create_response_from_callback(size - from, 64 * 1024, read_body, b, free_body);
    char etag[80], hex[65], cr[96];
    file_sha256_hex(path, hex);
    if (h->corrupt_etag)
        hex[0] = hex[0] == '0' ? '1' : '0';
    snprintf(etag, sizeof etag, "\"%s\"", hex);
    MHD_add_response_header(r, "ETag", etag);
    MHD_add_response_header(r, "Accept-Ranges", "bytes");
    unsigned code = MHD_HTTP_OK;
    if (range && from > 0) {
        snprintf(cr, sizeof cr, "bytes %llu-%llu/%llu", (unsigned long long)from,
                 (unsigned long long)size - 1, (unsigned long long)size);
        MHD_add_response_header(r, "Content-Range", cr);
        code = MHD_HTTP_PARTIAL_CONTENT;
    }
    enum MHD_Result ret = MHD_queue_response(conn, code, r);
    MHD_destroy_response(r);
    return ret;
}

static int hub_start(hub *h)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = 0;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    h->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, handle, h,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_END);
    if (!h->d)
        return 0;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : 0;
    return h->port != 0;
}

/* ---- fixtures ------------------------------------------------------------------------------- */

/* Writes the n bytes at data to dir/name, checking that it could. */
static void write_file(const char *dir, const char *name, const void *data, size_t n)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    PK_CHECK(f != NULL);
    if (!f)
        return;
    PK_CHECK_EQ(fwrite(data, 1, n, f), n);
    fclose(f);
}

/* n pseudo-random bytes, deterministic */
static unsigned char *blob(size_t n, unsigned seed)
{
    unsigned char *b = malloc(n);
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; b && i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        b[i] = (unsigned char)x;
    }
    return b;
}

static int same_file(const char *a, const char *b)
{
    char ha[65], hb[65];
    struct stat sa, sb;
    if (stat(a, &sa) || stat(b, &sb) || sa.st_size != sb.st_size)
        return 0;
    file_sha256_hex(a, ha);
    file_sha256_hex(b, hb);
    return !strcmp(ha, hb);
}

static int exists(const char *p)
{
    return access(p, F_OK) == 0;
}

#define WEIGHTS_BYTES (3u << 20) /* 3 MiB: big enough to be cut mid-transfer */

static void make_repos(const char *dir)
{
    mkdir_at(dir, "org");
    mkdir_at(dir, "org/plain");
    mkdir_at(dir, "org/sharded");
    static const char cfg[] = "{\"model_type\":\"llama\",\"hidden_size\":64}\n";
    static const char tok[] = "{\"version\":\"1.0\",\"model\":{\"type\":\"BPE\"}}\n";
    write_file(dir, "org/plain/config.json", cfg, sizeof cfg - 1);
    write_file(dir, "org/plain/tokenizer.json", tok, sizeof tok - 1);
    unsigned char *w = blob(WEIGHTS_BYTES, 1);
    write_file(dir, "org/plain/model.safetensors", w, WEIGHTS_BYTES);
    free(w);
    write_file(dir, "org/sharded/config.json", cfg, sizeof cfg - 1);
    static const char idx[] = "{\"metadata\":{\"total_size\":300000},\"weight_map\":{"
                              "\"a.weight\":\"model-00001-of-00002.safetensors\","
                              "\"b.weight\":\"model-00002-of-00002.safetensors\","
                              "\"c.weight\":\"model-00001-of-00002.safetensors\"}}";
    write_file(dir, "org/sharded/model.safetensors.index.json", idx, sizeof idx - 1);
    for (unsigned s = 1; s <= 2; s++) {
        unsigned char *b = blob(150000, 10 + s);
        char name[64];
        snprintf(name, sizeof name, "org/sharded/model-0000%u-of-00002.safetensors", s);
        write_file(dir, name, b, 150000);
        free(b);
    }
}

/* ---- tests ---------------------------------------------------------------------------------- */

static pk_pull_params params(const hub *h, char *endpoint, size_t n)
{
    snprintf(endpoint, n, "http://127.0.0.1:%u/", h->port); /* trailing '/' is dropped */
    pk_pull_params p = pk_pull_default_params();
    p.endpoint = endpoint;
    p.connect_timeout_ms = 2000;
    p.stall_timeout_s = 10;
    return p;
}

static void test_plain_and_resume(hub *h, const char *tmp)
{
    char ep[64], out[256], src[512], dst[512], part[600], err[512];
    pk_pull_params p = params(h, ep, sizeof ep);
    pk_pull_result r;
    snprintf(out, sizeof out, "%s/out/plain", tmp); /* nested: created by pk_pull */
    snprintf(src, sizeof src, "%s/hub/org/plain/model.safetensors", tmp);
    snprintf(dst, sizeof dst, "%s/model.safetensors", out);
    snprintf(part, sizeof part, "%s.part", dst);

    /* 1. one attempt, the weights cut in half: fails, keeps the .part */
    p.max_attempts = 1;
    h->truncate_gets = 0;
    pk_status st = PK_OK;
    /* config.json and tokenizer.json arrive whole; only the weights' GET is cut */
    h->truncate_gets = 0;
    st = pk_pull("org/plain", out, &p, &r, err, sizeof err);
    PK_CHECK_EQ(st, PK_OK); /* warm-up: the whole repo once */
    PK_CHECK(same_file(src, dst));
    remove(dst);
    h->truncate_gets = 1;
    st = pk_pull("org/plain", out, &p, &r, err, sizeof err);
    PK_CHECK_EQ(st, PK_ERR_HTTP);
    PK_CHECK(strstr(err, "model.safetensors") != NULL);
    PK_CHECK(!exists(dst));
    PK_CHECK(exists(part));
    struct stat sb;
    PK_CHECK(stat(part, &sb) == 0 && sb.st_size > 0 && sb.st_size < (off_t)WEIGHTS_BYTES);
    off_t had = sb.st_size;
    PK_CHECK_EQ(r.up_to_date, 2); /* config.json and tokenizer.json were not fetched again */

    /* 2. a second pull resumes from the .part with a Range request and verifies the sha256 */
    int ranged0 = h->ranged;
    st = pk_pull("org/plain", out, &p, &r, err, sizeof err);
    PK_CHECK_EQ(st, PK_OK);
    PK_CHECK_EQ(r.resumed, 1);
    PK_CHECK_EQ(h->ranged - ranged0, 1);
    PK_CHECK_EQ(r.bytes, (int64_t)WEIGHTS_BYTES - had); /* only the missing part */
    PK_CHECK_EQ(r.downloaded, 1);
    PK_CHECK(r.verified >= 1);
    PK_CHECK(same_file(src, dst));
    PK_CHECK(!exists(part));

    /* 3. within one pull: two cut transfers, resumed automatically on the retries */
    remove(dst);
    p.max_attempts = 5;
    h->truncate_gets = 2;
    st = pk_pull("org/plain", out, &p, &r, err, sizeof err);
    PK_CHECK_EQ(st, PK_OK);
    PK_CHECK_EQ(r.resumed, 2);
    PK_CHECK(same_file(src, dst));

    /* 4. everything up to date: nothing is downloaded */
    int gets0 = h->gets;
    st = pk_pull("org/plain", out, &p, &r, err, sizeof err);
    PK_CHECK_EQ(st, PK_OK);
    PK_CHECK_EQ(r.downloaded, 0);
    PK_CHECK_EQ(r.up_to_date, 3);
    PK_CHECK_EQ(r.files, 3);
    PK_CHECK_EQ(h->gets, gets0);

    /* 5. a checksum that does not match: refused, nothing left behind */
    remove(dst);
    h->corrupt_etag = 1;
    st = pk_pull("org/plain", out, &p, &r, err, sizeof err);
    h->corrupt_etag = 0;
    PK_CHECK_EQ(st, PK_ERR_AUTH);
    PK_CHECK(strstr(err, "sha256 mismatch") != NULL);
    PK_CHECK(!exists(dst) && !exists(part));
}

static void test_sharded(hub *h, const char *tmp)
{
    char ep[64], out[256], a[512], b[512], err[512];
    pk_pull_params p = params(h, ep, sizeof ep);
    pk_pull_result r;
    snprintf(out, sizeof out, "%s/out/sharded", tmp);
    PK_CHECK_EQ(pk_pull("org/sharded", out, &p, &r, err, sizeof err), PK_OK);
    PK_CHECK_EQ(r.files, 4); /* config, index, two shards (named twice in the map) */
    for (int s = 1; s <= 2; s++) {
        snprintf(a, sizeof a, "%s/hub/org/sharded/model-0000%d-of-00002.safetensors", tmp, s);
        snprintf(b, sizeof b, "%s/model-0000%d-of-00002.safetensors", out, s);
        PK_CHECK(same_file(a, b));
    }
}

static void test_errors(hub *h, const char *tmp)
{
    char ep[64], out[512], err[512];
    pk_pull_params p = params(h, ep, sizeof ep);
    snprintf(out, sizeof out, "%s/out/err", tmp);
    PK_CHECK_EQ(pk_pull("org/missing", out, &p, NULL, err, sizeof err), PK_ERR_NOTFOUND);
    PK_CHECK(strstr(err, "config.json") != NULL && strstr(err, "404") != NULL);
    PK_CHECK_EQ(pk_pull("../etc", out, &p, NULL, err, sizeof err), PK_ERR_ARG);
    PK_CHECK_EQ(pk_pull("a/b/c", out, &p, NULL, err, sizeof err), PK_ERR_ARG);
    p.revision = "../main";
    PK_CHECK_EQ(pk_pull("org/plain", out, &p, NULL, err, sizeof err), PK_ERR_ARG);
    p.revision = NULL;
    p.endpoint = "ftp://example.com";
    PK_CHECK_EQ(pk_pull("org/plain", out, &p, NULL, err, sizeof err), PK_ERR_ARG);
    /* nobody listening: a network error after the retries, naming the file */
    p.endpoint = "http://127.0.0.1:1";
    p.max_attempts = 2;
    PK_CHECK_EQ(pk_pull("org/plain", out, &p, NULL, err, sizeof err), PK_ERR_HTTP);
    PK_CHECK(strstr(err, "config.json") != NULL);
    /* Ctrl-C before the first transfer */
    pk_pull_params q = params(h, ep, sizeof ep);
    pk_interrupt_raise();
    PK_CHECK_EQ(pk_pull("org/plain", out, &q, NULL, err, sizeof err), PK_ERR_INTERRUPTED);
    PK_CHECK(strstr(err, "again") != NULL);
    pk_interrupt_clear();
}

int main(void)
{
    PK_CHECK_EQ(pk_crypto_global_init(), PK_OK);
    PK_CHECK_EQ(pk_http_global_init(), PK_OK); /* libcurl through the loader, not linked */
    char tmp[] = "/tmp/pk_pull_XXXXXX";
    PK_CHECK(mkdtemp(tmp) != NULL);
    hub h = {0};
    snprintf(h.dir, sizeof h.dir, "%s/hub", tmp);
    mkdir(h.dir, 0755);
    make_repos(h.dir);
    PK_CHECK(hub_start(&h));
    if (h.d) {
        test_plain_and_resume(&h, tmp);
        test_sharded(&h, tmp);
        test_errors(&h, tmp);
        MHD_stop_daemon(h.d);
    }
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    PK_CHECK_EQ(system(cmd), 0);
    pk_http_global_cleanup();
    return PK_TEST_DONE();
}
