/* passphrase.h: how every pocketllm command gets the passphrase and opens the agent's store.
 * Sources, in order: --passphrase-file FILE (first line, trailing newline dropped), the
 * POCKETLLM_PASSPHRASE environment variable (less safe: visible to other processes of the
 * same user through /proc and to the shell history), then a no-echo prompt on /dev/tty.
 * The passphrase only ever lives in sodium_malloc'd memory and is wiped on free.
 * Thread safety: call from the main thread only (the prompt changes terminal modes). */
#ifndef PK_CLI_PASSPHRASE_H
#define PK_CLI_PASSPHRASE_H

#include "opts.h"
#include "pk_store.h"

#include <stddef.h>

/* Reads the passphrase (confirm != 0: the prompt asks twice, for init and rekey). c->cmd names
 * the command in error messages; c->passphrase_file is the file, if given. On success returns 0 and
 * *pass (owned, sodium_malloc'd, NUL-terminated, *len bytes without the NUL) must be freed with
 * cli_free_passphrase. On failure prints an error to stderr and returns CLI_ERR (or CLI_USAGE),
 * *pass NULL. */
int cli_read_passphrase(const cli_common *c, int confirm, char **pass, size_t *len);
void cli_free_passphrase(char *pass, size_t len); /* NULL-safe; wipes */
/* The new passphrase for rekey: --new-passphrase-file FILE, else POCKETLLM_NEW_PASSPHRASE,
 * else the prompt (asked twice). Same ownership and errors as cli_read_passphrase. */
int cli_read_new_passphrase(const cli_common *c, char **pass, size_t *len);

/* Resolves the home (cli_home: --home, $POCKETLLM_HOME, $XDG_DATA_HOME/pocketllm, ...), reads
 * the passphrase and opens the store. On failure prints a clear error ("wrong passphrase for
 * HOME", "no agent home at HOME: run pocketllm init --home HOME", "HOME is busy ...") and
 * returns non-zero (CLI_ERR); *out is then NULL. *out is an owned result (pk_store_close). */
int cli_open_store(const cli_common *c, pk_store **out);

#endif /* PK_CLI_PASSPHRASE_H */
