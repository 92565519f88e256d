/* runs.c: training runs, the MeZO step log, eval points, sealed checkpoints, the sync client's
 * key/value state and upload outbox. Each call is one statement or one transaction; what the
 * rows mean is the trainer's and the sync client's business (train/, net/). */
#include "store_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    pk_status st = store_row(s, &q, "read run",
                             "SELECT id, coalesce(dataset_id, 0), status, steps_done,"
                             " steps_total, created_at, base_hash, config_json,"
                             " coalesce(l.parent_run, 0), coalesce(l.parent_steps, 0)"
                             " FROM runs LEFT JOIN run_lineage l ON l.run_id = runs.id"
                             " WHERE id = ?1",
                             "i", run_id);
    if (st == PK_ERR_NOTFOUND)
        return store_fail(s, st, "no run with id %lld", (long long)run_id);
    if (st == PK_OK) {
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
    }
    sqlite3_finalize(q);
    return st;
}

pk_status pk_store_run_set_status(pk_store *s, int64_t run_id, const char *status, char *err,
                                  size_t errlen)
{
    store_call(s, err, errlen);
    if (!status || strlen(status) >= sizeof(((pk_run_info *)0)->status))
        return store_fail(s, PK_ERR_ARG, "invalid run status");
    pk_status st = store_run(s, "set run status", "UPDATE runs SET status = ?1 WHERE id = ?2", "ti",
                             status, run_id);
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
    pk_status st = store_query(s, &q, sql, "");
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
    sqlite3_stmt *q = NULL;
    if (n_rows == 0)
        return store_fail(s, PK_ERR_ARG, "steps_append needs at least one row");
    /* The step log's commits do not wait for the disk (DESIGN 6): synchronous=NORMAL for this
     * transaction, FULL again after it. */
    pk_status st = store_exec(s, "PRAGMA synchronous = NORMAL");
    if (st == PK_OK)
        st = store_begin(s);
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
        st = store_run(s, "update run progress", "UPDATE runs SET steps_done = ?1 WHERE id = ?2",
                       "ii", (int64_t)(rows[0].step + 1), run_id);
    if (st == PK_OK && sqlite3_changes(s->db) == 0)
        st = store_fail(s, PK_ERR_NOTFOUND, "no run with id %lld", (long long)run_id);
    if (st == PK_OK)
        st = store_commit(s);
    store_rollback(s);
    pk_status st2 = store_exec(s, "PRAGMA synchronous = FULL");
    return st != PK_OK ? st : st2;
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
    pk_status st = store_query(s, &q,
                               "SELECT step, q_index, seed, g, loss_plus, loss_minus, lr, eps"
                               " FROM steps WHERE run_id = ?1 AND step >= ?2 AND step < ?3"
                               " ORDER BY step, q_index",
                               "iii", run_id, from_step, to_step);
    if (st != PK_OK)
        return st;
    st = store_collect(s, q, sizeof(pk_step_row), 64, step_row, "read steps", &v, n_rows);
    if (st == PK_OK)
        *rows = v;
    return st;
}

pk_status pk_store_eval_append(pk_store *s, int64_t run_id, int64_t step, double loss,
                               double accuracy, char *err, size_t errlen)
{
    store_call(s, err, errlen);
    return store_run(s, "append eval",
                     "INSERT OR REPLACE INTO evals(run_id, step, loss, accuracy)"
                     " VALUES(?1, ?2, ?3, ?4)",
                     "iiDD", run_id, step, loss, accuracy);
}

pk_status pk_store_eval_set_seconds(pk_store *s, int64_t run_id, int64_t step, double elapsed_s,
                                    char *err, size_t errlen)
{
    store_call(s, err, errlen);
    pk_status st = store_run(s, "set eval seconds",
                             "INSERT OR REPLACE INTO eval_seconds(run_id, step, elapsed_s)"
                             " SELECT run_id, step, ?1 FROM evals WHERE run_id = ?2 AND step = ?3",
                             "Dii", elapsed_s, run_id, step);
    if (st == PK_OK && sqlite3_changes(s->db) == 0)
        st = store_fail(s, PK_ERR_NOTFOUND, "run %lld has no eval point at step %lld",
                        (long long)run_id, (long long)step);
    return st;
}

typedef struct eval_seconds_row {
    int64_t step;
    double seconds;
} eval_seconds_row;

static void eval_seconds_of(sqlite3_stmt *q, void *row)
{
    eval_seconds_row *r = row;
    r->step = sqlite3_column_int64(q, 0);
    r->seconds = sqlite3_column_double(q, 1);
}

