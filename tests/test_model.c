/* test_model.c: the engine against PK_SHARED_DIR/testdata/models: reference logits (1e-4 abs) and
 * losses for every architecture, padded mixed-length batches equal to each sequence alone,
 * stories260k logits and 100-token greedy generation with the KV cache, the MeZO perturbation
 * hook against explicitly perturbed weights, paired +/- passes and sweeps of N perturbations
 * equal to single ones, the FFN in row chunks, and no allocation after reservation. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "model_impl.h" /* pk_model_set_block_rows, lspan */
#include "model_test_util.h"
#include "pk_model.h"
#include "pk_test.h"
#include "test_util.h"

/* testdata/models/<name>/<file> (owned, NUL-terminated), or NULL with a message. */
static char *model_file(const char *name, const char *file, size_t *len)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/testdata/models/%s/%s", PK_SHARED_DIR, name, file);
    char *b = slurp(path, len);
    if (!b)
        fprintf(stderr, "FAIL: cannot open %s (PK_SHARED_DIR=%s)\n", path, PK_SHARED_DIR);
    return b;
}

static pk_model *load(const char *name)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/testdata/models/%s", PK_SHARED_DIR, name);
    return load_model_checked(dir);
}

static float max_abs_diff(const float *a, const float *b, size_t n)
{
    float d = 0;
    for (size_t i = 0; i < n; i++) {
        float e = fabsf(a[i] - b[i]);
        d = e > d || isnan(e) ? e : d;
    }
    return d;
}

/* The sequences of a model's reference.json (at most 8 of at most 128 tokens) and where each
 * one's logits start in reference_logits.f32. */
typedef struct reference {
    int ns, Tmax;         /* sequences; the longest one's length */
    int32_t ids[8][128];  /* token ids */
    int32_t lens[8];      /* tokens per sequence */
    double loss[8];       /* mean loss, NaN where the reference has none */
    size_t off[8], total; /* offsets of each sequence's (len, V) logits; floats in all */
} reference;

static void parse_reference(const cJSON *root, int V, reference *r)
{
    const cJSON *seqs = cJSON_GetObjectItem(root, "sequences");
    r->ns = cJSON_GetArraySize(seqs);
    r->Tmax = 0;
    r->total = 0;
    PK_CHECK(r->ns >= 1 && r->ns <= 8);
    for (int s = 0; s < r->ns && s < 8; s++) {
        const cJSON *sq = cJSON_GetArrayItem(seqs, s);
        const cJSON *ia = cJSON_GetObjectItem(sq, "ids");
        const cJSON *lo = cJSON_GetObjectItem(sq, "loss");
        r->lens[s] = cJSON_GetArraySize(ia);
        for (int t = 0; t < r->lens[s]; t++)
            r->ids[s][t] = cJSON_GetArrayItem(ia, t)->valueint;
        r->loss[s] = lo ? lo->valuedouble : (double)NAN;
        r->off[s] = r->total;
        r->total += (size_t)r->lens[s] * V;
        r->Tmax = r->lens[s] > r->Tmax ? r->lens[s] : r->Tmax;
    }
}

/* Each sequence alone: logits within 1e-4 of the reference, and its mean loss. */
static void check_alone(pk_model *m, const char *name, const reference *r, const float *ref)
{
    int V = pk_model_vocab_size(m);
    for (int s = 0; s < r->ns; s++) {
        float *lg = malloc((size_t)r->lens[s] * V * 4);
        pk_batch b = {1, r->lens[s], r->ids[s], &r->lens[s], NULL};
        PK_CHECK(pk_model_logits(m, &b, NULL, lg) == PK_OK);
        float d = max_abs_diff(lg, ref + r->off[s], (size_t)r->lens[s] * V);
        fprintf(stderr, "%s seq %d: max |logit - ref| = %.3g\n", name, s, (double)d);
        PK_CHECK(d <= 1e-4f);
        if (!isnan(r->loss[s])) {
            double mean = 0;
            PK_CHECK(pk_model_loss(m, &b, NULL, NULL, NULL, NULL, &mean) == PK_OK);
            PK_CHECK_NEAR(mean, r->loss[s], 1e-4);
        }
        free(lg);
    }
}

/* A causal model's per-sequence losses of the padded batch b, and its label logits and
 * log-probabilities at chosen positions, against the batch's full logits lg (ns, Tmax, V). */
