/* test_util.h: file helpers shared by the tests: read a whole file or stream, write one, make a
 * temporary directory, walk and remove a directory tree. Header-only (static inline), so a test
 * includes it without a change to its CMake fragment and an unused helper costs no warning. It does
 * not depend on pk_test.h (fuzz targets use it too): helpers report failure by their result and the
 * caller checks it. */
#ifndef PK_TEST_UTIL_H
#define PK_TEST_UTIL_H

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* The number (strtod) written right after the first key that follows the first `after` in s, or
 * dflt when s is NULL or either string is not there. For a field of a line of JSON output. */
static inline double number_after(const char *s, const char *after, const char *key, double dflt)
{
    const char *a = s ? strstr(s, after) : NULL;
    const char *k = a ? strstr(a, key) : NULL;
    return k ? strtod(k + strlen(key), NULL) : dflt;
}

/* All of stream f from its start, NUL-terminated (owned: free()), or NULL on a seek or read error
 * or no memory. *len, when len is not NULL, gets the size without the NUL, on success only. */
static inline char *slurp_stream(FILE *f, size_t *len)
{
    char *b = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0)
        n = ftell(f);
    if (n >= 0 && fseek(f, 0, SEEK_SET) == 0)
        b = malloc((size_t)n + 1);
    if (b != NULL && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    if (b != NULL) {
        b[n] = '\0';
        if (len != NULL)
            *len = (size_t)n;
    }
    return b;
}

/* The whole file at path, as slurp_stream; NULL if it cannot be opened or read. */
static inline char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *b = slurp_stream(f, len);
    fclose(f);
    return b;
}

/* slurp of dir/name. */
static inline char *slurp_at(const char *dir, const char *name, size_t *len)
{
    char p[1024];
    if (snprintf(p, sizeof p, "%s/%s", dir, name) >= (int)sizeof p)
        return NULL;
    return slurp(p, len);
}

/* Creates a fresh directory /tmp/pk_TAG_XXXXXX (its name in buf, n bytes): 1, or 0 on failure. */
static inline int make_tmpdir(char *buf, size_t n, const char *tag)
{
    snprintf(buf, n, "/tmp/pk_%s_XXXXXX", tag);
    return mkdtemp(buf) != NULL;
}

/* mkdir of dir/name with mode 0755: 0, or -1 if it fails (as when it exists). */
static inline int mkdir_at(const char *dir, const char *name)
{
    char p[1024];
    if (snprintf(p, sizeof p, "%s/%s", dir, name) >= (int)sizeof p)
        return -1;
    return mkdir(p, 0755);
}

/* Writes the n bytes at data to path (created or truncated): 0, or -1 on any failure. */
static inline int write_all(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return -1;
    int ok = fwrite(data, 1, n, f) == n;
    if (fclose(f) != 0)
        ok = 0;
    return ok ? 0 : -1;
}

/* write_all of the string text (without its NUL). */
static inline int write_string(const char *path, const char *text)
{
    return write_all(path, text, strlen(text));
}

/* write_all of dir/name. */
static inline int write_at(const char *dir, const char *name, const void *data, size_t n)
{
    char p[1024];
    if (snprintf(p, sizeof p, "%s/%s", dir, name) >= (int)sizeof p)
        return -1;
    return write_all(p, data, n);
}

/* A growing byte buffer (owned p: free()); zero-initialize it to start empty. */
typedef struct bytebuf {
    unsigned char *p;
    size_t n, cap; /* bytes used, bytes allocated */
} bytebuf;

/* Appends the len bytes at src: 0, or -1 with b unchanged when there is no memory. */
static inline int bytebuf_put(bytebuf *b, const void *src, size_t len)
{
    if (b->n + len > b->cap) {
        size_t cap = (b->n + len) * 2 + 256;
        unsigned char *np = realloc(b->p, cap);
        if (np == NULL)
            return -1;
        b->p = np;
        b->cap = cap;
    }
    if (len > 0)
        memcpy(b->p + b->n, src, len);
    b->n += len;
    return 0;
}

/* Calls fn(path, is_dir, user) for everything below dir (not dir itself), a directory after what
 * it holds, so fn may remove what it is given. Symbolic links are not followed; an entry whose
 * path is over 1199 bytes or cannot be stat'ed is skipped. */
