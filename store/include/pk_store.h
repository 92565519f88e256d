/* pk_store.h: the agent's SQLite store (DESIGN 6): datasets and sealed examples, runs, the MeZO
 * step log, eval points, checkpoints, sync state and the upload outbox. One file per agent home.
 * Examples and checkpoints are sealed by crypto/ (XChaCha20-Poly1305, row identity as AD);
 * plaintext is returned only in sodium_malloc'd memory, wiped on free.
 * Errors (DESIGN 9): every fallible function returns pk_status, and the ones that can say more
 * take (err, errlen) last: the message is written there on failure (err may be NULL).
 * Thread safety: a pk_store handle may move between threads but is never used by two at once. */
#ifndef PK_STORE_H
#define PK_STORE_H

#include "pk_common.h"

#include <stddef.h>
#include <stdint.h>

typedef struct pk_store pk_store;

/* ---- lifecycle ---------------------------------------------------------------------------- */

typedef struct pk_store_params {
    uint64_t opslimit; /* Argon2id ops limit; 0 = crypto_pwhash_OPSLIMIT_INTERACTIVE */
    size_t memlimit;   /* Argon2id memory limit in bytes; 0 = crypto_pwhash_MEMLIMIT_INTERACTIVE */
} pk_store_params;
pk_store_params pk_store_default_params(void);

/* Creates home_dir (mode 0700) and its database, derives keys from the passphrase, writes the
 * key-check record and a new Ed25519 device identity. PK_ERR_ARG if a store already exists.
 * passphrase is borrowed (len bytes, not NUL-terminated necessarily). */
PK_NODISCARD pk_status pk_store_init(const char *home_dir, const char *passphrase, size_t len,
                                     pk_store_params params, char *err, size_t errlen);
/* Opens an existing home: PK_ERR_NOTFOUND if there is none, PK_ERR_AUTH on a wrong passphrase
 * (checked before anything is written), PK_ERR_BUSY if another process holds it too long.
 * On failure *out is NULL and err (errlen bytes, borrowed, may be NULL) says why, naming the
 * file; the same err convention holds for pk_store_init. */
PK_NODISCARD pk_status pk_store_open(const char *home_dir, const char *passphrase, size_t len,
                                     pk_store **out, char *err, size_t errlen);
void pk_store_close(pk_store *s); /* NULL-safe; wipes keys */

/* ---- datasets and examples ---------------------------------------------------------------- */

/* All strings of a pk_example live in one sodium_malloc'd block owned by the example. */
void pk_example_free(pk_example *e); /* NULL-safe; wipes the plaintext */

/* Dataset id by name: PK_ERR_NOTFOUND if absent. */
PK_NODISCARD pk_status pk_store_dataset_id(pk_store *s, const char *name, int64_t *id, char *err,
                                           size_t errlen);
/* Number of examples in a dataset. */
PK_NODISCARD pk_status pk_store_example_count(pk_store *s, int64_t dataset_id, int64_t *n,
                                              char *err, size_t errlen);
/* The example ids of a dataset in id order; *ids is an owned result (free()). */
PK_NODISCARD pk_status pk_store_example_ids(pk_store *s, int64_t dataset_id, int64_t **ids,
                                            int64_t *n, char *err, size_t errlen);
/* Opens one sealed example: PK_ERR_AUTH if it was tampered with, moved or swapped.
 * *out is an owned result (pk_example_free). */
PK_NODISCARD pk_status pk_store_example_get(pk_store *s, int64_t dataset_id, int64_t example_id,
                                            pk_example **out, char *err, size_t errlen);

/* ---- runs, step log, evals, checkpoints ---------------------------------------------------- */

