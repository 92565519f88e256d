/* load.c: pk_model_load (config.json, mmapped safetensors single or sharded, binding every tensor
 * the architecture needs with its shape), tensor accessors, make-model and model info
 * (pk_model_make_writable and restore_base: writable.c; pk_model_save: save.c).
 * The forward pass lives in forward.c, generation in gen.c. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "forward_impl.h" /* pk_frozen_free */
#include "gguf_impl.h"
#include "model_impl.h"

#define MAX_HEADER (100u << 20)
#define MAX_CONFIG (16u << 20)

pk_model_params pk_model_default_params(void)
{
    pk_model_params p = {0, 0, 0};
    return p;
}

int pk_model_file_exists(const char *dir, const char *name)
{
    char p[4096];
    struct stat sb;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return stat(p, &sb) == 0;
}

/* Reads a whole (small) file; *out owned (free), NUL-terminated. */
pk_status pk_model_read_text(const char *path, size_t cap, char **out, size_t *len, char *err,
                             size_t errlen)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        pk_seterr(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return PK_ERR_IO;
    }
    char *buf = malloc(cap + 1);
    if (!buf) {
        fclose(f);
        return PK_ERR_NOMEM;
    }
    size_t n = fread(buf, 1, cap + 1, f);
    int rerr = ferror(f);
    fclose(f);
    if (rerr || n > cap) {
        free(buf);
        pk_seterr(err, errlen, "%s: %s", path, rerr ? "read error" : "file too large");
        return rerr ? PK_ERR_IO : PK_ERR_FORMAT;
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return PK_OK;
}

/* ---- parsed entries from all files ---- */
typedef struct entry {
    pk_st_tensor st;
    const char *file; /* basename, for messages */
    unsigned char *data;
    int slot_used;
} entry;

typedef struct loader {
    pk_model *m;
    entry *e;
    size_t n, cap;
    char *err;
    size_t errlen;
    const char *first_file;
    /* bound slots: pointer to an index field + the entry it refers to */
    int **slots;
    size_t *slot_entry;
    size_t n_slots, slot_cap;
    int bad;
    pk_status st;
    /* collect mode (pk_model_make): record what the config implies instead of looking it up */
    int collect;
    pk_st_entry *want;
    char (*want_names)[256];
    int *want_bn;
    size_t n_want, want_cap;
} loader;

static pk_status map_file(loader *ld, const char *dir, const char *fname)
{
    pk_model *m = ld->m;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, fname);
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        pk_seterr(ld->err, ld->errlen, "%s: cannot open: %s", path, strerror(errno));
        return PK_ERR_IO;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || sb.st_size < 8) {
        close(fd);
        pk_seterr(ld->err, ld->errlen, "%s: truncated file (%lld bytes, need at least 8)", path,
                  (long long)sb.st_size);
        return PK_ERR_FORMAT;
    }
    size_t len = (size_t)sb.st_size;
    int prot = PROT_READ | PROT_WRITE;
    void *base = mmap(NULL, len, prot, MAP_PRIVATE, fd, 0);
    if (base == MAP_FAILED) {
        close(fd);
        pk_seterr(ld->err, ld->errlen, "%s: mmap failed: %s", path, strerror(errno));
        return PK_ERR_IO;
    }
    m->maps[m->n_maps].base = base;
    m->maps[m->n_maps].len = len;
    m->maps[m->n_maps].fd = fd; /* kept: pk_model_make_writable reads the file again */
    m->n_maps++;
    const unsigned char *b = base;
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++)
        hl |= (uint64_t)b[i] << (8 * i);
    if (hl > len - 8 || hl > MAX_HEADER) {
        pk_seterr(ld->err, ld->errlen,
                  "%s: header length %llu runs past the end of the file (%zu bytes): truncated or "
                  "not a safetensors file",
                  path, (unsigned long long)hl, len);
        return PK_ERR_FORMAT;
    }
    pk_st_tensor *ts = NULL;
    size_t n = 0;
    pk_status st = pk_st_parse(path, (const char *)b + 8, (size_t)hl, len - 8 - hl, &ts, &n,
                               ld->err, ld->errlen);
    if (st != PK_OK)
        return st;
    if (ld->n + n > ld->cap) {
        size_t nc = (ld->n + n) * 2;
        entry *ne = realloc(ld->e, nc * sizeof *ne);
        if (!ne) {
            free(ts);
            return PK_ERR_NOMEM;
        }
        ld->e = ne;
        ld->cap = nc;
    }
    const char *keep = NULL;
    for (size_t i = 0; i < n; i++) {
        entry *e = &ld->e[ld->n++];
        e->st = ts[i];
        e->data = (unsigned char *)base + 8 + hl + ts[i].begin;
        e->slot_used = 0;
        e->file = keep;
    }
    free(ts);
    return PK_OK;
}

static int cmp_entry(const void *a, const void *b)
{
    const entry *x = a, *y = b;
    return strcmp(x->st.name, y->st.name);
}

static entry *find_entry(loader *ld, const char *name)
{
    entry key;
    snprintf(key.st.name, sizeof key.st.name, "%s", name);
    return bsearch(&key, ld->e, ld->n, sizeof *ld->e, cmp_entry);
}

/* Binds tensor `name` with the given shape (ndim dims; trailing -1 ends) to *slot. */
static void bind(loader *ld, int *slot, int is_bn, int ndim, int64_t d0, int64_t d1,
                 const char *fmt, ...) PK_PRINTF(7, 8);

