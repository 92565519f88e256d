/* cmd_fedsim.c: `pocketllm fedsim` (a federated experiment on this machine against the real
 * coordinator) and `pocketllm fedsim device` (one device's round, the process the simulation
 * or a cluster launcher starts). Options, output files (rounds.jsonl, summary.json,
 * curves.svg) and printing are here; the orchestration is fedsim/ (pk_fedsim.h), the round
 * net/'s. docs/FEDSIM.md. */
#include "cli.h"
#include "passphrase.h"
#include "progress.h"
#include "sync_opts.h"

#include "api_sync.h"

#include "pk_crypto.h"
#include "pk_fedsim.h"
#include "pk_model.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ERRLEN     1024
#define MAX_POINTS 100001 /* rounds + 1 */

/* The local steps' objective and shape, the same in `fedsim` and `fedsim device` (T has a
 * pk_train_config p.cfg). */
#define FEDSIM_LOCAL_STEP_OPTS(T)                                                                  \
    {"--objective",          CLI_CHOICE, CLI_AT(T, p.cfg.objective), 0, 0,                         \
     "lm|classify|accuracy", NULL,       "training objective"},                                    \
        {"--template",                                                                             \
         CLI_BUF,                                                                                  \
         CLI_AT(T, p.cfg.template_),                                                               \
         0,                                                                                        \
         0,                                                                                        \
         NULL,                                                                                     \
         "TEXT",                                                                                   \
         "classify: prompt template, e.g. '{text} It was'"},                                       \
        {"--labels",                                                                               \
         CLI_BUF,                                                                                  \
         CLI_AT(T, p.cfg.labels),                                                                  \
         0,                                                                                        \
         0,                                                                                        \
         NULL,                                                                                     \
         "WORDS",                                                                                  \
         "classify: comma-separated label words"},                                                 \
        CLI_LOCAL_BATCH_OPTS(T, p.cfg.batch, p.cfg.seq_len),                                       \
        {"--estimator",                                                                            \
         CLI_CHOICE,                                                                               \
         CLI_AT(T, p.cfg.mezo.estimator),                                                          \
         0,                                                                                        \
         0,                                                                                        \
         "spsa|fzoo|hizoo",                                                                        \
         NULL,                                                                                     \
         "local steps' estimator: spsa, or fzoo (N local steps per step); hizoo is refused"},      \
        {"--perturbations",                                                                        \
         CLI_INT,                                                                                  \
         CLI_AT(T, p.cfg.mezo.perturbations),                                                      \
         2,                                                                                        \
         4096,                                                                                     \
         NULL,                                                                                     \
         "N",                                                                                      \
         "fzoo: one-sided perturbations per step"},                                                \
    {                                                                                              \
        "--trainable", CLI_BUF, CLI_AT(T, p.cfg.trainable), 0, 0, NULL, "SPEC",                    \
            "all | bitfit | top:K | top-mlp:K | REGEX"                                             \
    }

/* ---- fedsim device ------------------------------------------------------------------------------
 */

typedef struct device_opts {
    cli_common c;
    pk_fedsim_device_params p;
    const char *server, *model, *dataset, *record;
} device_opts;

#define T device_opts
static const cli_option device_table[] = {
    CLI_SYNC_SERVER_MODEL_OPTS(T, server, model),
    {"--dataset", CLI_STR, CLI_AT(T, dataset), 0, 0, NULL, "NAME",
     "this device's local dataset (required)"},
    {"--seed", CLI_U64, CLI_AT(T, p.seed), 0, 0, NULL, "S",
     "pool picks and batches (0: random; a simulation gives each device its own)"},
    FEDSIM_LOCAL_STEP_OPTS(T),
    CLI_SYNC_DP_OPTS(T, p.sync.dp_clip, p.sync.dp_noise, p.sync.dp_delta),
    CLI_SYNC_WAIT_OPT(T, p.sync.wait_s),
    {"--straggle", CLI_FLOAT, CLI_AT(T, p.straggle_s), 0, 86400, NULL, "SECONDS",
     "sleep this long first (an injected straggler)"},
    {"--record", CLI_STR, CLI_AT(T, record), 0, 0, NULL, "FILE",
     "append what was uploaded (for the log check)"},
    CLI_THREADS_OPT(T),
    CLI_JSON_OPT(T),
    CLI_QUIET_OPT(T),
    CLI_STORE_OPTS(T),
    CLI_END,
};
#undef T

static const cli_command device_cmd = {
    "fedsim device",
    "fedsim device --server URL --home DIR --model DIR --dataset NAME [--seed S] [options]",
    "One round of one simulated device: the same round as `pocketllm sync` (register, catch up,\n"
    "local MeZO steps on pool seeds, signed upload through the outbox) with any objective,\n"
    "pool picks and batches derived from --seed (reproducible), and by default no waiting for\n"
    "the round to close. A cluster launcher starts one per device and round against one\n"
    "coordinator URL (docs/FEDSIM.md).",
    device_table,
    0,
    NULL};

