/* test_estimator.c: the estimators beside plain MeZO (mezo/estimator.c) on stories260k through the
 * trainer and the store: for fzoo, hizoo and layer sampling, replay (base + checkpoint + log),
 * resume after an interrupt, the exported seed log and another thread count all end at the
 * live run's weights (and the eval points' training seconds go on over the resume); plain
 * spsa's logs keep their old format; fzoo's coefficients are
 * (l_i - l0) / std; a layer-sampled step leaves the other layers' bytes alone; hizoo refuses a
 * Hessian diagonal over its budget and checkpoints it with the weights, and its H and weights
 * follow its formula element by element (a pair of rows in one sweep or two, the same bits);
 * with --hessian-every K its steps between Hessian updates take no unperturbed loss, log their
 * weight rows only and leave H alone, and replay rebuilds weights and H from the rows alone (rows
 * of every-step hizoo replay as before); evaluation counts follow the estimator; the sweep path
 * (one engine sweep per micro-batch, the objectives' sweep loss) gives the per-pass rows bit for
 * bit and runs the shared blocks once. */
#include "pk_test.h"
#include "pk_train.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_test_util.h"
#include "train_test_util.h"

#define STORIES PK_STORIES_DIR

static pk_train_config est_config(pk_estimator e, int layers)
{
    pk_train_config c = pk_train_config_default();
    snprintf(c.model_dir, sizeof c.model_dir, "%s", STORIES);
    strcpy(c.dataset, "pip");
    strcpy(c.eval_dataset, "pip-heldout");
    c.eval_every = 4;
    c.steps = 8;
    c.batch = 4;
    c.seq_len = 48;
    c.accumulate = 2;
    c.mezo.lr = e == PK_EST_FZOO ? 1e-4f : 2e-4f;
    c.mezo.seed = 99;
    c.mezo.weight_decay = 0.01f;
    c.mezo.schedule = PK_SCHEDULE_COSINE;
    c.mezo.warmup = 2;
    c.mezo.steps_total = c.steps;
    c.mezo.estimator = e;
    c.mezo.perturbations = 4;
    c.mezo.spsa_q = 2;
    c.mezo.hessian_smooth = 1e-3f;
    c.mezo.hessian_budget = 1.5f; /* stories260k is tiny: its whole diagonal */
    c.mezo.hessian_every = 1;     /* HiZOO's every step; test_replay_resume sets K */
    c.mezo.perturb_layers = layers;
    c.checkpoint_every = 3;
    return c;
}

typedef struct stopper {
    int64_t at;
} stopper;

static void stop_at(void *user, int64_t step, int64_t total, const pk_step_row *rows, int n)
{
    const stopper *k = user;
    (void)total;
    (void)rows;
    (void)n;
    if (step + 1 == k->at)
        pk_interrupt_raise();
}

/* The run's seed log, replayed on the base model: its hash; *has_est whether the file names an
 * estimator, *every its hessian_every line (0 without one). */
static int seedlog_fzoo_mean; /* the last hash_of_seedlog's log: fzoo_baseline mean */

static void hash_of_seedlog(int64_t run_id, char hex[65], int *has_est, int *every)
{
    char path[600], err[256] = "";
    snprintf(path, sizeof path, "%s/run.seedlog", home);
    pk_store *s = open_store();
    PK_CHECK(pk_export_seedlog(s, run_id, path, NULL, err, sizeof err) == PK_OK);
    pk_store_close(s);
    size_t len = 0;
    char *text = slurp(path, &len);
    *has_est = text != NULL && strstr(text, "\nestimator ") != NULL;
    free(text);
    pk_seedlog log;
    pk_model *m = NULL;
    hex[0] = 0;
    PK_CHECK(pk_seedlog_read(path, &log, err, sizeof err) == PK_OK);
    *every = log.hessian_every;
    seedlog_fzoo_mean = log.fzoo_mean;
    PK_CHECK(pk_model_load(STORIES, pk_model_default_params(), &m, err, sizeof err) == PK_OK);
    if (m != NULL && pk_seedlog_replay(m, &log, err, sizeof err) == PK_OK)
        PK_CHECK(pk_weights_hash(m, hex) == PK_OK);
    else
        PK_CHECK(!"seed log replay");
    pk_model_free(m);
    pk_seedlog_clear(&log);
}

/* The logged rows of a run: a hizoo step logs a Hessian row (even q_index) and a weight row
 * (odd) per pair on steps with step % K == 0, else its weight rows only; the others a fixed
 * count. Counts the loss evaluations the steps took the same way, into *evals. */
static void check_rows(int64_t run_id, const pk_train_config *c, int64_t *evals)
{
    pk_store *s = open_store();
    pk_step_row *rows = NULL;
    size_t n = 0, want = 0, bad = 0;
    PK_CHECK(pk_store_steps_read(s, run_id, 0, c->steps, &rows, &n, NULL, 0) == PK_OK);
    pk_store_close(s);
    int hz = c->mezo.estimator == PK_EST_HIZOO, q = c->mezo.spsa_q;
    int64_t K = c->mezo.hessian_every < 1 ? 1 : c->mezo.hessian_every;
    *evals = 0;
    for (int64_t st = 0; st < c->steps; st++) {
        int upd = hz && st % K == 0;
        want += hz ? (size_t)(upd ? 2 * q : q) : (size_t)pk_mezo_rows_per_step(&c->mezo);
        *evals += (hz ? 2 * q + upd : pk_mezo_evals_per_step(&c->mezo)) * c->accumulate;
    }
    for (size_t i = 0; hz && i < n; i++) /* a Hessian row (even q_index) on an update step only */
        bad += rows[i].q_index % 2 == 0 && rows[i].step % K != 0;
    PK_CHECK_EQ(n, want);
    PK_CHECK_EQ(bad, 0);
    free(rows);
}

/* Live run = replay at 1 and 2 threads = seed log = interrupted + resumed at another thread
 * count; returns the final hash. */
static void check_exact(const char *what, const pk_train_config *c, char out[65], int64_t *run_id)
{
    pk_train_result a, e, f;
    pk_threads_set(2);
    PK_CHECK(run(c, 0, NULL, &a) == PK_OK);
    PK_CHECK_EQ(a.steps_done, c->steps);
    int64_t evals = 0;
    check_rows(a.run_id, c, &evals);
    PK_CHECK_EQ(a.evaluations, evals);
    PK_CHECK(a.elapsed_s > 0.0 && isfinite(a.last_loss));
    char h1[65], h2[65], hs[65];
    int has_est = 0, every = 0;
    hash_of_run(a.run_id, 1, h1);
    hash_of_run(a.run_id, 2, h2);
    hash_of_seedlog(a.run_id, hs, &has_est, &every);
    PK_CHECK(!strcmp(h1, a.final_hash) && !strcmp(h2, a.final_hash));
    PK_CHECK(!strcmp(hs, a.final_hash));
    PK_CHECK_EQ(has_est, c->mezo.estimator != PK_EST_SPSA); /* plain logs: the old format */
    /* hessian_every is recorded for hizoo above 1 only: K = 1 logs are written as before */
    PK_CHECK_EQ(every, c->mezo.estimator == PK_EST_HIZOO && c->mezo.hessian_every > 1
                           ? c->mezo.hessian_every
                           : 0);
    PK_CHECK_EQ(seedlog_fzoo_mean, c->mezo.fzoo_mean); /* "fzoo_baseline mean" only when set */
    stopper k = {4};
    pk_train_hooks h = {.user = &k, .on_step = stop_at};
    PK_CHECK(run(c, 0, &h, &e) == PK_OK);
    pk_interrupt_clear();
    PK_CHECK(e.interrupted == 1 && e.steps_done == 4);
    pk_threads_set(1);
    PK_CHECK(run(c, e.run_id, NULL, &f) == PK_OK);
    pk_threads_set(2);
    PK_CHECK_EQ(f.evaluations, a.evaluations);
    PK_CHECK(!strcmp(f.final_hash, a.final_hash));
    /* the eval points' training seconds go on over the resume: the resumed process's seconds
     * start from the eval at the stop (step 4) */
    int64_t *ks = NULL;
    double *kt = NULL;
    size_t nk = 0;
    pk_store *s = open_store();
    PK_CHECK(pk_store_eval_seconds(s, e.run_id, &ks, &kt, &nk, NULL, 0) == PK_OK);
    pk_store_close(s);
    PK_CHECK_EQ(nk, 2);
    if (nk == 2) {
        PK_CHECK(ks[0] == 4 && ks[1] == 8 && kt[0] > 0.0);
        PK_CHECK_NEAR(kt[1], kt[0] + f.elapsed_s, 1e-9);
    }
    free(ks);
    free(kt);
    fprintf(stderr, "%s: %lld evaluations, loss %.4f, weights %.16s\n", what,
            (long long)a.evaluations, a.last_loss, a.final_hash);
    memcpy(out, a.final_hash, 65);
    *run_id = a.run_id;
}

static void test_hizoo_checkpoint(int64_t run_id);

