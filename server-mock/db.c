/* db.c: the coordinator's state in its own SQLite file (WAL): task, devices, rounds, uploads and
 * the hash-chained global log. Every decision that changes state (accept an upload, close a
 * round, open the next) is one transaction, so a restart at any point loses nothing and counts
 * nothing twice. One connection, serialized by a mutex; the open round is cached in memory.
 * Thread safety: every srv_db_* function may be called from any thread (they lock). */
#include "server_impl.h"

#include <math.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    Q_DEV_PUT,
    Q_DEV_GET,
    Q_UP_FIND,
    Q_UP_DUP,
    Q_UP_INS,
    Q_UP_ROUND,
    Q_LOG_INS,
    Q_LOG_SINCE,
    Q_ROUND_CLOSE,
    Q_ROUND_OPEN,
    Q_ROUND_DEADLINE,
    Q__COUNT
};

static const char *const sql_text[Q__COUNT] = {
    [Q_DEV_PUT] = "INSERT OR IGNORE INTO devices(id, public_key, created) VALUES(?1, ?2, ?3)",
    [Q_DEV_GET] = "SELECT public_key FROM devices WHERE id = ?1",
    [Q_UP_FIND] = "SELECT msg_hash, response FROM uploads WHERE device_id = ?1 AND idem_key = ?2",
    [Q_UP_DUP] = "SELECT 1 FROM uploads WHERE round = ?1 AND device_id = ?2",
    [Q_UP_INS] = "INSERT INTO uploads(round, device_id, idem_key, msg_hash, examples, updates, "
                 "response, received) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [Q_UP_ROUND] = "SELECT examples, updates FROM uploads WHERE round = ?1 ORDER BY device_id",
    [Q_LOG_INS] = "INSERT INTO log(version, lr_bits, uploads, examples, updates, prev_hash, hash, "
                  "closed_at) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [Q_LOG_SINCE] = "SELECT version, lr_bits, uploads, examples, updates, prev_hash, hash FROM log "
                    "WHERE version > ?1 ORDER BY version LIMIT ?2",
    [Q_ROUND_CLOSE] = "UPDATE rounds SET closed_at = ?2 WHERE round = ?1",
    [Q_ROUND_OPEN] = "INSERT INTO rounds(round, opened_at, deadline) VALUES(?1, ?2, ?3)",
    [Q_ROUND_DEADLINE] = "UPDATE rounds SET deadline = ?2 WHERE round = ?1",
};

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS devices(id TEXT PRIMARY KEY, public_key BLOB NOT NULL,"
    " created REAL NOT NULL);"
    "CREATE TABLE IF NOT EXISTS rounds(round INTEGER PRIMARY KEY, opened_at REAL NOT NULL,"
    " deadline REAL NOT NULL, closed_at REAL);"
    "CREATE TABLE IF NOT EXISTS uploads(id INTEGER PRIMARY KEY, round INTEGER NOT NULL,"
    " device_id TEXT NOT NULL, idem_key TEXT NOT NULL, msg_hash BLOB NOT NULL,"
    " examples INTEGER NOT NULL, updates BLOB NOT NULL, response TEXT NOT NULL,"
    " received REAL NOT NULL, UNIQUE(device_id, idem_key), UNIQUE(round, device_id));"
    "CREATE TABLE IF NOT EXISTS log(version INTEGER PRIMARY KEY, lr_bits INTEGER NOT NULL,"
    " uploads INTEGER NOT NULL, examples INTEGER NOT NULL, updates BLOB NOT NULL,"
    " prev_hash BLOB NOT NULL, hash BLOB NOT NULL, closed_at REAL NOT NULL);";

struct srv_db {
    sqlite3 *h;
    pthread_mutex_t mu;
    sqlite3_stmt *q[Q__COUNT];
    srv_task task; /* copy */
    srv_round cur; /* cache of the open round and log head */
    double *acc;   /* [K] aggregation scratch */
};

static pk_status exec(srv_db *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db->h, sql, NULL, NULL, &msg) != SQLITE_OK) {
        pk_log(PK_LOG_ERROR, "server db: %s: %s", sql, msg ? msg : "?");
        sqlite3_free(msg);
        return PK_ERR_DB;
    }
    return PK_OK;
}

