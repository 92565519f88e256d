/* test_agent_unit.c: the pieces of the agent and of continual runs that need no process: device
 * conditions over a faked sysfs (power, thermal, load, time window, what each refusal says),
 * chained seed logs (parent segments written, read back exactly, malformed lines refused, a
 * plain log unchanged; parent lines version 2 with an ancestor's estimator settings) and
 * checkpoint blobs that do not fit (an error in err, nothing logged). */
#include "pk_agent.h"
#include "pk_mezo.h"
#include "pk_model.h"
#include "pk_test.h"
#include "pk_train.h"
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmp[128];

static void put(const char *rel, const char *text)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", tmp, rel);
    PK_CHECK_EQ(write_string(p, text), 0);
}

static void mk(const char *rel)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", tmp, rel);
    mkdir(p, 0700);
}

static int ok(const pk_agent_conditions *c, double own, const char *want_in_why)
{
    char why[256] = "";
    int r = pk_agent_conditions_ok(c, own, why, sizeof why);
    if (want_in_why && !strstr(why, want_in_why)) {
        fprintf(stderr, "why: '%s', wanted '%s'\n", why, want_in_why);
        return -1;
    }
    return r;
}

static void test_conditions(void)
{
    pk_agent_conditions c = pk_agent_conditions_default();
    snprintf(c.sysfs_root, sizeof c.sysfs_root, "%s/sys", tmp);
    snprintf(c.loadavg_path, sizeof c.loadavg_path, "%s/loadavg", tmp);
    mk("sys");
    put("loadavg", "0.50 0.40 0.30 1/100 7\n");
    PK_CHECK_EQ(ok(&c, 0, "on AC"), 1); /* no supplies, no zones: a desktop */
    mk("sys/class");
    mk("sys/class/power_supply");
    mk("sys/class/power_supply/BAT0");
    put("sys/class/power_supply/BAT0/type", "Battery\n");
    put("sys/class/power_supply/BAT0/capacity", "50\n");
    PK_CHECK_EQ(ok(&c, 0, "on battery at 50% (trains on AC or at 80% and above)"), 0);
    put("sys/class/power_supply/BAT0/capacity", "80\n");
    PK_CHECK_EQ(ok(&c, 0, "battery charged"), 1);
    put("sys/class/power_supply/BAT0/capacity", "10\n");
    mk("sys/class/power_supply/AC");
    put("sys/class/power_supply/AC/type", "Mains\n");
    put("sys/class/power_supply/AC/online", "1\n");
    PK_CHECK_EQ(ok(&c, 0, "on AC"), 1); /* charging at 10% */
    mk("sys/class/thermal");
    mk("sys/class/thermal/thermal_zone3");
    put("sys/class/thermal/thermal_zone3/temp", "45000\n");
    PK_CHECK_EQ(ok(&c, 0, "thermal_zone3 at 45.0 C (limit 45.0 C)"), 0);
    put("sys/class/thermal/thermal_zone3/temp", "44900\n");
    PK_CHECK_EQ(ok(&c, 0, NULL), 1);
    put("loadavg", "2.50 0.40 0.30 1/100 7\n");
    PK_CHECK_EQ(ok(&c, 1.0, "load average 1.50 (limit 1.00)"), 0);
    PK_CHECK_EQ(ok(&c, 2.0, NULL), 1); /* its own two threads do not count */
    c.window_start = 22 * 60;
    c.window_end = 6 * 60; /* 22:00-06:00 spans midnight */
    c.now_minutes = 23 * 60;
    PK_CHECK_EQ(ok(&c, 2.0, NULL), 1);
    c.now_minutes = 5 * 60 + 59;
    PK_CHECK_EQ(ok(&c, 2.0, NULL), 1);
    c.now_minutes = 12 * 60;
    PK_CHECK_EQ(ok(&c, 2.0, "outside the time window 22:00-06:00"), 0);
}

static void fill_rows(pk_step_row *r, int n, uint64_t seed)
{
    for (int i = 0; i < n; i++)
        r[i] = (pk_step_row){i,     0,    seed + (uint64_t)i, 0.1f * (float)(i + 1), 2.5f, 2.4f,
                             1e-3f, 1e-3f};
}

static int rows_equal(const pk_step_row *a, const pk_step_row *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i].step != b[i].step || a[i].q_index != b[i].q_index || a[i].seed != b[i].seed ||
            memcmp(&a[i].g, &b[i].g, 5 * sizeof(float)) != 0)
            return 0;
    return 1;
}

/* Writes log to path and reads it back into *back; 1 on success. */
static int round_trip(const char *path, const pk_seedlog *log, pk_seedlog *back)
{
    char err[256] = "";
    if (pk_seedlog_write(path, log, err, sizeof err) != PK_OK ||
        pk_seedlog_read(path, back, err, sizeof err) != PK_OK) {
        fprintf(stderr, "seed log round trip: %s\n", err);
        return 0;
    }
    return 1;
}