static void test_replay_resume(void)
{
    char plain[65], fz[65], hz[65], ly[65], fl[65];
    int64_t id = 0;
    pk_train_config c = est_config(PK_EST_SPSA, 0);
    check_exact("spsa", &c, plain, &id);
    c = est_config(PK_EST_FZOO, 0);
    check_exact("fzoo", &c, fz, &id);
    c = est_config(PK_EST_HIZOO, 0);
    check_exact("hizoo", &c, hz, &id);
    test_hizoo_checkpoint(id);
    /* the Hessian update every 4th / 3rd step: the stop at step 4 resumes from the checkpoint
     * at step 3 (a step without / with the update replayed) into an update step / one without */
    char k4[65], k3[65];
    c.mezo.hessian_every = 4;
    check_exact("hizoo, K=4", &c, k4, &id);
    c.mezo.hessian_every = 3;
    check_exact("hizoo, K=3", &c, k3, &id);
    PK_CHECK(strcmp(k4, hz) != 0 && strcmp(k3, hz) != 0 && strcmp(k3, k4) != 0);
    c = est_config(PK_EST_SPSA, 2);
    check_exact("spsa, 2 layers", &c, ly, &id);
    c = est_config(PK_EST_FZOO, 1);
    check_exact("fzoo, 1 layer", &c, fl, &id);
    PK_CHECK(strcmp(plain, fz) && strcmp(plain, hz) && strcmp(plain, ly) && strcmp(fz, fl));
    /* fzoo against the mean of its N losses: N evaluations a step (check_rows), exact replay,
     * seed log (with its "fzoo_baseline mean" line) and resume, and another model than fzoo's */
    char fm[65];
    c = est_config(PK_EST_FZOO, 0);
    c.mezo.fzoo_mean = 1;
    check_exact("fzoo, mean baseline", &c, fm, &id);
    PK_CHECK(strcmp(fm, fz) != 0);
    pk_store *s = open_store();
    pk_run_info ri;
    PK_CHECK(pk_store_run_get(s, id, &ri, NULL, 0) == PK_OK);
    PK_CHECK(strstr(ri.config_json, "\"fzoo_baseline\":\"mean\"") != NULL);
    PK_CHECK(strstr(ri.config_json, "perturb_stages") == NULL); /* written only when on */
    pk_run_info_clear(&ri);
    /* stage sampling: 3 of all the stages, and 1 of the top block's two halves with the mean
     * baseline (scripts/convergence.sh's fzoo-top-half): exact replay, seed log (its
     * "perturb_stages" line) and resume, the setting in the run config */
    char st3[65], st1[65];
    c = est_config(PK_EST_FZOO, 0);
    c.mezo.perturb_stages = 3;
    check_exact("fzoo, 3 stages", &c, st3, &id);
    PK_CHECK(pk_store_run_get(s, id, &ri, NULL, 0) == PK_OK);
    PK_CHECK(strstr(ri.config_json, "\"perturb_stages\":3") != NULL);
    pk_run_info_clear(&ri);
    c.mezo.perturb_stages = 1;
    c.mezo.fzoo_mean = 1;
    snprintf(c.trainable, sizeof c.trainable, "top:1");
    check_exact("fzoo, 1 of the top block's stages", &c, st1, &id);
    PK_CHECK(strcmp(st3, fz) != 0 && strcmp(st3, fl) != 0 && strcmp(st1, st3) != 0);
    pk_store_close(s);
    PK_CHECK(strcmp(hz, plain) != 0);
}

/* A loss function for step-level tests: the lm loss of one fixed batch. */
typedef struct fixed_batch {
    pk_batch b;
    int32_t ids[2 * 16];
    int32_t len[2];
} fixed_batch;

static pk_status fixed_loss(void *user, pk_model *m, int micro, const pk_perturb *pert,
                            double *loss)
{
    fixed_batch *f = user;
    (void)micro;
    return pk_model_loss(m, &f->b, NULL, pert, NULL, NULL, loss);
}

static fixed_batch make_batch(void)
{
    fixed_batch f;
    memset(&f, 0, sizeof f);
    for (int i = 0; i < 32; i++)
        f.ids[i] = (int32_t)((i * 37 + 11) % 500);
    f.len[0] = 16;
    f.len[1] = 12;
    f.b.B = 2;
    f.b.T = 16;
    f.b.ids = f.ids;
    f.b.lengths = f.len;
    return f;
}

static pk_model *load(void)
{
    return load_model_or_exit(STORIES);
}

/* fixed_loss that counts the loss evaluations it was asked for (a pair is two). */
typedef struct counted_batch {
    fixed_batch f;
    int64_t evals;
} counted_batch;

static pk_status counted_loss(void *user, pk_model *m, int micro, const pk_perturb *pert,
                              double *loss)
{
    counted_batch *c = user;
    c->evals += pert != NULL && pert->both ? 2 : 1;
    return fixed_loss(&c->f, m, micro, pert, loss);
}

/* fzoo's rows: one unperturbed loss in every row, g_i = (l_i - l0) / std(l), lr / N; with
 * fzoo_mean the same l_i against their mean b, g_i = (l_i - b) / std(l), and no unperturbed
 * evaluation. */
static void test_fzoo_rows(void)
{
    pk_model *m = load();
    fixed_batch f = make_batch();
    f.b.ids = f.ids;
    f.b.lengths = f.len;
    pk_mezo_params p = pk_mezo_default_params();
    p.estimator = PK_EST_FZOO;
    p.perturbations = 5;
    p.z = PK_Z_RADEMACHER;
    p.lr = 1e-4f;
    pk_mezo_state *st = NULL;
    char err[256] = "";
    PK_CHECK(pk_mezo_state_new(m, NULL, &p, &st, err, sizeof err) == PK_OK && st != NULL);
    PK_CHECK_EQ(pk_mezo_rows_per_step(&p), 5);
    PK_CHECK_EQ(pk_mezo_evals_per_step(&p), 6);
    double l0 = 0;
    PK_CHECK(fixed_loss(&f, m, 0, NULL, &l0) == PK_OK);
    pk_step_row rows[5], mrows[5];
    counted_batch cn = {f, 0};
    PK_CHECK(pk_mezo_step_ex(m, NULL, &p, st, 0, 1, counted_loss, &cn, rows, NULL, NULL) == PK_OK);
    PK_CHECK_EQ(cn.evals, 6);
    double mean = 0, var = 0;
    for (int i = 0; i < 5; i++)
        mean += (double)rows[i].loss_plus / 5.0;
    for (int i = 0; i < 5; i++)
        var += ((double)rows[i].loss_plus - mean) * ((double)rows[i].loss_plus - mean) / 5.0;
    for (int i = 0; i < 5; i++) {
        PK_CHECK(rows[i].loss_minus == (float)l0);
        PK_CHECK_EQ(rows[i].q_index, i);
        PK_CHECK(rows[i].lr == p.lr / 5.0f);
        double want = ((double)rows[i].loss_plus - l0) / sqrt(var);
        PK_CHECK_NEAR((double)rows[i].g, want, 1e-3 * (1.0 + fabs(want)));
    }
    /* the mean baseline, from the same (base) weights: the same perturbed losses, 5
     * evaluations (the step above updated m) */
    pk_model_free(m);
    m = load();
    pk_mezo_params pm = p;
    pm.fzoo_mean = 1;
    PK_CHECK_EQ(pk_mezo_evals_per_step(&pm), 5);
    PK_CHECK_EQ(pk_mezo_rows_per_step(&pm), 5);
    counted_batch cm = {f, 0};
    PK_CHECK(pk_mezo_step_ex(m, NULL, &pm, st, 0, 1, counted_loss, &cm, mrows, NULL, NULL) ==
             PK_OK);
    PK_CHECK_EQ(cm.evals, 5); /* the 5 perturbed ones: their 5 different losses below */
    for (int i = 0; i < 5; i++) {
        PK_CHECK(mrows[i].loss_plus == rows[i].loss_plus && mrows[i].seed == rows[i].seed);
        PK_CHECK(mrows[i].loss_minus == (float)mean); /* b, the mean, in every row */
        PK_CHECK(mrows[i].lr == p.lr / 5.0f);
        double want = ((double)rows[i].loss_plus - mean) / sqrt(var);
        PK_CHECK_NEAR((double)mrows[i].g, want, 1e-3 * (1.0 + fabs(want)));
    }
    double gs = 0;
    for (int i = 0; i < 5; i++)
        gs += (double)mrows[i].g;
    PK_CHECK_NEAR(gs, 0.0, 1e-4); /* centred: the coefficients sum to 0 */
    pk_mezo_state_free(st);
    pk_model_free(m);
}

/* Stage sampling (perturb_stages): with the top block trainable, each seed's mask is exactly
 * one of its two halves (pk_model_tensor_stage), both occur, and it is a function of the seed;
 * with every tensor trainable, K = 3 keeps exactly 3 stages and nothing outside the blocks;
 * K at or above the stages held is the trainable mask itself. */
static void test_stage_sampling(void)
{
    pk_model *m = load();
    size_t nt = pk_model_n_tensors(m);
    int L = pk_model_n_layers(m);
    uint8_t *top = calloc(nt, 1), *a = malloc(nt), *b = malloc(nt);
    for (size_t i = 0; i < nt; i++)
        top[i] = pk_model_tensor_stage(m, i) >= 2 * (L - 1);
    pk_mezo_params p = pk_mezo_default_params();
    p.perturb_stages = 1;
    int seen[2] = {0, 0};
    for (uint64_t seed = 1; seed < 20; seed++) {
        pk_mezo_layer_mask(m, top, &p, seed, a);
        pk_mezo_layer_mask(m, top, &p, seed, b);
        PK_CHECK(!memcmp(a, b, nt));
        int on[2] = {0, 0};
        for (size_t i = 0; i < nt; i++) {
            int st = pk_model_tensor_stage(m, i);
            PK_CHECK(!a[i] || top[i]);
            if (a[i])
                on[st - 2 * (L - 1)]++;
        }
        PK_CHECK((on[0] > 0) != (on[1] > 0)); /* one half, whole */
        for (size_t i = 0; i < nt; i++)
            if (top[i])
                PK_CHECK_EQ(a[i], (uint8_t)(on[pk_model_tensor_stage(m, i) % 2] > 0));
        seen[on[1] > 0]++;
    }
    PK_CHECK(seen[0] > 0 && seen[1] > 0);
    p.perturb_stages = 3;
    for (uint64_t seed = 1; seed < 10; seed++) {
        pk_mezo_layer_mask(m, NULL, &p, seed, a);
        int held[64] = {0}, n = 0;
        for (size_t i = 0; i < nt; i++) {
            int st = pk_model_tensor_stage(m, i);
            PK_CHECK(!a[i] || st >= 0);
            if (a[i] && st >= 0 && st < 64 && !held[st]++)
                n++;
        }
        PK_CHECK_EQ(n, 3);
    }
    p.perturb_stages = 2; /* the top block holds two: all of them */
    pk_mezo_layer_mask(m, top, &p, 5, a);
    PK_CHECK(!memcmp(a, top, nt));
    free(top);
    free(a);
    free(b);
    pk_model_free(m);
}

