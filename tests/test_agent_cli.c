/* test_agent_cli.c: the on-device agent through the built CLI, with a faked sysfs and load
 * average: it waits on battery, trains on AC, stops on heat, refuses a second agent by pid,
 * picks up a newly imported dataset (a chained run), stops gracefully through `agent stop`,
 * survives kill -9 and resumes bit-exactly (its seed log equals an uninterrupted agent's), and
 * keeps private text out of its log. Also continual runs through `train --from-run` and
 * `data forget --with-runs`. */
#include "pk_test.h"
#include "test_agent_util.h"
#include "test_product_util.h"
#include "test_util.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>

#define PASS    "agent test passphrase"
#define SECRET  AGENT_NOTE_WORD
#define STORIES PK_STORIES_DIR

static char tmp[256], pass[300], sysfs[300], loadavg[300];

/* A phone: AC adapter (online 0/1), battery (capacity), one thermal zone (millidegrees). */
static void fake_device(int ac, int capacity, int milli_c)
{
    char p[400], v[32];
    snprintf(p, sizeof p, "%s/class/power_supply/AC/online", sysfs);
    snprintf(v, sizeof v, "%d\n", ac);
    put(p, v);
    snprintf(p, sizeof p, "%s/class/power_supply/BAT0/capacity", sysfs);
    snprintf(v, sizeof v, "%d\n", capacity);
    put(p, v);
    snprintf(p, sizeof p, "%s/class/thermal/thermal_zone0/temp", sysfs);
    snprintf(v, sizeof v, "%d\n", milli_c);
    put(p, v);
}

static void make_sysfs(void)
{
    char p[400];
    snprintf(sysfs, sizeof sysfs, "%s/sys", tmp);
    const char *dirs[] = {"",
                          "/class",
                          "/class/power_supply",
                          "/class/power_supply/AC",
                          "/class/power_supply/BAT0",
                          "/class/thermal",
                          "/class/thermal/thermal_zone0"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        snprintf(p, sizeof p, "%s%s", sysfs, dirs[i]);
        mkdir(p, 0700);
    }
    snprintf(p, sizeof p, "%s/class/power_supply/AC/type", sysfs);
    put(p, "Mains\n");
    snprintf(p, sizeof p, "%s/class/power_supply/BAT0/type", sysfs);
    put(p, "Battery\n");
    snprintf(loadavg, sizeof loadavg, "%s/loadavg", tmp);
    put(loadavg, "0.10 0.10 0.10 1/100 1\n");
}

/* A new home whose dataset "notes" holds notes i0 .. i0+n-1, each with the private marker word. */
static int make_home(const char *home, int i0, int n)
{
    char notes[400];
    snprintf(notes, sizeof notes, "%s.notes.txt", home);
    return agent_make_home(home, pass, notes, i0, n, 1);
}

/* Starts an agent on home (stderr to home.stderr); returns its pid. */
static pid_t start_agent(const char *home, const char *extra)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "exec %s agent --home %s --passphrase-file %s --model %s --datasets notes "
             "--sysfs-root %s --loadavg-file %s --poll 0.05 --batch 2 --seq-len 32 --holdout 20 "
             "--eval-every 10 --slice-steps 5 --checkpoint-every 20 --seed 7 --max-rss 256M %s "
             "2>>%s.stderr",
             POCKETLLM, home, pass, STORIES, sysfs, loadavg, extra, home);
    return spawn_sh(cmd);
}

/* Polls the status until state is `state` and reason contains `reason` (may be "") and, when
 * min_today >= 0, steps_today >= min_today; at most secs seconds. *out (may be NULL) gets it. */
static int wait_state(const char *home, const char *state, const char *reason, double min_today,
                      double secs, cJSON **out)
{
    for (double t = 0; t < secs; t += 0.1) {
        cJSON *j = agent_status(home);
        int ok = j && !strcmp(json_str(j, "state"), state) &&
                 strstr(json_str(j, "reason"), reason) && jnum(j, "steps_today") >= min_today;
        if (ok) {
            if (out)
                *out = j;
            else
                cJSON_Delete(j);
            return 1;
        }
        cJSON_Delete(j);
        sleep_ms(100);
    }
    cJSON *j = agent_status(home);
    char *txt = j ? cJSON_PrintUnformatted(j) : NULL;
    fprintf(stderr, "timed out waiting for state %s (%s); last status: %s\n", state, reason,
            txt ? txt : "none");
    free(txt);
    cJSON_Delete(j);
    return 0;
}

