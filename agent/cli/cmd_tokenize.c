/* cmd_tokenize.c: the tokenizer commands. (Placeholder until the tokenizer work lands.) */
#include "cli.h"

int cmd_tokenize(int argc, char **argv)
{
    (void)argc;
    cli_error(argv[0], "not available yet in this build");
    return CLI_ERR;
}

int cmd_bench_tokenize(int argc, char **argv)
{
    (void)argc;
    cli_error(argv[0], "not available yet in this build");
    return CLI_ERR;
}

