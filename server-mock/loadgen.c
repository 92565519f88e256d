/* loadgen.c: pocketllm-loadgen, the coordinator's load generator. It registers N devices, signs
 * N uploads for the open round (before the clock starts: signing is the devices' cost, not the
 * coordinator's), then sends them over C keep-alive connections, one thread each, and reports
 * signed uploads per second, latency percentiles and bytes per upload. Bounded by --uploads and
 * --max-seconds. The coordinator's task needs quorum >= N so the round stays open. */
#include "srv_client.h"
#include "srv_proto.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct lg_opts {
    char host[64];
    int port, uploads, conns, seeds;
    double max_seconds;
} lg_opts;

typedef struct lg_job {
    const lg_opts *o;
    char **bodies;   /* [uploads] request bodies */
    char path[64];   /* upload path */
    atomic_int next; /* next body index */
    double t_end;    /* monotonic deadline */
    double *lat_ms;  /* [uploads] latency of each sent upload, -1 if not sent */
    int *status;     /* [uploads] HTTP status, 0 on transport failure */
    atomic_llong bytes_out, bytes_in;
    const char *method;
} lg_job;

static void usage(FILE *fp)
{
    fprintf(fp, "usage: pocketllm-loadgen --server HOST:PORT [--uploads N] [--connections C]\n"
                "           [--seeds S] [--max-seconds T]\n"
                "Registers N devices, then sends N signed uploads (S non-zero seeds each) for the\n"
                "open round over C keep-alive connections; prints uploads/s and p50/p99 latency.\n"
                "Defaults: N=20000, C=4, S=16, T=60. The task's quorum must be >= N.\n");
}

static int parse_opts(int argc, char **argv, lg_opts *o)
{
    *o = (lg_opts){"", 0, 20000, 4, 16, 60.0};
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            return -1;
        if (!v) {
            fprintf(stderr, "pocketllm-loadgen: %s needs a value\n", a);
            return 0;
        }
        char *end = NULL;
        long n = strtol(v, &end, 10);
        int is_int = end != v && *end == '\0';
        if (!strcmp(a, "--server")) {
            const char *colon = strrchr(v, ':');
            if (!colon || (size_t)(colon - v) >= sizeof o->host)
                return 0;
            snprintf(o->host, sizeof o->host, "%.*s", (int)(colon - v), v);
            o->port = atoi(colon + 1);
        } else if (!strcmp(a, "--uploads") && is_int && n >= 1 && n <= 10000000) {
            o->uploads = (int)n;
        } else if (!strcmp(a, "--connections") && is_int && n >= 1 && n <= 256) {
            o->conns = (int)n;
        } else if (!strcmp(a, "--seeds") && is_int && n >= 0 && n <= 4096) {
            o->seeds = (int)n;
        } else if (!strcmp(a, "--max-seconds") && strtod(v, NULL) > 0) {
            o->max_seconds = strtod(v, NULL);
        } else {
            fprintf(stderr, "pocketllm-loadgen: bad option %s %s\n", a, v);
            return 0;
        }
    }
    if (!o->host[0] || o->port <= 0 || o->port > 65535) {
        fprintf(stderr, "pocketllm-loadgen: --server HOST:PORT is required\n");
        return 0;
    }
    return 1;
}

/* Sends bodies[i] for i taken from the shared counter until done or out of time. */
static void *worker(void *arg)
{
    lg_job *j = arg;
    pkc_conn *c = NULL;
    for (;;) {
        int i = atomic_fetch_add(&j->next, 1);
        if (i >= j->o->uploads || pk_time_now() > j->t_end)
            break;
        if (!c && pkc_connect(j->o->host, j->o->port, 10.0, &c) != PK_OK) {
            j->status[i] = 0;
            continue;
        }
        pkc_response r;
        double t0 = pk_time_now();
        const char *b = j->bodies[i];
        pk_status st = pkc_request(c, j->method, j->path, NULL, b, strlen(b), &r);
        j->lat_ms[i] = (pk_time_now() - t0) * 1e3;
        j->status[i] = st == PK_OK ? r.status : 0;
        atomic_fetch_add(&j->bytes_out, (long long)r.bytes_out);
        atomic_fetch_add(&j->bytes_in, (long long)r.bytes_in);
        pkc_response_free(&r);
        if (st != PK_OK) {
            pkc_close(c);
            c = NULL;
        }
    }
    pkc_close(c);
    return NULL;
}

