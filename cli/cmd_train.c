/* cmd_train.c: the MeZO trainer commands: train, eval, replay, runs, mezo-probe, bench mezo.
 * Each command has one option table (opts.h); the work is in train/ (pk_train.h) and mezo/
 * (pk_mezo.h). */
#include "cli.h"

#include "passphrase.h"

#include "pk_train.h"
#include "pocketllm.h"
#include "progress.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ERRLEN 512

/* Puts "OPTION: " before a library message in err (n bytes), so the error names the flag. */
static void name_option(const char *option, char *err, size_t n)
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

/* ---- train ---------------------------------------------------------------------------------- */

typedef struct train_opts {
    cli_common c;
    const char *model;
    int64_t resume; /* 0: a new run */
    const char *lr; /* a rate or "auto"; NULL: the default */
    pk_train_config cfg;
} train_opts;

#define T train_opts
static const cli_option train_table[] = {
    {"--model", CLI_STR, CLI_AT(T, model), 0, 0, NULL, "DIR", "base model (Hugging Face dir)"},
    {"--dataset", CLI_BUF, CLI_AT(T, cfg.dataset), 0, 0, NULL, "NAME", "training dataset"},
    {"--objective", CLI_CHOICE, CLI_AT(T, cfg.objective), 0, 0, "lm|classify|accuracy", NULL,
     "what the loss measures"},
    {"--eps", CLI_FLOAT, CLI_AT(T, cfg.mezo.eps), 1e-8, 10, NULL, "F", "perturbation scale"},
    {"--lr", CLI_STR, CLI_AT(T, lr), 0, 0, NULL, "F|auto",
     "learning rate (auto: a short search on a held-back slice first)"},
    {"--schedule", CLI_CHOICE, CLI_AT(T, cfg.mezo.schedule), 0, 0, "constant|linear|cosine", NULL,
     "learning-rate schedule"},
    {"--warmup", CLI_INT, CLI_AT(T, cfg.mezo.warmup), 0, 1LL << 40, NULL, "N",
     "linear warm-up steps"},
    {"--weight-decay", CLI_FLOAT, CLI_AT(T, cfg.mezo.weight_decay), 0, 100, NULL, "F",
     "decoupled weight decay, never on biases/norms"},
    {"--spsa-q", CLI_INT, CLI_AT(T, cfg.mezo.spsa_q), 1, 1024, NULL, "Q",
     "perturbations per step, averaged"},
    {"--estimator", CLI_CHOICE, CLI_AT(T, cfg.mezo.estimator), 0, 0, "spsa|fzoo|hizoo", NULL,
     "spsa: two-sided MeZO; fzoo: N one-sided Rademacher + std-normalized step; hizoo: "
     "diagonal-Hessian scaled"},
    {"--perturbations", CLI_INT, CLI_AT(T, cfg.mezo.perturbations), 2, 4096, NULL, "N",
     "fzoo: one-sided perturbations per step"},
    {"--hessian-smooth", CLI_FLOAT, CLI_AT(T, cfg.mezo.hessian_smooth), 1e-12, 0.5, NULL, "F",
     "hizoo: weight of each step's Hessian estimate"},
    {"--hessian-budget", CLI_FLOAT, CLI_AT(T, cfg.mezo.hessian_budget), 0, 64, NULL, "F",
     "hizoo: the fp32 Hessian diagonal may take F x the weight bytes"},
    {"--perturb-layers", CLI_INT, CLI_AT(T, cfg.mezo.perturb_layers), 0, 4096, NULL, "K",
     "perturb and update K random layers per perturbation (0: all); raise --lr by about layers/K"},
    {"--accumulate", CLI_INT, CLI_AT(T, cfg.accumulate), 1, 4096, NULL, "M",
     "micro-batches per step under one z"},
    {"--clip-g", CLI_FLOAT, CLI_AT(T, cfg.mezo.clip_g), 0, 1e30, NULL, "F",
     "clip the projected gradient to [-F, F] (0: off)"},
    {"--trainable", CLI_BUF, CLI_AT(T, cfg.trainable), 0, 0, NULL, "SPEC",
     "all | bitfit | scales | REGEX on tensor names | lora[:r=R,alpha=A,seed=S,targets=REGEX]"},
    {"--steps", CLI_INT, CLI_AT(T, cfg.steps), 1, 1LL << 40, NULL, "N", "steps"},
    {"--batch", CLI_INT, CLI_AT(T, cfg.batch), 1, 65536, NULL, "B", "examples per batch"},
    {"--seq-len", CLI_INT, CLI_AT(T, cfg.seq_len), 2, 1 << 20, NULL, "T", "tokens per example"},
    {"--seed", CLI_U64, CLI_AT(T, cfg.mezo.seed), 0, 0, NULL, "S", "run seed"},
    {"--z", CLI_CHOICE, CLI_AT(T, cfg.mezo.z), 0, 0, "gaussian|rademacher", NULL,
     "perturbation distribution"},
    {"--template", CLI_BUF, CLI_AT(T, cfg.template_), 0, 0, NULL, "TEXT",
     "classify: prompt with {text} / {text2} (roberta: with <mask>)"},
    {"--labels", CLI_BUF, CLI_AT(T, cfg.labels), 0, 0, NULL, "WORDS",
     "classify: comma-separated label words, e.g. \" great, terrible\""},
    {"--eval-dataset", CLI_BUF, CLI_AT(T, cfg.eval_dataset), 0, 0, NULL, "NAME",
     "held-out dataset for periodic eval"},
    {"--eval-every", CLI_INT, CLI_AT(T, cfg.eval_every), 0, 1LL << 40, NULL, "N",
     "eval every N steps (0: never)"},
    {"--early-stop", CLI_INT, CLI_AT(T, cfg.early_stop), 0, 1 << 20, NULL, "PATIENCE",
     "stop after PATIENCE evals without improvement (0: off)"},
    {"--checkpoint-every", CLI_INT, CLI_AT(T, cfg.checkpoint_every), 0, 1LL << 40, NULL, "N",
     "sealed weight checkpoints every N steps"},
    {"--resume", CLI_INT, CLI_AT(T, resume), 1, 9e18, NULL, "RUN_ID",
     "continue a stopped run bit-exactly"},
    {"--from-run", CLI_INT, CLI_AT(T, cfg.parent_run), 1, 9e18, NULL, "RUN_ID",
     "a new run starting from run RUN_ID's final weights (its base model)"},
    CLI_THREADS_OPT(T),
    CLI_JSON_OPT(T),
    CLI_QUIET_OPT(T),
    CLI_STORE_OPTS(T),
    CLI_END,
};
#undef T

static const cli_command train_cmd = {
    "train",
    "train --model DIR --dataset NAME [--objective lm|classify|accuracy] [options]\n"
    "train --from-run RUN_ID --dataset NAME [options]\n"
    "train --resume RUN_ID [--threads N]",
    "Fine-tunes with MeZO (two forward passes per step, no gradients). Each step is logged in\n"
    "the store; Ctrl-C stops at a step boundary and --resume continues bit-exactly.",
    train_table,
    0,
    NULL};

typedef struct train_ui {
    pk_progress *p;
    int quiet;
    int json;
    int64_t run_id;
    int eval_due;      /* an eval ran in the last step: printed once the step returns */
    int64_t eval_step; /* its step, loss and accuracy (NAN for lm) */
    double eval_loss, eval_acc;
} train_ui;

static void ui_start(void *user, int64_t run_id, int64_t first)
{
    train_ui *u = user;
    u->run_id = run_id;
    pk_progress_set_start(u->p, first);
    if (!u->quiet)
        fprintf(stderr, "run %lld: starting at step %lld\n", (long long)run_id, (long long)first);
}

static void ui_eval(train_ui *u, int64_t step, double loss, double acc)
{
    u->eval_due = 1;
    u->eval_step = step;
    u->eval_loss = loss;
    u->eval_acc = acc;
    if (u->quiet)
        return;
    if (isnan(acc))
        fprintf(stderr, "\neval at step %lld: loss %.4f\n", (long long)step, loss);
    else
        fprintf(stderr, "\neval at step %lld: loss %.4f accuracy %.4f\n", (long long)step, loss,
                acc);
}

static void print_eval_event(train_ui *u, const pocketllm_step_info *s);

/* pocketllm_train_params.progress: the bar, then the eval that fell due at this step. */
static int ui_progress(void *user, const pocketllm_step_info *s)
{
    train_ui *u = user;
    pk_progress_set_total(u->p, s->total); /* known here for a resumed run too */
    pk_progress_update(u->p, s->step + 1, 0.5 * (s->loss_plus + s->loss_minus));
    if (s->has_eval) {
        ui_eval(u, s->step + 1, s->eval_loss, s->eval_acc); /* evals count steps done */
        print_eval_event(u, s);
    }
    return 0; /* Ctrl-C stops the trainer itself (pk_interrupted) at a step boundary */
}