/* `agent stop` on home, then the agent's clean exit (0). */
static void stop_agent(const char *home, pid_t pid)
{
    PK_CHECK_EQ(run_fmt(NULL, RUN_SHOW_FAILURE,
                        "%s agent stop --home %s --passphrase-file %s >/dev/null", POCKETLLM, home,
                        pass),
                0);
    PK_CHECK_EQ(wait_exit(pid, 30), 0);
}

static int seedlog_of(const char *home, int run, const char *out)
{
    return run_fmt(NULL, RUN_SHOW_FAILURE,
                   "%s export --run %d --seed-log %s --home %s --passphrase-file %s >/dev/null",
                   POCKETLLM, run, out, home, pass);
}

/* ---- 1. the agent's life on one home -------------------------------------------------------- */

static void check_log(const char *home)
{
    char path[400];
    struct stat sb;
    size_t len = 0;
    snprintf(path, sizeof path, "%s/agent.log", home);
    char *log = slurp(path, &len);
    PK_CHECK(log != NULL && len > 0);
    PK_CHECK(log && strstr(log, "training") != NULL);
    PK_CHECK(log && strstr(log, SECRET) == NULL); /* no private text, ever */
    PK_CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0600);
    free(log);
}

/* A second agent on the home is refused, naming the first's pid. */
static void check_second_agent(const char *home, pid_t first)
{
    char path[400], want[64];
    pid_t two = start_agent(home, "");
    PK_CHECK_EQ(wait_exit(two, 30), 1);
    snprintf(path, sizeof path, "%s.stderr", home);
    snprintf(want, sizeof want, "(pid %ld)", (long)first);
    char *err = slurp(path, NULL);
    PK_CHECK(err && strstr(err, "already running") && strstr(err, want));
    if (!(err && strstr(err, want)))
        fprintf(stderr, "second agent said: %s\n", err ? err : "(nothing)");
    free(err);
}

/* Examples imported by another process while the agent trains: a new run chained from the
 * best point, on all the examples. */
static void check_new_examples(const char *home)
{
    char more[400];
    cJSON *j = NULL;
    PK_CHECK(wait_state(home, "training", "", 1, 30, &j));
    double r1 = jnum(j, "run");
    cJSON_Delete(j);
    snprintf(more, sizeof more, "%s.more.txt", home);
    agent_write_notes(more, 1000, 20);
    PK_CHECK_EQ(run_fmt(NULL, RUN_SHOW_FAILURE,
                        "%s import %s --dataset notes --format txt --home %s --passphrase-file %s "
                        ">/dev/null",
                        POCKETLLM, more, home, pass),
                0);
    int newer = 0;
    for (int i = 0; i < 300 && !newer; i++) {
        j = agent_status(home);
        newer = j && jnum(j, "run") > r1 && !strcmp(json_str(j, "state"), "training");
        cJSON_Delete(j);
        sleep_ms(100);
    }
    PK_CHECK(newer);
    char log[400];
    snprintf(log, sizeof log, "%s.chained.seedlog", home);
    PK_CHECK_EQ(seedlog_of(home, (int)r1 + 1, log), 0);
    char *text = slurp(log, NULL);
    PK_CHECK(text && strstr(text, "\nparent steps ") != NULL); /* chained from the best point */
    free(text);
}

