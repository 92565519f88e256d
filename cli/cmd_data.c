/* cmd_data.c: the store commands: init, import, data list|show|forget|export, rekey and
 * bench store. Options are parsed here; everything else is the store library (store/). Decrypted
 * text is written with write(2) from sodium memory, never through stdio buffers. */
#include "cli.h"
#include "passphrase.h"

#include "pk_crypto.h"
#include "pk_store.h"
#include "progress.h"

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
    char *buf; /* secure, OUT_CAP bytes */
    size_t len;
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

static void out_str(sout *o, const char *s)
{
    out_bytes(o, s, strlen(s));
}

static void out_json(sout *o, const char *s)
{
    out_bytes(o, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        const unsigned char *run = p;
        while (*p && *p != '"' && *p != '\\' && *p >= 0x20)
            p++;
        out_bytes(o, (const char *)run, (size_t)(p - run));
        if (!*p)
            break;
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\', esc[1] = (char)*p, esc[2] = '\0';
        } else if (*p == '\n') {
            memcpy(esc, "\\n", 3);
        } else if (*p == '\t') {
            memcpy(esc, "\\t", 3);
        } else {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
        }
        out_str(o, esc);
    }
    out_bytes(o, "\"", 1);
}

static void out_example(sout *o, const pk_example *e, int with_id)
{
    const char *names[5] = {"text", "text2", "prompt", "response", "label"};
    const char *vals[5] = {e->text, e->text2, e->prompt, e->response, e->label};
    int first = 1;
    out_str(o, "{");
    if (with_id) {
        char id[32];
        snprintf(id, sizeof id, "\"id\":%lld", (long long)e->id);
        out_str(o, id);
        first = 0;
    }
    for (int i = 0; i < 5; i++) {
        if (!vals[i])
            continue;
        out_str(o, first ? "\"" : ",\"");
        out_str(o, names[i]);
        out_str(o, "\":");
        out_json(o, vals[i]);
        first = 0;
    }
    out_str(o, "}\n");
}

/* Writes examples of a dataset (at most limit, < 0 = all) as JSONL to fd. */
static int dump_dataset(const char *cmd, pk_store *s, const char *name, long long limit, int fd,
                        int with_id)
{
    int64_t ds = 0, n = 0, *ids = NULL;
    sout o = {fd, pk_secure_alloc(OUT_CAP), 0, 0};
    int rc = CLI_OK;
    if (!o.buf) {
        cli_error(cmd, "out of secure memory");
        return CLI_ERR;
    }
    if (pk_store_dataset_id(s, name, &ds) != PK_OK ||
        pk_store_example_ids(s, ds, &ids, &n) != PK_OK) {
        cli_error(cmd, "%s", pk_store_errmsg(s));
        rc = CLI_ERR;
        goto out;
    }
    for (int64_t i = 0; i < n && (limit < 0 || i < limit) && !o.failed; i++) {
        pk_example *e = NULL;
        if (pk_store_example_get(s, ds, ids[i], &e) != PK_OK) {
            cli_error(cmd, "%s", pk_store_errmsg(s));
            rc = CLI_ERR;
            break;
        }
        out_example(&o, e, with_id);
        pk_example_free(e);
    }
    out_flush(&o);
    if (o.failed) {
        cli_error(cmd, "write failed: %s", strerror(errno));
        rc = CLI_ERR;
    }
out:
    free(ids);
    pk_secure_free(o.buf);
    return rc;
}

/* ---- init -------------------------------------------------------------------------------- */

static const char init_help[] =
    "usage: pocketllm init [--home DIR] [--passphrase-file FILE] [--opslimit N] [--memlimit "
    "BYTES]\n"
    "\n"
    "Creates an encrypted agent home: DIR/pocketllm.db (SQLite, WAL), keys derived from your\n"
    "passphrase with Argon2id (interactive limits by default), a device identity (Ed25519).\n"
    "The passphrase comes from --passphrase-file FILE (first line), else POCKETLLM_PASSPHRASE\n"
    "(less safe: visible to your other processes), else a no-echo prompt (asked twice).\n"
    "There is no recovery: without the passphrase the data cannot be read.\n"
    "\n"
    "examples:\n"
    "  pocketllm init\n"
    "  pocketllm init --home ~/agent --passphrase-file ~/.pocketllm-pass\n";

