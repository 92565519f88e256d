/* test_sync_fed.c: federated rounds against the real coordinator (pocketllm-server-mock started
 * from the test on 127.0.0.1 with --port 0), agents with their own homes and private data:
 *  1. three agents, three rounds, faults on (delay, drop, 5xx, truncate): every agent ends with
 *     the same weights hash, equal to replaying the coordinator's global log (decoded here,
 *     independently of sync.c) on the base model; no upload lost or double-counted; the captured
 *     request bodies hold only whitelisted fields, none of the private text, no weights;
 *     bytes up/down per device per round at K = 4096 are printed;
 *  2. the coordinator killed (-9) mid-round and restarted on its database: nothing lost;
 *  3. an agent killed (-9) mid-upload: the outbox resends it, counted exactly once. */
#include "pk_test.h"
#include "test_sync_toy.c"
#include "test_sync_util.h"
#include "test_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define STEPS 8
#define BATCH 4

static const char *PRIVATE[] = {
    "Ada's private diary: the lighthouse key is under the blue stone",
    "Bo's private notes: call the dentist about the crown on Tuesday",
    "Cy's private messages: my bank PIN is definitely not 4921",
    "Dee's secret: the surprise party is on the 14th",
    "Eli's secret: I am moving to Lisbon",
    "Fay's secret: the manuscript is in the attic",
    "Gus's secret: the recipe needs two spoons of cardamom",
    "Hal's secret: the password hint is 'grandmother's dog'",
};

typedef struct srv {
    pid_t pid;
    int port;
} srv;

static char g_dir[256];
static uint8_t g_pool_seed[32];

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int srv_start(srv *s, const char *name, int port, const char *faults, const char *capture)
{
    char bin[1024], db[512], task[512], out[512], portstr[16];
    snprintf(bin, sizeof bin, "%s/server-mock/pocketllm-server-mock", PK_BUILD_DIR);
    snprintf(db, sizeof db, "%s/%s.db", g_dir, name);
    snprintf(task, sizeof task, "%s/%s.task.json", g_dir, name);
    snprintf(out, sizeof out, "%s/%s.out", g_dir, name);
    snprintf(portstr, sizeof portstr, "%d", port);
    unlink(out);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        const char *argv[16] = {bin, "--db", db, "--task", task, "--port", portstr};
        int n = 7;
        if (faults) {
            argv[n++] = "--faults";
            argv[n++] = faults;
        }
        if (capture) {
            argv[n++] = "--capture";
            argv[n++] = capture;
        }
        argv[n] = NULL;
        execv(bin, (char *const *)(uintptr_t)argv);
        _exit(127);
    }
    s->pid = pid;
    s->port = 0;
    for (int i = 0; i < 200 && s->port == 0; i++) {
        sleep_ms(25);
        FILE *f = fopen(out, "r");
        char line[256];
        if (f && fgets(line, sizeof line, f)) {
            const char *p = strstr(line, "listening on 127.0.0.1:");
            if (p)
                s->port = atoi(p + strlen("listening on 127.0.0.1:"));
        }
        if (f)
            fclose(f);
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            fprintf(stderr, "server %s exited early (see %s)\n", name, out);
            return -1;
        }
    }
    if (s->port == 0) {
        fprintf(stderr, "server %s did not start (%s missing? see %s)\n", name, bin, out);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -1;
    }
    return 0;
}

static void srv_stop(srv *s, int sig)
{
    if (s->pid <= 0)
        return;
    kill(s->pid, sig);
    waitpid(s->pid, NULL, 0);
    s->pid = 0;
}

static void write_task(const char *name, const char *base_hash, int quorum)
{
    char path[512], ps[65], json[2048];
    snprintf(path, sizeof path, "%s/%s.task.json", g_dir, name);
    sodium_bin2hex(ps, sizeof ps, g_pool_seed, 32);
    snprintf(json, sizeof json,
             "{\"task_id\":\"fed-%s\",\"base_model_hash\":\"%s\",\"pool_size\":4096,"
             "\"pool_seed\":\"%s\",\"z_kind\":\"gaussian\",\"lr\":0.05,\"eps\":0.001,"
             "\"local_steps\":%d,\"batch_size\":%d,\"quorum\":%d,\"deadline_seconds\":60}\n",
             name, base_hash, ps, STEPS, BATCH, quorum);
    PK_CHECK(write_string(path, json) == 0);
}

static pk_sync_params params(const srv *s, char *url, size_t n, double wait)
{
    snprintf(url, n, "http://127.0.0.1:%d", s->port);
    pk_sync_params p = pk_sync_default_params();
    p.server = url;
    p.wait_s = wait;
    p.http.max_attempts = 10;
    p.http.backoff_ms = 20;
    p.http.backoff_max_ms = 200;
    p.http.timeout_ms = 5000;
    p.http.connect_timeout_ms = 1000;
    return p;
}

