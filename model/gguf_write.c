/* gguf_write.c: writes a model as GGUF (DESIGN 5): metadata (architecture, alignment, the
 * source config.json, llama.cpp's hyperparameter keys for llama / qwen2), tensor infos under
 * llama.cpp names where it has them, then each tensor converted row chunk by row chunk to the
 * chosen type (quant.c) and aligned. Which type each tensor gets is the caller's choice. Also
 * the GGUF byte writer (pk_gguf_put*) that gguf_tok.c builds tokenizer metadata with. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gguf_impl.h"
#include "quant_impl.h"

#define CHUNK (1u << 16) /* fp32 elements converted at a time (whole rows) */

void pk_gguf_put(pk_gguf_buf *b, const void *d, size_t n)
{
    if (b->bad || n == 0)
        return;
    if (b->f && fwrite(d, 1, n, b->f) != n) {
        b->bad = 1;
        return;
    }
    if (!b->f) {
        unsigned char *q = pk_grow(b->p, &b->cap, b->n + n, 1, 2 * n);
        if (!q) {
            b->bad = 1;
            return;
        }
        b->p = q;
        memcpy(q + b->n, d, n);
    }
    b->n += n;
}

void pk_gguf_put_le(pk_gguf_buf *b, uint64_t v, int n)
{
    unsigned char t[8];
    for (int i = 0; i < n; i++)
        t[i] = (unsigned char)(v >> (8 * i));
    pk_gguf_put(b, t, (size_t)n);
}

void pk_gguf_put_str(pk_gguf_buf *b, const void *s, size_t n)
{
    pk_gguf_put_le(b, n, 8);
    pk_gguf_put(b, s, n);
}

void pk_gguf_put_key(pk_gguf_buf *b, const char *key, uint32_t type)
{
    pk_gguf_put_str(b, key, strlen(key));
    pk_gguf_put_le(b, type, 4);
}

static void kv_str(pk_gguf_buf *w, const char *key, const char *val, size_t n)
{
    pk_gguf_put_key(w, key, GGUF_STRING);
    pk_gguf_put_str(w, val, n);
}

static void kv_u32(pk_gguf_buf *w, const char *key, uint32_t v)
{
    pk_gguf_put_key(w, key, GGUF_U32);
    pk_gguf_put_le(w, v, 4);
}

static void kv_f32(pk_gguf_buf *w, const char *key, float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    pk_gguf_put_key(w, key, GGUF_F32);
    pk_gguf_put_le(w, u, 4);
}

static void pad(pk_gguf_buf *w)
{
    static const unsigned char zero[GGUF_DEFAULT_ALIGN];
    pk_gguf_put(w, zero,
                (size_t)((GGUF_DEFAULT_ALIGN - w->n % GGUF_DEFAULT_ALIGN) % GGUF_DEFAULT_ALIGN));
}

static int mapped_arch(const pk_model *m)
{
    return m->cfg.arch == ARCH_LLAMA || m->cfg.arch == ARCH_QWEN2;
}

/* The llama.cpp hyperparameter keys (llama / qwen2): 9 entries. */
static void arch_keys(pk_gguf_buf *w, const pk_model *m, const char *a)
{
    const pk_cfg *c = &m->cfg;
    char k[96];
    const struct {
        const char *suffix;
        int v;
    } ints[] = {{"context_length", c->max_pos},  {"embedding_length", c->H},
                {"block_count", c->L},           {"feed_forward_length", c->inter},
                {"attention.head_count", c->nh}, {"attention.head_count_kv", c->nkv},
                {"attention.key_length", c->hd}};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        snprintf(k, sizeof k, "%s.%s", a, ints[i].suffix);
        kv_u32(w, k, (uint32_t)ints[i].v);
    }
    snprintf(k, sizeof k, "%s.attention.layer_norm_rms_epsilon", a);
    kv_f32(w, k, (float)c->eps);
    snprintf(k, sizeof k, "%s.rope.freq_base", a);
    kv_f32(w, k, (float)c->rope_theta);
}

static int key_is(const pk_gguf_kv *k, const char *key)
{
    return k->klen == strlen(key) && memcmp(k->key, key, k->klen) == 0;
}

