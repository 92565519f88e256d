/* cmd_train.c: the MeZO trainer commands. (Placeholder until the MeZO trainer work lands.) */
#include "cli.h"

int cmd_train(int argc, char **argv)
{
    (void)argc;
    cli_error(argv[0], "not available yet in this build");
    return CLI_ERR;
}

int cmd_eval(int argc, char **argv)
{
    (void)argc;
    cli_error(argv[0], "not available yet in this build");
    return CLI_ERR;
}

int cmd_replay(int argc, char **argv)
{
    (void)argc;
    cli_error(argv[0], "not available yet in this build");
    return CLI_ERR;
}

int cmd_runs(int argc, char **argv)
{
    (void)argc;
    cli_error(argv[0], "not available yet in this build");
    return CLI_ERR;
}

int cmd_mezo_probe(int argc, char **argv)
{
    (void)argc;
    cli_error(argv[0], "not available yet in this build");
    return CLI_ERR;
}

int cmd_bench_mezo(int argc, char **argv)
{
    (void)argc;
    cli_error(argv[0], "not available yet in this build");
    return CLI_ERR;
}