/* Layer sampling: K layers of the blocks, nothing outside them, a function of the seed; a step
 * writes only those layers' bytes. */
static void test_layers(void)
{
    pk_model *m = load(), *base = load();
    size_t nt = pk_model_n_tensors(m);
    uint8_t *a = malloc(nt), *b = malloc(nt);
    pk_mezo_params p = pk_mezo_default_params();
    p.perturb_layers = 2;
    int differs = 0;
    for (uint64_t seed = 1; seed < 20; seed++) {
        pk_mezo_layer_mask(m, NULL, &p, seed, a);
        pk_mezo_layer_mask(m, NULL, &p, seed, b);
        PK_CHECK(!memcmp(a, b, nt));
        int seen[64] = {0}, n = 0;
        for (size_t i = 0; i < nt; i++) {
            pk_tensor_info ti;
            PK_CHECK(pk_model_tensor(m, i, &ti) == PK_OK);
            int l = pk_tensor_layer(ti.name);
            PK_CHECK(!a[i] || l >= 0);
            if (a[i] && l >= 0 && l < 64 && !seen[l]++)
                n++;
        }
        PK_CHECK_EQ(n, 2);
        pk_mezo_layer_mask(m, NULL, &p, seed + 100, b);
        differs += memcmp(a, b, nt) != 0;
    }
    PK_CHECK(differs > 0);
    PK_CHECK_EQ(pk_tensor_layer("model.layers.12.mlp.up_proj.weight"), 12);
    PK_CHECK_EQ(pk_tensor_layer("transformer.h.3.attn.c_attn.weight"), 3);
    PK_CHECK_EQ(pk_tensor_layer("roberta.encoder.layer.7.output.dense.bias"), 7);
    PK_CHECK_EQ(pk_tensor_layer("model.embed_tokens.weight"), -1);
    /* one layer-sampled spsa step writes the chosen layers only */
    fixed_batch f = make_batch();
    f.b.ids = f.ids;
    f.b.lengths = f.len;
    pk_mezo_state *st = NULL;
    char err[256] = "";
    p.lr = 1e-3f;
    PK_CHECK(pk_mezo_state_new(m, NULL, &p, &st, err, sizeof err) == PK_OK && st != NULL);
    pk_step_row row;
    PK_CHECK(pk_mezo_step_ex(m, NULL, &p, st, 0, 1, fixed_loss, &f, &row, NULL, NULL) == PK_OK);
    pk_mezo_layer_mask(m, NULL, &p, row.seed, a);
    int changed = 0;
    for (size_t i = 0; i < nt; i++) {
        pk_tensor_info x, y;
        PK_CHECK(pk_model_tensor(m, i, &x) == PK_OK && pk_model_tensor(base, i, &y) == PK_OK);
        int same = !memcmp(x.data, y.data, x.numel * pk_dtype_size(x.dtype));
        PK_CHECK(a[i] || same);
        changed += !same;
    }
    PK_CHECK(changed > 0);
    pk_mezo_state_free(st);
    free(a);
    free(b);
    pk_model_free(m);
    pk_model_free(base);
}

/* The stage evaluations (block halves) of one paired loss call under mask (the prefix's stages
 * once, the rest once per pass), checked against want; the +/- losses equal two one-sided calls'
 * and pairing off's, bit for bit, and differ from each other. */
static void check_prefix_call(pk_model *m, const fixed_batch *f, const uint8_t *mask, int want)
{
    pk_perturb both = {7, 1e-2f, PK_Z_GAUSSIAN, mask, 1};
    pk_perturb plus = {7, 1e-2f, PK_Z_GAUSSIAN, mask, 0};
    pk_perturb minus = {7, -1e-2f, PK_Z_GAUSSIAN, mask, 0};
    double pair[2] = {0, 0}, p1 = 0, m1 = 0, off[2] = {0, 0};
    uint64_t b0 = pk_model_stage_evals(m);
    PK_CHECK(pk_model_loss(m, &f->b, NULL, &both, NULL, NULL, pair) == PK_OK);
    PK_CHECK_EQ((long long)(pk_model_stage_evals(m) - b0), (long long)want);
    PK_CHECK(pk_model_loss(m, &f->b, NULL, &plus, NULL, NULL, &p1) == PK_OK);
    PK_CHECK(pk_model_loss(m, &f->b, NULL, &minus, NULL, NULL, &m1) == PK_OK);
    pk_model_set_pairing(m, PK_PAIRING_OFF);
    PK_CHECK(pk_model_loss(m, &f->b, NULL, &both, NULL, NULL, off) == PK_OK);
    pk_model_set_pairing(m, PK_PAIRING_AUTO);
    PK_CHECK(!memcmp(&pair[0], &p1, sizeof p1) && !memcmp(&pair[1], &m1, sizeof m1));
    PK_CHECK(!memcmp(pair, off, sizeof off));
    PK_CHECK(pair[0] != pair[1]); /* the perturbation did something */
}

/* The shared prefix: with only later layers perturbed, the +/- losses of one call (paired, the
 * prefix run once) are the bits of two separate one-sided calls and of pairing off; the same
 * with the final norm perturbed too (tensors after the blocks keep the prefix: with the final
 * norm alone, every block runs once), and not with the (tied) embedding perturbed. */
static void test_shared_prefix(void)
{
    pk_model *m = load();
    size_t nt = pk_model_n_tensors(m);
    uint8_t *mask = calloc(nt, 1);
    int L = 0;
    for (size_t i = 0; i < nt; i++) {
        pk_tensor_info ti;
        PK_CHECK(pk_model_tensor(m, i, &ti) == PK_OK);
        int l = pk_tensor_layer(ti.name);
        L = l + 1 > L ? l + 1 : L;
    }
    PK_CHECK(L >= 3);
    for (size_t i = 0; i < nt; i++) {
        pk_tensor_info ti;
        PK_CHECK(pk_model_tensor(m, i, &ti) == PK_OK);
        mask[i] = pk_tensor_layer(ti.name) >= L - 2; /* the last two blocks */
    }
    fixed_batch f = make_batch();
    f.b.ids = f.ids;
    f.b.lengths = f.len;
    /* the final norm: the one tensor after the blocks (the head is the tied embedding) */
    size_t fin = nt, emb = nt;
    for (size_t i = 0; i < nt; i++) {
        pk_tensor_info ti;
        PK_CHECK(pk_model_tensor(m, i, &ti) == PK_OK);
        if (strcmp(ti.name, "model.norm.weight") == 0)
            fin = i;
        if (strcmp(ti.name, "model.embed_tokens.weight") == 0)
            emb = i;
    }
    PK_CHECK(fin < nt && emb < nt);
    if (fin == nt || emb == nt)
        goto out;
    uint8_t *only = calloc(nt, 1), *mlp = calloc(nt, 1);
    for (size_t i = 0; i < nt; i++)
        mlp[i] = pk_model_tensor_stage(m, i) == 2 * L - 1;
    for (int threads = 1; threads <= 2; threads++) {
        pk_threads_set(threads);
        /* two stages a block: blocks L-2, L-1 per pass */
        check_prefix_call(m, &f, mask, 2 * (L - 2) + 2 * 4);
        mask[fin] = 1;
        check_prefix_call(m, &f, mask, 2 * (L - 2) + 2 * 4);
        only[fin] = 1;
        check_prefix_call(m, &f, only, 2 * L); /* every stage once, the final norm per pass */
        only[emb] = 1;
        check_prefix_call(m, &f, only, 2 * 2 * L); /* the embedding: no prefix */
        only[emb] = 0;
        mask[fin] = 0;
        /* the top block's MLP half: its attention half is shared too (stage 2L - 1) */
        check_prefix_call(m, &f, mlp, (2 * L - 1) + 2 * 1);
    }
    free(only);
    free(mlp);
out:
    pk_threads_set(2);
    free(mask);
    pk_model_free(m);
}

/* The +/- losses of a paired call under mask, into pair[2]. */
static void paired(pk_model *m, const fixed_batch *f, const uint8_t *mask, double pair[2])
{
    pk_perturb both = {7, 1e-2f, PK_Z_GAUSSIAN, mask, 1};
    PK_CHECK(pk_model_loss(m, &f->b, NULL, &both, NULL, NULL, pair) == PK_OK);
}

/* The frozen prefix (pk_model_freeze_prefix): with the last two blocks trainable, a paired loss
 * has the same bits with the store cold (each row computed by itself), warm (each row copied),
 * keeping nothing (cap 0), on a fresh model, at 1 and 2 threads; a warm call runs only the two
 * trainable blocks per pass; the losses are within 1e-5 of the store's off (another tiling of the
 * rows, not the same bits); level 0 turns it off, a level past the blocks is refused. */
