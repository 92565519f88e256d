/* export.c: a run out of the store, as a Hugging Face model directory (weights rebuilt by
 * pk_run_materialize, written by the engine's pk_model_save) or as a portable seed log
 * (pk_seedlog_write). The file formats themselves are left to model/ and seedlog.c. */
#include "pk_train.h"

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