static void check_batch_loss_and_select(pk_model *m, const pk_batch *b, const reference *r,
                                        const float *lg)
{
    int V = pk_model_vocab_size(m), ns = r->ns, Tmax = r->Tmax;
    double nll[8], mean = 0;
    int32_t cnt[8];
    PK_CHECK(pk_model_loss(m, b, NULL, NULL, nll, cnt, &mean) == PK_OK);
    for (int s = 0; s < ns; s++) {
        PK_CHECK_EQ(cnt[s], r->lens[s] - 1);
        if (!isnan(r->loss[s]))
            PK_CHECK_NEAR(nll[s] / cnt[s], r->loss[s], 1e-4);
    }
    /* label logits at chosen positions equal the full logits */
    int32_t sb[2] = {0, ns - 1}, st[2] = {r->lens[0] - 1, 0}, want[3] = {0, 5, V - 1};
    float sel[6], lp[6];
    PK_CHECK(pk_model_select_logits(m, b, NULL, 2, sb, st, 3, want, sel) == PK_OK);
    PK_CHECK(pk_model_select_logprobs(m, b, NULL, 2, sb, st, 3, want, lp) == PK_OK);
    for (int k = 0; k < 2; k++) {
        const float *row = lg + ((size_t)sb[k] * Tmax + st[k]) * V;
        double mx = (double)row[0], sum = 0;
        for (int j = 1; j < V; j++)
            mx = (double)row[j] > mx ? (double)row[j] : mx;
        for (int j = 0; j < V; j++)
            sum += exp((double)row[j] - mx);
        for (int j = 0; j < 3; j++) {
            PK_CHECK_NEAR(sel[k * 3 + j], row[want[j]], 1e-5);
            PK_CHECK_NEAR(lp[k * 3 + j], (double)row[want[j]] - mx - log(sum), 1e-4);
        }
    }
}

/* All sequences as one padded batch (padding filled with junk ids that must not matter). */
static void check_batched(pk_model *m, const reference *r, const float *ref)
{
    int V = pk_model_vocab_size(m), ns = r->ns, Tmax = r->Tmax;
    int32_t *bids = malloc((size_t)ns * Tmax * 4);
    float *lg = malloc((size_t)ns * Tmax * V * 4);
    for (int s = 0; s < ns; s++) {
        for (int t = 0; t < Tmax; t++)
            bids[s * Tmax + t] = t < r->lens[s] ? r->ids[s][t] : (7 * t + 3) % V;
    }
    pk_batch b = {ns, Tmax, bids, r->lens, NULL};
    PK_CHECK(pk_model_logits(m, &b, NULL, lg) == PK_OK);
    for (int s = 0; s < ns; s++) {
        float d = max_abs_diff(lg + (size_t)s * Tmax * V, ref + r->off[s], (size_t)r->lens[s] * V);
        PK_CHECK(d <= 1e-4f);
    }
    if (pk_model_is_causal(m))
        check_batch_loss_and_select(m, &b, r, lg);
    else
        PK_CHECK(pk_model_loss(m, &b, NULL, NULL, NULL, NULL, NULL) == PK_ERR_UNSUPPORTED);
    free(bids);
    free(lg);
}

/* Reference logits and losses of one tiny model, alone and as a padded batch. */
static void check_reference(const char *name)
{
    reference r;
    pk_model *m = load(name);
    char *js = model_file(name, "reference.json", NULL);
    size_t rl = 0;
    float *ref = (float *)model_file(name, "reference_logits.f32", &rl);
    cJSON *root = js ? cJSON_Parse(js) : NULL;
    PK_CHECK(m && root && ref);
    if (m && root && ref) {
        parse_reference(root, pk_model_vocab_size(m), &r);
        PK_CHECK_EQ(r.total * 4, rl);
        check_alone(m, name, &r, ref);
        check_batched(m, &r, ref);
    }
    cJSON_Delete(root);
    free(js);
    free(ref);
    pk_model_free(m);
}

static int32_t *json_ids(const cJSON *a, int *n)
{
    *n = cJSON_GetArraySize(a);
    int32_t *v = malloc((size_t)*n * 4 + 4);
    for (int i = 0; i < *n; i++)
        v[i] = cJSON_GetArrayItem(a, i)->valueint;
    return v;
}

/* Greedy generation from BOS through the KV cache reproduces the reference tokens, each step's
 * logits equal the full pass's lg (n, V), and a prompt fed in one call equals it fed token by
 * token. */
static void check_kv_cache(pk_model *m, const int32_t *in, const float *lg, const int32_t *greedy,
                           int ng)
{
    int V = pk_model_vocab_size(m);
    pk_gen *g = NULL;
    pk_sampler *smp = NULL;
    pk_sampler_params sp = {0.0f, 0, 1.0f, 1};
    PK_CHECK(pk_gen_create(m, ng + 1, &g) == PK_OK);
    PK_CHECK(pk_sampler_create(sp, V, &smp) == PK_OK);
    int32_t tok = greedy[0];
    int match = 1;
    float *row = malloc((size_t)V * 4);
    float kvdiff = 0;
    for (int i = 1; g && smp && i < ng; i++) {
        PK_CHECK(pk_gen_feed(g, &tok, 1, NULL, row) == PK_OK);
        float e = max_abs_diff(row, lg + (size_t)(i - 1) * V, (size_t)V);
        kvdiff = e > kvdiff ? e : kvdiff;
        tok = pk_sampler_sample(smp, row);
        if (tok != greedy[i]) {
            fprintf(stderr, "greedy token %d: got %d want %d\n", i, tok, greedy[i]);
            match = 0;
            break;
        }
    }
    PK_CHECK(match);
    PK_CHECK_EQ(ng, 101);
    PK_CHECK(kvdiff <= 1e-4f);
    /* a prompt fed in one call then one token equals the same feed token by token */
    pk_gen_reset(g);
    PK_CHECK(pk_gen_feed(g, in, 10, NULL, row) == PK_OK);
    PK_CHECK(max_abs_diff(row, lg + 9 * (size_t)V, (size_t)V) <= 1e-4f);
    PK_CHECK_EQ(pk_gen_pos(g), 10);
    free(row);
    pk_sampler_free(smp);
    pk_gen_free(g);
}

