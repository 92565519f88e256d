/* tokenizer.c: the pk_tokenizer handle: vocabulary and merge tables, special-token config
 * (tokenizer_config.json, special_tokens_map.json, config.json), the encode driver that splits
 * out added tokens, decoding and streaming decode. The merge loop lives in tokenizer_bpe.c,
 * the file parsers in tokenizer_json.c and tokenizer_sp.c. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "tokenizer_impl.h"

#define TOK_MAX_FILE ((size_t)1 << 30) /* 1 GiB cap on any tokenizer file */

uint64_t tok_hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

pk_status tok_read_file(const char *path, char **data, size_t *len, char *err, size_t errlen)
{
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        pk_seterr(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return errno == ENOENT ? PK_ERR_NOTFOUND : PK_ERR_IO;
    }
    pk_status st = PK_OK;
    char *buf = NULL;
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        pk_seterr(err, errlen, "%s: not a regular file", path);
        st = PK_ERR_IO;
        goto out;
    }
    if ((uint64_t)sb.st_size > TOK_MAX_FILE) {
        pk_seterr(err, errlen, "%s: file too large (%lld bytes)", path, (long long)sb.st_size);
        st = PK_ERR_LIMIT;
        goto out;
    }
    size_t sz = (size_t)sb.st_size;
    buf = malloc(sz + 1);
    if (!buf) {
        st = PK_ERR_NOMEM;
        goto out;
    }
    if (sz && fread(buf, 1, sz, f) != sz) {
        pk_seterr(err, errlen, "%s: read error", path);
        st = PK_ERR_IO;
        goto out;
    }
    buf[sz] = 0;
    *data = buf;
    *len = sz;
    buf = NULL;
out:
    free(buf);
    fclose(f);
    return st;
}

pk_tokenizer *tok_alloc(void)
{
    pk_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->bos = t->eos = t->pad = t->mask = t->unk = t->cls = t->sep = -1;
    t->add_bos = t->add_eos = -1; /* unset */
    t->sp_escape_ws = 1;
    for (int i = 0; i < 256; i++) {
        t->byte_id[i] = -1;
        t->byte_piece[i] = -1;
    }
    return t;
}

pk_status tok_reserve(pk_tokenizer *t, size_t n)
{
    if (n <= t->n_ids)
        return PK_OK;
    if (n > ((size_t)1 << 24))
        return PK_ERR_LIMIT;
    char **p = realloc(t->piece, n * sizeof *p);
    if (!p)
        return PK_ERR_NOMEM;
    t->piece = p;
    uint32_t *l = realloc(t->piece_len, n * sizeof *l);
    if (!l)
        return PK_ERR_NOMEM;
    t->piece_len = l;
    uint8_t *fl = realloc(t->flags, n);
    if (!fl)
        return PK_ERR_NOMEM;
    t->flags = fl;
    for (size_t i = t->n_ids; i < n; i++) {
        t->piece[i] = NULL;
        t->piece_len[i] = 0;
        t->flags[i] = 0;
    }
    t->n_ids = n;
    return PK_OK;
}

pk_status tok_set_piece(pk_tokenizer *t, int32_t id, const char *s, size_t n)
{
    if (id < 0)
        return PK_ERR_FORMAT;
    if ((size_t)id >= t->n_ids) {
        pk_status st = tok_reserve(t, (size_t)id + 1);
        if (st != PK_OK)
            return st;
    }
    if (n > UINT32_MAX / 2)
        return PK_ERR_LIMIT;
    char *c = malloc(n + 1);
    if (!c)
        return PK_ERR_NOMEM;
    memcpy(c, s, n);
    c[n] = 0;
    free(t->piece[id]);
    t->piece[id] = c;
    t->piece_len[id] = (uint32_t)n;
    return PK_OK;
}

