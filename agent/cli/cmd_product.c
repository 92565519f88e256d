/* cmd_product.c: the product commands: plot (SVG loss curves), pull (download from a Hugging
 * Face-compatible hub), export (HF model directory or seed log) and demo (demo.c-style
 * end-to-end walkthrough, below). The work itself is done by the agent library (pk_ui.h,
 * pk_mezo.h, pk_sync.h); this file parses options and prints results. */
#include "cli.h"
#include "passphrase.h"

#include "pk_agent.h"
#include "pk_crypto.h"
#include "pk_mezo.h"
#include "pk_sync.h"
#include "pk_tokenizer.h"
#include "pk_ui.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <time.h>
#include <unistd.h>

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
    rc = cli_open_store(argc, argv, &s);
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
    p.progress = pk_progress_mode_from_args(json, quiet);
    p.max_attempts = (int)retries;
    if (pk_http_global_init() != PK_OK || pk_crypto_global_init() != PK_OK) {
        cli_error(argv[0], "cannot initialise libcurl/libsodium");
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
    rc = cli_open_store(argc, argv, &s);
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

/* ---- demo ----------------------------------------------------------------------------------- */

/* The demo dataset, compiled in by agent/CMakeLists.txt (demo/embed.cmake). */
extern const char pk_demo_train[];
extern const size_t pk_demo_train_len;
extern const char pk_demo_heldout[];
extern const size_t pk_demo_heldout_len;

#define DEMO_PASSPHRASE "pocketllm-demo"
#define DEMO_PROMPT     "Once upon a time, Pip"
#define DEMO_GEN_SEED   42u
#define DEMO_GEN_TOKENS 48

static const char demo_help[] =
    "usage: pocketllm demo [--model DIR] [--steps N] [--json] [--quiet] [--federated]\n"
    "                      [--keep] [--lr X] [--batch N] [--threads N]\n"
    "\n"
    "The end-to-end walkthrough, in a fresh temporary home: create an encrypted store, import\n"
    "the built-in personal dataset (notes about Pip the dog; a held-out part is kept aside),\n"
    "measure the held-out loss and a generated sample, fine-tune with MeZO (forward passes\n"
    "only), measure again, and compare the seed log with the weights it replaces.\n"
    "\n"
    "  --model DIR  base model (default: $POCKETLLM_MODEL, else stories260k from the shared\n"
    "               test data; else a small RANDOM model so the pipeline still runs)\n"
    "  --steps N    MeZO steps (default 800: under a minute on 2 cores with stories260k)\n"
    "  --lr X       learning rate (default 1e-4), --batch N examples per step (default 16)\n"
    "  --federated  also run one federated round: a local coordinator\n"
    "               (pocketllm-server-mock) and two simulated devices\n"
    "  --keep       keep the temporary home (and loss.svg, demo.seedlog) and print its path\n"
    "  --json       progress as JSON lines; the last line is one JSON object with\n"
    "               loss_before, loss_after, seed_log_bytes, weight_bytes, and federated\n"
    "               (true if the round closed and both devices reached one model; null\n"
    "               without --federated), federated_hash, federated_bytes_up/down\n"
    "\n"
    "examples:\n"
    "  pocketllm demo\n"
    "  pocketllm demo --steps 100 --json | tail -n 1\n";

typedef struct demo_opts {
    const char *model;
    int64_t steps;
    float lr;
    int batch;
    int json, quiet, federated, keep;
} demo_opts;

typedef struct demo_fed {    /* --federated results (demo_federated, at the bottom) */
    int64_t round;           /* the round both devices uploaded to */
    char hash[65];           /* the global model both devices ended with ("" if they differ) */
    char device_hash[2][65]; /* each device's final model */
    uint64_t wire_up[2];     /* bytes sent per device, all its calls, HTTP headers included */
    uint64_t wire_down[2];   /* bytes received per device */
    uint64_t upload_body[2]; /* the upload request body per device */
    int64_t pairs[2];        /* (seed, sum of g) pairs each device uploaded */
    int bodies;              /* request bodies the coordinator received */
    long long body_bytes;    /* their total size */
    double loss;             /* held-out loss of the global model (NAN: not measured) */
} demo_fed;

typedef struct demo_state {
    demo_opts o;
    char home[256];
    char model_dir[1024];
    int random_model;
    pk_store *s;
    pk_progress *prog;
    double *losses; /* per-step train loss, for the sparkline */
    int64_t n_losses;
    int64_t run_id;
    double loss_before, loss_after;
    size_t seedlog_bytes, weight_bytes;
    int64_t sealed_bytes, n_train, n_heldout;
    char base_hash[65], final_hash[65];
    char *sample_before, *sample_after;
    demo_fed fed;
} demo_state;

/* Human text goes to stdout unless --quiet. */
static void say(const demo_state *d, const char *fmt, ...) PK_PRINTF(2, 3);
static void say(const demo_state *d, const char *fmt, ...)
{
    if (d->o.quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
}

static int demo_parse(int argc, char **argv, demo_opts *o)
{
    static const char *const vals[] = {"--model", "--steps", "--lr", "--batch", "--threads", NULL};
    static const char *const flags[] = {"--json", "--quiet", "--federated", "--keep", NULL};
    if (cli_check(argc, argv, vals, flags))
        return CLI_USAGE;
    memset(o, 0, sizeof *o);
    o->model = cli_opt(argc, argv, "--model");
    o->steps = 800;
    o->lr = 1e-4f; /* 2e-4 overshoots after ~400 of the 800 steps */
    o->batch = 16;
    long long v = 0;
    double x = 0;
    int r = cli_opt_long(argc, argv, "--steps", &v);
    if (r < 0 || (r > 0 && (v < 1 || v > 1000000))) {
        cli_error(argv[0], "--steps must be 1..1000000");
        return CLI_USAGE;
    }
    if (r > 0)
        o->steps = v;
    r = cli_opt_long(argc, argv, "--batch", &v);
    if (r < 0 || (r > 0 && (v < 1 || v > 1024))) {
        cli_error(argv[0], "--batch must be 1..1024");
        return CLI_USAGE;
    }
    if (r > 0)
        o->batch = (int)v;
    r = cli_opt_double(argc, argv, "--lr", &x);
    if (r < 0 || (r > 0 && !(x > 0.0 && x < 1.0))) {
        cli_error(argv[0], "--lr must be in (0, 1)");
        return CLI_USAGE;
    }
    if (r > 0)
        o->lr = (float)x;
    r = cli_opt_long(argc, argv, "--threads", &v);
    if (r < 0 || (r > 0 && (v < 1 || v > 1024))) {
        cli_error(argv[0], "--threads must be 1..1024");
        return CLI_USAGE;
    }
    if (r > 0)
        pk_threads_set((int)v);
    o->json = cli_flag(argc, argv, "--json");
    o->quiet = cli_flag(argc, argv, "--quiet");
    o->federated = cli_flag(argc, argv, "--federated");
    o->keep = cli_flag(argc, argv, "--keep");
    return CLI_OK;
}

static int is_model_dir(const char *dir)
{
    char p[1100];
    snprintf(p, sizeof p, "%s/config.json", dir);
    return access(p, R_OK) == 0;
}

/* --model, $POCKETLLM_MODEL, PK_SHARED_DIR's stories260k, ../shared relative to cwd. */
static int demo_find_model(demo_state *d)
{
    const char *cands[4] = {d->o.model, getenv("POCKETLLM_MODEL"),
                            PK_SHARED_DIR "/testdata/models/stories260k",
                            "../shared/testdata/models/stories260k"};
    for (int i = 0; i < 4; i++) {
        if (!cands[i] || !*cands[i])
            continue;
        if (!is_model_dir(cands[i])) {
            if (i < 2) {
                cli_error("demo", "%s is not a model directory (no config.json)%s", cands[i],
                          i == 1 ? " (from POCKETLLM_MODEL)" : "");
                return CLI_ERR;
            }
            continue;
        }
        if (!realpath(cands[i], d->model_dir)) {
            cli_error("demo", "cannot resolve %s: %s", cands[i], strerror(errno));
            return CLI_ERR;
        }
        return CLI_OK;
    }
    d->random_model = 1;
    return CLI_OK;
}

/* Removes a directory tree (the demo home); best effort. */
static void remove_tree(const char *path)
{
    struct stat sb;
    if (lstat(path, &sb) != 0)
        return;
    if (S_ISDIR(sb.st_mode)) {
        DIR *dir = opendir(path);
        struct dirent *e;
        while (dir && (e = readdir(dir)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            char sub[1200];
            if (snprintf(sub, sizeof sub, "%s/%s", path, e->d_name) < (int)sizeof sub)
                remove_tree(sub);
        }
        if (dir)
            closedir(dir);
        rmdir(path);
    } else {
        unlink(path);
    }
}

/* Adds each non-empty line of text as one example of dataset `name`. */
static pk_status demo_import(demo_state *d, const char *name, const char *text, size_t len,
                             int64_t *count)
{
    pk_progress *p = pk_progress_new(
        name, 0, d->o.quiet ? PK_PROGRESS_QUIET : pk_progress_mode_from_args(d->o.json, 0));
    pk_status st = PK_OK;
    *count = 0;
    char line[1024];
    for (size_t i = 0; i < len && st == PK_OK;) {
        size_t j = i;
        while (j < len && text[j] != '\n')
            j++;
        size_t n = j - i < sizeof line - 1 ? j - i : sizeof line - 1;
        memcpy(line, text + i, n);
        line[n] = '\0';
        i = j + 1;
        if (n == 0)
            continue;
        pk_example ex;
        memset(&ex, 0, sizeof ex);
        ex.text = line;
        st = pk_store_example_add(d->s, name, &ex, NULL);
        if (st == PK_OK)
            pk_progress_update(p, ++*count, (double)NAN);
    }
    sodium_memzero(line, sizeof line);
    pk_progress_finish(p);
    return st;
}

/* A sample from prompt with a fixed sampler seed: the same call before and after training. */
static pk_status demo_generate(pk_model *m, const pk_tokenizer *tok, char **out)
{
    int32_t *ids = NULL, *all = NULL;
    size_t n = 0;
    float *logits = NULL;
    pk_gen *g = NULL;
    pk_sampler *sp = NULL;
    *out = NULL;
    pk_status st = pk_tokenizer_encode(tok, DEMO_PROMPT, strlen(DEMO_PROMPT), 1, &ids, &n);
    if (st != PK_OK || n == 0)
        goto out;
    int V = pk_model_vocab_size(m), cap = (int)n + DEMO_GEN_TOKENS;
    all = malloc((size_t)cap * sizeof *all);
    logits = malloc((size_t)V * sizeof *logits);
    if (!all || !logits) {
        st = PK_ERR_NOMEM;
        goto out;
    }
    memcpy(all, ids, n * sizeof *ids);
    pk_sampler_params sp_p = {0.8f, 40, 0.95f, DEMO_GEN_SEED};
    st = pk_gen_create(m, cap, &g);
    if (st == PK_OK)
        st = pk_sampler_create(sp_p, V, &sp);
    if (st == PK_OK)
        st = pk_gen_feed(g, ids, (int)n, NULL, logits);
    int len = (int)n;
    while (st == PK_OK && len < cap) {
        int32_t next = pk_sampler_sample(sp, logits);
        if (next == pk_tokenizer_eos(tok))
            break;
        all[len++] = next;
        if (len < cap)
            st = pk_gen_feed(g, &next, 1, NULL, logits);
    }
    size_t tlen = 0;
    if (st == PK_OK)
        st = pk_tokenizer_decode(tok, all, (size_t)len, 1, out, &tlen);
    /* one line: newlines would break the layout */
    for (char *c = *out; c && *c; c++)
        if (*c == '\n' || *c == '\r')
            *c = ' ';
out:
    free(ids);
    free(all);
    free(logits);
    pk_gen_free(g);
    pk_sampler_free(sp);
    return st;
}

/* Held-out loss and a sample for a model (base or fine-tuned). */
static pk_status demo_measure(demo_state *d, pk_model *m, const pk_train_config *cfg, double *loss,
                              char **sample, char *err, size_t errlen)
{
    pk_objective *obj = NULL;
    pk_tokenizer *tok = NULL;
    double acc = 0;
    pk_status st =
        pk_objective_from_store(d->s, "pip-heldout", m, d->model_dir, cfg, &obj, err, errlen);
    if (st == PK_OK)
        st = pk_objective_eval(obj, m, (size_t)cfg->batch, loss, &acc);
    if (st == PK_OK)
        st = pk_tokenizer_load(d->model_dir, &tok, err, errlen);
    if (st == PK_OK)
        st = demo_generate(m, tok, sample);
    if (st != PK_OK && !err[0])
        snprintf(err, errlen, "measuring the model: %s", pk_status_str(st));
    pk_objective_free(obj);
    pk_tokenizer_free(tok);
    return st;
}

static void demo_on_step(void *user, int64_t step, int64_t total, const pk_step_row *rows, int q)
{
    demo_state *d = user;
    double l = 0;
    for (int i = 0; i < q; i++)
        l += 0.5 * ((double)rows[i].loss_plus + (double)rows[i].loss_minus);
    l /= q;
    if (step < total && d->losses)
        d->losses[step] = l;
    d->n_losses = step + 1;
    pk_progress_update(d->prog, step + 1, l);
}

static pk_train_config demo_config(const demo_state *d)
{
    pk_train_config c = pk_train_config_default();
    snprintf(c.model_dir, sizeof c.model_dir, "%s", d->model_dir);
    snprintf(c.dataset, sizeof c.dataset, "pip");
    snprintf(c.eval_dataset, sizeof c.eval_dataset, "pip-heldout");
    c.objective = PK_OBJ_LM;
    c.mezo.lr = d->o.lr;
    c.mezo.eps = 1e-3f;
    c.mezo.seed = 20261121u;
    c.batch = d->o.batch;
    c.seq_len = 64;
    c.steps = d->o.steps;
    c.eval_every = d->o.steps >= 5 ? d->o.steps / 5 : 1;
    c.checkpoint_every = 0;
    return c;
}

/* GPT-2-style byte-level BPE with no merges: 256 byte tokens + <|endoftext|>, so a random model
 * can still read and write text when no real model is around. */
static int write_byte_tokenizer(const char *dir)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fputs("{\"version\":\"1.0\",\"added_tokens\":[{\"id\":256,\"content\":\"<|endoftext|>\","
          "\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,"
          "\"special\":true}],\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"ByteLevel\","
          "\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true},"
          "\"post_processor\":null,\"decoder\":{\"type\":\"ByteLevel\"},"
          "\"model\":{\"type\":\"BPE\",\"vocab\":{",
          f);
    /* the GPT-2 byte-to-unicode table: printable bytes map to themselves, others to 256+k */
    int k = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        unsigned cp = printable ? (unsigned)b : 256u + (unsigned)k++;
        char u[8];
        if (cp < 0x80)
            snprintf(u, sizeof u, "%c", (char)cp);
        else
            snprintf(u, sizeof u, "%c%c", (char)(0xC0 | (cp >> 6)), (char)(0x80 | (cp & 0x3F)));
        if (cp == '"' || cp == '\\')
            fprintf(f, "%s\"\\%s\":%d", b ? "," : "", u, b);
        else
            fprintf(f, "%s\"%s\":%d", b ? "," : "", u, b);
    }
    fputs(",\"<|endoftext|>\":256},\"merges\":[]}}\n", f);
    return fclose(f) == 0 ? 0 : -1;
}

static int demo_random_model(demo_state *d)
{
    static const char cfg[] =
        "{\"architectures\":[\"GPT2LMHeadModel\"],\"model_type\":\"gpt2\",\"vocab_size\":257,"
        "\"n_positions\":128,\"n_embd\":64,\"n_layer\":2,\"n_head\":4,\"n_inner\":256,"
        "\"activation_function\":\"gelu_new\",\"layer_norm_epsilon\":1e-05,"
        "\"bos_token_id\":256,\"eos_token_id\":256,\"tie_word_embeddings\":true}";
    char dir[1024], err[ERRLEN] = "";
    snprintf(dir, sizeof dir, "%s/random-model", d->home);
    pk_status st = pk_model_make(cfg, sizeof cfg - 1, dir, PK_DTYPE_F32, 7, err, sizeof err);
    if (st != PK_OK || write_byte_tokenizer(dir) != 0) {
        cli_error("demo", "cannot write a random model: %s", err[0] ? err : pk_status_str(st));
        return CLI_ERR;
    }
    snprintf(d->model_dir, sizeof d->model_dir, "%s", dir);
    return CLI_OK;
}

static int demo_setup(demo_state *d)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(d->home, sizeof d->home, "%s/pocketllm-demo-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(d->home)) {
        cli_error("demo", "cannot create a temporary directory in %s: %s",
                  tmp && *tmp ? tmp : "/tmp", strerror(errno));
        return CLI_ERR;
    }
    char home[400], err[ERRLEN] = "";
    snprintf(home, sizeof home, "%s/home", d->home);
    double t0 = pk_time_now();
    pk_status st = pk_store_init(home, DEMO_PASSPHRASE, strlen(DEMO_PASSPHRASE),
                                 pk_store_default_params(), err, sizeof err);
    if (st == PK_OK)
        st = pk_store_open(home, DEMO_PASSPHRASE, strlen(DEMO_PASSPHRASE), &d->s, err, sizeof err);
    if (st != PK_OK) {
        cli_error("demo", "creating the demo home: %s", err[0] ? err : pk_status_str(st));
        return CLI_ERR;
    }
    say(d,
        "[1/6] Created an encrypted agent home in %s (passphrase \"%s\", Argon2id key, "
        "%.1f s)\n",
        home, DEMO_PASSPHRASE, pk_time_now() - t0);
    return CLI_OK;
}