/* The tokenizer entries: from a GGUF source, its tokenizer.ggml.* entries as stored; else from
 * the source directory's tokenizer.model (gguf_tok.c). */
static pk_status tok_kv(pk_gguf_buf *w, const pk_model *m, size_t *count, char *err, size_t errlen)
{
    if (m->n_maps == 1 && m->maps[0].len >= 4 && memcmp(m->maps[0].base, "GGUF", 4) == 0) {
        pk_gguf g;
        pk_status st = pk_gguf_parse(m->dir, m->maps[0].base, m->maps[0].len, &g, err, errlen);
        for (size_t i = 0; st == PK_OK && i < g.n_kv; i++) {
            if (g.kv[i].klen > 15 && memcmp(g.kv[i].key, "tokenizer.ggml.", 15) == 0 &&
                !key_is(&g.kv[i], "tokenizer.ggml.bos_token_id") &&
                !key_is(&g.kv[i], "tokenizer.ggml.eos_token_id")) {
                pk_gguf_put(w, g.kv[i].raw, g.kv[i].raw_len);
                (*count)++;
            }
        }
        if (st == PK_OK)
            pk_gguf_release(&g);
        return st;
    }
    unsigned char *mem = NULL;
    size_t n = 0;
    size_t before = *count;
    pk_status st = pk_gguf_tok_from_sp(m->dir, &mem, &n, count, err, errlen);
    if (st == PK_OK && *count == before) /* no tokenizer.model: a byte-level BPE one? */
        st = pk_gguf_tok_from_json(m->dir, &mem, &n, count, err, errlen);
    pk_gguf_put(w, mem, n);
    free(mem);
    return st;
}

/* Every metadata entry into w (memory); *count their number. */
static pk_status write_kv(pk_gguf_buf *w, const pk_model *m, size_t *count, char *err,
                          size_t errlen)
{
    const char *a = pk_model_arch(m);
    *count = 4 + (mapped_arch(m) ? 9 : 0) + (m->cfg.bos >= 0) + (m->cfg.eos >= 0);
    kv_str(w, "general.architecture", a, strlen(a));
    kv_u32(w, "general.alignment", GGUF_DEFAULT_ALIGN);
    kv_str(w, "pocketllm.config_json", m->config_text, m->config_len);
    kv_str(w, "pocketllm.qk_layout", "hf",
           2); /* q/k rows in Hugging Face order, see gguf_model.c */
    if (mapped_arch(m))
        arch_keys(w, m, a);
    if (m->cfg.bos >= 0)
        kv_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)m->cfg.bos);
    if (m->cfg.eos >= 0)
        kv_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)m->cfg.eos);
    pk_status st = tok_kv(w, m, count, err, errlen);
    return st == PK_OK && w->bad ? PK_ERR_NOMEM : st;
}

static void write_header(pk_gguf_buf *w, const pk_model *m, const pk_dtype *types,
                         const pk_gguf_buf *kv, size_t n_kv)
{
    pk_gguf_put(w, "GGUF", 4);
    pk_gguf_put_le(w, 3, 4);
    pk_gguf_put_le(w, m->n_t, 8);
    pk_gguf_put_le(w, n_kv, 8);
    pk_gguf_put(w, kv->p, kv->n);
    uint64_t off = 0;
    for (size_t i = 0; i < m->n_t; i++) {
        const pk_tensor *t = &m->t[i];
        char name[256];
        if (!mapped_arch(m) || !pk_gguf_name_to_gguf(t->name, name, sizeof name))
            snprintf(name, sizeof name, "%s", t->name);
        pk_gguf_put_str(w, name, strlen(name));
        pk_gguf_put_le(w, (uint64_t)t->ndim, 4);
        for (int d = t->ndim - 1; d >= 0; d--)
            pk_gguf_put_le(w, (uint64_t)t->shape[d], 8);
        pk_gguf_put_le(w, (uint64_t)pk_gguf_type_of(types[i]), 4);
        pk_gguf_put_le(w, off, 8);
        off += pk_dtype_row_bytes(types[i], t->numel);
        off = (off + GGUF_DEFAULT_ALIGN - 1) / GGUF_DEFAULT_ALIGN * GGUF_DEFAULT_ALIGN;
    }
    pad(w);
}

