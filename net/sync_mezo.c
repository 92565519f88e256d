/* sync_mezo.c: the real model behind pk_sync_model_ops: the engine's model, pk_mezo's projected
 * gradient and update sweep, an lm objective over a dataset of the store; reset restores the
 * base weights from their files (pk_model_restore_base) so every round restarts from base +
 * global log (sync.c does the replay). A spec that adds tensors (a LoRA adapter, block scales)
 * is reproduced from the spec itself (its seed), so at the base the device reports the hash of
 * the base model alone, the one the task names (the coordinator never sees the adapter). */
#include "pk_crypto.h"
#include "pk_net.h"
#include "pk_train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pk_sync_mezo {
    pk_model *m;
    uint8_t *trainable;       /* [n_tensors] */
    char trainable_name[256]; /* the --trainable spec ("all" by default) */
    pk_objective *obj;        /* NULL: no local data (catch-up only) */
    size_t batch;
    uint64_t shuffle_seed;
    int64_t step;       /* local steps taken this session (batch order) */
    char base_hash[65]; /* of the base model before the spec added tensors */
    int added;          /* the spec added tensors (an adapter, block scales) */
    int at_base;        /* reset and nothing applied since: the weights are base + spec init */
};

void pk_sync_mezo_free(pk_sync_mezo *x)
{
    if (!x)
        return;
    free(x->trainable);
    pk_objective_free(x->obj);
    pk_model_free(x->m);
    free(x);
}

pk_status pk_sync_mezo_open(pk_store *s, const char *model_dir, const char *dataset,
                            const char *datasets, const char *trainable, int batch, int seq_len,
                            pk_sync_mezo **out, char *err, size_t errlen)
{
    if (!out || !model_dir || batch < 1 || seq_len < 2)
        return PK_ERR_ARG;
    *out = NULL;
    pk_sync_mezo *x = calloc(1, sizeof *x);
    if (!x)
        return PK_ERR_NOMEM;
    pk_status st = pk_model_load(model_dir, pk_model_default_params(), &x->m, err, errlen);
    size_t n0 = 0;
    if (st == PK_OK) {
        n0 = pk_model_n_tensors(x->m);
        st = pk_weights_hash(x->m, x->base_hash);
    }
    if (st == PK_OK)
        st = pk_mezo_trainable(x->m, trainable ? trainable : "all", &x->trainable, err, errlen);
    if (st == PK_OK)
        x->added = pk_model_n_tensors(x->m) != n0;
    snprintf(x->trainable_name, sizeof x->trainable_name, "%s", trainable ? trainable : "all");
    if (st == PK_OK && dataset) {
        pk_train_config cfg = pk_train_config_default();
        cfg.objective = PK_OBJ_LM;
        cfg.seq_len = seq_len;
        cfg.batch = batch;
        snprintf(cfg.model_dir, sizeof cfg.model_dir, "%s", model_dir);
        snprintf(cfg.dataset, sizeof cfg.dataset, "%s", dataset);
        snprintf(cfg.datasets, sizeof cfg.datasets, "%s", datasets ? datasets : "");
        st = pk_objective_from_store(s, datasets ? NULL : dataset, x->m, model_dir, &cfg, &x->obj,
                                     err, errlen);
        if (st == PK_OK && pk_objective_size(x->obj) == 0) {
            pk_seterr(err, errlen, "dataset %s has no examples", datasets ? datasets : dataset);
            st = PK_ERR_ARG;
        }
        if (st == PK_OK) /* reset restores only what apply changed: the prefix stays valid */
            st = pk_objective_freeze_prefix(x->obj, x->m, x->trainable);
    }
    if (st != PK_OK) {
        pk_sync_mezo_free(x);
        return st;
    }
    x->batch = (size_t)batch;
    if (x->obj && x->batch > pk_objective_size(x->obj))
        x->batch = pk_objective_size(x->obj);
    pk_crypto_random(&x->shuffle_seed, sizeof x->shuffle_seed);
    *out = x;
    return PK_OK;
}

static pk_status op_grad(void *user, uint64_t seed, pk_z_kind kind, float eps, float *g,
                         int64_t *n_examples)
{
    pk_sync_mezo *x = user;
    if (!x->obj)
        return PK_ERR_ARG; /* no local data: catch-up only */
    return pk_objective_step_grad(x->obj, x->m, x->trainable, x->shuffle_seed, x->step++, x->batch,
                                  seed, kind, eps, g, n_examples);
}

static pk_status op_apply(void *user, uint64_t seed, pk_z_kind kind, float lr, float coef)
{
    pk_sync_mezo *x = user;
    pk_mezo_update(x->m, x->trainable, seed, kind, lr, coef, 0.0f);
    x->at_base = 0;
    return PK_OK;
}

static pk_status op_reset(void *user)
{
    pk_sync_mezo *x = user;
    pk_status st = pk_model_restore_base(x->m);
    x->at_base = st == PK_OK;
    return st;
}

static pk_status op_hash(void *user, char hex[65])
{
    pk_sync_mezo *x = user;
    if (x->added && x->at_base) { /* base + the spec's initial tensors: the task's base */
        memcpy(hex, x->base_hash, 65);
        return PK_OK;
    }
    return pk_weights_hash(x->m, hex);
}

pk_sync_model_ops pk_sync_mezo_ops(pk_sync_mezo *x)
{
    pk_sync_model_ops o = {op_grad, op_apply, op_reset, op_hash, x, x ? x->trainable_name : NULL};
    return o;
}

struct pk_model *pk_sync_mezo_model(pk_sync_mezo *x)
{
    return x ? x->m : NULL;
}
