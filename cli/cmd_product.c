/* cmd_product.c: the product commands plot (SVG loss curves), pull (download from a Hugging
 * Face-compatible hub) and export (HF model directory or seed log). The work itself is done by
 * the agent library (pk_ui.h, pk_mezo.h, pk_sync.h); this file parses options and prints
 * results. `pocketllm demo` lives in cmd_demo.c and demo_fed.c. */
#include "cli.h"
#include "passphrase.h"

#include "pk_crypto.h"
#include "pk_train.h"
#include "pk_net.h"
#include "pk_tokenizer.h"
#include "progress.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ERRLEN 1024

/* ---- plot ----------------------------------------------------------------------------------- */

static const char plot_help[] =
    "usage: pocketllm plot --run ID --out FILE.svg [--home DIR] [--passphrase-file F]\n"
    "\n"
    "Writes the loss curves of a training run as a standalone SVG that any browser opens:\n"
    "train loss per step ((loss+ + loss-)/2 from the step log) raw and smoothed, and the\n"
    "held-out eval loss points, against steps.\n"
    "\n"
    "examples:\n"
    "  pocketllm plot --run 1 --out loss.svg\n"
    "  pocketllm runs list                  # find the run id\n";

static int parse_run_id(int argc, char **argv, int64_t *id)
{
    long long v = 0;
    int r = cli_opt_long(argc, argv, "--run", &v);
    if (r < 0)
        return CLI_USAGE;
    if (r == 0 || v <= 0) {
        cli_error(argv[0], "--run ID is required (a positive run id; see pocketllm runs)");
        return CLI_USAGE;
    }
    *id = (int64_t)v;
    return CLI_OK;
}

int cmd_plot(int argc, char **argv)
{
    static const char *const vals[] = {"--run", "--out", "--passphrase-file", NULL};
    if (cli_help(argc, argv, plot_help))
        return CLI_OK;
    if (cli_check(argc, argv, vals, NULL))
        return CLI_USAGE;
    int64_t run = 0;
    int rc = parse_run_id(argc, argv, &run);
    if (rc != CLI_OK)
        return rc;
    const char *out = cli_opt(argc, argv, "--out");
    if (!out || !*out) {
        cli_error(argv[0], "--out FILE.svg is required");
        return CLI_USAGE;
    }
    pk_store *s = NULL;
    rc = legacy_cli_open_store(argc, argv, &s);
    if (rc != 0)
        return rc;
    char err[ERRLEN] = "";
    pk_status st = pk_plot_run(s, run, out, err, sizeof err);
    pk_store_close(s);
    if (st != PK_OK) {
        cli_error(argv[0], "%s", err[0] ? err : pk_status_str(st));
        return CLI_ERR;
    }
    printf("wrote %s (open it in a browser)\n", out);
    return CLI_OK;
}

/* ---- pull ----------------------------------------------------------------------------------- */

static const char pull_help[] =
    "usage: pocketllm pull REPO_ID [--revision R] [--endpoint URL] [--out DIR] [--retries N]\n"
    "                      [--json] [--quiet]\n"
    "\n"
    "Downloads a model from a Hugging Face-compatible hub: config.json, the tokenizer files,\n"
    "and model.safetensors (or model.safetensors.index.json and its shards), from\n"
    "{endpoint}/{repo}/resolve/{revision}/{file}. Files land in FILE.part first; an\n"
    "interrupted pull resumes where it stopped when run again (HTTP Range). When the hub\n"
    "publishes a sha256 (ETag / X-Linked-Etag / X-Content-Sha256) every file is checked.\n"
    "\n"
    "  --revision R   branch, tag or commit (default main)\n"
    "  --endpoint URL hub base URL (default $HF_ENDPOINT, else https://huggingface.co)\n"
    "  --out DIR      destination (default ./models/NAME)\n"
    "  --retries N    attempts per file, each resuming the partial file (default 5)\n"
    "  HF_TOKEN       environment variable: a token for gated or private repos\n"
    "\n"
    "examples:\n"
    "  pocketllm pull Xenova/stories260K --out models/stories260k\n"
    "  pocketllm pull demo/tiny --endpoint http://127.0.0.1:8080   # pocketllm-server-mock\n";

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

