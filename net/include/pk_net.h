/* pk_net.h: the federated client (DESIGN 7): the differential-privacy accountant and
 * noise helpers (dp.c), a small libcurl wrapper with timeouts, retries and size caps (http.c),
 * the sync round against the coordinator (sync.c; its wire format, docs/PROTOCOL.md, in
 * sync_wire.c), the MeZO model behind it (sync_mezo.c) and model download (pull.c).
 * Only seeds, scalars, counts and signatures leave the device (docs/SYNC.md).
 * Thread safety: a pk_http handle may move between threads but is never used by two at once;
 * the pk_dp_* functions are pure except pk_dp_gaussian (thread-safe CSPRNG). */
#ifndef PK_NET_H
#define PK_NET_H

#include "pk_common.h"
#include "pk_rng.h"

#include <stddef.h>
#include <stdint.h>

/* ---- differential privacy (dp.c) ----------------------------------------------------------- */

/* Rényi orders the accountant tracks: the integers 2 .. PK_DP_MAX_ORDER. */
#define PK_DP_MAX_ORDER 256
#define PK_DP_N_ORDERS  (PK_DP_MAX_ORDER - 1)
/* Order of entry j of an rdp[] array: j + 2. */
#define PK_DP_ORDER(j) ((j) + 2)

/* RDP at integer order alpha >= 2 of one step of the Poisson-subsampled Gaussian mechanism with
 * sampling rate q in [0, 1] and noise multiplier sigma > 0 (noise stddev / sensitivity),
 * Mironov, Talwar, Zhang 2019, the binomial expansion for integer orders (exact for Poisson
 * subsampling; the same bound as Opacus/TF-privacy compute_rdp). q = 1 gives alpha/(2 sigma^2).
 * PK_ERR_ARG on out-of-range arguments. */
PK_NODISCARD pk_status pk_dp_rdp_step(double q, double sigma, int alpha, double *rdp);
/* Adds the RDP of `steps` compositions of that mechanism to rdp[PK_DP_N_ORDERS] (borrowed, in
 * and out): RDP composes additively, so rounds with different (q, sigma) accumulate here. */
PK_NODISCARD pk_status pk_dp_rdp_add(double q, double sigma, int64_t steps,
                                     double rdp[PK_DP_N_ORDERS]);
/* (epsilon, delta)-DP from accumulated RDP, minimised over the orders, with the conversion of
 * Balle et al. 2020 (also used by Opacus): eps = rdp - (log delta + log alpha)/(alpha - 1)
 * + log((alpha - 1)/alpha). delta in (0, 1). *order (may be NULL) gets the best order. */
PK_NODISCARD pk_status pk_dp_epsilon(const double rdp[PK_DP_N_ORDERS], double delta, double *eps,
                                     int *order);
/* Convenience: epsilon of `steps` steps at (q, sigma) for delta. */
PK_NODISCARD pk_status pk_dp_epsilon_for(double q, double sigma, int64_t steps, double delta,
                                         double *eps);

/* g clipped to [-c, c] (c > 0); NaN becomes 0 so a broken step contributes nothing. */
float pk_dp_clip(float g, float c);
/* One N(0, stddev^2) sample from the CSPRNG (pk_crypto_random_double), never from the MeZO z
 * generator, so the noise is unpredictable to the coordinator. Needs pk_crypto_global_init. */
double pk_dp_gaussian(double stddev);

/* ---- HTTP client (http.c) ------------------------------------------------------------------ */

typedef struct pk_http pk_http;

typedef struct pk_http_params {
    long connect_timeout_ms; /* per attempt: TCP connect */
    long timeout_ms;         /* per attempt: the whole request */
    int max_attempts;        /* 1 = no retry */
    long backoff_ms;         /* first retry delay; doubles each retry, with full jitter */
    long backoff_max_ms;     /* cap of one delay */
    size_t max_body;         /* response bodies larger than this fail with PK_ERR_LIMIT */
} pk_http_params;
/* 3 s connect, 15 s total, 6 attempts, 100 ms .. 3 s backoff, 8 MiB bodies. */
pk_http_params pk_http_default_params(void);

/* One-time libcurl setup from main: loads libcurl (dlopen, curl_dl.c: a process that does no
 * HTTP never maps it), then runs curl_global_init. Not thread-safe, call before threads.
 * PK_ERR_UNSUPPORTED: libcurl cannot be loaded; PK_ERR_HTTP: curl_global_init failed.
 * pk_http_global_errmsg() says which: static text naming the library and the Debian package
 * to install. It is process-wide rather than a caller's buffer because there is no handle yet
 * and the text is written once, when libcurl is first loaded; handles report through err. */
