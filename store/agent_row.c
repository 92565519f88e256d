/* agent_row.c: the on-device agent's row (DESIGN 13): which process runs the agent of this home,
 * what it last reported, and a stop request from `pocketllm agent stop`. One row per home, so a
 * second agent is refused by name; a row left by a dead process (kill -9) is taken over. The
 * holder locks byte 0 of HOME/leases.lock while it holds the row: that lock, not its pid, says
 * whether it still runs (leases.c). */
#include "store_impl.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

pk_status pk_store_agent_claim(pk_store *s, char *err, size_t errlen)
{
    store_call(s, err, errlen);
    sqlite3_stmt *q = NULL;
    long pid = 0, self = (long)getpid();
    int live = 0, locked = 0;
    pk_status st = store_begin(s);
    if (st == PK_OK)
        st = store_prepare(s, "SELECT pid, proc_start FROM agent WHERE id = 1", &q);
    if (st != PK_OK)
        goto out;
    if (sqlite3_step(q) == SQLITE_ROW) {
        pid = (long)sqlite3_column_int64(q, 0);
        live = store_holder_alive(s, STORE_LOCK_AGENT, pid, sqlite3_column_int64(q, 1));
    }
    sqlite3_finalize(q);
    q = NULL;
    char who[sizeof s->home + 40];
    snprintf(who, sizeof who, "an agent is already running on %s", s->home);
    st = store_lock_claim(s, STORE_LOCK_AGENT, live, pid, who, &locked);
    if (st != PK_OK)
        goto out;
    st = store_prepare(s,
                       "INSERT OR REPLACE INTO agent(id, pid, proc_start, started_at, updated_at,"
                       " status_json, stop_requested) VALUES(1, ?1, ?2, ?3, ?3, '{}', 0)",
                       &q);
    if (st != PK_OK)
        goto out;
    sqlite3_bind_int64(q, 1, (sqlite3_int64)self);
    sqlite3_bind_int64(q, 2, store_proc_start(self));
    sqlite3_bind_double(q, 3, store_now());
    int rc = sqlite3_step(q);
    st = rc == SQLITE_DONE ? store_commit(s) : store_db_fail(s, rc, "claim the agent row");
out:
    sqlite3_finalize(q);
    return store_claim_end(s, STORE_LOCK_AGENT, locked, st);
}

pk_status pk_store_agent_release(pk_store *s, char *err, size_t errlen)
{
    store_call(s, err, errlen);
    store_lock_drop(s, STORE_LOCK_AGENT); /* first: the row is stale from here on (leases.c) */
    return store_exec_int(s, "DELETE FROM agent WHERE id = 1 AND pid = ?1", (int64_t)getpid(),
                          NULL);
}

pk_status pk_store_agent_set_status(pk_store *s, const char *status_json, char *err, size_t errlen)
{
    store_call(s, err, errlen);
    sqlite3_stmt *q = NULL;
    pk_status st = store_prepare(
        s, "UPDATE agent SET status_json = ?1, updated_at = ?2 WHERE id = 1 AND pid = ?3", &q);
    if (st != PK_OK)
        return st;
    sqlite3_bind_text(q, 1, status_json, -1, SQLITE_STATIC);
    sqlite3_bind_double(q, 2, store_now());
    sqlite3_bind_int64(q, 3, (sqlite3_int64)getpid());
    int rc = sqlite3_step(q);
    sqlite3_finalize(q);
    return rc == SQLITE_DONE ? PK_OK : store_db_fail(s, rc, "write agent status");
}

pk_status pk_store_agent_stop_requested(pk_store *s, int *stop, char *err, size_t errlen)
{
    store_call(s, err, errlen);
    sqlite3_stmt *q = NULL;
    *stop = 0;
    pk_status st =
        store_prepare(s, "SELECT stop_requested FROM agent WHERE id = 1 AND pid = ?1", &q);
    if (st != PK_OK)
        return st;
    sqlite3_bind_int64(q, 1, (sqlite3_int64)getpid());
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW)
        *stop = sqlite3_column_int(q, 0) != 0;
    else if (rc != SQLITE_DONE)
        st = store_db_fail(s, rc, "read agent stop request");
    sqlite3_finalize(q);
    return st;
}

void pk_store_agent_info_clear(pk_store_agent_info *a)
{
    if (!a)
        return;
    free(a->status_json);
    a->status_json = NULL;
}

pk_status pk_store_agent_get(pk_store *s, pk_store_agent_info *out, char *err, size_t errlen)
{
    store_call(s, err, errlen);
    sqlite3_stmt *q = NULL;
    memset(out, 0, sizeof *out);
    pk_status st = store_prepare(s,
                                 "SELECT pid, proc_start, stop_requested, started_at, updated_at,"
                                 " status_json FROM agent WHERE id = 1",
                                 &q);
    if (st != PK_OK)
        return st;
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        out->pid = (long)sqlite3_column_int64(q, 0);
        out->alive = store_holder_alive(s, STORE_LOCK_AGENT, out->pid, sqlite3_column_int64(q, 1));
        out->stop_requested = sqlite3_column_int(q, 2) != 0;
        out->started_at = sqlite3_column_double(q, 3);
        out->updated_at = sqlite3_column_double(q, 4);
        const char *j = (const char *)sqlite3_column_text(q, 5);
        out->status_json = strdup(j ? j : "{}");
        if (!out->status_json)
            st = store_fail(s, PK_ERR_NOMEM, "out of memory");
    } else if (rc == SQLITE_DONE) {
        st = store_fail(s, PK_ERR_NOTFOUND, "no agent runs on %s", s->home);
    } else {
        st = store_db_fail(s, rc, "read agent row");
    }
    sqlite3_finalize(q);
    return st;
}

pk_status pk_store_agent_request_stop(pk_store *s, long *pid, char *err, size_t errlen)
{
    pk_store_agent_info a;
    *pid = 0;
    pk_status st = pk_store_agent_get(s, &a, err, errlen);
    if (st == PK_OK && !a.alive)
        st =
            store_fail(s, PK_ERR_NOTFOUND, "no agent runs on %s (pid %ld is gone)", s->home, a.pid);
    if (st == PK_OK)
        st = store_exec_int(s, "UPDATE agent SET stop_requested = 1 WHERE pid = ?1", (int64_t)a.pid,
                            NULL);
    if (st == PK_OK)
        *pid = a.pid;
    pk_store_agent_info_clear(&a);
    return st;
}
