/* test_gguf.c: the block formats and the GGUF reader/writer (DESIGN 5). Known blocks of every
 * type decode to hand-computed values; quantize -> dequantize stays within each type's bound;
 * a row that does not divide into blocks is refused; stories260k written as GGUF reloads with
 * bit-identical logits (F32) or close ones (Q8_0, Q4_0); a llama.cpp-style file (its names, its
 * interleaved q/k rows, config only in llama.* keys) built here gives the safetensors logits;
 * truncated and lying files fail with a message naming the key or tensor. With an argument,
 * writes the fuzz seed corpus (tiny GGUF files) into that directory. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model_test_util.h"
#include "pk_mezo.h"
#include "pk_model.h"
#include "pk_test.h"
#include "pk_tokenizer.h"
#include "test_util.h"

/* ---- a tiny GGUF writer of the test's own, for hand-made and lying files ---- */

typedef bytebuf gb;

static void gb_put(gb *b, const void *d, size_t n)
{
    if (bytebuf_put(b, d, n) != 0)
        abort();
}

static void gb_le(gb *b, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) {
        unsigned char c = (unsigned char)(v >> (8 * i));
        gb_put(b, &c, 1);
    }
}

static void gb_str(gb *b, const char *s)
{
    gb_le(b, strlen(s), 8);
    gb_put(b, s, strlen(s));
}

static void kv_u32(gb *b, const char *k, uint32_t v)
{
    gb_str(b, k);
    gb_le(b, 4, 4);
    gb_le(b, v, 4);
}

static void kv_f32(gb *b, const char *k, float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    gb_str(b, k);
    gb_le(b, 6, 4);
    gb_le(b, u, 4);
}

static void kv_s(gb *b, const char *k, const char *v)
{
    gb_str(b, k);
    gb_le(b, 8, 4);
    gb_str(b, v);
}

static void gb_pad(gb *b)
{
    while (b->n % 32)
        gb_le(b, 0, 1);
}

/* ---- block formats ---- */

