/* cmd_agent.c: `pocketllm agent` (the on-device training agent in the foreground), `agent status`
 * and `agent stop` (DESIGN 13). The loop is pk_agent_run (agent/); this file parses the options,
 * lowers the process's priority, writes the agent's log (HOME/agent.log, rotated) and runs a
 * sync as a child `pocketllm sync`, so the sync code path is the command's own. */
#define _GNU_SOURCE /* SCHED_IDLE */
#include "cli.h"
#include "passphrase.h"

#include "pk_agent.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ERRLEN  512
#define LOG_MAX (1L << 20) /* default --log-max: agent.log is rotated to agent.log.1 past it */
#define END_OPTIONS                                                                                \
    {                                                                                              \
        NULL, CLI_FLAG, 0, 0, 0, 0, NULL, NULL, NULL                                               \
    }

typedef struct agent_opts {
    cli_common c;
    const char *model;
    const char *datasets;
    const char *window;  /* "HH:MM-HH:MM" */
    const char *now;     /* "HH:MM" (tests) */
    const char *max_rss; /* "BYTES[K|M|G]" */
    const char *log_max; /* "BYTES[K|M|G]" */
    const char *sync;    /* coordinator URL */
    const char *sync_every;
    const char *sysfs_root;
    const char *loadavg;
    const char *lr;     /* a rate or "auto"; NULL: the default */
    uint64_t log_bytes; /* --log-max, parsed */
    pk_agent_params p;
} agent_opts;