/* hizoo cannot ride on the protocol: refused with the reason, before anything starts. */
static int estimator_check(const char *cmd, pk_estimator e)
{
    const char *why = NULL;
    if (pk_fedsim_estimator_carried(e, &why))
        return 0;
    cli_error(cmd, "--estimator %s: %s", pk_estimator_name(e), why);
    return CLI_USAGE;
}

static int device_check(const device_opts *o)
{
    const char *miss = !o->server    ? "--server URL"
                       : !o->model   ? "--model DIR"
                       : !o->dataset ? "--dataset NAME"
                                     : NULL;
    if (miss) {
        cli_error(o->c.cmd, "%s is required (see pocketllm fedsim device --help)", miss);
        return CLI_USAGE;
    }
    if (o->p.sync.dp_noise > 0 && !(o->p.sync.dp_clip > 0)) {
        cli_error(o->c.cmd, "--dp-noise needs --dp-clip (the noise is SIGMA times the clip)");
        return CLI_USAGE;
    }
    return estimator_check(o->c.cmd, o->p.cfg.mezo.estimator);
}

static int cmd_fedsim_device(int argc, char **argv)
{
    device_opts o = {.p = pk_fedsim_device_default_params()};
    int rc = cli_parse(&device_cmd, argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? CLI_OK : rc;
    if ((rc = device_check(&o)) != 0)
        return rc;
    pk_store *s = NULL;
    if (cli_sync_open(&o.c, &s) != 0)
        return CLI_ERR;
    o.p.sync.server = o.server;
    o.p.model_dir = o.model;
    o.p.dataset = o.dataset;
    o.p.record_path = o.record;
    char err[ERRLEN] = "";
    pk_sync_report rep;
    double t0 = pk_time_now();
    pk_status st = pk_fedsim_device_round(s, &o.p, &rep, err, sizeof err);
    pk_store_close(s);
    if (st != PK_OK) {
        cli_error(o.c.cmd, "%s", err[0] ? err : pk_status_str(st));
        return st == PK_ERR_INTERRUPTED ? CLI_INTERRUPTED : CLI_ERR;
    }
    if (o.c.json) {
        pocketllm_sync_result r;
        pk_api_sync_result(&r, &rep);
        return cli_sync_report_json(&r, pk_time_now() - t0);
    }
    if (!o.c.quiet)
        printf("device %s: round %lld %s, %lld local steps, %lld pairs, %llu bytes up, %llu down\n",
               rep.device_id, (long long)rep.round, rep.uploaded ? "uploaded" : "no upload",
               (long long)rep.steps, (long long)rep.pairs, (unsigned long long)rep.http.wire_up,
               (unsigned long long)rep.http.wire_down);
    return CLI_OK;
}

/* ---- fedsim --------------------------------------------------------------------------------- */

typedef struct fedsim_opts {
    cli_common c;
    pk_fedsim_params p;
    const char *dataset, *split, *server, *baseline_lr;
} fedsim_opts;

#define T fedsim_opts
static const cli_option fedsim_table[] = {
    {"--model", CLI_STR, CLI_AT(T, p.model_dir), 0, 0, NULL, "DIR", "the base model (required)"},
    {"--data", CLI_STR, CLI_AT(T, p.data_file), 0, 0, NULL, "FILE",
     "training examples (jsonl, txt, csv: as import reads them)"},
    {"--dataset", CLI_STR, CLI_AT(T, dataset), 0, 0, NULL, "NAME",
     "training examples: a dataset of --home (instead of --data)"},
    {"--eval-data", CLI_STR, CLI_AT(T, p.eval_file), 0, 0, NULL, "FILE",
     "the global model's eval set (jsonl, txt, csv)"},
    {"--eval-dataset", CLI_STR, CLI_AT(T, p.eval_dataset), 0, 0, NULL, "NAME",
     "the eval set: a dataset of --home (instead of --eval-data)"},
    {"--devices", CLI_INT, CLI_AT(T, p.devices), 1, 1000000, NULL, "N", "simulated devices"},
    {"--rounds", CLI_INT, CLI_AT(T, p.rounds), 1, 100000, NULL, "R", "federated rounds"},
    {"--local-steps", CLI_INT, CLI_AT(T, p.local_steps), 1, 65535, NULL, "S",
     "MeZO steps per device and round"},
    {"--split", CLI_STR, CLI_AT(T, split), 0, 0, NULL, "iid|dirichlet:ALPHA|shards:K",
     "how the examples are dealt to the devices"},
    {"--pool", CLI_INT, CLI_AT(T, p.pool), 1, 65535, NULL, "K", "seed pool size"},
    {"--participation", CLI_FLOAT, CLI_AT(T, p.participation), 1e-9, 1, NULL, "P",
     "fraction of the devices picked each round"},
    {"--dropout", CLI_FLOAT, CLI_AT(T, p.dropout), 0, 0.999, NULL, "P",
     "fraction of the picked devices that drop out before uploading"},
    {"--stragglers", CLI_FLOAT, CLI_AT(T, p.straggler), 0, 1, NULL, "P",
     "probability that an uploading device starts late"},
    {"--straggle", CLI_FLOAT, CLI_AT(T, p.straggle_s), 0, 3600, NULL, "SECONDS",
     "how late a straggler starts"},
    {"--parallel", CLI_INT, CLI_AT(T, p.parallel), 1, 4096, NULL, "N",
     "device processes at once (default: the online cores)"},
    {"--seed", CLI_U64, CLI_AT(T, p.seed), 0, 0, NULL, "S",
     "split, picks, pool and batches: the same seed gives the same global hashes"},
    {"--dp-clip", CLI_FLOAT, CLI_AT(T, p.dp_clip), 0, 1e30, NULL, "C",
     "clip each local step's g to [-C, C] (the task's privacy setting)"},
    {"--dp-noise", CLI_FLOAT, CLI_AT(T, p.dp_noise), 0, 1e6, NULL, "SIGMA",
     "N(0, (SIGMA C)^2) noise on each uploaded g (needs --dp-clip)"},
    {"--dp-delta", CLI_FLOAT, CLI_AT(T, p.dp_delta), 1e-300, 0.5, NULL, "D",
     "delta of the reported epsilon"},
    {"--server", CLI_STR, CLI_AT(T, server), 0, 0, NULL, "URL",
     "use this coordinator (its task decides lr, eps, steps, quorum) instead of starting one"},
    {"--faults", CLI_STR, CLI_AT(T, p.faults), 0, 0, NULL, "SPEC",
     "the started coordinator's fault injection (docs/PROTOCOL.md 10)"},
    FEDSIM_LOCAL_STEP_OPTS(T),
    {"--lr", CLI_FLOAT, CLI_AT(T, p.cfg.mezo.lr), 0, 100, NULL, "F", "learning rate"},
    {"--eps", CLI_FLOAT, CLI_AT(T, p.cfg.mezo.eps), 1e-8, 10, NULL, "F", "perturbation scale"},
    {"--z", CLI_CHOICE, CLI_AT(T, p.cfg.mezo.z), 0, 0, "gaussian|rademacher", NULL,
     "perturbation distribution"},
    {"--baseline", CLI_FLAG, CLI_AT(T, p.baseline), 0, 0, NULL, NULL,
     "also one centralized MeZO run on the union with as many loss evaluations"},
    {"--baseline-lr", CLI_STR, CLI_AT(T, baseline_lr), 0, 0, NULL, "F|auto",
     "the baseline's rate (auto: train --lr auto's search, paid from its budget, backed off to a "
     "third while it diverges; default: --lr)"},
    {"--round-timeout", CLI_FLOAT, CLI_AT(T, p.round_timeout_s), 1, 86400, NULL, "SECONDS",
     "a round that has not closed after this long fails"},
    {"--keep", CLI_FLAG, CLI_AT(T, p.keep), 0, 0, NULL, NULL, "keep the device homes"},
    {"--out", CLI_STR, CLI_AT(T, p.out_dir), 0, 0, NULL, "DIR",
     "results: rounds.jsonl, summary.json, curves.svg (required)"},
    CLI_THREADS_OPT(T),
    CLI_JSON_OPT(T),
    CLI_QUIET_OPT(T),
    CLI_STORE_OPTS(T),
    CLI_END,
};
#undef T

static const cli_command fedsim_cmd = {
    "fedsim",
    "fedsim --model M (--data FILE | --home H --dataset NAME) (--eval-data FILE |\n"
    "       --eval-dataset NAME) --devices N --rounds R --local-steps S --out DIR [options]\n"
    "fedsim device --server URL --home DIR --model M --dataset NAME [options]",
    "Federated zeroth-order fine-tuning, simulated on this machine with the real coordinator\n"
    "(pocketllm-server-mock, started on loopback unless --server) and the real sync client: the\n"
    "examples are split into N encrypted device homes; each round the picked devices run as\n"
    "separate `pocketllm fedsim device` processes (at most --parallel at once), some drop out,\n"
    "some start late; after every round the global log is replayed on the base model and\n"
    "evaluated. Writes DIR/rounds.jsonl, DIR/summary.json and DIR/curves.svg; checks that the\n"
    "coordinator's log equals a recomputation from the devices' own records (docs/FEDSIM.md).",
    fedsim_table,
    0,
    "example:\n"
    "  pocketllm fedsim --model models/stories260k --data train.jsonl --eval-data eval.jsonl \\\n"
    "      --objective classify --template '{text} It was' --labels ' good, bad' \\\n"
    "      --devices 8 --rounds 10 --local-steps 8 --split dirichlet:0.5 --baseline --out exp1"};

/* What the run reports, collected for the files and the plot. */
typedef struct fs_out {
    const fedsim_opts *o;
    FILE *rounds; /* DIR/rounds.jsonl */
    int classify;
    size_t n, nb;                   /* points: rounds (with round 0), baseline evals */
    double *x, *bytes, *loss, *acc; /* [MAX_POINTS] */
    double *bx, *bloss, *bacc;      /* [MAX_POINTS] */
    char (*hash)[65];               /* [MAX_POINTS] the global model after each round */
    double sum_up, sum_down, sum_s; /* over rounds 1.. */
    double max_up, max_down;
} fs_out;

static cJSON *round_json(const fs_out *w, const pk_fedsim_round *r)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "round", (double)r->round);
    cli_json_add_finite(j, "loss", r->loss);
    if (w->classify)
        cli_json_add_finite(j, "accuracy", r->accuracy);
    cJSON_AddNumberToObject(j, "bytes_up_per_device", r->bytes_up_per_device);
    cJSON_AddNumberToObject(j, "bytes_down_per_device", r->bytes_down_per_device);
    cJSON_AddNumberToObject(j, "max_bytes_up", r->max_bytes_up);
    cJSON_AddNumberToObject(j, "max_bytes_down", r->max_bytes_down);
    cJSON_AddNumberToObject(j, "total_bytes", r->total_bytes);
    cJSON_AddNumberToObject(j, "seconds", r->seconds);
    cJSON_AddNumberToObject(j, "eval_seconds", r->eval_seconds);
    cli_json_add_finite(j, "epsilon", r->epsilon); /* null: no DP, or clipping without noise */
    cJSON_AddNumberToObject(j, "participants", r->participants);
    cJSON_AddNumberToObject(j, "dropped", r->dropped);
    cJSON_AddNumberToObject(j, "stragglers", r->stragglers);
    cJSON_AddNumberToObject(j, "uploads", r->uploads);
    cJSON_AddNumberToObject(j, "examples", (double)r->examples);
    cJSON_AddNumberToObject(j, "coordinator_round", (double)r->coord_round);
    cJSON_AddStringToObject(j, "model_hash", r->model_hash);
    cJSON_AddStringToObject(j, "log_head", r->log_head);
    return j;
}

