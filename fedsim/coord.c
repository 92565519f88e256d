/* coord.c: pocketllm-server-mock as a child process of the simulation: task file, start on an
 * ephemeral loopback port, stop on every path. The child is exec'd right after fork (libgomp
 * is not fork-safe, so no model code runs in it), has its own process group and dies with its
 * parent (PR_SET_PDEATHSIG). What it serves is docs/PROTOCOL.md. */
#include "fedsim_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <time.h>
#include <unistd.h>

#define START_S 30.0 /* the coordinator must print its address within this */

struct pk_fedsim_coord {
    pid_t pid;
    int out_fd; /* its stdout, kept open so a later write never hits a closed pipe */
    char dir[1024], url[64];
};

static pk_status write_text(const char *path, const char *text, char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    int ok = f && fputs(text, f) >= 0;
    if (f)
        ok = fclose(f) == 0 && ok;
    else if (fd >= 0)
        close(fd);
    if (!ok) {
        pk_seterr(err, errlen, "cannot write %s: %s", path, strerror(errno));
        return PK_ERR_IO;
    }
    return PK_OK;
}

/* One line from fd within timeout_s: 1 a line, 0 end of file, -1 timeout. */
static int read_line(int fd, char *buf, size_t n, double timeout_s)
{
    size_t len = 0;
    double t_end = pk_time_now() + timeout_s;
    buf[0] = '\0';
    while (len + 1 < n) {
        int ms = (int)((t_end - pk_time_now()) * 1000.0);
        if (ms <= 0 || pk_interrupted())
            return -1;
        struct pollfd pfd = {fd, POLLIN, 0};
        if (poll(&pfd, 1, ms) <= 0)
            continue;
        ssize_t k = read(fd, buf + len, 1);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return 0;
        if (buf[len] == '\n') {
            buf[len] = '\0';
            return 1;
        }
        buf[++len] = '\0';
    }
    return 0;
}

static pk_status spawn(pk_fedsim_coord *c, const char *bin, const char *faults, const char *capture,
                       char *err, size_t errlen)
{
    char db[1100], task[1100], log[1100];
    snprintf(db, sizeof db, "%s/coord.db", c->dir);
    snprintf(task, sizeof task, "%s/task.json", c->dir);
    snprintf(log, sizeof log, "%s/server.log", c->dir);
    const char *argv[16] = {bin, "--db", db, "--task", task, "--host", "127.0.0.1", "--port", "0"};
    int argc = 9;
    if (faults) {
        argv[argc++] = "--faults";
        argv[argc++] = faults;
    }
    if (capture) {
        argv[argc++] = "--capture";
        argv[argc++] = capture;
    }
    argv[argc] = NULL;
    int fds[2] = {-1, -1};
    int made = !capture || mkdir(capture, 0700) == 0 || errno == EEXIST;
    int logfd = made ? open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600) : -1;
    if (logfd < 0 || pipe(fds) != 0) {
        pk_seterr(err, errlen, "cannot prepare the coordinator's files in %s: %s", c->dir,
                  strerror(errno));
        if (logfd >= 0)
            close(logfd);
        return PK_ERR_IO;
    }
    pid_t parent = getpid();
    fflush(NULL);
    c->pid = fork();
    if (c->pid == 0) {
        setpgid(0, 0);
#ifdef __linux__
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(127);
#endif
        if (dup2(fds[1], 1) < 0 || dup2(logfd, 2) < 0)
            _exit(127);
        execv(bin, (char *const *)(uintptr_t)argv);
        _exit(127);
    }
    int fork_errno = errno;
    if (c->pid > 0)
        setpgid(c->pid, c->pid); /* also here, so stop can signal the group at once */
    close(fds[1]);
    close(logfd);
    c->out_fd = fds[0];
    if (c->pid < 0) {
        c->pid = 0;
        pk_seterr(err, errlen, "cannot start the coordinator: fork: %s", strerror(fork_errno));
        return PK_ERR_IO;
    }
    return PK_OK;
}

/* The last non-empty line of the coordinator's log. */
static void log_tail(const char *dir, char *out, size_t n)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/server.log", dir);
    fs_last_line(path, out, n);
}

pk_status pk_fedsim_coord_start(const char *server_bin, const char *dir, const char *task_json,
                                const char *faults, const char *capture, pk_fedsim_coord **out,
                                char *err, size_t errlen)
{
    char path[1100], line[256], tail[512];
    *out = NULL;
    pk_fedsim_coord *c = calloc(1, sizeof *c);
    if (!c)
        return PK_ERR_NOMEM;
    c->out_fd = -1;
    snprintf(c->dir, sizeof c->dir, "%s", dir);
    snprintf(path, sizeof path, "%s/task.json", dir);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        pk_seterr(err, errlen, "cannot create %s: %s", dir, strerror(errno));
        free(c);
        return PK_ERR_IO;
    }
    pk_status st = write_text(path, task_json, err, errlen);
    if (st == PK_OK)
        st = spawn(c, server_bin, faults, capture, err, errlen);
    if (st != PK_OK) {
        pk_fedsim_coord_stop(c);
        return st;
    }
    int got = read_line(c->out_fd, line, sizeof line, START_S);
    const char *colon = got == 1 && !strncmp(line, "listening on ", 13) ? strrchr(line, ':') : NULL;
    int port = colon ? atoi(colon + 1) : 0;
    if (port > 0 && port < 65536) {
        snprintf(c->url, sizeof c->url, "http://127.0.0.1:%d", port);
        *out = c;
        return PK_OK;
    }
    pid_t pid = c->pid;
    pk_fedsim_coord_stop(c); /* reaps it, so its log is complete */
    log_tail(dir, tail, sizeof tail);
    if (pk_interrupted())
        return PK_ERR_INTERRUPTED;
    pk_seterr(err, errlen, "the coordinator %s (pid %d) did not start (%s)%s%s", server_bin,
              (int)pid,
              got < 0   ? "no address within 30 s"
              : got > 0 ? line
                        : "it exited",
              tail[0] ? ": " : "", tail);
    return PK_ERR_HTTP;
}

const char *pk_fedsim_coord_url(const pk_fedsim_coord *c)
{
    return c ? c->url : "";
}

static void signal_group(pid_t pid, int sig)
{
    if (kill(-pid, sig) != 0)
        kill(pid, sig);
}

void pk_fedsim_coord_stop(pk_fedsim_coord *c)
{
    if (!c)
        return;
    if (c->pid > 0) {
        signal_group(c->pid, SIGTERM);
        pid_t r = 0;
        for (int i = 0; i < 1000 && r == 0; i++) {
            r = waitpid(c->pid, NULL, WNOHANG);
            if (r < 0 && errno == EINTR)
                r = 0;
            if (r == 0) {
                struct timespec ts = {0, 10 * 1000 * 1000};
                nanosleep(&ts, NULL);
            }
        }
        if (r == 0) {
            signal_group(c->pid, SIGKILL);
            while (waitpid(c->pid, NULL, 0) < 0 && errno == EINTR)
                ;
        }
    }
    if (c->out_fd >= 0)
        close(c->out_fd);
    free(c);
}