/* Replaces the first `from` in the file with `to` and reads it: the status, err in err. */
static pk_status read_edited(const char *path, const char *from, const char *to, char *err,
                             size_t n)
{
    char *text = slurp(path, NULL), out[8192];
    char *at = text ? strstr(text, from) : NULL;
    pk_seedlog back;
    if (at == NULL) {
        free(text);
        snprintf(err, n, "'%s' not in the file", from);
        return PK_ERR_ARG;
    }
    snprintf(out, sizeof out, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    free(text);
    char edited[300];
    snprintf(edited, sizeof edited, "%s.edited", path);
    if (write_string(edited, out) != 0)
        return PK_ERR_IO;
    pk_status st = pk_seedlog_read(edited, &back, err, n);
    pk_seedlog_clear(&back);
    return st;
}

/* Parent lines version 2: an ancestor's estimator settings (fzoo, hizoo, layer sampling) are
 * written as fields of its line and read back exactly; a plain ancestor's line is the version-1
 * line; a version-1 line still reads (as spsa); inconsistent fields are refused. */
static void test_seedlog_parent_estimators(pk_seedlog *log, pk_seedlog_segment *segs)
{
    char path[256], err[256] = "";
    pk_seedlog back;
    segs[0].estimator = PK_EST_FZOO;
    segs[0].perturbations = 3;
    segs[1].estimator = PK_EST_HIZOO;
    segs[1].hessian_smooth = 1e-6f;
    segs[1].perturb_layers = 2;
    snprintf(path, sizeof path, "%s/est.seedlog", tmp);
    PK_CHECK(round_trip(path, log, &back));
    PK_CHECK(back.n_parents == 2 && back.parents[0].estimator == PK_EST_FZOO &&
             back.parents[0].perturbations == 3 && back.parents[0].perturb_layers == 0 &&
             back.parents[1].estimator == PK_EST_HIZOO && back.parents[1].hessian_smooth == 1e-6f &&
             back.parents[1].perturb_layers == 2 && !strcmp(back.parents[1].trainable, "bitfit") &&
             back.parents[1].z == PK_Z_RADEMACHER);
    PK_CHECK(back.n_parents == 2 && rows_equal(back.parents[1].rows, segs[1].rows, 4));
    PK_CHECK(back.estimator == PK_EST_SPSA); /* the run's own settings are its own */
    pk_seedlog_clear(&back);
    char *text = slurp(path, NULL);
    PK_CHECK(text && strstr(text, "\nparent steps 2 rows 2 z gaussian weight_decay 0x0p+0 "
                                  "estimator fzoo perturbations 3 trainable all\n"));
    PK_CHECK(text && strstr(text, " estimator hizoo hessian_smooth ") &&
             strstr(text, " perturb_layers 2 trainable bitfit\n"));
    free(text);
    /* a version-1 line (no estimator fields) reads as plain spsa */
    PK_CHECK_EQ(read_edited(path, " estimator fzoo perturbations 3", "", err, sizeof err), PK_OK);
    segs[0].estimator = PK_EST_SPSA;
    segs[0].perturbations = 0;
    PK_CHECK(round_trip(path, log, &back));
    PK_CHECK(back.n_parents == 2 && back.parents[0].estimator == PK_EST_SPSA);
    pk_seedlog_clear(&back);
    text = slurp(path, NULL);
    PK_CHECK(text && strstr(text, "\nparent steps 2 rows 2 z gaussian weight_decay 0x0p+0 "
                                  "trainable all\n")); /* byte for byte the version-1 line */
    free(text);
    /* refused: an unknown field, an estimator without its setting, another's setting */
    const char *bad[][2] = {{"perturb_layers 2 ", "perturb_layerz 2 "},
                            {"hessian_smooth 0x1.0c6f7ap-20 ", ""},
                            {"estimator hizoo", "estimator fzoo"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        PK_CHECK_EQ(read_edited(path, bad[i][0], bad[i][1], err, sizeof err), PK_ERR_FORMAT);
        PK_CHECK(strstr(err, "want 'parent steps S rows R") != NULL);
    }
    segs[1].estimator = PK_EST_SPSA;
    segs[1].hessian_smooth = 0;
    segs[1].perturb_layers = 0;
}

static void test_seedlog_chain(void)
{
    char path[256], err[256] = "";
    pk_step_row own[3], p1[2], p2[4];
    fill_rows(own, 3, 100);
    fill_rows(p1, 2, 200);
    fill_rows(p2, 4, 300);
    pk_seedlog_segment segs[2] = {
        {.z = PK_Z_GAUSSIAN, .trainable = "all", .steps = 2, .rows = p1, .n_rows = 2},
        {.z = PK_Z_RADEMACHER,
         .weight_decay = 0.01f,
         .trainable = "bitfit",
         .steps = 4,
         .rows = p2,
         .n_rows = 4}};
    pk_seedlog log;
    memset(&log, 0, sizeof log);
    memset(log.base_hash, 'a', 64);
    log.z = PK_Z_GAUSSIAN;
    strcpy(log.trainable, "layers\\.0\\..*");
    log.rows = own;
    log.n_rows = 3;
    log.parents = segs;
    log.n_parents = 2;
    snprintf(path, sizeof path, "%s/chain.seedlog", tmp);
    PK_CHECK_EQ(pk_seedlog_write(path, &log, err, sizeof err), PK_OK);
    pk_seedlog back;
    PK_CHECK_EQ(pk_seedlog_read(path, &back, err, sizeof err), PK_OK);
    PK_CHECK_EQ(back.n_parents, 2);
    PK_CHECK_EQ(back.n_rows, 3);
    PK_CHECK(back.n_parents == 2 && back.parents[1].z == PK_Z_RADEMACHER &&
             back.parents[1].weight_decay == 0.01f &&
             !strcmp(back.parents[1].trainable, "bitfit") && back.parents[1].steps == 4 &&
             back.parents[1].n_rows == 4 && rows_equal(back.parents[1].rows, p2, 4) &&
             rows_equal(back.parents[0].rows, p1, 2));
    PK_CHECK(back.rows && rows_equal(back.rows, own, 3));
    pk_seedlog_clear(&back);
    /* damaged chains are refused with the line named */
    size_t len = 0;
    char *text = slurp(path, &len);
    char *bad = text ? strstr(text, "parent steps 4 rows 4") : NULL;
    if (bad)
        bad[13] = '3'; /* announces 3 steps for rows ending at step 4 */
    PK_CHECK(bad && write_string(path, text) == 0);
    PK_CHECK_EQ(pk_seedlog_read(path, &back, err, sizeof err), PK_ERR_FORMAT);
    PK_CHECK(strstr(err, "announces 3 steps") != NULL);
    if (bad)
        memcpy(bad, "parent stepz", 12);
    PK_CHECK(bad && write_string(path, text) == 0);
    PK_CHECK_EQ(pk_seedlog_read(path, &back, err, sizeof err), PK_ERR_FORMAT);
    PK_CHECK(strstr(err, "want 'parent steps S rows R") != NULL);
    free(text);
    test_seedlog_parent_estimators(&log, segs);
    /* a plain log has no parent lines */
    log.parents = NULL;
    log.n_parents = 0;
    PK_CHECK_EQ(pk_seedlog_write(path, &log, err, sizeof err), PK_OK);
    text = slurp(path, NULL);
    PK_CHECK(text && strstr(text, "parent") == NULL);
    free(text);
}

static void count_log(pk_log_level level, const char *msg, void *user)
{
    (void)level;
    (void)msg;
    ++*(int *)user;
}

/* A checkpoint that does not fit the model is PK_ERR_FORMAT with the reason in err, and the
 * library logs nothing: the caller prints it once. */
static void test_checkpoint_errors(void)
{
    pk_model *m = NULL;
    void *blob = NULL;
    size_t len = 0;
    char err[256] = "";
    int logged = 0;
    PK_CHECK_EQ(pk_model_load(PK_STORIES_DIR, pk_model_default_params(), &m, err, sizeof err),
                PK_OK);
    PK_CHECK(m && pk_checkpoint_pack(m, NULL, &blob, &len) == PK_OK);
    pk_log_set(count_log, &logged, PK_LOG_DEBUG);
    PK_CHECK_EQ(pk_checkpoint_unpack(m, NULL, blob, len - 1, err, sizeof err), PK_ERR_FORMAT);
    PK_CHECK(strstr(err, "bytes, expected") != NULL);
    if (blob)
        ((unsigned char *)blob)[0] = 'X';
    err[0] = 0;
    PK_CHECK_EQ(pk_checkpoint_unpack(m, NULL, blob, len, err, sizeof err), PK_ERR_FORMAT);
    PK_CHECK(strstr(err, "not a checkpoint") != NULL);
    PK_CHECK_EQ(pk_checkpoint_unpack(m, NULL, blob, 4, NULL, 0), PK_ERR_FORMAT);
    pk_log_set(NULL, NULL, PK_LOG_WARN);
    PK_CHECK_EQ(logged, 0);
    free(blob);
    pk_model_free(m);
}

int main(void)
{
    snprintf(tmp, sizeof tmp, "/tmp/pk_agentunit_XXXXXX");
    if (mkdtemp(tmp) == NULL)
        return 1;
    test_conditions();
    test_seedlog_chain();
    test_checkpoint_errors();
    if (pk_test_failures == 0)
        remove_tree(tmp);
    return PK_TEST_DONE();
}
