/* leases.c: which runs are training right now, and whether the home's agent runs (DESIGN 13).
 * A trainer holds a lease row (run, pid, process start time) while it runs; rekey and forget
 * refuse to pull keys or data from under a live lease, and a second trainer of the same run is
 * refused by name. Liveness is a lock, not a guess from pids: the holder also keeps an
 * open-file-description lock (F_OFD_SETLK) on one byte of HOME/leases.lock (byte 0 the agent's,
 * byte N run N's) for as long as it holds the row, and the kernel drops it when the process dies
 * however it dies (kill -9 included). A row whose byte nobody locks is stale and taken over; a
 * recycled pid never holds the lock, so it is not mistaken for the holder. */
#define _GNU_SOURCE /* F_OFD_SETLK, F_OFD_GETLK */
#include "store_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define LOCK_FILE "leases.lock"

/* Start time of process pid in clock ticks since boot (/proc/PID/stat field 22), 0 if unknown:
 * with the pid it names one process. Only the fallback where the lock cannot answer uses it
 * (qemu-user fakes a guest's own start time, so it is no proof of life there). */
int64_t store_proc_start(long pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    long long start = 0;
    for (int field = 2; p && field < 22; field++)
        p = strchr(p + 1, ' ');
    if (p && sscanf(p + 1, "%lld", &start) == 1)
        return start;
    return 0;
}

static int proc_alive(long pid, int64_t start)
{
    if (pid <= 0 || (kill((pid_t)pid, 0) != 0 && errno != EPERM))
        return 0;
    int64_t now = store_proc_start(pid);
    return start == 0 || now == 0 || now == start;
}

static void lock_path(const char *home, char *out, size_t n)
{
    snprintf(out, n, "%s/%s", home, LOCK_FILE);
}

static struct flock lock_range(short type, int64_t at)
{
    struct flock l;
    memset(&l, 0, sizeof l);
    l.l_type = type;
    l.l_whence = SEEK_SET;
    l.l_start = (off_t)at;
    l.l_len = 1;
    return l;
}

/* 1 if some open file description (of any process, this one's other handles included) locks
 * byte `at` of HOME/leases.lock, 0 if none does, -1 if the lock cannot tell: no lock file (no
 * holder ever took a lock on this home: a row from a build before the lock file) or no OFD
 * locks on this system. */
