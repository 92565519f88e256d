/* cmd_train.c: the MeZO trainer commands: train, eval, replay, runs (mezo-probe and bench mezo:
 * cmd_bench_mezo.c).
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

/* ---- train ---------------------------------------------------------------------------------- */

typedef struct train_opts {
    cli_common c;
    const char *model;
    int64_t resume; /* 0: a new run */
    const char *lr; /* a rate or "auto"; NULL: the default */
    int lr_guard;   /* --lr-guard: 0 auto (on with --lr auto), 1 on, 2 off */
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
     "learning rate (auto: a short search on a held-back slice first, at most a tenth of a rate "
     "that diverged; a constant-rate run of 90+ steps takes a third of its winner)"},
    {"--lr-guard", CLI_CHOICE, CLI_AT(T, lr_guard), 0, 0, "auto|on|off", NULL,
     "cut the rate to a third when the training loss of the last 25 steps climbs (auto: with "
     "--lr auto)"},
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
    {"--fzoo-baseline", CLI_CHOICE, CLI_AT(T, cfg.mezo.fzoo_mean), 0, 0, "unperturbed|mean", NULL,
     "fzoo: compare each perturbed loss with the unperturbed one (N + 1 evaluations a step) or "
     "with the mean of the N (N evaluations)"},
    {"--hessian-smooth", CLI_FLOAT, CLI_AT(T, cfg.mezo.hessian_smooth), 1e-12, 0.5, NULL, "F",
     "hizoo: weight of each step's Hessian estimate (a larger one grows H and so shrinks the "
     "step)"},
    {"--hessian-budget", CLI_FLOAT, CLI_AT(T, cfg.mezo.hessian_budget), 0, 64, NULL, "F",
     "hizoo: the fp32 Hessian diagonal may take F x the weight bytes"},
    {"--hessian-every", CLI_INT, CLI_AT(T, cfg.mezo.hessian_every), 1, PK_HESSIAN_EVERY_MAX, NULL,
     "K",
     "hizoo: the unperturbed loss and the Hessian update only every K-th step (1: every step, "
     "HiZOO's); the steps between cost 2 evaluations per pair; --hessian-smooth is per update, "
     "not scaled by K"},
    {"--perturb-layers", CLI_INT, CLI_AT(T, cfg.mezo.perturb_layers), 0, 4096, NULL, "K",
     "perturb and update K random layers per perturbation (0: all); raise --lr: spsa about "
     "layers/K, fzoo about 1.5-2x"},
    {"--perturb-stages", CLI_INT, CLI_AT(T, cfg.mezo.perturb_stages), 0, 8192, NULL, "K",
     "perturb and update K random stages (block halves: attention, MLP) of those holding "
     "trainable tensors per perturbation (0: all; not with --perturb-layers)"},
    {"--accumulate", CLI_INT, CLI_AT(T, cfg.accumulate), 1, 4096, NULL, "M",
     "micro-batches per step under one z"},
    {"--clip-g", CLI_FLOAT, CLI_AT(T, cfg.mezo.clip_g), 0, 1e30, NULL, "F",
     "clip the projected gradient to [-F, F] (0: off)"},
    {"--trainable", CLI_BUF, CLI_AT(T, cfg.trainable), 0, 0, NULL, "SPEC",
     "all | bitfit | top:K | top-mlp:K | scales | REGEX on tensor names | "
     "lora[:r=R,alpha=A,seed=S,targets=REGEX]"},
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
static void print_lr_cut(const train_ui *u, const pocketllm_step_info *s);

/* pocketllm_train_params.progress: the bar, then the eval that fell due at this step. */
static int ui_progress(void *user, const pocketllm_step_info *s)
{
    train_ui *u = user;
    pk_progress_set_total(u->p, s->total); /* known here for a resumed run too */
    pk_progress_update(u->p, s->step + 1, 0.5 * (s->loss_plus + s->loss_minus));
    if (s->lr_cut)
        print_lr_cut(u, s);
    if (s->has_eval) {
        ui_eval(u, s->step + 1, s->eval_loss, s->eval_acc); /* evals count steps done */
        print_eval_event(u, s);
    }
    return 0; /* Ctrl-C stops the trainer itself (pk_interrupted) at a step boundary */
}

