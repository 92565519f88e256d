/* export.c: a run out of the store, as a Hugging Face model directory (weights rebuilt by
 * pk_run_materialize, LoRA adapters merged, written by the engine's pk_model_save), as a PEFT
 * LoRA adapter directory, or as a portable seed log (pk_seedlog_write). The model and seed-log
 * file formats themselves are left to model/ and seedlog.c. */
#include "pk_train.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static pk_status write_provenance(const char *out_dir, int64_t run_id, const pk_run_info *ri,
                                  const char *hash, pk_dtype dtype, char *err, size_t errlen)
{
    char path[4200];
    if (snprintf(path, sizeof path, "%s/pocketllm_run.json", out_dir) >= (int)sizeof path) {
        pk_seterr(err, errlen, "%s: path too long", out_dir);
        return PK_ERR_ARG;
    }
    FILE *f = pk_fopen_private(path, "w");
    if (!f) {
        pk_seterr(err, errlen, "cannot write %s: %s", path, strerror(errno));
        return PK_ERR_IO;
    }
    fprintf(f,
            "{\n  \"format\": \"pocketllm-export 1\",\n  \"run_id\": %lld,\n"
            "  \"steps\": %lld,\n  \"base_hash\": \"%s\",\n  \"weights_hash\": \"%s\",\n"
            "  \"dtype\": \"%s\"\n}\n",
            (long long)run_id, (long long)ri->steps_done, ri->base_hash, hash,
            pk_dtype_name(dtype));
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        pk_seterr(err, errlen, "cannot write %s", path);
        return PK_ERR_IO;
    }
    return PK_OK;
}

pk_status pk_export_hf(pk_store *s, int64_t run_id, const char *out_dir, pk_dtype dtype,
                       char *weights_hash, char *err, size_t errlen)
{
    pk_model *m = NULL;
    pk_run_info ri;
    memset(&ri, 0, sizeof ri);
    char hash[65] = "";
    pk_status st = pk_store_run_get(s, run_id, &ri, NULL, 0);
    if (st != PK_OK) {
        pk_seterr(err, errlen, "no run %lld in this home (see pocketllm runs)", (long long)run_id);
        goto out;
    }
    st = pk_run_materialize(s, run_id, &m, err, errlen);
    if (st != PK_OK)
        goto out;
    st = pk_weights_hash(m, hash);
    if (st != PK_OK) {
        pk_seterr(err, errlen, "cannot hash the weights of run %lld", (long long)run_id);
        goto out;
    }
    st = pk_model_lora_merge(m); /* no-op without an adapter */
    if (st == PK_OK)
        st = pk_model_save(m, out_dir, dtype, err, errlen);
    if (st != PK_OK)
        goto out;
    st = write_provenance(out_dir, run_id, &ri, hash, dtype, err, errlen);
    if (st == PK_OK && weights_hash)
        memcpy(weights_hash, hash, sizeof hash);
out:
    pk_model_free(m);
    pk_run_info_clear(&ri);
    return st;
}

/* ---- PEFT adapter ---- */

typedef struct adapter_ctx {
    const pk_model *m;
    const size_t *idx; /* model tensor of each entry */
} adapter_ctx;

static void adapter_fill(void *user, size_t i, size_t start, size_t n, float *buf)
{
    const adapter_ctx *c = user;
    pk_tensor_info ti;
    if (pk_model_tensor(c->m, c->idx[i], &ti) == PK_OK)
        memcpy(buf, (const float *)ti.data + start, n * sizeof *buf);
}

/* adapter_model.safetensors: the A and B tensors under PEFT's names. */
static pk_status write_adapter_tensors(const pk_model *m, const char *dir, char *err, size_t errlen)
{
    size_t nt = pk_model_n_tensors(m), k = 0;
    pk_st_entry *e = calloc(nt, sizeof *e);
    size_t *idx = calloc(nt, sizeof *idx);
    char **names = calloc(nt, sizeof *names), path[4200];
    pk_status st = e && idx && names ? PK_OK : PK_ERR_NOMEM;
    for (size_t i = 0; i < nt && st == PK_OK; i++) {
        pk_tensor_info ti;
        if (!pk_model_tensor_is_lora(m, i) || pk_model_tensor(m, i, &ti) != PK_OK)
            continue;
        size_t l = strlen(ti.name) + 24;
        names[k] = malloc(l);
        if (!names[k]) {
            st = PK_ERR_NOMEM;
            break;
        }
        snprintf(names[k], l, "base_model.model.%s", ti.name);
        e[k] = (pk_st_entry){names[k], PK_DTYPE_F32, 2, {ti.shape[0], ti.shape[1], 1, 1}};
        idx[k++] = i;
    }
    if (st == PK_OK &&
        snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir) >= (int)sizeof path) {
        pk_seterr(err, errlen, "%s: path too long", dir);
        st = PK_ERR_ARG;
    }
    adapter_ctx c = {m, idx};
    if (st == PK_OK)
        st = pk_safetensors_write(path, e, k, adapter_fill, &c, err, errlen);
    for (size_t i = 0; names && i < k; i++)
        free(names[i]);
    free(names);
    free(idx);
    free(e);
    return st;
}

