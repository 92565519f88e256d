/* pk_common.h: the status enum, logging hook and assertions shared by every PocketLLM module.
 * Thread safety: pk_log_set must be called before any other thread logs; the rest is pure. */
#ifndef PK_COMMON_H
#define PK_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#if defined(__GNUC__)
#define PK_NODISCARD        __attribute__((warn_unused_result))
#define PK_PRINTF(fmt, arg) __attribute__((format(printf, fmt, arg)))
#else
#define PK_NODISCARD
#define PK_PRINTF(fmt, arg)
#endif

typedef enum pk_status {
    PK_OK = 0,
    PK_ERR_NOMEM,  /* allocation failed */
    PK_ERR_IO,     /* file system or OS error */
    PK_ERR_FORMAT, /* malformed input: file, JSON, record */
    PK_ERR_AUTH,   /* authentication failed: wrong passphrase, tampered ciphertext, bad signature */
    PK_ERR_DB,     /* SQLite error */
    PK_ERR_HTTP,   /* network or HTTP protocol error */
    PK_ERR_ARG,    /* invalid argument from the caller */
    PK_ERR_BUSY,   /* resource held by another process */
    PK_ERR_NOTFOUND,    /* the named thing does not exist */
    PK_ERR_UNSUPPORTED, /* valid input we do not handle (e.g. pytorch_model.bin) */
    PK_ERR_INTERRUPTED, /* stopped by the user (Ctrl-C) at a safe point */
    PK_ERR_LIMIT,       /* a hard cap was exceeded (body size, blob size, disk full) */
    PK_ERR_NUMERIC,     /* a computation went non-finite (a diverging run, NaN weights or loss) */
    PK_ERR_STALE_KEY,   /* the passphrase changed (rekey) since this handle derived its keys */
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

/* Writes a printf-formatted message into the caller's error buffer err (errlen bytes, may be
 * NULL or 0: then nothing is written). The one way a library reports what went wrong
 * (DESIGN 9). */
void pk_seterr(char *err, size_t errlen, const char *fmt, ...) PK_PRINTF(3, 4);

/* Grows the heap array p (*cap elements of size bytes; NULL when *cap is 0) to hold at least
 * need elements: the capacity doubles from *cap, or from first (> 0) when *cap is 0. Returns the
 * array, moved or not, with *cap updated; NULL when out of memory or too large, and then p and
 * *cap are unchanged and p still belongs to the caller. need >= 1. */
void *pk_grow(void *p, size_t *cap, size_t need, size_t size, size_t first);
/* Appends d [n] to the heap text *p (*len bytes, then a NUL; capacity *cap, grown by pk_grow
 * from first) and NUL-terminates it. 0, or -1 when out of memory (then nothing changed). */
int pk_text_append(char **p, size_t *len, size_t *cap, const void *d, size_t n, size_t first);

/* A test-only pause point: when $POCKETLLM_PAUSE_AT names this point and $POCKETLLM_PAUSE_DIR
 * is a directory, creates DIR/NAME and waits (up to 60 s) until a test removes it. Lets tests
 * drive races between processes deterministically; does nothing otherwise. */
void pk_pause_point(const char *name);

/* fopen(path, "w"/"wb") for files that may hold what training learned (weights, seed logs):
 * created or truncated with mode 0600, an existing regular file's mode tightened to 0600 (a
 * device or FIFO keeps its own). NULL and errno set on failure. */
FILE *pk_fopen_private(const char *path, const char *mode);

/* 1 if path exists and is a symlink, a device, a FIFO or a socket (lstat): a writer that builds
 * PATH.tmp and renames it over PATH must open such a path and write through it instead, or the
 * rename would replace it (e.g. `--out /dev/stdout` as root). 0 for a regular file, a directory
 * or no file. */
int pk_path_write_through(const char *path);

/* A whole-file write that never leaves a half-written file: a regular file (or a new one) is
 * written to PATH.tmp and renamed over PATH by pk_out_commit, so a failed write keeps the old
 * file; a path pk_path_write_through names (a symlink, a device, a FIFO: /dev/stdout) is written
 * through instead of being replaced; a directory is refused. private_: created 0600 through
 * pk_fopen_private (what training learned), else with fopen's 0666 & ~umask. */
typedef struct pk_out {
    FILE *f;
    char path[4096], tmp[4096]; /* tmp: the file written (PATH.tmp, or PATH when through) */
    int through;
} pk_out;
/* Opens o->f; errors name the path ("cannot write PATH: reason"). */
PK_NODISCARD pk_status pk_out_open(pk_out *o, const char *path, int private_, char *err,
                                   size_t errlen);
/* Closes o->f (a write error seen by ferror or fclose fails it), then renames the temp file over
 * the path; on failure removes the temp file and names the file that failed. */
PK_NODISCARD pk_status pk_out_commit(pk_out *o, char *err, size_t errlen);
/* Closes o->f and removes the temp file (nothing is renamed): for a write that failed midway. */
void pk_out_abort(pk_out *o);

/* 1 if each of the n bytes at s is an ASCII letter or digit or one of the characters of extra
 * (e.g. "._-", the character set of names on the wire and of hub path segments). Pure. */
int pk_name_chars_ok(const char *s, size_t n, const char *extra);

/* splitmix64 (Steele, Lea, Flood 2014): a bijective 64-bit mixer for deriving seeds. Pure. */
uint64_t pk_splitmix64(uint64_t x);

/* Little-endian fixed-width integers, the byte order of every binary format we write (the sync
 * wire format, record ADs). p must hold 4 or 8 bytes. */
void pk_put_le32(uint8_t *p, uint32_t v);
void pk_put_le64(uint8_t *p, uint64_t v);
uint32_t pk_get_le32(const uint8_t *p);
/* The IEEE-754 bit pattern of f (how a float goes on the wire). */
uint32_t pk_f32_bits(float f);

/* ---- the clean-stop flag (SIGINT / SIGTERM) --------------------------------------------- */

/* Installs SIGINT and SIGTERM handlers that only set a flag; long loops poll pk_interrupted()
 * at step boundaries and stop cleanly (exit code 130). A second Ctrl-C kills the process
 * at once (the handler is one-shot). Idempotent. */
void pk_interrupt_install(void);
/* 1 once SIGINT or SIGTERM arrived (or pk_interrupt_raise was called), else 0. */
int pk_interrupted(void);
/* Sets the flag by hand (tests, or a caller that wants the same clean-stop path). */
void pk_interrupt_raise(void);
/* Clears the flag (e.g. between two phases of the demo, or in tests). */
void pk_interrupt_clear(void);
/* Sleeps `seconds` (<= 0: not at all), through other signals, but returns early once the flag is
 * set (a SIGINT or SIGTERM wakes it: waits, polls and retry backoffs end at Ctrl-C). Returns
 * pk_interrupted(). */
int pk_sleep(double seconds);

/* ---- records shared by the store and the optimizer ---------------------------------------- */

/* An example as the store returns it and the objectives read it. */
typedef struct pk_example {
    int64_t id;           /* example id */
    const char *text;     /* "text" or NULL */
    const char *text2;    /* "text2" or NULL */
    const char *prompt;   /* "prompt" or NULL */
    const char *response; /* "response" or NULL */
    const char *label;    /* label as text, or NULL */
} pk_example;

/* One MeZO step (DESIGN 4): with n-SPSA a step has q rows (q_index 0..q-1). */
typedef struct pk_step_row {
    int64_t step;    /* 0-based step number */
    int32_t q_index; /* perturbation index within the step */
    uint64_t seed;   /* z seed */
    float g;         /* projected gradient (after clipping) */
    float loss_plus;
    float loss_minus;
    float lr;
    float eps;
} pk_step_row;

#endif /* PK_COMMON_H */