typedef struct pk_run_info {
    int64_t id;
    int64_t dataset_id;
    char status[16];    /* "running", "done", "stopped", "failed" */
    int64_t steps_done; /* number of logged steps (the run's progress) */
    int64_t steps_total;
    double created_at;    /* unix seconds */
    char base_hash[65];   /* hex BLAKE2b-256 of the base model weights */
    char *config_json;    /* owned: the run's settings (model dir, objective, lr, eps, ...) */
    int64_t parent_run;   /* 0, or the run whose weights after parent_steps steps it starts from */
    int64_t parent_steps; /* steps of the parent's log under this run (0 without a parent) */
} pk_run_info;
void pk_run_info_clear(pk_run_info *r); /* frees config_json; NULL-safe */

PK_NODISCARD pk_status pk_store_run_create(pk_store *s, int64_t dataset_id, const char *config_json,
                                           const char *base_hash, int64_t steps_total,
                                           int64_t *run_id, char *err, size_t errlen);
/* A new run with its lineage (DESIGN 13): the datasets it trains on (borrowed, n_datasets ids;
 * the first is the run row's dataset) and, when parent_run > 0, the parent whose weights after
 * parent_steps logged steps it starts from. PK_ERR_NOTFOUND if the parent is missing,
 * PK_ERR_ARG if it has fewer than parent_steps steps. One transaction. */
typedef struct pk_store_run_new {
    const int64_t *datasets; /* borrowed */
    size_t n_datasets;
    int64_t parent_run;   /* 0: starts from the base model */
    int64_t parent_steps; /* <= the parent's steps_done */
} pk_store_run_new;
PK_NODISCARD pk_status pk_store_run_create_ex(pk_store *s, const pk_store_run_new *r,
                                              const char *config_json, const char *base_hash,
                                              int64_t steps_total, int64_t *run_id, char *err,
                                              size_t errlen);
/* The runs whose weights carry dataset `name`: every run that trained on it, and every run
 * chained from one of those (transitively), in id order. *ids owned (free()). */
PK_NODISCARD pk_status pk_store_dataset_runs(pk_store *s, const char *name, int64_t **ids,
                                             int64_t *n, char *err, size_t errlen);
PK_NODISCARD pk_status pk_store_run_get(pk_store *s, int64_t run_id, pk_run_info *out, char *err,
                                        size_t errlen);
PK_NODISCARD pk_status pk_store_run_set_status(pk_store *s, int64_t run_id, const char *status,
                                               char *err, size_t errlen);
/* Marks run_id as running in this process until pk_store_lease_release or pk_store_close of s:
 * a lease row (pid, process start time) and a lock held through s on byte run_id of
 * HOME/leases.lock (DESIGN 13), which the kernel drops when the process dies. PK_ERR_BUSY,
 * errmsg "run N is already running (pid P)", if another live process holds it; a lease left by
 * a process that is gone (kill -9) is taken over. While a live lease exists, pk_store_rekey and
 * pk_store_dataset_forget of its datasets refuse. A child forked without exec shares s's lock
 * (an exec'd program does not: the file is close-on-exec). */
PK_NODISCARD pk_status pk_store_lease_acquire(pk_store *s, int64_t run_id, char *err,
                                              size_t errlen);
/* Drops this process's lease on run_id (nothing if it holds none). */
PK_NODISCARD pk_status pk_store_lease_release(pk_store *s, int64_t run_id, char *err,
                                              size_t errlen);
/* All run ids, newest first; *ids is an owned result (free()). */
PK_NODISCARD pk_status pk_store_run_list(pk_store *s, int64_t **ids, int64_t *n, char *err,
                                         size_t errlen);

/* Appends the rows of one step AND sets the run's steps_done = rows[0].step + 1, in one
 * transaction: a crash loses at most the step in flight. */
PK_NODISCARD pk_status pk_store_steps_append(pk_store *s, int64_t run_id, const pk_step_row *rows,
                                             size_t n_rows, char *err, size_t errlen);
/* Rows with step in [from_step, to_step) in (step, q_index) order; *rows owned (free()). */
PK_NODISCARD pk_status pk_store_steps_read(pk_store *s, int64_t run_id, int64_t from_step,
                                           int64_t to_step, pk_step_row **rows, size_t *n_rows,
                                           char *err, size_t errlen);
