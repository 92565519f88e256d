/* examples.c: datasets and sealed examples: the plaintext encoding of an example, sealing with
 * the row identity (dataset id, example id) as associated data, streaming import in one
 * transaction, forget with wiped pages, and re-sealing everything for rekey. The parsers of the
 * import formats are in import.c. */
#include "store_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Plaintext encoding v1: [0] field mask (bit i: field i present), then per present field in
 * order text, text2, prompt, response, label: u32 little-endian length, bytes (no NUL). */
#define N_FIELDS 5

static void fields_of(const pk_example *e, const char *f[N_FIELDS])
{
    f[0] = e->text;
    f[1] = e->text2;
    f[2] = e->prompt;
    f[3] = e->response;
    f[4] = e->label;
}

static size_t encoded_size(const pk_example *e)
{
    const char *f[N_FIELDS];
    size_t n = 1;
    fields_of(e, f);
    for (int i = 0; i < N_FIELDS; i++)
        if (f[i])
            n += 4 + strlen(f[i]);
    return n;
}

static size_t encode_into(const pk_example *e, uint8_t *buf)
{
    const char *f[N_FIELDS];
    size_t pos = 1;
    fields_of(e, f);
    buf[0] = 0;
    for (int i = 0; i < N_FIELDS; i++) {
        if (!f[i])
            continue;
        size_t n = strlen(f[i]);
        buf[0] |= (uint8_t)(1u << i);
        for (int b = 0; b < 4; b++)
            buf[pos + (size_t)b] = (uint8_t)((uint32_t)n >> (8 * b));
        memcpy(buf + pos + 4, f[i], n);
        pos += 4 + n;
    }
    return pos;
}

pk_status example_encode(const pk_example *e, uint8_t **buf, size_t *len)
{
    size_t n = encoded_size(e);
    *buf = pk_secure_alloc(n);
    if (!*buf)
        return PK_ERR_NOMEM;
    *len = encode_into(e, *buf);
    return PK_OK;
}

pk_status example_decode(const uint8_t *buf, size_t len, int64_t id, pk_example **out)
{
    size_t off[N_FIELDS] = {0}, flen[N_FIELDS] = {0}, pos = 1, total = sizeof(pk_example);
    *out = NULL;
    if (len < 1 || (buf[0] & ~0x1fu) != 0)
        return PK_ERR_FORMAT;
    for (int i = 0; i < N_FIELDS; i++) {
        if (!(buf[0] & (1u << i)))
            continue;
        if (len - pos < 4)
            return PK_ERR_FORMAT;
        uint32_t n = 0;
        for (int b = 0; b < 4; b++)
            n |= (uint32_t)buf[pos + (size_t)b] << (8 * b);
        pos += 4;
        if (n > len - pos || memchr(buf + pos, 0, n))
            return PK_ERR_FORMAT;
        off[i] = pos;
        flen[i] = n;
        pos += n;
        total += n + 1;
    }
    if (pos != len)
        return PK_ERR_FORMAT;
    pk_example *e = pk_secure_alloc(total);
    if (!e)
        return PK_ERR_NOMEM;
    memset(e, 0, sizeof *e);
    e->id = id;
    char *p = (char *)(e + 1);
    const char **dst[N_FIELDS] = {&e->text, &e->text2, &e->prompt, &e->response, &e->label};
    for (int i = 0; i < N_FIELDS; i++) {
        if (!(buf[0] & (1u << i)))
            continue;
        memcpy(p, buf + off[i], flen[i]);
        p[flen[i]] = '\0';
        *dst[i] = p;
        p += flen[i] + 1;
    }
    *out = e;
    return PK_OK;
}

pk_status pk_example_decode(const void *buf, size_t len, int64_t id, pk_example **out)
{
    return example_decode(buf, len, id, out);
}

void pk_example_free(pk_example *e)
{
    pk_secure_free(e); /* sodium_free wipes the whole block */
}

/* Runs a one-row, one-int64-result query "... WHERE x = ?1"; PK_ERR_NOTFOUND without a row. */
static pk_status query_int(pk_store *s, const char *sql, int64_t arg, const char *text_arg,
                           int64_t *out)
{
    sqlite3_stmt *q = NULL;
    pk_status st = text_arg ? store_row(s, &q, "query", sql, "t", text_arg)
                            : store_row(s, &q, "query", sql, "i", arg);
    if (st == PK_OK)
        *out = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    return st;
}

