/* test_store_home.c: the state of an agent home: a file in its place, loose permissions, a
 * read-only home, and rekey against other handles and processes. A handle whose keys predate a
 * rekey cannot write (the epoch check), a live trainer's lease blocks rekey and the forgetting
 * of its datasets and a second trainer of its run, a dead holder's lease is taken over, and a
 * home of schema 1 is migrated to the epoch/lease schema. A lease's and the agent row's holder
 * is live while it holds its lock on HOME/leases.lock, whatever its pid's start time says. Each
 * race is driven in a fixed order (two handles, or a child process that holds a lease until
 * told to exit). */
#include "pk_test.h"
#include "store_test_util.h"

#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>

#define NEW_PASS "a brand new passphrase"

static pk_store *open_home(const char *home, const char *pass)
{
    char err[512] = "";
    pk_store *s = NULL;
    pk_status st = pk_store_open(home, pass, strlen(pass), &s, err, sizeof err);
    if (st != PK_OK)
        fprintf(stderr, "open %s: %s\n", home, err);
    PK_CHECK_EQ(st, PK_OK);
    return s;
}

/* err (may be NULL) gets the store's message. */
static pk_status add_note_err(pk_store *s, const char *dataset, const char *text, char *err,
                              size_t errlen)
{
    pk_example ex = {0, text, NULL, NULL, NULL, NULL};
    return pk_store_example_add(s, dataset, &ex, NULL, err, errlen);
}

static pk_status add_note(pk_store *s, const char *dataset, const char *text)
{
    return add_note_err(s, dataset, text, NULL, 0);
}

static int64_t new_run(pk_store *s, const char *dataset)
{
    int64_t ds = 0, run = 0;
    PK_CHECK_EQ(pk_store_dataset_id(s, dataset, &ds, NULL, 0), PK_OK);
    PK_CHECK_EQ(
        pk_store_run_create(s, ds, "{\"eval_dataset\":\"heldout\"}", "00", 10, &run, NULL, 0),
        PK_OK);
    return run;
}

/* Two handles: B rekeys; A's keys are stale, so each of its sealing writes fails cleanly. */
static void test_stale_handle(const char *home)
{
    char serr[512] = ""; /* what the store says on failure */
    pk_store *a = open_home(home, TEST_PASS), *b = open_home(home, TEST_PASS);
    PK_CHECK_EQ(add_note(a, "notes", "written before the rekey"), PK_OK);
    int64_t run = new_run(a, "notes");
    PK_CHECK_EQ(pk_store_rekey(b, NEW_PASS, strlen(NEW_PASS), tiny_params(), serr, sizeof serr),
                PK_OK);
    PK_CHECK_EQ(add_note_err(a, "notes", "sealed under the old key", serr, sizeof serr),
                PK_ERR_STALE_KEY);
    PK_CHECK(strstr(serr, "passphrase") != NULL);
    PK_CHECK_EQ(pk_store_checkpoint_put(a, run, 1, "abcd", 4, serr, sizeof serr), PK_ERR_STALE_KEY);
    PK_CHECK_EQ(add_note(b, "notes", "sealed under the new key"), PK_OK); /* b is current */
    pk_store_close(a);
    pk_store_close(b);
    a = open_home(home, NEW_PASS);
    int64_t ds = 0, n = 0;
    PK_CHECK_EQ(pk_store_dataset_id(a, "notes", &ds, serr, sizeof serr), PK_OK);
    PK_CHECK_EQ(pk_store_example_count(a, ds, &n, serr, sizeof serr), PK_OK);
    PK_CHECK_EQ(n, 3);
    int64_t step = 0;
    void *blob = NULL;
    size_t len = 0;
    PK_CHECK_EQ(pk_store_checkpoint_get(a, run, 10, &step, &blob, &len, serr, sizeof serr),
                PK_ERR_NOTFOUND);
    /* and the home rekeys again: nothing was left sealed under a lost key */
    PK_CHECK_EQ(pk_store_rekey(a, TEST_PASS, strlen(TEST_PASS), tiny_params(), serr, sizeof serr),
                PK_OK);
    pk_store_close(a);
}

/* A child process holds the lease of run (the agent row when run is 0) until the parent closes
 * the pipe. */
