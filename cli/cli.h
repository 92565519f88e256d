/* cli.h: the pocketllm command table and the small option helpers every command shares.
 * Each cmd_*.c file owns the commands of one area; main.c only dispatches.
 * Exit codes (README "Exit codes"): 0 success, 1 runtime error (bad file, wrong passphrase,
 * network), 2 usage error (unknown command or option, missing argument), 130 interrupted. */
#ifndef PK_CLI_H
#define PK_CLI_H

#include "opts.h"
#include "pk_common.h"

#include <stddef.h>
#include <stdio.h>

enum { CLI_OK = 0, CLI_ERR = 1, CLI_USAGE = 2, CLI_INTERRUPTED = 130 };

/* A command: argv[0] is the command name (for "bench X" and "data X", the sub-command name). */
typedef int (*cli_fn)(int argc, char **argv);

/* The agent home: --home DIR, else $POCKETLLM_HOME, else $XDG_DATA_HOME/pocketllm, else
 * ~/.local/share/pocketllm. Writes into out (size n); returns 0, or -1 if it does not fit. */
int cli_home(const cli_common *c, char *out, size_t n);
/* Prints "pocketllm CMD: message" to stderr (printf format). */
void cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* What a failed library call said: err (its message) when it wrote one, else what st means. */
const char *cli_errtext(pk_status st, const char *err);
/* The usual failure tail: prints cli_errtext(st, err) for cmd and returns CLI_ERR. */
int cli_fail(const char *cmd, pk_status st, const char *err);
/* Every JSON the CLI prints is built with cJSON and printed by this: one line on stdout, then
 * the object is freed (taken; NULL after an allocation failure prints an error). Returns CLI_OK,
 * or CLI_ERR if it could not be printed. */
struct cJSON;
int cli_json_print(struct cJSON *obj);
/* Puts "OPTION: " before a library message in err (n bytes), so the error names the flag. */
void cli_name_option(const char *option, char *err, size_t n);
/* Adds key: v, or key: null when v is not finite (JSON has no NaN). */
void cli_json_add_finite(struct cJSON *obj, const char *key, double v);
/* A new number item v, or a null item when v is not finite (for arrays); owned by the caller
 * until added to an array or object. NULL if out of memory. */
struct cJSON *cli_json_finite(double v);

/* Area: engine (cmd_model.c) */
int cmd_forward(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_make_model(int argc, char **argv);
int cmd_bench_forward(int argc, char **argv);
int cmd_quantize(int argc, char **argv);       /* cmd_quantize.c */
int cmd_bench_generate(int argc, char **argv); /* cmd_quantize.c */
/* Area: model facts (cmd_model_info.c) */
int cmd_model_info(int argc, char **argv);
/* Area: tokenizer (cmd_tokenize.c) */
int cmd_tokenize(int argc, char **argv);
int cmd_bench_tokenize(int argc, char **argv);
/* The agent home of --home through libpocketllm (pocketllm.h), the way every command the API
 * covers opens it: the same checks and messages as cli_open_store (passphrase.h). 0 with *out
 * open (pocketllm_home_close), else the exit code after printing why. (cmd_data.c) */
struct pocketllm_home;
int cli_open_home(const cli_common *c, struct pocketllm_home **out);
/* Prints the handle's last error for cmd; CLI_INTERRUPTED for a cancelled call, else CLI_ERR. */
int cli_home_fail(const char *cmd, struct pocketllm_home *h, int st);
/* Area: store (cmd_data.c) */
int cmd_init(int argc, char **argv);
int cmd_import(int argc, char **argv);
int cmd_data(int argc, char **argv);
int cmd_rekey(int argc, char **argv);
int cmd_bench_store(int argc, char **argv);
/* Area: MeZO trainer (cmd_train.c) */
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_replay(int argc, char **argv);
int cmd_runs(int argc, char **argv);
/* Area: MeZO step tools (cmd_bench_mezo.c) */
int cmd_mezo_probe(int argc, char **argv);
int cmd_bench_mezo(int argc, char **argv);
/* Area: sync client (cmd_sync.c) */
int cmd_sync(int argc, char **argv);
/* For the commands that talk HTTP (sync, pull, demo --federated): loads libcurl and runs
 * curl_global_init (pk_http_global_init). On failure prints why, naming the library and the
 * package to install, and returns -1. */
int cli_http_init(const char *cmd);
/* Area: the on-device agent (cmd_agent.c) */
int cmd_agent(int argc, char **argv);
/* Area: federated simulation (cmd_fedsim.c; orchestration in fedsim/) */
int cmd_fedsim(int argc, char **argv);
/* Area: product (cmd_product.c) */
int cmd_demo(int argc, char **argv);
int cmd_plot(int argc, char **argv);
int cmd_pull(int argc, char **argv);
int cmd_export(int argc, char **argv);

/* A command with sub-commands ("data list", "data show"): one option table per sub-command. */
typedef struct cli_group {
    const char *name;               /* "data" */
    const char *about;              /* printed after the usage lines (may be NULL) */
    const cli_command *const *subs; /* NULL-terminated; each named "NAME SUB" */
} cli_group;
/* Finds the sub-command: the first argument after argv[0] that is neither an option nor the
 * value of an option of one of g->subs, so options may come before it ("data --home H list").
 * Moves it to argv[1] (the other arguments keep their order) and returns its index in g->subs:
 * the caller then parses argc - 1, argv + 1 with that sub-command's table. Returns -1 after
 * printing the group's help (--help with no sub-command: exit CLI_OK), -2 after printing an
 * error for a missing or unknown sub-command (exit CLI_USAGE). */
int cli_sub_command(const cli_group *g, int argc, char **argv);
/* The group's help: every sub-command's usage lines, then g->about. */
void cli_print_group_help(const cli_group *g);
/* Parses each value of a CLI_LIST option as a decimal integer in [lo, hi] into out[0 .. l->n).
 * Returns 0, or CLI_USAGE after printing "pocketllm CMD: FLAG: expected an integer ...". */
int cli_list_int64(const cli_common *c, const char *flag, const cli_list *l, int64_t lo, int64_t hi,
                   int64_t *out);
/* The --home row of a command that uses no agent home (pull, tokenize, the benchmarks): every
 * command has always accepted --home, so scripts may pass it to all of them; it is ignored. */
#define CLI_HOME_IGNORED(T)                                                                        \
    {                                                                                              \
        "--home", CLI_STR, CLI_AT(T, c.home), 0, 0, NULL, "DIR",                                   \
            "ignored (this command uses no agent home)"                                            \
    }
/* Parses the comma-separated token ids s ("1,2,3": decimal, 0 .. INT32_MAX) given to option
 * flag. Returns 0 with *ids (owned result, free()) holding *n >= 1 ids; else prints
 * "pocketllm CMD: FLAG: ..." and returns CLI_USAGE (CLI_ERR if out of memory), *ids NULL. */
int cli_parse_ids(const cli_common *c, const char *flag, const char *s, int32_t **ids, int *n);
/* Adds key: v rounded to `decimals` places (timings and losses meant for people), or null when
 * v is not finite. */
void cli_json_add_rounded(struct cJSON *obj, const char *key, double v, int decimals);
/* Adds key: v with 17 significant digits, which read back as the same double (cJSON's own
 * printer may drop the last bit), or null when v is not finite. */
void cli_json_add_exact(struct cJSON *obj, const char *key, double v);

#endif /* PK_CLI_H */