static void test_known_blocks(void)
{
    unsigned char b[210];
    float y[256];
    /* Q8_0: d = 0.5 (f16 0x3800), q[i] = i - 16 */
    b[0] = 0x00;
    b[1] = 0x38;
    for (int i = 0; i < 32; i++)
        b[2 + i] = (unsigned char)(signed char)(i - 16);
    pk_widen(PK_DTYPE_Q8_0, b, 32, y);
    PK_CHECK_NEAR(y[0], -8.0, 0);
    PK_CHECK_NEAR(y[31], 7.5, 0);
    /* Q4_0: d = 0.25 (0x3400); byte i = i | (15 - i) << 4 */
    b[0] = 0x00;
    b[1] = 0x34;
    for (int i = 0; i < 16; i++)
        b[2 + i] = (unsigned char)(i | ((15 - i) << 4));
    pk_widen(PK_DTYPE_Q4_0, b, 32, y);
    PK_CHECK_NEAR(y[0], -2.0, 0);  /* (0 - 8) * 0.25 */
    PK_CHECK_NEAR(y[15], 1.75, 0); /* (15 - 8) * 0.25 */
    PK_CHECK_NEAR(y[16], 1.75, 0); /* high nibble of byte 0: 15 */
    PK_CHECK_NEAR(y[31], -2.0, 0); /* high nibble of byte 15: 0 */
    /* Q4_K: d = 1, dmin = 0.5; scales 1,2,3,4,5,6,7,63 and mins 0,1,2,3,4,5,6,40 packed by hand */
    static const unsigned char k4[16] = {0x00, 0x3c, 0x00, 0x38, 1,    2,    3,    0xc4,
                                         0,    1,    2,    0x83, 0x45, 0x56, 0x67, 0x8f};
    static const int sc[8] = {1, 2, 3, 4, 5, 6, 7, 63}, mn[8] = {0, 1, 2, 3, 4, 5, 6, 40};
    memcpy(b, k4, 16);
    for (int l = 0; l < 128; l++)
        b[16 + l] = (unsigned char)((l & 15) | (((l + 1) & 15) << 4));
    pk_widen(PK_DTYPE_Q4_K, b, 256, y);
    for (int j = 0; j < 8; j++) {
        for (int l = 0; l < 32; l += 7) {
            int byte = 32 * (j / 2) + l, q = j % 2 ? (byte + 1) & 15 : byte & 15;
            PK_CHECK_NEAR(y[32 * j + l], sc[j] * q - 0.5 * mn[j], 0);
        }
    }
    /* Q5_K: d = 0.25, dmin = 1; every scale 2, every min 1; qh[3] bits 0 and 2; qs[3] = 7 */
    memset(b, 0, sizeof b);
    b[1] = 0x34;
    b[3] = 0x3c;
    for (int i = 0; i < 4; i++) {
        b[4 + i] = 2;
        b[8 + i] = 1;
        b[12 + i] = 0x12;
    }
    b[16 + 3] = 0x05;
    b[48 + 3] = 0x07;
    pk_widen(PK_DTYPE_Q5_K, b, 256, y);
    PK_CHECK_NEAR(y[3], 0.5 * 23 - 1, 0);  /* 7 + 16 */
    PK_CHECK_NEAR(y[35], -1.0, 0);         /* high nibble 0, bit 1 clear */
    PK_CHECK_NEAR(y[67], 0.5 * 16 - 1, 0); /* bit 2: sub-block 2 */
    PK_CHECK_NEAR(y[4], -1.0, 0);
    /* Q6_K: d = 0.5 (at byte 208), scales[i] = i - 8; ql[5] = 0x3a, qh[5] = 0xe4 */
    memset(b, 0, sizeof b);
    for (int i = 0; i < 16; i++)
        b[192 + i] = (unsigned char)(signed char)(i - 8);
    b[208] = 0x00;
    b[209] = 0x38;
    b[5] = 0x3a;
    b[128 + 5] = 0xe4;
    pk_widen(PK_DTYPE_Q6_K, b, 256, y);
    PK_CHECK_NEAR(y[5], 0.5 * -8 * (10 - 32), 0);   /* low nibble a, bits 0-1 = 0 */
    PK_CHECK_NEAR(y[37], 0.5 * -6 * (16 - 32), 0);  /* ql[37] = 0, bits 2-3 = 1 */
    PK_CHECK_NEAR(y[69], 0.5 * -4 * (35 - 32), 0);  /* high nibble 3, bits 4-5 = 2 */
    PK_CHECK_NEAR(y[101], 0.5 * -2 * (48 - 32), 0); /* bits 6-7 = 3 */
    PK_CHECK_NEAR(y[128], 0.0, 0);                  /* scale 8 - 8 = 0 */
    PK_CHECK_NEAR(y[146], 0.5 * 1 * -32, 0);        /* scale 9 - 8 */
}

static uint64_t rs = 0x9e3779b97f4a7c15ull;

static float gauss(void)
{
    double s = 0;
    for (int i = 0; i < 4; i++) {
        rs ^= rs << 13;
        rs ^= rs >> 7;
        rs ^= rs << 17;
        s += (double)(rs >> 11) / 9007199254740992.0 - 0.5;
    }
    return (float)s;
}

/* Quantize -> dequantize of random rows: every element within bound(block max |x|, block range)
 * of its value. */
static void roundtrip_bound(pk_dtype dt, double frac_amax, double frac_range)
{
    enum { N = 4096 };
    static float x[N], y[N];
    static unsigned char q[N * 2];
    for (int i = 0; i < N; i++)
        x[i] = gauss() * (i < N / 2 ? 1.0f : 0.01f) + (i % 512 < 256 ? 0.0f : 0.2f);
    x[7] = 0.0f;
    pk_narrow(dt, x, N, q);
    pk_widen(dt, q, N, y);
    size_t B = pk_dtype_block(dt);
    double worst = 0;
    for (size_t b0 = 0; b0 < N; b0 += B) {
        double amax = 0, lo = 0, hi = 0;
        for (size_t i = b0; i < b0 + B; i++) {
            amax = dmax(amax, fabs((double)x[i]));
            lo = dmin(lo, (double)x[i]);
            hi = dmax(hi, (double)x[i]);
        }
        double bound = frac_amax * amax + frac_range * (hi - lo) + 1e-7;
        for (size_t i = b0; i < b0 + B; i++)
            worst = dmax(worst, fabs((double)x[i] - (double)y[i]) / bound);
    }
    fprintf(stderr, "%s: worst error / bound = %.3f\n", pk_dtype_name(dt), worst);
    PK_CHECK(worst <= 1.0);
    PK_CHECK(worst > 0.05); /* the bound is not vacuous */
    memset(x, 0, sizeof x); /* all-zero blocks stay zero (no 0/0) */
    pk_narrow(dt, x, N, q);
    pk_widen(dt, q, N, y);
    PK_CHECK_NEAR(y[0], 0.0, 0);
    PK_CHECK_NEAR(y[N - 1], 0.0, 0);
}

