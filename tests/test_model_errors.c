/* test_model_errors.c: malformed model directories, generated here in a temp dir. Each must fail
 * with one clear message naming the file and the tensor/key, never crash (run under ASan in CI).
 * Also: a sharded checkpoint (model.safetensors.index.json) loads and equals the single file, and
 * a file whose header length is not a multiple of 8 (every tensor misaligned) loads and equals
 * the aligned one (the loader copies misaligned tensors; found by fuzz_model under UBSan). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pk_model.h"
#include "pk_test.h"
#include "test_util.h"

static char tmp[256];

static const char llama_cfg[] =
    "{\"model_type\": \"llama\", \"vocab_size\": 100, \"hidden_size\": 16, "
    "\"intermediate_size\": 24, \"num_hidden_layers\": 2, \"num_attention_heads\": 2, "
    "\"num_key_value_heads\": 1, \"max_position_embeddings\": 32, \"rms_norm_eps\": 1e-5, "
    "\"tie_word_embeddings\": true, \"bos_token_id\": 1, \"eos_token_id\": 2}";

static void write_file(const char *dir, const char *name, const void *data, size_t n)
{
    PK_CHECK(write_at(dir, name, data, n) == 0);
}

static void fresh_dir(const char *name, char *out, size_t n)
{
    snprintf(out, n, "%s/%s", tmp, name);
    PK_CHECK(mkdir(out, 0755) == 0);
}

/* A safetensors file from a raw header JSON and a zero data area of data_len bytes. */
static void write_st(const char *dir, const char *name, const char *header, size_t data_len)
{
    size_t hl = strlen(header), tot = 8 + hl + data_len;
    unsigned char *b = calloc(1, tot);
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, header, hl);
    write_file(dir, name, b, tot);
    free(b);
}

/* Loading dir must fail with status want and a message containing all of needles. */
static void expect_fail(const char *dir, pk_status want, const char *n1, const char *n2)
{
    pk_model *m = NULL;
    char err[1024] = "";
    pk_status st = pk_model_load(dir, pk_model_default_params(), &m, err, sizeof err);
    fprintf(stderr, "  %s -> %s: %s\n", strrchr(dir, '/') + 1, pk_status_str(st), err);
    PK_CHECK(st == want);
    PK_CHECK(m == NULL);
    PK_CHECK(n1 == NULL || strstr(err, n1) != NULL);
    PK_CHECK(n2 == NULL || strstr(err, n2) != NULL);
    pk_model_free(m);
}

/* A valid base model to corrupt. */
static void make_base(char *dir, size_t n)
{
    char err[512] = "";
    fresh_dir("base", dir, n);
    PK_CHECK(pk_model_make(llama_cfg, strlen(llama_cfg), dir, PK_DTYPE_F32, 7, err, sizeof err) ==
             PK_OK);
}

static void copy_with(const char *base, const char *name, const void *st, size_t stn,
                      const char *cfg, char *dir, size_t n)
{
    size_t cl = 0;
    char *c = cfg ? NULL : slurp_at(base, "config.json", &cl);
    fresh_dir(name, dir, n);
    if (cfg)
        write_file(dir, "config.json", cfg, strlen(cfg));
    else
        write_file(dir, "config.json", c, cl);
    if (st)
        write_file(dir, "model.safetensors", st, stn);
    free(c);
}

/* A model.safetensors written from a raw header (and a zero data area) next to the base
 * config.json: each must fail with PK_ERR_FORMAT and a message naming n1 and n2. */
typedef struct header_case {
    const char *dir, *header;
    size_t data_len; /* bytes after the header */
    const char *n1, *n2;
} header_case;

