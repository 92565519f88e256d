/* test_store_cli.c: the store commands through the real pocketllm binary (PK_BUILD_DIR): init,
 * import (all or nothing, line numbers), data list/show/forget/export, rekey, the passphrase
 * sources, exit codes and messages (wrong passphrase, no home), --home anywhere, bench store. */
#include "pk_test.h"
#include "store_test_util.h"

#include <stdarg.h>
#include <sys/wait.h>

static char tmp[256], bin[600], out_path[600], err_path[600], home[600], pw[600], pw2[600];

/* fast Argon2id for tests (the default stays interactive) */
#define TINY "--opslimit 1 --memlimit 8192"

/* Runs "pocketllm ARGS" (ARGS from fmt) after the environment assignments env (or NULL), with
 * stdout/stderr captured; returns the exit code. */
static int run(const char *env, const char *fmt, ...) PK_PRINTF(2, 3);
static int run(const char *env, const char *fmt, ...)
{
    char cmd[4096];
    size_t k = (size_t)snprintf(cmd, sizeof cmd, "%s '%s' ", env ? env : "", bin);
    va_list ap;
    va_start(ap, fmt);
    if (k < sizeof cmd)
        k += (size_t)vsnprintf(cmd + k, sizeof cmd - k, fmt, ap);
    va_end(ap);
    if (k < sizeof cmd)
        k += (size_t)snprintf(cmd + k, sizeof cmd - k, " >'%s' 2>'%s' </dev/null", out_path,
                              err_path);
    if (k >= sizeof cmd) {
        fprintf(stderr, "command too long: %s\n", fmt);
        return -1;
    }
    int ws = system(cmd);
    return WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
}

static int out_has(const char *needle)
{
    size_t n = 0;
    unsigned char *b = (unsigned char *)slurp(out_path, &n);
    int r = b && buf_has(b, n, needle, strlen(needle));
    free(b);
    return r;
}

static int err_has(const char *needle)
{
    size_t n = 0;
    unsigned char *b = (unsigned char *)slurp(err_path, &n);
    int r = b && buf_has(b, n, needle, strlen(needle));
    if (!r)
        fprintf(stderr, "  stderr lacks '%s': %.*s\n", needle, (int)n, b ? (const char *)b : "");
    free(b);
    return r;
}

/* init; a second init refuses; usage errors exit 2. */
static void test_init_and_usage(void)
{
    PK_CHECK_EQ(run(NULL, "init --home '%s' --passphrase-file '%s' " TINY, home, pw), 0);
    PK_CHECK(out_has("initialised"));
    PK_CHECK_EQ(run(NULL, "init --home '%s' --passphrase-file '%s' " TINY, home, pw), 1);
    PK_CHECK(err_has("already exists"));
    PK_CHECK_EQ(run(NULL, "init --home '%s' --bogus", home), 2);
    PK_CHECK_EQ(run(NULL, "data frobnicate"), 2);
    PK_CHECK_EQ(run(NULL, "import --help"), 0);
    PK_CHECK(out_has("examples:"));
}

/* import: a good file, then a bad one (nothing imported, line named), then paragraphs with the
 * passphrase from the environment. */
static void test_import(void)
{
    char p[700];
    snprintf(p, sizeof p, "%s/good.jsonl", tmp);
    write_text(p, "{\"text\":\"PLAINTEXT-MARKER-ONE\",\"label\":\"pos\"}\n"
                  "{\"prompt\":\"q\\\"uoted\",\"response\":\"tab\\there\"}\n");
    PK_CHECK_EQ(
        run(NULL, "import '%s' --home '%s' --dataset notes --passphrase-file '%s'", p, home, pw),
        0);
    PK_CHECK(out_has("imported 2 examples"));
    snprintf(p, sizeof p, "%s/bad.csv", tmp);
    write_text(p, "text,label\nok,1\nPLAINTEXT-MARKER-TWO,1,extra\n");
    PK_CHECK_EQ(
        run(NULL, "import '%s' --dataset notes --home '%s' --passphrase-file '%s'", p, home, pw),
        1);
    PK_CHECK(err_has("line 3") && err_has("nothing was imported"));
    snprintf(p, sizeof p, "%s/paras.txt", tmp);
    write_text(p, "para one\nline two\n\npara two\n");
    PK_CHECK_EQ(run("POCKETLLM_PASSPHRASE='first secret phrase'",
                    "import --home '%s' '%s' --dataset paras --paragraphs", home, p),
                0);
    PK_CHECK(out_has("imported 2 examples"));
}

/* list and show; --home before the sub-command. */
static void test_list_and_show(void)
{
    PK_CHECK_EQ(run(NULL, "data --home '%s' list --passphrase-file '%s'", home, pw), 0);
    PK_CHECK(out_has("notes") && out_has("paras"));
    PK_CHECK_EQ(run(NULL, "data show --dataset notes --home '%s' --passphrase-file '%s'", home, pw),
                0);
    PK_CHECK(out_has("\"text\":\"PLAINTEXT-MARKER-ONE\"") && out_has("\"q\\\"uoted\"") &&
             out_has("tab\\there"));
    PK_CHECK_EQ(run(NULL, "data show --dataset nope --home '%s' --passphrase-file '%s'", home, pw),
                1);
    PK_CHECK(err_has("no dataset named 'nope'"));
}