pk_status tok_build_vocab_index(pk_tokenizer *t)
{
    size_t cap = 16;
    while (cap < t->n_ids * 2 + 16)
        cap *= 2;
    uint32_t *ht = calloc(cap, sizeof *ht);
    if (!ht)
        return PK_ERR_NOMEM;
    for (size_t id = 0; id < t->n_ids; id++) {
        if (!t->piece[id])
            continue;
        size_t h = (size_t)tok_hash(t->piece[id], t->piece_len[id]) & (cap - 1);
        int dup = 0;
        while (ht[h]) {
            uint32_t o = ht[h] - 1;
            if (t->piece_len[o] == t->piece_len[id] &&
                memcmp(t->piece[o], t->piece[id], t->piece_len[id]) == 0) {
                dup = 1; /* keep the lower id (added duplicates of vocab entries) */
                break;
            }
            h = (h + 1) & (cap - 1);
        }
        if (!dup)
            ht[h] = (uint32_t)id + 1;
    }
    free(t->vocab_ht);
    t->vocab_ht = ht;
    t->vocab_cap = cap;
    return PK_OK;
}

int32_t tok_lookup(const pk_tokenizer *t, const char *s, size_t n)
{
    if (!t->vocab_ht)
        return -1;
    size_t h = (size_t)tok_hash(s, n) & (t->vocab_cap - 1);
    while (t->vocab_ht[h]) {
        uint32_t id = t->vocab_ht[h] - 1;
        if (t->piece_len[id] == n && memcmp(t->piece[id], s, n) == 0)
            return (int32_t)id;
        h = (h + 1) & (t->vocab_cap - 1);
    }
    return -1;
}

static size_t merge_slot(uint64_t key, size_t cap)
{
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 20) & (cap - 1);
}

pk_status tok_merges_init(pk_tokenizer *t, size_t n)
{
    size_t cap = 16;
    while (cap < n * 2 + 16)
        cap *= 2;
    free(t->merges);
    t->merges = malloc(cap * sizeof *t->merges);
    t->merge_cap = cap;
    if (!t->merges)
        return PK_ERR_NOMEM;
    for (size_t i = 0; i < cap; i++)
        t->merges[i].key = UINT64_MAX;
    return PK_OK;
}

void tok_merge_add(pk_tokenizer *t, int32_t a, int32_t b, int32_t rank, int32_t id)
{
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t h = merge_slot(key, t->merge_cap);
    while (t->merges[h].key != UINT64_MAX) {
        if (t->merges[h].key == key)
            return; /* the first (lowest-rank) occurrence wins, as in HF */
        h = (h + 1) & (t->merge_cap - 1);
    }
    t->merges[h] = (tok_merge){key, rank, id};
}

int tok_merge_find(const pk_tokenizer *t, int32_t a, int32_t b, int32_t *rank, int32_t *id)
{
    if (!t->merges || a < 0 || b < 0)
        return 0;
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t h = merge_slot(key, t->merge_cap);
    for (;;) {
        uint64_t k = t->merges[h].key;
        if (k == key) {
            *rank = t->merges[h].rank;
            *id = t->merges[h].id;
            return 1;
        }
        if (k == UINT64_MAX)
            return 0;
        h = (h + 1) & (t->merge_cap - 1);
    }
}

pk_status tok_add_token(pk_tokenizer *t, const char *s, size_t n, int32_t id, int special,
                        int lstrip, int rstrip, int single_word)
{
    if (n == 0 || id < 0)
        return PK_ERR_FORMAT;
    for (size_t i = 0; i < t->n_added; i++) {
        if (t->added[i].id == id || (t->added[i].len == n && !memcmp(t->added[i].content, s, n))) {
            t->added[i].special |= special;
            if ((size_t)t->added[i].id < t->n_ids && special)
                t->flags[t->added[i].id] |= TOKF_SPECIAL;
            return PK_OK;
        }
    }
    if (t->n_added >= 1u << 20)
        return PK_ERR_LIMIT;
    tok_added *a = realloc(t->added, (t->n_added + 1) * sizeof *a);
    if (!a)
        return PK_ERR_NOMEM;
    t->added = a;
    char *c = malloc(n + 1);
    if (!c)
        return PK_ERR_NOMEM;
    memcpy(c, s, n);
    c[n] = 0;
    t->added[t->n_added++] = (tok_added){c, n, id, special, lstrip, rstrip, single_word};
    if ((size_t)id >= t->n_ids || !t->piece[id]) {
        pk_status st = tok_set_piece(t, id, s, n);
        if (st != PK_OK)
            return st;
    }
    t->flags[id] |= TOKF_ADDED | (special ? TOKF_SPECIAL : 0);
    return PK_OK;
}

