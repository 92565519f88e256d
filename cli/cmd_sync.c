/* cmd_sync.c: `pocketllm sync`, one federated round with a coordinator (docs/SYNC.md). The
 * options are parsed here from one table; the round is libpocketllm's pocketllm_sync. */
#include "cli.h"
#include "passphrase.h"
#include "sync_opts.h"

#include "pk_crypto.h"
#include "pk_model.h"
#include "pk_net.h"
#include "pk_store.h"
#include "pocketllm.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ERRLEN 512

typedef struct sync_opts {
    cli_common c;
    pk_sync_params p;
    const char *model;
    const char *dataset;
    const char *datasets; /* NAME,NAME: the union (the agent's sync) */
    const char *trainable;
    const char *out;
    int batch;
    int seq_len;
    int catch_up;
} sync_opts;

#define T sync_opts
static const cli_option sync_table[] = {
    CLI_SYNC_SERVER_MODEL_OPTS(T, p.server, model),
    {"--dataset", CLI_STR, CLI_AT(T, dataset), 0, 0, NULL, "NAME",
     "the local steps' dataset (required unless --catch-up or --datasets)"},
    {"--datasets", CLI_STR, CLI_AT(T, datasets), 0, 0, NULL, "NAME,NAME",
     "the local steps train on the union of these datasets (instead of --dataset)"},
    {"--task", CLI_STR, CLI_AT(T, p.task_id), 0, 0, NULL, "ID",
     "the task to expect (default: whatever task the coordinator runs)"},
    CLI_SYNC_DP_OPTS(T, p.dp_clip, p.dp_noise, p.dp_delta),
    CLI_SYNC_WAIT_OPT(T, p.wait_s),
    CLI_LOCAL_BATCH_OPTS(T, batch, seq_len),
    {"--trainable", CLI_STR, CLI_AT(T, trainable), 0, 0, NULL, "SPEC",
     "all | bitfit | top:K | top-mlp:K | REGEX on tensor names"},
    {"--catch-up", CLI_FLAG, CLI_AT(T, catch_up), 0, 0, NULL, NULL,
     "no local steps: only download and replay the global log"},
    {"--out", CLI_STR, CLI_AT(T, out), 0, 0, NULL, "DIR",
     "write the global model (base + log) as a model directory"},
    CLI_THREADS_OPT(T),
    CLI_JSON_OPT(T),
    CLI_QUIET_OPT(T),
    CLI_STORE_OPTS(T),
    CLI_END,
};
#undef T

static const cli_command sync_cmd = {
    "sync",
    "sync --server URL --model DIR --dataset NAME [--dp-clip C --dp-noise SIGMA] [options]\n"
    "sync --server URL --model DIR --datasets NAME,NAME [...]\n"
    "sync --server URL --model DIR --catch-up [--out DIR] [options]",
    "One federated round (FedKSeed-style, docs/SYNC.md): registers this device once, fetches the\n"
    "coordinator's task, checks that --model is the task's base model, catches up with the\n"
    "global log (hash chain verified), runs the task's local MeZO steps on --dataset with seeds\n"
    "drawn from the task's seed pool, uploads only the per-seed sums of the projected gradients,\n"
    "the example count and an Ed25519 signature (through the store's outbox: a crash or network\n"
    "failure never loses or duplicates it), waits up to --wait seconds for the round to close,\n"
    "then replays the global log on the base model so the local model equals the global one.\n"
    "Your text and your weights never leave the device. With --dp-clip and --dp-noise it prints\n"
    "the (epsilon, delta) spent so far.",
    sync_table,
    0,
    "examples:\n"
    "  pocketllm sync --server http://127.0.0.1:8080 --model stories260k --dataset notes\n"
    "  pocketllm sync --server http://127.0.0.1:8080 --model stories260k --dataset notes \\\n"
    "                 --dp-clip 1 --dp-noise 1.1"};

static void report_text(const pocketllm_sync_result *r, double secs)
{
    printf("device %s, task %s\n", r->device_id, r->task_id);
    if (r->flushed)
        printf("sent %d pending upload(s) from the outbox\n", r->flushed);
    if (r->round > 0)
        printf("round %lld: %s (%lld local steps, %lld seed sums, %lld examples)%s\n",
               (long long)r->round, r->uploaded ? "update accepted" : "no update",
               (long long)r->steps, (long long)r->pairs, (long long)r->examples,
               r->round_closed ? ", round closed"
                               : ", round still open: run sync again later to get its result");
    printf("global log version %lld (head %.16s...), model hash %.16s...\n",
           (long long)r->log_version, r->log_head, r->model_hash);
    if (r->delta > 0) {
        if (isfinite(r->epsilon))
            printf("privacy spent on this task: epsilon = %.4g at delta = %g\n", r->epsilon,
                   r->delta);
        else
            printf("privacy: clipping without noise gives no (epsilon, delta) guarantee\n");
    }
    printf("traffic: %llu bytes up, %llu bytes down (bodies %llu / %llu) in %llu requests, "
           "%.2f s\n",
           (unsigned long long)r->bytes_up, (unsigned long long)r->bytes_down,
           (unsigned long long)r->body_bytes_up, (unsigned long long)r->body_bytes_down,
           (unsigned long long)r->requests, secs);
}

