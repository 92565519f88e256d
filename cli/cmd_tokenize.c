/* cmd_tokenize.c: `pocketllm tokenize` (JSONL text <-> ids through the model's tokenizer) and
 * `pocketllm bench tokenize` (single-thread encode throughput), one option table each. The
 * tokenizer itself lives in tokenizer/ (pk_tokenizer.h); this file only does I/O and JSON. */
#include "cli.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "pk_common.h"
#include "pk_crypto.h"
#include "pk_tokenizer.h"

#define MAX_LINE ((size_t)64 << 20) /* one JSONL line */

/* ---- JSON helpers (strings with NUL bytes need lengths, which cJSON does not give) ---- */

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
        p++;
    return p;
}

/* The four hex digits of a \u escape at p (crypto/ decodes hex for the whole tree). */
static int hex4(const char *p, unsigned *v)
{
    char hex[5];
    uint8_t b[2];
    *v = 0;
    if (strnlen(p, 4) < 4)
        return 0;
    memcpy(hex, p, 4);
    hex[4] = '\0';
    if (pk_hex_decode(b, sizeof b, hex) != PK_OK)
        return 0;
    *v = (unsigned)b[0] << 8 | b[1];
    return 1;
}

static size_t put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 63));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 63));
        o[2] = (char)(0x80 | (cp & 63));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 63));
    o[2] = (char)(0x80 | (cp >> 6 & 63));
    o[3] = (char)(0x80 | (cp & 63));
    return 4;
}

/* JSON's one-character escapes: \X stands for the byte at X's place in esc_bytes. */
static const char esc_names[] = "\"\\/bfnrt";
static const char esc_bytes[] = "\"\\/\b\f\n\r\t";

/* Decodes the JSON string starting at *pp (at the opening quote) into out (size >= its raw
 * length); returns the decoded length or -1, and moves *pp past the closing quote. */
static long json_string(const char **pp, char *out)
{
    const char *p = *pp;
    if (*p++ != '"')
        return -1;
    size_t k = 0;
    while (*p != '"') {
        if (!*p || (uint8_t)*p < 0x20)
            return -1;
        if (*p != '\\') {
            out[k++] = *p++;
            continue;
        }
        p++;
        const char *esc = *p ? strchr(esc_names, *p) : NULL;
        if (esc) {
            out[k++] = esc_bytes[esc - esc_names];
            p++;
            continue;
        }
        unsigned cp;
        if (*p++ != 'u' || !hex4(p, &cp))
            return -1;
        p += 4;
        if (cp >= 0xD800 && cp < 0xDC00) {
            unsigned lo;
            if (p[0] != '\\' || p[1] != 'u' || !hex4(p + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                return -1;
            p += 6;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if (cp >= 0xDC00 && cp < 0xE000) {
            return -1;
        }
        k += put_utf8(out + k, cp);
    }
    *pp = p + 1;
    return (long)k;
}

/* Skips one member value of an already-validated JSON object: stops at the ',' or '}' that
 * ends it. */
static const char *skip_value(const char *p)
{
    int depth = 0;
    while (*p) {
        if (*p == '"') {
            for (p++; *p && *p != '"'; p++)
                if (*p == '\\' && p[1])
                    p++;
            if (*p)
                p++;
            continue;
        }
        if (depth == 0 && (*p == ',' || *p == '}'))
            return p;
        if (*p == '{' || *p == '[')
            depth++;
        else if (*p == '}' || *p == ']')
            depth--;
        p++;
    }
    return p;
}

/* The "text" member of a validated JSON object line, decoded (NUL-safe) into out. */
static long find_text(const char *line, char *out)
{
    const char *p = skip_ws(line);
    if (*p++ != '{')
        return -1;
    for (;;) {
        p = skip_ws(p);
        if (*p != '"')
            return -1;
        long kn = json_string(&p, out);
        if (kn < 0)
            return -1;
        int is_text = kn == 4 && !memcmp(out, "text", 4);
        p = skip_ws(p);
        if (*p++ != ':')
            return -1;
        p = skip_ws(p);
        if (is_text)
            return *p == '"' ? json_string(&p, out) : -1;
        p = skip_ws(skip_value(p));
        if (*p++ != ',')
            return -1;
    }
}

/* Length of the valid UTF-8 sequence at s (left bytes remain), or 0 if it is not one: no
 * overlongs, surrogates or code points above U+10FFFF. */
static size_t utf8_seq(const uint8_t *s, size_t left)
{
    uint8_t c = s[0];
    if (c < 0x80)
        return 1;
    size_t k = c >= 0xF0 && c < 0xF5   ? 4
               : c >= 0xE0 && c < 0xF0 ? 3
               : c >= 0xC2 && c < 0xE0 ? 2
                                       : 0;
    if (k == 0 || k > left)
        return 0;
    for (size_t j = 1; j < k; j++)
        if ((s[j] & 0xC0) != 0x80)
            return 0;
    if (k == 3 && ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] >= 0xA0)))
        return 0;
    if (k == 4 && ((c == 0xF0 && s[1] < 0x90) || (c == 0xF4 && s[1] >= 0x90)))
        return 0;
    return k;
}