/* Replays the coordinator's log here and checks counts; returns 0 if the hash matches. */
static int check_global(const srv *s, const toy *t, const char *want_hash, int entries,
                        int uploads_each)
{
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", s->port);
    char *log = fetch_global_log(url, 10);
    PK_CHECK(log != NULL);
    if (!log)
        return -1;
    float w[TOY_D];
    char h[65];
    memcpy(w, t->base, sizeof w);
    PK_CHECK_EQ(ref_replay(log, g_pool_seed, PK_Z_GAUSSIAN, t->key, w), entries);
    hash_floats(w, h);
    PK_CHECK(!strcmp(h, want_hash));
    cJSON *j = cJSON_Parse(log);
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(j, "entries"))
    {
        PK_CHECK_EQ(cJSON_GetObjectItem(e, "uploads")->valuedouble, uploads_each);
        PK_CHECK_EQ(cJSON_GetObjectItem(e, "examples")->valuedouble, uploads_each * STEPS * BATCH);
    }
    cJSON_Delete(j);
    free(log);
    return strcmp(h, want_hash) ? -1 : 0;
}

/* ---- 1. three agents, three rounds, faults ----------------------------------------------------
 */

typedef struct agent {
    pk_store *s;
    toy t;
    pk_sync_params p;
    char url[64];
    pk_sync_report rep[3];
    pk_status st[3];
    char err[256];
} agent;

static void *agent_main(void *arg)
{
    agent *a = arg;
    pk_sync_model_ops ops = toy_ops(&a->t);
    for (int r = 0; r < 3; r++) {
        a->st[r] = pk_sync_round(a->s, &a->p, &ops, &a->rep[r], a->err, sizeof a->err);
        if (a->st[r] != PK_OK) {
            fprintf(stderr, "agent round %d: %s\n", r + 1, a->err);
            break;
        }
    }
    return NULL;
}

/* Every captured body: whitelisted fields only, small, no private text (nor a fragment of it). */
static void check_capture(const char *cap, int n_private)
{
    static const char *const allowed[] = {"public_key",      "task_id",  "round",   "device_id",
                                          "idempotency_key", "examples", "updates", "signature"};
    DIR *d = opendir(cap);
    PK_CHECK(d != NULL);
    if (!d)
        return;
    struct dirent *de;
    int files = 0, uploads = 0;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", cap, de->d_name);
        FILE *f = fopen(path, "rb");
        if (!f)
            continue;
        static char buf[1 << 17];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        files++;
        PK_CHECK(n <= 16384);
        for (int i = 0; i < n_private; i++) {
            PK_CHECK(!contains(buf, n, PRIVATE[i]));
            PK_CHECK(!contains(buf, n,
                               strchr(PRIVATE[i], ':') ? strchr(PRIVATE[i], ':') + 2 : PRIVATE[i]));
        }
        cJSON *j = cJSON_Parse(buf);
        PK_CHECK(j != NULL);
        const cJSON *it;
        cJSON_ArrayForEach(it, j)
        {
            int ok = 0;
            for (size_t k = 0; k < sizeof allowed / sizeof allowed[0]; k++)
                ok |= !strcmp(it->string, allowed[k]);
            PK_CHECK(ok);
            if (!ok)
                fprintf(stderr, "unexpected field '%s' in %s\n", it->string, de->d_name);
        }
        const cJSON *u = cJSON_GetObjectItem(j, "updates");
        if (cJSON_IsString(u)) {
            uploads++;
            /* at most one (seed index, value) pair per local step: 6 bytes each */
            PK_CHECK(strlen(u->valuestring) <= (STEPS * 6 + 2) / 3 * 4);
        }
        cJSON_Delete(j);
    }
    closedir(d);
    PK_CHECK(files >= 3 + 9); /* 3 registrations + 9 uploads at least */
    PK_CHECK(uploads >= 9);
    printf("capture: %d request bodies checked, %d of them uploads\n", files, uploads);
}

