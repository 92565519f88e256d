/* store_impl.h: private declarations shared by the store's .c files (never included outside). */
#ifndef PK_STORE_INTERNAL_H
#define PK_STORE_INTERNAL_H

#include "pk_crypto.h"
#include "pk_store.h"

#include <sqlite3.h>

#define STORE_DB_NAME        "pocketllm.db"
#define STORE_SCHEMA_VERSION 4
#define STORE_KEYCHECK_TEXT  "pocketllm key check v1"

struct pk_store {
    sqlite3 *db;
    char home[1024];       /* agent home directory */
    char path[1100];       /* database file */
    pk_key *k_records;     /* subkey for examples */
    pk_key *k_checkpoints; /* subkey for checkpoints */
    pk_key *k_identity;    /* subkey for the sealed Ed25519 secret */
    char errmsg[768];      /* the message being built for the current call's err buffer */
    char *err;             /* the err buffer of the public call in progress (store_call): */
    size_t errlen;         /* valid only during that call; NULL when the caller passed none */
    int64_t epoch;         /* keyring epoch the keys above were derived at */
    int epoch_known;       /* 1 once the keys are in place: write transactions check epoch */
    int readonly;          /* the home is not writable: opened immutable, writes refused */
    int lock_fd;           /* HOME/leases.lock, open once this handle took a lease (-1: not) */
};

/* Every public function that takes (err, errlen) registers them first: store_fail writes its
 * message there (DESIGN 9: the caller's buffer). Clears err. */
void store_call(pk_store *s, char *err, size_t errlen);
/* Sets s->errmsg (printf format), copies it to the current call's err buffer, returns st. */
pk_status store_fail(pk_store *s, pk_status st, const char *fmt, ...) PK_PRINTF(3, 4);
/* Maps an SQLite result code to a status, sets errmsg "<path>: <what>: <sqlite message>". */
pk_status store_db_fail(pk_store *s, int rc, const char *what);
/* Runs SQL without results. */
pk_status store_exec(pk_store *s, const char *sql);
/* BEGIN IMMEDIATE (a clear busy error if another process holds the write lock), COMMIT,
 * ROLLBACK (always safe to call; keeps the first error's message). */
pk_status store_begin(pk_store *s);
pk_status store_commit(pk_store *s);
void store_rollback(pk_store *s);
pk_status store_prepare(pk_store *s, const char *sql, sqlite3_stmt **st);
/* The statement shapes every table uses. Parameters ?1, ?2, ... are bound from the arguments
 * after `types`, one letter each: 'i' int64_t, 'I' int64_t bound as NULL when <= 0, 'd' double,
 * 'D' double bound as NULL when NaN, 't' const char * (NULL binds NULL), 'b' const void *,
 * size_t (a blob). The arguments must have exactly these types (cast ints to int64_t).
 * store_query prepares and binds (*q to step and finalize). */
pk_status store_query(pk_store *s, sqlite3_stmt **q, const char *sql, const char *types, ...);
/* Prepares, binds, steps to the end and finalizes a statement that returns no rows; a database
 * error names `what`. sqlite3_changes and sqlite3_last_insert_rowid read its effect. */
pk_status store_run(pk_store *s, const char *what, const char *sql, const char *types, ...);
/* Prepares, binds and steps once: PK_OK with *q on the first result row (the caller reads it,
 * then finalizes *q); PK_ERR_NOTFOUND with no message when there is none, or a database error
 * naming `what` (*q NULL in both). */
pk_status store_row(pk_store *s, sqlite3_stmt **q, const char *what, const char *sql,
                    const char *types, ...);
/* Seconds since the epoch (the created_at columns). */
double store_now(void);
/* Opens a sealed record into a fresh secure buffer (*pt owned, pk_secure_free); the associated
 * data is pk_record_ad(kind, a, b). PK_ERR_AUTH (no message) when it fails to open. */
pk_status store_open_record(const pk_key *k, uint8_t kind, int64_t a, int64_t b, const uint8_t *rec,
                            size_t reclen, uint8_t **pt, size_t *ptlen);