static void on_round(void *user, const pk_fedsim_round *r)
{
    fs_out *w = user;
    if (w->n < MAX_POINTS) {
        w->x[w->n] = (double)r->round;
        w->bytes[w->n] = r->total_bytes;
        w->loss[w->n] = r->loss;
        w->acc[w->n] = r->accuracy;
        snprintf(w->hash[w->n], sizeof w->hash[w->n], "%s", r->model_hash);
        w->n++;
    }
    if (r->round > 0) {
        w->sum_up += r->bytes_up_per_device;
        w->sum_down += r->bytes_down_per_device;
        w->sum_s += r->seconds;
        w->max_up = fmax(w->max_up, r->max_bytes_up);
        w->max_down = fmax(w->max_down, r->max_bytes_down);
    }
    cJSON *j = round_json(w, r);
    char *text = j ? cJSON_PrintUnformatted(j) : NULL;
    if (text && w->rounds) {
        fprintf(w->rounds, "%s\n", text);
        fflush(w->rounds);
    }
    cJSON_free(text);
    if (w->o->c.json) {
        cli_json_print(j);
        fflush(stdout);
        return;
    }
    cJSON_Delete(j);
    if (w->o->c.quiet)
        return;
    printf("round %3lld: loss %.4f", (long long)r->round, r->loss);
    if (w->classify)
        printf(", accuracy %.3f", r->accuracy);
    if (r->round > 0)
        printf(", %d uploads, %.0f B up / %.0f B down per device, %.2f s", r->uploads,
               r->bytes_up_per_device, r->bytes_down_per_device, r->seconds);
    if (isfinite(r->epsilon))
        printf(", epsilon %.3g", r->epsilon);
    printf(", model %.12s\n", r->model_hash);
    fflush(stdout);
}