/* The adapted modules' last name components (q_proj, v_proj...), each once, as a JSON array. */
static cJSON *module_names(const pk_model *m)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && i < pk_model_n_tensors(m); i++) {
        pk_tensor_info ti;
        if (!pk_model_tensor_is_lora(m, i) || pk_model_tensor(m, i, &ti) != PK_OK)
            continue;
        char mod[256];
        size_t l = strlen(ti.name) - strlen(".lora_A.weight");
        snprintf(mod, sizeof mod, "%.*s", (int)l, ti.name);
        const char *last = strrchr(mod, '.') ? strrchr(mod, '.') + 1 : mod;
        int seen = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, a) seen |= !strcmp(it->valuestring, last);
        if (!seen)
            cJSON_AddItemToArray(a, cJSON_CreateString(last));
    }
    return a;
}

/* adapter_config.json, PEFT's LoraConfig fields. */
static pk_status write_adapter_config(const pk_model *m, const pk_train_config *cfg,
                                      const char *dir, char *err, size_t errlen)
{
    pk_lora_params lp;
    char path[4200];
    (void)pk_model_lora(m, &lp);
    cJSON *o = cJSON_CreateObject();
    if (o == NULL)
        return PK_ERR_NOMEM;
    cJSON_AddStringToObject(o, "peft_type", "LORA");
    if (pk_model_is_causal(m))
        cJSON_AddStringToObject(o, "task_type", "CAUSAL_LM");
    else
        cJSON_AddNullToObject(o, "task_type");
    cJSON_AddStringToObject(o, "base_model_name_or_path", cfg->model_dir);
    cJSON_AddNumberToObject(o, "r", lp.r);
    cJSON_AddNumberToObject(o, "lora_alpha", (double)lp.alpha);
    cJSON_AddNumberToObject(o, "lora_dropout", 0.0);
    cJSON_AddItemToObject(o, "target_modules", module_names(m));
    cJSON_AddStringToObject(o, "bias", "none");
    cJSON_AddBoolToObject(o, "fan_in_fan_out", !strcmp(pk_model_arch(m), "gpt2"));
    cJSON_AddBoolToObject(o, "inference_mode", 1);
    cJSON_AddBoolToObject(o, "init_lora_weights", 1);
    cJSON_AddBoolToObject(o, "use_rslora", 0);
    cJSON_AddBoolToObject(o, "use_dora", 0);
    cJSON_AddNullToObject(o, "modules_to_save");
    char *txt = cJSON_Print(o);
    cJSON_Delete(o);
    if (txt == NULL)
        return PK_ERR_NOMEM;
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    FILE *f = pk_fopen_private(path, "w");
    pk_status st = PK_OK;
    if (!f || fputs(txt, f) == EOF || fputc('\n', f) == EOF)
        st = PK_ERR_IO;
    if (f && fclose(f) != 0)
        st = PK_ERR_IO;
    if (st != PK_OK)
        pk_seterr(err, errlen, "cannot write %s: %s", path, strerror(errno));
    free(txt);
    return st;
}

pk_status pk_export_adapter(pk_store *s, int64_t run_id, const char *out_dir, char *weights_hash,
                            char *err, size_t errlen)
{
    pk_model *m = NULL;
    pk_run_info ri;
    pk_train_config cfg;
    char hash[65] = "";
    pk_status st = pk_run_load_config(s, run_id, &ri, &cfg, err, errlen);
    if (st == PK_OK && pk_mezo_lora_parse(cfg.trainable, &(pk_lora_params){0}, NULL, 0) != 1) {
        pk_seterr(err, errlen,
                  "run %lld trains the model's own tensors (trainable '%s'), not a LoRA adapter: "
                  "export its weights instead",
                  (long long)run_id, cfg.trainable);
        st = PK_ERR_ARG;
    }
    if (st == PK_OK)
        st = pk_run_materialize(s, run_id, &m, err, errlen);
    if (st == PK_OK)
        st = pk_weights_hash(m, hash);
    if (st == PK_OK && mkdir(out_dir, 0700) != 0 && errno != EEXIST) {
        pk_seterr(err, errlen, "%s: cannot create directory: %s", out_dir, strerror(errno));
        st = PK_ERR_IO;
    }
    if (st == PK_OK)
        st = write_adapter_tensors(m, out_dir, err, errlen);
    if (st == PK_OK)
        st = write_adapter_config(m, &cfg, out_dir, err, errlen);
    if (st == PK_OK)
        st = write_provenance(out_dir, run_id, &ri, hash, PK_DTYPE_F32, err, errlen);
    if (st == PK_OK && weights_hash)
        memcpy(weights_hash, hash, sizeof hash);
    pk_model_free(m);
    pk_run_info_clear(&ri);
    return st;
}

