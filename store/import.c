/* import.c: streaming parsers for the import formats (JSONL, TXT, CSV). Input is read in
 * fixed-size chunks into secure buffers, one record at a time (constant memory, at most
 * PK_IMPORT_MAX_RECORD bytes per record), validated as UTF-8 and handed to a callback that
 * seals it (examples.c). No plaintext goes through stdio or ordinary heap memory. */
#include "store_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHUNK 65536

typedef struct src {
    int fd;             /* -1: memory source */
    const uint8_t *mem; /* memory source (borrowed) */
    size_t mem_len, mem_pos;
    size_t chunk; /* read-ahead size: CHUNK, or less for a small input */
    size_t cap;   /* record cap: PK_IMPORT_MAX_RECORD, or less for a small input */
    uint8_t *buf; /* secure: chunk bytes read ahead */
    size_t pos, end;
    int eof;
    int64_t line; /* lines read so far */
    uint8_t *rec; /* secure: the current record, cap + 1 bytes */
    size_t rec_len;
    char *out; /* secure: decoded fields, cap + 8 bytes */
    char *err;
    size_t errlen;
} src;

static pk_status fail(src *s, int64_t line, const char *fmt, ...) PK_PRINTF(3, 4);
static pk_status fail(src *s, int64_t line, const char *fmt, ...)
{
    char msg[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (s->err && s->errlen)
        snprintf(s->err, s->errlen, "line %lld: %s", (long long)line, msg);
    return PK_ERR_FORMAT;
}

static int fill(src *s)
{
    if (s->eof)
        return 0;
    if (s->fd < 0) {
        size_t n = s->mem_len - s->mem_pos;
        if (n > s->chunk)
            n = s->chunk;
        if (n)
            memcpy(s->buf, s->mem + s->mem_pos, n);
        s->mem_pos += n;
        s->pos = 0;
        s->end = n;
        s->eof = n == 0;
        return (int)(n > 0);
    }
    ssize_t r;
    do {
        r = read(s->fd, s->buf, s->chunk);
    } while (r < 0 && errno == EINTR);
    if (r < 0)
        return -1;
    s->pos = 0;
    s->end = (size_t)r;
    s->eof = r == 0;
    return r > 0;
}

/* Appends the next line (without '\n', '\r\n') to s->rec. Returns 1 (a line), 0 (end of
 * input), -1 (read error), -2 (record too long). */
static int read_line(src *s)
{
    int any = 0;
    for (;;) {
        if (s->pos == s->end) {
            int r = fill(s);
            if (r < 0)
                return -1;
            if (r == 0)
                break;
        }
        uint8_t *p = s->buf + s->pos;
        size_t avail = s->end - s->pos;
        uint8_t *nl = memchr(p, '\n', avail);
        size_t take = nl ? (size_t)(nl - p) : avail;
        any = 1;
        if (take > s->cap - s->rec_len)
            return -2;
        memcpy(s->rec + s->rec_len, p, take);
        s->rec_len += take;
        s->pos += take + (nl ? 1 : 0);
        if (nl)
            break;
    }
    if (!any)
        return 0;
    s->line++;
    if (s->rec_len && s->rec[s->rec_len - 1] == '\r')
        s->rec_len--;
    s->rec[s->rec_len] = '\0';
    return 1;
}

static pk_status line_error(src *s, int r, const char *what)
{
    if (r == -1) {
        (void)fail(s, s->line + 1, "read error: %s", strerror(errno));
        return PK_ERR_IO;
    }
    return fail(s, s->line + 1, "%s longer than %zu bytes", what, s->cap);
}

/* 1 if p[0..n) is valid UTF-8 without NUL bytes (no overlongs, surrogates or > U+10FFFF). */
static int utf8_ok(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        if (c == 0)
            return 0;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0) {
            k = 1, cp = c & 0x1fu, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            k = 2, cp = c & 0x0fu, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            k = 3, cp = c & 0x07u, min = 0x10000;
        } else {
            return 0;
        }
        if (n - i <= k)
            return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((p[i + j] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[i + j] & 0x3fu);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += k + 1;
    }
    return 1;
}