static void on_baseline(void *user, int64_t step, double rounds, double loss, double acc)
{
    fs_out *w = user;
    if (w->nb < MAX_POINTS) {
        w->bx[w->nb] = rounds;
        w->bloss[w->nb] = loss;
        w->bacc[w->nb] = acc;
        w->nb++;
    }
    if (!w->o->c.json && !w->o->c.quiet) {
        printf("baseline step %lld (%.1f rounds): loss %.4f", (long long)step, rounds, loss);
        if (w->classify)
            printf(", accuracy %.3f", acc);
        printf("\n");
        fflush(stdout);
    }
}

static void on_note(void *user, const char *line)
{
    fs_out *w = user;
    if (!w->o->c.json && !w->o->c.quiet) {
        printf("%s\n", line);
        fflush(stdout);
    }
}

static int out_alloc(fs_out *w)
{
    double **v[] = {&w->x, &w->bytes, &w->loss, &w->acc, &w->bx, &w->bloss, &w->bacc};
    int ok = 1;
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        ok &= (*v[i] = calloc(MAX_POINTS, sizeof(double))) != NULL;
    w->hash = calloc(MAX_POINTS, sizeof *w->hash);
    return ok && w->hash ? 0 : -1;
}

static void out_free(fs_out *w)
{
    double *v[] = {w->x, w->bytes, w->loss, w->acc, w->bx, w->bloss, w->bacc};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        free(v[i]);
    free(w->hash);
    if (w->rounds)
        fclose(w->rounds);
}

