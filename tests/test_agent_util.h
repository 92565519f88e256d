/* test_agent_util.h: helpers shared by the agent's process tests (test_agent_cli.c,
 * test_agent_sync.c, test_agent_resume.c): start a `pocketllm agent` command line as a child
 * that dies with the test, read `agent status --json` (which needs no passphrase), wait for a
 * child to exit, and small JSON and file helpers. */
#ifndef PK_TEST_AGENT_UTIL_H
#define PK_TEST_AGENT_UTIL_H

#include "json_test_util.h"
#include "test_product_util.h"
#include "test_util.h"

#include <cjson/cJSON.h>
#include <time.h>

static inline void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Replaces path with text atomically (a faked sysfs file is never seen half written). */
static inline void put(const char *path, const char *text)
{
    char t[600];
    snprintf(t, sizeof t, "%s.tmp", path);
    if (write_string(t, text) != 0 || rename(t, path) != 0)
        fprintf(stderr, "cannot write %s\n", path);
}

/* Runs the shell command line cmd (it should `exec` the agent, so the pid is the agent's) in a
 * child that is killed when the test dies; returns its pid. */
static inline pid_t spawn_sh(const char *cmd)
{
    pid_t pid = fork();
    if (pid == 0) {
#ifdef __linux__
        prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* The private word in every note agent_write_notes writes (no log may ever show it). */
#define AGENT_NOTE_WORD "zebracorn"

/* Writes notes i0 .. i0+n-1 to path, one line each. */
static inline void agent_write_notes(const char *path, int i0, int n)
{
    FILE *f = fopen(path, "w");
    for (int i = i0; f && i < i0 + n; i++)
        fprintf(f, "Note %d: the %s went to the park and saw %d birds.\n", i, AGENT_NOTE_WORD,
                i % 7);
    if (f)
        fclose(f);
}

/* Writes notes i0 .. i0+n-1 to the file notes and imports them into home's dataset "notes",
 * after creating home (the smallest Argon2id limits) when init is 1. The passphrase is in the
 * file pass. 0, or the failing command's exit status (its output is shown). */
static inline int agent_make_home(const char *home, const char *pass, const char *notes, int i0,
                                  int n, int init)
{
    agent_write_notes(notes, i0, n);
    int rc = !init ? 0
                   : run_fmt(NULL, RUN_SHOW_FAILURE,
                             "%s init --home %s --passphrase-file %s --opslimit 1 --memlimit 8192 "
                             ">/dev/null",
                             POCKETLLM, home, pass);
    if (rc == 0)
        rc = run_fmt(NULL, RUN_SHOW_FAILURE,
                     "%s import %s --dataset notes --format txt --home %s --passphrase-file %s "
                     ">/dev/null",
                     POCKETLLM, notes, home, pass);
    return rc;
}

/* `agent status --json` of home, run without any passphrase, parsed (owned; NULL on failure). */
static inline cJSON *agent_status(const char *home)
{
    char *o = NULL;
    int rc = run_fmt(&o, RUN_PLAIN, "env -u POCKETLLM_PASSPHRASE %s agent status --json --home %s",
                     POCKETLLM, home);
    cJSON *j = rc == 0 && o ? cJSON_Parse(last_line(o)) : NULL;
    free(o);
    return j;
}

/* The number j.k, or -1 if it is missing or not a number (json_num's NAN would not compare equal
 * to itself, and these tests compare a value read twice). */
static inline double jnum(const cJSON *j, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

/* The exit code of child pid (128 + signal if a signal ended it), or -1 after killing it when
 * it did not exit within secs seconds. */
static inline int wait_exit(pid_t pid, double secs)
{
    int st = 0;
    for (double t = 0; t < secs; t += 0.05) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        sleep_ms(50);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

#endif /* PK_TEST_AGENT_UTIL_H */