static void fail(loader *ld, pk_status st)
{
    ld->bad = 1;
    ld->st = st;
}

/* The collecting pass: the tensor is only noted (name, shape, bias/norm flag). */
static void want_tensor(loader *ld, const char *name, int is_bn, int ndim, int64_t d0, int64_t d1)
{
    if (ld->n_want == ld->want_cap) {
        size_t nc = ld->want_cap ? ld->want_cap * 2 : 64;
        pk_st_entry *nw = realloc(ld->want, nc * sizeof *nw);
        if (nw)
            ld->want = nw;
        char(*nn)[256] = realloc(ld->want_names, nc * sizeof *nn);
        if (nn)
            ld->want_names = nn;
        int *nb = realloc(ld->want_bn, nc * sizeof *nb);
        if (nb)
            ld->want_bn = nb;
        if (!nw || !nn || !nb) {
            fail(ld, PK_ERR_NOMEM);
            return;
        }
        ld->want_cap = nc;
    }
    size_t k = ld->n_want++;
    snprintf(ld->want_names[k], 256, "%s", name);
    memset(&ld->want[k], 0, sizeof ld->want[k]);
    ld->want[k].ndim = ndim;
    ld->want[k].shape[0] = d0;
    ld->want[k].shape[1] = d1;
    ld->want_bn[k] = is_bn;
}

/* 1 if the file's tensor e has the shape config.json implies and a dtype we read; else the
 * error names the tensor and both shapes. */
static int tensor_fits(loader *ld, const entry *e, const char *name, int ndim, int64_t d0,
                       int64_t d1)
{
    int64_t want[2] = {d0, d1};
    int ok = e->st.ndim == ndim;
    for (int d = 0; ok && d < ndim; d++)
        ok = e->st.shape[d] == want[d];
    if (!ok) {
        char got[128] = "", exp[64];
        for (int d = 0; d < e->st.ndim; d++) {
            size_t l = strlen(got);
            snprintf(got + l, sizeof got - l, "%s%lld", d ? ", " : "", (long long)e->st.shape[d]);
        }
        if (ndim == 1)
            snprintf(exp, sizeof exp, "[%lld]", (long long)d0);
        else
            snprintf(exp, sizeof exp, "[%lld, %lld]", (long long)d0, (long long)d1);
        pk_seterr(ld->err, ld->errlen, "%s: tensor %s has shape [%s] but config.json implies %s",
                  ld->first_file, name, got, exp);
        fail(ld, PK_ERR_FORMAT);
        return 0;
    }
    if (e->st.dtype < 0) {
        pk_seterr(ld->err, ld->errlen, "%s: tensor %s: dtype must be F32, F16 or BF16",
                  ld->first_file, name);
        fail(ld, PK_ERR_FORMAT);
        return 0;
    }
    return 1;
}

/* Records that *slot is to receive the index of tensor e once tensors are laid out. */
static void add_slot(loader *ld, int *slot, entry *e, int is_bn)
{
    if (ld->n_slots == ld->slot_cap) {
        size_t nc = ld->slot_cap ? ld->slot_cap * 2 : 64;
        int **ns = realloc(ld->slots, nc * sizeof *ns);
        if (ns)
            ld->slots = ns;
        size_t *ne = realloc(ld->slot_entry, nc * sizeof *ne);
        if (ne)
            ld->slot_entry = ne;
        if (!ns || !ne) {
            fail(ld, PK_ERR_NOMEM);
            return;
        }
        ld->slot_cap = nc;
    }
    ld->slots[ld->n_slots] = slot;
    ld->slot_entry[ld->n_slots] = (size_t)(e - ld->e);
    ld->n_slots++;
    if (is_bn)
        e->slot_used |= 2;
    e->slot_used |= 1;
}

static void bind(loader *ld, int *slot, int is_bn, int ndim, int64_t d0, int64_t d1,
                 const char *fmt, ...)
{
    *slot = -1;
    if (ld->bad)
        return;
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    if (ld->collect) {
        want_tensor(ld, name, is_bn, ndim, d0, d1);
        return;
    }
    entry *e = find_entry(ld, name);
    if (!e) {
        pk_seterr(ld->err, ld->errlen, "%s: missing tensor %s (required by config.json)",
                  ld->first_file, name);
        fail(ld, PK_ERR_FORMAT);
        return;
    }
    if (tensor_fits(ld, e, name, ndim, d0, d1))
        add_slot(ld, slot, e, is_bn);
}

