/* sync_opts.h: what the commands that run one device's sync round share, written once:
 * `pocketllm sync` (cmd_sync.c) and `pocketllm fedsim device` (cmd_fedsim.c), and for the
 * local steps' shape also `pocketllm fedsim`. Option rows in the table form of opts.h (each
 * macro takes the command's options struct T and the fields the values go to), the start of
 * such a command and its --json report. */
#ifndef PK_CLI_SYNC_OPTS_H
#define PK_CLI_SYNC_OPTS_H

#include "opts.h"
#include "pk_net.h"
#include "pk_store.h"
#include "pocketllm.h"

/* --server URL (required) and --model DIR (required): the coordinator and its task's model. */
#define CLI_SYNC_SERVER_MODEL_OPTS(T, server, model)                                               \
    {"--server",                                                                                   \
     CLI_STR,                                                                                      \
     CLI_AT(T, server),                                                                            \
     0,                                                                                            \
     0,                                                                                            \
     NULL,                                                                                         \
     "URL",                                                                                        \
     "the coordinator: http(s)://HOST[:PORT] (required)"},                                         \
    {                                                                                              \
        "--model", CLI_STR, CLI_AT(T, model), 0, 0, NULL, "DIR",                                   \
            "the task's base model (required)"                                                     \
    }

/* --dp-clip C, --dp-noise SIGMA, --dp-delta D: this device's privacy over the task's. */
#define CLI_SYNC_DP_OPTS(T, clip, noise, delta)                                                    \
    {"--dp-clip",                                                                                  \
     CLI_FLOAT,                                                                                    \
     CLI_AT(T, clip),                                                                              \
     0,                                                                                            \
     1e30,                                                                                         \
     NULL,                                                                                         \
     "C",                                                                                          \
     "clip each step's g to [-C, C] (0: the task's setting)"},                                     \
        {"--dp-noise",                                                                             \
         CLI_FLOAT,                                                                                \
         CLI_AT(T, noise),                                                                         \
         0,                                                                                        \
         1e6,                                                                                      \
         NULL,                                                                                     \
         "SIGMA",                                                                                  \
         "N(0, (SIGMA C)^2) noise on each uploaded g (needs --dp-clip; 0: the task's)"},           \
    {                                                                                              \
        "--dp-delta", CLI_FLOAT, CLI_AT(T, delta), 1e-300, 0.5, NULL, "D",                         \
            "delta of the (epsilon, delta) spent that is printed"                                  \
    }

/* --wait SECONDS: how long the round may take to close after the upload. */
#define CLI_SYNC_WAIT_OPT(T, f)                                                                    \
    {                                                                                              \
        "--wait", CLI_FLOAT, CLI_AT(T, f), 0, 86400, NULL, "SECONDS",                              \
            "wait this long for the round to close"                                                \
    }

/* --batch B, --seq-len T: the shape of a local step. */
#define CLI_LOCAL_BATCH_OPTS(T, batch, seq_len)                                                    \
    {"--batch", CLI_INT, CLI_AT(T, batch), 1, 1024, NULL, "B", "examples per local step"},         \
    {                                                                                              \
        "--seq-len", CLI_INT, CLI_AT(T, seq_len), 2, 1 << 20, NULL, "T", "tokens per example"      \
    }

/* The start of a device command once its options are checked: --threads, libcurl, libsodium.
 * Returns 0, or CLI_ERR after printing why. */
int cli_sync_start(cli_common *c);
/* cli_sync_start, then the agent home's store (*s owned, pk_store_close). */
int cli_sync_open(cli_common *c, pk_store **s);

/* The round's report as one JSON line on stdout (cli_json_print): device, task, round, upload,
 * log, model hash, privacy spent, traffic and secs. */
int cli_sync_report_json(const pocketllm_sync_result *r, double secs);

#endif /* PK_CLI_SYNC_OPTS_H */