/* Usage and memory-cap refusals happen before the home is touched. */
static void check_refusals(const char *home)
{
    /* stories260k: 1,044,992 bytes + a tenth + 24 MB = 25.1 MB; hizoo adds its Hessian budget,
     * a tenth of the weights by default: 25.2 MB; top:1 the frozen prefix's store, at most 16 MB
     * (a quarter of the weights is less): 41.1 MB; hizoo with --hessian-budget 1.5: 26.6 MB */
    char *small = NULL; /* a cap under 0.1 MB is printed in KB, not as 0.0 MB */
    PK_CHECK_EQ(run_fmt(&small, RUN_MERGE_STDERR,
                        "%s agent --home %s --passphrase-file %s --model %s --datasets notes "
                        "--max-rss 1K",
                        POCKETLLM, home, pass, STORIES),
                1);
    PK_CHECK(small && strstr(small, "above the cap of 1.0 KB"));
    free(small);
    const char *opts[4] = {"--estimator spsa", "--estimator hizoo", "--trainable top:1",
                           "--estimator hizoo --hessian-budget 1.5"};
    const char *needs[4] = {"25.1 MB", "25.2 MB", "41.1 MB", "26.6 MB"};
    for (int e = 0; e < 4; e++) {
        char *o = NULL;
        PK_CHECK_EQ(run_fmt(&o, RUN_MERGE_STDERR,
                            "%s agent --home %s --passphrase-file %s --model %s --datasets notes "
                            "%s --max-rss 1M",
                            POCKETLLM, home, pass, STORIES, opts[e]),
                    1);
        PK_CHECK(o && strstr(o, "--max-rss: training") && strstr(o, "above the cap of 1.0 MB"));
        PK_CHECK(o && strstr(o, needs[e]));
        free(o);
    }
    /* usage errors up front (exit 2), not hours later: an hour past 23, text after the end
     * time, an empty window, a coordinator URL that is not one */
    static const char *const bad[][2] = {{"--window 25:00-01:00", "want HH:MM-HH:MM"},
                                         {"--window 10:00-11:00x", "want HH:MM-HH:MM"},
                                         {"--window 10:00-10:00", "the window is empty"},
                                         {"--sync notaurl", "--sync: expected http://"},
                                         {"--hessian-budget 100", "from 0 to 64, got '100'"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *o = NULL;
        PK_CHECK_EQ(run_fmt(&o, RUN_MERGE_STDERR,
                            "%s agent --home %s --model %s --datasets notes %s", POCKETLLM, home,
                            STORIES, bad[i][0]),
                    2);
        PK_CHECK(o && strstr(o, bad[i][1]));
        free(o);
    }
    PK_CHECK_EQ(run_fmt(NULL, RUN_PLAIN, "%s agent --home %s --datasets notes 2>/dev/null",
                        POCKETLLM, home),
                2);
}

/* Outside its time window the agent waits even on AC; SIGINT ends it cleanly (exit 0). */
static void check_window(const char *home)
{
    fake_device(1, 100, 30000);
    pid_t pid = start_agent(home, "--now 12:00 --window 22:00-06:00");
    PK_CHECK(wait_state(home, "waiting", "outside the time window 22:00-06:00", 0, 30, NULL));
    kill(pid, SIGINT);
    PK_CHECK_EQ(wait_exit(pid, 30), 0);
    cJSON *j = agent_status(home);
    PK_CHECK(j && cJSON_IsFalse(cJSON_GetObjectItem(j, "running")));
    cJSON_Delete(j);
}

static void test_lifecycle(void)
{
    char home[300];
    cJSON *j = NULL;
    snprintf(home, sizeof home, "%s/a", tmp);
    PK_CHECK_EQ(make_home(home, 0, 60), 0);
    check_refusals(home);
    check_window(home);
    fake_device(0, 35, 30000); /* on battery at 35%: wait */
    pid_t pid = start_agent(home, "--steps 100000 --early-stop 0");
    PK_CHECK(wait_state(home, "waiting", "battery at 35%", 0, 30, &j));
    PK_CHECK(jnum(j, "steps_today") == 0);
    PK_CHECK(cJSON_IsTrue(cJSON_GetObjectItem(j, "running")));
    cJSON_Delete(j);
    check_second_agent(home, pid);

    fake_device(1, 35, 30000); /* plugged in */
    PK_CHECK(wait_state(home, "training", "run", 3, 30, NULL));
    fake_device(1, 35, 95000); /* hot */
    PK_CHECK(wait_state(home, "waiting", "thermal_zone0 at 95.0 C", 0, 30, &j));
    double steps = jnum(j, "steps_today");
    cJSON_Delete(j);
    sleep_ms(500);
    j = agent_status(home);
    PK_CHECK(j && jnum(j, "steps_today") == steps); /* no step while hot */
    PK_CHECK(j && cJSON_IsObject(cJSON_GetObjectItem(j, "best")));
    cJSON_Delete(j);
    put(loadavg, "7.50 3.00 1.00 1/100 1\n"); /* busy */
    fake_device(1, 35, 30000);
    PK_CHECK(wait_state(home, "waiting", "load average", 0, 30, NULL));
    put(loadavg, "0.10 0.10 0.10 1/100 1\n");
    check_new_examples(home);

    char *o = NULL;
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE, "%s agent stop --home %s --passphrase-file %s",
                        POCKETLLM, home, pass),
                0);
    free(o);
    PK_CHECK_EQ(wait_exit(pid, 30), 0);
    j = agent_status(home);
    PK_CHECK(j && cJSON_IsFalse(cJSON_GetObjectItem(j, "running")));
    cJSON_Delete(j);
    check_log(home);
}

