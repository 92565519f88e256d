/* test_adapters.c: 16-bit training with seeded stochastic rounding and LoRA adapters (mezo/mezo.c
 * update sweep, model/adapter.c, forward.c's adapter term) on the shipped stories260k and on a
 * generated GPT-2 (Conv1D weights): unbiased rounding against the fp32 run, a bf16 run that
 * learns at lr 1e-6, thread-count independence, adapter shapes and initialization, only the
 * adapter trained, generation through the KV cache, merging, replay and bad specs. */
#include "model_test_util.h"
#include "pk_mezo.h"
#include "pk_test.h"
#include "pk_tokenizer.h"
#include "test_util.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STORIES PK_STORIES_DIR

static char tmp[256];

static void hash(const pk_model *m, char h[65])
{
    PK_CHECK(pk_weights_hash(m, h) == PK_OK);
}

/* A bf16 copy of stories260k and an f32 copy holding exactly the bf16 values. */
static void make_copies(char *d16, char *d32, size_t n)
{
    char err[512] = "";
    snprintf(d16, n, "%s/bf16", tmp);
    snprintf(d32, n, "%s/f32-of-bf16", tmp);
    pk_model *s = load_model_or_exit(STORIES);
    PK_CHECK(pk_model_save(s, d16, PK_DTYPE_BF16, err, sizeof err) == PK_OK);
    pk_model_free(s);
    s = load_model_or_exit(d16);
    PK_CHECK(pk_model_save(s, d32, PK_DTYPE_F32, err, sizeof err) == PK_OK);
    pk_model_free(s);
}

/* sum_i da_i db_i / sum_i db_i^2: how much of b's change a made (1 = all of it, on average). */
static double regress(const pk_model *a, const pk_model *a0, const pk_model *b, const pk_model *b0)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < pk_model_n_tensors(a); i++) {
        const pk_model *ms[4] = {a, a0, b, b0};
        float *w[4];
        size_t n = 0;
        for (int k = 0; k < 4; k++) {
            pk_tensor_info t;
            PK_CHECK(pk_model_tensor(ms[k], i, &t) == PK_OK);
            n = t.numel;
            w[k] = malloc(n * 4);
            pk_widen(t.dtype, t.data, n, w[k]);
        }
        for (size_t j = 0; j < n; j++) {
            double da = (double)w[0][j] - (double)w[1][j], db = (double)w[2][j] - (double)w[3][j];
            num += da * db;
            den += db * db;
        }
        for (int k = 0; k < 4; k++)
            free(w[k]);
    }
    return num / den;
}

/* Many updates of about a tenth of a bf16 step each (round to nearest keeps nearly every weight
 * where it is): the bf16 run's weight change follows the fp32 run's from the same weights, with
 * zero-mean rounding noise. */
static void test_sr_unbiased(const char *d16, const char *d32)
{
    pk_model *b = load_model_or_exit(d16), *f = load_model_or_exit(d32),
             *b0 = load_model_or_exit(d16), *f0 = load_model_or_exit(d32);
    const int K = 200;
    for (int k = 0; k < K; k++) {
        pk_mezo_update(b, NULL, 1000 + (uint64_t)k, PK_Z_GAUSSIAN, 1e-6f, 10.0f, 0.0f);
        pk_mezo_update(f, NULL, 1000 + (uint64_t)k, PK_Z_GAUSSIAN, 1e-6f, 10.0f, 0.0f);
    }
    double s = regress(b, b0, f, f0);
    /* the same updates rounded to nearest (as the sweep did before), for contrast */
    for (size_t i = 0; i < pk_model_n_tensors(b0); i++) {
        pk_tensor_info t;
        PK_CHECK(pk_model_tensor(b0, i, &t) == PK_OK);
        float *w = malloc(t.numel * 4), *z = malloc(t.numel * 4);
        pk_widen(t.dtype, t.data, t.numel, w);
        for (int k = 0; k < K; k++) {
            pk_z_fill(1000 + (uint64_t)k, t.key, 0, t.numel, PK_Z_GAUSSIAN, z);
            for (size_t j = 0; j < t.numel; j++) {
                volatile float a = 10.0f * z[j];
                w[j] = pk_bf16_to_f32(pk_f32_to_bf16(w[j] - 1e-6f * a));
            }
        }
        pk_narrow(t.dtype, w, t.numel, t.data); /* b0 now holds the nearest-rounding run */
        free(w);
        free(z);
    }
    pk_model *b00 = load_model_or_exit(d16);
    double rne = regress(b0, b00, f, f0);
    fprintf(stderr,
            "bf16 change / f32 change after %d steps (regression): stochastic %.4f, nearest %.4f\n",
            K, s, rne);
    PK_CHECK_NEAR(s, 1.0, 0.05);
    PK_CHECK(rne < 0.5);
    pk_model_free(b00);
    pk_model_free(b);
    pk_model_free(f);
    pk_model_free(b0);
    pk_model_free(f0);
}