static sqlite3_stmt *q(srv_db *db, int i)
{
    sqlite3_reset(db->q[i]);
    sqlite3_clear_bindings(db->q[i]);
    return db->q[i];
}

/* Reads the open round and the log head into db->cur; creates round 1 on a fresh database. */
static pk_status load_state(srv_db *db, double now)
{
    sqlite3_stmt *s = NULL;
    pk_status st = PK_ERR_DB;
    memset(&db->cur, 0, sizeof db->cur);
    if (sqlite3_prepare_v2(db->h, "SELECT version, hash FROM log ORDER BY version DESC LIMIT 1", -1,
                           &s, NULL) != SQLITE_OK)
        goto out;
    if (sqlite3_step(s) == SQLITE_ROW) {
        db->cur.log_version = sqlite3_column_int64(s, 0);
        if (sqlite3_column_bytes(s, 1) != PKP_HASH_BYTES)
            goto out;
        memcpy(db->cur.head, sqlite3_column_blob(s, 1), PKP_HASH_BYTES);
    }
    sqlite3_finalize(s);
    s = NULL;
    if (sqlite3_prepare_v2(db->h, "SELECT round, opened_at, deadline FROM rounds WHERE round = ?1",
                           -1, &s, NULL) != SQLITE_OK)
        goto out;
    db->cur.round = db->cur.log_version + 1;
    sqlite3_bind_int64(s, 1, db->cur.round);
    if (sqlite3_step(s) == SQLITE_ROW) {
        db->cur.opened_at = sqlite3_column_double(s, 1);
        db->cur.deadline = sqlite3_column_double(s, 2);
    } else {
        sqlite3_stmt *ins = q(db, Q_ROUND_OPEN);
        db->cur.opened_at = now;
        db->cur.deadline = now + db->task.deadline_s;
        sqlite3_bind_int64(ins, 1, db->cur.round);
        sqlite3_bind_double(ins, 2, db->cur.opened_at);
        sqlite3_bind_double(ins, 3, db->cur.deadline);
        if (sqlite3_step(ins) != SQLITE_DONE)
            goto out;
    }
    sqlite3_finalize(s);
    s = NULL;
    if (sqlite3_prepare_v2(db->h, "SELECT count(*) FROM uploads WHERE round = ?1", -1, &s, NULL) !=
        SQLITE_OK)
        goto out;
    sqlite3_bind_int64(s, 1, db->cur.round);
    if (sqlite3_step(s) != SQLITE_ROW)
        goto out;
    db->cur.uploads = sqlite3_column_int64(s, 0);
    st = PK_OK;
out:
    sqlite3_finalize(s);
    return st;
}

static pk_status check_task(srv_db *db, const srv_task *task, const char *task_json, char *err,
                            size_t errlen)
{
    sqlite3_stmt *s = NULL;
    pk_status st = PK_ERR_DB;
    char *want = srv_task_json_prefix(task), *have = NULL;
    if (!want)
        return PK_ERR_NOMEM;
    if (sqlite3_prepare_v2(db->h, "SELECT value FROM meta WHERE key = 'task'", -1, &s, NULL) !=
        SQLITE_OK)
        goto out;
    if (sqlite3_step(s) != SQLITE_ROW) {
        sqlite3_finalize(s);
        s = NULL;
        if (sqlite3_prepare_v2(db->h, "INSERT INTO meta(key, value) VALUES('task', ?1)", -1, &s,
                               NULL) != SQLITE_OK)
            goto out;
        sqlite3_bind_text(s, 1, task_json, -1, SQLITE_STATIC);
        st = sqlite3_step(s) == SQLITE_DONE ? PK_OK : PK_ERR_DB;
        goto out;
    }
    srv_task stored;
    if (srv_task_parse((const char *)sqlite3_column_text(s, 0), &stored, err, errlen) != PK_OK) {
        st = PK_ERR_FORMAT;
        goto out;
    }
    have = srv_task_json_prefix(&stored);
    if (!have || strcmp(have, want) != 0) {
        snprintf(err, errlen,
                 "the database holds task \"%s\" with other settings than the "
                 "--task file (task \"%s\"); use a new --db file",
                 stored.task_id, task->task_id);
        st = PK_ERR_ARG;
        goto out;
    }
    st = PK_OK;
out:
    sqlite3_finalize(s);
    free(want);
    free(have);
    return st;
}

