/* test_cli_nonfinite.c: a model with a NaN weight, through the built CLI: loading names the
 * tensor, forward exits 1 instead of printing "loss nan", and generate stops with an error
 * instead of sampling garbage. */
#include "pk_test.h"
#include "test_product_util.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Overwrites the first float of the safetensors data area (after the 8-byte length and the
 * JSON header) with a NaN. */
static int poison(const char *path)
{
    FILE *f = fopen(path, "r+b");
    unsigned char len8[8];
    if (!f || fread(len8, 1, 8, f) != 8)
        return -1;
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = hl << 8 | len8[i];
    const unsigned char nan_bits[4] = {0x00, 0x00, 0xc0, 0x7f};
    int ok = fseek(f, (long)(8 + hl), SEEK_SET) == 0 && fwrite(nan_bits, 1, 4, f) == 4;
    return fclose(f) == 0 && ok ? 0 : -1;
}

int main(void)
{
    char tmp[256], dir[512], st[600], *out = NULL;
    if (!make_tmpdir(tmp, sizeof tmp, "nonfinite"))
        return 1;
    snprintf(dir, sizeof dir, "%s/model", tmp);
    PK_CHECK_EQ(run_fmt(NULL, RUN_SHOW_FAILURE, "cp -r %s %s", PK_STORIES_DIR, dir), 0);
    PK_CHECK_EQ(run_fmt(NULL, RUN_SHOW_FAILURE, "chmod -R u+w %s", dir), 0);
    snprintf(st, sizeof st, "%s/model.safetensors", dir);
    PK_CHECK_EQ(poison(st), 0);
    PK_CHECK_EQ(
        run_fmt(&out, RUN_MERGE_STDERR, "%s forward --model %s --ids 1,2,3", POCKETLLM, dir), 1);
    PK_CHECK(out && strstr(out, "non-finite values") != NULL);
    PK_CHECK(out && strstr(out, "not finite") != NULL && !strstr(out, "loss nan"));
    free(out);
    out = NULL;
    PK_CHECK(run_expect(1, "not finite", "%s generate --model %s --prompt Pip --max-new 5",
                        POCKETLLM, dir));
    rm_rf(tmp);
    return PK_TEST_DONE();
}