PK_NODISCARD pk_status pk_http_global_init(void);
const char *pk_http_global_errmsg(void);
/* Matches a successful pk_http_global_init (curl_global_cleanup); the library stays loaded. */
void pk_http_global_cleanup(void);

/* base_url (borrowed, copied), e.g. "http://127.0.0.1:8080"; a trailing '/' is dropped.
 * PK_ERR_ARG: bad URL or params; PK_ERR_UNSUPPORTED: libcurl cannot be loaded. err (errlen
 * bytes, may be NULL) names the field or the URL that is wrong, or the library to install. */
PK_NODISCARD pk_status pk_http_create(const char *base_url, pk_http_params params, pk_http **out,
                                      char *err, size_t errlen);
void pk_http_destroy(pk_http *h); /* NULL-safe */

enum {
    PK_HTTP_JSON = 1, /* the body is JSON: a 2xx answer that does not parse was truncated and
                         is retried */
};

/* method "GET" or "POST" (or "PUT"/"DELETE"); path starts with '/'; body may be NULL (borrowed).
 * Retries with exponential backoff and full jitter on connection errors, timeouts, truncated
 * bodies and 5xx/429 answers; any other answer is returned at once with PK_OK and *status set
 * (callers decide what a 4xx means). After the last attempt: PK_ERR_HTTP, or PK_OK with the last
 * 5xx status. PK_ERR_LIMIT if the answer exceeds max_body; PK_ERR_ARG for a bad path.
 * *resp is an owned result (free()), NUL-terminated, *resp_len bytes (may be NULL).
 * err (errlen bytes, may be NULL) names the method, the URL and what went wrong ("HTTP 503
 * (attempt 6 of 6)", the curl error, the size cap) whenever the call fails or returns a 5xx
 * after its last attempt; it is "" after any other answer. */
PK_NODISCARD pk_status pk_http_request(pk_http *h, const char *method, const char *path,
                                       const char *body, size_t body_len, int flags, long *status,
                                       char **resp, size_t *resp_len, char *err, size_t errlen);
/* Counters since create (or the last reset), over all attempts. */
typedef struct pk_http_stats {
    uint64_t body_up;   /* request body bytes sent */
    uint64_t body_down; /* response body bytes received */
    uint64_t wire_up;   /* body_up + request line and headers */
    uint64_t wire_down; /* body_down + status line and headers */
    uint64_t requests;  /* pk_http_request calls */
    uint64_t attempts;  /* transfers tried (> requests when retries happened) */
} pk_http_stats;
pk_http_stats pk_http_get_stats(const pk_http *h);
void pk_http_reset_stats(pk_http *h);

/* ---- the sync round (sync.c; wire format in docs/PROTOCOL.md, design in docs/SYNC.md) ------ */

typedef struct pk_store pk_store;

/* What the sync client needs from "a model": the client never sees weights, only these calls.
 * sync_mezo.c wires them to pk_mezo (the CLI and the demo use it); tests may use a toy model. */
typedef struct pk_sync_model_ops {
    /* Projected gradient at the current weights along z(seed) on the next local batch:
     * g = (L(W + eps z) - L(W - eps z)) / (2 eps); *n_examples = examples in that batch. */
    pk_status (*grad)(void *user, uint64_t seed, pk_z_kind z_kind, float eps, float *g,
                      int64_t *n_examples);
    /* W -= lr * coef * z(seed) over the trainable tensors (pk_mezo_update with wd = 0). */
    pk_status (*apply)(void *user, uint64_t seed, pk_z_kind z_kind, float lr, float coef);
    /* Restores the base weights (the state the task's base_model_hash names). */
    pk_status (*reset)(void *user);
    /* Hex hash of the current weights (pk_weights_hash), NUL-terminated. */
    pk_status (*hash)(void *user, char hex[65]);
    void *user; /* borrowed, passed to every call */
    /* The trainable subset's name ("all", "bitfit", a regex; borrowed): a task naming another
     * subset is refused before anything is uploaded. NULL: not checked. */
    const char *trainable;
} pk_sync_model_ops;