/* s (n bytes) with every byte that is not part of valid UTF-8 replaced by U+FFFD; owned
 * result (free()), NUL-terminated, *len bytes without the NUL; NULL if out of memory. */
static char *utf8_repair(const char *s, size_t n, size_t *len)
{
    char *o = malloc(3 * n + 1), *p = o;
    for (size_t i = 0; o && i < n;) {
        size_t k = utf8_seq((const uint8_t *)s + i, n - i);
        if (k) {
            memcpy(p, s + i, k);
            p += k;
            i += k;
        } else {
            memcpy(p, "\xef\xbf\xbd", 3);
            p += 3;
            i++;
        }
    }
    if (o) {
        *p = '\0';
        *len = (size_t)(p - o);
    }
    return o;
}

/* {"text": "..."} for s (len bytes, s[len] == NUL). A cJSON string ends at its first NUL, so
 * each NUL-free run of s is escaped by cJSON and the NUL bytes between runs are written as
 * \u0000 (decoded text may hold them: a byte-level token for 0x00). */
static int print_text(const char *s, size_t len)
{
    fputs("{\"text\": \"", stdout);
    for (size_t off = 0;;) {
        cJSON *run = cJSON_CreateStringReference(s + off);
        char *lit = run ? cJSON_PrintUnformatted(run) : NULL;
        cJSON_Delete(run);
        if (!lit)
            return -1;
        fwrite(lit + 1, 1, strlen(lit) - 2, stdout); /* without its quotes */
        cJSON_free(lit);
        off += strlen(s + off);
        if (off >= len)
            break;
        fputs("\\u0000", stdout);
        off++;
    }
    fputs("\"}\n", stdout);
    return 0;
}

/* {"ids": [1, 2, 3]}: every id is rendered by one reused cJSON number, so a long line does not
 * need a cJSON tree of one 64-byte node per token. */
static int print_ids(const int32_t *ids, size_t n)
{
    cJSON *num = cJSON_CreateNumber(0);
    char buf[32];
    if (!num)
        return -1;
    fputs("{\"ids\": [", stdout);
    for (size_t i = 0; i < n; i++) {
        cJSON_SetNumberValue(num, ids[i]);
        if (!cJSON_PrintPreallocated(num, buf, (int)sizeof buf, 0))
            buf[0] = '\0'; /* cannot happen: an int32 needs at most 11 bytes */
        fputs(i ? ", " : "", stdout);
        fputs(buf, stdout);
    }
    fputs("]}\n", stdout);
    cJSON_Delete(num);
    return 0;
}

/* A flat object on one line as {"key": value, "key2": value2} (the layout this command has
 * always printed; cJSON's own are compact or multi-line): keys and values rendered by cJSON.
 * obj is taken. */
static int print_spaced(cJSON *obj)
{
    int ok = obj != NULL;
    fputc('{', stdout);
    for (const cJSON *m = obj ? obj->child : NULL; ok && m; m = m->next) {
        cJSON *key = cJSON_CreateStringReference(m->string);
        char *k = key ? cJSON_PrintUnformatted(key) : NULL, *v = cJSON_PrintUnformatted(m);
        ok = k && v;
        if (ok)
            printf("%s%s: %s", m == obj->child ? "" : ", ", k, v);
        cJSON_free(k);
        cJSON_free(v);
        cJSON_Delete(key);
    }
    fputs("}\n", stdout);
    cJSON_Delete(obj);
    return ok ? 0 : -1;
}

static int load_tok(const char *cmd, const char *dir, pk_tokenizer **t)
{
    char err[1024];
    if (!dir) {
        cli_error(cmd, "--model DIR is required (see pocketllm %s --help)", cmd);
        return CLI_USAGE;
    }
    pk_status st = pk_tokenizer_load(dir, t, err, sizeof err);
    if (st != PK_OK)
        return cli_fail(cmd, st, err);
    return CLI_OK;
}

