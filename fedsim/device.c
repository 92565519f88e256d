/* device.c: the device role of a simulation (`pocketllm fedsim device`): one pk_sync_round of
 * this device's store against the coordinator, with the MeZO model of train/ over its local
 * dataset (any objective: lm or classify), pool indices and batches derived from the device's
 * seed and the round (so a run is reproducible), and the device's own record of each upload,
 * from which verify.c recomputes the coordinator's log. The round itself is net/'s.
 *
 * Estimators: spsa is the sync client's own local step. fzoo (DESIGN 4) is carried as N local
 * steps of the round per FZOO step: the first of them takes the unperturbed loss and the N
 * one-sided losses along the N pool seeds the group will draw (the device picks its pool
 * indices itself, so it knows them ahead; the seeds come from the task's pool_seed), and each
 * returns its coefficient (l_i - l_0) / std / N, so that the client's per-step updates
 * W -= lr g_i u_i add up to FZOO's W -= (lr / N) sum_i c_i u_i and the log replays it with plain
 * seeds and scalars. hizoo cannot be carried (pk_fedsim_estimator_carried). */
#include "fedsim_impl.h"
#include "pk_crypto.h"
#include "pk_fedsim.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct dev {
    fs_model fm; /* first: the ops' user is read as an fs_model * (fedsim_impl.h) */
    pk_objective *obj;
    size_t batch;
    uint64_t seed;
    int64_t round;       /* the round of the current local step (set by pick) */
    int64_t step;        /* its index in the round */
    uint8_t *uploaded;   /* the pairs of this call's new upload, as sent (PROTOCOL 3), or NULL */
    size_t n_uploaded;   /* pairs */
    int64_t up_round;    /* the round it went to */
    int64_t up_examples; /* its example count */
    /* fzoo */
    int fzoo, N;           /* 1: carried as groups of N local steps */
    uint32_t K;            /* the task's pool size */
    uint8_t pool_seed[32]; /* the task's (GET /v1/task) */
    double *coef;          /* [N] the current group's coefficients, already / N */
    double *loss;          /* [N + 1] its unperturbed loss, then its N one-sided losses */
    uint64_t *seeds;       /* [N] the group's pool seeds */
} dev;

int pk_fedsim_estimator_carried(pk_estimator e, const char **why)
{
    if (why)
        *why = e == PK_EST_HIZOO
                   ? "hizoo cannot be carried by the sync protocol: its update moves along z / "
                     "sqrt(H), with H each device's own running Hessian-diagonal estimate, and a "
                     "log entry holds only pool seeds and scalars, so neither the coordinator's "
                     "log nor the other devices could replay it (use spsa or fzoo)"
                   : "";
    return e != PK_EST_HIZOO;
}

pk_fedsim_device_params pk_fedsim_device_default_params(void)
{
    pk_fedsim_device_params p;
    memset(&p, 0, sizeof p);
    p.sync = pk_sync_default_params();
    p.sync.wait_s = 0.0;
    p.cfg = pk_train_config_default();
    return p;
}

/* The pool index of local step `step` of `round`: a pure function of the device's seed. */
static uint32_t pick_of(const dev *x, int64_t round, int64_t step, uint32_t K)
{
    fs_rng r = fs_rng_make(x->seed, 0x9c4, ((uint64_t)round << 24) ^ (uint64_t)step);
    return (uint32_t)fs_below(&r, K);
}

static uint32_t op_pick(void *user, int64_t round, int64_t step, uint32_t K)
{
    dev *x = user;
    x->round = round;
    x->step = step;
    return pick_of(x, round, step, K);
}

/* The upload as the sync client sent it, DP noise included: what the record holds, so the log
 * check can recompute every coefficient bit for bit with or without noise. */