static void test_frozen_prefix(void)
{
    pk_model *m = load(), *fresh = load();
    size_t nt = pk_model_n_tensors(m);
    int L = pk_model_n_layers(m);
    uint8_t *mask = calloc(nt, 1);
    for (size_t i = 0; i < nt; i++) {
        pk_tensor_info ti;
        PK_CHECK(pk_model_tensor(m, i, &ti) == PK_OK);
        mask[i] = pk_tensor_layer(ti.name) >= L - 2;
    }
    PK_CHECK_EQ(pk_model_trainable_level(m, mask), 2 * (L - 2)); /* two stages a block */
    PK_CHECK_EQ(pk_model_trainable_level(m, NULL), 0);
    fixed_batch f = make_batch();
    f.b.ids = f.ids;
    f.b.lengths = f.len;
    double off[2], cold[2], warm[2], none[2], again[2];
    paired(m, &f, mask, off);
    PK_CHECK(pk_model_freeze_prefix(m, 2 * L + 1, 1u << 20) == PK_ERR_ARG);
    PK_CHECK(pk_model_freeze_prefix(m, 2 * (L - 2), 1u << 20) == PK_OK);
    PK_CHECK(pk_model_freeze_prefix(fresh, 2 * (L - 2), 0) == PK_OK);
    PK_CHECK_EQ(pk_model_frozen_level(m), 2 * (L - 2));
    uint64_t hits, misses;
    size_t bytes;
    paired(m, &f, mask, cold);
    pk_model_frozen_stats(m, &hits, &misses, &bytes);
    PK_CHECK(hits == 0 && misses == 2 && bytes > 0); /* both rows computed, kept */
    for (int threads = 1; threads <= 2; threads++) {
        pk_threads_set(threads);
        uint64_t b0 = pk_model_block_evals(m);
        paired(m, &f, mask, warm);
        PK_CHECK_EQ((long long)(pk_model_block_evals(m) - b0), 2LL * 2); /* 2 blocks x 2 passes */
        PK_CHECK(!memcmp(warm, cold, sizeof cold));
        paired(fresh, &f, mask, none);
        PK_CHECK(!memcmp(none, cold, sizeof cold));
    }
    pk_model_frozen_stats(m, &hits, &misses, &bytes);
    PK_CHECK(hits == 4 && misses == 2);
    pk_model_frozen_stats(fresh, &hits, &misses, &bytes);
    PK_CHECK(hits == 0 && misses == 4 && bytes == 0); /* cap 0: each row by itself every time */
    PK_CHECK(cold[0] != cold[1]);
    for (int k = 0; k < 2; k++)
        PK_CHECK(fabs(cold[k] - off[k]) <= 1e-5 * fabs(off[k]));
    PK_CHECK(pk_model_freeze_prefix(m, 0, 0) == PK_OK && pk_model_frozen_level(m) == 0);
    paired(m, &f, mask, again);
    PK_CHECK(!memcmp(again, off, sizeof off));
    pk_threads_set(2);
    free(mask);
    pk_model_free(m);
    pk_model_free(fresh);
}

/* The frozen prefix through half a block: the top block's MLP half (pk_model_tensor_stage: the
 * post-attention norm and the FFN; the attention projections are stage 2l, model.norm is outside
 * the blocks) trains, so the store holds each row after the top block's attention half (level
 * 2L - 1). A warm paired loss runs one stage per pass and has the bits of a cold one and of a
 * store that keeps nothing, at 1 and 2 threads; within 1e-5 of the store's off. */
static void test_frozen_mlp_half(void)
{
    pk_model *m = load(), *fresh = load();
    size_t nt = pk_model_n_tensors(m);
    int L = pk_model_n_layers(m), n_mlp = 0;
    uint8_t *mlp = calloc(nt, 1);
    for (size_t i = 0; i < nt; i++) {
        pk_tensor_info ti;
        PK_CHECK(pk_model_tensor(m, i, &ti) == PK_OK);
        int st = pk_model_tensor_stage(m, i), l = pk_tensor_layer(ti.name);
        PK_CHECK_EQ(st < 0 ? -1 : st / 2, l); /* every block tensor in its block's stages */
        if (strstr(ti.name, "self_attn.") || strstr(ti.name, "input_layernorm"))
            PK_CHECK_EQ(st, 2 * l);
        if (strstr(ti.name, ".mlp.") || strstr(ti.name, "post_attention_layernorm"))
            PK_CHECK_EQ(st, 2 * l + 1);
        mlp[i] = st == 2 * L - 1;
        n_mlp += mlp[i];
    }
    PK_CHECK(n_mlp >= 4); /* ln2, gate, up, down */
    PK_CHECK_EQ(pk_model_trainable_level(m, mlp), 2 * L - 1);
    fixed_batch f = make_batch();
    f.b.ids = f.ids;
    f.b.lengths = f.len;
    double off[2], cold[2], warm[2], none[2];
    paired(m, &f, mlp, off);
    PK_CHECK(pk_model_freeze_prefix(m, 2 * L - 1, 1u << 20) == PK_OK);
    PK_CHECK(pk_model_freeze_prefix(fresh, 2 * L - 1, 0) == PK_OK);
    paired(m, &f, mlp, cold);
    for (int threads = 1; threads <= 2; threads++) {
        pk_threads_set(threads);
        uint64_t s0 = pk_model_stage_evals(m);
        paired(m, &f, mlp, warm);
        PK_CHECK_EQ((long long)(pk_model_stage_evals(m) - s0), 2LL); /* the MLP half x 2 passes */
        PK_CHECK(!memcmp(warm, cold, sizeof cold));
        paired(fresh, &f, mlp, none);
        PK_CHECK(!memcmp(none, cold, sizeof cold));
    }
    uint64_t hits, misses;
    size_t bytes;
    pk_model_frozen_stats(m, &hits, &misses, &bytes);
    PK_CHECK(hits == 4 && misses == 2 && bytes > 0);
    PK_CHECK(cold[0] != cold[1]);
    for (int k = 0; k < 2; k++)
        PK_CHECK(fabs(cold[k] - off[k]) <= 1e-5 * fabs(off[k]));
    pk_threads_set(2);
    free(mlp);
    pk_model_free(m);
    pk_model_free(fresh);
}

/* Two fixed batches, micro-batch k the k-th: the per-pass loss and the sweep loss of them. */
typedef struct two_batches {
    fixed_batch f[2];
} two_batches;

static pk_status two_loss(void *user, pk_model *m, int micro, const pk_perturb *pert, double *loss)
{
    two_batches *t = user;
    return pk_model_loss(m, &t->f[micro].b, NULL, pert, NULL, NULL, loss);
}

static pk_status two_sweep(void *user, pk_model *m, int micro, const pk_sweep *s, double *loss)
{
    two_batches *t = user;
    return pk_model_loss_sweep(m, &t->f[micro].b, NULL, s, NULL, NULL, loss);
}

/* The shared prefix a step's perturbation i has: its lowest perturbed block (0 when it perturbs
 * a tensor outside the blocks). */
static int lowest_layer(const pk_model *m, const pk_mezo_params *p, uint64_t seed, uint8_t *mask)
{
    int low = -1;
    pk_mezo_layer_mask(m, NULL, p, seed, mask);
    for (size_t i = 0; i < pk_model_n_tensors(m); i++) {
        pk_tensor_info ti;
        PK_CHECK(pk_model_tensor(m, i, &ti) == PK_OK);
        int l = pk_tensor_layer(ti.name);
        if (mask[i] && l < 0)
            return 0;
        if (mask[i] && (low < 0 || l < low))
            low = l;
    }
    return low < 0 ? 0 : low;
}

/* Block evaluations of one micro-batch of a step: the sweep path runs the unperturbed blocks
 * once (L, or the highest level without an unperturbed evaluation) and each evaluation its blocks
 * from its lowest perturbed one; the per-pass path a whole forward per evaluation, a +/- pair
 * sharing its prefix (2L - low). */
static void expected_blocks(const pk_model *m, const pk_mezo_params *p, int64_t step,
                            uint64_t *sweep, uint64_t *per_pass)
{
    int L = pk_model_n_layers(m), fz = p->estimator == PK_EST_FZOO;
    int n = fz ? p->perturbations : p->spsa_q, top = 0;
    int base = fz || pk_mezo_hessian_step(p, step); /* hizoo: l0 on its Hessian steps only */
    uint8_t *mask = malloc(pk_model_n_tensors(m));
    *sweep = 0;
    *per_pass = base ? (uint64_t)L : 0;
    for (int i = 0; i < n; i++) {
        int low = lowest_layer(m, p, pk_mezo_step_seed(p->seed, step, i), mask);
        top = low > top ? low : top;
        *sweep += (uint64_t)(fz ? 1 : 2) * (uint64_t)(L - low);
        *per_pass += fz ? (uint64_t)L : (uint64_t)(2 * L - low);
    }
    *sweep += base ? (uint64_t)L : (uint64_t)top;
    free(mask);
}

/* fzoo's, hizoo's and layer-sampled spsa's evaluations through one sweep per micro-batch
 * (pk_mezo_step_sweep, the engine ordering them by their lowest perturbed block) give the rows
 * and weights of one pass per evaluation (pk_mezo_step_ex), bit for bit, with and without
 * layer sampling, at 1 and 2 threads; and the blocks below each perturbation's lowest one ran
 * once per micro-batch: exactly the block evaluations the plan says, fewer than per pass. */