/* One update: every bf16 element is one of the two bf16 neighbours of the exact fp32 result;
 * the same bits at 1 and 2 threads. */
static void test_sr_neighbours_threads(const char *d16)
{
    pk_model *a = load_model_or_exit(d16), *c = load_model_or_exit(d16),
             *base = load_model_or_exit(d16);
    char ha[65], hc[65];
    pk_threads_set(1);
    pk_mezo_update(a, NULL, 9, PK_Z_GAUSSIAN, 1e-3f, -1.5f, 0.01f);
    pk_threads_set(2);
    pk_mezo_update(c, NULL, 9, PK_Z_GAUSSIAN, 1e-3f, -1.5f, 0.01f);
    hash(a, ha);
    hash(c, hc);
    PK_CHECK(!strcmp(ha, hc));
    size_t bad = 0, up = 0, down = 0;
    for (size_t i = 0; i < pk_model_n_tensors(a); i++) {
        pk_tensor_info ta, t0;
        PK_CHECK(pk_model_tensor(a, i, &ta) == PK_OK && pk_model_tensor(base, i, &t0) == PK_OK);
        PK_CHECK(ta.dtype == PK_DTYPE_BF16);
        float *z = malloc(ta.numel * 4);
        pk_z_fill(9, ta.key, 0, ta.numel, PK_Z_GAUSSIAN, z);
        const uint16_t *h0 = t0.data, *h1 = ta.data;
        float wd = ta.is_bias_or_norm ? 0.0f : 0.01f;
        for (size_t k = 0; k < ta.numel; k++) {
            float w = pk_bf16_to_f32(h0[k]);
            volatile float x = -1.5f * z[k], y = wd * w;
            volatile float t = wd != 0.0f ? x + y : x;
            float want = w - 1e-3f * t, got = pk_bf16_to_f32(h1[k]);
            /* truncation toward zero and one bf16 step further out */
            uint32_t u;
            memcpy(&u, &want, 4);
            u &= 0xffff0000u;
            float lo, hi;
            memcpy(&lo, &u, 4);
            u += 0x10000u;
            memcpy(&hi, &u, 4);
            bad += got != lo && got != hi;
            up += got == hi && want != lo;
            down += got == lo && want != lo;
        }
        free(z);
    }
    PK_CHECK_EQ(bad, 0);
    PK_CHECK(up > 1000 && down > 1000); /* both directions happen */
    pk_model_free(a);
    pk_model_free(c);
    pk_model_free(base);
}

/* Token ids of the demo's notes, B rows of T. */
static void demo_batch(int32_t *ids, int32_t *lens, int B, int T)
{
    pk_tokenizer *tok = NULL;
    char err[256] = "", *txt = slurp(PK_SOURCE_DIR "/demo/data/train.txt", NULL);
    int32_t *all = NULL;
    size_t n = 0;
    PK_CHECK(txt != NULL);
    PK_CHECK(pk_tokenizer_load(STORIES, &tok, err, sizeof err) == PK_OK);
    PK_CHECK(pk_tokenizer_encode(tok, txt, strlen(txt), 1, &all, &n) == PK_OK);
    PK_CHECK(n >= (size_t)(B * T));
    for (int i = 0; i < B * T; i++)
        ids[i] = all[i];
    for (int b = 0; b < B; b++)
        lens[b] = T;
    free(all);
    free(txt);
    pk_tokenizer_free(tok);
}

static double batch_loss(pk_model *m, const pk_batch *b)
{
    double l = 0;
    PK_CHECK(pk_model_loss(m, b, NULL, NULL, NULL, NULL, &l) == PK_OK);
    return l;
}

typedef struct fixed_batch {
    const pk_batch *b;
} fixed_batch;

static pk_status fixed_loss(void *user, pk_model *m, int micro, const pk_perturb *pert,
                            double *loss)
{
    const fixed_batch *c = user;
    (void)micro;
    return pk_model_loss(m, c->b, NULL, pert, NULL, NULL, loss);
}

