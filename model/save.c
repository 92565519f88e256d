/* save.c: pk_model_save (the weights as model.safetensors in a chosen dtype, the config and
 * tokenizer files beside them) and pk_model_write_side_files. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "gguf_impl.h"
#include "model_impl.h"

static void save_fill(void *user, size_t i, size_t start, size_t n, float *buf)
{
    const pk_model *m = user;
    const pk_tensor *t = &m->t[i];
    pk_widen(t->dtype, (const unsigned char *)t->data + pk_dtype_row_bytes(t->dtype, start), n,
             buf);
}

static pk_status copy_file(const char *src, const char *dst, char *err, size_t errlen)
{
    char *txt = NULL;
    size_t len = 0;
    pk_status st = pk_model_read_text(src, 1u << 30, &txt, &len, err, errlen);
    if (st != PK_OK)
        return st;
    FILE *f = pk_fopen_private(dst, "wb");
    if (!f || fwrite(txt, 1, len, f) != len) {
        pk_seterr(err, errlen, "%s: write failed: %s", dst, strerror(errno));
        st = PK_ERR_IO;
    }
    if (f && fclose(f) != 0 && st == PK_OK) {
        pk_seterr(err, errlen, "%s: write failed: %s", dst, strerror(errno));
        st = PK_ERR_IO;
    }
    free(txt);
    return st;
}

/* config.json (torch_dtype set to tdtype) and the tokenizer files of m's source directory. */
pk_status pk_model_write_side_files(const pk_model *m, const char *out_dir, const char *tdtype,
                                    char *err, size_t errlen)
{
    char path[4096];
    char *txt = NULL;
    cJSON *cfg = cJSON_ParseWithLength(m->config_text, m->config_len);
    pk_status st = PK_ERR_NOMEM;
    if (!cfg)
        goto out;
    cJSON_DeleteItemFromObjectCaseSensitive(cfg, "torch_dtype");
    if (!cJSON_AddStringToObject(cfg, "torch_dtype", tdtype))
        goto out;
    txt = cJSON_Print(cfg);
    if (!txt)
        goto out;
    snprintf(path, sizeof path, "%s/config.json", out_dir);
    FILE *f = pk_fopen_private(path, "wb");
    size_t tl = strlen(txt);
    st = PK_ERR_IO;
    if (!f) {
        pk_seterr(err, errlen, "%s: cannot create: %s", path, strerror(errno));
        goto out;
    }
    int ok = fwrite(txt, 1, tl, f) == tl && fputc('\n', f) != EOF;
    ok = (fclose(f) == 0) && ok;
    if (!ok) {
        pk_seterr(err, errlen, "%s: write failed: %s", path, strerror(errno));
        goto out;
    }
    static const char *const tok_files[] = {
        "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
        "vocab.json",     "merges.txt",      "generation_config.json"};
    struct stat sb;
    int is_dir = stat(m->dir, &sb) == 0 && S_ISDIR(sb.st_mode), written = 0;
    if (!is_dir && m->n_maps == 1) { /* a bare .gguf file: its tokenizer metadata, if any */
        pk_gguf g;
        st = pk_gguf_parse(m->dir, m->maps[0].base, m->maps[0].len, &g, err, errlen);
        if (st == PK_OK) {
            st = pk_gguf_tok_write_sp(&g, out_dir, &written, err, errlen);
            if (st == PK_OK && !written)
                st = pk_gguf_tok_write_bpe(&g, out_dir, &written, err, errlen);
            pk_gguf_release(&g);
        }
        if (st != PK_OK)
            goto out;
    }
    for (size_t i = 0; is_dir && i < sizeof tok_files / sizeof tok_files[0]; i++) {
        if (!pk_model_file_exists(m->dir, tok_files[i]))
            continue;
        char src[4096];
        snprintf(src, sizeof src, "%s/%s", m->dir, tok_files[i]);
        snprintf(path, sizeof path, "%s/%s", out_dir, tok_files[i]);
        if (strcmp(src, path) == 0)
            continue;
        st = copy_file(src, path, err, errlen);
        if (st != PK_OK)
            goto out;
    }
    st = PK_OK;
out:
    free(txt);
    cJSON_Delete(cfg);
    return st;
}

pk_status pk_model_save(const pk_model *m, const char *out_dir, pk_dtype dtype, char *err,
                        size_t errlen)
{
    pk_status st = PK_ERR_NOMEM;
    char path[4096];
    if (pk_dtype_is_quant(dtype)) { /* block types are written as GGUF (pk_model_save_gguf) */
        pk_seterr(err, errlen, "%s: safetensors holds F32, F16 or BF16, not %s", out_dir,
                  pk_dtype_name(dtype));
        return PK_ERR_ARG;
    }
    pk_st_entry *es = calloc(m->n_t ? m->n_t : 1, sizeof *es);
    if (!es)
        goto out;
    if (mkdir(out_dir, 0700) != 0 && errno != EEXIST) {
        pk_seterr(err, errlen, "%s: cannot create directory: %s", out_dir, strerror(errno));
        st = PK_ERR_IO;
        goto out;
    }
    for (size_t i = 0; i < m->n_t; i++) {
        es[i].name = m->t[i].name;
        es[i].dtype = dtype;
        es[i].ndim = m->t[i].ndim;
        for (int d = 0; d < 4; d++)
            es[i].shape[d] = m->t[i].shape[d];
    }
    snprintf(path, sizeof path, "%s/model.safetensors", out_dir);
    st = pk_safetensors_write(path, es, m->n_t, save_fill, (void *)(uintptr_t)m, err, errlen);
    if (st != PK_OK)
        goto out;
    static const char *const tnames[] = {"float32", "float16", "bfloat16"};
    st = pk_model_write_side_files(m, out_dir, tnames[dtype], err, errlen);
out:
    free(es);
    return st;
}
