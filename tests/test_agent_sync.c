/* test_agent_sync.c: `pocketllm agent --sync URL --sync-every D` against pocketllm-server-mock
 * with faults on, the agent learning from two datasets (its sync child trains on their union
 * through `sync --datasets`): while the coordinator is unreachable the agent's status says the
 * sync failed and when it retries; once the coordinator is up (same port) a later attempt
 * succeeds, the status says "ok", the coordinator's log has the agent's round, and the agent
 * keeps training. */
#include "pk_mezo.h"
#include "pk_model.h"
#include "pk_test.h"
#include "test_agent_util.h"
#include "test_product_util.h"
#include "test_util.h"

#define PASS    "agent sync passphrase"
#define STORIES PK_STORIES_DIR
#define FAULTS  "delay=0.1:20ms,drop=0.05,5xx=0.1,truncate=0.05,seed=5"

static char tmp[256], pass[300], home[300];

static int base_hash(char hex[65])
{
    pk_model *m = NULL;
    pk_status st = pk_model_load(STORIES, pk_model_default_params(), &m, NULL, 0);
    if (st == PK_OK)
        st = pk_weights_hash(m, hex);
    pk_model_free(m);
    return st == PK_OK;
}

static int write_task(void)
{
    char hex[65], json[1024], path[300];
    if (!base_hash(hex))
        return 0;
    snprintf(json, sizeof json,
             "{\"task_id\":\"agent-test\",\"base_model_hash\":\"%s\",\"pool_size\":4096,"
             "\"pool_seed\":\"%064d\",\"z_kind\":\"gaussian\",\"lr\":0.001,\"eps\":0.001,"
             "\"local_steps\":2,\"batch_size\":2,\"quorum\":1,\"deadline_seconds\":30}\n",
             hex, 7);
    snprintf(path, sizeof path, "%s/task.json", tmp);
    return write_string(path, json) == 0;
}

static int start_coord(server *sv, int port)
{
    char args[1200];
    snprintf(args, sizeof args, "--db %s/coord.db --task %s/task.json --faults %s 2>>%s/server.log",
             tmp, tmp, FAULTS, tmp);
    if (port > 0) { /* server_start passes --port 0 first; a later --port wins */
        size_t n = strlen(args);
        snprintf(args + n, sizeof args - n, " --port %d", port);
    }
    return server_start(sv, args);
}

/* The last_sync result, once it contains want (at most secs seconds). */
static int wait_sync(const char *want, double secs)
{
    for (double t = 0; t < secs; t += 0.2) {
        cJSON *j = agent_status(home);
        const cJSON *y = cJSON_GetObjectItemCaseSensitive(j, "last_sync");
        const char *r = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(y, "result"));
        int ok = r && strstr(r, want) != NULL;
        cJSON_Delete(j);
        if (ok)
            return 1;
        sleep_ms(200);
    }
    fprintf(stderr, "timed out waiting for a sync result with '%s'\n", want);
    return 0;
}

/* A home with 30 notes, a cool desktop (no power supplies or thermal zones), an idle load. */
static void setup(char *sys, char *loadavg, size_t n)
{
    char notes[400];
    snprintf(sys, n, "%s/sys", tmp);
    mkdir(sys, 0700);
    snprintf(loadavg, n, "%s/loadavg", tmp);
    PK_CHECK_EQ(write_string(loadavg, "0.00 0.00 0.00 1/1 1\n"), 0);
    snprintf(notes, sizeof notes, "%s/notes.txt", tmp);
    FILE *f = fopen(notes, "w");
    for (int i = 0; f && i < 30; i++)
        fprintf(f, "Line %d of the private diary about the harbour.\n", i);
    if (f)
        fclose(f);
    PK_CHECK_EQ(write_string(pass, PASS "\n"), 0);
    PK_CHECK(write_task());
    PK_CHECK_EQ(run_fmt(NULL, RUN_SHOW_FAILURE,
                        "%s init --home %s --passphrase-file %s --opslimit 1 --memlimit 8192 "
                        ">/dev/null && %s import %s --dataset notes --format txt --home %s "
                        "--passphrase-file %s >/dev/null && %s import %s --dataset more "
                        "--format txt --home %s --passphrase-file %s >/dev/null",
                        POCKETLLM, home, pass, POCKETLLM, notes, home, pass, POCKETLLM, notes, home,
                        pass),
                0);
}