/* ---- the log's rotation ---------------------------------------------------------------------- */

/* The log of home (name "agent.log" or "agent.log.1"): owned text, NULL if missing; *mode gets
 * its permission bits. */
static char *read_log(const char *home, const char *name, unsigned *mode, size_t *len)
{
    char path[400];
    struct stat sb;
    snprintf(path, sizeof path, "%s/%s", home, name);
    *mode = stat(path, &sb) == 0 ? (unsigned)(sb.st_mode & 0777) : 0;
    return slurp(path, len);
}

/* With --log-max 1K the agent trains a little, then waits on a battery whose charge changes (one
 * log line each) until agent.log is rotated: agent.log.1 holds the earliest lines (the old
 * content, rotated once it passed the limit), agent.log the later ones; both stay 0600 and
 * neither holds private text. */
static void test_log_rotation(void)
{
    char home[300], path[400], want[64];
    struct stat sb;
    snprintf(home, sizeof home, "%s/rot", tmp);
    PK_CHECK_EQ(make_home(home, 0, 30), 0);
    fake_device(1, 100, 30000);
    /* no periodic eval: its two lines per 10 steps would fill 1K before the first toggle on a
     * quiet machine */
    pid_t pid = start_agent(home, "--steps 100000 --early-stop 0 --eval-every 1000000 "
                                  "--log-max 1K --quiet");
    PK_CHECK(wait_state(home, "training", "run", 2, 30, NULL));
    snprintf(path, sizeof path, "%s/agent.log.1", home);
    int toggles = 0;
    for (; toggles < 80 && stat(path, &sb) != 0; toggles++) {
        fake_device(0, 30 + toggles % 2, 30000);
        snprintf(want, sizeof want, "battery at %d%%", 30 + toggles % 2);
        PK_CHECK(wait_state(home, "waiting", want, -1, 30, NULL));
    }
    PK_CHECK(toggles >= 2);    /* the agent's own lines drove it past 1K, not the start alone */
    fake_device(0, 29, 30000); /* one line into the new file */
    PK_CHECK(wait_state(home, "waiting", "battery at 29%", -1, 30, NULL));
    kill(pid, SIGTERM);
    PK_CHECK_EQ(wait_exit(pid, 30), 0);
    unsigned m_old = 0, m_new = 0;
    size_t n_old = 0, n_new = 0;
    char *old = read_log(home, "agent.log.1", &m_old, &n_old);
    char *cur = read_log(home, "agent.log", &m_new, &n_new);
    PK_CHECK(old != NULL && cur != NULL);
    PK_CHECK_EQ(m_old, 0600);
    PK_CHECK_EQ(m_new, 0600);
    PK_CHECK(n_old > 1024 && n_old < 1024 + 512); /* rotated once it passed the limit */
    PK_CHECK(old && strstr(old, " info starting: no run yet\n") != NULL); /* the first line */
    PK_CHECK(old && strstr(old, "training: run 1 on notes") != NULL);
    PK_CHECK(cur && strstr(cur, "starting:") == NULL && strstr(cur, "battery at 29%") != NULL);
    PK_CHECK(cur && strstr(cur, "stopping: asked to stop") != NULL);
    PK_CHECK(old && strstr(old, SECRET) == NULL);
    PK_CHECK(cur && strstr(cur, SECRET) == NULL);
    free(old);
    free(cur);
    PK_CHECK(run_expect(2, "--log-max: want a size of at least 1K",
                        "%s agent --home %s --passphrase-file %s --model %s --datasets notes "
                        "--log-max 100",
                        POCKETLLM, home, pass, STORIES));
}