static int is_blank(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r')
            return 0;
    return 1;
}

/* ---- JSONL ------------------------------------------------------------------------------ */

typedef struct jp {
    const uint8_t *p, *end;
    char *out; /* next free byte of the decoded-strings buffer */
    const char *why;
} jp;

static void ws(jp *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\r' || *j->p == '\n'))
        j->p++;
}

static int hex4(const uint8_t *p, uint32_t *v)
{
    *v = 0;
    for (int i = 0; i < 4; i++) {
        uint8_t c = p[i];
        uint32_t d = c >= '0' && c <= '9'   ? (uint32_t)(c - '0')
                     : c >= 'a' && c <= 'f' ? (uint32_t)(c - 'a' + 10)
                     : c >= 'A' && c <= 'F' ? (uint32_t)(c - 'A' + 10)
                                            : 16u;
        if (d == 16u)
            return 0;
        *v = *v << 4 | d;
    }
    return 1;
}

static char *put_utf8(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        *o++ = (char)cp;
    } else if (cp < 0x800) {
        *o++ = (char)(0xc0 | (cp >> 6));
        *o++ = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        *o++ = (char)(0xe0 | (cp >> 12));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *o++ = (char)(0x80 | (cp & 0x3f));
    } else {
        *o++ = (char)(0xf0 | (cp >> 18));
        *o++ = (char)(0x80 | ((cp >> 12) & 0x3f));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *o++ = (char)(0x80 | (cp & 0x3f));
    }
    return o;
}

/* Escape sequence after the backslash; decoded output is never longer than its input. */
static int json_escape(jp *j, char **o)
{
    uint32_t cp, lo;
    uint8_t c = *j->p++;
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    const char *f = memchr(from, c, sizeof from - 1);
    if (f) {
        *(*o)++ = to[f - from];
        return 1;
    }
    if (c != 'u' || j->end - j->p < 4 || !hex4(j->p, &cp))
        return 0;
    j->p += 4;
    if (cp >= 0xd800 && cp <= 0xdbff) {
        if (j->end - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u' || !hex4(j->p + 2, &lo) ||
            lo < 0xdc00 || lo > 0xdfff)
            return 0;
        j->p += 6;
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
    } else if ((cp >= 0xdc00 && cp <= 0xdfff) || cp == 0) {
        return 0;
    }
    *o = put_utf8(*o, cp);
    return 1;
}

/* A JSON string at j->p (the opening quote); decoded NUL-terminated into j->out. */
static const char *json_string(jp *j)
{
    char *start = j->out, *o = j->out;
    const uint8_t *seg;
    j->p++;
    for (;;) {
        seg = j->p;
        while (j->p < j->end && *j->p != '"' && *j->p != '\\' && *j->p >= 0x20)
            j->p++;
        memcpy(o, seg, (size_t)(j->p - seg));
        o += j->p - seg;
        if (j->p >= j->end || *j->p < 0x20) {
            j->why = "unterminated string or control character in a string";
            return NULL;
        }
        if (*j->p++ == '"')
            break;
        if (j->p >= j->end || !json_escape(j, &o)) {
            j->why = "invalid escape in a string (\\u0000 is not allowed)";
            return NULL;
        }
    }
    *o++ = '\0';
    j->out = o;
    if (!utf8_ok((const uint8_t *)start, (size_t)(o - start - 1))) {
        j->why = "invalid UTF-8 in a string";
        return NULL;
    }
    return start;
}

