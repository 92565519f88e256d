/* gguf.c: the GGUF reader (DESIGN 5): header, metadata (every value type, arrays included),
 * tensor infos, alignment and data offsets, each count, length, offset, size and type checked
 * against the file before use; then the file as a model (config from the metadata, llama.cpp
 * tensor names mapped to Hugging Face ones). Mapping the file and binding tensors is load.c's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf_impl.h"

#define MAX_NAME 255
#define MAX_KEY  65535

/* ggml type ids: the ones we read, and the names of the others for the refusal message. */
static const struct {
    int id;
    const char *name;
    int dt; /* pk_dtype, -1 if unsupported */
} ggml_types[] = {
    {0, "F32", PK_DTYPE_F32},
    {1, "F16", PK_DTYPE_F16},
    {2, "Q4_0", PK_DTYPE_Q4_0},
    {3, "Q4_1", -1},
    {6, "Q5_0", -1},
    {7, "Q5_1", -1},
    {8, "Q8_0", PK_DTYPE_Q8_0},
    {9, "Q8_1", -1},
    {10, "Q2_K", -1},
    {11, "Q3_K", -1},
    {12, "Q4_K", PK_DTYPE_Q4_K},
    {13, "Q5_K", PK_DTYPE_Q5_K},
    {14, "Q6_K", PK_DTYPE_Q6_K},
    {15, "Q8_K", -1},
    {16, "IQ2_XXS", -1},
    {17, "IQ2_XS", -1},
    {18, "IQ3_XXS", -1},
    {19, "IQ1_S", -1},
    {20, "IQ4_NL", -1},
    {21, "IQ3_S", -1},
    {22, "IQ2_S", -1},
    {23, "IQ4_XS", -1},
    {24, "I8", -1},
    {25, "I16", -1},
    {26, "I32", -1},
    {27, "I64", -1},
    {28, "F64", -1},
    {29, "IQ1_M", -1},
    {30, "BF16", PK_DTYPE_BF16},
    {34, "TQ1_0", -1},
    {35, "TQ2_0", -1},
};

int pk_gguf_type_of(pk_dtype dt)
{
    for (size_t i = 0; i < sizeof ggml_types / sizeof ggml_types[0]; i++) {
        if (ggml_types[i].dt == (int)dt)
            return ggml_types[i].id;
    }
    return -1;
}

/* A bounds-checked cursor over the file. */
typedef struct cur {
    const unsigned char *p;
    size_t len, off;
    const char *fname;
    char *err;
    size_t errlen;
} cur;

static int need(cur *c, uint64_t n, const char *what)
{
    if (n > c->len - c->off) {
        pk_seterr(c->err, c->errlen, "%s: truncated at byte %zu reading %s", c->fname, c->off,
                  what);
        return 0;
    }
    return 1;
}

static uint64_t le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static int rd_u32(cur *c, uint32_t *v, const char *what)
{
    if (!need(c, 4, what))
        return 0;
    *v = (uint32_t)le(c->p + c->off, 4);
    c->off += 4;
    return 1;
}

static int rd_u64(cur *c, uint64_t *v, const char *what)
{
    if (!need(c, 8, what))
        return 0;
    *v = le(c->p + c->off, 8);
    c->off += 8;
    return 1;
}

static int rd_str(cur *c, const char **s, uint64_t *n, uint64_t max, const char *what)
{
    if (!rd_u64(c, n, what))
        return 0;
    if (*n > max) {
        pk_seterr(c->err, c->errlen, "%s: %s: string length %llu exceeds %llu", c->fname, what,
                  (unsigned long long)*n, (unsigned long long)max);
        return 0;
    }
    if (!need(c, *n, what))
        return 0;
    *s = (const char *)c->p + c->off;
    c->off += (size_t)*n;
    return 1;
}