/* Sampling with a seed is deterministic, and at temperature 0.8 it leaves the greedy path. */
static void check_seeded_sampling(int V, const float *lg, const int32_t *greedy)
{
    pk_sampler_params sp2 = {0.8f, 40, 0.9f, 42};
    pk_sampler *s1 = NULL, *s2 = NULL;
    PK_CHECK(pk_sampler_create(sp2, V, &s1) == PK_OK);
    PK_CHECK(pk_sampler_create(sp2, V, &s2) == PK_OK);
    int same = 1, differs_from_greedy = 0;
    for (int i = 0; i < 50; i++) {
        int32_t a = pk_sampler_sample(s1, lg + (size_t)i * V);
        int32_t c = pk_sampler_sample(s2, lg + (size_t)i * V);
        same &= a == c;
        differs_from_greedy |= a != greedy[i + 1];
    }
    PK_CHECK(same);
    PK_CHECK(differs_from_greedy);
    pk_sampler_free(s1);
    pk_sampler_free(s2);
}

/* stories260k: logits of the reference input, then generation and sampling on them. */
static void check_stories(void)
{
    pk_model *m = load("stories260k");
    char *js = model_file("stories260k", "reference/logits_f32le.json", NULL);
    size_t rl = 0;
    float *ref = (float *)model_file("stories260k", "reference/logits_f32le.bin", &rl);
    char *gj = model_file("stories260k", "reference/greedy_from_bos.json", NULL);
    cJSON *root = js ? cJSON_Parse(js) : NULL, *groot = gj ? cJSON_Parse(gj) : NULL;
    PK_CHECK(m && ref && root && groot);
    if (!m || !ref || !root || !groot)
        goto out;
    int n = 0, ng = 0, V = pk_model_vocab_size(m);
    int32_t *in = json_ids(cJSON_GetObjectItem(root, "input_tokens"), &n);
    int32_t *greedy = json_ids(cJSON_GetObjectItem(groot, "greedy_tokens"), &ng);
    PK_CHECK_EQ((size_t)n * V * 4, rl);
    float *lg = malloc((size_t)n * V * 4);
    pk_batch b = {1, n, in, &n, NULL};
    PK_CHECK(pk_model_logits(m, &b, NULL, lg) == PK_OK);
    float d = max_abs_diff(lg, ref, (size_t)n * V);
    fprintf(stderr, "stories260k: max |logit - ref| over [%d, %d] = %.3g\n", n, V, (double)d);
    PK_CHECK(d <= 1e-4f);
    check_kv_cache(m, in, lg, greedy, ng);
    check_seeded_sampling(V, lg, greedy);
    free(greedy);
    free(lg);
    free(in);
out:
    cJSON_Delete(root);
    cJSON_Delete(groot);
    free(js);
    free(gj);
    free(ref);
    pk_model_free(m);
}

