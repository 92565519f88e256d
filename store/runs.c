/* runs.c: training runs, the MeZO step log, eval points, sealed checkpoints, the sync client's
 * key/value state and upload outbox. Each call is one statement or one transaction; what the
 * rows mean is the trainer's and the sync client's business (train/, net/). */
#include "store_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double unix_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static pk_status step_done(pk_store *s, sqlite3_stmt *q, const char *what)
{
    int rc = sqlite3_step(q);
    pk_status st = rc == SQLITE_DONE ? PK_OK : store_db_fail(s, rc, what);
    sqlite3_finalize(q);
    return st;
}

static char *dup_text(const unsigned char *t)
{
    const char *src = t ? (const char *)t : "";
    size_t n = strlen(src);
    char *d = malloc(n + 1);
    if (d)
        memcpy(d, src, n + 1);
    return d;
}

pk_status pk_store_run_create(pk_store *s, int64_t dataset_id, const char *config_json,
                              const char *base_hash, int64_t steps_total, int64_t *run_id,
                              char *err, size_t errlen)
{
    pk_store_run_new r = {&dataset_id, dataset_id > 0 ? 1 : 0, 0, 0};
    return pk_store_run_create_ex(s, &r, config_json, base_hash, steps_total, run_id, err, errlen);
}

void pk_run_info_clear(pk_run_info *r)
{
    if (!r)
        return;
    free(r->config_json);
    r->config_json = NULL;
}

pk_status pk_store_run_get(pk_store *s, int64_t run_id, pk_run_info *out, char *err, size_t errlen)
{
    store_call(s, err, errlen);
    sqlite3_stmt *q = NULL;
    memset(out, 0, sizeof *out);
    pk_status st = store_prepare(s,
                                 "SELECT id, coalesce(dataset_id, 0), status, steps_done,"
                                 " steps_total, created_at, base_hash, config_json,"
                                 " coalesce(l.parent_run, 0), coalesce(l.parent_steps, 0)"
                                 " FROM runs LEFT JOIN run_lineage l ON l.run_id = runs.id"
                                 " WHERE id = ?1",
                                 &q);
    if (st != PK_OK)
        return st;
    sqlite3_bind_int64(q, 1, run_id);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        out->id = sqlite3_column_int64(q, 0);
        out->dataset_id = sqlite3_column_int64(q, 1);
        snprintf(out->status, sizeof out->status, "%s", (const char *)sqlite3_column_text(q, 2));
        out->steps_done = sqlite3_column_int64(q, 3);
        out->steps_total = sqlite3_column_int64(q, 4);
        out->created_at = sqlite3_column_double(q, 5);
        snprintf(out->base_hash, sizeof out->base_hash, "%s",
                 (const char *)sqlite3_column_text(q, 6));
        out->config_json = dup_text(sqlite3_column_text(q, 7));
        out->parent_run = sqlite3_column_int64(q, 8);
        out->parent_steps = sqlite3_column_int64(q, 9);
        if (!out->config_json)
            st = store_fail(s, PK_ERR_NOMEM, "out of memory");
    } else if (rc == SQLITE_DONE) {
        st = store_fail(s, PK_ERR_NOTFOUND, "no run with id %lld", (long long)run_id);
    } else {
        st = store_db_fail(s, rc, "read run");
    }
    sqlite3_finalize(q);
    return st;
}

pk_status pk_store_run_set_status(pk_store *s, int64_t run_id, const char *status, char *err,
                                  size_t errlen)
{
    store_call(s, err, errlen);
    sqlite3_stmt *q = NULL;
    if (!status || strlen(status) >= sizeof(((pk_run_info *)0)->status))
        return store_fail(s, PK_ERR_ARG, "invalid run status");
    pk_status st = store_prepare(s, "UPDATE runs SET status = ?1 WHERE id = ?2", &q);
    if (st != PK_OK)
        return st;
    sqlite3_bind_text(q, 1, status, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, run_id);
    st = step_done(s, q, "set run status");
    if (st == PK_OK && sqlite3_changes(s->db) == 0)
        st = store_fail(s, PK_ERR_NOTFOUND, "no run with id %lld", (long long)run_id);
    return st;
}