static int parse_params(int argc, char **argv, pk_store_params *p)
{
    long long ops = 0, mem = 0;
    *p = pk_store_default_params();
    if (cli_opt_long(argc, argv, "--opslimit", &ops) < 0 ||
        cli_opt_long(argc, argv, "--memlimit", &mem) < 0)
        return CLI_USAGE;
    if (ops < 0 || mem < 0 || (ops && ops < 1) || (mem && mem < 8192)) {
        cli_error(argv[0], "--opslimit must be >= 1 and --memlimit >= 8192 bytes");
        return CLI_USAGE;
    }
    p->opslimit = (uint64_t)ops;
    p->memlimit = (size_t)mem;
    return CLI_OK;
}

int cmd_init(int argc, char **argv)
{
    static const char *const vals[] = {"--passphrase-file", "--opslimit", "--memlimit", NULL};
    char home[1024], err[1024];
    char *pass = NULL;
    size_t len = 0;
    pk_store_params params;
    if (cli_help(argc, argv, init_help))
        return CLI_OK;
    if (cli_check(argc, argv, vals, NULL) || cli_positional(argc, argv, 0, vals)) {
        if (cli_positional(argc, argv, 0, vals))
            cli_error(argv[0], "unexpected argument '%s'", cli_positional(argc, argv, 0, vals));
        return CLI_USAGE;
    }
    int rc = parse_params(argc, argv, &params);
    if (rc != CLI_OK)
        return rc;
    if (legacy_cli_home(argc, argv, home, sizeof home) != 0) {
        cli_error(argv[0], "the agent home path is too long");
        return CLI_USAGE;
    }
    if (pk_crypto_global_init() != PK_OK)
        return CLI_ERR;
    rc = legacy_cli_read_passphrase(argc, argv, 1, &pass, &len);
    if (rc != CLI_OK)
        return rc;
    pk_status st = pk_store_init(home, pass, len, params, err, sizeof err);
    cli_free_passphrase(pass, len);
    if (st != PK_OK) {
        cli_error(argv[0], "%s", err);
        return CLI_ERR;
    }
    printf("initialised encrypted agent home at %s\n", home);
    return CLI_OK;
}

/* ---- import ------------------------------------------------------------------------------ */

static const char import_help[] =
    "usage: pocketllm import FILE --dataset NAME [--format jsonl|txt|csv] [--paragraphs]\n"
    "                        [--json] [--quiet] [--home DIR] [--passphrase-file FILE]\n"
    "\n"
    "Imports examples into a sealed dataset (created if absent, else appended to). All of the\n"
    "file or none of it: a bad record is reported by line number and nothing is imported.\n"
    "  jsonl  one object per line: {\"text\": ...}, {\"prompt\": ..., \"response\": ...},\n"
    "         or {\"text\": ..., \"text2\": ..., \"label\": ...}; other keys are ignored\n"
    "  txt    one example per line, or per blank-line-separated paragraph (--paragraphs)\n"
    "  csv    a header row naming the columns text, text2, prompt, response, label\n"
    "The format defaults to the file extension (.jsonl .json .txt .csv). Input must be UTF-8.\n"
    "\n"
    "examples:\n"
    "  pocketllm import notes.txt --dataset notes --paragraphs\n"
    "  pocketllm import sst2.jsonl --dataset sst2 --home ~/agent\n";

static void import_progress(void *user, int64_t n)
{
    pk_progress_update(user, n, (double)NAN);
}