static int demo_load_data(demo_state *d)
{
    pk_status st = demo_import(d, "pip", pk_demo_train, pk_demo_train_len, &d->n_train);
    if (st == PK_OK)
        st = demo_import(d, "pip-heldout", pk_demo_heldout, pk_demo_heldout_len, &d->n_heldout);
    if (st != PK_OK) {
        cli_error("demo", "importing the demo dataset: %s", pk_store_errmsg(d->s));
        return CLI_ERR;
    }
    pk_dataset_info *ds = NULL;
    size_t n = 0;
    if (pk_store_dataset_list(d->s, &ds, &n) == PK_OK)
        for (size_t i = 0; i < n; i++)
            d->sealed_bytes += ds[i].sealed_bytes;
    free(ds);
    say(d,
        "[2/6] Imported %lld notes about Pip the dog for training and %lld held-out notes; "
        "each is sealed (XChaCha20-Poly1305), %lld bytes on disk\n",
        (long long)d->n_train, (long long)d->n_heldout, (long long)d->sealed_bytes);
    return CLI_OK;
}

static int demo_before(demo_state *d, const pk_train_config *cfg)
{
    pk_model *m = NULL;
    char err[ERRLEN] = "";
    pk_status st = pk_model_load(d->model_dir, pk_model_default_params(), &m, err, sizeof err);
    if (st == PK_OK)
        st = pk_weights_hash(m, d->base_hash);
    if (st == PK_OK) {
        d->weight_bytes = pk_model_weight_bytes(m);
        st = demo_measure(d, m, cfg, &d->loss_before, &d->sample_before, err, sizeof err);
    }
    pk_model_free(m);
    if (st != PK_OK) {
        cli_error("demo", "base model %s: %s", d->model_dir, err[0] ? err : pk_status_str(st));
        return CLI_ERR;
    }
    say(d, "[3/6] Before fine-tuning: held-out loss %.4f (perplexity %.2f)\n      sample: %s\n",
        d->loss_before, exp(d->loss_before), d->sample_before);
    return CLI_OK;
}