/* http(s)://HOST[:PORT][/PATH] with a non-empty host and, after a ':', a port 1..65535. */
static int server_url_ok(const char *u)
{
    const char *h = !strncmp(u, "http://", 7) ? u + 7 : !strncmp(u, "https://", 8) ? u + 8 : NULL;
    if (!h || *h == '\0' || *h == ':' || *h == '/')
        return 0;
    const char *end = h + strcspn(h, "/?#");
    const char *colon = h;
    if (*h == '[') { /* [IPv6] */
        colon = memchr(h, ']', (size_t)(end - h));
        if (!colon)
            return 0;
    }
    colon = memchr(colon, ':', (size_t)(end - colon));
    if (!colon)
        return 1;
    long port = 0;
    const char *d = colon + 1;
    if (d == end)
        return 0;
    for (; d < end; d++) {
        if (*d < '0' || *d > '9' || (port = port * 10 + (*d - '0')) > 65535)
            return 0;
    }
    return port >= 1;
}

/* What the table cannot say: required options, and options that need one another. */
static int sync_check(sync_opts *o)
{
    const char *cmd = o->c.cmd;
    if (!o->p.server || !*o->p.server) {
        cli_error(cmd, "--server URL is required (see pocketllm sync --help)");
        return CLI_USAGE;
    }
    if (!server_url_ok(o->p.server)) {
        cli_error(cmd, "--server: expected http://HOST[:PORT] or https://HOST[:PORT], got '%s'",
                  o->p.server);
        return CLI_USAGE;
    }
    if (o->p.dp_noise > 0 && !(o->p.dp_clip > 0)) {
        cli_error(cmd, "--dp-noise needs --dp-clip (the noise is SIGMA times the clip)");
        return CLI_USAGE;
    }
    if (!o->model) {
        cli_error(cmd, "--model DIR (the task's base model) is required");
        return CLI_USAGE;
    }
    o->p.upload = !o->catch_up;
    if (o->dataset && o->datasets) {
        cli_error(cmd, "give --dataset NAME or --datasets NAME,NAME, not both");
        return CLI_USAGE;
    }
    if (o->datasets && (!o->datasets[0] || strlen(o->datasets) >= 512)) {
        cli_error(cmd, "--datasets: want 1-511 bytes of comma-separated names");
        return CLI_USAGE;
    }
    if (o->p.upload && !o->dataset && !o->datasets) {
        cli_error(cmd, "--dataset NAME is required for local steps (or use --catch-up)");
        return CLI_USAGE;
    }
    return 0;
}

int cli_http_init(const char *cmd)
{
    if (pk_http_global_init() == PK_OK)
        return 0;
    cli_error(cmd, "%s", pk_http_global_errmsg());
    return -1;
}

/* The parsed options as libpocketllm's sync parameters (strings borrowed from o). */
static pocketllm_sync_params sync_params(const sync_opts *o)
{
    pocketllm_sync_params p = pocketllm_sync_default_params();
    p.server = o->p.server;
    p.model_dir = o->model;
    p.dataset = o->p.upload ? o->dataset : NULL;
    p.datasets = o->p.upload ? o->datasets : NULL;
    p.task_id = o->p.task_id;
    p.trainable = o->trainable;
    p.catch_up = !o->p.upload;
    p.batch = o->batch;
    p.seq_len = o->seq_len;
    p.dp_clip = o->p.dp_clip;
    p.dp_noise = o->p.dp_noise;
    p.dp_delta = o->p.dp_delta;
    p.wait_s = o->p.wait_s;
    p.out_dir = o->out;
    return p;
}

/* Runs the round (pocketllm_sync, which also writes --out) and prints the report. */
static int sync_run(const sync_opts *o, pocketllm_home *h)
{
    const char *cmd = o->c.cmd;
    pocketllm_sync_params p = sync_params(o);
    pocketllm_sync_result rep;
    double t0 = pk_time_now();
    pocketllm_status st = pocketllm_sync(h, &p, &rep);
    if (st != POCKETLLM_OK) {
        cli_error(cmd, "%s", pocketllm_errmsg(h));
        if (st == POCKETLLM_ERR_HTTP)
            fprintf(stderr, "pocketllm sync: any pending upload stays in the outbox and is sent "
                            "by the next sync\n");
        return CLI_ERR;
    }
    int rc = CLI_OK;
    if (o->c.json)
        rc = cli_sync_report_json(&rep, pk_time_now() - t0);
    else if (!o->c.quiet)
        report_text(&rep, pk_time_now() - t0);
    if (o->out && !o->c.json && !o->c.quiet)
        printf("global model written to %s\n", o->out);
    return rc;
}

int cmd_sync(int argc, char **argv)
{
    sync_opts o = {.p = pk_sync_default_params(), .trainable = "all", .batch = 8, .seq_len = 64};
    int rc = cli_parse(&sync_cmd, argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? CLI_OK : rc;
    rc = sync_check(&o);
    if (rc != 0)
        return rc;
    pocketllm_home *h = NULL;
    if (cli_sync_start(&o.c) != 0 || cli_open_home(&o.c, &h) != 0)
        return CLI_ERR;
    rc = sync_run(&o, h);
    pocketllm_home_close(h);
    return rc;
}