static void test_three_agents(void)
{
    static agent ag[3];
    char base_hash[65], cap[512], home[512];
    toy_init(&ag[0].t, PRIVATE[0]);
    hash_floats(ag[0].t.base, base_hash);
    write_task("a", base_hash, 3);
    snprintf(cap, sizeof cap, "%s/capture", g_dir);
    PK_CHECK(mkdir(cap, 0700) == 0);
    srv s;
    if (srv_start(&s, "a", 0, "delay=0.1:20ms,drop=0.05,5xx=0.05,truncate=0.05,seed=7", cap)) {
        PK_CHECK(0);
        return;
    }
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        snprintf(home, sizeof home, "%s/agent%d", g_dir, i);
        ag[i].s = make_home(home);
        PK_CHECK(ag[i].s != NULL);
        toy_init(&ag[i].t, PRIVATE[i]);
        ag[i].p = params(&s, ag[i].url, sizeof ag[i].url, 30.0);
    }
    for (int i = 0; i < 3; i++)
        PK_CHECK(pthread_create(&th[i], NULL, agent_main, &ag[i]) == 0);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 3; i++) {
        for (int r = 0; r < 3; r++) {
            PK_CHECK_EQ(ag[i].st[r], PK_OK);
            PK_CHECK_EQ(ag[i].rep[r].uploaded, 1);
            PK_CHECK_EQ(ag[i].rep[r].round, r + 1);
            PK_CHECK_EQ(ag[i].rep[r].round_closed, 1);
            PK_CHECK_EQ(ag[i].rep[r].log_version, r + 1);
            const pk_sync_report *q = &ag[i].rep[r];
            printf("agent %d round %d: body up %llu down %llu bytes, with headers up %llu down "
                   "%llu, upload body %llu, pairs %lld, %llu requests, %llu attempts\n",
                   i, r + 1, (unsigned long long)q->http.body_up,
                   (unsigned long long)q->http.body_down, (unsigned long long)q->http.wire_up,
                   (unsigned long long)q->http.wire_down, (unsigned long long)q->upload_body_bytes,
                   (long long)q->pairs, (unsigned long long)q->http.requests,
                   (unsigned long long)q->http.attempts);
        }
        PK_CHECK(!strcmp(ag[i].rep[2].model_hash, ag[0].rep[2].model_hash));
        PK_CHECK(!strcmp(ag[i].rep[2].log_head, ag[0].rep[2].log_head));
    }
    PK_CHECK(strcmp(ag[0].rep[2].model_hash, base_hash) != 0); /* the model did move */
    PK_CHECK_EQ(check_global(&s, &ag[0].t, ag[0].rep[2].model_hash, 3, 3), 0);
    srv_stop(&s, SIGTERM);
    check_capture(cap, 3);
    for (int i = 0; i < 3; i++)
        pk_store_close(ag[i].s);
}

/* ---- 2. coordinator killed mid-round -----------------------------------------------------------
 */

static void test_restart(void)
{
    char base_hash[65], home[512], url[64], err[256];
    toy t[3];
    pk_store *st[3];
    pk_sync_report rep[3];
    for (int i = 0; i < 3; i++) {
        toy_init(&t[i], PRIVATE[3 + i]);
        snprintf(home, sizeof home, "%s/restart%d", g_dir, i);
        st[i] = make_home(home);
        PK_CHECK(st[i] != NULL);
        if (!st[i])
            return;
    }
    hash_floats(t[0].base, base_hash);
    write_task("b", base_hash, 3);
    srv s;
    if (srv_start(&s, "b", 0, NULL, NULL)) {
        PK_CHECK(0);
        return;
    }
    int port = s.port;
    for (int i = 0; i < 2; i++) {
        pk_sync_params p = params(&s, url, sizeof url, 0);
        pk_sync_model_ops ops = toy_ops(&t[i]);
        PK_CHECK_EQ(pk_sync_round(st[i], &p, &ops, &rep[i], err, sizeof err), PK_OK);
        PK_CHECK_EQ(rep[i].uploaded, 1);
        PK_CHECK_EQ(rep[i].round_closed, 0);
    }
    srv_stop(&s, SIGKILL); /* mid-round, two of three uploads in */
    if (srv_start(&s, "b", port, NULL, NULL)) {
        PK_CHECK(0);
        return;
    }
    pk_sync_params p = params(&s, url, sizeof url, 10.0);
    pk_sync_model_ops ops = toy_ops(&t[2]);
    PK_CHECK_EQ(pk_sync_round(st[2], &p, &ops, &rep[2], err, sizeof err), PK_OK);
    PK_CHECK_EQ(rep[2].round_closed, 1); /* quorum 3 reached: the first two survived */
    for (int i = 0; i < 2; i++) {
        pk_sync_params q = params(&s, url, sizeof url, 0);
        q.upload = 0;
        pk_sync_model_ops o = toy_ops(&t[i]);
        PK_CHECK_EQ(pk_sync_round(st[i], &q, &o, &rep[i], err, sizeof err), PK_OK);
        PK_CHECK_EQ(rep[i].log_version, 1);
        PK_CHECK(!strcmp(rep[i].model_hash, rep[2].model_hash));
    }
    PK_CHECK_EQ(check_global(&s, &t[0], rep[2].model_hash, 1, 3), 0);
    srv_stop(&s, SIGTERM);
    for (int i = 0; i < 3; i++)
        pk_store_close(st[i]);
}

/* ---- 3. agent killed mid-upload ----------------------------------------------------------------
 */