/* Runs a job over o->conns threads; returns the elapsed seconds. */
static double run_job(lg_job *j)
{
    pthread_t th[256];
    int n = j->o->conns;
    atomic_init(&j->next, 0);
    atomic_init(&j->bytes_out, 0);
    atomic_init(&j->bytes_in, 0);
    for (int i = 0; i < j->o->uploads; i++)
        j->lat_ms[i] = -1.0, j->status[i] = 0;
    double t0 = pk_time_now();
    j->t_end = t0 + j->o->max_seconds;
    int started = 0;
    for (; started < n; started++)
        if (pthread_create(&th[started], NULL, worker, j) != 0)
            break;
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    return pk_time_now() - t0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void report(const char *what, const lg_job *j, double secs, int ok_status)
{
    int sent = 0, ok = 0;
    double *lat = malloc((size_t)j->o->uploads * sizeof *lat);
    if (!lat)
        return;
    for (int i = 0; i < j->o->uploads; i++) {
        if (j->lat_ms[i] < 0)
            continue;
        lat[sent++] = j->lat_ms[i];
        ok += j->status[i] == ok_status;
    }
    qsort(lat, (size_t)sent, sizeof *lat, cmp_double);
    double p50 = sent ? lat[sent / 2] : 0, p90 = sent ? lat[(int)((double)sent * 0.90)] : 0;
    double p99 = sent ? lat[(int)((double)sent * 0.99)] : 0, mx = sent ? lat[sent - 1] : 0;
    printf("%s: %d sent, %d ok (HTTP %d), %d failed in %.3f s: %.0f ok/s; latency ms p50 %.3f "
           "p90 %.3f p99 %.3f max %.3f; bytes per request up %.0f down %.0f\n",
           what, sent, ok, ok_status, sent - ok, secs, (double)ok / secs, p50, p90, p99, mx,
           sent ? (double)atomic_load(&j->bytes_out) / sent : 0.0,
           sent ? (double)atomic_load(&j->bytes_in) / sent : 0.0);
    fflush(stdout);
    free(lat);
}

/* GET /v1/task: task_id, round, pool size, quorum. */
static int fetch_task(const lg_opts *o, char task_id[PKP_MAX_NAME + 1], long long *round, int *K,
                      long long *quorum)
{
    pkc_conn *c = NULL;
    pkc_response r = {0};
    int ok = 0;
    if (pkc_connect(o->host, o->port, 10.0, &c) != PK_OK ||
        pkc_request(c, "GET", "/v1/task", NULL, NULL, 0, &r) != PK_OK || r.status != 200) {
        fprintf(stderr, "pocketllm-loadgen: GET /v1/task on %s:%d failed\n", o->host, o->port);
        goto out;
    }
    cJSON *t = cJSON_Parse(r.body);
    const cJSON *id = cJSON_GetObjectItem(t, "task_id");
    if (cJSON_IsString(id) && strlen(id->valuestring) <= PKP_MAX_NAME) {
        snprintf(task_id, PKP_MAX_NAME + 1, "%s", id->valuestring);
        *round = (long long)cJSON_GetNumberValue(cJSON_GetObjectItem(t, "round"));
        *K = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(t, "pool_size"));
        *quorum = (long long)cJSON_GetNumberValue(cJSON_GetObjectItem(t, "quorum"));
        ok = *round >= 1 && *K >= 1;
    }
    cJSON_Delete(t);
out:
    pkc_response_free(&r);
    pkc_close(c);
    return ok;
}

typedef struct lg_dev {
    uint8_t pk[32], sk[64];
    char id[PKP_DEVICE_ID_LEN + 1];
} lg_dev;