/* The hook equals explicitly perturbed weights (f32 model, all tensors and a subset). */
/* block_rows: the weight scratch's size in rows (0 = default; small = many blocks per tensor) */
static void check_perturb(const char *name, int block_rows)
{
    pk_model *m = load(name);
    if (!m)
        return;
    pk_model_set_block_rows(m, block_rows);
    int V = pk_model_vocab_size(m), T = 9;
    int32_t ids[9] = {1, 17, 250, 33, 999 % 512, 4, 100, 7, 64}, len = T;
    pk_batch b = {1, T, ids, &len, NULL};
    size_t nt = pk_model_n_tensors(m);
    uint8_t *tr = calloc(nt, 1);
    for (size_t i = 0; i < nt; i += 2)
        tr[i] = 1;
    for (int mode = 0; mode < 2; mode++) {
        pk_perturb p = {1234 + (uint64_t)mode, mode ? -1e-2f : 1e-2f, PK_Z_GAUSSIAN,
                        mode ? tr : NULL, 0};
        float *hook = malloc((size_t)T * V * 4), *expl = malloc((size_t)T * V * 4),
              *base = malloc((size_t)T * V * 4);
        PK_CHECK(pk_model_logits(m, &b, NULL, base) == PK_OK);
        size_t allocs = pk_model_alloc_count(m);
        PK_CHECK(pk_model_logits(m, &b, &p, hook) == PK_OK);
        PK_CHECK_EQ(pk_model_alloc_count(m), allocs);
        /* perturb the (copy-on-write) weights explicitly, recompute, restore */
        float **saved = calloc(nt, sizeof *saved);
        for (size_t i = 0; i < nt; i++) {
            pk_tensor_info ti;
            PK_CHECK(pk_model_tensor(m, i, &ti) == PK_OK);
            PK_CHECK(ti.dtype == PK_DTYPE_F32);
            if (p.trainable && !p.trainable[i])
                continue;
            saved[i] = malloc(ti.numel * 4);
            memcpy(saved[i], ti.data, ti.numel * 4);
            pk_z_axpy(p.seed, ti.key, 0, ti.numel, p.kind, p.scale, ti.data);
        }
        PK_CHECK(pk_model_logits(m, &b, NULL, expl) == PK_OK);
        for (size_t i = 0; i < nt; i++) {
            pk_tensor_info ti;
            if (!saved[i] || pk_model_tensor(m, i, &ti) != PK_OK)
                continue;
            memcpy(ti.data, saved[i], ti.numel * 4);
            free(saved[i]);
        }
        free(saved);
        float d = max_abs_diff(hook, expl, (size_t)T * V);
        float moved = max_abs_diff(hook, base, (size_t)T * V);
        fprintf(stderr, "%s perturb mode %d, block rows %d: hook vs explicit %.3g, moved %.3g\n",
                name, mode, block_rows, (double)d, (double)moved);
        PK_CHECK(d <= 2e-5f);
        PK_CHECK(moved > 1e-3f);
        /* after restoring, the unperturbed logits are bit-identical */
        PK_CHECK(pk_model_logits(m, &b, NULL, expl) == PK_OK);
        PK_CHECK(memcmp(expl, base, (size_t)T * V * 4) == 0);
        free(hook);
        free(expl);
        free(base);
    }
    free(tr);
    pk_model_free(m);
}

/* A ragged batch of B rows of T tokens in ids and lens: ids[i] = 3 + (i * a + i / d) % (V - 3)
 * (no special token), row r of length T - (r * s) % (T / 2). */
static pk_batch ragged_batch(int B, int T, int V, int a, int d, int s, int32_t *ids, int32_t *lens)
{
    for (int i = 0; i < B * T; i++)
        ids[i] = (int32_t)(3 + (i * a + i / d) % (V - 3));
    for (int r = 0; r < B; r++)
        lens[r] = T - (r * s) % (T / 2);
    return (pk_batch){B, T, ids, lens, NULL};
}

/* A both = 1 evaluation (the + and - passes of a MeZO step in one call) gives the same bits
 * paired (side by side, one z per weight block) as unpaired, and as two single passes at +eps
 * and -eps; for every output. B x T: N = B*T above 1024 runs the FFN in row chunks. */