static void bind_llama(loader *ld, pk_model *m)
{
    const pk_cfg *c = &m->cfg;
    int q = c->nh * c->hd, kv = c->nkv * c->hd;
    bind(ld, &m->emb, 0, 2, c->V, c->H, "model.embed_tokens.weight");
    for (int l = 0; l < c->L; l++) {
        pk_layer *y = &m->layers[l];
        const char *p = "model.layers";
        bind(ld, &y->ln1_w, 1, 1, c->H, 0, "%s.%d.input_layernorm.weight", p, l);
        bind(ld, &y->ln2_w, 1, 1, c->H, 0, "%s.%d.post_attention_layernorm.weight", p, l);
        bind(ld, &y->q_w, 0, 2, q, c->H, "%s.%d.self_attn.q_proj.weight", p, l);
        bind(ld, &y->k_w, 0, 2, kv, c->H, "%s.%d.self_attn.k_proj.weight", p, l);
        bind(ld, &y->v_w, 0, 2, kv, c->H, "%s.%d.self_attn.v_proj.weight", p, l);
        bind(ld, &y->o_w, 0, 2, c->H, q, "%s.%d.self_attn.o_proj.weight", p, l);
        if (c->qkv_bias) {
            bind(ld, &y->q_b, 1, 1, q, 0, "%s.%d.self_attn.q_proj.bias", p, l);
            bind(ld, &y->k_b, 1, 1, kv, 0, "%s.%d.self_attn.k_proj.bias", p, l);
            bind(ld, &y->v_b, 1, 1, kv, 0, "%s.%d.self_attn.v_proj.bias", p, l);
        }
        if (c->o_bias)
            bind(ld, &y->o_b, 1, 1, c->H, 0, "%s.%d.self_attn.o_proj.bias", p, l);
        bind(ld, &y->gate_w, 0, 2, c->inter, c->H, "%s.%d.mlp.gate_proj.weight", p, l);
        bind(ld, &y->fc1_w, 0, 2, c->inter, c->H, "%s.%d.mlp.up_proj.weight", p, l);
        bind(ld, &y->fc2_w, 0, 2, c->H, c->inter, "%s.%d.mlp.down_proj.weight", p, l);
        if (c->mlp_bias) {
            bind(ld, &y->gate_b, 1, 1, c->inter, 0, "%s.%d.mlp.gate_proj.bias", p, l);
            bind(ld, &y->fc1_b, 1, 1, c->inter, 0, "%s.%d.mlp.up_proj.bias", p, l);
            bind(ld, &y->fc2_b, 1, 1, c->H, 0, "%s.%d.mlp.down_proj.bias", p, l);
        }
    }
    bind(ld, &m->fin_w, 1, 1, c->H, 0, "model.norm.weight");
    if (!c->tie)
        bind(ld, &m->head_w, 0, 2, c->V, c->H, "lm_head.weight");
}

static void bind_opt(loader *ld, pk_model *m)
{
    const pk_cfg *c = &m->cfg;
    const char *p = "model.decoder";
    bind(ld, &m->emb, 0, 2, c->V, c->proj, "%s.embed_tokens.weight", p);
    bind(ld, &m->pos_emb, 0, 2, c->n_pos_rows, c->H, "%s.embed_positions.weight", p);
    if (c->proj != c->H) {
        bind(ld, &m->proj_in, 0, 2, c->H, c->proj, "%s.project_in.weight", p);
        bind(ld, &m->proj_out, 0, 2, c->proj, c->H, "%s.project_out.weight", p);
    }
    for (int l = 0; l < c->L; l++) {
        pk_layer *y = &m->layers[l];
        if (c->ln_affine) {
            bind(ld, &y->ln1_w, 1, 1, c->H, 0, "%s.layers.%d.self_attn_layer_norm.weight", p, l);
            bind(ld, &y->ln1_b, 1, 1, c->H, 0, "%s.layers.%d.self_attn_layer_norm.bias", p, l);
            bind(ld, &y->ln2_w, 1, 1, c->H, 0, "%s.layers.%d.final_layer_norm.weight", p, l);
            bind(ld, &y->ln2_b, 1, 1, c->H, 0, "%s.layers.%d.final_layer_norm.bias", p, l);
        }
        static const char *const qkvo[] = {"q_proj", "k_proj", "v_proj", "out_proj"};
        int *w[] = {&y->q_w, &y->k_w, &y->v_w, &y->o_w},
            *b[] = {&y->q_b, &y->k_b, &y->v_b, &y->o_b};
        for (int i = 0; i < 4; i++) {
            bind(ld, w[i], 0, 2, c->H, c->H, "%s.layers.%d.self_attn.%s.weight", p, l, qkvo[i]);
            if (c->qkv_bias)
                bind(ld, b[i], 1, 1, c->H, 0, "%s.layers.%d.self_attn.%s.bias", p, l, qkvo[i]);
        }
        bind(ld, &y->fc1_w, 0, 2, c->inter, c->H, "%s.layers.%d.fc1.weight", p, l);
        bind(ld, &y->fc2_w, 0, 2, c->H, c->inter, "%s.layers.%d.fc2.weight", p, l);
        if (c->mlp_bias) {
            bind(ld, &y->fc1_b, 1, 1, c->inter, 0, "%s.layers.%d.fc1.bias", p, l);
            bind(ld, &y->fc2_b, 1, 1, c->H, 0, "%s.layers.%d.fc2.bias", p, l);
        }
    }
    if (c->final_ln && c->ln_affine) {
        bind(ld, &m->fin_w, 1, 1, c->H, 0, "%s.final_layer_norm.weight", p);
        bind(ld, &m->fin_b, 1, 1, c->H, 0, "%s.final_layer_norm.bias", p);
    }
    if (!c->tie)
        bind(ld, &m->head_w, 0, 2, c->V, c->proj, "lm_head.weight");
}