/* ---- tokenize ------------------------------------------------------------------------------- */

typedef struct tokenize_opts {
    cli_common c;
    const char *model;
    int add_special;
    int decode;
    int skip_special;
} tokenize_opts;

#define T tokenize_opts
static const cli_option tokenize_table[] = {
    {"--model", CLI_STR, CLI_AT(T, model), 0, 0, NULL, "DIR",
     "model or tokenizer directory (required)"},
    {"--add-special", CLI_FLAG, CLI_AT(T, add_special), 0, 0, NULL, NULL,
     "encode: insert BOS/EOS as tokenizer_config.json says"},
    {"--decode", CLI_FLAG, CLI_AT(T, decode), 0, 0, NULL, NULL, "ids to text"},
    {"--skip-special", CLI_FLAG, CLI_AT(T, skip_special), 0, 0, NULL, NULL,
     "decode: drop special tokens"},
    CLI_HOME_IGNORED(T),
    CLI_END,
};
#undef T

static const cli_command tokenize_cmd = {
    "tokenize",
    "tokenize --model DIR [--add-special] [--decode [--skip-special]]",
    "Reads JSON lines on stdin and writes one JSON line per input line on stdout.\n"
    "  encode (default): {\"text\": \"...\"}  ->  {\"ids\": [...]}\n"
    "  --decode:         {\"ids\": [...]}    ->  {\"text\": \"...\"}\n"
    "DIR holds tokenizer.json, or vocab.json + merges.txt, or tokenizer.model (a model\n"
    "directory or one with only tokenizer files).\n"
    "Bytes that are not valid UTF-8 are written as U+FFFD in the decoded JSON.",
    tokenize_table,
    0,
    "examples:\n"
    "  echo '{\"text\": \"Hello world\"}' | pocketllm tokenize --model models/gpt2\n"
    "  echo '{\"ids\": [15496, 995]}' | pocketllm tokenize --model models/gpt2 --decode\n"
    "  pocketllm tokenize --model models/stories260k --add-special < prompts.jsonl"};

static int encode_line(const char *cmd, const pk_tokenizer *t, const char *line, size_t len,
                       size_t lineno, int add_special, char *scratch)
{
    cJSON *j = cJSON_ParseWithLength(line, len);
    int valid = cJSON_IsObject(j) && cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "text"));
    cJSON_Delete(j);
    long tn = valid ? find_text(line, scratch) : -1;
    if (tn < 0) {
        cli_error(cmd, "stdin line %zu: expected a JSON object with a string \"text\"", lineno);
        return CLI_ERR;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    pk_status st = pk_tokenizer_encode(t, scratch, (size_t)tn, add_special, &ids, &n);
    if (st != PK_OK) {
        cli_error(cmd, "stdin line %zu: encode failed: %s", lineno, pk_status_str(st));
        return CLI_ERR;
    }
    int rc = print_ids(ids, n) == 0 ? CLI_OK : CLI_ERR;
    free(ids);
    if (rc != CLI_OK)
        cli_error(cmd, "stdin line %zu: out of memory", lineno);
    return rc;
}

/* The "ids" array of a parsed line as token ids below the vocabulary size; owned (free()). */
static int32_t *line_ids(const char *cmd, const cJSON *a, size_t vs, size_t lineno, size_t *n)
{
    int32_t *ids = malloc(((size_t)cJSON_GetArraySize(a) + 1) * sizeof *ids);
    size_t k = 0;
    const cJSON *e;
    if (!ids) {
        cli_error(cmd, "stdin line %zu: out of memory", lineno);
        return NULL;
    }
    cJSON_ArrayForEach(e, a)
    {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= (double)vs ||
            e->valuedouble != (double)(int32_t)e->valuedouble) {
            cli_error(cmd, "stdin line %zu: ids[%zu] is not a token id below %zu", lineno, k, vs);
            free(ids);
            return NULL;
        }
        ids[k++] = (int32_t)e->valuedouble;
    }
    *n = k;
    return ids;
}