static void check_paired(const char *name, int B, int T, int block_rows)
{
    pk_model *m = load(name);
    if (!m)
        return;
    pk_model_set_block_rows(m, block_rows);
    int V = pk_model_vocab_size(m), causal = pk_model_is_causal(m), N = B * T;
    int32_t *ids = malloc((size_t)N * 4), lens[64];
    PK_CHECK(B <= 64);
    pk_batch b = ragged_batch(B, T, V, 131, 7, 5, ids, lens);
    size_t nt = pk_model_n_tensors(m);
    uint8_t *tr = calloc(nt, 1);
    for (size_t i = 1; i < nt; i += 3)
        tr[i] = 1;
    int32_t sel_b[64], sel_t[64], want[3] = {1, 5, V - 1};
    for (int r = 0; r < B; r++) {
        sel_b[r] = r;
        sel_t[r] = lens[r] - 1;
    }
    size_t nl = (size_t)N * (size_t)V, ns = (size_t)B * 3;
    float *lg[3], *sl[3], *sp[3];
    double nll[3][128], mean[3][2];
    int32_t cnt[3][128];
    for (int tm = 0; tm < 2; tm++) {
        /* [0] unpaired, [1] paired, [2] two single passes */
        for (int v = 0; v < 3; v++) {
            lg[v] = calloc(2 * nl, 4);
            sl[v] = calloc(2 * ns, 4);
            sp[v] = calloc(2 * ns, 4);
            pk_perturb p = {77 + (uint64_t)tm, 1e-2f, PK_Z_GAUSSIAN, tm ? tr : NULL, v < 2};
            pk_model_set_pairing(m, v == 1 ? PK_PAIRING_ON : PK_PAIRING_OFF);
            for (int half = 0; half < (v == 2 ? 2 : 1); half++) {
                if (half)
                    p.scale = -p.scale;
                PK_CHECK(pk_model_logits(m, &b, &p, lg[v] + half * nl) == PK_OK);
                PK_CHECK(pk_model_select_logits(m, &b, &p, (size_t)B, sel_b, sel_t, 3, want,
                                                sl[v] + half * ns) == PK_OK);
                PK_CHECK(pk_model_select_logprobs(m, &b, &p, (size_t)B, sel_b, sel_t, 3, want,
                                                  sp[v] + half * ns) == PK_OK);
                if (causal)
                    PK_CHECK(pk_model_loss(m, &b, NULL, &p, nll[v] + half * B, cnt[v] + half * B,
                                           mean[v] + half) == PK_OK);
            }
        }
        for (int v = 1; v < 3; v++) {
            PK_CHECK(memcmp(lg[0], lg[v], 2 * nl * 4) == 0);
            PK_CHECK(memcmp(sl[0], sl[v], 2 * ns * 4) == 0);
            PK_CHECK(memcmp(sp[0], sp[v], 2 * ns * 4) == 0);
            if (causal) {
                PK_CHECK(memcmp(nll[0], nll[v], 2 * (size_t)B * sizeof(double)) == 0);
                PK_CHECK(memcmp(cnt[0], cnt[v], 2 * (size_t)B * sizeof(int32_t)) == 0);
                PK_CHECK(memcmp(mean[0], mean[v], sizeof mean[0]) == 0);
            }
        }
        /* and the two halves differ: the - pass really is the other perturbation */
        PK_CHECK(max_abs_diff(lg[1], lg[1] + nl, nl) > 1e-4f);
        if (causal)
            PK_CHECK(mean[1][0] != mean[1][1]);
        for (int v = 0; v < 3; v++) {
            free(lg[v]);
            free(sl[v]);
            free(sp[v]);
        }
    }
    /* AUTO pairs only where a pass's activations are small next to the weights: never for
     * these tiny models, whose activations outweigh their weights */
    pk_model_set_pairing(m, PK_PAIRING_AUTO);
    PK_CHECK_EQ(pk_model_pairs(m, B, T), 0);
    pk_model_set_pairing(m, PK_PAIRING_ON);
    PK_CHECK_EQ(pk_model_pairs(m, B, T), 1);
    pk_model_set_pairing(m, PK_PAIRING_AUTO);
    free(tr);
    free(ids);
    pk_model_free(m);
}

/* The tensors of transformer block l (pk_layer's indices) set in mask. */
static void mark_layer(const pk_model *m, int l, uint8_t *mask)
{
    const pk_layer *y = &m->layers[l];
    const int ix[] = {y->ln1_w,  y->ln1_b,  y->ln2_w, y->ln2_b, y->q_w,   y->q_b,
                      y->k_w,    y->k_b,    y->v_w,   y->v_b,   y->o_w,   y->o_b,
                      y->gate_w, y->gate_b, y->fc1_w, y->fc1_b, y->fc2_w, y->fc2_b};
    for (size_t j = 0; j < sizeof ix / sizeof ix[0]; j++) {
        if (ix[j] >= 0)
            mask[ix[j]] = 1;
    }
}

/* Every output of one evaluation set: E evaluations of the batch. */
typedef struct sweep_out {
    float *lg, *sl, *sp;
    double *nll, *mean;
    int32_t *cnt;
} sweep_out;

static void sweep_alloc(sweep_out *o, int E, size_t nl, size_t ns, int B)
{
    o->lg = calloc((size_t)E * nl, 4);
    o->sl = calloc((size_t)E * ns, 4);
    o->sp = calloc((size_t)E * ns, 4);
    o->nll = calloc((size_t)E * (size_t)B, sizeof(double));
    o->cnt = calloc((size_t)E * (size_t)B, sizeof(int32_t));
    o->mean = calloc((size_t)E, sizeof(double));
}

static void sweep_free(sweep_out *o)
{
    free(o->lg);
    free(o->sl);
    free(o->sp);
    free(o->nll);
    free(o->cnt);
    free(o->mean);
}

/* 1 if a and b hold the same bits. */
static int sweep_same(const sweep_out *a, const sweep_out *b, int E, size_t nl, size_t ns, int B,
                      int causal)
{
    int same = !memcmp(a->lg, b->lg, (size_t)E * nl * 4) &&
               !memcmp(a->sl, b->sl, (size_t)E * ns * 4) &&
               !memcmp(a->sp, b->sp, (size_t)E * ns * 4);
    if (causal)
        same = same && !memcmp(a->nll, b->nll, (size_t)E * B * sizeof(double)) &&
               !memcmp(a->cnt, b->cnt, (size_t)E * B * sizeof(int32_t)) &&
               !memcmp(a->mean, b->mean, (size_t)E * sizeof(double));
    return same;
}

/* What every evaluation of check_sweep shares: the model, the batch and the selection. */
typedef struct sweep_in {
    pk_model *m;
    const pk_batch *b;
    const int32_t *sel_b, *sel_t, *want; /* B positions, 3 ids */
    size_t nl, ns;                       /* logits and selected values per evaluation */
    int causal;
} sweep_in;

