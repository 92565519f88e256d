/* test_store_crash.c: kill -9 at random moments during a large import and during rekey, and a
 * full disk (RLIMIT_FSIZE in a child) during import. After each, the database must open, pass
 * PRAGMA integrity_check, and hold all of the import/rekey or none of it. PK_CRASH_TRIALS trials
 * each (3 in the unit suite, 20 in the slow one). Also: import memory does not grow with the
 * file size (streaming). */
#include "pk_test.h"
#include "store_test_util.h"

#include <signal.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>

#ifndef PK_CRASH_TRIALS
#define PK_CRASH_TRIALS 3
#endif
#define N_IMPORT 20000
#define N_REKEY  3000

/* gcc says ASan with __SANITIZE_ADDRESS__, clang with __has_feature(address_sanitizer) */
#if defined(__SANITIZE_ADDRESS__)
#define PK_ASAN_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PK_ASAN_BUILD 1
#endif
#endif

static char home[512], db_path[600], data_path[600];
static uint64_t rng_state;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static int integrity_ok(void)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    int ok = 0;
    if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &q, NULL) == SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW)
        ok = !strcmp((const char *)sqlite3_column_text(q, 0), "ok");
    sqlite3_finalize(q);
    sqlite3_close(db);
    return ok;
}

/* Examples in dataset name (0 if it does not exist), -1 on any other failure. */
static int64_t count_of(pk_store *s, const char *name)
{
    int64_t ds = 0, n = 0;
    pk_status st = pk_store_dataset_id(s, name, &ds, NULL, 0);
    if (st == PK_ERR_NOTFOUND)
        return 0;
    if (st != PK_OK || pk_store_example_count(s, ds, &n, NULL, 0) != PK_OK)
        return -1;
    return n;
}

