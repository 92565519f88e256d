/* interrupt.c: the clean-stop flag. SIGINT and SIGTERM only set it; long loops (training, replay,
 * downloads) poll pk_interrupted() at safe points and stop there. */
#include "pk_common.h"

#include <signal.h>
#include <string.h>
#include <time.h>

/* The one mutable global besides the log hook: a signal handler can only communicate through a
 * volatile sig_atomic_t with static storage (C11 7.14.1.1), so the flag cannot live in a handle. */
static volatile sig_atomic_t interrupt_flag;

static void on_signal(int sig)
{
    (void)sig;
    interrupt_flag = 1;
}

void pk_interrupt_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    /* One-shot: the first Ctrl-C asks for a clean stop, a second one kills at once. */
    sa.sa_flags = (int)SA_RESETHAND;
    (void)sigaction(SIGINT, &sa, NULL);
    (void)sigaction(SIGTERM, &sa, NULL);
}

int pk_interrupted(void)
{
    return interrupt_flag != 0;
}

void pk_interrupt_raise(void)
{
    interrupt_flag = 1;
}

void pk_interrupt_clear(void)
{
    interrupt_flag = 0;
}

int pk_sleep(double seconds)
{
    if (!(seconds > 0.0))
        return pk_interrupted();
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (!pk_interrupted() && nanosleep(&ts, &ts) != 0)
        ; /* another signal (SIGCHLD, SIGALRM, ...): sleep the rest */
    return pk_interrupted();
}