static pk_status open_handle(const char *path, sqlite3 **h, char *err, size_t errlen)
{
    if (sqlite3_open_v2(path, h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot open database %s: %s", path,
                 *h ? sqlite3_errmsg(*h) : "out of memory");
        return PK_ERR_DB;
    }
    sqlite3_busy_timeout(*h, 5000);
    return PK_OK;
}

pk_status srv_db_open(const char *path, const srv_task *task, const char *task_json, double now,
                      srv_db **out, char *err, size_t errlen)
{
    *out = NULL;
    srv_db *db = calloc(1, sizeof *db);
    if (!db)
        return PK_ERR_NOMEM;
    pthread_mutex_init(&db->mu, NULL);
    db->task = *task;
    pk_status st = open_handle(path, &db->h, err, errlen);
    if (st != PK_OK)
        goto out;
    st = PK_ERR_DB;
    if (exec(
            db,
            "PRAGMA locking_mode=EXCLUSIVE; PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;") !=
            PK_OK ||
        exec(db, schema) != PK_OK) {
        snprintf(err, errlen, "database %s: %s", path, sqlite3_errmsg(db->h));
        goto out;
    }
    for (int i = 0; i < Q__COUNT; i++) {
        if (sqlite3_prepare_v2(db->h, sql_text[i], -1, &db->q[i], NULL) != SQLITE_OK) {
            snprintf(err, errlen, "database %s: %s", path, sqlite3_errmsg(db->h));
            goto out;
        }
    }
    db->acc = calloc(task->pool_size, sizeof *db->acc);
    if (!db->acc) {
        st = PK_ERR_NOMEM;
        goto out;
    }
    if (exec(db, "BEGIN IMMEDIATE") != PK_OK)
        goto out;
    st = check_task(db, task, task_json, err, errlen);
    if (st == PK_OK)
        st = load_state(db, now);
    if (exec(db, st == PK_OK ? "COMMIT" : "ROLLBACK") != PK_OK && st == PK_OK)
        st = PK_ERR_DB;
    if (st == PK_ERR_DB && !err[0])
        snprintf(err, errlen, "database %s: %s", path, sqlite3_errmsg(db->h));
out:
    if (st != PK_OK) {
        srv_db_close(db);
        db = NULL;
    }
    *out = db;
    return st;
}

void srv_db_close(srv_db *db)
{
    if (!db)
        return;
    for (int i = 0; i < Q__COUNT; i++)
        sqlite3_finalize(db->q[i]);
    sqlite3_close(db->h);
    pthread_mutex_destroy(&db->mu);
    free(db->acc);
    free(db);
}