static void bind_gpt2(loader *ld, pk_model *m)
{
    const pk_cfg *c = &m->cfg;
    const char *p = "transformer";
    bind(ld, &m->emb, 0, 2, c->V, c->H, "%s.wte.weight", p);
    bind(ld, &m->pos_emb, 0, 2, c->n_pos_rows, c->H, "%s.wpe.weight", p);
    for (int l = 0; l < c->L; l++) {
        pk_layer *y = &m->layers[l];
        bind(ld, &y->ln1_w, 1, 1, c->H, 0, "%s.h.%d.ln_1.weight", p, l);
        bind(ld, &y->ln1_b, 1, 1, c->H, 0, "%s.h.%d.ln_1.bias", p, l);
        bind(ld, &y->ln2_w, 1, 1, c->H, 0, "%s.h.%d.ln_2.weight", p, l);
        bind(ld, &y->ln2_b, 1, 1, c->H, 0, "%s.h.%d.ln_2.bias", p, l);
        bind(ld, &y->q_w, 0, 2, c->H, 3LL * c->H, "%s.h.%d.attn.c_attn.weight", p, l);
        bind(ld, &y->q_b, 1, 1, 3LL * c->H, 0, "%s.h.%d.attn.c_attn.bias", p, l);
        bind(ld, &y->o_w, 0, 2, c->H, c->H, "%s.h.%d.attn.c_proj.weight", p, l);
        bind(ld, &y->o_b, 1, 1, c->H, 0, "%s.h.%d.attn.c_proj.bias", p, l);
        bind(ld, &y->fc1_w, 0, 2, c->H, c->inter, "%s.h.%d.mlp.c_fc.weight", p, l);
        bind(ld, &y->fc1_b, 1, 1, c->inter, 0, "%s.h.%d.mlp.c_fc.bias", p, l);
        bind(ld, &y->fc2_w, 0, 2, c->inter, c->H, "%s.h.%d.mlp.c_proj.weight", p, l);
        bind(ld, &y->fc2_b, 1, 1, c->H, 0, "%s.h.%d.mlp.c_proj.bias", p, l);
    }
    bind(ld, &m->fin_w, 1, 1, c->H, 0, "%s.ln_f.weight", p);
    bind(ld, &m->fin_b, 1, 1, c->H, 0, "%s.ln_f.bias", p);
    if (!c->tie)
        bind(ld, &m->head_w, 0, 2, c->V, c->H, "lm_head.weight");
    m->conv1d = 1;
}

static void bind_roberta(loader *ld, pk_model *m)
{
    const pk_cfg *c = &m->cfg;
    const char *p = "roberta.embeddings";
    bind(ld, &m->emb, 0, 2, c->V, c->H, "%s.word_embeddings.weight", p);
    bind(ld, &m->pos_emb, 0, 2, c->n_pos_rows, c->H, "%s.position_embeddings.weight", p);
    bind(ld, &m->type_emb, 0, 2, c->type_vocab, c->H, "%s.token_type_embeddings.weight", p);
    bind(ld, &m->emb_ln_w, 1, 1, c->H, 0, "%s.LayerNorm.weight", p);
    bind(ld, &m->emb_ln_b, 1, 1, c->H, 0, "%s.LayerNorm.bias", p);
    for (int l = 0; l < c->L; l++) {
        pk_layer *y = &m->layers[l];
        const char *e = "roberta.encoder.layer";
        static const char *const qkv[] = {"query", "key", "value"};
        int *w[] = {&y->q_w, &y->k_w, &y->v_w}, *b[] = {&y->q_b, &y->k_b, &y->v_b};
        for (int i = 0; i < 3; i++) {
            bind(ld, w[i], 0, 2, c->H, c->H, "%s.%d.attention.self.%s.weight", e, l, qkv[i]);
            bind(ld, b[i], 1, 1, c->H, 0, "%s.%d.attention.self.%s.bias", e, l, qkv[i]);
        }
        bind(ld, &y->o_w, 0, 2, c->H, c->H, "%s.%d.attention.output.dense.weight", e, l);
        bind(ld, &y->o_b, 1, 1, c->H, 0, "%s.%d.attention.output.dense.bias", e, l);
        bind(ld, &y->ln1_w, 1, 1, c->H, 0, "%s.%d.attention.output.LayerNorm.weight", e, l);
        bind(ld, &y->ln1_b, 1, 1, c->H, 0, "%s.%d.attention.output.LayerNorm.bias", e, l);
        bind(ld, &y->fc1_w, 0, 2, c->inter, c->H, "%s.%d.intermediate.dense.weight", e, l);
        bind(ld, &y->fc1_b, 1, 1, c->inter, 0, "%s.%d.intermediate.dense.bias", e, l);
        bind(ld, &y->fc2_w, 0, 2, c->H, c->inter, "%s.%d.output.dense.weight", e, l);
        bind(ld, &y->fc2_b, 1, 1, c->H, 0, "%s.%d.output.dense.bias", e, l);
        bind(ld, &y->ln2_w, 1, 1, c->H, 0, "%s.%d.output.LayerNorm.weight", e, l);
        bind(ld, &y->ln2_b, 1, 1, c->H, 0, "%s.%d.output.LayerNorm.bias", e, l);
    }
    bind(ld, &m->hd_dense_w, 0, 2, c->H, c->H, "lm_head.dense.weight");
    bind(ld, &m->hd_dense_b, 1, 1, c->H, 0, "lm_head.dense.bias");
    bind(ld, &m->hd_ln_w, 1, 1, c->H, 0, "lm_head.layer_norm.weight");
    bind(ld, &m->hd_ln_b, 1, 1, c->H, 0, "lm_head.layer_norm.bias");
    bind(ld, &m->head_b, 1, 1, c->V, 0, "lm_head.bias");
}