/* Eval points (for plots and early stopping). */
PK_NODISCARD pk_status pk_store_eval_append(pk_store *s, int64_t run_id, int64_t step, double loss,
                                            double accuracy /* NAN if none */, char *err,
                                            size_t errlen);
PK_NODISCARD pk_status pk_store_eval_read(pk_store *s, int64_t run_id, int64_t **steps,
                                          double **loss, double **accuracy, size_t *n, char *err,
                                          size_t errlen);
/* The training seconds of the run up to an eval point already appended (cumulative over
 * resumes; evals excluded), for plots by wall-clock. PK_ERR_NOTFOUND without that point. */
PK_NODISCARD pk_status pk_store_eval_set_seconds(pk_store *s, int64_t run_id, int64_t step,
                                                 double elapsed_s, char *err, size_t errlen);
/* The eval points that carry seconds, in step order: *steps and *seconds owned results (free()),
 * *n of them (0 for a run evaluated before seconds were stored). */
PK_NODISCARD pk_status pk_store_eval_seconds(pk_store *s, int64_t run_id, int64_t **steps,
                                             double **seconds, size_t *n, char *err, size_t errlen);
/* Materialized weights after `step` steps, sealed with the checkpoint subkey (AD: run, step).
 * blob is borrowed; get returns the newest checkpoint with step <= max_step, or PK_ERR_NOTFOUND;
 * *blob is an owned result in sodium memory (pk_store_blob_free). */
PK_NODISCARD pk_status pk_store_checkpoint_put(pk_store *s, int64_t run_id, int64_t step,
                                               const void *blob, size_t len, char *err,
                                               size_t errlen);
PK_NODISCARD pk_status pk_store_checkpoint_get(pk_store *s, int64_t run_id, int64_t max_step,
                                               int64_t *step, void **blob, size_t *len, char *err,
                                               size_t errlen);
void pk_store_blob_free(void *blob, size_t len); /* NULL-safe; wipes */

/* ---- sync state, outbox, identity ----------------------------------------------------------- */

/* Small key/value state for the sync client (server URL, device id, log version, ...). Values
 * are not secret (stored in clear). get: PK_ERR_NOTFOUND if absent; *value owned (free()). */
PK_NODISCARD pk_status pk_store_state_set(pk_store *s, const char *key, const char *value,
                                          char *err, size_t errlen);
PK_NODISCARD pk_status pk_store_state_get(pk_store *s, const char *key, char **value, char *err,
                                          size_t errlen);
/* Outbox: an upload is stored before it is sent and removed only when the server has answered,
 * so a crash or a network failure never loses or duplicates it (idempotency key is unique). */
PK_NODISCARD pk_status pk_store_outbox_put(pk_store *s, const char *idem_key, const char *body,
                                           char *err, size_t errlen);
/* Oldest pending entry, or PK_ERR_NOTFOUND; *idem_key and *body owned (free()). */
PK_NODISCARD pk_status pk_store_outbox_peek(pk_store *s, char **idem_key, char **body, char *err,
                                            size_t errlen);
PK_NODISCARD pk_status pk_store_outbox_done(pk_store *s, const char *idem_key, char *err,
                                            size_t errlen);

/* The device identity (Ed25519): public key (32 bytes) and detached signature (64 bytes). */
PK_NODISCARD pk_status pk_store_identity_public(pk_store *s, uint8_t pk[32], char *err,
                                                size_t errlen);
PK_NODISCARD pk_status pk_store_identity_sign(pk_store *s, const void *msg, size_t len,
                                              uint8_t sig[64], char *err, size_t errlen);

/* ---- import, datasets and examples ----------------------------------------------------------- */

/* The database file of a home: "<home>/pocketllm.db". Writes into out (n bytes); -1 if too long. */
int pk_store_db_path(const char *home_dir, char *out, size_t n);

/* New passphrase (borrowed, len bytes) and Argon2id limits: a fresh salt, new keys, every sealed
 * row re-encrypted, all in ONE transaction (a crash leaves the old passphrase valid, never a mix).
 * The handle then uses the new keys. */
