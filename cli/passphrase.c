/* passphrase.c: reading the passphrase (file, environment, or a no-echo prompt on /dev/tty)
 * into sodium memory, and opening the agent's store with it, for every command that needs it.
 * The key derivation and the store itself are in crypto/ and store/. */
#include "passphrase.h"

#include "cli.h"
#include "pk_crypto.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#define PASS_MAX 1024

/* Reads up to PASS_MAX bytes of the first line of fd into buf (secure); 0 or -1 (too long,
 * read error). */
static int read_line_fd(int fd, char *buf, size_t *len)
{
    size_t n = 0;
    for (;;) {
        char c;
        ssize_t r = read(fd, &c, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0 || c == '\n')
            break;
        if (n == PASS_MAX)
            return -1;
        buf[n++] = c;
    }
    if (n && buf[n - 1] == '\r')
        n--;
    buf[n] = '\0';
    *len = n;
    return 0;
}

static int prompt_tty(const char *cmd, const char *prompt, char *buf, size_t *len)
{
    struct termios old, quiet;
    int fd = open("/dev/tty", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        cli_error(cmd, "no passphrase: pass --passphrase-file FILE, set POCKETLLM_PASSPHRASE "
                       "(less safe), or run on a terminal");
        return CLI_USAGE;
    }
    int have_attr = tcgetattr(fd, &old) == 0;
    if (have_attr) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        quiet.c_lflag |= ICANON;
        (void)tcsetattr(fd, TCSAFLUSH, &quiet);
    }
    if (write(fd, prompt, strlen(prompt)) < 0) {
        /* the prompt is cosmetic; reading still works */
    }
    int rc = read_line_fd(fd, buf, len);
    if (have_attr)
        (void)tcsetattr(fd, TCSAFLUSH, &old);
    if (write(fd, "\n", 1) < 0) {
        /* cosmetic */
    }
    close(fd);
    if (rc != 0) {
        cli_error(cmd, "could not read the passphrase (at most %d bytes)", PASS_MAX);
        return CLI_ERR;
    }
    return CLI_OK;
}

/* The shared reader: option opt (a file), else environment variable env, else the prompt. */
static int read_pass(const char *cmd, const char *file, const char *env, const char *what,
                     int confirm, char **pass, size_t *len)
{
    char *buf = pk_secure_alloc(PASS_MAX + 1), *again = NULL;
    const char *val = getenv(env);
    int rc = CLI_OK;
    *pass = NULL;
    *len = 0;
    if (!buf) {
        cli_error(cmd, "out of secure memory");
        return CLI_ERR;
    }
    if (file) {
        int fd = open(file, O_RDONLY | O_CLOEXEC);
        const char *why = fd < 0 ? strerror(errno) : NULL;
        struct stat sb;
        if (fd >= 0 && fstat(fd, &sb) == 0 && S_ISDIR(sb.st_mode))
            why = "it is a directory";
        if (why || read_line_fd(fd, buf, len) != 0) {
            cli_error(cmd, "cannot read %s from %s: %s", what, file,
                      why ? why : "unreadable or longer than 1024 bytes");
            rc = CLI_ERR;
        }
        if (fd >= 0)
            close(fd);
    } else if (val) {
        *len = strlen(val);
        if (*len > PASS_MAX) {
            cli_error(cmd, "%s is longer than %d bytes", env, PASS_MAX);
            rc = CLI_ERR;
        } else {
            memcpy(buf, val, *len + 1);
        }
    } else {
        char prompt[96];
        snprintf(prompt, sizeof prompt, "%c%s: ", what[0] - 32, what + 1);
        rc = prompt_tty(cmd, prompt, buf, len);
        if (rc == CLI_OK && confirm) {
            size_t len2 = 0;
            again = pk_secure_alloc(PASS_MAX + 1);
            rc = again ? prompt_tty(cmd, "Repeat it: ", again, &len2) : CLI_ERR;
            if (rc == CLI_OK && (len2 != *len || pk_secure_memcmp(buf, again, *len) != 0)) {
                cli_error(cmd, "the two passphrases differ; nothing changed");
                rc = CLI_ERR;
            }
        }
    }
    /* An empty passphrase never opens a home (init and rekey refuse one), so say what it is
     * rather than letting the key check call it wrong. */
    if (rc == CLI_OK && *len == 0) {
        cli_error(cmd, "empty %s (from %s)", what, file ? file : val ? env : "the prompt");
        rc = CLI_ERR;
    }
    pk_secure_free(again);
    if (rc != CLI_OK) {
        pk_secure_free(buf);
        *len = 0;
        return rc;
    }
    *pass = buf;
    return CLI_OK;
}

int cli_read_passphrase(const cli_common *c, int confirm, char **pass, size_t *len)
{
    return read_pass(c->cmd, c->passphrase_file, "POCKETLLM_PASSPHRASE", "passphrase", confirm,
                     pass, len);
}

int cli_read_new_passphrase(const cli_common *c, char **pass, size_t *len)
{
    return read_pass(c->cmd, c->new_passphrase_file, "POCKETLLM_NEW_PASSPHRASE", "new passphrase",
                     1, pass, len);
}

void cli_free_passphrase(char *pass, size_t len)
{
    (void)len; /* sodium_free wipes the whole allocation */
    pk_secure_free(pass);
}

int cli_open_store(const cli_common *c, pk_store **out)
{
    char home[1024], err[1024];
    char *pass = NULL;
    size_t len = 0;
    *out = NULL;
    if (cli_home(c, home, sizeof home) != 0) {
        cli_error(c->cmd, "the agent home path is too long");
        return CLI_USAGE;
    }
    if (pk_crypto_global_init() != PK_OK) {
        cli_error(c->cmd, "libsodium failed to initialise");
        return CLI_ERR;
    }
    char db[1100];
    struct stat sb;
    if (stat(home, &sb) == 0 && !S_ISDIR(sb.st_mode)) {
        cli_error(c->cmd, "%s is a file, not an agent home directory", home);
        return CLI_ERR;
    }
    if (pk_store_db_path(home, db, sizeof db) == 0 && access(db, F_OK) != 0) {
        /* Say so before asking for a passphrase that cannot help. */
        cli_error(c->cmd, "no agent home at %s: run pocketllm init --home %s", home, home);
        return CLI_ERR;
    }
    int rc = cli_read_passphrase(c, 0, &pass, &len);
    if (rc != CLI_OK)
        return rc;
    pk_status st = pk_store_open(home, pass, len, out, err, sizeof err);
    cli_free_passphrase(pass, len);
    if (st == PK_OK)
        return CLI_OK;
    if (st == PK_ERR_AUTH)
        cli_error(c->cmd, "wrong passphrase for %s", home);
    else if (st == PK_ERR_NOTFOUND)
        cli_error(c->cmd, "no agent home at %s: run pocketllm init --home %s", home, home);
    else
        cli_error(c->cmd, "%s", err);
    return CLI_ERR;
}