void pk_model_each_index(pk_model *m, void (*fn)(int *index, const void *ctx), const void *ctx)
{
    int *g[] = {&m->emb,    &m->pos_emb,    &m->type_emb,   &m->emb_ln_w, &m->emb_ln_b,
                &m->fin_w,  &m->fin_b,      &m->proj_in,    &m->proj_out, &m->head_w,
                &m->head_b, &m->hd_dense_w, &m->hd_dense_b, &m->hd_ln_w,  &m->hd_ln_b};
    for (size_t i = 0; i < sizeof g / sizeof g[0]; i++)
        fn(g[i], ctx);
    for (int l = 0; l < m->cfg.L; l++) {
        pk_layer *y = &m->layers[l];
        int *h[] = {&y->ln1_w,  &y->ln1_b,  &y->ln2_w, &y->ln2_b, &y->q_w,   &y->q_b,
                    &y->k_w,    &y->k_b,    &y->v_w,   &y->v_b,   &y->o_w,   &y->o_b,
                    &y->gate_w, &y->gate_b, &y->fc1_w, &y->fc1_b, &y->fc2_w, &y->fc2_b};
        for (size_t i = 0; i < sizeof h / sizeof h[0]; i++)
            fn(h[i], ctx);
    }
}

/* Marks one index unbound (-1). */
static void unbind_index(int *index, const void *ctx)
{
    (void)ctx;
    *index = -1;
}

static void init_indices(pk_model *m)
{
    pk_model_each_index(m, unbind_index, NULL);
}

/* Keeps the bound entries (sorted by name) as the model's tensors and rewrites the slots. */
static pk_status finish_tensors(loader *ld, pk_model *m)
{
    size_t n = 0;
    for (size_t i = 0; i < ld->n; i++)
        n += ld->e[i].slot_used ? 1 : 0;
    m->t = calloc(n ? n : 1, sizeof *m->t);
    size_t *newidx = malloc((ld->n ? ld->n : 1) * sizeof *newidx);
    if (!m->t || !newidx) {
        free(newidx);
        return PK_ERR_NOMEM;
    }
    size_t k = 0, n_copied = 0;
    for (size_t i = 0; i < ld->n; i++) {
        const entry *e = &ld->e[i];
        if (!e->slot_used) {
            pk_log(PK_LOG_DEBUG, "model: ignoring unused tensor %s", e->st.name);
            continue;
        }
        pk_tensor *t = &m->t[k];
        t->name = strdup(e->st.name);
        if (!t->name) {
            free(newidx);
            return PK_ERR_NOMEM;
        }
        t->dtype = (pk_dtype)e->st.dtype;
        t->ndim = e->st.ndim;
        t->numel = 1;
        for (int d = 0; d < 4; d++)
            t->shape[d] = d < t->ndim ? e->st.shape[d] : 1;
        for (int d = 0; d < t->ndim; d++)
            t->numel *= (size_t)t->shape[d];
        t->rows = t->ndim >= 2 ? (size_t)t->shape[0] : 1;
        t->cols = t->rows ? t->numel / t->rows : 0;
        t->key = pk_rng_tensor_key(t->name);
        t->data = e->data;
        t->owned = NULL;
        size_t esz = pk_dtype_size(t->dtype), nb = pk_dtype_row_bytes(t->dtype, t->numel);
        if (esz > 1 && (uintptr_t)t->data % esz != 0) {
            /* The format does not require aligned offsets (writers pad the header so they are);
             * the kernels load whole elements, so a misaligned tensor gets an aligned copy
             * (block types are read byte by byte). */
            t->owned = malloc(nb ? nb : 1);
            if (!t->owned) {
                m->n_t = k + 1; /* so pk_model_free frees the names and copies made so far */
                free(newidx);
                return PK_ERR_NOMEM;
            }
            memcpy(t->owned, t->data, nb);
            t->src = t->data;
            t->data = t->owned;
            n_copied++;
        }
        t->is_bias_or_norm = (e->slot_used & 2) != 0;
        m->weight_bytes += nb;
        newidx[i] = k++;
    }
    m->n_t = k;
    if (n_copied > 0)
        pk_log(PK_LOG_WARN,
               "model: %zu tensor(s) misaligned in the safetensors file: copied to "
               "aligned memory (re-save the file to avoid the copy)",
               n_copied);
    for (size_t s = 0; s < ld->n_slots; s++)
        *ld->slots[s] = (int)newidx[ld->slot_entry[s]];
    free(newidx);
    return PK_OK;
}