#define T agent_opts
static const cli_option agent_table[] = {
    {"--model", CLI_STR, CLI_AT(T, model), 0, 0, NULL, "DIR", "base model (required)"},
    {"--datasets", CLI_STR, CLI_AT(T, datasets), 0, 0, NULL, "NAME[,NAME]",
     "datasets to learn from, as they grow (required)"},
    {"--objective", CLI_CHOICE, CLI_AT(T, p.train.objective), 0, 0, "lm|classify|accuracy", NULL,
     "what the loss measures"},
    {"--lr", CLI_STR, CLI_AT(T, lr), 0, 0, NULL, "F|auto",
     "learning rate (auto: each new run searches its rate first, as train --lr auto, and is "
     "guarded)"},
    {"--estimator", CLI_CHOICE, CLI_AT(T, p.train.mezo.estimator), 0, 0, "spsa|fzoo|hizoo", NULL,
     "zeroth-order estimator (train --estimator)"},
    {"--perturbations", CLI_INT, CLI_AT(T, p.train.mezo.perturbations), 2, 4096, NULL, "N",
     "fzoo: one-sided perturbations per step"},
    {"--fzoo-baseline", CLI_CHOICE, CLI_AT(T, p.train.mezo.fzoo_mean), 0, 0, "unperturbed|mean",
     NULL, "fzoo: compare each perturbed loss with the unperturbed one or with the mean of the N"},
    {"--hessian-budget", CLI_FLOAT, CLI_AT(T, p.train.mezo.hessian_budget), 0, 64, NULL, "F",
     "hizoo: the fp32 Hessian diagonal may take F x the weight bytes (train --hessian-budget)"},
    {"--hessian-every", CLI_INT, CLI_AT(T, p.train.mezo.hessian_every), 1, PK_HESSIAN_EVERY_MAX,
     NULL, "K", "hizoo: the Hessian update every K-th step (train --hessian-every)"},
    {"--perturb-layers", CLI_INT, CLI_AT(T, p.train.mezo.perturb_layers), 0, 4096, NULL, "K",
     "perturb and update K random layers per perturbation (0: all)"},
    {"--eps", CLI_FLOAT, CLI_AT(T, p.train.mezo.eps), 1e-8, 10, NULL, "F", "perturbation scale"},
    {"--weight-decay", CLI_FLOAT, CLI_AT(T, p.train.mezo.weight_decay), 0, 100, NULL, "F",
     "decoupled weight decay"},
    {"--spsa-q", CLI_INT, CLI_AT(T, p.train.mezo.spsa_q), 1, 1024, NULL, "Q",
     "perturbations per step"},
    {"--z", CLI_CHOICE, CLI_AT(T, p.train.mezo.z), 0, 0, "gaussian|rademacher", NULL,
     "perturbation distribution"},
    {"--trainable", CLI_BUF, CLI_AT(T, p.train.trainable), 0, 0, NULL, "SPEC",
     "all | bitfit | top:K | top-mlp:K | REGEX on tensor names"},
    {"--steps", CLI_INT, CLI_AT(T, p.train.steps), 1, 1LL << 40, NULL, "N", "steps per run"},
    {"--batch", CLI_INT, CLI_AT(T, p.train.batch), 1, 65536, NULL, "B", "examples per batch"},
    {"--seq-len", CLI_INT, CLI_AT(T, p.train.seq_len), 2, 1 << 20, NULL, "T", "tokens per example"},
    {"--seed", CLI_U64, CLI_AT(T, p.train.mezo.seed), 0, 0, NULL, "S", "seed of the runs"},
    {"--template", CLI_BUF, CLI_AT(T, p.train.template_), 0, 0, NULL, "TEXT",
     "classify: prompt with {text} / {text2}"},
    {"--labels", CLI_BUF, CLI_AT(T, p.train.labels), 0, 0, NULL, "WORDS",
     "classify: comma-separated label words"},
    {"--checkpoint-every", CLI_INT, CLI_AT(T, p.train.checkpoint_every), 0, 1LL << 40, NULL, "N",
     "sealed checkpoints every N steps (shortens each slice's replay)"},
    {"--holdout", CLI_INT, CLI_AT(T, p.holdout), 1, 90, NULL, "PCT",
     "percent of examples held out for eval"},
    {"--eval-every", CLI_INT, CLI_AT(T, p.eval_every), 1, 1LL << 40, NULL, "N",
     "eval every N steps"},
    {"--early-stop", CLI_INT, CLI_AT(T, p.early_stop), 0, 1 << 20, NULL, "PATIENCE",
     "end a run after PATIENCE evals without improvement (0: off)"},
    {"--slice-steps", CLI_INT, CLI_AT(T, p.slice_steps), 1, 1LL << 40, NULL, "N",
     "steps between looks for new examples"},
    {"--poll", CLI_FLOAT, CLI_AT(T, p.poll_s), 0.01, 86400, NULL, "SECONDS",
     "seconds between checks while waiting"},
    {"--min-battery", CLI_INT, CLI_AT(T, p.cond.min_battery), 0, 101, NULL, "PCT",
     "on battery, train only at or above PCT (101: only on AC)"},
    {"--max-temp", CLI_FLOAT, CLI_AT(T, p.cond.max_temp_c), -50, 200, NULL, "CELSIUS",
     "train only while every thermal zone is below it"},
    {"--max-load", CLI_FLOAT, CLI_AT(T, p.cond.max_load), 0, 1e6, NULL, "L",
     "train only while the load average (without the agent) is below L"},
    {"--window", CLI_STR, CLI_AT(T, window), 0, 0, NULL, "HH:MM-HH:MM",
     "train only in this local time window (default: any time)"},
    {"--now", CLI_STR, CLI_AT(T, now), 0, 0, NULL, "HH:MM",
     "pretend it is this time of day (tests)"},
    {"--sysfs-root", CLI_STR, CLI_AT(T, sysfs_root), 0, 0, NULL, "DIR",
     "where class/power_supply and class/thermal are (default /sys)"},
    {"--loadavg-file", CLI_STR, CLI_AT(T, loadavg), 0, 0, NULL, "FILE",
     "the load average (default /proc/loadavg)"},
    {"--max-rss", CLI_STR, CLI_AT(T, max_rss), 0, 0, NULL, "BYTES[K|M|G]",
     "refuse to start if training the model would need more memory"},
    {"--log-max", CLI_STR, CLI_AT(T, log_max), 0, 0, NULL, "BYTES[K|M|G]",
     "rotate HOME/agent.log to agent.log.1 past this size (default 1M, at least 1K)"},
    {"--sync", CLI_STR, CLI_AT(T, sync), 0, 0, NULL, "URL",
     "the coordinator to sync with (pocketllm sync)"},
    {"--sync-every", CLI_STR, CLI_AT(T, sync_every), 0, 0, NULL, "DURATION",
     "time between syncs: 90s, 30m, 6h, 1d (default 6h)"},
    CLI_THREADS_OPT_HELP(T, "threads (default 1: a background agent takes one core)"),
    CLI_QUIET_OPT(T),
    CLI_STORE_OPTS(T),
    END_OPTIONS,
};
#undef T