static pid_t hold_lease(const char *home, int64_t run, int *release_fd)
{
    int to_child[2], ready[2];
    PK_CHECK(pipe(to_child) == 0 && pipe(ready) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(to_child[1]);
        close(ready[0]);
        pk_store *s = open_home(home, TEST_PASS);
        pk_status st =
            run > 0 ? pk_store_lease_acquire(s, run, NULL, 0) : pk_store_agent_claim(s, NULL, 0);
        char c = st == PK_OK ? 'y' : 'n', x;
        if (write(ready[1], &c, 1) != 1 || read(to_child[0], &x, 1) < 0)
            _exit(2);
        st = run > 0 ? pk_store_lease_release(s, run, NULL, 0) : pk_store_agent_release(s, NULL, 0);
        pk_store_close(s);
        _exit(st == PK_OK ? 0 : 1);
    }
    close(to_child[0]);
    close(ready[1]);
    char c = 0;
    PK_CHECK(read(ready[0], &c, 1) == 1 && c == 'y');
    close(ready[0]);
    *release_fd = to_child[1];
    return pid;
}

/* Runs one statement on the home's database behind the store's back. */
static void raw_sql(const char *home, const char *sql)
{
    char db[1200];
    sqlite3 *h = NULL;
    PK_CHECK(pk_store_db_path(home, db, sizeof db) == 0);
    PK_CHECK_EQ(sqlite3_open(db, &h), SQLITE_OK);
    PK_CHECK_EQ(sqlite3_exec(h, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(h);
}

/* Liveness is the holder's lock on HOME/leases.lock, not its pid's start time: a live holder
 * whose row carries a wrong start time (what qemu-user reports for a guest's own process) is
 * still live, and a row naming a running process that holds no lock (a recycled pid) is stale.
 * The agent row likewise, also as read without the passphrase (pk_store_agent_running). */
static void test_lease_liveness(const char *home)
{
    char serr[512] = "", want[1200], sql[200];
    pk_store *s = open_home(home, TEST_PASS);
    int64_t run = new_run(s, "notes");
    int release = -1, status = 0;
    pid_t child = hold_lease(home, run, &release);
    snprintf(sql, sizeof sql, "UPDATE leases SET proc_start = 12345 WHERE run_id = %lld",
             (long long)run);
    raw_sql(home, sql);
    snprintf(want, sizeof want, "run %lld is already running (pid %ld)", (long long)run,
             (long)child);
    PK_CHECK_EQ(pk_store_lease_acquire(s, run, serr, sizeof serr), PK_ERR_BUSY);
    PK_CHECK(strstr(serr, want) != NULL);
    PK_CHECK_EQ(pk_store_agent_running(home), 0); /* no agent: byte 0 is free */
    close(release);
    PK_CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* a live process that holds no lock: the agent child's pid in the run's row */
    child = hold_lease(home, 0, &release);
    snprintf(sql, sizeof sql,
             "INSERT INTO leases(run_id, pid, proc_start, started_at) VALUES(%lld, %ld, 0, 0)",
             (long long)run, (long)child);
    raw_sql(home, sql);
    PK_CHECK_EQ(pk_store_lease_acquire(s, run, serr, sizeof serr), PK_OK);
    PK_CHECK_EQ(pk_store_lease_release(s, run, serr, sizeof serr), PK_OK);

    /* the agent row: held by the child, refused by name, visible without the passphrase */
    PK_CHECK_EQ(pk_store_agent_running(home), 1);
    snprintf(want, sizeof want, "an agent is already running on %s (pid %ld)", home, (long)child);
    PK_CHECK_EQ(pk_store_agent_claim(s, serr, sizeof serr), PK_ERR_BUSY);
    PK_CHECK(strstr(serr, want) != NULL);
    pk_store_agent_info a;
    PK_CHECK_EQ(pk_store_agent_get(s, &a, serr, sizeof serr), PK_OK);
    PK_CHECK(a.pid == (long)child && a.alive);
    pk_store_agent_info_clear(&a);
    raw_sql(home, "UPDATE agent SET proc_start = 12345");
    PK_CHECK_EQ(pk_store_agent_claim(s, serr, sizeof serr), PK_ERR_BUSY);
    /* kill -9: the kernel drops the lock with the process, the row stays and is stale */
    kill(child, SIGKILL);
    PK_CHECK(waitpid(child, &status, 0) == child);
    close(release);
    PK_CHECK_EQ(pk_store_agent_running(home), 0);
    PK_CHECK_EQ(pk_store_agent_get(s, &a, serr, sizeof serr), PK_OK);
    PK_CHECK(a.pid == (long)child && !a.alive);
    pk_store_agent_info_clear(&a);
    long pid = 0;
    PK_CHECK_EQ(pk_store_agent_request_stop(s, &pid, serr, sizeof serr), PK_ERR_NOTFOUND);
    PK_CHECK(strstr(serr, "is gone") != NULL);
    PK_CHECK_EQ(pk_store_agent_claim(s, serr, sizeof serr), PK_OK);
    PK_CHECK_EQ(pk_store_agent_running(home), 1);
    PK_CHECK_EQ(pk_store_agent_release(s, serr, sizeof serr), PK_OK);
    PK_CHECK_EQ(pk_store_agent_running(home), 0);
    PK_CHECK_EQ(pk_store_agent_get(s, &a, serr, sizeof serr), PK_ERR_NOTFOUND);
    pk_store_agent_info_clear(&a);
    pk_store_close(s);
}

static void test_leases(const char *home)
{
    char serr[512] = ""; /* what the store says on failure */
    pk_store *s = open_home(home, TEST_PASS);
    PK_CHECK_EQ(add_note(s, "heldout", "an eval note"), PK_OK);
    int64_t run = new_run(s, "notes"), other = new_run(s, "notes");
    int release = -1;
    pid_t child = hold_lease(home, run, &release);
    char want[64];
    snprintf(want, sizeof want, "run %lld is already running (pid %ld)", (long long)run,
             (long)child);
    PK_CHECK_EQ(pk_store_lease_acquire(s, run, serr, sizeof serr), PK_ERR_BUSY);
    PK_CHECK(strstr(serr, want) != NULL);
    PK_CHECK_EQ(pk_store_rekey(s, NEW_PASS, strlen(NEW_PASS), tiny_params(), serr, sizeof serr),
                PK_ERR_BUSY);
    PK_CHECK(strstr(serr, "is training") != NULL);
    PK_CHECK_EQ(pk_store_dataset_forget(s, "notes", serr, sizeof serr), PK_ERR_BUSY);
    PK_CHECK(strstr(serr, "in use by run") != NULL);
    PK_CHECK_EQ(pk_store_dataset_forget(s, "heldout", serr, sizeof serr),
                PK_ERR_BUSY); /* its eval dataset */
    PK_CHECK_EQ(pk_store_lease_acquire(s, other, serr, sizeof serr),
                PK_OK); /* another run is free */
    PK_CHECK_EQ(pk_store_lease_release(s, other, serr, sizeof serr), PK_OK);
    close(release); /* the child releases and exits */
    int status = 0;
    PK_CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    PK_CHECK_EQ(pk_store_lease_acquire(s, run, serr, sizeof serr), PK_OK);
    PK_CHECK_EQ(pk_store_lease_release(s, run, serr, sizeof serr), PK_OK);
    /* kill -9 leaves the row; the next trainer takes it over */
    child = hold_lease(home, run, &release);
    kill(child, SIGKILL);
    PK_CHECK(waitpid(child, &status, 0) == child);
    close(release);
    PK_CHECK_EQ(pk_store_lease_acquire(s, run, serr, sizeof serr), PK_OK);
    PK_CHECK_EQ(pk_store_lease_release(s, run, serr, sizeof serr), PK_OK);
    PK_CHECK_EQ(pk_store_rekey(s, NEW_PASS, strlen(NEW_PASS), tiny_params(), serr, sizeof serr),
                PK_OK);
    PK_CHECK_EQ(pk_store_dataset_forget(s, "heldout", serr, sizeof serr), PK_OK);
    pk_store_close(s);
}

/* A home written by schema 1 (no epoch, no leases) opens and is migrated. */
static void test_migration(const char *home)
{
    char db[1200];
    sqlite3 *h = NULL;
    PK_CHECK(pk_store_db_path(home, db, sizeof db) == 0);
    PK_CHECK_EQ(sqlite3_open(db, &h), SQLITE_OK);
    PK_CHECK_EQ(sqlite3_exec(h,
                             "DROP TABLE leases; ALTER TABLE keyring DROP COLUMN epoch;"
                             "PRAGMA user_version = 1;",
                             NULL, NULL, NULL),
                SQLITE_OK);
    sqlite3_close(h);
    pk_store *s = open_home(home, NEW_PASS);
    PK_CHECK_EQ(add_note(s, "notes", "after the migration"), PK_OK);
    PK_CHECK_EQ(pk_store_rekey(s, TEST_PASS, strlen(TEST_PASS), tiny_params(), NULL, 0), PK_OK);
    pk_store_close(s);
    s = open_home(home, TEST_PASS);
    pk_store_close(s);
}

/* A file where the home should be is named as such; a home open to others is restricted. */
static void test_home_checks(const char *home)
{
    char file[600], err[512] = "";
    struct stat sb;
    pk_store *s = NULL;
    snprintf(file, sizeof file, "%s.file", home);
    FILE *f = fopen(file, "w");
    PK_CHECK(f != NULL);
    if (f)
        fclose(f);
    PK_CHECK_EQ(pk_store_init(file, TEST_PASS, strlen(TEST_PASS), tiny_params(), err, sizeof err),
                PK_ERR_ARG);
    PK_CHECK(strstr(err, "is a file") != NULL);
    PK_CHECK_EQ(pk_store_open(file, TEST_PASS, strlen(TEST_PASS), &s, err, sizeof err), PK_ERR_ARG);
    PK_CHECK(strstr(err, "is a file") != NULL);
    unlink(file);
    PK_CHECK(chmod(home, 0755) == 0);
    s = open_home(home, TEST_PASS);
    pk_store_close(s);
    PK_CHECK(stat(home, &sb) == 0 && (sb.st_mode & 0777) == 0700);
}

/* Reads work from a home that cannot be written; writes say the home is read-only. Run as an
 * unprivileged user (root writes anywhere), in a child when the test runs as root. */
static void check_read_only(const char *home)
{
    char serr[512] = ""; /* what the store says on failure */
    pk_store *s = open_home(home, TEST_PASS);
    pk_dataset_info *ds = NULL;
    size_t n = 0;
    PK_CHECK_EQ(pk_store_dataset_list(s, &ds, &n, serr, sizeof serr), PK_OK);
    PK_CHECK(n >= 1);
    free(ds);
    PK_CHECK_EQ(add_note_err(s, "notes", "cannot be written", serr, sizeof serr), PK_ERR_IO);
    PK_CHECK(strstr(serr, "read-only") != NULL);
    pk_store_close(s);
}

static void test_read_only(const char *home)
{
    char db[1200];
    PK_CHECK(pk_store_db_path(home, db, sizeof db) == 0);
    if (geteuid() != 0) {
        PK_CHECK(chmod(db, 0400) == 0 && chmod(home, 0500) == 0);
        check_read_only(home);
        PK_CHECK(chmod(home, 0700) == 0 && chmod(db, 0600) == 0);
        return;
    }
    PK_CHECK(chown(home, 65534, 65534) == 0 && chown(db, 65534, 65534) == 0);
    PK_CHECK(chmod(db, 0400) == 0 && chmod(home, 0500) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        if (setgid(65534) != 0 || setuid(65534) != 0)
            _exit(3);
        check_read_only(home);
        _exit(PK_TEST_DONE());
    }
    int status = 0;
    PK_CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    PK_CHECK(chown(home, 0, 0) == 0 && chown(db, 0, 0) == 0);
    PK_CHECK(chmod(home, 0700) == 0 && chmod(db, 0600) == 0);
}

int main(void)
{
    char home[512], err[512];
    if (pk_crypto_global_init() != PK_OK)
        return 1;
    make_tmp_home(home, sizeof home, "keys");
    PK_CHECK_EQ(pk_store_init(home, TEST_PASS, strlen(TEST_PASS), tiny_params(), err, sizeof err),
                PK_OK);
    test_home_checks(home);
    {
        pk_store *s = open_home(home, TEST_PASS);
        PK_CHECK_EQ(add_note(s, "notes", "a note"), PK_OK);
        pk_store_close(s);
    }
    test_read_only(home);
    test_stale_handle(home);
    PK_CHECK_EQ(pk_store_agent_running(home), -1); /* no holder ever locked: no lock file */
    test_lease_liveness(home);
    test_leases(home);
    test_migration(home);
    rm_rf(home);
    return PK_TEST_DONE();
}
