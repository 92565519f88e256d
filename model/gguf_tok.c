/* gguf_tok.c: a SentencePiece tokenizer in GGUF metadata (DESIGN 5). Writing: the pieces,
 * scores and types of a tokenizer.model (protobuf, read here) become llama.cpp's "llama"
 * vocabulary keys (tokenizer.ggml.*). Reading: those keys become a tokenizer.model again, with
 * the same pieces in the same order, so tokenizer/ gives the same ids as from the original. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "gguf_impl.h"

#define MAX_SP (64u << 20)

/* ---- protobuf, the little of it SentencePiece's ModelProto needs ---- */

typedef struct pbr {
    const unsigned char *p, *end;
} pbr;

static int pb_varint(pbr *b, uint64_t *v)
{
    uint64_t r = 0;
    for (int sh = 0; sh < 64 && b->p < b->end; sh += 7) {
        unsigned char c = *b->p++;
        r |= (uint64_t)(c & 0x7f) << sh;
        if (!(c & 0x80)) {
            *v = r;
            return 1;
        }
    }
    return 0;
}

/* One field: number, wire type, varint / fixed32 value or bytes. 0 on malformed input. */
static int pb_field(pbr *b, uint32_t *num, int *wire, uint64_t *v, const unsigned char **d,
                    size_t *len)
{
    uint64_t key;
    if (!pb_varint(b, &key))
        return 0;
    *num = (uint32_t)(key >> 3);
    *wire = (int)(key & 7);
    if (*wire == 0)
        return pb_varint(b, v);
    if (*wire == 5 || *wire == 1) {
        size_t w = *wire == 5 ? 4 : 8;
        if ((size_t)(b->end - b->p) < w)
            return 0;
        *v = 0;
        for (size_t i = 0; i < w; i++)
            *v |= (uint64_t)b->p[i] << (8 * i);
        b->p += w;
        return 1;
    }
    if (*wire != 2 || !pb_varint(b, v) || *v > (uint64_t)(b->end - b->p))
        return 0;
    *d = b->p;
    *len = (size_t)*v;
    b->p += *len;
    return 1;
}