static int demo_train(demo_state *d, const pk_train_config *cfg)
{
    char err[ERRLEN] = "";
    d->losses = calloc((size_t)cfg->steps, sizeof *d->losses);
    if (!d->losses)
        return CLI_ERR;
    say(d,
        "[4/6] Fine-tuning with MeZO: %lld steps, batch %d, lr %g, eps %g, forward passes "
        "only (no gradients, no optimizer state)\n",
        (long long)cfg->steps, cfg->batch, (double)cfg->mezo.lr, (double)cfg->mezo.eps);
    d->prog =
        pk_progress_new("train", cfg->steps,
                        d->o.quiet ? PK_PROGRESS_QUIET : pk_progress_mode_from_args(d->o.json, 0));
    pk_train_hooks hooks = {d, demo_on_step, NULL, NULL};
    pk_train_result res;
    double t0 = pk_time_now();
    pk_status st = pk_train(d->s, cfg, 0, &hooks, &res, err, sizeof err);
    pk_progress_finish(d->prog);
    d->prog = NULL;
    if (st != PK_OK) {
        cli_error("demo", "training: %s", err[0] ? err : pk_status_str(st));
        return CLI_ERR;
    }
    d->run_id = res.run_id;
    memcpy(d->final_hash, res.final_hash, sizeof d->final_hash);
    if (res.interrupted) {
        say(d, "\nInterrupted at step %lld (the steps so far are logged in run %lld).\n",
            (long long)res.steps_done, (long long)res.run_id);
        return CLI_INTERRUPTED;
    }
    double dt = pk_time_now() - t0;
    say(d, "      %lld steps in %.1f s (%.1f steps/s; %.0f%% in forward passes)\n",
        (long long)res.steps_done, dt, (double)res.steps_done / (dt > 0 ? dt : 1),
        100.0 * res.forward_s / (dt > 0 ? dt : 1));
    if (!d->o.quiet && d->n_losses > 1) {
        say(d, "      train loss: ");
        pk_sparkline(stdout, d->losses, (size_t)d->n_losses, 60);
        say(d, "  %.3f -> %.3f\n", d->losses[0], d->losses[d->n_losses - 1]);
    }
    return CLI_OK;
}