int store_lock_held(const char *home, int64_t at)
{
#ifdef F_OFD_GETLK
    char path[1100];
    lock_path(home, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return -1;
    struct flock l = lock_range(F_WRLCK, at);
    int rc = fcntl(fd, F_OFD_GETLK, &l);
    close(fd); /* no lock through fd: closing it drops nothing (unlike a POSIX lock's close) */
    if (rc != 0)
        return -1;
    return l.l_type != F_UNLCK;
#else
    (void)home;
    (void)at;
    return -1;
#endif
}

int store_holder_alive(pk_store *s, int64_t at, long pid, int64_t start)
{
    int held = store_lock_held(s->home, at);
    return held >= 0 ? held : proc_alive(pid, start);
}

/* Locks byte `at` through this handle's description of HOME/leases.lock (opened, 0600, on
 * first use; O_CLOEXEC, so a program this process starts does not inherit it). PK_ERR_BUSY
 * without a message when another description holds it; PK_OK without a lock where OFD locks
 * are missing (the pid check then stands alone). */
pk_status store_lock_take(pk_store *s, int64_t at)
{
#ifdef F_OFD_SETLK
    if (s->lock_fd < 0) {
        char path[1100];
        lock_path(s->home, path, sizeof path);
        s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
        if (s->lock_fd < 0)
            return store_fail(s, PK_ERR_IO, "%s: %s", path, strerror(errno));
    }
    struct flock l = lock_range(F_WRLCK, at);
    if (fcntl(s->lock_fd, F_OFD_SETLK, &l) == 0)
        return PK_OK;
    if (errno == EAGAIN || errno == EACCES)
        return PK_ERR_BUSY;
    if (errno == EINVAL) /* a kernel without OFD locks */
        return PK_OK;
    return store_fail(s, PK_ERR_IO, "%s/%s: lock: %s", s->home, LOCK_FILE, strerror(errno));
#else
    (void)s;
    (void)at;
    return PK_OK;
#endif
}

void store_lock_drop(pk_store *s, int64_t at)
{
#ifdef F_OFD_SETLK
    struct flock l = lock_range(F_UNLCK, at);
    if (s->lock_fd >= 0)
        (void)fcntl(s->lock_fd, F_OFD_SETLK, &l); /* unlocking a byte not held is no error */
#else
    (void)s;
    (void)at;
#endif
}

int pk_store_agent_running(const char *home)
{
    return store_lock_held(home, STORE_LOCK_AGENT);
}

pk_status store_lock_claim(pk_store *s, int64_t at, int live, long pid, const char *who,
                           int *locked)
{
    long self = (long)getpid();
    if (live && pid != self)
        return store_fail(s, PK_ERR_BUSY, "%s (pid %ld)", who, pid);
    /* The write transaction orders claimers, and a holder locks before it writes its row and
     * unlocks before it deletes it: a byte locked here without a live row is this process's
     * own (another handle of it holds the row, as a second claim from one pid always could). */
    pk_status st = store_lock_take(s, at);
    if (st == PK_ERR_BUSY && !(live && pid == self))
        return store_fail(s, PK_ERR_BUSY, "%s (pid %ld)", who, live ? pid : self);
    if (st == PK_ERR_BUSY)
        return PK_OK;
    *locked = st == PK_OK;
    return st;
}

pk_status store_claim_end(pk_store *s, int64_t at, int locked, pk_status st)
{
    if (st != PK_OK && locked) /* before the transaction ends: no one sees it without a row */
        store_lock_drop(s, at);
    store_rollback(s);
    return st;
}

/* The first live lease among the rows of q (columns: run_id, pid, proc_start); 0 if none.
 * Finalizes q. */
static int first_live(pk_store *s, sqlite3_stmt *q, int64_t *run_id, long *pid)
{
    int live = 0;
    while (!live && sqlite3_step(q) == SQLITE_ROW) {
        int64_t run = sqlite3_column_int64(q, 0);
        long p = (long)sqlite3_column_int64(q, 1);
        live = store_holder_alive(s, run, p, sqlite3_column_int64(q, 2));
        if (live) {
            *run_id = run;
            *pid = p;
        }
    }
    sqlite3_finalize(q);
    return live;
}

pk_status pk_store_lease_acquire(pk_store *s, int64_t run_id, char *err, size_t errlen)
{
    store_call(s, err, errlen);
    sqlite3_stmt *q = NULL;
    int64_t holder = 0;
    long pid = 0, self = (long)getpid();
    int locked = 0;
    if (run_id <= 0)
        return store_fail(s, PK_ERR_ARG, "no run %lld", (long long)run_id);
    pk_status st = store_begin(s);
    if (st == PK_OK)
        st = store_query(s, &q, "SELECT run_id, pid, proc_start FROM leases WHERE run_id = ?1", "i",
                         run_id);
    if (st != PK_OK)
        goto out;
    int live = first_live(s, q, &holder, &pid);
    q = NULL;
    char who[64];
    snprintf(who, sizeof who, "run %lld is already running", (long long)run_id);
    st = store_lock_claim(s, run_id, live, pid, who, &locked);
    if (st == PK_OK)
        st = store_run(s, "write lease",
                       "INSERT OR REPLACE INTO leases(run_id, pid, proc_start, started_at)"
                       " VALUES(?1, ?2, ?3, ?4)",
                       "iiid", run_id, (int64_t)self, store_proc_start(self), store_now());
    if (st == PK_OK)
        st = store_commit(s);
out:
    sqlite3_finalize(q);
    return store_claim_end(s, run_id, locked, st);
}

pk_status pk_store_lease_release(pk_store *s, int64_t run_id, char *err, size_t errlen)
{
    store_call(s, err, errlen);
    /* unlock first: in between, the row is stale and a new holder may take it over (its row
     * carries its own pid, which the DELETE below leaves alone) */
    store_lock_drop(s, run_id);
    return store_run(s, "release lease", "DELETE FROM leases WHERE run_id = ?1 AND pid = ?2", "ii",
                     run_id, (int64_t)getpid());
}

pk_status store_no_live_lease(pk_store *s)
{
    sqlite3_stmt *q = NULL;
    int64_t run_id = 0;
    long pid = 0;
    pk_status st = store_query(s, &q, "SELECT run_id, pid, proc_start FROM leases", "");
    if (st != PK_OK)
        return st;
    if (first_live(s, q, &run_id, &pid))
        return store_fail(s, PK_ERR_BUSY,
                          "run %lld is training (pid %ld): stop it (Ctrl-C, or let it finish), "
                          "then run this again",
                          (long long)run_id, pid);
    return PK_OK;
}

pk_status store_dataset_not_leased(pk_store *s, int64_t dataset_id, const char *name)
{
    sqlite3_stmt *q = NULL;
    int64_t run_id = 0;
    long pid = 0;
    pk_status st = store_query(
        s, &q,
        "SELECT l.run_id, l.pid, l.proc_start FROM leases l JOIN runs r ON r.id = l.run_id"
        " WHERE r.dataset_id = ?1 OR json_extract(r.config_json, '$.eval_dataset') = ?2"
        " OR r.id IN (SELECT run_id FROM run_datasets WHERE dataset_id = ?1)",
        "it", dataset_id, name);
    if (st != PK_OK)
        return st;
    if (first_live(s, q, &run_id, &pid))
        return store_fail(s, PK_ERR_BUSY,
                          "dataset %s is in use by run %lld, which is training (pid %ld): stop "
                          "it first, then forget the dataset",
                          name, (long long)run_id, pid);
    return PK_OK;
}
