/* test_golden.c: the cross-architecture contract (DESIGN 4) as values committed here, which must
 * hold on x86-64 and on aarch64 alike: z bits and digests of long z runs on every code path, the
 * shared models' reference logits (fp32 tolerance), the weights hash after replaying a fixed step
 * log (computed on x86-64), and a store and a seed log written by one architecture and read by the
 * other ("write DIR" here, "read DIR" there: scripts/test-arm64.sh runs both ways). */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "model_test_util.h"
#include "pk_mezo.h"
#include "pk_model.h"
#include "pk_rng.h"
#include "pk_store.h"
#include "pk_test.h"
#include "store_test_util.h"

#include "forward_impl.h" /* pk_exp_sum, pk_row_max, pk_row_sum, pk_row_sqdev */

void pk_rng_force_generic(int on); /* common/rng.c, for tests: 1 = the generic C path */

#define N_ROWS 24 /* the fixed step log: 12 steps of 2 perturbations */

static uint32_t fbits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* ---- z -------------------------------------------------------------------------------------- */

static const struct {
    uint64_t seed;
    const char *name;
    uint64_t index;
    pk_z_kind kind;
    uint32_t bits;
} z_golden[] = {
    /* docs/ZGEN.md's table (a sample) */
    {0x0, "model.embed_tokens.weight", 0, PK_Z_GAUSSIAN, 0x3ee0e5c9u},
    {0x0, "model.embed_tokens.weight", 0, PK_Z_RADEMACHER, 0xbf800000u},
    {0x0, "lm_head.weight", 1000003, PK_Z_GAUSSIAN, 0x3f92d64au},
    {0x0, "model.decoder.layers.11.fc2.bias", 4294967301ull, PK_Z_GAUSSIAN, 0x3f254b10u},
    {0x1, "lm_head.weight", 0, PK_Z_GAUSSIAN, 0xbfb7c925u},
    {0x2a, "model.embed_tokens.weight", 4294967301ull, PK_Z_GAUSSIAN, 0x3eb097a8u},
    {0x2a, "lm_head.weight", 3, PK_Z_RADEMACHER, 0xbf800000u},
    {0xdeadbeefcafef00dull, "model.decoder.layers.11.fc2.bias", 3, PK_Z_GAUSSIAN, 0x40359a8au},
    {0xdeadbeefcafef00dull, "lm_head.weight", 4294967301ull, PK_Z_GAUSSIAN, 0x3f82ffa6u},
};

/* FNV-1a 64 of the bits of n consecutive z values, for each (seed, tensor, start, kind). */
static const struct {
    uint64_t seed;
    const char *name;
    uint64_t start;
    pk_z_kind kind;
    uint64_t digest;
} z_digest[] = {
    {0x0, "model.layers.0.self_attn.q_proj.weight", 0, PK_Z_GAUSSIAN, 0x84ff43da69e59a3bull},
    {0x0, "model.layers.0.self_attn.q_proj.weight", 0, PK_Z_RADEMACHER, 0x441493b1b605d028ull},
    {0x2a, "model.decoder.layers.3.fc1.weight", 1000003, PK_Z_GAUSSIAN, 0xa50b055b910b5ceaull},
    {0x2a, "model.decoder.layers.3.fc1.weight", 1000003, PK_Z_RADEMACHER, 0x59fa2f6adfd48fa8ull},
    {0xdeadbeefcafef00dull, "lm_head.weight", 0xfffffffe0ull, PK_Z_GAUSSIAN, 0x5f871474719092a4ull},
};
#define DIGEST_N 300007 /* not a multiple of the generators' blocks */

static void test_z(void)
{
    static float z[DIGEST_N];
    for (int path = 0; path < 2; path++) {
        pk_rng_force_generic(path); /* 0: this build's automatic choice (vector path) */
        for (size_t i = 0; i < sizeof z_golden / sizeof z_golden[0]; i++) {
            float v = 0;
            pk_z_fill(z_golden[i].seed, pk_rng_tensor_key(z_golden[i].name), z_golden[i].index, 1,
                      z_golden[i].kind, &v);
            PK_CHECK_EQ(fbits(v), z_golden[i].bits);
        }
        for (size_t i = 0; i < sizeof z_digest / sizeof z_digest[0]; i++) {
            pk_z_fill(z_digest[i].seed, pk_rng_tensor_key(z_digest[i].name), z_digest[i].start,
                      DIGEST_N, z_digest[i].kind, z);
            uint64_t h = 0xcbf29ce484222325ull;
            for (size_t j = 0; j < DIGEST_N; j++) {
                uint32_t b = fbits(z[j]);
                h = fnv1a(h, &b, 4);
            }
            if (h != z_digest[i].digest)
                fprintf(stderr, "z digest %zu (%s path): got 0x%016" PRIx64 "\n", i,
                        path ? "generic" : "default", h);
            PK_CHECK(h == z_digest[i].digest);
        }
    }
    pk_rng_force_generic(0);
}