static const cli_command agent_cmd = {
    "agent",
    "agent --model DIR --datasets NAME[,NAME] [options]\n"
    "agent status [--json]\n"
    "agent stop",
    "Trains in the background of a phone or laptop: in slices while the device is on AC (or\n"
    "charged), cool and idle, asleep otherwise, at the lowest priority. Examples imported while\n"
    "it runs start a new run chained from the best evaluated point on all the examples. Stops\n"
    "at a step boundary on SIGTERM, SIGINT or `pocketllm agent stop`; a restart continues\n"
    "bit-exactly. Log: HOME/agent.log (no private text).",
    agent_table,
    0,
    "example:\n  pocketllm agent --model models/stories260k --datasets notes --max-rss 512M"};

/* ---- option values the table cannot check ---------------------------------------------------- */

/* "HH:MM" -> minutes after midnight, or -1. */
static int parse_hhmm(const char *s)
{
    int h = 0, m = 0, at = 0;
    if (sscanf(s, "%2d:%2d%n", &h, &m, &at) != 2 || s[at] != 0 || h < 0 || h > 23 || m < 0 ||
        m > 59)
        return -1;
    return h * 60 + m;
}

/* "90s", "30m", "6h", "1d" (or plain seconds) -> seconds, or -1. */
static double parse_duration(const char *s)
{
    char *end = NULL;
    double v = strtod(s, &end);
    if (end == s || !(v > 0) || !isfinite(v))
        return -1;
    double unit = !*end               ? 1
                  : !strcmp(end, "s") ? 1
                  : !strcmp(end, "m") ? 60
                  : !strcmp(end, "h") ? 3600
                  : !strcmp(end, "d") ? 86400
                                      : -1;
    return unit < 0 ? -1 : v * unit;
}

/* "512M" -> bytes, or 0. */
static uint64_t parse_bytes(const char *s)
{
    char *end = NULL;
    double v = strtod(s, &end);
    double unit = !*end                                    ? 1
                  : !strcmp(end, "K") || !strcmp(end, "k") ? 1024.0
                  : !strcmp(end, "M") || !strcmp(end, "m") ? 1048576.0
                  : !strcmp(end, "G") || !strcmp(end, "g") ? 1073741824.0
                                                           : -1;
    if (end == s || !(v > 0) || unit < 0 || v * unit > 1e18)
        return 0;
    return (uint64_t)(v * unit);
}

static int agent_check_times(agent_opts *o)
{
    const char *cmd = o->c.cmd;
    if (o->window) {
        char a[8] = "", b[8] = "";
        int at = 0, n = sscanf(o->window, "%5[0-9:]-%5[0-9:]%n", a, b, &at);
        int whole = n == 2 && o->window[at] == 0; /* nothing after the end time */
        o->p.cond.window_start = whole ? parse_hhmm(a) : -1;
        o->p.cond.window_end = whole ? parse_hhmm(b) : -1;
        if (o->p.cond.window_start < 0 || o->p.cond.window_end < 0) {
            cli_error(cmd, "--window: want HH:MM-HH:MM, got '%s'", o->window);
            return CLI_USAGE;
        }
        if (o->p.cond.window_start == o->p.cond.window_end) {
            cli_error(cmd,
                      "--window %s: the window is empty (start = end); leave --window out to "
                      "train at any time",
                      o->window);
            return CLI_USAGE;
        }
    }
    o->p.cond.now_minutes = o->now ? parse_hhmm(o->now) : -1;
    if (o->now && o->p.cond.now_minutes < 0) {
        cli_error(cmd, "--now: want HH:MM, got '%s'", o->now);
        return CLI_USAGE;
    }
    o->p.sync_every_s = o->sync ? 6 * 3600 : 0;
    if (o->sync_every)
        o->p.sync_every_s = parse_duration(o->sync_every);
    if (o->p.sync_every_s < 0) {
        cli_error(cmd, "--sync-every: want a duration such as 90s, 30m, 6h, 1d, got '%s'",
                  o->sync_every);
        return CLI_USAGE;
    }
    if (o->sync_every && !o->sync) {
        cli_error(cmd, "--sync-every needs --sync URL");
        return CLI_USAGE;
    }
    if (o->sync && strncmp(o->sync, "http://", 7) != 0 && strncmp(o->sync, "https://", 8) != 0) {
        cli_error(cmd, "--sync: expected http://HOST[:PORT] or https://..., got '%s'", o->sync);
        return CLI_USAGE;
    }
    return 0;
}

