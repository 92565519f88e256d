/* test_store_cli.c: the store commands through the real pocketllm binary (PK_BUILD_DIR): init,
 * import (all or nothing, line numbers), data list/show/forget/export, rekey, the passphrase
 * sources, exit codes and messages (wrong passphrase, no home), --home anywhere, bench store. */
#include "pk_test.h"
#include "store_test_util.h"

#include <sys/wait.h>

static char tmp[256], bin[600], out_path[600], err_path[600], home[600], pw[600], pw2[600];

/* Runs "pocketllm ARGS" with stdout/stderr captured; returns the exit code. */
static int run(const char *env, const char *args)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s '%s' %s >'%s' 2>'%s' </dev/null", env ? env : "", bin, args,
             out_path, err_path);
    int ws = system(cmd);
    return WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
}

static int out_has(const char *needle)
{
    size_t n = 0;
    unsigned char *b = read_all(out_path, &n);
    int r = b && buf_has(b, n, needle, strlen(needle));
    free(b);
    return r;
}

static int err_has(const char *needle)
{
    size_t n = 0;
    unsigned char *b = read_all(err_path, &n);
    int r = b && buf_has(b, n, needle, strlen(needle));
    if (!r)
        fprintf(stderr, "  stderr lacks '%s': %.*s\n", needle, (int)n, b ? (const char *)b : "");
    free(b);
    return r;
}