/* --lr F|auto into the settings. */
static int parse_lr(train_opts *o)
{
    char *end = NULL;
    if (o->lr == NULL)
        return 0;
    if (!strcmp(o->lr, "auto")) {
        o->cfg.lr_auto = 1;
        return 0;
    }
    double v = strtod(o->lr, &end);
    if (end == o->lr || *end != 0 || !(v >= 0.0 && v <= 100.0)) {
        cli_error(o->c.cmd, "--lr %s: want a rate in [0, 100] or auto", o->lr);
        return CLI_USAGE;
    }
    o->cfg.mezo.lr = (float)v;
    return 0;
}

/* Checks what the table cannot: required options and options that need one another. */
static int train_check(train_opts *o)
{
    const char *cmd = o->c.cmd;
    pk_train_config *cfg = &o->cfg;
    if (parse_lr(o) != 0) /* a malformed value is refused first, as the table's numbers are */
        return CLI_USAGE;
    if (o->resume)
        return 0;
    if ((o->model == NULL && cfg->parent_run == 0) || !cfg->dataset[0]) {
        cli_error(cmd, "--model DIR (or --from-run ID) and --dataset NAME are required (or "
                       "--resume ID)");
        return CLI_USAGE;
    }
    if (o->model != NULL && cfg->parent_run > 0) {
        cli_error(cmd, "--from-run: the run's base model is used: leave out --model");
        return CLI_USAGE;
    }
    if (o->model != NULL && realpath(o->model, cfg->model_dir) == NULL) {
        cli_error(cmd, "--model %s: no such directory", o->model);
        return CLI_ERR;
    }
    if (cfg->eval_every > 0 && !cfg->eval_dataset[0]) {
        cli_error(cmd, "--eval-every needs --eval-dataset NAME");
        return CLI_USAGE;
    }
    if (cfg->early_stop > 0 && cfg->eval_every == 0) {
        cli_error(cmd, "--early-stop needs --eval-every N and --eval-dataset NAME");
        return CLI_USAGE;
    }
    cfg->mezo.steps_total = cfg->steps;
    return 0;
}

/* --json: {"event":"eval","step":N,"loss":L,"accuracy":A (classify),"evaluations":E,
 * "elapsed_s":T}, the evaluations and training seconds at that eval. */
static void print_eval_event(train_ui *u, const pocketllm_step_info *r)
{
    if (!u->eval_due || !u->json)
        return;
    u->eval_due = 0;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "event", "eval");
    cJSON_AddNumberToObject(j, "step", (double)u->eval_step);
    cli_json_add_finite(j, "loss", u->eval_loss);
    if (!isnan(u->eval_acc))
        cJSON_AddNumberToObject(j, "accuracy", u->eval_acc);
    cJSON_AddNumberToObject(j, "evaluations", (double)r->evaluations);
    cli_json_add_rounded(j, "elapsed_s", r->elapsed_s, 3);
    (void)cli_json_print(j);
}

/* A float rate as its shortest decimal (3e-3, not 0.0030000000260770321). */
static double float_short(float v)
{
    char b[32];
    snprintf(b, sizeof b, "%g", (double)v);
    return strtod(b, NULL);
}

/* The --lr auto search: each candidate's held-back loss and the rate chosen (stderr, or one JSON
 * line {"event":"lr_search",...} with --json). */
static void print_lr_search(const train_ui *u, const pocketllm_lr_search *r)
{
    if (r->n == 0 || (u->quiet && !u->json))
        return;
    if (u->json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "event", "lr_search");
        cJSON_AddNumberToObject(j, "chosen", float_short(r->chosen));
        cJSON_AddNumberToObject(j, "steps_each", r->steps_each);
        cli_json_add_finite(j, "start_loss", r->start_loss);
        cJSON *a = cJSON_AddArrayToObject(j, "candidates");
        for (int i = 0; i < r->n; i++) {
            cJSON *c = cJSON_CreateObject();
            cJSON_AddNumberToObject(c, "lr", float_short(r->lr[i]));
            cli_json_add_rounded(c, "loss", r->loss[i], 6); /* null: diverged */
            cJSON_AddItemToArray(a, c);
        }
        (void)cli_json_print(j);
        return;
    }
    fprintf(stderr, "lr auto: %d steps per rate, held-back loss %.4f before:", r->steps_each,
            r->start_loss);
    for (int i = 0; i < r->n; i++) {
        if (isfinite(r->loss[i]))
            fprintf(stderr, " %g:%.4f", (double)r->lr[i], r->loss[i]);
        else
            fprintf(stderr, " %g:diverged", (double)r->lr[i]);
    }
    fprintf(stderr, "; chosen %g\n", (double)r->chosen);
}

/* pocketllm_lr_search callback: the search's result, before the first step. */
static void ui_lr_search(void *user, const pocketllm_lr_search *r)
{
    print_lr_search(user, r);
}

/* The parsed settings as libpocketllm's train parameters (strings borrowed from cfg). */
static pocketllm_train_params train_params(const pk_train_config *cfg, int64_t resume)
{
    pocketllm_train_params p = pocketllm_train_default_params();
    p.resume_run = resume;
    p.model_dir = cfg->parent_run > 0 ? NULL : cfg->model_dir;
    p.dataset = cfg->dataset;
    p.datasets = cfg->datasets[0] ? cfg->datasets : NULL;
    p.eval_dataset = cfg->eval_dataset[0] ? cfg->eval_dataset : NULL;
    p.objective = (pocketllm_objective)cfg->objective;
    p.steps = cfg->steps;
    p.batch = cfg->batch;
    p.seq_len = cfg->seq_len;
    p.accumulate = cfg->accumulate;
    p.lr = cfg->mezo.lr;
    p.lr_auto = cfg->lr_auto;
    p.eps = cfg->mezo.eps;
    p.schedule = pk_schedule_name(cfg->mezo.schedule);
    p.warmup = cfg->mezo.warmup;
    p.weight_decay = cfg->mezo.weight_decay;
    p.spsa_q = cfg->mezo.spsa_q;
    p.estimator = pk_estimator_name(cfg->mezo.estimator);
    p.perturbations = cfg->mezo.perturbations;
    p.hessian_smooth = cfg->mezo.hessian_smooth;
    p.hessian_budget = cfg->mezo.hessian_budget;
    p.perturb_layers = cfg->mezo.perturb_layers;
    p.clip_g = cfg->mezo.clip_g;
    p.trainable = cfg->trainable;
    p.seed = cfg->mezo.seed;
    p.z = cfg->mezo.z == PK_Z_RADEMACHER ? "rademacher" : "gaussian";
    p.template_text = cfg->template_;
    p.labels = cfg->labels;
    p.eval_every = cfg->eval_every;
    p.early_stop = cfg->early_stop;
    p.checkpoint_every = cfg->checkpoint_every;
    p.parent_run = cfg->parent_run;
    p.holdout = cfg->holdout;
    return p;
}

static int train_print(const pocketllm_train_result *res, int quiet)
{
    if (!quiet && res->stopped_early)
        fprintf(stderr, "early stop: no eval improvement at step %lld\n",
                (long long)res->steps_done);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "run", (double)res->run_id);
    cJSON_AddNumberToObject(j, "steps", (double)res->steps_done);
    cli_json_add_finite(j, "loss", res->last_loss); /* NaN (no step ran) is null */
    cJSON_AddStringToObject(j, "weights", res->weights_hash);
    cJSON_AddNumberToObject(j, "forward_s", res->forward_s);
    cJSON_AddNumberToObject(j, "update_s", res->update_s);
    cJSON_AddNumberToObject(j, "evaluations", (double)res->evaluations);
    cli_json_add_rounded(j, "elapsed_s", res->elapsed_s, 3);
    return cli_json_print(j);
}

/* The option a new run's failure is about, or NULL: on the error path only, the base is loaded
 * (one token of activations) and the run's --trainable, then --estimator, set-up repeated; the
 * first that fails with the message the run failed with is the option to name before it (the
 * library names the problem, the CLI adds the flag). A --from-run base is not looked at. */
static const char *train_failed_option(const train_opts *o, const char *msg)
{
    if (o->resume || !o->cfg.model_dir[0] || msg == NULL)
        return NULL;
    pk_model_params mp = pk_model_default_params();
    mp.max_batch = 1;
    mp.max_seq = 2;
    pk_model *m = NULL;
    uint8_t *mask = NULL;
    pk_mezo_state *est = NULL;
    char err[ERRLEN] = "";
    const char *opt = NULL;
    if (pk_model_load(o->cfg.model_dir, mp, &m, err, sizeof err) != PK_OK)
        goto out;
    if (pk_mezo_trainable(m, o->cfg.trainable, &mask, err, sizeof err) != PK_OK) {
        opt = "--trainable";
        goto out;
    }
    if (pk_mezo_state_new(m, mask, &o->cfg.mezo, &est, err, sizeof err) != PK_OK)
        opt = "--estimator";
out:
    if (opt != NULL && (!err[0] || strstr(msg, err) == NULL))
        opt = NULL; /* the run failed on something else */
    pk_mezo_state_free(est);
    free(mask);
    pk_model_free(m);
    return opt;
}