static int demo_after(demo_state *d, const pk_train_config *cfg)
{
    pk_model *m = NULL;
    char err[ERRLEN] = "";
    pk_status st = pk_run_materialize(d->s, d->run_id, &m, err, sizeof err);
    if (st == PK_OK)
        st = demo_measure(d, m, cfg, &d->loss_after, &d->sample_after, err, sizeof err);
    pk_model_free(m);
    if (st != PK_OK) {
        cli_error("demo", "fine-tuned model: %s", err[0] ? err : pk_status_str(st));
        return CLI_ERR;
    }
    say(d,
        "[5/6] After fine-tuning:  held-out loss %.4f (perplexity %.2f), %s by %.4f\n"
        "      sample: %s\n",
        d->loss_after, exp(d->loss_after), d->loss_after < d->loss_before ? "lower" : "NOT lower",
        fabs(d->loss_before - d->loss_after), d->sample_after);
    return CLI_OK;
}

/* Seed log export, and a rebuild of the weights from it to show it is the whole model. */
static int demo_seedlog(demo_state *d)
{
    char path[400], err[ERRLEN] = "", hash[65] = "";
    snprintf(path, sizeof path, "%s/demo.seedlog", d->home);
    pk_status st = pk_export_seedlog(d->s, d->run_id, path, &d->seedlog_bytes, err, sizeof err);
    pk_seedlog log;
    memset(&log, 0, sizeof log);
    pk_model *m = NULL;
    if (st == PK_OK)
        st = pk_seedlog_read(path, &log, err, sizeof err);
    if (st == PK_OK)
        st = pk_model_load(d->model_dir, pk_model_default_params(), &m, err, sizeof err);
    if (st == PK_OK)
        st = pk_seedlog_replay(m, &log, err, sizeof err);
    if (st == PK_OK)
        st = pk_weights_hash(m, hash);
    pk_model_free(m);
    pk_seedlog_clear(&log);
    if (st != PK_OK) {
        cli_error("demo", "seed log: %s", err[0] ? err : pk_status_str(st));
        return CLI_ERR;
    }
    int same = !strcmp(hash, d->final_hash);
    say(d,
        "[6/6] The fine-tune as a seed log: %zu bytes, vs %zu bytes of weights (%.0fx "
        "smaller).\n      Replaying it on the base model rebuilds the weights: hash %.16s... "
        "%s\n",
        d->seedlog_bytes, d->weight_bytes,
        (double)d->weight_bytes / (double)(d->seedlog_bytes ? d->seedlog_bytes : 1), hash,
        same ? "(identical)" : "(MISMATCH)");
    if (!same) {
        cli_error("demo", "replaying the seed log gave %s, the run ended at %s", hash,
                  d->final_hash);
        return CLI_ERR;
    }
    char svg[400];
    snprintf(svg, sizeof svg, "%s/loss.svg", d->home);
    if (pk_plot_run(d->s, d->run_id, svg, err, sizeof err) != PK_OK)
        say(d, "      (no plot: %s)\n", err);
    return CLI_OK;
}

static void demo_privacy(const demo_state *d)
{
    say(d,
        "\nPrivacy summary\n"
        "  stored sealed on this device: %lld notes (%lld bytes, XChaCha20-Poly1305 with a key "
        "from your passphrase); no plaintext file was written\n"
        "  stays on this device: the text, the tokens, the weights, the losses\n"
        "  would leave it with `pocketllm sync`: per-seed sums of the projected gradients (6 "
        "bytes per seed of the coordinator's pool; %lld steps touch at most %lld seeds = %lld "
        "bytes), an example count and an Ed25519 signature; never text, tokens or weights\n",
        (long long)(d->n_train + d->n_heldout), (long long)d->sealed_bytes, (long long)d->n_losses,
        (long long)(d->n_losses < 4096 ? d->n_losses : 4096),
        (long long)(d->n_losses < 4096 ? d->n_losses : 4096) * 6);
}

static void fed_json(const demo_state *d, int federated_ok);

static void demo_json(const demo_state *d, int federated_ok)
{
    printf("{\"loss_before\":%.6f,\"loss_after\":%.6f,\"ppl_before\":%.4f,\"ppl_after\":%.4f,"
           "\"seed_log_bytes\":%zu,\"weight_bytes\":%zu,\"steps\":%lld,\"run_id\":%lld,"
           "\"model\":\"%s\",\"random_model\":%s,\"base_hash\":\"%s\",\"final_hash\":\"%s\","
           "\"train_examples\":%lld,\"heldout_examples\":%lld,\"sealed_bytes\":%lld,",
           d->loss_before, d->loss_after, exp(d->loss_before), exp(d->loss_after), d->seedlog_bytes,
           d->weight_bytes, (long long)d->n_losses, (long long)d->run_id,
           d->random_model ? "random" : "stories-or-given", d->random_model ? "true" : "false",
           d->base_hash, d->final_hash, (long long)d->n_train, (long long)d->n_heldout,
           (long long)d->sealed_bytes);
    fed_json(d, federated_ok);
    printf("}\n");
    fflush(stdout);
}

static int demo_federated(demo_state *d);