pk_status pk_store_dataset_id(pk_store *s, const char *name, int64_t *id, char *err, size_t errlen)
{
    store_call(s, err, errlen);
    pk_status st = query_int(s, "SELECT id FROM datasets WHERE name = ?1", 0, name, id);
    if (st == PK_ERR_NOTFOUND)
        store_fail(s, st, "no dataset named '%s' (see pocketllm data list)", name);
    return st;
}

pk_status pk_store_example_count(pk_store *s, int64_t dataset_id, int64_t *n, char *err,
                                 size_t errlen)
{
    store_call(s, err, errlen);
    return query_int(s, "SELECT count(*) FROM examples WHERE dataset_id = ?1", dataset_id, NULL, n);
}

pk_status pk_store_example_dataset(pk_store *s, int64_t example_id, int64_t *dataset_id, char *err,
                                   size_t errlen)
{
    store_call(s, err, errlen);
    pk_status st =
        query_int(s, "SELECT dataset_id FROM examples WHERE id = ?1", example_id, NULL, dataset_id);
    if (st == PK_ERR_NOTFOUND)
        store_fail(s, st, "no example with id %lld", (long long)example_id);
    return st;
}

pk_status pk_store_example_ids(pk_store *s, int64_t dataset_id, int64_t **ids, int64_t *n,
                               char *err, size_t errlen)
{
    store_call(s, err, errlen);
    sqlite3_stmt *q = NULL;
    int64_t count = 0, *v = NULL, k = 0;
    *ids = NULL;
    *n = 0;
    pk_status st = store_exec(s, "BEGIN"); /* one snapshot for the count and the ids */
    if (st == PK_OK)
        st = pk_store_example_count(s, dataset_id, &count, s->err, s->errlen);
    if (st == PK_OK)
        st = store_query(s, &q, "SELECT id FROM examples WHERE dataset_id = ?1 ORDER BY id", "i",
                         dataset_id);
    if (st != PK_OK)
        goto out;
    v = malloc((size_t)(count ? count : 1) * sizeof *v);
    if (!v) {
        st = store_fail(s, PK_ERR_NOMEM, "out of memory for %lld ids", (long long)count);
        goto out;
    }
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW && k < count)
        v[k++] = sqlite3_column_int64(q, 0);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        st = store_db_fail(s, rc, "list example ids");
out:
    sqlite3_finalize(q);
    store_rollback(s);
    if (st != PK_OK) {
        free(v);
        return st;
    }
    *ids = v;
    *n = k;
    return PK_OK;
}

pk_status pk_store_example_get(pk_store *s, int64_t dataset_id, int64_t example_id,
                               pk_example **out, char *err, size_t errlen)
{
    store_call(s, err, errlen);
    sqlite3_stmt *q = NULL;
    uint8_t *pt = NULL;
    size_t ptlen = 0;
    *out = NULL;
    pk_status st = store_row(s, &q, "read example",
                             "SELECT record FROM examples WHERE id = ?1 AND dataset_id = ?2", "ii",
                             example_id, dataset_id);
    if (st == PK_ERR_NOTFOUND)
        store_fail(s, st, "no example %lld in dataset %lld", (long long)example_id,
                   (long long)dataset_id);
    if (st != PK_OK)
        goto out;
    st = store_open_record(s->k_records, PK_AD_EXAMPLE, dataset_id, example_id,
                           sqlite3_column_blob(q, 0), (size_t)sqlite3_column_bytes(q, 0), &pt,
                           &ptlen);
    if (st == PK_OK)
        st = example_decode(pt, ptlen, example_id, out);
    if (st == PK_ERR_FORMAT)
        st = PK_ERR_AUTH; /* authentic but undecodable: treat as tampering, never as data */
    if (st == PK_ERR_AUTH)
        store_fail(s, st,
                   "%s: example %lld of dataset %lld fails authentication (tampered, "
                   "moved or swapped)",
                   s->path, (long long)example_id, (long long)dataset_id);
out:
    sqlite3_finalize(q);
    pk_secure_free(pt);
    return st;
}

static int valid_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n >= sizeof(((pk_dataset_info *)0)->name))
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
            return 0;
    return 1;
}

/* The dataset id of name, creating it (inside the caller's transaction) if absent. */
static pk_status dataset_get_or_create(pk_store *s, const char *name, int64_t *id)
{
    if (!valid_name(name))
        return store_fail(s, PK_ERR_ARG,
                          "invalid dataset name '%s' (1-127 bytes, no control "
                          "characters)",
                          name);
    pk_status st = query_int(s, "SELECT id FROM datasets WHERE name = ?1", 0, name, id);
    if (st != PK_ERR_NOTFOUND)
        return st;
    st = store_run(s, "create dataset", "INSERT INTO datasets(name, created_at) VALUES(?1, ?2)",
                   "td", name, store_now());
    if (st == PK_OK)
        *id = sqlite3_last_insert_rowid(s->db);
    return st;
}