static void id_row(sqlite3_stmt *q, void *row)
{
    *(int64_t *)row = sqlite3_column_int64(q, 0);
}

/* Collects column 0 of a query into a malloc'd array. */
static pk_status collect_ids(pk_store *s, const char *sql, int64_t **ids, int64_t *n)
{
    sqlite3_stmt *q = NULL;
    void *v = NULL;
    size_t k = 0;
    *ids = NULL;
    *n = 0;
    pk_status st = store_prepare(s, sql, &q);
    if (st == PK_OK)
        st = store_collect(s, q, sizeof(int64_t), 16, id_row, "list", &v, &k);
    if (st != PK_OK)
        return st;
    *ids = v;
    *n = (int64_t)k;
    return PK_OK;
}

pk_status pk_store_run_list(pk_store *s, int64_t **ids, int64_t *n, char *err, size_t errlen)
{
    store_call(s, err, errlen);
    return collect_ids(s, "SELECT id FROM runs ORDER BY id DESC", ids, n);
}

pk_status pk_store_steps_append(pk_store *s, int64_t run_id, const pk_step_row *rows, size_t n_rows,
                                char *err, size_t errlen)
{
    store_call(s, err, errlen);
    sqlite3_stmt *q = NULL, *u = NULL;
    if (n_rows == 0)
        return store_fail(s, PK_ERR_ARG, "steps_append needs at least one row");
    pk_status st = store_begin(s);
    if (st == PK_OK)
        st = store_prepare(s,
                           "INSERT INTO steps(run_id, step, q_index, seed, g, loss_plus,"
                           " loss_minus, lr, eps) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                           &q);
    for (size_t i = 0; st == PK_OK && i < n_rows; i++) {
        const pk_step_row *r = &rows[i];
        sqlite3_bind_int64(q, 1, run_id);
        sqlite3_bind_int64(q, 2, r->step);
        sqlite3_bind_int(q, 3, r->q_index);
        sqlite3_bind_int64(q, 4, (sqlite3_int64)r->seed); /* bit pattern kept: read back as u64 */
        sqlite3_bind_double(q, 5, (double)r->g);
        sqlite3_bind_double(q, 6, (double)r->loss_plus);
        sqlite3_bind_double(q, 7, (double)r->loss_minus);
        sqlite3_bind_double(q, 8, (double)r->lr);
        sqlite3_bind_double(q, 9, (double)r->eps);
        int rc = sqlite3_step(q);
        sqlite3_reset(q);
        if (rc != SQLITE_DONE)
            st = store_db_fail(s, rc, "append step");
    }
    sqlite3_finalize(q);
    if (st == PK_OK)
        st = store_prepare(s, "UPDATE runs SET steps_done = ?1 WHERE id = ?2", &u);
    if (st == PK_OK) {
        sqlite3_bind_int64(u, 1, rows[0].step + 1);
        sqlite3_bind_int64(u, 2, run_id);
        st = step_done(s, u, "update run progress");
    }
    if (st == PK_OK && sqlite3_changes(s->db) == 0)
        st = store_fail(s, PK_ERR_NOTFOUND, "no run with id %lld", (long long)run_id);
    if (st == PK_OK)
        st = store_commit(s);
    store_rollback(s);
    return st;
}

static void step_row(sqlite3_stmt *q, void *row)
{
    pk_step_row *r = row;
    r->step = sqlite3_column_int64(q, 0);
    r->q_index = sqlite3_column_int(q, 1);
    r->seed = (uint64_t)sqlite3_column_int64(q, 2);
    r->g = (float)sqlite3_column_double(q, 3);
    r->loss_plus = (float)sqlite3_column_double(q, 4);
    r->loss_minus = (float)sqlite3_column_double(q, 5);
    r->lr = (float)sqlite3_column_double(q, 6);
    r->eps = (float)sqlite3_column_double(q, 7);
}

pk_status pk_store_steps_read(pk_store *s, int64_t run_id, int64_t from_step, int64_t to_step,
                              pk_step_row **rows, size_t *n_rows, char *err, size_t errlen)
{
    store_call(s, err, errlen);
    sqlite3_stmt *q = NULL;
    void *v = NULL;
    *rows = NULL;
    *n_rows = 0;
    pk_status st = store_prepare(s,
                                 "SELECT step, q_index, seed, g, loss_plus, loss_minus, lr, eps"
                                 " FROM steps WHERE run_id = ?1 AND step >= ?2 AND step < ?3"
                                 " ORDER BY step, q_index",
                                 &q);
    if (st != PK_OK)
        return st;
    sqlite3_bind_int64(q, 1, run_id);
    sqlite3_bind_int64(q, 2, from_step);
    sqlite3_bind_int64(q, 3, to_step);
    st = store_collect(s, q, sizeof(pk_step_row), 64, step_row, "read steps", &v, n_rows);
    if (st == PK_OK)
        *rows = v;
    return st;
}

pk_status pk_store_eval_append(pk_store *s, int64_t run_id, int64_t step, double loss,
                               double accuracy, char *err, size_t errlen)
{
    store_call(s, err, errlen);
    sqlite3_stmt *q = NULL;
    pk_status st = store_prepare(s,
                                 "INSERT OR REPLACE INTO evals(run_id, step, loss, accuracy)"
                                 " VALUES(?1, ?2, ?3, ?4)",
                                 &q);
    if (st != PK_OK)
        return st;
    sqlite3_bind_int64(q, 1, run_id);
    sqlite3_bind_int64(q, 2, step);
    if (isnan(loss))
        sqlite3_bind_null(q, 3);
    else
        sqlite3_bind_double(q, 3, loss);
    if (isnan(accuracy))
        sqlite3_bind_null(q, 4);
    else
        sqlite3_bind_double(q, 4, accuracy);
    return step_done(s, q, "append eval");
}

pk_status pk_store_eval_read(pk_store *s, int64_t run_id, int64_t **steps, double **loss,
                             double **accuracy, size_t *n, char *err, size_t errlen)
{
    store_call(s, err, errlen);
    sqlite3_stmt *q = NULL;
    int64_t cnt = 0;
    size_t k = 0;
    *steps = NULL;
    *loss = *accuracy = NULL;
    *n = 0;
    pk_status st = store_exec(s, "BEGIN");
    if (st == PK_OK)
        st = store_prepare(s, "SELECT count(*) FROM evals WHERE run_id = ?1", &q);
    if (st != PK_OK)
        goto out;
    sqlite3_bind_int64(q, 1, run_id);
    cnt = sqlite3_step(q) == SQLITE_ROW ? sqlite3_column_int64(q, 0) : 0;
    sqlite3_finalize(q);
    q = NULL;
    int64_t *sv = malloc((size_t)(cnt ? cnt : 1) * sizeof *sv);
    double *lv = malloc((size_t)(cnt ? cnt : 1) * sizeof *lv);
    double *av = malloc((size_t)(cnt ? cnt : 1) * sizeof *av);
    *steps = sv;
    *loss = lv;
    *accuracy = av;
    if (!sv || !lv || !av) {
        st = store_fail(s, PK_ERR_NOMEM, "out of memory");
        goto out;
    }
    st = store_prepare(s, "SELECT step, loss, accuracy FROM evals WHERE run_id = ?1 ORDER BY step",
                       &q);
    if (st != PK_OK)
        goto out;
    sqlite3_bind_int64(q, 1, run_id);
    while ((int64_t)k < cnt && sqlite3_step(q) == SQLITE_ROW) {
        sv[k] = sqlite3_column_int64(q, 0);
        lv[k] =
            sqlite3_column_type(q, 1) == SQLITE_NULL ? (double)NAN : sqlite3_column_double(q, 1);
        av[k] =
            sqlite3_column_type(q, 2) == SQLITE_NULL ? (double)NAN : sqlite3_column_double(q, 2);
        k++;
    }
out:
    sqlite3_finalize(q);
    store_rollback(s);
    if (st != PK_OK) {
        free(*steps);
        free(*loss);
        free(*accuracy);
        *steps = NULL;
        *loss = *accuracy = NULL;
        return st;
    }
    *n = k;
    return PK_OK;
}

pk_status pk_store_checkpoint_put(pk_store *s, int64_t run_id, int64_t step, const void *blob,
                                  size_t len, char *err, size_t errlen)
{
    store_call(s, err, errlen);
    sqlite3_stmt *q = NULL;
    uint8_t ad[PK_RECORD_AD_BYTES];
    size_t reclen = 0;
    if (len > (size_t)900 * 1000 * 1000)
        return store_fail(s, PK_ERR_LIMIT, "checkpoint of %zu bytes exceeds the 900 MB limit", len);
    uint8_t *rec = malloc(len + PK_RECORD_OVERHEAD);
    if (!rec)
        return store_fail(s, PK_ERR_NOMEM, "out of memory for a %zu-byte checkpoint", len);
    pk_record_ad(ad, PK_AD_CHECKPOINT, run_id, step);
    /* sealed and written in one transaction, so a rekey in between (the epoch check of
     * store_begin) cannot leave a checkpoint under the old key */
    pk_status st = store_begin(s);
    if (st == PK_OK)
        st = pk_record_seal(s->k_checkpoints, ad, sizeof ad, blob, len, rec,
                            len + PK_RECORD_OVERHEAD, &reclen);
    if (st == PK_OK)
        st = store_prepare(s,
                           "INSERT OR REPLACE INTO checkpoints(run_id, step, record)"
                           " VALUES(?1, ?2, ?3)",
                           &q);
    if (st == PK_OK) {
        sqlite3_bind_int64(q, 1, run_id);
        sqlite3_bind_int64(q, 2, step);
        sqlite3_bind_blob64(q, 3, rec, reclen, SQLITE_STATIC);
        st = step_done(s, q, "write checkpoint");
    }
    if (st == PK_OK)
        st = store_commit(s);
    store_rollback(s);
    free(rec);
    return st;
}

pk_status pk_store_checkpoint_get(pk_store *s, int64_t run_id, int64_t max_step, int64_t *step,
                                  void **blob, size_t *len, char *err, size_t errlen)
{
    store_call(s, err, errlen);
    sqlite3_stmt *q = NULL;
    uint8_t ad[PK_RECORD_AD_BYTES];
    *blob = NULL;
    *len = 0;
    pk_status st = store_prepare(s,
                                 "SELECT step, record FROM checkpoints WHERE run_id = ?1 AND"
                                 " step <= ?2 ORDER BY step DESC LIMIT 1",
                                 &q);
    if (st != PK_OK)
        return st;
    sqlite3_bind_int64(q, 1, run_id);
    sqlite3_bind_int64(q, 2, max_step);
    int rc = sqlite3_step(q);
    if (rc != SQLITE_ROW) {
        st = rc == SQLITE_DONE
                 ? store_fail(s, PK_ERR_NOTFOUND, "no checkpoint for run %lld", (long long)run_id)
                 : store_db_fail(s, rc, "read checkpoint");
        goto out;
    }
    int64_t at = sqlite3_column_int64(q, 0);
    size_t reclen = (size_t)sqlite3_column_bytes(q, 1);
    size_t cap = reclen > PK_RECORD_OVERHEAD ? reclen - PK_RECORD_OVERHEAD : 1;
    uint8_t *pt = pk_secure_alloc(cap);
    if (!pt) {
        st = store_fail(s, PK_ERR_NOMEM, "out of secure memory for a checkpoint");
        goto out;
    }
    pk_record_ad(ad, PK_AD_CHECKPOINT, run_id, at);
    st = pk_record_open(s->k_checkpoints, ad, sizeof ad, sqlite3_column_blob(q, 1), reclen, pt, cap,
                        len);
    if (st != PK_OK) {
        pk_secure_free(pt);
        st = store_fail(s, PK_ERR_AUTH,
                        "%s: checkpoint (run %lld, step %lld) fails "
                        "authentication",
                        s->path, (long long)run_id, (long long)at);
        goto out;
    }
    *blob = pt;
    *step = at;
out:
    sqlite3_finalize(q);
    return st;
}

void pk_store_blob_free(void *blob, size_t len)
{
    (void)len; /* sodium_free wipes the whole allocation */
    pk_secure_free(blob);
}

pk_status pk_store_state_set(pk_store *s, const char *key, const char *value, char *err,
                             size_t errlen)
{
    store_call(s, err, errlen);
    sqlite3_stmt *q = NULL;
    pk_status st =
        store_prepare(s, "INSERT OR REPLACE INTO sync_state(key, value) VALUES(?1, ?2)", &q);
    if (st != PK_OK)
        return st;
    sqlite3_bind_text(q, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, value, -1, SQLITE_STATIC);
    return step_done(s, q, "write state");
}

pk_status pk_store_state_get(pk_store *s, const char *key, char **value, char *err, size_t errlen)
{
    store_call(s, err, errlen);
    sqlite3_stmt *q = NULL;
    *value = NULL;
    pk_status st = store_prepare(s, "SELECT value FROM sync_state WHERE key = ?1", &q);
    if (st != PK_OK)
        return st;
    sqlite3_bind_text(q, 1, key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        *value = dup_text(sqlite3_column_text(q, 0));
        if (!*value)
            st = store_fail(s, PK_ERR_NOMEM, "out of memory");
    } else if (rc == SQLITE_DONE) {
        st = PK_ERR_NOTFOUND;
    } else {
        st = store_db_fail(s, rc, "read state");
    }
    sqlite3_finalize(q);
    return st;
}

pk_status pk_store_outbox_put(pk_store *s, const char *idem_key, const char *body, char *err,
                              size_t errlen)
{
    store_call(s, err, errlen);
    sqlite3_stmt *q = NULL;
    pk_status st = store_prepare(s,
                                 "INSERT OR IGNORE INTO outbox(idem_key, body, created_at)"
                                 " VALUES(?1, ?2, ?3)",
                                 &q);
    if (st != PK_OK)
        return st;
    sqlite3_bind_text(q, 1, idem_key, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, body, -1, SQLITE_STATIC);
    sqlite3_bind_double(q, 3, unix_now());
    return step_done(s, q, "write outbox");
}

pk_status pk_store_outbox_peek(pk_store *s, char **idem_key, char **body, char *err, size_t errlen)
{
    store_call(s, err, errlen);
    sqlite3_stmt *q = NULL;
    *idem_key = *body = NULL;
    pk_status st = store_prepare(s, "SELECT idem_key, body FROM outbox ORDER BY id LIMIT 1", &q);
    if (st != PK_OK)
        return st;
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        *idem_key = dup_text(sqlite3_column_text(q, 0));
        *body = dup_text(sqlite3_column_text(q, 1));
        if (!*idem_key || !*body) {
            free(*idem_key);
            free(*body);
            *idem_key = *body = NULL;
            st = store_fail(s, PK_ERR_NOMEM, "out of memory");
        }
    } else if (rc == SQLITE_DONE) {
        st = PK_ERR_NOTFOUND;
    } else {
        st = store_db_fail(s, rc, "read outbox");
    }
    sqlite3_finalize(q);
    return st;
}

pk_status pk_store_outbox_done(pk_store *s, const char *idem_key, char *err, size_t errlen)
{
    store_call(s, err, errlen);
    sqlite3_stmt *q = NULL;
    pk_status st = store_prepare(s, "DELETE FROM outbox WHERE idem_key = ?1", &q);
    if (st != PK_OK)
        return st;
    sqlite3_bind_text(q, 1, idem_key, -1, SQLITE_STATIC);
    return step_done(s, q, "delete outbox entry");
}
