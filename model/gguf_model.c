/* gguf_model.c: a parsed GGUF file as a model (DESIGN 5): config.json text from the metadata
 * (ours embeds the source config.json; llama.cpp's files get one built from llama.* / qwen2.*
 * keys), llama.cpp tensor names mapped to Hugging Face ones with shapes in PyTorch order, and
 * llama q/k rows put back from llama.cpp's interleaved RoPE order. load.c binds the tensors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "gguf_impl.h"

/* llama.cpp <-> Hugging Face names: global tensors, then per-block suffixes. */
static const char *const global_names[][2] = {
    {"token_embd.weight", "model.embed_tokens.weight"},
    {"output_norm.weight", "model.norm.weight"},
    {"output.weight", "lm_head.weight"},
};
static const char *const block_names[][2] = {
    {"attn_norm", "input_layernorm"}, {"ffn_norm", "post_attention_layernorm"},
    {"attn_q", "self_attn.q_proj"},   {"attn_k", "self_attn.k_proj"},
    {"attn_v", "self_attn.v_proj"},   {"attn_output", "self_attn.o_proj"},
    {"ffn_gate", "mlp.gate_proj"},    {"ffn_up", "mlp.up_proj"},
    {"ffn_down", "mlp.down_proj"},
};

/* Maps name between the two spellings (dir 0: llama.cpp -> HF, 1: HF -> llama.cpp). */
static int map_name(const char *name, int dir, char *out, size_t n)
{
    for (size_t i = 0; i < sizeof global_names / sizeof global_names[0]; i++) {
        if (strcmp(name, global_names[i][dir]) == 0) {
            snprintf(out, n, "%s", global_names[i][!dir]);
            return 1;
        }
    }
    const char *pre = dir ? "model.layers." : "blk.";
    size_t pl = strlen(pre);
    if (strncmp(name, pre, pl) != 0)
        return 0;
    char *end;
    long l = strtol(name + pl, &end, 10);
    if (end == name + pl || *end != '.' || l < 0)
        return 0;
    const char *rest = end + 1, *dot = strrchr(rest, '.');
    if (!dot || (strcmp(dot, ".weight") != 0 && strcmp(dot, ".bias") != 0))
        return 0;
    for (size_t i = 0; i < sizeof block_names / sizeof block_names[0]; i++) {
        const char *from = block_names[i][dir];
        if (strlen(from) == (size_t)(dot - rest) &&
            strncmp(rest, from, (size_t)(dot - rest)) == 0) {
            snprintf(out, n, "%s%ld.%s%s", dir ? "blk." : "model.layers.", l, block_names[i][!dir],
                     dot);
            return 1;
        }
    }
    return 0;
}

int pk_gguf_name_to_gguf(const char *hf, char *out, size_t n)
{
    return map_name(hf, 1, out, n);
}

/* Integer metadata (any integer or bool type); 0 if absent or not an integer. */
static int kv_int(const pk_gguf *g, const char *key, long long *v)
{
    const pk_gguf_kv *k = pk_gguf_find(g, key);
    if (!k || k->type == GGUF_STRING || k->type == GGUF_ARRAY || k->type == GGUF_F32 ||
        k->type == GGUF_F64)
        return 0;
    static const unsigned char sz[] = {1, 1, 2, 2, 4, 4, 0, 1, 0, 0, 8, 8};
    int n = sz[k->type];
    uint64_t u = 0;
    for (int i = 0; i < n; i++)
        u |= (uint64_t)k->val[i] << (8 * i);
    int sign = k->type == GGUF_I8 || k->type == GGUF_I16 || k->type == GGUF_I32;
    if (sign && n < 8 && (u >> (8 * n - 1)) & 1)
        u |= ~0ull << (8 * n);
    *v = (long long)u;
    return 1;
}