/* --log-max: at least 1K, so a rotated log still holds a useful stretch of lines. */
static int agent_check_log(agent_opts *o)
{
    o->log_bytes = o->log_max ? parse_bytes(o->log_max) : (uint64_t)LOG_MAX;
    if (o->log_bytes < 1024) {
        cli_error(o->c.cmd, "--log-max: want a size of at least 1K such as 1M, got '%s'",
                  o->log_max);
        return CLI_USAGE;
    }
    return 0;
}

/* The trainable set against the model now, not at the agent's first training (which may come
 * hours later, when the device is idle and charging): a spec the model refuses exits 1 here with
 * train's message. The first training checks it again (the model may change meanwhile). */
static int agent_check_trainable(const agent_opts *o)
{
    const char *tr = o->p.train.trainable;
    if (!tr[0] || strcmp(tr, "all") == 0)
        return 0;
    char err[ERRLEN] = "";
    pk_model *m = NULL;
    uint8_t *mask = NULL;
    pk_status st =
        pk_model_load(o->p.train.model_dir, pk_model_default_params(), &m, err, sizeof err);
    if (st == PK_OK)
        st = pk_mezo_trainable(m, tr, &mask, err, sizeof err);
    free(mask);
    pk_model_free(m);
    if (st != PK_OK) {
        cli_error(o->c.cmd, "--trainable: %s", err[0] ? err : pk_status_str(st));
        return CLI_ERR;
    }
    return 0;
}

