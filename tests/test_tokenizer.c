/* test_tokenizer.c: golden ids and exact decode round trips for GPT-2 (tokenizer.json and
 * vocab.json + merges.txt), Llama-3 and stories260k (SentencePiece tokenizer.model), streaming
 * decode, special tokens, and clear errors for missing/truncated/malformed files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "pk_test.h"
#include "pk_tokenizer.h"
#include "test_util.h"

#define TD PK_SHARED_DIR "/testdata"

static pk_tokenizer *load_ok(const char *dir)
{
    pk_tokenizer *t = NULL;
    char err[512] = "";
    pk_status st = pk_tokenizer_load(dir, &t, err, sizeof err);
    if (st != PK_OK)
        fprintf(stderr, "load %s failed: %s (%s)\n", dir, pk_status_str(st), err);
    PK_CHECK_EQ(st, PK_OK);
    return t;
}

/* SentencePiece's remove_extra_whitespaces: the text a lossless decode gives back. */
static size_t sp_expected(const char *s, size_t n, char *o)
{
    size_t a = 0, b = n, k = 0;
    while (a < b && s[a] == ' ')
        a++;
    while (b > a && s[b - 1] == ' ')
        b--;
    for (size_t i = a; i < b; i++)
        if (!(s[i] == ' ' && i > a && s[i - 1] == ' '))
            o[k++] = s[i];
    return k;
}

/* Streams ids one at a time and checks the pieces concatenate to the full decode, and that no
 * piece ends inside a UTF-8 character. */
static void check_stream(const pk_tokenizer *t, int skip, const int32_t *ids, size_t n,
                         const char *want, size_t wn)
{
    pk_tokenizer_stream *s = NULL;
    PK_CHECK_EQ(pk_tokenizer_stream_new(t, skip, &s), PK_OK);
    if (!s)
        return;
    char *acc = malloc(wn + 64);
    size_t k = 0;
    int bad_split = 0, overflow = 0;
    for (size_t i = 0; i < n; i++) {
        const char *b;
        size_t bn;
        PK_CHECK_EQ(pk_tokenizer_stream_push(s, ids[i], &b, &bn), PK_OK);
        if (bn && ((uint8_t)b[bn - 1] & 0xC0) == 0xC0)
            bad_split = 1; /* ends with a lead byte */
        if (k + bn > wn) {
            overflow = 1;
            break;
        }
        memcpy(acc + k, b, bn);
        k += bn;
    }
    const char *b;
    size_t bn;
    PK_CHECK_EQ(pk_tokenizer_stream_flush(s, &b, &bn), PK_OK);
    if (!overflow && k + bn <= wn) {
        memcpy(acc + k, b, bn);
        k += bn;
    }
    PK_CHECK(!bad_split);
    PK_CHECK(!overflow && k == wn && memcmp(acc, want, wn) == 0);
    free(acc);
    pk_tokenizer_stream_free(s);
}

typedef struct golden_stats {
    int lines, id_bad, dec_bad; /* lines read; lines whose ids / decode differ */
} golden_stats;

/* Encoding text gives exactly the reference ids ref (wn of them); the first 5 misses are shown. */
static void golden_ids(const pk_tokenizer *t, const char *dir, const char *line, const char *text,
                       const int32_t *ref, size_t wn, golden_stats *gs)
{
    int32_t *ids = NULL;
    size_t nid = 0;
    PK_CHECK_EQ(pk_tokenizer_encode(t, text, strlen(text), 0, &ids, &nid), PK_OK);
    int same = nid == wn;
    for (size_t i = 0; same && i < wn; i++)
        same = ids[i] == ref[i];
    if (!same) {
        if (gs->id_bad < 5) {
            fprintf(stderr, "%s: ids differ for %s\n  got:", dir, line);
            for (size_t i = 0; i < nid; i++)
                fprintf(stderr, " %d", ids[i]);
            fprintf(stderr, "\n");
        }
        gs->id_bad++;
    }
    free(ids);
}