int main(void)
{
    char a[2048], p[700], before[4096], after[4096];
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
    const char *tiny = "--opslimit 1 --memlimit 8192";

    /* init; a second init refuses. */
    snprintf(a, sizeof a, "init --home '%s' --passphrase-file '%s' %s", home, pw, tiny);
    PK_CHECK_EQ(run(NULL, a), 0);
    PK_CHECK(out_has("initialised"));
    PK_CHECK_EQ(run(NULL, a), 1);
    PK_CHECK(err_has("already exists"));
    /* Usage errors exit 2. */
    snprintf(a, sizeof a, "init --home '%s' --bogus", home);
    PK_CHECK_EQ(run(NULL, a), 2);
    PK_CHECK_EQ(run(NULL, "data frobnicate"), 2);
    PK_CHECK_EQ(run(NULL, "import --help"), 0);
    PK_CHECK(out_has("examples:"));

    /* import: good file, then a bad one (nothing imported, line named). */
    snprintf(p, sizeof p, "%s/good.jsonl", tmp);
    write_text(p, "{\"text\":\"PLAINTEXT-MARKER-ONE\",\"label\":\"pos\"}\n"
                  "{\"prompt\":\"q\\\"uoted\",\"response\":\"tab\\there\"}\n");
    snprintf(a, sizeof a, "import '%s' --home '%s' --dataset notes --passphrase-file '%s'", p, home,
             pw);
    PK_CHECK_EQ(run(NULL, a), 0);
    PK_CHECK(out_has("imported 2 examples"));
    snprintf(p, sizeof p, "%s/bad.csv", tmp);
    write_text(p, "text,label\nok,1\nPLAINTEXT-MARKER-TWO,1,extra\n");
    snprintf(a, sizeof a, "import '%s' --dataset notes --home '%s' --passphrase-file '%s'", p, home,
             pw);
    PK_CHECK_EQ(run(NULL, a), 1);
    PK_CHECK(err_has("line 3") && err_has("nothing was imported"));
    snprintf(p, sizeof p, "%s/paras.txt", tmp);
    write_text(p, "para one\nline two\n\npara two\n");
    snprintf(a, sizeof a, "import --home '%s' '%s' --dataset paras --paragraphs", home, p);
    snprintf(p, sizeof p, "POCKETLLM_PASSPHRASE='first secret phrase'");
    PK_CHECK_EQ(run(p, a), 0);
    PK_CHECK(out_has("imported 2 examples"));

    /* list and show; --home before the sub-command. */
    snprintf(a, sizeof a, "data --home '%s' list --passphrase-file '%s'", home, pw);
    PK_CHECK_EQ(run(NULL, a), 0);
    PK_CHECK(out_has("notes") && out_has("paras"));
    snprintf(a, sizeof a, "data show --dataset notes --home '%s' --passphrase-file '%s'", home, pw);
    PK_CHECK_EQ(run(NULL, a), 0);
    PK_CHECK(out_has("\"text\":\"PLAINTEXT-MARKER-ONE\"") && out_has("\"q\\\"uoted\"") &&
             out_has("tab\\there"));
    snprintf(a, sizeof a, "data show --dataset nope --home '%s' --passphrase-file '%s'", home, pw);
    PK_CHECK_EQ(run(NULL, a), 1);
    PK_CHECK(err_has("no dataset named 'nope'"));

    /* Wrong passphrase: exit 1, clear message, no byte changed. No home: a clear hint. */
    dir_snapshot(home, before, sizeof before);
    snprintf(a, sizeof a, "data list --home '%s' --passphrase-file '%s'", home, pw2);
    PK_CHECK_EQ(run(NULL, a), 1);
    PK_CHECK(err_has("wrong passphrase for"));
    dir_snapshot(home, after, sizeof after);
    PK_CHECK(!strcmp(before, after));
    snprintf(a, sizeof a, "data list --home '%s/none' --passphrase-file '%s'", tmp, pw);
    PK_CHECK_EQ(run(NULL, a), 1);
    PK_CHECK(err_has("no agent home at") && err_has("pocketllm init --home"));
    PK_CHECK_EQ(dir_has(home, "PLAINTEXT-MARKER", 16), 0);

    /* export: 0600, refuses to overwrite, re-importable. */
    snprintf(p, sizeof p, "%s/export.jsonl", tmp);
    snprintf(a, sizeof a, "data export --dataset notes --out '%s' --home '%s' --passphrase-file "
                          "'%s'", p, home, pw);
    PK_CHECK_EQ(run(NULL, a), 0);
    struct stat sb;
    PK_CHECK(stat(p, &sb) == 0 && (sb.st_mode & 0777) == 0600);
    PK_CHECK_EQ(run(NULL, a), 1);
    PK_CHECK(err_has("refusing to overwrite"));
    snprintf(a, sizeof a, "import '%s' --dataset copy --home '%s' --passphrase-file '%s'", p, home,
             pw);
    PK_CHECK_EQ(run(NULL, a), 0);
    PK_CHECK(out_has("imported 2 examples"));

    /* rekey: the old passphrase stops working, the new one works. */
    snprintf(a, sizeof a, "rekey --home '%s' --passphrase-file '%s' --new-passphrase-file '%s' %s",
             home, pw, pw2, tiny);
    PK_CHECK_EQ(run(NULL, a), 0);
    snprintf(a, sizeof a, "data list --home '%s' --passphrase-file '%s'", home, pw);
    PK_CHECK_EQ(run(NULL, a), 1);
    PK_CHECK(err_has("wrong passphrase"));
    snprintf(a, sizeof a, "data show --dataset copy --home '%s' --passphrase-file '%s'", home, pw2);
    PK_CHECK_EQ(run(NULL, a), 0);
    PK_CHECK(out_has("PLAINTEXT-MARKER-ONE"));

    /* forget an example and a dataset. */
    snprintf(a, sizeof a, "data forget --id 1 --home '%s' --passphrase-file '%s'", home, pw2);
    PK_CHECK_EQ(run(NULL, a), 0);
    PK_CHECK_EQ(run(NULL, a), 1);
    snprintf(a, sizeof a, "data forget --dataset copy --home '%s' --passphrase-file '%s'", home,
             pw2);
    PK_CHECK_EQ(run(NULL, a), 0);
    snprintf(a, sizeof a, "data list --json --home '%s' --passphrase-file '%s'", home, pw2);
    PK_CHECK_EQ(run(NULL, a), 0);
    PK_CHECK(out_has("\"dataset\":\"notes\",\"id\":1,\"examples\":1") && !out_has("copy"));
    snprintf(a, sizeof a, "data forget --home '%s' --passphrase-file '%s'", home, pw2);
    PK_CHECK_EQ(run(NULL, a), 2);
    PK_CHECK_EQ(dir_has(home, "PLAINTEXT-MARKER", 16), 0);
    PK_CHECK_EQ(dir_has(home, "second secret phrase", 20), 0);

    /* bench store (small limits so the test stays fast). */
    snprintf(a, sizeof a, "bench store --examples 500 %s", tiny);
    snprintf(p, sizeof p, "TMPDIR='%s'", tmp);
    PK_CHECK_EQ(run(p, a), 0);
    PK_CHECK(out_has("\"unlock_s\":") && out_has("\"import_examples_per_s\":") &&
             out_has("\"examples\":500"));
    rm_rf(tmp);
    return PK_TEST_DONE();
}