static uint64_t le8(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* 1 if entry k is the string v. */
static int str_is(const pk_gguf_kv *k, const char *v)
{
    size_t n = strlen(v);
    return k && k->type == GGUF_STRING && le8(k->val) == n && memcmp(k->val + 8, v, n) == 0;
}

/* ---- tokenizer.model -> tokenizer.ggml.* ---- */

typedef struct sp_info {
    int64_t unk, pad;
    int dummy_prefix, remove_ws;
} sp_info;

static void sp_specs(const unsigned char *d, size_t n, int trainer, sp_info *si)
{
    pbr b = {d, d + n};
    uint32_t num;
    int wire;
    uint64_t v = 0;
    const unsigned char *s;
    size_t l;
    while (b.p < b.end && pb_field(&b, &num, &wire, &v, &s, &l)) {
        int64_t iv = (int64_t)(int32_t)(uint32_t)v;
        if (wire != 0)
            continue;
        if (trainer && num == 40)
            si->unk = iv;
        else if (trainer && num == 43)
            si->pad = iv;
        else if (!trainer && num == 3)
            si->dummy_prefix = v != 0;
        else if (!trainer && num == 4)
            si->remove_ws = v != 0;
    }
}

/* One SentencePiece message: its text (ps [pl]), score bits and type. 0 if malformed. */
static int sp_piece(const unsigned char *d, size_t n, const unsigned char **ps, size_t *pl,
                    uint32_t *score, uint32_t *type)
{
    pbr pc = {d, d + n};
    uint32_t pn;
    int pw, ok = 1;
    uint64_t pv;
    const unsigned char *pd;
    size_t plen;
    while (ok && pc.p < pc.end) {
        ok = pb_field(&pc, &pn, &pw, &pv, &pd, &plen);
        if (ok && pn == 1 && pw == 2) {
            *ps = pd;
            *pl = plen;
        } else if (ok && pn == 2 && pw == 5) {
            *score = (uint32_t)pv;
        } else if (ok && pn == 3 && pw == 0) {
            *type = (uint32_t)pv;
        }
    }
    return ok;
}

/* Appends the three arrays (tokens, scores, token_type) and the scalar keys. */
static pk_status sp_to_kv(const unsigned char *d, size_t n, pk_gguf_buf *kv, size_t *count,
                          const char *path, char *err, size_t errlen)
{
    pk_gguf_buf tok = {0}, sc = {0}, ty = {0};
    uint64_t np = 0;
    sp_info si = {0, -1, 1, 1};
    pbr b = {d, d + n};
    uint32_t num;
    int wire;
    uint64_t v;
    const unsigned char *s = NULL;
    size_t l = 0;
    int ok = 1;
    while (ok && b.p < b.end) {
        ok = pb_field(&b, &num, &wire, &v, &s, &l);
        if (!ok || wire != 2)
            continue;
        if (num == 2 || num == 3) {
            sp_specs(s, l, num == 2, &si);
            continue;
        }
        if (num != 1)
            continue;
        const unsigned char *ps = NULL;
        size_t pl = 0;
        uint32_t score = 0, type = 1;
        ok = sp_piece(s, l, &ps, &pl, &score, &type);
        ok = ok && ps != NULL;
        pk_gguf_put_str(&tok, ps, pl);
        pk_gguf_put_le(&sc, score, 4);
        pk_gguf_put_le(&ty, type, 4); /* SentencePiece's piece types are llama.cpp's token types */
        np++;
    }
    pk_status st = PK_OK;
    if (!ok || np == 0) {
        pk_seterr(err, errlen, "%s: malformed SentencePiece model", path);
        st = PK_ERR_FORMAT;
        goto out;
    }
    pk_gguf_put_key(kv, "tokenizer.ggml.model", GGUF_STRING);
    pk_gguf_put_str(kv, "llama", 5);
    static const char *const arr[] = {"tokenizer.ggml.tokens", "tokenizer.ggml.scores",
                                      "tokenizer.ggml.token_type"};
    const pk_gguf_buf *data[] = {&tok, &sc, &ty};
    static const uint32_t at[] = {GGUF_STRING, GGUF_F32, GGUF_I32};
    for (int i = 0; i < 3; i++) {
        pk_gguf_put_key(kv, arr[i], GGUF_ARRAY);
        pk_gguf_put_le(kv, at[i], 4);
        pk_gguf_put_le(kv, np, 8);
        pk_gguf_put(kv, data[i]->p, data[i]->n);
    }
    pk_gguf_put_key(kv, "tokenizer.ggml.unknown_token_id", GGUF_U32);
    pk_gguf_put_le(kv, (uint64_t)(si.unk < 0 ? 0 : si.unk), 4);
    pk_gguf_put_key(kv, "tokenizer.ggml.add_space_prefix", GGUF_BOOL);
    pk_gguf_put_le(kv, (uint64_t)si.dummy_prefix, 1);
    pk_gguf_put_key(kv, "tokenizer.ggml.remove_extra_whitespaces", GGUF_BOOL);
    pk_gguf_put_le(kv, (uint64_t)si.remove_ws, 1);
    *count += 7;
    if (si.pad >= 0) {
        pk_gguf_put_key(kv, "tokenizer.ggml.padding_token_id", GGUF_U32);
        pk_gguf_put_le(kv, (uint64_t)si.pad, 4);
        *count += 1;
    }
    if (tok.bad || sc.bad || ty.bad || kv->bad)
        st = PK_ERR_NOMEM;
out:
    free(tok.p);
    free(sc.p);
    free(ty.p);
    return st;
}

pk_status pk_gguf_tok_from_sp(const char *dir, unsigned char **mem, size_t *n, size_t *count,
                              char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.model", dir);
    FILE *f = fopen(path, "rb");
    if (!f)
        return PK_OK; /* no SentencePiece tokenizer: nothing to carry */
    long size = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    rewind(f);
    unsigned char *d = size >= 0 && size <= (long)MAX_SP ? malloc((size_t)size + 1) : NULL;
    size_t len = d ? fread(d, 1, (size_t)size, f) : 0;
    int rerr = ferror(f) || len != (size_t)size;
    fclose(f);
    if (!d)
        return PK_ERR_NOMEM;
    pk_status st = PK_ERR_IO;
    if (rerr) {
        pk_seterr(err, errlen, "%s: read error", path);
        goto out;
    }
    pk_gguf_buf kv = {.p = *mem, .n = *n, .cap = *n};
    st = sp_to_kv(d, len, &kv, count, path, err, errlen);
    *mem = kv.p;
    *n = kv.n;
out:
    free(d);
    return st;
}

/* ---- tokenizer.ggml.* -> tokenizer.model ---- */

static void pb_put_varint(pk_gguf_buf *b, uint64_t v)
{
    do {
        unsigned char c = (unsigned char)(v & 0x7f);
        v >>= 7;
        if (v)
            c |= 0x80;
        pk_gguf_put(b, &c, 1);
    } while (v);
}

static void pb_put_bytes(pk_gguf_buf *b, uint32_t num, const void *d, size_t n)
{
    pb_put_varint(b, (uint64_t)num << 3 | 2);
    pb_put_varint(b, n);
    pk_gguf_put(b, d, n);
}

static void pb_put_int(pk_gguf_buf *b, uint32_t num, int64_t v)
{
    pb_put_varint(b, (uint64_t)num << 3);
    pb_put_varint(b, (uint64_t)v);
}

static int64_t kv_u(const pk_gguf *g, const char *key, int64_t def)
{
    const pk_gguf_kv *k = pk_gguf_find(g, key);
    if (!k)
        return def;
    if (k->type == GGUF_U32 || k->type == GGUF_I32)
        return (int64_t)(int32_t)(k->val[0] | k->val[1] << 8 | k->val[2] << 16 |
                                  (uint32_t)k->val[3] << 24);
    if (k->type == GGUF_BOOL || k->type == GGUF_U8)
        return k->val[0];
    return def;
}

/* The pieces of a "llama" vocabulary as ModelProto field-1 messages. 0 if the arrays are not
 * three of one length with the right element types. */
static int sp_pieces(const pk_gguf *g, pk_gguf_buf *out, int *has_byte)
{
    *has_byte = 0;
    const pk_gguf_kv *t = pk_gguf_find(g, "tokenizer.ggml.tokens"),
                     *s = pk_gguf_find(g, "tokenizer.ggml.scores"),
                     *y = pk_gguf_find(g, "tokenizer.ggml.token_type");
    if (!t || t->type != GGUF_ARRAY || t->atype != GGUF_STRING ||
        (s && (s->type != GGUF_ARRAY || s->atype != GGUF_F32 || s->n != t->n)) ||
        (y && (y->type != GGUF_ARRAY || y->atype != GGUF_I32 || y->n != t->n)))
        return 0;
    const unsigned char *p = t->val; /* strings were bounds-checked by the parser */
    pk_gguf_buf pc = {0};
    for (uint64_t i = 0; i < t->n; i++) {
        uint64_t l = 0;
        for (int k = 0; k < 8; k++)
            l |= (uint64_t)p[k] << (8 * k);
        pc.n = 0;
        pb_put_bytes(&pc, 1, p + 8, (size_t)l);
        pb_put_varint(&pc, 2u << 3 | 5);
        pk_gguf_put(&pc, s ? s->val + 4 * i : (const unsigned char *)"\0\0\0\0", 4);
        int64_t type = y ? (int64_t)y->val[4 * i] : 1;
        *has_byte |= type == 6;
        pb_put_int(&pc, 3, type);
        pb_put_bytes(out, 1, pc.p, pc.n);
        p += 8 + l;
    }
    free(pc.p);
    return !pc.bad;
}

static pk_status write_file(const char *dir, const char *name, const void *d, size_t n, char *err,
                            size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = pk_fopen_private(path, "wb");
    int ok = f && fwrite(d, 1, n, f) == n;
    if (f && fclose(f) != 0)
        ok = 0;
    if (!ok) {
        pk_seterr(err, errlen, "%s: write failed: %s", path, strerror(errno));
        return PK_ERR_IO;
    }
    return PK_OK;
}

pk_status pk_gguf_tok_write_sp(const pk_gguf *g, const char *out_dir, int *written, char *err,
                               size_t errlen)
{
    *written = 0;
    const pk_gguf_kv *mk = pk_gguf_find(g, "tokenizer.ggml.model");
    /* a string value is its u64 length, then the bytes (checked by the parser) */
    if (!str_is(mk, "llama"))
        return PK_OK;
    pk_gguf_buf b = {0}, tr = {0}, nm = {0};
    int has_byte;
    if (!sp_pieces(g, &b, &has_byte)) {
        free(b.p);
        pk_seterr(err, errlen,
                  "tokenizer.ggml.tokens / scores / token_type: not arrays of one "
                  "length (string, f32, i32)");
        return PK_ERR_FORMAT;
    }
    pb_put_int(&tr, 3, 2);         /* BPE: merges follow the scores */
    pb_put_int(&tr, 35, has_byte); /* byte fallback wherever <0xXX> pieces exist */
    pb_put_int(&tr, 40, kv_u(g, "tokenizer.ggml.unknown_token_id", 0));
    pb_put_int(&tr, 41, kv_u(g, "tokenizer.ggml.bos_token_id", -1));
    pb_put_int(&tr, 42, kv_u(g, "tokenizer.ggml.eos_token_id", -1));
    pb_put_int(&tr, 43, kv_u(g, "tokenizer.ggml.padding_token_id", -1));
    pb_put_bytes(&nm, 1, "identity", 8);
    pb_put_int(&nm, 3, kv_u(g, "tokenizer.ggml.add_space_prefix", 1));
    pb_put_int(&nm, 4, kv_u(g, "tokenizer.ggml.remove_extra_whitespaces", 1));
    pb_put_int(&nm, 5, 1);
    pb_put_bytes(&b, 2, tr.p, tr.n);
    pb_put_bytes(&b, 3, nm.p, nm.n);
    pk_status st = b.bad || tr.bad || nm.bad ? PK_ERR_NOMEM : PK_OK;
    if (st == PK_OK)
        st = write_file(out_dir, "tokenizer.model", b.p, b.n, err, errlen);
    char cfg[160];
    int cl = snprintf(cfg, sizeof cfg, "{\"add_bos_token\": %s, \"add_eos_token\": %s}\n",
                      kv_u(g, "tokenizer.ggml.add_bos_token", 1) ? "true" : "false",
                      kv_u(g, "tokenizer.ggml.add_eos_token", 0) ? "true" : "false");
    if (st == PK_OK)
        st = write_file(out_dir, "tokenizer_config.json", cfg, (size_t)cl, err, errlen);
    *written = st == PK_OK;
    free(b.p);
    free(tr.p);
    free(nm.p);
    return st;
}

/* ---- byte-level BPE: tokenizer.json <-> llama.cpp's "gpt2" vocabulary ---- */

/* llama.cpp's names of the two regex pre-tokenizers it shares with Hugging Face files. */
static const char *const pre_llama3 =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char *const pre_qwen2 =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* The pre-tokenizer's name for llama.cpp: a Split regex it knows, else plain GPT-2. */
static const char *pre_name(const cJSON *pre)
{
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(pre, "pretokenizers");
    for (const cJSON *p = list ? list->child : NULL; p; p = p->next) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
        const cJSON *rx = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
        if (cJSON_IsString(rx) && strcmp(rx->valuestring, pre_llama3) == 0)
            return "llama-bpe";
        if (cJSON_IsString(rx) && strcmp(rx->valuestring, pre_qwen2) == 0)
            return "qwen2";
    }
    return "gpt-2";
}

