/* cmd_data.c: the store commands. (Placeholder until the store work lands.) */
#include "cli.h"

int cmd_init(int argc, char **argv)
{
    (void)argc;
    cli_error(argv[0], "not available yet in this build");
    return CLI_ERR;
}

int cmd_import(int argc, char **argv)
{
    (void)argc;
    cli_error(argv[0], "not available yet in this build");
    return CLI_ERR;
}

int cmd_data(int argc, char **argv)
{
    (void)argc;
    cli_error(argv[0], "not available yet in this build");
    return CLI_ERR;
}

int cmd_rekey(int argc, char **argv)
{
    (void)argc;
    cli_error(argv[0], "not available yet in this build");
    return CLI_ERR;
}

int cmd_bench_store(int argc, char **argv)
{
    (void)argc;
    cli_error(argv[0], "not available yet in this build");
    return CLI_ERR;
}