/* Required options, paths, the trainable set, the memory cap. */
static int agent_check(agent_opts *o)
{
    const char *cmd = o->c.cmd;
    if (o->model == NULL || o->datasets == NULL || !o->datasets[0]) {
        cli_error(cmd, "--model DIR and --datasets NAME[,NAME] are required");
        return CLI_USAGE;
    }
    if (strlen(o->datasets) >= sizeof o->p.datasets) {
        cli_error(cmd, "--datasets: longer than %zu bytes", sizeof o->p.datasets - 1);
        return CLI_USAGE;
    }
    snprintf(o->p.datasets, sizeof o->p.datasets, "%s", o->datasets);
    if (cli_parse_lr(cmd, o->lr, &o->p.train.mezo.lr, &o->p.train.lr_auto) != 0)
        return CLI_USAGE;
    o->p.train.lr_guard = pk_lr_guard_on(PK_LR_GUARD_AUTO, o->p.train.lr_auto);
    if (realpath(o->model, o->p.train.model_dir) == NULL) {
        cli_error(cmd, "--model %s: no such directory", o->model);
        return CLI_ERR;
    }
    if (o->sysfs_root)
        snprintf(o->p.cond.sysfs_root, sizeof o->p.cond.sysfs_root, "%s", o->sysfs_root);
    if (o->loadavg)
        snprintf(o->p.cond.loadavg_path, sizeof o->p.cond.loadavg_path, "%s", o->loadavg);
    int rc = agent_check_times(o);
    if (rc == 0)
        rc = agent_check_log(o);
    if (rc == 0)
        rc = agent_check_trainable(o);
    if (rc != 0 || o->max_rss == NULL)
        return rc;
    uint64_t cap = parse_bytes(o->max_rss), need = 0;
    char err[ERRLEN] = "";
    if (cap == 0) {
        cli_error(cmd, "--max-rss: want a size such as 512M, got '%s'", o->max_rss);
        return CLI_USAGE;
    }
    /* hizoo's Hessian diagonal: at most its budget times the weights (a larger one is refused);
     * the frozen prefix's store where the trainable set may leave stages below it (top:K,
     * top-mlp:K, a regex; not all, bitfit, scales or LoRA: DESIGN 4) */
    const pk_mezo_params *mz = &o->p.train.mezo;
    double state = mz->estimator == PK_EST_HIZOO ? (double)mz->hessian_budget : 0.0;
    const char *tr = o->p.train.trainable;
    pk_lora_params lp;
    int frozen = tr[0] && strcmp(tr, "all") != 0 && strcmp(tr, "bitfit") != 0 &&
                 strcmp(tr, "scales") != 0 && pk_mezo_lora_parse(tr, &lp, NULL, 0) == 0;
    if (pk_agent_model_bytes(o->p.train.model_dir, state, frozen, &need, err, sizeof err) !=
        PK_OK) {
        cli_error(cmd, "--model: %s", err);
        return CLI_ERR;
    }
    if (need > cap) { /* a cap under 0.1 MB in KB, so it does not print as 0.0 MB */
        int kb = cap < 104858;
        cli_error(cmd, "--max-rss: training %s needs about %.1f MB, above the cap of %.1f %s",
                  o->p.train.model_dir, (double)need / 1048576.0,
                  (double)cap / (kb ? 1024.0 : 1048576.0), kb ? "KB" : "MB");
        return CLI_ERR;
    }
    return 0;
}

/* ---- the log file, priority, sync --------------------------------------------------------- */

typedef struct agent_ctx {
    char log_path[1100];
    char status_path[1100]; /* HOME/agent.status */
    int wrote_status;       /* this process wrote it (so only this process removes it) */
    int quiet;
    const agent_opts *o;
    char home[1024];
} agent_ctx;

/* One line to HOME/agent.log (0600), rotated to agent.log.1 (which keeps its mode) once it is
 * past --log-max bytes; and to stderr unless --quiet. Lines carry states, run ids, steps and
 * losses: never example text. */
static void log_line(agent_ctx *x, const char *level, const char *line)
{
    struct stat sb;
    char stamp[32], old[1200];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (stat(x->log_path, &sb) == 0 && (uint64_t)sb.st_size > x->o->log_bytes) {
        snprintf(old, sizeof old, "%s.1", x->log_path);
        (void)rename(x->log_path, old);
    }
    int fd = open(x->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd >= 0) {
        dprintf(fd, "%s %s %s\n", stamp, level, line);
        close(fd);
    }
    if (!x->quiet)
        fprintf(stderr, "%s %s %s\n", stamp, level, line);
}

static void on_event(void *user, pk_agent_event kind, const char *line)
{
    log_line(user, kind == PK_AGENT_WARN ? "warn" : "info", line);
}

static void on_log(pk_log_level level, const char *msg, void *user)
{
    if (level >= PK_LOG_WARN)
        log_line(user, "warn", msg);
}

/* The start time of process pid in clock ticks after boot (/proc/PID/stat field 22), so a
 * reused pid is not taken for the agent; 0 where /proc is missing, -1 if pid is not running. */
static long long proc_start(long pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return access("/proc/self/stat", R_OK) == 0 || kill((pid_t)pid, 0) != 0 ? -1 : 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
    long long start = -1;
    for (int field = 2; p != NULL && *p; p++) {
        if (*p == ' ' && ++field == 22) {
            start = strtoll(p + 1, NULL, 10);
            break;
        }
    }
    return start;
}