/* A number, true or false as its text (for "label"). */
static const char *json_scalar(jp *j)
{
    const uint8_t *s = j->p;
    while (j->p < j->end &&
           (memchr("+-.0123456789eE", *j->p, 15) || (*j->p >= 'a' && *j->p <= 'z')))
        j->p++;
    size_t n = (size_t)(j->p - s);
    int num = n && (s[0] == '-' || (s[0] >= '0' && s[0] <= '9'));
    for (size_t i = 0; num && i < n; i++)
        if (!memchr("+-.0123456789eE", s[i], 15))
            num = 0;
    if (!num && !(n == 4 && !memcmp(s, "true", 4)) && !(n == 5 && !memcmp(s, "false", 5))) {
        j->why = "expected a string, number, true, false or null";
        return NULL;
    }
    char *o = j->out;
    memcpy(o, s, n);
    o[n] = '\0';
    j->out = o + n + 1;
    return o;
}

/* Skips any JSON value (for keys we do not use), nested at most 64 deep. */
static int json_skip(jp *j, int depth)
{
    ws(j);
    if (j->p >= j->end || depth > 64)
        return 0;
    if (*j->p == '"') {
        char *save = j->out;
        int ok = json_string(j) != NULL;
        j->out = save;
        return ok;
    }
    if (*j->p == '{' || *j->p == '[') {
        uint8_t close = *j->p == '{' ? '}' : ']';
        j->p++;
        ws(j);
        if (j->p < j->end && *j->p == close) {
            j->p++;
            return 1;
        }
        for (;;) {
            if (close == '}') {
                ws(j);
                if (j->p >= j->end || *j->p != '"' || !json_skip(j, depth + 1))
                    return 0;
                ws(j);
                if (j->p >= j->end || *j->p++ != ':')
                    return 0;
            }
            if (!json_skip(j, depth + 1))
                return 0;
            ws(j);
            if (j->p >= j->end)
                return 0;
            uint8_t c = *j->p++;
            if (c == close)
                return 1;
            if (c != ',')
                return 0;
        }
    }
    if (j->end - j->p >= 4 && !memcmp(j->p, "null", 4)) {
        j->p += 4;
        return 1;
    }
    char *save = j->out;
    int ok = json_scalar(j) != NULL;
    j->out = save;
    return ok;
}

static const char *const field_names[5] = {"text", "text2", "prompt", "response", "label"};

static int field_index(const char *k)
{
    for (int i = 0; i < 5; i++)
        if (!strcmp(k, field_names[i]))
            return i;
    return -1;
}

/* Checks the field combination; returns NULL or why not. */
static const char *check_fields(const char *f[5])
{
    if (!f[0] && !f[2])
        return "needs \"text\", or \"prompt\" and \"response\"";
    if (f[2] && !f[3])
        return "\"prompt\" without \"response\"";
    if (f[3] && !f[2])
        return "\"response\" without \"prompt\"";
    if (f[1] && !f[0])
        return "\"text2\" without \"text\"";
    if (f[0] && f[2])
        return "both \"text\" and \"prompt\": use one form";
    return NULL;
}

static pk_status emit(src *s, const char *f[5], int64_t line, pk_import_fn fn, void *user)
{
    pk_example ex = {0, f[0], f[1], f[2], f[3], f[4]};
    const char *why = check_fields(f);
    if (why)
        return fail(s, line, "%s", why);
    return fn(user, &ex, line);
}

