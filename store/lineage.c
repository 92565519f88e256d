/* lineage.c: where a run's weights come from: the datasets it trained on and the parent run it
 * was chained from (DESIGN 13), the runs that carry a dataset, and forgetting a dataset together
 * with those runs. What a chained run means for replay is train/'s business (run.c). */
#include "store_impl.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Inside the caller's transaction: the parent exists and has logged parent_steps steps. */
static pk_status check_parent(pk_store *s, int64_t parent, int64_t parent_steps)
{
    sqlite3_stmt *q = NULL;
    pk_status st = store_prepare(s, "SELECT steps_done FROM runs WHERE id = ?1", &q);
    if (st != PK_OK)
        return st;
    sqlite3_bind_int64(q, 1, parent);
    int rc = sqlite3_step(q);
    int64_t done = rc == SQLITE_ROW ? sqlite3_column_int64(q, 0) : -1;
    sqlite3_finalize(q);
    if (rc == SQLITE_DONE)
        return store_fail(s, PK_ERR_NOTFOUND, "no run with id %lld", (long long)parent);
    if (rc != SQLITE_ROW)
        return store_db_fail(s, rc, "read parent run");
    if (parent_steps < 0 || parent_steps > done)
        return store_fail(s, PK_ERR_ARG, "run %lld has %lld steps, not %lld", (long long)parent,
                          (long long)done, (long long)parent_steps);
    return PK_OK;
}