typedef struct pk_sync_params {
    const char *server;  /* base URL, e.g. http://127.0.0.1:8080 (borrowed) */
    const char *task_id; /* NULL: whatever task the coordinator runs; else it must match */
    double dp_clip;      /* > 0: clip each step's g to [-clip, clip]; 0: the task's setting */
    double dp_noise;     /* > 0: add N(0, (noise * clip)^2) to each step's g; 0: the task's */
    double dp_delta;     /* delta for the reported epsilon (default 1e-5) */
    double wait_s;       /* after uploading, wait up to this long for the round to close */
    int upload;          /* 0: only catch up with the global log (no local steps) */
    pk_http_params http;
    /* Optional: the pool index of local step `step` (0-based) of round `round`, reduced mod K.
     * NULL (the default): drawn with the CSPRNG (docs/SYNC.md step 7). A simulator sets it so
     * that a run is reproducible from a seed (fedsim/); pick_user is passed back, borrowed. */
    uint32_t (*pick)(void *pick_user, int64_t round, int64_t step, uint32_t K);
    void *pick_user;
    /* Optional: called once a new upload is in the outbox, before it is sent, with its round,
     * its pairs exactly as uploaded (PROTOCOL 3 packing, n_pairs of them, DP noise included;
     * a view valid during the call) and its example count. A simulator records them to check
     * the coordinator's log value for value (fedsim/); upload_user is passed back, borrowed. */
    void (*on_upload)(void *upload_user, int64_t round, const uint8_t *packed, size_t n_pairs,
                      int64_t examples);
    void *upload_user;
} pk_sync_params;
pk_sync_params pk_sync_default_params(void);

typedef struct pk_sync_report {
    char device_id[24];
    char task_id[68];
    int64_t round;              /* the round this device uploaded to (0: none this call) */
    int uploaded;               /* 1: an update was accepted (or already had been) this call */
    int flushed;                /* pending outbox entries sent this call */
    int64_t steps;              /* local steps run */
    int64_t pairs;              /* (seed, sum g) pairs uploaded */
    int64_t examples;           /* example count uploaded */
    int round_closed;           /* 1: the uploaded round closed and its entry was replayed */
    int64_t log_version;        /* global log version now applied to the model */
    char log_head[65];          /* its hash (hex) */
    char model_hash[65];        /* weights hash after replay (the global model) */
    int dp;                     /* 1: DP was applied this call */
    double epsilon, delta;      /* privacy spent so far on this task (0 if never DP) */
    uint64_t upload_body_bytes; /* body of this call's upload request(s) */
    pk_http_stats http;         /* all traffic of this call */
} pk_sync_report;

/* One federated round: register once (device id in the store's sync state), send any
 * pending outbox entry, fetch the task, check the base model hash, catch up with the global log
 * (hash chain verified; a rewritten or rolled-back history is PK_ERR_AUTH), run the task's local
 * steps with seeds drawn from the pool, sum g per seed (clipped and noised with DP), sign the
 * upload, put it in the outbox BEFORE sending, send until a definitive answer, wait for the round
 * to close (up to wait_s), download and verify the new log entries, and replay the whole log on
 * the base model so the local model equals the global one. s, p, ops borrowed; rep filled (may
 * be NULL); err (errlen, may be NULL) gets one line on failure.
 * PK_ERR_HTTP: coordinator unreachable (the upload stays in the outbox; run again),
 * PK_ERR_AUTH: log verification failed, PK_ERR_FORMAT: bad answer, PK_ERR_ARG: wrong base model
 * or task, PK_ERR_DB: store failure. */
PK_NODISCARD pk_status pk_sync_round(pk_store *s, const pk_sync_params *p,
                                     const pk_sync_model_ops *ops, pk_sync_report *rep, char *err,
                                     size_t errlen);

/* ---- the real model behind the ops (sync_mezo.c) ------------------------------------------- */

/* A MeZO model for pk_sync_round: the base model loaded from model_dir (reset restores the base
 * weights from their files with pk_model_restore_base: no copy is kept), and,
 * if dataset != NULL, an lm objective over that dataset of the store (batches of `batch`
 * examples of up to seq_len tokens, drawn from a fresh random shuffle per session); with
 * datasets != NULL, over the union of the comma-separated datasets it names instead (dataset
 * must then be non-NULL too, e.g. the first name; it is not read).
 * s, model_dir, dataset, datasets, trainable borrowed ("all", "bitfit" or a regex; NULL = "all").
 * *out owned (pk_sync_mezo_free). err names the file / dataset on failure. */