static const header_case header_cases[] = {
    {"overlap",
     "{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}, "
     "\"b\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [8, 24]}}",
     32, "model.safetensors", "overlap"},
    {"out_of_range", "{\"w\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [16, 32]}}",
     20, "model.safetensors", "tensor w: data_offsets"},
    /* size disagreeing with dtype x shape */
    {"bad_size", "{\"w\": {\"dtype\": \"F16\", \"shape\": [4], \"data_offsets\": [0, 16]}}", 16,
     "model.safetensors", "tensor w"},
    {"unknown_dtype",
     "{\"model.norm.weight\": {\"dtype\": \"F12\", \"shape\": [16], "
     "\"data_offsets\": [0, 32]}}",
     32, "model.norm.weight", "unknown dtype"},
    {"bad_header_json", "{\"w\": {\"dtype\": ", 8, "model.safetensors", "JSON"},
    /* a valid file without model.norm.weight and the layers */
    {"missing_tensor",
     "{\"model.embed_tokens.weight\": {\"dtype\": \"F32\", \"shape\": [100, 16], "
     "\"data_offsets\": [0, 6400]}}",
     6400, "missing tensor model.layers.0.input_layernorm.weight", NULL},
};

/* The base weights next to a config.json text: each must fail with status want, naming n1, n2. */
typedef struct config_case {
    const char *dir, *config;
    pk_status want;
    const char *n1, *n2;
} config_case;

static const config_case config_cases[] = {
    {"unknown_type", "{\"model_type\": \"mamba\", \"vocab_size\": 10}", PK_ERR_UNSUPPORTED,
     "config.json", "model_type \"mamba\""},
    {"bad_config_json", "{\"model_type\": \"llama\",", PK_ERR_FORMAT, "config.json",
     "invalid JSON"},
    {"missing_key", "{\"model_type\": \"llama\", \"vocab_size\": 100}", PK_ERR_FORMAT,
     "config.json", "\"hidden_size\""},
};

/* The base safetensors file cut short, or with a header length past the end of the file. */
static void check_truncated(const char *base, const unsigned char *st, size_t sl)
{
    char d[512];
    /* header fine, data area short */
    copy_with(base, "truncated", st, sl - 100, NULL, d, sizeof d);
    expect_fail(d, PK_ERR_FORMAT, "model.safetensors", "tensor ");
    /* below the 8-byte length */
    copy_with(base, "tiny_file", st, 5, NULL, d, sizeof d);
    expect_fail(d, PK_ERR_FORMAT, "model.safetensors", "truncated");
    unsigned char *b = malloc(sl);
    memcpy(b, st, sl);
    b[5] = 0x7f;
    copy_with(base, "hdr_past_eof", b, sl, NULL, d, sizeof d);
    expect_fail(d, PK_ERR_FORMAT, "model.safetensors", "header length");
    free(b);
}

/* A tensor shape disagreeing with config.json (intermediate_size 28 instead of 24). */
static void check_shape_vs_config(const char *base, const unsigned char *st, size_t sl)
{
    char cfg[1024], d[512];
    snprintf(cfg, sizeof cfg, "%s", llama_cfg);
    char *p = strstr(cfg, "\"intermediate_size\": 24");
    p[strlen("\"intermediate_size\": ") + 1] = '8';
    copy_with(base, "shape_vs_config", st, sl, cfg, d, sizeof d);
    expect_fail(d, PK_ERR_FORMAT, "model.safetensors",
                "gate_proj.weight has shape [24, 16] but config.json implies [28, 16]");
}

/* No config.json; only a pytorch_model.bin. */
static void check_missing_files(const char *base, const unsigned char *st, size_t sl)
{
    char d[512];
    fresh_dir("no_config", d, sizeof d);
    write_file(d, "model.safetensors", st, sl);
    expect_fail(d, PK_ERR_IO, "config.json", NULL);
    copy_with(base, "pytorch_only", NULL, 0, NULL, d, sizeof d);
    write_file(d, "pytorch_model.bin", "PK\003\004", 4);
    expect_fail(d, PK_ERR_UNSUPPORTED, "pytorch_model.bin", "safetensors");
}