/* ---- the LM head's sum of exponentials (model/lse.c) ----------------------------------------- */

/* The FNV-1a digest of pk_exp_sum's bits over the rows test_exp_sum makes (computed on x86-64). */
#define EXP_SUM_DIGEST 0xf44a1d53b731e129ull

/* Rows of n = 1, 8, 15, ... 596 values in [-40, 10) from a fixed generator (one at -1000 from
 * n = 4 on, below the clamp): the row maximum equals a sequential scan's, the sum is within 1e-7
 * of a long double reference (float terms: 1.5e-8 measured), and the sums' bits equal the
 * committed digest. */
static void test_exp_sum(void)
{
    static float row[600];
    uint64_t h = 0xcbf29ce484222325ull, s = 12345;
    double worst = 0;
    for (int n = 1; n <= 600; n += 7) {
        for (int i = 0; i < n; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            row[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 50.0 - 40.0);
        }
        if (n > 3)
            row[n / 2] = -1000.0f;
        float seq = row[0];
        for (int i = 1; i < n; i++)
            seq = row[i] > seq ? row[i] : seq;
        float mx = pk_row_max(row, n);
        PK_CHECK_EQ(fbits(mx), fbits(seq));
        double sum = pk_exp_sum(row, n, mx);
        long double ref = 0;
        for (int i = 0; i < n; i++)
            ref += expl((long double)row[i] - (long double)mx);
        double rel = (double)fabsl(((long double)sum - ref) / ref);
        worst = rel > worst ? rel : worst;
        h = fnv1a(h, &sum, sizeof sum);
    }
    PK_CHECK(worst < 1e-7);
    if (h != EXP_SUM_DIGEST)
        fprintf(stderr, "exp sum digest: got 0x%016" PRIx64 " (worst relative error %.3g)\n", h,
                worst);
    PK_CHECK(h == EXP_SUM_DIGEST);
    row[3] = NAN;
    PK_CHECK(isnan(pk_exp_sum(row, 9, 0.0f)));
}

/* ---- e^x in float (model/lse.c): the attention softmax, SiLU and gelu_new ------------------ */

/* The FNV-1a digest of pk_expf's, pk_exp_row's, pk_silu_row's and pk_gelu_tanh_row's bits over
 * the values test_expf makes (computed on x86-64; the aarch64 run must match it). */
#define EXPF_DIGEST 0x3e0a0d23c2dd4383ull

/* |got - e^x| / e^x in units of float's epsilon at e^x (ulps), e^x from long double. */
static double ulps(float got, long double x)
{
    long double want = expl(x);
    int e;
    frexpl(want, &e);
    return (double)(fabsl((long double)got - want) / ldexpl(1.0L, e - 24));
}

/* pk_expf over [-87, 88] (every 2^-10 and 1e5 pseudo-random points) within 2 ulps of e^x; the
 * clamps, NaN; the rows equal their per-element definitions through pk_expf (the sum in 8
 * interleaved partial sums, added pairwise) and are within 1e-6 of libm-free long double
 * references; every bit matches the committed digest. */
