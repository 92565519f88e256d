/* cmd_demo.c: `pocketllm demo`, the end-to-end walkthrough (the README's first command): a
 * fresh encrypted home, the built-in Pip notes imported sealed, held-out loss and a sample
 * before and after a MeZO fine-tune, the seed log against the weights, the privacy summary;
 * --federated adds one round with a local coordinator (demo_fed.c). The base model is the
 * stories260k the repository ships (models/), unless --model or POCKETLLM_MODEL names another.
 * The home, import, training, eval, samples and seed-log export go through libpocketllm
 * (pocketllm.h); the base-weights hash, the seed-log replay, the plot and the federated round
 * call the modules (the API does not cover them; docs/DESIGN.md 14). */
#include "api_cli.h"
#include "cli.h"
#include "demo.h"
#include "passphrase.h"
#include "pocketllm.h"

#include "pk_crypto.h"
#include "pk_net.h"
#include "pk_train.h"
#include "progress.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ERRLEN 1024

/* The shipped default model (models/stories260k): where `cmake --install` puts it relative to
 * the binary, and where the build found it in the source tree (models/CMakeLists.txt). */
#define DEMO_MODEL_NAME "stories260k"

/* ---- options -------------------------------------------------------------------------------- */

#define T demo_opts
static const cli_option demo_table[] = {
    {"--model", CLI_STR, CLI_AT(T, model), 0, 0, NULL, "DIR",
     "base model (else $POCKETLLM_MODEL, else the shipped stories260k)"},
    {"--steps", CLI_INT, CLI_AT(T, steps), 1, 1000000, NULL, "N",
     "MeZO steps (the default takes under a minute on 2 cores)"},
    {"--lr", CLI_FLOAT, CLI_AT(T, lr), 1e-9, 1, NULL, "X", "learning rate"},
    {"--batch", CLI_INT, CLI_AT(T, batch), 1, 1024, NULL, "N", "examples per step"},
    {"--federated", CLI_FLAG, CLI_AT(T, federated), 0, 0, NULL, NULL,
     "also run one federated round: a local coordinator and two simulated devices"},
    {"--keep", CLI_FLAG, CLI_AT(T, keep), 0, 0, NULL, NULL,
     "keep the temporary home (and loss.svg, demo.seedlog) and print its path"},
    {"--json", CLI_FLAG, CLI_AT(T, c.json), 0, 0, NULL, NULL,
     "progress as JSON lines; the last line is one JSON object (below)"},
    CLI_QUIET_OPT(T),
    CLI_THREADS_OPT(T),
    CLI_END,
};
#undef T

static const cli_command demo_cmd = {
    "demo",
    "demo [--model DIR] [--steps N] [--federated] [--keep] [--json] [options]",
    "The end-to-end walkthrough, in a fresh temporary home: create an encrypted store, import\n"
    "the built-in personal dataset (notes about Pip the dog; a held-out part is kept aside),\n"
    "measure the held-out loss and a generated sample, fine-tune with MeZO (forward passes\n"
    "only), measure again, and compare the seed log with the weights it replaces.",
    demo_table,
    0,
    "The base model is --model DIR, else $POCKETLLM_MODEL, else stories260k (a real\n"
    "260K-parameter TinyStories Llama, MIT) shipped with PocketLLM: models/stories260k in the\n"
    "source tree, or share/pocketllm/models/stories260k beside an installed bin/pocketllm.\n"
    "\n"
    "With --json the last line is one JSON object with loss_before, loss_after, seed_log_bytes,\n"
    "weight_bytes, model (\"shipped\" or \"given\"), model_dir, and federated (true if the\n"
    "round closed and both devices reached one model; null without --federated),\n"
    "federated_hash, federated_bytes_up/down.\n"
    "\n"
    "examples:\n"
    "  pocketllm demo\n"
    "  pocketllm demo --steps 100 --json | tail -n 1"};