/* Wrong passphrase: exit 1, clear message, no byte changed. No home: a clear hint. */
static void test_wrong_passphrase_and_no_home(void)
{
    char before[4096], after[4096];
    dir_snapshot(home, before, sizeof before);
    PK_CHECK_EQ(run(NULL, "data list --home '%s' --passphrase-file '%s'", home, pw2), 1);
    PK_CHECK(err_has("wrong passphrase for"));
    dir_snapshot(home, after, sizeof after);
    PK_CHECK(!strcmp(before, after));
    PK_CHECK_EQ(run(NULL, "data list --home '%s/none' --passphrase-file '%s'", tmp, pw), 1);
    PK_CHECK(err_has("no agent home at") && err_has("pocketllm init --home"));
    PK_CHECK_EQ(dir_has(home, "PLAINTEXT-MARKER", 16), 0);
}

/* export: 0600, refuses to overwrite, re-importable. */
static void test_export(void)
{
    char p[700];
    snprintf(p, sizeof p, "%s/export.jsonl", tmp);
    PK_CHECK_EQ(run(NULL,
                    "data export --dataset notes --out '%s' --home '%s' --passphrase-file '%s'", p,
                    home, pw),
                0);
    struct stat sb;
    PK_CHECK(stat(p, &sb) == 0 && (sb.st_mode & 0777) == 0600);
    PK_CHECK_EQ(run(NULL,
                    "data export --dataset notes --out '%s' --home '%s' --passphrase-file '%s'", p,
                    home, pw),
                1);
    PK_CHECK(err_has("refusing to overwrite"));
    PK_CHECK_EQ(
        run(NULL, "import '%s' --dataset copy --home '%s' --passphrase-file '%s'", p, home, pw), 0);
    PK_CHECK(out_has("imported 2 examples"));
}

/* rekey: the old passphrase stops working, the new one works. */
static void test_rekey(void)
{
    PK_CHECK_EQ(run(NULL,
                    "rekey --home '%s' --passphrase-file '%s' --new-passphrase-file '%s' " TINY,
                    home, pw, pw2),
                0);
    PK_CHECK_EQ(run(NULL, "data list --home '%s' --passphrase-file '%s'", home, pw), 1);
    PK_CHECK(err_has("wrong passphrase"));
    PK_CHECK_EQ(run(NULL, "data show --dataset copy --home '%s' --passphrase-file '%s'", home, pw2),
                0);
    PK_CHECK(out_has("PLAINTEXT-MARKER-ONE"));
}

/* forget an example and a dataset; nothing readable is left. */
static void test_forget(void)
{
    PK_CHECK_EQ(run(NULL, "data forget --id 1 --home '%s' --passphrase-file '%s'", home, pw2), 0);
    PK_CHECK_EQ(run(NULL, "data forget --id 1 --home '%s' --passphrase-file '%s'", home, pw2), 1);
    PK_CHECK_EQ(
        run(NULL, "data forget --dataset copy --home '%s' --passphrase-file '%s'", home, pw2), 0);
    PK_CHECK_EQ(run(NULL, "data list --json --home '%s' --passphrase-file '%s'", home, pw2), 0);
    PK_CHECK(out_has("\"dataset\":\"notes\",\"id\":1,\"examples\":1") && !out_has("copy"));
    PK_CHECK_EQ(run(NULL, "data forget --home '%s' --passphrase-file '%s'", home, pw2), 2);
    PK_CHECK_EQ(dir_has(home, "PLAINTEXT-MARKER", 16), 0);
    PK_CHECK_EQ(dir_has(home, "second secret phrase", 20), 0);
}

/* bench store (small limits so the test stays fast). */
static void test_bench(void)
{
    char env[700];
    snprintf(env, sizeof env, "TMPDIR='%s'", tmp);
    PK_CHECK_EQ(run(env, "bench store --examples 500 " TINY), 0);
    PK_CHECK(out_has("\"unlock_s\":") && out_has("\"import_examples_per_s\":") &&
             out_has("\"examples\":500"));
}

int main(void)
{
    PK_CHECK_EQ(pk_crypto_global_init(), PK_OK);
    snprintf(bin, sizeof bin, "%s/cli/pocketllm", PK_BUILD_DIR);
    if (access(bin, X_OK) != 0) {
        fprintf(stderr, "FAIL: %s not built\n", bin);
        return 1;
    }
    make_tmp_home(tmp, sizeof tmp, "cli");
    snprintf(out_path, sizeof out_path, "%s/out", tmp);
    snprintf(err_path, sizeof err_path, "%s/err", tmp);
    snprintf(home, sizeof home, "%s/home", tmp);
    snprintf(pw, sizeof pw, "%s/pw", tmp);
    snprintf(pw2, sizeof pw2, "%s/pw2", tmp);
    write_text(pw, "first secret phrase\n");
    write_text(pw2, "second secret phrase\n");
    test_init_and_usage();
    test_import();
    test_list_and_show();
    test_wrong_passphrase_and_no_home();
    test_export();
    test_rekey();
    test_forget();
    test_bench();
    rm_rf(tmp);
    return PK_TEST_DONE();
}