int cmd_demo(int argc, char **argv)
{
    if (cli_help(argc, argv, demo_help))
        return CLI_OK;
    demo_state d;
    memset(&d, 0, sizeof d);
    int rc = demo_parse(argc, argv, &d.o);
    if (rc != CLI_OK)
        return rc;
    if (pk_crypto_global_init() != PK_OK || pk_http_global_init() != PK_OK) {
        cli_error(argv[0], "cannot initialise libsodium/libcurl");
        return CLI_ERR;
    }
    pk_interrupt_install();
    double t0 = pk_time_now();
    say(&d, "PocketLLM demo: private on-device fine-tuning with forward passes only (MeZO)\n\n");
    rc = demo_find_model(&d);
    if (rc == CLI_OK)
        rc = demo_setup(&d);
    if (rc == CLI_OK && d.random_model) {
        say(&d,
            "      No base model found (--model DIR, POCKETLLM_MODEL, or stories260k under "
            "%s/testdata/models).\n      Using a small RANDOM model instead: the pipeline "
            "runs, but its samples are gibberish.\n      For the real demo: pocketllm demo "
            "--model DIR (e.g. after pocketllm pull Xenova/stories260K).\n",
            PK_SHARED_DIR);
        rc = demo_random_model(&d);
    }
    if (rc == CLI_OK)
        say(&d, "      base model: %s%s\n", d.model_dir, d.random_model ? " (random weights)" : "");
    pk_train_config cfg = demo_config(&d);
    if (rc == CLI_OK)
        rc = demo_load_data(&d);
    if (rc == CLI_OK)
        rc = demo_before(&d, &cfg);
    if (rc == CLI_OK)
        rc = demo_train(&d, &cfg);
    if (rc == CLI_OK)
        rc = demo_after(&d, &cfg);
    if (rc == CLI_OK)
        rc = demo_seedlog(&d);
    int fed = -1;
    if (rc == CLI_OK) {
        demo_privacy(&d);
        if (d.o.federated) {
            int frc = demo_federated(&d);
            fed = frc == CLI_OK;
            if (!fed)
                rc = frc;
        }
        say(&d, "\nDone in %.0f s. Held-out loss %.4f -> %.4f.\n", pk_time_now() - t0,
            d.loss_before, d.loss_after);
    }
    pk_store_close(d.s);
    if (d.home[0]) {
        if (d.o.keep || rc != CLI_OK) {
            if (d.o.keep)
                say(&d,
                    "Kept the demo files in %s (home/, loss.svg, demo.seedlog). Try:\n"
                    "  POCKETLLM_PASSPHRASE=%s pocketllm runs --home %s/home\n",
                    d.home, DEMO_PASSPHRASE, d.home);
            if (!d.o.keep)
                remove_tree(d.home);
        } else {
            remove_tree(d.home);
        }
    }
    if ((rc == CLI_OK || fed == 0) && d.o.json)
        demo_json(&d, fed); /* a failed federated part still reports the local results */
    free(d.losses);
    free(d.sample_before);
    free(d.sample_after);
    return rc;
}

/* ---- demo --federated ------------------------------------------------------------------------
 * One federated round on this machine (issue 6): pocketllm-server-mock on 127.0.0.1 with a task
 * whose base model is the demo's, and two simulated devices, each an agent home of its own with
 * half of the Pip notes, running pk_sync_round in this process one after the other. The round
 * closes at quorum 2: device A uploads and leaves it open, device B uploads (the round closes)
 * and replays the global log, then A catches up. Both must end with the same weights. The
 * coordinator is exec'd right after fork: libgomp is not fork-safe, so no model code ever runs
 * in a child. Its files live in HOME/federated and go away with the demo home unless --keep. */

#define FED_TASK        "pocketllm-demo"
#define FED_POOL_SIZE   4096
#define FED_LOCAL_STEPS 20   /* MeZO steps per device (fewer if --steps is smaller) */
#define FED_DEADLINE_S  600  /* long enough that the round closes at quorum, never by time */
#define FED_WAIT_S      60.0 /* device B waits this long for the round to close */
#define FED_START_S     30.0 /* the coordinator must print its address within this */
#define FED_SERVER      "pocketllm-server-mock"
#define FED_MIN_LINE    16 /* note lines shorter than this are not searched for in bodies */

typedef struct fed_coord {
    pid_t pid;
    int out_fd; /* read end of its stdout, kept open so a later write never hits a closed pipe */
    int port;
    char bin[1100], dir[400], url[64];
} fed_coord;

typedef struct fed_device {
    char name;          /* 'A' or 'B' */
    char home[450];     /* its agent home */
    pk_store *s;        /* open for the whole federated part */
    int64_t notes;      /* training notes it holds */
    pk_sync_report up;  /* the call that uploaded its update */
    pk_sync_report end; /* its last call: model_hash is the model it ends with */
    uint64_t wire_up;   /* bytes sent over all its calls, HTTP headers included */
    uint64_t wire_down; /* bytes received over all its calls */
} fed_device;

/* The next non-empty line of text[*pos..len) into line (cut at cap - 1 bytes); 0 at the end. */
static size_t fed_next_line(const char *text, size_t len, size_t *pos, char *line, size_t cap)
{
    while (*pos < len) {
        size_t i = *pos, j = i;
        while (j < len && text[j] != '\n')
            j++;
        *pos = j + 1;
        size_t n = j - i < cap - 1 ? j - i : cap - 1;
        if (n == 0)
            continue;
        memcpy(line, text + i, n);
        line[n] = '\0';
        return n;
    }
    return 0;
}

/* The coordinator binary: installed next to pocketllm (same bin dir), or in the build tree
 * (BUILD/agent/pocketllm -> BUILD/server-mock/pocketllm-server-mock). */
static int fed_find_server(char *out, size_t n)
{
    char exe[1024];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0) {
        cli_error("demo", "cannot locate the pocketllm binary (/proc/self/exe): %s",
                  strerror(errno));
        return CLI_ERR;
    }
    exe[len] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = '\0';
    static const char *const rel[] = {"/" FED_SERVER, "/../server-mock/" FED_SERVER};
    for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
        char cand[1100];
        snprintf(cand, sizeof cand, "%s%s", exe, rel[i]);
        if (access(cand, X_OK) == 0 && realpath(cand, out) && strlen(out) < n)
            return CLI_OK;
    }
    cli_error("demo",
              "--federated needs the coordinator %s, found neither %s/%s nor "
              "%s/../server-mock/%s; build it (cmake --build BUILD --target %s) or install it "
              "next to pocketllm",
              FED_SERVER, exe, FED_SERVER, exe, FED_SERVER, FED_SERVER);
    return CLI_ERR;
}