/* One golden line {"text": ..., "ids": [...]}: identical ids, and the reference ids decode to the
 * text (sp: after SentencePiece's whitespace rules), in one call and streamed. The text comes
 * through cJSON, so it ends at its first NUL: no golden line has one. */
static void golden_line(const pk_tokenizer *t, const char *dir, const char *line, int sp,
                        golden_stats *gs)
{
    cJSON *j = cJSON_Parse(line);
    const char *text = cJSON_GetStringValue(cJSON_GetObjectItem(j, "text"));
    cJSON *ja = cJSON_GetObjectItem(j, "ids");
    PK_CHECK(text && cJSON_IsArray(ja));
    if (!text || !cJSON_IsArray(ja)) {
        cJSON_Delete(j);
        return;
    }
    gs->lines++;
    size_t tn = strlen(text), wn = (size_t)cJSON_GetArraySize(ja);
    int32_t *ref = malloc((wn + 1) * sizeof *ref);
    for (size_t i = 0; i < wn; i++)
        ref[i] = (int32_t)cJSON_GetArrayItem(ja, (int)i)->valueint;
    golden_ids(t, dir, line, text, ref, wn, gs);
    char *dec = NULL;
    size_t dn = 0;
    PK_CHECK_EQ(pk_tokenizer_decode(t, ref, wn, 0, &dec, &dn), PK_OK);
    char *want = malloc(tn + 1);
    size_t wl = sp ? sp_expected(text, tn, want) : tn;
    if (!sp)
        memcpy(want, text, tn);
    if (!dec || dn != wl || memcmp(dec, want, wl) != 0) {
        if (gs->dec_bad < 5)
            fprintf(stderr, "%s: decode differs for %s\n  got: %.*s\n", dir, line, (int)dn,
                    dec ? dec : "");
        gs->dec_bad++;
    }
    check_stream(t, 0, ref, wn, want, wl);
    free(want);
    free(dec);
    free(ref);
    cJSON_Delete(j);
}

/* Every golden line: identical ids; decode gives the text back (sp: after SP whitespace rules). */
static void golden(const char *dir, const char *file, int sp)
{
    pk_tokenizer *t = load_ok(dir);
    char *data = slurp(file, NULL);
    PK_CHECK(data != NULL);
    if (!t || !data) {
        fprintf(stderr, "golden %s: missing %s\n", dir, data ? "tokenizer" : file);
        pk_tokenizer_free(t);
        free(data);
        return;
    }
    golden_stats gs = {0, 0, 0};
    for (char *line = strtok(data, "\n"); line; line = strtok(NULL, "\n"))
        golden_line(t, dir, line, sp, &gs);
    fprintf(stderr, "%s: %d lines, %d id mismatches, %d decode mismatches\n", dir, gs.lines,
            gs.id_bad, gs.dec_bad);
    PK_CHECK(gs.lines >= 200);
    PK_CHECK_EQ(gs.id_bad, 0);
    PK_CHECK_EQ(gs.dec_bad, 0);
    free(data);
    pk_tokenizer_free(t);
}

static void make_dir(char *tmpl)
{
    PK_CHECK(mkdtemp(tmpl) != NULL);
}

static void link_into(const char *dir, const char *src, const char *name)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    PK_CHECK(symlink(src, p) == 0);
}

static void write_file(const char *dir, const char *name, const void *data, size_t n)
{
    PK_CHECK(write_at(dir, name, data, n) == 0);
}

static void test_gpt2_pair(void)
{
    char dir[] = "/tmp/pk_tok_gpt2_XXXXXX";
    make_dir(dir);
    link_into(dir, TD "/tokenizers/gpt2/vocab.json", "vocab.json");
    link_into(dir, TD "/tokenizers/gpt2/merges.txt", "merges.txt");
    link_into(dir, TD "/tokenizers/gpt2/tokenizer_config.json", "tokenizer_config.json");
    link_into(dir, TD "/tokenizers/gpt2/special_tokens_map.json", "special_tokens_map.json");
    golden(dir, TD "/tokenizers/gpt2/golden.jsonl", 0);
    remove_tree(dir);
}