static size_t scalar_size(uint32_t t)
{
    static const unsigned char sz[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < sizeof sz ? sz[t] : 0;
}

/* Skips one value of type t (arrays of scalars or strings; no nested arrays). */
static int skip_value(cur *c, uint32_t t, pk_gguf_kv *kv, const char *key)
{
    if (t == GGUF_STRING) {
        const char *s;
        uint64_t n;
        return rd_str(c, &s, &n, c->len, key);
    }
    if (t != GGUF_ARRAY) {
        size_t sz = scalar_size(t);
        if (sz == 0) {
            pk_seterr(c->err, c->errlen, "%s: key %s: unknown value type %u", c->fname, key, t);
            return 0;
        }
        if (!need(c, sz, key))
            return 0;
        c->off += sz;
        return 1;
    }
    uint32_t at;
    uint64_t n;
    if (!rd_u32(c, &at, key) || !rd_u64(c, &n, key))
        return 0;
    kv->atype = at;
    kv->n = n;
    kv->val = c->p + c->off;
    if (at == GGUF_ARRAY || (at != GGUF_STRING && scalar_size(at) == 0)) {
        pk_seterr(c->err, c->errlen, "%s: key %s: unsupported array element type %u", c->fname, key,
                  at);
        return 0;
    }
    uint64_t esz = at == GGUF_STRING ? 8 : scalar_size(at); /* a string takes >= 8 bytes */
    if (n > (c->len - c->off) / esz) {
        pk_seterr(c->err, c->errlen, "%s: key %s: array of %llu elements runs past the end",
                  c->fname, key, (unsigned long long)n);
        return 0;
    }
    if (at != GGUF_STRING) {
        c->off += (size_t)(n * esz);
        return 1;
    }
    for (uint64_t i = 0; i < n; i++) {
        const char *s;
        uint64_t l;
        if (!rd_str(c, &s, &l, c->len, key))
            return 0;
    }
    return 1;
}

static int read_kv(cur *c, pk_gguf_kv *kv, uint64_t i)
{
    char what[64];
    snprintf(what, sizeof what, "metadata key %llu", (unsigned long long)i);
    size_t start = c->off;
    uint64_t kl;
    if (!rd_str(c, &kv->key, &kl, MAX_KEY, what))
        return 0;
    kv->klen = (size_t)kl;
    char key[128];
    snprintf(key, sizeof key, "%.*s", (int)(kl < 100 ? kl : 100), kv->key);
    if (!rd_u32(c, &kv->type, key))
        return 0;
    kv->val = c->p + c->off;
    kv->n = 1;
    kv->atype = kv->type;
    if (!skip_value(c, kv->type, kv, key))
        return 0;
    kv->raw = c->p + start;
    kv->raw_len = c->off - start;
    return 1;
}

const pk_gguf_kv *pk_gguf_find(const pk_gguf *g, const char *key)
{
    size_t kl = strlen(key);
    for (size_t i = 0; i < g->n_kv; i++) {
        if (g->kv[i].klen == kl && memcmp(g->kv[i].key, key, kl) == 0)
            return &g->kv[i];
    }
    return NULL;
}

/* The shape, the type and the block divisibility of one tensor info. */
static int check_tensor(cur *c, pk_gguf_tensor *t, uint32_t type)
{
    int dt = -2;
    const char *tn = NULL;
    for (size_t k = 0; k < sizeof ggml_types / sizeof ggml_types[0]; k++) {
        if (ggml_types[k].id == (int)type) {
            dt = ggml_types[k].dt;
            tn = ggml_types[k].name;
        }
    }
    if (dt < 0) {
        char num[32];
        snprintf(num, sizeof num, "type id %u", type);
        pk_seterr(c->err, c->errlen,
                  "%s: tensor %s: %s is not supported (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, "
                  "Q6_K are)",
                  c->fname, t->name, tn ? tn : num);
        return 0;
    }
    t->dtype = (pk_dtype)dt;
    uint64_t numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        if (t->ne[d] == 0 || t->ne[d] > (1ull << 40) || numel > (1ull << 40) / t->ne[d]) {
            pk_seterr(c->err, c->errlen, "%s: tensor %s: dimension %d is %llu (empty or too large)",
                      c->fname, t->name, d, (unsigned long long)t->ne[d]);
            return 0;
        }
        numel *= t->ne[d];
    }
    uint64_t qb = pk_dtype_block(t->dtype);
    if (t->ne[0] % qb != 0) {
        pk_seterr(c->err, c->errlen,
                  "%s: tensor %s: rows of %llu elements do not divide into %s blocks of %llu",
                  c->fname, t->name, (unsigned long long)t->ne[0], tn, (unsigned long long)qb);
        return 0;
    }
    t->nbytes = pk_dtype_row_bytes(t->dtype, (size_t)numel);
    return 1;
}

