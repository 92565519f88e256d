/* store.c: opening, creating and re-keying an agent home: the SQLite settings, the schema and
 * its migrations, the key-check record and the sealed device identity. Row-level queries live
 * in examples.c and runs.c; the cryptography itself in crypto/. */
#include "store_impl.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

/* Migrations: entry i takes the schema from version i to i + 1 (PRAGMA user_version). */
static const char *const migrations[STORE_SCHEMA_VERSION] = {
    "CREATE TABLE keyring(id INTEGER PRIMARY KEY CHECK (id = 1), salt BLOB NOT NULL,"
    "  opslimit INTEGER NOT NULL, memlimit INTEGER NOT NULL, keycheck BLOB NOT NULL);"
    "CREATE TABLE identity(id INTEGER PRIMARY KEY CHECK (id = 1), public_key BLOB NOT NULL,"
    "  sealed_secret BLOB NOT NULL, created_at REAL NOT NULL);"
    "CREATE TABLE datasets(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,"
    "  created_at REAL NOT NULL);"
    "CREATE TABLE examples(id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  dataset_id INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,"
    "  record BLOB NOT NULL);"
    "CREATE INDEX examples_dataset ON examples(dataset_id, id);"
    "CREATE TABLE runs(id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  dataset_id INTEGER REFERENCES datasets(id) ON DELETE SET NULL,"
    "  status TEXT NOT NULL, steps_done INTEGER NOT NULL DEFAULT 0, steps_total INTEGER NOT NULL,"
    "  created_at REAL NOT NULL, base_hash TEXT NOT NULL, config_json TEXT NOT NULL);"
    "CREATE TABLE steps(run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    "  step INTEGER NOT NULL, q_index INTEGER NOT NULL, seed INTEGER NOT NULL, g REAL NOT NULL,"
    "  loss_plus REAL, loss_minus REAL, lr REAL NOT NULL, eps REAL NOT NULL,"
    "  PRIMARY KEY (run_id, step, q_index)) WITHOUT ROWID;"
    "CREATE TABLE evals(run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    "  step INTEGER NOT NULL, loss REAL, accuracy REAL, PRIMARY KEY (run_id, step));"
    "CREATE TABLE checkpoints(run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    "  step INTEGER NOT NULL, record BLOB NOT NULL, PRIMARY KEY (run_id, step));"
    "CREATE TABLE sync_state(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE outbox(id INTEGER PRIMARY KEY AUTOINCREMENT, idem_key TEXT NOT NULL UNIQUE,"
    "  body TEXT NOT NULL, created_at REAL NOT NULL);",
    /* 1 -> 2: the key epoch (rekey increments it; every write transaction checks it) and the
     * leases of running trainers (rekey and forget must not pull keys or data from under them). */
    "ALTER TABLE keyring ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;"
    "CREATE TABLE leases(run_id INTEGER PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,"
    "  pid INTEGER NOT NULL, proc_start INTEGER NOT NULL, started_at REAL NOT NULL);",
    /* 2 -> 3: chained runs (a run starts from parent_steps of its parent's log), the datasets a
     * run trained on (a union for the agent; forget --with-runs follows them), and the row of
     * the on-device agent (one per home: its pid, what it does, a stop request). New tables
     * only, so the step is idempotent. */
    "CREATE TABLE IF NOT EXISTS run_lineage(run_id INTEGER PRIMARY KEY"
    "  REFERENCES runs(id) ON DELETE CASCADE,"
    "  parent_run INTEGER NOT NULL REFERENCES runs(id), parent_steps INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS run_lineage_parent ON run_lineage(parent_run);"
    "CREATE TABLE IF NOT EXISTS run_datasets(run_id INTEGER NOT NULL"
    "  REFERENCES runs(id) ON DELETE CASCADE, dataset_id INTEGER NOT NULL,"
    "  PRIMARY KEY (run_id, dataset_id)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS run_datasets_dataset ON run_datasets(dataset_id);"
    "INSERT OR IGNORE INTO run_datasets(run_id, dataset_id)"
    "  SELECT id, dataset_id FROM runs WHERE dataset_id IS NOT NULL;"
    "CREATE TABLE IF NOT EXISTS agent(id INTEGER PRIMARY KEY CHECK (id = 1),"
    "  pid INTEGER NOT NULL, proc_start INTEGER NOT NULL, started_at REAL NOT NULL,"
    "  updated_at REAL NOT NULL, status_json TEXT NOT NULL,"
    "  stop_requested INTEGER NOT NULL DEFAULT 0);",
    /* 3 -> 4: the training seconds at an eval point (plots by wall-clock; none for evals
     * written before). A new table, so the step is idempotent. */
    "CREATE TABLE IF NOT EXISTS eval_seconds(run_id INTEGER NOT NULL"
    "  REFERENCES runs(id) ON DELETE CASCADE, step INTEGER NOT NULL, elapsed_s REAL NOT NULL,"
    "  PRIMARY KEY (run_id, step)) WITHOUT ROWID;",
};

