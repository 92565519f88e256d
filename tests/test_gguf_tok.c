/* test_gguf_tok.c: GGUF with the test-vector bundle. Every tiny model (llama, llama f16, qwen2,
 * opt, gpt2, roberta) written as GGUF gives the same logits (F32: bit for bit; Q8_0: close).
 * Byte-level BPE tokenizers through GGUF metadata: for the GPT-2 and Llama-3 tokenizer.json
 * files, a tiny model beside them is written as GGUF (tokenizer.ggml.* "gpt2" vocabulary:
 * tokens, token_type, merges, pre), the bare file is saved again (tokenizer.json rebuilt from
 * its metadata), and the rebuilt tokenizer gives the original's ids on every golden text. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "pk_model.h"
#include "pk_test.h"
#include "pk_tokenizer.h"
#include "test_util.h"

static char tmp[64];

static void copy(const char *from_dir, const char *to_dir, const char *name)
{
    size_t n = 0;
    char *d = slurp_at(from_dir, name, &n);
    PK_CHECK(d && write_at(to_dir, name, d, n) == 0);
    free(d);
}

/* Every golden text encodes to the same ids with both tokenizers (with and without specials). */
static void same_ids(const pk_tokenizer *a, const pk_tokenizer *b, const char *golden)
{
    size_t n = 0, lines = 0;
    char *txt = slurp(golden, &n);
    PK_CHECK(txt != NULL);
    for (char *line = txt ? strtok(txt, "\n") : NULL; line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "text");
        for (int sp = 0; cJSON_IsString(t) && sp < 2; sp++) {
            int32_t *x = NULL, *y = NULL;
            size_t nx = 0, ny = 0, len = strlen(t->valuestring);
            PK_CHECK_EQ(pk_tokenizer_encode(a, t->valuestring, len, sp, &x, &nx), PK_OK);
            PK_CHECK_EQ(pk_tokenizer_encode(b, t->valuestring, len, sp, &y, &ny), PK_OK);
            int same = nx == ny && (nx == 0 || memcmp(x, y, nx * sizeof *x) == 0);
            if (!same)
                fprintf(stderr, "%s: ids differ for %s (special %d)\n", golden, line, sp);
            PK_CHECK(same);
            free(x);
            free(y);
        }
        lines++;
        cJSON_Delete(j);
    }
    PK_CHECK(lines > 100);
    free(txt);
}

static void one(const char *name, const char *cfg)
{
    char src[512], model[128], a[128], b[128], file[640], err[512] = "";
    snprintf(src, sizeof src, "%s/testdata/tokenizers/%s", PK_SHARED_DIR, name);
    snprintf(model, sizeof model, "%s/%s-model", tmp, name);
    snprintf(a, sizeof a, "%s/%s-a", tmp, name);
    snprintf(b, sizeof b, "%s/%s-b", tmp, name);
    PK_CHECK_EQ(pk_model_make(cfg, strlen(cfg), model, PK_DTYPE_F32, 1, err, sizeof err), PK_OK);
    copy(src, model, "tokenizer.json");
    pk_model *m = NULL;
    PK_CHECK_EQ(pk_model_load(model, pk_model_default_params(), &m, err, sizeof err), PK_OK);
    pk_dtype *types = calloc(m ? pk_model_n_tensors(m) : 1, sizeof *types); /* all F32 */
    PK_CHECK(m && pk_model_save_gguf(m, a, types, err, sizeof err) == PK_OK);
    pk_model_free(m);
    m = NULL;
    snprintf(file, sizeof file, "%s/model.gguf", a);
    PK_CHECK_EQ(pk_model_load(file, pk_model_default_params(), &m, err, sizeof err), PK_OK);
    PK_CHECK(m && pk_model_save_gguf(m, b, types, err, sizeof err) == PK_OK);
    pk_model_free(m);
    free(types);
    pk_tokenizer *ta = NULL, *tb = NULL;
    PK_CHECK_EQ(pk_tokenizer_load(model, &ta, err, sizeof err), PK_OK);
    PK_CHECK_EQ(pk_tokenizer_load(b, &tb, err, sizeof err), PK_OK);
    if (!tb)
        fprintf(stderr, "%s: %s\n", b, err);
    snprintf(file, sizeof file, "%s/golden.jsonl", src);
    if (ta && tb) {
        PK_CHECK_EQ(pk_tokenizer_vocab_size(ta), pk_tokenizer_vocab_size(tb));
        same_ids(ta, tb, file);
    }
    pk_tokenizer_free(ta);
    pk_tokenizer_free(tb);
}