static pk_status parse_json_line(src *s, pk_import_fn fn, void *user)
{
    jp j = {s->rec, s->rec + s->rec_len, s->out, NULL};
    const char *f[5] = {0};
    ws(&j);
    if (j.p >= j.end || *j.p++ != '{')
        return fail(s, s->line, "expected a JSON object");
    ws(&j);
    if (j.p < j.end && *j.p == '}') {
        j.p++;
        goto done;
    }
    for (;;) {
        ws(&j);
        if (j.p >= j.end || *j.p != '"')
            return fail(s, s->line, "expected a key string");
        const char *key = json_string(&j);
        if (!key)
            return fail(s, s->line, "%s", j.why);
        int idx = field_index(key);
        ws(&j);
        if (j.p >= j.end || *j.p++ != ':')
            return fail(s, s->line, "expected ':' after \"%.40s\"", key);
        ws(&j);
        if (idx >= 0 && f[idx])
            return fail(s, s->line, "duplicate key \"%s\"", key);
        if (idx < 0 || (j.end - j.p >= 4 && !memcmp(j.p, "null", 4))) {
            if (!json_skip(&j, 0))
                return fail(s, s->line, "malformed value for \"%.40s\"", key);
        } else if (*j.p == '"') {
            f[idx] = json_string(&j);
        } else if (idx == 4) {
            f[idx] = json_scalar(&j);
        } else {
            return fail(s, s->line, "\"%s\" must be a string", key);
        }
        if (idx >= 0 && !f[idx] && j.why)
            return fail(s, s->line, "%s", j.why);
        ws(&j);
        if (j.p >= j.end)
            return fail(s, s->line, "unterminated object");
        uint8_t c = *j.p++;
        if (c == '}')
            break;
        if (c != ',')
            return fail(s, s->line, "expected ',' or '}'");
    }
done:
    ws(&j);
    if (j.p != j.end)
        return fail(s, s->line, "trailing characters after the object");
    return emit(s, f, s->line, fn, user);
}

static pk_status parse_jsonl(src *s, pk_import_fn fn, void *user)
{
    for (;;) {
        s->rec_len = 0;
        int r = read_line(s);
        if (r == 0)
            return PK_OK;
        if (r < 0)
            return line_error(s, r, "line");
        if (is_blank(s->rec, s->rec_len))
            continue;
        pk_status st = parse_json_line(s, fn, user);
        pk_secure_wipe(s->out, s->rec_len + 8);
        if (st != PK_OK)
            return st;
    }
}

/* ---- TXT -------------------------------------------------------------------------------- */

static pk_status emit_text(src *s, int64_t line, pk_import_fn fn, void *user)
{
    const char *f[5] = {(const char *)s->rec, NULL, NULL, NULL, NULL};
    if (!utf8_ok(s->rec, s->rec_len))
        return fail(s, line, "invalid UTF-8 (or a NUL byte)");
    return emit(s, f, line, fn, user);
}

static pk_status parse_txt(src *s, int paragraphs, pk_import_fn fn, void *user)
{
    int64_t start = 0;
    size_t para_len = 0; /* bytes of the paragraph so far in s->rec */
    for (;;) {
        if (paragraphs && para_len) {
            if (para_len + 1 > s->cap)
                return line_error(s, -2, "paragraph");
            s->rec[para_len] = '\n';
            s->rec_len = para_len + 1;
        } else {
            s->rec_len = 0;
        }
        int r = read_line(s);
        if (r < 0)
            return line_error(s, r, paragraphs ? "paragraph" : "line");
        size_t line_start = paragraphs && para_len ? para_len + 1 : 0;
        int blank = r == 0 || is_blank(s->rec + line_start, s->rec_len - line_start);
        pk_status st = PK_OK;
        if (!paragraphs) {
            if (r == 0)
                return PK_OK;
            if (!blank)
                st = emit_text(s, s->line, fn, user);
        } else if (!blank) {
            if (!para_len)
                start = s->line;
            para_len = s->rec_len;
            continue;
        } else if (para_len) {
            s->rec_len = para_len;
            s->rec[para_len] = '\0';
            st = emit_text(s, start, fn, user);
            para_len = 0;
        }
        pk_secure_wipe(s->rec, s->rec_len + 1);
        if (st != PK_OK || r == 0)
            return st;
    }
}

/* ---- CSV (RFC 4180) ----------------------------------------------------------------------- */

#define CSV_MAX_COLS 64

/* Splits the record in s->rec into fields decoded into s->out. Returns the number of fields,
 * -1 if a quote is still open (the record continues on the next line), -2 malformed,
 * -3 too many columns. */