static int kv_num(const pk_gguf *g, const char *key, double *v)
{
    const pk_gguf_kv *k = pk_gguf_find(g, key);
    long long iv;
    if (k && k->type == GGUF_F32) {
        uint32_t u =
            (uint32_t)(k->val[0] | k->val[1] << 8 | k->val[2] << 16 | (uint32_t)k->val[3] << 24);
        float f;
        memcpy(&f, &u, 4);
        *v = (double)f;
        return 1;
    }
    if (k && k->type == GGUF_F64) {
        uint64_t u = 0;
        for (int i = 0; i < 8; i++)
            u |= (uint64_t)k->val[i] << (8 * i);
        memcpy(v, &u, 8);
        return 1;
    }
    if (kv_int(g, key, &iv)) {
        *v = (double)iv;
        return 1;
    }
    return 0;
}

/* A string value as a NUL-terminated copy in out [n]; 0 if absent, not a string or too long. */
static int kv_str(const pk_gguf *g, const char *key, char *out, size_t n)
{
    const pk_gguf_kv *k = pk_gguf_find(g, key);
    if (!k || k->type != GGUF_STRING)
        return 0;
    uint64_t l = 0;
    for (int i = 0; i < 8; i++)
        l |= (uint64_t)k->val[i] << (8 * i);
    if (l >= n)
        return 0;
    memcpy(out, k->val + 8, (size_t)l);
    out[l] = 0;
    return 1;
}

static const pk_gguf_tensor *find_tensor(const pk_gguf *g, const char *name)
{
    for (size_t i = 0; i < g->n_t; i++) {
        if (strcmp(g->t[i].name, name) == 0)
            return &g->t[i];
    }
    return NULL;
}

/* arch.suffix as an integer config key (skipped when absent). */
static void add_int(cJSON *o, const pk_gguf *g, const char *arch, const char *suffix,
                    const char *hf)
{
    char key[128];
    long long v;
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    if (kv_int(g, key, &v))
        cJSON_AddNumberToObject(o, hf, (double)v);
}

static void add_num(cJSON *o, const pk_gguf *g, const char *arch, const char *suffix,
                    const char *hf)
{
    char key[128];
    double v;
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    if (kv_num(g, key, &v))
        cJSON_AddNumberToObject(o, hf, v);
}

/* config.json for a llama.cpp llama / qwen2 file (no embedded config). */
static cJSON *build_config(const pk_gguf *g, const char *arch)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "model_type", arch);
    add_int(o, g, arch, "embedding_length", "hidden_size");
    add_int(o, g, arch, "block_count", "num_hidden_layers");
    add_int(o, g, arch, "attention.head_count", "num_attention_heads");
    add_int(o, g, arch, "attention.head_count_kv", "num_key_value_heads");
    add_int(o, g, arch, "attention.key_length", "head_dim");
    add_int(o, g, arch, "feed_forward_length", "intermediate_size");
    add_int(o, g, arch, "context_length", "max_position_embeddings");
    add_num(o, g, arch, "attention.layer_norm_rms_epsilon", "rms_norm_eps");
    add_num(o, g, arch, "rope.freq_base", "rope_theta");
    long long v = 0;
    char key[128];
    snprintf(key, sizeof key, "%s.vocab_size", arch);
    const pk_gguf_kv *tok = pk_gguf_find(g, "tokenizer.ggml.tokens");
    const pk_gguf_tensor *emb = find_tensor(g, "token_embd.weight");
    if (!kv_int(g, key, &v))
        v = tok && tok->type == GGUF_ARRAY ? (long long)tok->n : emb ? (long long)emb->ne[1] : 0;
    if (v > 0)
        cJSON_AddNumberToObject(o, "vocab_size", (double)v);
    cJSON_AddBoolToObject(o, "tie_word_embeddings", find_tensor(g, "output.weight") == NULL);
    if (strcmp(arch, "llama") == 0 && find_tensor(g, "blk.0.attn_q.bias"))
        cJSON_AddBoolToObject(o, "attention_bias", 1);
    static const char *const ids[][2] = {{"tokenizer.ggml.bos_token_id", "bos_token_id"},
                                         {"tokenizer.ggml.eos_token_id", "eos_token_id"},
                                         {"tokenizer.ggml.padding_token_id", "pad_token_id"}};
    for (size_t i = 0; i < 3; i++) {
        if (kv_int(g, ids[i][0], &v))
            cJSON_AddNumberToObject(o, ids[i][1], (double)v);
    }
    return o;
}

