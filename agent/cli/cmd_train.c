/* cmd_train.c: the MeZO trainer commands: train, eval, replay, runs, mezo-probe, bench mezo.
 * Options are parsed here; the work is in agent/ (pk_mezo.h). */
#include "cli.h"

#include "passphrase.h"

#include "pk_mezo.h"
#include "pk_ui.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ERRLEN 512

/* Options every command accepts beside its own (store access). */
#define STORE_OPTS "--passphrase-file"

static int opt_threads(int argc, char **argv, const char *cmd)
{
    long long t = 0;
    int rc = cli_opt_long(argc, argv, "--threads", &t);
    if (rc < 0)
        return -1;
    if (rc > 0) {
        if (t < 1 || t > 1024) {
            cli_error(cmd, "--threads must be 1..1024");
            return -1;
        }
        pk_threads_set((int)t);
    }
    return 0;
}

static int opt_float(int argc, char **argv, const char *cmd, const char *name, float *out,
                     double lo, double hi)
{
    double v = 0;
    int rc = cli_opt_double(argc, argv, name, &v);
    if (rc < 0)
        return -1;
    if (rc == 0)
        return 0;
    if (!(v >= lo && v <= hi)) {
        cli_error(cmd, "%s %g is out of range [%g, %g]", name, v, lo, hi);
        return -1;
    }
    *out = (float)v;
    return 0;
}