/* Maps model.safetensors, or the shards listed by model.safetensors.index.json. */
static pk_status map_weights(loader *ld, const char *dir)
{
    pk_model *m = ld->m;
    pk_status st;
    if (pk_model_file_exists(dir, "model.safetensors")) {
        m->maps = calloc(1, sizeof *m->maps);
        if (!m->maps)
            return PK_ERR_NOMEM;
        ld->first_file = "model.safetensors";
        return map_file(ld, dir, "model.safetensors");
    }
    if (!pk_model_file_exists(dir, "model.safetensors.index.json")) {
        if (pk_model_file_exists(dir, "pytorch_model.bin")) {
            pk_seterr(ld->err, ld->errlen,
                      "%s/pytorch_model.bin: PyTorch pickle checkpoints are not supported; "
                      "convert to safetensors first (python: AutoModel.from_pretrained(dir)"
                      ".save_pretrained(out, safe_serialization=True))",
                      dir);
            return PK_ERR_UNSUPPORTED;
        }
        pk_seterr(ld->err, ld->errlen, "%s/model.safetensors: not found", dir);
        return PK_ERR_IO;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    char *txt = NULL;
    size_t len = 0;
    st = pk_model_read_text(path, MAX_CONFIG, &txt, &len, ld->err, ld->errlen);
    if (st != PK_OK)
        return st;
    cJSON *root = cJSON_ParseWithLength(txt, len);
    const cJSON *wm = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    st = PK_ERR_FORMAT;
    if (!cJSON_IsObject(wm)) {
        pk_seterr(ld->err, ld->errlen, "%s: invalid JSON or missing key \"weight_map\"", path);
        goto out;
    }
    /* distinct shard names, in order of appearance */
    int n = 0;
    for (const cJSON *it = wm->child; it; it = it->next)
        n++;
    m->maps = calloc(n ? (size_t)n : 1, sizeof *m->maps);
    const char **shards = calloc(n ? (size_t)n : 1, sizeof *shards);
    int ns = 0;
    if (!m->maps || !shards) {
        free(shards);
        st = PK_ERR_NOMEM;
        goto out;
    }
    for (const cJSON *it = wm->child; it; it = it->next) {
        if (!cJSON_IsString(it) || strchr(it->valuestring, '/') || it->valuestring[0] == '.') {
            pk_seterr(ld->err, ld->errlen, "%s: key \"weight_map.%s\": not a shard file name", path,
                      it->string ? it->string : "?");
            free(shards);
            goto out;
        }
        int seen = 0;
        for (int i = 0; i < ns; i++)
            seen |= strcmp(shards[i], it->valuestring) == 0;
        if (!seen)
            shards[ns++] = it->valuestring;
    }
    ld->first_file = "model.safetensors.index.json";
    for (int i = 0; i < ns; i++) {
        st = map_file(ld, dir, shards[i]);
        if (st != PK_OK) {
            free(shards);
            goto out;
        }
    }
    free(shards);
    st = PK_OK;
out:
    cJSON_Delete(root);
    free(txt);
    return st;
}

/* Sorts the file's tensors by name; a name in two shards is an error. */
static pk_status check_unique(loader *ld, const char *dir, char *err, size_t errlen)
{
    qsort(ld->e, ld->n, sizeof *ld->e, cmp_entry);
    for (size_t i = 1; i < ld->n; i++) {
        if (strcmp(ld->e[i - 1].st.name, ld->e[i].st.name) == 0) {
            pk_seterr(err, errlen, "%s/%s: tensor %s appears in two shards", dir, ld->first_file,
                      ld->e[i].st.name);
            return PK_ERR_FORMAT;
        }
    }
    return PK_OK;
}

/* The GGUF file a model path names: the path itself if it is a file, else DIR/model.gguf or the
 * one *.gguf file of a directory without safetensors weights. 0 if none (safetensors). */
static int find_gguf(const char *dir, char *out, size_t n)
{
    struct stat sb;
    if (stat(dir, &sb) == 0 && S_ISREG(sb.st_mode)) {
        snprintf(out, n, "%s", dir);
        return 1;
    }
    if (pk_model_file_exists(dir, "model.safetensors") ||
        pk_model_file_exists(dir, "model.safetensors.index.json"))
        return 0;
    DIR *d = opendir(dir);
    int found = 0;
    for (struct dirent *e = d ? readdir(d) : NULL; e; e = readdir(d)) {
        size_t l = strlen(e->d_name);
        if (l > 5 && strcmp(e->d_name + l - 5, ".gguf") == 0 &&
            (found == 0 || strcmp(e->d_name, "model.gguf") == 0)) {
            snprintf(out, n, "%s/%s", dir, e->d_name);
            found = 1;
        }
    }
    if (d)
        closedir(d);
    return found;
}

/* Maps a GGUF file and lists its tensors (Hugging Face names) and config (DESIGN 5). */
static pk_status open_gguf(loader *ld, const char *path)
{
    pk_model *m = ld->m;
    m->maps = calloc(1, sizeof *m->maps);
    if (!m->maps)
        return PK_ERR_NOMEM;
    int fd = open(path, O_RDONLY);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0 || sb.st_size == 0) {
        pk_seterr(ld->err, ld->errlen, "%s: cannot open: %s", path,
                  fd < 0 ? strerror(errno) : "empty file");
        if (fd >= 0)
            close(fd);
        return fd < 0 ? PK_ERR_IO : PK_ERR_FORMAT;
    }
    size_t len = (size_t)sb.st_size;
    void *base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (base == MAP_FAILED) {
        close(fd);
        pk_seterr(ld->err, ld->errlen, "%s: mmap failed: %s", path, strerror(errno));
        return PK_ERR_IO;
    }
    m->maps[0] = (pk_mapping){.base = base, .len = len, .fd = fd};
    m->n_maps = 1;
    pk_st_tensor *ts = NULL;
    size_t n = 0;
    pk_status st = pk_gguf_model(path, base, len, &m->config_text, &m->config_len, &ts, &n, ld->err,
                                 ld->errlen);
    if (st != PK_OK)
        return st;
    ld->e = calloc(n ? n : 1, sizeof *ld->e);
    if (!ld->e) {
        free(ts);
        return PK_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        ld->e[i].st = ts[i];
        ld->e[i].data = (unsigned char *)base + ts[i].begin;
    }
    ld->n = ld->cap = n;
    free(ts);
    return PK_OK;
}