/* The summary's "log_check": the coordinator's seed log replayed against the rounds done. */
static void log_check_json(cJSON *j, const pk_fedsim_summary *s)
{
    cJSON *c = cJSON_AddObjectToObject(j, "log_check");
    cJSON_AddBoolToObject(c, "ok", s->check.entries == s->rounds_done && !s->check.mismatches);
    cJSON_AddNumberToObject(c, "entries", (double)s->check.entries);
    cJSON_AddNumberToObject(c, "records", (double)s->check.records);
    cJSON_AddNumberToObject(c, "mismatches", (double)s->check.mismatches);
    cJSON_AddBoolToObject(c, "values_compared", s->check.values);
}

/* The baseline's rate search and diverged attempts (auto rate) as arrays of b. */
static void baseline_search_json(cJSON *b, const pk_fedsim_summary *s)
{
    if (s->baseline_search.n > 0) {
        cJSON *ls = cJSON_AddArrayToObject(b, "lr_search"); /* [rate, held-back loss] */
        for (int i = 0; i < s->baseline_search.n; i++) {
            cJSON *pt = cJSON_CreateArray();
            cJSON_AddItemToArray(pt, cJSON_CreateNumber((double)s->baseline_search.lr[i]));
            cJSON_AddItemToArray(pt, cli_json_finite(s->baseline_search.loss[i]));
            cJSON_AddItemToArray(ls, pt);
        }
    }
    /* attempts that diverged (auto): [rate, step, mean training loss, lowest, evaluations] */
    cJSON *bo = cJSON_AddArrayToObject(b, "backoffs");
    for (int i = 0; i < s->baseline_backoffs && i < PK_FEDSIM_BACKOFFS; i++) {
        const pk_fedsim_backoff *a = &s->baseline_backoff[i];
        cJSON *pt = cJSON_CreateArray();
        cJSON_AddItemToArray(pt, cJSON_CreateNumber((double)a->lr));
        cJSON_AddItemToArray(pt, cJSON_CreateNumber((double)a->step));
        cJSON_AddItemToArray(pt, cli_json_finite(a->loss));
        cJSON_AddItemToArray(pt, cli_json_finite(a->lowest));
        cJSON_AddItemToArray(pt, cJSON_CreateNumber((double)a->evaluations));
        cJSON_AddItemToArray(bo, pt);
    }
}

/* The summary's "baseline": the centralized run on the pooled data, or null without one. */
static void baseline_json(cJSON *j, const fs_out *w, const pk_fedsim_summary *s)
{
    if (!s->baseline) {
        cJSON_AddNullToObject(j, "baseline");
        return;
    }
    cJSON *b = cJSON_AddObjectToObject(j, "baseline");
    cJSON_AddNumberToObject(b, "steps", (double)s->baseline_steps);
    cJSON_AddNumberToObject(b, "lr", (double)s->baseline_lr);
    cJSON_AddBoolToObject(b, "lr_auto", w->o->p.baseline_lr_auto);
    cJSON_AddNumberToObject(b, "evaluations", (double)s->baseline_evaluations);
    cJSON_AddNumberToObject(b, "search_evaluations", (double)s->baseline_search_evaluations);
    baseline_search_json(b, s);
    cli_json_add_finite(b, "loss", s->baseline_loss);
    if (w->classify)
        cli_json_add_finite(b, "accuracy", s->baseline_accuracy);
    cJSON_AddNumberToObject(b, "seconds", s->baseline_seconds);
    cJSON *ev = cJSON_AddArrayToObject(b, "evals"); /* [rounds' worth, loss, accuracy] */
    for (size_t i = 0; i < w->nb; i++) {
        cJSON *pt = cJSON_CreateArray();
        cJSON_AddItemToArray(pt, cJSON_CreateNumber(w->bx[i]));
        cJSON_AddItemToArray(pt, cli_json_finite(w->bloss[i]));
        cJSON_AddItemToArray(pt, cli_json_finite(w->bacc[i]));
        cJSON_AddItemToArray(ev, pt);
    }
}

/* The summary's traffic figures: per device and round (means over the rounds done) and peaks. */
static void traffic_json(cJSON *j, const fs_out *w, const pk_fedsim_summary *s)
{
    double R = s->rounds_done > 0 ? (double)s->rounds_done : 1.0;
    cJSON_AddNumberToObject(j, "bytes_up_per_device_per_round", w->sum_up / R);
    cJSON_AddNumberToObject(j, "bytes_down_per_device_per_round", w->sum_down / R);
    cJSON_AddNumberToObject(j, "max_bytes_up", w->max_up);
    cJSON_AddNumberToObject(j, "max_bytes_down", w->max_down);
    cJSON_AddNumberToObject(j, "total_bytes", s->last.total_bytes);
    cJSON_AddNumberToObject(j, "seconds_per_round", w->sum_s / R);
}

/* status: "done", "failed" (with error: the message) or "interrupted"; the rest is what the
 * rounds that ran gave. */