static int added_cmp(const void *pa, const void *pb)
{
    const tok_added *a = pa, *b = pb;
    if (a->len != b->len)
        return a->len > b->len ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

void tok_finish_added(pk_tokenizer *t)
{
    if (t->n_added)
        qsort(t->added, t->n_added, sizeof *t->added, added_cmp);
    memset(t->added_first, 0, sizeof t->added_first);
    for (size_t i = 0; i < t->n_added; i++)
        t->added_first[(uint8_t)t->added[i].content[0]] = 1;
}

void tok_find_byte_pieces(pk_tokenizer *t)
{
    static const char hex[] = "0123456789ABCDEF";
    for (int b = 0; b < 256; b++) {
        char s[7] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>', 0};
        t->byte_piece[b] = tok_lookup(t, s, 6);
        if (t->byte_piece[b] >= 0)
            t->flags[t->byte_piece[b]] |= TOKF_BYTE;
    }
}

/* ---- loading ---- */

static int file_exists(const char *dir, const char *name, char *path, size_t n)
{
    int w = snprintf(path, n, "%s/%s", dir, name);
    if (w < 0 || (size_t)w >= n)
        return 0;
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* A special token entry: "..." or {"content": "..."}. */
static const char *json_token_str(const cJSON *v)
{
    if (cJSON_IsString(v))
        return v->valuestring;
    if (cJSON_IsObject(v)) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
        if (cJSON_IsString(c))
            return c->valuestring;
    }
    return NULL;
}

static const char *const special_keys[] = {"bos_token",  "eos_token", "unk_token", "pad_token",
                                           "mask_token", "cls_token", "sep_token"};

static int32_t *special_slot(pk_tokenizer *t, int k)
{
    int32_t *slots[] = {&t->bos, &t->eos, &t->unk, &t->pad, &t->mask, &t->cls, &t->sep};
    return slots[k];
}

/* Applies the special-token strings of a tokenizer_config.json / special_tokens_map.json. */
static pk_status apply_special_map(pk_tokenizer *t, const cJSON *root)
{
    for (int k = 0; k < 7; k++) {
        const char *s = json_token_str(cJSON_GetObjectItemCaseSensitive(root, special_keys[k]));
        if (!s || !*s)
            continue;
        int32_t id = tok_lookup(t, s, strlen(s));
        if (id < 0)
            continue;
        *special_slot(t, k) = id;
        if (!t->sp_model) {
            pk_status st = tok_add_token(t, s, strlen(s), id, 1, 0, 0, 0);
            if (st != PK_OK)
                return st;
        } else {
            t->flags[id] |= TOKF_SPECIAL;
        }
    }
    return PK_OK;
}

static pk_status apply_added_decoder(pk_tokenizer *t, const cJSON *root)
{
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "added_tokens_decoder");
    const cJSON *e;
    cJSON_ArrayForEach(e, dec)
    {
        char *end = NULL;
        long id = strtol(e->string ? e->string : "", &end, 10);
        const char *s = json_token_str(e);
        if (!end || *end || id < 0 || id >= (1L << 24) || !s || !*s)
            continue;
        if (t->sp_model && (size_t)id < t->n_ids)
            continue; /* SentencePiece pieces keep their protobuf types */
        int sp = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "special"));
        int l = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "lstrip"));
        int r = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "rstrip"));
        int w = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "single_word"));
        pk_status st = tok_add_token(t, s, strlen(s), (int32_t)id, sp, l, r, w);
        if (st != PK_OK)
            return st;
    }
    return PK_OK;
}