typedef struct pk_sync_mezo pk_sync_mezo;
PK_NODISCARD pk_status pk_sync_mezo_open(pk_store *s, const char *model_dir, const char *dataset,
                                         const char *datasets, const char *trainable, int batch,
                                         int seq_len, pk_sync_mezo **out, char *err, size_t errlen);
void pk_sync_mezo_free(pk_sync_mezo *x); /* NULL-safe */
/* The ops to pass to pk_sync_round (user = x, borrowed). */
pk_sync_model_ops pk_sync_mezo_ops(pk_sync_mezo *x);
/* The model (view, valid until pk_sync_mezo_free): after pk_sync_round it holds the global
 * model (base + replayed log), e.g. to save or evaluate it. */
struct pk_model *pk_sync_mezo_model(pk_sync_mezo *x);

/* Seed k of the pool derived from the 32-byte pool_seed (PROTOCOL 2). Pure. */
uint64_t pk_sync_pool_seed(const uint8_t pool_seed[32], uint32_t k);

/* ---- model download from a Hugging Face-compatible hub (pull.c) ---------------------------- */

typedef struct pk_pull_params {
    const char *endpoint; /* NULL: $HF_ENDPOINT, else https://huggingface.co (borrowed) */
    const char *revision; /* NULL: "main" (borrowed) */
    const char *token;    /* NULL: $HF_TOKEN if set; sent as a Bearer header, never logged */
    /* Progress of each file (may be NULL): called with done = 0 when a transfer starts, as
     * bytes arrive, and once with final = 1 when it ends. label names the file ("config.json",
     * "model.safetensors (resumed)"); total is the bytes this transfer expects, 0 if unknown.
     * Called on the pulling thread; user is borrowed. */
    void (*progress)(void *user, const char *label, int64_t done, int64_t total, int final);
    void *progress_user;
    int max_attempts;        /* per file; each retry resumes the .part with a Range request */
    long connect_timeout_ms; /* per attempt */
    long stall_timeout_s;    /* abort an attempt that receives nothing for this long */
} pk_pull_params;
/* endpoint/revision/token NULL, no progress callback, 5 attempts, 10 s connect, 60 s stall. */
pk_pull_params pk_pull_default_params(void);

typedef struct pk_pull_result {
    int files;      /* files now present in out_dir (downloaded or already there) */
    int downloaded; /* files transferred this call */
    int up_to_date; /* files already complete (size and sha256 match): not fetched */
    int resumed;    /* transfers that continued a .part file with a Range request */
    int verified;   /* files whose sha256 the hub gave and that matched */
    int64_t bytes;  /* body bytes received this call */
} pk_pull_result;

/* Downloads into out_dir (created if needed) config.json (required), the tokenizer files that
 * exist (tokenizer.json, tokenizer.model, tokenizer_config.json, special_tokens_map.json,
 * vocab.json, merges.txt, vocab.txt), generation_config.json, and the weights:
 * model.safetensors, or model.safetensors.index.json plus every shard it names.
 * URL: {endpoint}/{repo}/resolve/{revision}/{file}. Each file goes to FILE.part first and is
 * renamed when complete; a .part left by an interrupted run (or a dropped connection) is
 * resumed with "Range: bytes=N-". When the hub gives a sha256 (X-Content-Sha256, or an ETag /
 * X-Linked-Etag of 64 hex digits) the file is checked, and a mismatch removes it
 * (PK_ERR_AUTH). Ctrl-C (pk_interrupted) stops with PK_ERR_INTERRUPTED, keeping the .part.
 * PK_ERR_ARG: bad repo id or revision; PK_ERR_NOTFOUND: no such repo/file (404);
 * PK_ERR_AUTH: 401/403 (gated or private: set HF_TOKEN) or checksum mismatch; PK_ERR_HTTP:
 * network failure after max_attempts; PK_ERR_IO: out_dir not writable; PK_ERR_FORMAT: a bad
 * index; PK_ERR_UNSUPPORTED: libcurl cannot be loaded (or the hub has no safetensors).
 * err (errlen bytes, may be NULL) says what happened and what to do. res may be NULL.
 * Needs pk_http_global_init and pk_crypto_global_init done. */
PK_NODISCARD pk_status pk_pull(const char *repo, const char *out_dir, const pk_pull_params *p,
                               pk_pull_result *res, char *err, size_t errlen);

#endif /* PK_NET_H */