/* ---- 2. kill -9 at any moment, then a restart: the same bits as an uninterrupted agent --------
 */

static void run_until_done(const char *home, int kill_at)
{
    const char *args = "--steps 150 --early-stop 0";
    char at[64], flag[400];
    snprintf(at, sizeof at, "agent.step.%d", kill_at);
    snprintf(flag, sizeof flag, "%s/%s", tmp, at);
    if (kill_at > 0) { /* the agent waits at the pause point after logging step kill_at */
        setenv("POCKETLLM_PAUSE_AT", at, 1);
        setenv("POCKETLLM_PAUSE_DIR", tmp, 1);
    }
    pid_t pid = start_agent(home, args);
    unsetenv("POCKETLLM_PAUSE_AT");
    unsetenv("POCKETLLM_PAUSE_DIR");
    if (kill_at > 0) {
        PK_CHECK(wait_for_file(flag, 60));
        kill(pid, SIGKILL);
        unlink(flag);
        waitpid(pid, NULL, 0);
        /* resumed on two threads: losses do not depend on the thread count (DESIGN 10) */
        pid = start_agent(home, "--steps 150 --early-stop 0 --threads 2");
    }
    PK_CHECK(
        wait_state(home, "idle", "up to date", -1, 240, NULL)); /* SCHED_IDLE: slow under load */
    kill(pid, SIGTERM);                                         /* SIGTERM: a clean stop as well */
    PK_CHECK_EQ(wait_exit(pid, 30), 0);
}

/* An uninterrupted agent, then `trials` agents each killed (-9) after a different number of
 * steps and restarted: every one ends with the reference's seed log, byte for byte. */
static void test_kill9(int trials)
{
    char ref[300], hb[300], la[400], lb[400];
    snprintf(ref, sizeof ref, "%s/ref", tmp);
    PK_CHECK_EQ(make_home(ref, 0, 60), 0);
    fake_device(1, 100, 30000);
    run_until_done(ref, 0);
    snprintf(la, sizeof la, "%s/ref.seedlog", tmp);
    PK_CHECK_EQ(seedlog_of(ref, 1, la), 0);
    PK_CHECK(file_bytes(la) > 0);
    for (int i = 0; i < trials; i++) {
        snprintf(hb, sizeof hb, "%s/killed%d", tmp, i);
        PK_CHECK_EQ(make_home(hb, 0, 60), 0);
        run_until_done(hb, 17 + 9 * i);
        snprintf(lb, sizeof lb, "%s/killed%d.seedlog", tmp, i);
        PK_CHECK_EQ(seedlog_of(hb, 1, lb), 0);
        PK_CHECK(files_equal(la, lb));
    }
}

/* ---- 3. train --from-run, its seed log, forget --with-runs --------------------------------- */

/* `train ARGS`: the run id and final weights hash, or -1. */
static long long train(const char *home, const char *args, char *hash)
{
    char *o = NULL;
    long long run = -1;
    int rc = run_fmt(&o, RUN_SHOW_FAILURE,
                     "%s train %s --batch 2 --seq-len 32 --quiet --home %s --passphrase-file %s",
                     POCKETLLM, args, home, pass);
    cJSON *j = rc == 0 && o ? cJSON_Parse(last_line(o)) : NULL;
    if (j) {
        run = (long long)jnum(j, "run");
        snprintf(hash, 65, "%s", json_str(j, "weights"));
    }
    cJSON_Delete(j);
    free(o);
    return run;
}

static int run_exists(const char *home, int run)
{
    return run_fmt(NULL, RUN_PLAIN,
                   "%s runs show %d --json --home %s --passphrase-file %s >/dev/null 2>&1",
                   POCKETLLM, run, home, pass) == 0;
}