static pk_status load_config_json(pk_tokenizer *t, const char *dir, const char *name, char *err,
                                  size_t errlen)
{
    char path[4096];
    if (!file_exists(dir, name, path, sizeof path))
        return PK_OK;
    char *data = NULL;
    size_t len = 0;
    pk_status st = tok_read_file(path, &data, &len, err, errlen);
    if (st != PK_OK)
        return st;
    cJSON *root = cJSON_ParseWithLength(data, len);
    free(data);
    if (!cJSON_IsObject(root)) {
        pk_seterr(err, errlen, "%s: not a JSON object (malformed or truncated)", path);
        cJSON_Delete(root);
        return PK_ERR_FORMAT;
    }
    if (!strcmp(name, "config.json")) {
        const char *keys[] = {"bos_token_id", "eos_token_id", "pad_token_id"};
        int32_t *slots[] = {&t->bos, &t->eos, &t->pad};
        for (int k = 0; k < 3; k++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, keys[k]);
            if (cJSON_IsArray(v))
                v = cJSON_GetArrayItem(v, 0);
            if (cJSON_IsNumber(v) && *slots[k] < 0 && v->valuedouble >= 0 &&
                v->valuedouble < (double)t->n_ids)
                *slots[k] = (int32_t)v->valuedouble;
        }
        goto out;
    }
    st = apply_added_decoder(t, root);
    if (st == PK_OK)
        st = tok_build_vocab_index(t); /* so the special-token strings below resolve */
    if (st == PK_OK)
        st = apply_special_map(t, root);
    const cJSON *ab = cJSON_GetObjectItemCaseSensitive(root, "add_bos_token");
    const cJSON *ae = cJSON_GetObjectItemCaseSensitive(root, "add_eos_token");
    if (cJSON_IsBool(ab))
        t->add_bos = cJSON_IsTrue(ab);
    if (cJSON_IsBool(ae))
        t->add_eos = cJSON_IsTrue(ae);
    const cJSON *cls = cJSON_GetObjectItemCaseSensitive(root, "tokenizer_class");
    if (cJSON_IsString(cls) && t->n_prefix == 0 && t->n_suffix == 0 &&
        (strstr(cls->valuestring, "Roberta") || strstr(cls->valuestring, "Bart")))
        t->add_bos = t->add_bos < 0 ? 2 : t->add_bos; /* 2: RoBERTa <s> ... </s> */
out:
    cJSON_Delete(root);
    return st;
}

/* Fills prefix/suffix ids for add_special from the collected settings. */
static pk_status finish_specials(pk_tokenizer *t)
{
    if (t->add_bos < 0 && t->add_eos < 0 && (t->n_prefix || t->n_suffix))
        return PK_OK; /* tokenizer.json post_processor template */
    free(t->prefix_ids);
    free(t->suffix_ids);
    t->prefix_ids = t->suffix_ids = NULL;
    t->n_prefix = t->n_suffix = 0;
    int bos = 0, eos = 0;
    if (t->add_bos == 2) { /* RoBERTa family: <s> text </s> */
        bos = eos = 1;
    } else if (t->add_bos >= 0 || t->add_eos >= 0) {
        bos = t->add_bos > 0;
        eos = t->add_eos > 0;
    } else if (t->sp_model) {
        bos = 1;
    } else {
        /* byte-level without a template: Llama-3 style BOS when BOS is its own token (GPT-2's
         * bos == eos == <|endoftext|> adds nothing); RoBERTa-style vocabularies wrap. */
        int32_t s = tok_lookup(t, "<s>", 3), e = tok_lookup(t, "</s>", 4);
        if (s >= 0 && e >= 0 && t->bos == s && t->eos == e && t->byte_level) {
            bos = eos = 1;
        } else if (t->bos >= 0 && t->bos != t->eos) {
            bos = 1;
        }
    }
    if (bos && t->bos >= 0) {
        t->prefix_ids = malloc(sizeof(int32_t));
        if (!t->prefix_ids)
            return PK_ERR_NOMEM;
        t->prefix_ids[0] = t->bos;
        t->n_prefix = 1;
    }
    if (eos && t->eos >= 0) {
        t->suffix_ids = malloc(sizeof(int32_t));
        if (!t->suffix_ids)
            return PK_ERR_NOMEM;
        t->suffix_ids[0] = t->eos;
        t->n_suffix = 1;
    }
    return PK_OK;
}