static cJSON *summary_json(const fs_out *w, const pk_fedsim_summary *s, pk_status st,
                           const char *error)
{
    const pk_fedsim_params *p = &w->o->p;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "model", p->model_dir);
    cJSON_AddNumberToObject(j, "devices", p->devices);
    cJSON_AddNumberToObject(j, "rounds", s->rounds_done);
    cJSON_AddNumberToObject(j, "local_steps", (double)s->local_steps);
    cJSON_AddNumberToObject(j, "quorum", (double)s->quorum);
    cJSON_AddNumberToObject(j, "pool", p->pool);
    cJSON_AddStringToObject(j, "split", w->o->split);
    cJSON_AddNumberToObject(j, "seed", (double)p->seed);
    cJSON_AddNumberToObject(j, "lr", (double)s->lr);
    cJSON_AddNumberToObject(j, "eps", (double)s->eps);
    cJSON_AddStringToObject(j, "objective", pk_objective_name(p->cfg.objective));
    cJSON_AddStringToObject(j, "estimator", pk_estimator_name(p->cfg.mezo.estimator));
    if (p->cfg.mezo.estimator == PK_EST_FZOO)
        cJSON_AddNumberToObject(j, "perturbations", p->cfg.mezo.perturbations);
    cJSON_AddNumberToObject(j, "examples", (double)s->examples);
    cJSON_AddNumberToObject(j, "eval_examples", (double)s->eval_examples);
    cJSON_AddNumberToObject(j, "min_device_examples", (double)s->min_device_examples);
    cJSON_AddNumberToObject(j, "max_device_examples", (double)s->max_device_examples);
    cli_json_add_finite(j, "base_loss", s->base.loss);
    cli_json_add_finite(j, "loss", s->last.loss);
    if (w->classify) {
        cli_json_add_finite(j, "base_accuracy", s->base.accuracy);
        cli_json_add_finite(j, "accuracy", s->last.accuracy);
    }
    cJSON_AddStringToObject(j, "model_hash", s->last.model_hash);
    cJSON *hs = cJSON_AddArrayToObject(j, "global_hashes");
    for (size_t i = 1; i < w->n; i++)
        cJSON_AddItemToArray(hs, cJSON_CreateString(w->hash[i]));
    traffic_json(j, w, s);
    cli_json_add_finite(j, "epsilon", s->last.epsilon);
    if (p->dp_clip > 0)
        cJSON_AddNumberToObject(j, "delta", p->dp_delta);
    cJSON_AddNumberToObject(j, "device_steps", (double)s->device_steps);
    cJSON_AddNumberToObject(j, "device_evaluations", (double)s->device_evaluations);
    log_check_json(j, s);
    baseline_json(j, w, s);
    cJSON_AddNumberToObject(j, "seconds", s->seconds);
    cJSON_AddStringToObject(j, "status",
                            st == PK_OK                ? "done"
                            : st == PK_ERR_INTERRUPTED ? "interrupted"
                                                       : "failed");
    if (st != PK_OK && st != PK_ERR_INTERRUPTED)
        cJSON_AddStringToObject(j, "error", error && *error ? error : pk_status_str(st));
    return j;
}

static int write_json_file(const char *dir, const char *name, cJSON *j)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *text = j ? cJSON_PrintUnformatted(j) : NULL;
    FILE *f = text ? fopen(path, "w") : NULL;
    int ok = f && fprintf(f, "%s\n", text) > 0;
    if (f)
        ok = fclose(f) == 0 && ok;
    cJSON_free(text);
    return ok ? 0 : -1;
}

/* Baseline as a flat line over [x0, x1] at its final value (the panels against bytes). */
static void flat(double x0, double x1, double y, double *xs, double *ys)
{
    xs[0] = x0;
    xs[1] = x1;
    ys[0] = ys[1] = y;
}

static int write_curves(const fs_out *w, const pk_fedsim_summary *s)
{
    char path[1200];
    double fx[2], fa[2], fl[2];
    const double *y = w->classify ? w->acc : w->loss, *by = w->classify ? w->bacc : w->bloss;
    const char *metric = w->classify ? "accuracy" : "loss";
    flat(0.0, w->n ? w->bytes[w->n - 1] : 1.0, s->baseline_accuracy, fx, fa);
    flat(0.0, w->n ? w->bytes[w->n - 1] : 1.0, s->baseline_loss, fx, fl);
    pk_plot_series vr[2] = {
        {"federated", "federated (global model)", "#1f77b4", w->x, y, w->n, 1, 0},
        {"baseline", "centralized baseline", "#d62728", w->bx, by, w->nb, 0, 0}};
    pk_plot_series vb[2] = {
        {"federated-bytes", "federated (global model)", "#1f77b4", w->bytes, y, w->n, 1, 0},
        {"baseline-final", "centralized baseline (final)", "#d62728", fx, w->classify ? fa : fl,
         s->baseline ? 2 : 0, 0, 0}};
    pk_plot_series lr[2] = {
        {"federated-loss", "federated (global model)", "#1f77b4", w->x, w->loss, w->n, 1, 0},
        {"baseline-loss", "centralized baseline", "#d62728", w->bx, w->bloss, w->nb, 0, 0}};
    char t1[96], t2[96];
    snprintf(t1, sizeof t1, "global eval %s against rounds", metric);
    snprintf(t2, sizeof t2, "global eval %s against total bytes (all devices)", metric);
    size_t ns = s->baseline ? 2 : 1;
    pk_plot_panel pan[3] = {{t1, "round", metric, vr, ns},
                            {t2, "bytes sent and received by the devices", metric, vb, ns},
                            {"global eval loss against rounds", "round", "loss", lr, ns}};
    snprintf(path, sizeof path, "%s/curves.svg", w->o->p.out_dir);
    FILE *f = fopen(path, "w");
    pk_status st =
        f ? pk_plot_svg_panels(f, "pocketllm fedsim", pan, w->classify ? 3 : 2) : PK_ERR_IO;
    if (f && fclose(f) != 0)
        st = PK_ERR_IO;
    return st == PK_OK ? 0 : -1;
}