/* Fills one `size`-byte row of a store_collect array from q's current result row. */
typedef void (*store_row_fn)(sqlite3_stmt *q, void *row);
/* Steps q (prepared and bound) to its end, one row through fn per result row, into a malloc'd
 * array that grows from `first` rows by doubling; always finalizes q. PK_OK: *rows (free())
 * and *n hold the rows (NULL, 0 when none); otherwise nothing stays allocated and a database
 * error names `what`. */
pk_status store_collect(pk_store *s, sqlite3_stmt *q, size_t size, size_t first, store_row_fn fn,
                        const char *what, void **rows, size_t *n);

/* PK_ERR_BUSY naming the run if a live process holds a lease on a run that trains on dataset
 * `name` (id dataset_id) or evaluates on it; PK_OK otherwise. Inside the caller's transaction. */
pk_status store_dataset_not_leased(pk_store *s, int64_t dataset_id, const char *name);
/* PK_ERR_BUSY naming the run if any live lease exists (rekey waits for no trainer). */
pk_status store_no_live_lease(pk_store *s);

/* Liveness of lease holders (leases.c, DESIGN 13): a holder locks one byte of HOME/leases.lock
 * (OFD lock: the kernel drops it when the process dies) for as long as it holds its row. */
#define STORE_LOCK_AGENT 0 /* the agent row's byte; run N's lease locks byte N (N >= 1) */
/* Start time of process pid in clock ticks since boot, 0 if unknown (the fallback's pid check). */
int64_t store_proc_start(long pid);
/* 1 if a live process (this one's other handles included) locks byte `at`, 0 if none does, -1
 * if the lock cannot tell (no lock file on this home yet, or no OFD locks on this system). */
int store_lock_held(const char *home, int64_t at);
/* 1 if the holder of a row locking byte `at` (pid, its start time) is alive: the lock when it
 * can tell, else the pid and start time (a recycled pid is not mistaken for the holder). */
int store_holder_alive(pk_store *s, int64_t at, long pid, int64_t start);
/* Locks byte `at` through this handle (until store_lock_drop or pk_store_close). PK_ERR_BUSY
 * without a message when another open description holds it; PK_OK without a lock where the
 * system has no OFD locks. */
pk_status store_lock_take(pk_store *s, int64_t at);
void store_lock_drop(pk_store *s, int64_t at);
/* Claims byte `at` for this process inside the write transaction that read the holder's row
 * (live: that row's holder is alive, with pid). PK_ERR_BUSY with "WHO (pid N)" when another
 * process holds it; PK_OK when this process does already (another handle of it), else the lock
 * is taken and *locked set to 1 (drop it if the row is not written). */
pk_status store_lock_claim(pk_store *s, int64_t at, int live, long pid, const char *who,
                           int *locked);
/* Ends the write transaction of a claim of byte `at` with status st: on failure the lock it took
 * (locked) is dropped first, then whatever is still open is rolled back. Returns st. */
pk_status store_claim_end(pk_store *s, int64_t at, int locked, pk_status st);
/* Runs a one-int64-parameter statement; *changes (may be NULL) gets the changed rows. */
pk_status store_exec_int(pk_store *s, const char *sql, int64_t arg, int *changes);
/* Ends a forget transaction: commits if st is PK_OK (else rolls back), then wipes the WAL. */
pk_status store_finish_forget(pk_store *s, pk_status st);

/* Examples plaintext encoding (examples.c). */
pk_status example_encode(const pk_example *e, uint8_t **buf, size_t *len); /* secure buffer */
pk_status example_decode(const uint8_t *buf, size_t len, int64_t id, pk_example **out);
/* Reseals every example and checkpoint with new keys inside the caller's transaction. */
pk_status store_reseal_all(pk_store *s, const pk_key *new_records, const pk_key *new_ckpt);
/* Streams a file through the parser of its format (import.c); err gets "FILE: line N: why". */
pk_status import_file(const char *path, pk_import_opts opts, pk_import_fn fn, void *user, char *err,
                      size_t errlen);

#endif /* PK_STORE_INTERNAL_H */
