/* common.c: status strings, the logging hook, assertions and small OS helpers.
 * The log hook is the only mutable global; it is written once from main before threads start. */
#include "pk_common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *const status_names[PK_ERR__COUNT] = {
    [PK_OK] = "ok",
    [PK_ERR_NOMEM] = "out of memory",
    [PK_ERR_IO] = "I/O error",
    [PK_ERR_FORMAT] = "malformed input",
    [PK_ERR_AUTH] = "authentication failed",
    [PK_ERR_DB] = "database error",
    [PK_ERR_HTTP] = "network error",
    [PK_ERR_ARG] = "invalid argument",
    [PK_ERR_BUSY] = "busy",
    [PK_ERR_NOTFOUND] = "not found",
    [PK_ERR_UNSUPPORTED] = "unsupported",
    [PK_ERR_INTERRUPTED] = "interrupted",
    [PK_ERR_LIMIT] = "limit exceeded",
    [PK_ERR_NUMERIC] = "numeric failure",
    [PK_ERR_STALE_KEY] = "the passphrase changed",
};

const char *pk_status_str(pk_status st)
{
    if ((int)st < 0 || st >= PK_ERR__COUNT)
        return "unknown status";
    return status_names[st];
}

/* Set once from main (STYLE 5 allows this one hook, as ggml_log_set does). */
static pk_log_fn log_fn;
static void *log_user;
static pk_log_level log_min = PK_LOG_WARN;

void pk_log_set(pk_log_fn fn, void *user, pk_log_level min_level)
{
    log_fn = fn;
    log_user = user;
    log_min = min_level;
}

void pk_log(pk_log_level level, const char *fmt, ...)
{
    if (level < log_min)
        return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (log_fn) {
        log_fn(level, buf, log_user);
        return;
    }
    static const char *const names[] = {"debug", "info", "warning", "error"};
    fprintf(stderr, "pocketllm: %s: %s\n", names[level], buf);
}

void pk_assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "pocketllm: assertion failed: %s (%s:%d)\n", expr, file, line);
    fflush(stderr);
    abort();
}

double pk_time_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

size_t pk_peak_rss_bytes(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (size_t)ru.ru_maxrss * 1024u; /* Linux reports KiB */
}

void pk_seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

int pk_name_chars_ok(const char *s, size_t n, const char *extra)
{
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 (c != '\0' && strchr(extra, c) != NULL);
        if (!ok)
            return 0;
    }
    return 1;
}

uint64_t pk_splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

void pk_put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

void pk_put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

uint32_t pk_get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint32_t pk_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

void *pk_grow(void *p, size_t *cap, size_t need, size_t size, size_t first)
{
    PK_ASSERT(need >= 1 && size >= 1 && (*cap > 0 || first > 0));
    if (need <= *cap)
        return p;
    size_t c = *cap ? *cap : first;
    while (c < need) {
        if (c > SIZE_MAX / 2)
            return NULL;
        c *= 2;
    }
    if (c > SIZE_MAX / size)
        return NULL;
    void *q = realloc(p, c * size);
    if (q)
        *cap = c;
    return q;
}

int pk_text_append(char **p, size_t *len, size_t *cap, const void *d, size_t n, size_t first)
{
    char *t = pk_grow(*p, cap, *len + n + 1, 1, first);
    if (!t)
        return -1;
    *p = t;
    if (n)
        memcpy(t + *len, d, n);
    *len += n;
    t[*len] = '\0';
    return 0;
}

void pk_pause_point(const char *name)
{
    const char *at = getenv("POCKETLLM_PAUSE_AT"), *dir = getenv("POCKETLLM_PAUSE_DIR");
    char flag[1024];
    if (!at || !dir || strcmp(at, name) != 0)
        return;
    snprintf(flag, sizeof flag, "%s/%s", dir, name);
    FILE *f = fopen(flag, "w");
    if (!f)
        return;
    fclose(f);
    for (int i = 0; i < 6000 && access(flag, F_OK) == 0; i++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

int pk_path_write_through(const char *path)
{
    struct stat sb;
    return lstat(path, &sb) == 0 && !S_ISREG(sb.st_mode) && !S_ISDIR(sb.st_mode);
}

FILE *pk_fopen_private(const char *path, const char *mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return NULL;
    struct stat sb; /* a device or a FIFO (written through) keeps its mode */
    int reg = fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode);
    FILE *f = !reg || fchmod(fd, 0600) == 0 ? fdopen(fd, mode) : NULL;
    if (!f)
        close(fd);
    return f;
}

pk_status pk_out_open(pk_out *o, const char *path, int private_, char *err, size_t errlen)
{
    struct stat sb;
    memset(o, 0, sizeof *o);
    if (snprintf(o->path, sizeof o->path, "%s", path) >= (int)sizeof o->path ||
        snprintf(o->tmp, sizeof o->tmp, "%s.tmp", path) >= (int)sizeof o->tmp) {
        pk_seterr(err, errlen, "cannot write %s: path too long", path);
        return PK_ERR_ARG;
    }
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        pk_seterr(err, errlen, "cannot write %s: it is a directory (give a file name)", path);
        return PK_ERR_IO;
    }
    o->through = pk_path_write_through(path);
    if (o->through)
        snprintf(o->tmp, sizeof o->tmp, "%s", path);
    o->f = private_ ? pk_fopen_private(o->tmp, "w") : fopen(o->tmp, "w");
    if (o->f == NULL) {
        pk_seterr(err, errlen, "cannot write %s: %s", o->tmp, strerror(errno));
        return PK_ERR_IO;
    }
    return PK_OK;
}

void pk_out_abort(pk_out *o)
{
    if (o->f != NULL)
        fclose(o->f);
    o->f = NULL;
    if (!o->through)
        remove(o->tmp);
}

pk_status pk_out_commit(pk_out *o, char *err, size_t errlen)
{
    int bad = ferror(o->f), e = bad ? errno : 0; /* a failed write's errno, if one failed */
    errno = 0;
    if (fclose(o->f) != 0) {
        bad = 1;
        e = errno;
    }
    o->f = NULL;
    if (bad) {
        pk_seterr(err, errlen, "cannot write %s: %s", o->tmp, e ? strerror(e) : "write error");
        if (!o->through)
            remove(o->tmp);
        return PK_ERR_IO;
    }
    if (!o->through && rename(o->tmp, o->path) != 0) {
        pk_seterr(err, errlen, "cannot write %s: %s", o->path, strerror(errno));
        remove(o->tmp);
        return PK_ERR_IO;
    }
    return PK_OK;
}