void store_call(pk_store *s, char *err, size_t errlen)
{
    s->err = err;
    s->errlen = err ? errlen : 0;
    if (s->errlen)
        err[0] = '\0';
}

pk_status store_fail(pk_store *s, pk_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->errmsg, sizeof s->errmsg, fmt, ap);
    va_end(ap);
    if (s->errlen)
        snprintf(s->err, s->errlen, "%s", s->errmsg);
    return st;
}

/* A failed write whose errno SQLite did not keep (sqlite3_system_errno is 0 after a short
 * write that then hit EFBIG: errno is read later, once other calls have reset it): the cause
 * is a limit when the process has a finite file-size limit or the file system has no space. */
static int write_limit_likely(const pk_store *s)
{
    struct rlimit rl;
    struct statvfs vf;
    if (getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        return 1;
    return statvfs(s->home, &vf) == 0 && vf.f_bavail == 0;
}

pk_status store_db_fail(pk_store *s, int rc, const char *what)
{
    int prim = rc & 0xff;
    const char *m = s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc);
    if (prim == SQLITE_BUSY || prim == SQLITE_LOCKED)
        return store_fail(s, PK_ERR_BUSY,
                          "%s is busy: another pocketllm process is using it (%s); retry later",
                          s->home, what);
    int sys = s->db ? sqlite3_system_errno(s->db) : 0;
    if (prim == SQLITE_FULL ||
        (prim == SQLITE_IOERR && (sys == ENOSPC || sys == EFBIG
#ifdef EDQUOT
                                  || sys == EDQUOT
#endif
                                  )) ||
        (rc == SQLITE_IOERR_WRITE && sys == 0 && write_limit_likely(s)))
        return store_fail(s, PK_ERR_LIMIT,
                          "%s: %s: disk full or file size limit reached (%s); nothing "
                          "was changed",
                          s->path, what, m);
    if (prim == SQLITE_IOERR || prim == SQLITE_CANTOPEN || prim == SQLITE_READONLY)
        return store_fail(s, PK_ERR_IO, "%s: %s: %s", s->path, what, m);
    if (prim == SQLITE_NOMEM)
        return store_fail(s, PK_ERR_NOMEM, "%s: %s: out of memory", s->path, what);
    return store_fail(s, PK_ERR_DB, "%s: %s: %s", s->path, what, m);
}

pk_status store_exec(pk_store *s, const char *sql)
{
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? PK_OK : store_db_fail(s, rc, "exec");
}

/* Inside a write transaction: the keyring epoch must still be the one this handle's keys were
 * derived at, or a rekey happened since and anything sealed now would be unreadable. */
static pk_status check_epoch(pk_store *s)
{
    sqlite3_stmt *q = NULL;
    pk_status st = store_row(s, &q, "read key epoch", "SELECT epoch FROM keyring WHERE id = 1", "");
    if (st == PK_ERR_NOTFOUND)
        st = store_db_fail(s, SQLITE_DONE, "read key epoch");
    if (st != PK_OK)
        return st;
    int64_t epoch = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    if (epoch != s->epoch)
        return store_fail(s, PK_ERR_STALE_KEY,
                          "the passphrase of %s changed while this command ran (pocketllm "
                          "rekey); nothing was written: run it again with the new passphrase",
                          s->home);
    return PK_OK;
}

pk_status store_begin(pk_store *s)
{
    if (s->readonly)
        return store_fail(s, PK_ERR_IO,
                          "%s is read-only: this command needs to write to it (commands that "
                          "only read, such as data list or eval, work)",
                          s->home);
    int rc = sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return store_db_fail(s, rc, "begin transaction");
    pk_status st = s->epoch_known ? check_epoch(s) : PK_OK;
    if (st != PK_OK)
        store_rollback(s);
    return st;
}

pk_status store_commit(pk_store *s)
{
    int rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        return PK_OK;
    pk_status st = store_db_fail(s, rc, "commit");
    store_rollback(s);
    return st;
}

