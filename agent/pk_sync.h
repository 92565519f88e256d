/* pk_sync.h: the federated client (DESIGN 7, issue 5): the differential-privacy accountant and
 * noise helpers (dp.c), a small libcurl wrapper with timeouts, retries and size caps (http.c),
 * and the sync round against the coordinator (sync.c; protocol in docs/PROTOCOL.md).
 * Only seeds, scalars, counts and signatures leave the device (docs/SYNC.md).
 * Thread safety: a pk_http handle may move between threads but is never used by two at once;
 * the pk_dp_* functions are pure except pk_dp_gaussian (thread-safe CSPRNG). */
#ifndef PK_SYNC_H
#define PK_SYNC_H

#include "pk_common.h"

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
/* One N(0, stddev^2) sample from libsodium's CSPRNG (randombytes_buf), never from the MeZO z
 * generator, so the noise is unpredictable to the coordinator. Needs sodium_init() done. */
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

/* One-time libcurl setup from main (curl_global_init); not thread-safe, call before threads. */
PK_NODISCARD pk_status pk_http_global_init(void);
void pk_http_global_cleanup(void);

/* base_url (borrowed, copied), e.g. "http://127.0.0.1:8080"; a trailing '/' is dropped. */
PK_NODISCARD pk_status pk_http_create(const char *base_url, pk_http_params params, pk_http **out);
void pk_http_destroy(pk_http *h); /* NULL-safe */

enum {
    PK_HTTP_JSON = 1, /* the body is JSON: a 2xx answer that does not parse was truncated and
                         is retried */
};

/* method "GET" or "POST" (or "PUT"/"DELETE"); path starts with '/'; body may be NULL (borrowed).
 * Retries with exponential backoff and full jitter on connection errors, timeouts, truncated
 * bodies and 5xx/429 answers; any other answer is returned at once with PK_OK and *status set
 * (callers decide what a 4xx means). After the last attempt: PK_ERR_HTTP (the handle's errmsg
 * says why), or PK_OK with the last 5xx status. PK_ERR_LIMIT if the answer exceeds max_body.
 * *resp is an owned result (free()), NUL-terminated, *resp_len bytes (may be NULL). */
PK_NODISCARD pk_status pk_http_request(pk_http *h, const char *method, const char *path,
                                       const char *body, size_t body_len, int flags, long *status,
                                       char **resp, size_t *resp_len);
/* Text of the last failure on h (view, valid until the next call on h). */
const char *pk_http_errmsg(const pk_http *h);
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

#endif /* PK_SYNC_H */