/* The task: the demo's base model, a fresh random seed pool, the demo's lr and eps. */
static int fed_write_task(const demo_state *d, const fed_coord *c, int64_t steps)
{
    pk_train_config cfg = demo_config(d);
    uint8_t pool_seed[32];
    char hex[65], path[500];
    randombytes_buf(pool_seed, sizeof pool_seed);
    sodium_bin2hex(hex, sizeof hex, pool_seed, sizeof pool_seed);
    snprintf(path, sizeof path, "%s/task.json", c->dir);
    FILE *f = fopen(path, "w");
    int ok = f != NULL;
    if (f) {
        ok = fprintf(f,
                     "{\"task_id\":\"%s\",\"base_model_hash\":\"%s\",\"pool_size\":%d,"
                     "\"pool_seed\":\"%s\",\"z_kind\":\"gaussian\",\"lr\":%.9g,\"eps\":%.9g,"
                     "\"local_steps\":%lld,\"batch_size\":%d,\"quorum\":2,"
                     "\"deadline_seconds\":%d}\n",
                     FED_TASK, d->base_hash, FED_POOL_SIZE, hex, (double)cfg.mezo.lr,
                     (double)cfg.mezo.eps, (long long)steps, cfg.batch, FED_DEADLINE_S) > 0;
        ok = fclose(f) == 0 && ok;
    }
    if (!ok)
        cli_error("demo", "cannot write the coordinator's task %s: %s", path, strerror(errno));
    return ok ? CLI_OK : CLI_ERR;
}

/* Reads one line from fd within timeout_s: 1 a line, 0 end of file, -1 timeout or error. */
static int fed_read_line(int fd, char *buf, size_t n, double timeout_s)
{
    size_t len = 0;
    double t_end = pk_time_now() + timeout_s;
    buf[0] = '\0';
    while (len + 1 < n) {
        int ms = (int)((t_end - pk_time_now()) * 1000.0);
        if (ms <= 0 || pk_interrupted())
            return -1;
        struct pollfd pfd = {fd, POLLIN, 0};
        int r = poll(&pfd, 1, ms);
        if (r <= 0)
            continue; /* EINTR or not yet: the deadline check above decides */
        ssize_t k = read(fd, buf + len, 1);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        if (buf[len] == '\n') {
            buf[len] = '\0';
            return 1;
        }
        buf[++len] = '\0';
    }
    return 0;
}

/* Signals the coordinator's process group (itself and anything it started), else itself. */
static void fed_coord_signal(const fed_coord *c, int sig)
{
    if (kill(-c->pid, sig) != 0)
        kill(c->pid, sig);
}

/* Ends the coordinator: SIGTERM, then SIGKILL if it has not exited after 10 s. */
static void fed_coord_stop(fed_coord *c)
{
    if (c->pid > 0) {
        fed_coord_signal(c, SIGTERM);
        pid_t r = 0;
        for (int i = 0; i < 1000 && r == 0; i++) {
            r = waitpid(c->pid, NULL, WNOHANG);
            if (r < 0 && errno == EINTR)
                r = 0;
            if (r == 0) {
                struct timespec ts = {0, 10 * 1000 * 1000};
                nanosleep(&ts, NULL);
            }
        }
        if (r == 0) {
            fed_coord_signal(c, SIGKILL);
            while (waitpid(c->pid, NULL, 0) < 0 && errno == EINTR)
                ;
        }
        c->pid = 0;
    }
    if (c->out_fd >= 0)
        close(c->out_fd);
    c->out_fd = -1;
}

/* The last line of the coordinator's stderr log, for error messages. */
static void fed_log_tail(const fed_coord *c, char *out, size_t n)
{
    char path[500], line[512];
    snprintf(path, sizeof path, "%s/server.log", c->dir);
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f))
        if (line[0] != '\n')
            snprintf(out, n, "%s", line);
    if (f)
        fclose(f);
    out[strcspn(out, "\n")] = '\0';
}

/* fork + exec right away (the child calls only async-signal-safe functions). The coordinator
 * gets its own process group, so a Ctrl-C in the terminal reaches the demo only and the demo
 * stops it; on Linux it also dies with the demo (PR_SET_PDEATHSIG) if the demo is killed. */
static int fed_coord_spawn(fed_coord *c)
{
    char db[500], task[500], cap[500], log[500];
    snprintf(db, sizeof db, "%s/coord.db", c->dir);
    snprintf(task, sizeof task, "%s/task.json", c->dir);
    snprintf(cap, sizeof cap, "%s/capture", c->dir);
    snprintf(log, sizeof log, "%s/server.log", c->dir);
    const char *argv[] = {c->bin,      "--db",   db,  "--task",    task, "--host",
                          "127.0.0.1", "--port", "0", "--capture", cap,  NULL};
    int fds[2] = {-1, -1};
    int logfd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (mkdir(cap, 0700) != 0 || logfd < 0 || pipe(fds) != 0) {
        cli_error("demo", "cannot prepare the coordinator's files in %s: %s", c->dir,
                  strerror(errno));
        if (logfd >= 0)
            close(logfd);
        return CLI_ERR;
    }
    pid_t parent = getpid();
    fflush(stdout);
    c->pid = fork();
    if (c->pid == 0) {
        setpgid(0, 0);
#ifdef __linux__
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(127);
#endif
        if (dup2(fds[1], 1) < 0 || dup2(logfd, 2) < 0)
            _exit(127);
        close(fds[0]);
        close(fds[1]);
        execv(c->bin, (char *const *)(uintptr_t)argv);
        _exit(127);
    }
    (void)parent;
    int fork_errno = errno;
    if (c->pid > 0)
        setpgid(c->pid, c->pid); /* also here, so fed_coord_stop can signal the group at once */
    close(fds[1]);
    close(logfd);
    c->out_fd = fds[0];
    if (c->pid < 0) {
        c->pid = 0;
        cli_error("demo", "cannot start the coordinator: fork: %s", strerror(fork_errno));
        return CLI_ERR;
    }
    return CLI_OK;
}

/* Starts the coordinator and reads its first stdout line "listening on HOST:PORT". */
static int fed_coord_start(fed_coord *c)
{
    int rc = fed_coord_spawn(c);
    if (rc != CLI_OK)
        return rc;
    char line[256], tail[512], why[320];
    int got = fed_read_line(c->out_fd, line, sizeof line, FED_START_S);
    const char *colon = got == 1 && !strncmp(line, "listening on ", 13) ? strrchr(line, ':') : NULL;
    c->port = colon ? atoi(colon + 1) : 0;
    if (c->port > 0 && c->port < 65536) {
        snprintf(c->url, sizeof c->url, "http://127.0.0.1:%d", c->port);
        return CLI_OK;
    }
    fed_coord_stop(c); /* reaps it too, so the log below is complete */
    fed_log_tail(c, tail, sizeof tail);
    if (pk_interrupted())
        return CLI_INTERRUPTED;
    if (got < 0)
        snprintf(why, sizeof why, "no address within %.0f s", FED_START_S);
    else if (got > 0)
        snprintf(why, sizeof why, "its first line was \"%.200s\"", line);
    else
        snprintf(why, sizeof why, "it exited");
    cli_error("demo", "the coordinator %s did not start (%s)%s%s", c->bin, why, tail[0] ? ": " : "",
              tail);
    return CLI_ERR;
}

