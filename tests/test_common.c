/* test_common.c: pk_sleep, the clean-stop flag and the growable buffers. pk_sleep sleeps its whole
 * time through other signals (a SIGALRM every 10 ms), returns at once when the flag is already set,
 * and a SIGINT that arrives during a long sleep (pk_interrupt_install's handler) ends it early.
 * Times are checked one way only, with margins no load can break: "at least the time asked" and
 * "well before a 30 s sleep would end". pk_grow doubles from its first capacity, keeps the
 * contents, leaves a large enough array alone and refuses a size that overflows without touching
 * it; pk_text_append keeps the text NUL-terminated. pk_out: a committed write replaces the file
 * (private: 0600), a failed one keeps the old file and leaves no PATH.tmp, a symlink is written
 * through (it stays a symlink), a directory is refused, /dev/full fails with ENOSPC's message. */
#include "pk_common.h"
#include "pk_test.h"

#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

static volatile sig_atomic_t alarms;
static volatile sig_atomic_t interrupt_after; /* raise SIGINT at this alarm (0: never) */

static void on_alarm(int sig)
{
    (void)sig;
    alarms++;
    if (interrupt_after > 0 && alarms == interrupt_after)
        raise(SIGINT);
}

/* SIGALRM every 10 ms, without SA_RESTART, so it interrupts nanosleep (EINTR). */
static void alarms_start(int interrupt_at)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigemptyset(&sa.sa_mask);
    PK_CHECK(sigaction(SIGALRM, &sa, NULL) == 0);
    alarms = 0;
    interrupt_after = interrupt_at;
    struct itimerval it = {{0, 10000}, {0, 10000}};
    PK_CHECK(setitimer(ITIMER_REAL, &it, NULL) == 0);
}

static void alarms_stop(void)
{
    struct itimerval off;
    memset(&off, 0, sizeof off);
    PK_CHECK(setitimer(ITIMER_REAL, &off, NULL) == 0);
}

static void test_whole_time_through_signals(void)
{
    pk_interrupt_clear();
    double t0 = pk_time_now();
    PK_CHECK_EQ(pk_sleep(0.0), 0);
    PK_CHECK_EQ(pk_sleep(-1.0), 0);
    alarms_start(0);
    PK_CHECK_EQ(pk_sleep(0.12), 0);
    alarms_stop();
    PK_CHECK(pk_time_now() - t0 >= 0.12);
    PK_CHECK(alarms >= 2); /* the premise: signals did arrive during the sleep */
}

static void test_flag_already_set(void)
{
    pk_interrupt_raise();
    double t0 = pk_time_now();
    PK_CHECK_EQ(pk_sleep(30.0), 1);
    PK_CHECK(pk_time_now() - t0 < 10.0);
    pk_interrupt_clear();
}

static void test_sigint_ends_it(void)
{
    pk_interrupt_clear();
    pk_interrupt_install();
    alarms_start(3); /* SIGINT at the third alarm, ~30 ms in */
    double t0 = pk_time_now();
    int r = pk_sleep(30.0);
    double dt = pk_time_now() - t0;
    alarms_stop();
    PK_CHECK_EQ(r, 1);
    PK_CHECK(pk_interrupted());
    PK_CHECK(dt < 10.0);
    PK_CHECK(alarms >= 3);
    pk_interrupt_clear();
}

static void test_grow(void)
{
    size_t cap = 0;
    int *v = pk_grow(NULL, &cap, 1, sizeof *v, 4);
    PK_CHECK(v != NULL);
    PK_CHECK_EQ(cap, 4);
    for (int i = 0; i < 4; i++)
        v[i] = i;
    int *w = pk_grow(v, &cap, 4, sizeof *v, 4); /* fits: the same array */
    PK_CHECK(w == v);
    PK_CHECK_EQ(cap, 4);
    w = pk_grow(v, &cap, 9, sizeof *v, 4); /* 4 -> 8 -> 16 */
    PK_CHECK(w != NULL);
    PK_CHECK_EQ(cap, 16);
    v = w;
    for (int i = 0; i < 4; i++)
        PK_CHECK_EQ(v[i], i);
    w = pk_grow(v, &cap, SIZE_MAX / 2, sizeof *v, 4); /* too large: refused, v untouched */
    PK_CHECK(w == NULL);
    PK_CHECK_EQ(cap, 16);
    PK_CHECK_EQ(v[3], 3);
    free(v);
}