/* Reads the file at path and hands it to the tokenizer.json parser, or with sp to the
 * SentencePiece model parser; path names the buffer in their messages. */
static pk_status load_file(pk_tokenizer *t, const char *path, int sp, char *err, size_t errlen)
{
    char *data = NULL;
    size_t n = 0;
    pk_status st = tok_read_file(path, &data, &n, err, errlen);
    if (st == PK_OK)
        st = sp ? tok_load_sp_buffer(t, (const uint8_t *)data, n, path, err, errlen)
                : tok_load_json_buffer(t, data, n, path, err, errlen);
    free(data);
    return st;
}

static pk_status load_main(pk_tokenizer *t, const char *dir, char *err, size_t errlen)
{
    char p1[4096], p2[4096];
    if (file_exists(dir, "tokenizer.json", p1, sizeof p1))
        return load_file(t, p1, 0, err, errlen);
    if (file_exists(dir, "vocab.json", p1, sizeof p1)) {
        if (!file_exists(dir, "merges.txt", p2, sizeof p2)) {
            pk_seterr(err, errlen, "%s: found vocab.json but no merges.txt next to it", p2);
            return PK_ERR_NOTFOUND;
        }
        return tok_load_vocab_merges(t, p1, p2, err, errlen);
    }
    if (file_exists(dir, "tokenizer.model", p1, sizeof p1))
        return load_file(t, p1, 1, err, errlen);
    pk_seterr(err, errlen,
              "%s: no tokenizer files (expected tokenizer.json, vocab.json + merges.txt, or "
              "tokenizer.model)",
              dir);
    return PK_ERR_NOTFOUND;
}

pk_status pk_tokenizer_load(const char *dir, pk_tokenizer **out, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = 0;
    if (!out)
        return PK_ERR_ARG;
    *out = NULL;
    if (!dir) {
        pk_seterr(err, errlen, "tokenizer: no directory given");
        return PK_ERR_ARG;
    }
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        pk_seterr(err, errlen, "%s: not a directory", dir);
        return PK_ERR_NOTFOUND;
    }
    pk_tokenizer *t = tok_alloc();
    if (!t)
        return PK_ERR_NOMEM;
    pk_status st = load_main(t, dir, err, errlen);
    if (st != PK_OK)
        goto out;
    const char *cfg[] = {"tokenizer_config.json", "special_tokens_map.json", "config.json"};
    for (int i = 0; i < 3 && st == PK_OK; i++)
        st = load_config_json(t, dir, cfg[i], err, errlen);
    if (st != PK_OK)
        goto out;
    if (t->unk >= 0)
        t->flags[t->unk] |= TOKF_UNK;
    st = finish_specials(t);
    if (st != PK_OK)
        goto out;
    st = tok_build_vocab_index(t);
    if (st != PK_OK)
        goto out;
    tok_finish_added(t);
    *out = t;
    t = NULL;
out:
    if (st == PK_ERR_NOMEM && err && errlen && !err[0])
        pk_seterr(err, errlen, "%s: out of memory loading the tokenizer", dir);
    pk_tokenizer_free(t);
    return st;
}

void pk_tokenizer_free(pk_tokenizer *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n_ids; i++)
        free(t->piece[i]);
    free(t->piece);
    free(t->piece_len);
    free(t->flags);
    free(t->vocab_ht);
    free(t->merges);
    for (int i = 0; i < t->n_pre; i++)
        pcre2_code_free(t->pre[i].code);
    for (int i = 0; i < t->n_norm_rep; i++) {
        free(t->norm_rep[i].from);
        free(t->norm_rep[i].to);
    }
    for (int i = 0; i < t->n_dec_rep; i++) {
        free(t->dec_rep[i].from);
        free(t->dec_rep[i].to);
    }
    free(t->prepend);
    for (size_t i = 0; i < t->n_added; i++)
        free(t->added[i].content);
    free(t->added);
    free(t->prefix_ids);
    free(t->suffix_ids);
    free(t);
}