void store_rollback(pk_store *s)
{
    if (s->db && !sqlite3_get_autocommit(s->db))
        (void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

pk_status store_prepare(pk_store *s, const char *sql, sqlite3_stmt **st)
{
    int rc = sqlite3_prepare_v2(s->db, sql, -1, st, NULL);
    return rc == SQLITE_OK ? PK_OK : store_db_fail(s, rc, "prepare");
}

/* Binds ?1.. of q from ap, one argument (two for 'b') per letter of types (store_impl.h). */
static void bind_va(sqlite3_stmt *q, const char *types, va_list ap)
{
    for (int i = 1; *types; types++, i++) {
        int64_t v;
        double d;
        const void *p;
        switch (*types) {
        case 'i':
        case 'I':
            v = va_arg(ap, int64_t);
            if (*types == 'I' && v <= 0)
                sqlite3_bind_null(q, i);
            else
                sqlite3_bind_int64(q, i, v);
            break;
        case 'd':
        case 'D':
            d = va_arg(ap, double);
            if (*types == 'D' && isnan(d))
                sqlite3_bind_null(q, i);
            else
                sqlite3_bind_double(q, i, d);
            break;
        case 't':
            sqlite3_bind_text(q, i, va_arg(ap, const char *), -1, SQLITE_STATIC);
            break;
        case 'b':
            p = va_arg(ap, const void *);
            sqlite3_bind_blob64(q, i, p, va_arg(ap, size_t), SQLITE_STATIC);
            break;
        default:
            PK_ASSERT(!"unknown parameter type");
        }
    }
}

static pk_status query_va(pk_store *s, sqlite3_stmt **q, const char *sql, const char *types,
                          va_list ap)
{
    pk_status st = store_prepare(s, sql, q);
    if (st == PK_OK)
        bind_va(*q, types, ap);
    return st;
}

pk_status store_query(pk_store *s, sqlite3_stmt **q, const char *sql, const char *types, ...)
{
    va_list ap;
    va_start(ap, types);
    pk_status st = query_va(s, q, sql, types, ap);
    va_end(ap);
    return st;
}

pk_status store_run(pk_store *s, const char *what, const char *sql, const char *types, ...)
{
    sqlite3_stmt *q = NULL;
    va_list ap;
    va_start(ap, types);
    pk_status st = query_va(s, &q, sql, types, ap);
    va_end(ap);
    if (st != PK_OK)
        return st;
    int rc = sqlite3_step(q);
    if (rc != SQLITE_DONE)
        st = store_db_fail(s, rc, what); /* before finalize: it reads the connection's message */
    sqlite3_finalize(q);
    return st;
}

pk_status store_row(pk_store *s, sqlite3_stmt **q, const char *what, const char *sql,
                    const char *types, ...)
{
    va_list ap;
    va_start(ap, types);
    pk_status st = query_va(s, q, sql, types, ap);
    va_end(ap);
    if (st != PK_OK)
        return st;
    int rc = sqlite3_step(*q);
    if (rc == SQLITE_ROW)
        return PK_OK;
    st = rc == SQLITE_DONE ? PK_ERR_NOTFOUND : store_db_fail(s, rc, what);
    sqlite3_finalize(*q);
    *q = NULL;
    return st;
}

double store_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

pk_status store_open_record(const pk_key *k, uint8_t kind, int64_t a, int64_t b, const uint8_t *rec,
                            size_t reclen, uint8_t **pt, size_t *ptlen)
{
    uint8_t ad[PK_RECORD_AD_BYTES];
    size_t cap = reclen > PK_RECORD_OVERHEAD ? reclen - PK_RECORD_OVERHEAD : 1;
    *pt = pk_secure_alloc(cap);
    if (!*pt)
        return PK_ERR_NOMEM;
    pk_record_ad(ad, kind, a, b);
    pk_status st = pk_record_open(k, ad, sizeof ad, rec, reclen, *pt, cap, ptlen);
    if (st != PK_OK) {
        pk_secure_free(*pt);
        *pt = NULL;
    }
    return st;
}

pk_status store_collect(pk_store *s, sqlite3_stmt *q, size_t size, size_t first, store_row_fn fn,
                        const char *what, void **rows, size_t *n)
{
    unsigned char *v = NULL;
    size_t k = 0, cap = 0;
    pk_status st = PK_OK;
    int rc;
    *rows = NULL;
    *n = 0;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        unsigned char *nv = pk_grow(v, &cap, k + 1, size, first);
        if (!nv) {
            st = store_fail(s, PK_ERR_NOMEM, "out of memory");
            goto out;
        }
        v = nv;
        fn(q, v + k++ * size);
    }
    if (rc != SQLITE_DONE)
        st = store_db_fail(s, rc, what);
out:
    sqlite3_finalize(q);
    if (st != PK_OK) {
        free(v);
        return st;
    }
    *rows = v;
    *n = k;
    return PK_OK;
}

static void copy_err(char *err, size_t errlen, const char *msg)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
}

pk_store_params pk_store_default_params(void)
{
    pk_store_params p = {0, 0};
    return p;
}