/* Human text goes to stdout unless --quiet. */
void demo_say(const demo_state *d, const char *fmt, ...)
{
    if (d->o.c.quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
}

/* ---- the base model ------------------------------------------------------------------------- */

int demo_exe_dir(char *out, size_t n)
{
    char exe[1024];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0)
        return -1;
    exe[len] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = '\0';
    int w = snprintf(out, n, "%s", exe);
    if (w < 0 || (size_t)w >= n) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}

static int is_model_dir(const char *dir)
{
    char p[1100];
    snprintf(p, sizeof p, "%s/config.json", dir);
    return access(p, R_OK) == 0;
}

/* dir made absolute into d->model_dir. */
static int demo_use_model(demo_state *d, const char *dir, const char *source)
{
    char *abs = realpath(dir, NULL);
    int ok = abs && strlen(abs) < sizeof d->model_dir;
    if (ok)
        snprintf(d->model_dir, sizeof d->model_dir, "%s", abs);
    else
        cli_error("demo", "cannot resolve %s: %s", dir, abs ? "path too long" : strerror(errno));
    free(abs);
    d->model_source = source;
    return ok ? CLI_OK : CLI_ERR;
}

/* The shipped stories260k: installed (BINDIR/PK_MODELS_REL, as `cmake --install` lays it out),
 * else in the source tree this pocketllm was built from. */
static int demo_shipped_model(demo_state *d)
{
    char exe[1024], installed[1200] = "";
    if (demo_exe_dir(exe, sizeof exe) == 0)
        snprintf(installed, sizeof installed, "%s/%s/" DEMO_MODEL_NAME, exe, PK_MODELS_REL);
    if (installed[0] && is_model_dir(installed))
        return demo_use_model(d, installed, "shipped");
    if (is_model_dir(PK_DEMO_MODEL_DIR))
        return demo_use_model(d, PK_DEMO_MODEL_DIR, "shipped");
    cli_error("demo",
              "the shipped model " DEMO_MODEL_NAME " is in neither %s nor " PK_DEMO_MODEL_DIR
              " (was the source tree moved?); give a model with --model DIR or POCKETLLM_MODEL",
              installed[0] ? installed : "the install tree");
    return CLI_ERR;
}