static void check_chained_replay(const char *home, const char *h2)
{
    char log[400], out[400], *o = NULL;
    snprintf(log, sizeof log, "%s/chain.seedlog", tmp);
    snprintf(out, sizeof out, "%s/chain-replay", tmp);
    PK_CHECK_EQ(seedlog_of(home, 2, log), 0);
    char *text = slurp(log, NULL);
    PK_CHECK(text && strstr(text, "\nparent steps 8 rows 8 z gaussian weight_decay "));
    free(text);
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE, "%s replay --seed-log %s --model %s --out %s",
                        POCKETLLM, log, STORIES, out),
                0);
    PK_CHECK(o && strstr(o, h2) != NULL); /* the chain replays on the base model, bit for bit */
    free(o);
    o = NULL;
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE,
                        "%s replay --run 2 --out %s.run --write-seed-log %s.w --home %s "
                        "--passphrase-file %s",
                        POCKETLLM, out, log, home, pass),
                0);
    PK_CHECK(o && strstr(o, h2) != NULL);
    free(o);
    /* the log `replay --write-seed-log` writes of a chained run carries its parent too */
    o = NULL;
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE, "%s replay --seed-log %s.w --model %s --out %s.w",
                        POCKETLLM, log, STORIES, out),
                0);
    PK_CHECK(o && strstr(o, h2) != NULL);
    free(o);
}

/* A chain whose ancestors trained with fzoo, then spsa, then hizoo with layer sampling (runs
 * 4..7 on dataset c): the seed log of the spsa child names each ancestor's estimator (parent
 * lines version 2) and replays on the base model to the child's weights, bit for bit. */
static void check_estimator_chain(const char *home)
{
    char h[4][65], log[400], out[400], *o = NULL;
    PK_CHECK_EQ(train(home,
                      "--model " STORIES " --dataset c --steps 4 --estimator fzoo "
                      "--perturbations 2",
                      h[0]),
                4);
    PK_CHECK_EQ(train(home, "--from-run 4 --dataset c --steps 3", h[1]), 5);
    PK_CHECK_EQ(train(home,
                      "--from-run 5 --dataset c --steps 3 --estimator hizoo --perturb-layers 1 "
                      "--hessian-budget 2",
                      h[2]),
                6);
    PK_CHECK_EQ(train(home, "--from-run 6 --dataset c --steps 2", h[3]), 7);
    snprintf(log, sizeof log, "%s/est-chain.seedlog", tmp);
    snprintf(out, sizeof out, "%s/est-chain-replay", tmp);
    PK_CHECK_EQ(seedlog_of(home, 7, log), 0);
    char *text = slurp(log, NULL);
    PK_CHECK(text && strstr(text, "\nparent steps 4 rows 8 z rademacher weight_decay ") &&
             strstr(text, " estimator fzoo perturbations 2 trainable all\n"));
    PK_CHECK(text && strstr(text, " estimator hizoo hessian_smooth ") &&
             strstr(text, " perturb_layers 1 trainable all\n"));
    PK_CHECK(text && strstr(text, "\nestimator ") == NULL); /* the child's own: plain spsa */
    free(text);
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE, "%s replay --seed-log %s --model %s --out %s",
                        POCKETLLM, log, STORIES, out),
                0);
    PK_CHECK(o && strlen(h[3]) == 64 && strstr(o, h[3]) != NULL);
    free(o);
    /* run 6 itself (hizoo with layer sampling under the fzoo and spsa ancestors) as well */
    PK_CHECK_EQ(seedlog_of(home, 6, log), 0);
    o = NULL;
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE, "%s replay --seed-log %s --model %s --out %s.6",
                        POCKETLLM, log, STORIES, out),
                0);
    PK_CHECK(o && strlen(h[2]) == 64 && strstr(o, h[2]) != NULL);
    free(o);
}

/* `runs show` names a run's parent (text and --json); a run from the base model has none. */
static void check_runs_show_lineage(const char *home)
{
    char *o = NULL;
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE,
                        "%s runs show 2 --json --home %s --passphrase-file %s", POCKETLLM, home,
                        pass),
                0);
    cJSON *j = o ? cJSON_Parse(last_line(o)) : NULL;
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "parent");
    PK_CHECK(cJSON_IsObject(p) && jnum(p, "run") == 1 && jnum(p, "steps") == 8);
    cJSON_Delete(j);
    free(o);
    o = NULL;
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE,
                        "%s runs show 1 --json --home %s --passphrase-file %s", POCKETLLM, home,
                        pass),
                0);
    j = o ? cJSON_Parse(last_line(o)) : NULL;
    PK_CHECK(j && cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "parent")));
    cJSON_Delete(j);
    free(o);
    o = NULL;
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE, "%s runs show 2 --home %s --passphrase-file %s",
                        POCKETLLM, home, pass),
                0);
    PK_CHECK(o && strstr(o, "\nparent run 1 after 8 steps\n") != NULL);
    free(o);
}

