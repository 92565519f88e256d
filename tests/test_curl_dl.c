/* test_curl_dl.c: libcurl loaded at run time (net/curl_dl.c). This test does not link libcurl,
 * so /proc/self/maps shows what the net/ code maps. Checks that
 *  - agent calls that do no HTTP (params, DP accounting, argument checks of pk_http_create and
 *    pk_pull) leave libcurl unmapped;
 *  - the first load, raced from several threads, gives every thread the same table and maps it;
 *  - each table entry is the libcurl function of its name (each is called and its answer checked);
 *  - pocketllm does not list libcurl among its libraries, runs a non-HTTP command with a libcurl
 *    that has none of curl's functions first on LD_LIBRARY_PATH, and with it `pull` and `sync`
 *    exit 1 naming the library and the package to install. */
#include "curl_dl.h"
#include "pk_net.h"
#include "pk_test.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function" /* not every helper is used here */
#include "test_product_util.h"
#pragma GCC diagnostic pop

#include <pthread.h>

#define FAKE_ENV "LD_LIBRARY_PATH=" PK_FAKE_CURL_DIR

/* 1 if a file whose name starts with prefix is mapped into this process, 0 if not, -1 if
 * /proc/self/maps cannot be read. */
static int mapped(const char *prefix)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return -1;
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) {
        const char *slash = strrchr(line, '/');
        found = slash && strncmp(slash + 1, prefix, strlen(prefix)) == 0;
    }
    fclose(f);
    return found;
}

static void test_no_http_no_curl(void)
{
    pk_http_params hp = pk_http_default_params();
    pk_pull_params pp = pk_pull_default_params();
    PK_CHECK(hp.max_attempts > 0 && pp.max_attempts > 0);
    double eps = 0;
    PK_CHECK_EQ(pk_dp_epsilon_for(0.01, 1.0, 100, 1e-5, &eps), PK_OK);
    pk_http *h = (pk_http *)1;
    char err[256];
    PK_CHECK_EQ(pk_http_create("ftp://x", hp, &h, err, sizeof err), PK_ERR_ARG);
    PK_CHECK(h == NULL);
    PK_CHECK(strstr(err, "ftp://x") != NULL);
    PK_CHECK_EQ(pk_pull("../etc", "/tmp", NULL, NULL, err, sizeof err), PK_ERR_ARG);
    PK_CHECK_EQ(mapped("libcurl"), 0);
}

typedef struct loader_arg {
    pthread_barrier_t *start;
    const pk_curl_api *got;
} loader_arg;

static void *load_in_thread(void *p)
{
    loader_arg *a = p;
    pthread_barrier_wait(a->start);
    a->got = pk_curl_load();
    return NULL;
}

/* Returns the table (NULL if it failed to load). */
static const pk_curl_api *test_load_once(void)
{
    enum { T = 4 };
    pthread_t th[T];
    loader_arg args[T];
    pthread_barrier_t start;
    PK_CHECK_EQ(pthread_barrier_init(&start, NULL, T), 0);
    int started = 0;
    for (int t = 0; t < T; t++) {
        args[t] = (loader_arg){.start = &start};
        if (pthread_create(&th[t], NULL, load_in_thread, &args[t]) == 0)
            started++;
    }
    PK_CHECK_EQ(started, T);
    for (int t = 0; t < started; t++)
        pthread_join(th[t], NULL);
    pthread_barrier_destroy(&start);
    const pk_curl_api *cu = pk_curl_load();
    PK_CHECK(cu != NULL);
    for (int t = 0; t < started; t++)
        PK_CHECK(args[t].got == cu);
    PK_CHECK_EQ(pk_curl_errmsg()[0], '\0');
    PK_CHECK_EQ(mapped("libcurl"), 1);
    return cu;
}

/* Calls every entry; a missing or misplaced one fails here. No network: the URL's scheme is one
 * curl refuses before connecting. */
static void test_table(const pk_curl_api *cu)
{
    PK_CHECK_EQ(pk_http_global_init(), PK_OK); /* cu->global_init */
    PK_CHECK(strcmp(cu->easy_strerror(CURLE_OK), "No error") == 0);
    char *esc = cu->easy_escape(NULL, "a b/c", 0);
    PK_CHECK(esc && strcmp(esc, "a%20b%2Fc") == 0);
    cu->free(esc);
    struct curl_slist *l = cu->slist_append(NULL, "A: 1");
    struct curl_slist *l2 = l ? cu->slist_append(l, "B: 2") : NULL;
    PK_CHECK(l2 == l && l && l->next && !strcmp(l->data, "A: 1") && !strcmp(l->next->data, "B: 2"));
    cu->slist_free_all(l);
    CURL *c = cu->easy_init();
    PK_CHECK(c != NULL);
    if (c) {
        PK_CHECK_EQ(cu->easy_setopt(c, CURLOPT_URL, "pk-no-such-scheme://x/"), CURLE_OK);
        PK_CHECK_EQ(cu->easy_perform(c), CURLE_UNSUPPORTED_PROTOCOL);
        long code = -1;
        PK_CHECK_EQ(cu->easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code), CURLE_OK);
        PK_CHECK_EQ(code, 0);
        cu->easy_reset(c);
        PK_CHECK_EQ(cu->easy_perform(c), CURLE_URL_MALFORMAT); /* reset dropped the URL */
        cu->easy_cleanup(c);
    }
    pk_http_global_cleanup(); /* cu->global_cleanup */
}

static void test_cli(void)
{
    char cmd[1200], *out = NULL;
    /* what ldd prints: the libraries the dynamic loader maps at start */
    snprintf(cmd, sizeof cmd, "LD_TRACE_LOADED_OBJECTS=1 %s", POCKETLLM);
    PK_CHECK_EQ(run_capture(cmd, &out), 0);
    PK_CHECK(out && strstr(out, "libsodium") && !strstr(out, "libcurl"));
    free(out);
    snprintf(cmd, sizeof cmd, FAKE_ENV " %s --version >/dev/null", POCKETLLM);
    PK_CHECK_EQ(run_capture(cmd, NULL), 0);
    char home[256];
    if (!make_tmpdir(home, sizeof home, "curl_dl"))
        return;
    static const char *const args[] = {
        "pull org/name --endpoint http://127.0.0.1:9",
        "sync --server http://127.0.0.1:9 --model /nonexistent --catch-up",
    };
    for (size_t i = 0; i < sizeof args / sizeof args[0]; i++) {
        snprintf(cmd, sizeof cmd, FAKE_ENV " %s %s --home %s/home --out %s/out 2>&1", POCKETLLM,
                 args[i], home, home);
        out = NULL;
        PK_CHECK_EQ(run_capture(cmd, &out), 1);
        PK_CHECK(out && strstr(out, PK_CURL_SONAME " has no curl_"));
        if (PK_CURL_PACKAGE[0])
            PK_CHECK(out && strstr(out, "apt-get install " PK_CURL_PACKAGE));
        if (out && !strstr(out, PK_CURL_SONAME))
            fprintf(stderr, "pocketllm %s said: %s\n", args[i], out);
        free(out);
    }
    rm_rf(home);
}

int main(void)
{
    test_no_http_no_curl();
    const pk_curl_api *cu = test_load_once();
    if (cu)
        test_table(cu);
    test_cli();
    return PK_TEST_DONE();
}
