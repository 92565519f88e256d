/* cmd_product.c: the product commands plot (SVG loss curves), pull (download from a Hugging
 * Face-compatible hub) and export (HF model directory or seed log), one option table each. The
 * work itself is done by plot.c, net/ (pk_net.h) and train/ (pk_train.h); this file parses
 * options and prints results. `pocketllm demo` lives in cmd_demo.c and demo_fed.c. */
#include "cli.h"
#include "passphrase.h"

#include "pk_crypto.h"
#include "pk_net.h"
#include "pk_tokenizer.h"
#include "pk_train.h"
#include "pocketllm.h"
#include "progress.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ERRLEN 1024

/* The store of a command whose own checks returned rc: 0 with *s open, else the exit code. */
static int open_checked(int rc, const cli_common *c, pk_store **s)
{
    return rc != 0 ? rc : cli_open_store(c, s);
}

/* Closes the store after the command's one store call: CLI_OK if st is, else CLI_ERR after
 * printing err (or what st means when the callee left it empty). */
static int close_report(pk_store *s, const char *cmd, pk_status st, const char *err)
{
    pk_store_close(s);
    if (st == PK_OK)
        return CLI_OK;
    return cli_fail(cmd, st, err);
}

/* The error of plot and export when no --run is given: prints it and returns CLI_USAGE. */
static int run_missing(const char *cmd)
{
    cli_error(cmd, "--run ID is required (a positive run id; see pocketllm runs)");
    return CLI_USAGE;
}

/* ---- plot ----------------------------------------------------------------------------------- */

typedef struct plot_opts {
    cli_common c;
    cli_list runs;
    const char *out;
    int x; /* pk_plot_x */
} plot_opts;

#define T plot_opts
static const cli_option plot_table[] = {
    {"--run", CLI_LIST, CLI_AT(T, runs), 0, 0, NULL, "ID",
     "the run (required); repeat it to compare the train loss of several runs"},
    {"--out", CLI_STR, CLI_AT(T, out), 0, 0, NULL, "FILE.svg",
     "the SVG to write (required; - writes it to stdout)"},
    {"--x", CLI_CHOICE, CLI_AT(T, x), 0, 0, "step|evaluations|seconds", NULL,
     "several runs: x axis in steps, loss evaluations or training seconds (compares "
     "estimators; seconds from the runs' eval points)"},
    CLI_STORE_OPTS(T),
    CLI_END,
};
#undef T

static const cli_command plot_cmd = {
    "plot",
    "plot --run ID [--run ID2 ...] --out FILE.svg [options]",
    "Writes loss curves as a standalone SVG that any browser opens. With one run: its train\n"
    "loss per step ((loss+ + loss-)/2 from the step log) raw and smoothed, and the held-out\n"
    "eval loss points, against steps. With several runs: the smoothed train loss of each, one\n"
    "curve per run (named \"run N\").",
    plot_table,
    0,
    "examples:\n"
    "  pocketllm plot --run 1 --out loss.svg\n"
    "  pocketllm plot --run 1 --run 2 --out compare.svg\n"
    "  pocketllm plot --run 1 --run 2 --x seconds --out wallclock.svg\n"
    "  pocketllm runs list                  # find the run ids"};

/* The run ids of --run: at least one, each positive and given once. */
static int plot_check(const plot_opts *o, int64_t *ids)
{
    const char *cmd = o->c.cmd;
    if (o->runs.n == 0)
        return run_missing(cmd);
    if (cli_list_int64(&o->c, "--run", &o->runs, 1, INT64_MAX, ids) != 0)
        return CLI_USAGE;
    for (int i = 1; i < o->runs.n; i++)
        for (int j = 0; j < i; j++)
            if (ids[i] == ids[j]) {
                cli_error(cmd, "--run: run %lld is given twice", (long long)ids[i]);
                return CLI_USAGE;
            }
    if (!o->out || !*o->out) {
        cli_error(cmd, "--out FILE.svg is required");
        return CLI_USAGE;
    }
    return 0;
}

