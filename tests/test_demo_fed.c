/* test_demo_fed.c: `pocketllm demo --federated` through the built CLI on stories260k:
 *  - with the coordinator next to the build's pocketllm: exit 0, and the last JSON line reports
 *    federated true, one round, the same global model hash on both devices (not the base
 *    model), a few KB of traffic per device, and only registrations and uploads received;
 *  - the demo's temporary home (and the coordinator's files in it) is removed afterwards and
 *    no coordinator is left running;
 *  - without --federated the summary does not claim it (federated null, no federated_* keys);
 *  - a pocketllm with no coordinator beside it: exit 1, a message naming
 *    pocketllm-server-mock, and federated false in the summary.
 * The CLI runs as an exec'd binary (libgomp is not fork-safe). */
#include "pk_common.h"
#include "pk_test.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function" /* not every helper is used here */
#include "json_test_util.h"
#include "test_product_util.h"
#pragma GCC diagnostic pop
#include "test_util.h"

#include <cJSON.h>
#include <dirent.h>
#include <math.h>

#define STEPS       20
#define LOCAL_STEPS 20 /* FED_LOCAL_STEPS of cmd_product.c, capped by --steps */

static char g_tmp[128];

/* Element i of the array j[key]: a number (NAN if absent) or a string ("" if absent). */
static double num_at(const cJSON *j, const char *key, int i)
{
    const cJSON *v = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, key), i);
    return cJSON_IsNumber(v) ? v->valuedouble : (double)NAN;
}

static const char *str_at(const cJSON *j, const char *key, int i)
{
    const cJSON *v = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, key), i);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static int is_hash(const char *h)
{
    if (strlen(h) != 64)
        return 0;
    for (const char *c = h; *c; c++)
        if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f')))
            return 0;
    return 1;
}

/* Entries of dir other than . and .. */
static int dir_entries(const char *dir)
{
    int n = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    if (d)
        closedir(d);
    return n;
}

/* Live processes whose command line mentions pocketllm-server-mock and g_tmp (the demo's home
 * is under g_tmp through TMPDIR, so its coordinator's --db is too). */
static int is_coordinator(const char *pid, const char *cmdline, void *user)
{
    (void)pid;
    (void)user;
    return strstr(cmdline, "pocketllm-server-mock") && strstr(cmdline, g_tmp);
}

static int coordinators_running(void)
{
    return count_processes(is_coordinator, NULL);
}

static void test_federated(void)
{
    char cmd[1024], *out = NULL;
    double t0 = pk_time_now();
    snprintf(cmd, sizeof cmd, "%s demo --federated --steps %d --json --quiet", POCKETLLM, STEPS);
    int rc = run_capture(cmd, &out);
    PK_CHECK_EQ(rc, 0);
    cJSON *j = last_json(out);
    PK_CHECK(j != NULL);
    if (rc != 0 || !j)
        fprintf(stderr, "demo --federated: exit %d, last line: %s\n", rc, last_line(out));
    const char *h = json_str(j, "federated_hash");
    PK_CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "federated")));
    PK_CHECK(is_hash(h));
    PK_CHECK(!strcmp(str_at(j, "federated_device_hashes", 0), h));
    PK_CHECK(!strcmp(str_at(j, "federated_device_hashes", 1), h));
    PK_CHECK(strcmp(h, json_str(j, "base_hash")) != 0);  /* the round moved the model */
    PK_CHECK(strcmp(h, json_str(j, "final_hash")) != 0); /* and it is not the local fine-tune */
    PK_CHECK(json_num(j, "federated_round") == 1.0);
    PK_CHECK(json_num(j, "federated_request_bodies") == 4.0); /* 2 registrations + 2 uploads */
    double loss = json_num(j, "federated_loss");
    PK_CHECK(isfinite(loss) && loss > 0.0);
    for (int i = 0; i < 2; i++) {
        double up = num_at(j, "federated_bytes_up", i), down = num_at(j, "federated_bytes_down", i);
        double body = num_at(j, "federated_upload_body_bytes", i);
        double pairs = num_at(j, "federated_pairs", i);
        PK_CHECK(up > 0 && up < 16384 && down > 0 && down < 16384);
        PK_CHECK(body > 0 && body < 2048);
        PK_CHECK(pairs >= 1 && pairs <= LOCAL_STEPS);
        printf("device %c: %.0f bytes up, %.0f down, upload body %.0f bytes, %.0f pairs\n", 'A' + i,
               up, down, body, pairs);
    }
    printf("federated: model %.16s..., held-out loss %.4f (base %.4f), %.1f s\n", h, loss,
           json_num(j, "loss_before"), pk_time_now() - t0);
    PK_CHECK_EQ(dir_entries(g_tmp), 0); /* the demo home and the coordinator's files are gone */
    PK_CHECK_EQ(coordinators_running(), 0);
    cJSON_Delete(j);
    free(out);
}

static void test_not_federated(void)
{
    char cmd[1024], *out = NULL;
    snprintf(cmd, sizeof cmd, "%s demo --steps 2 --json --quiet", POCKETLLM);
    PK_CHECK_EQ(run_capture(cmd, &out), 0);
    cJSON *j = last_json(out);
    PK_CHECK(j != NULL);
    PK_CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "federated")));
    PK_CHECK(cJSON_GetObjectItemCaseSensitive(j, "federated_hash") == NULL);
    cJSON_Delete(j);
    free(out);
}

/* A pocketllm copied where no coordinator sits beside it. */
static void test_no_coordinator(void)
{
    char bin[300], cmd[1024], *out = NULL;
    snprintf(bin, sizeof bin, "%s/bin", g_tmp);
    PK_CHECK(mkdir(bin, 0700) == 0);
    snprintf(bin, sizeof bin, "%s/bin/pocketllm", g_tmp);
    PK_CHECK(copy_file(POCKETLLM, bin) && chmod(bin, 0700) == 0);
    snprintf(cmd, sizeof cmd, "%s demo --federated --steps 2 --json --quiet 2>&1", bin);
    PK_CHECK_EQ(run_capture(cmd, &out), 1);
    PK_CHECK(out && strstr(out, "pocketllm-server-mock") != NULL);
    cJSON *j = last_json(out);
    PK_CHECK(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(j, "federated")));
    cJSON_Delete(j);
    free(out);
    snprintf(cmd, sizeof cmd, "rm -rf '%s/bin'", g_tmp);
    PK_CHECK_EQ(run_capture(cmd, NULL), 0);
}

int main(void)
{
    if (!make_tmpdir(g_tmp, sizeof g_tmp, "demofed"))
        return 1;
    double t0 = pk_time_now();
    setenv("TMPDIR", g_tmp, 1);              /* the demo makes its home here */
    setenv("OMP_WAIT_POLICY", "passive", 1); /* the coordinator shares the cores */
    unsetenv("POCKETLLM_MODEL");             /* the shipped stories260k */
    test_federated();
    test_not_federated();
    test_no_coordinator();
    PK_CHECK_EQ(dir_entries(g_tmp), 0);
    printf("total %.2f s\n", pk_time_now() - t0);
    rm_rf_if_passed(g_tmp, pk_test_failures);
    return PK_TEST_DONE();
}