int pk_store_db_path(const char *home_dir, char *out, size_t n)
{
    int w = snprintf(out, n, "%s/%s", home_dir, STORE_DB_NAME);
    return (w < 0 || (size_t)w >= n) ? -1 : 0;
}

/* mkdir -p with mode 0700 for the last component. */
static int make_dirs(const char *dir)
{
    char tmp[1024];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof tmp)
        return -1;
    memcpy(tmp, dir, n + 1);
    for (size_t i = 1; i < n; i++) {
        if (tmp[i] != '/')
            continue;
        tmp[i] = '\0';
        if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
            return -1;
        tmp[i] = '/';
    }
    if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

/* The home must be a directory that only its owner can enter: a file in its place is named as
 * such, and group/other permission bits (a home made by hand, or by an older umask) are
 * removed with a warning rather than leaving sealed data listable by others. */
static pk_status check_home(pk_store *s)
{
    struct stat sb;
    if (stat(s->home, &sb) != 0)
        return PK_OK; /* absent: init creates it, open reports no home */
    if (!S_ISDIR(sb.st_mode))
        return store_fail(s, PK_ERR_ARG, "%s is a file, not an agent home directory", s->home);
    if ((sb.st_mode & 077) == 0)
        return PK_OK;
    if (chmod(s->home, 0700) != 0)
        return store_fail(s, PK_ERR_IO,
                          "%s is open to other users (mode %03o) and cannot be restricted: %s",
                          s->home, (unsigned)(sb.st_mode & 0777), strerror(errno));
    pk_log(PK_LOG_WARN, "%s was open to other users (mode %03o): restricted to its owner (0700)",
           s->home, (unsigned)(sb.st_mode & 0777));
    return PK_OK;
}

static pk_store *store_new(const char *home_dir)
{
    pk_store *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    snprintf(s->home, sizeof s->home, "%s", home_dir);
    (void)pk_store_db_path(home_dir, s->path, sizeof s->path);
    s->lock_fd = -1;
    return s;
}

static void drop_keys(pk_store *s)
{
    pk_key_free(s->k_records);
    pk_key_free(s->k_checkpoints);
    pk_key_free(s->k_identity);
    s->k_records = s->k_checkpoints = s->k_identity = NULL;
}

void pk_store_close(pk_store *s)
{
    if (!s)
        return;
    if (s->db)
        sqlite3_close_v2(s->db);
    if (s->lock_fd >= 0)
        close(s->lock_fd); /* drops this handle's lease locks */
    drop_keys(s);
    free(s);
}

/* Connection settings; none of them writes to the file. */
/* "file:PATH?immutable=1" with PATH percent-encoded where URI syntax needs it. */
static int immutable_uri(const char *path, char *out, size_t n)
{
    size_t w = (size_t)snprintf(out, n, "file:");
    for (const char *p = path; *p && w + 4 < n; p++) {
        if (*p == '?' || *p == '#' || *p == '%')
            w += (size_t)snprintf(out + w, n - w, "%%%02X", (unsigned char)*p);
        else
            out[w++] = *p;
    }
    int r = snprintf(out + w, n > w ? n - w : 0, "?immutable=1");
    return (r < 0 || w + (size_t)r >= n) ? -1 : 0;
}

static pk_status connect_db(pk_store *s, int create)
{
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (create ? SQLITE_OPEN_CREATE : 0);
    char uri[2400];
    const char *target = s->path;
    /* A home we cannot write to (a read-only mount or permissions) still serves the commands
     * that only read: SQLite opens it immutable (no -wal/-shm files, no locks) and every write
     * transaction is refused with a clear message (store_begin). */
    if (!create && (access(s->home, W_OK) != 0 || access(s->path, W_OK) != 0)) {
        if (immutable_uri(s->path, uri, sizeof uri) != 0)
            return store_fail(s, PK_ERR_ARG, "home path too long: %s", s->home);
        target = uri;
        flags = SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI;
        s->readonly = 1;
    }
    int rc = sqlite3_open_v2(target, &s->db, flags, NULL);
    if (rc != SQLITE_OK)
        return store_db_fail(s, rc, "open");
    if (s->readonly)
        return store_exec(s, "PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY;");
    sqlite3_busy_timeout(s->db, 5000);
    sqlite3_extended_result_codes(s->db, 1);
    return store_exec(s, "PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON;"
                         "PRAGMA temp_store = MEMORY; PRAGMA synchronous = FULL;");
}

typedef struct keyring {
    int64_t epoch; /* incremented by every rekey */
    uint8_t salt[PK_CRYPTO_SALT_BYTES];
    uint64_t opslimit;
    size_t memlimit;
    uint8_t keycheck[128];
    size_t keycheck_len;
} keyring;