int cmd_pull(int argc, char **argv)
{
    static const char *const vals[] = {"--revision", "--endpoint", "--out", "--retries", NULL};
    static const char *const flags[] = {"--json", "--quiet", NULL};
    static const char *const takes[] = {"--revision", "--endpoint", "--out",
                                        "--retries",  "--home",     NULL};
    if (cli_help(argc, argv, pull_help))
        return CLI_OK;
    if (cli_check(argc, argv, vals, flags))
        return CLI_USAGE;
    const char *repo = cli_positional(argc, argv, 0, takes);
    if (!repo) {
        cli_error(argv[0], "REPO_ID is required, e.g. pocketllm pull org/name (see --help)");
        return CLI_USAGE;
    }
    if (cli_positional(argc, argv, 1, takes)) {
        cli_error(argv[0], "one REPO_ID only (see pocketllm pull --help)");
        return CLI_USAGE;
    }
    long long retries = 5;
    if (cli_opt_long(argc, argv, "--retries", &retries) < 0)
        return CLI_USAGE;
    if (retries < 1 || retries > 100) {
        cli_error(argv[0], "--retries must be between 1 and 100");
        return CLI_USAGE;
    }
    char outbuf[1024];
    const char *out = cli_opt(argc, argv, "--out");
    if (!out) {
        default_out(repo, outbuf, sizeof outbuf);
        out = outbuf;
    }
    int json = cli_flag(argc, argv, "--json"), quiet = cli_flag(argc, argv, "--quiet");
    pk_pull_params p = pk_pull_default_params();
    p.endpoint = cli_opt(argc, argv, "--endpoint");
    p.revision = cli_opt(argc, argv, "--revision");
    pull_display disp = {pk_progress_mode_from_args(json, quiet), NULL};
    p.progress = pull_progress;
    p.progress_user = &disp;
    p.max_attempts = (int)retries;
    if (cli_http_init(argv[0]) != 0)
        return CLI_ERR;
    if (pk_crypto_global_init() != PK_OK) {
        cli_error(argv[0], "cannot initialise libsodium");
        return CLI_ERR;
    }
    pk_interrupt_install();
    pk_pull_result r;
    char err[ERRLEN] = "";
    double t0 = pk_time_now();
    pk_status st = pk_pull(repo, out, &p, &r, err, sizeof err);
    double dt = pk_time_now() - t0;
    if (st != PK_OK) {
        cli_error(argv[0], "%s", err[0] ? err : pk_status_str(st));
        return st == PK_ERR_INTERRUPTED ? CLI_INTERRUPTED : CLI_ERR;
    }
    if (json)
        printf("{\"repo\":\"%s\",\"out\":\"%s\",\"files\":%d,\"downloaded\":%d,"
               "\"up_to_date\":%d,\"resumed\":%d,\"verified\":%d,\"bytes\":%lld,"
               "\"seconds\":%.3f}\n",
               repo, out, r.files, r.downloaded, r.up_to_date, r.resumed, r.verified,
               (long long)r.bytes, dt);
    else if (!quiet)
        printf("pulled %s into %s: %d files (%d downloaded, %d already up to date, %d resumed, "
               "%d sha256-verified), %.1f MiB in %.1f s\n",
               repo, out, r.files, r.downloaded, r.up_to_date, r.resumed, r.verified,
               (double)r.bytes / (1024.0 * 1024.0), dt);
    return CLI_OK;
}

/* ---- export --------------------------------------------------------------------------------- */

static const char export_help[] =
    "usage: pocketllm export --run ID --out DIR [--dtype f16|bf16|f32]\n"
    "       pocketllm export --run ID --seed-log FILE\n"
    "       (both: [--home DIR] [--passphrase-file F])\n"
    "\n"
    "--out DIR writes the run's fine-tuned weights as a Hugging Face model directory\n"
    "(config.json, model.safetensors, the base model's tokenizer files, pocketllm_run.json)\n"
    "that transformers' from_pretrained and pocketllm forward/generate load.\n"
    "--seed-log FILE writes the run as a portable seed log: the base-model hash and one line\n"
    "per MeZO step (seed, projected gradient, lr) - kilobytes instead of the weights.\n"
    "Rebuild it anywhere with: pocketllm replay --seed-log FILE --model BASE --out DIR\n"
    "\n"
    "examples:\n"
    "  pocketllm export --run 1 --out my-model --dtype f16\n"
    "  pocketllm export --run 1 --seed-log run1.seedlog\n";

int cmd_export(int argc, char **argv)
{
    static const char *const vals[] = {
        "--run", "--out", "--dtype", "--seed-log", "--passphrase-file", NULL};
    if (cli_help(argc, argv, export_help))
        return CLI_OK;
    if (cli_check(argc, argv, vals, NULL))
        return CLI_USAGE;
    int64_t run = 0;
    int rc = parse_run_id(argc, argv, &run);
    if (rc != CLI_OK)
        return rc;
    const char *out = cli_opt(argc, argv, "--out");
    const char *seedlog = cli_opt(argc, argv, "--seed-log");
    const char *dts = cli_opt(argc, argv, "--dtype");
    if ((!out) == (!seedlog)) {
        cli_error(argv[0], "give exactly one of --out DIR or --seed-log FILE (see --help)");
        return CLI_USAGE;
    }
    pk_dtype dtype = PK_DTYPE_F32;
    if (dts && (seedlog || pk_dtype_parse(dts, &dtype) != 0)) {
        cli_error(argv[0],
                  seedlog ? "--dtype applies to --out only" : "--dtype must be f32, f16 or bf16");
        return CLI_USAGE;
    }
    if ((out && !*out) || (seedlog && !*seedlog)) {
        cli_error(argv[0], "empty path");
        return CLI_USAGE;
    }
    pk_store *s = NULL;
    rc = legacy_cli_open_store(argc, argv, &s);
    if (rc != 0)
        return rc;
    char err[ERRLEN] = "", hash[65] = "";
    size_t bytes = 0;
    pk_status st = out ? pk_export_hf(s, run, out, dtype, hash, err, sizeof err)
                       : pk_export_seedlog(s, run, seedlog, &bytes, err, sizeof err);
    pk_store_close(s);
    if (st != PK_OK) {
        cli_error(argv[0], "%s", err[0] ? err : pk_status_str(st));
        return CLI_ERR;
    }
    if (out)
        printf("exported run %lld to %s (%s, weights hash %s)\n", (long long)run, out,
               pk_dtype_name(dtype), hash);
    else
        printf("wrote seed log of run %lld to %s (%zu bytes)\n", (long long)run, seedlog, bytes);
    return CLI_OK;
}