static int decode_line(const char *cmd, const pk_tokenizer *t, const char *line, size_t len,
                       size_t lineno, int skip_special)
{
    cJSON *j = cJSON_ParseWithLength(line, len);
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "ids");
    int rc = CLI_ERR;
    int32_t *ids = NULL;
    char *text = NULL, *clean = NULL;
    size_t n = 0, tl = 0, cl = 0;
    if (!cJSON_IsObject(j) || !cJSON_IsArray(a)) {
        cli_error(cmd, "stdin line %zu: expected a JSON object with an array \"ids\"", lineno);
        goto out;
    }
    ids = line_ids(cmd, a, pk_tokenizer_vocab_size(t), lineno, &n);
    if (!ids)
        goto out;
    pk_status st = pk_tokenizer_decode(t, ids, n, skip_special, &text, &tl);
    if (st != PK_OK) {
        cli_error(cmd, "stdin line %zu: decode failed: %s", lineno, pk_status_str(st));
        goto out;
    }
    clean = utf8_repair(text, tl, &cl);
    if (!clean || print_text(clean, cl) != 0) {
        cli_error(cmd, "stdin line %zu: out of memory", lineno);
        goto out;
    }
    rc = CLI_OK;
out:
    free(clean);
    free(text);
    free(ids);
    cJSON_Delete(j);
    return rc;
}

/* Grows *buf to at least n bytes. */
static int reserve(char **buf, size_t *cap, size_t n)
{
    if (n <= *cap)
        return 0;
    char *b = realloc(*buf, n);
    if (!b)
        return -1;
    *buf = b;
    *cap = n;
    return 0;
}

/* Encodes or decodes every line of stdin; stops at the first bad line. */
static int tokenize_stream(const tokenize_opts *o, const pk_tokenizer *t)
{
    const char *cmd = o->c.cmd;
    char *line = NULL, *scratch = NULL;
    size_t cap = 0, scap = 0, lineno = 0;
    ssize_t got;
    int rc = CLI_OK;
    while (rc == CLI_OK && (got = getline(&line, &cap, stdin)) >= 0) {
        size_t len = (size_t)got;
        lineno++;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = 0;
        if (len == 0)
            continue;
        if (len > MAX_LINE) {
            cli_error(cmd, "stdin line %zu: longer than %zu bytes", lineno, MAX_LINE);
            rc = CLI_ERR;
        } else if (reserve(&scratch, &scap, len + 1) != 0) {
            cli_error(cmd, "out of memory");
            rc = CLI_ERR;
        } else {
            rc = o->decode ? decode_line(cmd, t, line, len, lineno, o->skip_special)
                           : encode_line(cmd, t, line, len, lineno, o->add_special, scratch);
        }
    }
    if (rc == CLI_OK && ferror(stdin)) {
        cli_error(cmd, "reading stdin: %s", strerror(errno));
        rc = CLI_ERR;
    }
    free(line);
    free(scratch);
    return rc;
}

int cmd_tokenize(int argc, char **argv)
{
    tokenize_opts o = {0};
    pk_tokenizer *t = NULL;
    int rc = cli_parse(&tokenize_cmd, argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? CLI_OK : rc;
    rc = load_tok(o.c.cmd, o.model, &t);
    if (rc != CLI_OK)
        return rc;
    rc = tokenize_stream(&o, t);
    if (fflush(stdout) != 0 && rc == CLI_OK) {
        cli_error(o.c.cmd, "write failed: %s", strerror(errno));
        rc = CLI_ERR;
    }
    pk_tokenizer_free(t);
    return rc;
}

/* ---- bench tokenize ------------------------------------------------------------------------- */

typedef struct bench_opts {
    cli_common c;
    const char *model;
    const char *file;
    int repeat;
    int per_line;
} bench_opts;

#define T bench_opts
static const cli_option bench_table[] = {
    {"--model", CLI_STR, CLI_AT(T, model), 0, 0, NULL, "DIR",
     "model or tokenizer directory (required)"},
    {"--file", CLI_STR, CLI_AT(T, file), 0, 0, NULL, "F", "text file to encode (required)"},
    {"--repeat", CLI_INT, CLI_AT(T, repeat), 1, 1000, NULL, "N", "encode the file N times"},
    {"--per-line", CLI_FLAG, CLI_AT(T, per_line), 0, 0, NULL, NULL,
     "encode each line by itself, as training examples are"},
    CLI_HOME_IGNORED(T),
    CLI_END,
};
#undef T

static const cli_command bench_cmd = {
    "bench tokenize",
    "bench tokenize --model DIR --file F [--repeat N] [--per-line]",
    "Encodes the text file F (in chunks of whole lines, about 64 KiB each; with --per-line each\n"
    "line by itself) on one thread and prints one JSON line:\n"
    "{\"mb_per_s\", \"bytes\", \"tokens\", \"seconds\", \"cpu_seconds\", \"cpu_mb_per_s\"}\n"
    "(MB = 10^6 bytes; wall and process CPU time; the load time is not included; on a busy\n"
    "machine cpu_mb_per_s is the steadier figure).",
    bench_table,
    0,
    "examples:\n"
    "  pocketllm bench tokenize --model models/gpt2 --file prose.txt\n"
    "  pocketllm bench tokenize --model models/llama3 --file prose.txt --repeat 5"};

static int read_file(const char *cmd, const char *path, char **data, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        cli_error(cmd, "%s: %s", path, strerror(errno));
        return CLI_ERR;
    }
    size_t cap = 1 << 20, n = 0;
    char *b = malloc(cap);
    while (b) {
        size_t got = fread(b + n, 1, cap - n, f);
        n += got;
        if (n < cap)
            break;
        char *nb = cap < ((size_t)1 << 31) ? realloc(b, cap * 2) : NULL;
        if (!nb) {
            free(b);
            b = NULL;
            break;
        }
        b = nb;
        cap *= 2;
    }
    int bad = ferror(f);
    fclose(f);
    if (!b || bad) {
        cli_error(cmd, "%s: %s", path, b ? "read error" : "too large or out of memory");
        free(b);
        return CLI_ERR;
    }
    *data = b;
    *len = n;
    return CLI_OK;
}