/* The directory of this executable: the device processes run it, the coordinator sits beside
 * it (installed) or in the build tree's server-mock/. */
static int find_binaries(const char *cmd, char *self, size_t n, char *server, size_t sn)
{
    ssize_t k = readlink("/proc/self/exe", self, n - 1);
    if (k <= 0 || (size_t)k >= n - 1) {
        cli_error(cmd, "cannot locate the pocketllm binary (/proc/self/exe): %s", strerror(errno));
        return -1;
    }
    self[k] = '\0';
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", self);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    static const char *const rel[] = {"/pocketllm-server-mock",
                                      "/../server-mock/pocketllm-server-mock"};
    for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
        snprintf(server, sn, "%s%s", dir, rel[i]);
        if (access(server, X_OK) == 0)
            return 0;
    }
    server[0] = '\0';
    return 1; /* only needed without --server */
}

static int fedsim_check(fedsim_opts *o)
{
    const char *cmd = o->c.cmd;
    const char *miss = !o->p.model_dir                      ? "--model DIR"
                       : !o->p.out_dir                      ? "--out DIR"
                       : !cli_given(&o->c, "--devices")     ? "--devices N"
                       : !cli_given(&o->c, "--rounds")      ? "--rounds R"
                       : !cli_given(&o->c, "--local-steps") ? "--local-steps S"
                                                            : NULL;
    if (miss) {
        cli_error(cmd, "%s is required (see pocketllm fedsim --help)", miss);
        return CLI_USAGE;
    }
    if (!o->p.data_file == !o->dataset) {
        cli_error(cmd, "give the training examples as --data FILE or as --dataset NAME of --home");
        return CLI_USAGE;
    }
    if (!o->p.eval_file == !o->p.eval_dataset) {
        cli_error(cmd, "give the eval set as --eval-data FILE or as --eval-dataset NAME of --home");
        return CLI_USAGE;
    }
    if (o->p.dp_noise > 0 && !(o->p.dp_clip > 0)) {
        cli_error(cmd, "--dp-noise needs --dp-clip (the noise is SIGMA times the clip)");
        return CLI_USAGE;
    }
    if (o->baseline_lr && !strcmp(o->baseline_lr, "auto")) {
        o->p.baseline_lr_auto = 1;
    } else if (o->baseline_lr) {
        char *end = NULL;
        double v = strtod(o->baseline_lr, &end);
        if (end == o->baseline_lr || *end || !(v > 0.0 && v <= 100.0)) {
            cli_error(cmd, "--baseline-lr %s: want a rate in (0, 100] or auto", o->baseline_lr);
            return CLI_USAGE;
        }
        o->p.baseline_lr = (float)v;
    }
    if (o->baseline_lr && !o->p.baseline) {
        cli_error(cmd, "--baseline-lr needs --baseline");
        return CLI_USAGE;
    }
    if (estimator_check(cmd, o->p.cfg.mezo.estimator) != 0)
        return CLI_USAGE;
    char err[ERRLEN] = "";
    if (!pk_fedsim_trainable_ok(o->p.cfg.trainable, err, sizeof err)) {
        cli_error(cmd, "--trainable: %s", err);
        return CLI_USAGE;
    }
    if (pk_fedsim_split_parse(o->split, &o->p.split, err, sizeof err) != PK_OK) {
        cli_error(cmd, "--split: %s", err);
        return CLI_USAGE;
    }
    if (o->server && strncmp(o->server, "http://", 7) && strncmp(o->server, "https://", 8)) {
        cli_error(cmd, "--server: expected http://HOST[:PORT], got '%s'", o->server);
        return CLI_USAGE;
    }
    if (o->p.data_file && access(o->p.data_file, R_OK) != 0) {
        cli_error(cmd, "--data %s: %s", o->p.data_file, strerror(errno));
        return CLI_ERR;
    }
    if (o->p.eval_file && access(o->p.eval_file, R_OK) != 0) {
        cli_error(cmd, "--eval-data %s: %s", o->p.eval_file, strerror(errno));
        return CLI_ERR;
    }
    return 0;
}