static double now(void)
{
    return pk_time_now();
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static double child_import(const char *name, int64_t *done_n)
{
    pk_store *s = NULL;
    char err[256];
    pk_import_opts o = {.format = PK_IMPORT_TXT, .paragraphs = 0};
    double t0 = now();
    if (pk_store_open(home, TEST_PASS, strlen(TEST_PASS), &s, err, sizeof err) != PK_OK)
        return -1;
    pk_status st = pk_store_import(s, data_path, name, o, done_n, NULL, 0);
    pk_store_close(s);
    return st == PK_OK ? now() - t0 : -1;
}

static void test_kill_import(void)
{
    int64_t n = 0;
    double dur = child_import("calibration", &n); /* how long one import takes here */
    PK_CHECK(dur > 0 && n == N_IMPORT);
    int all = 0, none = 0;
    for (int t = 0; t < PK_CRASH_TRIALS; t++) {
        char name[32];
        snprintf(name, sizeof name, "big%d", t);
        double at = (double)(rnd() % 1000) / 1000.0 * dur * 1.6;
        pid_t pid = fork();
        if (pid == 0) {
            int64_t k = 0;
            _exit(child_import(name, &k) > 0 ? 0 : 1);
        }
        sleep_s(at);
        kill(pid, SIGKILL);
        int ws = 0;
        waitpid(pid, &ws, 0);
        PK_CHECK(integrity_ok());
        pk_store *s = NULL;
        char err[256];
        PK_CHECK_EQ(pk_store_open(home, TEST_PASS, strlen(TEST_PASS), &s, err, sizeof err), PK_OK);
        if (!s)
            continue;
        int64_t c = count_of(s, name);
        PK_CHECK(c == 0 || c == N_IMPORT);
        all += c == N_IMPORT;
        none += c == 0;
        PK_CHECK_EQ(count_of(s, "calibration"), N_IMPORT);
        if (c == N_IMPORT)
            PK_CHECK_EQ(pk_store_dataset_forget(s, name, NULL, 0), PK_OK);
        pk_store_close(s);
    }
    fprintf(stderr, "kill -9 during import: %d trials, %d complete, %d none (%.3f s/import)\n",
            PK_CRASH_TRIALS, all, none, dur);
}

/* Every example of "calibration" opens and the identity signs: the rekey is whole. */
static int store_whole(pk_store *s)
{
    int64_t ds = 0, n = 0, *ids = NULL;
    uint8_t sig[64], pk[32];
    int ok = pk_store_dataset_id(s, "rekeyed", &ds, NULL, 0) == PK_OK &&
             pk_store_example_ids(s, ds, &ids, &n, NULL, 0) == PK_OK && n == N_REKEY;
    for (int64_t i = 0; ok && i < n; i++) {
        pk_example *e = NULL;
        ok = pk_store_example_get(s, ds, ids[i], &e, NULL, 0) == PK_OK;
        pk_example_free(e);
    }
    free(ids);
    return ok && pk_store_identity_sign(s, "m", 1, sig, NULL, 0) == PK_OK &&
           pk_store_identity_public(s, pk, NULL, 0) == PK_OK &&
           pk_sign_verify(pk, "m", 1, sig) == PK_OK;
}

static void test_kill_rekey(void)
{
    char cur[64] = TEST_PASS, next[64], err[256], small[700];
    pk_store *s = NULL;
    int64_t n = 0;
    snprintf(small, sizeof small, "%s.small", data_path);
    write_lines(small, N_REKEY, "rekey example ", " with some words to seal");
    PK_CHECK_EQ(pk_store_open(home, cur, strlen(cur), &s, err, sizeof err), PK_OK);
    pk_import_opts o = {.format = PK_IMPORT_TXT, .paragraphs = 0};
    PK_CHECK_EQ(pk_store_import(s, small, "rekeyed", o, &n, NULL, 0), PK_OK);
    double t0 = now();
    PK_CHECK_EQ(pk_store_rekey(s, "calibrated", 10, tiny_params(), NULL, 0), PK_OK);
    double dur = now() - t0;
    PK_CHECK_EQ(pk_store_rekey(s, cur, strlen(cur), tiny_params(), NULL, 0), PK_OK);
    pk_store_close(s);
    int old_ok = 0, new_ok = 0;
    for (int t = 0; t < PK_CRASH_TRIALS; t++) {
        snprintf(next, sizeof next, "pass number %d", t);
        double at = (double)(rnd() % 1000) / 1000.0 * dur * 1.2;
        pid_t pid = fork();
        if (pid == 0) {
            pk_store *c = NULL;
            if (pk_store_open(home, cur, strlen(cur), &c, err, sizeof err) != PK_OK)
                _exit(1);
            pk_status st = pk_store_rekey(c, next, strlen(next), tiny_params(), NULL, 0);
            pk_store_close(c);
            _exit(st == PK_OK ? 0 : 1);
        }
        sleep_s(at);
        kill(pid, SIGKILL);
        int ws = 0;
        waitpid(pid, &ws, 0);
        PK_CHECK(integrity_ok());
        s = NULL;
        pk_status st = pk_store_open(home, cur, strlen(cur), &s, err, sizeof err);
        if (st == PK_ERR_AUTH) {
            st = pk_store_open(home, next, strlen(next), &s, err, sizeof err);
            if (st == PK_OK) {
                memcpy(cur, next, sizeof cur);
                new_ok++;
            }
        } else if (st == PK_OK) {
            old_ok++;
        }
        PK_CHECK_EQ(st, PK_OK);
        if (s)
            PK_CHECK(store_whole(s));
        pk_store_close(s);
    }
    fprintf(stderr, "kill -9 during rekey: %d trials, %d old passphrase, %d new (%.3f s/rekey)\n",
            PK_CRASH_TRIALS, old_ok, new_ok, dur);
    /* Leave the home on the test passphrase for what follows. */
    PK_CHECK_EQ(pk_store_open(home, cur, strlen(cur), &s, err, sizeof err), PK_OK);
    if (s)
        PK_CHECK_EQ(pk_store_rekey(s, TEST_PASS, strlen(TEST_PASS), tiny_params(), NULL, 0), PK_OK);
    pk_store_close(s);
}

/* A full disk: the child may not grow any file beyond the limit; its import must fail with a
 * clean status (exit code = status) and leave the database intact. */
static void test_full_disk(void)
{
    char serr[512] = ""; /* what the store says on failure */
    struct stat sb;
    PK_CHECK(stat(db_path, &sb) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        /* Per file: the WAL (empty after the last checkpoint) may not pass 512 KiB, far below
         * the ~2.5 MB this import needs. */
        struct rlimit rl = {512 * 1024, 512 * 1024};
        signal(SIGXFSZ, SIG_IGN);
        setrlimit(RLIMIT_FSIZE, &rl);
        int64_t n = 0;
        pk_store *s = NULL;
        char err[256];
        pk_import_opts o = {.format = PK_IMPORT_TXT, .paragraphs = 0};
        if (pk_store_open(home, TEST_PASS, strlen(TEST_PASS), &s, err, sizeof err) != PK_OK)
            _exit(100);
        pk_status st = pk_store_import(s, data_path, "toobig", o, &n, serr, sizeof serr);
        if (st != PK_OK)
            fprintf(stderr, "full disk: %s (%s)\n", serr, pk_status_str(st));
        pk_store_close(s);
        _exit((int)st);
    }
    int ws = 0;
    waitpid(pid, &ws, 0);
    PK_CHECK(WIFEXITED(ws));
    int code = WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
    PK_CHECK(code == PK_ERR_IO || code == PK_ERR_LIMIT);
    PK_CHECK(integrity_ok());
    pk_store *s = NULL;
    char err[256];
    PK_CHECK_EQ(pk_store_open(home, TEST_PASS, strlen(TEST_PASS), &s, err, sizeof err), PK_OK);
    if (s) {
        PK_CHECK_EQ(count_of(s, "toobig"), 0);
        PK_CHECK_EQ(count_of(s, "calibration"), N_IMPORT);
        PK_CHECK(store_whole(s));
    }
    pk_store_close(s);
}

/* Peak RSS of a child importing `lines` lines (bytes), or 0 on failure. */
static size_t import_peak_rss(const char *dir, int lines, const char *name)
{
    char path[700];
    snprintf(path, sizeof path, "%s/%s.txt", dir, name);
    write_lines(path, lines, "streaming line ",
                ", about a hundred bytes long so the file is large enough to see growth");
    int fds[2];
    size_t rss = 0;
    if (pipe(fds) != 0)
        return 0;
    pid_t pid = fork();
    if (pid == 0) {
        pk_store *s = NULL;
        char err[256];
        int64_t n = 0;
        pk_import_opts o = {.format = PK_IMPORT_TXT, .paragraphs = 0};
        size_t r = 0;
        if (pk_store_open(home, TEST_PASS, strlen(TEST_PASS), &s, err, sizeof err) == PK_OK &&
            pk_store_import(s, path, name, o, &n, NULL, 0) == PK_OK && n == lines)
            r = pk_peak_rss_bytes();
        pk_store_close(s);
        if (write(fds[1], &r, sizeof r) != (ssize_t)sizeof r)
            _exit(1);
        _exit(0);
    }
    close(fds[1]);
    if (read(fds[0], &rss, sizeof rss) != (ssize_t)sizeof rss)
        rss = 0;
    close(fds[0]);
    waitpid(pid, NULL, 0);
    unlink(path);
    return rss;
}

static void test_constant_memory(const char *dir)
{
    size_t small = import_peak_rss(dir, 10000, "mem_small");
    size_t large = import_peak_rss(dir, 100000, "mem_large"); /* ~10 MB more input */
    PK_CHECK(small > 0 && large > 0);
    fprintf(stderr, "import peak RSS: %.1f MB for 10k lines, %.1f MB for 100k lines\n",
            (double)small / 1e6, (double)large / 1e6);
#if defined(PK_ASAN_BUILD)
    /* ASan keeps freed blocks in its quarantine (256 MB by default), so RSS grows with the number
     * of allocations made, not with what is live: the bound is asserted by the Release build. */
    fprintf(stderr, "ASan build: peak-RSS bound not asserted here (quarantine), see Release\n");
#else
    PK_CHECK(large < small + 4u * 1024 * 1024);
#endif
}

int main(void)
{
    char tmp[256], err[256];
    PK_CHECK_EQ(pk_crypto_global_init(), PK_OK);
    rng_state = (uint64_t)time(NULL) * 2654435761u + (uint64_t)getpid();
    fprintf(stderr, "seed %llu\n", (unsigned long long)rng_state);
    make_tmp_home(tmp, sizeof tmp, "crash");
    snprintf(home, sizeof home, "%s/home", tmp);
    pk_store_db_path(home, db_path, sizeof db_path);
    snprintf(data_path, sizeof data_path, "%s/big.txt", tmp);
    write_lines(data_path, N_IMPORT, "example ",
                ": a line of about one hundred bytes of text to seal into the store, padded out");
    PK_CHECK_EQ(pk_store_init(home, TEST_PASS, strlen(TEST_PASS), tiny_params(), err, sizeof err),
                PK_OK);
    test_kill_import();
    test_kill_rekey();
    test_full_disk();
    test_constant_memory(tmp);
    rm_rf(tmp);
    return PK_TEST_DONE();
}