pk_status pk_store_eval_seconds(pk_store *s, int64_t run_id, int64_t **steps, double **seconds,
                                size_t *n, char *err, size_t errlen)
{
    store_call(s, err, errlen);
    sqlite3_stmt *q = NULL;
    void *v = NULL;
    size_t k = 0;
    *steps = NULL;
    *seconds = NULL;
    *n = 0;
    pk_status st = store_query(s, &q,
                               "SELECT step, elapsed_s FROM eval_seconds WHERE run_id = ?1"
                               " ORDER BY step",
                               "i", run_id);
    if (st == PK_OK)
        st = store_collect(s, q, sizeof(eval_seconds_row), 16, eval_seconds_of, "read eval seconds",
                           &v, &k);
    if (st != PK_OK)
        return st;
    const eval_seconds_row *r = v;
    int64_t *sv = malloc((k ? k : 1) * sizeof *sv);
    double *dv = malloc((k ? k : 1) * sizeof *dv);
    if (!sv || !dv) {
        free(v);
        free(sv);
        free(dv);
        return store_fail(s, PK_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < k; i++) {
        sv[i] = r[i].step;
        dv[i] = r[i].seconds;
    }
    free(v);
    *steps = sv;
    *seconds = dv;
    *n = k;
    return PK_OK;
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
        st = store_row(s, &q, "count evals", "SELECT count(*) FROM evals WHERE run_id = ?1", "i",
                       run_id);
    if (st != PK_OK)
        goto out;
    cnt = sqlite3_column_int64(q, 0);
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
    st =
        store_query(s, &q, "SELECT step, loss, accuracy FROM evals WHERE run_id = ?1 ORDER BY step",
                    "i", run_id);
    if (st != PK_OK)
        goto out;
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
        st =
            store_run(s, "write checkpoint",
                      "INSERT OR REPLACE INTO checkpoints(run_id, step, record) VALUES(?1, ?2, ?3)",
                      "iib", run_id, step, (const void *)rec, reclen);
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
    uint8_t *pt = NULL;
    *blob = NULL;
    *len = 0;
    pk_status st = store_row(s, &q, "read checkpoint",
                             "SELECT step, record FROM checkpoints WHERE run_id = ?1 AND"
                             " step <= ?2 ORDER BY step DESC LIMIT 1",
                             "ii", run_id, max_step);
    if (st == PK_ERR_NOTFOUND)
        return store_fail(s, st, "no checkpoint for run %lld", (long long)run_id);
    if (st != PK_OK)
        return st;
    int64_t at = sqlite3_column_int64(q, 0);
    st = store_open_record(s->k_checkpoints, PK_AD_CHECKPOINT, run_id, at,
                           sqlite3_column_blob(q, 1), (size_t)sqlite3_column_bytes(q, 1), &pt, len);
    sqlite3_finalize(q);
    if (st == PK_ERR_NOMEM)
        return store_fail(s, st, "out of secure memory for a checkpoint");
    if (st != PK_OK)
        return store_fail(s, PK_ERR_AUTH,
                          "%s: checkpoint (run %lld, step %lld) fails authentication", s->path,
                          (long long)run_id, (long long)at);
    *blob = pt;
    *step = at;
    return PK_OK;
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
    return store_run(s, "write state",
                     "INSERT OR REPLACE INTO sync_state(key, value) VALUES(?1, ?2)", "tt", key,
                     value);
}

pk_status pk_store_state_get(pk_store *s, const char *key, char **value, char *err, size_t errlen)
{
    store_call(s, err, errlen);
    sqlite3_stmt *q = NULL;
    *value = NULL;
    pk_status st =
        store_row(s, &q, "read state", "SELECT value FROM sync_state WHERE key = ?1", "t", key);
    if (st != PK_OK)
        return st;
    *value = dup_text(sqlite3_column_text(q, 0));
    if (!*value)
        st = store_fail(s, PK_ERR_NOMEM, "out of memory");
    sqlite3_finalize(q);
    return st;
}

pk_status pk_store_outbox_put(pk_store *s, const char *idem_key, const char *body, char *err,
                              size_t errlen)
{
    store_call(s, err, errlen);
    return store_run(s, "write outbox",
                     "INSERT OR IGNORE INTO outbox(idem_key, body, created_at) VALUES(?1, ?2, ?3)",
                     "ttd", idem_key, body, store_now());
}

pk_status pk_store_outbox_peek(pk_store *s, char **idem_key, char **body, char *err, size_t errlen)
{
    store_call(s, err, errlen);
    sqlite3_stmt *q = NULL;
    *idem_key = *body = NULL;
    pk_status st = store_row(s, &q, "read outbox",
                             "SELECT idem_key, body FROM outbox ORDER BY id LIMIT 1", "");
    if (st != PK_OK)
        return st;
    *idem_key = dup_text(sqlite3_column_text(q, 0));
    *body = dup_text(sqlite3_column_text(q, 1));
    if (!*idem_key || !*body) {
        free(*idem_key);
        free(*body);
        *idem_key = *body = NULL;
        st = store_fail(s, PK_ERR_NOMEM, "out of memory");
    }
    sqlite3_finalize(q);
    return st;
}

pk_status pk_store_outbox_done(pk_store *s, const char *idem_key, char *err, size_t errlen)
{
    store_call(s, err, errlen);
    return store_run(s, "delete outbox entry", "DELETE FROM outbox WHERE idem_key = ?1", "t",
                     idem_key);
}