/* MeZO steps on one batch; returns the loss reduction. */
static double train_steps(pk_model *m, const uint8_t *mask, const pk_batch *b, float lr, int n,
                          pk_step_row *rows)
{
    pk_mezo_params p = pk_mezo_default_params();
    p.lr = lr;
    p.seed = 3;
    fixed_batch c = {b};
    double before = batch_loss(m, b);
    for (int s = 0; s < n; s++)
        PK_CHECK(pk_mezo_step(m, mask, &p, s, 1, fixed_loss, &c, &rows[s], NULL, NULL) == PK_OK);
    return before - batch_loss(m, b);
}

/* bf16 at MeZO's usual rate: the weights change and the loss goes down. */
static void test_bf16_learns(const char *d16, const pk_batch *b)
{
    pk_model *m = load_model_or_exit(d16), *base = load_model_or_exit(d16);
    pk_step_row rows[100];
    double drop = train_steps(m, NULL, b, 1e-6f, 100, rows);
    size_t changed = 0;
    for (size_t i = 0; i < pk_model_n_tensors(m); i++) {
        pk_tensor_info ta, t0;
        PK_CHECK(pk_model_tensor(m, i, &ta) == PK_OK && pk_model_tensor(base, i, &t0) == PK_OK);
        const uint16_t *h1 = ta.data, *h0 = t0.data;
        for (size_t k = 0; k < ta.numel; k++)
            changed += h1[k] != h0[k];
    }
    fprintf(stderr, "bf16, lr 1e-6, 100 steps: loss -%.3g, %zu weights changed\n", drop, changed);
    PK_CHECK(drop > 0.0);
    PK_CHECK(changed > 10000);
    pk_model_free(m);
    pk_model_free(base);
}

/* ---- LoRA ---------------------------------------------------------------------------------- */

static size_t count_on(const uint8_t *mask, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += mask[i];
    return c;
}

static float *logits(pk_model *m, const pk_batch *b)
{
    size_t n = (size_t)b->B * (size_t)b->T * (size_t)pk_model_vocab_size(m);
    float *out = malloc(n * 4);
    PK_CHECK(pk_model_logits(m, b, NULL, out) == PK_OK);
    return out;
}

static double max_diff(const float *a, const float *b, size_t n)
{
    double d = 0;
    for (size_t i = 0; i < n; i++)
        d = fabs((double)a[i] - (double)b[i]) > d ? fabs((double)a[i] - (double)b[i]) : d;
    return d;
}

/* Every tensor of m that mask leaves off is base's tensor of the same name, byte for byte. */
static void check_rest_as_loaded(const pk_model *m, const uint8_t *mask, const pk_model *base)
{
    for (size_t i = 0, j = 0; i < pk_model_n_tensors(m); i++) {
        pk_tensor_info ti, t0;
        PK_CHECK(pk_model_tensor(m, i, &ti) == PK_OK);
        if (mask[i])
            continue;
        PK_CHECK(pk_model_tensor(base, j++, &t0) == PK_OK && !strcmp(ti.name, t0.name));
        PK_CHECK(memcmp(ti.data, t0.data, pk_dtype_row_bytes(t0.dtype, t0.numel)) == 0);
    }
}

