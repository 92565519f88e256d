/* server_impl.h: private declarations of the coordinator (pocketllm-server-mock): the task, the
 * SQLite state, the HTTP layer, the hub file server and fault injection. docs/PROTOCOL.md is the
 * wire contract. Thread safety: srv_db serializes itself with a mutex; srv_task is read-only
 * after startup; the fault RNG is an atomic counter. */
#ifndef PK_SRV_INTERNAL_H
#define PK_SRV_INTERNAL_H

#include "pk_common.h"
#include "srv_proto.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define SRV_UPLOAD_BODY_MAX (64 * 1024)
#define SRV_SMALL_BODY_MAX  1024

/* ---- task (task.c) ------------------------------------------------------------------------ */
typedef struct srv_task {
    char task_id[PKP_MAX_NAME + 1];
    char base_model_hash[129];
    uint32_t pool_size; /* K, 1..65535 */
    uint8_t pool_seed[32];
    char z_kind[16]; /* "gaussian" | "rademacher" */
    float lr, eps;
    int local_steps, batch_size;
    char trainable[64];
    int quorum;        /* uploads that close a round */
    double deadline_s; /* seconds a round stays open (if it has an upload) */
    double max_abs_g;
    int64_t max_examples;
    double dp_clip, dp_noise; /* 0 = off */
} srv_task;

/* Parses and validates a task file's JSON; err names the key at fault. */
PK_NODISCARD pk_status srv_task_parse(const char *json, srv_task *t, char *err, size_t errlen);
/* The task as the GET /v1/task JSON members (without the round fields), "{...": owned, open:
 * the caller appends the round members and the closing brace. */
char *srv_task_json_prefix(const srv_task *t);

/* ---- upload bodies (upload.c) ------------------------------------------------------------ */
typedef struct srv_err {
    unsigned status;  /* HTTP status */
    const char *code; /* protocol error code (static) */
    char msg[256];
} srv_err;

typedef struct srv_upload_req {
    char task_id[PKP_MAX_NAME + 1];
    int task_ok; /* task_id is this coordinator's */
    int64_t round, examples;
    char device_id[PKP_DEVICE_ID_LEN + 1];
    char idem[PKP_MAX_NAME + 1];
    uint8_t *updates; /* packed, validated (owned) */
    size_t updates_len;
    uint8_t sig[64];
} srv_upload_req;

/* Parses and validates an upload body against the task: 1 ok (*u filled, release with
 * srv_upload_req_free), 0 with *e set (and nothing to release). */
int srv_upload_parse(const srv_task *t, const char *body, size_t len, int64_t path_round,
                     srv_upload_req *u, srv_err *e);
void srv_upload_req_free(srv_upload_req *u); /* NULL-safe */

/* ---- state (db.c) ------------------------------------------------------------------------- */
typedef struct srv_db srv_db;

typedef struct srv_round {
    int64_t round;    /* the open round (== log_version + 1) */
    double opened_at; /* Unix seconds */
    double deadline;  /* Unix seconds */
    int64_t uploads;  /* accepted in the open round */
    int64_t log_version;
    uint8_t head[PKP_HASH_BYTES];
} srv_round;

typedef enum srv_submit_result {
    SRV_SUB_ACCEPTED = 0,   /* new upload stored; *response is the answer */
    SRV_SUB_REPEAT,         /* same device + key + message: *response is the first answer */
    SRV_SUB_IDEM_CONFLICT,  /* same device + key, different message */
    SRV_SUB_ROUND_CLOSED,   /* round < open round */
    SRV_SUB_ROUND_NOT_OPEN, /* round > open round */
    SRV_SUB_DUPLICATE,      /* this device already uploaded in this round (another key) */
} srv_submit_result;

typedef struct srv_upload {
    int64_t round;
    const char *device_id, *idem_key;
    int64_t examples;
    const uint8_t *updates; /* packed, validated */
    size_t updates_len;
    uint8_t msg_hash[PKP_HASH_BYTES];
} srv_upload;

