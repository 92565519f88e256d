/* pk_common.h: the status enum, logging hook and assertions shared by every PocketLLM module.
 * Thread safety: pk_log_set must be called before any other thread logs; the rest is pure. */
#ifndef PK_COMMON_H
#define PK_COMMON_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define PK_NODISCARD        __attribute__((warn_unused_result))
#define PK_PRINTF(fmt, arg) __attribute__((format(printf, fmt, arg)))
#else
#define PK_NODISCARD
#define PK_PRINTF(fmt, arg)
#endif

typedef enum pk_status {
    PK_OK = 0,
    PK_ERR_NOMEM,    /* allocation failed */
    PK_ERR_IO,       /* file system or OS error */
    PK_ERR_FORMAT,   /* malformed input: file, JSON, record */
    PK_ERR_AUTH,     /* authentication failed: wrong passphrase, tampered ciphertext, bad signature */
    PK_ERR_DB,       /* SQLite error */
    PK_ERR_HTTP,     /* network or HTTP protocol error */
    PK_ERR_ARG,      /* invalid argument from the caller */
    PK_ERR_BUSY,     /* resource held by another process */
    PK_ERR_NOTFOUND, /* the named thing does not exist */
    PK_ERR_UNSUPPORTED, /* valid input we do not handle (e.g. pytorch_model.bin) */
    PK_ERR_INTERRUPTED, /* stopped by the user (Ctrl-C) at a safe point */
    PK_ERR_LIMIT,    /* a hard cap was exceeded (body size, blob size, disk full) */
    PK_ERR__COUNT
} pk_status;

/* Static text for a status code; never NULL. */
const char *pk_status_str(pk_status st);

typedef enum pk_log_level {
    PK_LOG_DEBUG = 0,
    PK_LOG_INFO,
    PK_LOG_WARN,
    PK_LOG_ERROR,
} pk_log_level;

/* The one logging hook (ggml_log_set). The default writes WARN and ERROR to stderr.
 * fn may be NULL to restore the default. user is borrowed. */
typedef void (*pk_log_fn)(pk_log_level level, const char *msg, void *user);
void pk_log_set(pk_log_fn fn, void *user, pk_log_level min_level);
void pk_log(pk_log_level level, const char *fmt, ...) PK_PRINTF(2, 3);

/* Bugs (never bad input) abort in every build, after logging file:line. */
void pk_assert_fail(const char *expr, const char *file, int line);
#define PK_ASSERT(x)                                                                               \
    do {                                                                                           \
        if (!(x))                                                                                  \
            pk_assert_fail(#x, __FILE__, __LINE__);                                                \
    } while (0)

/* Monotonic wall clock in seconds. */
double pk_time_now(void);

/* Peak resident set size of this process in bytes (getrusage), 0 if unknown. */
size_t pk_peak_rss_bytes(void);

#endif /* PK_COMMON_H */
