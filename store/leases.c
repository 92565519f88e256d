/* leases.c: which runs are training right now. A trainer holds a lease row (run, pid, process
 * start time) while it runs; rekey and forget refuse to pull keys or data from under a live
 * lease, and a second trainer of the same run is refused by name. A lease whose process is gone
 * (kill -9, power loss) is stale and taken over. */
#include "store_impl.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Start time of process pid in clock ticks since boot (/proc/PID/stat field 22), 0 if unknown:
 * with the pid it names one process, so a recycled pid is not mistaken for the lease holder. */
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

int store_proc_alive(long pid, int64_t start)
{
    if (pid <= 0 || (kill((pid_t)pid, 0) != 0 && errno != EPERM))
        return 0;
    int64_t now = store_proc_start(pid);
    return start == 0 || now == 0 || now == start;
}

/* The first live lease among the rows of q (columns: run_id, pid, proc_start); 0 if none. */
static int first_live(sqlite3_stmt *q, int64_t *run_id, long *pid)
{
    while (sqlite3_step(q) == SQLITE_ROW) {
        long p = (long)sqlite3_column_int64(q, 1);
        if (store_proc_alive(p, sqlite3_column_int64(q, 2))) {
            *run_id = sqlite3_column_int64(q, 0);
            *pid = p;
            return 1;
        }
    }
    return 0;
}

pk_status pk_store_lease_acquire(pk_store *s, int64_t run_id, char *err, size_t errlen)
{
    store_call(s, err, errlen);
    sqlite3_stmt *q = NULL;
    int64_t holder = 0;
    long pid = 0;
    pk_status st = store_begin(s);
    if (st == PK_OK)
        st = store_query(s, &q, "SELECT run_id, pid, proc_start FROM leases WHERE run_id = ?1", "i",
                         run_id);
    if (st != PK_OK)
        goto out;
    if (first_live(q, &holder, &pid) && pid != (long)getpid()) {
        st = store_fail(s, PK_ERR_BUSY, "run %lld is already running (pid %ld)", (long long)run_id,
                        pid);
        goto out;
    }
    sqlite3_finalize(q);
    q = NULL;
    st =
        store_run(s, "write lease",
                  "INSERT OR REPLACE INTO leases(run_id, pid, proc_start, started_at)"
                  " VALUES(?1, ?2, ?3, ?4)",
                  "iiid", run_id, (int64_t)getpid(), store_proc_start((long)getpid()), store_now());
    if (st == PK_OK)
        st = store_commit(s);
out:
    sqlite3_finalize(q);
    store_rollback(s);
    return st;
}

pk_status pk_store_lease_release(pk_store *s, int64_t run_id, char *err, size_t errlen)
{
    store_call(s, err, errlen);
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
    if (first_live(q, &run_id, &pid))
        st = store_fail(s, PK_ERR_BUSY,
                        "run %lld is training (pid %ld): stop it (Ctrl-C, or let it finish), then "
                        "run this again",
                        (long long)run_id, pid);
    sqlite3_finalize(q);
    return st;
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
    if (first_live(q, &run_id, &pid))
        st = store_fail(s, PK_ERR_BUSY,
                        "dataset %s is in use by run %lld, which is training (pid %ld): stop it "
                        "first, then forget the dataset",
                        name, (long long)run_id, pid);
    sqlite3_finalize(q);
    return st;
}
