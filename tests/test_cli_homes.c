/* test_cli_homes.c: what the CLI says about the state of a home and its passphrase, through the
 * built pocketllm: a file in place of the home, loose permissions, an empty passphrase, a write
 * past the file-size limit (ulimit -f: an error and a rollback, not death by SIGXFSZ), a
 * read-only home, and a rekey while an import runs (driven by the store's pause point). */
#include "pk_common.h"
#include "pk_test.h"
#include "test_product_util.h"
#include "test_util.h"

#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_tmp[512], g_home[600];

/* Runs "ENV pocketllm ARGS 2>&1" (printf format), *out the combined output; the exit status. */
static int pkl(char **out, const char *fmt, ...) PK_PRINTF(2, 3);
static int pkl(char **out, const char *fmt, ...)
{
    char args[2048], cmd[3072];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "POCKETLLM_PASSPHRASE=pw %s 2>&1", args);
    return run_capture(cmd, out);
}

static int contains(const char *out, const char *needle)
{
    if (out && strstr(out, needle))
        return 1;
    fprintf(stderr, "expected \"%s\" in:\n%s\n", needle, out ? out : "(null)");
    return 0;
}

static void write_notes(const char *path, int n, int len)
{
    FILE *f = fopen(path, "w");
    PK_CHECK(f != NULL);
    for (int i = 0; f && i < n; i++)
        fprintf(f, "note %d %.*s\n", i, len,
                "Pip the dog runs along the beach at dawn again and "
                "again and again and again and again and again.");
    if (f)
        fclose(f);
}

static long long dataset_size(const char *name)
{
    char *out = NULL, needle[160];
    pkl(&out, POCKETLLM " data list --home %s --json", g_home);
    snprintf(needle, sizeof needle, "\"dataset\":\"%s\"", name);
    long long n = (long long)number_after(out, needle, "\"examples\":", -1);
    free(out);
    return n;
}

static void test_home_is_file(void)
{
    char file[700], *out = NULL;
    snprintf(file, sizeof file, "%s/not-a-dir", g_tmp);
    write_notes(file, 1, 4);
    PK_CHECK_EQ(pkl(&out, POCKETLLM " init --home %s", file), 1);
    PK_CHECK(contains(out, "is a file"));
    free(out);
    PK_CHECK_EQ(pkl(&out, POCKETLLM " data list --home %s", file), 1);
    PK_CHECK(contains(out, "is a file"));
    free(out);
}

static void test_init_and_passphrases(void)
{
    char *out = NULL, pf[700];
    PK_CHECK(mkdir(g_home, 0755) == 0);
    PK_CHECK_EQ(pkl(&out, POCKETLLM " init --home %s", g_home), 0);
    PK_CHECK(contains(out, "restricted to its owner"));
    free(out);
    struct stat sb;
    PK_CHECK(stat(g_home, &sb) == 0 && (sb.st_mode & 0777) == 0700);
    PK_CHECK_EQ(run_capture("POCKETLLM_PASSPHRASE= " POCKETLLM " data list --home /nonexistent/x "
                            "2>&1",
                            &out),
                1);
    free(out);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "POCKETLLM_PASSPHRASE= %s data list --home %s 2>&1", POCKETLLM,
             g_home);
    PK_CHECK_EQ(run_capture(cmd, &out), 1);
    PK_CHECK(contains(out, "empty passphrase"));
    PK_CHECK(out && !strstr(out, "wrong passphrase"));
    free(out);
    snprintf(pf, sizeof pf, "%s/empty-pass", g_tmp);
    write_notes(pf, 0, 0);
    PK_CHECK_EQ(pkl(&out, POCKETLLM " data list --home %s --passphrase-file %s", g_home, pf), 1);
    PK_CHECK(contains(out, "empty passphrase"));
    free(out);
    /* a directory given as the file: said so */
    PK_CHECK_EQ(pkl(&out, POCKETLLM " data list --home %s --passphrase-file %s", g_home, g_tmp), 1);
    PK_CHECK(contains(out, "it is a directory"));
    free(out);
}

/* forget under rising file-size limits (ulimit -f, 512-byte blocks) on a dataset of 200 notes:
 * each attempt fails with the store's message and forgets nothing, until the limit is large
 * enough and the dataset is forgotten. Small limits stop the first write; larger ones let a part
 * of the commit's WAL frames through and fail inside COMMIT, after SQLite has lost the EFBIG
 * (64-88 blocks here); both must read as a size limit. */