static void test_sweep_path(void)
{
    two_batches tb;
    tb.f[0] = make_batch();
    tb.f[1] = make_batch();
    for (int i = 0; i < 32; i++)
        tb.f[1].ids[i] = (int32_t)((i * 91 + 5) % 500);
    for (int k = 0; k < 2; k++) {
        tb.f[k].b.ids = tb.f[k].ids;
        tb.f[k].b.lengths = tb.f[k].len;
    }
    pk_mezo_loss per = {two_loss, NULL, &tb}, swept = {two_loss, two_sweep, &tb};
    char want[6][65];
    for (int threads = 1; threads <= 2; threads++) {
        pk_threads_set(threads);
        for (int cfg = 0; cfg < 6; cfg++) { /* fzoo, hizoo, spsa: without, with 2 layers */
            pk_mezo_params p = pk_mezo_default_params();
            p.estimator = cfg < 2 ? PK_EST_FZOO : cfg < 4 ? PK_EST_HIZOO : PK_EST_SPSA;
            p.perturb_layers = cfg % 2 ? 2 : 0;
            if (p.estimator == PK_EST_SPSA && p.perturb_layers == 0)
                p.perturb_layers = 3; /* plain spsa is pk_mezo_step: sample 3 of 5 instead */
            p.perturbations = 6;
            p.spsa_q = 3;
            p.z = cfg < 2 ? PK_Z_RADEMACHER : PK_Z_GAUSSIAN;
            p.lr = 1e-3f;
            p.seed = 40 + (uint64_t)cfg;
            p.hessian_budget = 1.5f;
            p.hessian_smooth = 0.1f;
            p.hessian_every = 2; /* hizoo: steps 0 and 2 with l0, step 1 without */
            pk_model *m[2] = {load(), load()};
            pk_mezo_state *st[2] = {NULL, NULL};
            char err[256] = "", h[2][65];
            int nr = pk_mezo_rows_per_step(&p);
            pk_step_row rows[2][3 * 6];
            memset(rows, 0, sizeof rows);
            for (int v = 0; v < 2; v++) {
                PK_CHECK(pk_mezo_state_new(m[v], NULL, &p, &st[v], err, sizeof err) == PK_OK);
                uint64_t sweeps = 0, passes = 0;
                for (int64_t step = 0; step < 3; step++) {
                    uint64_t b0 = pk_model_block_evals(m[v]), sweep = 0, pass = 0;
                    PK_CHECK(pk_mezo_step_sweep(m[v], NULL, &p, st[v], step, 2, v ? &swept : &per,
                                                rows[v] + step * nr, NULL, NULL) == PK_OK);
                    expected_blocks(m[v], &p, step, &sweep, &pass);
                    uint64_t ran = pk_model_block_evals(m[v]) - b0;
                    PK_CHECK_EQ((long long)ran, (long long)(2 * (v ? sweep : pass)));
                    PK_CHECK(sweep <= pass);
                    sweeps += sweep;
                    passes += pass;
                }
                if (v == 0 && threads == 1)
                    printf("%s layers %d: %llu block evaluations in sweeps, %llu per pass\n",
                           pk_estimator_name(p.estimator), p.perturb_layers,
                           (unsigned long long)sweeps, (unsigned long long)passes);
                PK_CHECK(p.perturb_layers > 0 ? sweeps < passes : sweeps == passes);
                PK_CHECK(pk_weights_hash(m[v], h[v]) == PK_OK);
            }
            PK_CHECK(!memcmp(rows[0], rows[1], (size_t)(3 * nr) * sizeof(pk_step_row)));
            PK_CHECK(!strcmp(h[0], h[1]));
            PK_CHECK(rows[1][0].loss_plus != rows[1][1].loss_plus); /* the steps did something */
            if (threads == 1)
                memcpy(want[cfg], h[0], 65);
            else
                PK_CHECK(!strcmp(want[cfg], h[1]));
            for (int v = 0; v < 2; v++) {
                pk_mezo_state_free(st[v]);
                pk_model_free(m[v]);
            }
        }
    }
    pk_threads_set(2);
}

/* The objectives' sweep loss (what the trainer hands the engine) gives, per evaluation, the bits
 * of pk_objective_loss on that evaluation alone: lm and classify (causal: one row per label
 * word), one-sided with an unperturbed evaluation (fzoo) and two-sided (hizoo), each
 * perturbation on its own 2 of the 5 blocks. */
/* pk_objective_freeze_prefix: the top block's set gets level 2(L - 1) (these rows fit), every
 * tensor none. Under it a sweep with an unperturbed evaluation (fedsim's fzoo group, the
 * trainer's fzoo) takes every evaluation, l0 included, from the stored rows (only the top block
 * runs): the bits of the same sweep with nothing kept (each row recomputed by itself). */
static void check_frozen_sweep(pk_objective *o, pk_model *m, const uint64_t *seeds)
{
    size_t nt = pk_model_n_tensors(m);
    int L = pk_model_n_layers(m);
    uint8_t *top = calloc(nt, 1);
    for (size_t i = 0; top && i < nt; i++) {
        pk_tensor_info ti;
        PK_CHECK(pk_model_tensor(m, i, &ti) == PK_OK);
        top[i] = pk_tensor_layer(ti.name) == L - 1;
    }
    PK_CHECK(pk_objective_freeze_prefix(o, m, NULL) == PK_OK && pk_model_frozen_level(m) == 0);
    PK_CHECK(pk_objective_freeze_prefix(o, m, top) == PK_OK);
    PK_CHECK_EQ(pk_model_frozen_level(m), 2 * (L - 1));
    pk_sweep sw = {{0, 1e-2f, PK_Z_RADEMACHER, top, 0}, 3, seeds, NULL, 1};
    double kept[4], warm[4], alone[4];
    uint64_t hits, misses;
    size_t bytes;
    PK_CHECK(pk_objective_loss_sweep(o, m, &sw, kept) == PK_OK);
    uint64_t b0 = pk_model_block_evals(m);
    PK_CHECK(pk_objective_loss_sweep(o, m, &sw, warm) == PK_OK);
    /* warm, l0 too: the top block once per evaluation, nothing below it */
    PK_CHECK_EQ((long long)(pk_model_block_evals(m) - b0), 4LL);
    pk_model_frozen_stats(m, &hits, &misses, &bytes);
    PK_CHECK(misses >= 4 && hits == misses && bytes > 0); /* each row once, then from the store */
    PK_CHECK(pk_model_freeze_prefix(m, 2 * (L - 1), 0) == PK_OK); /* nothing kept */
    PK_CHECK(pk_objective_loss_sweep(o, m, &sw, alone) == PK_OK);
    PK_CHECK(!memcmp(kept, warm, sizeof kept) && !memcmp(kept, alone, sizeof kept));
    PK_CHECK(kept[0] != kept[1] && isfinite(kept[0]));
    PK_CHECK(pk_model_freeze_prefix(m, 0, 0) == PK_OK);
    free(top);
}

static void test_objective_sweep(void)
{
    pk_model *m = load();
    pk_tokenizer *tok = NULL;
    char err[256] = "";
    PK_CHECK(pk_tokenizer_load(STORIES, &tok, err, sizeof err) == PK_OK);
    static const char *const text[4] = {"One day, Lily found a red ball.",
                                        "Tom lost his kite in the tree.",
                                        "Sue ate a big sweet cake with mom.", "Ben fell and hurt."};
    static const char *const label[4] = {"happy", "sad", "happy", "sad"};
    pk_example ex[4];
    pk_example *exs[4];
    for (int i = 0; i < 4; i++) {
        ex[i] = (pk_example){i + 1, text[i], NULL, NULL, NULL, label[i]};
        exs[i] = &ex[i];
    }
    size_t idx[4] = {0, 1, 2, 3}, nt = pk_model_n_tensors(m);
    pk_mezo_params p = pk_mezo_default_params();
    p.perturb_layers = 2;
    enum { N = 3 };
    uint64_t seeds[N];
    uint8_t *mk = malloc(N * nt);
    const uint8_t *masks[N];
    for (int i = 0; i < N; i++) {
        seeds[i] = pk_mezo_step_seed(3, 1, i);
        masks[i] = mk + (size_t)i * nt;
        pk_mezo_layer_mask(m, NULL, &p, seeds[i], mk + (size_t)i * nt);
    }
    for (int kind = 0; kind < 2; kind++) {
        pk_objective_params op = {kind ? PK_OBJ_CLASSIFY : PK_OBJ_LM, 32, "{text} They felt",
                                  " happy, sad"};
        pk_objective *o = NULL;
        PK_CHECK(pk_objective_new(m, tok, op, exs, 4, &o, err, sizeof err) == PK_OK);
        PK_CHECK(o != NULL && pk_objective_select(o, idx, 4) == PK_OK);
        for (int both = 0; o && both < 2; both++) {
            pk_sweep sw = {{0, 1e-2f, PK_Z_GAUSSIAN, NULL, both}, N, seeds, masks, 1};
            double got[1 + 2 * N], want[1 + 2 * N];
            PK_CHECK(pk_objective_loss_sweep(o, m, &sw, got) == PK_OK);
            PK_CHECK(pk_objective_loss(o, m, NULL, want, NULL, NULL) == PK_OK);
            for (int i = 0; i < N; i++) {
                pk_perturb pert = {seeds[i], 1e-2f, PK_Z_GAUSSIAN, masks[i], both};
                PK_CHECK(pk_objective_loss(o, m, &pert, want + 1 + (both + 1) * i, NULL, NULL) ==
                         PK_OK);
            }
            PK_CHECK_EQ(pk_sweep_evals(&sw), 1 + (both + 1) * N);
            PK_CHECK(!memcmp(got, want, (size_t)pk_sweep_evals(&sw) * sizeof(double)));
            PK_CHECK(got[0] != got[1] && isfinite(got[0]));
        }
        if (o)
            check_frozen_sweep(o, m, seeds);
        pk_objective_free(o);
    }
    free(mk);
    pk_tokenizer_free(tok);
    pk_model_free(m);
}

/* hizoo: the whole model's diagonal is over the default budget (refused, both sizes named); H = 1
 * perturbs exactly as plain z; a step moves H away from 1 and replay rebuilds it bit for bit. */
/* hizoo refuses a Hessian diagonal over its budget, each size in the unit that fits to three
 * digits, the need rounded up and the budget down (so they never print as equal), never 0 for a
 * budget above 0. */