int cmd_import(int argc, char **argv)
{
    static const char *const vals[] = {"--dataset", "--format", "--passphrase-file", NULL};
    static const char *const flags[] = {"--paragraphs", "--json", "--quiet", NULL};
    pk_import_opts opts = {.format = PK_IMPORT_AUTO, .paragraphs = 0};
    pk_store *s = NULL;
    int64_t n = 0;
    if (cli_help(argc, argv, import_help))
        return CLI_OK;
    if (cli_check(argc, argv, vals, flags))
        return CLI_USAGE;
    const char *file = cli_positional(argc, argv, 0, vals),
               *name = cli_opt(argc, argv, "--dataset");
    const char *fmt = cli_opt(argc, argv, "--format");
    if (!file || !name || !*name || cli_positional(argc, argv, 1, vals)) {
        cli_error(argv[0], "usage: pocketllm import FILE --dataset NAME (see --help)");
        return CLI_USAGE;
    }
    if (fmt) {
        if (!strcmp(fmt, "jsonl"))
            opts.format = PK_IMPORT_JSONL;
        else if (!strcmp(fmt, "txt"))
            opts.format = PK_IMPORT_TXT;
        else if (!strcmp(fmt, "csv"))
            opts.format = PK_IMPORT_CSV;
        else {
            cli_error(argv[0], "unknown --format '%s' (jsonl, txt or csv)", fmt);
            return CLI_USAGE;
        }
    }
    opts.paragraphs = cli_flag(argc, argv, "--paragraphs");
    if (access(file, R_OK) != 0) {
        cli_error(argv[0], "%s: %s", file, strerror(errno));
        return CLI_ERR;
    }
    int rc = legacy_cli_open_store(argc, argv, &s);
    if (rc != CLI_OK)
        return rc;
    int json = cli_flag(argc, argv, "--json"), quiet = cli_flag(argc, argv, "--quiet");
    pk_progress *prog = pk_progress_new("import", 0, pk_progress_mode_from_args(json, quiet));
    pk_progress_set_unit(prog, "examples");
    opts.progress = import_progress;
    opts.progress_user = prog;
    pk_status st = pk_store_import(s, file, name, opts, &n);
    pk_progress_finish(prog);
    if (st != PK_OK) {
        cli_error(argv[0], "%s; nothing was imported", pk_store_errmsg(s));
        rc = CLI_ERR;
    } else if (json) {
        fputs("{\"dataset\":", stdout);
        cli_json_str(stdout, name, strlen(name));
        printf(",\"imported\":%lld}\n", (long long)n);
    } else if (!quiet) {
        printf("imported %lld examples into dataset '%s'\n", (long long)n, name);
    }
    pk_store_close(s);
    return rc;
}

/* ---- data list|show|forget|export ---------------------------------------------------------- */

static const char data_help[] =
    "usage: pocketllm data list [--json]\n"
    "       pocketllm data show --dataset NAME [--limit N]   (decrypted JSONL on stdout; N=10,\n"
    "                                                         0 = all)\n"
    "       pocketllm data forget --dataset NAME | --id ID   (rows deleted, pages wiped)\n"
    "       pocketllm data export --dataset NAME --out FILE  (decrypted JSONL, file mode 0600;\n"
    "                                                         the only way plaintext leaves)\n"
    "Every sub-command takes --home DIR and --passphrase-file FILE.\n"
    "\n"
    "examples:\n"
    "  pocketllm data list\n"
    "  pocketllm data show --dataset notes --limit 3\n"
    "  pocketllm data forget --id 42\n"
    "  pocketllm data export --dataset notes --out notes.jsonl\n";

static int data_list(int argc, char **argv, pk_store *s)
{
    pk_dataset_info *d = NULL;
    size_t n = 0;
    int json = cli_flag(argc, argv, "--json");
    if (pk_store_dataset_list(s, &d, &n) != PK_OK) {
        cli_error(argv[0], "%s", pk_store_errmsg(s));
        return CLI_ERR;
    }
    if (!json)
        printf("%-24s %10s %14s  %s\n", "dataset", "examples", "sealed bytes", "created (UTC)");
    for (size_t i = 0; i < n; i++) {
        char when[32];
        time_t t = (time_t)d[i].created_at;
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
        if (json) {
            fputs("{\"dataset\":", stdout);
            cli_json_str(stdout, d[i].name, strlen(d[i].name));
            printf(",\"id\":%lld,\"examples\":%lld,\"sealed_bytes\":%lld,\"created_at\":%.3f}\n",
                   (long long)d[i].id, (long long)d[i].n_examples, (long long)d[i].sealed_bytes,
                   d[i].created_at);
        } else
            printf("%-24s %10lld %14lld  %s\n", d[i].name, (long long)d[i].n_examples,
                   (long long)d[i].sealed_bytes, when);
    }
    if (!json && n == 0)
        printf("(no datasets: pocketllm import FILE --dataset NAME)\n");
    free(d);
    return CLI_OK;
}