static void test_lora_attach(const pk_batch *b)
{
    pk_model *m = load_model_or_exit(STORIES), *base = load_model_or_exit(STORIES);
    size_t n0 = pk_model_n_tensors(m), nl = (size_t)b->B * b->T * pk_model_vocab_size(m);
    uint8_t *mask = NULL;
    char err[256] = "";
    float *l0 = logits(base, b);
    PK_CHECK(pk_mezo_trainable(m, "lora:r=4,alpha=8,seed=5", &mask, err, sizeof err) == PK_OK);
    PK_CHECK_EQ(pk_model_n_tensors(m), n0 + 20); /* 5 layers x (q, v) x (A, B) */
    PK_CHECK_EQ(count_on(mask, pk_model_n_tensors(m)), 20);
    int ia = pk_model_tensor_index(m, "model.layers.0.self_attn.q_proj.lora_A.weight");
    int ib = pk_model_tensor_index(m, "model.layers.4.self_attn.v_proj.lora_B.weight");
    PK_CHECK(ia >= 0 && ib >= 0 && mask[ia] && mask[ib]);
    pk_tensor_info ta, tb;
    PK_CHECK(pk_model_tensor(m, (size_t)ia, &ta) == PK_OK);
    PK_CHECK(pk_model_tensor(m, (size_t)ib, &tb) == PK_OK);
    PK_CHECK(ta.shape[0] == 4 && ta.shape[1] == 64 && ta.dtype == PK_DTYPE_F32);
    PK_CHECK(tb.shape[0] == 32 && tb.shape[1] == 4); /* 4 KV heads of 8 */
    float amax = 0;
    for (size_t k = 0; k < ta.numel; k++)
        amax = fabsf(((float *)ta.data)[k]) > amax ? fabsf(((float *)ta.data)[k]) : amax;
    PK_CHECK(amax > 0.1f && amax < 0.125f); /* uniform within 1/sqrt(in) */
    for (size_t k = 0; k < tb.numel; k++)
        PK_CHECK(((float *)tb.data)[k] == 0.0f);
    /* B = 0: the same function as the base */
    float *l1 = logits(m, b);
    PK_CHECK(max_diff(l0, l1, nl) == 0.0);
    /* the same spec again reuses the adapter; another one is refused */
    free(mask);
    mask = NULL;
    PK_CHECK(pk_mezo_trainable(m, "lora:r=4,alpha=8,seed=5", &mask, err, sizeof err) == PK_OK);
    PK_CHECK_EQ(pk_model_n_tensors(m), n0 + 20);
    uint8_t *other = NULL;
    PK_CHECK(pk_mezo_trainable(m, "lora:r=2", &other, err, sizeof err) == PK_ERR_ARG);
    /* A from the seed: the same bits on another load, others under another seed */
    pk_model *m2 = load_model_or_exit(STORIES), *m3 = load_model_or_exit(STORIES);
    uint8_t *k2 = NULL, *k3 = NULL;
    char h1[65], h2[65], h3[65];
    PK_CHECK(pk_mezo_trainable(m2, "lora:r=4,alpha=8,seed=5", &k2, err, sizeof err) == PK_OK);
    PK_CHECK(pk_mezo_trainable(m3, "lora:r=4,alpha=8,seed=6", &k3, err, sizeof err) == PK_OK);
    hash(m, h1);
    hash(m2, h2);
    hash(m3, h3);
    PK_CHECK(!strcmp(h1, h2) && strcmp(h1, h3) != 0);
    free(k2);
    free(k3);
    pk_model_free(m2);
    pk_model_free(m3);
    free(mask);
    free(l0);
    free(l1);
    pk_model_free(m);
    pk_model_free(base);
}

static void test_lora_bad_specs(void)
{
    pk_model *m = load_model_or_exit(STORIES);
    size_t n0 = pk_model_n_tensors(m);
    uint8_t *mask = NULL;
    char err[256] = "";
    PK_CHECK(pk_mezo_trainable(m, "lora:targets=no_such_module", &mask, err, sizeof err) ==
             PK_ERR_ARG);
    PK_CHECK(mask == NULL && strstr(err, "match no linear layer") != NULL);
    PK_CHECK(strstr(err, "model.layers.0.self_attn.q_proj") != NULL); /* says how they are named */
    PK_CHECK(pk_mezo_trainable(m, "lora:r=0", &mask, err, sizeof err) == PK_ERR_ARG);
    PK_CHECK(pk_mezo_trainable(m, "lora:r=65", &mask, err, sizeof err) == PK_ERR_ARG);
    PK_CHECK(pk_mezo_trainable(m, "lora:r=4,bogus=1", &mask, err, sizeof err) == PK_ERR_ARG);
    PK_CHECK(strstr(err, "bogus") != NULL);
    PK_CHECK(pk_mezo_trainable(m, "lora:alpha=-1", &mask, err, sizeof err) == PK_ERR_ARG);
    PK_CHECK(pk_mezo_trainable(m, "lora:targets=([", &mask, err, sizeof err) == PK_ERR_ARG);
    PK_CHECK_EQ(pk_model_n_tensors(m), n0); /* nothing attached */
    /* the canonical spelling the run records */
    char c[256];
    pk_mezo_trainable_canonical("lora:targets=q_proj", c, sizeof c);
    PK_CHECK(!strcmp(c, "lora:r=8,alpha=16,seed=0,targets=q_proj"));
    pk_mezo_trainable_canonical("bitfit", c, sizeof c);
    PK_CHECK(!strcmp(c, "bitfit"));
    /* a target regex choosing a subset of the layers */
    PK_CHECK(pk_mezo_trainable(m, "lora:r=2,targets=model\\.layers\\.[01]\\.mlp\\.down_proj", &mask,
                               err, sizeof err) == PK_OK);
    PK_CHECK_EQ(count_on(mask, pk_model_n_tensors(m)), 4);
    free(mask);
    pk_model_free(m);
}