static void test_expf(void)
{
    uint64_t h = 0xcbf29ce484222325ull, s = 4242;
    double worst = 0;
    for (float x = -87.0f; x <= 88.0f; x += 1.0f / 1024.0f) {
        float e = pk_expf(x);
        double u = ulps(e, (long double)x);
        worst = u > worst ? u : worst;
        h = fnv1a(h, &e, sizeof e);
    }
    for (int i = 0; i < 100000; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        float x = (float)((double)(s >> 11) / 9007199254740992.0 * 175.0 - 87.0);
        float e = pk_expf(x);
        double u = ulps(e, (long double)x);
        worst = u > worst ? u : worst;
        h = fnv1a(h, &e, sizeof e);
    }
    fprintf(stderr, "pk_expf: worst %.3f ulp\n", worst);
    PK_CHECK(worst <= 2.0);
    PK_CHECK(pk_expf(0.0f) == 1.0f && pk_expf(-0.0f) == 1.0f);
    PK_CHECK(isnan(pk_expf(NAN)));
    PK_CHECK(pk_expf(-1000.0f) == pk_expf(-87.0f) && pk_expf(-87.0f) > 0.0f);
    PK_CHECK(pk_expf(INFINITY) == pk_expf(88.0f) && isfinite(pk_expf(88.0f)));

    static float row[300], want[300];
    for (int n = 1; n <= 300; n += 13) {
        for (int i = 0; i < n; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            row[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 24.0 - 12.0);
        }
        /* softmax numerators and their sum */
        float mx = pk_row_max(row, n);
        double p[8] = {0};
        for (int i = 0; i < n; i++) {
            want[i] = pk_expf(row[i] - mx);
            p[i % 8] += (double)want[i];
        }
        double wsum = ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
        float act[300];
        memcpy(act, row, sizeof(float) * (size_t)n);
        double sum = pk_exp_row(row, n, mx);
        PK_CHECK(memcmp(&sum, &wsum, sizeof sum) == 0);
        PK_CHECK(memcmp(row, want, sizeof(float) * (size_t)n) == 0);
        h = fnv1a(h, &sum, sizeof sum);
        h = fnv1a(h, row, sizeof(float) * (size_t)n);
        /* SiLU and gelu_new of the original values */
        float silu[300], gelu[300];
        memcpy(silu, act, sizeof(float) * (size_t)n);
        memcpy(gelu, act, sizeof(float) * (size_t)n);
        pk_silu_row(silu, n);
        pk_gelu_tanh_row(gelu, n);
        for (int i = 0; i < n; i++) {
            volatile float cube = 0.044715f * act[i] * act[i] * act[i]; /* rounded: no FMA */
            float v = act[i], u = 0.7978845608028654f * (v + cube);
            PK_CHECK_EQ(fbits(silu[i]), fbits(v / (1.0f + pk_expf(-v))));
            PK_CHECK_EQ(fbits(gelu[i]), fbits(v / (1.0f + pk_expf(-2.0f * u))));
            long double lv = (long double)v,
                        lu = 0.7978845608028654L * (lv + 0.044715L * lv * lv * lv);
            long double rs = lv / (1.0L + expl(-lv)), rg = 0.5L * lv * (1.0L + tanhl(lu));
            PK_CHECK(fabsl((long double)silu[i] - rs) <= 1e-6L * (1.0L + fabsl(rs)));
            PK_CHECK(fabsl((long double)gelu[i] - rg) <= 1e-6L * (1.0L + fabsl(rg)));
        }
        h = fnv1a(h, silu, sizeof(float) * (size_t)n);
        h = fnv1a(h, gelu, sizeof(float) * (size_t)n);
    }
    if (h != EXPF_DIGEST)
        fprintf(stderr, "expf digest: got 0x%016" PRIx64 "\n", h);
    PK_CHECK(h == EXPF_DIGEST);
}

/* The norms' row sums, written out here as their definition (element c into partial sum c % 8,
 * partial sums added pairwise): pk_row_sum and pk_row_sqdev (whichever clone this CPU runs)
 * give exactly these bits, and are within 1e-12 of a long double sum. */
static double lanes_sum(const float *row, int n, double mean, int square)
{
    double p[8] = {0};
    for (int c = 0; c < n; c++) {
        double d = (double)row[c] - mean;
        volatile double t = square ? d * d : d; /* rounded before the add, as in lse.c (no FMA) */
        p[c % 8] += t;
    }
    return ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
}

static void test_row_sums(void)
{
    static float row[600];
    uint64_t s = 777;
    double worst = 0;
    for (int n = 1; n <= 600; n += 7) {
        for (int i = 0; i < n; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            row[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 8.0 - 3.0);
        }
        double sum = pk_row_sum(row, n), mean = sum / n, sq = pk_row_sqdev(row, n, mean);
        double want = lanes_sum(row, n, 0, 0), wantsq = lanes_sum(row, n, mean, 1);
        PK_CHECK(memcmp(&sum, &want, sizeof sum) == 0);
        PK_CHECK(memcmp(&sq, &wantsq, sizeof sq) == 0);
        long double ref = 0, refsq = 0;
        for (int i = 0; i < n; i++) {
            ref += (long double)row[i];
            long double d = (long double)row[i] - (long double)mean;
            refsq += d * d;
        }
        double e1 = (double)fabsl((long double)sum - ref) / (1.0 + (double)fabsl(ref));
        double e2 = refsq > 0 ? (double)fabsl(((long double)sq - refsq) / refsq) : 0.0;
        worst = e1 > worst ? e1 : worst;
        worst = e2 > worst ? e2 : worst;
    }
    PK_CHECK(worst < 1e-12);
}