/* Tensor t converted to type dt, whole rows at a time (bytes copied when the type is kept). */
static void write_data(pk_gguf_buf *w, const pk_tensor *t, pk_dtype dt, float *buf,
                       unsigned char *out)
{
    if (dt == t->dtype) {
        pk_gguf_put(w, t->data, pk_dtype_row_bytes(dt, t->numel));
        pad(w);
        return;
    }
    size_t cols = t->cols ? t->cols : 1, step = CHUNK / cols * cols;
    step = step ? step : cols;
    for (size_t s = 0; s < t->numel; s += step) {
        size_t n = t->numel - s < step ? t->numel - s : step;
        pk_widen(t->dtype, (const unsigned char *)t->data + pk_dtype_row_bytes(t->dtype, s), n,
                 buf);
        pk_narrow(dt, buf, n, out);
        pk_gguf_put(w, out, pk_dtype_row_bytes(dt, n));
    }
    pad(w);
}

/* Each chosen type must be writable and fit the tensor's rows. */
static pk_status check_types(const pk_model *m, const pk_dtype *types, size_t *maxcols, char *err,
                             size_t errlen)
{
    *maxcols = 1;
    for (size_t i = 0; i < m->n_t; i++) {
        const pk_tensor *t = &m->t[i];
        pk_dtype dt = types[i];
        size_t cols = t->cols ? t->cols : 1;
        *maxcols = cols > *maxcols ? cols : *maxcols;
        if (pk_gguf_type_of(dt) < 0 ||
            (dt != t->dtype && pk_dtype_is_quant(dt) && !pk_quant_can_encode(dt))) {
            pk_seterr(err, errlen, "tensor %s: cannot write type %s", t->name, pk_dtype_name(dt));
            return PK_ERR_ARG;
        }
        if (cols % pk_dtype_block(dt) != 0) {
            pk_seterr(err, errlen,
                      "tensor %s: rows of %zu elements do not divide into %s blocks "
                      "of %zu",
                      t->name, cols, pk_dtype_name(dt), pk_dtype_block(dt));
            return PK_ERR_ARG;
        }
    }
    return PK_OK;
}

pk_status pk_model_save_gguf(const pk_model *m, const char *out_dir, const pk_dtype *types,
                             char *err, size_t errlen)
{
    size_t maxcols;
    pk_status st = check_types(m, types, &maxcols, err, errlen);
    if (st != PK_OK)
        return st;
    if (mkdir(out_dir, 0700) != 0 && errno != EEXIST) {
        pk_seterr(err, errlen, "%s: cannot create directory: %s", out_dir, strerror(errno));
        return PK_ERR_IO;
    }
    size_t nbuf = CHUNK > maxcols ? CHUNK : maxcols;
    float *buf = malloc(nbuf * 4);
    unsigned char *out = malloc(nbuf * 4);
    char path[4096];
    snprintf(path, sizeof path, "%s/model.gguf", out_dir);
    pk_gguf_buf w = {0}, kv = {0};
    size_t n_kv = 0;
    st = PK_ERR_NOMEM;
    if (!buf || !out)
        goto out;
    st = write_kv(&kv, m, &n_kv, err, errlen);
    if (st != PK_OK)
        goto out;
    w.f = pk_fopen_private(path, "wb");
    st = PK_ERR_IO;
    if (!w.f) {
        pk_seterr(err, errlen, "%s: cannot create: %s", path, strerror(errno));
        goto out;
    }
    write_header(&w, m, types, &kv, n_kv);
    for (size_t i = 0; i < m->n_t; i++)
        write_data(&w, &m->t[i], types[i], buf, out);
    int ok = fclose(w.f) == 0 && !w.bad;
    w.f = NULL;
    if (!ok) {
        pk_seterr(err, errlen, "%s: write failed: %s", path, strerror(errno));
        goto out;
    }
    st = pk_model_write_side_files(m, out_dir, "gguf", err, errlen);
out:
    if (w.f)
        fclose(w.f);
    free(kv.p);
    free(buf);
    free(out);
    return st;
}
