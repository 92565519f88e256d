/* opts.c: the one option parser (opts.h): table-driven parsing, range checks and the generated
 * --help of every command. What an option means is left to the command that owns the table. */
#include "opts.h"

#include "cli.h"
#include "pk_model.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const cli_option *find(const cli_option *opts, const char *arg, size_t len, int *index)
{
    for (int i = 0; opts[i].name; i++) {
        if (strlen(opts[i].name) == len && !strncmp(opts[i].name, arg, len)) {
            *index = i;
            return &opts[i];
        }
    }
    return NULL;
}

static int bad_value(const cli_common *c, const cli_option *o, const char *v, const char *want)
{
    cli_error(c->cmd, "%s: expected %s, got '%s'", o->name, want, v);
    return CLI_USAGE;
}

static int set_int(const cli_common *c, const cli_option *o, const char *v, void *dst)
{
    char want[96], *end = NULL;
    snprintf(want, sizeof want, "an integer from %.0f to %.0f", o->min, o->max);
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end != '\0' || (double)x < o->min || (double)x > o->max)
        return bad_value(c, o, v, want);
    if (o->size == sizeof(int))
        *(int *)dst = (int)x;
    else
        *(int64_t *)dst = (int64_t)x;
    return 0;
}

static int set_u64(const cli_common *c, const cli_option *o, const char *v, void *dst)
{
    char *end = NULL;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 0);
    /* strtoull accepts a sign and wraps "-1" to 2^64 - 1: refuse anything but digits */
    if (errno || end == v || *end != '\0' || v[0] == '-' || v[0] == '+' || v[0] == ' ')
        return bad_value(c, o, v, "an integer from 0 to 18446744073709551615");
    *(uint64_t *)dst = (uint64_t)x;
    return 0;
}

static int set_float(const cli_common *c, const cli_option *o, const char *v, void *dst)
{
    char want[96], *end = NULL;
    snprintf(want, sizeof want, "a number from %g to %g", o->min, o->max);
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end != '\0' || !isfinite(x) || x < o->min || x > o->max)
        return bad_value(c, o, v, want);
    if (o->size == sizeof(float))
        *(float *)dst = (float)x;
    else
        *(double *)dst = x;
    return 0;
}

static int set_choice(const cli_common *c, const cli_option *o, const char *v, void *dst)
{
    size_t n = strlen(v);
    int idx = 0;
    for (const char *p = o->choices; *p; idx++) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && !strncmp(p, v, n)) {
            *(int *)dst = idx;
            return 0;
        }
        p += len + (bar ? 1 : 0);
    }
    char want[160];
    snprintf(want, sizeof want, "one of %s", o->choices);
    return bad_value(c, o, v, want);
}

static int set_threads(const cli_common *c, const cli_option *o, const char *v, void *dst)
{
    if (set_int(c, o, v, dst) != 0)
        return CLI_USAGE;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores > 0 && *(int *)dst > cores) {
        fprintf(stderr,
                "pocketllm %s: note: --threads %d is more than the %ld online cores; "
                "using %ld\n",
                c->cmd, *(int *)dst, cores, cores);
        *(int *)dst = (int)cores;
    }
    return 0;
}

static int set_value(cli_common *c, const cli_option *o, const char *v, void *dst)
{
    switch (o->kind) {
    case CLI_STR:
        *(const char **)dst = v;
        return 0;
    case CLI_BUF:
        if (strlen(v) >= o->size) {
            cli_error(c->cmd, "%s: too long (at most %zu bytes)", o->name, o->size - 1);
            return CLI_USAGE;
        }
        memcpy(dst, v, strlen(v) + 1);
        return 0;
    case CLI_INT:
        return set_int(c, o, v, dst);
    case CLI_U64:
        return set_u64(c, o, v, dst);
    case CLI_FLOAT:
        return set_float(c, o, v, dst);
    case CLI_CHOICE:
        return set_choice(c, o, v, dst);
    case CLI_THREADS:
        return set_threads(c, o, v, dst);
    case CLI_LIST: {
        cli_list *l = dst;
        if (l->n == CLI_LIST_MAX) {
            cli_error(c->cmd, "%s: at most %d times", o->name, CLI_LIST_MAX);
            return CLI_USAGE;
        }
        l->v[l->n++] = v;
        return 0;
    }
    case CLI_FLAG:
        break;
    }
    return CLI_USAGE;
}

static int add_arg(cli_common *c, const char *a)
{
    if (c->n_args >= c->spec->max_args || c->n_args >= CLI_MAX_ARGS) {
        cli_error(c->cmd, "unexpected argument '%s' (see pocketllm %s --help)", a, c->cmd);
        return CLI_USAGE;
    }
    c->args[c->n_args++] = a;
    return 0;
}