static void check_hizoo_budget_messages(const pk_model *m)
{
    pk_mezo_params p = pk_mezo_default_params();
    p.estimator = PK_EST_HIZOO;
    pk_mezo_state *st = NULL;
    char err[256] = "";
    PK_CHECK_EQ(pk_mezo_state_new(m, NULL, &p, &st, err, sizeof err), PK_ERR_ARG);
    PK_CHECK(st == NULL && strstr(err, "Hessian") != NULL);
    /* the whole diagonal (the weights' bytes, all f32) in MB, its budget of a tenth in KB */
    size_t wb = pk_model_weight_bytes(m);
    double wb_mb_up = ceil((double)wb / 1e4) / 100; /* MB to 2 decimals, rounded up */
    char want[160];
    snprintf(want, sizeof want, "needs %.2f MB, more than the budget of %.0f KB (0.1 x the %.2f MB",
             wb_mb_up, floor((double)p.hessian_budget * (double)wb / 1e3), wb_mb_up);
    PK_CHECK(wb > 1000000 && wb < 10000000);
    PK_CHECK(strstr(err, want) != NULL);
    /* a budget just under the need: both in MB, and they differ */
    p.hessian_budget = 0.9999f;
    PK_CHECK_EQ(pk_mezo_state_new(m, NULL, &p, &st, err, sizeof err), PK_ERR_ARG);
    double b_mb_down = floor((double)p.hessian_budget * (double)wb / 1e4) / 100;
    snprintf(want, sizeof want, "needs %.2f MB, more than the budget of %.2f MB", wb_mb_up,
             b_mb_down);
    PK_CHECK(b_mb_down < wb_mb_up && strstr(err, want) != NULL);
    /* a budget under one byte says so */
    p.hessian_budget = 1e-9f;
    PK_CHECK_EQ(pk_mezo_state_new(m, NULL, &p, &st, err, sizeof err), PK_ERR_ARG);
    PK_CHECK(strstr(err, "more than the budget of under 1 byte (") != NULL);
    /* one small tensor over a tiny budget: plain bytes, no "0.0 MB" */
    uint8_t *one = calloc(pk_model_n_tensors(m), 1);
    size_t small = 0;
    for (size_t i = 0; i < pk_model_n_tensors(m) && !small; i++) {
        pk_tensor_info t1;
        PK_CHECK(pk_model_tensor(m, i, &t1) == PK_OK);
        if (t1.numel * 4 < 1000) {
            one[i] = 1;
            small = t1.numel * 4;
        }
    }
    p.hessian_budget = 1e-4f;
    PK_CHECK_EQ(pk_mezo_state_new(m, one, &p, &st, err, sizeof err), PK_ERR_ARG);
    snprintf(want, sizeof want, "needs %zu bytes, more than the budget of %.0f bytes", small,
             floor((double)1e-4f * (double)wb));
    PK_CHECK(small > 0 && strstr(err, want) != NULL && strstr(err, "0.0 MB") == NULL);
    free(one);
}

static void test_hizoo_state(void)
{
    pk_model *m = load(), *r = load();
    pk_mezo_params p = pk_mezo_default_params();
    p.estimator = PK_EST_HIZOO;
    p.hessian_every = 1; /* every step: two rows per step below */
    pk_mezo_state *st = NULL, *st2 = NULL;
    char err[256] = "";
    check_hizoo_budget_messages(m);
    p.hessian_budget = 1.5f;
    p.hessian_smooth = 0.01f;
    p.lr = 1e-3f;
    PK_CHECK(pk_mezo_state_new(m, NULL, &p, &st, err, sizeof err) == PK_OK && st != NULL);
    PK_CHECK(pk_mezo_state_new(r, NULL, &p, &st2, err, sizeof err) == PK_OK && st2 != NULL);
    PK_CHECK_EQ(pk_mezo_rows_per_step(&p), 2);
    PK_CHECK_EQ(pk_mezo_evals_per_step(&p), 3);
    fixed_batch f = make_batch();
    f.b.ids = f.ids;
    f.b.lengths = f.len;
    pk_step_row rows[6];
    for (int s = 0; s < 3; s++)
        PK_CHECK(pk_mezo_step_ex(m, NULL, &p, st, s, 1, fixed_loss, &f, rows + 2 * s, NULL, NULL) ==
                 PK_OK);
    PK_CHECK(rows[0].lr == 0.0f && rows[0].g >= 0.0f && rows[1].lr == p.lr);
    PK_CHECK(rows[0].loss_plus == rows[0].loss_minus);
    pk_mezo_replay_ex(r, NULL, &p, st2, rows, 6);
    char h1[65], h2[65];
    PK_CHECK(pk_weights_hash(m, h1) == PK_OK && pk_weights_hash(r, h2) == PK_OK);
    PK_CHECK(!strcmp(h1, h2));
    /* the state as checkpoint bytes: one fp32 per element, read back exactly, a wrong length
     * refused; a stateless estimator has none */
    size_t nb = pk_mezo_state_bytes(st);
    size_t elems = 0;
    for (size_t i = 0; i < pk_model_n_tensors(m); i++) {
        pk_tensor_info ti;
        if (pk_model_tensor(m, i, &ti) == PK_OK)
            elems += ti.numel;
    }
    PK_CHECK_EQ(nb, elems * sizeof(float));
    PK_CHECK_EQ(pk_mezo_state_bytes(NULL), 0);
    unsigned char *b1 = malloc(nb), *b2 = malloc(nb);
    pk_mezo_state *st3 = NULL;
    PK_CHECK(pk_mezo_state_new(r, NULL, &p, &st3, err, sizeof err) == PK_OK && b1 && b2);
    if (b1 && b2 && st3) {
        pk_mezo_state_save(st, b1);
        pk_mezo_state_save(st3, b2);
        PK_CHECK(memcmp(b1, b2, nb) != 0); /* H moved away from 1 */
        PK_CHECK_EQ(pk_mezo_state_load(st3, b1, nb - 1), PK_ERR_FORMAT);
        PK_CHECK_EQ(pk_mezo_state_load(st3, b1, nb), PK_OK);
        pk_mezo_state_save(st3, b2);
        PK_CHECK(memcmp(b1, b2, nb) == 0);
    }
    free(b1);
    free(b2);
    pk_mezo_state_free(st3);
    pk_mezo_state_free(st);
    pk_mezo_state_free(st2);
    pk_model_free(m);
    pk_model_free(r);
}

/* hizoo with q pairs, a large smoothing (H moves far from 1 within a few steps), lr 1e-3 and
 * weight decay 0.1, for the element-by-element tests below. */
static pk_mezo_params hizoo_test_params(int q)
{
    pk_mezo_params p = pk_mezo_default_params();
    p.estimator = PK_EST_HIZOO;
    p.hessian_budget = 1.5f;
    p.hessian_smooth = 0.05f;
    p.spsa_q = q;
    p.lr = 1e-3f;
    p.weight_decay = 0.1f;
    p.hessian_every = 1; /* HiZOO's every step (test_hizoo_interval sets K) */
    return p;
}

/* hizoo's step element by element, from its rows and z alone (DESIGN 4, the reference code's
 * order): H' = ((1 - alpha) H) + (c (H (z z))) with the old H inside, then
 * W' = W - lr ((g (z / sqrtf(H'))) + (wd W)) with the new H. Two steps, so the second H update
 * starts from the first's H; every fp32 element of stories260k is compared bit for bit. */
static void test_hizoo_formula(void)
{
    pk_mezo_params p = hizoo_test_params(1);
    fixed_batch f = make_batch();
    f.b.ids = f.ids;
    f.b.lengths = f.len;
    pk_model *m = load();
    pk_mezo_state *st = NULL;
    PK_CHECK(pk_mezo_state_new(m, NULL, &p, &st, NULL, 0) == PK_OK && st != NULL);
    size_t nh = pk_mezo_state_bytes(st) / sizeof(float), bad = 0, n32 = 0;
    float *h = malloc(nh * sizeof(float)), *w = malloc(nh * sizeof(float));
    float *got = malloc(nh * sizeof(float)), *z = malloc(nh * sizeof(float));
    PK_CHECK(h && w && got && z);
    for (size_t i = 0; i < nh && h; i++)
        h[i] = 1.0f;
    float keep = 1.0f - p.hessian_smooth;
    for (int k = 0; k < 2 && st && h && w && got && z; k++) {
        size_t off = 0;
        for (size_t t = 0; t < pk_model_n_tensors(m); t++) { /* W before the step */
            pk_tensor_info ti;
            PK_CHECK(pk_model_tensor(m, t, &ti) == PK_OK);
            if (ti.dtype == PK_DTYPE_F32)
                memcpy(w + off, ti.data, ti.numel * sizeof(float));
            off += ti.numel;
        }
        pk_step_row r[2];
        PK_CHECK(pk_mezo_step_ex(m, NULL, &p, st, k, 1, fixed_loss, &f, r, NULL, NULL) == PK_OK);
        pk_mezo_state_save(st, got);
        off = 0;
        for (size_t t = 0; t < pk_model_n_tensors(m); t++) {
            pk_tensor_info ti;
            PK_CHECK(pk_model_tensor(m, t, &ti) == PK_OK);
            pk_z_fill(r[0].seed, ti.key, 0, ti.numel, p.z, z + off);
            float wd = ti.is_bias_or_norm ? 0.0f : p.weight_decay;
            for (size_t j = 0; j < ti.numel; j++) {
                size_t e = off + j;
                volatile float zz = z[e] * z[e], hz = h[e] * zz, a = keep * h[e], b = r[0].g * hz;
                h[e] = a + b;
                if (memcmp(&h[e], &got[e], sizeof(float)) != 0)
                    bad++;
                if (ti.dtype != PK_DTYPE_F32)
                    continue;
                volatile float d = z[e] / sqrtf(h[e]), gd = r[1].g * d, dw = wd * w[e];
                volatile float sum = gd + dw, step = r[1].lr * sum;
                float want = w[e] - step;
                n32++;
                if (memcmp(&want, (const float *)ti.data + j, sizeof(float)) != 0)
                    bad++;
            }
            off += ti.numel;
        }
    }
    size_t moved = 0; /* H left 1 (alpha is large here), so the comparison is not of ones */
    for (size_t i = 0; h && i < nh; i++)
        moved += h[i] != 1.0f;
    PK_CHECK(n32 > 100000 && moved > nh / 2);
    PK_CHECK_EQ(bad, 0);
    free(h);
    free(w);
    free(got);
    free(z);
    pk_mezo_state_free(st);
    pk_model_free(m);
}

/* Replays rows[0, n) one row per sweep on a fresh model at 1 thread under p1, then at 2 under
 * p2, and checks each ends at the weights hash `live` and the hizoo state bytes want[nb]. */
static void check_row_replay(const pk_mezo_params *p1, const pk_mezo_params *p2,
                             const pk_step_row *rows, size_t n, const char *live,
                             const unsigned char *want, size_t nb)
{
    unsigned char *h2 = malloc(nb);
    PK_CHECK(h2 != NULL);
    char err[256] = "", back[65] = "";
    for (int threads = 1; threads <= 2 && h2; threads++) {
        const pk_mezo_params *p = threads == 1 ? p1 : p2;
        pk_model *r = load();
        pk_mezo_state *s2 = NULL;
        pk_threads_set(threads);
        PK_CHECK(pk_mezo_state_new(r, NULL, p, &s2, err, sizeof err) == PK_OK && s2 != NULL);
        for (size_t i = 0; s2 != NULL && i < n; i++)
            pk_mezo_replay_ex(r, NULL, p, s2, rows + i, 1);
        PK_CHECK(pk_weights_hash(r, back) == PK_OK);
        PK_CHECK(!strcmp(live, back));
        if (s2 != NULL) {
            pk_mezo_state_save(s2, h2);
            PK_CHECK(memcmp(want, h2, nb) == 0);
        }
        pk_mezo_state_free(s2);
        pk_model_free(r);
    }
    pk_threads_set(2);
    free(h2);
}

