/* test_quantize_cli.c: `pocketllm quantize` and `bench generate` through the built CLI on the
 * shipped stories260k: the JSON report (converted and kept tensors, --keep, the rows that do not
 * divide into blocks), usage errors, and the result working where a model does (forward,
 * generate from text, bench generate). */
#include "pk_test.h"
#include "test_product_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The JSON report of q8_0, q4_0 with --keep and q6_k conversions, and the usage errors. */
static void test_report(const char *tmp)
{
    char *out = NULL;
    PK_CHECK_EQ(run_fmt(&out, RUN_SHOW_FAILURE,
                        "%s quantize --model %s --out %s/q8 --type q8_0 --json", POCKETLLM,
                        PK_STORIES_DIR, tmp),
                0);
    /* 36 matrices; the 5 down_proj [64, 172] keep f32 (172 is not a multiple of 32) */
    PK_CHECK(out && strstr(out, "\"type\":\"Q8_0\"") && strstr(out, "\"converted\":31"));
    PK_CHECK(out && strstr(out, "\"model.layers.4.mlp.down_proj.weight\":\"blocks\""));
    free(out);
    out = NULL;
    PK_CHECK_EQ(run_fmt(&out, RUN_SHOW_FAILURE,
                        "%s quantize --model %s --out %s/k --type q4_0 --keep embed --json",
                        POCKETLLM, PK_STORIES_DIR, tmp),
                0);
    PK_CHECK(out && strstr(out, "\"converted\":30") &&
             strstr(out, "\"model.embed_tokens.weight\":\"keep\""));
    free(out);
    out = NULL;
    PK_CHECK(run_expect(2, "pocketllm quantize: --type: expected q8_0, q4_0, q4_k, q5_k, q6_k",
                        "%s quantize --model %s --out %s/x --type q3_k", POCKETLLM, PK_STORIES_DIR,
                        tmp));
    /* q5_k / q6_k are written (256-blocks: stories260k's 64-wide rows all stay f32 here; the
     * encoders' error bounds are test_gguf's) */
    PK_CHECK_EQ(run_fmt(&out, RUN_SHOW_FAILURE,
                        "%s quantize --model %s --out %s/q6 --type q6_k --json", POCKETLLM,
                        PK_STORIES_DIR, tmp),
                0);
    PK_CHECK(out && strstr(out, "\"type\":\"Q6_K\"") && strstr(out, "\"converted\":0"));
    free(out);
    PK_CHECK(run_expect(2, "--keep",
                        "%s quantize --model %s --out %s/x --type q8_0 "
                        "--keep '('",
                        POCKETLLM, PK_STORIES_DIR, tmp));
}

/* The widened blocks feed the same fixed GEMM tiles as f32 weights: under each OpenBLAS
 * kernel (which may round differently from another, docs/DETERMINISM.md) the quantized
 * model gives its widened f32 copy's logits, bit for bit, under any thread count. */
static void test_widened_bits(const char *tmp)
{
    PK_CHECK_EQ(run_fmt(NULL, RUN_SHOW_FAILURE,
                        "%s quantize --model %s/k --out %s/w --type f32 >/dev/null", POCKETLLM, tmp,
                        tmp),
                0);
    static const char *const env[] = {"env -u OPENBLAS_CORETYPE", "env OPENBLAS_CORETYPE=Haswell"};
    static const char *const how[] = {"k --threads 1", "k --threads 2", "k --threads 3",
                                      "w --threads 2"};
    char a[600], b[600], ids[2048] = "1";
    for (int i = 1; i < 300; i++) /* enough tokens for the GEMMs and LM head to run in parallel */
        snprintf(ids + strlen(ids), sizeof ids - strlen(ids), ",%d", i * 37 % 512);
    for (int e = 0; e < 2; e++) {
        for (int i = 0; i < 4; i++) {
            snprintf(b, sizeof b, "%s/logits%d.f32", tmp, i);
            PK_CHECK_EQ(run_fmt(NULL, RUN_SHOW_FAILURE,
                                "%s %s forward --model %s/%s --ids %s --out %s >/dev/null 2>&1",
                                env[e], POCKETLLM, tmp, how[i], ids, b),
                        0);
            if (i == 0)
                snprintf(a, sizeof a, "%s", b);
            else
                PK_CHECK(files_equal(a, b) == 1);
        }
    }
}

int main(void)
{
    char tmp[256], *out = NULL;
    if (!make_tmpdir(tmp, sizeof tmp, "quantize"))
        return 1;
    test_report(tmp);
    /* the result, as a directory and as the file itself */
    PK_CHECK_EQ(run_fmt(&out, RUN_SHOW_FAILURE,
                        "%s forward --model %s/q8/model.gguf --ids 1,403,407", POCKETLLM, tmp),
                0);
    PK_CHECK(out && strstr(out, "loss"));
    free(out);
    out = NULL;
    PK_CHECK_EQ(run_fmt(&out, RUN_SHOW_FAILURE,
                        "%s generate --model %s/q8 --prompt 'Once upon a time' --max-new 8 --json",
                        POCKETLLM, tmp),
                0);
    PK_CHECK(out && strstr(out, "\"text\":\"") != NULL);
    free(out);
    out = NULL;
    test_widened_bits(tmp);
    PK_CHECK_EQ(run_fmt(&out, RUN_SHOW_FAILURE,
                        "%s bench generate --model %s/q8 --prompt 4 --tokens 8 --reps 1", POCKETLLM,
                        tmp),
                0);
    PK_CHECK(out && strstr(out, "\"tokens_per_s\":") && strstr(out, "\"weight_bytes\":440032"));
    free(out);
    rm_rf(tmp);
    return PK_TEST_DONE();
}