int cmd_plot(int argc, char **argv)
{
    plot_opts o = {0};
    int64_t ids[CLI_LIST_MAX];
    int rc = cli_parse(&plot_cmd, argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? CLI_OK : rc;
    pk_store *s = NULL;
    rc = open_checked(plot_check(&o, ids), &o.c, &s);
    if (rc != 0)
        return rc;
    char err[ERRLEN] = "";
    /* one run against steps: its raw and smoothed train loss and its eval points; else (several
     * runs, or --x evaluations|seconds) one smoothed curve per run */
    pk_status st =
        o.runs.n == 1 && o.x == PK_PLOT_X_STEP
            ? pk_plot_run(s, ids[0], o.out, err, sizeof err)
            : pk_plot_runs_x(s, ids, (size_t)o.runs.n, (pk_plot_x)o.x, o.out, err, sizeof err);
    rc = close_report(s, o.c.cmd, st, err);
    if (rc == CLI_OK && strcmp(o.out, "-") != 0) /* "-": the SVG itself went to stdout */
        printf("wrote %s (open it in a browser)\n", o.out);
    return rc;
}

/* ---- pull ----------------------------------------------------------------------------------- */

typedef struct pull_opts {
    cli_common c;
    const char *revision;
    const char *endpoint;
    const char *out;
    int retries;
} pull_opts;

#define T pull_opts
static const cli_option pull_table[] = {
    {"--revision", CLI_STR, CLI_AT(T, revision), 0, 0, NULL, "R", "branch, tag or commit"},
    {"--endpoint", CLI_STR, CLI_AT(T, endpoint), 0, 0, NULL, "URL",
     "hub base URL ($HF_ENDPOINT, else https://huggingface.co)"},
    {"--out", CLI_STR, CLI_AT(T, out), 0, 0, NULL, "DIR",
     "destination (models/NAME, NAME the last part of REPO_ID)"},
    {"--retries", CLI_INT, CLI_AT(T, retries), 1, 100, NULL, "N",
     "attempts per file, each resuming the partial file"},
    CLI_JSON_OPT(T),
    CLI_QUIET_OPT(T),
    CLI_HOME_IGNORED(T),
    CLI_END,
};
#undef T

static const cli_command pull_cmd = {
    "pull",
    "pull REPO_ID [--revision R] [--endpoint URL] [--out DIR] [--retries N] [options]",
    "Downloads a model from a Hugging Face-compatible hub: config.json, the tokenizer files,\n"
    "and model.safetensors (or model.safetensors.index.json and its shards), from\n"
    "{endpoint}/{repo}/resolve/{revision}/{file}. Files land in FILE.part first; an\n"
    "interrupted pull resumes where it stopped when run again (HTTP Range). When the hub\n"
    "publishes a sha256 (ETag / X-Linked-Etag / X-Content-Sha256) every file is checked.\n"
    "The environment variable HF_TOKEN gives a token for gated or private repos.",
    pull_table,
    1,
    "examples:\n"
    "  pocketllm pull Xenova/stories260K --out models/stories260k\n"
    "  pocketllm pull demo/tiny --endpoint http://127.0.0.1:8080   # pocketllm-server-mock"};

static void default_out(const char *repo, char *out, size_t n)
{
    const char *slash = strrchr(repo, '/');
    snprintf(out, n, "models/%s", slash ? slash + 1 : repo);
}

/* pk_pull_params.progress: one byte-progress display per file. */
typedef struct pull_display {
    pk_progress_mode mode;
    pk_progress *cur; /* the file being transferred, NULL between files */
} pull_display;

static void pull_progress(void *user, const char *label, int64_t done, int64_t total, int final)
{
    pull_display *d = user;
    if (!d->cur) {
        d->cur = pk_progress_new(label, total, d->mode);
        pk_progress_set_bytes(d->cur, 1);
    }
    pk_progress_update(d->cur, done, (double)NAN);
    if (final) {
        pk_progress_finish(d->cur);
        d->cur = NULL;
    }
}

static int pull_print(const pull_opts *o, const char *repo, const char *out,
                      const pk_pull_result *r, double dt)
{
    if (o->c.json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "repo", repo);
        cJSON_AddStringToObject(j, "out", out);
        cJSON_AddNumberToObject(j, "files", r->files);
        cJSON_AddNumberToObject(j, "downloaded", r->downloaded);
        cJSON_AddNumberToObject(j, "up_to_date", r->up_to_date);
        cJSON_AddNumberToObject(j, "resumed", r->resumed);
        cJSON_AddNumberToObject(j, "verified", r->verified);
        cJSON_AddNumberToObject(j, "bytes", (double)r->bytes);
        cJSON_AddNumberToObject(j, "seconds", dt);
        return cli_json_print(j);
    }
    if (!o->c.quiet)
        printf("pulled %s into %s: %d files (%d downloaded, %d already up to date, %d resumed, "
               "%d sha256-verified), %.1f MiB in %.1f s\n",
               repo, out, r->files, r->downloaded, r->up_to_date, r->resumed, r->verified,
               (double)r->bytes / (1024.0 * 1024.0), dt);
    return CLI_OK;
}