/* ids decode (skip: without special tokens) to exactly want; a difference is shown. */
static void expect_decode(const pk_tokenizer *t, const int32_t *ids, size_t n, int skip,
                          const char *want)
{
    char *dec = NULL;
    size_t dn = 0;
    PK_CHECK_EQ(pk_tokenizer_decode(t, ids, n, skip, &dec, &dn), PK_OK);
    PK_CHECK(dec && dn == strlen(want) && !strcmp(dec, want));
    if (dec && strcmp(dec, want))
        fprintf(stderr, "  decoded:\n%s\nwant:\n%s\n", dec, want);
    free(dec);
}

static void test_greedy(void)
{
    pk_tokenizer *t = load_ok(TD "/models/stories260k");
    size_t n = 0;
    char *data = slurp(TD "/models/stories260k/reference/greedy_from_bos.json", &n);
    cJSON *j = data ? cJSON_Parse(data) : NULL;
    cJSON *ja = cJSON_GetObjectItem(j, "greedy_tokens");
    const char *want = cJSON_GetStringValue(cJSON_GetObjectItem(j, "text"));
    PK_CHECK(t && cJSON_IsArray(ja) && want);
    if (t && cJSON_IsArray(ja) && want) {
        size_t k = (size_t)cJSON_GetArraySize(ja);
        int32_t *ids = malloc(k * sizeof *ids);
        for (size_t i = 0; i < k; i++)
            ids[i] = (int32_t)cJSON_GetArrayItem(ja, (int)i)->valueint;
        PK_CHECK_EQ(ids[0], pk_tokenizer_bos(t));
        expect_decode(t, ids, k, 1, want);
        check_stream(t, 1, ids, k, want, strlen(want));
        /* the text re-encodes (with BOS) to a prefix-compatible sequence */
        int32_t *re = NULL;
        size_t rn = 0;
        PK_CHECK_EQ(pk_tokenizer_encode(t, want, strlen(want), 1, &re, &rn), PK_OK);
        PK_CHECK(rn > 10 && re[0] == 1 && re[1] == ids[1]);
        free(re);
        free(ids);
    }
    cJSON_Delete(j);
    free(data);
    pk_tokenizer_free(t);
}

