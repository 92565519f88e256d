/* cmd_sync.c: the sync commands. (Placeholder until the sync work lands.) */
#include "cli.h"

int cmd_sync(int argc, char **argv)
{
    (void)argc;
    cli_error(argv[0], "not available yet in this build");
    return CLI_ERR;
}