static void test_roundtrip_bounds(void)
{
    /* Q8_0: half a step of amax/127, plus the f16 rounding of the scale */
    roundtrip_bound(PK_DTYPE_Q8_0, 0.5 / 127 + 1e-3, 0);
    /* Q4_0: the far side of the largest value clips at 7 steps of amax/8 */
    roundtrip_bound(PK_DTYPE_Q4_0, 1.0 / 8 + 1e-3, 0);
    /* Q4_K: half a sub-block step, a step being at most about range/15 */
    roundtrip_bound(PK_DTYPE_Q4_K, 0, 1.0 / 25);
    /* Q5_K: the same at 31 levels (a step at most about range/31) */
    roundtrip_bound(PK_DTYPE_Q5_K, 0, 1.0 / 50);
    /* Q6_K: half a step of amax/31 (16 values per scale), the scales rounded up */
    roundtrip_bound(PK_DTYPE_Q6_K, 0.5 / 31 + 2e-3, 0);
    PK_CHECK_EQ(pk_dtype_row_bytes(PK_DTYPE_Q4_K, 512), 288);
    PK_CHECK_EQ(pk_dtype_row_bytes(PK_DTYPE_Q8_0, 64), 68);
    PK_CHECK_EQ(pk_dtype_block(PK_DTYPE_Q6_K), 256);
    pk_dtype d;
    PK_CHECK(pk_dtype_parse("q4_k", &d) == 0 && d == PK_DTYPE_Q4_K);
    PK_CHECK(pk_dtype_parse("Q5_K", &d) == 0 && d == PK_DTYPE_Q5_K);
}

/* ---- models ---- */

static char tmp[64];

enum { TT = 24 };

static float *logits(pk_model *m)
{
    static const int32_t ids[TT] = {1,  403, 407, 261, 378, 434, 288, 410, 259, 261, 471, 366,
                                    11, 263, 346, 292, 267, 425, 265, 257, 260, 13,  400, 300};
    int32_t len = TT;
    pk_batch b = {.B = 1, .T = TT, .ids = ids, .lengths = &len, .token_type = NULL};
    float *out = malloc((size_t)TT * (size_t)pk_model_vocab_size(m) * sizeof *out);
    PK_CHECK(out && pk_model_logits(m, &b, NULL, out) == PK_OK);
    return out;
}

/* max |a - b| over n */
static double max_diff(const float *a, const float *b, size_t n, double *mean)
{
    double mx = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        mx = dmax(mx, d);
        s += d;
    }
    *mean = s / (double)n;
    return mx;
}

/* types for every tensor of m: want for matrices whose rows divide into its blocks. */
static pk_dtype *plan(const pk_model *m, pk_dtype want, size_t *n_q)
{
    size_t nt = pk_model_n_tensors(m);
    pk_dtype *t = calloc(nt, sizeof *t);
    *n_q = 0;
    for (size_t i = 0; t && i < nt; i++) {
        pk_tensor_info ti;
        PK_CHECK(pk_model_tensor(m, i, &ti) == PK_OK);
        int ok = ti.ndim == 2 && (size_t)ti.shape[1] % pk_dtype_block(want) == 0;
        t[i] = ok ? want : ti.dtype;
        *n_q += (size_t)ok;
    }
    return t;
}

/* The quantized model's logits are those of an f32 model holding its widened weights, bit for
 * bit: the block path computes exactly what the weights say (no quantized tensor of
 * stories260k is wide enough for linear_kblocks, whose K blocks would round differently). */
static void same_as_widened(const pk_model *g, const float *out, size_t n)
{
    size_t nt = pk_model_n_tensors(g);
    pk_dtype *f = calloc(nt, sizeof *f);
    char dir[128], err[512] = "";
    for (size_t i = 0; f && i < nt; i++)
        f[i] = PK_DTYPE_F32;
    snprintf(dir, sizeof dir, "%s/widened", tmp);
    PK_CHECK(f && pk_model_save_gguf(g, dir, f, err, sizeof err) == PK_OK);
    pk_model *w = load_model_checked(dir);
    float *wo = w ? logits(w) : NULL;
    double mean;
    PK_CHECK(wo && max_diff(out, wo, n, &mean) == 0.0);
    free(wo);
    free(f);
    pk_model_free(w);
}