/* --model, $POCKETLLM_MODEL, else the shipped model. */
static int demo_find_model(demo_state *d)
{
    const char *env = getenv("POCKETLLM_MODEL");
    if (d->o.model && *d->o.model) {
        if (!is_model_dir(d->o.model)) {
            cli_error("demo", "--model %s: not a model directory (no config.json)", d->o.model);
            return CLI_ERR;
        }
        return demo_use_model(d, d->o.model, "--model");
    }
    if (env && *env) {
        if (!is_model_dir(env)) {
            cli_error("demo", "POCKETLLM_MODEL=%s: not a model directory (no config.json)", env);
            return CLI_ERR;
        }
        return demo_use_model(d, env, "POCKETLLM_MODEL");
    }
    return demo_shipped_model(d);
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

size_t demo_next_line(const char *text, size_t len, size_t *pos, char *line, size_t cap)
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

pk_status demo_create_home(const char *home, pk_store **s, char *err, size_t errlen)
{
    pk_status st = pk_store_init(home, DEMO_PASSPHRASE, strlen(DEMO_PASSPHRASE),
                                 pk_store_default_params(), err, errlen);
    if (st == PK_OK)
        st = pk_store_open(home, DEMO_PASSPHRASE, strlen(DEMO_PASSPHRASE), s, err, errlen);
    return st;
}

static void demo_import_progress(void *user, int64_t n)
{
    pk_progress_update(user, n, (double)NAN);
}

/* Imports text (one note a line) into dataset name through the API; *count gets the notes. */
static pocketllm_status demo_import(demo_state *d, const char *name, const char *text, size_t len,
                                    int64_t *count)
{
    pk_progress *p = pk_progress_new(
        name, 0, d->o.c.quiet ? PK_PROGRESS_QUIET : pk_progress_mode_from_args(d->o.c.json, 0));
    pocketllm_import_params ip = pocketllm_import_default_params();
    ip.format = POCKETLLM_FORMAT_TXT;
    ip.progress = demo_import_progress;
    ip.user = p;
    pocketllm_status st = pocketllm_import(d->h, name, text, len, &ip, count);
    pk_progress_finish(p);
    return st;
}

/* Keeps the sample on_sequence gives (the prompt and the generated text, decoded together). */
static void demo_on_sequence(void *user, const int32_t *ids, size_t n, const char *text, size_t len)
{
    char **out = user;
    (void)ids;
    (void)n;
    free(*out);
    *out = NULL;
    if (text == NULL)
        return;
    *out = malloc(len + 1);
    if (*out)
        memcpy(*out, text, len + 1);
}

/* A sample from the demo prompt with a fixed sampler seed: the same call before and after
 * training (run 0: the base model). One line: newlines would break the layout. */
static pocketllm_status demo_generate(demo_state *d, int64_t run, char **out)
{
    pocketllm_generate_params gp = pocketllm_generate_default_params();
    gp.model_dir = run > 0 ? NULL : d->model_dir;
    gp.run_id = run;
    gp.prompt = DEMO_PROMPT;
    gp.max_new = DEMO_GEN_TOKENS;
    gp.temperature = 0.8f;
    gp.top_k = 40;
    gp.top_p = 0.95f;
    gp.seed = DEMO_GEN_SEED;
    gp.on_sequence = demo_on_sequence;
    gp.user = out;
    *out = NULL;
    pocketllm_status st = pocketllm_generate(d->h, &gp, NULL, 0, NULL);
    if (st == POCKETLLM_OK && *out == NULL)
        *out = strdup(""); /* ids the tokenizer does not know: no text */
    if (st == POCKETLLM_OK && *out == NULL)
        st = POCKETLLM_ERR_NOMEM;
    for (char *c = *out; c && *c; c++)
        if (*c == '\n' || *c == '\r')
            *c = ' ';
    return st;
}

/* Held-out loss and a sample of the base model (run 0) or a fine-tuned run, through the API. */
static pocketllm_status demo_measure(demo_state *d, int64_t run, const pk_train_config *cfg,
                                     double *loss, char **sample)
{
    pocketllm_eval_params ep = pocketllm_eval_default_params();
    pocketllm_eval_result er;
    ep.model_dir = run > 0 ? NULL : d->model_dir;
    ep.run_id = run;
    ep.dataset = "pip-heldout";
    ep.objective = POCKETLLM_OBJECTIVE_LM;
    ep.batch = cfg->batch;
    ep.seq_len = cfg->seq_len;
    pocketllm_status st = pocketllm_eval(d->h, &ep, &er);
    if (st == POCKETLLM_OK)
        *loss = er.loss;
    if (st == POCKETLLM_OK)
        st = demo_generate(d, run, sample);
    return st;
}

/* pocketllm_train_params.progress: the step's loss (one perturbation a step) for the
 * sparkline, and the progress display. */
static int demo_on_step(void *user, const pocketllm_step_info *s)
{
    demo_state *d = user;
    double l = 0.5 * (s->loss_plus + s->loss_minus);
    if (s->step < s->total && d->losses)
        d->losses[s->step] = l;
    d->n_losses = s->step + 1;
    pk_progress_update(d->prog, s->step + 1, l);
    return 0;
}

pk_train_config demo_config(const demo_state *d)
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

/* A failed step of the walkthrough: prints "pocketllm demo: WHAT: why" and returns CLI_ERR. */
static int demo_fail(const char *what, pk_status st, const char *err)
{
    cli_error("demo", "%s: %s", what, cli_errtext(st, err));
    return CLI_ERR;
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
    char home[400], pass[] = DEMO_PASSPHRASE; /* the library wipes pass */
    snprintf(home, sizeof home, "%s/home", d->home);
    double t0 = pk_time_now();
    pocketllm_home_params hp = pocketllm_home_default_params();
    hp.create = 1;
    if (pocketllm_home_open(home, pass, strlen(pass), &hp, &d->h) != POCKETLLM_OK) {
        cli_error("demo", "creating the demo home: %s", pocketllm_errmsg(d->h));
        return CLI_ERR;
    }
    d->s = pk_api_home_store(d->h);
    demo_say(d,
             "[1/6] Created an encrypted agent home in %s (passphrase \"%s\", Argon2id key, "
             "%.1f s)\n",
             home, DEMO_PASSPHRASE, pk_time_now() - t0);
    return CLI_OK;
}

static int demo_load_data(demo_state *d)
{
    pocketllm_status st = demo_import(d, "pip", pk_demo_train, pk_demo_train_len, &d->n_train);
    if (st == POCKETLLM_OK)
        st = demo_import(d, "pip-heldout", pk_demo_heldout, pk_demo_heldout_len, &d->n_heldout);
    if (st != POCKETLLM_OK) {
        cli_error("demo", "importing the demo dataset: %s", pocketllm_errmsg(d->h));
        return CLI_ERR;
    }
    pocketllm_dataset ds[2]; /* the home holds the two datasets just imported */
    size_t n = 0;
    if (pocketllm_datasets(d->h, ds, 2, &n) == POCKETLLM_OK)
        for (size_t i = 0; i < n && i < 2; i++)
            d->sealed_bytes += ds[i].sealed_bytes;
    demo_say(d,
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
    if (st == PK_OK)
        d->weight_bytes = pk_model_weight_bytes(m);
    pk_model_free(m);
    if (st == PK_OK && demo_measure(d, 0, cfg, &d->loss_before, &d->sample_before) != POCKETLLM_OK)
        st = PK_ERR_IO; /* the handle's message says why */
    if (st != PK_OK) {
        cli_error("demo", "base model %s: %s", d->model_dir, err[0] ? err : pocketllm_errmsg(d->h));
        return CLI_ERR;
    }
    demo_say(d,
             "[3/6] Before fine-tuning: held-out loss %.4f (perplexity %.2f)\n      sample: %s\n",
             d->loss_before, exp(d->loss_before), d->sample_before);
    return CLI_OK;
}

/* The demo's settings (demo_config) as the API's training params. */
static pocketllm_train_params demo_train_params(demo_state *d, const pk_train_config *cfg)
{
    pocketllm_train_params tp = pocketllm_train_default_params();
    tp.model_dir = cfg->model_dir;
    tp.dataset = cfg->dataset;
    tp.eval_dataset = cfg->eval_dataset;
    tp.objective = POCKETLLM_OBJECTIVE_LM;
    tp.lr = cfg->mezo.lr;
    tp.eps = cfg->mezo.eps;
    tp.seed = cfg->mezo.seed;
    tp.batch = cfg->batch;
    tp.seq_len = cfg->seq_len;
    tp.steps = cfg->steps;
    tp.eval_every = cfg->eval_every;
    tp.checkpoint_every = cfg->checkpoint_every;
    tp.progress = demo_on_step;
    tp.user = d;
    return tp;
}

static int demo_train(demo_state *d, const pk_train_config *cfg)
{
    d->losses = calloc((size_t)cfg->steps, sizeof *d->losses);
    if (!d->losses)
        return CLI_ERR;
    demo_say(d,
             "[4/6] Fine-tuning with MeZO: %lld steps, batch %d, lr %g, eps %g, forward passes "
             "only (no gradients, no optimizer state)\n",
             (long long)cfg->steps, cfg->batch, (double)cfg->mezo.lr, (double)cfg->mezo.eps);
    d->prog = pk_progress_new("train", cfg->steps,
                              d->o.c.quiet ? PK_PROGRESS_QUIET
                                           : pk_progress_mode_from_args(d->o.c.json, 0));
    pocketllm_train_params tp = demo_train_params(d, cfg);
    pocketllm_train_result res;
    double t0 = pk_time_now();
    pocketllm_status st = pocketllm_train(d->h, &tp, &res); /* Ctrl-C: stopped at a step */
    pk_progress_finish(d->prog);
    d->prog = NULL;
    if (st != POCKETLLM_OK && st != POCKETLLM_ERR_CANCELLED) {
        cli_error("demo", "training: %s", pocketllm_errmsg(d->h));
        return CLI_ERR;
    }
    d->run_id = res.run_id;
    memcpy(d->final_hash, res.weights_hash, sizeof d->final_hash);
    if (st == POCKETLLM_ERR_CANCELLED) {
        demo_say(d, "\nInterrupted at step %lld (the steps so far are logged in run %lld).\n",
                 (long long)res.steps_done, (long long)res.run_id);
        return CLI_INTERRUPTED;
    }
    double dt = pk_time_now() - t0;
    demo_say(d, "      %lld steps in %.1f s (%.1f steps/s; %.0f%% in forward passes)\n",
             (long long)res.steps_done, dt, (double)res.steps_done / (dt > 0 ? dt : 1),
             100.0 * res.forward_s / (dt > 0 ? dt : 1));
    if (!d->o.c.quiet && d->n_losses > 1) {
        demo_say(d, "      train loss: ");
        pk_sparkline(stdout, d->losses, (size_t)d->n_losses, 60);
        demo_say(d, "  %.3f -> %.3f\n", d->losses[0], d->losses[d->n_losses - 1]);
    }
    return CLI_OK;
}

static int demo_after(demo_state *d, const pk_train_config *cfg)
{
    if (demo_measure(d, d->run_id, cfg, &d->loss_after, &d->sample_after) != POCKETLLM_OK) {
        cli_error("demo", "fine-tuned model: %s", pocketllm_errmsg(d->h));
        return CLI_ERR;
    }
    demo_say(d,
             "[5/6] After fine-tuning:  held-out loss %.4f (perplexity %.2f), %s by %.4f\n"
             "      sample: %s\n",
             d->loss_after, exp(d->loss_after),
             d->loss_after < d->loss_before ? "lower" : "NOT lower",
             fabs(d->loss_before - d->loss_after), d->sample_after);
    return CLI_OK;
}

/* Seed log export, and a rebuild of the weights from it to show it is the whole model. */
static int demo_seedlog(demo_state *d)
{
    char path[400], err[ERRLEN] = "", hash[65] = "";
    snprintf(path, sizeof path, "%s/demo.seedlog", d->home);
    pk_status st = PK_OK;
    if (pocketllm_export_seedlog(d->h, d->run_id, path, &d->seedlog_bytes) != POCKETLLM_OK) {
        snprintf(err, sizeof err, "%s", pocketllm_errmsg(d->h));
        st = PK_ERR_IO;
    }
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
    if (st != PK_OK)
        return demo_fail("seed log", st, err);
    int same = !strcmp(hash, d->final_hash);
    demo_say(d,
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
        demo_say(d, "      (no plot: %s)\n", err);
    return CLI_OK;
}

static void demo_privacy(const demo_state *d)
{
    demo_say(
        d,
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

/* The final --json object (cJSON escapes the paths); a failed federated part still reports the
 * local results. */
static int demo_json(const demo_state *d, int federated_ok)
{
    cJSON *j = cJSON_CreateObject();
    if (!j)
        return cli_json_print(NULL);
    cli_json_add_finite(j, "loss_before", d->loss_before);
    cli_json_add_finite(j, "loss_after", d->loss_after);
    cli_json_add_finite(j, "ppl_before", exp(d->loss_before));
    cli_json_add_finite(j, "ppl_after", exp(d->loss_after));
    cJSON_AddNumberToObject(j, "seed_log_bytes", (double)d->seedlog_bytes);
    cJSON_AddNumberToObject(j, "weight_bytes", (double)d->weight_bytes);
    cJSON_AddNumberToObject(j, "steps", (double)d->n_losses);
    cJSON_AddNumberToObject(j, "run_id", (double)d->run_id);
    cJSON_AddStringToObject(j, "model", !strcmp(d->model_source, "shipped") ? "shipped" : "given");
    cJSON_AddStringToObject(j, "model_source", d->model_source);
    cJSON_AddStringToObject(j, "model_dir", d->model_dir);
    cJSON_AddFalseToObject(j, "random_model"); /* the demo always trains a real model now */
    cJSON_AddStringToObject(j, "base_hash", d->base_hash);
    cJSON_AddStringToObject(j, "final_hash", d->final_hash);
    cJSON_AddNumberToObject(j, "train_examples", (double)d->n_train);
    cJSON_AddNumberToObject(j, "heldout_examples", (double)d->n_heldout);
    cJSON_AddNumberToObject(j, "sealed_bytes", (double)d->sealed_bytes);
    demo_fed_json(d, federated_ok, j);
    int rc = cli_json_print(j);
    fflush(stdout);
    return rc;
}

/* Removes the temporary home unless --keep (then says where it is). A failed run keeps
 * nothing either: its home holds only the demo's own notes. */
static void demo_cleanup(const demo_state *d)
{
    if (!d->home[0])
        return;
    if (!d->o.keep) {
        remove_tree(d->home);
        return;
    }
    demo_say(d,
             "Kept the demo files in %s (home/, loss.svg, demo.seedlog). Try:\n"
             "  POCKETLLM_PASSPHRASE=%s pocketllm runs --home %s/home\n",
             d->home, DEMO_PASSPHRASE, d->home);
}

/* The walkthrough's steps, in order; *fed is set to the federated outcome (-1: not run,
 * 0: failed, 1: done). */
static int demo_run(demo_state *d, int *fed)
{
    int rc = demo_find_model(d);
    if (rc == CLI_OK)
        rc = demo_setup(d);
    if (rc == CLI_OK)
        demo_say(d, "      base model: %s%s\n", d->model_dir,
                 !strcmp(d->model_source, "shipped")
                     ? " (stories260k, shipped with PocketLLM: a real TinyStories Llama)"
                     : "");
    pk_train_config cfg = demo_config(d);
    if (rc == CLI_OK)
        rc = demo_load_data(d);
    if (rc == CLI_OK)
        rc = demo_before(d, &cfg);
    if (rc == CLI_OK)
        rc = demo_train(d, &cfg);
    if (rc == CLI_OK)
        rc = demo_after(d, &cfg);
    if (rc == CLI_OK)
        rc = demo_seedlog(d);
    if (rc != CLI_OK)
        return rc;
    demo_privacy(d);
    if (d->o.federated) {
        rc = demo_federated(d);
        *fed = rc == CLI_OK;
    }
    return rc;
}

int cmd_demo(int argc, char **argv)
{
    demo_state d;
    memset(&d, 0, sizeof d);
    d.o.steps = 800;
    d.o.lr = 1e-4f; /* 2e-4 overshoots after ~400 of the 800 steps */
    d.o.batch = 16;
    int rc = cli_parse(&demo_cmd, argc, argv, &d.o);
    if (rc != 0)
        return rc < 0 ? CLI_OK : rc;
    cli_apply_threads(&d.o.c);
    if (pk_crypto_global_init() != PK_OK) {
        cli_error("demo", "cannot initialise libsodium");
        return CLI_ERR;
    }
    if (d.o.federated && cli_http_init("demo") != 0) /* only the federated round talks HTTP */
        return CLI_ERR;
    pk_interrupt_install();
    double t0 = pk_time_now();
    demo_say(&d,
             "PocketLLM demo: private on-device fine-tuning with forward passes only (MeZO)\n\n");
    int fed = -1;
    rc = demo_run(&d, &fed);
    if (rc == CLI_OK || fed == 0)
        demo_say(&d, "\nDone in %.0f s. Held-out loss %.4f -> %.4f.\n", pk_time_now() - t0,
                 d.loss_before, d.loss_after);
    pocketllm_home_close(d.h); /* d.s was its store */
    d.s = NULL;
    demo_cleanup(&d);
    if ((rc == CLI_OK || fed == 0) && d.o.c.json) {
        int jrc = demo_json(&d, fed);
        rc = rc == CLI_OK ? jrc : rc;
    }
    free(d.losses);
    free(d.sample_before);
    free(d.sample_after);
    return rc;
}