PK_NODISCARD pk_status pk_store_rekey(pk_store *s, const char *passphrase, size_t len,
                                      pk_store_params params, char *err, size_t errlen);

/* Importers (DESIGN 3). Formats: JSONL (one object per line: "text", or "prompt"+"response",
 * or "text" [+ "text2"] + "label"; "label" may be a string, number or boolean), TXT (one example
 * per line, or per blank-line-separated paragraph), CSV (a header row naming the same columns;
 * RFC 4180 quoting). Input must be UTF-8; records are at most PK_IMPORT_MAX_RECORD bytes. */
typedef enum pk_import_format {
    PK_IMPORT_AUTO = 0, /* from the file extension: .jsonl/.json, .txt, .csv */
    PK_IMPORT_JSONL,
    PK_IMPORT_TXT,
    PK_IMPORT_CSV,
} pk_import_format;
typedef struct pk_import_opts {
    pk_import_format format;
    int paragraphs; /* TXT: one example per blank-line-separated paragraph */
    /* Optional: called after every 64th example added and once at the end, with the count so
     * far (pk_store_import only; e.g. a progress display). */
    void (*progress)(void *user, int64_t n_examples);
    void *progress_user;
} pk_import_opts;
#define PK_IMPORT_MAX_RECORD (1u << 20)
/* Called once per parsed example; line is the 1-based line where it starts. The strings are
 * views into wiped secure buffers, valid only during the call. A non-PK_OK return stops. */
typedef pk_status (*pk_import_fn)(void *user, const pk_example *ex, int64_t line);
/* Parses data (borrowed, len bytes; no AUTO format) and calls fn per example. On a bad record
 * returns PK_ERR_FORMAT and err says "line N: why". For tests and fuzzing. */
PK_NODISCARD pk_status pk_import_parse_buffer(const void *data, size_t len, pk_import_opts opts,
                                              pk_import_fn fn, void *user, char *err,
                                              size_t errlen);
/* Streams FILE into dataset `name` (created if absent, else appended to) in ONE transaction
 * with constant memory: all of the file or none of it. A bad record: PK_ERR_FORMAT and
 * errmsg "FILE:LINE: why". *n_imported (may be NULL) gets the number of examples added. */
PK_NODISCARD pk_status pk_store_import(pk_store *s, const char *path, const char *name,
                                       pk_import_opts opts, int64_t *n_imported, char *err,
                                       size_t errlen);
/* pk_store_import from memory: data (borrowed, len bytes) in opts.format (not AUTO), into
 * dataset `name` in ONE transaction; a bad record: PK_ERR_FORMAT and err "line N: why". */
PK_NODISCARD pk_status pk_store_import_buffer(pk_store *s, const void *data, size_t len,
                                              const char *name, pk_import_opts opts,
                                              int64_t *n_imported, char *err, size_t errlen);
/* Adds one example to a dataset (created if absent); *id (may be NULL) gets its id. */
PK_NODISCARD pk_status pk_store_example_add(pk_store *s, const char *name, const pk_example *ex,
                                            int64_t *id, char *err, size_t errlen);

typedef struct pk_dataset_info {
    int64_t id;
    char name[128];
    int64_t n_examples;
    int64_t sealed_bytes; /* bytes of sealed records on disk */
    double created_at;    /* unix seconds */
} pk_dataset_info;
/* All datasets by name; *out is an owned result (free()). */
PK_NODISCARD pk_status pk_store_dataset_list(pk_store *s, pk_dataset_info **out, size_t *n,
                                             char *err, size_t errlen);
/* Deletes a dataset and its examples (pages wiped: secure_delete + WAL checkpoint); runs that
 * used it keep their step logs with dataset_id 0. PK_ERR_NOTFOUND if absent. */
PK_NODISCARD pk_status pk_store_dataset_forget(pk_store *s, const char *name, char *err,
                                               size_t errlen);