static void test_specials(void)
{
    pk_tokenizer *g = load_ok(TD "/tokenizers/gpt2");
    pk_tokenizer *l = load_ok(TD "/tokenizers/llama3");
    pk_tokenizer *s = load_ok(TD "/models/stories260k");
    if (!g || !l || !s)
        goto out;
    PK_CHECK_EQ(pk_tokenizer_vocab_size(g), 50257);
    PK_CHECK_EQ(pk_tokenizer_eos(g), 50256);
    PK_CHECK_EQ(pk_tokenizer_bos(g), 50256);
    PK_CHECK_EQ(pk_tokenizer_token_id(g, "Ġthe"), 262);
    PK_CHECK_EQ(pk_tokenizer_token_id(g, "no-such-piece"), -1);
    PK_CHECK_EQ(pk_tokenizer_bos(l), 128000);
    PK_CHECK_EQ(pk_tokenizer_eos(l), 128001);
    PK_CHECK_EQ(pk_tokenizer_vocab_size(l), 128256);
    PK_CHECK_EQ(pk_tokenizer_bos(s), 1);
    PK_CHECK_EQ(pk_tokenizer_eos(s), 2);
    PK_CHECK_EQ(pk_tokenizer_unk(s), 0);
    PK_CHECK_EQ(pk_tokenizer_pad(s), -1);
    PK_CHECK_EQ(pk_tokenizer_vocab_size(s), 512);
    PK_CHECK_EQ(pk_tokenizer_token_id(s, "<0x0A>"), 13);
    int32_t *ids = NULL;
    size_t n = 0;
    /* add_special: GPT-2 adds nothing, Llama-3 BOS, SentencePiece BOS (add_bos_token) */
    PK_CHECK_EQ(pk_tokenizer_encode(g, "Hello world", 11, 1, &ids, &n), PK_OK);
    PK_CHECK(n == 2 && ids[0] == 15496 && ids[1] == 995);
    free(ids);
    PK_CHECK_EQ(pk_tokenizer_encode(l, "Hello", 5, 1, &ids, &n), PK_OK);
    PK_CHECK(n == 2 && ids[0] == 128000);
    free(ids);
    PK_CHECK_EQ(pk_tokenizer_encode(s, "Hello", 5, 1, &ids, &n), PK_OK);
    PK_CHECK(n >= 2 && ids[0] == 1 && ids[n - 1] != 2);
    free(ids);
    /* a special token in Llama-3 text is one id; skip_special drops it on decode */
    const char *txt = "<|begin_of_text|>Hi<|eot_id|>";
    PK_CHECK_EQ(pk_tokenizer_encode(l, txt, strlen(txt), 0, &ids, &n), PK_OK);
    PK_CHECK(n == 3 && ids[0] == 128000 && ids[2] == 128009);
    expect_decode(l, ids, n, 1, "Hi");
    expect_decode(l, ids, n, 0, txt);
    free(ids);
    char *dec = NULL;
    size_t dn = 0;
    /* bad ids are an argument error, not a crash */
    int32_t bad = 50257;
    PK_CHECK_EQ(pk_tokenizer_decode(g, &bad, 1, 0, &dec, &dn), PK_ERR_ARG);
    bad = -1;
    PK_CHECK_EQ(pk_tokenizer_decode(g, &bad, 1, 0, &dec, &dn), PK_ERR_ARG);
    /* NUL inside the text, byte-level round trip of arbitrary bytes (invalid UTF-8 too) */
    const char raw[] = "a\0b \xff\xfe\x80 caf\xc3\xa9 \xe2\x82";
    PK_CHECK_EQ(pk_tokenizer_encode(g, raw, sizeof raw - 1, 0, &ids, &n), PK_OK);
    PK_CHECK_EQ(pk_tokenizer_decode(g, ids, n, 0, &dec, &dn), PK_OK);
    PK_CHECK(dec && dn == sizeof raw - 1 && !memcmp(dec, raw, dn));
    free(dec);
    free(ids);
    /* empty text */
    PK_CHECK_EQ(pk_tokenizer_encode(s, "", 0, 0, &ids, &n), PK_OK);
    PK_CHECK_EQ(n, 0);
    free(ids);
out:
    pk_tokenizer_free(g);
    pk_tokenizer_free(l);
    pk_tokenizer_free(s);
}

/* A streamed emoji split over byte tokens is held back until complete. */
static void test_stream_holdback(void)
{
    pk_tokenizer *s = load_ok(TD "/models/stories260k");
    if (!s)
        return;
    const char *emoji = "\xf0\x9f\x98\x80"; /* U+1F600 */
    int32_t ids[4];
    for (int i = 0; i < 4; i++)
        ids[i] =
            pk_tokenizer_token_id(s, (const char *[]){"<0xF0>", "<0x9F>", "<0x98>", "<0x80>"}[i]);
    pk_tokenizer_stream *st = NULL;
    PK_CHECK_EQ(pk_tokenizer_stream_new(s, 1, &st), PK_OK);
    const char *b;
    size_t bn;
    for (int i = 0; i < 3; i++) {
        PK_CHECK_EQ(pk_tokenizer_stream_push(st, ids[i], &b, &bn), PK_OK);
        PK_CHECK_EQ(bn, 0);
    }
    PK_CHECK_EQ(pk_tokenizer_stream_push(st, ids[3], &b, &bn), PK_OK);
    PK_CHECK(bn == 4 && !memcmp(b, emoji, 4));
    /* an incomplete tail comes out on flush */
    PK_CHECK_EQ(pk_tokenizer_stream_push(st, ids[0], &b, &bn), PK_OK);
    PK_CHECK_EQ(bn, 0);
    PK_CHECK_EQ(pk_tokenizer_stream_flush(st, &b, &bn), PK_OK);
    PK_CHECK(bn == 1 && (uint8_t)b[0] == 0xF0);
    PK_CHECK_EQ(pk_tokenizer_stream_push(st, 9999, &b, &bn), PK_ERR_ARG);
    pk_tokenizer_stream_free(st);
    pk_tokenizer_free(s);
}

