/* opts.h: one option table per command (curl's aliases[] in tool_getparam.c): each option is
 * written once, as a row naming its kind, where its value goes, its range and its help line, and
 * cli_parse() does the rest: it rejects unknown options and malformed or out-of-range values
 * (naming the flag), fills the command's struct, collects positionals and prints --help.
 *
 * Conventions every command shares: "--name VALUE" or "--name=VALUE", anywhere after the command
 * name; "--" ends the options; a repeated option takes its LAST value (a LIST option collects
 * every value instead); --help / -h prints the generated help. Exit codes: cli.h.
 * Thread safety: call from the main thread (it writes to stdout/stderr). */
#ifndef PK_CLI_OPTS_H
#define PK_CLI_OPTS_H

#include <stddef.h>
#include <stdint.h>

typedef enum cli_kind {
    CLI_FLAG,    /* int: 1 when given; takes no value */
    CLI_STR,     /* const char *: the value, borrowed from argv */
    CLI_BUF,     /* char[size]: the value copied; longer than size - 1 bytes is an error */
    CLI_INT,     /* int (size 4) or int64_t (size 8): a decimal integer in [min, max] */
    CLI_U64,     /* uint64_t: decimal or 0x-hex, 0 .. 2^64 - 1 (seeds) */
    CLI_FLOAT,   /* float (size 4) or double (size 8): finite, in [min, max] */
    CLI_CHOICE,  /* int: the index of the value in choices ("lm|classify|accuracy") */
    CLI_THREADS, /* int: >= 1; above the online cores it is capped to them, with a note */
    CLI_LIST,    /* cli_list: every occurrence appended (at most CLI_LIST_MAX) */
} cli_kind;

#define CLI_LIST_MAX 16
typedef struct cli_list {
    const char *v[CLI_LIST_MAX]; /* borrowed from argv */
    int n;
} cli_list;

typedef struct cli_option {
    const char *name; /* "--lr" */
    cli_kind kind;
    size_t offset;       /* of the destination field in the command's struct (CLI_AT) */
    size_t size;         /* of the destination field */
    double min, max;     /* CLI_INT / CLI_FLOAT range, inclusive */
    const char *choices; /* CLI_CHOICE: '|'-separated names */
    const char *arg;     /* the value's placeholder in the help ("F", "DIR"); NULL for flags */
    const char *help;    /* one line; the default is added from the struct (cli_print_help) */
} cli_option;

/* Destination of an option: CLI_AT(struct type, field). */
#define CLI_AT(T, f) offsetof(T, f), sizeof(((T *)0)->f)

#define CLI_MAX_ARGS 8
#define CLI_MAX_OPTS 64

/* What every command's options struct starts with (its FIRST member, named c). */
typedef struct cli_common {
    const char *cmd;                 /* the command's name in messages ("train", "data list") */
    const char *home;                /* --home DIR; NULL: the default home (cli_home) */
    const char *passphrase_file;     /* --passphrase-file FILE */
    const char *new_passphrase_file; /* --new-passphrase-file FILE (rekey) */
    int threads;                     /* --threads N; 0: the default */
    int json;                        /* --json */
    int quiet;                       /* --quiet */
    const char *args[CLI_MAX_ARGS];  /* positionals, in order (borrowed from argv) */
    int n_args;
    uint64_t given; /* bit i: option i of the table was given */
    const struct cli_command *spec;
} cli_common;

/* The rows every command with a store accepts: --home, --passphrase-file. */
#define CLI_STORE_OPTS(T)                                                                          \
    {"--home",                                                                                     \
     CLI_STR,                                                                                      \
     CLI_AT(T, c.home),                                                                            \
     0,                                                                                            \
     0,                                                                                            \
     NULL,                                                                                         \
     "DIR",                                                                                        \
     "agent home ($POCKETLLM_HOME, else $XDG_DATA_HOME/pocketllm)"},                               \
    {                                                                                              \
        "--passphrase-file", CLI_STR, CLI_AT(T, c.passphrase_file), 0, 0, NULL, "FILE",            \
            "read the passphrase from FILE (else $POCKETLLM_PASSPHRASE, else a prompt)"            \
    }
#define CLI_THREADS_OPT(T) CLI_THREADS_OPT_HELP(T, "threads (default: the online cores)")
/* --threads with a command's own help line (one whose default is not the online cores) */
#define CLI_THREADS_OPT_HELP(T, help)                                                              \
    {                                                                                              \
        "--threads", CLI_THREADS, CLI_AT(T, c.threads), 1, 4096, NULL, "N", help                   \
    }
#define CLI_JSON_OPT(T)                                                                            \
    {                                                                                              \
        "--json", CLI_FLAG, CLI_AT(T, c.json), 0, 0, NULL, NULL, "machine-readable output"         \
    }
#define CLI_QUIET_OPT(T)                                                                           \
    {                                                                                              \
        "--quiet", CLI_FLAG, CLI_AT(T, c.quiet), 0, 0, NULL, NULL, "no progress output"            \
    }

/* The row that ends every table. */
#define CLI_END                                                                                    \
    {                                                                                              \
        NULL, CLI_FLAG, 0, 0, 0, 0, NULL, NULL, NULL                                               \
    }

typedef struct cli_command {
    const char *name;       /* "train", "data list" */
    const char *usage;      /* usage line(s) after "usage: pocketllm ", '\n'-separated */
    const char *about;      /* what it does (a paragraph, may be NULL) */
    const cli_option *opts; /* the table, ended by a row with name NULL */
    int max_args;           /* positionals accepted (0 .. CLI_MAX_ARGS) */
    const char *notes;      /* text printed after the options (may be NULL) */
} cli_command;

/* Parses argv (argv[0] is the command or sub-command name) into dest, a struct whose first
 * member is a cli_common; fields not given keep the values the caller put there (defaults).
 * Returns 0: parsed; CLI_USAGE: an error was printed ("pocketllm train: --lr: ..."); -1: --help
 * was printed (the command returns CLI_OK). */
int cli_parse(const cli_command *spec, int argc, char **argv, void *dest);
/* 1 if the option `name` was given on the command line. */
int cli_given(const cli_common *c, const char *name);
/* Prints the generated help of spec to stdout; each option's default is read from dest (the
 * command's struct before parsing) and shown in brackets, so help cannot drift from the code. A
 * number outside its option's range is shown as no default (a required option). */
void cli_print_help(const cli_command *spec, const void *dest);
/* Applies c->threads (pk_threads_set; 0 keeps the default). */
void cli_apply_threads(const cli_common *c);
/* --lr F|auto (train, agent): s "auto" sets *lr_auto, a rate in [0, 100] goes to *lr, NULL
 * (not given) leaves both. Returns 0, or CLI_USAGE after an error naming cmd. */
int cli_parse_lr(const char *cmd, const char *s, float *lr, int *lr_auto);

#endif /* PK_CLI_OPTS_H */