int cmd_pull(int argc, char **argv)
{
    pull_opts o = {.revision = "main", .retries = 5};
    int rc = cli_parse(&pull_cmd, argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? CLI_OK : rc;
    if (o.c.n_args != 1) {
        cli_error(o.c.cmd, "REPO_ID is required, e.g. pocketllm pull org/name (see --help)");
        return CLI_USAGE;
    }
    const char *repo = o.c.args[0];
    char outbuf[1024];
    const char *out = o.out;
    if (!out) {
        default_out(repo, outbuf, sizeof outbuf);
        out = outbuf;
    }
    pk_pull_params p = pk_pull_default_params();
    pull_display disp = {pk_progress_mode_from_args(o.c.json, o.c.quiet), NULL};
    p.endpoint = o.endpoint;
    p.revision = o.revision;
    p.progress = pull_progress;
    p.progress_user = &disp;
    p.max_attempts = o.retries;
    if (cli_http_init(o.c.cmd) != 0)
        return CLI_ERR;
    if (pk_crypto_global_init() != PK_OK) {
        cli_error(o.c.cmd, "cannot initialise libsodium");
        return CLI_ERR;
    }
    pk_interrupt_install();
    pk_pull_result r;
    char err[ERRLEN] = "";
    double t0 = pk_time_now();
    pk_status st = pk_pull(repo, out, &p, &r, err, sizeof err);
    if (st != PK_OK) {
        cli_error(o.c.cmd, "%s", cli_errtext(st, err));
        return st == PK_ERR_INTERRUPTED ? CLI_INTERRUPTED : CLI_ERR;
    }
    return pull_print(&o, repo, out, &r, pk_time_now() - t0);
}

/* ---- export --------------------------------------------------------------------------------- */

typedef struct export_opts {
    cli_common c;
    int64_t run;
    const char *out;
    const char *dtype;
    const char *seed_log;
    const char *adapter;
    const char *merged;
} export_opts;

#define T export_opts
static const cli_option export_table[] = {
    {"--run", CLI_INT, CLI_AT(T, run), 1, 9e18, NULL, "ID", "the run (required)"},
    {"--out", CLI_STR, CLI_AT(T, out), 0, 0, NULL, "DIR", "write a Hugging Face model directory"},
    {"--dtype", CLI_STR, CLI_AT(T, dtype), 0, 0, NULL, "f32|f16|bf16",
     "the weights' type in --out"},
    {"--seed-log", CLI_STR, CLI_AT(T, seed_log), 0, 0, NULL, "FILE",
     "write a portable seed log instead"},
    {"--adapter", CLI_STR, CLI_AT(T, adapter), 0, 0, NULL, "DIR",
     "write a LoRA run's adapter as a PEFT adapter directory"},
    {"--merged", CLI_STR, CLI_AT(T, merged), 0, 0, NULL, "DIR",
     "write a LoRA run's base + adapter merged (as --out)"},
    CLI_STORE_OPTS(T),
    CLI_END,
};
#undef T

static const cli_command export_cmd = {
    "export",
    "export --run ID --out DIR [--dtype f16|bf16|f32] [options]\n"
    "export --run ID --seed-log FILE [options]\n"
    "export --run ID --adapter DIR [options]\n"
    "export --run ID --merged DIR [--dtype f16|bf16|f32] [options]",
    "--out DIR writes the run's fine-tuned weights as a Hugging Face model directory\n"
    "(config.json, model.safetensors, the base model's tokenizer files, pocketllm_run.json)\n"
    "that transformers' from_pretrained and pocketllm forward/generate load; a LoRA run's\n"
    "adapter is merged into the weights (--merged DIR is the same).\n"
    "--adapter DIR writes a LoRA run (train --trainable lora:...) as a PEFT adapter:\n"
    "adapter_config.json + adapter_model.safetensors, for PeftModel.from_pretrained on the base.\n"
    "--seed-log FILE writes the run as a portable seed log: the base-model hash and one line\n"
    "per MeZO step (seed, projected gradient, lr) - kilobytes instead of the weights.\n"
    "Rebuild it anywhere with: pocketllm replay --seed-log FILE --model BASE --out DIR",
    export_table,
    0,
    "examples:\n"
    "  pocketllm export --run 1 --out my-model --dtype f16\n"
    "  pocketllm export --run 1 --seed-log run1.seedlog\n"
    "  pocketllm export --run 2 --adapter my-adapter"};

/* What the table cannot say: --run is required, one destination, --dtype with --out only. */
static int export_check(const export_opts *o, pk_dtype *dtype)
{
    const char *cmd = o->c.cmd;
    if (!cli_given(&o->c, "--run"))
        return run_missing(cmd);
    if ((o->out != NULL) + (o->seed_log != NULL) + (o->adapter != NULL) + (o->merged != NULL) !=
        1) {
        cli_error(cmd, "give exactly one of --out DIR, --merged DIR, --adapter DIR or --seed-log "
                       "FILE (see --help)");
        return CLI_USAGE;
    }
    if ((o->seed_log || o->adapter) && cli_given(&o->c, "--dtype")) {
        cli_error(cmd, "--dtype applies to --out and --merged only");
        return CLI_USAGE;
    }
    if (pk_dtype_parse(o->dtype, dtype) != 0) {
        cli_error(cmd, "--dtype: expected f32, f16 or bf16, got '%s'", o->dtype);
        return CLI_USAGE;
    }
    if ((o->out && !*o->out) || (o->seed_log && !*o->seed_log) || (o->adapter && !*o->adapter) ||
        (o->merged && !*o->merged)) {
        cli_error(cmd, "empty path");
        return CLI_USAGE;
    }
    return 0;
}

/* --seed-log FILE: through libpocketllm (pocketllm_export_seedlog). */
static int export_seedlog(const export_opts *o)
{
    pocketllm_home *h = NULL;
    size_t bytes = 0;
    int rc = cli_open_home(&o->c, &h);
    if (rc != CLI_OK)
        return rc;
    pocketllm_status st = pocketllm_export_seedlog(h, o->run, o->seed_log, &bytes);
    rc = st == POCKETLLM_OK ? CLI_OK : cli_home_fail(o->c.cmd, h, st);
    pocketllm_home_close(h);
    if (rc == CLI_OK && pk_path_write_through(o->seed_log)) /* e.g. /dev/stdout: keep it clean */
        fprintf(stderr, "wrote seed log of run %lld to %s\n", (long long)o->run, o->seed_log);
    else if (rc == CLI_OK)
        printf("wrote seed log of run %lld to %s (%zu bytes)\n", (long long)o->run, o->seed_log,
               bytes);
    return rc;
}

int cmd_export(int argc, char **argv)
{
    export_opts o = {.dtype = "f32"};
    pk_dtype dtype = PK_DTYPE_F32;
    int rc = cli_parse(&export_cmd, argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? CLI_OK : rc;
    rc = export_check(&o, &dtype);
    if (rc != 0)
        return rc;
    if (o.seed_log)
        return export_seedlog(&o);
    /* Model directories and adapters: the API does not cover them (yet), so the store. */
    pk_store *s = NULL;
    rc = open_checked(0, &o.c, &s);
    if (rc != 0)
        return rc;
    char err[ERRLEN] = "", hash[65] = "";
    const char *dir = o.out ? o.out : o.merged;
    pk_status st = dir ? pk_export_hf(s, o.run, dir, dtype, hash, err, sizeof err)
                       : pk_export_adapter(s, o.run, o.adapter, hash, err, sizeof err);
    rc = close_report(s, o.c.cmd, st, err);
    if (rc != CLI_OK)
        return rc;
    if (dir)
        printf("exported run %lld to %s (%s, weights hash %s)\n", (long long)o.run, dir,
               pk_dtype_name(dtype), hash);
    else
        printf("exported the LoRA adapter of run %lld to %s (weights hash %s)\n", (long long)o.run,
               o.adapter, hash);
    return CLI_OK;
}
