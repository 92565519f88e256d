/* cmd_tokenize.c: `pocketllm tokenize` (JSONL text <-> ids through the model's tokenizer) and
 * `pocketllm bench tokenize` (single-thread encode throughput). The tokenizer itself lives in
 * model/ (pk_tokenizer.h); this file only does I/O and JSON framing. */
#include "cli.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "pk_common.h"
#include "pk_tokenizer.h"

#define MAX_LINE ((size_t)64 << 20) /* one JSONL line */

static const char tokenize_help[] =
    "usage: pocketllm tokenize --model DIR [--add-special] [--decode [--skip-special]]\n"
    "\n"
    "Reads JSON lines on stdin and writes one JSON line per input line on stdout.\n"
    "  encode (default): {\"text\": \"...\"}  ->  {\"ids\": [...]}\n"
    "  --decode:         {\"ids\": [...]}    ->  {\"text\": \"...\"}\n"
    "DIR holds tokenizer.json, or vocab.json + merges.txt, or tokenizer.model (a model\n"
    "directory or one with only tokenizer files). --add-special inserts BOS/EOS as the\n"
    "tokenizer_config.json says; --skip-special drops special tokens when decoding.\n"
    "Bytes that are not valid UTF-8 are written as U+FFFD in the decoded JSON.\n"
    "\n"
    "examples:\n"
    "  echo '{\"text\": \"Hello world\"}' | pocketllm tokenize --model models/gpt2\n"
    "  echo '{\"ids\": [15496, 995]}' | pocketllm tokenize --model models/gpt2 --decode\n"
    "  pocketllm tokenize --model models/stories260k --add-special < prompts.jsonl\n";

static const char bench_help[] =
    "usage: pocketllm bench tokenize --model DIR --file F [--repeat N] [--per-line]\n"
    "\n"
    "Encodes the text file F (in chunks of whole lines, about 64 KiB each; with --per-line each\n"
    "line by itself, as training examples are) on one thread and prints one JSON line:\n"
    "{\"mb_per_s\", \"bytes\", \"tokens\", \"seconds\", \"cpu_seconds\", \"cpu_mb_per_s\"}\n"
    "(MB = 10^6 bytes; wall and process CPU time; the load time is not included; on a busy\n"
    "machine cpu_mb_per_s is the steadier figure). --repeat N encodes the file N times.\n"
    "\n"
    "examples:\n"
    "  pocketllm bench tokenize --model models/gpt2 --file prose.txt\n"
    "  pocketllm bench tokenize --model models/llama3 --file prose.txt --repeat 5\n";

/* ---- JSON helpers (strings with NUL bytes need lengths, which cJSON does not give) ---- */

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
        p++;
    return p;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int hex4(const char *p, unsigned *v)
{
    *v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p[i]);
        if (h < 0)
            return 0;
        *v = *v * 16 + (unsigned)h;
    }
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
        unsigned cp;
        switch (*p++) {
        case '"': out[k++] = '"'; break;
        case '\\': out[k++] = '\\'; break;
        case '/': out[k++] = '/'; break;
        case 'b': out[k++] = '\b'; break;
        case 'f': out[k++] = '\f'; break;
        case 'n': out[k++] = '\n'; break;
        case 'r': out[k++] = '\r'; break;
        case 't': out[k++] = '\t'; break;
        case 'u':
            if (!hex4(p, &cp))
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
            break;
        default:
            return -1;
        }
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

