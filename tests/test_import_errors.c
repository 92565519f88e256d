/* test_import_errors.c: the importers' error messages for malformed CSV name the line and the
 * problem exactly (no stray format digits), and nothing is reported as imported. */
#include "pk_crypto.h"
#include "pk_store.h"
#include "pk_test.h"

#include <stdio.h>
#include <string.h>

static pk_status count(void *user, const pk_example *ex, int64_t line)
{
    (void)ex;
    (void)line;
    (*(int *)user)++;
    return PK_OK;
}

static void expect_csv_error(const char *csv, const char *want)
{
    char err[256] = "";
    int n = 0;
    pk_import_opts o = {.format = PK_IMPORT_CSV};
    pk_status st = pk_import_parse_buffer(csv, strlen(csv), o, count, &n, err, sizeof err);
    PK_CHECK_EQ(st, PK_ERR_FORMAT);
    if (strcmp(err, want) != 0) {
        fprintf(stderr, "got \"%s\", want \"%s\"\n", err, want);
        PK_CHECK(0);
    }
}

int main(void)
{
    if (pk_crypto_global_init() != PK_OK)
        return 1;
    expect_csv_error("text,label\n\"a\"b,1\n", "line 2: malformed quoting");
    char wide[1024] = "text";
    for (int i = 0; i < 70; i++)
        strcat(wide, ",x");
    strcat(wide, "\n");
    expect_csv_error(wide, "line 1: more than 64 columns");
    return PK_TEST_DONE();
}