/* ---- reference logits ----------------------------------------------------------------------- */

/* Every sequence of testdata/models/NAME/reference.json alone: max |logit - reference|. */
static void check_logits(const char *name)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/testdata/models/%s", PK_SHARED_DIR, name);
    size_t rl = 0;
    char *js = slurp_at(dir, "reference.json", NULL);
    float *ref = (float *)slurp_at(dir, "reference_logits.f32", &rl);
    cJSON *root = js ? cJSON_Parse(js) : NULL;
    pk_model *m = load_model_checked(dir);
    PK_CHECK(js && ref && root && m);
    if (!js || !ref || !root || !m) {
        fprintf(stderr, "FAIL: %s: reference files missing (PK_SHARED_DIR=%s)\n", name,
                PK_SHARED_DIR);
        goto out;
    }
    const cJSON *seqs = cJSON_GetObjectItem(root, "sequences");
    size_t V = (size_t)pk_model_vocab_size(m), off = 0;
    float worst = 0;
    for (int s = 0; s < cJSON_GetArraySize(seqs); s++) {
        const cJSON *ia = cJSON_GetObjectItem(cJSON_GetArrayItem(seqs, s), "ids");
        int32_t T = cJSON_GetArraySize(ia), ids[512];
        PK_CHECK(T >= 1 && T <= 512 && (off + (size_t)T * V) * 4 <= rl);
        if (T < 1 || T > 512 || (off + (size_t)T * V) * 4 > rl)
            break;
        for (int t = 0; t < T; t++)
            ids[t] = cJSON_GetArrayItem(ia, t)->valueint;
        float *lg = malloc((size_t)T * V * 4);
        pk_batch b = {1, T, ids, &T, NULL};
        PK_CHECK(lg && pk_model_logits(m, &b, NULL, lg) == PK_OK);
        for (size_t i = 0; lg && i < (size_t)T * V; i++) {
            float d = fabsf(lg[i] - ref[off + i]);
            worst = d > worst || isnan(d) ? d : worst;
        }
        off += (size_t)T * V;
        free(lg);
    }
    fprintf(stderr, "%s: max |logit - reference| = %.3g\n", name, (double)worst);
    PK_CHECK(worst <= 1e-4f); /* the fp32 tolerance of test_model */
    PK_CHECK_EQ(off * 4, rl);
out:
    pk_model_free(m);
    cJSON_Delete(root);
    free(js);
    free(ref);
}