static pid_t start_agent(const char *sys, const char *loadavg, int port)
{
    char cmd[3000];
    snprintf(cmd, sizeof cmd,
             "exec %s agent --home %s --passphrase-file %s --model %s --datasets notes,more "
             "--sysfs-root %s --loadavg-file %s --poll 0.2 --batch 2 --seq-len 32 --steps 100000 "
             "--slice-steps 5 --sync http://127.0.0.1:%d --sync-every 3s 2>>%s/agent.stderr",
             POCKETLLM, home, pass, STORIES, sys, loadavg, port, tmp);
    return spawn_sh(cmd);
}

/* The coordinator's log holds the agent's round: a fresh home catches up to it. */
static void check_coordinator_log(int port)
{
    char *o = NULL, fresh[400];
    snprintf(fresh, sizeof fresh, "%s/fresh", tmp);
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE,
                        "%s init --home %s --passphrase-file %s --opslimit 1 --memlimit 8192 "
                        ">/dev/null && %s sync --catch-up --server http://127.0.0.1:%d --model %s "
                        "--home %s --passphrase-file %s --json --quiet",
                        POCKETLLM, fresh, pass, POCKETLLM, port, STORIES, fresh, pass),
                0);
    cJSON *r = o ? cJSON_Parse(last_line(o)) : NULL;
    const cJSON *lv = cJSON_GetObjectItemCaseSensitive(r, "log_version");
    PK_CHECK(cJSON_IsNumber(lv) && lv->valuedouble >= 1);
    cJSON_Delete(r);
    free(o);
}

/* `sync --datasets A,B` trains on their union: each name is looked up (a missing one is named,
 * before any network), and it cannot be combined with --dataset. */
static void check_sync_datasets(void)
{
    PK_CHECK(run_expect(1, "dataset 'absent': not found",
                        "%s sync --server http://127.0.0.1:9 --model %s --datasets notes,absent "
                        "--home %s --passphrase-file %s",
                        POCKETLLM, STORIES, home, pass));
    PK_CHECK(run_expect(2, "not both",
                        "%s sync --server http://127.0.0.1:9 --model %s --datasets notes,more "
                        "--dataset notes --home %s --passphrase-file %s",
                        POCKETLLM, STORIES, home, pass));
}

int main(void)
{
    char sys[400], loadavg[400];
    server sv = {0};
    if (!make_tmpdir(tmp, sizeof tmp, "agentsync"))
        return 1;
    snprintf(pass, sizeof pass, "%s/pass.txt", tmp);
    snprintf(home, sizeof home, "%s/home", tmp);
    setup(sys, loadavg, sizeof sys);
    check_sync_datasets();
    /* a port that answers nothing: the coordinator is started, its port noted, stopped */
    PK_CHECK(start_coord(&sv, 0));
    int port = sv.port;
    server_stop(&sv);
    pid_t pid = start_agent(sys, loadavg, port);
    PK_CHECK(wait_sync("failed", 60)); /* unreachable: failed, with the retry delay */
    PK_CHECK(wait_sync("retry in", 5));
    PK_CHECK(start_coord(&sv, port));
    PK_CHECK(wait_sync("ok", 120));
    cJSON *j = agent_status(home);
    PK_CHECK(j && cJSON_IsTrue(cJSON_GetObjectItem(j, "running")));
    cJSON_Delete(j);
    check_coordinator_log(port);
    PK_CHECK_EQ(run_fmt(NULL, RUN_SHOW_FAILURE,
                        "%s agent stop --home %s --passphrase-file %s >/dev/null", POCKETLLM, home,
                        pass),
                0);
    int st = 0;
    PK_CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    server_stop(&sv);
    if (pk_test_failures == 0)
        rm_rf(tmp);
    else
        fprintf(stderr, "kept %s\n", tmp);
    return PK_TEST_DONE();
}
