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

const char *cli_errtext(pk_status st, const char *err)
{
    return err && err[0] ? err : pk_status_str(st);
}

int cli_fail(const char *cmd, pk_status st, const char *err)
{
    cli_error(cmd, "%s", cli_errtext(st, err));
    return CLI_ERR;
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

cJSON *cli_json_finite(double v)
{
    return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull();
}

void cli_json_add_finite(cJSON *obj, const char *key, double v)
{
    if (isfinite(v))
        cJSON_AddNumberToObject(obj, key, v);
    else
        cJSON_AddNullToObject(obj, key);
}

/* 1 if arg ("--name" or "--name=value") is an option of one of subs that takes its value from
 * the next argument. */
static int sub_takes_value(const cli_command *const *subs, const char *arg)
{
    if (strchr(arg, '='))
        return 0;
    for (; *subs; subs++)
        for (const cli_option *o = (*subs)->opts; o->name; o++)
            if (!strcmp(o->name, arg))
                return o->kind != CLI_FLAG;
    return 0;
}

/* The index in argv of the first argument that is not an option or an option's value, or 0. */
static int sub_word(const cli_command *const *subs, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--"))
            return i + 1 < argc ? i + 1 : 0;
        if (argv[i][0] != '-' || argv[i][1] == '\0')
            return i;
        if (sub_takes_value(subs, argv[i]))
            i++;
    }
    return 0;
}

static int has_help(int argc, char **argv)
{
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return 1;
    return 0;
}

void cli_print_group_help(const cli_group *g)
{
    const char *lead = "usage:";
    for (const cli_command *const *s = g->subs; *s; s++) {
        for (const char *u = (*s)->usage; *u;) {
            size_t len = strcspn(u, "\n");
            printf("%s pocketllm %.*s\n", lead, (int)len, u);
            lead = "      ";
            u += len + (u[len] ? 1 : 0);
        }
    }
    if (g->about)
        printf("\n%s\n", g->about);
    printf("\npocketllm %s SUB-COMMAND --help lists the options of one sub-command; options may "
           "come\nbefore or after the sub-command.\n",
           g->name);
}

int cli_sub_command(const cli_group *g, int argc, char **argv)
{
    int at = sub_word(g->subs, argc, argv);
    if (at == 0 && has_help(argc, argv)) {
        cli_print_group_help(g);
        return -1;
    }
    size_t glen = strlen(g->name);
    for (int i = 0; at > 0 && g->subs[i]; i++) {
        const char *name = g->subs[i]->name + glen + 1; /* "data list" -> "list" */
        if (strcmp(name, argv[at]) != 0)
            continue;
        char *word = argv[at];
        memmove(argv + 2, argv + 1, (size_t)(at - 1) * sizeof *argv); /* keep the options' order */
        argv[1] = word;
        return i;
    }
    if (at == 0)
        cli_error(g->name, "missing sub-command (see pocketllm %s --help)", g->name);
    else
        cli_error(g->name, "unknown sub-command '%s' (see pocketllm %s --help)", argv[at], g->name);
    return -2;
}

int cli_list_int64(const cli_common *c, const char *flag, const cli_list *l, int64_t lo, int64_t hi,
                   int64_t *out)
{
    for (int i = 0; i < l->n; i++) {
        const char *v = l->v[i];
        char *end = NULL;
        errno = 0;
        long long x = strtoll(v, &end, 10);
        if (errno || end == v || *end != '\0' || x < lo || x > hi) {
            cli_error(c->cmd, "%s: expected an integer from %lld to %lld, got '%s'", flag,
                      (long long)lo, (long long)hi, v);
            return CLI_USAGE;
        }
        out[i] = (int64_t)x;
    }
    return 0;
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

/* Puts "OPTION: " before a library message in err (n bytes), so the error names the flag. */
void cli_name_option(const char *option, char *err, size_t n)
{
    size_t k = strlen(option) + 2, len = strnlen(err, n - 1);
    if (n <= k + 1)
        return;
    if (len > n - 1 - k)
        len = n - 1 - k; /* the message's end gives way */
    memmove(err + k, err, len);
    err[k + len] = '\0';
    memcpy(err, option, k - 2);
    memcpy(err + k - 2, ": ", 2);
}