static void test_logits(void)
{
    static const char *const names[] = {"gpt2-tiny", "llama-tiny", "llama-tiny-f16",
                                        "opt-tiny",  "qwen2-tiny", "roberta-tiny"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        check_logits(names[i]);
}

/* ---- replay of a fixed step log ------------------------------------------------------------- */

/* The step log every architecture replays: seeds, g and lr as a trainer would log them. */
static void fixed_rows(pk_step_row rows[N_ROWS])
{
    for (int r = 0; r < N_ROWS; r++) {
        pk_step_row *w = &rows[r];
        memset(w, 0, sizeof *w);
        w->step = r / 2;
        w->q_index = r % 2;
        w->seed = pk_mezo_step_seed(0x5eedull, w->step, w->q_index);
        w->g = (float)((r * 7) % 11 - 5) * 0.37f;
        w->lr = 2e-3f / (float)(1 + r / 8);
        w->eps = 1e-3f;
        w->loss_plus = 5.5f - 0.01f * (float)r;
        w->loss_minus = w->loss_plus + 0.001f * w->g;
    }
}

/* What replaying fixed_rows gives, pk_weights_hash in hex, computed on x86-64. The f16 case
 * covers the seeded stochastic rounding of 16-bit updates (DESIGN 4). */
static const struct {
    const char *model; /* "" = the shipped stories260k, else a model of the test-vector bundle */
    const char *trainable;
    pk_z_kind kind;
    float wd;
    const char *base_hash, *hash;
} replay_golden[] = {
    {"", "all", PK_Z_GAUSSIAN, 0.01f,
     "1eb2f66f7e175f95c4670022e59a07660d32e2ca4550e901cc36f52266d73991",
     "3c62c7aad2f2ef43cee9da8a264fb1b761d07cc67aed2801615a5583f87167a1"},
    {"", "bitfit", PK_Z_RADEMACHER, 0.0f,
     "1eb2f66f7e175f95c4670022e59a07660d32e2ca4550e901cc36f52266d73991",
     "5aa75d4a01765842582af7810940be2f6cea72bd36b10fd4f46de2e163913803"},
    {"llama-tiny-f16", "all", PK_Z_GAUSSIAN, 0.01f,
     "f779d74e432beac0309deac4007335dfc3a256d757e84f0a46073152a95493a7",
     "99dec90d62ebf1cce61099b58593316bebc97d4977aafe5a0b1ff5a3dc543a3d"},
};

static void model_dir(const char *name, char *dir, size_t n)
{
    if (*name)
        snprintf(dir, n, "%s/testdata/models/%s", PK_SHARED_DIR, name);
    else
        snprintf(dir, n, "%s", PK_STORIES_DIR);
}

/* Replays case i at each thread count and compares both hashes with the committed ones. */
static void check_replay(size_t i, int threads)
{
    char dir[1024], err[256] = "", base[65] = "", got[65] = "";
    model_dir(replay_golden[i].model, dir, sizeof dir);
    pk_model *m = load_model_checked(dir);
    uint8_t *mask = NULL;
    pk_step_row rows[N_ROWS];
    fixed_rows(rows);
    pk_threads_set(threads);
    PK_CHECK(m && pk_weights_hash(m, base) == PK_OK);
    PK_CHECK(m &&
             pk_mezo_trainable(m, replay_golden[i].trainable, &mask, err, sizeof err) == PK_OK);
    if (m && mask) {
        pk_mezo_replay_rows(m, mask, replay_golden[i].kind, replay_golden[i].wd, rows, N_ROWS);
        PK_CHECK(pk_weights_hash(m, got) == PK_OK);
    }
    if (strcmp(base, replay_golden[i].base_hash) != 0 || strcmp(got, replay_golden[i].hash) != 0)
        fprintf(stderr, "replay %zu (%s, %s, %d threads): base %s, replayed %s\n", i, dir,
                replay_golden[i].trainable, threads, base, got);
    PK_CHECK(strcmp(base, replay_golden[i].base_hash) == 0);
    PK_CHECK(strcmp(got, replay_golden[i].hash) == 0);
    free(mask);
    pk_model_free(m);
}

static void test_replay(void)
{
    for (size_t i = 0; i < sizeof replay_golden / sizeof replay_golden[0]; i++) {
        check_replay(i, 1);
        check_replay(i, 2);
    }
}

/* The f16 case's replay before stochastic rounding (rounding to nearest even), the golden of
 * commit ad2b0ab's parent: what a seed log without the "rounding" marker must still give. */
#define F16_NEAREST_HASH "626ab8594248d1f8cc2506ac142eb64f87684466fdd6e5116eee9e9f337c877d"

/* Replays fixed_rows as a seed log file on llama-tiny-f16: with header line `marker` ("" for a
 * log written before the marker existed); want: the weights hash it must give. */
static void check_rounding_marker(const char *marker, pk_rounding want_mode, const char *want,
                                  int threads)
{
    char dir[1024], path[1100], err[256] = "", base[65] = "", got[65] = "";
    model_dir("llama-tiny-f16", dir, sizeof dir);
    pk_model *m = load_model_checked(dir);
    pk_step_row rows[N_ROWS];
    fixed_rows(rows);
    pk_threads_set(threads);
    PK_CHECK(m && pk_weights_hash(m, base) == PK_OK);
    make_tmp_home(path, sizeof path, "rounding");
    strcat(path, ".seedlog");
    FILE *f = fopen(path, "w");
    PK_CHECK(f != NULL);
    if (f == NULL || m == NULL) {
        pk_model_free(m);
        return;
    }
    fprintf(f, "pocketllm-seedlog 1\nbase_hash %s\nz gaussian\nweight_decay %a\ntrainable all\n%s",
            base, (double)0.01f, marker);
    fprintf(f, "steps %d\n", N_ROWS);
    for (int r = 0; r < N_ROWS; r++)
        fprintf(f, "%lld %d %llu %a %a %a %a %a\n", (long long)rows[r].step, (int)rows[r].q_index,
                (unsigned long long)rows[r].seed, (double)rows[r].g, (double)rows[r].lr,
                (double)rows[r].eps, (double)rows[r].loss_plus, (double)rows[r].loss_minus);
    fclose(f);
    pk_seedlog log;
    PK_CHECK_EQ(pk_seedlog_read(path, &log, err, sizeof err), PK_OK);
    PK_CHECK_EQ((int)log.rounding, (int)want_mode);
    PK_CHECK_EQ(pk_seedlog_replay(m, &log, err, sizeof err), PK_OK);
    PK_CHECK(pk_weights_hash(m, got) == PK_OK);
    if (strcmp(got, want) != 0)
        fprintf(stderr, "rounding marker '%s' (%d threads): replayed %s, want %s\n", marker,
                threads, got, want);
    PK_CHECK(strcmp(got, want) == 0);
    /* a written log carries its mode and reads back the same */
    PK_CHECK_EQ(pk_seedlog_write(path, &log, err, sizeof err), PK_OK);
    pk_seedlog back;
    PK_CHECK_EQ(pk_seedlog_read(path, &back, err, sizeof err), PK_OK);
    PK_CHECK_EQ((int)back.rounding, (int)want_mode);
    pk_seedlog_clear(&back);
    pk_seedlog_clear(&log);
    remove(path);
    path[strlen(path) - strlen(".seedlog")] = 0;
    rm_rf(path);
    pk_model_free(m);
}

/* DESIGN 4: a seed log from before stochastic rounding (no "rounding" line) replays a 16-bit
 * base rounding to nearest, bit for bit as it was made; "rounding stochastic" (what new logs
 * say) gives the stochastic golden; an unknown mode is refused. */
static void test_rounding_marker(void)
{
    for (int t = 1; t <= 2; t++) {
        check_rounding_marker("", PK_ROUND_NEAREST, F16_NEAREST_HASH, t);
        check_rounding_marker("rounding nearest\n", PK_ROUND_NEAREST, F16_NEAREST_HASH, t);
        check_rounding_marker("rounding stochastic\n", PK_ROUND_STOCHASTIC, replay_golden[2].hash,
                              t);
    }
    char path[1100], err[256] = "";
    make_tmp_home(path, sizeof path, "rounding-bad");
    strcat(path, ".seedlog");
    FILE *f = fopen(path, "w");
    PK_CHECK(f != NULL);
    if (f == NULL)
        return;
    fprintf(f,
            "pocketllm-seedlog 1\nbase_hash %064d\nz gaussian\nweight_decay 0\ntrainable "
            "all\nrounding up\nsteps 0\n",
            0);
    fclose(f);
    pk_seedlog log;
    PK_CHECK_EQ(pk_seedlog_read(path, &log, err, sizeof err), PK_ERR_FORMAT);
    PK_CHECK(strstr(err, "rounding up") != NULL);
    pk_seedlog_clear(&log);
    remove(path);
    path[strlen(path) - strlen(".seedlog")] = 0;
    rm_rf(path);
}

/* ---- a store and a seed log across architectures -------------------------------------------- */

static const char *const notes[3] = {
    "Buy oat milk on the way home.", "Lisbon trip: book the tram tour for Saturday.",
    "Ideas: a bread oven in the garden (ask Ana) \xc3\xa9t\xc3\xa9"};
#define CKPT_BYTES 10000

static unsigned char ckpt_byte(size_t i)
{
    return (unsigned char)((i * 131u + 7u) ^ (i >> 8));
}

static int rows_equal(const pk_step_row *a, const pk_step_row *b, size_t n)
{
    for (size_t r = 0; r < n; r++) {
        if (a[r].step != b[r].step || a[r].q_index != b[r].q_index || a[r].seed != b[r].seed ||
            fbits(a[r].g) != fbits(b[r].g) || fbits(a[r].lr) != fbits(b[r].lr) ||
            fbits(a[r].eps) != fbits(b[r].eps) || fbits(a[r].loss_plus) != fbits(b[r].loss_plus) ||
            fbits(a[r].loss_minus) != fbits(b[r].loss_minus))
            return 0;
    }
    return 1;
}

/* DIR/home: three notes, a run with the fixed step log and a checkpoint. */
static pk_status write_store(const char *dir, const char *base_hash)
{
    char home[1024], err[256] = "";
    snprintf(home, sizeof home, "%s/home", dir);
    pk_store *s = NULL;
    pk_step_row rows[N_ROWS];
    unsigned char *blob = malloc(CKPT_BYTES);
    int64_t run = 0, ds = 0;
    fixed_rows(rows);
    pk_status st =
        pk_store_init(home, TEST_PASS, strlen(TEST_PASS), tiny_params(), err, sizeof err);
    if (st == PK_OK)
        st = pk_store_open(home, TEST_PASS, strlen(TEST_PASS), &s, err, sizeof err);
    for (int i = 0; i < 3 && st == PK_OK; i++) {
        pk_example ex = {0, notes[i], NULL, NULL, NULL, NULL};
        st = pk_store_example_add(s, "notes", &ex, NULL, err, sizeof err);
    }
    if (st == PK_OK)
        st = pk_store_dataset_id(s, "notes", &ds, err, sizeof err);
    if (st == PK_OK)
        st = pk_store_run_create(s, ds, "{\"lr\":0.002}", base_hash, N_ROWS / 2, &run, err,
                                 sizeof err);
    for (int r = 0; r < N_ROWS && st == PK_OK; r += 2)
        st = pk_store_steps_append(s, run, rows + r, 2, err, sizeof err);
    for (size_t i = 0; blob && i < CKPT_BYTES; i++)
        blob[i] = ckpt_byte(i);
    if (st == PK_OK)
        st = blob ? pk_store_checkpoint_put(s, run, 11, blob, CKPT_BYTES, err, sizeof err)
                  : PK_ERR_NOMEM;
    if (st != PK_OK)
        fprintf(stderr, "write store %s: %s: %s\n", home, pk_status_str(st), err);
    free(blob);
    pk_store_close(s);
    return st;
}

static void check_examples(pk_store *s)
{
    char err[256] = "";
    int64_t ds = 0, *ids = NULL, n = 0;
    PK_CHECK(pk_store_dataset_id(s, "notes", &ds, err, sizeof err) == PK_OK);
    PK_CHECK(pk_store_example_ids(s, ds, &ids, &n, err, sizeof err) == PK_OK);
    PK_CHECK_EQ(n, 3);
    for (int64_t i = 0; i < n && i < 3; i++) {
        pk_example *ex = NULL;
        PK_CHECK(pk_store_example_get(s, ds, ids[i], &ex, err, sizeof err) == PK_OK);
        PK_CHECK(ex && ex->text && strcmp(ex->text, notes[i]) == 0);
        pk_example_free(ex);
    }
    free(ids);
}

static void check_run(pk_store *s, const char *base_hash)
{
    char err[256] = "";
    int64_t *runs = NULL, n = 0, step = -1;
    pk_step_row want[N_ROWS], *rows = NULL;
    size_t nr = 0, len = 0;
    void *blob = NULL;
    fixed_rows(want);
    PK_CHECK(pk_store_run_list(s, &runs, &n, err, sizeof err) == PK_OK && n == 1);
    if (n != 1) {
        free(runs);
        return;
    }
    pk_run_info ri;
    memset(&ri, 0, sizeof ri);
    PK_CHECK(pk_store_run_get(s, runs[0], &ri, err, sizeof err) == PK_OK);
    PK_CHECK_EQ(ri.steps_done, N_ROWS / 2);
    PK_CHECK(strcmp(ri.base_hash, base_hash) == 0);
    PK_CHECK(ri.config_json && strcmp(ri.config_json, "{\"lr\":0.002}") == 0);
    PK_CHECK(pk_store_steps_read(s, runs[0], 0, N_ROWS, &rows, &nr, err, sizeof err) == PK_OK);
    PK_CHECK(nr == N_ROWS && rows_equal(rows, want, N_ROWS));
    PK_CHECK(pk_store_checkpoint_get(s, runs[0], 100, &step, &blob, &len, err, sizeof err) ==
             PK_OK);
    PK_CHECK(step == 11 && len == CKPT_BYTES);
    for (size_t i = 0; blob && len == CKPT_BYTES && i < len; i++) {
        if (((unsigned char *)blob)[i] != ckpt_byte(i)) {
            PK_CHECK(!"checkpoint bytes differ");
            break;
        }
    }
    pk_store_blob_free(blob, len);
    free(rows);
    pk_run_info_clear(&ri);
    free(runs);
}

/* Opens DIR/home: a wrong passphrase is PK_ERR_AUTH; the right one reads back everything. */
static void read_store(const char *dir, const char *base_hash)
{
    char home[1024], err[256] = "";
    snprintf(home, sizeof home, "%s/home", dir);
    pk_store *s = NULL;
    PK_CHECK(pk_store_open(home, "wrong", 5, &s, err, sizeof err) == PK_ERR_AUTH && s == NULL);
    pk_status st = pk_store_open(home, TEST_PASS, strlen(TEST_PASS), &s, err, sizeof err);
    if (st != PK_OK)
        fprintf(stderr, "FAIL: open %s: %s\n", home, err);
    PK_CHECK(st == PK_OK);
    if (st != PK_OK)
        return;
    check_examples(s);
    check_run(s, base_hash);
    pk_store_close(s);
}

/* DIR/seed.log: the fixed step log over the first replay case's base model. */
static pk_status write_seedlog(const char *dir)
{
    char path[1024], err[256] = "";
    pk_step_row rows[N_ROWS];
    fixed_rows(rows);
    pk_seedlog log;
    memset(&log, 0, sizeof log);
    snprintf(log.base_hash, sizeof log.base_hash, "%s", replay_golden[0].base_hash);
    log.z = replay_golden[0].kind;
    log.weight_decay = replay_golden[0].wd;
    snprintf(log.trainable, sizeof log.trainable, "%s", replay_golden[0].trainable);
    log.rows = rows;
    log.n_rows = N_ROWS;
    snprintf(path, sizeof path, "%s/seed.log", dir);
    pk_status st = pk_seedlog_write(path, &log, err, sizeof err);
    if (st != PK_OK)
        fprintf(stderr, "write %s: %s\n", path, err);
    return st;
}

/* Reads DIR/seed.log, replays it on the base model: the committed hash. */
static void read_seedlog(const char *dir)
{
    char path[1024], err[256] = "", got[65] = "";
    pk_step_row want[N_ROWS];
    fixed_rows(want);
    pk_seedlog log;
    memset(&log, 0, sizeof log);
    snprintf(path, sizeof path, "%s/seed.log", dir);
    pk_status st = pk_seedlog_read(path, &log, err, sizeof err);
    if (st != PK_OK)
        fprintf(stderr, "FAIL: read %s: %s\n", path, err);
    PK_CHECK(st == PK_OK);
    PK_CHECK(log.n_rows == N_ROWS && rows_equal(log.rows, want, N_ROWS));
    pk_model *m = load_model_checked(PK_STORIES_DIR);
    st = m ? pk_seedlog_replay(m, &log, err, sizeof err) : PK_ERR_ARG;
    if (st != PK_OK)
        fprintf(stderr, "FAIL: replay %s: %s\n", path, err);
    PK_CHECK(st == PK_OK && pk_weights_hash(m, got) == PK_OK);
    PK_CHECK(strcmp(got, replay_golden[0].hash) == 0);
    pk_model_free(m);
    pk_seedlog_clear(&log);
}

static int write_fixtures(const char *dir)
{
    if (write_store(dir, replay_golden[0].base_hash) != PK_OK || write_seedlog(dir) != PK_OK)
        return 1;
    fprintf(stderr, "wrote a store and a seed log in %s\n", dir);
    return 0;
}

static void read_fixtures(const char *dir)
{
    read_store(dir, replay_golden[0].base_hash);
    read_seedlog(dir);
}

int main(int argc, char **argv)
{
    char arch[64];
    fprintf(stderr, "kernel: %s\n", pk_model_kernel(arch, sizeof arch));
    if (pk_crypto_global_init() != PK_OK) {
        fprintf(stderr, "FAIL: pk_crypto_global_init\n");
        return 1;
    }
    if (argc == 3 && strcmp(argv[1], "write") == 0)
        return write_fixtures(argv[2]);
    if (argc == 3 && strcmp(argv[1], "read") == 0) {
        read_fixtures(argv[2]);
        return PK_TEST_DONE();
    }
    if (argc != 1) {
        fprintf(stderr, "usage: test_golden [write DIR | read DIR]\n");
        return 2;
    }
    test_z();
    test_exp_sum();
    test_expf();
    test_row_sums();
    test_logits();
    test_replay();
    test_rounding_marker();
    /* the same architecture both ways here; scripts/test-arm64.sh crosses them */
    char dir[1024];
    make_tmp_home(dir, sizeof dir, "golden");
    PK_CHECK(write_fixtures(dir) == 0);
    read_fixtures(dir);
    rm_rf(dir);
    return PK_TEST_DONE();
}