static int csv_split(src *s, const char *cols[CSV_MAX_COLS])
{
    const uint8_t *p = s->rec, *end = s->rec + s->rec_len;
    char *o = s->out;
    int n = 0;
    for (;;) {
        if (n == CSV_MAX_COLS)
            return -3;
        cols[n++] = o;
        if (p < end && *p == '"') {
            p++;
            for (;;) {
                if (p >= end)
                    return -1;
                if (*p == '"') {
                    if (p + 1 < end && p[1] == '"') {
                        *o++ = '"';
                        p += 2;
                        continue;
                    }
                    p++;
                    break;
                }
                *o++ = (char)*p++;
            }
            if (p < end && *p != ',')
                return -2;
        } else {
            while (p < end && *p != ',') {
                if (*p == '"')
                    return -2;
                *o++ = (char)*p++;
            }
        }
        *o++ = '\0';
        if (p >= end)
            return n;
        p++; /* the comma */
    }
}

/* Reads one logical CSV record (possibly several lines); returns its field count, 0 at the
 * end of input, or a negative status via *st. */
static int csv_record(src *s, const char *cols[CSV_MAX_COLS], int64_t *start, pk_status *st)
{
    s->rec_len = 0;
    *st = PK_OK;
    for (;;) {
        int r = read_line(s);
        if (r == 0 && s->rec_len == 0)
            return 0;
        if (r == 0) {
            *st = fail(s, *start, "unterminated quoted field");
            return -1;
        }
        if (r < 0) {
            *st = line_error(s, r, "record");
            return -1;
        }
        if (s->rec_len == 0) {
            *start = s->line + 1; /* an empty line between records */
            continue;
        }
        int n = csv_split(s, cols);
        if (n == -1) {
            if (s->rec_len + 1 > s->cap) {
                *st = line_error(s, -2, "record");
                return -1;
            }
            s->rec[s->rec_len++] = '\n'; /* the newline inside the quoted field */
            continue;
        }
        if (n < 0) {
            if (n == -3)
                *st = fail(s, *start, "more than %d columns", CSV_MAX_COLS);
            else
                *st = fail(s, *start, "malformed quoting");
            return -1;
        }
        return n;
    }
}

static pk_status parse_csv(src *s, pk_import_fn fn, void *user)
{
    const char *cols[CSV_MAX_COLS];
    int map[CSV_MAX_COLS], ncols = 0, seen[5] = {0};
    int64_t start = 1;
    pk_status st;
    ncols = csv_record(s, cols, &start, &st);
    if (ncols <= 0)
        return st != PK_OK ? st : fail(s, 1, "empty file: a CSV needs a header row");
    if (ncols == 1 && cols[0][0] == '\0')
        return fail(s, s->line, "empty header row");
    for (int i = 0; i < ncols; i++) {
        const char *name = cols[i];
        if (i == 0 && !strncmp(name, "\xef\xbb\xbf", 3))
            name += 3;
        map[i] = field_index(name);
        if (map[i] >= 0 && seen[map[i]]++)
            return fail(s, s->line, "duplicate column \"%s\"", name);
    }
    if (!seen[0] && !(seen[2] && seen[3]))
        return fail(s, s->line,
                    "the header needs a \"text\" column, or \"prompt\" and "
                    "\"response\"");
    for (;;) {
        start = s->line + 1;
        int n = csv_record(s, cols, &start, &st);
        if (n == 0 && st == PK_OK)
            return PK_OK;
        if (st != PK_OK)
            return st;
        if (n == 1 && cols[0][0] == '\0')
            continue; /* an empty line */
        if (n != ncols)
            return fail(s, start, "%d fields, the header has %d", n, ncols);
        const char *f[5] = {0};
        for (int i = 0; i < n; i++)
            if (map[i] >= 0)
                f[map[i]] =
                    cols[i][0] || map[i] == 0 || map[i] == 2 || map[i] == 3 ? cols[i] : NULL;
        for (int i = 0; i < 5; i++)
            if (f[i] && !utf8_ok((const uint8_t *)f[i], strlen(f[i])))
                return fail(s, start, "invalid UTF-8 in column \"%s\"", field_names[i]);
        st = emit(s, f, start, fn, user);
        pk_secure_wipe(s->out, s->rec_len + 8);
        if (st != PK_OK)
            return st;
    }
}