/* Replay applies a hizoo perturbation's Hessian row and weight row in one sweep (one z
 * generation); the same rows one sweep each (replayed one row at a time) end at the same weights
 * and H, bit for bit, at 1 and 2 threads: q = 2 pairs, weight decay, three steps. */
static void test_hizoo_one_sweep(void)
{
    pk_mezo_params p = hizoo_test_params(2);
    fixed_batch f = make_batch();
    f.b.ids = f.ids;
    f.b.lengths = f.len;
    pk_step_row rows[12];
    pk_model *m = load();
    pk_mezo_state *st = NULL;
    char err[256] = "";
    pk_threads_set(2);
    PK_CHECK(pk_mezo_state_new(m, NULL, &p, &st, err, sizeof err) == PK_OK && st != NULL);
    for (int k = 0; st != NULL && k < 3; k++)
        PK_CHECK(pk_mezo_step_ex(m, NULL, &p, st, k, 1, fixed_loss, &f, rows + 4 * k, NULL, NULL) ==
                 PK_OK);
    char live[65] = "";
    PK_CHECK(pk_weights_hash(m, live) == PK_OK);
    size_t nb = pk_mezo_state_bytes(st);
    unsigned char *h1 = malloc(nb);
    PK_CHECK(h1 != NULL && nb > 0);
    if (h1 != NULL && st != NULL)
        pk_mezo_state_save(st, h1);
    /* replay follows the rows: these every-step rows (an old log's) replay to the same bits
     * under the new default interval (at 2 threads) */
    pk_mezo_params p16 = p;
    p16.hessian_every = 16;
    if (h1 != NULL)
        check_row_replay(&p, &p16, rows, 12, live, h1, nb);
    free(h1);
    pk_mezo_state_free(st);
    pk_model_free(m);
}

/* hizoo with the Hessian update every K = 3 steps, q = 2, seven steps: steps 0, 3, 6 take the
 * unperturbed loss (2q + 1 evaluations) and log a Hessian row and a weight row per pair; the
 * others take 2q evaluations, log their q weight rows (q_index 1, 3) and leave H as it was.
 * The rows alone, replayed one at a time at 1 and 2 threads under the every-step setting (a log
 * without the setting), rebuild the weights and H bit for bit. */
static void test_hizoo_interval(void)
{
    pk_mezo_params p = hizoo_test_params(2);
    p.hessian_every = 3;
    counted_batch cb;
    cb.f = make_batch();
    cb.f.b.ids = cb.f.ids;
    cb.f.b.lengths = cb.f.len;
    cb.evals = 0;
    pk_step_row rows[7 * 4];
    size_t nr = 0;
    pk_model *m = load();
    pk_mezo_state *st = NULL;
    char err[256] = "";
    pk_threads_set(2);
    PK_CHECK(pk_mezo_state_new(m, NULL, &p, &st, err, sizeof err) == PK_OK && st != NULL);
    size_t nb = pk_mezo_state_bytes(st);
    unsigned char *before = malloc(nb), *after = malloc(nb);
    PK_CHECK(before && after && nb > 0);
    int same_h = 0, moved_h = 0;
    for (int k = 0; st && before && after && k < 7; k++) {
        int upd = k % 3 == 0, n = pk_mezo_step_rows(&p, k);
        int64_t e0 = cb.evals;
        pk_mezo_state_save(st, before);
        PK_CHECK(pk_mezo_step_ex(m, NULL, &p, st, k, 1, counted_loss, &cb, rows + nr, NULL, NULL) ==
                 PK_OK);
        pk_mezo_state_save(st, after);
        PK_CHECK_EQ(pk_mezo_hessian_step(&p, k), upd);
        PK_CHECK_EQ(n, upd ? 4 : 2);
        PK_CHECK_EQ(cb.evals - e0, upd ? 5 : 4);
        for (int i = 0; i < n; i++) {
            const pk_step_row *r = &rows[nr + (size_t)i];
            int q_index = upd ? i : 2 * i + 1;
            PK_CHECK(r->step == k && r->q_index == q_index);
            PK_CHECK(r->q_index % 2 ? r->lr > 0.0f : r->lr == 0.0f && r->g > 0.0f);
        }
        if (upd)
            moved_h += memcmp(before, after, nb) != 0;
        else
            same_h += memcmp(before, after, nb) == 0;
        nr += (size_t)n;
    }
    PK_CHECK(same_h == 4 && moved_h == 3 && nr == 3 * 4 + 4 * 2);
    PK_CHECK_EQ(pk_mezo_evals_upto(&p, 7), cb.evals);
    PK_CHECK(pk_mezo_evals_upto(&p, 7) == 7 * 4 + 3 && pk_mezo_evals_upto(&p, 1) == 5 &&
             pk_mezo_evals_upto(&p, 3) == 13 && pk_mezo_evals_upto(&p, 4) == 18);
    char live[65] = "";
    PK_CHECK(pk_weights_hash(m, live) == PK_OK);
    pk_mezo_params every = p;
    every.hessian_every = 1;
    if (after != NULL)
        check_row_replay(&every, &every, rows, nr, live, after, nb);
    free(before);
    free(after);
    pk_mezo_state_free(st);
    pk_model_free(m);
}

/* The run settings carry hessian_every; a run stored before the key (no key) updated H every
 * step and resumes so; a key out of range is refused. */
static void test_hessian_every_config(void)
{
    pk_train_config c = est_config(PK_EST_HIZOO, 0), back;
    char *json = NULL, err[256] = "";
    c.mezo.hessian_every = 4;
    PK_CHECK(pk_train_config_to_json(&c, &json) == PK_OK && json != NULL);
    cJSON *o = json ? cJSON_Parse(json) : NULL;
    PK_CHECK(pk_train_config_from_json(json ? json : "{}", &back, err, sizeof err) == PK_OK);
    PK_CHECK_EQ(back.mezo.hessian_every, 4);
    cJSON_DeleteItemFromObjectCaseSensitive(o, "hessian_every");
    char *old = o ? cJSON_PrintUnformatted(o) : NULL;
    PK_CHECK(pk_train_config_from_json(old ? old : "{}", &back, err, sizeof err) == PK_OK);
    PK_CHECK_EQ(back.mezo.hessian_every, 1);
    cJSON_AddNumberToObject(o, "hessian_every", 0);
    char *bad = o ? cJSON_PrintUnformatted(o) : NULL;
    PK_CHECK_EQ(pk_train_config_from_json(bad ? bad : "{}", &back, err, sizeof err), PK_ERR_FORMAT);
    PK_CHECK(strstr(err, "hessian_every") != NULL);
    PK_CHECK_EQ(pk_mezo_default_params().hessian_every, 16);
    free(bad);
    free(old);
    cJSON_Delete(o);
    free(json);
}

/* A seed log of hizoo at hessian_every 2, q = 1 (step 0: a Hessian row and a weight row, step
 * 1: the weight row q 1 alone, step 2 both): 1 = written and read back with its interval,
 * 0 = refused. `variant` 1 gives step 1 a Hessian row too, 2 drops the interval from the
 * header, 3 drops step 2's Hessian row. */
static int seedlog_roundtrip(int variant)
{
    pk_step_row rows[6];
    size_t n = 0;
    for (int st = 0; st < 3; st++)
        for (int q = 0; q < 2; q++) {
            int hess = st != 1 || variant == 1;
            if ((q == 0 && !hess) || (variant == 3 && st == 2 && q == 0))
                continue;
            rows[n++] = (pk_step_row){.step = st,
                                      .q_index = q,
                                      .seed = 7 + (uint64_t)st,
                                      .g = 0.5f,
                                      .lr = q ? 1e-3f : 0.0f,
                                      .eps = 1e-3f};
        }
    pk_seedlog log;
    memset(&log, 0, sizeof log);
    memset(log.base_hash, 'a', 64);
    strcpy(log.trainable, "all");
    log.estimator = PK_EST_HIZOO;
    log.hessian_smooth = 1e-8f;
    log.hessian_every = variant == 2 ? 1 : 2;
    log.rows = rows;
    log.n_rows = n;
    char path[600], err[256] = "";
    snprintf(path, sizeof path, "%s/k.seedlog", home);
    PK_CHECK(pk_seedlog_write(path, &log, err, sizeof err) == PK_OK);
    size_t len = 0;
    char *text = slurp(path, &len);
    PK_CHECK(text && (strstr(text, "\nhessian_every 2\n") != NULL) == (variant != 2));
    free(text);
    pk_seedlog back;
    pk_status st = pk_seedlog_read(path, &back, err, sizeof err);
    int ok = st == PK_OK;
    if (ok) {
        PK_CHECK(back.n_rows == n && back.hessian_every == 2);
        pk_seedlog_clear(&back);
    } else {
        PK_CHECK(st == PK_ERR_FORMAT && strstr(err, "out of order") != NULL);
    }
    return ok;
}

/* The seed log reader checks a hizoo log's rows against its hessian_every: Hessian rows on the
 * steps with step % K == 0 and there only. */
static void test_hizoo_seedlog_rows(void)
{
    PK_CHECK_EQ(seedlog_roundtrip(0), 1);
    PK_CHECK_EQ(seedlog_roundtrip(1), 0);
    PK_CHECK_EQ(seedlog_roundtrip(2), 0);
    PK_CHECK_EQ(seedlog_roundtrip(3), 0);
}

