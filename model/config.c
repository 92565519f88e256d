/* config.c: config.json -> pk_cfg for the supported architectures (Hugging Face key names and
 * defaults). Shapes implied by the config are checked against the tensors in load.c. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "model_impl.h"

typedef struct ctx {
    const char *fname;
    const cJSON *root;
    char *err;
    size_t errlen;
    int bad;
} ctx;

/* Integer key: required (def < 0 is "required") or default; range [lo, hi]. */
static int get_int(ctx *c, const char *key, long long def, long long lo, long long hi)
{
    if (c->bad)
        return 0;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c->root, key);
    if (!v || cJSON_IsNull(v)) {
        if (def == LLONG_MIN) {
            pk_seterr(c->err, c->errlen, "%s: missing key \"%s\"", c->fname, key);
            c->bad = 1;
            return 0;
        }
        return (int)def;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) ||
        v->valuedouble < (double)lo || v->valuedouble > (double)hi) {
        pk_seterr(c->err, c->errlen, "%s: key \"%s\" must be an integer in [%lld, %lld]", c->fname,
                  key, lo, hi);
        c->bad = 1;
        return 0;
    }
    return (int)v->valuedouble;
}

static double get_num(ctx *c, const cJSON *obj, const char *key, double def, double lo, double hi)
{
    if (c->bad)
        return 0;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) {
        if (isnan(def)) {
            pk_seterr(c->err, c->errlen, "%s: missing key \"%s\"", c->fname, key);
            c->bad = 1;
            return 0;
        }
        return def;
    }
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= lo && v->valuedouble <= hi)) {
        pk_seterr(c->err, c->errlen, "%s: key \"%s\" must be a number in [%g, %g]", c->fname, key,
                  lo, hi);
        c->bad = 1;
        return 0;
    }
    return v->valuedouble;
}

static int get_bool(ctx *c, const char *key, int def)
{
    if (c->bad)
        return 0;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c->root, key);
    if (!v || cJSON_IsNull(v))
        return def;
    if (!cJSON_IsBool(v)) {
        pk_seterr(c->err, c->errlen, "%s: key \"%s\" must be true or false", c->fname, key);
        c->bad = 1;
        return 0;
    }
    return cJSON_IsTrue(v);
}

/* Optional token id: null/absent -> -1. */
static int get_tok(ctx *c, const char *key, int V)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c->root, key);
    if (v && cJSON_IsArray(v)) /* eos_token_id may be a list: take the first */
        v = cJSON_GetArrayItem(v, 0);
    if (!v || !cJSON_IsNumber(v))
        return -1;
    if (v->valuedouble < 0 || v->valuedouble >= (double)V ||
        v->valuedouble != floor(v->valuedouble))
        return -1; /* e.g. gpt2-tiny's bos 50256 with a 1000 vocab: no usable id */
    return (int)v->valuedouble;
}

static int get_act(ctx *c, const char *key, const char *def)
{
    if (c->bad)
        return 0;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c->root, key);
    const char *s = def;
    if (v && cJSON_IsString(v))
        s = v->valuestring;
    else if (v && !cJSON_IsNull(v)) {
        pk_seterr(c->err, c->errlen, "%s: key \"%s\" must be a string", c->fname, key);
        c->bad = 1;
        return 0;
    }
    if (strcmp(s, "silu") == 0 || strcmp(s, "swish") == 0)
        return ACT_SILU;
    if (strcmp(s, "relu") == 0)
        return ACT_RELU;
    if (strcmp(s, "gelu") == 0)
        return ACT_GELU;
    if (strcmp(s, "gelu_new") == 0 || strcmp(s, "gelu_pytorch_tanh") == 0 ||
        strcmp(s, "gelu_fast") == 0)
        return ACT_GELU_TANH;
    pk_seterr(c->err, c->errlen, "%s: key \"%s\": unsupported activation \"%s\"", c->fname, key, s);
    c->bad = 1;
    return 0;
}

static void parse_rope_scaling(ctx *c, pk_cfg *m)
{
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(c->root, "rope_scaling");
    if (!rs || cJSON_IsNull(rs))
        return;
    if (!cJSON_IsObject(rs)) {
        pk_seterr(c->err, c->errlen, "%s: key \"rope_scaling\" must be an object or null",
                  c->fname);
        c->bad = 1;
        return;
    }
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
    if (!t)
        t = cJSON_GetObjectItemCaseSensitive(rs, "type");
    if (!cJSON_IsString(t) || strcmp(t->valuestring, "llama3") != 0) {
        pk_seterr(c->err, c->errlen,
                  "%s: key \"rope_scaling.rope_type\": only \"llama3\" is supported", c->fname);
        c->bad = 1;
        return;
    }
    m->rope_llama3 = 1;
    m->rope_factor = get_num(c, rs, "factor", (double)NAN, 1e-3, 1e6);
    m->rope_low = get_num(c, rs, "low_freq_factor", (double)NAN, 1e-6, 1e6);
    m->rope_high = get_num(c, rs, "high_freq_factor", (double)NAN, 1e-6, 1e6);
    m->rope_orig_max = (int)get_num(c, rs, "original_max_position_embeddings", (double)NAN, 1, 1e8);
    if (!c->bad && m->rope_high <= m->rope_low) {
        pk_seterr(c->err, c->errlen,
                  "%s: key \"rope_scaling.high_freq_factor\" must exceed low_freq_factor",
                  c->fname);
        c->bad = 1;
    }
}