/* A JSON value (NULL / null: nothing) as a string entry. */
static void put_json_kv(pk_gguf_buf *kv, const char *key, const cJSON *v, size_t *count)
{
    char *t = v && !cJSON_IsNull(v) ? cJSON_PrintUnformatted(v) : NULL;
    if (!t)
        return;
    pk_gguf_put_key(kv, key, GGUF_STRING);
    pk_gguf_put_str(kv, t, strlen(t));
    (*count)++;
    free(t);
}

/* tokens [n] by id (holes "[PAD<id>]", type 5 unused), token_type (added tokens: 3 special, 4
 * user-defined). */
static pk_status bpe_tokens(const cJSON *vocab, const cJSON *added, pk_gguf_buf *kv)
{
    int64_t n = 0;
    for (const cJSON *v = vocab->child; v; v = v->next)
        n = cJSON_IsNumber(v) && v->valuedouble >= n ? (int64_t)v->valuedouble + 1 : n;
    for (const cJSON *a = added ? added->child : NULL; a; a = a->next) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "id");
        n = cJSON_IsNumber(id) && id->valuedouble >= n ? (int64_t)id->valuedouble + 1 : n;
    }
    if (n <= 0 || n > (1 << 24))
        return PK_ERR_FORMAT;
    const char **piece = calloc((size_t)n, sizeof *piece);
    int32_t *type = calloc((size_t)n, sizeof *type);
    if (!piece || !type) {
        free(piece);
        free(type);
        return PK_ERR_NOMEM;
    }
    for (const cJSON *v = vocab->child; v; v = v->next) {
        if (cJSON_IsNumber(v) && v->valuedouble >= 0) {
            piece[(int64_t)v->valuedouble] = v->string;
            type[(int64_t)v->valuedouble] = 1;
        }
    }
    for (const cJSON *a = added ? added->child : NULL; a; a = a->next) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "id"),
                    *c = cJSON_GetObjectItemCaseSensitive(a, "content");
        if (cJSON_IsNumber(id) && id->valuedouble >= 0 && cJSON_IsString(c)) {
            piece[(int64_t)id->valuedouble] = c->valuestring;
            type[(int64_t)id->valuedouble] =
                cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "special")) ? 3 : 4;
        }
    }
    pk_gguf_put_key(kv, "tokenizer.ggml.tokens", GGUF_ARRAY);
    pk_gguf_put_le(kv, GGUF_STRING, 4);
    pk_gguf_put_le(kv, (uint64_t)n, 8);
    char hole[32];
    for (int64_t i = 0; i < n; i++) {
        snprintf(hole, sizeof hole, "[PAD%lld]", (long long)i);
        pk_gguf_put_str(kv, piece[i] ? piece[i] : hole, strlen(piece[i] ? piece[i] : hole));
    }
    pk_gguf_put_key(kv, "tokenizer.ggml.token_type", GGUF_ARRAY);
    pk_gguf_put_le(kv, GGUF_I32, 4);
    pk_gguf_put_le(kv, (uint64_t)n, 8);
    for (int64_t i = 0; i < n; i++)
        pk_gguf_put_le(kv, (uint64_t)(type[i] ? type[i] : 5), 4);
    free(piece);
    free(type);
    return PK_OK;
}