static void check_forget_size_limit(void)
{
    char bulk[700], *out = NULL;
    int failed = 0, in_commit = 0, rc = 1;
    snprintf(bulk, sizeof bulk, "%s/bulk.txt", g_tmp);
    write_notes(bulk, 200, 40);
    PK_CHECK_EQ(pkl(&out, POCKETLLM " import %s --home %s --dataset bulk", bulk, g_home), 0);
    free(out);
    for (int blocks = 8; rc != 0 && blocks <= 512; blocks += 8) {
        rc = pkl(&out,
                 "sh -c 'ulimit -f %d; exec " POCKETLLM " data forget --home %s --dataset bulk'",
                 blocks, g_home);
        if (rc != 0) {
            failed++;
            in_commit += contains(out, ": commit: ");
            PK_CHECK_EQ(rc, 1); /* not 153 */
            PK_CHECK(contains(out, "file size limit") && contains(out, "nothing was changed"));
            PK_CHECK_EQ(dataset_size("bulk"), 200);
        }
        free(out);
    }
    PK_CHECK_EQ(rc, 0);
    PK_CHECK(failed > 0 && in_commit > 0);
    PK_CHECK_EQ(dataset_size("bulk"), -1);
    PK_CHECK_EQ(dataset_size("notes"), 20);
}

/* ulimit -f: the import and the forget fail with the store's message and change nothing. */
static void test_file_size_limit(void)
{
    char small[700], big[700], *out = NULL;
    snprintf(small, sizeof small, "%s/small.txt", g_tmp);
    snprintf(big, sizeof big, "%s/big.txt", g_tmp);
    write_notes(small, 20, 40);
    write_notes(big, 20000, 80);
    PK_CHECK_EQ(pkl(&out, POCKETLLM " import %s --home %s --dataset notes", small, g_home), 0);
    free(out);
    PK_CHECK_EQ(dataset_size("notes"), 20);
    int rc = pkl(&out,
                 "sh -c 'ulimit -f 2048; exec " POCKETLLM " import %s --home %s "
                 "--dataset notes'",
                 big, g_home);
    PK_CHECK_EQ(rc, 1); /* not 153 (killed by SIGXFSZ) */
    PK_CHECK(contains(out, "file size limit"));
    free(out);
    PK_CHECK_EQ(dataset_size("notes"), 20);
    check_forget_size_limit();
}

/* Run as an unprivileged user (root writes anywhere): reads work, writes say read-only. */
static void test_read_only(void)
{
    char *out = NULL, db[800], runas[64] = "";
    snprintf(db, sizeof db, "%s/pocketllm.db", g_home);
    if (geteuid() == 0) {
        char cmd[1400];
        snprintf(cmd, sizeof cmd, "chown -R 65534:65534 %s", g_home);
        PK_CHECK_EQ(run_capture(cmd, NULL), 0);
        snprintf(runas, sizeof runas, "setpriv --reuid=65534 --regid=65534 --clear-groups");
    }
    PK_CHECK(chmod(db, 0400) == 0 && chmod(g_home, 0500) == 0);
    PK_CHECK_EQ(pkl(&out, "%s " POCKETLLM " data list --home %s", runas, g_home), 0);
    PK_CHECK(contains(out, "notes"));
    free(out);
    PK_CHECK_EQ(pkl(&out, "%s " POCKETLLM " data forget --home %s --dataset notes", runas, g_home),
                1);
    PK_CHECK(contains(out, "read-only"));
    free(out);
    PK_CHECK(chmod(g_home, 0700) == 0 && chmod(db, 0600) == 0);
    if (geteuid() == 0) {
        char cmd[1400];
        snprintf(cmd, sizeof cmd, "chown -R 0:0 %s", g_home);
        PK_CHECK_EQ(run_capture(cmd, NULL), 0);
    }
    PK_CHECK_EQ(dataset_size("notes"), 20);
}

/* An import paused before its transaction while rekey runs: it must not seal rows under the
 * old key; it fails naming the cause, and the home rekeys again afterwards. */
static void test_rekey_during_import(void)
{
    char notes[700], flag[700], newp[700], cmd[4800], log[700], *out = NULL;
    snprintf(notes, sizeof notes, "%s/more.txt", g_tmp);
    snprintf(flag, sizeof flag, "%s/store.import.begin", g_tmp);
    snprintf(newp, sizeof newp, "%s/new-pass", g_tmp);
    snprintf(log, sizeof log, "%s/import.log", g_tmp);
    write_notes(notes, 5, 20);
    PK_CHECK_EQ(write_string(newp, "the new passphrase\n"), 0);
    snprintf(cmd, sizeof cmd,
             "(POCKETLLM_PAUSE_AT=store.import.begin POCKETLLM_PAUSE_DIR=%s "
             "POCKETLLM_PASSPHRASE=pw %s import %s --home %s --dataset more >%s 2>&1; "
             "echo \"exit $?\" >>%s) </dev/null >/dev/null 2>&1 &",
             g_tmp, POCKETLLM, notes, g_home, log, log);
    PK_CHECK_EQ(run_capture(cmd, NULL), 0);
    PK_CHECK(wait_for_file(flag, 30));
    PK_CHECK_EQ(pkl(&out, POCKETLLM " rekey --home %s --new-passphrase-file %s", g_home, newp), 0);
    free(out);
    unlink(flag);
    for (int i = 0; i < 3000; i++) {
        char *l = NULL;
        snprintf(cmd, sizeof cmd, "cat %s", log);
        run_capture(cmd, &l);
        int done = l && strstr(l, "exit ");
        free(l);
        if (done)
            break;
        usleep(10000);
    }
    snprintf(cmd, sizeof cmd, "cat %s", log);
    run_capture(cmd, &out);
    PK_CHECK(contains(out, "exit 1"));
    PK_CHECK(contains(out, "passphrase"));
    PK_CHECK(contains(out, "changed while this command ran"));
    free(out);
    snprintf(cmd, sizeof cmd, "%s data list --home %s --passphrase-file %s --json 2>&1", POCKETLLM,
             g_home, newp);
    PK_CHECK_EQ(run_capture(cmd, &out), 0);
    PK_CHECK(out && !strstr(out, "\"more\""));
    free(out);
    snprintf(cmd, sizeof cmd,
             "POCKETLLM_NEW_PASSPHRASE=pw %s rekey --home %s "
             "--passphrase-file %s 2>&1",
             POCKETLLM, g_home, newp);
    PK_CHECK_EQ(run_capture(cmd, &out), 0);
    free(out);
    PK_CHECK_EQ(dataset_size("notes"), 20);
}

