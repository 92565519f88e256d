/* test_mezo.c: the MeZO optimizer on real checkpoints (mezo/mezo.c, seedlog.c, objective.c):
 * projected gradient against the reference gradient of stories260k, the update sweep's formula,
 * thread-count independence, f16 storage, trainable masks, weights hash, schedules, seed logs,
 * checkpoints, batch order, divergence, and the engine's sweeps against the estimators' losses. */
#include "model_test_util.h"
#include "pk_test.h"
#include "pk_train.h"
#include "test_util.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STORIES PK_SHARED_DIR "/testdata/models/stories260k"

/* slurp, or the test ends: the reference gradient is its precondition. */
static char *slurp_or_exit(const char *path, size_t *len)
{
    char *b = slurp(path, len);
    if (b == NULL) {
        fprintf(stderr, "FATAL: cannot read %s (PK_SHARED_DIR must hold testdata/)\n", path);
        exit(1);
    }
    return b;
}

/* Minimal F32 safetensors reader: the tensor's data inside the file buffer, or NULL. */
static const float *st_tensor(const char *buf, size_t len, const char *name, size_t *numel)
{
    uint64_t hl = 0;
    memcpy(&hl, buf, 8);
    if (8 + hl > len)
        return NULL;
    char *h = malloc(hl + 1);
    memcpy(h, buf + 8, hl);
    h[hl] = 0;
    cJSON *j = cJSON_Parse(h);
    free(h);
    const float *out = NULL;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, name);
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(t, "data_offsets");
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(t, "dtype");
    if (cJSON_IsArray(off) && cJSON_IsString(dt) && !strcmp(dt->valuestring, "F32")) {
        size_t a = (size_t)cJSON_GetArrayItem(off, 0)->valuedouble;
        size_t b = (size_t)cJSON_GetArrayItem(off, 1)->valuedouble;
        if (8 + hl + b <= len && ((8 + hl + a) % 4) == 0) {
            out = (const float *)(const void *)(buf + 8 + hl + a);
            *numel = (b - a) / 4;
        }
    }
    cJSON_Delete(j);
    return out;
}

/* sum over trainable tensors of dot(grad, z(seed)), in double */
static double reference_projection(const pk_model *m, const uint8_t *mask, const char *gbuf,
                                   size_t glen, uint64_t seed)
{
    double total = 0;
    for (size_t i = 0; i < pk_model_n_tensors(m); i++) {
        pk_tensor_info ti;
        PK_CHECK(pk_model_tensor(m, i, &ti) == PK_OK);
        if (mask && !mask[i])
            continue;
        size_t n = 0;
        const float *g = st_tensor(gbuf, glen, ti.name, &n);
        PK_CHECK(g != NULL && n == ti.numel);
        if (g == NULL || n != ti.numel)
            continue;
        float *z = malloc(n * sizeof(float));
        pk_z_fill(seed, ti.key, 0, n, PK_Z_GAUSSIAN, z);
        for (size_t k = 0; k < n; k++)
            total += (double)g[k] * (double)z[k];
        free(z);
    }
    return total;
}