static void bpe_merges(const cJSON *merges, pk_gguf_buf *kv)
{
    pk_gguf_put_key(kv, "tokenizer.ggml.merges", GGUF_ARRAY);
    pk_gguf_put_le(kv, GGUF_STRING, 4);
    pk_gguf_put_le(kv, (uint64_t)cJSON_GetArraySize(merges), 8);
    for (const cJSON *m = merges->child; m; m = m->next) {
        char pair[1024] = "";
        if (cJSON_IsString(m))
            snprintf(pair, sizeof pair, "%s", m->valuestring);
        else if (cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
                 cJSON_IsString(m->child->next))
            snprintf(pair, sizeof pair, "%s %s", m->child->valuestring,
                     m->child->next->valuestring);
        pk_gguf_put_str(kv, pair, strlen(pair));
    }
}

/* tokenizer.json (a byte-level BPE model) as the "gpt2" vocabulary, plus its pre-tokenizer,
 * normalizer and post-processor as JSON text (pocketllm.tokenizer.*) so ours rebuilds it
 * exactly; other readers use tokenizer.ggml.pre. */
static pk_status bpe_to_kv(const char *txt, size_t len, pk_gguf_buf *kv, size_t *count,
                           const char *path, char *err, size_t errlen)
{
    cJSON *root = cJSON_ParseWithLength(txt, len);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    pk_status st = PK_OK;
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "BPE") != 0 || !cJSON_IsObject(vocab) ||
        !cJSON_IsArray(merges) || !strstr(txt, "\"ByteLevel\""))
        goto out; /* not byte-level BPE: the files beside the GGUF carry it */
    pk_gguf_put_key(kv, "tokenizer.ggml.model", GGUF_STRING);
    pk_gguf_put_str(kv, "gpt2", 4);
    pk_gguf_put_key(kv, "tokenizer.ggml.pre", GGUF_STRING);
    pk_gguf_put_str(kv, pre_name(pre), strlen(pre_name(pre)));
    st = bpe_tokens(vocab, cJSON_GetObjectItemCaseSensitive(root, "added_tokens"), kv);
    if (st != PK_OK) {
        pk_seterr(err, errlen, "%s: model.vocab / added_tokens: bad ids", path);
        goto out;
    }
    bpe_merges(merges, kv);
    *count += 5;
    put_json_kv(kv, "pocketllm.tokenizer.pre_tokenizer", pre, count);
    put_json_kv(kv, "pocketllm.tokenizer.normalizer",
                cJSON_GetObjectItemCaseSensitive(root, "normalizer"), count);
    put_json_kv(kv, "pocketllm.tokenizer.post_processor",
                cJSON_GetObjectItemCaseSensitive(root, "post_processor"), count);
    pk_gguf_put_key(kv, "pocketllm.tokenizer.ignore_merges", GGUF_BOOL);
    pk_gguf_put_le(kv, cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "ignore_merges")), 1);
    *count += 1;
    st = kv->bad ? PK_ERR_NOMEM : PK_OK;