static void test_chained_runs(void)
{
    char home[300], h1[65] = "", h2[65] = "", h3[65] = "", f[400], *o = NULL;
    snprintf(home, sizeof home, "%s/chain", tmp);
    PK_CHECK_EQ(make_home(home, 0, 20), 0);
    const char *names[] = {"a", "b", "c"};
    for (int i = 0; i < 3; i++) {
        snprintf(f, sizeof f, "%s.%s.txt", home, names[i]);
        agent_write_notes(f, 100 * (i + 1), 20);
        PK_CHECK_EQ(run_fmt(NULL, RUN_SHOW_FAILURE,
                            "%s import %s --dataset %s --format txt --home %s --passphrase-file %s "
                            ">/dev/null",
                            POCKETLLM, f, names[i], home, pass),
                    0);
    }
    PK_CHECK_EQ(train(home, "--model " STORIES " --dataset a --steps 8", h1), 1);
    PK_CHECK_EQ(train(home, "--from-run 1 --dataset b --steps 6 --trainable bitfit --seed 3", h2),
                2);
    PK_CHECK_EQ(train(home, "--model " STORIES " --dataset c --steps 4", h3), 3);
    PK_CHECK(strlen(h2) == 64 && strcmp(h1, h2) != 0);
    check_chained_replay(home, h2);
    check_runs_show_lineage(home);
    check_estimator_chain(home);

    /* forgetting a dataset a parent trained on: the weights of its children still carry it */
    PK_CHECK(run_expect(0, "runs 1, 2 still carry dataset 'a'",
                        "%s data forget --dataset a --home %s "
                        "--passphrase-file %s",
                        POCKETLLM, home, pass));
    PK_CHECK(run_exists(home, 1) && run_exists(home, 2));
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE,
                        "%s data forget --dataset b --with-runs --home %s "
                        "--passphrase-file %s",
                        POCKETLLM, home, pass),
                0);
    PK_CHECK(o && strstr(o, "deleted 1 run") != NULL);
    free(o);
    PK_CHECK(run_exists(home, 1) && !run_exists(home, 2) && run_exists(home, 3));
    PK_CHECK_EQ(run_fmt(NULL, RUN_PLAIN,
                        "%s data forget --with-runs --id 1 --home %s "
                        "--passphrase-file %s 2>/dev/null",
                        POCKETLLM, home, pass),
                2);
}

/* ---- --lr auto and the estimators --------------------------------------------------------- */

/* An agent with --lr auto --estimator fzoo: its run searched its rate first (stored with the run,
 * the run at the chosen rate, guarded, fzoo) and its log says the rate it took. */