/* Master key -> subkeys; on success the handle holds the three data subkeys and *check the
 * key-check subkey (owned). */
static pk_status derive_all(const pk_key *master, pk_key **rec, pk_key **ckpt, pk_key **ident,
                            pk_key **check)
{
    pk_status st = pk_key_derive(master, PK_SUBKEY_RECORDS, rec);
    if (st == PK_OK)
        st = pk_key_derive(master, PK_SUBKEY_CHECKPOINTS, ckpt);
    if (st == PK_OK)
        st = pk_key_derive(master, PK_SUBKEY_IDENTITY, ident);
    if (st == PK_OK)
        st = pk_key_derive(master, PK_SUBKEY_KEYCHECK, check);
    return st;
}

/* A new keyring row for passphrase: salt, limits, key-check record; outputs new subkeys. */
static pk_status new_keyring(const char *pass, size_t len, pk_store_params p, keyring *kr,
                             pk_key **rec, pk_key **ckpt, pk_key **ident)
{
    pk_key *master = NULL, *check = NULL;
    uint8_t ad[PK_RECORD_AD_BYTES];
    kr->epoch = 0;
    kr->opslimit = p.opslimit ? p.opslimit : pk_kdf_default_opslimit();
    kr->memlimit = p.memlimit ? p.memlimit : pk_kdf_default_memlimit();
    pk_crypto_random(kr->salt, sizeof kr->salt);
    pk_status st = pk_key_from_passphrase(pass, len, kr->salt, kr->opslimit, kr->memlimit, &master);
    if (st == PK_OK)
        st = derive_all(master, rec, ckpt, ident, &check);
    pk_record_ad(ad, PK_AD_KEYCHECK, 0, 0);
    if (st == PK_OK)
        st = pk_record_seal(check, ad, sizeof ad, STORE_KEYCHECK_TEXT, strlen(STORE_KEYCHECK_TEXT),
                            kr->keycheck, sizeof kr->keycheck, &kr->keycheck_len);
    pk_key_free(master);
    pk_key_free(check);
    return st;
}

static pk_status write_keyring(pk_store *s, const keyring *kr, int insert)
{
    return store_run(
        s, "write keyring",
        insert
            ? "INSERT INTO keyring(salt, opslimit, memlimit, keycheck, epoch, id)"
              " VALUES(?,?,?,?,?,1)"
            : "UPDATE keyring SET salt=?, opslimit=?, memlimit=?, keycheck=?, epoch=? WHERE id=1",
        "biibi", (const void *)kr->salt, sizeof kr->salt, (int64_t)kr->opslimit,
        (int64_t)kr->memlimit, (const void *)kr->keycheck, (size_t)kr->keycheck_len,
        (int64_t)kr->epoch);
}

/* Seals the Ed25519 secret key sk with the identity subkey into out. */
static pk_status seal_identity(const pk_key *k, const uint8_t *sk, uint8_t *out, size_t cap,
                               size_t *len)
{
    uint8_t ad[PK_RECORD_AD_BYTES];
    pk_record_ad(ad, PK_AD_IDENTITY, 0, 0);
    return pk_record_seal(k, ad, sizeof ad, sk, PK_SIGN_SK_BYTES, out, cap, len);
}

static pk_status create_identity(pk_store *s)
{
    uint8_t pk[PK_SIGN_PK_BYTES], sealed[PK_SIGN_SK_BYTES + PK_RECORD_OVERHEAD];
    size_t sealed_len = 0;
    uint8_t *sk = pk_secure_alloc(PK_SIGN_SK_BYTES);
    if (!sk)
        return store_fail(s, PK_ERR_NOMEM, "out of secure memory");
    pk_status st = pk_sign_keypair(pk, sk);
    if (st == PK_OK)
        st = seal_identity(s->k_identity, sk, sealed, sizeof sealed, &sealed_len);
    pk_secure_free(sk);
    if (st == PK_OK)
        st = store_run(s, "write identity",
                       "INSERT INTO identity(id, public_key, sealed_secret, created_at)"
                       " VALUES(1, ?, ?, ?)",
                       "bbd", (const void *)pk, sizeof pk, (const void *)sealed, sealed_len,
                       store_now());
    return st;
}

/* Applies the migrations from the file's version to STORE_SCHEMA_VERSION in one transaction. */
static int schema_version(pk_store *s)
{
    sqlite3_stmt *q = NULL;
    if (store_prepare(s, "PRAGMA user_version", &q) != PK_OK)
        return -1;
    int version = sqlite3_step(q) == SQLITE_ROW ? sqlite3_column_int(q, 0) : -1;
    sqlite3_finalize(q);
    return version;
}

