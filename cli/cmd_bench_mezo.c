/* cmd_bench_mezo.c: the MeZO step's measuring tools: mezo-probe (one projected gradient of a
 * model, for checking against another implementation) and bench mezo (step time, memory, the
 * GEMM floor, sweeps and fzoo with layer sampling; README "Performance"). */
#include "cli.h"

#include "pk_train.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ERRLEN 512

/* ---- mezo-probe ----------------------------------------------------------------------------- */

typedef struct probe_opts {
    cli_common c;
    const char *model;
    const char *ids;
    const char *z_out;
    const char *trainable;
    uint64_t seed;
    float eps;
    int z; /* pk_z_kind */
} probe_opts;

#define T probe_opts
static const cli_option probe_table[] = {
    {"--model", CLI_STR, CLI_AT(T, model), 0, 0, NULL, "DIR", "model (Hugging Face dir)"},
    {"--ids", CLI_STR, CLI_AT(T, ids), 0, 0, NULL, "1,2,3", "token ids (at least 2)"},
    {"--seed", CLI_U64, CLI_AT(T, seed), 0, 0, NULL, "S", "seed of z"},
    {"--eps", CLI_FLOAT, CLI_AT(T, eps), 1e-12, 10, NULL, "E", "perturbation scale"},
    {"--z-out", CLI_STR, CLI_AT(T, z_out), 0, 0, NULL, "FILE",
     "write z of every tensor as float32 safetensors"},
    {"--trainable", CLI_STR, CLI_AT(T, trainable), 0, 0, NULL, "SPEC",
     "all | bitfit | top:K | top-mlp:K | REGEX on tensor names"},
    {"--z", CLI_CHOICE, CLI_AT(T, z), 0, 0, "gaussian|rademacher", NULL,
     "perturbation distribution"},
    CLI_THREADS_OPT(T),
    CLI_END,
};
#undef T

static const cli_command probe_cmd = {
    "mezo-probe",
    "mezo-probe --model DIR --ids 1,2,3 --seed S --eps E [--z-out FILE] [options]",
    "One projected-gradient evaluation (lm objective on the ids, no update). The last\n"
    "line is {\"g\":..,\"loss_plus\":..,\"loss_minus\":..}. --z-out writes z of every\n"
    "tensor (0 outside --trainable) as float32 safetensors with the model's names.",
    probe_table,
    0,
    NULL};

typedef struct zfill_ctx {
    const pk_model *m;
    const uint8_t *mask;
    uint64_t seed;
    pk_z_kind kind;
} zfill_ctx;

static void zfill(void *user, size_t i, size_t start, size_t n, float *buf)
{
    const zfill_ctx *c = user;
    pk_tensor_info ti;
    if (pk_model_tensor(c->m, i, &ti) != PK_OK || (c->mask != NULL && !c->mask[i])) {
        memset(buf, 0, n * sizeof(float));
        return;
    }
    pk_z_fill(c->seed, ti.key, start, n, c->kind, buf);
}

/* Writes z of every tensor (zero outside the mask) to path, named and shaped as the model's. */
static pk_status probe_write_z(const pk_model *m, const uint8_t *mask, const probe_opts *o,
                               char *err, size_t n)
{
    size_t nt = pk_model_n_tensors(m);
    pk_st_entry *e = calloc(nt, sizeof *e);
    if (e == NULL)
        return PK_ERR_NOMEM;
    pk_status st = PK_OK;
    for (size_t i = 0; i < nt && st == PK_OK; i++) {
        pk_tensor_info ti;
        st = pk_model_tensor(m, i, &ti);
        e[i].name = ti.name;
        e[i].dtype = PK_DTYPE_F32;
        e[i].ndim = ti.ndim;
        memcpy(e[i].shape, ti.shape, sizeof e[i].shape);
    }
    zfill_ctx zc = {m, mask, o->seed, (pk_z_kind)o->z};
    if (st == PK_OK)
        st = pk_safetensors_write(o->z_out, e, nt, zfill, &zc, err, n);
    free(e);
    return st;
}