/* MeZO on the adapter only: the base bytes never change, the adapter does, at 1 and 2 threads
 * to the same bits; replaying the rows on a fresh base + the spec gives the same weights. */
static void test_lora_train_replay(const pk_batch *b, const char *base_dir)
{
    const char *spec = "lora:r=4,alpha=8,seed=1";
    pk_model *m = load_model_or_exit(base_dir), *m2 = load_model_or_exit(base_dir),
             *base = load_model_or_exit(base_dir);
    uint8_t *mask = NULL, *mask2 = NULL;
    char err[256] = "", h1[65], h2[65];
    PK_CHECK(pk_mezo_trainable(m, spec, &mask, err, sizeof err) == PK_OK);
    PK_CHECK(pk_mezo_trainable(m2, spec, &mask2, err, sizeof err) == PK_OK);
    pk_step_row rows[30], rows2[30];
    pk_threads_set(1);
    double drop = train_steps(m, mask, b, 2e-3f, 30, rows);
    pk_threads_set(2);
    (void)train_steps(m2, mask2, b, 2e-3f, 30, rows2);
    hash(m, h1);
    hash(m2, h2);
    PK_CHECK(!strcmp(h1, h2));
    for (int s = 0; s < 30; s++) /* the losses too: the adapter's GEMM tiles are fixed */
        PK_CHECK(rows[s].g == rows2[s].g && rows[s].loss_plus == rows2[s].loss_plus &&
                 rows[s].loss_minus == rows2[s].loss_minus);
    fprintf(stderr, "%s LoRA r=4, lr 2e-3, 30 steps: loss -%.4g\n", base_dir, drop);
    PK_CHECK(drop > 0.0);
    check_rest_as_loaded(m, mask, base); /* the frozen base as loaded */
    /* replay: the base (checked by its hash), the spec, the rows */
    pk_model *r = load_model_or_exit(base_dir);
    uint8_t *rm = NULL;
    char hr[65];
    PK_CHECK(pk_mezo_trainable(r, spec, &rm, err, sizeof err) == PK_OK);
    pk_mezo_replay_rows(r, rm, PK_Z_GAUSSIAN, 0.0f, rows, 30);
    hash(r, hr);
    PK_CHECK(!strcmp(hr, h1));
    free(rm);
    pk_model_free(r);
    free(mask);
    free(mask2);
    pk_model_free(m);
    pk_model_free(m2);
    pk_model_free(base);
}

/* The adapter in the KV-cache path: generation's next-token logits follow the trained adapter
 * (they match the batched pass, and differ from the base's). Merging gives the same function. */
static void test_lora_generate_merge(const pk_batch *b)
{
    pk_model *m = load_model_or_exit(STORIES), *base = load_model_or_exit(STORIES),
             *mm = load_model_or_exit(STORIES);
    uint8_t *mask = NULL, *mask2 = NULL;
    char err[256] = "";
    PK_CHECK(pk_mezo_trainable(m, "lora", &mask, err, sizeof err) == PK_OK);
    PK_CHECK(pk_mezo_trainable(mm, "lora", &mask2, err, sizeof err) == PK_OK);
    for (int s = 0; s < 3; s++) {
        pk_mezo_update(m, mask, 100 + (uint64_t)s, PK_Z_GAUSSIAN, 0.05f, 1.0f, 0.0f);
        pk_mezo_update(mm, mask2, 100 + (uint64_t)s, PK_Z_GAUSSIAN, 0.05f, 1.0f, 0.0f);
    }
    int V = pk_model_vocab_size(m), T = 24;
    int32_t len = T;
    pk_batch one = {1, T, b->ids, &len, NULL};
    float *full = logits(m, &one), *fb = logits(base, &one);
    float *g = malloc((size_t)V * 4), *gb = malloc((size_t)V * 4);
    pk_gen *gen = NULL, *genb = NULL;
    PK_CHECK(pk_gen_create(m, 64, &gen) == PK_OK && pk_gen_create(base, 64, &genb) == PK_OK);
    PK_CHECK(pk_gen_feed(gen, b->ids, T - 1, NULL, NULL) == PK_OK);
    PK_CHECK(pk_gen_feed(gen, b->ids + T - 1, 1, NULL, g) == PK_OK); /* cached path */
    PK_CHECK(pk_gen_feed(genb, b->ids, T, NULL, gb) == PK_OK);
    double dg = max_diff(g, full + (size_t)(T - 1) * V, (size_t)V);
    double db = max_diff(gb, fb + (size_t)(T - 1) * V, (size_t)V);
    double moved = max_diff(full, fb, (size_t)T * V);
    fprintf(stderr, "generation vs batched logits: %.3g (base %.3g); adapter moved %.3g\n", dg, db,
            moved);
    PK_CHECK(moved > 1e-2);
    PK_CHECK(dg < 1e-4 && db < 1e-4);
    /* merged: no adapter tensors left, same logits up to rounding; saved and reloaded too */
    PK_CHECK(pk_model_lora_merge(mm) == PK_OK);
    PK_CHECK_EQ(pk_model_n_tensors(mm), pk_model_n_tensors(base));
    PK_CHECK(!pk_model_lora(mm, NULL));
    float *lm = logits(mm, &one);
    PK_CHECK(max_diff(lm, full, (size_t)T * V) < 1e-4);
    char dir[300];
    snprintf(dir, sizeof dir, "%s/merged", tmp);
    PK_CHECK(pk_model_save(mm, dir, PK_DTYPE_F32, err, sizeof err) == PK_OK);
    pk_model *re = load_model_or_exit(dir);
    float *lr = logits(re, &one);
    PK_CHECK(max_diff(lr, lm, (size_t)T * V) == 0.0);
    pk_model_free(re);
    free(lr);
    free(lm);
    pk_gen_free(gen);
    pk_gen_free(genb);
    free(g);
    free(gb);
    free(full);
    free(fb);
    free(mask);
    free(mask2);
    pk_model_free(m);
    pk_model_free(mm);
    pk_model_free(base);
}