/* One "--name[=value]" at argv[*i]; consumes the value argument when it is separate. */
static int parse_option(cli_common *c, void *dest, int argc, char **argv, int *i)
{
    const char *a = argv[*i], *eq = strchr(a, '=');
    size_t len = eq ? (size_t)(eq - a) : strlen(a);
    int idx = 0;
    const cli_option *o = find(c->spec->opts, a, len, &idx);
    if (!o) {
        cli_error(c->cmd, "unknown option %.*s (see pocketllm %s --help)", (int)len, a, c->cmd);
        return CLI_USAGE;
    }
    c->given |= (uint64_t)1 << idx;
    void *dst = (char *)dest + o->offset;
    if (o->kind == CLI_FLAG) {
        if (eq) {
            cli_error(c->cmd, "%s takes no value", o->name);
            return CLI_USAGE;
        }
        *(int *)dst = 1;
        return 0;
    }
    const char *v = eq ? eq + 1 : NULL;
    if (!v) {
        if (*i + 1 >= argc) {
            cli_error(c->cmd, "%s needs a value (see pocketllm %s --help)", o->name, c->cmd);
            return CLI_USAGE;
        }
        v = argv[++*i];
    }
    return set_value(c, o, v, dst);
}

int cli_parse(const cli_command *spec, int argc, char **argv, void *dest)
{
    cli_common *c = dest;
    c->cmd = spec->name;
    c->spec = spec;
    c->given = 0;
    c->n_args = 0;
    int n_opts = 0;
    while (spec->opts[n_opts].name)
        n_opts++;
    PK_ASSERT(n_opts <= CLI_MAX_OPTS);
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            cli_print_help(spec, dest);
            return -1;
        }
    }
    int rest = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int rc;
        if (!rest && !strcmp(a, "--")) {
            rest = 1;
            continue;
        }
        if (!rest && a[0] == '-' && a[1] != '\0')
            rc = parse_option(c, dest, argc, argv, &i);
        else
            rc = add_arg(c, a);
        if (rc != 0)
            return CLI_USAGE;
    }
    return 0;
}

int cli_given(const cli_common *c, const char *name)
{
    int idx = 0;
    if (!find(c->spec->opts, name, strlen(name), &idx))
        return 0;
    return (c->given >> idx) & 1;
}

/* The default of o as the command's struct holds it before parsing, or "" if none to show. */
static void default_of(const cli_option *o, const void *dest, char *buf, size_t n)
{
    const void *v = (const char *)dest + o->offset;
    buf[0] = '\0';
    switch (o->kind) {
    case CLI_INT: {
        long long x =
            o->size == sizeof(int) ? (long long)*(const int *)v : (long long)*(const int64_t *)v;
        if ((double)x >= o->min && (double)x <= o->max) /* else no default: a required option */
            snprintf(buf, n, "%lld", x);
        break;
    }
    case CLI_U64:
        snprintf(buf, n, "%llu", (unsigned long long)*(const uint64_t *)v);
        break;
    case CLI_FLOAT: {
        double x = o->size == sizeof(float) ? (double)*(const float *)v : *(const double *)v;
        if (x >= o->min && x <= o->max)
            snprintf(buf, n, "%g", x);
        break;
    }
    case CLI_CHOICE: {
        const char *p = o->choices;
        for (int i = *(const int *)v; i > 0 && p; i--)
            p = strchr(p, '|') ? strchr(p, '|') + 1 : NULL;
        if (p)
            snprintf(buf, n, "%.*s", (int)strcspn(p, "|"), p);
        break;
    }
    case CLI_BUF:
        snprintf(buf, n, "%s", (const char *)v);
        break;
    case CLI_STR:
        snprintf(buf, n, "%s", *(const char *const *)v ? *(const char *const *)v : "");
        break;
    case CLI_FLAG:
    case CLI_THREADS:
    case CLI_LIST:
        break;
    }
}

void cli_print_help(const cli_command *spec, const void *dest)
{
    const char *u = spec->usage;
    for (int first = 1; *u; first = 0) {
        const char *nl = strchr(u, '\n');
        int len = nl ? (int)(nl - u) : (int)strlen(u);
        printf("%s pocketllm %.*s\n", first ? "usage:" : "      ", len, u);
        u += len + (nl ? 1 : 0);
    }
    if (spec->about)
        printf("\n%s\n", spec->about);
    printf("\noptions (a repeated option takes its last value):\n");
    for (const cli_option *o = spec->opts; o->name; o++) {
        char left[64];
        if (o->kind == CLI_CHOICE)
            snprintf(left, sizeof left, "%s %s", o->name, o->choices);
        else
            snprintf(left, sizeof left, "%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
        char def[64], help[512];
        default_of(o, dest, def, sizeof def);
        snprintf(help, sizeof help, "%s%s%s%s", o->help, def[0] ? " [" : "", def,
                 def[0] ? "]" : "");
        if (strlen(left) > 24)
            printf("  %s\n  %-24s %s\n", left, "", help);
        else
            printf("  %-24s %s\n", left, help);
    }
    if (spec->notes)
        printf("\n%s\n", spec->notes);
}

void cli_apply_threads(const cli_common *c)
{
    if (c->threads > 0)
        pk_threads_set(c->threads);
}

int cli_parse_lr(const char *cmd, const char *s, float *lr, int *lr_auto)
{
    char *end = NULL;
    if (s == NULL)
        return 0;
    if (!strcmp(s, "auto")) {
        *lr_auto = 1;
        return 0;
    }
    double v = strtod(s, &end);
    if (end == s || *end != 0 || !(v >= 0.0 && v <= 100.0)) {
        cli_error(cmd, "--lr %s: want a rate in [0, 100] or auto", s);
        return CLI_USAGE;
    }
    *lr = (float)v;
    return 0;
}