/* The config.json text: embedded by our writer, or built for llama / qwen2. */
static pk_status config_text(const char *fname, const pk_gguf *g, const char *arch, char **out,
                             size_t *len, char *err, size_t errlen)
{
    const pk_gguf_kv *k = pk_gguf_find(g, "pocketllm.config_json");
    if (k && k->type == GGUF_STRING) {
        uint64_t l = 0;
        for (int i = 0; i < 8; i++)
            l |= (uint64_t)k->val[i] << (8 * i);
        *out = malloc((size_t)l + 1);
        if (!*out)
            return PK_ERR_NOMEM;
        memcpy(*out, k->val + 8, (size_t)l);
        (*out)[l] = 0;
        *len = (size_t)l;
        return PK_OK;
    }
    if (strcmp(arch, "llama") != 0 && strcmp(arch, "qwen2") != 0) {
        pk_seterr(err, errlen,
                  "%s: key general.architecture: \"%s\" files from other writers are not "
                  "supported (llama and qwen2 are; %s needs a file written by pocketllm quantize)",
                  fname, arch, arch);
        return PK_ERR_UNSUPPORTED;
    }
    cJSON *o = build_config(g, arch);
    *out = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!*out)
        return PK_ERR_NOMEM;
    *len = strlen(*out);
    return PK_OK;
}

/* Puts llama.cpp's interleaved q/k rows (per head: row 2i + j) back in Hugging Face order (row
 * j * hd/2 + i), in place. */
static pk_status unpermute(unsigned char *base, const pk_gguf_tensor *t, long long heads,
                           const char *fname, char *err, size_t errlen)
{
    size_t rows = (size_t)t->ne[1], rb = pk_dtype_row_bytes(t->dtype, (size_t)t->ne[0]);
    if (heads <= 0 || rows % (size_t)heads != 0 || (rows / (size_t)heads) % 2 != 0) {
        pk_seterr(err, errlen, "%s: tensor %s: %zu rows do not split into %lld heads of even size",
                  fname, t->name, rows, heads);
        return PK_ERR_FORMAT;
    }
    size_t hd = rows / (size_t)heads, half = hd / 2;
    unsigned char *tmp = malloc(hd * rb);
    if (!tmp)
        return PK_ERR_NOMEM;
    for (long long h = 0; h < heads; h++) {
        unsigned char *p = base + t->off + (size_t)h * hd * rb;
        for (size_t i = 0; i < half; i++) {
            for (size_t j = 0; j < 2; j++)
                memcpy(tmp + (j * half + i) * rb, p + (2 * i + j) * rb, rb);
        }
        memcpy(p, tmp, hd * rb);
    }
    free(tmp);
    return PK_OK;
}

/* 1 if q/k rows need (or got, at load) reordering: a llama file not written by us. */
static int qk_reordered(const pk_gguf *g, const char *arch)
{
    char layout[16];
    return strcmp(arch, "llama") == 0 &&
           !(kv_str(g, "pocketllm.qk_layout", layout, sizeof layout) && strcmp(layout, "hf") == 0);
}

int pk_gguf_reordered(const unsigned char *buf, size_t len)
{
    pk_gguf g;
    char arch[32];
    if (len < 4 || memcmp(buf, "GGUF", 4) != 0 || pk_gguf_parse("", buf, len, &g, NULL, 0) != PK_OK)
        return 0;
    int r = kv_str(&g, "general.architecture", arch, sizeof arch) && qk_reordered(&g, arch);
    pk_gguf_release(&g);
    return r;
}

/* Llama files from llama.cpp's converter hold q/k rows interleaved for its RoPE; ours say
 * pocketllm.qk_layout = "hf". */