/* GPT-2 stores its linear weights [in, out] (Conv1D) and fuses q, k, v in c_attn: the default
 * adapter goes there, with A [r, in] and B [3H, r] as PEFT's fan_in_fan_out layout has them. */
static void test_lora_gpt2(void)
{
    static const char cfg[] =
        "{\"architectures\": [\"GPT2LMHeadModel\"], \"model_type\": \"gpt2\", \"vocab_size\": "
        "300, \"n_embd\": 64, \"n_layer\": 2, \"n_head\": 4, \"n_inner\": 256, \"n_positions\": "
        "64, \"activation_function\": \"gelu_new\", \"layer_norm_epsilon\": 1e-05, "
        "\"bos_token_id\": 299, \"eos_token_id\": 299, \"tie_word_embeddings\": true}";
    char dir[300], err[256] = "";
    snprintf(dir, sizeof dir, "%s/gpt2", tmp);
    PK_CHECK(pk_model_make(cfg, strlen(cfg), dir, PK_DTYPE_F32, 7, err, sizeof err) == PK_OK);
    pk_model *m = load_model_or_exit(dir), *mm = load_model_or_exit(dir);
    uint8_t *mask = NULL, *mask2 = NULL;
    PK_CHECK(pk_mezo_trainable(m, "lora:r=2,alpha=4", &mask, err, sizeof err) == PK_OK);
    PK_CHECK(pk_mezo_trainable(mm, "lora:r=2,alpha=4", &mask2, err, sizeof err) == PK_OK);
    int ib = pk_model_tensor_index(m, "transformer.h.1.attn.c_attn.lora_B.weight");
    pk_tensor_info tb;
    PK_CHECK(ib >= 0 && pk_model_tensor(m, (size_t)ib, &tb) == PK_OK);
    PK_CHECK(tb.shape[0] == 192 && tb.shape[1] == 2);
    pk_mezo_update(m, mask, 1, PK_Z_GAUSSIAN, 0.05f, 1.0f, 0.0f);
    pk_mezo_update(mm, mask2, 1, PK_Z_GAUSSIAN, 0.05f, 1.0f, 0.0f);
    int32_t ids[16], len = 16;
    for (int i = 0; i < 16; i++)
        ids[i] = (i * 37) % 300;
    pk_batch one = {1, 16, ids, &len, NULL};
    float *la = logits(m, &one);
    PK_CHECK(pk_model_lora_merge(mm) == PK_OK);
    float *lb = logits(mm, &one);
    PK_CHECK(max_diff(la, lb, 16 * 300) < 1e-4);
    free(la);
    free(lb);
    free(mask);
    free(mask2);
    pk_model_free(m);
    pk_model_free(mm);
}

/* ---- trainable block scales ------------------------------------------------------------------ */