/* Loads dir expecting failure with status want and a message containing both needles. */
static void expect_fail(const char *dir, pk_status want, const char *n1, const char *n2)
{
    pk_tokenizer *t = (pk_tokenizer *)(uintptr_t)1;
    char err[512] = "";
    pk_status st = pk_tokenizer_load(dir, &t, err, sizeof err);
    PK_CHECK_EQ(st, want);
    PK_CHECK(t == NULL);
    PK_CHECK(strstr(err, n1) != NULL);
    PK_CHECK(!n2 || strstr(err, n2) != NULL);
    if (st != want || !strstr(err, n1) || (n2 && !strstr(err, n2)))
        fprintf(stderr, "  error was: %s (%s)\n", err, pk_status_str(st));
    if (st == PK_OK)
        pk_tokenizer_free(t);
}

static void test_errors(void)
{
    expect_fail("/nonexistent/pk_tok", PK_ERR_NOTFOUND, "/nonexistent/pk_tok", "not a directory");
    char dir[] = "/tmp/pk_tok_err_XXXXXX";
    make_dir(dir);
    expect_fail(dir, PK_ERR_NOTFOUND, dir, "no tokenizer files");
    /* a truncated tokenizer.json */
    size_t n = 0;
    char *tj = slurp(TD "/tokenizers/gpt2/tokenizer.json", &n);
    PK_CHECK(tj != NULL);
    if (tj) {
        write_file(dir, "tokenizer.json", tj, n / 2);
        expect_fail(dir, PK_ERR_FORMAT, "tokenizer.json", "truncated");
    }
    free(tj);
    const char *bad_model = "{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}";
    write_file(dir, "tokenizer.json", bad_model, strlen(bad_model));
    expect_fail(dir, PK_ERR_UNSUPPORTED, "tokenizer.json", "Unigram");
    const char *no_vocab = "{\"model\":{\"type\":\"BPE\",\"merges\":[]}}";
    write_file(dir, "tokenizer.json", no_vocab, strlen(no_vocab));
    expect_fail(dir, PK_ERR_FORMAT, "tokenizer.json", "vocab");
    const char *bad_merge =
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[\"a c\"]}}";
    write_file(dir, "tokenizer.json", bad_merge, strlen(bad_merge));
    expect_fail(dir, PK_ERR_FORMAT, "tokenizer.json", "\"c\" which is not in the vocab");
    const char *bad_re = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},"
                         "\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},"
                         "\"behavior\":\"Isolated\"}}";
    write_file(dir, "tokenizer.json", bad_re, strlen(bad_re));
    expect_fail(dir, PK_ERR_FORMAT, "tokenizer.json", "regex");
    /* a template's special token whose ids are not numbers (found by fuzz_tokenizer: the
     * refusal once came without a message) */
    const char *bad_post =
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"<s>\":1},\"merges\":[]},"
        "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":"
        "{\"id\":\"<s>\"}},{\"Sequence\":{\"id\":\"A\"}}],\"special_tokens\":{\"<s>\":"
        "{\"id\":\"<s>\",\"ids\":[\"<s>\"]}}}}";
    write_file(dir, "tokenizer.json", bad_post, strlen(bad_post));
    expect_fail(dir, PK_ERR_FORMAT, "tokenizer.json", "special token <s> has an id");
    remove_tree(dir);

    /* vocab.json without merges.txt; malformed merges.txt */
    char d2[] = "/tmp/pk_tok_err2_XXXXXX";
    make_dir(d2);
    const char *vocab = "{\"a\":0,\"b\":1,\"ab\":2}";
    write_file(d2, "vocab.json", vocab, strlen(vocab));
    expect_fail(d2, PK_ERR_NOTFOUND, "merges.txt", NULL);
    write_file(d2, "merges.txt", "#version: 0.2\na b\nab\n", 20);
    expect_fail(d2, PK_ERR_FORMAT, "merges.txt", "line 3");
    write_file(d2, "vocab.json", "{\"a\":0,", 7);
    expect_fail(d2, PK_ERR_FORMAT, "vocab.json", "malformed");
    remove_tree(d2);

    /* truncated and garbage tokenizer.model */
    char d3[] = "/tmp/pk_tok_err3_XXXXXX";
    make_dir(d3);
    char *m = slurp(TD "/models/stories260k/tokenizer.model", &n);
    PK_CHECK(m != NULL);
    if (m) {
        write_file(d3, "tokenizer.model", m, n - 3);
        expect_fail(d3, PK_ERR_FORMAT, "tokenizer.model", "truncated");
        write_file(d3, "tokenizer.model", m, 0);
        expect_fail(d3, PK_ERR_FORMAT, "tokenizer.model", "no pieces");
    }
    free(m);
    write_file(d3, "tokenizer.model", "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 11);
    expect_fail(d3, PK_ERR_FORMAT, "tokenizer.model", "malformed");
    /* a valid protobuf of a unigram model */
    const uint8_t uni[] = {0x0a, 0x08, 0x0a, 0x01, 'a', 0x15, 0, 0, 0, 0, 0x12, 0x02, 0x18, 0x01};
    write_file(d3, "tokenizer.model", uni, sizeof uni);
    expect_fail(d3, PK_ERR_UNSUPPORTED, "tokenizer.model", "only BPE");
    remove_tree(d3);

    /* bad config next to a good tokenizer */
    char d4[] = "/tmp/pk_tok_err4_XXXXXX";
    make_dir(d4);
    link_into(d4, TD "/models/stories260k/tokenizer.model", "tokenizer.model");
    write_file(d4, "tokenizer_config.json", "{\"add_bos_token\": tru", 21);
    expect_fail(d4, PK_ERR_FORMAT, "tokenizer_config.json", "malformed");
    remove_tree(d4);
}

/* Loads a fuzz seed (mode byte, then the file) from tests/corpus/tokenizer into a temp dir. */
static pk_tokenizer *load_seed(const char *seed, const char *file, char *dir)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/corpus/tokenizer/%s", PK_SOURCE_DIR, seed);
    size_t n = 0;
    char *d = slurp(path, &n);
    PK_CHECK(d != NULL && n > 1);
    if (!d)
        return NULL;
    make_dir(dir);
    const char *nul = memchr(d + 1, 0, n - 1);
    if (nul && !strcmp(file, "vocab.json")) {
        write_file(dir, "vocab.json", d + 1, (size_t)(nul - d - 1));
        write_file(dir, "merges.txt", nul + 1, n - (size_t)(nul - d) - 1);
    } else {
        write_file(dir, file, d + 1, n - 1);
    }
    free(d);
    return load_ok(dir);
}