static void test_lr_auto(void)
{
    char home[300], path[400], *show = NULL;
    size_t len = 0;
    snprintf(home, sizeof home, "%s/auto", tmp);
    PK_CHECK_EQ(make_home(home, 0, 40), 0);
    fake_device(1, 100, 30000);
    put(loadavg, "0.10 0.10 0.10 1/100 1\n");
    pid_t pid =
        start_agent(home, "--lr auto --estimator fzoo --perturbations 4 --steps 30 --early-stop 0");
    PK_CHECK(wait_state(home, "idle", "up to date", 30, 60, NULL));
    stop_agent(home, pid);
    PK_CHECK_EQ(run_fmt(&show, RUN_SHOW_FAILURE,
                        "%s runs show 1 --json --home %s --passphrase-file %s", POCKETLLM, home,
                        pass),
                0);
    cJSON *j = show ? cJSON_Parse(show) : NULL;
    const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(j, "config");
    const cJSON *ls = cJSON_GetObjectItemCaseSensitive(cfg, "lr_search");
    double chosen = jnum(ls, "chosen");
    PK_CHECK(chosen > 0 && fabs(jnum(cfg, "lr") - chosen) <= 1e-6 * chosen);
    PK_CHECK(!strcmp(json_str(cfg, "estimator"), "fzoo") && jnum(cfg, "perturbations") == 4);
    PK_CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cfg, "lr_guard")));
    int n = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(ls, "candidates"));
    PK_CHECK(n >= 5); /* the decades 1e-6 .. 1e-2, then around the best */
    cJSON_Delete(j);
    free(show);
    snprintf(path, sizeof path, "%s/agent.log", home);
    char *log = slurp(path, &len), want[128];
    snprintf(want, sizeof want, "run 1: learning rate %g (--lr auto: %d rates x 10 steps", chosen,
             n);
    PK_CHECK(log && strstr(log, want) != NULL);
    if (log && !strstr(log, want))
        fprintf(stderr, "agent.log lacks '%s':\n%s\n", want, log);
    free(log);
    /* one note: the search (it needs 2 training examples) is not started and the agent waits;
     * more notes, and it trains */
    snprintf(home, sizeof home, "%s/auto1", tmp);
    PK_CHECK_EQ(make_home(home, 0, 1), 0);
    pid = start_agent(home, "--lr auto --steps 10 --early-stop 0");
    PK_CHECK(
        wait_state(home, "idle", "--lr auto: its search needs 2 training examples", 0, 60, NULL));
    char notes[400];
    snprintf(notes, sizeof notes, "%s.more.txt", home);
    PK_CHECK_EQ(agent_make_home(home, pass, notes, 1, 20, 0), 0);
    PK_CHECK(wait_state(home, "idle", "up to date", 10, 60, NULL));
    stop_agent(home, pid);
    /* a malformed rate is refused before anything starts */
    PK_CHECK(run_expect(2, "--lr fast: want a rate in [0, 100] or auto",
                        "%s agent --home %s --passphrase-file %s --model %s --datasets notes "
                        "--lr fast",
                        POCKETLLM, home, pass, STORIES));
}

/* A trainable set the model refuses is refused at start (exit 1, train's message on stderr, no
 * log line: the agent never ran), not hours later at its first training. A setting that fails
 * only when the agent first trains (hizoo's diagonal above --hessian-budget) stops it at once,
 * exit 1, with the reason in its log and no "retrying" (it would fail the same way). */
static void test_bad_setting(void)
{
    char home[300], path[400];
    size_t len = 0;
    snprintf(home, sizeof home, "%s/badset", tmp);
    PK_CHECK_EQ(make_home(home, 0, 10), 0);
    fake_device(1, 100, 30000);
    put(loadavg, "0.10 0.10 0.10 1/100 1\n");
    pid_t pid = start_agent(home, "--trainable top:0");
    PK_CHECK_EQ(wait_exit(pid, 60), 1);
    snprintf(path, sizeof path, "%s.stderr", home);
    char *err = slurp(path, &len);
    PK_CHECK(err && strstr(err, "--trainable: trainable tensors 'top:0': want top:K"));
    free(err);
    snprintf(path, sizeof path, "%s/agent.log", home);
    char *log = slurp(path, &len);
    PK_CHECK(log == NULL || !strstr(log, "starting"));
    free(log);
    pid = start_agent(home, "--estimator hizoo --hessian-budget 0.01");
    PK_CHECK_EQ(wait_exit(pid, 60), 1);
    log = slurp(path, &len);
    PK_CHECK(log && strstr(log, "stopping: hizoo: the fp32 Hessian diagonal") &&
             !strstr(log, "retrying"));
    free(log);
}

/* argv[1]: kill -9 trials (default 1; the slow variant runs more). */
int main(int argc, char **argv)
{
    int trials = argc > 1 ? atoi(argv[1]) : 1;
    if (!make_tmpdir(tmp, sizeof tmp, "agent"))
        return 1;
    snprintf(pass, sizeof pass, "%s/pass.txt", tmp);
    PK_CHECK_EQ(write_string(pass, PASS "\n"), 0);
    make_sysfs();
    test_chained_runs();
    test_lr_auto();
    test_bad_setting();
    test_lifecycle();
    test_log_rotation();
    test_kill9(trials > 0 ? trials : 1);
    rm_rf_if_passed(tmp, pk_test_failures);
    return PK_TEST_DONE();
}