/* ---- entry points -------------------------------------------------------------------------- */

static pk_status run(src *s, pk_import_opts opts, uint64_t size_hint, pk_import_fn fn, void *user)
{
    pk_status st = PK_ERR_NOMEM;
    /* Buffers sized for the input when it is small (sodium_malloc touches every page). */
    s->chunk = size_hint < CHUNK ? (size_t)size_hint + 16 : CHUNK;
    s->cap = size_hint < PK_IMPORT_MAX_RECORD ? (size_t)size_hint + 16 : PK_IMPORT_MAX_RECORD;
    s->buf = pk_secure_alloc(s->chunk);
    s->rec = pk_secure_alloc(s->cap + 1);
    s->out = pk_secure_alloc(s->cap + 8);
    if (s->buf && s->rec && s->out) {
        /* Skip a UTF-8 byte order mark. */
        if (fill(s) > 0 && s->end >= 3 && !memcmp(s->buf, "\xef\xbb\xbf", 3))
            s->pos = 3;
        if (opts.format == PK_IMPORT_JSONL)
            st = parse_jsonl(s, fn, user);
        else if (opts.format == PK_IMPORT_TXT)
            st = parse_txt(s, opts.paragraphs, fn, user);
        else if (opts.format == PK_IMPORT_CSV)
            st = parse_csv(s, fn, user);
        else
            st = PK_ERR_ARG;
    }
    if (st == PK_ERR_NOMEM && s->err && s->errlen)
        snprintf(s->err, s->errlen, "out of secure memory");
    pk_secure_free(s->buf);
    pk_secure_free(s->rec);
    pk_secure_free(s->out);
    return st;
}

pk_status pk_import_parse_buffer(const void *data, size_t len, pk_import_opts opts, pk_import_fn fn,
                                 void *user, char *err, size_t errlen)
{
    src s;
    memset(&s, 0, sizeof s);
    s.fd = -1;
    s.mem = data;
    s.mem_len = len;
    s.err = err;
    s.errlen = errlen;
    if (err && errlen)
        err[0] = '\0';
    return run(&s, opts, len, fn, user);
}

static pk_import_format format_of(const char *path)
{
    const char *dot = strrchr(path, '.');
    if (!dot)
        return PK_IMPORT_AUTO;
    if (!strcmp(dot, ".jsonl") || !strcmp(dot, ".json") || !strcmp(dot, ".ndjson"))
        return PK_IMPORT_JSONL;
    if (!strcmp(dot, ".txt") || !strcmp(dot, ".md"))
        return PK_IMPORT_TXT;
    if (!strcmp(dot, ".csv"))
        return PK_IMPORT_CSV;
    return PK_IMPORT_AUTO;
}

pk_status import_file(const char *path, pk_import_opts opts, pk_import_fn fn, void *user, char *err,
                      size_t errlen)
{
    char msg[448] = "";
    src s;
    if (opts.format == PK_IMPORT_AUTO)
        opts.format = format_of(path);
    if (opts.format == PK_IMPORT_AUTO) {
        snprintf(err, errlen, "%s: unknown format: use --format jsonl, txt or csv", path);
        return PK_ERR_ARG;
    }
    memset(&s, 0, sizeof s);
    s.fd = open(path, O_RDONLY | O_CLOEXEC);
    if (s.fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return PK_ERR_IO;
    }
    s.err = msg;
    s.errlen = sizeof msg;
    struct stat sb;
    /* A regular file cannot grow past the cap of its size + 16 unnoticed: the record limit
     * check still fires. Pipes and devices get the full buffers. */
    uint64_t hint =
        fstat(s.fd, &sb) == 0 && S_ISREG(sb.st_mode) ? (uint64_t)sb.st_size : UINT64_MAX;
    pk_status st = run(&s, opts, hint, fn, user);
    close(s.fd);
    if (st != PK_OK && msg[0])
        snprintf(err, errlen, "%s: %s", path, msg);
    return st;
}