/* The slow label's randomized races: an import and a rekey started together, N times, at
 * random offsets. Whatever the interleaving, afterwards every dataset opens under the current
 * passphrase (nothing was sealed under a lost key) and the next rekey succeeds. */
static void test_random_races(int trials)
{
    char notes[700], cmd[3000], pass[2][32] = {"pw", "other"}, pf[2][700], *out = NULL;
    snprintf(notes, sizeof notes, "%s/race.txt", g_tmp);
    write_notes(notes, 400, 60);
    for (int k = 0; k < 2; k++) {
        snprintf(pf[k], sizeof pf[k], "%s/pass%d", g_tmp, k);
        FILE *f = fopen(pf[k], "w");
        PK_CHECK(f != NULL);
        if (f) {
            fprintf(f, "%s\n", pass[k]);
            fclose(f);
        }
    }
    srand((unsigned)getpid());
    for (int t = 0; t < trials; t++) {
        int cur = t % 2, next = 1 - cur, delay_ms = rand() % 60;
        snprintf(cmd, sizeof cmd,
                 "%s import %s --home %s --dataset race%d --passphrase-file %s >/dev/null 2>&1 & "
                 "sleep 0.0%02d; POCKETLLM_NEW_PASSPHRASE=%s %s rekey --home %s "
                 "--passphrase-file %s >/dev/null 2>&1; wait",
                 POCKETLLM, notes, g_home, t, pf[cur], delay_ms, pass[next], POCKETLLM, g_home,
                 pf[cur]);
        PK_CHECK(run_capture(cmd, NULL) >= 0);
        /* whichever passphrase is current now opens every dataset, each complete or absent */
        int which = -1;
        for (int k = 0; k < 2 && which < 0; k++) {
            char probe[4096]; // room for the longest paths (aarch64 gcc checks the bound)
            snprintf(probe, sizeof probe,
                     "%s data list --home %s --passphrase-file %s >/dev/null "
                     "2>&1",
                     POCKETLLM, g_home, pf[k]);
            if (run_capture(probe, NULL) == 0)
                which = k;
        }
        PK_CHECK(which >= 0);
        if (which < 0)
            break;
        snprintf(cmd, sizeof cmd, "%s data list --home %s --passphrase-file %s --json 2>&1",
                 POCKETLLM, g_home, pf[which]);
        free(out);
        out = NULL;
        PK_CHECK_EQ(run_capture(cmd, &out), 0);
        char want[64];
        snprintf(want, sizeof want, "\"dataset\":\"race%d\",", t);
        const char *row = out ? strstr(out, want) : NULL;
        PK_CHECK(row == NULL || strstr(row, "\"examples\":400") != NULL);
        /* every sealed row opens: a rekey round trip re-seals all of them or fails */
        snprintf(cmd, sizeof cmd,
                 "POCKETLLM_NEW_PASSPHRASE=%s %s rekey --home %s "
                 "--passphrase-file %s 2>&1",
                 pass[which], POCKETLLM, g_home, pf[which]);
        free(out);
        out = NULL;
        PK_CHECK_EQ(run_capture(cmd, &out), 0);
    }
    free(out);
}

int main(int argc, char **argv)
{
    if (!make_tmpdir(g_tmp, sizeof g_tmp, "homes") || chmod(g_tmp, 0711) != 0)
        return 1; /* 0711: the unprivileged user of test_read_only passes through to the home */
    snprintf(g_home, sizeof g_home, "%s/home", g_tmp);
    test_home_is_file();
    test_init_and_passphrases();
    test_file_size_limit();
    test_read_only();
    test_rekey_during_import();
    if (argc > 1 && !strcmp(argv[1], "races"))
        test_random_races(atoi(argc > 2 ? argv[2] : "20"));
    rm_rf(g_tmp);
    return PK_TEST_DONE();
}