/* An estimator's own settings given for another estimator: a note each (the run ignores them). */
static void note_estimator_settings(const train_opts *o)
{
    static const struct {
        const char *opt;
        unsigned users; /* the estimators that read it: 1 << pk_estimator */
    } own[] = {{"--perturbations", 1u << PK_EST_FZOO},
               {"--fzoo-baseline", 1u << PK_EST_FZOO},
               {"--spsa-q", 1u << PK_EST_SPSA | 1u << PK_EST_HIZOO},
               {"--hessian-smooth", 1u << PK_EST_HIZOO},
               {"--hessian-budget", 1u << PK_EST_HIZOO},
               {"--hessian-every", 1u << PK_EST_HIZOO}};
    pk_estimator e = o->cfg.mezo.estimator;
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
        if (!(own[i].users >> e & 1u) && cli_given(&o->c, own[i].opt))
            fprintf(stderr, "pocketllm %s: note: --estimator %s does not use %s; ignored\n",
                    o->c.cmd, pk_estimator_name(e), own[i].opt);
}

/* Checks what the table cannot: required options and options that need one another. */
static int train_check(train_opts *o)
{
    const char *cmd = o->c.cmd;
    pk_train_config *cfg = &o->cfg;
    /* a malformed --lr is refused first, as the table's numbers are */
    if (cli_parse_lr(cmd, o->lr, &cfg->mezo.lr, &cfg->lr_auto) != 0)
        return CLI_USAGE;
    if (o->resume) { /* the run's own settings: say which given ones it leaves aside */
        static const char *const keep[] = {"--resume", "--threads",         "--json", "--quiet",
                                           "--home",   "--passphrase-file", NULL};
        char ignored[512] = "";
        for (const cli_option *t = train_table; t->name; t++) {
            int kept = 0;
            for (int k = 0; keep[k]; k++)
                kept |= !strcmp(t->name, keep[k]);
            if (!kept && cli_given(&o->c, t->name) && strlen(ignored) + strlen(t->name) + 3 < 512)
                snprintf(ignored + strlen(ignored), sizeof ignored - strlen(ignored), "%s%s",
                         ignored[0] ? ", " : "", t->name);
        }
        if (ignored[0])
            fprintf(stderr,
                    "pocketllm %s: note: --resume continues run %lld with the settings it was "
                    "started with; ignoring %s (a new run from it: --from-run %lld)\n",
                    cmd, (long long)o->resume, ignored, (long long)o->resume);
        return 0;
    }
    if ((o->model == NULL && cfg->parent_run == 0) || !cfg->dataset[0]) {
        cli_error(cmd, "--model DIR (or --from-run ID) and --dataset NAME are required (or "
                       "--resume ID)");
        return CLI_USAGE;
    }
    note_estimator_settings(o);
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
    if (cfg->mezo.perturb_stages > 0 && cfg->mezo.perturb_layers > 0) {
        cli_error(cmd, "--perturb-stages and --perturb-layers: one of them at most");
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

/* lr_auto's guard cut the rate after step s->step: a line, and with --json {"event":"lr_cut",
 * "step":N (steps done),"lr":R (the rate from here),"loss":L,"lowest":M}. */
static void print_lr_cut(const train_ui *u, const pocketllm_step_info *s)
{
    if (!u->quiet)
        fprintf(stderr,
                "\nstep %lld: the training loss rose to %.4g (lowest %.4g): learning rate cut to "
                "%g\n",
                (long long)s->step + 1, s->cut_loss, s->cut_lowest, s->lr_next);
    if (!u->json)
        return;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "event", "lr_cut");
    cJSON_AddNumberToObject(j, "step", (double)(s->step + 1));
    cJSON_AddNumberToObject(j, "lr", float_short((float)s->lr_next));
    cli_json_add_finite(j, "loss", s->cut_loss);
    cli_json_add_finite(j, "lowest", s->cut_lowest);
    (void)cli_json_print(j);
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
    p.fzoo_baseline = pk_fzoo_baseline_name(cfg->mezo.fzoo_mean);
    p.hessian_smooth = cfg->mezo.hessian_smooth;
    p.hessian_budget = cfg->mezo.hessian_budget;
    p.hessian_every = cfg->mezo.hessian_every;
    p.perturb_layers = cfg->mezo.perturb_layers;
    p.perturb_stages = cfg->mezo.perturb_stages;
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
    cJSON_AddNumberToObject(j, "lr_cuts", res->lr_cuts);
    return cli_json_print(j);
}

/* The estimator settings pk_mezo_state_new checks, by the start of its message (each one of its
 * refusals names its setting first; the library names the problem, the CLI adds the flag). */
static const struct {
    const char *prefix, *opt;
} estimator_msgs[] = {
    {"hizoo: the fp32 Hessian diagonal ", "--hessian-budget"},
    {"hizoo: the Hessian smoothing ", "--hessian-smooth"},
    {"hizoo: the Hessian update interval ", "--hessian-every"},
    {"fzoo needs 2 to 4096 perturbations ", "--perturbations"},
};

/* The option a new run's failure is about, or NULL (the library names the problem, the CLI adds
 * the flag). An estimator setting is told by its message alone (estimator_msgs), whatever the
 * base. --trainable is not: its refusals come from the mask, LoRA and block-scale code (mezo/ and
 * model/) with no common prefix or status, so on the error path only the base is loaded (one
 * token of activations) and --trainable set up again; if that fails with the message the run
 * failed with, --trainable is named. A --from-run base is not looked at for --trainable. */
static const char *train_failed_option(const train_opts *o, const char *msg)
{
    if (o->resume || msg == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof estimator_msgs / sizeof estimator_msgs[0]; i++)
        if (!strncmp(msg, estimator_msgs[i].prefix, strlen(estimator_msgs[i].prefix)))
            return estimator_msgs[i].opt;
    if (!o->cfg.model_dir[0])
        return NULL;
    pk_model_params mp = pk_model_default_params();
    mp.max_batch = 1;
    mp.max_seq = 2;
    pk_model *m = NULL;
    uint8_t *mask = NULL;
    char err[ERRLEN] = "";
    const char *opt = NULL;
    if (pk_model_load(o->cfg.model_dir, mp, &m, err, sizeof err) == PK_OK &&
        pk_mezo_trainable(m, o->cfg.trainable, &mask, err, sizeof err) != PK_OK && err[0] &&
        strstr(msg, err) != NULL)
        opt = "--trainable"; /* else the run failed on something else */
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
    p.lr_guard = o.lr_guard; /* the choices' order is the API's: auto 0, on 1, off 2 */
    p.on_start = ui_start;
    p.progress = ui_progress;
    p.on_lr_search = ui_lr_search;
    p.user = &ui;
    ui.p = pk_progress_new("train", o.resume ? 0 : o.cfg.steps,
                           pk_progress_mode_from_args(o.c.json, quiet));
    pk_interrupt_install();
    pocketllm_train_result res;
    pocketllm_status st = pocketllm_train(h, &p, &res);
    /* a run that failed (a bad option found when the run starts, divergence) ends without the
     * bar's "done" line */
    if (st == POCKETLLM_OK || st == POCKETLLM_ERR_CANCELLED)
        pk_progress_finish(ui.p);
    else
        pk_progress_abandon(ui.p);
    if (st == POCKETLLM_ERR_CANCELLED) {
        if (res.run_id == 0) /* in --lr auto's search: no run to resume */
            fprintf(stderr, "%s\n", pocketllm_errmsg(h));
        else
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