static int read_tensor(cur *c, pk_gguf_tensor *t, uint64_t i)
{
    char what[64];
    snprintf(what, sizeof what, "tensor info %llu", (unsigned long long)i);
    const char *s;
    uint64_t n;
    uint32_t nd, type;
    if (!rd_str(c, &s, &n, MAX_NAME, what))
        return 0;
    snprintf(t->name, sizeof t->name, "%.*s", (int)n, s);
    if (strlen(t->name) != n) {
        pk_seterr(c->err, c->errlen, "%s: %s: name holds a NUL byte", c->fname, what);
        return 0;
    }
    if (!rd_u32(c, &nd, t->name))
        return 0;
    if (nd < 1 || nd > 4) {
        pk_seterr(c->err, c->errlen, "%s: tensor %s: %u dimensions (1 to 4 supported)", c->fname,
                  t->name, nd);
        return 0;
    }
    t->ndim = (int)nd;
    for (int d = 0; d < 4; d++)
        t->ne[d] = 1;
    for (uint32_t d = 0; d < nd; d++) {
        if (!rd_u64(c, &t->ne[d], t->name))
            return 0;
    }
    if (!rd_u32(c, &type, t->name) || !rd_u64(c, &t->off, t->name))
        return 0;
    return check_tensor(c, t, type);
}

/* general.alignment: a u32 power of two (default 32). */
static int read_align(cur *c, pk_gguf *g)
{
    g->align = GGUF_DEFAULT_ALIGN;
    const pk_gguf_kv *a = pk_gguf_find(g, "general.alignment");
    if (!a)
        return 1;
    uint64_t v = a->type == GGUF_U32 ? le(a->val, 4) : 0;
    if (v == 0 || (v & (v - 1)) != 0 || v > (1u << 20)) {
        pk_seterr(c->err, c->errlen,
                  "%s: key general.alignment: must be a u32 power of two, got "
                  "type %u value %llu",
                  c->fname, a->type, (unsigned long long)v);
        return 0;
    }
    g->align = v;
    return 1;
}

static int cmp_off(const void *a, const void *b)
{
    const pk_gguf_tensor *x = *(pk_gguf_tensor *const *)a, *y = *(pk_gguf_tensor *const *)b;
    return x->off < y->off ? -1 : x->off > y->off;
}

/* Every tensor's data aligned, inside the file, not overlapping another; names unique. */
static int check_data(cur *c, pk_gguf *g)
{
    g->data_off = (c->off + g->align - 1) / g->align * g->align;
    if (g->data_off > c->len && g->n_t > 0)
        return need(c, g->data_off - c->off, "the padding before the tensor data");
    pk_gguf_tensor **o = malloc((g->n_t ? g->n_t : 1) * sizeof *o);
    if (!o) {
        pk_seterr(c->err, c->errlen, "%s: out of memory", c->fname);
        return 0;
    }
    int ok = 1;
    for (size_t i = 0; ok && i < g->n_t; i++) {
        pk_gguf_tensor *t = &g->t[i];
        o[i] = t;
        uint64_t room = c->len - g->data_off;
        if (t->off % g->align != 0 || t->off > room || t->nbytes > room - t->off) {
            pk_seterr(c->err, c->errlen,
                      "%s: tensor %s: data at offset %llu (%llu bytes) is misaligned or runs past "
                      "the end of the file",
                      c->fname, t->name, (unsigned long long)t->off, (unsigned long long)t->nbytes);
            ok = 0;
        }
        t->off += g->data_off;
    }
    if (ok)
        qsort(o, g->n_t, sizeof *o, cmp_off);
    for (size_t i = 1; ok && i < g->n_t; i++) {
        if (o[i - 1]->off + o[i - 1]->nbytes > o[i]->off) {
            pk_seterr(c->err, c->errlen, "%s: tensors %s and %s overlap", c->fname, o[i - 1]->name,
                      o[i]->name);
            ok = 0;
        }
    }
    for (size_t i = 0; ok && i < g->n_t; i++) {
        for (size_t j = i + 1; ok && j < g->n_t; j++) {
            if (strcmp(g->t[i].name, g->t[j].name) == 0) {
                pk_seterr(c->err, c->errlen, "%s: tensor %s appears twice", c->fname, g->t[i].name);
                ok = 0;
            }
        }
    }
    free(o);
    return ok;
}