int cmd_train(int argc, char **argv)
{
    train_opts o = {.cfg = pk_train_config_default()};
    int rc = cli_parse(&train_cmd, argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? CLI_OK : rc;
    rc = train_check(&o);
    if (rc != 0)
        return rc;
    cli_apply_threads(&o.c);
    const char *cmd = o.c.cmd;
    pocketllm_home *h = NULL;
    rc = cli_open_home(&o.c, &h);
    if (rc != 0)
        return rc;
    int quiet = o.c.quiet;
    train_ui ui = {NULL, quiet, o.c.json, 0, 0, 0, 0, 0};
    pocketllm_train_params p = train_params(&o.cfg, o.resume);
    p.on_start = ui_start;
    p.progress = ui_progress;
    p.on_lr_search = ui_lr_search;
    p.user = &ui;
    ui.p = pk_progress_new("train", o.resume ? 0 : o.cfg.steps,
                           pk_progress_mode_from_args(o.c.json, quiet));
    pk_interrupt_install();
    pocketllm_train_result res;
    pocketllm_status st = pocketllm_train(h, &p, &res);
    pk_progress_finish(ui.p);
    if (st == POCKETLLM_ERR_CANCELLED) {
        fprintf(stderr,
                "interrupted after %lld steps; resume with: pocketllm train --resume %lld\n",
                (long long)res.steps_done, (long long)res.run_id);
        pocketllm_home_close(h);
        return CLI_INTERRUPTED;
    }
    const char *opt = st != POCKETLLM_OK ? train_failed_option(&o, pocketllm_errmsg(h)) : NULL;
    if (opt != NULL) {
        cli_error(cmd, "%s: %s", opt, pocketllm_errmsg(h));
        rc = CLI_ERR;
    } else if (st != POCKETLLM_OK) {
        rc = cli_home_fail(cmd, h, st);
    }
    pocketllm_home_close(h);
    return st == POCKETLLM_OK ? train_print(&res, quiet) : rc;
}

/* ---- eval ----------------------------------------------------------------------------------- */

typedef struct eval_opts {
    cli_common c;
    const char *model;
    const char *dataset;
    int64_t run;         /* 0: --model */
    pk_train_config cfg; /* objective, template, labels, batch, seq_len (given: override a run's) */
} eval_opts;

#define T eval_opts
static const cli_option eval_table[] = {
    {"--model", CLI_STR, CLI_AT(T, model), 0, 0, NULL, "DIR", "model (Hugging Face dir)"},
    {"--run", CLI_INT, CLI_AT(T, run), 1, 9e18, NULL, "ID", "the weights of a training run"},
    {"--dataset", CLI_STR, CLI_AT(T, dataset), 0, 0, NULL, "NAME", "dataset to evaluate on"},
    {"--objective", CLI_CHOICE, CLI_AT(T, cfg.objective), 0, 0, "lm|classify|accuracy", NULL,
     "what the loss measures"},
    {"--template", CLI_BUF, CLI_AT(T, cfg.template_), 0, 0, NULL, "TEXT",
     "classify: prompt with {text} / {text2}"},
    {"--labels", CLI_BUF, CLI_AT(T, cfg.labels), 0, 0, NULL, "WORDS",
     "classify: comma-separated label words"},
    {"--batch", CLI_INT, CLI_AT(T, cfg.batch), 1, 65536, NULL, "B", "examples per batch"},
    {"--seq-len", CLI_INT, CLI_AT(T, cfg.seq_len), 2, 1 << 20, NULL, "T", "tokens per example"},
    CLI_THREADS_OPT(T),
    CLI_STORE_OPTS(T),
    CLI_END,
};
#undef T

static const cli_command eval_cmd = {
    "eval",
    "eval (--model DIR | --run ID) --dataset NAME [options]",
    "Loss, perplexity (lm) and accuracy (classify) of a model or of a run's weights.\n"
    "With --run the run's objective, template, labels, batch and sequence length are the\n"
    "defaults.",
    eval_table,
    0,
    NULL};

/* The eval parameters: with --run only what the command line gives overrides the run's
 * settings; with --model every setting is the command line's (or its default). */
static pocketllm_eval_params eval_params(const eval_opts *o)
{
    pocketllm_eval_params p = pocketllm_eval_default_params();
    int all = o->run == 0;
    p.model_dir = all ? o->model : NULL; /* --run wins, as it always has */
    p.run_id = o->run;
    p.dataset = o->dataset;
    if (all || cli_given(&o->c, "--objective"))
        p.objective = (int)o->cfg.objective;
    if (all || cli_given(&o->c, "--template"))
        p.template_text = o->cfg.template_;
    if (all || cli_given(&o->c, "--labels"))
        p.labels = o->cfg.labels;
    if (all || cli_given(&o->c, "--batch"))
        p.batch = o->cfg.batch;
    if (all || cli_given(&o->c, "--seq-len"))
        p.seq_len = o->cfg.seq_len;
    return p;
}

static int eval_print(const char *dataset, const pocketllm_eval_result *r)
{
    pk_objective_kind kind = (pk_objective_kind)r->objective;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "dataset", dataset);
    cJSON_AddNumberToObject(j, "examples", (double)r->examples);
    cJSON_AddStringToObject(j, "objective", pk_objective_name(kind));
    cli_json_add_rounded(j, "loss", r->loss, 6);
    if (kind == PK_OBJ_LM)
        cli_json_add_rounded(j, "perplexity", exp(r->loss), 4);
    if (!isnan(r->accuracy))
        cli_json_add_rounded(j, "accuracy", r->accuracy, 4);
    return cli_json_print(j);
}

int cmd_eval(int argc, char **argv)
{
    eval_opts o = {.cfg = pk_train_config_default()};
    int rc = cli_parse(&eval_cmd, argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? CLI_OK : rc;
    if ((o.model == NULL && o.run == 0) || o.dataset == NULL) {
        cli_error(o.c.cmd, "--dataset NAME and one of --model DIR / --run ID are required");
        return CLI_USAGE;
    }
    cli_apply_threads(&o.c);
    pocketllm_home *h = NULL;
    rc = cli_open_home(&o.c, &h);
    if (rc != 0)
        return rc;
    pocketllm_eval_params p = eval_params(&o);
    pocketllm_eval_result r;
    pocketllm_status st = pocketllm_eval(h, &p, &r);
    rc = st == POCKETLLM_OK ? eval_print(o.dataset, &r) : cli_home_fail(o.c.cmd, h, st);
    pocketllm_home_close(h);
    return rc;
}

/* ---- replay --------------------------------------------------------------------------------- */

typedef struct replay_opts {
    cli_common c;
    int64_t run; /* 0: --seed-log */
    const char *out;
    const char *seed_log;
    const char *model;
    const char *write_seed_log;
} replay_opts;

#define T replay_opts
static const cli_option replay_table[] = {
    {"--run", CLI_INT, CLI_AT(T, run), 1, 9e18, NULL, "ID", "the training run to rebuild"},
    {"--out", CLI_STR, CLI_AT(T, out), 0, 0, NULL, "DIR", "write the model directory here"},
    {"--seed-log", CLI_STR, CLI_AT(T, seed_log), 0, 0, NULL, "FILE",
     "rebuild from a seed log instead of a run"},
    {"--model", CLI_STR, CLI_AT(T, model), 0, 0, NULL, "DIR", "the seed log's base model"},
    {"--write-seed-log", CLI_STR, CLI_AT(T, write_seed_log), 0, 0, NULL, "FILE",
     "--run: also write the run's seed log to FILE"},
    CLI_THREADS_OPT(T),
    CLI_STORE_OPTS(T),
    CLI_END,
};
#undef T

static const cli_command replay_cmd = {
    "replay",
    "replay --run ID --out DIR [--write-seed-log FILE] [--threads N]\n"
    "replay --seed-log FILE --model DIR --out DIR2 [--threads N]",
    "Rebuilds fine-tuned weights from the base model and a step log (bit-identical to\n"
    "the live run with any --threads) and writes a safetensors model directory.",
    replay_table,
    0,
    NULL};

static int replay_check(const replay_opts *o)
{
    if ((o->run > 0) == (o->seed_log != NULL) || (o->out == NULL && o->write_seed_log == NULL) ||
        (o->seed_log != NULL && (o->model == NULL || o->out == NULL))) {
        cli_error(o->c.cmd, "use --run ID --out DIR, or --seed-log FILE --model DIR --out DIR");
        return CLI_USAGE;
    }
    return 0;
}

static pk_dtype model_dtype(const pk_model *m)
{
    pk_tensor_info ti;
    if (pk_model_n_tensors(m) > 0 && pk_model_tensor(m, 0, &ti) == PK_OK)
        return ti.dtype;
    return PK_DTYPE_F32;
}

/* The base model with the seed log's steps applied. */
static pk_status replay_seedlog(const replay_opts *o, pk_model **m, char *err, size_t n)
{
    pk_seedlog log;
    pk_status st = pk_seedlog_read(o->seed_log, &log, err, n);
    if (st != PK_OK)
        return st;
    st = pk_model_load(o->model, pk_model_default_params(), m, err, n);
    if (st == PK_OK)
        st = pk_seedlog_replay(*m, &log, err, n);
    pk_seedlog_clear(&log);
    return st;
}

/* The weights hash into hex, then the model saved (with --out); a LoRA adapter is merged into
 * the saved weights (the loader would ignore its tensors), the hash is the replayed model's. */
static pk_status replay_save(const replay_opts *o, pk_model *m, char hex[65], char *err, size_t n)
{
    pk_dtype dt = model_dtype(m);
    if (pk_dtype_is_quant(dt)) /* a quantized base: safetensors holds no blocks, widen to fp32 */
        dt = PK_DTYPE_F32;
    pk_status st = pk_weights_hash(m, hex);
    if (st == PK_OK && o->out) /* folds a LoRA adapter or trained block scales; else no-op */
        st = pk_model_lora_merge(m);
    return st != PK_OK || !o->out ? st : pk_model_save(m, o->out, dt, err, n);
}

static int replay_print(const char *hex, double replay_s)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "weights", hex);
    cli_json_add_rounded(j, "replay_s", replay_s, 3); /* the rebuild alone, not the save */
    cJSON_AddNumberToObject(j, "threads", pk_threads_get());
    return cli_json_print(j);
}