static pk_status fix_qk(const char *fname, unsigned char *buf, const pk_gguf *g, const char *arch,
                        char *err, size_t errlen)
{
    if (!qk_reordered(g, arch))
        return PK_OK;
    long long nh = 0, nkv = 0;
    kv_int(g, "llama.attention.head_count", &nh);
    if (!kv_int(g, "llama.attention.head_count_kv", &nkv))
        nkv = nh;
    for (size_t i = 0; i < g->n_t; i++) {
        const char *n = g->t[i].name, *dot = strrchr(n, '.');
        if (strncmp(n, "blk.", 4) != 0 || !dot || dot - n < 7)
            continue;
        int q = strncmp(dot - 7, ".attn_q", 7) == 0, k = strncmp(dot - 7, ".attn_k", 7) == 0;
        if (!q && !k)
            continue;
        if (g->t[i].ndim != 2) {
            /* a bias is permuted the same way: treat it as [rows, 1] */
            pk_gguf_tensor b = g->t[i];
            b.ne[1] = b.ne[0];
            b.ne[0] = 1;
            if (b.dtype != PK_DTYPE_F32 && b.dtype != PK_DTYPE_F16 && b.dtype != PK_DTYPE_BF16)
                continue;
            pk_status st = unpermute(buf, &b, q ? nh : nkv, fname, err, errlen);
            if (st != PK_OK)
                return st;
            continue;
        }
        pk_status st = unpermute(buf, &g->t[i], q ? nh : nkv, fname, err, errlen);
        if (st != PK_OK)
            return st;
    }
    return PK_OK;
}

/* The tensors under Hugging Face names, shapes reversed to PyTorch order. */
static pk_status hf_tensors(const char *fname, const pk_gguf *g, const char *arch,
                            pk_st_tensor **out, char *err, size_t errlen)
{
    pk_st_tensor *t = calloc(g->n_t ? g->n_t : 1, sizeof *t);
    if (!t)
        return PK_ERR_NOMEM;
    int mapped = strcmp(arch, "llama") == 0 || strcmp(arch, "qwen2") == 0;
    for (size_t i = 0; i < g->n_t; i++) {
        const pk_gguf_tensor *s = &g->t[i];
        if (!mapped && strncmp(s->name, "blk.", 4) == 0) {
            pk_seterr(err, errlen,
                      "%s: tensor %s: llama.cpp's %s layout is not supported (write the file "
                      "with pocketllm quantize)",
                      fname, s->name, arch);
            free(t);
            return PK_ERR_UNSUPPORTED;
        }
        if (!mapped || !map_name(s->name, 0, t[i].name, sizeof t[i].name))
            snprintf(t[i].name, sizeof t[i].name, "%s", s->name);
        t[i].dtype = (int)s->dtype;
        t[i].ndim = s->ndim;
        for (int d = 0; d < s->ndim; d++)
            t[i].shape[d] = (int64_t)s->ne[s->ndim - 1 - d];
        t[i].begin = s->off;
        t[i].end = s->off + s->nbytes;
    }
    *out = t;
    return PK_OK;
}

pk_status pk_gguf_model(const char *fname, unsigned char *buf, size_t len, char **config,
                        size_t *config_len, pk_st_tensor **t, size_t *n_t, char *err, size_t errlen)
{
    *config = NULL;
    *t = NULL;
    *n_t = 0;
    pk_gguf g;
    pk_status st = pk_gguf_parse(fname, buf, len, &g, err, errlen);
    if (st != PK_OK)
        return st;
    char arch[32];
    if (!kv_str(&g, "general.architecture", arch, sizeof arch)) {
        pk_seterr(err, errlen, "%s: key general.architecture: missing or not a short string",
                  fname);
        st = PK_ERR_FORMAT;
        goto out;
    }
    st = config_text(fname, &g, arch, config, config_len, err, errlen);
    if (st == PK_OK)
        st = fix_qk(fname, buf, &g, arch, err, errlen);
    if (st == PK_OK)
        st = hf_tensors(fname, &g, arch, t, err, errlen);
    if (st == PK_OK)
        *n_t = g.n_t;
out:
    if (st != PK_OK) {
        free(*config);
        *config = NULL;
    }
    pk_gguf_release(&g);
    return st;
}