/* Opens (creating) the database: WAL, synchronous=NORMAL (durable across process crashes).
 * task_json: stored on first open; on reopen the stored task must have the same task_id. */
PK_NODISCARD pk_status srv_db_open(const char *path, const srv_task *task, const char *task_json,
                                   double now, srv_db **out, char *err, size_t errlen);
void srv_db_close(srv_db *db);
/* The task JSON stored in a database (for a restart without --task). *json owned (free()). */
PK_NODISCARD pk_status srv_db_read_task(const char *path, char **json, char *err, size_t errlen);

PK_NODISCARD pk_status srv_db_device_put(srv_db *db, const char *id, const uint8_t pk[32],
                                         double now, int *created);
PK_NODISCARD pk_status srv_db_device_get(srv_db *db, const char *id, uint8_t pk[32]);
void srv_db_round_get(srv_db *db, srv_round *r);
/* The whole upload decision in one transaction; may close the round (quorum). *response owned. */
PK_NODISCARD pk_status srv_db_submit(srv_db *db, const srv_upload *u, double now,
                                     srv_submit_result *res, char **response);
/* Closes the open round if its deadline passed (>= 1 upload) or extends it (none). */
PK_NODISCARD pk_status srv_db_tick(srv_db *db, double now);
/* GET /v1/log body. *json owned. */
PK_NODISCARD pk_status srv_db_log_json(srv_db *db, int64_t since, int limit, char **json);

/* ---- faults (faults.c) -------------------------------------------------------------------- */
typedef struct srv_faults {
    double delay_p, delay_ms, drop_p, err_p, trunc_p;
    uint64_t seed;
    atomic_uint_fast64_t counter; /* requests drawn so far */
} srv_faults;

typedef enum srv_fault {
    SRV_FAULT_NONE = 0,
    SRV_FAULT_5XX,      /* answer 503 without handling */
    SRV_FAULT_DROP,     /* handle, then close without an answer */
    SRV_FAULT_TRUNCATE, /* handle, then send half the body and close */
} srv_fault;

PK_NODISCARD pk_status srv_faults_parse(const char *spec, srv_faults *f, char *err, size_t errlen);
/* Draws the faults of the next request: *delay_ms (0 = none) and the kind. */
srv_fault srv_faults_draw(srv_faults *f, double *delay_ms);

/* ---- server (server.c, hub.c) ------------------------------------------------------------- */
typedef struct srv_hash_cache srv_hash_cache;

typedef struct srv {
    srv_task task;
    srv_db *db;
    const char *hub_dir;     /* borrowed, may be NULL */
    const char *capture_dir; /* borrowed, may be NULL */
    int faults_on;
    srv_faults faults;
    atomic_uint_fast64_t n_requests;
    srv_hash_cache *hashes; /* sha256 of hub files */
} srv;

double srv_wall_now(void);

struct MHD_Connection;
struct MHD_Daemon;
/* Starts MHD on host:port (numeric IPv4; port 0 = any free port) with a pool of `threads`. */
struct MHD_Daemon *srv_start(srv *s, const char *host, int port, int threads, int *bound_port);
/* Answers a hub request (GET/HEAD /{repo}/resolve/{rev}/{file}, GET /api/models/{repo}).
 * Returns the MHD result of queueing. */
int srv_hub_handle(srv *s, struct MHD_Connection *c, const char *method, const char *url,
                   srv_fault fault);
srv_hash_cache *srv_hash_cache_new(void);
void srv_hash_cache_free(srv_hash_cache *hc);

/* Error / JSON answers (server.c), with the truncate fault applied when asked. */
int srv_reply(struct MHD_Connection *c, unsigned status, const char *json, srv_fault fault);
int srv_reply_error(struct MHD_Connection *c, unsigned status, const char *code, srv_fault fault,
                    const char *fmt, ...) PK_PRINTF(5, 6);

#endif /* PK_SRV_INTERNAL_H */