static inline void walk_tree(const char *dir, void (*fn)(const char *path, int is_dir, void *user),
                             void *user)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char p[1200];
    while (d && (de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (snprintf(p, sizeof p, "%s/%s", dir, de->d_name) >= (int)sizeof p)
            continue;
        struct stat st;
        if (lstat(p, &st) != 0)
            continue;
        int is_dir = S_ISDIR(st.st_mode);
        if (is_dir)
            walk_tree(p, fn, user);
        fn(p, is_dir, user);
    }
    if (d)
        closedir(d);
}

static inline void remove_entry(const char *path, int is_dir, void *user)
{
    (void)user;
    if (is_dir)
        rmdir(path);
    else
        unlink(path);
}

/* Removes dir and everything below it (no shell): 0 once dir is gone, -1 if it is still there or
 * never was. */
static inline int remove_tree(const char *dir)
{
    walk_tree(dir, remove_entry, NULL);
    return rmdir(dir) == 0 ? 0 : -1;
}

/* Runs `sh -c cmd` (a `train ... --json`) with its stdout on a pipe, reads its progress lines
 * until one says at least `at` steps are done, and kills it with SIGKILL. Returns 0 if it died
 * from that signal; otherwise -1, saying on stderr how far it got. The caller's process must not
 * have started OpenMP threads (the child only execs). */
static inline int kill_train_at(const char *cmd, long long at)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    FILE *f = fdopen(fds[0], "r");
    char line[1024];
    long long done = 0;
    int killed = 0;
    while (!killed && f != NULL && fgets(line, sizeof line, f) != NULL) {
        const char *d = strstr(line, "\"event\":\"progress\"") ? strstr(line, "\"done\":") : NULL;
        done = d ? strtoll(d + 7, NULL, 10) : done;
        if (done >= at)
            killed = kill(pid, SIGKILL) == 0;
    }
    if (f != NULL)
        fclose(f);
    else
        close(fds[0]);
    int ws = 0;
    while (waitpid(pid, &ws, 0) < 0 && errno == EINTR)
        ;
    if (!killed)
        fprintf(stderr, "train ended before it could be killed (last progress: %lld)\n", done);
    return killed && WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL ? 0 : -1;
}

/* 1 once `path` exists (a process reached a pause point: POCKETLLM_PAUSE_AT), polled every
 * 10 ms for at most `secs` seconds; 0 if it never appeared. */
static inline int wait_for_file(const char *path, int secs)
{
    for (int i = 0; i < secs * 100; i++) {
        if (access(path, F_OK) == 0)
            return 1;
        usleep(10000);
    }
    return access(path, F_OK) == 0;
}

/* How many processes other than this one match(pid, cmdline, user) says 1 for; cmdline is the
 * process's argv with its NUL separators as spaces (at most 4095 bytes). Reads /proc. */
static inline int count_processes(int (*match)(const char *pid, const char *cmdline, void *user),
                                  void *user)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int n = 0;
    char path[300], buf[4096];
    while (d && (e = readdir(d)) != NULL) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9' || atoi(e->d_name) == getpid())
            continue;
        snprintf(path, sizeof path, "/proc/%s/cmdline", e->d_name);
        FILE *f = fopen(path, "rb");
        size_t k = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
        if (f)
            fclose(f);
        for (size_t i = 0; i < k; i++)
            if (buf[i] == '\0')
                buf[i] = ' '; /* argv is NUL-separated */
        buf[k] = '\0';
        n += match(e->d_name, buf, user) != 0;
    }
    if (d)
        closedir(d);
    return n;
}

/* 1 if OpenBLAS can run its SkylakeX kernel here (AVX-512 F, BW, VL, DQ): the determinism tests
 * then also compare against OPENBLAS_CORETYPE=SkylakeX. */
static inline int cpu_has_avx512(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#else
    return 0;
#endif
}

/* The larger of a and b. Tests take error maxima with this rather than fmax: Debian 12's aarch64
 * gcc (12.2) crashes (internal compiler error in vect_transform_reduction) vectorizing an fmax
 * reduction over widened floats at -O3. */
static inline double dmax(double a, double b)
{
    return a > b ? a : b;
}

/* The smaller of a and b (dmax's twin, for the same reason). */
static inline double dmin(double a, double b)
{
    return a < b ? a : b;
}

#endif /* PK_TEST_UTIL_H */