#define REQ LLONG_MIN
#define BIG 100000000LL

/* The four sizes llama, qwen2, opt and roberta name alike (gpt2 has its own names). */
static void parse_hf_dims(ctx *c, pk_cfg *m)
{
    m->V = get_int(c, "vocab_size", REQ, 1, BIG);
    m->H = get_int(c, "hidden_size", REQ, 1, BIG);
    m->L = get_int(c, "num_hidden_layers", REQ, 1, 10000);
    m->nh = get_int(c, "num_attention_heads", REQ, 1, 10000);
}

static void parse_llama(ctx *c, pk_cfg *m, int qwen)
{
    parse_hf_dims(c, m);
    m->nkv = get_int(c, "num_key_value_heads", m->nh, 1, 10000);
    m->hd = get_int(c, "head_dim", m->nh ? m->H / m->nh : 1, 1, 100000);
    m->inter = get_int(c, "intermediate_size", REQ, 1, BIG);
    m->max_pos = get_int(c, "max_position_embeddings", 2048, 1, BIG);
    m->eps = get_num(c, c->root, "rms_norm_eps", 1e-6, 0, 1);
    m->rope_theta = get_num(c, c->root, "rope_theta", 10000.0, 1e-6, 1e12);
    m->tie = get_bool(c, "tie_word_embeddings", qwen ? 0 : 0);
    m->act = get_act(c, "hidden_act", "silu");
    if (qwen) {
        m->qkv_bias = 1;
    } else {
        m->qkv_bias = get_bool(c, "attention_bias", 0);
        m->o_bias = m->qkv_bias;
        m->mlp_bias = get_bool(c, "mlp_bias", 0);
    }
    parse_rope_scaling(c, m);
    if (!c->bad && (m->nh % m->nkv != 0 || m->hd % 2 != 0)) {
        pk_seterr(c->err, c->errlen,
                  "%s: key \"num_key_value_heads\"/\"head_dim\": heads must divide evenly and "
                  "head_dim be even",
                  c->fname);
        c->bad = 1;
    }
}

static void parse_opt(ctx *c, pk_cfg *m)
{
    parse_hf_dims(c, m);
    m->inter = get_int(c, "ffn_dim", REQ, 1, BIG);
    m->max_pos = get_int(c, "max_position_embeddings", 2048, 1, BIG);
    m->n_pos_rows = m->max_pos + 2;
    m->proj = get_int(c, "word_embed_proj_dim", m->H, 1, BIG);
    m->pre_ln = get_bool(c, "do_layer_norm_before", 1);
    m->final_ln = m->pre_ln && !get_bool(c, "_remove_final_layer_norm", 0);
    m->ln_affine = get_bool(c, "layer_norm_elementwise_affine", 1);
    int bias = get_bool(c, "enable_bias", 1);
    m->qkv_bias = m->o_bias = m->mlp_bias = bias;
    m->act = get_act(c, "activation_function", "relu");
    m->tie = get_bool(c, "tie_word_embeddings", 1);
    m->eps = 1e-5;
}

static void parse_gpt2(ctx *c, pk_cfg *m)
{
    m->V = get_int(c, "vocab_size", REQ, 1, BIG);
    m->H = get_int(c, "n_embd", REQ, 1, BIG);
    m->L = get_int(c, "n_layer", REQ, 1, 10000);
    m->nh = get_int(c, "n_head", REQ, 1, 10000);
    m->inter = get_int(c, "n_inner", 4LL * m->H, 1, BIG);
    m->max_pos = get_int(c, "n_positions", 1024, 1, BIG);
    m->n_pos_rows = m->max_pos;
    m->eps = get_num(c, c->root, "layer_norm_epsilon", 1e-5, 0, 1);
    m->act = get_act(c, "activation_function", "gelu_new");
    m->tie = get_bool(c, "tie_word_embeddings", 1);
    m->attn_inv_layer = get_bool(c, "scale_attn_by_inverse_layer_idx", 0);
    if (!c->bad && !get_bool(c, "scale_attn_weights", 1)) {
        pk_seterr(c->err, c->errlen, "%s: key \"scale_attn_weights\": false is not supported",
                  c->fname);
        c->bad = 1;
    }
    m->qkv_bias = m->o_bias = m->mlp_bias = 1;
}

