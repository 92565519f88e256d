/* fuzz_tokenizer.c: libFuzzer target for the tokenizer loaders and the encoder.
 * The first input byte picks a mode: 0 tokenizer.json, 1 tokenizer.model, 2 vocab.json +
 * merges.txt (split at the first NUL), 3/4/5 text encoded with the GPT-2 / Llama-3 /
 * stories260k tokenizers from the shared test data. Loaded tokenizers must then encode and
 * decode without crashing; byte-level BPE must round-trip exactly, and a streamed decode must
 * equal the one-shot decode. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pk_tokenizer.h"
#include "test_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char tmpdir[64];
static pk_tokenizer *fixed[3]; /* gpt2, llama3, stories260k; loaded once */

static const char *const names[] = {"tokenizer.json", "tokenizer.model", "vocab.json",
                                    "merges.txt"};

static void cleanup(void)
{
    remove_tree(tmpdir);
    for (int i = 0; i < 3; i++)
        pk_tokenizer_free(fixed[i]);
}

static void setup(void)
{
    if (tmpdir[0])
        return;
    strcpy(tmpdir, "/tmp/pk_fuzz_tok_XXXXXX");
    if (!mkdtemp(tmpdir))
        abort();
    const char *dirs[3] = {PK_SHARED_DIR "/testdata/tokenizers/gpt2",
                           PK_SHARED_DIR "/testdata/tokenizers/llama3",
                           PK_SHARED_DIR "/testdata/models/stories260k"};
    char err[512];
    for (int i = 0; i < 3; i++) {
        if (pk_tokenizer_load(dirs[i], &fixed[i], err, sizeof err) != PK_OK) {
            fprintf(stderr, "fuzz_tokenizer: cannot load %s: %s\n", dirs[i], err);
            abort();
        }
    }
    atexit(cleanup);
}

static void put(const char *name, const uint8_t *d, size_t n)
{
    if (write_at(tmpdir, name, d, n) != 0)
        abort();
}

static void clear_files(void)
{
    char p[128];
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        snprintf(p, sizeof p, "%s/%s", tmpdir, names[i]);
        unlink(p);
    }
}

/* Encode, decode, stream; lossless tokenizers must give the text back. */
static void exercise(const pk_tokenizer *t, const char *text, size_t n, int lossless)
{
    int32_t *ids = NULL;
    size_t k = 0;
    if (pk_tokenizer_encode(t, text, n, (int)(n & 1), &ids, &k) != PK_OK)
        abort(); /* only NOMEM is possible */
    size_t vs = pk_tokenizer_vocab_size(t);
    for (size_t i = 0; i < k; i++)
        if (ids[i] < 0 || (size_t)ids[i] >= vs)
            abort();
    char *dec = NULL;
    size_t dn = 0;
    if (pk_tokenizer_decode(t, ids, k, 0, &dec, &dn) != PK_OK)
        abort();
    int32_t *plain = NULL;
    size_t pn = 0;
    if (lossless) {
        if (pk_tokenizer_encode(t, text, n, 0, &plain, &pn) != PK_OK)
            abort();
        char *d2 = NULL;
        size_t d2n = 0;
        if (pk_tokenizer_decode(t, plain, pn, 0, &d2, &d2n) != PK_OK)
            abort();
        if (d2n != n || memcmp(d2, text, n) != 0)
            abort(); /* byte-level BPE lost bytes */
        free(d2);
        free(plain);
    }
    pk_tokenizer_stream *s = NULL;
    if (pk_tokenizer_stream_new(t, 0, &s) != PK_OK)
        abort();
    size_t at = 0;
    for (size_t i = 0; i < k; i++) {
        const char *b;
        size_t bn;
        if (pk_tokenizer_stream_push(s, ids[i], &b, &bn) != PK_OK)
            abort();
        if (at + bn > dn || memcmp(dec + at, b, bn) != 0)
            abort();
        at += bn;
    }
    const char *b;
    size_t bn;
    if (pk_tokenizer_stream_flush(s, &b, &bn) != PK_OK || at + bn != dn ||
        memcmp(dec + at, b, bn) != 0)
        abort();
    pk_tokenizer_stream_free(s);
    free(dec);
    free(ids);
}

static void load_and_exercise(void)
{
    pk_tokenizer *t = NULL;
    char err[256];
    pk_status st = pk_tokenizer_load(tmpdir, &t, err, sizeof err);
    if (st != PK_OK) {
        if (t != NULL || !err[0])
            abort(); /* failures leave *out NULL and always explain themselves */
        return;
    }
    static const char *const texts[] = {
        "Hello world",    " a  b\t\n", "caf\xc3\xa9 \xf0\x9f\x98\x80",
        "<|endoftext|>x", "\xff\xfe",  "aaaaaaaaaaaaaaaaaaaaaaa"};
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++)
        exercise(t, texts[i], strlen(texts[i]), 0);
    pk_tokenizer_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    if (size == 0)
        return 0;
    uint8_t mode = data[0] % 6;
    data++;
    size--;
    if (mode >= 3) {
        exercise(fixed[mode - 3], (const char *)data, size, mode != 5);
        return 0;
    }
    clear_files();
    if (mode == 0) {
        put("tokenizer.json", data, size);
    } else if (mode == 1) {
        put("tokenizer.model", data, size);
    } else {
        const uint8_t *nul = memchr(data, 0, size);
        size_t vn = nul ? (size_t)(nul - data) : size;
        put("vocab.json", data, vn);
        put("merges.txt", nul ? nul + 1 : data, nul ? size - vn - 1 : 0);
    }
    load_and_exercise();
    return 0;
}