static void test_text_append(void)
{
    char *s = NULL;
    size_t len = 0, cap = 0;
    PK_CHECK_EQ(pk_text_append(&s, &len, &cap, "", 0, 4), 0); /* an empty text is "" */
    PK_CHECK(s != NULL && s[0] == '\0');
    PK_CHECK_EQ(pk_text_append(&s, &len, &cap, "abc", 3, 4), 0);
    PK_CHECK_EQ(pk_text_append(&s, &len, &cap, "defgh", 5, 4), 0);
    PK_CHECK_EQ(len, 8);
    PK_CHECK_EQ(cap, 16); /* 9 bytes with the NUL: 4 -> 8 -> 16 */
    PK_CHECK(strcmp(s, "abcdefgh") == 0);
    free(s);
}

static void slurp_eq(const char *path, const char *want)
{
    char buf[64] = "";
    FILE *f = fopen(path, "r");
    PK_CHECK(f != NULL);
    if (f) {
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = 0;
        fclose(f);
    }
    PK_CHECK(strcmp(buf, want) == 0);
}

static void test_out(void)
{
    char dir[] = "/tmp/pk-out-XXXXXX", path[128], tmp[140], link[128], err[256] = "";
    PK_CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/file", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    snprintf(link, sizeof link, "%s/link", dir);
    pk_out o;
    PK_CHECK(pk_out_open(&o, path, 1, err, sizeof err) == PK_OK);
    fputs("one", o.f);
    PK_CHECK(pk_out_commit(&o, err, sizeof err) == PK_OK);
    slurp_eq(path, "one");
    struct stat sb;
    PK_CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0600 && stat(tmp, &sb) != 0);
    /* a write that fails midway: the old file stays, no temp file */
    PK_CHECK(pk_out_open(&o, path, 0, err, sizeof err) == PK_OK);
    fputs("two, half written", o.f);
    pk_out_abort(&o);
    slurp_eq(path, "one");
    PK_CHECK(stat(tmp, &sb) != 0);
    /* through a symlink: the target is written, the link stays */
    PK_CHECK(symlink(path, link) == 0);
    PK_CHECK(pk_out_open(&o, link, 0, err, sizeof err) == PK_OK && o.through);
    fputs("three", o.f);
    PK_CHECK(pk_out_commit(&o, err, sizeof err) == PK_OK);
    PK_CHECK(lstat(link, &sb) == 0 && S_ISLNK(sb.st_mode));
    slurp_eq(path, "three");
    PK_CHECK(pk_out_open(&o, dir, 0, err, sizeof err) == PK_ERR_IO);
    PK_CHECK(strstr(err, "is a directory") != NULL);
    if (access("/dev/full", W_OK) == 0) { /* a write error: the device's errno, named */
        PK_CHECK(pk_out_open(&o, "/dev/full", 0, err, sizeof err) == PK_OK && o.through);
        for (int i = 0; i < 4096; i++)
            fputs("0123456789", o.f);
        PK_CHECK(pk_out_commit(&o, err, sizeof err) == PK_ERR_IO);
        PK_CHECK(strstr(err, "cannot write /dev/full: No space left on device") != NULL);
        PK_CHECK(stat("/dev/full", &sb) == 0 && S_ISCHR(sb.st_mode));
    }
    unlink(link);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    test_out();
    test_grow();
    test_text_append();
    test_whole_time_through_signals();
    test_flag_already_set();
    test_sigint_ends_it();
    return PK_TEST_DONE();
}