/* A Q4_0 copy of stories260k (every 2-D weight whose rows divide into 32-blocks). */
static void make_q4(char *dir, size_t n)
{
    char err[512] = "";
    snprintf(dir, n, "%s/q4_0", tmp);
    pk_model *s = load_model_or_exit(STORIES);
    size_t nt = pk_model_n_tensors(s);
    pk_dtype *types = calloc(nt, sizeof *types);
    for (size_t i = 0; i < nt; i++) {
        pk_tensor_info ti;
        PK_CHECK(pk_model_tensor(s, i, &ti) == PK_OK);
        types[i] = ti.ndim == 2 && ti.shape[1] % 32 == 0 ? PK_DTYPE_Q4_0 : ti.dtype;
    }
    PK_CHECK(pk_model_save_gguf(s, dir, types, err, sizeof err) == PK_OK);
    free(types);
    pk_model_free(s);
}

/* The Q4_0 weights of m: how many tensors, and (*nblk) how many 32-blocks they hold. */
static size_t count_q4(const pk_model *m, size_t *nblk)
{
    size_t nq = 0;
    *nblk = 0;
    for (size_t i = 0; i < pk_model_n_tensors(m); i++) {
        pk_tensor_info ti;
        PK_CHECK(pk_model_tensor(m, i, &ti) == PK_OK);
        if (ti.dtype == PK_DTYPE_Q4_0) {
            nq++;
            *nblk += ti.numel / 32;
        }
    }
    return nq;
}

/* The parameters mask switches on (every one an fp32 ".weight.scales" tensor of m). */
static size_t scales_params(const pk_model *m, const uint8_t *mask)
{
    size_t params = 0;
    for (size_t i = 0; i < pk_model_n_tensors(m); i++) {
        pk_tensor_info ti;
        PK_CHECK(pk_model_tensor(m, i, &ti) == PK_OK);
        if (mask[i]) {
            PK_CHECK(ti.dtype == PK_DTYPE_F32 && strstr(ti.name, ".weight.scales") != NULL);
            params += ti.numel;
        }
    }
    return params;
}

/* 30 MeZO steps on the scales of m at 1 thread and of m2 at 2 (the same seed and batch), rows
 * logged into rows / rows2. Returns the loss drop of m. */
static double train_scales(pk_model *m, const uint8_t *mask, pk_step_row *rows, pk_model *m2,
                           const uint8_t *mask2, pk_step_row *rows2, const pk_batch *b)
{
    pk_mezo_params p = pk_mezo_default_params();
    p.lr = 1e-5f;
    p.eps = 1e-4f;
    p.seed = 3;
    fixed_batch c = {b};
    pk_threads_set(1);
    double before = batch_loss(m, b);
    for (int s = 0; s < 30; s++)
        PK_CHECK(pk_mezo_step(m, mask, &p, s, 1, fixed_loss, &c, &rows[s], NULL, NULL) == PK_OK);
    double drop = before - batch_loss(m, b);
    pk_threads_set(2);
    for (int s = 0; s < 30; s++)
        PK_CHECK(pk_mezo_step(m2, mask2, &p, s, 1, fixed_loss, &c, &rows2[s], NULL, NULL) == PK_OK);
    return drop;
}

/* Folded for export, m2 (trained as m) holds fp32 weights decoded with the trained scales, no
 * scales tensors, and computes m's function bit for bit, which is not the base's (l0). */
static void check_folded(pk_model *m, pk_model *m2, const pk_model *base, const pk_batch *b,
                         const float *l0, size_t nl)
{
    float *lt = logits(m, b);
    PK_CHECK(pk_model_lora_merge(m2) == PK_OK);
    PK_CHECK_EQ(pk_model_n_tensors(m2), pk_model_n_tensors(base));
    for (size_t i = 0; i < pk_model_n_tensors(m2); i++) {
        pk_tensor_info ti;
        PK_CHECK(pk_model_tensor(m2, i, &ti) == PK_OK && ti.dtype != PK_DTYPE_Q4_0);
        PK_CHECK(!pk_model_tensor_is_scales(m2, i));
    }
    float *lm = logits(m2, b);
    PK_CHECK(memcmp(lt, lm, nl * 4) == 0);
    PK_CHECK(memcmp(lt, l0, nl * 4) != 0);
    free(lt);
    free(lm);
}

/* The 30 rows replayed onto a fresh copy of q4 give the trained hash h1; an f32 base has no
 * block scales to train. */
