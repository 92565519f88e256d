/* cmd_sync.c: `pocketllm sync`, one federated round with a coordinator (issue 5). Options are
 * parsed here; the round is pk_sync_round (agent/sync.c) over the MeZO model of sync_mezo.c. */
#include "cli.h"
#include "passphrase.h"

#include "pk_crypto.h"
#include "pk_model.h"
#include "pk_store.h"
#include "pk_net.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ERRLEN 512

static const char sync_help[] =
    "usage: pocketllm sync --server URL --model DIR [--dataset NAME] [--task ID]\n"
    "                      [--dp-clip C --dp-noise SIGMA] [--dp-delta D] [--wait SECONDS]\n"
    "                      [--batch B] [--seq-len T] [--trainable SPEC] [--catch-up]\n"
    "                      [--out DIR] [--threads N] [--json] [--home DIR] [--passphrase-file F]\n"
    "\n"
    "One federated round (FedKSeed-style, docs/SYNC.md): registers this device once, fetches the\n"
    "coordinator's task, checks that --model is the task's base model, catches up with the\n"
    "global log (hash chain verified), runs the task's local MeZO steps on --dataset with seeds\n"
    "drawn from the task's seed pool, uploads only the per-seed sums of the projected gradients,\n"
    "the example count and an Ed25519 signature (through the store's outbox: a crash or network\n"
    "failure never loses or duplicates it), waits up to --wait seconds (default 60) for the round\n"
    "to close, then replays the global log on the base model so the local model equals the\n"
    "global one. Your text and your weights never leave the device.\n"
    "\n"
    "--dp-clip C --dp-noise SIGMA  clip each step's g to [-C, C] and add N(0, (SIGMA C)^2) noise\n"
    "                              to what is uploaded; prints the (epsilon, delta) spent so far\n"
    "--catch-up                    no local steps: only download and replay the global log\n"
    "--out DIR                     write the global model (base + log) as a model directory\n"
    "\n"
    "examples:\n"
    "  pocketllm sync --server http://127.0.0.1:8080 --model stories260k --dataset notes\n"
    "  pocketllm sync --server http://127.0.0.1:8080 --model stories260k --dataset notes \\\n"
    "                 --dp-clip 1 --dp-noise 1.1\n";

static const char *const sync_opts[] = {
    "--server",    "--task",    "--dp-clip", "--dp-noise",        "--dp-delta",
    "--model",     "--dataset", "--wait",    "--batch",           "--seq-len",
    "--trainable", "--out",     "--threads", "--passphrase-file", NULL};
static const char *const sync_flags[] = {"--json", "--catch-up", "--quiet", NULL};

static int opt_num(int argc, char **argv, const char *name, double lo, double hi, double *out)
{
    int rc = cli_opt_double(argc, argv, name, out);
    if (rc < 0)
        return -1;
    if (rc > 0 && !(*out >= lo && *out <= hi)) {
        cli_error(argv[0], "%s %g is out of range [%g, %g]", name, *out, lo, hi);
        return -1;
    }
    return 0;
}