/* The next example id: above every id ever used (AUTOINCREMENT), so a forgotten id is never
 * reused and an old sealed record can never be replayed into a new row. */
static pk_status next_example_id(pk_store *s, int64_t *next)
{
    int64_t seq = 0, mx = 0;
    pk_status st = query_int(s, "SELECT seq FROM sqlite_sequence WHERE name = 'examples' OR ?1", 0,
                             NULL, &seq);
    if (st == PK_ERR_NOTFOUND) {
        seq = 0;
        st = PK_OK;
    }
    if (st == PK_OK)
        st = query_int(s, "SELECT coalesce(max(id), 0) FROM examples WHERE ?1 = 0", 0, NULL, &mx);
    *next = (seq > mx ? seq : mx) + 1;
    return st;
}

typedef struct import_ctx {
    pk_store *s;
    int64_t dataset_id;
    int64_t next_id;
    int64_t n;         /* examples added */
    sqlite3_stmt *ins; /* INSERT INTO examples */
    uint8_t *pt;       /* secure scratch: encoded plaintext */
    size_t pt_cap;
    uint8_t *rec; /* heap scratch: sealed record (ciphertext only) */
    size_t rec_cap;
    void (*progress)(void *user, int64_t n); /* optional (pk_import_opts) */
    void *progress_user;
} import_ctx;

static pk_status grow(import_ctx *c, size_t need)
{
    if (need <= c->pt_cap)
        return PK_OK;
    size_t cap = need < 4096 ? 4096 : need * 2;
    uint8_t *pt = pk_secure_alloc(cap);
    uint8_t *rec = malloc(cap + PK_RECORD_OVERHEAD);
    if (!pt || !rec) {
        pk_secure_free(pt);
        free(rec);
        return PK_ERR_NOMEM;
    }
    pk_secure_free(c->pt);
    free(c->rec);
    c->pt = pt;
    c->rec = rec;
    c->pt_cap = cap;
    c->rec_cap = cap + PK_RECORD_OVERHEAD;
    return PK_OK;
}

static pk_status add_one(void *user, const pk_example *ex, int64_t line)
{
    import_ctx *c = user;
    uint8_t ad[PK_RECORD_AD_BYTES];
    size_t reclen = 0;
    (void)line;
    pk_status st = grow(c, encoded_size(ex));
    if (st != PK_OK)
        return store_fail(c->s, st, "out of memory");
    size_t ptlen = encode_into(ex, c->pt);
    int64_t id = c->next_id;
    pk_record_ad(ad, PK_AD_EXAMPLE, c->dataset_id, id);
    st = pk_record_seal(c->s->k_records, ad, sizeof ad, c->pt, ptlen, c->rec, c->rec_cap, &reclen);
    pk_secure_wipe(c->pt, ptlen);
    if (st != PK_OK)
        return st;
    sqlite3_bind_int64(c->ins, 1, id);
    sqlite3_bind_int64(c->ins, 2, c->dataset_id);
    sqlite3_bind_blob(c->ins, 3, c->rec, (int)reclen, SQLITE_STATIC);
    int rc = sqlite3_step(c->ins);
    sqlite3_reset(c->ins);
    if (rc != SQLITE_DONE)
        return store_db_fail(c->s, rc, "insert example");
    c->next_id++;
    c->n++;
    if (c->progress && c->n % 64 == 0)
        c->progress(c->progress_user, c->n);
    return PK_OK;
}

static pk_status ctx_start(pk_store *s, const char *name, import_ctx *c)
{
    memset(c, 0, sizeof *c);
    c->s = s;
    pk_pause_point("store.import.begin");
    pk_status st = store_begin(s);
    if (st == PK_OK)
        st = dataset_get_or_create(s, name, &c->dataset_id);
    if (st == PK_OK)
        st = next_example_id(s, &c->next_id);
    if (st == PK_OK)
        st = store_prepare(s, "INSERT INTO examples(id, dataset_id, record) VALUES(?1, ?2, ?3)",
                           &c->ins);
    return st;
}

static pk_status ctx_finish(import_ctx *c, pk_status st)
{
    sqlite3_finalize(c->ins);
    if (st == PK_OK)
        st = store_commit(c->s);
    store_rollback(c->s);
    pk_secure_free(c->pt);
    free(c->rec);
    return st;
}

/* One import into dataset `name` in one transaction: the file (path) or the buffer (data, len)
 * parsed into it, progress reported at the end. */
