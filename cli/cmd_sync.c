/* cmd_sync.c: `pocketllm sync`, one federated round with a coordinator (docs/SYNC.md). The
 * options are parsed here from one table; the round is pk_sync_round (net/) over the MeZO model
 * of pk_sync_mezo_open. */
#include "cli.h"
#include "passphrase.h"
#include "sync_opts.h"

#include "pk_crypto.h"
#include "pk_model.h"
#include "pk_net.h"
#include "pk_store.h"

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
     "all | bitfit | REGEX on tensor names"},
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

static void report_text(const pk_sync_report *r, double secs)
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
           (unsigned long long)r->http.wire_up, (unsigned long long)r->http.wire_down,
           (unsigned long long)r->http.body_up, (unsigned long long)r->http.body_down,
           (unsigned long long)r->http.requests, secs);
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

/* Runs the round on the opened model and prints the report; writes --out. */
static int sync_run(const sync_opts *o, pk_store *s, pk_sync_mezo *mz)
{
    const char *cmd = o->c.cmd;
    char err[ERRLEN] = "";
    pk_sync_model_ops ops = pk_sync_mezo_ops(mz);
    pk_sync_report rep;
    double t0 = pk_time_now();
    pk_status st = pk_sync_round(s, &o->p, &ops, &rep, err, sizeof err);
    if (st != PK_OK) {
        cli_error(cmd, "%s", cli_errtext(st, err));
        if (st == PK_ERR_HTTP)
            fprintf(stderr, "pocketllm sync: any pending upload stays in the outbox and is sent "
                            "by the next sync\n");
        return CLI_ERR;
    }
    int rc = CLI_OK;
    if (o->c.json)
        rc = cli_sync_report_json(&rep, pk_time_now() - t0);
    else if (!o->c.quiet)
        report_text(&rep, pk_time_now() - t0);
    if (o->out) {
        st = pk_model_save(pk_sync_mezo_model(mz), o->out, PK_DTYPE_F32, err, sizeof err);
        if (st != PK_OK) {
            cli_error(cmd, "--out %s: %s", o->out, cli_errtext(st, err));
            return CLI_ERR;
        }
        if (!o->c.json && !o->c.quiet)
            printf("global model written to %s\n", o->out);
    }
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
    pk_store *s = NULL;
    if (cli_sync_open(&o.c, &s) != 0)
        return CLI_ERR;
    char err[ERRLEN] = "";
    pk_sync_mezo *mz = NULL;
    const char *one = o.datasets ? o.datasets : o.dataset;
    pk_status st =
        pk_sync_mezo_open(s, o.model, o.p.upload ? one : NULL, o.p.upload ? o.datasets : NULL,
                          o.trainable, o.batch, o.seq_len, &mz, err, sizeof err);
    if (st != PK_OK) {
        cli_error(o.c.cmd, "%s", cli_errtext(st, err));
        rc = CLI_ERR;
    } else {
        rc = sync_run(&o, s, mz);
    }
    pk_sync_mezo_free(mz);
    pk_store_close(s);
    return rc;
}