static void bind_arch(loader *ld, pk_model *m)
{
    switch (m->cfg.arch) {
    case ARCH_LLAMA:
    case ARCH_QWEN2:
        bind_llama(ld, m);
        break;
    case ARCH_OPT:
        bind_opt(ld, m);
        break;
    case ARCH_GPT2:
        bind_gpt2(ld, m);
        break;
    default:
        bind_roberta(ld, m);
        break;
    }
}

/* A NaN or inf weight makes every loss and logit non-finite: say which tensor at load, once
 * per tensor, rather than let forward or generate surprise the user later. */
static void warn_non_finite(const pk_model *m)
{
    size_t nt = pk_model_n_tensors(m);
    for (size_t i = 0; i < nt; i++) {
        pk_tensor_info ti;
        if (pk_model_tensor(m, i, &ti) != PK_OK)
            continue;
        size_t bad = 0, qb = pk_dtype_block(ti.dtype);
        for (size_t j = 0; qb > 1 && j < ti.numel; j += qb) { /* block types: decode a block */
            float buf[256];
            pk_widen(ti.dtype, (const char *)ti.data + pk_dtype_row_bytes(ti.dtype, j), qb, buf);
            for (size_t k = 0; k < qb; k++)
                bad += !isfinite(buf[k]);
        }
        for (size_t j = 0; qb == 1 && j < ti.numel; j++) {
            const uint16_t *h = ti.data;
            float v = ti.dtype == PK_DTYPE_F32   ? ((const float *)ti.data)[j]
                      : ti.dtype == PK_DTYPE_F16 ? pk_f16_to_f32(h[j])
                                                 : pk_bf16_to_f32(h[j]);
            bad += !isfinite(v);
        }
        if (bad)
            pk_log(PK_LOG_WARN, "%s: tensor %s has %zu non-finite values (NaN or inf)", m->dir,
                   ti.name, bad);
    }
}

pk_status pk_model_load(const char *dir, pk_model_params p, pk_model **out, char *err,
                        size_t errlen)
{
    *out = NULL;
    pk_status st;
    loader ld = {0};
    pk_model *m = calloc(1, sizeof *m);
    char path[4096];
    if (!m)
        return PK_ERR_NOMEM;
    ld.m = m;
    ld.err = err;
    ld.errlen = errlen;
    ld.first_file = "model.safetensors";
    m->dir = strdup(dir);
    if (!m->dir) {
        st = PK_ERR_NOMEM;
        goto out;
    }
    int gguf = find_gguf(dir, path, sizeof path);
    if (gguf) {
        st = open_gguf(&ld, path);
    } else {
        snprintf(path, sizeof path, "%s/config.json", dir);
        st = pk_model_read_text(path, MAX_CONFIG, &m->config_text, &m->config_len, err, errlen);
    }
    if (st != PK_OK)
        goto out;
    st = pk_cfg_parse(path, m->config_text, m->config_len, &m->cfg, err, errlen);
    if (st != PK_OK)
        goto out;
    m->layers = calloc((size_t)m->cfg.L, sizeof *m->layers);
    if (!m->layers) {
        st = PK_ERR_NOMEM;
        goto out;
    }
    init_indices(m);
    st = gguf ? PK_OK : map_weights(&ld, dir); /* a GGUF file's tensors are listed already */
    if (st != PK_OK)
        goto out;
    st = check_unique(&ld, dir, err, errlen);
    if (st != PK_OK)
        goto out;
    char first[4352];
    if (gguf)
        snprintf(first, sizeof first, "%s", path);
    else
        snprintf(first, sizeof first, "%s/%s", dir, ld.first_file);
    ld.first_file = first;
    bind_arch(&ld, m);
    st = ld.bad ? ld.st : finish_tensors(&ld, m);
    if (st != PK_OK)
        goto out;
    warn_non_finite(m);
    if (m->cfg.tie && m->cfg.arch != ARCH_ROBERTA)
        m->head_w = m->emb;
    if (m->cfg.arch == ARCH_ROBERTA)
        m->head_w = m->emb;
    (void)p.read_only;
    if (p.max_batch > 0 && p.max_seq > 0) {
        st = pk_model_reserve(m, p.max_batch, p.max_seq);
        if (st != PK_OK) {
            pk_seterr(err, errlen, "%s: cannot reserve activations for %d x %d", dir, p.max_batch,
                      p.max_seq);
            goto out;
        }
    }
    *out = m;
    m = NULL;
out:
    free(ld.e);
    free(ld.slots);
    free(ld.slot_entry);
    pk_model_free(m);
    return st;
}

void pk_model_free(pk_model *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->n_maps; i++) {
        munmap(m->maps[i].base, m->maps[i].len);
        close(m->maps[i].fd);
    }
    free(m->maps);
    free(m->priv);
    for (size_t i = 0; i < m->n_t; i++) {
        free(m->t[i].name);
        free(m->t[i].owned);
    }
    free(m->t);
    free(m->layers);
    free(m->dir);
    free(m->config_text);
    free(m->arena);
    free(m->rope);
    free(m->pos);
    free(m->att);
    free(m->rows);
    free(m->tgt);
    pk_frozen_free(m);
    free(m);
}

const char *pk_model_arch(const pk_model *m)
{
    static const char *const names[] = {"llama", "qwen2", "opt", "gpt2", "roberta"};
    return names[m->cfg.arch];
}

