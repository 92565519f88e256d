/* trainer.c: the MeZO training loop over a store dataset (pk_mezo.h). A step's batch is a pure
 * function of (run seed, step, micro-batch) and its update a pure function of the logged row, so
 * a resumed run (base + checkpoint + log, then the remaining steps) ends with the same bits as an
 * uninterrupted one. */
#include "pk_mezo.h"
#include "pk_ui.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

pk_status pk_objective_from_store(pk_store *s, const char *dataset, const pk_model *m,
                                  const char *model_dir, const pk_train_config *cfg,
                                  pk_objective **out, char *err, size_t errlen)
{
    int64_t ds = 0, n = 0, *ids = NULL;
    pk_example **ex = NULL;
    pk_tokenizer *tok = NULL;
    size_t got = 0;
    *out = NULL;
    pk_status st = pk_store_dataset_id(s, dataset, &ds);
    if (st != PK_OK) {
        snprintf(err, errlen, "dataset '%s': %s", dataset,
                 st == PK_ERR_NOTFOUND ? "not found (see pocketllm data list)" : pk_store_errmsg(s));
        return st;
    }
    st = pk_store_example_ids(s, ds, &ids, &n);
    if (st != PK_OK) {
        snprintf(err, errlen, "dataset '%s': %s", dataset, pk_store_errmsg(s));
        return st;
    }
    if (n == 0) {
        snprintf(err, errlen, "dataset '%s' is empty", dataset);
        st = PK_ERR_ARG;
        goto out;
    }
    ex = calloc((size_t)n, sizeof *ex);
    if (ex == NULL) {
        st = PK_ERR_NOMEM;
        goto out;
    }
    for (; got < (size_t)n; got++) {
        st = pk_store_example_get(s, ds, ids[got], &ex[got]);
        if (st != PK_OK) {
            snprintf(err, errlen, "dataset '%s', example %lld: %s", dataset, (long long)ids[got],
                     st == PK_ERR_AUTH ? "authentication failed (tampered record)"
                                       : pk_store_errmsg(s));
            goto out;
        }
    }
    st = pk_tokenizer_load(model_dir, &tok, err, errlen);
    if (st != PK_OK)
        goto out;
    pk_objective_params op = {cfg->objective, cfg->seq_len,
                              cfg->template_[0] ? cfg->template_ : NULL,
                              cfg->labels[0] ? cfg->labels : NULL};
    st = pk_objective_new(m, tok, op, ex, got, out, err, errlen);
out:
    for (size_t i = 0; i < got; i++)
        pk_example_free(ex[i]);
    free(ex);
    free(ids);
    pk_tokenizer_free(tok);
    return st;
}

typedef struct step_ctx {
    pk_objective *obj;
    uint64_t seed;
    int64_t step;
    int n_micro;
    size_t B;
    size_t *idx;
} step_ctx;

static pk_status step_loss(void *user, pk_model *m, int micro, const pk_perturb *pert,
                           double *loss)
{
    step_ctx *c = user;
    pk_status st = pk_batch_indices(c->seed, c->step, micro, c->n_micro,
                                    pk_objective_size(c->obj), c->B, c->idx);
    if (st == PK_OK)
        st = pk_objective_select(c->obj, c->idx, c->B);
    if (st == PK_OK)
        st = pk_objective_loss(c->obj, m, pert, loss, NULL, NULL);
    return st;
}

/* Losses are bit-identical for any thread count on one BLAS kernel (pk_model_kernel), not across
 * kernels: a run continued on another kernel trains on, but not exactly as it would have. Says
 * so once. Runs created before the kernel was recorded say nothing. */
static void note_kernel(const char *config_json, int64_t run_id)
{
    char now[160];
    cJSON *o = cJSON_Parse(config_json ? config_json : "");
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(o, "kernel");
    pk_model_kernel(now, sizeof now);
    if (cJSON_IsString(k) && strcmp(k->valuestring, now) != 0)
        pk_log(PK_LOG_WARN,
               "run %lld started on %s and continues on %s: the continuation is exact only on "
               "the same kernel (replaying its step log stays exact anywhere)",
               (long long)run_id, k->valuestring, now);
    cJSON_Delete(o);
}