/* Encodes data in chunks of whole lines (~64 KiB, or one line); returns tokens or -1. */
static long long encode_chunks(const pk_tokenizer *t, const char *data, size_t len, size_t chunk)
{
    long long tokens = 0;
    for (size_t pos = 0; pos < len;) {
        size_t end = pos + chunk < len ? pos + chunk : len;
        const char *nl = end < len ? memchr(data + end - 1, '\n', len - end + 1) : NULL;
        end = nl ? (size_t)(nl - data) + 1 : len;
        int32_t *ids = NULL;
        size_t n = 0;
        if (pk_tokenizer_encode(t, data + pos, end - pos, 0, &ids, &n) != PK_OK)
            return -1;
        free(ids);
        tokens += (long long)n;
        pos = end;
    }
    return tokens;
}

/* Times `repeat` encodes of data and prints the JSON line. */
static int bench_run(const bench_opts *o, const pk_tokenizer *t, const char *data, size_t len)
{
    size_t chunk = o->per_line ? 1 : 65536;
    long long tokens = 0;
    clock_t c0 = clock();
    double t0 = pk_time_now();
    for (int r = 0; r < o->repeat && tokens >= 0; r++) {
        long long k = encode_chunks(t, data, len, chunk);
        tokens = k < 0 ? -1 : tokens + k;
    }
    double secs = pk_time_now() - t0;
    double cpu = (double)(clock() - c0) / CLOCKS_PER_SEC;
    if (tokens < 0) {
        cli_error(o->c.cmd, "encode failed (out of memory)");
        return CLI_ERR;
    }
    double bytes = (double)len * (double)o->repeat;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "mb_per_s", secs > 0 ? bytes / secs / 1e6 : 0.0);
    cJSON_AddNumberToObject(j, "bytes", bytes);
    cJSON_AddNumberToObject(j, "tokens", (double)tokens);
    cJSON_AddNumberToObject(j, "seconds", secs);
    cJSON_AddNumberToObject(j, "cpu_seconds", cpu);
    cJSON_AddNumberToObject(j, "cpu_mb_per_s", cpu > 0 ? bytes / cpu / 1e6 : 0.0);
    if (print_spaced(j) != 0) {
        cli_error(o->c.cmd, "out of memory while printing JSON");
        return CLI_ERR;
    }
    return CLI_OK;
}

int cmd_bench_tokenize(int argc, char **argv)
{
    bench_opts o = {.repeat = 1};
    pk_tokenizer *t = NULL;
    char *data = NULL;
    size_t len = 0;
    int rc = cli_parse(&bench_cmd, argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? CLI_OK : rc;
    if (!o.file) {
        cli_error(o.c.cmd, "--file F is required (see pocketllm bench tokenize --help)");
        return CLI_USAGE;
    }
    rc = load_tok(o.c.cmd, o.model, &t);
    if (rc != CLI_OK)
        return rc;
    rc = read_file(o.c.cmd, o.file, &data, &len);
    if (rc == CLI_OK)
        rc = bench_run(&o, t, data, len);
    free(data);
    pk_tokenizer_free(t);
    return rc;
}