/* A device: a new encrypted home (the demo passphrase) with half of the training notes,
 * line by line as demo_import does: the first half for A, the second for B. */
static int fed_device_init(fed_device *v, const char *dir, int half)
{
    char err[ERRLEN] = "", line[1024];
    v->name = (char)('A' + half);
    snprintf(v->home, sizeof v->home, "%s/device-%c", dir, 'a' + half);
    pk_status st = pk_store_init(v->home, DEMO_PASSPHRASE, strlen(DEMO_PASSPHRASE),
                                 pk_store_default_params(), err, sizeof err);
    if (st == PK_OK)
        st = pk_store_open(v->home, DEMO_PASSPHRASE, strlen(DEMO_PASSPHRASE), &v->s, err,
                           sizeof err);
    size_t pos = 0, total = 0, i = 0;
    while (fed_next_line(pk_demo_train, pk_demo_train_len, &pos, line, sizeof line))
        total++;
    pos = 0;
    while (st == PK_OK &&
           fed_next_line(pk_demo_train, pk_demo_train_len, &pos, line, sizeof line)) {
        if ((i++ < total / 2) != (half == 0))
            continue;
        pk_example ex;
        memset(&ex, 0, sizeof ex);
        ex.text = line;
        st = pk_store_example_add(v->s, "pip", &ex, NULL);
        if (st == PK_OK)
            v->notes++;
        else
            snprintf(err, sizeof err, "%s", pk_store_errmsg(v->s));
    }
    sodium_memzero(line, sizeof line);
    if (st != PK_OK) {
        cli_error("demo", "federated device %c (%s): %s", v->name, v->home,
                  err[0] ? err : pk_status_str(st));
        return CLI_ERR;
    }
    return CLI_OK;
}

/* Held-out loss of m on the demo home's pip-heldout notes (the demo's own measure). */
static pk_status fed_eval(demo_state *d, pk_model *m, double *loss, char *err, size_t errlen)
{
    pk_train_config cfg = demo_config(d);
    pk_objective *obj = NULL;
    double acc = 0;
    pk_status st =
        pk_objective_from_store(d->s, "pip-heldout", m, d->model_dir, &cfg, &obj, err, errlen);
    if (st == PK_OK)
        st = pk_objective_eval(obj, m, (size_t)cfg.batch, loss, &acc);
    pk_objective_free(obj);
    return st;
}

/* One pk_sync_round of device v: upload (local steps on its notes) or catch up only; waits up
 * to wait_s for the round to close. The model is loaded for the call and freed after it, so at
 * most one extra copy of the model is in memory. With loss != NULL the resulting (global)
 * model's held-out loss is measured. */
static int fed_device_round(demo_state *d, const fed_coord *c, fed_device *v, int upload,
                            double wait_s, pk_sync_report *rep, double *loss)
{
    pk_train_config cfg = demo_config(d); /* the demo's batch and sequence length */
    pk_sync_mezo *mz = NULL;
    char err[ERRLEN] = "";
    pk_sync_params p = pk_sync_default_params();
    p.server = c->url;
    p.task_id = FED_TASK;
    p.upload = upload;
    p.wait_s = wait_s;
    pk_status st = pk_sync_mezo_open(v->s, d->model_dir, upload ? "pip" : NULL, NULL, cfg.batch,
                                     cfg.seq_len, &mz, err, sizeof err);
    if (st == PK_OK) {
        pk_sync_model_ops ops = pk_sync_mezo_ops(mz);
        st = pk_sync_round(v->s, &p, &ops, rep, err, sizeof err);
    }
    if (st == PK_OK && loss)
        st = fed_eval(d, pk_sync_mezo_model(mz), loss, err, sizeof err);
    pk_sync_mezo_free(mz);
    if (st != PK_OK) {
        cli_error("demo", "federated round, device %c: %s", v->name,
                  err[0] ? err : pk_status_str(st));
        return CLI_ERR;
    }
    v->end = *rep;
    v->wire_up += rep->http.wire_up;
    v->wire_down += rep->http.wire_down;
    return pk_interrupted() ? CLI_INTERRUPTED : CLI_OK;
}

/* A uploads (the round stays open: quorum 2), B uploads and waits (the round closes, B replays
 * the global log), A catches up (replays it too). */
static int fed_round(demo_state *d, const fed_coord *c, fed_device *v, int64_t steps)
{
    pk_sync_report cu;
    int rc = fed_device_round(d, c, &v[0], 1, 0.0, &v[0].up, NULL);
    if (rc != CLI_OK)
        return rc;
    say(d,
        "      device A (%s, %lld notes: the first half): %lld local MeZO steps, uploaded %lld "
        "(seed, sum of g) pairs to round %lld, %s\n",
        v[0].up.device_id, (long long)v[0].notes, (long long)v[0].up.steps,
        (long long)v[0].up.pairs, (long long)v[0].up.round,
        v[0].up.round_closed ? "which closed" : "which stays open (quorum 2)");
    rc = fed_device_round(d, c, &v[1], 1, FED_WAIT_S, &v[1].up, NULL);
    if (rc != CLI_OK)
        return rc;
    say(d,
        "      device B (%s, %lld notes: the second half): %lld local MeZO steps, uploaded "
        "%lld pairs to round %lld, %s\n",
        v[1].up.device_id, (long long)v[1].notes, (long long)v[1].up.steps,
        (long long)v[1].up.pairs, (long long)v[1].up.round,
        v[1].up.round_closed ? "which closed; replayed the global log" : "which did NOT close");
    if (!v[0].up.uploaded || !v[1].up.uploaded || v[0].up.round != v[1].up.round ||
        !v[1].up.round_closed || v[0].up.steps != steps || v[1].up.steps != steps) {
        cli_error("demo",
                  "the federated round did not complete: device A uploaded to round %lld, "
                  "device B to round %lld (%s)",
                  (long long)v[0].up.round, (long long)v[1].up.round,
                  v[1].up.round_closed ? "closed" : "still open");
        return CLI_ERR;
    }
    rc = fed_device_round(d, c, &v[0], 0, 0.0, &cu, &d->fed.loss);
    if (rc != CLI_OK)
        return rc;
    say(d, "      device A: caught up with the global log (version %lld) and replayed it\n",
        (long long)cu.log_version);
    return CLI_OK;
}

/* Counts the request bodies the coordinator captured and checks that none holds the text of a
 * note: what left the devices is seeds, scalars, counts, ids and signatures. -1: a leak. */