static void op_upload(void *user, int64_t round, const uint8_t *packed, size_t n, int64_t ex)
{
    dev *x = user;
    free(x->uploaded);
    x->uploaded = malloc(n * FS_PAIR_BYTES + 1);
    x->n_uploaded = x->uploaded ? n : 0;
    if (x->uploaded && n)
        memcpy(x->uploaded, packed, n * FS_PAIR_BYTES);
    x->up_round = round;
    x->up_examples = ex;
}

/* A FZOO step at the group's first local step `first`: l0 and the N one-sided losses on one
 * batch, at the same weights, along the seeds of the group's pool indices, in one sweep (as the
 * trainer's fzoo: with the frozen prefix, l0 starts from the same stored rows as the l_i);
 * coef[i] = (l_i - l0) / sigma / N (sigma the population std of the l_i; 0 when sigma is 0). */
static pk_status fzoo_group(dev *x, int64_t first, pk_z_kind kind, float eps)
{
    size_t idx[1024], B = x->batch < 1024 ? x->batch : 1024;
    double mean = 0.0;
    int64_t step = x->round * 65536 + first % 65536; /* the group's batch */
    pk_status st = pk_batch_indices(x->seed, step, 0, 1, pk_objective_size(x->obj), B, idx);
    if (st == PK_OK)
        st = pk_objective_select(x->obj, idx, B);
    for (int i = 0; i < x->N; i++)
        x->seeds[i] = pk_sync_pool_seed(x->pool_seed, pick_of(x, x->round, first + i, x->K));
    pk_sweep sw = {{0, eps, kind, x->fm.trainable, 0}, x->N, x->seeds, NULL, 1};
    if (st == PK_OK)
        st = pk_objective_loss_sweep(x->obj, x->fm.m, &sw, x->loss);
    if (st != PK_OK)
        return st;
    const double l0 = x->loss[0], *li = x->loss + 1;
    double sigma = pk_fzoo_sigma(li, x->N, &mean);
    for (int i = 0; i < x->N; i++)
        x->coef[i] = sigma > 0.0 ? (li[i] - l0) / sigma / (double)x->N : 0.0;
    return PK_OK;
}

static pk_status op_grad(void *user, uint64_t seed, pk_z_kind kind, float eps, float *g,
                         int64_t *n_examples)
{
    dev *x = user;
    if (x->fzoo) {
        int j = (int)(x->step % x->N);
        pk_status st = j == 0 ? fzoo_group(x, x->step, kind, eps) : PK_OK;
        uint32_t k = pick_of(x, x->round, x->step, x->K);
        if (st == PK_OK && pk_sync_pool_seed(x->pool_seed, k) != seed)
            st = PK_ERR_FORMAT; /* the client's pool is not the task this device read */
        *g = (float)x->coef[j];
        *n_examples = (int64_t)x->batch; /* every one of the N: the mean weights are unchanged */
        return st;
    }
    /* a batch per (round, step): the shuffle's epoch moves with the round */
    int64_t step = x->round * 65536 + x->step % 65536;
    return pk_objective_step_grad(x->obj, x->fm.m, x->fm.trainable, x->seed, step, x->batch, seed,
                                  kind, eps, g, n_examples);
}

/* fzoo: the task's pool seed and size (GET /v1/task, counted in rep's traffic), and the checks
 * that make a group of N local steps one FZOO step: Rademacher z, local steps a multiple of N. */