/* The reference of sweep s: each evaluation alone through the single-perturbation functions
 * (pairing OFF, 2 threads), into ref. */
static void sweep_reference(const sweep_in *in, const pk_sweep *s, sweep_out *ref)
{
    pk_model *m = in->m;
    const pk_batch *b = in->b;
    int E = pk_sweep_evals(s), sc = s->pert.both, B = b->B;
    pk_threads_set(2);
    pk_model_set_pairing(m, PK_PAIRING_OFF);
    for (int e = 0; e < E; e++) {
        int i = e > 0 ? (e - 1) / (sc ? 2 : 1) : 0; /* e = 0: unperturbed */
        pk_perturb one = {s->seeds[i], (sc && (e - 1) % 2) ? -1e-2f : 1e-2f, s->pert.kind,
                          s->masks[i], 0};
        const pk_perturb *p = e == 0 ? NULL : &one;
        PK_CHECK(pk_model_logits(m, b, p, ref->lg + (size_t)e * in->nl) == PK_OK);
        PK_CHECK(pk_model_select_logits(m, b, p, (size_t)B, in->sel_b, in->sel_t, 3, in->want,
                                        ref->sl + (size_t)e * in->ns) == PK_OK);
        PK_CHECK(pk_model_select_logprobs(m, b, p, (size_t)B, in->sel_b, in->sel_t, 3, in->want,
                                          ref->sp + (size_t)e * in->ns) == PK_OK);
        if (in->causal)
            PK_CHECK(pk_model_loss(m, b, NULL, p, ref->nll + (size_t)e * B,
                                   ref->cnt + (size_t)e * B, ref->mean + e) == PK_OK);
    }
}

/* Sweep s through the sweep functions at 1, 2 and 3 threads and every pairing mode gives ref's
 * bits (case sc of check_sweep on model `name`, for the failure line). Leaves pairing OFF. */
static void sweep_modes(const sweep_in *in, const pk_sweep *s, const sweep_out *ref,
                        const char *name, int sc, int block_rows)
{
    static const pk_pairing modes[] = {PK_PAIRING_ON, PK_PAIRING_AUTO, PK_PAIRING_OFF};
    pk_model *m = in->m;
    const pk_batch *b = in->b;
    int E = pk_sweep_evals(s), B = b->B;
    for (int threads = 1; threads <= 3; threads++) {
        pk_threads_set(threads);
        for (size_t md = 0; md < sizeof modes / sizeof modes[0]; md++) {
            sweep_out got;
            pk_model_set_pairing(m, modes[md]);
            sweep_alloc(&got, E, in->nl, in->ns, B);
            PK_CHECK(pk_model_logits_sweep(m, b, s, got.lg) == PK_OK);
            PK_CHECK(pk_model_select_sweep(m, b, s, (size_t)B, in->sel_b, in->sel_t, 3, in->want, 0,
                                           got.sl) == PK_OK);
            PK_CHECK(pk_model_select_sweep(m, b, s, (size_t)B, in->sel_b, in->sel_t, 3, in->want, 1,
                                           got.sp) == PK_OK);
            if (in->causal)
                PK_CHECK(pk_model_loss_sweep(m, b, NULL, s, got.nll, got.cnt, got.mean) == PK_OK);
            if (!sweep_same(ref, &got, E, in->nl, in->ns, B, in->causal)) {
                fprintf(stderr,
                        "FAIL: %s sweep case %d (%d evaluations, pairing %d, %d "
                        "threads, block rows %d) differs from separate passes\n",
                        name, sc, E, (int)modes[md], threads, block_rows);
                PK_CHECK(0);
            }
            sweep_free(&got);
        }
    }
}

/* A sweep of N perturbations (pk_sweep: own seeds and masks, an unperturbed evaluation, + and -
 * passes) gives the same bits side by side in one pass over the weights (pairing ON), in
 * sweeps as wide as AUTO allows, one evaluation at a time (OFF) and as separate calls of the
 * single-perturbation functions; for every output, every architecture, 1, 2 and 3 threads.
 * Case 0: 3 one-sided perturbations over all tensors, every third tensor and the last block,
 * plus the unperturbed evaluation (fzoo's shape); case 1: 2 two-sided ones over the last one and
 * two blocks (spsa q = 2 with layer sampling: a shared prefix). */