/* HOME/agent.status (0600, replaced atomically): the status row's JSON plus pid, proc_start
 * and updated_at, so `agent status` reads it without the passphrase. It holds what the store
 * keeps in clear anyway (states, dataset names, run ids, steps, losses): no example text. */
static void on_status(void *user, const char *status_json)
{
    agent_ctx *x = user;
    char tmp[1200];
    cJSON *j = cJSON_Parse(status_json);
    if (j == NULL)
        return;
    cJSON_AddNumberToObject(j, "pid", (double)getpid());
    cJSON_AddNumberToObject(j, "proc_start", (double)proc_start((long)getpid()));
    cJSON_AddNumberToObject(j, "updated_at", (double)time(NULL));
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    snprintf(tmp, sizeof tmp, "%s.tmp", x->status_path);
    int fd = text ? open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600) : -1;
    int ok = fd >= 0 && dprintf(fd, "%s\n", text) > 0;
    if (fd >= 0 && close(fd) != 0)
        ok = 0;
    if (ok && rename(tmp, x->status_path) == 0)
        x->wrote_status = 1;
    else if (fd >= 0)
        (void)unlink(tmp);
    free(text);
}

/* nice 19 and SCHED_IDLE (Linux): the agent gets the CPU only when nothing else wants it. */
static void lowest_priority(agent_ctx *x)
{
    errno = 0;
    if (setpriority(PRIO_PROCESS, 0, 19) != 0)
        log_line(x, "warn", "could not lower the priority (nice 19)");
#ifdef SCHED_IDLE
    struct sched_param sp = {0};
    if (sched_setscheduler(0, SCHED_IDLE, &sp) != 0)
        log_line(x, "warn", "SCHED_IDLE is not available: running at nice 19 only");
#endif
}

/* A sync is `pocketllm sync` in a child process: the same code path as the command (net/, its
 * outbox and backoff-free single round), and libcurl and a second model copy live only in the
 * child, never in the waiting agent. Its local steps train on the union of the agent's datasets
 * (`sync --datasets`), as the agent's runs do. The child reads the passphrase as the agent did
 * (--passphrase-file or $POCKETLLM_PASSPHRASE). */
static pk_status sync_child(void *user, char *err, size_t errlen)
{
    const agent_ctx *x = user;
    const agent_opts *o = x->o;
    const char *argv[24];
    int n = 0;
    argv[n++] = "pocketllm";
    argv[n++] = "sync";
    const char *pairs[][2] = {{"--server", o->sync},
                              {"--model", o->p.train.model_dir},
                              {"--datasets", o->p.datasets}, /* their union, as training */
                              {"--home", x->home},
                              {"--passphrase-file", o->c.passphrase_file}};
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        if (pairs[i][1] == NULL)
            continue; /* no file: the child reads $POCKETLLM_PASSPHRASE as the agent did */
        argv[n++] = pairs[i][0];
        argv[n++] = pairs[i][1];
    }
    argv[n++] = "--quiet";
    argv[n++] = "--json";
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid < 0) {
        pk_seterr(err, errlen, "fork: %s", strerror(errno));
        return PK_ERR_IO;
    }
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
        }
        execv("/proc/self/exe", (char *const *)(uintptr_t)argv);
        _exit(127);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return PK_OK;
    pk_seterr(err, errlen, "pocketllm sync exited with %d",
              WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return PK_ERR_HTTP;
}