static void check_scales_replay_and_f32(const char *q4, const pk_step_row *rows, const char *h1)
{
    char err[256] = "", hr[65];
    pk_model *r = load_model_or_exit(q4);
    uint8_t *rm = NULL;
    PK_CHECK(pk_mezo_trainable(r, "scales", &rm, err, sizeof err) == PK_OK);
    pk_mezo_replay_rows(r, rm, PK_Z_GAUSSIAN, 0.0f, rows, 30);
    hash(r, hr);
    PK_CHECK(!strcmp(hr, h1));
    free(rm);
    pk_model_free(r);
    pk_model *f = load_model_or_exit(STORIES);
    uint8_t *fm = NULL;
    PK_CHECK(pk_mezo_trainable(f, "scales", &fm, err, sizeof err) == PK_ERR_ARG);
    PK_CHECK(fm == NULL && strstr(err, "no Q8_0 or Q4_0 weight") != NULL);
    pk_model_free(f);
}

/* --trainable scales: attaching the fp32 scales leaves the function unchanged bit for bit (they
 * hold the stored f16 values, decoded by the same d * q); MeZO then trains only them, the loss
 * drops, the quantized blocks stay untouched, the same at 1 and 2 threads, and the rows replay
 * onto a fresh copy. A base without Q8_0 / Q4_0 weights is refused. */
static void test_scales(const pk_batch *b)
{
    char q4[300], err[256] = "", h0[65], h1[65], h2[65];
    make_q4(q4, sizeof q4);
    pk_model *m = load_model_or_exit(q4), *m2 = load_model_or_exit(q4),
             *base = load_model_or_exit(q4);
    size_t nblk = 0, nq = count_q4(base, &nblk);
    PK_CHECK_EQ(nq, 31); /* all but the five [64, 172] down_proj */
    float *l0 = logits(base, b);
    hash(base, h0);
    size_t n_cov = 0;
    PK_CHECK(pk_model_scales_attach(m, &n_cov, err, sizeof err) == PK_OK);
    PK_CHECK_EQ(n_cov, nq);
    float *l1 = logits(m, b);
    size_t nl = (size_t)b->B * (size_t)b->T * (size_t)pk_model_vocab_size(m);
    PK_CHECK(memcmp(l0, l1, nl * 4) == 0);
    uint8_t *mask = NULL, *mask2 = NULL;
    PK_CHECK(pk_mezo_trainable(m, "scales", &mask, err, sizeof err) == PK_OK); /* again: no-op */
    PK_CHECK(pk_mezo_trainable(m2, "scales", &mask2, err, sizeof err) == PK_OK);
    size_t nt = pk_model_n_tensors(m), n_on = count_on(mask, nt);
    PK_CHECK_EQ(nt, pk_model_n_tensors(base) + nq);
    PK_CHECK_EQ(n_on, nq);
    PK_CHECK_EQ(scales_params(m, mask), nblk);
    pk_step_row rows[30], rows2[30];
    double drop = train_scales(m, mask, rows, m2, mask2, rows2, b);
    fprintf(stderr, "q4_0 scales, lr 1e-5, eps 1e-4, 30 steps: loss -%.4g\n", drop);
    PK_CHECK(drop > 0.0);
    hash(m, h1);
    hash(m2, h2);
    PK_CHECK(!strcmp(h1, h2) && strcmp(h1, h0) != 0);
    for (int s = 0; s < 30; s++)
        PK_CHECK(rows[s].g == rows2[s].g && rows[s].loss_plus == rows2[s].loss_plus);
    check_rest_as_loaded(m, mask, base); /* everything but the scales as loaded */
    check_folded(m, m2, base, b, l0, nl);
    check_scales_replay_and_f32(q4, rows, h1);
    free(l0);
    free(l1);
    free(mask);
    free(mask2);
    pk_model_free(m);
    pk_model_free(m2);
    pk_model_free(base);
}

int main(void)
{
    PK_CHECK(make_tmpdir(tmp, sizeof tmp, "adapters"));
    char d16[300], d32[300];
    make_copies(d16, d32, sizeof d16);
    enum { B = 4, T = 64 };
    int32_t ids[B * T], lens[B];
    demo_batch(ids, lens, B, T);
    pk_batch b = {B, T, ids, lens, NULL};

    test_sr_unbiased(d16, d32);
    test_sr_neighbours_threads(d16);
    test_bf16_learns(d16, &b);
    test_lora_attach(&b);
    test_lora_bad_specs();
    test_lora_train_replay(&b, STORIES);
    test_lora_train_replay(&b, d16); /* a 16-bit frozen base */
    test_lora_generate_merge(&b);
    test_lora_gpt2();
    test_scales(&b);
    remove_tree(tmp);
    return PK_TEST_DONE();
}