/* The segments of a chained run's ancestors, root first (DESIGN 13): each one's settings and
 * the rows of its log under its child's starting point. */
static pk_status add_ancestors(pk_store *s, const pk_run_info *child, pk_seedlog *log, char *err,
                               size_t errlen)
{
    char serr[512] = ""; /* what the store says on failure */
    int64_t run = child->parent_run, steps = child->parent_steps;
    pk_status st = PK_OK;
    while (st == PK_OK && run > 0) {
        pk_run_info ri;
        pk_train_config cfg;
        st = pk_run_load_config(s, run, &ri, &cfg, err, errlen);
        pk_seedlog_segment *v =
            st == PK_OK ? realloc(log->parents, (log->n_parents + 1) * sizeof *v) : NULL;
        if (st == PK_OK && v == NULL)
            st = PK_ERR_NOMEM;
        if (st == PK_OK) {
            log->parents = v;
            memmove(v + 1, v, log->n_parents * sizeof *v); /* root first: prepend */
            memset(v, 0, sizeof *v);
            log->n_parents++;
            v->z = cfg.mezo.z;
            v->weight_decay = cfg.mezo.weight_decay;
            v->estimator = cfg.mezo.estimator; /* parent line version 2 (mezo/seedlog.c) */
            v->perturbations = cfg.mezo.perturbations;
            v->fzoo_mean = cfg.mezo.fzoo_mean;
            v->hessian_smooth = cfg.mezo.hessian_smooth;
            v->hessian_every = cfg.mezo.hessian_every;
            v->perturb_layers = cfg.mezo.perturb_layers;
            v->perturb_stages = cfg.mezo.perturb_stages;
            v->steps = steps;
            snprintf(v->trainable, sizeof v->trainable, "%s", cfg.trainable);
            st = pk_store_steps_read(s, run, 0, steps, &v->rows, &v->n_rows, serr, sizeof serr);
            if (st != PK_OK)
                pk_seterr(err, errlen, "cannot read the step log of run %lld: %s", (long long)run,
                          serr);
        }
        run = ri.parent_run;
        steps = ri.parent_steps;
        pk_run_info_clear(&ri);
    }
    return st;
}

pk_status pk_export_seedlog(pk_store *s, int64_t run_id, const char *path, size_t *bytes, char *err,
                            size_t errlen)
{
    char serr[512] = ""; /* what the store says on failure */
    pk_run_info ri;
    memset(&ri, 0, sizeof ri);
    pk_seedlog log;
    memset(&log, 0, sizeof log);
    pk_train_config cfg = pk_train_config_default();
    pk_status st = pk_store_run_get(s, run_id, &ri, serr, sizeof serr);
    if (st != PK_OK) {
        pk_seterr(err, errlen, "no run %lld in this home (see pocketllm runs)", (long long)run_id);
        goto out;
    }
    st = pk_train_config_from_json(ri.config_json ? ri.config_json : "{}", &cfg, err, errlen);
    if (st != PK_OK)
        goto out;
    st =
        pk_store_steps_read(s, run_id, 0, ri.steps_done, &log.rows, &log.n_rows, serr, sizeof serr);
    if (st != PK_OK) {
        pk_seterr(err, errlen, "cannot read the step log of run %lld: %s", (long long)run_id, serr);
        goto out;
    }
    memcpy(log.base_hash, ri.base_hash, sizeof log.base_hash);
    if (ri.parent_run > 0)
        st = add_ancestors(s, &ri, &log, err, errlen);
    if (st != PK_OK)
        goto out;
    log.z = cfg.mezo.z;
    log.weight_decay = cfg.mezo.weight_decay;
    snprintf(log.trainable, sizeof log.trainable, "%s", cfg.trainable);
    log.estimator = cfg.mezo.estimator;
    log.perturbations = cfg.mezo.perturbations;
    log.fzoo_mean = cfg.mezo.fzoo_mean;
    log.hessian_smooth = cfg.mezo.hessian_smooth;
    log.hessian_every = cfg.mezo.hessian_every;
    log.perturb_layers = cfg.mezo.perturb_layers;
    log.perturb_stages = cfg.mezo.perturb_stages;
    log.rounding = cfg.mezo.rounding;
    st = pk_seedlog_write(path, &log, err, errlen);
    if (st != PK_OK)
        goto out;
    if (bytes) {
        struct stat sb;
        *bytes = stat(path, &sb) == 0 ? (size_t)sb.st_size : 0;
    }
out:
    pk_seedlog_clear(&log);
    pk_run_info_clear(&ri);
    return st;
}
