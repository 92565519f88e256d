/* sync_impl.h: private to net/. The wire format of the sync protocol (docs/PROTOCOL.md), written
 * in sync_wire.c and used by the round logic in sync.c: the task and its seed pool, packed
 * updates, the canonical messages that are signed or hashed, the JSON bodies sent and the
 * coordinator's answers parsed, and the text forms of the sync state kept in the store.
 * Everything here is pure (no store, no HTTP, no model) except sync_idempotency_key (CSPRNG).
 * Functions that can say what was wrong take err/errlen (may be NULL/0) and name the field. */
#ifndef PK_SYNC_IMPL_H
#define PK_SYNC_IMPL_H

#include "pk_net.h"

#include <cJSON.h>
#include <stddef.h>
#include <stdint.h>

#define SYNC_POOL_MAX  65535 /* largest pool: k travels as a u16 (PROTOCOL 3) */
#define SYNC_ID_MAX    64    /* longest task id */
#define SYNC_HASH      32    /* BLAKE2b-256 bytes of the log chain */
#define SYNC_PAIR_SIZE 6     /* one packed (u16le k, f32le v) pair */

/* The task as GET /v1/task answers it (PROTOCOL 2 and 4), plus its expanded seed pool. */
typedef struct sync_task {
    char id[SYNC_ID_MAX + 1];
    char base_hash[129]; /* the base model's weights hash (hex) */
    int64_t K;           /* pool size */
    uint8_t pool_seed[32];
    pk_z_kind kind;
    float lr, eps;
    int64_t local_steps;
    double max_abs_g;     /* bound on one uploaded sum of g */
    int64_t max_examples; /* bound on the example count of one upload */
    double dp_clip, dp_noise;
    char trainable[64];  /* the task's trainable subset name ("" if not given) */
    int64_t round;       /* the open round */
    int64_t log_version; /* newest log entry on the coordinator */
    uint64_t *seeds;     /* [K] the pool (owned; sync_task_pool fills it) */
} sync_task;

/* One (pool index, value) of an update, in ascending k. */
typedef struct sync_pair {
    uint32_t k;
    float v;
} sync_pair;

/* The fields of one upload (PROTOCOL 5); all borrowed. */
typedef struct sync_upload {
    const char *task_id;
    int64_t round;
    const char *device_id;
    const char *idem; /* idempotency key */
    int64_t examples;
    const uint8_t *packed; /* packed pairs (sync_pack_pairs) */
    size_t packed_len;     /* bytes, a multiple of SYNC_PAIR_SIZE */
} sync_upload;

/* One global log entry as GET /v1/log sends it (PROTOCOL 6). updates is a view into the JSON. */
typedef struct sync_entry {
    int64_t version;
    float lr;
    int64_t uploads;
    int64_t examples;
    const char *updates; /* base64 of the packed pairs */
    uint8_t prev[SYNC_HASH], hash[SYNC_HASH];
} sync_entry;

/* ---- identifiers ---- */

/* 1 if s is a task id: 1..64 characters of [A-Za-z0-9._-]. */
int sync_valid_id(const char *s);
/* "d" + hex of the first 8 bytes of BLAKE2b-256(public key): what the coordinator derives too. */
void sync_device_id(const uint8_t pk[32], char out[24]);
/* "u-" + 32 random hex digits. */
void sync_idempotency_key(char out[40]);

/* ---- packed updates (PROTOCOL 3) ---- */

/* n pairs -> n x (u16le k || f32le v); *out owned (free()), n * SYNC_PAIR_SIZE bytes. */
PK_NODISCARD pk_status sync_pack_pairs(const sync_pair *pr, size_t n, uint8_t **out);
/* base64 -> validated pairs (ascending k < K, finite values); *out owned (free()). *raw (may be
 * NULL) gets the packed bytes (owned), *raw_len their length. PK_ERR_FORMAT names the reason in
 * err (not base64, not whole pairs, k out of the pool, out of order, non-finite). */
PK_NODISCARD pk_status sync_unpack_b64(const char *b64, int64_t K, sync_pair **out, size_t *n,
                                       uint8_t **raw, size_t *raw_len, char *err, size_t errlen);