/* The flag an error is about, from the library's message (DESIGN 9: it names no flag). */
static const char *flag_of(const fedsim_opts *o, const char *msg)
{
    if (strstr(msg, "devices need at least"))
        return "--devices: ";
    if (o->p.eval_dataset && strstr(msg, o->p.eval_dataset))
        return "--eval-dataset: ";
    if (o->server && strstr(msg, "does not answer"))
        return "--server: ";
    return "";
}

static int fedsim_run(fedsim_opts *o, pk_store *src)
{
    fs_out w;
    memset(&w, 0, sizeof w);
    w.o = o;
    w.classify = o->p.cfg.objective != PK_OBJ_LM;
    char path[1200], err[ERRLEN] = "";
    int rc = out_alloc(&w) == 0 ? CLI_OK : CLI_ERR;
    if (rc == CLI_OK && mkdir(o->p.out_dir, 0700) != 0 && errno != EEXIST) {
        cli_error(o->c.cmd, "--out %s: %s", o->p.out_dir, strerror(errno));
        rc = CLI_ERR;
    }
    snprintf(path, sizeof path, "%s/rounds.jsonl", o->p.out_dir);
    if (rc == CLI_OK && !(w.rounds = fopen(path, "w"))) {
        cli_error(o->c.cmd, "--out: cannot write %s: %s", path, strerror(errno));
        rc = CLI_ERR;
    }
    if (rc != CLI_OK) {
        out_free(&w);
        return rc;
    }
    o->p.src = src;
    pk_fedsim_hooks hk = {&w, on_round, on_baseline, on_note};
    pk_fedsim_summary s;
    pk_status st = pk_fedsim_run(&o->p, &hk, &s, err, sizeof err);
    if (st != PK_OK) {
        cli_error(o->c.cmd, "%s%s", flag_of(o, err), err[0] ? err : pk_status_str(st));
        rc = st == PK_ERR_INTERRUPTED ? CLI_INTERRUPTED : CLI_ERR;
    }
    cJSON *sj = summary_json(&w, &s, st, err);
    if (write_json_file(o->p.out_dir, "summary.json", sj) != 0 && rc == CLI_OK) {
        cli_error(o->c.cmd, "--out: cannot write %s/summary.json", o->p.out_dir);
        rc = CLI_ERR;
    }
    if (st == PK_OK && write_curves(&w, &s) != 0) {
        cli_error(o->c.cmd, "--out: cannot write %s/curves.svg", o->p.out_dir);
        rc = CLI_ERR;
    }
    if (st == PK_OK && (s.check.mismatches || s.check.entries != s.rounds_done)) {
        cli_error(o->c.cmd, "the coordinator's log differs from the devices' records: %s",
                  s.check.first);
        rc = CLI_ERR;
    }
    if (rc == CLI_OK && o->c.json)
        rc = cli_json_print(sj);
    else
        cJSON_Delete(sj);
    if (rc == CLI_OK && !o->c.json && !o->c.quiet)
        printf("results: %s/rounds.jsonl, summary.json, curves.svg\n", o->p.out_dir);
    out_free(&w);
    return rc;
}

int cmd_fedsim(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "device"))
        return cmd_fedsim_device(argc - 1, argv + 1);
    fedsim_opts o = {.p = pk_fedsim_default_params(), .split = "iid"};
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    o.p.parallel = cores > 0 ? (int)cores : 1;
    o.p.devices = o.p.rounds = 0; /* required: no default in --help */
    o.p.local_steps = 0;
    int rc = cli_parse(&fedsim_cmd, argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? CLI_OK : rc;
    if ((rc = fedsim_check(&o)) != 0)
        return rc;
    /* The observer's evals and the baseline: one thread unless --threads, so the device
     * processes keep the cores (an idle OpenMP pool spins on them). Devices use one each. */
    if (!cli_given(&o.c, "--threads"))
        pk_threads_set(1);
    cli_apply_threads(&o.c);
    char self[PATH_MAX], server[PATH_MAX + 64];
    int found = find_binaries(o.c.cmd, self, sizeof self, server, sizeof server);
    if (found < 0)
        return CLI_ERR;
    if (found > 0 && !o.server) {
        cli_error(o.c.cmd,
                  "the coordinator pocketllm-server-mock is neither next to %s nor in "
                  "../server-mock/; build or install it, or give --server URL",
                  self);
        return CLI_ERR;
    }
    o.p.pocketllm_bin = self;
    o.p.server_bin = server;
    o.p.server_url = o.server;
    if (cli_http_init(o.c.cmd) != 0)
        return CLI_ERR;
    if (pk_crypto_global_init() != PK_OK) {
        cli_error(o.c.cmd, "cannot initialise libsodium");
        return CLI_ERR;
    }
    pk_store *src = NULL;
    if ((o.dataset || o.p.eval_dataset) && cli_open_store(&o.c, &src) != 0)
        return CLI_ERR;
    o.p.src_dataset = o.dataset;
    pk_interrupt_install();
    rc = fedsim_run(&o, src);
    pk_store_close(src);
    return rc;
}