static void run_cases(void)
{
    char base[512], d[512];
    make_base(base, sizeof base);
    size_t sl = 0;
    unsigned char *st = (unsigned char *)slurp_at(base, "model.safetensors", &sl);
    PK_CHECK(st != NULL && sl > 1000);
    if (!st)
        return;
    pk_model *m = NULL;
    char err[256] = "";
    PK_CHECK(pk_model_load(base, pk_model_default_params(), &m, err, sizeof err) == PK_OK);
    pk_model_free(m);
    check_truncated(base, st, sl);
    for (size_t i = 0; i < sizeof header_cases / sizeof header_cases[0]; i++) {
        const header_case *c = &header_cases[i];
        copy_with(base, c->dir, NULL, 0, NULL, d, sizeof d);
        write_st(d, "model.safetensors", c->header, c->data_len);
        expect_fail(d, PK_ERR_FORMAT, c->n1, c->n2);
    }
    check_shape_vs_config(base, st, sl);
    for (size_t i = 0; i < sizeof config_cases / sizeof config_cases[0]; i++) {
        const config_case *c = &config_cases[i];
        copy_with(base, c->dir, st, sl, c->config, d, sizeof d);
        expect_fail(d, c->want, c->n1, c->n2);
    }
    check_missing_files(base, st, sl);
    free(st);
}

static void zero_fill(void *user, size_t i, size_t start, size_t n, float *buf)
{
    (void)user;
    (void)i;
    (void)start;
    memset(buf, 0, n * sizeof *buf);
}

/* Copies the base model's tensors 0..k-1 into shard 1 and the rest into shard 2. */
typedef struct shard_ctx {
    pk_model *m;
    size_t first;
} shard_ctx;

static void shard_fill(void *user, size_t i, size_t start, size_t n, float *buf)
{
    shard_ctx *c = user;
    pk_tensor_info ti;
    if (pk_model_tensor(c->m, c->first + i, &ti) != PK_OK)
        return;
    memcpy(buf, (const float *)ti.data + start, n * sizeof *buf);
}

/* The logits (5 tokens x vocabulary 100) of a fixed batch of 5 tokens. */
static pk_status fixed_logits(pk_model *m, float *out)
{
    int32_t ids[5] = {1, 5, 9, 44, 99}, len = 5;
    pk_batch bt = {1, 5, ids, &len, NULL};
    return pk_model_logits(m, &bt, NULL, out);
}

/* Two loads of the same weights (vocabulary 100) give bit-identical logits. */
static void expect_same_logits(pk_model *a, pk_model *b)
{
    float *l1 = malloc(5 * 100 * 4), *l2 = malloc(5 * 100 * 4);
    PK_CHECK(l1 != NULL && l2 != NULL);
    if (l1 && l2) {
        PK_CHECK(fixed_logits(a, l1) == PK_OK);
        PK_CHECK(fixed_logits(b, l2) == PK_OK);
        PK_CHECK(memcmp(l1, l2, 5 * 100 * 4) == 0);
    }
    free(l1);
    free(l2);
}

/* Writing into every tensor changes the logits; pk_model_restore_base brings them back, bit for
 * bit (the sync client resets to the base model with it each round). */
static void expect_restore_base(pk_model *m)
{
    float *l0 = malloc(5 * 100 * 4), *l1 = malloc(5 * 100 * 4);
    PK_CHECK(l0 != NULL && l1 != NULL);
    if (l0 && l1) {
        PK_CHECK(fixed_logits(m, l0) == PK_OK);
        for (size_t i = 0; i < pk_model_n_tensors(m); i++) {
            pk_tensor_info ti;
            PK_CHECK(pk_model_tensor(m, i, &ti) == PK_OK);
            float *w = ti.data; /* f32 model */
            for (size_t j = 0; j < ti.numel; j++)
                w[j] = w[j] * 0.5f + 0.25f;
        }
        PK_CHECK(fixed_logits(m, l1) == PK_OK);
        PK_CHECK(memcmp(l0, l1, 5 * 100 * 4) != 0);
        PK_CHECK(pk_model_restore_base(m) == PK_OK);
        PK_CHECK(fixed_logits(m, l1) == PK_OK);
        PK_CHECK(memcmp(l0, l1, 5 * 100 * 4) == 0);
    }
    free(l0);
    free(l1);
}