static pk_status migrate(pk_store *s)
{
    sqlite3_stmt *q = NULL;
    if (schema_version(s) == STORE_SCHEMA_VERSION)
        return PK_OK; /* the common case takes no write lock */
    if (s->readonly && schema_version(s) < STORE_SCHEMA_VERSION)
        return store_fail(s, PK_ERR_IO,
                          "%s is read-only and was written by an older pocketllm (schema %d, "
                          "this one uses %d): open it once where it is writable to upgrade it",
                          s->home, schema_version(s), STORE_SCHEMA_VERSION);
    pk_status st = store_begin(s);
    if (st == PK_OK)
        st = store_prepare(s, "PRAGMA user_version", &q);
    if (st != PK_OK)
        goto out;
    int version = sqlite3_step(q) == SQLITE_ROW ? sqlite3_column_int(q, 0) : -1;
    sqlite3_finalize(q);
    if (version < 0 || version > STORE_SCHEMA_VERSION) {
        st = store_fail(s, PK_ERR_UNSUPPORTED,
                        "%s: schema version %d is newer than this pocketllm (%d): upgrade it",
                        s->path, version, STORE_SCHEMA_VERSION);
        goto out;
    }
    for (int v = version; v < STORE_SCHEMA_VERSION && st == PK_OK; v++)
        st = store_exec(s, migrations[v]);
    if (st == PK_OK && version < STORE_SCHEMA_VERSION) {
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d", STORE_SCHEMA_VERSION);
        st = store_exec(s, sql);
    }
    if (st == PK_OK)
        st = store_commit(s);
out:
    store_rollback(s);
    return st;
}

pk_status pk_store_init(const char *home_dir, const char *passphrase, size_t len,
                        pk_store_params params, char *err, size_t errlen)
{
    keyring kr;
    struct stat sb;
    pk_store *s = store_new(home_dir);
    pk_status st = PK_OK;
    if (!s)
        return PK_ERR_NOMEM;
    if (strlen(home_dir) >= sizeof s->home - 16) {
        st = store_fail(s, PK_ERR_ARG, "home path too long: %s", home_dir);
        goto out;
    }
    st = check_home(s);
    if (st != PK_OK)
        goto out;
    if (stat(s->path, &sb) == 0) {
        st = store_fail(s, PK_ERR_ARG, "%s already exists: this home is initialised", s->path);
        goto out;
    }
    if (make_dirs(home_dir) != 0) {
        st = store_fail(s, PK_ERR_IO, "cannot create %s: %s", home_dir, strerror(errno));
        goto out;
    }
    st =
        new_keyring(passphrase, len, params, &kr, &s->k_records, &s->k_checkpoints, &s->k_identity);
    if (st != PK_OK) {
        store_fail(s, st, "key derivation failed (Argon2id limits ops=%llu mem=%zu): %s",
                   (unsigned long long)kr.opslimit, kr.memlimit, pk_status_str(st));
        goto out;
    }
    st = connect_db(s, 1);
    if (st == PK_OK && chmod(s->path, 0600) != 0)
        st = store_fail(s, PK_ERR_IO, "chmod %s: %s", s->path, strerror(errno));
    if (st == PK_OK)
        st = store_exec(s, "PRAGMA journal_mode = WAL");
    if (st == PK_OK)
        st = migrate(s);
    if (st == PK_OK)
        st = store_begin(s);
    if (st == PK_OK)
        st = write_keyring(s, &kr, 1);
    if (st == PK_OK)
        st = create_identity(s);
    if (st == PK_OK)
        st = store_commit(s);
    store_rollback(s);
    pk_secure_wipe(&kr, sizeof kr);
out:
    if (st != PK_OK)
        copy_err(err, errlen, s->errmsg);
    pk_store_close(s);
    return st;
}