/* ---- canonical messages (PROTOCOL 5 and 6) ---- */

/* The bytes an upload's signature covers; *out owned (free()). */
PK_NODISCARD pk_status sync_upload_msg(const sync_upload *u, uint8_t **out, size_t *out_len);
/* hash_v = BLAKE2b-256(prev || entry_v) of entry e (its prev and hash fields are not read) with
 * its packed updates. */
PK_NODISCARD pk_status sync_entry_hash(const char *task_id, const sync_entry *e,
                                       const uint8_t *packed, size_t plen,
                                       const uint8_t prev[SYNC_HASH], uint8_t out[SYNC_HASH]);

/* ---- request bodies ---- */

/* {"public_key":"<64 hex>"} into out (cap >= 96). */
void sync_register_body(const uint8_t pk[32], char *out, size_t cap);
/* The JSON body of POST /v1/rounds/{round}/updates; *out owned (free()). */
PK_NODISCARD pk_status sync_upload_body(const sync_upload *u, const uint8_t sig[64], char **out);
/* The round and task of an upload body kept in the outbox; PK_ERR_FORMAT if it is not one. */
PK_NODISCARD pk_status sync_outbox_parse(const char *body, int64_t *round,
                                         char task_id[SYNC_ID_MAX + 1]);

/* ---- the coordinator's answers ---- */

/* Fills t (seeds untouched) from a task answer. PK_ERR_FORMAT / PK_ERR_UNSUPPORTED name the
 * field in err. */
PK_NODISCARD pk_status sync_task_parse(const cJSON *j, sync_task *t, char *err, size_t errlen);
/* t->seeds = the K seeds of the pool (replacing any previous ones). */
PK_NODISCARD pk_status sync_task_pool(sync_task *t);
/* A page of GET /v1/log: its head version, entries (a view into j) and "more" flag; the page
 * must be for task_id. PK_ERR_FORMAT names the field in err. */
PK_NODISCARD pk_status sync_log_page_parse(const cJSON *j, const char *task_id, int64_t *head,
                                           const cJSON **entries, int *more, char *err,
                                           size_t errlen);
/* One entry of that page; PK_ERR_FORMAT names the field in err. */
PK_NODISCARD pk_status sync_entry_parse(const cJSON *e, sync_entry *out, char *err, size_t errlen);
/* log_version of a /v1/health answer; -1 if it has none. */
int64_t sync_health_version(const cJSON *j);
/* The "device_id" of a registration answer (view), or NULL. */
const char *sync_answer_device_id(const cJSON *j);
/* 1 if an upload answer says "accepted": true. */
int sync_answer_accepted(const cJSON *j);
/* The error object of a 4xx/5xx answer: code into code[64] ("unknown" if absent), *message a
 * view or NULL. */
void sync_answer_error(const cJSON *j, char code[64], const char **message);

/* ---- the sync state in the store (text values) ---- */

/* "<version>:<hash hex>" of the newest verified log entry (96 bytes is enough). */
void sync_head_format(int64_t version, const uint8_t hash[SYNC_HASH], char *out, size_t cap);
PK_NODISCARD pk_status sync_head_parse(const char *v, int64_t *version, uint8_t hash[SYNC_HASH]);
/* A stored log entry: "<lr as 8 hex digits of its f32 bits>:<updates base64>"; *out owned. */
PK_NODISCARD pk_status sync_log_value_format(float lr, const char *b64, char **out);
/* Its lr and validated pairs (*pr owned, free()); PK_ERR_FORMAT if it is corrupt. */
PK_NODISCARD pk_status sync_log_value_parse(const char *v, int64_t K, float *lr, sync_pair **pr,
                                            size_t *n);
/* The accountant's RDP per order as PK_DP_N_ORDERS comma-separated %.17g values; *out owned. */
PK_NODISCARD pk_status sync_rdp_format(const double rdp[PK_DP_N_ORDERS], char **out);
/* PK_ERR_FORMAT if a value is missing, not a number or negative (inf is valid: no guarantee). */
PK_NODISCARD pk_status sync_rdp_parse(const char *v, double rdp[PK_DP_N_ORDERS]);

#endif /* PK_SYNC_IMPL_H */