out:
    cJSON_Delete(root);
    return st;
}

pk_status pk_gguf_tok_from_json(const char *dir, unsigned char **mem, size_t *n, size_t *count,
                                char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f)
        return PK_OK;
    long size = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    rewind(f);
    char *d = size >= 0 && size <= (long)MAX_SP ? malloc((size_t)size + 1) : NULL;
    size_t len = d ? fread(d, 1, (size_t)size, f) : 0;
    int rerr = ferror(f) || len != (size_t)size;
    fclose(f);
    if (!d)
        return PK_ERR_NOMEM;
    d[len] = 0;
    pk_status st = PK_ERR_IO;
    pk_gguf_buf kv = {.p = *mem, .n = *n, .cap = *n};
    if (rerr)
        pk_seterr(err, errlen, "%s: read error", path);
    else
        st = bpe_to_kv(d, len, &kv, count, path, err, errlen);
    *mem = kv.p;
    *n = kv.n;
    free(d);
    return st;
}

/* A string entry's value as parsed JSON, or NULL. */
static cJSON *json_kv(const pk_gguf *g, const char *key)
{
    const pk_gguf_kv *k = pk_gguf_find(g, key);
    if (!k || k->type != GGUF_STRING)
        return NULL;
    uint64_t l = 0;
    for (int i = 0; i < 8; i++)
        l |= (uint64_t)k->val[i] << (8 * i);
    return cJSON_ParseWithLength((const char *)k->val + 8, (size_t)l);
}