static void expect_ids(const pk_tokenizer *t, const char *text, int add, const int32_t *want,
                       size_t wn, const char *dec_want)
{
    int32_t *ids = NULL;
    size_t n = 0;
    PK_CHECK_EQ(pk_tokenizer_encode(t, text, strlen(text), add, &ids, &n), PK_OK);
    int same = n == wn;
    for (size_t i = 0; same && i < n; i++)
        same = ids[i] == want[i];
    PK_CHECK(same);
    if (!same) {
        fprintf(stderr, "  '%s' got:", text);
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, "\n");
    }
    if (dec_want)
        expect_decode(t, ids, n, 1, dec_want);
    free(ids);
}

/* A seed tokenizer must encode text (add: with specials) to ids (n of them) and decode them back
 * to dec (NULL: decode not checked). */
typedef struct seed_expect {
    const char *text;
    int add;
    int32_t ids[4];
    size_t n;
    const char *dec;
} seed_expect;

/* A fuzz seed (tests/corpus/tokenizer/<seed>) loaded as file, and what it must do: up to 4
 * expectations, ended by a NULL text. */
typedef struct seed_case {
    const char *seed, *file;
    seed_expect e[4];
    int unk_is_0; /* also check that the unknown-token id is 0 */
} seed_case;

/* Hand-built files covering the SentencePiece-family tokenizer.json (Prepend/Replace
 * normalizers, byte fallback, fuse_unk, Strip decoder), Metaspace, ignore_merges, templates and
 * a hand-written tokenizer.model with unused pieces. */