static void test_probe_vs_reference_gradient(void)
{
    size_t jlen = 0, glen = 0;
    char *js = slurp_or_exit(STORIES "/reference/grad.json", &jlen);
    char *gbuf = slurp_or_exit(STORIES "/reference/grad_f32.safetensors", &glen);
    cJSON *j = cJSON_Parse(js);
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(j, "ids");
    int n = cJSON_GetArraySize(ids);
    PK_CHECK(n > 2);
    int32_t *tok = malloc((size_t)n * sizeof(int32_t));
    for (int i = 0; i < n; i++)
        tok[i] = (int32_t)cJSON_GetArrayItem(ids, i)->valuedouble;
    double ref_loss = cJSON_GetObjectItemCaseSensitive(j, "loss")->valuedouble;
    pk_model *m = load_model_or_exit(STORIES);
    int32_t len = n;
    pk_batch b = {1, n, tok, &len, NULL};
    double l0 = 0;
    PK_CHECK(pk_model_loss(m, &b, NULL, NULL, NULL, NULL, &l0) == PK_OK);
    PK_CHECK_NEAR(l0, ref_loss, 1e-4);

    char err[256];
    uint8_t *subset = NULL;
    PK_CHECK(pk_mezo_trainable(m, "layers\\.[01]\\.(attention|feed_forward)|norm", &subset, err,
                               sizeof err) == PK_OK);
    const uint8_t *masks[2] = {NULL, subset};
    const uint64_t seeds[2] = {1, 77};
    for (int mi = 0; mi < 2; mi++) {
        for (int si = 0; si < 2; si++) {
            double want = reference_projection(m, masks[mi], gbuf, glen, seeds[si]);
            double e[2];
            const float eps[2] = {1e-2f, 1e-3f};
            for (int k = 0; k < 2; k++) {
                /* the + and - passes side by side (paired) and one after the other: same bits */
                double g = 0, lp = 0, lm = 0, g2 = 1, lp2 = 1, lm2 = 1;
                pk_model_set_pairing(m, PK_PAIRING_OFF);
                PK_CHECK(pk_mezo_projected_grad_batch(m, masks[mi], seeds[si], PK_Z_GAUSSIAN,
                                                      eps[k], &b, NULL, &g, &lp, &lm) == PK_OK);
                pk_model_set_pairing(m, PK_PAIRING_ON);
                PK_CHECK(pk_mezo_projected_grad_batch(m, masks[mi], seeds[si], PK_Z_GAUSSIAN,
                                                      eps[k], &b, NULL, &g2, &lp2, &lm2) == PK_OK);
                PK_CHECK(g2 == g && lp2 == lp && lm2 == lm);
                e[k] = fabs(g - want) / fabs(want);
                fprintf(stderr, "mask %d seed %llu eps %g: g %.6f want %.6f rel err %.2e\n", mi,
                        (unsigned long long)seeds[si], (double)eps[k], g, want, e[k]);
            }
            PK_CHECK(e[1] < 0.01);
            PK_CHECK(e[1] < e[0]); /* O(eps^2) truncation error shrinks */
        }
    }
    /* the weights were never written by the probes */
    double l1 = 0;
    PK_CHECK(pk_model_loss(m, &b, NULL, NULL, NULL, NULL, &l1) == PK_OK);
    PK_CHECK(l1 == l0);
    free(subset);
    free(tok);
    pk_model_free(m);
    cJSON_Delete(j);
    free(js);
    free(gbuf);
}

