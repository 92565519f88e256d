/* main.c: pocketllm-server-mock, the federated coordinator (docs/PROTOCOL.md): options, startup,
 * the deadline ticker and clean shutdown on SIGTERM/SIGINT (signals are blocked in every thread
 * and taken synchronously with sigtimedwait, so no handler and no global flag is needed). */
#include "server_impl.h"

#include <errno.h>
#include <microhttpd.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct opts {
    const char *host, *db, *task, *hub_dir, *faults, *capture;
    int port, threads, verbose;
} opts;

static void usage(FILE *fp)
{
    fprintf(fp,
            "usage: pocketllm-server-mock --db FILE [--task FILE.json] [--port N] [--host IP]\n"
            "           [--threads N] [--hub-dir DIR] [--faults SPEC] [--capture DIR] [-v]\n"
            "The PocketLLM coordinator (docs/PROTOCOL.md). --port 0 picks a free port; the first\n"
            "stdout line is `listening on HOST:PORT`. --task is needed for a new database.\n"
            "--faults e.g. delay=0.1:200ms,drop=0.05,5xx=0.05,truncate=0.05,seed=7\n");
}

static int parse_int(const char *flag, const char *v, int lo, int hi, int *out)
{
    char *end = NULL;
    errno = 0;
    long n = v ? strtol(v, &end, 10) : 0;
    if (!v || end == v || *end || errno || n < lo || n > hi) {
        fprintf(stderr, "pocketllm-server-mock: %s wants an integer in [%d, %d]\n", flag, lo, hi);
        return 0;
    }
    *out = (int)n;
    return 1;
}

/* 1 ok, 0 usage error, -1 --help */
static int parse_args(int argc, char **argv, opts *o)
{
    *o = (opts){"127.0.0.1", NULL, NULL, NULL, NULL, NULL, 8080, 2, 0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = 1;
        if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            return -1;
        if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            o->verbose = 1;
            continue;
        }
        if (!strcmp(a, "--port")) {
            if (!parse_int(a, v, 0, 65535, &o->port))
                return 0;
        } else if (!strcmp(a, "--threads")) {
            if (!parse_int(a, v, 1, 64, &o->threads))
                return 0;
        } else if (!strcmp(a, "--host")) {
            o->host = v;
        } else if (!strcmp(a, "--db")) {
            o->db = v;
        } else if (!strcmp(a, "--task")) {
            o->task = v;
        } else if (!strcmp(a, "--hub-dir")) {
            o->hub_dir = v;
        } else if (!strcmp(a, "--faults")) {
            o->faults = v;
        } else if (!strcmp(a, "--capture")) {
            o->capture = v;
        } else {
            fprintf(stderr, "pocketllm-server-mock: unknown option %s\n", a);
            return 0;
        }
        if (takes && !v) {
            fprintf(stderr, "pocketllm-server-mock: %s needs a value\n", a);
            return 0;
        }
        i += takes;
    }
    if (!o->db) {
        fprintf(stderr, "pocketllm-server-mock: --db FILE is required\n");
        return 0;
    }
    return 1;
}

static char *read_file(const char *path, size_t cap, char *err, size_t errlen)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(cap + 1);
    size_t n = buf ? fread(buf, 1, cap + 1, fp) : 0;
    fclose(fp);
    if (!buf || n > cap) {
        snprintf(err, errlen, "%s: %s", path, buf ? "file too large" : "out of memory");
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

static int check_dir(const char *flag, const char *dir)
{
    struct stat st;
    if (dir && (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))) {
        fprintf(stderr, "pocketllm-server-mock: %s %s is not a directory\n", flag, dir);
        return 0;
    }
    return 1;
}

/* Loads the task (from --task, or from the database), opens the state. */
static int setup(const opts *o, srv *s)
{
    char err[512] = "", *json = NULL;
    int ok = 0;
    if (o->task)
        json = read_file(o->task, 1 << 20, err, sizeof err);
    else if (srv_db_read_task(o->db, &json, err, sizeof err) != PK_OK)
        json = NULL;
    if (!json)
        goto out;
    if (srv_task_parse(json, &s->task, err, sizeof err) != PK_OK) {
        char tmp[600];
        snprintf(tmp, sizeof tmp, "%s: %s", o->task ? o->task : o->db, err);
        memcpy(err, tmp, sizeof err - 1);
        err[sizeof err - 1] = '\0';
        goto out;
    }
    err[0] = '\0';
    if (srv_db_open(o->db, &s->task, json, srv_wall_now(), &s->db, err, sizeof err) != PK_OK)
        goto out;
    if (o->faults && srv_faults_parse(o->faults, &s->faults, err, sizeof err) != PK_OK)
        goto out;
    s->faults_on = o->faults != NULL;
    s->hub_dir = o->hub_dir;
    s->capture_dir = o->capture;
    s->hashes = srv_hash_cache_new();
    ok = s->hashes != NULL;
out:
    if (!ok)
        fprintf(stderr, "pocketllm-server-mock: %s\n", err[0] ? err : "out of memory");
    free(json);
    return ok;
}

static void log_to_stderr(pk_log_level level, const char *msg, void *user)
{
    static const char *const names[] = {"debug", "info", "warning", "error"};
    (void)user;
    fprintf(stderr, "pocketllm-server-mock: %s: %s\n", names[level], msg);
}

static void serve(srv *s, const sigset_t *set)
{
    const struct timespec tick = {0, 100 * 1000 * 1000};
    for (;;) {
        int sig = sigtimedwait(set, NULL, &tick);
        if (sig == SIGINT || sig == SIGTERM)
            break;
        if (srv_db_tick(s->db, srv_wall_now()) != PK_OK)
            pk_log(PK_LOG_ERROR, "closing a round at its deadline failed; retrying");
    }
}

int main(int argc, char **argv)
{
    opts o;
    int r = parse_args(argc, argv, &o);
    if (r <= 0) {
        usage(r < 0 ? stdout : stderr);
        return r < 0 ? 0 : 2;
    }
    if (!check_dir("--hub-dir", o.hub_dir) || !check_dir("--capture", o.capture))
        return 2;
    pk_log_set(log_to_stderr, NULL, o.verbose ? PK_LOG_INFO : PK_LOG_WARN);
    if (sodium_init() < 0) {
        fprintf(stderr, "pocketllm-server-mock: libsodium failed to initialize\n");
        return 1;
    }
    srv *s = calloc(1, sizeof *s);
    if (!s)
        return 1;
    atomic_init(&s->n_requests, 0);
    if (!setup(&o, s)) {
        srv_db_close(s->db);
        srv_hash_cache_free(s->hashes);
        free(s);
        return 1;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* MHD's threads inherit the mask */
    signal(SIGPIPE, SIG_IGN);
    int port = 0;
    struct MHD_Daemon *d = srv_start(s, o.host, o.port, o.threads, &port);
    int rc = 0;
    if (!d) {
        fprintf(stderr, "pocketllm-server-mock: cannot listen on %s:%d\n", o.host, o.port);
        rc = 1;
        goto out;
    }
    printf("listening on %s:%d\n", o.host, port);
    fflush(stdout);
    serve(s, &set);
    MHD_stop_daemon(d);
    fprintf(stderr, "pocketllm-server-mock: stopped\n");
out:
    srv_db_close(s->db);
    srv_hash_cache_free(s->hashes);
    free(s);
    return rc;
}