int cmd_replay(int argc, char **argv)
{
    replay_opts o = {0};
    int rc = cli_parse(&replay_cmd, argc, argv, &o);
    if (rc == 0)
        rc = replay_check(&o);
    if (rc != 0)
        return rc < 0 ? CLI_OK : rc;
    cli_apply_threads(&o.c);
    char err[ERRLEN] = "";
    pk_model *m = NULL;
    pk_store *s = NULL;
    pk_status st;
    double t0 = pk_time_now();
    if (o.seed_log != NULL) {
        st = replay_seedlog(&o, &m, err, sizeof err);
    } else {
        rc = cli_open_store(&o.c, &s);
        if (rc != 0)
            return rc;
        st = pk_run_materialize(s, o.run, &m, err, sizeof err);
        if (st == PK_OK && o.write_seed_log != NULL)
            st = pk_export_seedlog(s, o.run, o.write_seed_log, NULL, err, sizeof err);
    }
    double replay_s = pk_time_now() - t0;
    char hex[65];
    if (st == PK_OK)
        st = replay_save(&o, m, hex, err, sizeof err);
    rc = st == PK_OK ? replay_print(hex, replay_s) : cli_fail(o.c.cmd, st, err);
    pk_model_free(m);
    pk_store_close(s);
    return rc;
}

/* ---- runs ----------------------------------------------------------------------------------- */

typedef struct runs_opts {
    cli_common c;
} runs_opts;

#define T runs_opts
static const cli_option runs_table[] = {
    {"--json", CLI_FLAG, CLI_AT(T, c.json), 0, 0, NULL, NULL, "one JSON object per run"},
    CLI_STORE_OPTS(T),
    CLI_END,
};
#undef T

static const cli_command runs_cmd = {
    "runs",
    "runs list [--json]\n"
    "runs show ID [--json]",
    "list: one line per run (newest first); show: status, settings, the last\n"
    "logged steps and the eval points.",
    runs_table,
    2,
    NULL};

/* The sub-command: *show_id is 0 for "list", the run for "show ID". */
static int runs_args(const cli_common *c, int64_t *show_id)
{
    const char *sub = c->n_args > 0 ? c->args[0] : NULL;
    const char *id = c->n_args > 1 ? c->args[1] : NULL;
    int list = sub != NULL && !strcmp(sub, "list"), show = sub != NULL && !strcmp(sub, "show");
    if ((!list && !show) || (show && id == NULL)) {
        cli_error(c->cmd, "use 'runs list' or 'runs show ID'");
        return CLI_USAGE;
    }
    *show_id = 0;
    if (id == NULL)
        return 0;
    char *end = NULL;
    unsigned long long v = id[0] >= '0' && id[0] <= '9' ? strtoull(id, &end, 0) : 0;
    if (v == 0 || *end != '\0' || v > INT64_MAX) {
        cli_error(c->cmd, "run id must be a positive integer (got '%s')", id);
        return CLI_USAGE;
    }
    *show_id = list ? 0 : (int64_t)v;
    return 0;
}

/* A run as JSON; cfg (NULL if the settings did not parse) adds dataset and objective. */
static cJSON *run_json(const pk_run_info *ri, const pk_train_config *cfg)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "run", (double)ri->id);
    cJSON_AddStringToObject(o, "status", ri->status);
    cJSON_AddNumberToObject(o, "steps_done", (double)ri->steps_done);
    cJSON_AddNumberToObject(o, "steps_total", (double)ri->steps_total);
    cJSON_AddNumberToObject(o, "created_at", ri->created_at);
    cJSON_AddStringToObject(o, "base_hash", ri->base_hash);
    if (cfg) {
        cJSON_AddStringToObject(o, "dataset", cfg->dataset);
        cJSON_AddStringToObject(o, "objective", pk_objective_name(cfg->objective));
    }
    return o;
}

static void runs_list_row(pk_store *s, int64_t id, int json)
{
    pk_run_info ri;
    pk_train_config cfg;
    char err[ERRLEN], when[32], steps[32];
    memset(&ri, 0, sizeof ri);
    if (pk_store_run_get(s, id, &ri, NULL, 0) != PK_OK)
        return;
    int ok = pk_train_config_from_json(ri.config_json, &cfg, err, sizeof err) == PK_OK;
    if (json) {
        cli_json_print(run_json(&ri, ok ? &cfg : NULL));
    } else {
        time_t t = (time_t)ri.created_at;
        struct tm tmv;
        gmtime_r(&t, &tmv);
        strftime(when, sizeof when, "%Y-%m-%d %H:%M", &tmv);
        snprintf(steps, sizeof steps, "%lld/%lld", (long long)ri.steps_done,
                 (long long)ri.steps_total);
        printf("%-6lld %-8s %-13s %-20s %s/%s\n", (long long)ri.id, ri.status, steps, when,
               ok ? cfg.dataset : "?", ok ? pk_objective_name(cfg.objective) : "?");
    }
    pk_run_info_clear(&ri);
}

static int runs_list(pk_store *s, const char *cmd, int json)
{
    char serr[512] = ""; /* what the store says on failure */
    int64_t *list = NULL, n = 0;
    if (pk_store_run_list(s, &list, &n, serr, sizeof serr) != PK_OK) {
        cli_error(cmd, "%s", serr);
        return CLI_ERR;
    }
    if (!json)
        printf("%-6s %-8s %-13s %-20s %s\n", "ID", "STATUS", "STEPS", "CREATED",
               "DATASET/OBJECTIVE");
    for (int64_t i = 0; i < n; i++)
        runs_list_row(s, list[i], json);
    free(list);
    return CLI_OK;
}

/* The eval points of a run (none if they cannot be read). */
typedef struct run_evals {
    int64_t *step;
    double *loss, *acc; /* acc NaN: no accuracy (lm) */
    size_t n;
} run_evals;

static void run_evals_read(pk_store *s, int64_t run, run_evals *e)
{
    memset(e, 0, sizeof *e);
    if (pk_store_eval_read(s, run, &e->step, &e->loss, &e->acc, &e->n, NULL, 0) != PK_OK)
        e->n = 0;
}

static void run_evals_free(run_evals *e)
{
    free(e->step);
    free(e->loss);
    free(e->acc);
}

