/* cmd_data.c: the store commands: init, import, data list|show|forget|export, rekey and
 * bench store, one option table each. The work is the store library's (store/). Decrypted text
 * is rendered by cJSON into sodium memory (the cJSON tree only points at the example's strings)
 * and written with write(2), so it never passes through stdio buffers or the ordinary heap. */
#include "cli.h"
#include "passphrase.h"

#include "pk_crypto.h"
#include "pk_store.h"
#include "pocketllm.h"
#include "progress.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- plaintext output through a secure buffer ------------------------------------------- */

typedef struct sout {
    int fd;
    char *buf; /* secure, OUT_CAP bytes: batches writes */
    size_t len;
    char *line; /* secure, line_cap bytes: one example rendered as JSON */
    size_t line_cap;
    int failed;
} sout;
#define OUT_CAP 65536

static void out_flush(sout *o)
{
    size_t off = 0;
    while (!o->failed && off < o->len) {
        ssize_t w = write(o->fd, o->buf + off, o->len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            o->failed = 1;
        else
            off += (size_t)w;
    }
    pk_secure_wipe(o->buf, o->len);
    o->len = 0;
}

static void out_bytes(sout *o, const char *p, size_t n)
{
    while (n) {
        if (o->len == OUT_CAP)
            out_flush(o);
        size_t k = OUT_CAP - o->len < n ? OUT_CAP - o->len : n;
        memcpy(o->buf + o->len, p, k);
        o->len += k;
        p += k;
        n -= k;
    }
}

/* Makes o->line hold at least n bytes (a fresh secure block; the old one is wiped and freed). */
static int line_reserve(sout *o, size_t n)
{
    if (n <= o->line_cap)
        return 0;
    pk_secure_free(o->line);
    o->line = pk_secure_alloc(n);
    o->line_cap = o->line ? n : 0;
    return o->line ? 0 : -1;
}

/* The example as a cJSON object whose strings are references to e's (no copies). */
static cJSON *example_tree(const pk_example *e, int with_id, size_t *bound)
{
    static const char *const names[5] = {"text", "text2", "prompt", "response", "label"};
    const char *vals[5] = {e->text, e->text2, e->prompt, e->response, e->label};
    cJSON *j = cJSON_CreateObject();
    *bound = 64; /* braces, the id, cJSON's slack */
    if (j && with_id)
        cJSON_AddItemToObjectCS(j, "id", cJSON_CreateNumber((double)e->id));
    for (int i = 0; j && i < 5; i++) {
        if (!vals[i])
            continue;
        cJSON_AddItemToObjectCS(j, names[i], cJSON_CreateStringReference(vals[i]));
        *bound += strlen(names[i]) + 6 * strlen(vals[i]) + 6; /* "\u00XX" is the worst case */
    }
    return j;
}

/* Appends e as one JSON line: rendered into o->line, then copied to the output buffer. */
static int out_example(sout *o, const pk_example *e, int with_id)
{
    size_t bound = 0;
    cJSON *j = example_tree(e, with_id, &bound);
    int ok = j && bound < INT32_MAX && line_reserve(o, bound) == 0 &&
             cJSON_PrintPreallocated(j, o->line, (int)bound, 0);
    cJSON_Delete(j);
    if (!ok)
        return -1;
    size_t n = strlen(o->line);
    out_bytes(o, o->line, n);
    out_bytes(o, "\n", 1);
    pk_secure_wipe(o->line, n);
    return 0;
}

/* Writes the first `limit` examples of a dataset (< 0: all) as JSONL to fd. */
static int dump_dataset(const char *cmd, pk_store *s, const char *name, int64_t limit, int fd,
                        int with_id)
{
    char serr[512] = ""; /* what the store says on failure */
    int64_t ds = 0, n = 0, *ids = NULL;
    sout o = {fd, pk_secure_alloc(OUT_CAP), 0, NULL, 0, 0};
    int rc = CLI_OK;
    if (!o.buf) {
        cli_error(cmd, "out of secure memory");
        return CLI_ERR;
    }
    if (pk_store_dataset_id(s, name, &ds, serr, sizeof serr) != PK_OK ||
        pk_store_example_ids(s, ds, &ids, &n, serr, sizeof serr) != PK_OK) {
        cli_error(cmd, "%s", serr);
        rc = CLI_ERR;
        goto out;
    }
    for (int64_t i = 0; i < n && (limit < 0 || i < limit) && !o.failed && rc == CLI_OK; i++) {
        pk_example *e = NULL;
        if (pk_store_example_get(s, ds, ids[i], &e, serr, sizeof serr) != PK_OK) {
            cli_error(cmd, "%s", serr);
            rc = CLI_ERR;
        } else if (out_example(&o, e, with_id) != 0) {
            cli_error(cmd, "out of secure memory for example %lld", (long long)ids[i]);
            rc = CLI_ERR;
        }
        pk_example_free(e);
    }
    out_flush(&o);
    if (o.failed) {
        cli_error(cmd, "write failed: %s", strerror(errno));
        rc = CLI_ERR;
    }
out:
    free(ids);
    pk_secure_free(o.line);
    pk_secure_free(o.buf);
    return rc;
}

/* ---- Argon2id limits (init, rekey, bench store) ------------------------------------------ */

typedef struct kdf_opts {
    int64_t opslimit; /* Argon2id passes */
    int64_t memlimit; /* Argon2id memory, bytes */
} kdf_opts;

/* libsodium's crypto_pwhash OPSLIMIT / MEMLIMIT bounds (MEMLIMIT_MAX of a 64-bit build). */
#define KDF_OPTS(T)                                                                                \
    {                                                                                              \
        "--opslimit", CLI_INT, CLI_AT(T, kdf.opslimit), 1, 4294967295.0,                           \
        NULL,         "N",     "Argon2id passes"},                                                 \
    {                                                                                              \
        "--memlimit", CLI_INT, CLI_AT(T, kdf.memlimit), 8192, 4398046510080.0, NULL, "BYTES",      \
            "Argon2id memory"                                                                      \
    }

static kdf_opts kdf_defaults(void)
{
    kdf_opts k = {(int64_t)pk_kdf_default_opslimit(), (int64_t)pk_kdf_default_memlimit()};
    return k;
}

static pk_store_params kdf_params(const kdf_opts *k)
{
    pk_store_params p = pk_store_default_params();
    p.opslimit = (uint64_t)k->opslimit;
    p.memlimit = (size_t)k->memlimit;
    return p;
}

/* ---- init -------------------------------------------------------------------------------- */

typedef struct init_opts {
    cli_common c;
    kdf_opts kdf;
} init_opts;

#define T init_opts
static const cli_option init_table[] = {
    CLI_STORE_OPTS(T),
    KDF_OPTS(T),
    CLI_END,
};
#undef T

static const cli_command init_cmd = {
    "init",
    "init [--home DIR] [--passphrase-file FILE] [--opslimit N] [--memlimit BYTES]",
    "Creates an encrypted agent home: DIR/pocketllm.db (SQLite, WAL), keys derived from your\n"
    "passphrase with Argon2id (interactive limits by default), a device identity (Ed25519).\n"
    "The passphrase comes from --passphrase-file FILE (first line), else POCKETLLM_PASSPHRASE\n"
    "(less safe: visible to your other processes), else a no-echo prompt (asked twice).\n"
    "There is no recovery: without the passphrase the data cannot be read.",
    init_table,
    0,
    "examples:\n"
    "  pocketllm init\n"
    "  pocketllm init --home ~/agent --passphrase-file ~/.pocketllm-pass"};

int cmd_init(int argc, char **argv)
{
    init_opts o = {.kdf = kdf_defaults()};
    char home[1024], err[1024] = "";
    char *pass = NULL;
    size_t len = 0;
    int rc = cli_parse(&init_cmd, argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? CLI_OK : rc;
    if (cli_home(&o.c, home, sizeof home) != 0) {
        cli_error(o.c.cmd, "the agent home path is too long");
        return CLI_USAGE;
    }
    if (pk_crypto_global_init() != PK_OK)
        return CLI_ERR;
    rc = cli_read_passphrase(&o.c, 1, &pass, &len);
    if (rc != CLI_OK)
        return rc;
    pk_status st = pk_store_init(home, pass, len, kdf_params(&o.kdf), err, sizeof err);
    cli_free_passphrase(pass, len);
    if (st != PK_OK)
        return cli_fail(o.c.cmd, st, err);
    printf("initialised encrypted agent home at %s\n", home);
    return CLI_OK;
}

/* ---- import ------------------------------------------------------------------------------ */

typedef struct import_opts {
    cli_common c;
    const char *dataset;
    int format; /* pk_import_format: the choices are in its order */
    int paragraphs;
} import_opts;

#define T import_opts
static const cli_option import_table[] = {
    {"--dataset", CLI_STR, CLI_AT(T, dataset), 0, 0, NULL, "NAME",
     "the dataset (created if absent, else appended to)"},
    {"--format", CLI_CHOICE, CLI_AT(T, format), 0, 0, "auto|jsonl|txt|csv", NULL,
     "the file's format (auto: from its extension)"},
    {"--paragraphs", CLI_FLAG, CLI_AT(T, paragraphs), 0, 0, NULL, NULL,
     "txt: one example per blank-line-separated paragraph"},
    CLI_JSON_OPT(T),
    CLI_QUIET_OPT(T),
    CLI_STORE_OPTS(T),
    CLI_END,
};
#undef T

static const cli_command import_cmd = {
    "import",
    "import FILE --dataset NAME [--format auto|jsonl|txt|csv] [--paragraphs] [options]",
    "Imports examples into a sealed dataset (created if absent, else appended to). All of the\n"
    "file or none of it: a bad record is reported by line number and nothing is imported.\n"
    "  jsonl  one object per line: {\"text\": ...}, {\"prompt\": ..., \"response\": ...},\n"
    "         or {\"text\": ..., \"text2\": ..., \"label\": ...}; other keys are ignored\n"
    "  txt    one example per line, or per blank-line-separated paragraph (--paragraphs)\n"
    "  csv    a header row naming the columns text, text2, prompt, response, label\n"
    "The format defaults to the file extension (.jsonl .json .txt .csv). Input must be UTF-8.",
    import_table,
    1,
    "examples:\n"
    "  pocketllm import notes.txt --dataset notes --paragraphs\n"
    "  pocketllm import sst2.jsonl --dataset sst2 --home ~/agent"};

int cli_open_home(const cli_common *c, pocketllm_home **out)
{
    char home[1024];
    char *pass = NULL;
    size_t len = 0;
    struct stat sb;
    *out = NULL;
    if (cli_home(c, home, sizeof home) != 0) {
        cli_error(c->cmd, "the agent home path is too long");
        return CLI_USAGE;
    }
    if (stat(home, &sb) == 0 && !S_ISDIR(sb.st_mode)) {
        cli_error(c->cmd, "%s is a file, not an agent home directory", home);
        return CLI_ERR;
    }
    char db[1100];
    if (pk_store_db_path(home, db, sizeof db) == 0 && access(db, F_OK) != 0) {
        /* Say so before asking for a passphrase that cannot help. */
        cli_error(c->cmd, "no agent home at %s: run pocketllm init --home %s", home, home);
        return CLI_ERR;
    }
    if (pk_crypto_global_init() != PK_OK) { /* the passphrase buffer is sodium memory */
        cli_error(c->cmd, "libsodium failed to initialise");
        return CLI_ERR;
    }
    int rc = cli_read_passphrase(c, 0, &pass, &len);
    if (rc != CLI_OK)
        return rc;
    pocketllm_status st = pocketllm_home_open(home, pass, len, NULL, out); /* wipes pass */
    cli_free_passphrase(pass, len);
    if (st == POCKETLLM_OK)
        return CLI_OK;
    if (st == POCKETLLM_ERR_NOTFOUND)
        cli_error(c->cmd, "no agent home at %s: run pocketllm init --home %s", home, home);
    else
        cli_error(c->cmd, "%s", pocketllm_errmsg(*out));
    pocketllm_home_close(*out);
    *out = NULL;
    return CLI_ERR;
}

int cli_home_fail(const char *cmd, pocketllm_home *h, int st)
{
    cli_error(cmd, "%s", pocketllm_errmsg(h));
    return st == POCKETLLM_ERR_CANCELLED ? CLI_INTERRUPTED : CLI_ERR;
}

static void import_progress(void *user, int64_t n)
{
    pk_progress_update(user, n, (double)NAN);
}

/* Imports FILE with a progress display (pocketllm_import_file); prints the result. */
static int import_run(const import_opts *o, pocketllm_home *h, const char *file)
{
    static const pocketllm_format formats[] = {POCKETLLM_FORMAT_AUTO, POCKETLLM_FORMAT_JSONL,
                                               POCKETLLM_FORMAT_TXT, POCKETLLM_FORMAT_CSV};
    pocketllm_import_params ip = pocketllm_import_default_params();
    int64_t n = 0;
    pk_progress *prog =
        pk_progress_new("import", 0, pk_progress_mode_from_args(o->c.json, o->c.quiet));
    pk_progress_set_unit(prog, "examples");
    ip.format = formats[o->format];
    ip.paragraphs = o->paragraphs;
    ip.progress = import_progress;
    ip.user = prog;
    pocketllm_status st = pocketllm_import_file(h, o->dataset, file, &ip, &n);
    pk_progress_finish(prog);
    if (st != POCKETLLM_OK) {
        cli_error(o->c.cmd, "%s; nothing was imported", pocketllm_errmsg(h));
        return CLI_ERR;
    }
    if (o->c.json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "dataset", o->dataset);
        cJSON_AddNumberToObject(j, "imported", (double)n);
        return cli_json_print(j);
    }
    if (!o->c.quiet)
        printf("imported %lld examples into dataset '%s'\n", (long long)n, o->dataset);
    return CLI_OK;
}

int cmd_import(int argc, char **argv)
{
    import_opts o = {.format = PK_IMPORT_AUTO};
    int rc = cli_parse(&import_cmd, argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? CLI_OK : rc;
    if (o.c.n_args != 1 || !o.dataset || !*o.dataset) {
        cli_error(o.c.cmd, "usage: pocketllm import FILE --dataset NAME (see --help)");
        return CLI_USAGE;
    }
    const char *file = o.c.args[0];
    if (access(file, R_OK) != 0) {
        cli_error(o.c.cmd, "%s: %s", file, strerror(errno));
        return CLI_ERR;
    }
    pocketllm_home *h = NULL;
    rc = cli_open_home(&o.c, &h);
    if (rc != CLI_OK)
        return rc;
    rc = import_run(&o, h, file);
    pocketllm_home_close(h);
    return rc;
}

/* ---- data list|show|forget|export ---------------------------------------------------------- */

typedef struct list_opts {
    cli_common c;
} list_opts;

static const cli_option list_table[] = {
    CLI_JSON_OPT(list_opts),
    CLI_STORE_OPTS(list_opts),
    CLI_END,
};

static const cli_command list_cmd = {
    "data list",
    "data list [--json]",
    "Lists the datasets: examples, sealed bytes on disk, creation time (UTC); --json prints one\n"
    "object per dataset and line.",
    list_table,
    0,
    "example:\n  pocketllm data list"};

typedef struct show_opts {
    cli_common c;
    const char *dataset;
    int64_t limit; /* 0: all */
} show_opts;

#define T show_opts
static const cli_option show_table[] = {
    {"--dataset", CLI_STR, CLI_AT(T, dataset), 0, 0, NULL, "NAME", "the dataset (required)"},
    {"--limit", CLI_INT, CLI_AT(T, limit), 0, 9e18, NULL, "N", "examples to show (0: all)"},
    CLI_STORE_OPTS(T),
    CLI_END,
};
#undef T

static const cli_command show_cmd = {
    "data show",
    "data show --dataset NAME [--limit N]",
    "Prints the first examples of a dataset, decrypted, as JSONL on stdout (with their ids).",
    show_table,
    0,
    "example:\n  pocketllm data show --dataset notes --limit 3"};

typedef struct forget_opts {
    cli_common c;
    const char *dataset;
    int64_t id;
    int with_runs;
} forget_opts;

#define T forget_opts
static const cli_option forget_table[] = {
    {"--dataset", CLI_STR, CLI_AT(T, dataset), 0, 0, NULL, "NAME",
     "forget a dataset and all its examples"},
    {"--id", CLI_INT, CLI_AT(T, id), 1, 9e18, NULL, "ID", "forget one example"},
    {"--with-runs", CLI_FLAG, CLI_AT(T, with_runs), 0, 0, NULL, NULL,
     "also delete the runs whose weights carry the dataset (trained on it, or chained from one)"},
    CLI_STORE_OPTS(T),
    CLI_END,
};
#undef T

static const cli_command forget_cmd = {
    "data forget",
    "data forget --dataset NAME [--with-runs] | --id ID",
    "Deletes a dataset or one example: the rows are deleted and their pages wiped. Runs that\n"
    "used a forgotten dataset keep their step logs, and their weights still carry it (it is\n"
    "said which); --with-runs deletes those runs too, with every run chained from them.",
    forget_table,
    0,
    "examples:\n  pocketllm data forget --id 42\n  pocketllm data forget --dataset notes\n"
    "  pocketllm data forget --dataset notes --with-runs"};

typedef struct data_export_opts {
    cli_common c;
    const char *dataset;
    const char *out;
} data_export_opts;

#define T data_export_opts
static const cli_option export_table[] = {
    {"--dataset", CLI_STR, CLI_AT(T, dataset), 0, 0, NULL, "NAME", "the dataset (required)"},
    {"--out", CLI_STR, CLI_AT(T, out), 0, 0, NULL, "FILE",
     "a new file (mode 0600, never overwritten), or - for stdout (required)"},
    CLI_STORE_OPTS(T),
    CLI_END,
};
#undef T

static const cli_command export_cmd = {
    "data export",
    "data export --dataset NAME --out FILE|-",
    "Writes a dataset, decrypted, as JSONL (the format import reads back) to FILE, or to\n"
    "stdout with --out -. This is the only way plaintext leaves the store: keep it safe.",
    export_table,
    0,
    "examples:\n"
    "  pocketllm data export --dataset notes --out notes.jsonl\n"
    "  pocketllm data export --dataset notes --out - | head -n 3"};

static const cli_command *const data_subs[] = {&list_cmd, &show_cmd, &forget_cmd, &export_cmd,
                                               NULL};
static const cli_group data_group = {
    "data",
    "Every sub-command takes --home DIR and --passphrase-file FILE.\n"
    "\n"
    "examples:\n"
    "  pocketllm data list\n"
    "  pocketllm data show --dataset notes --limit 3\n"
    "  pocketllm data forget --id 42\n"
    "  pocketllm data export --dataset notes --out notes.jsonl",
    data_subs};

static int list_row(const pocketllm_dataset *d, int json)
{
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "dataset", d->name);
        cJSON_AddNumberToObject(j, "id", (double)d->id);
        cJSON_AddNumberToObject(j, "examples", (double)d->n_examples);
        cJSON_AddNumberToObject(j, "sealed_bytes", (double)d->sealed_bytes);
        cJSON_AddNumberToObject(j, "created_at", d->created_at);
        return cli_json_print(j);
    }
    char when[32];
    time_t t = (time_t)d->created_at;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
    printf("%-24s %10lld %14lld  %s\n", d->name, (long long)d->n_examples,
           (long long)d->sealed_bytes, when);
    return CLI_OK;
}