/* Writes s as a JSON string; invalid UTF-8 bytes become U+FFFD. */
static void put_json_string(FILE *f, const char *s, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n;) {
        uint8_t c = (uint8_t)s[i];
        if (c == '"' || c == '\\') {
            fputc('\\', f);
            fputc(c, f);
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            static const char esc[] = {'b', 't', 'n', 0, 'f', 'r'};
            if (c >= 8 && c <= 13 && esc[c - 8])
                fprintf(f, "\\%c", esc[c - 8]);
            else
                fprintf(f, "\\u%04x", c);
            i++;
        } else if (c < 0x80) {
            fputc(c, f);
            i++;
        } else {
            size_t k = c >= 0xF0 && c < 0xF5 ? 4 : c >= 0xE0 && c < 0xF0 ? 3 : c >= 0xC2 && c < 0xE0 ? 2 : 0;
            int ok = k && i + k <= n;
            for (size_t j = 1; ok && j < k; j++)
                ok = ((uint8_t)s[i + j] & 0xC0) == 0x80;
            if (ok && k == 3) { /* no overlongs or surrogates */
                uint8_t c1 = (uint8_t)s[i + 1];
                ok = !(c == 0xE0 && c1 < 0xA0) && !(c == 0xED && c1 >= 0xA0);
            } else if (ok && k == 4) {
                uint8_t c1 = (uint8_t)s[i + 1];
                ok = !(c == 0xF0 && c1 < 0x90) && !(c == 0xF4 && c1 >= 0x90);
            }
            if (ok) {
                fwrite(s + i, 1, k, f);
                i += k;
            } else {
                fputs("\xef\xbf\xbd", f);
                i++;
            }
        }
    }
    fputc('"', f);
}

static int load_tok(const char *cmd, const char *dir, pk_tokenizer **t)
{
    char err[1024];
    if (!dir) {
        cli_error(cmd, "--model DIR is required (see pocketllm %s --help)", cmd);
        return CLI_USAGE;
    }
    pk_status st = pk_tokenizer_load(dir, t, err, sizeof err);
    if (st != PK_OK) {
        cli_error(cmd, "%s", err[0] ? err : pk_status_str(st));
        return CLI_ERR;
    }
    return CLI_OK;
}

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
    fputs("{\"ids\": [", stdout);
    for (size_t i = 0; i < n; i++)
        printf(i ? ", %d" : "%d", (int)ids[i]);
    fputs("]}\n", stdout);
    free(ids);
    return CLI_OK;
}

static int decode_line(const char *cmd, const pk_tokenizer *t, const char *line, size_t len,
                       size_t lineno, int skip_special)
{
    cJSON *j = cJSON_ParseWithLength(line, len);
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "ids");
    int rc = CLI_ERR;
    int32_t *ids = NULL;
    char *text = NULL;
    if (!cJSON_IsObject(j) || !cJSON_IsArray(a)) {
        cli_error(cmd, "stdin line %zu: expected a JSON object with an array \"ids\"", lineno);
        goto out;
    }
    size_t n = (size_t)cJSON_GetArraySize(a), k = 0, vs = pk_tokenizer_vocab_size(t);
    ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids)
        goto out;
    const cJSON *e;
    cJSON_ArrayForEach(e, a)
    {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= (double)vs ||
            e->valuedouble != (double)(int32_t)e->valuedouble) {
            cli_error(cmd, "stdin line %zu: ids[%zu] is not a token id below %zu", lineno, k, vs);
            goto out;
        }
        ids[k++] = (int32_t)e->valuedouble;
    }
    size_t tl = 0;
    pk_status st = pk_tokenizer_decode(t, ids, k, skip_special, &text, &tl);
    if (st != PK_OK) {
        cli_error(cmd, "stdin line %zu: decode failed: %s", lineno, pk_status_str(st));
        goto out;
    }
    fputs("{\"text\": ", stdout);
    put_json_string(stdout, text, tl);
    fputs("}\n", stdout);
    rc = CLI_OK;
out:
    free(text);
    free(ids);
    cJSON_Delete(j);
    return rc;
}