static int runs_show_json(pk_store *s, const pk_run_info *ri)
{
    pk_train_config cfg;
    char err[ERRLEN];
    int ok = pk_train_config_from_json(ri->config_json, &cfg, err, sizeof err) == PK_OK;
    cJSON *o = run_json(ri, ok ? &cfg : NULL);
    cJSON *c = ri->config_json ? cJSON_Parse(ri->config_json) : NULL;
    cJSON_AddItemToObject(o, "config", c ? c : cJSON_CreateNull());
    if (ri->parent_run > 0) { /* lineage (DESIGN 13): the run and step it starts from */
        cJSON *p = cJSON_AddObjectToObject(o, "parent");
        cJSON_AddNumberToObject(p, "run", (double)ri->parent_run);
        cJSON_AddNumberToObject(p, "steps", (double)ri->parent_steps);
    } else {
        cJSON_AddNullToObject(o, "parent"); /* starts from the base model */
    }
    cJSON *ev = cJSON_AddArrayToObject(o, "evals");
    run_evals e;
    run_evals_read(s, ri->id, &e);
    for (size_t i = 0; ev && i < e.n; i++) {
        cJSON *p = cJSON_CreateObject();
        cJSON_AddNumberToObject(p, "step", (double)e.step[i]);
        cli_json_add_finite(p, "loss", e.loss[i]);
        if (!isnan(e.acc[i]))
            cJSON_AddNumberToObject(p, "accuracy", e.acc[i]);
        cJSON_AddItemToArray(ev, p);
    }
    run_evals_free(&e);
    return cli_json_print(o);
}

/* Status and settings, the last five logged steps, then the eval points. */
static void runs_show_text(pk_store *s, const pk_run_info *ri)
{
    printf("run %lld\nstatus %s\nsteps %lld/%lld\nbase_hash %s\nconfig %s\n", (long long)ri->id,
           ri->status, (long long)ri->steps_done, (long long)ri->steps_total, ri->base_hash,
           ri->config_json);
    if (ri->parent_run > 0)
        printf("parent run %lld after %lld steps\n", (long long)ri->parent_run,
               (long long)ri->parent_steps);
    else
        printf("parent none (the base model)\n");
    pk_step_row *rows = NULL;
    size_t nr = 0;
    int64_t from = ri->steps_done > 5 ? ri->steps_done - 5 : 0;
    if (pk_store_steps_read(s, ri->id, from, ri->steps_done, &rows, &nr, NULL, 0) == PK_OK) {
        for (size_t i = 0; i < nr; i++)
            printf("step %lld q %d seed %llu g %.6g loss+ %.6f loss- %.6f lr %.3g\n",
                   (long long)rows[i].step, (int)rows[i].q_index, (unsigned long long)rows[i].seed,
                   (double)rows[i].g, (double)rows[i].loss_plus, (double)rows[i].loss_minus,
                   (double)rows[i].lr);
        free(rows);
    }
    run_evals e;
    run_evals_read(s, ri->id, &e);
    for (size_t i = 0; i < e.n; i++) {
        if (isnan(e.acc[i]))
            printf("eval step %lld loss %.6f\n", (long long)e.step[i], e.loss[i]);
        else
            printf("eval step %lld loss %.6f accuracy %.4f\n", (long long)e.step[i], e.loss[i],
                   e.acc[i]);
    }
    run_evals_free(&e);
}

static int runs_show(pk_store *s, const char *cmd, int64_t id, int json)
{
    char serr[512] = ""; /* what the store says on failure */
    pk_run_info ri;
    memset(&ri, 0, sizeof ri);
    pk_status st = pk_store_run_get(s, id, &ri, serr, sizeof serr);
    if (st != PK_OK) {
        cli_error(cmd, "run %lld: %s", (long long)id, st == PK_ERR_NOTFOUND ? "no such run" : serr);
        return CLI_ERR;
    }
    int rc = CLI_OK;
    if (json)
        rc = runs_show_json(s, &ri);
    else
        runs_show_text(s, &ri);
    pk_run_info_clear(&ri);
    return rc;
}

int cmd_runs(int argc, char **argv)
{
    runs_opts o = {0};
    int64_t show_id = 0;
    int rc = cli_parse(&runs_cmd, argc, argv, &o);
    if (rc == 0)
        rc = runs_args(&o.c, &show_id);
    if (rc != 0)
        return rc < 0 ? CLI_OK : rc;
    pk_store *s = NULL;
    rc = cli_open_store(&o.c, &s);
    if (rc != 0)
        return rc;
    rc = show_id ? runs_show(s, o.c.cmd, show_id, o.c.json) : runs_list(s, o.c.cmd, o.c.json);
    pk_store_close(s);
    return rc;
}

/* ---- mezo-probe ----------------------------------------------------------------------------- */

typedef struct probe_opts {
    cli_common c;
    const char *model;
    const char *ids;
    const char *z_out;
    const char *trainable;
    uint64_t seed;
    float eps;
    int z; /* pk_z_kind */
} probe_opts;

#define T probe_opts
static const cli_option probe_table[] = {
    {"--model", CLI_STR, CLI_AT(T, model), 0, 0, NULL, "DIR", "model (Hugging Face dir)"},
    {"--ids", CLI_STR, CLI_AT(T, ids), 0, 0, NULL, "1,2,3", "token ids (at least 2)"},
    {"--seed", CLI_U64, CLI_AT(T, seed), 0, 0, NULL, "S", "seed of z"},
    {"--eps", CLI_FLOAT, CLI_AT(T, eps), 1e-12, 10, NULL, "E", "perturbation scale"},
    {"--z-out", CLI_STR, CLI_AT(T, z_out), 0, 0, NULL, "FILE",
     "write z of every tensor as float32 safetensors"},
    {"--trainable", CLI_STR, CLI_AT(T, trainable), 0, 0, NULL, "SPEC",
     "all | bitfit | REGEX on tensor names"},
    {"--z", CLI_CHOICE, CLI_AT(T, z), 0, 0, "gaussian|rademacher", NULL,
     "perturbation distribution"},
    CLI_THREADS_OPT(T),
    CLI_END,
};
#undef T

static const cli_command probe_cmd = {
    "mezo-probe",
    "mezo-probe --model DIR --ids 1,2,3 --seed S --eps E [--z-out FILE] [options]",
    "One projected-gradient evaluation (lm objective on the ids, no update). The last\n"
    "line is {\"g\":..,\"loss_plus\":..,\"loss_minus\":..}. --z-out writes z of every\n"
    "tensor (0 outside --trainable) as float32 safetensors with the model's names.",
    probe_table,
    0,
    NULL};

typedef struct zfill_ctx {
    const pk_model *m;
    const uint8_t *mask;
    uint64_t seed;
    pk_z_kind kind;
} zfill_ctx;

static void zfill(void *user, size_t i, size_t start, size_t n, float *buf)
{
    const zfill_ctx *c = user;
    pk_tensor_info ti;
    if (pk_model_tensor(c->m, i, &ti) != PK_OK || (c->mask != NULL && !c->mask[i])) {
        memset(buf, 0, n * sizeof(float));
        return;
    }
    pk_z_fill(c->seed, ti.key, start, n, c->kind, buf);
}

/* Writes z of every tensor (zero outside the mask) to path, named and shaped as the model's. */
static pk_status probe_write_z(const pk_model *m, const uint8_t *mask, const probe_opts *o,
                               char *err, size_t n)
{
    size_t nt = pk_model_n_tensors(m);
    pk_st_entry *e = calloc(nt, sizeof *e);
    if (e == NULL)
        return PK_ERR_NOMEM;
    pk_status st = PK_OK;
    for (size_t i = 0; i < nt && st == PK_OK; i++) {
        pk_tensor_info ti;
        st = pk_model_tensor(m, i, &ti);
        e[i].name = ti.name;
        e[i].dtype = PK_DTYPE_F32;
        e[i].ndim = ti.ndim;
        memcpy(e[i].shape, ti.shape, sizeof e[i].shape);
    }
    zfill_ctx zc = {m, mask, o->seed, (pk_z_kind)o->z};
    if (st == PK_OK)
        st = pk_safetensors_write(o->z_out, e, nt, zfill, &zc, err, n);
    free(e);
    return st;
}

/* Loads the model, evaluates the projected gradient on ids and writes z if asked. */
static pk_status probe_run(const probe_opts *o, const int32_t *ids, int n_ids, double out[3],
                           char *err, size_t n)
{
    pk_model *m = NULL;
    uint8_t *mask = NULL;
    pk_status st = pk_model_load(o->model, pk_model_default_params(), &m, err, n);
    if (st == PK_OK && strcmp(o->trainable, "all") != 0) { /* all: no mask */
        st = pk_mezo_trainable(m, o->trainable, &mask, err, n);
        if (st != PK_OK)
            name_option("--trainable", err, n);
    }
    if (st == PK_OK) {
        int32_t len = n_ids;
        pk_batch b = {1, n_ids, ids, &len, NULL};
        st = pk_mezo_projected_grad_batch(m, mask, o->seed, (pk_z_kind)o->z, o->eps, &b, NULL,
                                          &out[0], &out[1], &out[2]);
        if (st != PK_OK)
            snprintf(err, n, "forward: %s", pk_status_str(st));
    }
    if (st == PK_OK && o->z_out != NULL)
        st = probe_write_z(m, mask, o, err, n);
    free(mask);
    pk_model_free(m);
    return st;
}