int pk_model_vocab_size(const pk_model *m)
{
    return m->cfg.V;
}

int pk_model_max_positions(const pk_model *m)
{
    return m->cfg.max_pos;
}

int pk_model_hidden_size(const pk_model *m)
{
    return m->cfg.H;
}

int pk_model_n_layers(const pk_model *m)
{
    return m->cfg.L;
}

int pk_model_is_causal(const pk_model *m)
{
    return m->cfg.arch != ARCH_ROBERTA;
}

int pk_model_bos_id(const pk_model *m)
{
    return m->cfg.bos;
}

int pk_model_eos_id(const pk_model *m)
{
    return m->cfg.eos;
}

int pk_model_pad_id(const pk_model *m)
{
    return m->cfg.pad;
}

size_t pk_model_weight_bytes(const pk_model *m)
{
    return m->weight_bytes;
}

size_t pk_model_n_tensors(const pk_model *m)
{
    return m->n_t;
}

pk_status pk_model_tensor(const pk_model *m, size_t i, pk_tensor_info *out)
{
    if (i >= m->n_t)
        return PK_ERR_ARG;
    const pk_tensor *t = &m->t[i];
    out->name = t->name;
    out->dtype = t->dtype;
    out->ndim = t->ndim;
    for (int d = 0; d < 4; d++)
        out->shape[d] = t->shape[d];
    out->numel = t->numel;
    out->key = t->key;
    out->data = t->data;
    out->is_bias_or_norm = t->is_bias_or_norm;
    return PK_OK;
}

int pk_model_tensor_index(const pk_model *m, const char *name)
{
    size_t lo = 0, hi = m->n_t;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(m->t[mid].name, name);
        if (c == 0)
            return (int)mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* ---- make-model: random weights for a config ---- */

typedef struct make_ctx {
    loader *ld;
    uint64_t seed;
    int norm_one; /* unused */
} make_ctx;

static void make_fill(void *user, size_t i, size_t start, size_t n, float *buf)
{
    const make_ctx *mc = user;
    const loader *ld = mc->ld;
    const char *name = ld->want_names[i];
    size_t l = strlen(name);
    int is_norm_w = ld->want_bn[i] && l > 7 && strcmp(name + l - 7, ".weight") == 0;
    pk_z_fill(mc->seed, pk_rng_tensor_key(name), start, n, PK_Z_GAUSSIAN, buf);
    for (size_t j = 0; j < n; j++)
        buf[j] = is_norm_w ? 1.0f + 0.05f * buf[j] : 0.02f * buf[j];
}

pk_status pk_model_make(const char *config_json, size_t len, const char *out_dir, pk_dtype dtype,
                        uint64_t seed, char *err, size_t errlen)
{
    loader ld = {0};
    pk_model mm;
    memset(&mm, 0, sizeof mm);
    char path[4096];
    if (pk_dtype_is_quant(dtype)) { /* quantize a made model with pocketllm quantize */
        pk_seterr(err, errlen, "%s: random models are written as F32, F16 or BF16, not %s", out_dir,
                  pk_dtype_name(dtype));
        return PK_ERR_ARG;
    }
    pk_status st = pk_cfg_parse("config.json", config_json, len, &mm.cfg, err, errlen);
    if (st != PK_OK)
        return st;
    mm.layers = calloc((size_t)mm.cfg.L, sizeof *mm.layers);
    if (!mm.layers)
        return PK_ERR_NOMEM;
    ld.m = &mm;
    ld.err = err;
    ld.errlen = errlen;
    ld.collect = 1;
    init_indices(&mm);
    switch (mm.cfg.arch) {
    case ARCH_LLAMA:
    case ARCH_QWEN2:
        bind_llama(&ld, &mm);
        break;
    case ARCH_OPT:
        bind_opt(&ld, &mm);
        break;
    case ARCH_GPT2:
        bind_gpt2(&ld, &mm);
        break;
    default:
        bind_roberta(&ld, &mm);
        break;
    }
    st = ld.bad ? ld.st : PK_OK;
    if (st != PK_OK)
        goto out;
    for (size_t i = 0; i < ld.n_want; i++) {
        ld.want[i].name = ld.want_names[i];
        ld.want[i].dtype = dtype;
    }
    if (mkdir(out_dir, 0700) != 0 && errno != EEXIST) {
        pk_seterr(err, errlen, "%s: cannot create directory: %s", out_dir, strerror(errno));
        st = PK_ERR_IO;
        goto out;
    }
    snprintf(path, sizeof path, "%s/config.json", out_dir);
    FILE *f = pk_fopen_private(path, "wb");
    if (!f || fwrite(config_json, 1, len, f) != len) {
        pk_seterr(err, errlen, "%s: write failed: %s", path, strerror(errno));
        if (f)
            fclose(f);
        st = PK_ERR_IO;
        goto out;
    }
    if (fclose(f) != 0) {
        pk_seterr(err, errlen, "%s: write failed: %s", path, strerror(errno));
        st = PK_ERR_IO;
        goto out;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", out_dir);
    make_ctx mc = {&ld, seed, 0};
    st = pk_safetensors_write(path, ld.want, ld.n_want, make_fill, &mc, err, errlen);
out:
    free(ld.want);
    free(ld.want_names);
    free(ld.want_bn);
    free(mm.layers);
    return st;
}