static pk_status read_keyring(pk_store *s, keyring *kr)
{
    sqlite3_stmt *q = NULL;
    /* a home of schema 1 (not migrated yet: unlock comes first) has no epoch column */
    pk_status st =
        store_prepare(s,
                      schema_version(s) >= 2 ? "SELECT salt, opslimit, memlimit, keycheck, epoch"
                                               " FROM keyring WHERE id = 1"
                                             : "SELECT salt, opslimit, memlimit, keycheck, 0"
                                               " FROM keyring WHERE id = 1",
                      &q);
    if (st != PK_OK)
        return store_fail(s, PK_ERR_FORMAT, "%s is not a pocketllm store (no keyring): %s", s->path,
                          sqlite3_errmsg(s->db));
    int rc = sqlite3_step(q);
    if (rc != SQLITE_ROW) {
        st = rc == SQLITE_DONE
                 ? store_fail(s, PK_ERR_FORMAT, "%s: incomplete store (no keyring row)", s->path)
                 : store_db_fail(s, rc, "read keyring");
        goto out;
    }
    if (sqlite3_column_bytes(q, 0) != (int)sizeof kr->salt ||
        sqlite3_column_bytes(q, 3) > (int)sizeof kr->keycheck || sqlite3_column_int64(q, 1) <= 0 ||
        sqlite3_column_int64(q, 2) <= 0) {
        st = store_fail(s, PK_ERR_FORMAT, "%s: malformed keyring row", s->path);
        goto out;
    }
    memcpy(kr->salt, sqlite3_column_blob(q, 0), sizeof kr->salt);
    kr->opslimit = (uint64_t)sqlite3_column_int64(q, 1);
    kr->memlimit = (size_t)sqlite3_column_int64(q, 2);
    kr->keycheck_len = (size_t)sqlite3_column_bytes(q, 3);
    kr->epoch = sqlite3_column_int64(q, 4);
    if (kr->keycheck_len)
        memcpy(kr->keycheck, sqlite3_column_blob(q, 3), kr->keycheck_len);
out:
    sqlite3_finalize(q);
    return st;
}

/* Derives the keys and checks them against the key-check record; writes nothing. */
static pk_status unlock(pk_store *s, const char *pass, size_t len)
{
    keyring kr;
    pk_key *master = NULL, *check = NULL;
    uint8_t ad[PK_RECORD_AD_BYTES], pt[sizeof kr.keycheck];
    size_t ptlen = 0;
    pk_status st = read_keyring(s, &kr);
    if (st != PK_OK)
        return st;
    st = pk_key_from_passphrase(pass, len, kr.salt, kr.opslimit, kr.memlimit, &master);
    if (st != PK_OK) {
        st = store_fail(s, st == PK_ERR_ARG ? PK_ERR_FORMAT : st,
                        "%s: cannot derive the key (Argon2id ops=%llu mem=%zu): %s", s->path,
                        (unsigned long long)kr.opslimit, kr.memlimit, pk_status_str(st));
        goto out;
    }
    st = derive_all(master, &s->k_records, &s->k_checkpoints, &s->k_identity, &check);
    if (st != PK_OK)
        goto out;
    pk_record_ad(ad, PK_AD_KEYCHECK, 0, 0);
    st = pk_record_open(check, ad, sizeof ad, kr.keycheck, kr.keycheck_len, pt, sizeof pt, &ptlen);
    if (st == PK_OK &&
        (ptlen != strlen(STORE_KEYCHECK_TEXT) || memcmp(pt, STORE_KEYCHECK_TEXT, ptlen) != 0))
        st = PK_ERR_AUTH;
    if (st != PK_OK)
        st = store_fail(s, PK_ERR_AUTH, "wrong passphrase for %s", s->home);
    s->epoch = kr.epoch;
out:
    if (st != PK_OK)
        drop_keys(s);
    pk_key_free(master);
    pk_key_free(check);
    pk_secure_wipe(&kr, sizeof kr);
    return st;
}

pk_status pk_store_open(const char *home_dir, const char *passphrase, size_t len, pk_store **out,
                        char *err, size_t errlen)
{
    struct stat sb;
    *out = NULL;
    pk_store *s = store_new(home_dir);
    pk_status st = PK_OK;
    if (!s)
        return PK_ERR_NOMEM;
    st = check_home(s);
    if (st != PK_OK)
        goto out;
    if (stat(s->path, &sb) != 0) {
        st = store_fail(s, PK_ERR_NOTFOUND, "no agent home at %s: run pocketllm init --home %s",
                        home_dir, home_dir);
        goto out;
    }
    st = connect_db(s, 0);
    if (st == PK_OK)
        st = unlock(s, passphrase, len);
    if (st == PK_OK)
        st = migrate(s);
    s->epoch_known = st == PK_OK; /* from here on, every write transaction checks the epoch */
out:
    if (st != PK_OK) {
        copy_err(err, errlen, s->errmsg);
        pk_store_close(s);
        return st;
    }
    *out = s;
    return PK_OK;
}

/* q on the identity row's sealed secret (column 0); PK_ERR_FORMAT when there is none. */
static pk_status read_identity(pk_store *s, sqlite3_stmt **q)
{
    pk_status st =
        store_row(s, q, "read identity", "SELECT sealed_secret FROM identity WHERE id = 1", "");
    if (st == PK_ERR_NOTFOUND)
        st = store_fail(s, PK_ERR_FORMAT, "%s: no device identity", s->path);
    return st;
}