static uint32_t fb(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static void test_update_formula_and_threads(void)
{
    pk_model *a = load_model_or_exit(STORIES), *b = load_model_or_exit(STORIES),
             *base = load_model_or_exit(STORIES);
    char ha[65], hb[65], h0[65];
    PK_CHECK(pk_weights_hash(base, h0) == PK_OK);
    PK_CHECK(pk_weights_hash(a, ha) == PK_OK);
    PK_CHECK(!strcmp(ha, h0)); /* stable across loads */
    const float lr = 1e-3f, g = 2.5f, wd = 0.1f;
    pk_threads_set(1);
    pk_mezo_update(a, NULL, 42, PK_Z_GAUSSIAN, lr, g, wd);
    pk_threads_set(2);
    pk_mezo_update(b, NULL, 42, PK_Z_GAUSSIAN, lr, g, wd);
    PK_CHECK(pk_weights_hash(a, ha) == PK_OK);
    PK_CHECK(pk_weights_hash(b, hb) == PK_OK);
    PK_CHECK(!strcmp(ha, hb)); /* any thread count, same bits */
    PK_CHECK(strcmp(ha, h0) != 0);
    /* every element follows w - lr * ((g * z) + (wd * w)), no wd on biases/norms */
    size_t bad = 0, checked = 0, norms = 0;
    for (size_t i = 0; i < pk_model_n_tensors(a); i++) {
        pk_tensor_info ta, t0;
        PK_CHECK(pk_model_tensor(a, i, &ta) == PK_OK && pk_model_tensor(base, i, &t0) == PK_OK);
        PK_CHECK(ta.dtype == PK_DTYPE_F32);
        norms += (size_t)ta.is_bias_or_norm;
        float *z = malloc(ta.numel * sizeof(float));
        pk_z_fill(42, ta.key, 0, ta.numel, PK_Z_GAUSSIAN, z);
        const float *w0 = t0.data, *w1 = ta.data;
        float twd = ta.is_bias_or_norm ? 0.0f : wd;
        for (size_t k = 0; k < ta.numel; k++) {
            volatile float x = g * z[k];
            volatile float y = twd * w0[k];
            volatile float t = twd != 0.0f ? x + y : x;
            volatile float u = lr * t;
            float want = w0[k] - u;
            bad += fb(want) != fb(w1[k]);
            checked++;
        }
        free(z);
    }
    PK_CHECK(norms > 0);
    PK_CHECK(checked > 200000);
    PK_CHECK_EQ(bad, 0);

    /* a subset leaves the other tensors untouched */
    uint8_t *mask = NULL;
    char err[256];
    PK_CHECK(pk_mezo_trainable(base, "bitfit", &mask, err, sizeof err) == PK_OK);
    pk_model *c = load_model_or_exit(STORIES);
    pk_mezo_update(c, mask, 5, PK_Z_RADEMACHER, 1e-2f, 1.0f, 0.0f);
    for (size_t i = 0; i < pk_model_n_tensors(c); i++) {
        pk_tensor_info tc, t0;
        PK_CHECK(pk_model_tensor(c, i, &tc) == PK_OK && pk_model_tensor(base, i, &t0) == PK_OK);
        int same = memcmp(tc.data, t0.data, tc.numel * 4) == 0;
        PK_CHECK(same == !mask[i]);
        PK_CHECK(mask[i] == (uint8_t)tc.is_bias_or_norm);
    }
    free(mask);
    pk_model_free(a);
    pk_model_free(b);
    pk_model_free(c);
    pk_model_free(base);
}

static void test_f16_update(void)
{
    const char *dir = PK_SHARED_DIR "/testdata/models/llama-tiny-f16";
    pk_model *a = load_model_or_exit(dir), *base = load_model_or_exit(dir);
    pk_mezo_update(a, NULL, 9, PK_Z_GAUSSIAN, 1e-2f, -1.5f, 0.0f);
    /* stochastic rounding: one of the two f16 neighbours of the exact result */
    f16_scan f = f16_update_scan(a, base, 9, 1e-2f, -1.5f, NULL);
    PK_CHECK(f.n16 > 0);
    PK_CHECK_EQ(f.bad, 0);
    PK_CHECK(f.changed > 0);
    pk_model_free(a);
    pk_model_free(base);
}

static void test_trainable_specs(void)
{
    pk_model *m = load_model_or_exit(STORIES);
    uint8_t *mask = NULL;
    char err[256] = "";
    PK_CHECK(pk_mezo_trainable(m, "all", &mask, err, sizeof err) == PK_OK);
    size_t n = pk_model_n_tensors(m), on = 0;
    for (size_t i = 0; i < n; i++)
        on += mask[i];
    PK_CHECK_EQ(on, n);
    free(mask);
    mask = NULL;
    PK_CHECK(pk_mezo_trainable(m, "^model\\.norm", &mask, err, sizeof err) == PK_OK);
    on = 0;
    for (size_t i = 0; i < n; i++)
        on += mask[i];
    PK_CHECK_EQ(on, 1);
    free(mask);
    mask = NULL;
    PK_CHECK(pk_mezo_trainable(m, "([", &mask, err, sizeof err) == PK_ERR_ARG);
    PK_CHECK(mask == NULL && strstr(err, "([") != NULL);
    PK_CHECK(pk_mezo_trainable(m, "no_such_tensor", &mask, err, sizeof err) == PK_ERR_ARG);
    PK_CHECK(strstr(err, "'no_such_tensor' match no tensor") != NULL && strstr(err, "--") == NULL);
    /* top:K: the tensors of the last K blocks, by their names' block number, nothing else */
    int L = pk_model_n_layers(m);
    PK_CHECK_EQ(L, 5);
    for (int k = 1; k <= L; k++) {
        char spec[16];
        snprintf(spec, sizeof spec, "top:%d", k);
        PK_CHECK(pk_mezo_trainable(m, spec, &mask, err, sizeof err) == PK_OK);
        size_t in_top = 0, blocks = 0;
        for (size_t i = 0; mask && i < n; i++) {
            pk_tensor_info ti;
            PK_CHECK(pk_model_tensor(m, i, &ti) == PK_OK);
            int l = pk_tensor_layer(ti.name);
            PK_CHECK_EQ(mask[i], (uint8_t)(l >= L - k));
            in_top += mask[i];
            blocks += l >= 0;
        }
        PK_CHECK(in_top > 0 && (k < L ? in_top < blocks : in_top == blocks));
        free(mask);
        mask = NULL;
    }
    /* top-mlp:K: the MLP halves of the last K blocks (ln2 and the FFN, by the model's layout),
     * the attention halves and everything else not */
    for (int k = 1; k <= L; k++) {
        char spec[32];
        snprintf(spec, sizeof spec, "top-mlp:%d", k);
        PK_CHECK(pk_mezo_trainable(m, spec, &mask, err, sizeof err) == PK_OK);
        size_t in_mlp = 0;
        for (size_t i = 0; mask && i < n; i++) {
            pk_tensor_info ti;
            PK_CHECK(pk_model_tensor(m, i, &ti) == PK_OK);
            int l = pk_tensor_layer(ti.name);
            int half = strstr(ti.name, ".mlp.") || strstr(ti.name, "post_attention_layernorm");
            PK_CHECK_EQ(mask[i], (uint8_t)(l >= L - k && half));
            in_mlp += mask[i];
        }
        PK_CHECK_EQ((long long)in_mlp, 4LL * k); /* ln2, gate, up, down per block */
        free(mask);
        mask = NULL;
    }
    const char *bad_top[] = {"top:0",  "top:6",  "top:",      "top:x",     "top:1x",
                             "top:-1", "top: 1", "top-mlp:0", "top-mlp:6", "top-mlp:"};
    for (size_t j = 0; j < sizeof bad_top / sizeof bad_top[0]; j++) {
        err[0] = '\0';
        PK_CHECK(pk_mezo_trainable(m, bad_top[j], &mask, err, sizeof err) == PK_ERR_ARG);
        PK_CHECK(mask == NULL && strstr(err, bad_top[j]) != NULL &&
                 strstr(err, "K from 1 to 5") != NULL);
    }
    pk_model_free(m);
}

static void test_schedule_and_seeds(void)
{
    pk_mezo_params p = pk_mezo_default_params();
    p.lr = 1.0f;
    p.steps_total = 110;
    p.warmup = 10;
    PK_CHECK_NEAR(pk_mezo_lr_at(&p, 0), 0.1, 1e-7);
    PK_CHECK_NEAR(pk_mezo_lr_at(&p, 9), 1.0, 1e-7);
    PK_CHECK_NEAR(pk_mezo_lr_at(&p, 50), 1.0, 1e-7);
    p.schedule = PK_SCHEDULE_LINEAR;
    PK_CHECK_NEAR(pk_mezo_lr_at(&p, 10), 1.0, 1e-7);
    PK_CHECK_NEAR(pk_mezo_lr_at(&p, 60), 0.5, 1e-6);
    p.schedule = PK_SCHEDULE_COSINE;
    PK_CHECK_NEAR(pk_mezo_lr_at(&p, 60), 0.5, 1e-6);
    PK_CHECK_NEAR(pk_mezo_lr_at(&p, 35), 0.5 * (1 + cos(3.14159265358979 * 0.25)), 1e-6);
    PK_CHECK(pk_mezo_lr_at(&p, 109) < 0.001f);
    pk_schedule s;
    PK_CHECK(pk_schedule_parse("cosine", &s) == 0 && s == PK_SCHEDULE_COSINE);
    PK_CHECK(pk_schedule_parse("exp", &s) == -1);
    /* step seeds: pure and distinct */
    PK_CHECK(pk_mezo_step_seed(1, 5, 0) == pk_mezo_step_seed(1, 5, 0));
    PK_CHECK(pk_mezo_step_seed(1, 5, 0) != pk_mezo_step_seed(1, 6, 0));
    PK_CHECK(pk_mezo_step_seed(1, 5, 0) != pk_mezo_step_seed(1, 5, 1));
    PK_CHECK(pk_mezo_step_seed(1, 5, 0) != pk_mezo_step_seed(2, 5, 0));
}

static void test_batch_indices(void)
{
    size_t idx[7], again[7];
    size_t seen[10] = {0};
    /* 10 examples, B=5, 1 micro: steps 0 and 1 together are one epoch = a permutation */
    for (int step = 0; step < 2; step++) {
        PK_CHECK(pk_batch_indices(3, step, 0, 1, 10, 5, idx) == PK_OK);
        for (int i = 0; i < 5; i++)
            seen[idx[i]]++;
    }
    for (int i = 0; i < 10; i++)
        PK_CHECK_EQ(seen[i], 1);
    PK_CHECK(pk_batch_indices(3, 17, 1, 2, 10, 7, idx) == PK_OK);
    PK_CHECK(pk_batch_indices(3, 17, 1, 2, 10, 7, again) == PK_OK);
    PK_CHECK(memcmp(idx, again, sizeof idx) == 0);
    PK_CHECK(pk_batch_indices(4, 17, 1, 2, 10, 7, again) == PK_OK);
    PK_CHECK(memcmp(idx, again, sizeof idx) != 0);
    PK_CHECK(pk_batch_indices(3, 0, 0, 1, 0, 7, idx) == PK_ERR_ARG);
}

/* A seed log is validated row by row before anything is replayed: every value finite and in
 * a run's range, steps from 0 in order, each with its q-indices complete. The error names the
 * line. */
static void expect_bad_seedlog(const char *wd, const char *rows, int nrows, int line)
{
    char path[256], err[256] = "", want[16];
    pk_seedlog log;
    snprintf(path, sizeof path, "/tmp/pk-seedlog-bad-%d.txt", (int)getpid());
    FILE *f = fopen(path, "w");
    PK_CHECK(f != NULL);
    if (!f)
        return;
    fprintf(f,
            "pocketllm-seedlog 1\nbase_hash %064d\nz gaussian\nweight_decay %s\n"
            "trainable all\nsteps %d\n%s",
            0, wd, nrows, rows);
    fclose(f);
    PK_CHECK_EQ(pk_seedlog_read(path, &log, err, sizeof err), PK_ERR_FORMAT);
    snprintf(want, sizeof want, ":%d:", line);
    if (!strstr(err, want)) {
        fprintf(stderr, "want line %d, got: %s\n", line, err);
        PK_CHECK(0);
    }
    PK_CHECK(log.rows == NULL && log.n_rows == 0);
    remove(path);
}

static void test_seedlog_validation(void)
{
    const char *ok = "0 0 1 0x1p-3 0x1p-10 0x1p-10 1 1\n";
    char rows[512];
    static const char *const bad_values[] = {
        "0 0 1 nan 0x1p-10 0x1p-10 1 1\n",      "0 0 1 0x1p-3 inf 0x1p-10 1 1\n",
        "0 0 1 0x1p-3 0x1p100 0x1p-10 1 1\n",   "0 0 1 0x1p-3 -0x1p-10 0x1p-10 1 1\n",
        "0 0 1 0x1p-3 0x1p-10 0 1 1\n",         "0 0 1 0x1p-3 0x1p-10 nan 1 1\n",
        "0 0 1 0x1p-3 0x1p-10 0x1p-10 inf 1\n",
    };
    for (size_t i = 0; i < sizeof bad_values / sizeof bad_values[0]; i++) {
        snprintf(rows, sizeof rows, "%s%s", ok, bad_values[i]);
        expect_bad_seedlog("0", rows, 2, 8);
    }
    expect_bad_seedlog("nan", ok, 1, 4);
    expect_bad_seedlog("0x1p100", ok, 1, 4);
    snprintf(rows, sizeof rows, "%s%s", ok, ok); /* duplicate step */
    expect_bad_seedlog("0", rows, 2, 8);
    snprintf(rows, sizeof rows, "%s2 0 1 1 0x1p-10 0x1p-10 1 1\n", ok); /* missing step 1 */
    expect_bad_seedlog("0", rows, 2, 8);
    expect_bad_seedlog("0", "1 0 1 1 0x1p-10 0x1p-10 1 1\n", 1, 7); /* not from 0 */
    /* two perturbations per step: swapped q rows, an incomplete last step, a step with more */
    expect_bad_seedlog("0", "0 1 1 1 0x1p-10 0x1p-10 1 1\n0 0 1 1 0x1p-10 0x1p-10 1 1\n", 2, 7);
    expect_bad_seedlog("0",
                       "0 0 1 1 0x1p-10 0x1p-10 1 1\n0 1 1 1 0x1p-10 0x1p-10 1 1\n"
                       "1 0 1 1 0x1p-10 0x1p-10 1 1\n",
                       3, 9);
    expect_bad_seedlog("0",
                       "0 0 1 1 0x1p-10 0x1p-10 1 1\n1 0 1 1 0x1p-10 0x1p-10 1 1\n"
                       "1 1 1 1 0x1p-10 0x1p-10 1 1\n",
                       3, 9);
}

static void test_seedlog_and_checkpoint(void)
{
    pk_model *a = load_model_or_exit(STORIES), *b = load_model_or_exit(STORIES);
    char err[256] = "", path[256], h0[65], ha[65], hb[65];
    PK_CHECK(pk_weights_hash(a, h0) == PK_OK);
    pk_seedlog log;
    memset(&log, 0, sizeof log);
    memcpy(log.base_hash, h0, 65);
    log.z = PK_Z_GAUSSIAN;
    log.weight_decay = 0.01f;
    strcpy(log.trainable, "all");
    log.n_rows = 3;
    log.rows = calloc(3, sizeof *log.rows);
    for (int i = 0; i < 3; i++) {
        log.rows[i].step = i;
        log.rows[i].seed = pk_mezo_step_seed(7, i, 0);
        log.rows[i].g = 0.1f * (float)(i + 1) + 1e-7f;
        log.rows[i].lr = 3e-4f;
        log.rows[i].eps = 1e-3f;
        log.rows[i].loss_plus = 1.25f;
        log.rows[i].loss_minus = 1.2f;
    }
    snprintf(path, sizeof path, "/tmp/pk-seedlog-%d.txt", (int)getpid());
    PK_CHECK(pk_seedlog_write(path, &log, err, sizeof err) == PK_OK);
    pk_seedlog back;
    PK_CHECK(pk_seedlog_read(path, &back, err, sizeof err) == PK_OK);
    PK_CHECK_EQ(back.n_rows, 3);
    PK_CHECK(!strcmp(back.base_hash, h0) && back.weight_decay == 0.01f &&
             !strcmp(back.trainable, "all"));
    for (int i = 0; i < 3 && back.rows; i++) {
        PK_CHECK(back.rows[i].seed == log.rows[i].seed);
        PK_CHECK(fb(back.rows[i].g) == fb(log.rows[i].g));
        PK_CHECK(fb(back.rows[i].lr) == fb(log.rows[i].lr));
    }
    PK_CHECK(pk_seedlog_replay(a, &back, err, sizeof err) == PK_OK);
    pk_mezo_replay_rows(b, NULL, PK_Z_GAUSSIAN, 0.01f, log.rows, 3);
    PK_CHECK(pk_weights_hash(a, ha) == PK_OK && pk_weights_hash(b, hb) == PK_OK);
    PK_CHECK(!strcmp(ha, hb) && strcmp(ha, h0) != 0);
    /* replaying onto the wrong base is refused */
    PK_CHECK(pk_seedlog_replay(a, &back, err, sizeof err) == PK_ERR_ARG);
    PK_CHECK(strstr(err, "hash") != NULL);
    pk_seedlog_clear(&back);

    /* malformed files name the line */
    FILE *f = fopen(path, "w");
    fprintf(f,
            "pocketllm-seedlog 1\nbase_hash %s\nz gaussian\nweight_decay 0\ntrainable all\n"
            "steps 2\n0 0 1 0x1p-3 0x1p-10 0x1p-10 1 1\n1 0 2 zz 1 1 1 1\n",
            h0);
    fclose(f);
    PK_CHECK(pk_seedlog_read(path, &back, err, sizeof err) == PK_ERR_FORMAT);
    PK_CHECK(strstr(err, ":8:") != NULL);
    f = fopen(path, "w");
    fprintf(f, "hello\n");
    fclose(f);
    PK_CHECK(pk_seedlog_read(path, &back, err, sizeof err) == PK_ERR_FORMAT);
    PK_CHECK(strstr(err, ":1:") != NULL);
    PK_CHECK(pk_seedlog_read("/nonexistent/x", &back, err, sizeof err) == PK_ERR_IO);
    remove(path);

    /* checkpoint round trip: b gets a's weights back */
    void *blob = NULL;
    size_t len = 0;
    PK_CHECK(pk_checkpoint_pack(a, NULL, &blob, &len) == PK_OK);
    pk_model *c = load_model_or_exit(STORIES);
    PK_CHECK(pk_checkpoint_unpack(c, NULL, blob, len, NULL, 0) == PK_OK);
    char hc[65];
    PK_CHECK(pk_weights_hash(c, hc) == PK_OK && !strcmp(hc, ha));
    PK_CHECK(pk_checkpoint_unpack(c, NULL, blob, len - 1, NULL, 0) == PK_ERR_FORMAT);
    free(blob);
    pk_model_free(c);
    free(log.rows);
    pk_model_free(a);
    pk_model_free(b);
}

typedef struct lmctx {
    pk_batch b;
} lmctx;

static pk_status lm_loss(void *user, pk_model *m, int micro, const pk_perturb *pert, double *loss)
{
    (void)micro;
    return pk_model_loss(m, &((lmctx *)user)->b, NULL, pert, NULL, NULL, loss);
}

static void test_step_spsa_and_determinism(void)
{
    int32_t ids[2 * 16], lens[2] = {16, 12};
    for (int i = 0; i < 32; i++)
        ids[i] = (int32_t)(1 + (i * 37) % 500);
    lmctx c = {{2, 16, ids, lens, NULL}};
    pk_model *a = load_model_or_exit(STORIES), *b = load_model_or_exit(STORIES);
    pk_mezo_params p = pk_mezo_default_params();
    p.lr = 1e-3f;
    p.spsa_q = 3;
    p.clip_g = 0.5f;
    p.seed = 11;
    p.weight_decay = 0.01f;
    pk_step_row ra[3], rb[3];
    pk_threads_set(1);
    PK_CHECK(pk_mezo_step(a, NULL, &p, 4, 1, lm_loss, &c, ra, NULL, NULL) == PK_OK);
    pk_threads_set(2);
    PK_CHECK(pk_mezo_step(b, NULL, &p, 4, 1, lm_loss, &c, rb, NULL, NULL) == PK_OK);
    char ha[65], hb[65];
    PK_CHECK(pk_weights_hash(a, ha) == PK_OK && pk_weights_hash(b, hb) == PK_OK);
    PK_CHECK(!strcmp(ha, hb));
    for (int k = 0; k < 3; k++) {
        PK_CHECK(ra[k].q_index == k && ra[k].step == 4);
        PK_CHECK(ra[k].seed == pk_mezo_step_seed(11, 4, k));
        PK_CHECK(fabsf(ra[k].g) <= 0.5f);
        PK_CHECK(fb(ra[k].lr) == fb(1e-3f / 3.0f));
        PK_CHECK(fb(ra[k].g) == fb(rb[k].g));
    }
    /* replaying the rows on a fresh copy gives the same weights */
    pk_model *r = load_model_or_exit(STORIES);
    pk_mezo_replay_rows(r, NULL, PK_Z_GAUSSIAN, 0.01f, ra, 3);
    char hr[65];
    PK_CHECK(pk_weights_hash(r, hr) == PK_OK && !strcmp(hr, ha));
    pk_model_free(r);
    pk_model_free(a);
    pk_model_free(b);
}

/* The engine's sweep (pk_model_loss_sweep: N perturbations of the batch side by side in one
 * pass over the weights) gives exactly the losses the estimators log: fzoo's N one-sided
 * perturbations and its unperturbed loss, with and without layer sampling (each perturbation its
 * own layers), and spsa's q pairs; at 1 and 3 threads. So the estimators can take their losses
 * from one sweep and their seed logs replay to the same bits. */
static void test_sweep_matches_estimators(void)
{
    int32_t ids[2 * 16], lens[2] = {16, 13};
    for (int i = 0; i < 32; i++)
        ids[i] = (int32_t)(2 + (i * 53) % 500);
    lmctx c = {{2, 16, ids, lens, NULL}};
    pk_model *m = load_model_or_exit(STORIES);
    size_t nt = pk_model_n_tensors(m);
    enum { N = 4 };
    uint8_t *mk[N];
    const uint8_t *masks[N];
    uint64_t seeds[N];
    for (int i = 0; i < N; i++) {
        mk[i] = malloc(nt);
        masks[i] = mk[i];
    }
    for (int cfg = 0; cfg < 3; cfg++) { /* fzoo, fzoo + layer sampling, spsa q = N */
        pk_mezo_params p = pk_mezo_default_params();
        p.seed = 5 + (uint64_t)cfg;
        p.lr = 1e-4f;
        p.z = cfg < 2 ? PK_Z_RADEMACHER : PK_Z_GAUSSIAN;
        p.estimator = cfg < 2 ? PK_EST_FZOO : PK_EST_SPSA;
        p.perturbations = N;
        p.spsa_q = N;
        p.perturb_layers = cfg == 1 ? 2 : 0;
        int64_t step = 7;
        for (int i = 0; i < N; i++) {
            seeds[i] = pk_mezo_step_seed(p.seed, step, i);
            pk_mezo_layer_mask(m, NULL, &p, seeds[i], mk[i]);
        }
        int fz = cfg < 2;
        pk_sweep s = {{0, p.eps, p.z, NULL, !fz}, N, seeds, masks, fz};
        int E = pk_sweep_evals(&s);
        double mean[2][2 * N];
        for (int v = 0; v < 2; v++) {
            pk_threads_set(v ? 3 : 1);
            pk_model_set_pairing(m, PK_PAIRING_ON);
            PK_CHECK(pk_model_loss_sweep(m, &c.b, NULL, &s, NULL, NULL, mean[v]) == PK_OK);
            pk_model_set_pairing(m, PK_PAIRING_AUTO);
        }
        PK_CHECK(!memcmp(mean[0], mean[1], (size_t)E * sizeof(double)));
        pk_threads_set(2);
        char err[256] = "";
        pk_mezo_state *st = NULL;
        PK_CHECK(pk_mezo_state_new(m, NULL, &p, &st, err, sizeof err) == PK_OK);
        pk_step_row rows[2 * N];
        PK_CHECK(pk_mezo_step_ex(m, NULL, &p, st, step, 1, lm_loss, &c, rows, NULL, NULL) == PK_OK);
        for (int i = 0; i < N; i++) {
            float plus = (float)mean[0][fz ? 1 + i : 2 * i];
            float other = (float)mean[0][fz ? 0 : 2 * i + 1];
            PK_CHECK_EQ(rows[i].seed, seeds[i]);
            PK_CHECK(fb(rows[i].loss_plus) == fb(plus));
            PK_CHECK(fb(rows[i].loss_minus) == fb(other));
            PK_CHECK(plus != other); /* each perturbation moved the loss */
        }
        pk_mezo_state_free(st);
    }
    for (int i = 0; i < N; i++)
        free(mk[i]);
    pk_model_free(m);
}

/* pk_weights_hash is the documented byte layout through BLAKE2b-256, computed here straight with
 * libsodium: the hash recorded in runs and seed logs must not change with its implementation. */
static void test_weights_hash_layout(void)
{
    pk_model *m = load_model_or_exit(STORIES);
    crypto_generichash_state st;
    unsigned char out[32];
    char want[65], got[65];
    PK_CHECK(crypto_generichash_init(&st, NULL, 0, sizeof out) == 0);
    for (size_t i = 0; i < pk_model_n_tensors(m); i++) {
        pk_tensor_info ti;
        PK_CHECK(pk_model_tensor(m, i, &ti) == PK_OK);
        const char *dn = pk_dtype_name(ti.dtype);
        unsigned char b[8 * 5];
        size_t nb = 0;
        int64_t dims[5] = {ti.ndim, 0, 0, 0, 0};
        for (int d = 0; d < ti.ndim; d++)
            dims[d + 1] = ti.shape[d];
        for (int d = 0; d <= ti.ndim; d++)
            for (int k = 0; k < 8; k++)
                b[nb++] = (unsigned char)((uint64_t)dims[d] >> (8 * k));
        crypto_generichash_update(&st, (const unsigned char *)ti.name, strlen(ti.name) + 1);
        crypto_generichash_update(&st, (const unsigned char *)dn, strlen(dn) + 1);
        crypto_generichash_update(&st, b, nb);
        crypto_generichash_update(&st, ti.data, ti.numel * pk_dtype_size(ti.dtype));
    }
    crypto_generichash_final(&st, out, sizeof out);
    sodium_bin2hex(want, sizeof want, out, sizeof out);
    PK_CHECK(pk_weights_hash(m, got) == PK_OK);
    PK_CHECK(!strcmp(got, want));
    pk_model_free(m);
}

/* A loss function that diverges at perturbation `bad` of a step: loss+ = value there. */
typedef struct divctx {
    int calls, bad;
    double value;
} divctx;

static pk_status diverging_loss(void *user, pk_model *m, int micro, const pk_perturb *pert,
                                double *loss)
{
    divctx *c = user;
    (void)m;
    (void)micro;
    (void)pert;
    loss[0] = c->calls == c->bad ? c->value : 2.0;
    loss[1] = 1.0;
    c->calls++;
    return PK_OK;
}

static void test_step_diverges(void)
{
    pk_model *m = load_model_or_exit(STORIES);
    char h0[65], h1[65];
    PK_CHECK(pk_weights_hash(m, h0) == PK_OK);
    pk_mezo_params p = pk_mezo_default_params();
    p.spsa_q = 3;
    p.clip_g = 0.5f; /* an infinite g is a divergence, not a g to clip */
    const double values[3] = {(double)INFINITY, (double)NAN, 1e300};
    for (int v = 0; v < 3; v++) {
        divctx c = {0, 1, values[v]};
        pk_step_row rows[3];
        memset(rows, 0, sizeof rows);
        PK_CHECK_EQ(pk_mezo_step(m, NULL, &p, 2, 1, diverging_loss, &c, rows, NULL, NULL),
                    PK_ERR_NUMERIC);
        PK_CHECK_EQ(c.calls, 2); /* stopped at the diverging perturbation */
        PK_CHECK(isfinite(rows[0].g) && fabsf(rows[0].g) <= 0.5f);
        PK_CHECK(!isfinite(rows[1].loss_plus) && rows[1].q_index == 1 && rows[1].step == 2);
        PK_CHECK(v == 2 ? fabsf(rows[1].g) <= 0.5f : !isfinite(rows[1].g));
        PK_CHECK(rows[1].seed == pk_mezo_step_seed(p.seed, 2, 1));
    }
    /* no weight was written */
    PK_CHECK(pk_weights_hash(m, h1) == PK_OK && !strcmp(h0, h1));
    pk_model_free(m);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    test_probe_vs_reference_gradient();
    test_update_formula_and_threads();
    test_f16_update();
    test_trainable_specs();
    test_schedule_and_seeds();
    test_batch_indices();
    test_seedlog_and_checkpoint();
    test_seedlog_validation();
    test_step_spsa_and_determinism();
    test_sweep_matches_estimators();
    test_weights_hash_layout();
    test_step_diverges();
    return PK_TEST_DONE();
}