/* The pre-tokenizer llama.cpp's name stands for (GPT-2's ByteLevel for unknown names). */
static cJSON *pre_by_name(const pk_gguf *g)
{
    char t[512];
    const pk_gguf_kv *k = pk_gguf_find(g, "tokenizer.ggml.pre");
    const char *rx = NULL;
    if (str_is(k, "llama-bpe"))
        rx = pre_llama3;
    if (str_is(k, "qwen2"))
        rx = pre_qwen2;
    if (!rx)
        return cJSON_Parse("{\"type\":\"ByteLevel\",\"add_prefix_space\":false,"
                           "\"use_regex\":true}");
    cJSON *seq = cJSON_Parse("{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\","
                             "\"pattern\":{\"Regex\":\"\"},\"behavior\":\"Isolated\","
                             "\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":"
                             "false,\"use_regex\":false}]}");
    cJSON *split = seq ? cJSON_GetArrayItem(cJSON_GetObjectItem(seq, "pretokenizers"), 0) : NULL;
    cJSON *pat = split ? cJSON_GetObjectItem(split, "pattern") : NULL;
    snprintf(t, sizeof t, "%s", rx);
    if (pat)
        cJSON_ReplaceItemInObject(pat, "Regex", cJSON_CreateString(t));
    return seq;
}