static int fed_check_capture(const fed_coord *c, int *bodies, long long *bytes)
{
    char dir[500], path[800], line[1024];
    const size_t cap = (size_t)1 << 17; /* request bodies are capped at 64 KiB (PROTOCOL 7) */
    char *body = malloc(cap);
    int leaks = 0;
    snprintf(dir, sizeof dir, "%s/capture", c->dir);
    *bodies = 0;
    *bytes = 0;
    DIR *dp = body ? opendir(dir) : NULL;
    struct dirent *e;
    while (dp && (e = readdir(dp)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        size_t n = f ? fread(body, 1, cap - 1, f) : 0;
        if (f)
            fclose(f);
        body[n] = '\0';
        ++*bodies;
        *bytes += (long long)n;
        size_t pos = 0, len;
        while ((len = fed_next_line(pk_demo_train, pk_demo_train_len, &pos, line, sizeof line)))
            leaks += len >= FED_MIN_LINE && strstr(body, line) != NULL;
    }
    if (dp)
        closedir(dp);
    free(body);
    sodium_memzero(line, sizeof line);
    return leaks || !dp ? -1 : 0;
}

/* Prints the outcome and records it for --json; CLI_ERR if the devices disagree or a request
 * body carried note text. */
static int fed_summary(demo_state *d, const fed_coord *c, const fed_device *v)
{
    demo_fed *f = &d->fed;
    f->round = v[1].up.round;
    for (int i = 0; i < 2; i++) {
        snprintf(f->device_hash[i], sizeof f->device_hash[i], "%s", v[i].end.model_hash);
        f->wire_up[i] = v[i].wire_up;
        f->wire_down[i] = v[i].wire_down;
        f->upload_body[i] = v[i].up.upload_body_bytes;
        f->pairs[i] = v[i].up.pairs;
    }
    int same = strlen(v[0].end.model_hash) == 64 &&
               !strcmp(v[0].end.model_hash, v[1].end.model_hash) &&
               !strcmp(v[0].end.log_head, v[1].end.log_head);
    if (same)
        snprintf(f->hash, sizeof f->hash, "%s", v[0].end.model_hash);
    int clean = fed_check_capture(c, &f->bodies, &f->body_bytes) == 0;
    say(d, "      global model: hash %.16s... on both devices %s; the base model was %.16s...\n",
        v[1].end.model_hash, same ? "(identical)" : "(MISMATCH)", d->base_hash);
    if (isfinite(f->loss))
        say(d, "      held-out loss: global model %.4f, base model %.4f\n", f->loss,
            d->loss_before);
    say(d,
        "      traffic: device A %llu bytes up, %llu down; device B %llu up, %llu down (HTTP "
        "headers included)\n",
        (unsigned long long)f->wire_up[0], (unsigned long long)f->wire_down[0],
        (unsigned long long)f->wire_up[1], (unsigned long long)f->wire_down[1]);
    say(d,
        "      what left each device: %lld and %lld (seed index, sum of g) pairs, an example "
        "count, its device id and an Ed25519 signature (upload bodies %llu and %llu bytes);\n"
        "      the coordinator received %d request bodies (%lld bytes) and %s\n",
        (long long)f->pairs[0], (long long)f->pairs[1], (unsigned long long)f->upload_body[0],
        (unsigned long long)f->upload_body[1], f->bodies, f->body_bytes,
        clean ? "none holds the text of a note" : "SOME HOLD NOTE TEXT");
    if (!same) {
        cli_error("demo", "the devices ended with different models: A %s (log %s), B %s (log %s)",
                  v[0].end.model_hash, v[0].end.log_head, v[1].end.model_hash, v[1].end.log_head);
        return CLI_ERR;
    }
    if (!clean) {
        cli_error("demo", "a request body sent to the coordinator contains note text (see %s)",
                  c->dir);
        return CLI_ERR;
    }
    return CLI_OK;
}

static int demo_federated(demo_state *d)
{
    fed_coord c;
    fed_device v[2];
    memset(&c, 0, sizeof c);
    memset(v, 0, sizeof v);
    c.out_fd = -1;
    d->fed.loss = (double)NAN;
    int64_t steps = d->o.steps < FED_LOCAL_STEPS ? d->o.steps : FED_LOCAL_STEPS;
    say(d, "\nFederated round: a local coordinator and two simulated devices\n");
    snprintf(c.dir, sizeof c.dir, "%s/federated", d->home);
    int rc = fed_find_server(c.bin, sizeof c.bin);
    if (rc == CLI_OK && mkdir(c.dir, 0700) != 0) {
        cli_error("demo", "cannot create %s: %s", c.dir, strerror(errno));
        rc = CLI_ERR;
    }
    double t0 = pk_time_now();
    for (int i = 0; i < 2 && rc == CLI_OK; i++)
        rc = fed_device_init(&v[i], c.dir, i);
    if (rc == CLI_OK)
        say(d,
            "      two new encrypted device homes with %lld and %lld of the training notes "
            "(%.1f s)\n",
            (long long)v[0].notes, (long long)v[1].notes, pk_time_now() - t0);
    if (rc == CLI_OK)
        rc = fed_write_task(d, &c, steps);
    if (rc == CLI_OK)
        rc = fed_coord_start(&c);
    if (rc == CLI_OK)
        say(d,
            "      coordinator: %s on %s (task %s: a pool of %d seeds, %lld local steps, "
            "quorum 2)\n",
            FED_SERVER, c.url, FED_TASK, FED_POOL_SIZE, (long long)steps);
    if (rc == CLI_OK)
        rc = fed_round(d, &c, v, steps);
    fed_coord_stop(&c); /* on every path; it has written all it received */
    if (rc == CLI_INTERRUPTED)
        say(d, "      interrupted; the coordinator was stopped\n");
    for (int i = 0; i < 2; i++)
        pk_store_close(v[i].s);
    if (rc == CLI_OK)
        rc = fed_summary(d, &c, v);
    if (d->o.keep)
        say(d,
            "      coordinator files (task.json, coord.db, server.log, capture/) and the "
            "device homes: %s\n",
            c.dir);
    return rc;
}

/* The federated part of the --json summary: null without --federated. */
static void fed_json(const demo_state *d, int federated_ok)
{
    const demo_fed *f = &d->fed;
    printf("\"federated\":%s", federated_ok < 0 ? "null" : federated_ok ? "true" : "false");
    if (federated_ok < 0)
        return;
    printf(",\"federated_round\":%lld,\"federated_hash\":\"%s\","
           "\"federated_device_hashes\":[\"%s\",\"%s\"],\"federated_bytes_up\":[%llu,%llu],"
           "\"federated_bytes_down\":[%llu,%llu],\"federated_upload_body_bytes\":[%llu,%llu],"
           "\"federated_pairs\":[%lld,%lld],\"federated_request_bodies\":%d,",
           (long long)f->round, f->hash, f->device_hash[0], f->device_hash[1],
           (unsigned long long)f->wire_up[0], (unsigned long long)f->wire_up[1],
           (unsigned long long)f->wire_down[0], (unsigned long long)f->wire_down[1],
           (unsigned long long)f->upload_body[0], (unsigned long long)f->upload_body[1],
           (long long)f->pairs[0], (long long)f->pairs[1], f->bodies);
    if (isfinite(f->loss))
        printf("\"federated_loss\":%.6f", f->loss);
    else
        printf("\"federated_loss\":null");
}