static void check_sweep(const char *name, int B, int T, int block_rows)
{
    pk_model *m = load(name);
    if (!m)
        return;
    pk_model_set_block_rows(m, block_rows);
    int V = pk_model_vocab_size(m), causal = pk_model_is_causal(m), N = B * T, L = m->cfg.L;
    int32_t *ids = malloc((size_t)N * 4), lens[16];
    PK_CHECK(B <= 16 && L >= 2);
    pk_batch b = ragged_batch(B, T, V, 97, 5, 3, ids, lens);
    size_t nt = pk_model_n_tensors(m);
    uint8_t *every3 = calloc(nt, 1), *last = calloc(nt, 1), *last2 = calloc(nt, 1);
    for (size_t i = 0; i < nt; i += 3)
        every3[i] = 1;
    mark_layer(m, L - 1, last);
    mark_layer(m, L - 1, last2);
    mark_layer(m, L - 2, last2);
    int32_t sel_b[16], sel_t[16], want[3] = {1, 4, V - 1};
    for (int r = 0; r < B; r++) {
        sel_b[r] = r;
        sel_t[r] = lens[r] - 1;
    }
    size_t nl = (size_t)N * (size_t)V, ns = (size_t)B * 3;
    sweep_in in = {m, &b, sel_b, sel_t, want, nl, ns, causal};
    for (int sc = 0; sc < 2; sc++) {
        const uint64_t seeds[3] = {11, 12 + (uint64_t)sc, 99};
        const uint8_t *masks0[3] = {NULL, every3, last}, *masks1[2] = {last, last2};
        pk_sweep s = {{0, 1e-2f, sc ? PK_Z_RADEMACHER : PK_Z_GAUSSIAN, NULL, sc},
                      sc ? 2 : 3,
                      seeds,
                      sc ? masks1 : masks0,
                      1};
        int E = pk_sweep_evals(&s);
        PK_CHECK_EQ(E, sc ? 5 : 4);
        sweep_out ref;
        sweep_alloc(&ref, E, nl, ns, B);
        sweep_reference(&in, &s, &ref);
        for (int e = 1; e < E; e++) /* every evaluation is another function */
            PK_CHECK(max_abs_diff(ref.lg, ref.lg + (size_t)e * nl, nl) > 1e-5f);
        sweep_modes(&in, &s, &ref, name, sc, block_rows);
        PK_CHECK_EQ(pk_model_sweep_width(m, B, T, E), 1); /* OFF, as left by the loop */
        pk_model_set_pairing(m, PK_PAIRING_ON);
        PK_CHECK_EQ(pk_model_sweep_width(m, B, T, E), E);
        PK_CHECK_EQ(pk_model_sweep_width(m, B, T, 500), 64);
        sweep_free(&ref);
    }
    /* bad sweeps are refused */
    pk_sweep bad = {{1, 1e-2f, PK_Z_GAUSSIAN, NULL, 0}, 2, NULL, NULL, 0};
    double mean[4];
    PK_CHECK(pk_model_logits_sweep(m, &b, &bad, NULL) == PK_ERR_ARG);
    if (causal)
        PK_CHECK(pk_model_loss_sweep(m, &b, NULL, &bad, NULL, NULL, mean) == PK_ERR_ARG);
    pk_model_set_pairing(m, PK_PAIRING_AUTO);
    pk_threads_set(2);
    free(every3);
    free(last);
    free(last2);
    free(ids);
    pk_model_free(m);
}

/* Above 1024 tokens the FFN runs in row chunks and the GEMMs in wide tiles (an LM-head tile
 * spanning several vocabulary blocks): a long batch's per-row losses and logits equal each
 * row's computed alone (a batch of one: narrow tiles). */
static void check_rows_alone(pk_model *m, const char *name, int B, int T)
{
    int V = pk_model_vocab_size(m), N = B * T;
    int32_t *ids = malloc((size_t)N * 4), lens[64], cnt[64], c1;
    float *lg = malloc((size_t)N * V * sizeof *lg), *l1 = malloc((size_t)T * V * sizeof *l1);
    double nll[64], n1;
    PK_CHECK(ids && lg && l1 && B <= 64);
    if (!ids || !lg || !l1 || B > 64)
        goto out;
    for (int i = 0; i < N; i++)
        ids[i] = (int32_t)(3 + (i * 17 + i / 5) % (V - 3));
    for (int r = 0; r < B; r++)
        lens[r] = T - r % 3;
    pk_batch b = {B, T, ids, lens, NULL};
    PK_CHECK(pk_model_loss(m, &b, NULL, NULL, nll, cnt, NULL) == PK_OK);
    PK_CHECK(pk_model_logits(m, &b, NULL, lg) == PK_OK);
    double worst = 0;
    float worst_lg = 0;
    for (int r = 0; r < B; r++) {
        pk_batch one = {1, T, ids + (size_t)r * T, lens + r, NULL};
        PK_CHECK(pk_model_loss(m, &one, NULL, NULL, &n1, &c1, NULL) == PK_OK);
        PK_CHECK_EQ(c1, cnt[r]);
        double d = fabs(n1 - nll[r]) / fabs(n1);
        worst = d > worst ? d : worst;
        PK_CHECK(pk_model_logits(m, &one, NULL, l1) == PK_OK);
        float e = max_abs_diff(l1, lg + (size_t)r * T * V, (size_t)lens[r] * V);
        worst_lg = e > worst_lg || isnan(e) ? e : worst_lg;
    }
    fprintf(stderr,
            "%s, %d tokens against rows alone: worst relative row-loss difference %.3g, worst "
            "logit difference %.3g\n",
            name, N, worst, (double)worst_lg);
    PK_CHECK(worst < 1e-5);
    PK_CHECK(worst_lg < 1e-4f);
out:
    free(ids);
    free(lg);
    free(l1);
}