/* A header's estimator settings must go together: an spsa log with a hessian_every line, or an
 * fzoo log without its perturbations line, is refused with a message that says so (the same
 * rule as a parent line's fields); the log as written reads back. */
static void test_seedlog_settings_clash(void)
{
    pk_step_row row = {.step = 0, .q_index = 0, .seed = 7, .g = 0.5f, .lr = 1e-3f, .eps = 1e-3f};
    pk_seedlog log;
    memset(&log, 0, sizeof log);
    memset(log.base_hash, 'a', 64);
    strcpy(log.trainable, "all");
    log.rows = &row;
    log.n_rows = 1;
    char path[600], err[256] = "";
    snprintf(path, sizeof path, "%s/clash.seedlog", home);
    for (int c = 0; c < 5; c++) {
        log.estimator = c >= 2 ? PK_EST_FZOO : PK_EST_SPSA;
        log.perturbations = c >= 2 ? 4 : 0;
        log.fzoo_mean = c >= 3;
        PK_CHECK(pk_seedlog_write(path, &log, err, sizeof err) == PK_OK);
        size_t len = 0;
        char *text = slurp(path, &len), *at = text ? strstr(text, "trainable all\n") : NULL;
        PK_CHECK(at != NULL);
        if (at == NULL) {
            free(text);
            return;
        }
        at += strlen("trainable all\n");
        char *edited = malloc(len + 64);
        PK_CHECK(edited != NULL);
        if (edited == NULL) {
            free(text);
            return;
        }
        if (c == 0 || c == 3) /* as written (c 3: fzoo with its fzoo_baseline line) */
            snprintf(edited, len + 64, "%s", text);
        else if (c == 4) /* fzoo's baseline under spsa */
            snprintf(edited, len + 64, "%.*s%s",
                     (int)(strstr(text, "estimator fzoo\nperturbations 4\n") - text), text,
                     strstr(text, "fzoo_baseline mean\n"));
        else if (c == 1) /* spsa with hizoo's interval */
            snprintf(edited, len + 64, "%.*shessian_every 4\n%s", (int)(at - text), text, at);
        else /* fzoo without its perturbations line */
            snprintf(edited, len + 64, "%.*s%s", (int)(strstr(text, "perturbations 4\n") - text),
                     text, strstr(text, "perturbations 4\n") + strlen("perturbations 4\n"));
        PK_CHECK(write_string(path, edited) == 0);
        pk_seedlog back;
        err[0] = 0;
        pk_status st = pk_seedlog_read(path, &back, err, sizeof err);
        if (c == 0 || c == 3) {
            PK_CHECK(st == PK_OK);
            PK_CHECK(c == 0 || strstr(text, "\nfzoo_baseline mean\n") != NULL);
            PK_CHECK(st != PK_OK || back.fzoo_mean == (c == 3));
            if (st == PK_OK)
                pk_seedlog_clear(&back);
        } else {
            PK_CHECK(st == PK_ERR_FORMAT && strstr(err, "do not go together") != NULL);
        }
        free(edited);
        free(text);
    }
    /* stage sampling's line reads back; with layer sampling's too, the file is refused */
    log.estimator = PK_EST_FZOO;
    log.perturbations = 4;
    log.fzoo_mean = 0;
    for (int layers = 0; layers <= 1; layers++) {
        log.perturb_stages = 2;
        log.perturb_layers = layers;
        PK_CHECK(pk_seedlog_write(path, &log, err, sizeof err) == PK_OK);
        size_t len = 0;
        char *text = slurp(path, &len);
        PK_CHECK(text && strstr(text, "\nperturb_stages 2\n"));
        free(text);
        pk_seedlog back;
        err[0] = 0;
        pk_status st = pk_seedlog_read(path, &back, err, sizeof err);
        if (layers == 0) {
            PK_CHECK(st == PK_OK && back.perturb_stages == 2 && back.perturb_layers == 0);
            if (st == PK_OK)
                pk_seedlog_clear(&back);
        } else {
            PK_CHECK(st == PK_ERR_FORMAT && strstr(err, "do not go together") != NULL);
        }
    }
}

/* hizoo's update of 16-bit weights rounds as the run says, like MeZO's: with stochastic rounding
 * each f16 element is one of the two neighbours of its exact update W - lr g z / sqrt(H), and
 * some are not the nearest (an update under half an ulp is kept on average, not lost); rounding
 * to nearest gives the nearest everywhere. */
static void test_hizoo_16bit_rounding(void)
{
    const char *dir = PK_SHARED_DIR "/testdata/models/llama-tiny-f16";
    pk_step_row rows[2] = {{.step = 0, .q_index = 0, .seed = 9, .g = 0.5f},
                           {.step = 0, .q_index = 1, .seed = 9, .g = -1.5f, .lr = 1e-2f}};
    for (int mode = 0; mode < 2; mode++) {
        pk_model *a = NULL, *base = NULL;
        PK_CHECK(pk_model_load(dir, pk_model_default_params(), &a, NULL, 0) == PK_OK &&
                 pk_model_load(dir, pk_model_default_params(), &base, NULL, 0) == PK_OK);
        if (!a || !base)
            return;
        pk_mezo_params p = pk_mezo_default_params();
        p.estimator = PK_EST_HIZOO;
        p.hessian_budget = 1e30f;
        p.hessian_smooth = 0.1f;
        p.rounding = mode == 0 ? PK_ROUND_STOCHASTIC : PK_ROUND_NEAREST;
        pk_mezo_state *st = NULL;
        PK_CHECK(pk_mezo_state_new(a, NULL, &p, &st, NULL, 0) == PK_OK && st != NULL);
        pk_mezo_replay_ex(a, NULL, &p, st, rows, 2);
        size_t nb = pk_mezo_state_bytes(st);
        float *h = malloc(nb);
        PK_CHECK(h != NULL);
        if (h) {
            pk_mezo_state_save(st, h);
            f16_scan f = f16_update_scan(a, base, 9, 1e-2f, -1.5f, h);
            PK_CHECK(f.n16 > 0);
            PK_CHECK_EQ(f.bad, 0);
            if (mode == 0)
                PK_CHECK(f.far > 0);
            else
                PK_CHECK_EQ(f.far, 0);
        }
        free(h);
        pk_mezo_state_free(st);
        pk_model_free(a);
        pk_model_free(base);
    }
}

/* A hizoo run checkpoints its Hessian diagonal ("PKCK2": weights, then the state), so replay
 * and resume start from the checkpoint instead of step 0 (check_exact proves the weights);
 * a checkpoint without a state, or with another size of state, is refused. */
static void test_hizoo_checkpoint(int64_t run_id)
{
    pk_store *s = open_store();
    void *blob = NULL;
    size_t len = 0;
    int64_t step = 0;
    char err[256] = "";
    PK_CHECK(pk_store_checkpoint_get(s, run_id, INT64_MAX, &step, &blob, &len, err, sizeof err) ==
             PK_OK);
    pk_store_close(s);
    PK_CHECK_EQ(step, 6); /* every 3 steps, none at the end (8) */
    pk_model *m = load();
    pk_train_config c = est_config(PK_EST_HIZOO, 0);
    pk_mezo_state *st = NULL;
    PK_CHECK(pk_mezo_state_new(m, NULL, &c.mezo, &st, err, sizeof err) == PK_OK);
    size_t nb = pk_mezo_state_bytes(st);
    if (blob != NULL && st != NULL) {
        PK_CHECK(len > nb && memcmp(blob, "PKCK2", 5) == 0);
        PK_CHECK_EQ(pk_checkpoint_unpack_state(m, NULL, st, blob, len, NULL, 0), PK_OK);
        PK_CHECK_EQ(pk_checkpoint_unpack_state(m, NULL, st, blob, len - 4, NULL, 0), PK_ERR_FORMAT);
        PK_CHECK_EQ(pk_checkpoint_unpack(m, NULL, blob, len, NULL, 0), PK_ERR_FORMAT);
        void *w = NULL;
        size_t wl = 0;
        PK_CHECK(pk_checkpoint_pack(m, NULL, &w, &wl) == PK_OK && wl + nb == len);
        if (w != NULL)
            PK_CHECK_EQ(pk_checkpoint_unpack_state(m, NULL, st, w, wl, NULL, 0), PK_ERR_FORMAT);
        free(w);
    }
    pk_store_blob_free(blob, len);
    pk_mezo_state_free(st);
    pk_model_free(m);
}

int main(void)
{
    char serr[512] = "", err[512] = "";
    if (sodium_init() < 0)
        return 1;
    make_tmp_home(home, sizeof home, "estim");
    rm_rf(home);
    if (pk_store_init(home, TEST_PASS, strlen(TEST_PASS), tiny_params(), err, sizeof err) !=
        PK_OK) {
        fprintf(stderr, "FATAL: init %s: %s\n", home, err);
        return 1;
    }
    pk_store *s = open_store();
    pk_import_opts io = {.format = PK_IMPORT_TXT, .paragraphs = 0};
    int64_t n1 = 0, n2 = 0;
    if (pk_store_import(s, PK_SOURCE_DIR "/demo/data/train.txt", "pip", io, &n1, serr,
                        sizeof serr) != PK_OK ||
        pk_store_import(s, PK_SOURCE_DIR "/demo/data/heldout.txt", "pip-heldout", io, &n2, serr,
                        sizeof serr) != PK_OK) {
        fprintf(stderr, "FATAL: importing demo/data: %s\n", serr);
        return 1;
    }
    pk_store_close(s);
    test_fzoo_rows();
    test_layers();
    test_stage_sampling();
    test_hizoo_state();
    test_hizoo_formula();
    test_hizoo_one_sweep();
    test_hizoo_interval();
    test_hessian_every_config();
    test_hizoo_seedlog_rows();
    test_seedlog_settings_clash();
    test_hizoo_16bit_rounding();
    test_shared_prefix();
    test_frozen_mlp_half();
    test_frozen_prefix();
    test_sweep_path();
    test_objective_sweep();
    test_replay_resume();
    rm_rf(home);
    return PK_TEST_DONE();
}
