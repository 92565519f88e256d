/* args.c: option helpers shared by every command (see cli.h for the conventions). */
#include "cli.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cli_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "pocketllm %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* Matches "--name" or "--name=value"; returns the value part (or "" for the bare form). */
static const char *match(const char *arg, const char *name)
{
    size_t n = strlen(name);
    if (strncmp(arg, name, n) != 0)
        return NULL;
    if (arg[n] == '\0')
        return "";
    if (arg[n] == '=')
        return arg + n + 1;
    return NULL;
}

static int in_list(const char *arg, const char *const *list)
{
    for (; list && *list; list++)
        if (match(arg, *list))
            return 1;
    return 0;
}

const char *cli_opt(int argc, char **argv, const char *name)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--"))
            break;
        const char *v = match(argv[i], name);
        if (!v)
            continue;
        if (*v)
            return v;
        if (argv[i][strlen(name)] == '=')
            return v; /* explicit empty value */
        return i + 1 < argc ? argv[i + 1] : NULL;
    }
    return NULL;
}

int cli_flag(int argc, char **argv, const char *name)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--"))
            break;
        if (!strcmp(argv[i], name))
            return 1;
    }
    return 0;
}

static const char *const always_values[] = {"--home", NULL};

const char *cli_positional(int argc, char **argv, int n, const char *const *takes_value)
{
    int seen = 0, rest = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!rest && !strcmp(a, "--")) {
            rest = 1;
            continue;
        }
        if (!rest && a[0] == '-' && a[1] != '\0') {
            if ((in_list(a, takes_value) || in_list(a, always_values)) && !strchr(a, '='))
                i++; /* skip the value */
            continue;
        }
        if (seen++ == n)
            return a;
    }
    return NULL;
}

int cli_check(int argc, char **argv, const char *const *takes_value, const char *const *flags)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--"))
            break;
        if (a[0] != '-' || a[1] == '\0')
            continue;
        if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            continue;
        if (in_list(a, takes_value) || in_list(a, always_values)) {
            if (!strchr(a, '=')) {
                if (i + 1 >= argc) {
                    cli_error(argv[0], "option %s needs a value (see pocketllm %s --help)", a,
                              argv[0]);
                    return 1;
                }
                i++;
            }
            continue;
        }
        if (in_list(a, flags) && !strchr(a, '='))
            continue;
        cli_error(argv[0], "unknown option %s (see pocketllm %s --help)", a, argv[0]);
        return 1;
    }
    return 0;
}

int cli_opt_long(int argc, char **argv, const char *name, long long *out)
{
    const char *v = cli_opt(argc, argv, name);
    if (!v)
        return 0;
    char *end = NULL;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end != '\0') {
        cli_error(argv[0], "%s expects an integer, got '%s'", name, v);
        return -1;
    }
    *out = x;
    return 1;
}

int cli_opt_double(int argc, char **argv, const char *name, double *out)
{
    const char *v = cli_opt(argc, argv, name);
    if (!v)
        return 0;
    char *end = NULL;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end != '\0' || !isfinite(x)) {
        cli_error(argv[0], "%s expects a number, got '%s'", name, v);
        return -1;
    }
    *out = x;
    return 1;
}

int cli_help(int argc, char **argv, const char *text)
{
    if (!cli_flag(argc, argv, "--help") && !cli_flag(argc, argv, "-h"))
        return 0;
    fputs(text, stdout);
    return 1;
}

int cli_home(const cli_common *c, char *out, size_t n)
{
    const char *h = c->home;
    int w;
    if (h && *h)
        w = snprintf(out, n, "%s", h);
    else if ((h = getenv("POCKETLLM_HOME")) && *h)
        w = snprintf(out, n, "%s", h);
    else if ((h = getenv("XDG_DATA_HOME")) && *h)
        w = snprintf(out, n, "%s/pocketllm", h);
    else if ((h = getenv("HOME")) && *h)
        w = snprintf(out, n, "%s/.local/share/pocketllm", h);
    else
        w = snprintf(out, n, "./pocketllm-home");
    return (w < 0 || (size_t)w >= n) ? -1 : 0;
}

void cli_json_str(FILE *f, const char *s, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

int cli_json_print(cJSON *obj)
{
    char *text = obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    if (!text) {
        fputs("pocketllm: out of memory while printing JSON\n", stderr);
        return CLI_ERR;
    }
    puts(text);
    cJSON_free(text);
    return CLI_OK;
}

void cli_json_add_finite(cJSON *obj, const char *key, double v)
{
    if (isfinite(v))
        cJSON_AddNumberToObject(obj, key, v);
    else
        cJSON_AddNullToObject(obj, key);
}

int cli_parse_ids(const cli_common *c, const char *flag, const char *s, int32_t **ids, int *n)
{
    size_t cap = 1;
    for (const char *p = s; *p; p++)
        cap += *p == ',';
    int32_t *v = cap <= INT_MAX ? malloc(cap * sizeof *v) : NULL;
    *ids = NULL;
    *n = 0;
    if (v == NULL) {
        cli_error(c->cmd, "%s: out of memory for %zu ids", flag, cap);
        return CLI_ERR;
    }
    int k = 0;
    for (const char *p = s;; k++) {
        char *end = NULL;
        errno = 0;
        /* digits only: strtoll alone would take " 7", "+7" and "-0" */
        long long x = isdigit((unsigned char)*p) ? strtoll(p, &end, 10) : -1;
        if (x < 0 || errno || x > INT32_MAX || (*end != ',' && *end != '\0')) {
            cli_error(c->cmd, "%s: expected comma-separated token ids (0 .. %d), got \"%s\"", flag,
                      INT32_MAX, s);
            free(v);
            return CLI_USAGE;
        }
        v[k] = (int32_t)x;
        if (*end == '\0')
            break;
        p = end + 1;
    }
    *ids = v;
    *n = k + 1;
    return 0;
}

void cli_json_add_rounded(cJSON *obj, const char *key, double v, int decimals)
{
    double scale = pow(10.0, decimals);
    double r = round(v * scale) / scale;
    cli_json_add_finite(obj, key, isfinite(r) ? r : v);
}

void cli_json_add_exact(cJSON *obj, const char *key, double v)
{
    char buf[32];
    if (!isfinite(v)) {
        cJSON_AddNullToObject(obj, key);
        return;
    }
    snprintf(buf, sizeof buf, "%.17g", v); /* a finite double in %g is a valid JSON number */
    cJSON_AddRawToObject(obj, key, buf);
}