static int list_run(const list_opts *o, pocketllm_home *h)
{
    pocketllm_dataset *d = NULL;
    size_t n = 0, got = 0;
    /* Sized first, then filled; a dataset imported in between is listed next time. */
    pocketllm_status st = pocketllm_datasets(h, NULL, 0, &n);
    if (st == POCKETLLM_OK && n > 0) {
        d = calloc(n, sizeof *d);
        st = d ? pocketllm_datasets(h, d, n, &got) : POCKETLLM_ERR_NOMEM;
    }
    if (st != POCKETLLM_OK) {
        cli_error(o->c.cmd, "%s", pocketllm_errmsg(h));
        free(d);
        return CLI_ERR;
    }
    n = got < n ? got : n;
    if (!o->c.json)
        printf("%-24s %10s %14s  %s\n", "dataset", "examples", "sealed bytes", "created (UTC)");
    int rc = CLI_OK;
    for (size_t i = 0; i < n; i++)
        if (list_row(&d[i], o->c.json) != CLI_OK)
            rc = CLI_ERR; /* printed; the other rows may still fit */
    if (!o->c.json && n == 0)
        printf("(no datasets: pocketllm import FILE --dataset NAME)\n");
    free(d);
    return rc;
}

static int data_list(int argc, char **argv)
{
    list_opts o = {0};
    pocketllm_home *h = NULL;
    int rc = cli_parse(&list_cmd, argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? CLI_OK : rc;
    rc = cli_open_home(&o.c, &h);
    if (rc != CLI_OK)
        return rc;
    rc = list_run(&o, h);
    pocketllm_home_close(h);
    return rc;
}

static int data_show(int argc, char **argv)
{
    show_opts o = {.limit = 10};
    pk_store *s = NULL;
    int rc = cli_parse(&show_cmd, argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? CLI_OK : rc;
    if (!o.dataset) {
        cli_error(o.c.cmd, "--dataset NAME is required (see pocketllm data show --help)");
        return CLI_USAGE;
    }
    rc = cli_open_store(&o.c, &s);
    if (rc != CLI_OK)
        return rc;
    rc = dump_dataset(o.c.cmd, s, o.dataset, o.limit ? o.limit : -1, STDOUT_FILENO, 1);
    pk_store_close(s);
    return rc;
}

/* "3, 5, 8" into buf (n bytes), cut short with "..." when it does not fit. */
static void format_ids(const int64_t *ids, int64_t n, char *buf, size_t len)
{
    size_t w = 0;
    buf[0] = '\0';
    for (int64_t i = 0; i < n && w + 32 < len; i++)
        w += (size_t)snprintf(buf + w, len - w, "%s%lld", i ? ", " : "", (long long)ids[i]);
    if (n > 0 && w + 32 >= len)
        snprintf(buf + w, len - w, ", ...");
}

/* The forget itself: a dataset through the API (pocketllm_dataset_forget), one example through
 * the store (the API has no per-example call). runs gets the run ids (*n of them, at most cap
 * kept, *total in all). */
static int forget_do(const forget_opts *o, const cli_common *c, int64_t *runs, size_t cap,
                     size_t *n, size_t *total)
{
    *n = *total = 0;
    if (o->dataset) {
        pocketllm_home *h = NULL;
        int rc = cli_open_home(c, &h);
        if (rc != CLI_OK)
            return rc;
        if (pocketllm_dataset_forget(h, o->dataset, o->with_runs, runs, cap, total) !=
            POCKETLLM_OK) {
            cli_error(c->cmd, "%s", pocketllm_errmsg(h));
            rc = CLI_ERR;
        }
        pocketllm_home_close(h);
        *n = *total < cap ? *total : cap;
        return rc;
    }
    char serr[512] = ""; /* what the store says on failure */
    pk_store *s = NULL;
    int rc = cli_open_store(c, &s);
    if (rc != CLI_OK)
        return rc;
    if (pk_store_example_forget(s, o->id, serr, sizeof serr) != PK_OK) {
        cli_error(c->cmd, "%s", serr);
        rc = CLI_ERR;
    }
    pk_store_close(s);
    return rc;
}

static int forget_run(const forget_opts *o)
{
    char list[400];
    int64_t runs[128];
    size_t n = 0, total = 0;
    int rc = forget_do(o, &o->c, runs, sizeof runs / sizeof runs[0], &n, &total);
    if (rc != CLI_OK)
        return rc;
    format_ids(runs, (int64_t)n, list, sizeof list);
    if (n < total && strlen(list) + 6 < sizeof list)
        strcat(list, ", ..."); /* more than the buffer kept */
    if (o->dataset)
        printf("forgot dataset '%s'\n", o->dataset);
    else
        printf("forgot example %lld\n", (long long)o->id);
    if (total > 0 && o->with_runs)
        printf("deleted %zu run%s trained on it or chained from one that was: %s\n", total,
               total == 1 ? "" : "s", list);
    else if (total > 0)
        fprintf(stderr,
                "note: the weights of run%s %s still carry dataset '%s' (trained on it, or "
                "chained from a run that was); --with-runs deletes such runs with the dataset\n",
                total == 1 ? "" : "s", list, o->dataset);
    return CLI_OK;
}

static int data_forget(int argc, char **argv)
{
    forget_opts o = {0};
    int rc = cli_parse(&forget_cmd, argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? CLI_OK : rc;
    if ((o.dataset != NULL) == cli_given(&o.c, "--id")) {
        cli_error(o.c.cmd, "give exactly one of --dataset NAME or --id ID");
        return CLI_USAGE;
    }
    if (o.with_runs && o.dataset == NULL) {
        cli_error(o.c.cmd, "--with-runs goes with --dataset NAME");
        return CLI_USAGE;
    }
    return forget_run(&o);
}

/* "-" is stdout; anything else a new file that no one else can read. */
static int export_run(const data_export_opts *o, pk_store *s)
{
    int to_stdout = !strcmp(o->out, "-");
    int fd =
        to_stdout ? STDOUT_FILENO : open(o->out, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        cli_error(o->c.cmd, "%s: %s%s", o->out, strerror(errno),
                  errno == EEXIST ? " (refusing to overwrite: remove it first)" : "");
        return CLI_ERR;
    }
    int rc = dump_dataset(o->c.cmd, s, o->dataset, -1, fd, 0);
    if (!to_stdout && close(fd) != 0 && rc == CLI_OK) {
        cli_error(o->c.cmd, "%s: %s", o->out, strerror(errno));
        rc = CLI_ERR;
    }
    if (rc != CLI_OK && !to_stdout)
        unlink(o->out);
    else if (rc == CLI_OK)
        fprintf(stderr, "exported dataset '%s' to %s (plaintext: keep it safe)\n", o->dataset,
                to_stdout ? "stdout" : o->out);
    return rc;
}

static int data_export(int argc, char **argv)
{
    data_export_opts o = {0};
    pk_store *s = NULL;
    int rc = cli_parse(&export_cmd, argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? CLI_OK : rc;
    if (!o.dataset || !o.out || !*o.out) {
        cli_error(o.c.cmd, "usage: pocketllm data export --dataset NAME --out FILE|-");
        return CLI_USAGE;
    }
    rc = cli_open_store(&o.c, &s);
    if (rc != CLI_OK)
        return rc;
    rc = export_run(&o, s);
    pk_store_close(s);
    return rc;
}

int cmd_data(int argc, char **argv)
{
    static const cli_fn fns[] = {data_list, data_show, data_forget, data_export};
    int i = cli_sub_command(&data_group, argc, argv);
    if (i < 0)
        return i == -1 ? CLI_OK : CLI_USAGE;
    return fns[i](argc - 1, argv + 1);
}

/* ---- rekey ------------------------------------------------------------------------------- */

typedef struct rekey_opts {
    cli_common c;
    kdf_opts kdf;
} rekey_opts;

#define T rekey_opts
static const cli_option rekey_table[] = {
    CLI_STORE_OPTS(T),
    {"--new-passphrase-file", CLI_STR, CLI_AT(T, c.new_passphrase_file), 0, 0, NULL, "FILE",
     "read the new passphrase from FILE (else $POCKETLLM_NEW_PASSPHRASE, else a prompt)"},
    KDF_OPTS(T),
    CLI_END,
};
#undef T

static const cli_command rekey_cmd = {
    "rekey",
    "rekey [--new-passphrase-file FILE] [--opslimit N] [--memlimit BYTES] [options]",
    "Changes the passphrase: a new salt and new keys, every sealed row re-encrypted, in one\n"
    "transaction (if interrupted, the old passphrase still works and nothing is mixed).\n"
    "The new passphrase comes from --new-passphrase-file, else POCKETLLM_NEW_PASSPHRASE, else a\n"
    "no-echo prompt (asked twice).",
    rekey_table,
    0,
    "examples:\n"
    "  pocketllm rekey\n"
    "  pocketllm rekey --passphrase-file old.txt --new-passphrase-file new.txt"};

int cmd_rekey(int argc, char **argv)
{
    char serr[512] = ""; /* what the store says on failure */
    rekey_opts o = {.kdf = kdf_defaults()};
    pk_store *s = NULL;
    char *pass = NULL;
    size_t len = 0;
    int rc = cli_parse(&rekey_cmd, argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? CLI_OK : rc;
    rc = cli_open_store(&o.c, &s);
    if (rc != CLI_OK)
        return rc;
    rc = cli_read_new_passphrase(&o.c, &pass, &len);
    if (rc == CLI_OK) {
        if (pk_store_rekey(s, pass, len, kdf_params(&o.kdf), serr, sizeof serr) != PK_OK) {
            cli_error(o.c.cmd, "%s; the old passphrase is still valid", serr);
            rc = CLI_ERR;
        } else {
            printf("passphrase changed; every sealed record re-encrypted\n");
        }
    }
    cli_free_passphrase(pass, len);
    pk_store_close(s);
    return rc;
}

/* ---- bench store ------------------------------------------------------------------------- */

typedef struct bench_opts {
    cli_common c;
    int64_t examples;
    kdf_opts kdf;
} bench_opts;

#define T bench_opts
static const cli_option bench_table[] = {
    {"--examples", CLI_INT, CLI_AT(T, examples), 1, 10000000, NULL, "N",
     "generated 1 KB examples to import"},
    KDF_OPTS(T),
    CLI_HOME_IGNORED(T),
    CLI_END,
};
#undef T

static const cli_command bench_cmd = {
    "bench store",
    "bench store [--examples N] [--opslimit N] [--memlimit BYTES]",
    "In a temporary home: one unlock with the Argon2id limits, and the import throughput of N\n"
    "generated 1 KB examples. Prints one JSON line.",
    bench_table,
    0,
    "example:\n  pocketllm bench store --examples 50000"};

/* N JSONL lines of ~1 KB of pseudo-random words. */
static int write_examples(const char *path, int64_t n)
{
    FILE *f = fopen(path, "w");
    uint64_t x = 0x243f6a8885a308d3ull;
    if (!f)
        return -1;
    for (int64_t i = 0; i < n; i++) {
        char line[1200];
        size_t k = (size_t)snprintf(line, sizeof line, "{\"text\":\"");
        while (k < 1024 - 2) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            line[k++] = (x % 6 == 0) ? ' ' : (char)('a' + (x >> 8) % 26);
        }
        fprintf(f, "%.*s\"}\n", (int)(k), line);
    }
    return fclose(f);
}

static int rm_home(const char *dir)
{
    char p[1200];
    static const char *const files[] = {"pocketllm.db", "pocketllm.db-wal", "pocketllm.db-shm",
                                        "bench.jsonl"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    return rmdir(dir);
}

typedef struct bench_times {
    double unlock_s, import_s;
} bench_times;

/* Creates a home in dir, times one unlock and the import of data. */
static int bench_measure(const bench_opts *o, const char *dir, const char *data, bench_times *t)
{
    char serr[512] = ""; /* what the store says on failure */
    static const char pass[] = "bench passphrase";
    char err[1024];
    pk_store *s = NULL;
    int64_t got = 0;
    int rc = CLI_ERR;
    if (pk_store_init(dir, pass, sizeof pass - 1, kdf_params(&o->kdf), err, sizeof err) != PK_OK) {
        cli_error(o->c.cmd, "%s", err);
        return CLI_ERR;
    }
    double t0 = pk_time_now();
    if (pk_store_open(dir, pass, sizeof pass - 1, &s, err, sizeof err) != PK_OK) {
        cli_error(o->c.cmd, "%s", err);
        return CLI_ERR;
    }
    t->unlock_s = pk_time_now() - t0;
    pk_import_opts opts = {.format = PK_IMPORT_JSONL, .paragraphs = 0};
    t0 = pk_time_now();
    if (pk_store_import(s, data, "bench", opts, &got, serr, sizeof serr) != PK_OK ||
        got != o->examples)
        cli_error(o->c.cmd, "%s", serr);
    else
        rc = CLI_OK;
    t->import_s = pk_time_now() - t0;
    pk_store_close(s);
    return rc;
}

static int bench_print(const bench_opts *o, const bench_times *t)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "bench", "store");
    cJSON_AddNumberToObject(j, "unlock_s", t->unlock_s);
    cJSON_AddNumberToObject(j, "opslimit", (double)o->kdf.opslimit);
    cJSON_AddNumberToObject(j, "memlimit", (double)o->kdf.memlimit);
    cJSON_AddNumberToObject(j, "examples", (double)o->examples);
    cJSON_AddNumberToObject(j, "example_bytes", 1024);
    cJSON_AddNumberToObject(j, "import_s", t->import_s);
    cli_json_add_finite(j, "import_examples_per_s", (double)o->examples / t->import_s);
    return cli_json_print(j);
}

int cmd_bench_store(int argc, char **argv)
{
    bench_opts o = {.examples = 20000, .kdf = kdf_defaults()};
    char dir[512], data[600];
    int rc = cli_parse(&bench_cmd, argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? CLI_OK : rc;
    if (pk_crypto_global_init() != PK_OK)
        return CLI_ERR;
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/pocketllm-bench-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        cli_error(o.c.cmd, "mkdtemp %s: %s", dir, strerror(errno));
        return CLI_ERR;
    }
    snprintf(data, sizeof data, "%s/bench.jsonl", dir);
    bench_times t = {0, 0};
    if (write_examples(data, o.examples) != 0) {
        cli_error(o.c.cmd, "cannot write %s", data);
        rc = CLI_ERR;
    } else {
        rc = bench_measure(&o, dir, data, &t);
    }
    rm_home(dir);
    return rc == CLI_OK ? bench_print(&o, &t) : rc;
}
