/* legacy.c: transitional shims for commands that still read options from argv. They build the
 * cli_common that an option table would have filled and call the real functions. */
#include "cli.h"
#include "passphrase.h"

static cli_common from_argv(int argc, char **argv)
{
    static const cli_command none = {"", "", NULL, NULL, 0, NULL};
    cli_common c = {0};
    c.cmd = argv[0];
    c.spec = &none;
    c.home = cli_opt(argc, argv, "--home");
    c.passphrase_file = cli_opt(argc, argv, "--passphrase-file");
    c.new_passphrase_file = cli_opt(argc, argv, "--new-passphrase-file");
    return c;
}

int legacy_cli_open_store(int argc, char **argv, pk_store **out)
{
    cli_common c = from_argv(argc, argv);
    return cli_open_store(&c, out);
}

int legacy_cli_read_passphrase(int argc, char **argv, int confirm, char **pass, size_t *len)
{
    cli_common c = from_argv(argc, argv);
    return cli_read_passphrase(&c, confirm, pass, len);
}

int legacy_cli_read_new_passphrase(int argc, char **argv, char **pass, size_t *len)
{
    cli_common c = from_argv(argc, argv);
    return cli_read_new_passphrase(&c, pass, len);
}

int legacy_cli_home(int argc, char **argv, char *out, size_t n)
{
    cli_common c = from_argv(argc, argv);
    return cli_home(&c, out, n);
}
