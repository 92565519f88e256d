/* test_product_util.h: helpers for the product integration tests (included by one test .c each):
 * run the pocketllm CLI and capture its stdout, start pocketllm-server-mock on an ephemeral
 * loopback port, temp directories, small file helpers. */
#ifndef PK_TEST_PRODUCT_UTIL_H
#define PK_TEST_PRODUCT_UTIL_H

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.h"

#define POCKETLLM PK_BUILD_DIR "/cli/pocketllm"
#define SERVER    PK_BUILD_DIR "/server-mock/pocketllm-server-mock"

/* Runs a shell command line; *out (may be NULL) gets its stdout (owned, free()). Returns the
 * exit status, or -1 if it could not run or died from a signal. */
static inline int run_capture(const char *cmd, char **out)
{
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    size_t k;
    while (buf && (k = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += k;
        if (cap - n < 1024) {
            char *nb = realloc(buf, cap * 2);
            if (!nb)
                break;
            buf = nb;
            cap *= 2;
        }
    }
    if (buf)
        buf[n] = '\0';
    int st = pclose(p);
    if (out)
        *out = buf;
    else
        free(buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* How run_fmt runs its command: as it is (RUN_PLAIN), with stderr merged into the captured stdout
 * (RUN_MERGE_STDERR), and/or printing a nonzero exit status with the command to stderr
 * (RUN_SHOW_FAILURE, for a test whose commands are all meant to succeed). */
enum { RUN_PLAIN = 0, RUN_MERGE_STDERR = 1, RUN_SHOW_FAILURE = 2 };

/* run_fmt with its arguments as a va_list. */
static inline int run_vfmt(char **out, int how, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
static inline int run_vfmt(char **out, int how, const char *fmt, va_list ap)
{
    char cmd[8192];
    const char *tail = (how & RUN_MERGE_STDERR) ? " 2>&1" : "";
    int n = vsnprintf(cmd, sizeof cmd, fmt, ap);
    if (n < 0 || (size_t)n + strlen(tail) >= sizeof cmd) {
        fprintf(stderr, "command too long: %s\n", fmt);
        return -1;
    }
    strcat(cmd, tail);
    int rc = run_capture(cmd, out);
    if (rc != 0 && (how & RUN_SHOW_FAILURE))
        fprintf(stderr, "(exit %d) %s\n", rc, cmd);
    return rc;
}

/* Formats a command line, runs it as run_capture (stdout into *out) and returns its exit status;
 * -1 if the line is too long. */
static inline int run_fmt(char **out, int how, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline int run_fmt(char **out, int how, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = run_vfmt(out, how, fmt, ap);
    va_end(ap);
    return rc;
}

/* Runs a command line (printf format) with stderr merged into its output: 1 if it exited with
 * code and the output contains needle, else 0 after showing the command, its exit status and its
 * output on stderr. For PK_CHECK(run_expect(2, "--flag", "%s cmd --flag x", POCKETLLM)). */
static inline int run_expect(int code, const char *needle, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline int run_expect(int code, const char *needle, const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof cmd) {
        fprintf(stderr, "command too long: %s\n", fmt);
        return 0;
    }
    char *o = NULL;
    int rc = run_fmt(&o, RUN_MERGE_STDERR, "%s", cmd);
    int ok = rc == code && o != NULL && strstr(o, needle) != NULL;
    if (!ok)
        fprintf(stderr, "`%s` (exit %d, want %d and '%s') said: %s\n", cmd, rc, code, needle,
                o ? o : "");
    free(o);
    return ok;
}

/* The last non-empty line of s (view into s, NUL-terminated in place). */
static inline const char *last_line(char *s)
{
    if (!s)
        return "";
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
    char *nl = strrchr(s, '\n');
    return nl ? nl + 1 : s;
}

typedef struct server {
    pid_t pid;
    int port;
    FILE *out; /* the server's stdout, kept open so later writes never hit a closed pipe */
} server;

/* Starts pocketllm-server-mock ARGS --port 0 --host 127.0.0.1 and reads "listening on
 * HOST:PORT" from its stdout (stderr is inherited). */
static inline int server_start(server *sv, const char *args)
{
    int fds[2];
    if (pipe(fds) != 0)
        return 0;
    pid_t pid = fork();
    if (pid < 0)
        return 0;
    if (pid == 0) {
#ifdef __linux__
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* dies with the test on any path (crash, timeout) */
#endif
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        char cmd[2048];
        snprintf(cmd, sizeof cmd, "exec %s --port 0 --host 127.0.0.1 %s", SERVER, args);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    FILE *f = fdopen(fds[0], "r");
    char line[256] = "";
    sv->pid = pid;
    sv->port = 0;
    if (f && fgets(line, sizeof line, f)) {
        const char *colon = strrchr(line, ':');
        sv->port = colon ? atoi(colon + 1) : 0;
    }
    sv->out = f;
    if (sv->port <= 0) {
        if (f)
            fclose(f);
        sv->out = NULL;
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
        fprintf(stderr, "server did not start: %s\n", line);
        return 0;
    }
    return 1;
}

static inline void server_stop(server *sv)
{
    if (sv->pid > 0) {
        kill(sv->pid, SIGTERM);
        waitpid(sv->pid, NULL, 0);
        sv->pid = 0;
    }
    if (sv->out)
        fclose(sv->out);
    sv->out = NULL;
}

static inline void rm_rf(const char *dir)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "warning: could not remove %s\n", dir);
}

/* The environment of a CLI test: no POCKETLLM_HOME from outside, passphrase in
 * POCKETLLM_PASSPHRASE, and a fresh make_tmpdir (named in tmp, n bytes): 1, or 0 if that failed. */
static inline int cli_test_env(const char *passphrase, char *tmp, size_t n, const char *tag)
{
    unsetenv("POCKETLLM_HOME");
    setenv("POCKETLLM_PASSPHRASE", passphrase, 1);
    return make_tmpdir(tmp, n, tag);
}

/* rm_rf of dir once a test has passed (failures == 0); otherwise dir stays and stderr says so. */
static inline void rm_rf_if_passed(const char *dir, int failures)
{
    if (failures == 0)
        rm_rf(dir);
    else
        fprintf(stderr, "left %s for inspection\n", dir);
}

/* Writes passphrase and a newline to the file pass, then creates home with it (`pocketllm init`,
 * the default Argon2id limits; its output is shown if it fails). 0, -1 if pass could not be
 * written, or init's exit status. */
static inline int init_home(const char *home, const char *pass, const char *passphrase)
{
    FILE *f = fopen(pass, "w");
    int ok = f && fprintf(f, "%s\n", passphrase) > 0;
    if (f && fclose(f) != 0)
        ok = 0;
    if (!ok)
        return -1;
    return run_fmt(NULL, RUN_SHOW_FAILURE, "%s init --home %s --passphrase-file %s", POCKETLLM,
                   home, pass);
}

#ifdef PK_SOURCE_DIR
/* Creates home with the smallest Argon2id limits (the passphrase comes from POCKETLLM_PASSPHRASE)
 * and imports demo/data/train.txt (150 lines) as dataset "pip". 0, or the failing command's exit
 * status (the command is shown). */
static inline int init_pip_home(const char *home)
{
    int rc = run_fmt(NULL, RUN_SHOW_FAILURE,
                     "%s init --home %s --opslimit 1 --memlimit 8192 >/dev/null", POCKETLLM, home);
    if (rc == 0)
        rc = run_fmt(NULL, RUN_SHOW_FAILURE,
                     "%s import %s/demo/data/train.txt --dataset pip --format txt --home %s "
                     ">/dev/null",
                     POCKETLLM, PK_SOURCE_DIR, home);
    return rc;
}
#endif

static inline long long file_bytes(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (long long)sb.st_size : -1;
}

static inline int files_equal(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int same = fa && fb;
    while (same) {
        int ca = fgetc(fa), cb = fgetc(fb);
        if (ca != cb)
            same = 0;
        if (ca == EOF || cb == EOF)
            break;
    }
    if (fa)
        fclose(fa);
    if (fb)
        fclose(fb);
    return same;
}

static inline int copy_file(const char *from, const char *to)
{
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    int ok = a && b;
    char buf[65536];
    size_t n;
    while (ok && (n = fread(buf, 1, sizeof buf, a)) > 0)
        ok = fwrite(buf, 1, n, b) == n;
    if (a)
        fclose(a);
    if (b && fclose(b) != 0)
        ok = 0;
    return ok;
}

#endif /* PK_TEST_PRODUCT_UTIL_H */