static float *logits(pk_model *m, int *n)
{
    int32_t ids[6] = {1, 2, 3, 4, 5, 6}, len = 6;
    pk_batch b = {.B = 1, .T = 6, .ids = ids, .lengths = &len, .token_type = NULL};
    *n = 6 * pk_model_vocab_size(m);
    float *out = malloc((size_t)*n * sizeof *out);
    PK_CHECK(out && pk_model_logits(m, &b, NULL, out) == PK_OK);
    return out;
}

/* Model dir -> GGUF in type dt (every matrix whose rows divide into blocks) -> same logits. */
static void tiny_model(const char *name, pk_dtype dt, double tol)
{
    char src[512], dir[128], err[512] = "";
    snprintf(src, sizeof src, "%s/testdata/models/%s", PK_SHARED_DIR, name);
    snprintf(dir, sizeof dir, "%s/%s-%s", tmp, name, pk_dtype_name(dt));
    pk_model *m = NULL, *g = NULL;
    PK_CHECK_EQ(pk_model_load(src, pk_model_default_params(), &m, err, sizeof err), PK_OK);
    size_t nt = m ? pk_model_n_tensors(m) : 0, nq = 0;
    pk_dtype *t = calloc(nt + 1, sizeof *t);
    for (size_t i = 0; t && i < nt; i++) {
        pk_tensor_info ti;
        PK_CHECK(pk_model_tensor(m, i, &ti) == PK_OK);
        int q = ti.ndim == 2 && (size_t)ti.shape[1] % pk_dtype_block(dt) == 0;
        t[i] = q ? dt : ti.dtype;
        nq += (size_t)q;
    }
    PK_CHECK(m && pk_model_save_gguf(m, dir, t, err, sizeof err) == PK_OK);
    PK_CHECK_EQ(pk_model_load(dir, pk_model_default_params(), &g, err, sizeof err), PK_OK);
    if (m && g) {
        int n = 0;
        float *a = logits(m, &n), *b = logits(g, &n);
        double mx = 0;
        for (int i = 0; i < n; i++)
            mx = dmax(mx, fabs((double)a[i] - (double)b[i]));
        fprintf(stderr, "%s %s (%zu matrices): max |dlogit| %.3g\n", name, pk_dtype_name(dt), nq,
                mx);
        PK_CHECK(mx <= tol);
        PK_CHECK(dt == PK_DTYPE_F32 || nq > 0);
        free(a);
        free(b);
    }
    free(t);
    pk_model_free(m);
    pk_model_free(g);
}

int main(void)
{
    PK_CHECK(make_tmpdir(tmp, sizeof tmp, "gguf_tok"));
    static const char *const tiny[] = {"llama-tiny", "llama-tiny-f16", "qwen2-tiny",
                                       "opt-tiny",   "gpt2-tiny",      "roberta-tiny"};
    for (size_t i = 0; i < sizeof tiny / sizeof tiny[0]; i++) {
        tiny_model(tiny[i], PK_DTYPE_F32, 0); /* f16 weights widen exactly to f32 */
        tiny_model(tiny[i], PK_DTYPE_Q8_0, 0.02);
    }
    one("gpt2", "{\"model_type\":\"gpt2\",\"vocab_size\":50257,\"n_embd\":32,\"n_layer\":1,"
                "\"n_head\":2,\"n_positions\":64,\"bos_token_id\":50256,\"eos_token_id\":50256}");
    one("llama3", "{\"model_type\":\"llama\",\"vocab_size\":128256,\"hidden_size\":32,"
                  "\"intermediate_size\":32,\"num_hidden_layers\":1,\"num_attention_heads\":2,"
                  "\"max_position_embeddings\":64,\"tie_word_embeddings\":true,"
                  "\"bos_token_id\":128000,\"eos_token_id\":128001}");
    remove_tree(tmp);
    return PK_TEST_DONE();
}