static pk_status insert_run(pk_store *s, const pk_store_run_new *r, const char *config_json,
                            const char *base_hash, int64_t steps_total, int64_t *run_id)
{
    sqlite3_stmt *q = NULL;
    pk_status st = store_prepare(s,
                                 "INSERT INTO runs(dataset_id, status, steps_total, created_at,"
                                 " base_hash, config_json) VALUES(?1, 'running', ?2, ?3, ?4, ?5)",
                                 &q);
    if (st != PK_OK)
        return st;
    if (r->n_datasets > 0 && r->datasets[0] > 0)
        sqlite3_bind_int64(q, 1, r->datasets[0]);
    else
        sqlite3_bind_null(q, 1);
    sqlite3_bind_int64(q, 2, steps_total);
    sqlite3_bind_double(q, 3, store_now());
    sqlite3_bind_text(q, 4, base_hash ? base_hash : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 5, config_json ? config_json : "{}", -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    sqlite3_finalize(q);
    if (rc != SQLITE_DONE)
        return store_db_fail(s, rc, "create run");
    *run_id = sqlite3_last_insert_rowid(s->db);
    if (r->parent_run <= 0)
        return PK_OK;
    st = store_prepare(
        s, "INSERT INTO run_lineage(run_id, parent_run, parent_steps) VALUES(?1, ?2, ?3)", &q);
    if (st != PK_OK)
        return st;
    sqlite3_bind_int64(q, 1, *run_id);
    sqlite3_bind_int64(q, 2, r->parent_run);
    sqlite3_bind_int64(q, 3, r->parent_steps);
    rc = sqlite3_step(q);
    sqlite3_finalize(q);
    return rc == SQLITE_DONE ? PK_OK : store_db_fail(s, rc, "record the run's parent");
}

static pk_status insert_datasets(pk_store *s, int64_t run_id, const pk_store_run_new *r)
{
    sqlite3_stmt *q = NULL;
    pk_status st = store_prepare(
        s, "INSERT OR IGNORE INTO run_datasets(run_id, dataset_id) VALUES(?1, ?2)", &q);
    for (size_t i = 0; st == PK_OK && i < r->n_datasets; i++) {
        if (r->datasets[i] <= 0)
            continue;
        sqlite3_bind_int64(q, 1, run_id);
        sqlite3_bind_int64(q, 2, r->datasets[i]);
        int rc = sqlite3_step(q);
        sqlite3_reset(q);
        if (rc != SQLITE_DONE)
            st = store_db_fail(s, rc, "record run datasets");
    }
    sqlite3_finalize(q);
    return st;
}

pk_status pk_store_run_create_ex(pk_store *s, const pk_store_run_new *r, const char *config_json,
                                 const char *base_hash, int64_t steps_total, int64_t *run_id,
                                 char *err, size_t errlen)
{
    store_call(s, err, errlen);
    int64_t id = 0;
    pk_status st = store_begin(s);
    if (st == PK_OK && r->parent_run > 0)
        st = check_parent(s, r->parent_run, r->parent_steps);
    if (st == PK_OK)
        st = insert_run(s, r, config_json, base_hash, steps_total, &id);
    if (st == PK_OK)
        st = insert_datasets(s, id, r);
    if (st == PK_OK)
        st = store_commit(s);
    store_rollback(s);
    if (st == PK_OK)
        *run_id = id;
    return st;
}

static void id_row(sqlite3_stmt *q, void *row)
{
    *(int64_t *)row = sqlite3_column_int64(q, 0);
}

/* The runs carrying dataset id: those that trained on it and their descendants. */
static pk_status derived_runs(pk_store *s, int64_t dataset_id, int64_t **ids, int64_t *n)
{
    sqlite3_stmt *q = NULL;
    void *v = NULL;
    size_t k = 0;
    pk_status st = store_prepare(s,
                                 "WITH RECURSIVE carry(id) AS ("
                                 " SELECT run_id FROM run_datasets WHERE dataset_id = ?1"
                                 " UNION SELECT id FROM runs WHERE dataset_id = ?1"
                                 " UNION SELECT l.run_id FROM run_lineage l"
                                 "  JOIN carry c ON l.parent_run = c.id)"
                                 " SELECT id FROM carry ORDER BY id",
                                 &q);
    if (st != PK_OK)
        return st;
    sqlite3_bind_int64(q, 1, dataset_id);
    st = store_collect(s, q, sizeof(int64_t), 8, id_row, "list derived runs", &v, &k);
    *ids = v;
    *n = (int64_t)k;
    return st;
}

pk_status pk_store_dataset_runs(pk_store *s, const char *name, int64_t **ids, int64_t *n, char *err,
                                size_t errlen)
{
    store_call(s, err, errlen);
    int64_t id = 0;
    *ids = NULL;
    *n = 0;
    pk_status st = pk_store_dataset_id(s, name, &id, err, errlen);
    return st == PK_OK ? derived_runs(s, id, ids, n) : st;
}

/* PK_ERR_BUSY naming the first of ids a live process trains. */
static pk_status runs_not_leased(pk_store *s, const int64_t *ids, int64_t n)
{
    sqlite3_stmt *q = NULL;
    pk_status st = store_prepare(s, "SELECT pid, proc_start FROM leases WHERE run_id = ?1", &q);
    for (int64_t i = 0; st == PK_OK && i < n; i++) {
        sqlite3_bind_int64(q, 1, ids[i]);
        if (sqlite3_step(q) == SQLITE_ROW &&
            store_holder_alive(s, ids[i], (long)sqlite3_column_int64(q, 0),
                               sqlite3_column_int64(q, 1)))
            st = store_fail(s, PK_ERR_BUSY,
                            "run %lld carries the dataset and is training (pid %lld): stop it "
                            "first",
                            (long long)ids[i], (long long)sqlite3_column_int64(q, 0));
        sqlite3_reset(q);
    }
    sqlite3_finalize(q);
    return st;
}

/* Deletes the runs ids (their steps, evals, checkpoints, leases and dataset rows cascade),
 * newest first: a chained run always has a larger id than its parent. */
static pk_status delete_runs(pk_store *s, const int64_t *ids, int64_t n)
{
    pk_status st = PK_OK;
    for (int64_t i = n - 1; st == PK_OK && i >= 0; i--)
        st = store_exec_int(s, "DELETE FROM runs WHERE id = ?1", ids[i], NULL);
    return st;
}

pk_status pk_store_dataset_forget_ex(pk_store *s, const char *name, int with_runs, int64_t **runs,
                                     int64_t *n_runs, char *err, size_t errlen)
{
    store_call(s, err, errlen);
    int64_t id = 0, *ids = NULL, n = 0;
    pk_status st = store_begin(s);
    if (st == PK_OK)
        st = pk_store_dataset_id(s, name, &id, err, errlen);
    if (st == PK_OK)
        st = store_dataset_not_leased(s, id, name);
    if (st == PK_OK)
        st = derived_runs(s, id, &ids, &n);
    if (st == PK_OK && with_runs)
        st = runs_not_leased(s, ids, n);
    if (st == PK_OK && with_runs)
        st = delete_runs(s, ids, n);
    if (st == PK_OK)
        st = store_exec_int(s, "DELETE FROM examples WHERE dataset_id = ?1", id, NULL);
    if (st == PK_OK)
        st = store_exec_int(s, "DELETE FROM datasets WHERE id = ?1", id, NULL);
    st = store_finish_forget(s, st);
    if (st == PK_OK && runs) {
        *runs = ids;
        *n_runs = n;
        ids = NULL;
    }
    free(ids);
    return st;
}

pk_status pk_store_examples_max_id(pk_store *s, const int64_t *datasets, size_t n, int64_t *max_id,
                                   char *err, size_t errlen)
{
    store_call(s, err, errlen);
    sqlite3_stmt *q = NULL;
    *max_id = 0;
    pk_status st =
        store_prepare(s, "SELECT coalesce(max(id), 0) FROM examples WHERE dataset_id = ?1", &q);
    for (size_t i = 0; st == PK_OK && i < n; i++) {
        sqlite3_bind_int64(q, 1, datasets[i]);
        int rc = sqlite3_step(q);
        if (rc == SQLITE_ROW && sqlite3_column_int64(q, 0) > *max_id)
            *max_id = sqlite3_column_int64(q, 0);
        else if (rc != SQLITE_ROW)
            st = store_db_fail(s, rc, "newest example");
        sqlite3_reset(q);
    }
    sqlite3_finalize(q);
    return st;
}