static int opt_int(int argc, char **argv, const char *cmd, const char *name, long long *out,
                   long long lo, long long hi)
{
    long long v = 0;
    int rc = cli_opt_long(argc, argv, name, &v);
    if (rc < 0)
        return -1;
    if (rc == 0)
        return 0;
    if (v < lo || v > hi) {
        cli_error(cmd, "%s %lld is out of range [%lld, %lld]", name, v, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

static int copy_opt(int argc, char **argv, const char *cmd, const char *name, char *out, size_t n)
{
    const char *v = cli_opt(argc, argv, name);
    if (v == NULL)
        return 0;
    if (strlen(v) >= n) {
        cli_error(cmd, "%s is too long (max %zu bytes)", name, n - 1);
        return -1;
    }
    strcpy(out, v);
    return 0;
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end = NULL;
    if (s == NULL || *s == 0 || *s == '-')
        return -1;
    unsigned long long v = strtoull(s, &end, 0);
    if (*end != 0)
        return -1;
    *out = v;
    return 0;
}

/* ---- train ---------------------------------------------------------------------------------- */

static const char *const train_opts[] = {"--model",
                                         "--dataset",
                                         "--objective",
                                         "--eps",
                                         "--lr",
                                         "--schedule",
                                         "--warmup",
                                         "--weight-decay",
                                         "--spsa-q",
                                         "--accumulate",
                                         "--clip-g",
                                         "--trainable",
                                         "--steps",
                                         "--batch",
                                         "--seq-len",
                                         "--seed",
                                         "--eval-every",
                                         "--eval-dataset",
                                         "--early-stop",
                                         "--z",
                                         "--threads",
                                         "--template",
                                         "--labels",
                                         "--resume",
                                         "--checkpoint-every",
                                         STORE_OPTS,
                                         NULL};
static const char *const train_flags[] = {"--json", "--quiet", NULL};

static const char train_help[] =
    "usage: pocketllm train --model DIR --dataset NAME --objective lm|classify|accuracy [options]\n"
    "       pocketllm train --resume RUN_ID [--threads N]\n"
    "\n"
    "Fine-tunes with MeZO (two forward passes per step, no gradients). Each step is logged in\n"
    "the store; Ctrl-C stops at a step boundary and --resume continues bit-exactly.\n"
    "\n"
    "  --eps F            perturbation scale (1e-3)\n"
    "  --lr F             learning rate (1e-5)\n"
    "  --schedule S       constant | linear | cosine (constant)\n"
    "  --warmup N         linear warm-up steps (0)\n"
    "  --weight-decay F   decoupled weight decay, never on biases/norms (0)\n"
    "  --spsa-q Q         perturbations per step, averaged (1)\n"
    "  --accumulate M     micro-batches per step under one z (1)\n"
    "  --clip-g F         clip the projected gradient to [-F, F] (off)\n"
    "  --trainable SPEC   all | bitfit | REGEX on tensor names (all)\n"
    "  --steps N          (1000)    --batch B (8)    --seq-len T (128)    --seed S (0)\n"
    "  --z rademacher     +-1 perturbations instead of Gaussian\n"
    "  --template TEXT    classify: prompt with {text} / {text2} (roberta: with <mask>)\n"
    "  --labels WORDS     classify: comma-separated label words, e.g. \" great, terrible\"\n"
    "  --eval-dataset NAME --eval-every N --early-stop PATIENCE\n"
    "  --checkpoint-every N  sealed weight checkpoints (500)\n"
    "  --threads N        --json (progress as JSON lines)  --quiet\n";

typedef struct train_ui {
    pk_progress *p;
    int quiet;
    int64_t run_id;
} train_ui;

static void ui_start(void *user, int64_t run_id, int64_t first)
{
    train_ui *u = user;
    u->run_id = run_id;
    pk_progress_set_start(u->p, first);
    if (!u->quiet)
        fprintf(stderr, "run %lld: starting at step %lld\n", (long long)run_id, (long long)first);
}

static void ui_step(void *user, int64_t step, int64_t total, const pk_step_row *rows, int q)
{
    train_ui *u = user;
    (void)q;
    pk_progress_set_total(u->p, total); /* known here for a resumed run too */
    pk_progress_update(u->p, step + 1,
                       0.5 * ((double)rows[0].loss_plus + (double)rows[0].loss_minus));
}

static void ui_eval(void *user, int64_t step, double loss, double acc)
{
    train_ui *u = user;
    if (u->quiet)
        return;
    if (isnan(acc))
        fprintf(stderr, "\neval at step %lld: loss %.4f\n", (long long)step, loss);
    else
        fprintf(stderr, "\neval at step %lld: loss %.4f accuracy %.4f\n", (long long)step, loss,
                acc);
}

int cmd_train(int argc, char **argv)
{
    const char *cmd = "train";
    if (cli_help(argc, argv, train_help))
        return CLI_OK;
    if (cli_check(argc, argv, train_opts, train_flags))
        return CLI_USAGE;
    if (opt_threads(argc, argv, cmd))
        return CLI_USAGE;
    pk_train_config cfg = pk_train_config_default();
    long long resume = 0, v;
    if (opt_int(argc, argv, cmd, "--resume", &resume, 1, LLONG_MAX))
        return CLI_USAGE;
    if (resume == 0) {
        const char *model = cli_opt(argc, argv, "--model");
        const char *ds = cli_opt(argc, argv, "--dataset");
        const char *obj = cli_opt(argc, argv, "--objective");
        if (model == NULL || ds == NULL) {
            cli_error(cmd, "--model DIR and --dataset NAME are required (or --resume ID)");
            return CLI_USAGE;
        }
        if (realpath(model, cfg.model_dir) == NULL) {
            cli_error(cmd, "--model %s: no such directory", model);
            return CLI_ERR;
        }
        if (copy_opt(argc, argv, cmd, "--dataset", cfg.dataset, sizeof cfg.dataset) ||
            copy_opt(argc, argv, cmd, "--eval-dataset", cfg.eval_dataset,
                     sizeof cfg.eval_dataset) ||
            copy_opt(argc, argv, cmd, "--trainable", cfg.trainable, sizeof cfg.trainable) ||
            copy_opt(argc, argv, cmd, "--template", cfg.template_, sizeof cfg.template_) ||
            copy_opt(argc, argv, cmd, "--labels", cfg.labels, sizeof cfg.labels))
            return CLI_USAGE;
        if (obj != NULL && pk_objective_parse(obj, &cfg.objective)) {
            cli_error(cmd, "--objective must be lm, classify or accuracy (got '%s')", obj);
            return CLI_USAGE;
        }
        const char *sch = cli_opt(argc, argv, "--schedule");
        if (sch != NULL && pk_schedule_parse(sch, &cfg.mezo.schedule)) {
            cli_error(cmd, "--schedule must be constant, linear or cosine (got '%s')", sch);
            return CLI_USAGE;
        }
        const char *z = cli_opt(argc, argv, "--z");
        if (z != NULL) {
            if (!strcmp(z, "rademacher"))
                cfg.mezo.z = PK_Z_RADEMACHER;
            else if (!strcmp(z, "gaussian"))
                cfg.mezo.z = PK_Z_GAUSSIAN;
            else {
                cli_error(cmd, "--z must be gaussian or rademacher (got '%s')", z);
                return CLI_USAGE;
            }
        }
        const char *seed = cli_opt(argc, argv, "--seed");
        if (seed != NULL && parse_u64(seed, &cfg.mezo.seed)) {
            cli_error(cmd, "--seed must be an unsigned 64-bit integer (got '%s')", seed);
            return CLI_USAGE;
        }
        if (opt_float(argc, argv, cmd, "--eps", &cfg.mezo.eps, 1e-8, 10.0) ||
            opt_float(argc, argv, cmd, "--lr", &cfg.mezo.lr, 0.0, 100.0) ||
            opt_float(argc, argv, cmd, "--weight-decay", &cfg.mezo.weight_decay, 0.0, 100.0) ||
            opt_float(argc, argv, cmd, "--clip-g", &cfg.mezo.clip_g, 0.0, 1e30))
            return CLI_USAGE;
        v = cfg.mezo.warmup;
        if (opt_int(argc, argv, cmd, "--warmup", &v, 0, 1LL << 40))
            return CLI_USAGE;
        cfg.mezo.warmup = v;
        v = cfg.mezo.spsa_q;
        if (opt_int(argc, argv, cmd, "--spsa-q", &v, 1, 1024))
            return CLI_USAGE;
        cfg.mezo.spsa_q = (int)v;
        v = cfg.accumulate;
        if (opt_int(argc, argv, cmd, "--accumulate", &v, 1, 4096))
            return CLI_USAGE;
        cfg.accumulate = (int)v;
        v = cfg.steps;
        if (opt_int(argc, argv, cmd, "--steps", &v, 1, 1LL << 40))
            return CLI_USAGE;
        cfg.steps = v;
        v = cfg.batch;
        if (opt_int(argc, argv, cmd, "--batch", &v, 1, 65536))
            return CLI_USAGE;
        cfg.batch = (int)v;
        v = cfg.seq_len;
        if (opt_int(argc, argv, cmd, "--seq-len", &v, 2, 1 << 20))
            return CLI_USAGE;
        cfg.seq_len = (int)v;
        v = cfg.eval_every;
        if (opt_int(argc, argv, cmd, "--eval-every", &v, 0, 1LL << 40))
            return CLI_USAGE;
        cfg.eval_every = v;
        v = cfg.early_stop;
        if (opt_int(argc, argv, cmd, "--early-stop", &v, 0, 1 << 20))
            return CLI_USAGE;
        cfg.early_stop = (int)v;
        v = cfg.checkpoint_every;
        if (opt_int(argc, argv, cmd, "--checkpoint-every", &v, 0, 1LL << 40))
            return CLI_USAGE;
        cfg.checkpoint_every = v;
        if (cfg.eval_every > 0 && !cfg.eval_dataset[0]) {
            cli_error(cmd, "--eval-every needs --eval-dataset NAME");
            return CLI_USAGE;
        }
        if (cfg.early_stop > 0 && cfg.eval_every == 0) {
            cli_error(cmd, "--early-stop needs --eval-every N and --eval-dataset NAME");
            return CLI_USAGE;
        }
        cfg.mezo.steps_total = cfg.steps;
    }
    pk_store *s = NULL;
    int rc = cli_open_store(argc, argv, &s);
    if (rc != 0)
        return rc;
    int quiet = cli_flag(argc, argv, "--quiet");
    train_ui ui = {NULL, quiet, 0};
    pk_train_hooks hooks = {&ui, ui_step, ui_eval, ui_start};
    ui.p = pk_progress_new("train", resume ? 0 : cfg.steps,
                           pk_progress_mode_from_args(cli_flag(argc, argv, "--json"), quiet));
    pk_interrupt_install();
    pk_train_result res;
    char err[ERRLEN] = "";
    pk_status st = pk_train(s, &cfg, resume, &hooks, &res, err, sizeof err);
    pk_progress_finish(ui.p);
    pk_store_close(s);
    if (st != PK_OK) {
        cli_error(cmd, "%s", err[0] ? err : pk_status_str(st));
        return CLI_ERR;
    }
    if (res.interrupted) {
        fprintf(stderr,
                "interrupted after %lld steps; resume with: pocketllm train --resume %lld\n",
                (long long)res.steps_done, (long long)res.run_id);
        return CLI_INTERRUPTED;
    }
    if (!quiet && res.stopped_early)
        fprintf(stderr, "early stop: no eval improvement at step %lld\n",
                (long long)res.steps_done);
    char loss[32] = "null"; /* no step ran (--resume of a finished run): NaN is not JSON */
    if (isfinite(res.last_loss))
        snprintf(loss, sizeof loss, "%.6g", res.last_loss);
    printf("{\"run\":%lld,\"steps\":%lld,\"loss\":%s,\"weights\":\"%s\",\"forward_s\":%.3f,"
           "\"update_s\":%.3f}\n",
           (long long)res.run_id, (long long)res.steps_done, loss, res.final_hash, res.forward_s,
           res.update_s);
    return CLI_OK;
}

/* ---- eval ----------------------------------------------------------------------------------- */

static const char *const eval_opts[] = {"--model",    "--run",    "--dataset", "--objective",
                                        "--template", "--labels", "--batch",   "--seq-len",
                                        "--threads",  STORE_OPTS, NULL};

int cmd_eval(int argc, char **argv)
{
    const char *cmd = "eval";
    if (cli_help(argc, argv,
                 "usage: pocketllm eval (--model DIR | --run ID) --dataset NAME\n"
                 "       [--objective lm|classify|accuracy --template T --labels L --batch B "
                 "--seq-len T --threads N]\n\n"
                 "Loss, perplexity (lm) and accuracy (classify) of a model or of a run's weights.\n"
                 "With --run the run's objective, template and labels are the defaults.\n"))
        return CLI_OK;
    if (cli_check(argc, argv, eval_opts, NULL) || opt_threads(argc, argv, cmd))
        return CLI_USAGE;
    long long run = 0, v;
    if (opt_int(argc, argv, cmd, "--run", &run, 1, LLONG_MAX))
        return CLI_USAGE;
    const char *model = cli_opt(argc, argv, "--model");
    const char *ds = cli_opt(argc, argv, "--dataset");
    if ((model == NULL && run == 0) || ds == NULL) {
        cli_error(cmd, "--dataset NAME and one of --model DIR / --run ID are required");
        return CLI_USAGE;
    }
    pk_train_config cfg = pk_train_config_default();
    pk_store *s = NULL;
    pk_model *m = NULL;
    pk_objective *o = NULL;
    char err[ERRLEN] = "";
    pk_status st = PK_OK;
    int rc = cli_open_store(argc, argv, &s);
    if (rc != 0)
        return rc;
    rc = CLI_ERR;
    if (run > 0) {
        pk_run_info ri;
        st = pk_run_load_config(s, run, &ri, &cfg, err, sizeof err);
        pk_run_info_clear(&ri);
        if (st == PK_OK)
            st = pk_run_materialize(s, run, &m, err, sizeof err);
    } else {
        if (realpath(model, cfg.model_dir) == NULL) {
            cli_error(cmd, "--model %s: no such directory", model);
            goto out;
        }
        st = pk_model_load(cfg.model_dir, pk_model_default_params(), &m, err, sizeof err);
    }
    if (st != PK_OK)
        goto fail;
    const char *obj = cli_opt(argc, argv, "--objective");
    if (obj != NULL && pk_objective_parse(obj, &cfg.objective)) {
        cli_error(cmd, "--objective must be lm, classify or accuracy (got '%s')", obj);
        rc = CLI_USAGE;
        goto out;
    }
    v = cfg.batch;
    if (copy_opt(argc, argv, cmd, "--template", cfg.template_, sizeof cfg.template_) ||
        copy_opt(argc, argv, cmd, "--labels", cfg.labels, sizeof cfg.labels) ||
        opt_int(argc, argv, cmd, "--batch", &v, 1, 65536)) {
        rc = CLI_USAGE;
        goto out;
    }
    cfg.batch = (int)v;
    v = cfg.seq_len;
    if (opt_int(argc, argv, cmd, "--seq-len", &v, 2, 1 << 20)) {
        rc = CLI_USAGE;
        goto out;
    }
    cfg.seq_len = (int)v;
    st = pk_objective_from_store(s, ds, m, cfg.model_dir, &cfg, &o, err, sizeof err);
    if (st != PK_OK)
        goto fail;
    double loss = 0, acc = 0;
    st = pk_objective_eval(o, m, (size_t)cfg.batch, &loss, &acc);
    if (st != PK_OK) {
        snprintf(err, sizeof err, "evaluating: %s", pk_status_str(st));
        goto fail;
    }
    printf("{\"dataset\":\"%s\",\"examples\":%zu,\"objective\":\"%s\",\"loss\":%.6f", ds,
           pk_objective_size(o), pk_objective_name(cfg.objective), loss);
    if (cfg.objective == PK_OBJ_LM)
        printf(",\"perplexity\":%.4f", exp(loss));
    if (!isnan(acc))
        printf(",\"accuracy\":%.4f", acc);
    printf("}\n");
    rc = CLI_OK;
    goto out;
fail:
    cli_error(cmd, "%s", err[0] ? err : pk_status_str(st));
out:
    pk_objective_free(o);
    pk_model_free(m);
    pk_store_close(s);
    return rc;
}

/* ---- replay --------------------------------------------------------------------------------- */

static const char *const replay_opts[] = {
    "--run", "--out", "--seed-log", "--model", "--write-seed-log", "--threads", STORE_OPTS, NULL};

static pk_dtype model_dtype(const pk_model *m)
{
    pk_tensor_info ti;
    if (pk_model_n_tensors(m) > 0 && pk_model_tensor(m, 0, &ti) == PK_OK)
        return ti.dtype;
    return PK_DTYPE_F32;
}

int cmd_replay(int argc, char **argv)
{
    const char *cmd = "replay";
    if (cli_help(
            argc, argv,
            "usage: pocketllm replay --run ID --out DIR [--write-seed-log FILE] [--threads N]\n"
            "       pocketllm replay --seed-log FILE --model DIR --out DIR2 [--threads N]\n\n"
            "Rebuilds fine-tuned weights from the base model and a step log (bit-identical to\n"
            "the live run with any --threads) and writes a safetensors model directory.\n"))
        return CLI_OK;
    if (cli_check(argc, argv, replay_opts, NULL) || opt_threads(argc, argv, cmd))
        return CLI_USAGE;
    long long run = 0;
    if (opt_int(argc, argv, cmd, "--run", &run, 1, LLONG_MAX))
        return CLI_USAGE;
    const char *outdir = cli_opt(argc, argv, "--out");
    const char *seedlog = cli_opt(argc, argv, "--seed-log");
    const char *model = cli_opt(argc, argv, "--model");
    const char *write_log = cli_opt(argc, argv, "--write-seed-log");
    char err[ERRLEN] = "";
    pk_model *m = NULL;
    pk_store *s = NULL;
    pk_status st = PK_OK;
    int rc = CLI_ERR;
    if ((run > 0) == (seedlog != NULL) || (outdir == NULL && write_log == NULL) ||
        (seedlog != NULL && (model == NULL || outdir == NULL))) {
        cli_error(cmd, "use --run ID --out DIR, or --seed-log FILE --model DIR --out DIR");
        return CLI_USAGE;
    }
    double t0 = pk_time_now();
    if (seedlog != NULL) {
        pk_seedlog log;
        st = pk_seedlog_read(seedlog, &log, err, sizeof err);
        if (st != PK_OK)
            goto fail;
        st = pk_model_load(model, pk_model_default_params(), &m, err, sizeof err);
        if (st == PK_OK)
            st = pk_seedlog_replay(m, &log, err, sizeof err);
        pk_seedlog_clear(&log);
        if (st != PK_OK)
            goto fail;
    } else {
        rc = cli_open_store(argc, argv, &s);
        if (rc != 0)
            return rc;
        rc = CLI_ERR;
        st = pk_run_materialize(s, run, &m, err, sizeof err);
        if (st != PK_OK)
            goto fail;
        if (write_log != NULL) {
            pk_run_info ri;
            pk_train_config cfg;
            pk_seedlog log;
            memset(&log, 0, sizeof log);
            st = pk_run_load_config(s, run, &ri, &cfg, err, sizeof err);
            if (st == PK_OK)
                st = pk_store_steps_read(s, run, 0, ri.steps_done, &log.rows, &log.n_rows);
            if (st == PK_OK) {
                memcpy(log.base_hash, ri.base_hash, sizeof log.base_hash);
                log.z = cfg.mezo.z;
                log.weight_decay = cfg.mezo.weight_decay;
                snprintf(log.trainable, sizeof log.trainable, "%s", cfg.trainable);
                st = pk_seedlog_write(write_log, &log, err, sizeof err);
            }
            pk_seedlog_clear(&log);
            pk_run_info_clear(&ri);
            if (st != PK_OK)
                goto fail;
        }
    }
    double t1 = pk_time_now();
    if (outdir != NULL) {
        st = pk_model_save(m, outdir, model_dtype(m), err, sizeof err);
        if (st != PK_OK)
            goto fail;
    }
    char hex[65];
    st = pk_weights_hash(m, hex);
    if (st != PK_OK)
        goto fail;
    printf("{\"weights\":\"%s\",\"replay_s\":%.3f,\"threads\":%d}\n", hex, t1 - t0,
           pk_threads_get());
    rc = CLI_OK;
    goto out;
fail:
    cli_error(cmd, "%s", err[0] ? err : pk_status_str(st));
out:
    pk_model_free(m);
    pk_store_close(s);
    return rc;
}

/* ---- runs ----------------------------------------------------------------------------------- */

static const char *const runs_opts[] = {STORE_OPTS, NULL};

/* One JSON line for a run; evals (owned, may be NULL) and the settings only with `full`. */
static void runs_json_line(const pk_run_info *ri, const pk_train_config *cfg, cJSON *evals,
                           int full)
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
    if (full) {
        cJSON *c = ri->config_json ? cJSON_Parse(ri->config_json) : NULL;
        cJSON_AddItemToObject(o, "config", c ? c : cJSON_CreateNull());
        cJSON_AddItemToObject(o, "evals", evals ? evals : cJSON_CreateArray());
    } else {
        cJSON_Delete(evals);
    }
    char *txt = cJSON_PrintUnformatted(o);
    if (txt)
        puts(txt);
    free(txt);
    cJSON_Delete(o);
}

int cmd_runs(int argc, char **argv)
{
    const char *cmd = "runs";
    if (cli_help(argc, argv,
                 "usage: pocketllm runs list [--json]\n"
                 "       pocketllm runs show ID [--json]\n"
                 "list: one line per run (newest first); show: status, settings, the last\n"
                 "logged steps and the eval points. --json: one JSON object per run.\n"))
        return CLI_OK;
    static const char *const runs_flags[] = {"--json", NULL};
    if (cli_check(argc, argv, runs_opts, runs_flags))
        return CLI_USAGE;
    int json = cli_flag(argc, argv, "--json");
    const char *sub = cli_positional(argc, argv, 0, runs_opts);
    const char *ids = cli_positional(argc, argv, 1, runs_opts);
    if (sub == NULL || (strcmp(sub, "list") != 0 && strcmp(sub, "show") != 0) ||
        (!strcmp(sub, "show") && ids == NULL)) {
        cli_error(cmd, "use 'runs list' or 'runs show ID'");
        return CLI_USAGE;
    }
    uint64_t show_id = 0;
    if (ids != NULL && (parse_u64(ids, &show_id) || show_id == 0 || show_id > INT64_MAX)) {
        cli_error(cmd, "run id must be a positive integer (got '%s')", ids);
        return CLI_USAGE;
    }
    pk_store *s = NULL;
    int rc = cli_open_store(argc, argv, &s);
    if (rc != 0)
        return rc;
    rc = CLI_ERR;
    pk_status st;
    if (!strcmp(sub, "list")) {
        int64_t *list = NULL, n = 0;
        st = pk_store_run_list(s, &list, &n);
        if (st != PK_OK) {
            cli_error(cmd, "%s", pk_store_errmsg(s));
            goto out;
        }
        if (!json)
            printf("%-6s %-8s %-13s %-20s %s\n", "ID", "STATUS", "STEPS", "CREATED",
                   "DATASET/OBJECTIVE");
        for (int64_t i = 0; i < n; i++) {
            pk_run_info ri;
            pk_train_config cfg;
            char err[ERRLEN], when[32], steps[32];
            memset(&ri, 0, sizeof ri);
            if (pk_store_run_get(s, list[i], &ri) != PK_OK)
                continue;
            int ok = pk_train_config_from_json(ri.config_json, &cfg, err, sizeof err) == PK_OK;
            time_t t = (time_t)ri.created_at;
            struct tm tmv;
            gmtime_r(&t, &tmv);
            strftime(when, sizeof when, "%Y-%m-%d %H:%M", &tmv);
            snprintf(steps, sizeof steps, "%lld/%lld", (long long)ri.steps_done,
                     (long long)ri.steps_total);
            if (json)
                runs_json_line(&ri, ok ? &cfg : NULL, NULL, 0);
            else
                printf("%-6lld %-8s %-13s %-20s %s/%s\n", (long long)ri.id, ri.status, steps, when,
                       ok ? cfg.dataset : "?", ok ? pk_objective_name(cfg.objective) : "?");
            pk_run_info_clear(&ri);
        }
        free(list);
        rc = CLI_OK;
        goto out;
    }
    pk_run_info ri;
    memset(&ri, 0, sizeof ri);
    st = pk_store_run_get(s, (int64_t)show_id, &ri);
    if (st != PK_OK) {
        cli_error(cmd, "run %llu: %s", (unsigned long long)show_id,
                  st == PK_ERR_NOTFOUND ? "no such run" : pk_store_errmsg(s));
        goto out;
    }
    if (json) {
        int64_t *es = NULL;
        double *el = NULL, *ea = NULL;
        size_t ne = 0;
        pk_train_config cfg;
        char cerr[ERRLEN];
        int ok = pk_train_config_from_json(ri.config_json, &cfg, cerr, sizeof cerr) == PK_OK;
        if (pk_store_eval_read(s, ri.id, &es, &el, &ea, &ne) != PK_OK)
            ne = 0;
        cJSON *ev = cJSON_CreateArray();
        for (size_t i = 0; ev && i < ne; i++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "step", (double)es[i]);
            cJSON_AddNumberToObject(o, "loss", el[i]);
            if (!isnan(ea[i]))
                cJSON_AddNumberToObject(o, "accuracy", ea[i]);
            cJSON_AddItemToArray(ev, o);
        }
        runs_json_line(&ri, ok ? &cfg : NULL, ev, 1);
        free(es);
        free(el);
        free(ea);
        pk_run_info_clear(&ri);
        rc = CLI_OK;
        goto out;
    }
    printf("run %lld\nstatus %s\nsteps %lld/%lld\nbase_hash %s\nconfig %s\n", (long long)ri.id,
           ri.status, (long long)ri.steps_done, (long long)ri.steps_total, ri.base_hash,
           ri.config_json);
    pk_step_row *rows = NULL;
    size_t nr = 0;
    int64_t from = ri.steps_done > 5 ? ri.steps_done - 5 : 0;
    if (pk_store_steps_read(s, ri.id, from, ri.steps_done, &rows, &nr) == PK_OK) {
        for (size_t i = 0; i < nr; i++)
            printf("step %lld q %d seed %llu g %.6g loss+ %.6f loss- %.6f lr %.3g\n",
                   (long long)rows[i].step, (int)rows[i].q_index, (unsigned long long)rows[i].seed,
                   (double)rows[i].g, (double)rows[i].loss_plus, (double)rows[i].loss_minus,
                   (double)rows[i].lr);
        free(rows);
    }
    int64_t *es = NULL;
    double *el = NULL, *ea = NULL;
    size_t ne = 0;
    if (pk_store_eval_read(s, ri.id, &es, &el, &ea, &ne) == PK_OK) {
        for (size_t i = 0; i < ne; i++) {
            if (isnan(ea[i]))
                printf("eval step %lld loss %.6f\n", (long long)es[i], el[i]);
            else
                printf("eval step %lld loss %.6f accuracy %.4f\n", (long long)es[i], el[i], ea[i]);
        }
        free(es);
        free(el);
        free(ea);
    }
    pk_run_info_clear(&ri);
    rc = CLI_OK;
out:
    pk_store_close(s);
    return rc;
}

/* ---- mezo-probe ----------------------------------------------------------------------------- */

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

static const char *const probe_opts[] = {"--model",     "--ids", "--seed",    "--eps", "--z-out",
                                         "--trainable", "--z",   "--threads", NULL};

int cmd_mezo_probe(int argc, char **argv)
{
    const char *cmd = "mezo-probe";
    if (cli_help(
            argc, argv,
            "usage: pocketllm mezo-probe --model DIR --ids 1,2,3 --seed S --eps E\n"
            "       [--z-out FILE] [--trainable SPEC] [--z rademacher] [--threads N]\n\n"
            "One projected-gradient evaluation (lm objective on the ids, no update). The last\n"
            "line is {\"g\":..,\"loss_plus\":..,\"loss_minus\":..}. --z-out writes z of every\n"
            "tensor (0 outside --trainable) as float32 safetensors with the model's names.\n"))
        return CLI_OK;
    if (cli_check(argc, argv, probe_opts, NULL) || opt_threads(argc, argv, cmd))
        return CLI_USAGE;
    const char *model = cli_opt(argc, argv, "--model");
    const char *ids_s = cli_opt(argc, argv, "--ids");
    const char *seed_s = cli_opt(argc, argv, "--seed");
    const char *zout = cli_opt(argc, argv, "--z-out");
    const char *spec = cli_opt(argc, argv, "--trainable");
    const char *zk = cli_opt(argc, argv, "--z");
    float eps = 1e-3f;
    uint64_t seed = 0;
    pk_z_kind kind = PK_Z_GAUSSIAN;
    if (model == NULL || ids_s == NULL) {
        cli_error(cmd, "--model DIR and --ids 1,2,3 are required");
        return CLI_USAGE;
    }
    if (seed_s != NULL && parse_u64(seed_s, &seed)) {
        cli_error(cmd, "--seed must be an unsigned 64-bit integer (got '%s')", seed_s);
        return CLI_USAGE;
    }
    if (opt_float(argc, argv, cmd, "--eps", &eps, 1e-12, 10.0))
        return CLI_USAGE;
    if (zk != NULL) {
        if (!strcmp(zk, "rademacher"))
            kind = PK_Z_RADEMACHER;
        else if (strcmp(zk, "gaussian") != 0) {
            cli_error(cmd, "--z must be gaussian or rademacher (got '%s')", zk);
            return CLI_USAGE;
        }
    }
    size_t n = 1;
    for (const char *p = ids_s; *p; p++)
        n += *p == ',';
    int32_t *ids = malloc(n * sizeof(int32_t));
    uint8_t *mask = NULL;
    pk_model *m = NULL;
    char err[ERRLEN] = "";
    int rc = CLI_ERR;
    pk_status st = PK_OK;
    if (ids == NULL)
        goto out;
    {
        const char *p = ids_s;
        for (size_t i = 0; i < n; i++) {
            char *end = NULL;
            long v = strtol(p, &end, 10);
            if (end == p || (*end != ',' && *end != 0) || v < 0 || v > INT32_MAX) {
                cli_error(cmd, "--ids: '%s' is not a comma-separated list of token ids", ids_s);
                rc = CLI_USAGE;
                goto out;
            }
            ids[i] = (int32_t)v;
            p = end + (*end == ',');
        }
    }
    if (n < 2) {
        cli_error(cmd, "--ids needs at least 2 tokens (one prediction)");
        rc = CLI_USAGE;
        goto out;
    }
    st = pk_model_load(model, pk_model_default_params(), &m, err, sizeof err);
    if (st != PK_OK)
        goto fail;
    if (spec != NULL) {
        st = pk_mezo_trainable(m, spec, &mask, err, sizeof err);
        if (st != PK_OK)
            goto fail;
    }
    int32_t len = (int32_t)n;
    pk_batch b = {1, (int)n, ids, &len, NULL};
    double g = 0, lp = 0, lm = 0;
    st = pk_mezo_projected_grad_batch(m, mask, seed, kind, eps, &b, NULL, &g, &lp, &lm);
    if (st != PK_OK) {
        snprintf(err, sizeof err, "forward: %s", pk_status_str(st));
        goto fail;
    }
    if (zout != NULL) {
        size_t nt = pk_model_n_tensors(m);
        pk_st_entry *e = calloc(nt, sizeof *e);
        if (e == NULL)
            goto out;
        for (size_t i = 0; i < nt; i++) {
            pk_tensor_info ti;
            st = pk_model_tensor(m, i, &ti);
            if (st != PK_OK)
                break;
            e[i].name = ti.name;
            e[i].dtype = PK_DTYPE_F32;
            e[i].ndim = ti.ndim;
            memcpy(e[i].shape, ti.shape, sizeof e[i].shape);
        }
        zfill_ctx zc = {m, mask, seed, kind};
        if (st == PK_OK)
            st = pk_safetensors_write(zout, e, nt, zfill, &zc, err, sizeof err);
        free(e);
        if (st != PK_OK)
            goto fail;
    }
    printf("{\"g\":%.17g,\"loss_plus\":%.17g,\"loss_minus\":%.17g}\n", g, lp, lm);
    rc = CLI_OK;
    goto out;
fail:
    cli_error(cmd, "%s", err[0] ? err : pk_status_str(st));
out:
    free(ids);
    free(mask);
    pk_model_free(m);
    return rc;
}

/* ---- bench mezo ----------------------------------------------------------------------------- */

typedef struct bench_ctx {
    pk_batch b;
    int32_t *sel_b, *sel_t; /* [B] encoders: each row's last position (the mask) */
    float *logits;          /* [B * 2] */
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

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static const char *const bench_opts[] = {"--model",   "--batch", "--seq",
                                         "--threads", "--steps", NULL};

int cmd_bench_mezo(int argc, char **argv)
{
    const char *cmd = "bench mezo";
    if (cli_help(
            argc, argv,
            "usage: pocketllm bench mezo --model DIR --batch B --seq T [--threads N] "
            "[--steps K]\n\n"
            "Times MeZO steps on random token ids. One JSON line: step_s (mean per step),\n"
            "forward_s (two unperturbed forward passes), perturb_s (what perturbing adds to\n"
            "them: z generation and blocking; the median over steps of the step's two passes\n"
            "minus two plain passes timed just before), update_s, first_step_s (the first step,\n"
            "untimed above), writable_s (copying the weights into the process's own memory at\n"
            "load, as train does, so the first update takes no copy-on-write faults),\n"
            "peak_rss_bytes, weight_bytes, paired (whether the step's + and - passes ran side\n"
            "by side, sharing each weight block's z: the model pairs them when one pass's\n"
            "activations are at most 3% of the weight bytes).\n"))
        return CLI_OK;
    if (cli_check(argc, argv, bench_opts, NULL) || opt_threads(argc, argv, cmd))
        return CLI_USAGE;
    const char *model = cli_opt(argc, argv, "--model");
    long long B = 8, T = 64, K = 2;
    if (model == NULL) {
        cli_error(cmd, "--model DIR is required");
        return CLI_USAGE;
    }
    if (opt_int(argc, argv, cmd, "--batch", &B, 1, 4096) ||
        opt_int(argc, argv, cmd, "--seq", &T, 2, 1 << 20) ||
        opt_int(argc, argv, cmd, "--steps", &K, 1, 1000))
        return CLI_USAGE;
    pk_model *m = NULL;
    char err[ERRLEN] = "";
    int32_t *ids = NULL, *lens = NULL;
    int rc = CLI_ERR;
    bench_ctx bc;
    memset(&bc, 0, sizeof bc);
    double *perturb = NULL; /* [K] per-step perturbation cost */
    pk_model_params mp = pk_model_default_params();
    mp.max_batch = (int)B;
    mp.max_seq = (int)T;
    pk_status st = pk_model_load(model, mp, &m, err, sizeof err);
    if (st != PK_OK)
        goto fail;
    /* as train does: the weights into memory of our own before the first update writes them */
    double writable_s = pk_time_now();
    st = pk_model_make_writable(m, NULL);
    writable_s = pk_time_now() - writable_s;
    if (st != PK_OK)
        goto fail;
    if (T > pk_model_max_positions(m)) {
        snprintf(err, sizeof err, "--seq %lld exceeds the model's %d positions", T,
                 pk_model_max_positions(m));
        st = PK_ERR_ARG;
        goto fail;
    }
    ids = malloc((size_t)(B * T) * sizeof(int32_t));
    lens = malloc((size_t)B * sizeof(int32_t));
    if (ids == NULL || lens == NULL)
        goto out;
    uint64_t r = 0x12345678u;
    int V = pk_model_vocab_size(m);
    for (long long i = 0; i < B * T; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)((r >> 33) % (uint64_t)V);
    }
    for (long long i = 0; i < B; i++)
        lens[i] = (int32_t)T;
    bc.b = (pk_batch){(int)B, (int)T, ids, lens, NULL};
    bc.sel_b = malloc((size_t)B * sizeof *bc.sel_b);
    bc.sel_t = malloc((size_t)B * sizeof *bc.sel_t);
    bc.logits = malloc((size_t)B * 4 * sizeof *bc.logits); /* [2 passes][B][2] */
    if (bc.sel_b == NULL || bc.sel_t == NULL || bc.logits == NULL) {
        st = PK_ERR_NOMEM;
        goto fwdfail;
    }
    for (long long i = 0; i < B; i++) {
        bc.sel_b[i] = (int32_t)i;
        bc.sel_t[i] = (int32_t)(T - 1);
    }
    double l = 0;
    /* warm-up: reserves activations, faults the weights in */
    st = bench_loss(&bc, m, 0, NULL, &l);
    if (st != PK_OK)
        goto fwdfail;
    pk_mezo_params p = pk_mezo_default_params();
    p.lr = 1e-6f;
    double step_s = 0, plain_s = 0, upd_s = 0, first_s = 0;
    {
        /* the first step, reported apart (it once paid a copy-on-write fault for every weight
         * page it wrote: pk_model_make_writable now does that copy at load, writable_s) */
        pk_step_row row;
        double f = 0, u = 0, t0 = pk_time_now();
        st = pk_mezo_step(m, NULL, &p, K, 1, bench_loss, &bc, &row, &f, &u);
        if (st != PK_OK)
            goto fwdfail;
        first_s = pk_time_now() - t0;
    }
    /* Each iteration times two plain forward passes, then a step: perturb_s is the median over
     * iterations of (the step's two perturbed passes - those two plain passes), a paired
     * difference, so that drift on a shared machine cancels out. */
    perturb = malloc((size_t)K * sizeof *perturb);
    if (perturb == NULL) {
        st = PK_ERR_NOMEM;
        goto fwdfail;
    }
    for (long long k = 0; k < K; k++) {
        double t0 = pk_time_now();
        st = bench_loss(&bc, m, 0, NULL, &l);
        if (st == PK_OK)
            st = bench_loss(&bc, m, 0, NULL, &l);
        if (st != PK_OK)
            goto fwdfail;
        double plain2 = pk_time_now() - t0;
        pk_step_row row;
        double f = 0, u = 0;
        t0 = pk_time_now();
        st = pk_mezo_step(m, NULL, &p, k, 1, bench_loss, &bc, &row, &f, &u);
        if (st != PK_OK)
            goto fwdfail;
        step_s += pk_time_now() - t0;
        plain_s += plain2;
        upd_s += u;
        perturb[k] = f - plain2 > 0 ? f - plain2 : 0.0;
    }
    step_s /= (double)K;
    plain_s /= (double)K;
    upd_s /= (double)K;
    qsort(perturb, (size_t)K, sizeof *perturb, cmp_double);
    double perturb_s = K % 2 ? perturb[K / 2] : 0.5 * (perturb[K / 2 - 1] + perturb[K / 2]);
    printf("{\"model\":\"%s\",\"batch\":%lld,\"seq\":%lld,\"threads\":%d,\"steps\":%lld,"
           "\"step_s\":%.4f,\"forward_s\":%.4f,\"perturb_s\":%.4f,\"update_s\":%.4f,"
           "\"first_step_s\":%.4f,\"writable_s\":%.4f,\"peak_rss_bytes\":%zu,"
           "\"weight_bytes\":%zu,\"paired\":%s}\n",
           model, B, T, pk_threads_get(), K, step_s, plain_s, perturb_s, upd_s, first_s, writable_s,
           pk_peak_rss_bytes(), pk_model_weight_bytes(m),
           pk_model_pairs(m, (int)B, (int)T) ? "true" : "false");
    rc = CLI_OK;
    goto out;
fwdfail:
    snprintf(err, sizeof err, "forward: %s", pk_status_str(st));
fail:
    cli_error(cmd, "%s", err[0] ? err : pk_status_str(st));
out:
    free(perturb);
    free(bc.sel_b);
    free(bc.sel_t);
    free(bc.logits);
    free(ids);
    free(lens);
    pk_model_free(m);
    return rc;
}