/* The weights hash (what a run and a federated task name) covers quantized blocks: one changed
 * byte of a block-quantized tensor changes it. */
static void hash_covers_blocks(pk_model *g)
{
    char h0[65], h1[65];
    PK_CHECK_EQ(pk_weights_hash(g, h0), PK_OK);
    for (size_t i = 0; i < pk_model_n_tensors(g); i++) {
        pk_tensor_info ti;
        PK_CHECK_EQ(pk_model_tensor(g, i, &ti), PK_OK);
        if (!pk_dtype_is_quant(ti.dtype))
            continue;
        unsigned char *b = (unsigned char *)ti.data + pk_dtype_row_bytes(ti.dtype, ti.numel) - 1;
        *b ^= 1;
        PK_CHECK_EQ(pk_weights_hash(g, h1), PK_OK);
        *b ^= 1;
        PK_CHECK(strcmp(h0, h1) != 0);
        return;
    }
    PK_CHECK(0); /* a quantized model without a quantized tensor */
}

static void test_stories_roundtrip(void)
{
    pk_model *m = load_model_checked(PK_STORIES_DIR);
    if (!m)
        return;
    size_t n = (size_t)TT * (size_t)pk_model_vocab_size(m), nq = 0;
    float *ref = logits(m);
    char dir[128], err[512] = "", file[256];
    static const pk_dtype types[] = {PK_DTYPE_F32, PK_DTYPE_Q8_0, PK_DTYPE_Q4_0};
    /* measured: Q8_0 max 0.242 (mean 0.041), Q4_0 max 4.45 (mean 0.84) on logits of size ~10 */
    static const double tol[] = {0, 0.4, 6.0};
    for (size_t k = 0; k < 3; k++) {
        pk_dtype *t = plan(m, types[k], &nq);
        snprintf(dir, sizeof dir, "%s/%s", tmp, pk_dtype_name(types[k]));
        PK_CHECK_EQ(pk_model_save_gguf(m, dir, t, err, sizeof err), PK_OK);
        free(t);
        snprintf(file, sizeof file, "%s/model.gguf", dir);
        pk_model *g = load_model_checked(k == 1 ? file : dir); /* a directory, or the file itself */
        if (!g)
            continue;
        PK_CHECK_EQ(pk_model_n_tensors(g), pk_model_n_tensors(m));
        PK_CHECK(k == 0 || pk_model_weight_bytes(g) < pk_model_weight_bytes(m) / 2);
        float *out = logits(g);
        double mean, mx = max_diff(ref, out, n, &mean);
        fprintf(stderr, "stories260k %s (%zu matrices): max |dlogit| %.5f mean %.5f\n",
                pk_dtype_name(types[k]), nq, mx, mean);
        PK_CHECK(mx <= tol[k]);
        PK_CHECK(k == 0 || mx > 0); /* quantization changed something */
        if (k > 0) {
            same_as_widened(g, out, n);
            hash_covers_blocks(g);
        }
        /* quantized weights are frozen: making them writable (training) is refused */
        PK_CHECK_EQ(pk_model_make_writable(g, NULL), k == 0 ? PK_OK : PK_ERR_UNSUPPORTED);
        free(out);
        pk_model_free(g);
    }
    /* q8_0 on down_proj [64, 172]: 172 does not divide into blocks of 32 */
    pk_dtype *t = plan(m, PK_DTYPE_Q8_0, &nq);
    int di = pk_model_tensor_index(m, "model.layers.0.mlp.down_proj.weight");
    PK_CHECK(di >= 0 && t[di] == PK_DTYPE_F32);
    t[di] = PK_DTYPE_Q8_0;
    PK_CHECK_EQ(pk_model_save_gguf(m, tmp, t, err, sizeof err), PK_ERR_ARG);
    PK_CHECK(strstr(err, "model.layers.0.mlp.down_proj.weight") && strstr(err, "blocks"));
    free(t);
    free(ref);
    pk_model_free(m);
}

/* stories260k as llama.cpp's converter writes it: blk.* names, q/k rows interleaved per head,
 * hyperparameters in llama.* keys, no config.json. */