static void check_sharded(void)
{
    char base[512], d[512], err[512] = "", p[700];
    snprintf(base, sizeof base, "%s/base", tmp);
    pk_model *m = NULL, *m2 = NULL;
    PK_CHECK(pk_model_load(base, pk_model_default_params(), &m, err, sizeof err) == PK_OK);
    if (!m)
        return;
    size_t nt = pk_model_n_tensors(m), half = nt / 2;
    pk_st_entry *es = calloc(nt, sizeof *es);
    char idx[8192];
    size_t il = (size_t)snprintf(idx, sizeof idx, "{\"metadata\": {}, \"weight_map\": {");
    for (size_t i = 0; i < nt; i++) {
        pk_tensor_info ti;
        PK_CHECK(pk_model_tensor(m, i, &ti) == PK_OK);
        es[i].name = ti.name;
        es[i].dtype = PK_DTYPE_F32;
        es[i].ndim = ti.ndim;
        memcpy(es[i].shape, ti.shape, sizeof ti.shape);
        il += (size_t)snprintf(idx + il, sizeof idx - il,
                               "%s\"%s\": \"model-0000%d-of-00002.safetensors\"", i ? ", " : "",
                               ti.name, i < half ? 1 : 2);
    }
    snprintf(idx + il, sizeof idx - il, "}}");
    size_t cl = 0;
    char *cfg = slurp_at(base, "config.json", &cl);
    fresh_dir("sharded", d, sizeof d);
    write_file(d, "config.json", cfg, cl);
    write_file(d, "model.safetensors.index.json", idx, strlen(idx));
    shard_ctx c1 = {m, 0}, c2 = {m, half};
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", d);
    PK_CHECK(pk_safetensors_write(p, es, half, shard_fill, &c1, err, sizeof err) == PK_OK);
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", d);
    PK_CHECK(pk_safetensors_write(p, es + half, nt - half, shard_fill, &c2, err, sizeof err) ==
             PK_OK);
    PK_CHECK(pk_model_load(d, pk_model_default_params(), &m2, err, sizeof err) == PK_OK);
    if (m2)
        expect_same_logits(m, m2);
    /* a shard listed in the index but missing on disk */
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", d);
    PK_CHECK(unlink(p) == 0);
    expect_fail(d, PK_ERR_IO, "model-00002-of-00002.safetensors", NULL);
    /* zero-filled writer output is a loadable model of the same shape */
    fresh_dir("zeros", d, sizeof d);
    write_file(d, "config.json", cfg, cl);
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    PK_CHECK(pk_safetensors_write(p, es, nt, zero_fill, NULL, err, sizeof err) == PK_OK);
    pk_model *m3 = NULL;
    PK_CHECK(pk_model_load(d, pk_model_default_params(), &m3, err, sizeof err) == PK_OK);
    pk_model_free(m3);
    free(cfg);
    free(es);
    pk_model_free(m);
    pk_model_free(m2);
}

static void check_misaligned(void)
{
    char base[512], d[512], err[512] = "";
    snprintf(base, sizeof base, "%s/base", tmp);
    size_t n = 0;
    unsigned char *st = (unsigned char *)slurp_at(base, "model.safetensors", &n);
    PK_CHECK(st != NULL && n > 8);
    if (!st)
        return;
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++)
        hl |= (uint64_t)st[i] << (8 * i);
    /* one more space after the header JSON: the data area starts 1 byte later */
    unsigned char *mis = malloc(n + 1);
    memcpy(mis, st, 8 + hl);
    mis[8 + hl] = ' ';
    memcpy(mis + 9 + hl, st + 8 + hl, n - 8 - hl);
    for (int i = 0; i < 8; i++)
        mis[i] = (unsigned char)((hl + 1) >> (8 * i));
    copy_with(base, "misaligned", mis, n + 1, NULL, d, sizeof d);
    pk_model *a = NULL, *b = NULL;
    PK_CHECK(pk_model_load(base, pk_model_default_params(), &a, err, sizeof err) == PK_OK);
    PK_CHECK(pk_model_load(d, pk_model_default_params(), &b, err, sizeof err) == PK_OK);
    if (a && b)
        expect_same_logits(a, b);
    if (a && b) {
        expect_restore_base(a); /* weights in the mapped file */
        expect_restore_base(b); /* aligned copies of misaligned tensors */
    }
    pk_model_free(a);
    pk_model_free(b);
    free(mis);
    free(st);
}

int main(void)
{
    PK_CHECK(make_tmpdir(tmp, sizeof tmp, "model_errors"));
    run_cases();
    check_sharded();
    check_misaligned();
    PK_CHECK(remove_tree(tmp) == 0);
    return PK_TEST_DONE();
}