static void check_ffn_chunks(const char *name, int B, int T)
{
    pk_model *m = load(name);
    if (!m)
        return;
    check_rows_alone(m, name, B, T);
    pk_model_free(m);
}

/* A generated OPT with a 3000-word vocabulary (12 LM-head blocks, wide tiles of 4, the last one
 * short) at 2048 tokens: the loss's 1900-odd gathered rows and the logits go through wide tiles. */
static void check_wide_head(void)
{
    static const char cfg[] =
        "{\"architectures\": [\"OPTForCausalLM\"], \"model_type\": \"opt\", \"vocab_size\": "
        "3000, \"hidden_size\": 192, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
        " \"ffn_dim\": 768, \"max_position_embeddings\": 64, \"word_embed_proj_dim\": 192,"
        " \"do_layer_norm_before\": true, \"activation_function\": \"relu\", \"enable_bias\": "
        "true, \"pad_token_id\": 1, \"bos_token_id\": 2, \"eos_token_id\": 2,"
        " \"tie_word_embeddings\": true, \"torch_dtype\": \"float32\"}";
    char tmp[256], err[512] = "";
    PK_CHECK(make_tmpdir(tmp, sizeof tmp, "widehead"));
    PK_CHECK(pk_model_make(cfg, strlen(cfg), tmp, PK_DTYPE_F32, 7, err, sizeof err) == PK_OK);
    pk_model *m = load_model_checked(tmp);
    if (m) {
        check_rows_alone(m, "generated opt (V 3000)", 32, 64);
        PK_CHECK_EQ(m->lspan, 4); /* set by the reservation the batch made */
        pk_model_free(m);
    }
    PK_CHECK(remove_tree(tmp) == 0);
}

static void check_f16_helpers(void)
{
    PK_CHECK_EQ(pk_f32_to_f16(1.0f), 0x3c00);
    PK_CHECK_EQ(pk_f32_to_f16(-2.0f), 0xc000);
    PK_CHECK_EQ(pk_f32_to_f16(65504.0f), 0x7bff);
    PK_CHECK_EQ(pk_f32_to_f16(65520.0f), 0x7c00);
    PK_CHECK_EQ(pk_f32_to_f16(5.9604644775390625e-8f), 0x0001);
    PK_CHECK_EQ(pk_f32_to_f16(1.0f + 1.0f / 2048.0f), 0x3c00); /* tie -> even */
    PK_CHECK_EQ(pk_f32_to_f16(1.0f + 3.0f / 2048.0f), 0x3c02); /* tie -> even (up) */
    PK_CHECK(pk_f16_to_f32(0x3555) > 0.333f && pk_f16_to_f32(0x3555) < 0.3334f);
    PK_CHECK_EQ(pk_f32_to_bf16(1.0f), 0x3f80);
    PK_CHECK_EQ(pk_f32_to_bf16(1.0f + 1.0f / 256.0f), 0x3f80); /* tie -> even */
    PK_CHECK(pk_bf16_to_f32(0x4049) == 3.140625f);
    for (uint32_t h = 0; h < 0x7c00; h++) /* every finite f16 round-trips */
        PK_CHECK_EQ(pk_f32_to_f16(pk_f16_to_f32((uint16_t)h)), h);
}

int main(void)
{
    pk_threads_set(2);
    check_f16_helpers();
    static const char *const models[] = {"llama-tiny", "llama-tiny-f16", "qwen2-tiny",
                                         "opt-tiny",   "gpt2-tiny",      "roberta-tiny"};
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++)
        check_reference(models[i]);
    check_stories();
    static const char *const perturbed[] = {"llama-tiny", "gpt2-tiny", "opt-tiny", "roberta-tiny"};
    for (size_t i = 0; i < sizeof perturbed / sizeof perturbed[0]; i++) {
        check_perturb(perturbed[i], 0);
        check_perturb(perturbed[i], 3); /* every tensor in blocks: rows, input columns */
    }
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
        check_paired(models[i], 3, 12, 0);
        check_paired(models[i], 3, 12, 5);
    }
    check_paired("llama-tiny", 20, 64, 0); /* 1280 tokens: the FFN (wider than q|k|v) in chunks */
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
        check_sweep(models[i], 2, 10, 0);
        check_sweep(models[i], 2, 10, 5);
    }
    check_ffn_chunks("llama-tiny", 20, 64);
    check_ffn_chunks("gpt2-tiny", 20, 64); /* GPT-2 Conv1D weights */
    check_wide_head();
    return PK_TEST_DONE();
}