static pk_status import_into(pk_store *s, const char *path, const void *data, size_t len,
                             const char *name, pk_import_opts opts, int64_t *n_imported)
{
    import_ctx c;
    char perr[512] = "";
    if (n_imported)
        *n_imported = 0;
    pk_status st = ctx_start(s, name, &c);
    c.progress = opts.progress;
    c.progress_user = opts.progress_user;
    if (st == PK_OK) {
        st = path ? import_file(path, opts, add_one, &c, perr, sizeof perr)
                  : pk_import_parse_buffer(data, len, opts, add_one, &c, perr, sizeof perr);
        if (st == PK_OK && c.progress)
            c.progress(c.progress_user, c.n);
        if (st != PK_OK && perr[0])        /* parser errors: "FILE:LINE: why" or "line N: why" */
            store_fail(s, st, "%s", perr); /* db errors are kept */
    }
    st = ctx_finish(&c, st);
    if (st == PK_OK && n_imported)
        *n_imported = c.n;
    return st;
}

pk_status pk_store_import(pk_store *s, const char *path, const char *name, pk_import_opts opts,
                          int64_t *n_imported, char *err, size_t errlen)
{
    store_call(s, err, errlen);
    if (path == NULL)
        return store_fail(s, PK_ERR_ARG, "import: no file given");
    return import_into(s, path, NULL, 0, name, opts, n_imported);
}

pk_status pk_store_import_buffer(pk_store *s, const void *data, size_t len, const char *name,
                                 pk_import_opts opts, int64_t *n_imported, char *err, size_t errlen)
{
    store_call(s, err, errlen);
    return import_into(s, NULL, data, len, name, opts, n_imported);
}

pk_status pk_store_example_add(pk_store *s, const char *name, const pk_example *ex, int64_t *id,
                               char *err, size_t errlen)
{
    store_call(s, err, errlen);
    import_ctx c;
    pk_status st = ctx_start(s, name, &c);
    int64_t new_id = c.next_id;
    if (st == PK_OK)
        st = add_one(&c, ex, 0);
    st = ctx_finish(&c, st);
    if (st == PK_OK && id)
        *id = new_id;
    return st;
}

static void dataset_row(sqlite3_stmt *q, void *row)
{
    pk_dataset_info *d = row;
    memset(d, 0, sizeof *d);
    d->id = sqlite3_column_int64(q, 0);
    const char *nm = (const char *)sqlite3_column_text(q, 1);
    snprintf(d->name, sizeof d->name, "%s", nm ? nm : "");
    d->created_at = sqlite3_column_double(q, 2);
    d->n_examples = sqlite3_column_int64(q, 3);
    d->sealed_bytes = sqlite3_column_int64(q, 4);
}

pk_status pk_store_dataset_list(pk_store *s, pk_dataset_info **out, size_t *n, char *err,
                                size_t errlen)
{
    store_call(s, err, errlen);
    sqlite3_stmt *q = NULL;
    void *v = NULL;
    *out = NULL;
    *n = 0;
    pk_status st = store_prepare(
        s,
        "SELECT d.id, d.name, d.created_at, count(e.id), coalesce(sum(length(e.record)), 0)"
        " FROM datasets d LEFT JOIN examples e ON e.dataset_id = d.id"
        " GROUP BY d.id ORDER BY d.name",
        &q);
    if (st != PK_OK)
        return st;
    st = store_collect(s, q, sizeof(pk_dataset_info), 8, dataset_row, "list datasets", &v, n);
    if (st == PK_OK)
        *out = v;
    return st;
}

/* Runs a one-int64-parameter statement; *changes gets the number of changed rows. */
pk_status store_exec_int(pk_store *s, const char *sql, int64_t arg, int *changes)
{
    pk_status st = store_run(s, "delete", sql, "i", arg);
    if (st == PK_OK && changes)
        *changes = sqlite3_changes(s->db);
    return st;
}

/* After a delete: move the (zeroed, secure_delete) pages into the main file and truncate the
 * WAL, so no old page image of a forgotten row survives in the -wal file. */
static void wipe_wal(pk_store *s)
{
    (void)store_exec(s, "PRAGMA wal_checkpoint(TRUNCATE)");
}

pk_status store_finish_forget(pk_store *s, pk_status st)
{
    if (st == PK_OK)
        st = store_commit(s);
    store_rollback(s);
    if (st == PK_OK)
        wipe_wal(s);
    return st;
}

pk_status pk_store_dataset_forget(pk_store *s, const char *name, char *err, size_t errlen)
{
    /* the runs it trained stay (lineage.c reports them and can delete them too) */
    return pk_store_dataset_forget_ex(s, name, 0, NULL, NULL, err, errlen);
}

