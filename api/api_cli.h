/* api_cli.h: what the pocketllm CLI, inside this project, may reach past the public API: the
 * store a handle holds, for the parts of a command the API does not cover (the demo's plot and
 * its federated round, docs/DESIGN.md 14). Internal: not in libpocketllm's ABI. */
#ifndef PK_API_CLI_H
#define PK_API_CLI_H

#include "pocketllm.h"

#include "pk_store.h"

/* The open store of h (a view, valid until pocketllm_home_close(h)); NULL for a handle whose
 * open failed or that holds no home. */
pk_store *pk_api_home_store(pocketllm_home *h);

#endif /* PK_API_CLI_H */