/* Opens the sealed Ed25519 secret in column 0 of q's current row into sk (secure memory). */
static pk_status open_identity(pk_store *s, sqlite3_stmt *q, uint8_t *sk)
{
    uint8_t ad[PK_RECORD_AD_BYTES];
    size_t n = 0;
    pk_record_ad(ad, PK_AD_IDENTITY, 0, 0);
    pk_status st = pk_record_open(s->k_identity, ad, sizeof ad, sqlite3_column_blob(q, 0),
                                  (size_t)sqlite3_column_bytes(q, 0), sk, PK_SIGN_SK_BYTES, &n);
    if (st == PK_OK && n != PK_SIGN_SK_BYTES)
        st = PK_ERR_AUTH;
    if (st != PK_OK)
        return store_fail(s, PK_ERR_AUTH, "%s: the sealed device identity fails to open", s->path);
    return PK_OK;
}

static pk_status reseal_identity(pk_store *s, const pk_key *new_ident)
{
    sqlite3_stmt *q = NULL;
    uint8_t sealed[PK_SIGN_SK_BYTES + PK_RECORD_OVERHEAD];
    size_t sealed_len = 0;
    uint8_t *sk = pk_secure_alloc(PK_SIGN_SK_BYTES);
    pk_status st = sk ? read_identity(s, &q) : PK_ERR_NOMEM;
    if (st == PK_OK)
        st = open_identity(s, q, sk);
    sqlite3_finalize(q);
    if (st == PK_OK)
        st = seal_identity(new_ident, sk, sealed, sizeof sealed, &sealed_len);
    if (st == PK_OK)
        st = store_run(s, "rewrite identity", "UPDATE identity SET sealed_secret = ? WHERE id = 1",
                       "b", (const void *)sealed, sealed_len);
    pk_secure_free(sk);
    return st;
}

pk_status pk_store_rekey(pk_store *s, const char *passphrase, size_t len, pk_store_params params,
                         char *err, size_t errlen)
{
    store_call(s, err, errlen);
    keyring kr;
    pk_key *rec = NULL, *ckpt = NULL, *ident = NULL;
    PK_ASSERT(s);
    pk_status st = new_keyring(passphrase, len, params, &kr, &rec, &ckpt, &ident);
    if (st != PK_OK) {
        st = store_fail(s, st, "key derivation failed: %s", pk_status_str(st));
        goto out;
    }
    kr.epoch = s->epoch + 1;
    st = store_begin(s);
    if (st == PK_OK)
        st = store_no_live_lease(s);
    if (st == PK_OK)
        st = store_reseal_all(s, rec, ckpt);
    if (st == PK_OK)
        st = reseal_identity(s, ident);
    if (st == PK_OK)
        st = write_keyring(s, &kr, 0);
    if (st == PK_OK)
        st = store_commit(s);
    store_rollback(s);
    if (st == PK_OK) {
        drop_keys(s);
        s->k_records = rec;
        s->k_checkpoints = ckpt;
        s->k_identity = ident;
        s->epoch = kr.epoch;
        rec = ckpt = ident = NULL;
        (void)store_exec(s, "PRAGMA wal_checkpoint(TRUNCATE)");
    }
out:
    pk_key_free(rec);
    pk_key_free(ckpt);
    pk_key_free(ident);
    pk_secure_wipe(&kr, sizeof kr);
    return st;
}

pk_status pk_store_identity_public(pk_store *s, uint8_t pk[32], char *err, size_t errlen)
{
    store_call(s, err, errlen);
    sqlite3_stmt *q = NULL;
    pk_status st =
        store_row(s, &q, "read identity", "SELECT public_key FROM identity WHERE id = 1", "");
    if (st == PK_OK && sqlite3_column_bytes(q, 0) == PK_SIGN_PK_BYTES)
        memcpy(pk, sqlite3_column_blob(q, 0), PK_SIGN_PK_BYTES);
    else if (st == PK_OK || st == PK_ERR_NOTFOUND)
        st = store_fail(s, PK_ERR_FORMAT, "%s: no valid device identity", s->path);
    sqlite3_finalize(q);
    return st;
}

pk_status pk_store_identity_sign(pk_store *s, const void *msg, size_t len, uint8_t sig[64],
                                 char *err, size_t errlen)
{
    store_call(s, err, errlen);
    sqlite3_stmt *q = NULL;
    uint8_t *sk = pk_secure_alloc(PK_SIGN_SK_BYTES);
    pk_status st = sk ? read_identity(s, &q) : PK_ERR_NOMEM;
    if (st == PK_OK)
        st = open_identity(s, q, sk);
    if (st == PK_OK)
        st = pk_sign_detached(sk, msg, len, sig);
    sqlite3_finalize(q);
    pk_secure_free(sk);
    return st;
}