static int find_upload(const char *cap)
{
    DIR *d = opendir(cap);
    struct dirent *de;
    int found = 0;
    while (d && (de = readdir(d)))
        found |= strstr(de->d_name, "POST-_v1_rounds_1_updates") != NULL;
    if (d)
        closedir(d);
    return found;
}

static void test_agent_kill(void)
{
    char base_hash[65], homeg[512], homeh[512], url[64], err[256], cap[512];
    toy tg, th;
    toy_init(&tg, PRIVATE[6]);
    toy_init(&th, PRIVATE[7]);
    hash_floats(tg.base, base_hash);
    write_task("c", base_hash, 2);
    snprintf(cap, sizeof cap, "%s/capture-c", g_dir);
    PK_CHECK(mkdir(cap, 0700) == 0);
    snprintf(homeg, sizeof homeg, "%s/killed", g_dir);
    snprintf(homeh, sizeof homeh, "%s/other", g_dir);
    pk_store *sg = make_home(homeg), *sh = make_home(homeh);
    PK_CHECK(sg && sh);
    if (!sg || !sh)
        return;
    pk_store_close(sg);
    srv s;
    /* every request waits 400 ms inside the coordinator, so the upload is in flight long enough */
    if (srv_start(&s, "c", 0, "delay=1:400ms,seed=3", cap)) {
        PK_CHECK(0);
        return;
    }
    pid_t child = fork();
    if (child == 0) {
        pk_store *cs = open_home(homeg);
        pk_sync_params p = params(&s, url, sizeof url, 30.0);
        pk_sync_model_ops ops = toy_ops(&tg);
        pk_status r = cs ? pk_sync_round(cs, &p, &ops, NULL, err, sizeof err) : PK_ERR_IO;
        _exit(r == PK_OK ? 0 : 1);
    }
    int seen = 0;
    for (int i = 0; i < 1000 && !seen; i++) {
        sleep_ms(5);
        seen = find_upload(cap);
    }
    PK_CHECK(seen);
    kill(child, SIGKILL); /* the upload was sent; its answer never arrives */
    int wst = 0;
    waitpid(child, &wst, 0);
    PK_CHECK(WIFSIGNALED(wst));
    sg = open_home(homeg);
    PK_CHECK(sg != NULL);
    if (!sg)
        return;
    char *ik = NULL, *body = NULL;
    PK_CHECK_EQ(pk_store_outbox_peek(sg, &ik, &body, NULL, 0), PK_OK); /* still pending */
    free(ik);
    free(body);
    pk_sync_report rg, rh;
    pk_sync_params p = params(&s, url, sizeof url, 0);
    pk_sync_model_ops og = toy_ops(&tg);
    long g0 = tg.grads;
    PK_CHECK_EQ(pk_sync_round(sg, &p, &og, &rg, err, sizeof err), PK_OK);
    PK_CHECK_EQ(rg.flushed, 1);
    PK_CHECK_EQ(rg.uploaded, 1);
    PK_CHECK_EQ(rg.round, 1);
    PK_CHECK_EQ(tg.grads, g0); /* no second update computed for round 1 */
    PK_CHECK_EQ(pk_store_outbox_peek(sg, &ik, &body, NULL, 0), PK_ERR_NOTFOUND);
    p.wait_s = 10;
    pk_sync_model_ops oh = toy_ops(&th);
    PK_CHECK_EQ(pk_sync_round(sh, &p, &oh, &rh, err, sizeof err), PK_OK);
    PK_CHECK_EQ(rh.round_closed, 1);
    p.upload = 0;
    PK_CHECK_EQ(pk_sync_round(sg, &p, &og, &rg, err, sizeof err), PK_OK);
    PK_CHECK(!strcmp(rg.model_hash, rh.model_hash));
    PK_CHECK_EQ(check_global(&s, &tg, rh.model_hash, 1, 2), 0); /* exactly two uploads */
    srv_stop(&s, SIGTERM);
    pk_store_close(sg);
    pk_store_close(sh);
}

int main(void)
{
    if (sodium_init() < 0 || pk_http_global_init() != PK_OK)
        return 1;
    snprintf(g_dir, sizeof g_dir, "/tmp/pk-sync-fed-XXXXXX");
    if (!mkdtemp(g_dir))
        return 1;
    randombytes_buf(g_pool_seed, sizeof g_pool_seed);
    double t0 = pk_time_now();
    test_three_agents();
    double t1 = pk_time_now();
    test_restart();
    double t2 = pk_time_now();
    test_agent_kill();
    printf("times: three agents %.2f s, restart %.2f s, agent kill %.2f s\n", t1 - t0, t2 - t1,
           pk_time_now() - t2);
    if (pk_test_failures == 0) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", g_dir);
    } else {
        fprintf(stderr, "left %s for inspection\n", g_dir);
    }
    pk_http_global_cleanup();
    return PK_TEST_DONE();
}