int cmd_tokenize(int argc, char **argv)
{
    static const char *const vals[] = {"--model", NULL};
    static const char *const flags[] = {"--add-special", "--decode", "--skip-special", NULL};
    if (cli_help(argc, argv, tokenize_help))
        return CLI_OK;
    if (cli_check(argc, argv, vals, flags))
        return CLI_USAGE;
    if (cli_positional(argc, argv, 0, vals)) {
        cli_error(argv[0], "unexpected argument '%s'", cli_positional(argc, argv, 0, vals));
        return CLI_USAGE;
    }
    pk_tokenizer *t = NULL;
    int rc = load_tok(argv[0], cli_opt(argc, argv, "--model"), &t);
    if (rc != CLI_OK)
        return rc;
    int decode = cli_flag(argc, argv, "--decode");
    int add_special = cli_flag(argc, argv, "--add-special");
    int skip_special = cli_flag(argc, argv, "--skip-special");
    char *line = NULL, *scratch = NULL;
    size_t cap = 0, scap = 0, lineno = 0;
    ssize_t n;
    while (rc == CLI_OK && (n = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        size_t len = (size_t)n;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = 0;
        if (len == 0)
            continue;
        if (len > MAX_LINE) {
            cli_error(argv[0], "stdin line %zu: longer than %zu bytes", lineno, MAX_LINE);
            rc = CLI_ERR;
            break;
        }
        if (len + 1 > scap) {
            char *s = realloc(scratch, len + 1);
            if (!s) {
                cli_error(argv[0], "out of memory");
                rc = CLI_ERR;
                break;
            }
            scratch = s;
            scap = len + 1;
        }
        rc = decode ? decode_line(argv[0], t, line, len, lineno, skip_special)
                    : encode_line(argv[0], t, line, len, lineno, add_special, scratch);
    }
    if (rc == CLI_OK && ferror(stdin)) {
        cli_error(argv[0], "reading stdin: %s", strerror(errno));
        rc = CLI_ERR;
    }
    if (fflush(stdout) != 0 && rc == CLI_OK) {
        cli_error(argv[0], "write failed: %s", strerror(errno));
        rc = CLI_ERR;
    }
    free(line);
    free(scratch);
    pk_tokenizer_free(t);
    return rc;
}

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

int cmd_bench_tokenize(int argc, char **argv)
{
    static const char *const vals[] = {"--model", "--file", "--repeat", NULL};
    if (cli_help(argc, argv, bench_help))
        return CLI_OK;
    static const char *const flags[] = {"--per-line", NULL};
    if (cli_check(argc, argv, vals, flags))
        return CLI_USAGE;
    size_t chunk = cli_flag(argc, argv, "--per-line") ? 1 : 65536;
    long long repeat = 1;
    if (cli_opt_long(argc, argv, "--repeat", &repeat) < 0)
        return CLI_USAGE;
    const char *file = cli_opt(argc, argv, "--file");
    if (!file || repeat < 1 || repeat > 1000) {
        cli_error(argv[0], "%s", !file ? "--file F is required" : "--repeat must be 1..1000");
        return CLI_USAGE;
    }
    pk_tokenizer *t = NULL;
    int rc = load_tok(argv[0], cli_opt(argc, argv, "--model"), &t);
    if (rc != CLI_OK)
        return rc;
    char *data = NULL;
    size_t len = 0;
    rc = read_file(argv[0], file, &data, &len);
    if (rc != CLI_OK)
        goto out;
    long long tokens = 0;
    clock_t c0 = clock();
    double t0 = pk_time_now();
    for (long long r = 0; r < repeat && tokens >= 0; r++) {
        long long k = encode_chunks(t, data, len, chunk);
        tokens = k < 0 ? -1 : tokens + k;
    }
    double secs = pk_time_now() - t0;
    double cpu = (double)(clock() - c0) / CLOCKS_PER_SEC;
    if (tokens < 0) {
        cli_error(argv[0], "encode failed (out of memory)");
        rc = CLI_ERR;
        goto out;
    }
    double bytes = (double)len * (double)repeat;
    printf("{\"mb_per_s\": %.2f, \"bytes\": %.0f, \"tokens\": %lld, \"seconds\": %.4f, "
           "\"cpu_seconds\": %.4f, \"cpu_mb_per_s\": %.2f}\n",
           secs > 0 ? bytes / secs / 1e6 : 0.0, bytes, tokens, secs, cpu,
           cpu > 0 ? bytes / cpu / 1e6 : 0.0);
out:
    free(data);
    pk_tokenizer_free(t);
    return rc;
}
