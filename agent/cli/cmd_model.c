/* cmd_model.c: the engine commands. (Placeholder until the engine work lands.) */
#include "cli.h"

int cmd_forward(int argc, char **argv)
{
    (void)argc;
    cli_error(argv[0], "not available yet in this build");
    return CLI_ERR;
}

int cmd_generate(int argc, char **argv)
{
    (void)argc;
    cli_error(argv[0], "not available yet in this build");
    return CLI_ERR;
}

int cmd_make_model(int argc, char **argv)
{
    (void)argc;
    cli_error(argv[0], "not available yet in this build");
    return CLI_ERR;
}

int cmd_bench_forward(int argc, char **argv)
{
    (void)argc;
    cli_error(argv[0], "not available yet in this build");
    return CLI_ERR;
}