pk_status pk_train(pk_store *s, const pk_train_config *cfg_in, int64_t resume_run,
                   const pk_train_hooks *hooks, pk_train_result *res, char *err, size_t errlen)
{
    pk_train_config cfg = *cfg_in;
    pk_model *m = NULL;
    uint8_t *mask = NULL;
    pk_objective *obj = NULL, *eval_obj = NULL;
    char *json = NULL;
    size_t *idx = NULL;
    pk_step_row *rows = NULL;
    pk_run_info ri;
    int64_t run_id = resume_run, first = 0;
    pk_status st;
    memset(&ri, 0, sizeof ri);
    memset(res, 0, sizeof *res);
    res->last_loss = (double)NAN;

    if (resume_run > 0) {
        st = pk_run_load_config(s, resume_run, &ri, &cfg, err, errlen);
        if (st != PK_OK)
            goto out;
        if (ri.steps_done < cfg.steps)
            note_kernel(ri.config_json, resume_run);
        st = pk_run_materialize_ex(s, resume_run, -1, &m, &mask, &first, err, errlen);
        if (st != PK_OK)
            goto out;
        st = pk_model_make_writable(m, mask); /* a no-op if replaying wrote the weights */
        if (st != PK_OK) {
            snprintf(err, errlen, "%s: preparing the weights for training: %s", cfg.model_dir,
                     pk_status_str(st));
            goto out;
        }
    } else {
        char hex[65];
        int64_t ds = 0;
        cfg.mezo.steps_total = cfg.steps;
        st = pk_model_load(cfg.model_dir, pk_model_default_params(), &m, err, errlen);
        if (st != PK_OK)
            goto out;
        st = pk_mezo_trainable(m, cfg.trainable, &mask, err, errlen);
        if (st != PK_OK)
            goto out;
        /* the trainable tensors into memory of our own now, not page by page at the first
         * update (copy-on-write faults made the first step ~5x a normal one) */
        st = pk_model_make_writable(m, mask);
        if (st != PK_OK) {
            snprintf(err, errlen, "%s: preparing the weights for training: %s", cfg.model_dir,
                     pk_status_str(st));
            goto out;
        }
        st = pk_weights_hash(m, hex);
        if (st != PK_OK)
            goto out;
        st = pk_store_dataset_id(s, cfg.dataset, &ds);
        if (st != PK_OK) {
            snprintf(err, errlen, "dataset '%s': %s", cfg.dataset,
                     st == PK_ERR_NOTFOUND ? "not found (see pocketllm data list)"
                                           : pk_store_errmsg(s));
            goto out;
        }
        st = pk_train_config_to_json(&cfg, &json);
        if (st != PK_OK)
            goto out;
        /* build the objective first so bad labels/templates fail before a run row exists */
        st = pk_objective_from_store(s, cfg.dataset, m, cfg.model_dir, &cfg, &obj, err, errlen);
        if (st != PK_OK)
            goto out;
        st = pk_store_run_create(s, ds, json, hex, cfg.steps, &run_id);
        if (st != PK_OK) {
            snprintf(err, errlen, "creating the run: %s", pk_store_errmsg(s));
            goto out;
        }
    }
    res->run_id = run_id;
    if (obj == NULL) {
        st = pk_objective_from_store(s, cfg.dataset, m, cfg.model_dir, &cfg, &obj, err, errlen);
        if (st != PK_OK)
            goto out;
    }
    if (cfg.eval_dataset[0]) {
        st = pk_objective_from_store(s, cfg.eval_dataset, m, cfg.model_dir, &cfg, &eval_obj, err,
                                     errlen);
        if (st != PK_OK)
            goto out;
    }
    st = pk_store_run_set_status(s, run_id, "running");
    if (st != PK_OK) {
        snprintf(err, errlen, "run %lld: %s", (long long)run_id, pk_store_errmsg(s));
        goto out;
    }
    if (hooks && hooks->on_start)
        hooks->on_start(hooks->user, run_id, first);

    int q = cfg.mezo.spsa_q;
    idx = malloc((size_t)cfg.batch * sizeof(size_t));
    rows = calloc((size_t)q, sizeof *rows);
    if (idx == NULL || rows == NULL) {
        st = PK_ERR_NOMEM;
        goto out;
    }
    step_ctx ctx = {obj, cfg.mezo.seed, 0, cfg.accumulate, (size_t)cfg.batch, idx};
    double best = (double)INFINITY;
    int bad_evals = 0;
    int64_t step = first;
    for (; step < cfg.steps; step++) {
        if (pk_interrupted()) {
            res->interrupted = 1;
            break;
        }
        double fs = 0, us = 0;
        ctx.step = step;
        st = pk_mezo_step(m, mask, &cfg.mezo, step, cfg.accumulate, step_loss, &ctx, rows, &fs,
                          &us);
        if (st != PK_OK) {
            snprintf(err, errlen, "step %lld: %s", (long long)step,
                     st == PK_ERR_FORMAT ? "the loss is not finite (lower --lr or --eps?)"
                                         : pk_status_str(st));
            pk_status st2 = pk_store_run_set_status(s, run_id, "failed");
            (void)st2;
            goto out;
        }
        res->forward_s += fs;
        res->update_s += us;
        st = pk_store_steps_append(s, run_id, rows, (size_t)q);
        if (st != PK_OK) {
            snprintf(err, errlen, "step %lld: logging: %s", (long long)step, pk_store_errmsg(s));
            goto out;
        }
        res->last_loss = 0.5 * ((double)rows[0].loss_plus + (double)rows[0].loss_minus);
        if (hooks && hooks->on_step)
            hooks->on_step(hooks->user, step, cfg.steps, rows, q);
        if (cfg.checkpoint_every > 0 && (step + 1) % cfg.checkpoint_every == 0 &&
            step + 1 < cfg.steps) {
            void *blob = NULL;
            size_t len = 0;
            st = pk_checkpoint_pack(m, mask, &blob, &len);
            if (st == PK_OK) {
                st = pk_store_checkpoint_put(s, run_id, step + 1, blob, len);
                if (st != PK_OK)
                    snprintf(err, errlen, "checkpoint at step %lld: %s", (long long)(step + 1),
                             pk_store_errmsg(s));
            }
            free(blob);
            if (st != PK_OK)
                goto out;
        }
        if (eval_obj != NULL && cfg.eval_every > 0 &&
            ((step + 1) % cfg.eval_every == 0 || step + 1 == cfg.steps)) {
            double el = 0, ea = 0;
            st = pk_objective_eval(eval_obj, m, (size_t)cfg.batch, &el, &ea);
            if (st != PK_OK) {
                snprintf(err, errlen, "eval at step %lld: %s", (long long)(step + 1),
                         pk_status_str(st));
                goto out;
            }
            st = pk_store_eval_append(s, run_id, step + 1, el, ea);
            if (st != PK_OK) {
                snprintf(err, errlen, "eval at step %lld: %s", (long long)(step + 1),
                         pk_store_errmsg(s));
                goto out;
            }
            if (hooks && hooks->on_eval)
                hooks->on_eval(hooks->user, step + 1, el, ea);
            if (el < best) {
                best = el;
                bad_evals = 0;
            } else if (cfg.early_stop > 0 && ++bad_evals >= cfg.early_stop) {
                res->stopped_early = 1;
                step++;
                break;
            }
        }
    }
    res->steps_done = step;
    st = pk_store_run_set_status(s, run_id, res->interrupted ? "stopped" : "done");
    if (st != PK_OK) {
        snprintf(err, errlen, "run %lld: %s", (long long)run_id, pk_store_errmsg(s));
        goto out;
    }
    st = pk_weights_hash(m, res->final_hash);
out:
    free(json);
    free(idx);
    free(rows);
    free(mask);
    pk_objective_free(obj);
    pk_objective_free(eval_obj);
    pk_model_free(m);
    pk_run_info_clear(&ri);
    return st;
}