static int read_header(cur *c, pk_gguf *g, uint64_t *nt, uint64_t *nkv)
{
    if (c->len < 4 || memcmp(c->p, "GGUF", 4) != 0) {
        pk_seterr(c->err, c->errlen, "%s: not a GGUF file (no GGUF magic)", c->fname);
        return 0;
    }
    c->off = 4;
    if (!rd_u32(c, &g->version, "version") || !rd_u64(c, nt, "tensor count") ||
        !rd_u64(c, nkv, "metadata count"))
        return 0;
    if (g->version < 2 || g->version > 3) {
        pk_seterr(c->err, c->errlen, "%s: GGUF version %u (2 and 3 are supported)", c->fname,
                  g->version);
        return 0;
    }
    /* each key takes >= 12 bytes, each tensor info >= 24: the counts must fit in the file */
    if (*nkv > (c->len - c->off) / 12 || *nt > (c->len - c->off) / 24) {
        pk_seterr(c->err, c->errlen,
                  "%s: %llu tensors and %llu metadata keys cannot fit in %zu "
                  "bytes",
                  c->fname, (unsigned long long)*nt, (unsigned long long)*nkv, c->len);
        return 0;
    }
    return 1;
}

pk_status pk_gguf_parse(const char *fname, const unsigned char *buf, size_t len, pk_gguf *g,
                        char *err, size_t errlen)
{
    memset(g, 0, sizeof *g);
    cur c = {.p = buf, .len = len, .off = 0, .fname = fname, .err = err, .errlen = errlen};
    uint64_t nt, nkv;
    if (!read_header(&c, g, &nt, &nkv))
        return PK_ERR_FORMAT;
    g->base = buf;
    g->len = len;
    g->kv = calloc(nkv ? (size_t)nkv : 1, sizeof *g->kv);
    g->t = calloc(nt ? (size_t)nt : 1, sizeof *g->t);
    if (!g->kv || !g->t) {
        pk_gguf_release(g);
        return PK_ERR_NOMEM;
    }
    int ok = 1;
    for (uint64_t i = 0; ok && i < nkv; i++, g->n_kv++)
        ok = read_kv(&c, &g->kv[i], i);
    for (uint64_t i = 0; ok && i < nt; i++, g->n_t++)
        ok = read_tensor(&c, &g->t[i], i);
    ok = ok && read_align(&c, g) && check_data(&c, g);
    if (!ok) {
        pk_gguf_release(g);
        return PK_ERR_FORMAT;
    }
    return PK_OK;
}

void pk_gguf_release(pk_gguf *g)
{
    if (!g)
        return;
    free(g->kv);
    free(g->t);
    g->kv = NULL;
    g->t = NULL;
    g->n_kv = g->n_t = 0;
}

pk_status pk_gguf_check(const char *fname, const unsigned char *buf, size_t len, char *err,
                        size_t errlen)
{
    pk_gguf g;
    pk_status st = pk_gguf_parse(fname, buf, len, &g, err, errlen);
    if (st == PK_OK)
        pk_gguf_release(&g);
    return st;
}
