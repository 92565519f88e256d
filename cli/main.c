/* main.c: the pocketllm entry point. It sets up the libraries once, dispatches to the command
 * table and maps results to exit codes; every command lives in an area's cmd_*.c file. */
#include "cli.h"

#include "pk_common.h"
#include "pocketllm.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

typedef struct command {
    const char *name;
    cli_fn fn;
    const char *summary;
} command;

static const command commands[] = {
    {"demo", cmd_demo, "end-to-end demo: import, fine-tune, compare (the README's first command)"},
    {"init", cmd_init, "create an encrypted agent home"},
    {"import", cmd_import, "import examples (jsonl, txt, csv) into a sealed dataset"},
    {"data", cmd_data, "list, show, forget or export datasets"},
    {"rekey", cmd_rekey, "change the passphrase (all-or-nothing)"},
    {"train", cmd_train, "fine-tune a model with MeZO on a dataset"},
    {"eval", cmd_eval, "loss, perplexity and accuracy of a model or run on a dataset"},
    {"runs", cmd_runs, "list or show training runs"},
    {"replay", cmd_replay, "rebuild fine-tuned weights from a step log"},
    {"export", cmd_export, "export a run as a Hugging Face model directory or a seed log"},
    {"generate", cmd_generate, "generate text from a model or a fine-tuned run"},
    {"forward", cmd_forward, "raw logits and loss for a list of token ids"},
    {"tokenize", cmd_tokenize, "text to ids (JSONL on stdin), or ids to text with --decode"},
    {"sync", cmd_sync, "federated round with a coordinator: upload seeds and scalars only"},
    {"agent", cmd_agent, "train in the background while the device is idle and charging"},
    {"fedsim", cmd_fedsim, "simulate federated fine-tuning: many devices, one real coordinator"},
    {"pull", cmd_pull, "download a model from a Hugging Face-compatible hub"},
    {"plot", cmd_plot, "plot a run's loss curves as SVG"},
    {"model-info", cmd_model_info, "architecture, sizes, tokenizer and weights hash of a model"},
    {"make-model", cmd_make_model, "write a random model of a known shape (tests, benchmarks)"},
    {"quantize", cmd_quantize, "write a model as GGUF with q8_0 / q4_0 / q4_k (or 16-bit) weights"},
    {"mezo-probe", cmd_mezo_probe, "one projected-gradient evaluation, no update"},
    {"bench", NULL, "benchmarks: forward, generate, mezo, tokenize, store"},
};

static const command benches[] = {
    {"forward", cmd_bench_forward, "forward throughput against the sgemm roofline"},
    {"generate", cmd_bench_generate, "batch-1 KV-cache generation speed (tokens/s)"},
    {"mezo", cmd_bench_mezo, "one MeZO step split into forward, perturb and update"},
    {"tokenize", cmd_bench_tokenize, "tokenizer encode throughput (single thread)"},
    {"store", cmd_bench_store, "unlock time and import throughput"},
};

static void usage(FILE *f)
{
    fputs("pocketllm: private on-device fine-tuning with forward passes only (MeZO)\n\n"
          "usage: pocketllm COMMAND [options]   (pocketllm COMMAND --help for details)\n\n"
          "commands:\n",
          f);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].summary);
    fputs("\nOptions come after the command, in any order (\"--name VALUE\" or \"--name=VALUE\");\n"
          "a repeated option takes its last value (an option meant to be repeated, such as\n"
          "plot --run, collects them all). Common options: --home DIR (agent home, default\n"
          "$XDG_DATA_HOME/pocketllm), --passphrase-file FILE, --threads N, --json, --quiet.\n"
          "Exit codes: 0 ok, 1 error, 2 usage error, 130 interrupted.\n",
          f);
}

/* The library prints nothing itself (pocketllm.h); the CLI shows its warnings and errors on
 * stderr, as "pocketllm: warning: ..." (DESIGN 11). */
static void log_stderr(pocketllm_log_level level, const char *msg, void *user)
{
    static const char *const names[] = {"debug", "info", "warning", "error"};
    (void)user;
    fprintf(stderr, "pocketllm: %s: %s\n", names[level <= POCKETLLM_LOG_ERROR ? level : 3], msg);
}

static int run_bench(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        FILE *f = argc < 2 ? stderr : stdout;
        fputs("usage: pocketllm bench WHAT [options]\n\n", f);
        for (size_t i = 0; i < sizeof benches / sizeof benches[0]; i++)
            fprintf(f, "  %-10s %s\n", benches[i].name, benches[i].summary);
        return argc < 2 ? CLI_USAGE : CLI_OK;
    }
    for (size_t i = 0; i < sizeof benches / sizeof benches[0]; i++)
        if (!strcmp(argv[1], benches[i].name))
            return benches[i].fn(argc - 1, argv + 1);
    cli_error("bench", "unknown benchmark '%s' (see pocketllm bench --help)", argv[1]);
    return CLI_USAGE;
}

int main(int argc, char **argv)
{
    /* Past a file-size limit (ulimit -f) a write must fail with EFBIG, which the store reports
     * and rolls back, instead of SIGXFSZ killing the process mid-transaction. */
    signal(SIGXFSZ, SIG_IGN);
    pocketllm_set_log(log_stderr, NULL, POCKETLLM_LOG_WARN);
    if (argc < 2) {
        usage(stderr);
        return CLI_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return CLI_OK;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("pocketllm %s\n", pocketllm_version_string());
        return CLI_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(argv[1], commands[i].name) != 0)
            continue;
        if (!commands[i].fn)
            return run_bench(argc - 1, argv + 1);
        return commands[i].fn(argc - 1, argv + 1);
    }
    cli_error(argv[1], "unknown command (see pocketllm --help)");
    return CLI_USAGE;
}