static pk_status fzoo_task(dev *x, const pk_fedsim_device_params *p, pk_http_stats *hs, char *err,
                           size_t errlen)
{
    pk_http *h = NULL;
    char *resp = NULL;
    long status = 0;
    pk_status st = pk_http_create(p->sync.server, p->sync.http, &h, err, errlen);
    if (st == PK_OK)
        st = pk_http_request(h, "GET", "/v1/task", NULL, 0, PK_HTTP_JSON, &status, &resp, NULL, err,
                             errlen);
    if (h)
        *hs = pk_http_get_stats(h);
    pk_http_destroy(h);
    cJSON *j = st == PK_OK && status == 200 ? cJSON_Parse(resp) : NULL;
    free(resp);
    const char *ps = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "pool_seed"));
    const char *zk = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "z_kind"));
    const cJSON *K = cJSON_GetObjectItemCaseSensitive(j, "pool_size");
    const cJSON *S = cJSON_GetObjectItemCaseSensitive(j, "local_steps");
    if (st == PK_OK && (!ps || strlen(ps) != 64 || pk_hex_decode(x->pool_seed, 32, ps) != PK_OK ||
                        !cJSON_IsNumber(K) || !cJSON_IsNumber(S))) {
        pk_seterr(err, errlen, "GET /v1/task: no task with a pool (HTTP %ld)", status);
        st = PK_ERR_FORMAT;
    } else if (st == PK_OK && (!zk || strcmp(zk, "rademacher") != 0)) {
        pk_seterr(err, errlen, "fzoo needs Rademacher perturbations: the task's z_kind is %s",
                  zk ? zk : "missing");
        st = PK_ERR_ARG;
    } else if (st == PK_OK && (int64_t)S->valuedouble % x->N != 0) {
        pk_seterr(err, errlen,
                  "fzoo with %d perturbations needs the task's local steps in multiples of %d "
                  "(one FZOO step is %d local steps), the task has %lld",
                  x->N, x->N, x->N, (long long)S->valuedouble);
        st = PK_ERR_ARG;
    }
    if (st == PK_OK)
        x->K = (uint32_t)K->valuedouble;
    cJSON_Delete(j);
    return st;
}

pk_status fs_model_apply(void *user, uint64_t seed, pk_z_kind kind, float lr, float coef)
{
    fs_model *x = user;
    pk_mezo_update(x->m, x->trainable, seed, kind, lr, coef, 0.0f);
    return PK_OK;
}

pk_status fs_model_reset(void *user)
{
    fs_model *x = user;
    return pk_model_restore_base(x->m);
}

pk_status fs_model_hash(void *user, char hex[65])
{
    fs_model *x = user;
    return pk_weights_hash(x->m, hex);
}

static pk_status dev_open(dev *x, pk_store *s, const pk_fedsim_device_params *p, char *err,
                          size_t errlen)
{
    pk_train_config cfg = p->cfg;
    snprintf(cfg.model_dir, sizeof cfg.model_dir, "%s", p->model_dir);
    snprintf(cfg.dataset, sizeof cfg.dataset, "%s", p->dataset);
    pk_status st = pk_model_load(p->model_dir, pk_model_default_params(), &x->fm.m, err, errlen);
    if (st == PK_OK)
        st = pk_mezo_trainable(x->fm.m, cfg.trainable, &x->fm.trainable, err, errlen);
    if (st == PK_OK)
        st = pk_objective_from_store(s, p->dataset, x->fm.m, p->model_dir, &cfg, &x->obj, err,
                                     errlen);
    if (st == PK_OK && pk_objective_size(x->obj) == 0) {
        pk_seterr(err, errlen, "dataset %s has no examples", p->dataset);
        st = PK_ERR_ARG;
    }
    if (st == PK_OK) /* the frozen prefix, as the trainer's (DESIGN 4) */
        st = pk_objective_freeze_prefix(x->obj, x->fm.m, x->fm.trainable);
    if (st != PK_OK)
        return st;
    x->batch = (size_t)cfg.batch < pk_objective_size(x->obj) ? (size_t)cfg.batch
                                                             : pk_objective_size(x->obj);
    x->seed = p->seed;
    if (x->seed == 0)
        pk_crypto_random(&x->seed, sizeof x->seed);
    const char *why = NULL;
    if (!pk_fedsim_estimator_carried(p->cfg.mezo.estimator, &why)) {
        pk_seterr(err, errlen, "%s", why);
        return PK_ERR_ARG;
    }
    x->fzoo = p->cfg.mezo.estimator == PK_EST_FZOO;
    x->N = p->cfg.mezo.perturbations;
    if (x->fzoo && (x->N < 2 || x->N > 4096)) {
        pk_seterr(err, errlen, "fzoo needs 2 to 4096 perturbations per step (got %d)", x->N);
        return PK_ERR_ARG;
    }
    if (x->fzoo) {
        x->coef = calloc((size_t)x->N, sizeof *x->coef);
        x->loss = calloc((size_t)x->N + 1, sizeof *x->loss);
        x->seeds = calloc((size_t)x->N, sizeof *x->seeds);
        if (!x->coef || !x->loss || !x->seeds)
            return PK_ERR_NOMEM;
    }
    return PK_OK;
}