/* Loads the model, evaluates the projected gradient on ids and writes z if asked. */
static pk_status probe_run(const probe_opts *o, const int32_t *ids, int n_ids, double out[3],
                           char *err, size_t n)
{
    pk_model *m = NULL;
    uint8_t *mask = NULL;
    pk_status st = pk_model_load(o->model, pk_model_default_params(), &m, err, n);
    if (st == PK_OK && strcmp(o->trainable, "all") != 0) { /* all: no mask */
        st = pk_mezo_trainable(m, o->trainable, &mask, err, n);
        if (st != PK_OK)
            cli_name_option("--trainable", err, n);
    }
    if (st == PK_OK) {
        int32_t len = n_ids;
        pk_batch b = {1, n_ids, ids, &len, NULL};
        st = pk_mezo_projected_grad_batch(m, mask, o->seed, (pk_z_kind)o->z, o->eps, &b, NULL,
                                          &out[0], &out[1], &out[2]);
        if (st != PK_OK)
            snprintf(err, n, "forward: %s", pk_status_str(st));
    }
    if (st == PK_OK && o->z_out != NULL)
        st = probe_write_z(m, mask, o, err, n);
    free(mask);
    pk_model_free(m);
    return st;
}

int cmd_mezo_probe(int argc, char **argv)
{
    probe_opts o = {.trainable = "all", .eps = 1e-3f, .z = PK_Z_GAUSSIAN};
    int rc = cli_parse(&probe_cmd, argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? CLI_OK : rc;
    if (o.model == NULL || o.ids == NULL) {
        cli_error(o.c.cmd, "--model DIR and --ids 1,2,3 are required");
        return CLI_USAGE;
    }
    int32_t *ids = NULL;
    int n = 0;
    rc = cli_parse_ids(&o.c, "--ids", o.ids, &ids, &n);
    if (rc == 0 && n < 2) {
        cli_error(o.c.cmd, "--ids needs at least 2 tokens (one prediction)");
        rc = CLI_USAGE;
    }
    if (rc == 0) {
        cli_apply_threads(&o.c);
        char err[ERRLEN] = "";
        double r[3] = {0, 0, 0}; /* g, loss+, loss- */
        pk_status st = probe_run(&o, ids, n, r, err, sizeof err);
        if (st == PK_OK) {
            cJSON *j = cJSON_CreateObject();
            cli_json_add_exact(j, "g", r[0]);
            cli_json_add_exact(j, "loss_plus", r[1]);
            cli_json_add_exact(j, "loss_minus", r[2]);
            rc = cli_json_print(j);
        } else {
            rc = cli_fail(o.c.cmd, st, err);
        }
    }
    free(ids);
    return rc;
}

/* ---- bench mezo ----------------------------------------------------------------------------- */

typedef struct bench_opts {
    cli_common c;
    const char *model;
    const char *trainable;
    int batch, seq, steps;
    int perturbations;  /* 0: no sweep timing */
    int perturb_layers; /* 0: no fzoo step timing */
} bench_opts;

#define T bench_opts
static const cli_option bench_table[] = {
    {"--model", CLI_STR, CLI_AT(T, model), 0, 0, NULL, "DIR", "model (Hugging Face dir)"},
    {"--batch", CLI_INT, CLI_AT(T, batch), 1, 4096, NULL, "B", "sequences per batch"},
    {"--seq", CLI_INT, CLI_AT(T, seq), 2, 1 << 20, NULL, "T", "tokens per sequence"},
    {"--steps", CLI_INT, CLI_AT(T, steps), 1, 1000, NULL, "K", "timed steps"},
    {"--trainable", CLI_STR, CLI_AT(T, trainable), 0, 0, NULL, "SPEC",
     "what the steps train, as train --trainable (lora:... attaches an adapter)"},
    {"--perturbations", CLI_INT, CLI_AT(T, perturbations), 1, 4096, NULL, "N",
     "also time N perturbed evaluations in one sweep against N separate passes"},
    {"--perturb-layers", CLI_INT, CLI_AT(T, perturb_layers), 1, 4096, NULL, "K",
     "also time fzoo steps (N of --perturbations, default 8) perturbing K random layers each, "
     "through sweeps against one pass per evaluation"},
    CLI_THREADS_OPT(T),
    CLI_END,
};
#undef T

static const cli_command bench_cmd = {
    "bench mezo",
    "bench mezo --model DIR --batch B --seq T [--threads N] [--steps K] [--trainable SPEC] "
    "[--perturbations N] [--perturb-layers K]",
    "Times MeZO steps on random token ids. One JSON line: step_s (mean per step),\n"
    "forward_s (two unperturbed forward passes), perturb_s (what perturbing adds to\n"
    "them: z generation and blocking; the median over steps of the step's two passes\n"
    "minus two plain passes timed just before), update_s, first_step_s (the first step,\n"
    "untimed above), writable_s (copying the weights into the process's own memory at\n"
    "load, as train does, so the first update takes no copy-on-write faults),\n"
    "peak_rss_bytes, weight_bytes, paired (whether the step's + and - passes ran side\n"
    "by side, sharing each weight block's z: the model pairs them when one pass's\n"
    "activations are at most 3% of the weight bytes), trainable and trainable_params\n"
    "(the spec and the number of parameters the steps perturb and update),\n"
    "gflops_sgemm (cblas_sgemm on the model's own GEMM shapes, same threads),\n"
    "gemm_floor_s (the two passes' GEMM flops at that rate) and floor_ratio (step_s over\n"
    "it). With --perturbations N: perturbations, sweep_eval_s (seconds per perturbed\n"
    "evaluation when N one-sided perturbations of the batch run side by side in one\n"
    "pass over the weights, median over the steps), separate_eval_s (the same N\n"
    "evaluations one pass each), sweep_speedup (their ratio), sweep_same_bits (the two\n"
    "gave identical losses), sweep_width_auto (the passes side by side the memory\n"
    "bound allows by default: together at most 6% of the weight bytes), pass_bytes\n"
    "(activations per pass) and sweep_activation_bytes (the reservation for N side\n"
    "by side). With --perturb-layers K: fzoo steps (N perturbations of K random layers\n"
    "each plus the unperturbed loss, lr 0 so every step sees the same weights), each\n"
    "step once with its evaluations in one sweep (the blocks below each perturbation's\n"
    "lowest perturbed one run once) and once one pass per evaluation, alternating:\n"
    "fzoo_layers, fzoo_sweep_step_s and fzoo_pass_step_s (medians over the steps, with\n"
    "_min_s and _max_s), fzoo_sweep_blocks and fzoo_pass_blocks (transformer-block\n"
    "evaluations per step), fzoo_same_bits (the two gave identical rows) and\n"
    "fzoo_sweep_width (passes side by side, as the memory bound allows).",
    bench_table,
    0,
    NULL};

typedef struct bench_ctx {
    pk_batch b;             /* B rows of T random ids */
    int32_t *ids, *lens;    /* [B * T], [B]: what b points to */
    int32_t *sel_b, *sel_t; /* [B] encoders: each row's last position (the mask) */
    float *logits;          /* [B * 2] */
    float *sweep_logits;    /* [evaluations * B * 2]: bench_sweep_fn's */
    const uint8_t *mask;    /* the trainable tensors (NULL: all) */
} bench_ctx;

/* The mean over B rows of the cross-entropy of label 0 between two logits lg[2r], lg[2r+1]. */
static double label0_loss(const float *lg, int B)
{
    double sum = 0;
    for (int r = 0; r < B; r++) {
        double a = (double)lg[2 * r], b = (double)lg[2 * r + 1], mx = a > b ? a : b;
        sum += mx + log(exp(a - mx) + exp(b - mx)) - a;
    }
    return sum / B;
}

/* Causal models: the next-token loss over every position (the lm objective). Encoders
 * (RoBERTa): MeZO's prompt-classification recipe, cross-entropy over two label words at one
 * mask position per row, label 0 for all. */
static pk_status bench_loss(void *user, pk_model *m, int micro, const pk_perturb *pert,
                            double *loss)
{
    bench_ctx *c = user;
    (void)micro;
    if (pk_model_is_causal(m))
        return pk_model_loss(m, &c->b, NULL, pert, NULL, NULL, loss);
    const int32_t labels[2] = {4, 5};
    pk_status st = pk_model_select_logits(m, &c->b, pert, (size_t)c->b.B, c->sel_b, c->sel_t, 2,
                                          labels, c->logits);
    if (st != PK_OK)
        return st;
    for (int p = 0; p < (pert && pert->both ? 2 : 1); p++)
        loss[p] = label0_loss(c->logits + (size_t)p * 2 * c->b.B, c->b.B);
    return PK_OK;
}

/* B rows of T pseudo-random ids below V (a fixed LCG: every run times the same tokens). */
static pk_status bench_ctx_init(bench_ctx *c, int B, int T, int V)
{
    memset(c, 0, sizeof *c);
    c->ids = malloc((size_t)B * (size_t)T * sizeof *c->ids);
    c->lens = malloc((size_t)B * sizeof *c->lens);
    c->sel_b = malloc((size_t)B * sizeof *c->sel_b);
    c->sel_t = malloc((size_t)B * sizeof *c->sel_t);
    c->logits = malloc((size_t)B * 4 * sizeof *c->logits); /* [2 passes][B][2] */
    if (!c->ids || !c->lens || !c->sel_b || !c->sel_t || !c->logits)
        return PK_ERR_NOMEM;
    uint64_t r = 0x12345678u;
    for (size_t i = 0; i < (size_t)B * (size_t)T; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        c->ids[i] = (int32_t)((r >> 33) % (uint64_t)V);
    }
    for (int i = 0; i < B; i++) {
        c->lens[i] = T;
        c->sel_b[i] = i;
        c->sel_t[i] = T - 1;
    }
    c->b = (pk_batch){B, T, c->ids, c->lens, NULL};
    return PK_OK;
}

static void bench_ctx_free(bench_ctx *c)
{
    free(c->ids);
    free(c->lens);
    free(c->sel_b);
    free(c->sel_t);
    free(c->logits);
    free(c->sweep_logits);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct bench_times {
    double step_s, forward_s, perturb_s, update_s, first_step_s, writable_s; /* seconds */
    size_t trainable_params;
    double gflops_sgemm;                  /* cblas_sgemm on the model's shapes */
    double sweep_eval_s, separate_eval_s; /* --perturbations: per perturbed evaluation */
    int sweep_same_bits;                  /* the sweep's losses equal the separate passes' */
    size_t sweep_activation_bytes;        /* the reservation with N passes side by side */
    double fzoo_s[2][3];   /* --perturb-layers: [sweep, per pass][median, min, max] step s */
    double fzoo_blocks[2]; /* block evaluations per step, [sweep, per pass] */
    int fzoo_same_bits;    /* the two paths' rows are identical */
    size_t rss;            /* peak RSS after the steps, before the others */
} bench_times;

/* The warm-up pass and the first step, timed apart (before pk_model_make_writable, the first
 * update paid a copy-on-write fault for every weight page it wrote). */
static pk_status bench_first_step(pk_model *m, bench_ctx *c, const pk_mezo_params *p, int K,
                                  bench_times *t)
{
    double l = 0, f = 0, u = 0;
    pk_step_row row;
    pk_status st = bench_loss(c, m, 0, NULL, &l); /* reserves activations, faults weights in */
    if (st != PK_OK)
        return st;
    double t0 = pk_time_now();
    st = pk_mezo_step(m, c->mask, p, K, 1, bench_loss, c, &row, &f, &u);
    t->first_step_s = pk_time_now() - t0;
    return st;
}

/* Each iteration times two plain forward passes, then a step: perturb_s is the median over
 * iterations of (the step's two perturbed passes - those two plain passes), a paired
 * difference, so that drift on a shared machine cancels out. */
static pk_status bench_steps(pk_model *m, bench_ctx *c, const pk_mezo_params *p, int K,
                             bench_times *t)
{
    double *perturb = malloc((size_t)K * sizeof *perturb), l = 0;
    pk_status st = perturb ? PK_OK : PK_ERR_NOMEM;
    for (int k = 0; k < K && st == PK_OK; k++) {
        double t0 = pk_time_now(), f = 0, u = 0;
        st = bench_loss(c, m, 0, NULL, &l);
        if (st == PK_OK)
            st = bench_loss(c, m, 0, NULL, &l);
        double plain2 = pk_time_now() - t0;
        pk_step_row row;
        t0 = pk_time_now();
        if (st == PK_OK)
            st = pk_mezo_step(m, c->mask, p, k, 1, bench_loss, c, &row, &f, &u);
        t->step_s += (pk_time_now() - t0) / K;
        t->forward_s += plain2 / K;
        t->update_s += u / K;
        perturb[k] = f - plain2 > 0 ? f - plain2 : 0.0;
    }
    if (st == PK_OK) {
        qsort(perturb, (size_t)K, sizeof *perturb, cmp_double);
        t->perturb_s = K % 2 ? perturb[K / 2] : 0.5 * (perturb[K / 2 - 1] + perturb[K / 2]);
    }
    free(perturb);
    return st;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* The losses of the N evaluations of s (bench_loss's per evaluation), into loss [N]. */
static pk_status bench_sweep_loss(pk_model *m, bench_ctx *c, const pk_sweep *s, float *logits,
                                  double *loss)
{
    if (pk_model_is_causal(m))
        return pk_model_loss_sweep(m, &c->b, NULL, s, NULL, NULL, loss);
    const int32_t labels[2] = {4, 5};
    int E = pk_sweep_evals(s);
    pk_status st = pk_model_select_sweep(m, &c->b, s, (size_t)c->b.B, c->sel_b, c->sel_t, 2, labels,
                                         0, logits);
    for (int e = 0; st == PK_OK && e < E; e++)
        loss[e] = label0_loss(logits + (size_t)e * 2 * c->b.B, c->b.B);
    return st;
}

/* K rounds of: N one-sided perturbations (fzoo's, seeds of step k) side by side in one sweep
 * (pairing on), then the same N one pass each (pairing off); medians per evaluation. A first
 * round is a warm-up (it reserves the N passes' activations). */
static pk_status bench_sweep(pk_model *m, bench_ctx *c, const pk_mezo_params *p, int N, int K,
                             bench_times *t)
{
    uint64_t *seeds = malloc((size_t)N * sizeof *seeds);
    double *loss = malloc((size_t)2 * N * sizeof *loss);
    double *sw = malloc((size_t)K * sizeof *sw), *sep = malloc((size_t)K * sizeof *sep);
    float *logits = malloc((size_t)N * 2 * (size_t)c->b.B * sizeof *logits);
    pk_status st = seeds && loss && sw && sep && logits ? PK_OK : PK_ERR_NOMEM;
    pk_sweep s = {{0, p->eps, PK_Z_RADEMACHER, c->mask, 0}, N, seeds, NULL, 0};
    t->sweep_same_bits = 1;
    for (int k = -1; k < K && st == PK_OK; k++) {
        for (int i = 0; i < N; i++)
            seeds[i] = pk_mezo_step_seed(p->seed, k < 0 ? 0 : k, i);
        pk_model_set_pairing(m, PK_PAIRING_ON);
        double t0 = pk_time_now();
        st = bench_sweep_loss(m, c, &s, logits, loss);
        double t1 = pk_time_now();
        pk_model_set_pairing(m, PK_PAIRING_OFF);
        if (st == PK_OK)
            st = bench_sweep_loss(m, c, &s, logits, loss + N);
        double t2 = pk_time_now();
        pk_model_set_pairing(m, PK_PAIRING_AUTO);
        if (k < 0) {
            t->sweep_activation_bytes = pk_model_activation_bytes(m);
            continue;
        }
        sw[k] = (t1 - t0) / N;
        sep[k] = (t2 - t1) / N;
        if (memcmp(loss, loss + N, (size_t)N * sizeof *loss) != 0)
            t->sweep_same_bits = 0;
    }
    if (st == PK_OK) {
        t->sweep_eval_s = median(sw, K);
        t->separate_eval_s = median(sep, K);
    }
    free(seeds);
    free(loss);
    free(sw);
    free(sep);
    free(logits);
    return st;
}

static pk_status bench_sweep_fn(void *user, pk_model *m, int micro, const pk_sweep *s, double *loss)
{
    bench_ctx *c = user;
    (void)micro;
    return bench_sweep_loss(m, c, s, c->sweep_logits, loss);
}

/* Median, min and max of v [n] (sorted in place) into out [3]. */
static void spread(double *v, int n, double *out)
{
    out[0] = median(v, n);
    out[1] = v[0];
    out[2] = v[n - 1];
}

/* K rounds of a layer-sampled fzoo step (lr 0: the weights stay) through sweeps, then through one
 * pass per evaluation; the times, block evaluations and whether the rows agree. */
static pk_status bench_fzoo(pk_model *m, bench_ctx *c, int N, int layers, int K, bench_times *t,
                            char *err, size_t errlen)
{
    pk_mezo_params p = pk_mezo_default_params();
    p.estimator = PK_EST_FZOO;
    p.perturbations = N;
    p.perturb_layers = layers;
    p.z = PK_Z_RADEMACHER;
    p.lr = 0.0f;
    pk_mezo_state *est = NULL;
    pk_step_row *rows = calloc(2 * (size_t)N, sizeof *rows);
    double *ts = malloc(2 * (size_t)K * sizeof *ts);
    c->sweep_logits = malloc((size_t)(N + 1) * 2 * (size_t)c->b.B * sizeof *c->sweep_logits);
    pk_status st = rows && ts && c->sweep_logits ? PK_OK : PK_ERR_NOMEM;
    if (st == PK_OK)
        st = pk_mezo_state_new(m, c->mask, &p, &est, err, errlen);
    if (st == PK_ERR_ARG)
        cli_name_option("--perturbations", err, errlen);
    pk_mezo_loss path[2] = {{bench_loss, bench_sweep_fn, c}, {bench_loss, NULL, c}};
    t->fzoo_same_bits = 1;
    for (int k = -1; k < K && st == PK_OK; k++) { /* round -1: a warm-up */
        for (int v = 0; v < 2 && st == PK_OK; v++) {
            uint64_t s0 = pk_model_stage_evals(m);
            double t0 = pk_time_now();
            st = pk_mezo_step_sweep(m, c->mask, &p, est, k < 0 ? 0 : k, 1, &path[v],
                                    rows + (size_t)v * N, NULL, NULL);
            if (k >= 0) {
                ts[(size_t)v * K + k] = pk_time_now() - t0;
                t->fzoo_blocks[v] += (double)(pk_model_stage_evals(m) - s0) / 2.0 / K;
            }
        }
        if (memcmp(rows, rows + N, (size_t)N * sizeof *rows) != 0)
            t->fzoo_same_bits = 0;
    }
    for (int v = 0; st == PK_OK && v < 2; v++)
        spread(ts + (size_t)v * K, K, t->fzoo_s[v]);
    pk_mezo_state_free(est);
    free(rows);
    free(ts);
    return st;
}

static void bench_print_fzoo(cJSON *j, const bench_opts *o, const pk_model *m, const bench_times *t)
{
    static const char *const path[2] = {"fzoo_sweep_step", "fzoo_pass_step"};
    static const char *const stat[3] = {"_s", "_min_s", "_max_s"};
    int N = o->perturbations > 0 ? o->perturbations : 8;
    char key[64];
    cJSON_AddNumberToObject(j, "fzoo_layers", o->perturb_layers);
    cJSON_AddNumberToObject(j, "fzoo_perturbations", N);
    for (int v = 0; v < 2; v++) {
        for (int i = 0; i < 3; i++) {
            snprintf(key, sizeof key, "%s%s", path[v], stat[i]);
            cli_json_add_rounded(j, key, t->fzoo_s[v][i], 4);
        }
    }
    cli_json_add_rounded(j, "fzoo_sweep_blocks", t->fzoo_blocks[0], 1);
    cli_json_add_rounded(j, "fzoo_pass_blocks", t->fzoo_blocks[1], 1);
    cJSON_AddBoolToObject(j, "fzoo_same_bits", t->fzoo_same_bits);
    cJSON_AddNumberToObject(j, "fzoo_sweep_width",
                            pk_model_sweep_width(m, o->batch, o->seq, N + 1));
}

static void bench_print_sweep(cJSON *j, const bench_opts *o, const pk_model *m,
                              const bench_times *t)
{
    cJSON_AddNumberToObject(j, "perturbations", o->perturbations);
    cli_json_add_rounded(j, "sweep_eval_s", t->sweep_eval_s, 4);
    cli_json_add_rounded(j, "separate_eval_s", t->separate_eval_s, 4);
    cli_json_add_rounded(j, "sweep_speedup",
                         t->sweep_eval_s > 0 ? t->separate_eval_s / t->sweep_eval_s : 0.0, 3);
    cJSON_AddBoolToObject(j, "sweep_same_bits", t->sweep_same_bits);
    cJSON_AddNumberToObject(j, "sweep_width_auto",
                            pk_model_sweep_width(m, o->batch, o->seq, o->perturbations));
    cJSON_AddNumberToObject(j, "pass_bytes", (double)pk_model_pass_bytes(m, o->batch, o->seq));
    cJSON_AddNumberToObject(j, "sweep_activation_bytes", (double)t->sweep_activation_bytes);
}

static int bench_print(const bench_opts *o, const pk_model *m, const bench_times *t)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "model", o->model);
    cJSON_AddNumberToObject(j, "batch", o->batch);
    cJSON_AddNumberToObject(j, "seq", o->seq);
    cJSON_AddNumberToObject(j, "threads", pk_threads_get());
    cJSON_AddNumberToObject(j, "steps", o->steps);
    cli_json_add_rounded(j, "step_s", t->step_s, 4);
    cli_json_add_rounded(j, "forward_s", t->forward_s, 4);
    cli_json_add_rounded(j, "perturb_s", t->perturb_s, 4);
    cli_json_add_rounded(j, "update_s", t->update_s, 4);
    cli_json_add_rounded(j, "first_step_s", t->first_step_s, 4);
    cli_json_add_rounded(j, "writable_s", t->writable_s, 4);
    cJSON_AddNumberToObject(j, "peak_rss_bytes", (double)t->rss);
    cJSON_AddNumberToObject(j, "weight_bytes", (double)pk_model_weight_bytes(m));
    cJSON_AddBoolToObject(j, "paired", pk_model_pairs(m, o->batch, o->seq));
    cJSON_AddStringToObject(j, "trainable", o->trainable);
    cJSON_AddNumberToObject(j, "trainable_params", (double)t->trainable_params);
    /* the floor: two passes' GEMMs (pk_model_forward_flops; encoders run the head at one
     * position per row) at the measured sgemm rate */
    double N = (double)o->batch * o->seq, flops = pk_model_forward_flops(m, o->batch, o->seq);
    if (!pk_model_is_causal(m))
        flops -= 2.0 * (N - o->batch) * pk_model_vocab_size(m) * pk_model_hidden_size(m);
    double floor_s = t->gflops_sgemm > 0 ? 2.0 * flops / (t->gflops_sgemm * 1e9) : 0.0;
    cli_json_add_rounded(j, "gflops_sgemm", t->gflops_sgemm, 2);
    cli_json_add_rounded(j, "gemm_floor_s", floor_s, 4);
    cli_json_add_rounded(j, "floor_ratio", floor_s > 0 ? t->step_s / floor_s : 0.0, 3);
    if (o->perturbations > 0)
        bench_print_sweep(j, o, m, t);
    if (o->perturb_layers > 0)
        bench_print_fzoo(j, o, m, t);
    return cli_json_print(j);
}

/* The trainable mask of --trainable (NULL for all) and the number of parameters it holds. */
static pk_status bench_mask(const bench_opts *o, pk_model *m, uint8_t **mask, bench_times *t,
                            char *err, size_t n)
{
    pk_status st =
        strcmp(o->trainable, "all") ? pk_mezo_trainable(m, o->trainable, mask, err, n) : PK_OK;
    if (st != PK_OK)
        cli_name_option("--trainable", err, n);
    for (size_t i = 0; st == PK_OK && i < pk_model_n_tensors(m); i++) {
        pk_tensor_info ti;
        st = pk_model_tensor(m, i, &ti);
        if (st == PK_OK && (*mask == NULL || (*mask)[i]))
            t->trainable_params += ti.numel;
    }
    return st;
}

/* Loads the model sized for the benchmark's batch, and times it. */
static pk_status bench_run(const bench_opts *o, pk_model **m, bench_times *t, char *err, size_t n)
{
    pk_model_params mp = pk_model_default_params();
    uint8_t *mask = NULL;
    mp.max_batch = o->batch;
    mp.max_seq = o->seq;
    pk_status st = pk_model_load(o->model, mp, m, err, n);
    if (st == PK_OK)
        st = bench_mask(o, *m, &mask, t, err, n);
    if (st != PK_OK)
        return st;
    t->writable_s = pk_time_now(); /* as train does, before the first update */
    st = pk_model_make_writable(*m, mask);
    t->writable_s = pk_time_now() - t->writable_s;
    if (st == PK_OK && o->seq > pk_model_max_positions(*m)) {
        snprintf(err, n, "--seq %d exceeds the model's %d positions", o->seq,
                 pk_model_max_positions(*m));
        st = PK_ERR_ARG;
    }
    bench_ctx bc;
    memset(&bc, 0, sizeof bc);
    pk_mezo_params p = pk_mezo_default_params();
    p.lr = 1e-6f;
    if (st == PK_OK)
        st = bench_ctx_init(&bc, o->batch, o->seq, pk_model_vocab_size(*m));
    bc.mask = mask;
    if (st == PK_OK)
        st = bench_first_step(*m, &bc, &p, o->steps, t);
    if (st == PK_OK)
        st = bench_steps(*m, &bc, &p, o->steps, t);
    t->rss = pk_peak_rss_bytes(); /* the steps' (the sgemm operands and a sweep come after) */
    if (st == PK_OK)
        t->gflops_sgemm = pk_model_bench_sgemm(*m, o->batch, o->seq, 3);
    if (st == PK_OK && o->perturbations > 0)
        st = bench_sweep(*m, &bc, &p, o->perturbations, o->steps, t);
    if (st == PK_OK && o->perturb_layers > 0)
        st = bench_fzoo(*m, &bc, o->perturbations > 0 ? o->perturbations : 8, o->perturb_layers,
                        o->steps, t, err, n);
    if (st != PK_OK && !err[0])
        snprintf(err, n, "forward: %s", pk_status_str(st));
    bench_ctx_free(&bc);
    free(mask);
    return st;
}

int cmd_bench_mezo(int argc, char **argv)
{
    bench_opts o = {.trainable = "all", .batch = 8, .seq = 64, .steps = 2};
    int rc = cli_parse(&bench_cmd, argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? CLI_OK : rc;
    if (o.model == NULL) {
        cli_error(o.c.cmd, "--model DIR is required");
        return CLI_USAGE;
    }
    cli_apply_threads(&o.c);
    pk_model *m = NULL;
    bench_times t;
    memset(&t, 0, sizeof t);
    char err[ERRLEN] = "";
    pk_status st = bench_run(&o, &m, &t, err, sizeof err);
    rc = st == PK_OK ? bench_print(&o, m, &t) : cli_fail(o.c.cmd, st, err);
    pk_model_free(m);
    return rc;
}