pk_status pk_store_example_forget(pk_store *s, int64_t example_id, char *err, size_t errlen)
{
    store_call(s, err, errlen);
    int changes = 0;
    pk_status st = store_begin(s);
    if (st == PK_OK)
        st = store_exec_int(s, "DELETE FROM examples WHERE id = ?1", example_id, &changes);
    if (st == PK_OK && changes == 0)
        st = store_fail(s, PK_ERR_NOTFOUND, "no example with id %lld", (long long)example_id);
    return store_finish_forget(s, st);
}

/* Reseals every row of one table, one row at a time in rowid order (never updating rows under
 * a running scan). sel: "SELECT rowid, a, b, record FROM t WHERE rowid > ?1 ORDER BY rowid
 * LIMIT 1" where (a, b) is the row identity of the AD; upd: "UPDATE t SET record = ?1 WHERE
 * rowid = ?2". */
static pk_status reseal_table(pk_store *s, const char *sel, const char *upd, uint8_t kind,
                              const pk_key *old_k, const pk_key *new_k)
{
    sqlite3_stmt *qs = NULL, *qu = NULL;
    int64_t rowid = INT64_MIN;
    uint8_t *pt = NULL, *rec = NULL, ad[PK_RECORD_AD_BYTES];
    size_t cap = 0;
    pk_status st = store_prepare(s, sel, &qs);
    if (st == PK_OK)
        st = store_prepare(s, upd, &qu);
    while (st == PK_OK) {
        sqlite3_bind_int64(qs, 1, rowid);
        int rc = sqlite3_step(qs);
        if (rc == SQLITE_DONE)
            break;
        if (rc != SQLITE_ROW) {
            st = store_db_fail(s, rc, "rekey read");
            break;
        }
        rowid = sqlite3_column_int64(qs, 0);
        int64_t a = sqlite3_column_int64(qs, 1), b = sqlite3_column_int64(qs, 2);
        size_t ptlen = 0, reclen = 0, len = (size_t)sqlite3_column_bytes(qs, 3);
        if (len > cap) { /* one secure buffer for all rows (sodium_malloc is slow) */
            pk_secure_free(pt);
            cap = len * 2 + 256;
            pt = pk_secure_alloc(cap);
            if (!pt) {
                st = store_fail(s, PK_ERR_NOMEM, "out of secure memory");
                break;
            }
        }
        pk_record_ad(ad, kind, a, b);
        st = pk_record_open(old_k, ad, sizeof ad, sqlite3_column_blob(qs, 3), len, pt, cap, &ptlen);
        if (st != PK_OK) {
            st = store_fail(s, st,
                            "%s: record (%lld, %lld) fails authentication: nothing "
                            "re-keyed",
                            s->path, (long long)a, (long long)b);
            break;
        }
        rec = malloc(ptlen + PK_RECORD_OVERHEAD);
        st = rec ? pk_record_seal(new_k, ad, sizeof ad, pt, ptlen, rec, ptlen + PK_RECORD_OVERHEAD,
                                  &reclen)
                 : PK_ERR_NOMEM;
        pk_secure_wipe(pt, ptlen);
        sqlite3_reset(qs);
        if (st == PK_OK) {
            sqlite3_bind_blob(qu, 1, rec, (int)reclen, SQLITE_STATIC);
            sqlite3_bind_int64(qu, 2, rowid);
            rc = sqlite3_step(qu);
            sqlite3_reset(qu);
            if (rc != SQLITE_DONE)
                st = store_db_fail(s, rc, "rekey write");
        }
        free(rec);
        rec = NULL;
    }
    sqlite3_finalize(qs);
    sqlite3_finalize(qu);
    pk_secure_free(pt);
    return st;
}

pk_status store_reseal_all(pk_store *s, const pk_key *new_records, const pk_key *new_ckpt)
{
    pk_status st =
        reseal_table(s,
                     "SELECT rowid, dataset_id, id, record FROM examples WHERE rowid > ?1"
                     " ORDER BY rowid LIMIT 1",
                     "UPDATE examples SET record = ?1 WHERE rowid = ?2", PK_AD_EXAMPLE,
                     s->k_records, new_records);
    if (st == PK_OK)
        st = reseal_table(s,
                          "SELECT rowid, run_id, step, record FROM checkpoints WHERE rowid > ?1"
                          " ORDER BY rowid LIMIT 1",
                          "UPDATE checkpoints SET record = ?1 WHERE rowid = ?2", PK_AD_CHECKPOINT,
                          s->k_checkpoints, new_ckpt);
    return st;
}
