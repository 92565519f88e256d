/* fuzz_model.c: libFuzzer target for the model loaders' parsers.
 * The first input byte picks a mode:
 *   0  the rest is a safetensors header (the JSON after the 8-byte length), checked against a
 *      data area whose size is the largest number in the text (so that well-formed headers get
 *      past the bounds checks and deeper paths run) and against a huge one;
 *   1  the rest is a config.json text (pk_config_check);
 *   2  the rest is a whole model.safetensors file, loaded by pk_model_load next to a fixed tiny
 *      llama config.json: it must load or fail with a message (and no model), and a loaded
 *      model must run a forward pass (its loss may be NaN: the weights are arbitrary).
 * Every failure must come with a non-empty error message. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_model_util.h"
#include "pk_model.h"
#include "test_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char tiny_config[] =
    "{\"model_type\":\"llama\",\"vocab_size\":8,\"hidden_size\":4,\"intermediate_size\":8,"
    "\"num_hidden_layers\":1,\"num_attention_heads\":2,\"num_key_value_heads\":1,"
    "\"max_position_embeddings\":16,\"rms_norm_eps\":1e-6,\"rope_theta\":10000.0,"
    "\"tie_word_embeddings\":true,\"bos_token_id\":1,\"eos_token_id\":2}";

static char tmpdir[64];

static void check(int ok)
{
    if (!ok)
        abort();
}

static void put(const char *name, const void *d, size_t n)
{
    check(write_at(tmpdir, name, d, n) == 0);
}

static void cleanup(void)
{
    remove_tree(tmpdir);
}

static void setup(void)
{
    if (tmpdir[0])
        return;
    strcpy(tmpdir, "/tmp/pk_fuzz_model_XXXXXX");
    check(mkdtemp(tmpdir) != NULL);
    put("config.json", tiny_config, sizeof tiny_config - 1);
    atexit(cleanup);
}

/* The largest decimal number in the text (capped near 2^40), or 0. */
static uint64_t max_offset(const char *s, size_t n)
{
    uint64_t best = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            continue;
        uint64_t v = 0;
        size_t j = i;
        while (j < n && s[j] >= '0' && s[j] <= '9' && v < (UINT64_C(1) << 40))
            v = v * 10 + (uint64_t)(s[j++] - '0');
        best = v > best ? v : best;
        i = j;
    }
    return best;
}

static void fuzz_header(const char *h, size_t n)
{
    const uint64_t sizes[2] = {max_offset(h, n), UINT64_C(1) << 40};
    for (int i = 0; i < 2; i++) {
        char err[512] = "";
        pk_status st =
            pk_safetensors_check_header("fuzz.safetensors", h, n, sizes[i], err, sizeof err);
        check(st == PK_OK || err[0] != '\0');
    }
}

static void fuzz_config(const char *j, size_t n)
{
    char err[512] = "";
    pk_status st = pk_config_check("config.json", j, n, err, sizeof err);
    check(st == PK_OK || err[0] != '\0');
}

static void fuzz_file(const uint8_t *d, size_t n)
{
    setup();
    put("model.safetensors", d, n);
    pk_model *m = fuzz_load_model(tmpdir);
    if (m == NULL)
        return;
    pk_status st = fuzz_model_loss(m);
    check(st == PK_OK || st == PK_ERR_NOMEM);
    pk_model_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *rest = (const char *)data + 1;
    size_t n = size - 1;
    switch (data[0] % 3) {
    case 0:
        fuzz_header(rest, n);
        break;
    case 1:
        fuzz_config(rest, n);
        break;
    default:
        fuzz_file(data + 1, n);
        break;
    }
    return 0;
}