static int data_forget(int argc, char **argv, pk_store *s)
{
    const char *name = cli_opt(argc, argv, "--dataset");
    long long id = 0;
    int has_id = cli_opt_long(argc, argv, "--id", &id);
    if (has_id < 0)
        return CLI_USAGE;
    if ((name != NULL) == (has_id == 1)) {
        cli_error(argv[0], "give exactly one of --dataset NAME or --id ID");
        return CLI_USAGE;
    }
    pk_status st = name ? pk_store_dataset_forget(s, name) : pk_store_example_forget(s, id);
    if (st != PK_OK) {
        cli_error(argv[0], "%s", pk_store_errmsg(s));
        return CLI_ERR;
    }
    if (name)
        printf("forgot dataset '%s'\n", name);
    else
        printf("forgot example %lld\n", id);
    return CLI_OK;
}

static int data_export(int argc, char **argv, pk_store *s)
{
    const char *name = cli_opt(argc, argv, "--dataset"), *path = cli_opt(argc, argv, "--out");
    if (!name || !path || !*path) {
        cli_error(argv[0], "usage: pocketllm data export --dataset NAME --out FILE");
        return CLI_USAGE;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        cli_error(argv[0], "%s: %s%s", path, strerror(errno),
                  errno == EEXIST ? " (refusing to overwrite: remove it first)" : "");
        return CLI_ERR;
    }
    int rc = dump_dataset(argv[0], s, name, -1, fd, 0);
    if (close(fd) != 0 && rc == CLI_OK) {
        cli_error(argv[0], "%s: %s", path, strerror(errno));
        rc = CLI_ERR;
    }
    if (rc != CLI_OK)
        unlink(path);
    else
        fprintf(stderr, "exported dataset '%s' to %s (plaintext: keep it safe)\n", name, path);
    return rc;
}

int cmd_data(int argc, char **argv)
{
    static const char *const vals[] = {"--dataset", "--limit",           "--id",
                                       "--out",     "--passphrase-file", NULL};
    static const char *const flags[] = {"--json", NULL};
    pk_store *s = NULL;
    if (cli_help(argc, argv, data_help))
        return CLI_OK;
    if (cli_check(argc, argv, vals, flags))
        return CLI_USAGE;
    /* The sub-command is the first positional argument: options (--home) may come before it. */
    const char *sub = cli_positional(argc, argv, 0, vals);
    if (!sub) {
        cli_error("data", "missing sub-command: list, show, forget or export (see --help)");
        return CLI_USAGE;
    }
    if (strcmp(sub, "list") && strcmp(sub, "show") && strcmp(sub, "forget") &&
        strcmp(sub, "export")) {
        cli_error("data", "unknown sub-command '%s' (list, show, forget, export)", sub);
        return CLI_USAGE;
    }
    if (cli_positional(argc, argv, 1, vals)) {
        cli_error("data", "unexpected argument '%s'", cli_positional(argc, argv, 1, vals));
        return CLI_USAGE;
    }
    long long limit = 10;
    if (cli_opt_long(argc, argv, "--limit", &limit) < 0 || limit < 0) {
        if (limit < 0)
            cli_error("data", "--limit must be >= 0");
        return CLI_USAGE;
    }
    if (!strcmp(sub, "show") && !cli_opt(argc, argv, "--dataset")) {
        cli_error("data", "usage: pocketllm data show --dataset NAME [--limit N]");
        return CLI_USAGE;
    }
    int rc = legacy_cli_open_store(argc, argv, &s);
    if (rc != CLI_OK)
        return rc;
    if (!strcmp(sub, "list"))
        rc = data_list(argc, argv, s);
    else if (!strcmp(sub, "show"))
        rc = dump_dataset(argv[0], s, cli_opt(argc, argv, "--dataset"), limit ? limit : -1, 1, 1);
    else if (!strcmp(sub, "forget"))
        rc = data_forget(argc, argv, s);
    else
        rc = data_export(argc, argv, s);
    pk_store_close(s);
    return rc;
}

/* ---- rekey ------------------------------------------------------------------------------- */

static const char rekey_help[] =
    "usage: pocketllm rekey [--home DIR] [--passphrase-file FILE] [--new-passphrase-file FILE]\n"
    "                       [--opslimit N] [--memlimit BYTES]\n"
    "\n"
    "Changes the passphrase: a new salt and new keys, every sealed row re-encrypted, in one\n"
    "transaction (if interrupted, the old passphrase still works and nothing is mixed).\n"
    "The new passphrase comes from --new-passphrase-file, else POCKETLLM_NEW_PASSPHRASE, else a\n"
    "no-echo prompt (asked twice).\n"
    "\n"
    "examples:\n"
    "  pocketllm rekey\n"
    "  pocketllm rekey --passphrase-file old.txt --new-passphrase-file new.txt\n";