/* Builds the signed upload of device d (seeds distinct pool indices). Owned result. */
static char *make_upload(const lg_dev *d, const char *task, long long round, int K, int seeds,
                         uint32_t salt)
{
    pkp_pair p[4096];
    uint8_t packed[4096 * PKP_PAIR_BYTES], sig[64], *msg = NULL;
    size_t mlen = 0, n = 0;
    char idem[48], sighex[129];
    uint32_t step = (uint32_t)K / (uint32_t)(seeds ? seeds : 1);
    for (int i = 0; i < seeds && i < K; i++) {
        p[n].k =
            (uint16_t)(((uint32_t)i * (step ? step : 1) + salt % (step ? step : 1)) % (uint32_t)K);
        p[n].v = (float)((int)(randombytes_uniform(2001)) - 1000) * 1e-3f;
        if (n == 0 || p[n].k > p[n - 1].k)
            n++;
    }
    pkp_pack(p, n, packed);
    snprintf(idem, sizeof idem, "lg-%s-%lld", d->id, round);
    if (pkp_upload_msg(task, (uint64_t)round, d->id, idem, 16, packed, n * PKP_PAIR_BYTES, &msg,
                       &mlen) != PK_OK)
        return NULL;
    crypto_sign_detached(sig, NULL, msg, mlen, d->sk);
    free(msg);
    pkp_hex(sig, 64, sighex);
    char *b64 = pkp_b64_encode(packed, n * PKP_PAIR_BYTES);
    size_t cap = (b64 ? strlen(b64) : 0) + 512;
    char *body = b64 ? malloc(cap) : NULL;
    if (body)
        snprintf(body, cap,
                 "{\"task_id\":\"%s\",\"round\":%lld,\"device_id\":\"%s\",\"idempotency_key\":"
                 "\"%s\",\"examples\":16,\"updates\":\"%s\",\"signature\":\"%s\"}",
                 task, round, d->id, idem, b64, sighex);
    free(b64);
    return body;
}

static int prepare(const lg_opts *o, lg_job *reg, lg_job *up, const char *task, long long round,
                   int K)
{
    lg_dev d;
    char hex[65];
    for (int i = 0; i < o->uploads; i++) {
        crypto_sign_keypair(d.pk, d.sk);
        pkp_device_id(d.pk, d.id);
        pkp_hex(d.pk, 32, hex);
        reg->bodies[i] = malloc(100);
        if (!reg->bodies[i])
            return 0;
        snprintf(reg->bodies[i], 100, "{\"public_key\":\"%s\"}", hex);
        up->bodies[i] = make_upload(&d, task, round, K, o->seeds, randombytes_random());
        if (!up->bodies[i])
            return 0;
    }
    sodium_memzero(&d, sizeof d);
    return 1;
}

int main(int argc, char **argv)
{
    lg_opts o;
    int r = parse_opts(argc, argv, &o);
    if (r <= 0) {
        usage(r < 0 ? stdout : stderr);
        return r < 0 ? 0 : 2;
    }
    if (sodium_init() < 0)
        return 1;
    char task[PKP_MAX_NAME + 1];
    long long round = 0, quorum = 0;
    int K = 0, rc = 1;
    if (!fetch_task(&o, task, &round, &K, &quorum))
        return 1;
    if (quorum < o.uploads)
        fprintf(stderr,
                "pocketllm-loadgen: warning: quorum %lld < %d uploads: the round will "
                "close and later uploads get 409\n",
                quorum, o.uploads);
    size_t n = (size_t)o.uploads;
    lg_job reg = {.o = &o, .method = "POST"}, up = {.o = &o, .method = "POST"};
    reg.bodies = calloc(n, sizeof *reg.bodies), up.bodies = calloc(n, sizeof *up.bodies);
    reg.lat_ms = calloc(n, sizeof(double)), up.lat_ms = calloc(n, sizeof(double));
    reg.status = calloc(n, sizeof(int)), up.status = calloc(n, sizeof(int));
    snprintf(reg.path, sizeof reg.path, "/v1/devices");
    snprintf(up.path, sizeof up.path, "/v1/rounds/%lld/updates", round);
    if (!reg.bodies || !up.bodies || !reg.lat_ms || !up.lat_ms || !reg.status || !up.status ||
        !prepare(&o, &reg, &up, task, round, K)) {
        fprintf(stderr, "pocketllm-loadgen: out of memory\n");
        goto out;
    }
    printf("task %s round %lld K %d: %d devices, %d seeds per upload, %d connections\n", task,
           round, K, o.uploads, o.seeds, o.conns);
    report("register", &reg, run_job(&reg), 201);
    double secs = run_job(&up);
    report("signed uploads", &up, secs, 200);
    rc = 0;
out:
    for (size_t i = 0; i < n; i++) {
        free(reg.bodies ? reg.bodies[i] : NULL);
        free(up.bodies ? up.bodies[i] : NULL);
    }
    free(reg.bodies), free(up.bodies), free(reg.lat_ms), free(up.lat_ms);
    free(reg.status), free(up.status);
    return rc;
}