/* model.vocab, model.merges and added_tokens from the "gpt2" arrays. 0 if malformed. */
static int bpe_model(const pk_gguf *g, cJSON *vocab, cJSON *merges, cJSON *added)
{
    const pk_gguf_kv *t = pk_gguf_find(g, "tokenizer.ggml.tokens"),
                     *y = pk_gguf_find(g, "tokenizer.ggml.token_type"),
                     *mg = pk_gguf_find(g, "tokenizer.ggml.merges");
    if (!t || t->type != GGUF_ARRAY || t->atype != GGUF_STRING || !mg || mg->type != GGUF_ARRAY ||
        mg->atype != GGUF_STRING ||
        (y && (y->type != GGUF_ARRAY || y->atype != GGUF_I32 || y->n != t->n)))
        return 0;
    const unsigned char *p = t->val;
    char s[1024];
    for (uint64_t i = 0; i < t->n; i++) {
        uint64_t l = le8(p);
        int type = y ? (int)y->val[4 * i] : 1;
        snprintf(s, sizeof s, "%.*s", (int)(l < sizeof s - 1 ? l : sizeof s - 1), p + 8);
        p += 8 + l;
        if (type == 5)
            continue; /* a hole */
        cJSON_AddItemToObject(vocab, s, cJSON_CreateNumber((double)i));
        if (type == 3 || type == 4) {
            cJSON *a = cJSON_CreateObject();
            cJSON_AddNumberToObject(a, "id", (double)i);
            cJSON_AddStringToObject(a, "content", s);
            cJSON_AddBoolToObject(a, "special", type == 3);
            cJSON_AddItemToArray(added, a);
        }
    }
    p = mg->val;
    for (uint64_t i = 0; i < mg->n; i++) {
        uint64_t l = le8(p);
        snprintf(s, sizeof s, "%.*s", (int)(l < sizeof s - 1 ? l : sizeof s - 1), p + 8);
        p += 8 + l;
        cJSON_AddItemToArray(merges, cJSON_CreateString(s));
    }
    return 1;
}

/* tokenizer.json from a "gpt2" vocabulary (our own pre-tokenizer / normalizer / post-processor
 * entries when present, else llama.cpp's pre-tokenizer name). */
static cJSON *bpe_json(const pk_gguf *g)
{
    cJSON *root = cJSON_CreateObject(), *model = cJSON_CreateObject();
    cJSON *vocab = cJSON_CreateObject(), *merges = cJSON_CreateArray(),
          *added = cJSON_CreateArray();
    if (!root || !model || !vocab || !merges || !added || !bpe_model(g, vocab, merges, added)) {
        cJSON_Delete(root);
        cJSON_Delete(model);
        cJSON_Delete(vocab);
        cJSON_Delete(merges);
        cJSON_Delete(added);
        return NULL;
    }
    cJSON *pre = json_kv(g, "pocketllm.tokenizer.pre_tokenizer");
    cJSON *norm = json_kv(g, "pocketllm.tokenizer.normalizer");
    const pk_gguf_kv *pk = pk_gguf_find(g, "tokenizer.ggml.pre");
    int qwen = str_is(pk, "qwen2");
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddItemToObject(root, "added_tokens", added);
    cJSON_AddItemToObject(root, "normalizer",
                          norm   ? norm
                          : qwen ? cJSON_Parse("{\"type\":\"NFC\"}")
                                 : cJSON_CreateNull());
    cJSON_AddItemToObject(root, "pre_tokenizer", pre ? pre : pre_by_name(g));
    cJSON *post = json_kv(g, "pocketllm.tokenizer.post_processor");
    cJSON_AddItemToObject(root, "post_processor", post ? post : cJSON_CreateNull());
    cJSON_AddItemToObject(root, "decoder", cJSON_Parse("{\"type\":\"ByteLevel\"}"));
    cJSON_AddStringToObject(model, "type", "BPE");
    const pk_gguf_kv *im = pk_gguf_find(g, "pocketllm.tokenizer.ignore_merges");
    cJSON_AddBoolToObject(model, "ignore_merges",
                          im ? im->type == GGUF_BOOL && im->val[0] : str_is(pk, "llama-bpe"));
    cJSON_AddItemToObject(model, "vocab", vocab);
    cJSON_AddItemToObject(model, "merges", merges);
    cJSON_AddItemToObject(root, "model", model);
    return root;
}

pk_status pk_gguf_tok_write_bpe(const pk_gguf *g, const char *out_dir, int *written, char *err,
                                size_t errlen)
{
    *written = 0;
    const pk_gguf_kv *mk = pk_gguf_find(g, "tokenizer.ggml.model");
    if (!str_is(mk, "gpt2"))
        return PK_OK;
    cJSON *j = bpe_json(g);
    char *txt = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (!txt) {
        pk_seterr(err, errlen, "tokenizer.ggml.tokens / token_type / merges: malformed");
        return PK_ERR_FORMAT;
    }
    pk_status st = write_file(out_dir, "tokenizer.json", txt, strlen(txt), err, errlen);
    free(txt);
    *written = st == PK_OK;
    return st;
}