/* ---- encode ---- */

pk_status tok_ids_push(tok_ids *b, int32_t id)
{
    int32_t *v = pk_grow(b->v, &b->cap, b->n + 1, sizeof *v, 64);
    if (!v)
        return PK_ERR_NOMEM;
    b->v = v;
    b->v[b->n++] = id;
    return PK_OK;
}

static int is_ws(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static int is_word_byte(uint8_t c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
           c >= 0x80;
}

/* The longest added token matching at text[pos], or NULL. */
static const tok_added *match_added(const pk_tokenizer *t, const char *s, size_t len, size_t pos)
{
    for (size_t i = 0; i < t->n_added; i++) {
        const tok_added *a = &t->added[i];
        if (a->len > len - pos || memcmp(s + pos, a->content, a->len) != 0)
            continue;
        if (a->single_word && ((pos > 0 && is_word_byte((uint8_t)s[pos - 1])) ||
                               (pos + a->len < len && is_word_byte((uint8_t)s[pos + a->len]))))
            continue;
        return a;
    }
    return NULL;
}

pk_status pk_tokenizer_encode(const pk_tokenizer *t, const char *text, size_t len, int add_special,
                              int32_t **ids, size_t *n)
{
    if (!t || !ids || !n || (!text && len))
        return PK_ERR_ARG;
    *ids = NULL;
    *n = 0;
    tok_ids out = {0};
    pk_status st = PK_OK;
    if (len == 0 && !(add_special && (t->n_prefix || t->n_suffix)))
        return PK_OK;
    tok_cache *cache = tok_cache_new(len);
    if (!cache)
        return PK_ERR_NOMEM;
    for (size_t i = 0; add_special && i < t->n_prefix && st == PK_OK; i++)
        st = tok_ids_push(&out, t->prefix_ids[i]);
    size_t seg = 0, pos = 0;
    while (st == PK_OK && pos < len) {
        const tok_added *a = NULL;
        if (t->added_first[(uint8_t)text[pos]])
            a = match_added(t, text, len, pos);
        if (!a) {
            pos++;
            continue;
        }
        size_t end = pos;
        if (a->lstrip)
            while (end > seg && is_ws((uint8_t)text[end - 1]))
                end--;
        st = tok_encode_plain(t, text + seg, end - seg, seg == 0, cache, &out);
        if (st == PK_OK)
            st = tok_ids_push(&out, a->id);
        pos += a->len;
        if (a->rstrip)
            while (pos < len && is_ws((uint8_t)text[pos]))
                pos++;
        seg = pos;
    }
    if (st == PK_OK && seg < len)
        st = tok_encode_plain(t, text + seg, len - seg, seg == 0, cache, &out);
    for (size_t i = 0; add_special && i < t->n_suffix && st == PK_OK; i++)
        st = tok_ids_push(&out, t->suffix_ids[i]);
    tok_cache_free(cache);
    if (st != PK_OK) {
        free(out.v);
        return st;
    }
    *ids = out.v;
    *n = out.n;
    return PK_OK;
}

/* ---- decode ---- */

typedef struct tok_buf {
    char *p;
    size_t n, cap;
} tok_buf;

static pk_status buf_put(tok_buf *b, const char *s, size_t n)
{
    return pk_text_append(&b->p, &b->n, &b->cap, s, n, 64) == 0 ? PK_OK : PK_ERR_NOMEM;
}

/* Decodes one UTF-8 code point at s[*i] (len n); returns -1 on invalid input (advancing 1). */
static int32_t utf8_next(const char *s, size_t n, size_t *i)
{
    const uint8_t *u = (const uint8_t *)s + *i;
    size_t left = n - *i;
    int32_t cp;
    size_t k;
    if (u[0] < 0x80) {
        *i += 1;
        return u[0];
    } else if ((u[0] & 0xE0) == 0xC0) {
        cp = u[0] & 0x1F;
        k = 2;
    } else if ((u[0] & 0xF0) == 0xE0) {
        cp = u[0] & 0x0F;
        k = 3;
    } else if ((u[0] & 0xF8) == 0xF0) {
        cp = u[0] & 0x07;
        k = 4;
    } else {
        *i += 1;
        return -1;
    }
    if (left < k) {
        *i += 1;
        return -1;
    }
    for (size_t j = 1; j < k; j++) {
        if ((u[j] & 0xC0) != 0x80) {
            *i += 1;
            return -1;
        }
        cp = cp << 6 | (u[j] & 0x3F);
    }
    *i += k;
    return cp;
}

/* Appends the bytes of one token; *first is 1 until a token has produced output. */
static pk_status decode_one(const pk_tokenizer *t, int32_t id, int skip_special, int *first,
                            tok_buf *b)
{
    uint8_t fl = t->flags[id];
    const char *p = t->piece[id] ? t->piece[id] : "";
    size_t pn = t->piece_len[id];
    size_t start = b->n;
    pk_status st = PK_OK;
    if ((fl & TOKF_SPECIAL) && skip_special)
        return PK_OK;
    if (fl & TOKF_ADDED) {
        st = buf_put(b, p, pn);
    } else if (fl & TOKF_CONTROL) {
        if (!skip_special)
            st = buf_put(b, p, pn);
        *first = 0;
        return st;
    } else if ((fl & TOKF_BYTE) && t->dec_byte_fallback) {
        for (int v = 0; v < 256; v++)
            if (t->byte_piece[v] == id) {
                char c = (char)v;
                st = buf_put(b, &c, 1);
                break;
            }
    } else if (t->dec_byte_level) {
        size_t i = 0;
        while (i < pn && st == PK_OK) {
            size_t at = i;
            int32_t cp = utf8_next(p, pn, &i);
            if (cp >= 0 && cp < 324 && t->cp_ok[cp]) {
                char c = (char)t->cp_byte[cp];
                st = buf_put(b, &c, 1);
            } else {
                st = buf_put(b, p + at, i - at);
            }
        }
    } else {
        size_t i = 0;
        while (i < pn && st == PK_OK) {
            int hit = 0;
            for (int r = 0; r < t->n_dec_rep && !hit; r++) {
                const tok_replace *rp = &t->dec_rep[r];
                if (rp->from_len && rp->from_len <= pn - i &&
                    !memcmp(p + i, rp->from, rp->from_len)) {
                    st = buf_put(b, rp->to, rp->to_len);
                    i += rp->from_len;
                    hit = 1;
                }
            }
            if (!hit)
                st = buf_put(b, p + i++, 1);
        }
    }
    if (st == PK_OK && *first && t->dec_strip_lead && b->n > start && b->p[start] == ' ') {
        memmove(b->p + start, b->p + start + 1, b->n - start - 1);
        b->n--;
        b->p[b->n] = 0;
    }
    *first = 0;
    return st;
}

pk_status pk_tokenizer_decode(const pk_tokenizer *t, const int32_t *ids, size_t n, int skip_special,
                              char **text, size_t *len)
{
    if (!t || !text || !len || (!ids && n))
        return PK_ERR_ARG;
    *text = NULL;
    *len = 0;
    tok_buf b = {0};
    pk_status st = buf_put(&b, "", 0);
    int first = 1;
    for (size_t i = 0; i < n && st == PK_OK; i++) {
        if (ids[i] < 0 || (size_t)ids[i] >= t->n_ids) {
            st = PK_ERR_ARG;
            break;
        }
        st = decode_one(t, ids[i], skip_special, &first, &b);
    }
    if (st != PK_OK) {
        free(b.p);
        return st;
    }
    *text = b.p;
    *len = b.n;
    return PK_OK;
}

/* ---- lookups ---- */

int32_t pk_tokenizer_token_id(const pk_tokenizer *t, const char *piece)
{
    if (!t || !piece)
        return -1;
    return tok_lookup(t, piece, strlen(piece));
}

int32_t pk_tokenizer_bos(const pk_tokenizer *t)
{
    return t ? t->bos : -1;
}

int32_t pk_tokenizer_eos(const pk_tokenizer *t)
{
    return t ? t->eos : -1;
}

int32_t pk_tokenizer_pad(const pk_tokenizer *t)
{
    return t ? t->pad : -1;
}

int32_t pk_tokenizer_mask(const pk_tokenizer *t)
{
    return t ? t->mask : -1;
}

int32_t pk_tokenizer_unk(const pk_tokenizer *t)
{
    return t ? t->unk : -1;
}

size_t pk_tokenizer_vocab_size(const pk_tokenizer *t)
{
    return t ? t->n_ids : 0;
}

/* ---- streaming ---- */

struct pk_tokenizer_stream {
    const pk_tokenizer *t; /* borrowed */
    int skip_special;
    int first;    /* no token has produced output yet */
    tok_buf pend; /* decoded bytes not yet returned */
    tok_buf view; /* the last returned bytes */
};

pk_status pk_tokenizer_stream_new(const pk_tokenizer *t, int skip_special,
                                  pk_tokenizer_stream **out)
{
    if (!t || !out)
        return PK_ERR_ARG;
    *out = calloc(1, sizeof **out);
    if (!*out)
        return PK_ERR_NOMEM;
    (*out)->t = t;
    (*out)->skip_special = skip_special;
    (*out)->first = 1;
    return PK_OK;
}

/* Length of the longest prefix of s that does not end inside an incomplete UTF-8 sequence. */
static size_t complete_prefix(const char *s, size_t n)
{
    size_t back = 0;
    while (back < 3 && back < n && (((uint8_t)s[n - 1 - back]) & 0xC0) == 0x80)
        back++;
    if (back == n)
        return n;
    uint8_t lead = (uint8_t)s[n - 1 - back];
    size_t need = lead >= 0xF0 && lead < 0xF8   ? 4
                  : lead >= 0xE0 && lead < 0xF0 ? 3
                  : lead >= 0xC0 && lead < 0xE0 ? 2
                                                : 1;
    if (need > 1 && back + 1 < need)
        return n - 1 - back; /* hold the incomplete character back */
    return n;
}

static pk_status stream_take(pk_tokenizer_stream *s, size_t k, const char **bytes, size_t *len)
{
    s->view.n = 0;
    pk_status st = buf_put(&s->view, s->pend.p ? s->pend.p : "", k);
    if (st != PK_OK)
        return st;
    memmove(s->pend.p, s->pend.p + k, s->pend.n - k);
    s->pend.n -= k;
    s->pend.p[s->pend.n] = 0;
    *bytes = s->view.p;
    *len = k;
    return PK_OK;
}

pk_status pk_tokenizer_stream_push(pk_tokenizer_stream *s, int32_t id, const char **bytes,
                                   size_t *len)
{
    if (!s || !bytes || !len)
        return PK_ERR_ARG;
    *bytes = "";
    *len = 0;
    if (id < 0 || (size_t)id >= s->t->n_ids)
        return PK_ERR_ARG;
    pk_status st = buf_put(&s->pend, "", 0);
    if (st == PK_OK)
        st = decode_one(s->t, id, s->skip_special, &s->first, &s->pend);
    if (st != PK_OK)
        return st;
    return stream_take(s, complete_prefix(s->pend.p, s->pend.n), bytes, len);
}

pk_status pk_tokenizer_stream_flush(pk_tokenizer_stream *s, const char **bytes, size_t *len)
{
    if (!s || !bytes || !len)
        return PK_ERR_ARG;
    pk_status st = buf_put(&s->pend, "", 0);
    if (st != PK_OK)
        return st;
    st = stream_take(s, s->pend.n, bytes, len);
    s->first = 1;
    return st;
}

void pk_tokenizer_stream_free(pk_tokenizer_stream *s)
{
    if (!s)
        return;
    free(s->pend.p);
    free(s->view.p);
    free(s);
}