int cmd_rekey(int argc, char **argv)
{
    static const char *const vals[] = {"--passphrase-file", "--new-passphrase-file", "--opslimit",
                                       "--memlimit", NULL};
    pk_store *s = NULL;
    pk_store_params params;
    char *pass = NULL;
    size_t len = 0;
    if (cli_help(argc, argv, rekey_help))
        return CLI_OK;
    if (cli_check(argc, argv, vals, NULL))
        return CLI_USAGE;
    int rc = parse_params(argc, argv, &params);
    if (rc == CLI_OK)
        rc = legacy_cli_open_store(argc, argv, &s);
    if (rc != CLI_OK)
        return rc;
    rc = legacy_cli_read_new_passphrase(argc, argv, &pass, &len);
    if (rc == CLI_OK) {
        if (pk_store_rekey(s, pass, len, params) != PK_OK) {
            cli_error(argv[0], "%s; the old passphrase is still valid", pk_store_errmsg(s));
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

static const char bench_help[] =
    "usage: pocketllm bench store [--examples N] [--opslimit N] [--memlimit BYTES]\n"
    "\n"
    "In a temporary home: one unlock with the Argon2id limits (default: interactive), and the\n"
    "import throughput of N (default 20000) generated 1 KB examples. Prints one JSON line.\n"
    "\n"
    "example:\n"
    "  pocketllm bench store --examples 50000\n";

/* N JSONL lines of ~1 KB of pseudo-random words. */
static int write_examples(const char *path, long long n)
{
    FILE *f = fopen(path, "w");
    uint64_t x = 0x243f6a8885a308d3ull;
    if (!f)
        return -1;
    for (long long i = 0; i < n; i++) {
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

int cmd_bench_store(int argc, char **argv)
{
    static const char *const vals[] = {"--examples", "--opslimit", "--memlimit", NULL};
    static const char pass[] = "bench passphrase";
    char dir[512], data[600], err[1024];
    long long n = 20000;
    pk_store_params params;
    pk_store *s = NULL;
    int64_t got = 0;
    if (cli_help(argc, argv, bench_help))
        return CLI_OK;
    if (cli_check(argc, argv, vals, NULL) || cli_opt_long(argc, argv, "--examples", &n) < 0 ||
        n <= 0 || parse_params(argc, argv, &params) != CLI_OK) {
        if (n <= 0)
            cli_error(argv[0], "--examples must be > 0");
        return CLI_USAGE;
    }
    if (pk_crypto_global_init() != PK_OK)
        return CLI_ERR;
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/pocketllm-bench-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        cli_error(argv[0], "mkdtemp %s: %s", dir, strerror(errno));
        return CLI_ERR;
    }
    snprintf(data, sizeof data, "%s/bench.jsonl", dir);
    int rc = CLI_ERR;
    if (write_examples(data, n) != 0) {
        cli_error(argv[0], "cannot write %s", data);
        goto out;
    }
    if (pk_store_init(dir, pass, sizeof pass - 1, params, err, sizeof err) != PK_OK) {
        cli_error(argv[0], "%s", err);
        goto out;
    }
    double t0 = pk_time_now();
    if (pk_store_open(dir, pass, sizeof pass - 1, &s, err, sizeof err) != PK_OK) {
        cli_error(argv[0], "%s", err);
        goto out;
    }
    double unlock = pk_time_now() - t0;
    pk_import_opts opts = {.format = PK_IMPORT_JSONL, .paragraphs = 0};
    t0 = pk_time_now();
    if (pk_store_import(s, data, "bench", opts, &got) != PK_OK || got != n) {
        cli_error(argv[0], "%s", pk_store_errmsg(s));
        goto out;
    }
    double imp = pk_time_now() - t0;
    printf("{\"bench\":\"store\",\"unlock_s\":%.4f,\"opslimit\":%llu,\"memlimit\":%zu,"
           "\"examples\":%lld,\"example_bytes\":1024,\"import_s\":%.4f,"
           "\"import_examples_per_s\":%.0f}\n",
           unlock,
           (unsigned long long)(params.opslimit ? params.opslimit : pk_kdf_default_opslimit()),
           params.memlimit ? params.memlimit : pk_kdf_default_memlimit(), n, imp, (double)n / imp);
    rc = CLI_OK;
out:
    pk_store_close(s);
    rm_home(dir);
    return rc;
}
