/* fuzz_import.c: libFuzzer target for the importers (JSONL, TXT lines and paragraphs, CSV).
 * The first byte picks the format; the rest is the file. Every input is either accepted, with
 * each example holding a valid field combination of valid UTF-8, or rejected with
 * PK_ERR_FORMAT/PK_ERR_IO and a "line N:" message; never a crash or a leak. */
#include "pk_crypto.h"
#include "pk_store.h"

#include <stdlib.h>
#include <string.h>

static void check(int ok)
{
    if (!ok)
        abort();
}

static pk_status on_example(void *user, const pk_example *ex, int64_t line)
{
    int64_t *count = user;
    check(line >= 1);
    check(ex->text || (ex->prompt && ex->response));
    check(!ex->text2 || ex->text);
    const char *f[5] = {ex->text, ex->text2, ex->prompt, ex->response, ex->label};
    for (int i = 0; i < 5; i++)
        if (f[i])
            check(strlen(f[i]) <= PK_IMPORT_MAX_RECORD);
    (*count)++;
    return PK_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256] = "";
    int64_t count = 0;
    if (size == 0 || pk_crypto_global_init() != PK_OK)
        return 0;
    static const pk_import_format formats[3] = {PK_IMPORT_JSONL, PK_IMPORT_TXT, PK_IMPORT_CSV};
    pk_import_opts o = {.format = formats[data[0] % 3], .paragraphs = (data[0] >> 2) & 1};
    pk_status st =
        pk_import_parse_buffer(data + 1, size - 1, o, on_example, &count, err, sizeof err);
    check(st == PK_OK || st == PK_ERR_FORMAT || st == PK_ERR_NOMEM);
    if (st == PK_ERR_FORMAT)
        check(!strncmp(err, "line ", 5));
    return 0;
}