static const char *const names[][2] = {
    {"model.embed_tokens.weight", "token_embd.weight"},
    {"model.norm.weight", "output_norm.weight"},
    {"input_layernorm.weight", "attn_norm.weight"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
};

static void llama_cpp_name(const char *hf, char *out, size_t n)
{
    int l = -1, off = 0;
    if (sscanf(hf, "model.layers.%d.%n", &l, &off) == 1 && off > 0)
        hf += off;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(hf, names[i][0]) == 0) {
            if (l >= 0)
                snprintf(out, n, "blk.%d.%s", l, names[i][1]);
            else
                snprintf(out, n, "%s", names[i][1]);
            return;
        }
    }
    snprintf(out, n, "%s", hf);
}

static void llama_cpp_kv(gb *b)
{
    kv_s(b, "general.architecture", "llama");
    kv_u32(b, "llama.context_length", 512);
    kv_u32(b, "llama.embedding_length", 64);
    kv_u32(b, "llama.block_count", 5);
    kv_u32(b, "llama.feed_forward_length", 172);
    kv_u32(b, "llama.attention.head_count", 8);
    kv_u32(b, "llama.attention.head_count_kv", 4);
    kv_f32(b, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    kv_f32(b, "llama.rope.freq_base", 10000.0f);
    kv_u32(b, "tokenizer.ggml.bos_token_id", 1);
    kv_u32(b, "tokenizer.ggml.eos_token_id", 2);
}

/* Row r of tensor ti as stored by llama.cpp (q/k: per head, row 2i + j holds HF row j*hd/2 + i). */
static const float *src_row(const pk_tensor_info *ti, size_t r)
{
    size_t cols = ti->numel / (size_t)ti->shape[0];
    int qk = strstr(ti->name, "q_proj") || strstr(ti->name, "k_proj");
    if (qk && ti->ndim == 2) {
        size_t hd = 8, h = r / hd, i = r % hd / 2, j = r % 2;
        r = h * hd + j * hd / 2 + i;
    }
    return (const float *)ti->data + r * cols;
}

static void build_llama_cpp(const pk_model *m, gb *b)
{
    size_t nt = pk_model_n_tensors(m), off = 0;
    gb_put(b, "GGUF", 4);
    gb_le(b, 3, 4);
    gb_le(b, nt, 8);
    gb_le(b, 11, 8);
    llama_cpp_kv(b);
    for (size_t i = 0; i < nt; i++) {
        pk_tensor_info ti;
        PK_CHECK(pk_model_tensor(m, i, &ti) == PK_OK && ti.dtype == PK_DTYPE_F32);
        char name[256];
        llama_cpp_name(ti.name, name, sizeof name);
        gb_str(b, name);
        gb_le(b, (uint64_t)ti.ndim, 4);
        for (int d = ti.ndim - 1; d >= 0; d--)
            gb_le(b, (uint64_t)ti.shape[d], 8);
        gb_le(b, 0, 4);
        gb_le(b, off, 8);
        off += (ti.numel * 4 + 31) / 32 * 32;
    }
    gb_pad(b);
    for (size_t i = 0; i < nt; i++) {
        pk_tensor_info ti;
        PK_CHECK(pk_model_tensor(m, i, &ti) == PK_OK);
        size_t rows = ti.ndim == 2 ? (size_t)ti.shape[0] : 1, cols = ti.numel / rows;
        for (size_t r = 0; r < rows; r++)
            gb_put(b, src_row(&ti, r), cols * 4);
        gb_pad(b);
    }
}

static void test_llama_cpp_layout(void)
{
    pk_model *m = load_model_checked(PK_STORIES_DIR);
    if (!m)
        return;
    gb b = {0};
    build_llama_cpp(m, &b);
    char path[128];
    snprintf(path, sizeof path, "%s/llamacpp.gguf", tmp);
    PK_CHECK(write_all(path, b.p, b.n) == 0);
    pk_model *g = load_model_checked(path);
    if (g) {
        float *ref = logits(m), *out = logits(g);
        double mean, mx = max_diff(ref, out, (size_t)TT * 512, &mean);
        /* the same weights; only the norm epsilon went through f32 (1e-5 -> 9.99999975e-6) */
        fprintf(stderr, "llama.cpp layout: max |dlogit| %.2e\n", mx);
        PK_CHECK(mx < 1e-4);
        PK_CHECK_EQ(pk_model_bos_id(g), 1);
        /* its q/k rows were reordered in memory: re-reading the file would undo that */
        PK_CHECK_EQ(pk_model_make_writable(g, NULL), PK_ERR_UNSUPPORTED);
        PK_CHECK_EQ(pk_model_restore_base(g), PK_ERR_UNSUPPORTED);
        free(ref);
        free(out);
        pk_model_free(g);
    }
    free(b.p);
    pk_model_free(m);
}

/* The tokenizer through GGUF metadata: stories260k -> A (tokenizer.ggml.* from tokenizer.model)
 * -> bare A/model.gguf saved as B (entries copied, B/tokenizer.model rebuilt from A's metadata)
 * -> bare B/model.gguf saved as C; C's tokenizer gives the original's ids. */
static void test_tokenizer_metadata(void)
{
    pk_model *m = load_model_checked(PK_STORIES_DIR);
    char dirs[3][128], file[512], err[512] = "";
    for (int k = 0; m && k < 3; k++) {
        snprintf(dirs[k], sizeof dirs[k], "%s/tok%d", tmp, k);
        size_t nq;
        pk_dtype *t = plan(m, PK_DTYPE_F32, &nq);
        PK_CHECK_EQ(pk_model_save_gguf(m, dirs[k], t, err, sizeof err), PK_OK);
        free(t);
        pk_model_free(m);
        snprintf(file, sizeof file, "%s/model.gguf", dirs[k]);
        m = load_model_checked(file);
    }
    pk_model_free(m);
    pk_tokenizer *a = NULL, *b = NULL;
    PK_CHECK_EQ(pk_tokenizer_load(PK_STORIES_DIR, &a, err, sizeof err), PK_OK);
    PK_CHECK_EQ(pk_tokenizer_load(dirs[2], &b, err, sizeof err), PK_OK);
    static const char *const texts[] = {
        "Once upon a time, Pip took his red ball to the lake.",
        "  double  spaces, digits 12345, caf\xc3\xa9 and \xe4\xbd\xa0\xe5\xa5\xbd (bytes)\n", ""};
    for (size_t i = 0; a && b && i < sizeof texts / sizeof texts[0]; i++) {
        int32_t *x = NULL, *y = NULL;
        size_t nx = 0, ny = 0;
        PK_CHECK_EQ(pk_tokenizer_encode(a, texts[i], strlen(texts[i]), 1, &x, &nx), PK_OK);
        PK_CHECK_EQ(pk_tokenizer_encode(b, texts[i], strlen(texts[i]), 1, &y, &ny), PK_OK);
        PK_CHECK_EQ(nx, ny);
        PK_CHECK(nx == ny && (nx == 0 || memcmp(x, y, nx * sizeof *x) == 0));
        PK_CHECK(i == 2 || nx > 3);
        free(x);
        free(y);
    }
    PK_CHECK(b && pk_tokenizer_vocab_size(b) == 512 && pk_tokenizer_bos(b) == 1);
    pk_tokenizer_free(a);
    pk_tokenizer_free(b);
}

/* ---- bad files ---- */

/* A small valid file: one Q8_0 tensor [2, 32] "w" plus a metadata array. */
static void tiny_file(gb *b, uint32_t type, uint64_t ne0, uint64_t off, uint64_t strlen_lie)
{
    gb_put(b, "GGUF", 4);
    gb_le(b, 3, 4);
    gb_le(b, 1, 8);
    gb_le(b, 2, 8);
    gb_str(b, "general.architecture");
    gb_le(b, 8, 4);
    if (strlen_lie) {
        gb_le(b, strlen_lie, 8);
        gb_put(b, "llama", 5);
    } else {
        gb_str(b, "llama");
    }
    gb_str(b, "some.array");
    gb_le(b, 9, 4);
    gb_le(b, 5, 4); /* i32 */
    gb_le(b, 3, 8);
    for (int i = 0; i < 3; i++)
        gb_le(b, (uint64_t)i, 4);
    gb_str(b, "w");
    gb_le(b, 2, 4);
    gb_le(b, ne0, 8);
    gb_le(b, 2, 8);
    gb_le(b, type, 4);
    gb_le(b, off, 8);
    gb_pad(b);
    for (int i = 0; i < 2 * 34; i++)
        gb_le(b, (uint64_t)(i * 7), 1);
}

static void expect_bad(gb *b, const char *needle)
{
    char err[512] = "";
    pk_status st = pk_gguf_check("t.gguf", b->p, b->n, err, sizeof err);
    PK_CHECK_EQ(st, PK_ERR_FORMAT);
    if (!strstr(err, needle))
        fprintf(stderr, "expected \"%s\" in: %s\n", needle, err);
    PK_CHECK(strstr(err, needle) != NULL);
    free(b->p);
    memset(b, 0, sizeof *b);
}

static void test_bad_files(void)
{
    gb b = {0};
    char err[512];
    tiny_file(&b, 8, 32, 0, 0);
    PK_CHECK_EQ(pk_gguf_check("t.gguf", b.p, b.n, err, sizeof err), PK_OK);
    for (size_t n = 0; n < b.n; n++) { /* every truncation fails with a message */
        err[0] = 0;
        PK_CHECK_EQ(pk_gguf_check("t.gguf", b.p, n, err, sizeof err), PK_ERR_FORMAT);
        PK_CHECK(err[0] != 0);
    }
    free(b.p);
    memset(&b, 0, sizeof b);
    tiny_file(&b, 3, 32, 0, 0);
    expect_bad(&b, "tensor w: Q4_1 is not supported");
    tiny_file(&b, 99, 32, 0, 0);
    expect_bad(&b, "tensor w: type id 99");
    tiny_file(&b, 8, 48, 0, 0);
    expect_bad(&b, "tensor w: rows of 48 elements do not divide into Q8_0 blocks");
    tiny_file(&b, 8, 32, 8, 0);
    expect_bad(&b, "tensor w: data at offset 8");
    tiny_file(&b, 8, 32, 1u << 20, 0);
    expect_bad(&b, "tensor w: data at offset");
    tiny_file(&b, 8, 32, 0, 1ull << 40);
    expect_bad(&b, "general.architecture");
    tiny_file(&b, 8, 32, 0, 0);
    b.p[8] = 0xff; /* tensor count */
    expect_bad(&b, "cannot fit");
}

/* Seeds for fuzz_gguf (its first byte picks the mode): the tiny file for the parser (0) and a
 * tiny llama written by pk_model_save_gguf in Q8_0 for the loader (1). */
static void write_corpus(const char *dir)
{
    gb b = {0};
    gb_le(&b, 0, 1);
    tiny_file(&b, 8, 32, 0, 0);
    PK_CHECK(write_at(dir, "tiny.gguf", b.p, b.n) == 0);
    free(b.p);
    static const char cfg[] =
        "{\"model_type\":\"llama\",\"vocab_size\":8,\"hidden_size\":32,"
        "\"intermediate_size\":32,\"num_hidden_layers\":1,\"num_attention_heads\":2,"
        "\"num_key_value_heads\":1,\"max_position_embeddings\":16,\"tie_word_embeddings\":true}";
    char src[128], out[128], err[512] = "", path[160];
    snprintf(src, sizeof src, "%s/src", tmp);
    snprintf(out, sizeof out, "%s/q", tmp);
    PK_CHECK_EQ(pk_model_make(cfg, strlen(cfg), src, PK_DTYPE_F32, 7, err, sizeof err), PK_OK);
    pk_model *m = load_model_checked(src);
    size_t nq;
    pk_dtype *t = m ? plan(m, PK_DTYPE_Q8_0, &nq) : NULL;
    PK_CHECK(t && pk_model_save_gguf(m, out, t, err, sizeof err) == PK_OK);
    snprintf(path, sizeof path, "%s/model.gguf", out);
    size_t n = 0;
    char *f = slurp(path, &n);
    unsigned char mode = 1;
    FILE *o = NULL;
    snprintf(path, sizeof path, "%s/model.gguf", dir);
    o = f ? fopen(path, "wb") : NULL;
    PK_CHECK(o && fwrite(&mode, 1, 1, o) == 1 && fwrite(f, 1, n, o) == n);
    if (o)
        fclose(o);
    free(f);
    free(t);
    pk_model_free(m);
}

int main(int argc, char **argv)
{
    PK_CHECK(make_tmpdir(tmp, sizeof tmp, "gguf"));
    if (argc > 1) {
        write_corpus(argv[1]);
        remove_tree(tmp);
        return PK_TEST_DONE();
    }
    test_known_blocks();
    test_roundtrip_bounds();
    test_stories_roundtrip();
    test_llama_cpp_layout();
    test_tokenizer_metadata();
    test_bad_files();
    remove_tree(tmp);
    return PK_TEST_DONE();
}