static int agent_main(int argc, char **argv)
{
    agent_opts o = {.p = pk_agent_default_params()};
    o.c.threads = 1; /* a background agent: one core unless told otherwise (--threads) */
    int rc = cli_parse(&agent_cmd, argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? CLI_OK : rc;
    rc = agent_check(&o);
    if (rc != 0)
        return rc;
    agent_ctx x = {.quiet = o.c.quiet, .o = &o};
    if (cli_home(&o.c, x.home, sizeof x.home) != 0) {
        cli_error(o.c.cmd, "the agent home path is too long");
        return CLI_USAGE;
    }
    snprintf(x.log_path, sizeof x.log_path, "%s/agent.log", x.home);
    snprintf(x.status_path, sizeof x.status_path, "%s/agent.status", x.home);
    cli_apply_threads(&o.c);
    o.p.threads = o.c.threads;
    pk_store *s = NULL;
    rc = cli_open_store(&o.c, &s);
    if (rc != 0)
        return rc;
    lowest_priority(&x);
    pk_log_set(on_log, &x, PK_LOG_WARN);
    o.p.on_event = on_event;
    o.p.on_status = on_status;
    o.p.event_user = &x;
    if (o.sync) {
        o.p.sync = sync_child;
        o.p.sync_user = &x;
    }
    pk_interrupt_install();
    char err[ERRLEN] = "";
    pk_status st = pk_agent_run(s, &o.p, err, sizeof err);
    if (x.wrote_status) /* a clean end: no agent runs on this home (a second one wrote none) */
        (void)unlink(x.status_path);
    pk_store_close(s);
    pk_log_set(NULL, NULL, PK_LOG_WARN);
    if (st != PK_OK) {
        cli_error(o.c.cmd, "%s", err[0] ? err : pk_status_str(st));
        return CLI_ERR;
    }
    return CLI_OK;
}

/* ---- agent status, agent stop ------------------------------------------------------------ */

typedef struct agent_ctl_opts {
    cli_common c;
    double timeout;
} agent_ctl_opts;

#define T agent_ctl_opts
static const cli_option status_table[] = {
    CLI_JSON_OPT(T),
    {"--home", CLI_STR, CLI_AT(T, c.home), 0, 0, NULL, "DIR",
     "agent home ($POCKETLLM_HOME, else $XDG_DATA_HOME/pocketllm)"},
    {"--passphrase-file", CLI_STR, CLI_AT(T, c.passphrase_file), 0, 0, NULL, "FILE",
     "ignored: the status needs no passphrase"},
    END_OPTIONS,
};
static const cli_option stop_table[] = {
    {"--timeout", CLI_FLOAT, CLI_AT(T, timeout), 0, 86400, NULL, "SECONDS",
     "wait this long for the agent to stop (0: do not wait)"},
    CLI_STORE_OPTS(T),
    END_OPTIONS,
};
#undef T

static const cli_command status_cmd = {
    "agent status",
    "agent status [--json]",
    "What the agent of this home is doing, why it waits, steps today, the best run and its eval,\n"
    "the last sync. Needs no passphrase: it reads HOME/agent.status, which the running agent\n"
    "keeps (0600; states, dataset names, run ids, steps and losses, never example text).",
    status_table,
    0,
    NULL};
static const cli_command stop_cmd = {
    "agent stop",
    "agent stop [--timeout SECONDS]",
    "Asks the agent of this home to stop at its next step boundary (and wakes it), then waits\n"
    "until it has.",
    stop_table,
    0,
    NULL};

static void print_status_text(const cJSON *o)
{
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(o, "best");
    const cJSON *y = cJSON_GetObjectItemCaseSensitive(o, "last_sync");
    printf("state: %s (%s)\n", cJSON_GetStringValue(cJSON_GetObjectItem(o, "state")),
           cJSON_GetStringValue(cJSON_GetObjectItem(o, "reason")));
    printf("run: %.0f at step %.0f; steps today: %.0f\n",
           cJSON_GetNumberValue(cJSON_GetObjectItem(o, "run")),
           cJSON_GetNumberValue(cJSON_GetObjectItem(o, "step")),
           cJSON_GetNumberValue(cJSON_GetObjectItem(o, "steps_today")));
    if (cJSON_IsObject(b))
        printf("best: run %.0f step %.0f, eval loss %.6f\n",
               cJSON_GetNumberValue(cJSON_GetObjectItem(b, "run")),
               cJSON_GetNumberValue(cJSON_GetObjectItem(b, "step")),
               cJSON_GetNumberValue(cJSON_GetObjectItem(b, "eval_loss")));
    if (cJSON_IsObject(y))
        printf("last sync: %s\n", cJSON_GetStringValue(cJSON_GetObjectItem(y, "result")));
}

/* The published status of the live agent of home (owned, cJSON_Delete), or NULL when none
 * runs: no file (never ran, or stopped cleanly), or one left by a dead process (kill -9: its
 * lock on HOME/leases.lock went with it). */
static cJSON *read_status_file(const char *home)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/agent.status", home);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return NULL;
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    cJSON *j = cJSON_Parse(buf);
    const cJSON *pid = cJSON_GetObjectItemCaseSensitive(j, "pid");
    const cJSON *start = cJSON_GetObjectItemCaseSensitive(j, "proc_start");
    /* the agent's lock says whether it runs (DESIGN 13); only where the lock cannot tell, the
     * pid and its start time (not proof of life under qemu-user, which fakes the latter) */
    int running = pk_store_agent_running(home);
    if (!cJSON_IsNumber(pid) || !cJSON_IsNumber(start) || pid->valuedouble < 1 || running == 0 ||
        (running < 0 && proc_start((long)pid->valuedouble) != (long long)start->valuedouble)) {
        cJSON_Delete(j);
        return NULL;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(j, "proc_start");
    return j;
}

/* Needs no passphrase: the agent publishes its status in HOME/agent.status (on_status). */
static int agent_status(int argc, char **argv)
{
    agent_ctl_opts o = {0};
    char home[1024], db[1100];
    struct stat sb;
    int rc = cli_parse(&status_cmd, argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? CLI_OK : rc;
    if (cli_home(&o.c, home, sizeof home) != 0) {
        cli_error(o.c.cmd, "the agent home path is too long");
        return CLI_USAGE;
    }
    snprintf(db, sizeof db, "%s/pocketllm.db", home);
    if (stat(db, &sb) != 0) {
        cli_error(o.c.cmd, "no agent home at %s (pocketllm init creates one)", home);
        return CLI_ERR;
    }
    cJSON *j = read_status_file(home);
    int running = j != NULL;
    if (j == NULL)
        j = cJSON_CreateObject();
    cJSON_AddBoolToObject(j, "running", running);
    if (o.c.json)
        return cli_json_print(j);
    if (!running)
        printf("no agent is running on this home\n");
    else
        print_status_text(j);
    cJSON_Delete(j);
    return CLI_OK;
}

/* 1 while the agent row is held by a live process: a clean stop deletes the row, and the
 * process itself may linger as a zombie until its parent reaps it. */
static int agent_running(pk_store *s)
{
    pk_store_agent_info a;
    pk_status st = pk_store_agent_get(s, &a, NULL, 0);
    int alive = st == PK_OK && a.alive;
    pk_store_agent_info_clear(&a);
    return alive;
}

static int agent_stop(int argc, char **argv)
{
    agent_ctl_opts o = {.timeout = 120};
    pk_store *s = NULL;
    char err[ERRLEN] = "";
    long pid = 0;
    int rc = cli_parse(&stop_cmd, argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? CLI_OK : rc;
    rc = cli_open_store(&o.c, &s);
    if (rc != 0)
        return rc;
    pk_status st = pk_store_agent_request_stop(s, &pid, err, sizeof err);
    if (st == PK_OK)
        (void)kill((pid_t)pid, SIGTERM); /* wakes it from its sleep; it stops at a boundary */
    int running = st == PK_OK;
    for (double waited = 0; running && waited < o.timeout; waited += 0.1) {
        struct timespec ts = {0, 100000000L};
        nanosleep(&ts, NULL);
        running = agent_running(s);
    }
    pk_store_close(s);
    if (st != PK_OK) {
        cli_error(o.c.cmd, "%s", err);
        return CLI_ERR;
    }
    if (o.timeout > 0 && running) {
        cli_error(o.c.cmd, "agent pid %ld did not stop within %.0f s", pid, o.timeout);
        return CLI_ERR;
    }
    printf("agent pid %ld %s\n", pid, o.timeout > 0 ? "stopped" : "asked to stop");
    return CLI_OK;
}

int cmd_agent(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "status"))
        return agent_status(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "stop"))
        return agent_stop(argc - 1, argv + 1);
    return agent_main(argc, argv);
}