int cmd_mezo_probe(int argc, char **argv)
{
    probe_opts o = {.trainable = "all", .eps = 1e-3f, .z = PK_Z_GAUSSIAN};
    int rc = cli_parse(&probe_cmd, argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? CLI_OK : rc;
    if (o.model == NULL || o.ids == NULL) {
        cli_error(o.c.cmd, "--model DIR and --ids 1,2,3 are required");
        return CLI_USAGE;
    }
    int32_t *ids = NULL;
    int n = 0;
    rc = cli_parse_ids(&o.c, "--ids", o.ids, &ids, &n);
    if (rc == 0 && n < 2) {
        cli_error(o.c.cmd, "--ids needs at least 2 tokens (one prediction)");
        rc = CLI_USAGE;
    }
    if (rc == 0) {
        cli_apply_threads(&o.c);
        char err[ERRLEN] = "";
        double r[3] = {0, 0, 0}; /* g, loss+, loss- */
        pk_status st = probe_run(&o, ids, n, r, err, sizeof err);
        if (st == PK_OK) {
            cJSON *j = cJSON_CreateObject();
            cli_json_add_exact(j, "g", r[0]);
            cli_json_add_exact(j, "loss_plus", r[1]);
            cli_json_add_exact(j, "loss_minus", r[2]);
            rc = cli_json_print(j);
        } else {
            rc = cli_fail(o.c.cmd, st, err);
        }
    }
    free(ids);
    return rc;
}

/* ---- bench mezo ----------------------------------------------------------------------------- */

typedef struct bench_opts {
    cli_common c;
    const char *model;
    const char *trainable;
    int batch, seq, steps;
    int perturbations;  /* 0: no sweep timing */
    int perturb_layers; /* 0: no fzoo step timing */
} bench_opts;

#define T bench_opts
static const cli_option bench_table[] = {
    {"--model", CLI_STR, CLI_AT(T, model), 0, 0, NULL, "DIR", "model (Hugging Face dir)"},
    {"--batch", CLI_INT, CLI_AT(T, batch), 1, 4096, NULL, "B", "sequences per batch"},
    {"--seq", CLI_INT, CLI_AT(T, seq), 2, 1 << 20, NULL, "T", "tokens per sequence"},
    {"--steps", CLI_INT, CLI_AT(T, steps), 1, 1000, NULL, "K", "timed steps"},
    {"--trainable", CLI_STR, CLI_AT(T, trainable), 0, 0, NULL, "SPEC",
     "what the steps train, as train --trainable (lora:... attaches an adapter)"},
    {"--perturbations", CLI_INT, CLI_AT(T, perturbations), 1, 4096, NULL, "N",
     "also time N perturbed evaluations in one sweep against N separate passes"},
    {"--perturb-layers", CLI_INT, CLI_AT(T, perturb_layers), 1, 4096, NULL, "K",
     "also time fzoo steps (N of --perturbations, default 8) perturbing K random layers each, "
     "through sweeps against one pass per evaluation"},
    CLI_THREADS_OPT(T),
    CLI_END,
};
#undef T

static const cli_command bench_cmd = {
    "bench mezo",
    "bench mezo --model DIR --batch B --seq T [--threads N] [--steps K] [--trainable SPEC] "
    "[--perturbations N] [--perturb-layers K]",
    "Times MeZO steps on random token ids. One JSON line: step_s (mean per step),\n"
    "forward_s (two unperturbed forward passes), perturb_s (what perturbing adds to\n"
    "them: z generation and blocking; the median over steps of the step's two passes\n"
    "minus two plain passes timed just before), update_s, first_step_s (the first step,\n"
    "untimed above), writable_s (copying the weights into the process's own memory at\n"
    "load, as train does, so the first update takes no copy-on-write faults),\n"
    "peak_rss_bytes, weight_bytes, paired (whether the step's + and - passes ran side\n"
    "by side, sharing each weight block's z: the model pairs them when one pass's\n"
    "activations are at most 3% of the weight bytes), trainable and trainable_params\n"
    "(the spec and the number of parameters the steps perturb and update),\n"
    "gflops_sgemm (cblas_sgemm on the model's own GEMM shapes, same threads),\n"
    "gemm_floor_s (the two passes' GEMM flops at that rate) and floor_ratio (step_s over\n"
    "it). With --perturbations N: perturbations, sweep_eval_s (seconds per perturbed\n"
    "evaluation when N one-sided perturbations of the batch run side by side in one\n"
    "pass over the weights, median over the steps), separate_eval_s (the same N\n"
    "evaluations one pass each), sweep_speedup (their ratio), sweep_same_bits (the two\n"
    "gave identical losses), sweep_width_auto (the passes side by side the memory\n"
    "bound allows by default: together at most 6% of the weight bytes), pass_bytes\n"
    "(activations per pass) and sweep_activation_bytes (the reservation for N side\n"
    "by side). With --perturb-layers K: fzoo steps (N perturbations of K random layers\n"
    "each plus the unperturbed loss, lr 0 so every step sees the same weights), each\n"
    "step once with its evaluations in one sweep (the blocks below each perturbation's\n"
    "lowest perturbed one run once) and once one pass per evaluation, alternating:\n"
    "fzoo_layers, fzoo_sweep_step_s and fzoo_pass_step_s (medians over the steps, with\n"
    "_min_s and _max_s), fzoo_sweep_blocks and fzoo_pass_blocks (transformer-block\n"
    "evaluations per step), fzoo_same_bits (the two gave identical rows) and\n"
    "fzoo_sweep_width (passes side by side, as the memory bound allows).",
    bench_table,
    0,
    NULL};

typedef struct bench_ctx {
    pk_batch b;             /* B rows of T random ids */
    int32_t *ids, *lens;    /* [B * T], [B]: what b points to */
    int32_t *sel_b, *sel_t; /* [B] encoders: each row's last position (the mask) */
    float *logits;          /* [B * 2] */
    float *sweep_logits;    /* [evaluations * B * 2]: bench_sweep_fn's */
    const uint8_t *mask;    /* the trainable tensors (NULL: all) */
} bench_ctx;

/* Causal models: the next-token loss over every position (the lm objective). Encoders
 * (RoBERTa): MeZO's prompt-classification recipe, cross-entropy over two label words at one
 * mask position per row, label 0 for all. */
static pk_status bench_loss(void *user, pk_model *m, int micro, const pk_perturb *pert,
                            double *loss)
{
    bench_ctx *c = user;
    (void)micro;
    if (pk_model_is_causal(m))
        return pk_model_loss(m, &c->b, NULL, pert, NULL, NULL, loss);
    const int32_t labels[2] = {4, 5};
    pk_status st = pk_model_select_logits(m, &c->b, pert, (size_t)c->b.B, c->sel_b, c->sel_t, 2,
                                          labels, c->logits);
    if (st != PK_OK)
        return st;
    for (int p = 0; p < (pert && pert->both ? 2 : 1); p++) {
        const float *lg = c->logits + (size_t)p * 2 * c->b.B;
        double sum = 0;
        for (int r = 0; r < c->b.B; r++) {
            double a = (double)lg[2 * r], b = (double)lg[2 * r + 1], mx = a > b ? a : b;
            sum += mx + log(exp(a - mx) + exp(b - mx)) - a;
        }
        loss[p] = sum / c->b.B;
    }
    return PK_OK;
}

/* B rows of T pseudo-random ids below V (a fixed LCG: every run times the same tokens). */
static pk_status bench_ctx_init(bench_ctx *c, int B, int T, int V)
{
    memset(c, 0, sizeof *c);
    c->ids = malloc((size_t)B * (size_t)T * sizeof *c->ids);
    c->lens = malloc((size_t)B * sizeof *c->lens);
    c->sel_b = malloc((size_t)B * sizeof *c->sel_b);
    c->sel_t = malloc((size_t)B * sizeof *c->sel_t);
    c->logits = malloc((size_t)B * 4 * sizeof *c->logits); /* [2 passes][B][2] */
    if (!c->ids || !c->lens || !c->sel_b || !c->sel_t || !c->logits)
        return PK_ERR_NOMEM;
    uint64_t r = 0x12345678u;
    for (size_t i = 0; i < (size_t)B * (size_t)T; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        c->ids[i] = (int32_t)((r >> 33) % (uint64_t)V);
    }
    for (int i = 0; i < B; i++) {
        c->lens[i] = T;
        c->sel_b[i] = i;
        c->sel_t[i] = T - 1;
    }
    c->b = (pk_batch){B, T, c->ids, c->lens, NULL};
    return PK_OK;
}

static void bench_ctx_free(bench_ctx *c)
{
    free(c->ids);
    free(c->lens);
    free(c->sel_b);
    free(c->sel_t);
    free(c->logits);
    free(c->sweep_logits);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct bench_times {
    double step_s, forward_s, perturb_s, update_s, first_step_s, writable_s; /* seconds */
    size_t trainable_params;
    double gflops_sgemm;                  /* cblas_sgemm on the model's shapes */
    double sweep_eval_s, separate_eval_s; /* --perturbations: per perturbed evaluation */
    int sweep_same_bits;                  /* the sweep's losses equal the separate passes' */
    size_t sweep_activation_bytes;        /* the reservation with N passes side by side */
    double fzoo_s[2][3];   /* --perturb-layers: [sweep, per pass][median, min, max] step s */
    double fzoo_blocks[2]; /* block evaluations per step, [sweep, per pass] */
    int fzoo_same_bits;    /* the two paths' rows are identical */
    size_t rss;            /* peak RSS after the steps, before the others */
} bench_times;

/* The warm-up pass and the first step, timed apart (before pk_model_make_writable, the first
 * update paid a copy-on-write fault for every weight page it wrote). */
static pk_status bench_first_step(pk_model *m, bench_ctx *c, const pk_mezo_params *p, int K,
                                  bench_times *t)
{
    double l = 0, f = 0, u = 0;
    pk_step_row row;
    pk_status st = bench_loss(c, m, 0, NULL, &l); /* reserves activations, faults weights in */
    if (st != PK_OK)
        return st;
    double t0 = pk_time_now();
    st = pk_mezo_step(m, c->mask, p, K, 1, bench_loss, c, &row, &f, &u);
    t->first_step_s = pk_time_now() - t0;
    return st;
}

/* Each iteration times two plain forward passes, then a step: perturb_s is the median over
 * iterations of (the step's two perturbed passes - those two plain passes), a paired
 * difference, so that drift on a shared machine cancels out. */
static pk_status bench_steps(pk_model *m, bench_ctx *c, const pk_mezo_params *p, int K,
                             bench_times *t)
{
    double *perturb = malloc((size_t)K * sizeof *perturb), l = 0;
    pk_status st = perturb ? PK_OK : PK_ERR_NOMEM;
    for (int k = 0; k < K && st == PK_OK; k++) {
        double t0 = pk_time_now(), f = 0, u = 0;
        st = bench_loss(c, m, 0, NULL, &l);
        if (st == PK_OK)
            st = bench_loss(c, m, 0, NULL, &l);
        double plain2 = pk_time_now() - t0;
        pk_step_row row;
        t0 = pk_time_now();
        if (st == PK_OK)
            st = pk_mezo_step(m, c->mask, p, k, 1, bench_loss, c, &row, &f, &u);
        t->step_s += (pk_time_now() - t0) / K;
        t->forward_s += plain2 / K;
        t->update_s += u / K;
        perturb[k] = f - plain2 > 0 ? f - plain2 : 0.0;
    }
    if (st == PK_OK) {
        qsort(perturb, (size_t)K, sizeof *perturb, cmp_double);
        t->perturb_s = K % 2 ? perturb[K / 2] : 0.5 * (perturb[K / 2 - 1] + perturb[K / 2]);
    }
    free(perturb);
    return st;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* The losses of the N evaluations of s (bench_loss's per evaluation), into loss [N]. */
static pk_status bench_sweep_loss(pk_model *m, bench_ctx *c, const pk_sweep *s, float *logits,
                                  double *loss)
{
    if (pk_model_is_causal(m))
        return pk_model_loss_sweep(m, &c->b, NULL, s, NULL, NULL, loss);
    const int32_t labels[2] = {4, 5};
    int E = pk_sweep_evals(s);
    pk_status st = pk_model_select_sweep(m, &c->b, s, (size_t)c->b.B, c->sel_b, c->sel_t, 2, labels,
                                         0, logits);
    for (int e = 0; st == PK_OK && e < E; e++) {
        const float *lg = logits + (size_t)e * 2 * c->b.B;
        double sum = 0;
        for (int r = 0; r < c->b.B; r++) {
            double a = (double)lg[2 * r], b = (double)lg[2 * r + 1], mx = a > b ? a : b;
            sum += mx + log(exp(a - mx) + exp(b - mx)) - a;
        }
        loss[e] = sum / c->b.B;
    }
    return st;
}

/* K rounds of: N one-sided perturbations (fzoo's, seeds of step k) side by side in one sweep
 * (pairing on), then the same N one pass each (pairing off); medians per evaluation. A first
 * round is a warm-up (it reserves the N passes' activations). */
static pk_status bench_sweep(pk_model *m, bench_ctx *c, const pk_mezo_params *p, int N, int K,
                             bench_times *t)
{
    uint64_t *seeds = malloc((size_t)N * sizeof *seeds);
    double *loss = malloc((size_t)2 * N * sizeof *loss);
    double *sw = malloc((size_t)K * sizeof *sw), *sep = malloc((size_t)K * sizeof *sep);
    float *logits = malloc((size_t)N * 2 * (size_t)c->b.B * sizeof *logits);
    pk_status st = seeds && loss && sw && sep && logits ? PK_OK : PK_ERR_NOMEM;
    pk_sweep s = {{0, p->eps, PK_Z_RADEMACHER, c->mask, 0}, N, seeds, NULL, 0};
    t->sweep_same_bits = 1;
    for (int k = -1; k < K && st == PK_OK; k++) {
        for (int i = 0; i < N; i++)
            seeds[i] = pk_mezo_step_seed(p->seed, k < 0 ? 0 : k, i);
        pk_model_set_pairing(m, PK_PAIRING_ON);
        double t0 = pk_time_now();
        st = bench_sweep_loss(m, c, &s, logits, loss);
        double t1 = pk_time_now();
        pk_model_set_pairing(m, PK_PAIRING_OFF);
        if (st == PK_OK)
            st = bench_sweep_loss(m, c, &s, logits, loss + N);
        double t2 = pk_time_now();
        pk_model_set_pairing(m, PK_PAIRING_AUTO);
        if (k < 0) {
            t->sweep_activation_bytes = pk_model_activation_bytes(m);
            continue;
        }
        sw[k] = (t1 - t0) / N;
        sep[k] = (t2 - t1) / N;
        if (memcmp(loss, loss + N, (size_t)N * sizeof *loss) != 0)
            t->sweep_same_bits = 0;
    }
    if (st == PK_OK) {
        t->sweep_eval_s = median(sw, K);
        t->separate_eval_s = median(sep, K);
    }
    free(seeds);
    free(loss);
    free(sw);
    free(sep);
    free(logits);
    return st;
}

static pk_status bench_sweep_fn(void *user, pk_model *m, int micro, const pk_sweep *s, double *loss)
{
    bench_ctx *c = user;
    (void)micro;
    return bench_sweep_loss(m, c, s, c->sweep_logits, loss);
}

/* Median, min and max of v [n] (sorted in place) into out [3]. */
static void spread(double *v, int n, double *out)
{
    out[0] = median(v, n);
    out[1] = v[0];
    out[2] = v[n - 1];
}

/* K rounds of a layer-sampled fzoo step (lr 0: the weights stay) through sweeps, then through one
 * pass per evaluation; the times, block evaluations and whether the rows agree. */
static pk_status bench_fzoo(pk_model *m, bench_ctx *c, int N, int layers, int K, bench_times *t,
                            char *err, size_t errlen)
{
    pk_mezo_params p = pk_mezo_default_params();
    p.estimator = PK_EST_FZOO;
    p.perturbations = N;
    p.perturb_layers = layers;
    p.z = PK_Z_RADEMACHER;
    p.lr = 0.0f;
    pk_mezo_state *est = NULL;
    pk_step_row *rows = calloc(2 * (size_t)N, sizeof *rows);
    double *ts = malloc(2 * (size_t)K * sizeof *ts);
    c->sweep_logits = malloc((size_t)(N + 1) * 2 * (size_t)c->b.B * sizeof *c->sweep_logits);
    pk_status st = rows && ts && c->sweep_logits ? PK_OK : PK_ERR_NOMEM;
    if (st == PK_OK)
        st = pk_mezo_state_new(m, c->mask, &p, &est, err, errlen);
    if (st == PK_ERR_ARG)
        name_option("--perturbations", err, errlen);
    pk_mezo_loss path[2] = {{bench_loss, bench_sweep_fn, c}, {bench_loss, NULL, c}};
    t->fzoo_same_bits = 1;
    for (int k = -1; k < K && st == PK_OK; k++) { /* round -1: a warm-up */
        for (int v = 0; v < 2 && st == PK_OK; v++) {
            uint64_t b0 = pk_model_block_evals(m);
            double t0 = pk_time_now();
            st = pk_mezo_step_sweep(m, c->mask, &p, est, k < 0 ? 0 : k, 1, &path[v],
                                    rows + (size_t)v * N, NULL, NULL);
            if (k >= 0) {
                ts[(size_t)v * K + k] = pk_time_now() - t0;
                t->fzoo_blocks[v] += (double)(pk_model_block_evals(m) - b0) / K;
            }
        }
        if (memcmp(rows, rows + N, (size_t)N * sizeof *rows) != 0)
            t->fzoo_same_bits = 0;
    }
    for (int v = 0; st == PK_OK && v < 2; v++)
        spread(ts + (size_t)v * K, K, t->fzoo_s[v]);
    pk_mezo_state_free(est);
    free(rows);
    free(ts);
    return st;
}

static void bench_print_fzoo(cJSON *j, const bench_opts *o, const pk_model *m, const bench_times *t)
{
    static const char *const path[2] = {"fzoo_sweep_step", "fzoo_pass_step"};
    static const char *const stat[3] = {"_s", "_min_s", "_max_s"};
    int N = o->perturbations > 0 ? o->perturbations : 8;
    char key[64];
    cJSON_AddNumberToObject(j, "fzoo_layers", o->perturb_layers);
    cJSON_AddNumberToObject(j, "fzoo_perturbations", N);
    for (int v = 0; v < 2; v++) {
        for (int i = 0; i < 3; i++) {
            snprintf(key, sizeof key, "%s%s", path[v], stat[i]);
            cli_json_add_rounded(j, key, t->fzoo_s[v][i], 4);
        }
    }
    cli_json_add_rounded(j, "fzoo_sweep_blocks", t->fzoo_blocks[0], 1);
    cli_json_add_rounded(j, "fzoo_pass_blocks", t->fzoo_blocks[1], 1);
    cJSON_AddBoolToObject(j, "fzoo_same_bits", t->fzoo_same_bits);
    cJSON_AddNumberToObject(j, "fzoo_sweep_width",
                            pk_model_sweep_width(m, o->batch, o->seq, N + 1));
}

static void bench_print_sweep(cJSON *j, const bench_opts *o, const pk_model *m,
                              const bench_times *t)
{
    cJSON_AddNumberToObject(j, "perturbations", o->perturbations);
    cli_json_add_rounded(j, "sweep_eval_s", t->sweep_eval_s, 4);
    cli_json_add_rounded(j, "separate_eval_s", t->separate_eval_s, 4);
    cli_json_add_rounded(j, "sweep_speedup",
                         t->sweep_eval_s > 0 ? t->separate_eval_s / t->sweep_eval_s : 0.0, 3);
    cJSON_AddBoolToObject(j, "sweep_same_bits", t->sweep_same_bits);
    cJSON_AddNumberToObject(j, "sweep_width_auto",
                            pk_model_sweep_width(m, o->batch, o->seq, o->perturbations));
    cJSON_AddNumberToObject(j, "pass_bytes", (double)pk_model_pass_bytes(m, o->batch, o->seq));
    cJSON_AddNumberToObject(j, "sweep_activation_bytes", (double)t->sweep_activation_bytes);
}

static int bench_print(const bench_opts *o, const pk_model *m, const bench_times *t)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "model", o->model);
    cJSON_AddNumberToObject(j, "batch", o->batch);
    cJSON_AddNumberToObject(j, "seq", o->seq);
    cJSON_AddNumberToObject(j, "threads", pk_threads_get());
    cJSON_AddNumberToObject(j, "steps", o->steps);
    cli_json_add_rounded(j, "step_s", t->step_s, 4);
    cli_json_add_rounded(j, "forward_s", t->forward_s, 4);
    cli_json_add_rounded(j, "perturb_s", t->perturb_s, 4);
    cli_json_add_rounded(j, "update_s", t->update_s, 4);
    cli_json_add_rounded(j, "first_step_s", t->first_step_s, 4);
    cli_json_add_rounded(j, "writable_s", t->writable_s, 4);
    cJSON_AddNumberToObject(j, "peak_rss_bytes", (double)t->rss);
    cJSON_AddNumberToObject(j, "weight_bytes", (double)pk_model_weight_bytes(m));
    cJSON_AddBoolToObject(j, "paired", pk_model_pairs(m, o->batch, o->seq));
    cJSON_AddStringToObject(j, "trainable", o->trainable);
    cJSON_AddNumberToObject(j, "trainable_params", (double)t->trainable_params);
    /* the floor: two passes' GEMMs (pk_model_forward_flops; encoders run the head at one
     * position per row) at the measured sgemm rate */
    double N = (double)o->batch * o->seq, flops = pk_model_forward_flops(m, o->batch, o->seq);
    if (!pk_model_is_causal(m))
        flops -= 2.0 * (N - o->batch) * pk_model_vocab_size(m) * pk_model_hidden_size(m);
    double floor_s = t->gflops_sgemm > 0 ? 2.0 * flops / (t->gflops_sgemm * 1e9) : 0.0;
    cli_json_add_rounded(j, "gflops_sgemm", t->gflops_sgemm, 2);
    cli_json_add_rounded(j, "gemm_floor_s", floor_s, 4);
    cli_json_add_rounded(j, "floor_ratio", floor_s > 0 ? t->step_s / floor_s : 0.0, 3);
    if (o->perturbations > 0)
        bench_print_sweep(j, o, m, t);
    if (o->perturb_layers > 0)
        bench_print_fzoo(j, o, m, t);
    return cli_json_print(j);
}

/* The trainable mask of --trainable (NULL for all) and the number of parameters it holds. */
static pk_status bench_mask(const bench_opts *o, pk_model *m, uint8_t **mask, bench_times *t,
                            char *err, size_t n)
{
    pk_status st =
        strcmp(o->trainable, "all") ? pk_mezo_trainable(m, o->trainable, mask, err, n) : PK_OK;
    if (st != PK_OK)
        name_option("--trainable", err, n);
    for (size_t i = 0; st == PK_OK && i < pk_model_n_tensors(m); i++) {
        pk_tensor_info ti;
        st = pk_model_tensor(m, i, &ti);
        if (st == PK_OK && (*mask == NULL || (*mask)[i]))
            t->trainable_params += ti.numel;
    }
    return st;
}

/* Loads the model sized for the benchmark's batch, and times it. */
static pk_status bench_run(const bench_opts *o, pk_model **m, bench_times *t, char *err, size_t n)
{
    pk_model_params mp = pk_model_default_params();
    uint8_t *mask = NULL;
    mp.max_batch = o->batch;
    mp.max_seq = o->seq;
    pk_status st = pk_model_load(o->model, mp, m, err, n);
    if (st == PK_OK)
        st = bench_mask(o, *m, &mask, t, err, n);
    if (st != PK_OK)
        return st;
    t->writable_s = pk_time_now(); /* as train does, before the first update */
    st = pk_model_make_writable(*m, mask);
    t->writable_s = pk_time_now() - t->writable_s;
    if (st == PK_OK && o->seq > pk_model_max_positions(*m)) {
        snprintf(err, n, "--seq %d exceeds the model's %d positions", o->seq,
                 pk_model_max_positions(*m));
        st = PK_ERR_ARG;
    }
    bench_ctx bc;
    memset(&bc, 0, sizeof bc);
    pk_mezo_params p = pk_mezo_default_params();
    p.lr = 1e-6f;
    if (st == PK_OK)
        st = bench_ctx_init(&bc, o->batch, o->seq, pk_model_vocab_size(*m));
    bc.mask = mask;
    if (st == PK_OK)
        st = bench_first_step(*m, &bc, &p, o->steps, t);
    if (st == PK_OK)
        st = bench_steps(*m, &bc, &p, o->steps, t);
    t->rss = pk_peak_rss_bytes(); /* the steps' (the sgemm operands and a sweep come after) */
    if (st == PK_OK)
        t->gflops_sgemm = pk_model_bench_sgemm(*m, o->batch, o->seq, 3);
    if (st == PK_OK && o->perturbations > 0)
        st = bench_sweep(*m, &bc, &p, o->perturbations, o->steps, t);
    if (st == PK_OK && o->perturb_layers > 0)
        st = bench_fzoo(*m, &bc, o->perturbations > 0 ? o->perturbations : 8, o->perturb_layers,
                        o->steps, t, err, n);
    if (st != PK_OK && !err[0])
        snprintf(err, n, "forward: %s", pk_status_str(st));
    bench_ctx_free(&bc);
    free(mask);
    return st;
}

int cmd_bench_mezo(int argc, char **argv)
{
    bench_opts o = {.trainable = "all", .batch = 8, .seq = 64, .steps = 2};
    int rc = cli_parse(&bench_cmd, argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? CLI_OK : rc;
    if (o.model == NULL) {
        cli_error(o.c.cmd, "--model DIR is required");
        return CLI_USAGE;
    }
    cli_apply_threads(&o.c);
    pk_model *m = NULL;
    bench_times t;
    memset(&t, 0, sizeof t);
    char err[ERRLEN] = "";
    pk_status st = bench_run(&o, &m, &t, err, sizeof err);
    rc = st == PK_OK ? bench_print(&o, m, &t) : cli_fail(o.c.cmd, st, err);
    pk_model_free(m);
    return rc;
}