pk_status srv_db_read_task(const char *path, char **json, char *err, size_t errlen)
{
    sqlite3 *h = NULL;
    sqlite3_stmt *s = NULL;
    *json = NULL;
    pk_status st = PK_ERR_NOTFOUND;
    if (sqlite3_open_v2(path, &h, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(h, "SELECT value FROM meta WHERE key = 'task'", -1, &s, NULL) !=
            SQLITE_OK ||
        sqlite3_step(s) != SQLITE_ROW) {
        snprintf(err, errlen, "database %s holds no task (give --task FILE.json)", path);
        goto out;
    }
    *json = strdup((const char *)sqlite3_column_text(s, 0));
    st = *json ? PK_OK : PK_ERR_NOMEM;
out:
    sqlite3_finalize(s);
    sqlite3_close(h);
    return st;
}

pk_status srv_db_device_put(srv_db *db, const char *id, const uint8_t pk[32], double now,
                            int *created)
{
    pthread_mutex_lock(&db->mu);
    pk_status st = PK_ERR_DB;
    sqlite3_stmt *s = q(db, Q_DEV_PUT);
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_blob(s, 2, pk, 32, SQLITE_STATIC);
    sqlite3_bind_double(s, 3, now);
    if (sqlite3_step(s) != SQLITE_DONE)
        goto out;
    *created = sqlite3_changes(db->h) == 1;
    s = q(db, Q_DEV_GET);
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    if (sqlite3_step(s) != SQLITE_ROW || sqlite3_column_bytes(s, 0) != 32)
        goto out;
    /* a 64-bit id collision with another key */
    st = memcmp(sqlite3_column_blob(s, 0), pk, 32) == 0 ? PK_OK : PK_ERR_AUTH;
out:
    sqlite3_reset(db->q[Q_DEV_PUT]);
    sqlite3_reset(db->q[Q_DEV_GET]);
    pthread_mutex_unlock(&db->mu);
    return st;
}

pk_status srv_db_device_get(srv_db *db, const char *id, uint8_t pk[32])
{
    pthread_mutex_lock(&db->mu);
    sqlite3_stmt *s = q(db, Q_DEV_GET);
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    pk_status st = PK_ERR_DB;
    if (rc == SQLITE_ROW && sqlite3_column_bytes(s, 0) == 32) {
        memcpy(pk, sqlite3_column_blob(s, 0), 32);
        st = PK_OK;
    } else if (rc == SQLITE_DONE) {
        st = PK_ERR_NOTFOUND;
    }
    sqlite3_reset(s);
    pthread_mutex_unlock(&db->mu);
    return st;
}

void srv_db_round_get(srv_db *db, srv_round *r)
{
    pthread_mutex_lock(&db->mu);
    *r = db->cur;
    pthread_mutex_unlock(&db->mu);
}

/* Sums the open round's uploads per seed, weighted by examples; packs the coefficients. The
 * uploads are summed in device id order, not arrival order, so the double sums (and the log)
 * do not depend on which device's upload happened to arrive first. */
static pk_status aggregate(srv_db *db, uint8_t **packed, size_t *len, int64_t *examples,
                           uint32_t *uploads)
{
    uint32_t K = db->task.pool_size;
    double den = 0.0;
    memset(db->acc, 0, K * sizeof *db->acc);
    *uploads = 0;
    sqlite3_stmt *s = q(db, Q_UP_ROUND);
    sqlite3_bind_int64(s, 1, db->cur.round);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        int64_t n = sqlite3_column_int64(s, 0);
        const uint8_t *b = sqlite3_column_blob(s, 1);
        size_t bl = (size_t)sqlite3_column_bytes(s, 1);
        for (size_t i = 0; i + PKP_PAIR_BYTES <= bl; i += PKP_PAIR_BYTES) {
            pkp_pair p;
            pkp_unpack(b + i, PKP_PAIR_BYTES, &p);
            if (p.k < K) /* validated on upload */
                db->acc[p.k] += (double)n * (double)p.v;
        }
        den += (double)n;
        (*uploads)++;
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        return PK_ERR_DB;
    *examples = (int64_t)den;
    pkp_pair *pairs = malloc((size_t)K * sizeof *pairs);
    *packed = malloc((size_t)K * PKP_PAIR_BYTES + 1);
    if (!pairs || !*packed) {
        free(pairs);
        free(*packed);
        *packed = NULL;
        return PK_ERR_NOMEM;
    }
    size_t n = 0;
    for (uint32_t k = 0; k < K && den > 0.0; k++) {
        float coef = (float)(db->acc[k] / den);
        if (coef != 0.0f) {
            pairs[n].k = (uint16_t)k;
            pairs[n].v = coef;
            n++;
        }
    }
    pkp_pack(pairs, n, *packed);
    free(pairs);
    *len = n * PKP_PAIR_BYTES;
    return PK_OK;
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* Inside a transaction: appends log entry cur.round, closes it, opens the next round. */
static pk_status close_round(srv_db *db, double now)
{
    uint8_t *packed = NULL, hash[PKP_HASH_BYTES];
    size_t len = 0;
    int64_t examples = 0;
    uint32_t uploads = 0;
    pk_status st = aggregate(db, &packed, &len, &examples, &uploads);
    if (st != PK_OK)
        return st;
    int64_t v = db->cur.round;
    pkp_log_hash(db->cur.head, db->task.task_id, (uint64_t)v, db->task.lr, uploads,
                 (uint64_t)examples, packed, len, hash);
    st = PK_ERR_DB;
    sqlite3_stmt *s = q(db, Q_LOG_INS);
    sqlite3_bind_int64(s, 1, v);
    sqlite3_bind_int64(s, 2, f32_bits(db->task.lr));
    sqlite3_bind_int64(s, 3, uploads);
    sqlite3_bind_int64(s, 4, examples);
    sqlite3_bind_blob(s, 5, packed, (int)len, SQLITE_STATIC);
    sqlite3_bind_blob(s, 6, db->cur.head, PKP_HASH_BYTES, SQLITE_STATIC);
    sqlite3_bind_blob(s, 7, hash, PKP_HASH_BYTES, SQLITE_STATIC);
    sqlite3_bind_double(s, 8, now);
    if (sqlite3_step(s) != SQLITE_DONE)
        goto out;
    s = q(db, Q_ROUND_CLOSE);
    sqlite3_bind_int64(s, 1, v);
    sqlite3_bind_double(s, 2, now);
    if (sqlite3_step(s) != SQLITE_DONE)
        goto out;
    s = q(db, Q_ROUND_OPEN);
    sqlite3_bind_int64(s, 1, v + 1);
    sqlite3_bind_double(s, 2, now);
    sqlite3_bind_double(s, 3, now + db->task.deadline_s);
    if (sqlite3_step(s) != SQLITE_DONE)
        goto out;
    db->cur.round = v + 1;
    db->cur.opened_at = now;
    db->cur.deadline = now + db->task.deadline_s;
    db->cur.uploads = 0;
    db->cur.log_version = v;
    memcpy(db->cur.head, hash, PKP_HASH_BYTES);
    pk_log(PK_LOG_INFO, "round %lld closed: %u uploads, %lld examples, %zu seeds", (long long)v,
           (unsigned)uploads, (long long)examples, len / PKP_PAIR_BYTES);
    st = PK_OK;
out:
    for (int i = Q_LOG_INS; i <= Q_ROUND_OPEN; i++)
        sqlite3_reset(db->q[i]);
    free(packed);
    return st;
}

/* Looks the (device, key) pair up: NOTFOUND, or OK with the first answer and whether the
 * stored message hash matches. */
static pk_status find_upload(srv_db *db, const srv_upload *u, int *same, char **response)
{
    sqlite3_stmt *s = q(db, Q_UP_FIND);
    sqlite3_bind_text(s, 1, u->device_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, u->idem_key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    pk_status st = rc == SQLITE_DONE ? PK_ERR_NOTFOUND : PK_ERR_DB;
    if (rc == SQLITE_ROW) {
        *same = sqlite3_column_bytes(s, 0) == PKP_HASH_BYTES &&
                memcmp(sqlite3_column_blob(s, 0), u->msg_hash, PKP_HASH_BYTES) == 0;
        *response = strdup((const char *)sqlite3_column_text(s, 1));
        st = *response ? PK_OK : PK_ERR_NOMEM;
    }
    sqlite3_reset(s);
    return st;
}

static pk_status insert_upload(srv_db *db, const srv_upload *u, double now, char **response)
{
    char receipt[2 * PKP_HASH_BYTES + 1];
    pkp_hex(u->msg_hash, PKP_HASH_BYTES, receipt);
    size_t cap = 512;
    char *body = malloc(cap);
    if (!body)
        return PK_ERR_NOMEM;
    snprintf(body, cap,
             "{\"accepted\":true,\"task_id\":\"%s\",\"round\":%lld,\"device_id\":\"%s\","
             "\"idempotency_key\":\"%s\",\"receipt\":\"%s\"}",
             db->task.task_id, (long long)u->round, u->device_id, u->idem_key, receipt);
    sqlite3_stmt *s = q(db, Q_UP_INS);
    sqlite3_bind_int64(s, 1, u->round);
    sqlite3_bind_text(s, 2, u->device_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, u->idem_key, -1, SQLITE_STATIC);
    sqlite3_bind_blob(s, 4, u->msg_hash, PKP_HASH_BYTES, SQLITE_STATIC);
    sqlite3_bind_int64(s, 5, u->examples);
    sqlite3_bind_blob(s, 6, u->updates_len ? (const void *)u->updates : (const void *)"",
                      (int)u->updates_len, SQLITE_STATIC);
    sqlite3_bind_text(s, 7, body, -1, SQLITE_STATIC);
    sqlite3_bind_double(s, 8, now);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        free(body);
        return PK_ERR_DB;
    }
    *response = body;
    return PK_OK;
}

static pk_status is_duplicate(srv_db *db, const srv_upload *u, int *dup)
{
    sqlite3_stmt *s = q(db, Q_UP_DUP);
    sqlite3_bind_int64(s, 1, u->round);
    sqlite3_bind_text(s, 2, u->device_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    *dup = rc == SQLITE_ROW;
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? PK_OK : PK_ERR_DB;
}

/* After a failed transaction the cache may be ahead of the database: reload it. */
static void rollback(srv_db *db, double now)
{
    (void)exec(db, "ROLLBACK");
    if (load_state(db, now) != PK_OK)
        pk_log(PK_LOG_ERROR, "server db: cannot reload state: %s", sqlite3_errmsg(db->h));
}

pk_status srv_db_submit(srv_db *db, const srv_upload *u, double now, srv_submit_result *res,
                        char **response)
{
    int same = 0, dup = 0;
    *response = NULL;
    pthread_mutex_lock(&db->mu);
    pk_status st = find_upload(db, u, &same, response);
    if (st == PK_OK) {
        if (!same) {
            free(*response);
            *response = NULL;
        }
        *res = same ? SRV_SUB_REPEAT : SRV_SUB_IDEM_CONFLICT;
        goto out;
    }
    if (st != PK_ERR_NOTFOUND)
        goto out;
    st = PK_OK;
    if (u->round != db->cur.round) {
        *res = u->round < db->cur.round ? SRV_SUB_ROUND_CLOSED : SRV_SUB_ROUND_NOT_OPEN;
        goto out;
    }
    st = is_duplicate(db, u, &dup);
    if (st != PK_OK || dup) {
        *res = SRV_SUB_DUPLICATE;
        goto out;
    }
    st = exec(db, "BEGIN IMMEDIATE");
    if (st != PK_OK)
        goto out;
    st = insert_upload(db, u, now, response);
    if (st == PK_OK && db->cur.uploads + 1 >= db->task.quorum)
        st = close_round(db, now);
    else if (st == PK_OK)
        db->cur.uploads++;
    if (st == PK_OK)
        st = exec(db, "COMMIT");
    if (st != PK_OK) {
        rollback(db, now);
        free(*response);
        *response = NULL;
        goto out;
    }
    *res = SRV_SUB_ACCEPTED;
out:
    pthread_mutex_unlock(&db->mu);
    return st;
}

pk_status srv_db_tick(srv_db *db, double now)
{
    pk_status st = PK_OK;
    pthread_mutex_lock(&db->mu);
    if (now < db->cur.deadline)
        goto out;
    if (db->cur.uploads == 0) {
        sqlite3_stmt *s = q(db, Q_ROUND_DEADLINE);
        sqlite3_bind_int64(s, 1, db->cur.round);
        sqlite3_bind_double(s, 2, now + db->task.deadline_s);
        st = sqlite3_step(s) == SQLITE_DONE ? PK_OK : PK_ERR_DB;
        sqlite3_reset(s);
        if (st == PK_OK)
            db->cur.deadline = now + db->task.deadline_s;
        goto out;
    }
    st = exec(db, "BEGIN IMMEDIATE");
    if (st != PK_OK)
        goto out;
    st = close_round(db, now);
    if (st == PK_OK)
        st = exec(db, "COMMIT");
    if (st != PK_OK)
        rollback(db, now);
out:
    pthread_mutex_unlock(&db->mu);
    return st;
}

/* A growing string with a hard cap. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    int failed;
} sbuf;

static void sb_add(sbuf *b, const char *fmt, ...) PK_PRINTF(2, 3);
static void sb_add(sbuf *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t ncap = b->cap * 2 + (size_t)n;
        char *np = realloc(b->p, ncap);
        if (!np) {
            b->failed = 1;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
}

static void add_entry(sbuf *b, sqlite3_stmt *s, const char *sep)
{
    char prev[2 * PKP_HASH_BYTES + 1] = "", hash[2 * PKP_HASH_BYTES + 1] = "", lr[32];
    uint32_t bits = (uint32_t)sqlite3_column_int64(s, 1);
    float lrf;
    memcpy(&lrf, &bits, 4);
    pkp_fmt_float(lrf, lr, sizeof lr);
    if (sqlite3_column_bytes(s, 5) == PKP_HASH_BYTES)
        pkp_hex(sqlite3_column_blob(s, 5), PKP_HASH_BYTES, prev);
    if (sqlite3_column_bytes(s, 6) == PKP_HASH_BYTES)
        pkp_hex(sqlite3_column_blob(s, 6), PKP_HASH_BYTES, hash);
    char *b64 = pkp_b64_encode(sqlite3_column_blob(s, 4), (size_t)sqlite3_column_bytes(s, 4));
    if (!b64) {
        b->failed = 1;
        return;
    }
    long long v = sqlite3_column_int64(s, 0);
    sb_add(b,
           "%s{\"version\":%lld,\"round\":%lld,\"lr\":%s,\"uploads\":%lld,\"examples\":%lld,"
           "\"updates\":\"%s\",\"prev_hash\":\"%s\",\"hash\":\"%s\"}",
           sep, v, v, lr, (long long)sqlite3_column_int64(s, 2),
           (long long)sqlite3_column_int64(s, 3), b64, prev, hash);
    free(b64);
}

pk_status srv_db_log_json(srv_db *db, int64_t since, int limit, char **json)
{
    sbuf b = {malloc(4096), 0, 4096, 0};
    *json = NULL;
    if (!b.p)
        return PK_ERR_NOMEM;
    pthread_mutex_lock(&db->mu);
    char head[2 * PKP_HASH_BYTES + 1];
    pkp_hex(db->cur.head, PKP_HASH_BYTES, head);
    int64_t head_v = db->cur.log_version, last = since;
    sb_add(&b, "{\"task_id\":\"%s\",\"head\":{\"version\":%lld,\"hash\":\"%s\"},\"entries\":[",
           db->task.task_id, (long long)head_v, head);
    sqlite3_stmt *s = q(db, Q_LOG_SINCE);
    sqlite3_bind_int64(s, 1, since);
    sqlite3_bind_int64(s, 2, limit);
    int rc, n = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        add_entry(&b, s, n++ ? "," : "");
        last = sqlite3_column_int64(s, 0);
    }
    sqlite3_reset(s);
    pthread_mutex_unlock(&db->mu);
    sb_add(&b, "],\"more\":%s}", last < head_v ? "true" : "false");
    if (rc != SQLITE_DONE || b.failed) {
        free(b.p);
        return rc != SQLITE_DONE ? PK_ERR_DB : PK_ERR_NOMEM;
    }
    *json = b.p;
    return PK_OK;
}