static void print_report(const pk_sync_report *r, int json, double secs)
{
    if (json) {
        printf("{\"device_id\":\"%s\",\"task_id\":\"%s\",\"round\":%lld,\"uploaded\":%s,"
               "\"flushed\":%d,\"steps\":%lld,\"pairs\":%lld,\"examples\":%lld,"
               "\"round_closed\":%s,\"log_version\":%lld,\"log_head\":\"%s\","
               "\"model_hash\":\"%s\",\"dp\":%s,",
               r->device_id, r->task_id, (long long)r->round, r->uploaded ? "true" : "false",
               r->flushed, (long long)r->steps, (long long)r->pairs, (long long)r->examples,
               r->round_closed ? "true" : "false", (long long)r->log_version, r->log_head,
               r->model_hash, r->dp ? "true" : "false");
        if (r->delta > 0 && isfinite(r->epsilon))
            printf("\"epsilon\":%.6g,\"delta\":%g,", r->epsilon, r->delta);
        else if (r->delta > 0)
            printf("\"epsilon\":null,\"delta\":%g,", r->delta);
        printf("\"upload_body_bytes\":%llu,\"bytes_up\":%llu,\"bytes_down\":%llu,"
               "\"body_bytes_up\":%llu,\"body_bytes_down\":%llu,\"requests\":%llu,"
               "\"attempts\":%llu,\"seconds\":%.3f}\n",
               (unsigned long long)r->upload_body_bytes, (unsigned long long)r->http.wire_up,
               (unsigned long long)r->http.wire_down, (unsigned long long)r->http.body_up,
               (unsigned long long)r->http.body_down, (unsigned long long)r->http.requests,
               (unsigned long long)r->http.attempts, secs);
        return;
    }
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

static int parse(int argc, char **argv, pk_sync_params *p, double *batch, double *seq)
{
    double threads = 0;
    p->server = cli_opt(argc, argv, "--server");
    p->task_id = cli_opt(argc, argv, "--task");
    p->upload = !cli_flag(argc, argv, "--catch-up");
    if (!p->server || !*p->server) {
        cli_error(argv[0], "--server URL is required (see pocketllm sync --help)");
        return -1;
    }
    if (!server_url_ok(p->server)) {
        cli_error(argv[0], "--server %s: expected http://HOST[:PORT] or https://HOST[:PORT]",
                  p->server);
        return -1;
    }
    if (opt_num(argc, argv, "--dp-clip", 0, 1e30, &p->dp_clip) ||
        opt_num(argc, argv, "--dp-noise", 0, 1e6, &p->dp_noise) ||
        opt_num(argc, argv, "--dp-delta", 1e-300, 0.5, &p->dp_delta) ||
        opt_num(argc, argv, "--wait", 0, 86400, &p->wait_s) ||
        opt_num(argc, argv, "--batch", 1, 1024, batch) ||
        opt_num(argc, argv, "--seq-len", 2, 1 << 20, seq) ||
        opt_num(argc, argv, "--threads", 1, 1024, &threads))
        return -1;
    if (p->dp_noise > 0 && !(p->dp_clip > 0)) {
        cli_error(argv[0], "--dp-noise needs --dp-clip (the noise is SIGMA times the clip)");
        return -1;
    }
    if (*batch != floor(*batch) || *seq != floor(*seq) || threads != floor(threads)) {
        cli_error(argv[0], "--batch, --seq-len and --threads take integers");
        return -1;
    }
    if (threads > 0)
        pk_threads_set((int)threads);
    if (!cli_opt(argc, argv, "--model")) {
        cli_error(argv[0], "--model DIR (the task's base model) is required");
        return -1;
    }
    if (p->upload && !cli_opt(argc, argv, "--dataset")) {
        cli_error(argv[0], "--dataset NAME is required for local steps (or use --catch-up)");
        return -1;
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

int cmd_sync(int argc, char **argv)
{
    if (cli_help(argc, argv, sync_help))
        return CLI_OK;
    if (cli_check(argc, argv, sync_opts, sync_flags))
        return CLI_USAGE;
    pk_sync_params p = pk_sync_default_params();
    double batch = 8, seq = 64;
    if (parse(argc, argv, &p, &batch, &seq))
        return CLI_USAGE;
    if (cli_http_init(argv[0]) != 0)
        return CLI_ERR;
    if (pk_crypto_global_init() != PK_OK) {
        cli_error(argv[0], "cannot initialise libsodium");
        return CLI_ERR;
    }
    pk_store *s = NULL;
    if (legacy_cli_open_store(argc, argv, &s) != 0)
        return CLI_ERR;
    int rc = CLI_ERR;
    char err[ERRLEN] = "";
    pk_sync_mezo *mz = NULL;
    const char *model = cli_opt(argc, argv, "--model"), *out = cli_opt(argc, argv, "--out");
    pk_status st = pk_sync_mezo_open(s, model, p.upload ? cli_opt(argc, argv, "--dataset") : NULL,
                                     cli_opt(argc, argv, "--trainable"), (int)batch, (int)seq, &mz,
                                     err, sizeof err);
    if (st != PK_OK) {
        cli_error(argv[0], "%s", err[0] ? err : pk_status_str(st));
        goto out;
    }
    pk_sync_model_ops ops = pk_sync_mezo_ops(mz);
    pk_sync_report rep;
    double t0 = pk_time_now();
    st = pk_sync_round(s, &p, &ops, &rep, err, sizeof err);
    if (st != PK_OK) {
        cli_error(argv[0], "%s", err[0] ? err : pk_status_str(st));
        if (st == PK_ERR_HTTP)
            fprintf(stderr, "pocketllm sync: any pending upload stays in the outbox and is sent "
                            "by the next sync\n");
        goto out;
    }
    int json = cli_flag(argc, argv, "--json"), quiet = cli_flag(argc, argv, "--quiet");
    if (json || !quiet)
        print_report(&rep, json, pk_time_now() - t0);
    if (out) {
        st = pk_model_save(pk_sync_mezo_model(mz), out, PK_DTYPE_F32, err, sizeof err);
        if (st != PK_OK) {
            cli_error(argv[0], "--out %s: %s", out, err[0] ? err : pk_status_str(st));
            goto out;
        }
        if (!json && !quiet)
            printf("global model written to %s\n", out);
    }
    rc = CLI_OK;
out:
    pk_sync_mezo_free(mz);
    pk_store_close(s);
    return rc;
}