static void parse_roberta(ctx *c, pk_cfg *m)
{
    parse_hf_dims(c, m);
    m->inter = get_int(c, "intermediate_size", REQ, 1, BIG);
    m->n_pos_rows = get_int(c, "max_position_embeddings", 514, 3, BIG);
    m->type_vocab = get_int(c, "type_vocab_size", 2, 1, 1000);
    m->eps = get_num(c, c->root, "layer_norm_eps", 1e-12, 0, 1);
    m->act = get_act(c, "hidden_act", "gelu");
    m->pre_ln = 0; /* post-LN encoder */
    m->tie = 1;
    m->qkv_bias = m->o_bias = m->mlp_bias = 1;
    const cJSON *pet = cJSON_GetObjectItemCaseSensitive(c->root, "position_embedding_type");
    if (!c->bad && pet && cJSON_IsString(pet) && strcmp(pet->valuestring, "absolute") != 0) {
        pk_seterr(c->err, c->errlen, "%s: key \"position_embedding_type\": only \"absolute\"",
                  c->fname);
        c->bad = 1;
    }
}

/* m->arch from "model_type"; c->bad (and *st) when it is missing or not supported. */
static void parse_model_type(ctx *c, pk_cfg *m, pk_status *st)
{
    static const char *const names[] = {"llama", "qwen2", "opt", "gpt2", "roberta"};
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(c->root, "model_type");
    m->arch = -1;
    if (!cJSON_IsString(mt)) {
        pk_seterr(c->err, c->errlen, "%s: missing key \"model_type\"", c->fname);
        c->bad = 1;
        return;
    }
    for (int i = 0; i < ARCH__COUNT; i++) {
        if (strcmp(mt->valuestring, names[i]) == 0)
            m->arch = i;
    }
    if (m->arch < 0) {
        pk_seterr(c->err, c->errlen,
                  "%s: key \"model_type\": unknown model_type \"%s\" (supported: llama, qwen2, "
                  "opt, gpt2, roberta)",
                  c->fname, mt->valuestring);
        *st = PK_ERR_UNSUPPORTED;
        c->bad = 1;
    }
}

/* The architecture's own keys, over the defaults every architecture starts from. */
static void parse_arch(ctx *c, pk_cfg *m)
{
    m->pre_ln = 1;
    m->ln_affine = 1;
    m->final_ln = 1;
    m->type_vocab = 0;
    switch (m->arch) {
    case ARCH_LLAMA:
    case ARCH_QWEN2:
        parse_llama(c, m, m->arch == ARCH_QWEN2);
        break;
    case ARCH_OPT:
        parse_opt(c, m);
        break;
    case ARCH_GPT2:
        parse_gpt2(c, m);
        break;
    default:
        parse_roberta(c, m);
        break;
    }
}

/* What follows from the sizes (heads without grouped-query attention, the projection width,
 * roberta's usable positions) and the special tokens; c->bad on an inconsistent config. */
static void derive(ctx *c, pk_cfg *m)
{
    if (m->arch != ARCH_LLAMA && m->arch != ARCH_QWEN2) {
        if (m->H % m->nh != 0) {
            pk_seterr(c->err, c->errlen,
                      "%s: key \"num_attention_heads\" must divide the hidden size", c->fname);
            c->bad = 1;
            return;
        }
        m->nkv = m->nh;
        m->hd = m->H / m->nh;
    }
    if (m->proj == 0)
        m->proj = m->H;
    m->bos = get_tok(c, "bos_token_id", m->V);
    m->eos = get_tok(c, "eos_token_id", m->V);
    m->pad = get_tok(c, "pad_token_id", m->V);
    if (c->bad || m->arch != ARCH_ROBERTA)
        return;
    if (m->pad < 0) {
        pk_seterr(c->err, c->errlen, "%s: key \"pad_token_id\" is required for roberta", c->fname);
        c->bad = 1;
        return;
    }
    m->max_pos = m->n_pos_rows - m->pad - 1;
    if (m->max_pos < 1) {
        pk_seterr(c->err, c->errlen,
                  "%s: key \"max_position_embeddings\" too small for pad_token_id", c->fname);
        c->bad = 1;
    }
}

pk_status pk_cfg_parse(const char *fname, const char *json, size_t len, pk_cfg *m, char *err,
                       size_t errlen)
{
    memset(m, 0, sizeof *m);
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root || !cJSON_IsObject(root)) {
        pk_seterr(err, errlen, "%s: invalid JSON (not a JSON object)", fname);
        cJSON_Delete(root);
        return PK_ERR_FORMAT;
    }
    ctx c = {fname, root, err, errlen, 0};
    pk_status st = PK_ERR_FORMAT;
    parse_model_type(&c, m, &st);
    if (!c.bad)
        parse_arch(&c, m);
    if (!c.bad)
        derive(&c, m);
    cJSON_Delete(root);
    return c.bad ? st : PK_OK;
}

pk_status pk_config_check(const char *fname, const char *json, size_t len, char *err, size_t errlen)
{
    pk_cfg c;
    return pk_cfg_parse(fname, json, len, &c, err, errlen);
}
