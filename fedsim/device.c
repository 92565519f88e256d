/* device.c: the device role of a simulation (`pocketllm fedsim device`): one pk_sync_round of
 * this device's store against the coordinator, with the MeZO model of train/ over its local
 * dataset (any objective: lm or classify), pool indices and batches derived from the device's
 * seed and the round (so a run is reproducible), and the device's own record of each upload,
 * from which verify.c recomputes the coordinator's log. The round itself is net/'s. */
#include "fedsim_impl.h"
#include "pk_crypto.h"
#include "pk_fedsim.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct dev {
    pk_model *m;
    uint8_t *trainable;
    pk_objective *obj;
    size_t batch;
    uint64_t seed;
    int64_t round;       /* the round of the current local step (set by pick) */
    int64_t step;        /* its index in the round */
    uint8_t *uploaded;   /* the pairs of this call's new upload, as sent (PROTOCOL 3), or NULL */
    size_t n_uploaded;   /* pairs */
    int64_t up_round;    /* the round it went to */
    int64_t up_examples; /* its example count */
} dev;

pk_fedsim_device_params pk_fedsim_device_default_params(void)
{
    pk_fedsim_device_params p;
    memset(&p, 0, sizeof p);
    p.sync = pk_sync_default_params();
    p.sync.wait_s = 0.0;
    p.cfg = pk_train_config_default();
    return p;
}

static uint32_t op_pick(void *user, int64_t round, int64_t step, uint32_t K)
{
    dev *x = user;
    fs_rng r = fs_rng_make(x->seed, 0x9c4, ((uint64_t)round << 24) ^ (uint64_t)step);
    x->round = round;
    x->step = step;
    return (uint32_t)fs_below(&r, K);
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

static pk_status op_grad(void *user, uint64_t seed, pk_z_kind kind, float eps, float *g,
                         int64_t *n_examples)
{
    dev *x = user;
    /* a batch per (round, step): the shuffle's epoch moves with the round */
    int64_t step = x->round * 65536 + x->step % 65536;
    return pk_objective_step_grad(x->obj, x->m, x->trainable, x->seed, step, x->batch, seed, kind,
                                  eps, g, n_examples);
}

static pk_status op_apply(void *user, uint64_t seed, pk_z_kind kind, float lr, float coef)
{
    dev *x = user;
    pk_mezo_update(x->m, x->trainable, seed, kind, lr, coef, 0.0f);
    return PK_OK;
}

static pk_status op_reset(void *user)
{
    dev *x = user;
    return pk_model_restore_base(x->m);
}

static pk_status op_hash(void *user, char hex[65])
{
    dev *x = user;
    return pk_weights_hash(x->m, hex);
}

static pk_status dev_open(dev *x, pk_store *s, const pk_fedsim_device_params *p, char *err,
                          size_t errlen)
{
    pk_train_config cfg = p->cfg;
    snprintf(cfg.model_dir, sizeof cfg.model_dir, "%s", p->model_dir);
    snprintf(cfg.dataset, sizeof cfg.dataset, "%s", p->dataset);
    pk_status st = pk_model_load(p->model_dir, pk_model_default_params(), &x->m, err, errlen);
    if (st == PK_OK)
        st = pk_mezo_trainable(x->m, cfg.trainable, &x->trainable, err, errlen);
    if (st == PK_OK)
        st = pk_objective_from_store(s, p->dataset, x->m, p->model_dir, &cfg, &x->obj, err, errlen);
    if (st == PK_OK && pk_objective_size(x->obj) == 0) {
        pk_seterr(err, errlen, "dataset %s has no examples", p->dataset);
        st = PK_ERR_ARG;
    }
    if (st != PK_OK)
        return st;
    x->batch = (size_t)cfg.batch < pk_objective_size(x->obj) ? (size_t)cfg.batch
                                                             : pk_objective_size(x->obj);
    x->seed = p->seed;
    if (x->seed == 0)
        pk_crypto_random(&x->seed, sizeof x->seed);
    return PK_OK;
}

static void dev_close(dev *x)
{
    pk_objective_free(x->obj);
    free(x->trainable);
    pk_model_free(x->m);
    free(x->uploaded);
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
    pk_status st = dev_open(&x, s, p, err, errlen);
    if (st == PK_OK) {
        straggle(p->straggle_s);
        pk_sync_params sp = p->sync;
        sp.pick = op_pick;
        sp.pick_user = &x;
        sp.on_upload = op_upload;
        sp.upload_user = &x;
        pk_sync_model_ops ops = {op_grad, op_apply, op_reset, op_hash, &x, p->cfg.trainable};
        st = pk_sync_round(s, &sp, &ops, rep, err, errlen);
    }
    if (st == PK_OK && p->record_path && x.uploaded && rep->uploaded)
        st = write_record(&x, p, rep, err, errlen);
    dev_close(&x);
    return st;
}