static const seed_case seed_cases[] = {
    {"json_sentencepiece.bin",
     "tokenizer.json",
     {{"ab a", 0, {8, 7, 8}, 3, "ab a"},
      {"A\xc3\xa9", 0, {5, 3, 0}, 3, NULL},      /* A: byte fallback, é: no 0xA9 */
      {"\xc3\xa9\xc3\xa9", 0, {5, 0}, 2, NULL}}, /* fuse_unk */
     1},
    {"json_metaspace.bin", "tokenizer.json", {{"a a", 0, {3, 3}, 2, "a a"}}, 0},
    {"json_bytelevel.bin",
     "tokenizer.json",
     {{"Hello", 0, {8}, 1, "Hello"},                       /* ignore_merges: the whole word */
      {"Hello<|end|> w", 1, {9, 8, 9, 11}, 4, "Hello w"}}, /* template + added */
     0},
    {"sp_model.bin",
     "tokenizer.model",
     {{"ab", 0, {8}, 1, "ab"},
      {"  ab   ab ", 1, {1, 8, 8}, 3, "ab ab"},
      {"c", 0, {9, 0}, 2, NULL},                             /* unused piece -> unknown */
      {"\xc3\xa9\x41", 0, {9, 4, 5, 3}, 4, "\xc3\xa9\x41"}}, /* \x41: "A" after a hex escape */
     0},
    {"vocab_merges.bin", "vocab.json", {{"ab ab", 0, {2, 4}, 2, "ab ab"}}, 0},
};

static void test_seeds(void)
{
    for (size_t i = 0; i < sizeof seed_cases / sizeof seed_cases[0]; i++) {
        const seed_case *c = &seed_cases[i];
        char dir[] = "/tmp/pk_tok_seed_XXXXXX";
        pk_tokenizer *t = load_seed(c->seed, c->file, dir);
        for (size_t k = 0; t && k < 4 && c->e[k].text; k++) {
            const seed_expect *e = &c->e[k];
            expect_ids(t, e->text, e->add, e->ids, e->n, e->dec);
        }
        if (t && c->unk_is_0)
            PK_CHECK_EQ(pk_tokenizer_unk(t), 0);
        pk_tokenizer_free(t);
        remove_tree(dir);
    }
}

int main(void)
{
    golden(TD "/tokenizers/gpt2", TD "/tokenizers/gpt2/golden.jsonl", 0);
    test_gpt2_pair();
    golden(TD "/tokenizers/llama3", TD "/tokenizers/llama3/golden.jsonl", 0);
    golden(TD "/models/stories260k", TD "/models/stories260k/reference/tokenizer_golden.jsonl", 1);
    test_greedy();
    test_specials();
    test_stream_holdback();
    test_errors();
    test_seeds();
    return PK_TEST_DONE();
}