static void dev_close(dev *x)
{
    pk_objective_free(x->obj);
    free(x->fm.trainable);
    pk_model_free(x->fm.m);
    free(x->uploaded);
    free(x->coef);
    free(x->loss);
    free(x->seeds);
}

/* Appends {"round","device_id","examples","pairs","dp_noise","as_uploaded"} to the record
 * file: the pairs as the sync client uploaded them (op_upload). */
static pk_status write_record(const dev *x, const pk_fedsim_device_params *p,
                              const pk_sync_report *rep, char *err, size_t errlen)
{
    char *b64 = NULL;
    int noisy = rep->dp && isfinite(rep->epsilon) && rep->epsilon > 0; /* clipping alone: inf */
    pk_status st = pk_base64_encode(x->uploaded, x->n_uploaded * FS_PAIR_BYTES, &b64);
    if (st != PK_OK)
        return st;
    FILE *f = fopen(p->record_path, "a");
    int ok = f && fprintf(f,
                          "{\"round\":%lld,\"device_id\":\"%s\",\"examples\":%lld,\"pairs\":\"%s\","
                          "\"dp_noise\":%s,\"as_uploaded\":true}\n",
                          (long long)x->up_round, rep->device_id, (long long)x->up_examples, b64,
                          noisy ? "true" : "false") > 0;
    if (f)
        ok = fclose(f) == 0 && ok;
    free(b64);
    if (!ok) {
        pk_seterr(err, errlen, "cannot append to %s: %s", p->record_path, strerror(errno));
        return PK_ERR_IO;
    }
    return PK_OK;
}

static void straggle(double s)
{
    double end = pk_time_now() + s;
    while (s > 0 && !pk_interrupted() && pk_time_now() < end) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

pk_status pk_fedsim_device_round(pk_store *s, const pk_fedsim_device_params *p, pk_sync_report *rep,
                                 char *err, size_t errlen)
{
    dev x;
    pk_sync_report local;
    memset(&x, 0, sizeof x);
    if (!rep)
        rep = &local;
    memset(rep, 0, sizeof *rep);
    pk_http_stats hs; /* the fzoo task request's traffic, added to the round's */
    memset(&hs, 0, sizeof hs);
    pk_status st = dev_open(&x, s, p, err, errlen);
    if (st == PK_OK && x.fzoo)
        st = fzoo_task(&x, p, &hs, err, errlen);
    if (st == PK_OK) {
        straggle(p->straggle_s);
        pk_sync_params sp = p->sync;
        sp.pick = op_pick;
        sp.pick_user = &x;
        sp.on_upload = op_upload;
        sp.upload_user = &x;
        pk_sync_model_ops ops = {op_grad, fs_model_apply,  fs_model_reset, fs_model_hash,
                                 &x,      p->cfg.trainable};
        st = pk_sync_round(s, &sp, &ops, rep, err, errlen);
        rep->http.wire_up += hs.wire_up;
        rep->http.wire_down += hs.wire_down;
        rep->http.body_up += hs.body_up;
        rep->http.body_down += hs.body_down;
        rep->http.requests += hs.requests;
        rep->http.attempts += hs.attempts;
    }
    if (st == PK_OK && p->record_path && x.uploaded && rep->uploaded)
        st = write_record(&x, p, rep, err, errlen);
    dev_close(&x);
    return st;
}