/* pk_store_dataset_forget, and with with_runs != 0 also every run of pk_store_dataset_runs
 * (its step log, evals, checkpoints) in the same transaction. *runs (may be NULL; owned,
 * free()) gets those runs: deleted with with_runs, else the runs whose weights still carry the
 * dataset. PK_ERR_BUSY if one of them is training. */
PK_NODISCARD pk_status pk_store_dataset_forget_ex(pk_store *s, const char *name, int with_runs,
                                                  int64_t **runs, int64_t *n_runs, char *err,
                                                  size_t errlen);
/* The highest example id of the given datasets (0 if they hold none): ids only grow, so a run
 * pins its example set with it. */
PK_NODISCARD pk_status pk_store_examples_max_id(pk_store *s, const int64_t *datasets, size_t n,
                                                int64_t *max_id, char *err, size_t errlen);

/* ---- the on-device agent's row (one per home) ----------------------------------------------- */

/* Claims the home's agent row for this process (pid and process start time; held alive by a
 * lock through s on byte 0 of HOME/leases.lock until pk_store_agent_release or
 * pk_store_close). PK_ERR_BUSY, "an agent is already running on HOME (pid P)", if a live process
 * holds it; a row left by a dead process is taken over. Clears any stop request. */
PK_NODISCARD pk_status pk_store_agent_claim(pk_store *s, char *err, size_t errlen);
/* Drops this process's agent row (nothing if it holds none). */
PK_NODISCARD pk_status pk_store_agent_release(pk_store *s, char *err, size_t errlen);
/* Writes status_json (borrowed) into this process's row. */
PK_NODISCARD pk_status pk_store_agent_set_status(pk_store *s, const char *status_json, char *err,
                                                 size_t errlen);
/* 1 in *stop once `pocketllm agent stop` asked this process's agent to stop. */
PK_NODISCARD pk_status pk_store_agent_stop_requested(pk_store *s, int *stop, char *err,
                                                     size_t errlen);
typedef struct pk_store_agent_info {
    long pid;
    int alive; /* the process still runs */
    int stop_requested;
    double started_at; /* unix seconds */
    double updated_at; /* unix seconds of the last status */
    char *status_json; /* owned (pk_store_agent_info_clear) */
} pk_store_agent_info;
void pk_store_agent_info_clear(pk_store_agent_info *a); /* NULL-safe */
/* The agent row; PK_ERR_NOTFOUND when no agent ever ran or the last one ended cleanly. */
PK_NODISCARD pk_status pk_store_agent_get(pk_store *s, pk_store_agent_info *out, char *err,
                                          size_t errlen);
/* Asks the live agent to stop at its next step boundary; *pid gets its pid. PK_ERR_NOTFOUND
 * if no live agent holds the home. */
PK_NODISCARD pk_status pk_store_agent_request_stop(pk_store *s, long *pid, char *err,
                                                   size_t errlen);

/* Whether an agent runs on home, read from its lock without opening the store (no passphrase,
 * no database access): 1 if a live process holds the agent's lock, 0 if none does, -1 if the
 * lock cannot tell (a home no agent of this version ran on, or a system without OFD locks). */
int pk_store_agent_running(const char *home);

/* Deletes one example, pages wiped. PK_ERR_NOTFOUND if absent. */
PK_NODISCARD pk_status pk_store_example_forget(pk_store *s, int64_t example_id, char *err,
                                               size_t errlen);
/* Decodes the plaintext of a sealed example record (the format in docs/STORE.md) into a
 * pk_example (owned, pk_example_free). PK_ERR_FORMAT if malformed. For tests and fuzzing. */
PK_NODISCARD pk_status pk_example_decode(const void *buf, size_t len, int64_t id, pk_example **out);

/* The dataset of an example (PK_ERR_NOTFOUND if absent). */
PK_NODISCARD pk_status pk_store_example_dataset(pk_store *s, int64_t example_id,
                                                int64_t *dataset_id, char *err, size_t errlen);

#endif /* PK_STORE_H */
