/* tokenizer_json.c: Hugging Face BPE files: tokenizer.json (model BPE; normalizers, the
 * ByteLevel / Split / Metaspace / Digits pre-tokenizers, decoders, post-processor templates,
 * added tokens) and the older vocab.json + merges.txt pair (GPT-2, OPT, RoBERTa).
 * Every problem is reported with the file name and the key or line at fault. */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "tokenizer_impl.h"

static const cJSON *item(const cJSON *o, const char *k)
{
    return cJSON_GetObjectItemCaseSensitive(o, k);
}

static const char *str_item(const cJSON *o, const char *k)
{
    const cJSON *v = item(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int bool_item(const cJSON *o, const char *k, int def)
{
    const cJSON *v = item(o, k);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : def;
}

static pk_status load_vocab_object(pk_tokenizer *t, const cJSON *vocab, const char *file, char *err,
                                   size_t errlen)
{
    if (!cJSON_IsObject(vocab)) {
        pk_seterr(err, errlen, "%s: vocab is missing or not an object", file);
        return PK_ERR_FORMAT;
    }
    size_t n = 0, maxid = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab)
    {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= (double)(1 << 24) ||
            e->valuedouble != (double)(int32_t)e->valuedouble) {
            pk_seterr(err, errlen, "%s: vocab entry \"%.40s\" has no valid integer id", file,
                      e->string ? e->string : "");
            return PK_ERR_FORMAT;
        }
        if ((size_t)e->valueint > maxid)
            maxid = (size_t)e->valueint;
        n++;
    }
    if (n == 0) {
        pk_seterr(err, errlen, "%s: vocab is empty", file);
        return PK_ERR_FORMAT;
    }
    pk_status st = tok_reserve(t, maxid + 1);
    cJSON_ArrayForEach(e, vocab)
    {
        if (st != PK_OK)
            break;
        st = tok_set_piece(t, (int32_t)e->valueint, e->string, strlen(e->string));
    }
    if (st == PK_OK)
        st = tok_build_vocab_index(t);
    return st;
}

/* One merge "a b" (len bytes) or the pair (a, b). */
static pk_status add_merge(pk_tokenizer *t, const char *a, size_t an, const char *b, size_t bn,
                           int32_t rank, const char *file, char *err, size_t errlen)
{
    int32_t ia = tok_lookup(t, a, an), ib = tok_lookup(t, b, bn);
    if (ia < 0 || ib < 0) {
        pk_seterr(err, errlen, "%s: merge %d refers to \"%.*s\" which is not in the vocab", file,
                  (int)rank + 1, (int)(ia < 0 ? (an > 40 ? 40 : an) : (bn > 40 ? 40 : bn)),
                  ia < 0 ? a : b);
        return PK_ERR_FORMAT;
    }
    char tmp[512];
    char *cat = an + bn <= sizeof tmp ? tmp : malloc(an + bn);
    if (!cat)
        return PK_ERR_NOMEM;
    memcpy(cat, a, an);
    memcpy(cat + an, b, bn);
    int32_t id = tok_lookup(t, cat, an + bn);
    if (cat != tmp)
        free(cat);
    if (id < 0) {
        pk_seterr(err, errlen, "%s: merge %d: the merged token \"%.*s%.*s\" is not in the vocab",
                  file, (int)rank + 1, (int)(an > 40 ? 40 : an), a, (int)(bn > 40 ? 40 : bn), b);
        return PK_ERR_FORMAT;
    }
    tok_merge_add(t, ia, ib, rank, id);
    return PK_OK;
}

static pk_status load_merges_array(pk_tokenizer *t, const cJSON *merges, const char *file,
                                   char *err, size_t errlen)
{
    if (!cJSON_IsArray(merges)) {
        pk_seterr(err, errlen, "%s: model.merges is missing or not an array", file);
        return PK_ERR_FORMAT;
    }
    size_t n = (size_t)cJSON_GetArraySize(merges);
    pk_status st = tok_merges_init(t, n);
    int32_t rank = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, merges)
    {
        if (st != PK_OK)
            break;
        if (cJSON_IsString(m)) {
            const char *sp = strchr(m->valuestring, ' ');
            if (!sp || sp == m->valuestring || !sp[1]) {
                pk_seterr(err, errlen,
                          "%s: merge %d \"%.40s\" is not two tokens separated by a space", file,
                          (int)rank + 1, m->valuestring);
                return PK_ERR_FORMAT;
            }
            st = add_merge(t, m->valuestring, (size_t)(sp - m->valuestring), sp + 1, strlen(sp + 1),
                           rank, file, err, errlen);
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 &&
                   cJSON_IsString(cJSON_GetArrayItem(m, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(m, 1))) {
            const char *a = cJSON_GetArrayItem(m, 0)->valuestring;
            const char *b = cJSON_GetArrayItem(m, 1)->valuestring;
            st = add_merge(t, a, strlen(a), b, strlen(b), rank, file, err, errlen);
        } else {
            pk_seterr(err, errlen, "%s: merge %d is neither \"a b\" nor [\"a\", \"b\"]", file,
                      (int)rank + 1);
            return PK_ERR_FORMAT;
        }
        rank++;
    }
    return st;
}

static pk_status add_replace(tok_replace *arr, int *n, const char *from, const char *to)
{
    if (*n >= TOK_MAX_REPLACE)
        return PK_ERR_UNSUPPORTED;
    tok_replace *r = &arr[*n];
    r->from = strdup(from);
    r->to = strdup(to);
    if (!r->from || !r->to) {
        free(r->from);
        free(r->to);
        return PK_ERR_NOMEM;
    }
    r->from_len = strlen(from);
    r->to_len = strlen(to);
    (*n)++;
    return PK_OK;
}

/* Parses one component (normalizer, pre_tokenizer, ...) of tokenizer.json. */
typedef pk_status (*component_fn)(pk_tokenizer *t, const cJSON *c, const char *file, char *err,
                                  size_t errlen);

/* A "Sequence" component `what`: parses each entry of its array `key` with fn, in order. With
 * need_array a missing array is malformed; without, it is an empty sequence. */
static pk_status parse_sequence(pk_tokenizer *t, const cJSON *c, const char *what, const char *key,
                                int need_array, component_fn fn, const char *file, char *err,
                                size_t errlen)
{
    const cJSON *list = item(c, key), *e;
    if (need_array && !cJSON_IsArray(list)) {
        pk_seterr(err, errlen, "%s: %s Sequence has no %s array", file, what, key);
        return PK_ERR_FORMAT;
    }
    cJSON_ArrayForEach(e, list)
    {
        pk_status st = fn(t, e, file, err, errlen);
        if (st != PK_OK)
            return st;
    }
    return PK_OK;
}

/* The head the normalizer, pre_tokenizer and decoder parsers share: an absent or null
 * component `what` is nothing to parse; one without a "type" is malformed; a "Sequence" is
 * parsed here (parse_sequence with key, need_array and fn). *type is set only when the caller
 * has the component's own type left to parse (else NULL, with PK_OK when all went well). */
static pk_status component_head(pk_tokenizer *t, const cJSON *c, const char *what, const char *key,
                                int need_array, component_fn fn, const char *file, char *err,
                                size_t errlen, const char **type)
{
    *type = NULL;
    if (!c || cJSON_IsNull(c))
        return PK_OK;
    const char *ty = str_item(c, "type");
    if (!ty) {
        pk_seterr(err, errlen, "%s: %s has no type", file, what);
        return PK_ERR_FORMAT;
    }
    if (!strcmp(ty, "Sequence"))
        return parse_sequence(t, c, what, key, need_array, fn, file, err, errlen);
    *type = ty;
    return PK_OK;
}

static pk_status parse_normalizer(pk_tokenizer *t, const cJSON *nz, const char *file, char *err,
                                  size_t errlen)
{
    const char *type = NULL;
    pk_status head = component_head(t, nz, "normalizer", "normalizers", 1, parse_normalizer, file,
                                    err, errlen, &type);
    if (head != PK_OK || !type)
        return head;
    if (!strcmp(type, "NFC"))
        t->nfc = 1;
    else if (!strcmp(type, "NFKC"))
        t->nfkc = 1;
    else if (!strcmp(type, "NFD"))
        t->nfd = 1;
    else if (!strcmp(type, "NFKD"))
        t->nfkd = 1;
    else if (!strcmp(type, "Lowercase"))
        t->lowercase = 1;
    else if (!strcmp(type, "Prepend")) {
        const char *p = str_item(nz, "prepend");
        if (!p) {
            pk_seterr(err, errlen, "%s: Prepend normalizer has no prepend string", file);
            return PK_ERR_FORMAT;
        }
        free(t->prepend);
        t->prepend = strdup(p);
        if (!t->prepend)
            return PK_ERR_NOMEM;
    } else if (!strcmp(type, "Replace")) {
        const char *from = str_item(item(nz, "pattern"), "String");
        const char *to = str_item(nz, "content");
        if (!from || !to) {
            pk_seterr(err, errlen,
                      "%s: Replace normalizer needs pattern.String and content (regex "
                      "patterns are not supported)",
                      file);
            return from || !item(item(nz, "pattern"), "Regex") ? PK_ERR_FORMAT : PK_ERR_UNSUPPORTED;
        }
        pk_status st = add_replace(t->norm_rep, &t->n_norm_rep, from, to);
        if (st != PK_OK) {
            pk_seterr(err, errlen, "%s: too many Replace normalizers", file);
            return st;
        }
    } else {
        pk_seterr(err, errlen, "%s: normalizer type %s is not supported", file, type);
        return PK_ERR_UNSUPPORTED;
    }
    return PK_OK;
}

static int split_behavior(const char *b)
{
    if (!b || !strcmp(b, "Isolated"))
        return SPLIT_ISOLATED;
    if (!strcmp(b, "Removed"))
        return SPLIT_REMOVED;
    if (!strcmp(b, "MergedWithPrevious"))
        return SPLIT_MERGED_PREV;
    if (!strcmp(b, "MergedWithNext"))
        return SPLIT_MERGED_NEXT;
    if (!strcmp(b, "Contiguous"))
        return SPLIT_CONTIGUOUS;
    return -1;
}

static pk_status parse_split(pk_tokenizer *t, const cJSON *p, const char *file, char *err,
                             size_t errlen)
{
    const cJSON *pat = item(p, "pattern");
    const char *re = str_item(pat, "Regex");
    const char *lit = str_item(pat, "String");
    int beh = split_behavior(str_item(p, "behavior"));
    if ((!re && !lit) || beh < 0) {
        pk_seterr(err, errlen,
                  "%s: Split pre-tokenizer needs pattern.Regex or pattern.String and a "
                  "known behavior",
                  file);
        return PK_ERR_FORMAT;
    }
    int inv = bool_item(p, "invert", 0);
    if (re)
        return tok_add_regex(t, re, strlen(re), beh, inv, err, errlen, file);
    if (strstr(lit, "\\E")) {
        pk_seterr(err, errlen, "%s: Split string pattern contains \\E", file);
        return PK_ERR_UNSUPPORTED;
    }
    size_t n = strlen(lit);
    char *q = malloc(n + 5);
    if (!q)
        return PK_ERR_NOMEM;
    memcpy(q, "\\Q", 2);
    memcpy(q + 2, lit, n);
    memcpy(q + 2 + n, "\\E", 3);
    pk_status st = tok_add_regex(t, q, n + 4, beh, inv, err, errlen, file);
    free(q);
    return st;
}

static pk_status parse_pretok(pk_tokenizer *t, const cJSON *p, const char *file, char *err,
                              size_t errlen)
{
    const char *type = NULL;
    pk_status st = component_head(t, p, "pre_tokenizer", "pretokenizers", 1, parse_pretok, file,
                                  err, errlen, &type);
    if (st != PK_OK || !type)
        return st;
    if (!strcmp(type, "ByteLevel")) {
        t->byte_level = 1;
        t->bl_add_prefix_space = bool_item(p, "add_prefix_space", 0);
        if (bool_item(p, "use_regex", 1))
            return tok_add_regex(t, tok_gpt2_pattern, strlen(tok_gpt2_pattern), SPLIT_ISOLATED, 0,
                                 err, errlen, file);
        return PK_OK;
    }
    if (!strcmp(type, "Split"))
        return parse_split(t, p, file, err, errlen);
    if (!strcmp(type, "Digits")) {
        const char *re = bool_item(p, "individual_digits", 0) ? "\\p{N}" : "\\p{N}+";
        return tok_add_regex(t, re, strlen(re), SPLIT_ISOLATED, 0, err, errlen, file);
    }
    if (!strcmp(type, "Metaspace")) {
        const char *rep = str_item(p, "replacement");
        if (rep && strcmp(rep, "\xe2\x96\x81")) {
            pk_seterr(err, errlen, "%s: Metaspace replacement other than U+2581 is not supported",
                      file);
            return PK_ERR_UNSUPPORTED;
        }
        t->metaspace = 1;
        const char *scheme = str_item(p, "prepend_scheme");
        if (scheme)
            t->metaspace_prepend = !strcmp(scheme, "always") ? 2 : !strcmp(scheme, "first") ? 1 : 0;
        else
            t->metaspace_prepend = bool_item(p, "add_prefix_space", 1) ? 2 : 0;
        t->metaspace_split = bool_item(p, "split", 1);
        return PK_OK;
    }
    pk_seterr(err, errlen, "%s: pre_tokenizer type %s is not supported", file, type);
    return PK_ERR_UNSUPPORTED;
}

static pk_status parse_decoder(pk_tokenizer *t, const cJSON *d, const char *file, char *err,
                               size_t errlen)
{
    const char *type = NULL;
    pk_status head =
        component_head(t, d, "decoder", "decoders", 0, parse_decoder, file, err, errlen, &type);
    if (head != PK_OK || !type)
        return head;
    if (!strcmp(type, "ByteLevel")) {
        t->dec_byte_level = 1;
    } else if (!strcmp(type, "ByteFallback")) {
        t->dec_byte_fallback = 1;
    } else if (!strcmp(type, "Fuse")) {
        /* joining is what we do anyway */
    } else if (!strcmp(type, "Strip")) {
        const cJSON *start = item(d, "start");
        t->dec_strip_lead = cJSON_IsNumber(start) && start->valueint > 0;
    } else if (!strcmp(type, "Replace")) {
        const char *from = str_item(item(d, "pattern"), "String");
        const char *to = str_item(d, "content");
        if (!from || !to) {
            pk_seterr(err, errlen, "%s: Replace decoder needs pattern.String and content", file);
            return PK_ERR_UNSUPPORTED;
        }
        pk_status st = add_replace(t->dec_rep, &t->n_dec_rep, from, to);
        if (st != PK_OK)
            return st;
    } else if (!strcmp(type, "Metaspace")) {
        pk_status st = add_replace(t->dec_rep, &t->n_dec_rep, "\xe2\x96\x81", " ");
        if (st != PK_OK)
            return st;
        const char *scheme = str_item(d, "prepend_scheme");
        t->dec_strip_lead =
            scheme ? strcmp(scheme, "never") != 0 : bool_item(d, "add_prefix_space", 1);
    } else {
        pk_seterr(err, errlen, "%s: decoder type %s is not supported", file, type);
        return PK_ERR_UNSUPPORTED;
    }
    return PK_OK;
}

static pk_status push_id(int32_t **arr, size_t *n, int32_t id)
{
    int32_t *a = realloc(*arr, (*n + 1) * sizeof *a);
    if (!a)
        return PK_ERR_NOMEM;
    a[(*n)++] = id;
    *arr = a;
    return PK_OK;
}

/* post_processor: TemplateProcessing (single), RobertaProcessing, BertProcessing. */
static pk_status parse_post(pk_tokenizer *t, const cJSON *p, const char *file, char *err,
                            size_t errlen)
{
    const char *type = str_item(p, "type");
    if (!type)
        return PK_OK;
    pk_status st = PK_OK;
    if (!strcmp(type, "Sequence"))
        return parse_sequence(t, p, "post_processor", "processors", 0, parse_post, file, err,
                              errlen);
    if (!strcmp(type, "RobertaProcessing") || !strcmp(type, "BertProcessing")) {
        const cJSON *cls = cJSON_GetArrayItem(item(p, "cls"), 1);
        const cJSON *sep = cJSON_GetArrayItem(item(p, "sep"), 1);
        if (!cJSON_IsNumber(cls) || !cJSON_IsNumber(sep)) {
            pk_seterr(err, errlen, "%s: post_processor %s needs cls and sep [token, id]", file,
                      type);
            return PK_ERR_FORMAT;
        }
        st = push_id(&t->prefix_ids, &t->n_prefix, (int32_t)cls->valueint);
        if (st == PK_OK)
            st = push_id(&t->suffix_ids, &t->n_suffix, (int32_t)sep->valueint);
        return st;
    }
    if (strcmp(type, "TemplateProcessing"))
        return PK_OK;
    const cJSON *single = item(p, "single"), *e;
    const cJSON *specials = item(p, "special_tokens");
    int seen_seq = 0;
    cJSON_ArrayForEach(e, single)
    {
        if (item(e, "Sequence")) {
            seen_seq = 1;
            continue;
        }
        const char *name = str_item(item(e, "SpecialToken"), "id");
        const cJSON *ids = item(item(specials, name ? name : ""), "ids");
        if (!name || !cJSON_IsArray(ids)) {
            pk_seterr(err, errlen, "%s: post_processor template names unknown special token %s",
                      file, name ? name : "(none)");
            return PK_ERR_FORMAT;
        }
        const cJSON *id;
        cJSON_ArrayForEach(id, ids)
        {
            if (!cJSON_IsNumber(id) || id->valuedouble < 0 ||
                id->valuedouble >= (double)(1 << 24)) {
                pk_seterr(err, errlen,
                          "%s: post_processor special token %s has an id that is not a valid "
                          "token id",
                          file, name);
                return PK_ERR_FORMAT;
            }
            st = seen_seq ? push_id(&t->suffix_ids, &t->n_suffix, (int32_t)id->valueint)
                          : push_id(&t->prefix_ids, &t->n_prefix, (int32_t)id->valueint);
            if (st != PK_OK)
                return st;
        }
    }
    return PK_OK;
}

static pk_status parse_added(pk_tokenizer *t, const cJSON *list, const char *file, char *err,
                             size_t errlen)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, list)
    {
        const cJSON *id = item(e, "id");
        const char *s = str_item(e, "content");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= (double)(1 << 24) ||
            !s || !*s) {
            pk_seterr(err, errlen, "%s: added_tokens entry without a valid id and content", file);
            return PK_ERR_FORMAT;
        }
        pk_status st = tok_add_token(t, s, strlen(s), (int32_t)id->valueint,
                                     bool_item(e, "special", 0), bool_item(e, "lstrip", 0),
                                     bool_item(e, "rstrip", 0), bool_item(e, "single_word", 0));
        if (st != PK_OK)
            return st;
    }
    return PK_OK;
}

static pk_status parse_model(pk_tokenizer *t, const cJSON *model, const char *file, char *err,
                             size_t errlen)
{
    if (!cJSON_IsObject(model)) {
        pk_seterr(err, errlen, "%s: no \"model\" object", file);
        return PK_ERR_FORMAT;
    }
    const char *type = str_item(model, "type");
    if (type && strcmp(type, "BPE")) {
        pk_seterr(err, errlen, "%s: model type %s is not supported (only BPE)", file, type);
        return PK_ERR_UNSUPPORTED;
    }
    const char *csp = str_item(model, "continuing_subword_prefix");
    const char *eow = str_item(model, "end_of_word_suffix");
    if ((csp && *csp) || (eow && *eow)) {
        pk_seterr(err, errlen, "%s: BPE continuing_subword_prefix/end_of_word_suffix not supported",
                  file);
        return PK_ERR_UNSUPPORTED;
    }
    pk_status st = load_vocab_object(t, item(model, "vocab"), file, err, errlen);
    if (st == PK_OK)
        st = load_merges_array(t, item(model, "merges"), file, err, errlen);
    if (st != PK_OK)
        return st;
    t->byte_fallback = bool_item(model, "byte_fallback", 0);
    t->fuse_unk = bool_item(model, "fuse_unk", 0);
    t->ignore_merges = bool_item(model, "ignore_merges", 0);
    const char *unk = str_item(model, "unk_token");
    if (unk)
        t->unk = tok_lookup(t, unk, strlen(unk));
    return PK_OK;
}

pk_status tok_load_json_buffer(pk_tokenizer *t, const char *buf, size_t n, const char *file,
                               char *err, size_t errlen)
{
    cJSON *root = cJSON_ParseWithLength(buf, n);
    pk_status st = PK_OK;
    if (!cJSON_IsObject(root)) {
        pk_seterr(err, errlen, "%s: not a JSON object (malformed or truncated)", file);
        st = PK_ERR_FORMAT;
        goto out;
    }
    st = parse_model(t, item(root, "model"), file, err, errlen);
    if (st == PK_OK)
        st = parse_normalizer(t, item(root, "normalizer"), file, err, errlen);
    if (st == PK_OK)
        st = parse_pretok(t, item(root, "pre_tokenizer"), file, err, errlen);
    if (st == PK_OK)
        st = parse_decoder(t, item(root, "decoder"), file, err, errlen);
    if (st == PK_OK)
        st = parse_post(t, item(root, "post_processor"), file, err, errlen);
    if (st == PK_OK)
        st = parse_added(t, item(root, "added_tokens"), file, err, errlen);
    if (st == PK_OK)
        st = tok_build_vocab_index(t);
    if (st != PK_OK)
        goto out;
    if (t->byte_level)
        tok_init_byte_level(t);
    if (t->byte_fallback || t->dec_byte_fallback)
        tok_find_byte_pieces(t);
    if (t->unk >= 0)
        t->flags[t->unk] |= TOKF_UNK;
    for (size_t i = 0; i < t->n_prefix + t->n_suffix; i++) {
        int32_t id = i < t->n_prefix ? t->prefix_ids[i] : t->suffix_ids[i - t->n_prefix];
        if (id < 0 || (size_t)id >= t->n_ids) {
            pk_seterr(err, errlen, "%s: post_processor uses id %d outside the vocab", file,
                      (int)id);
            st = PK_ERR_FORMAT;
            goto out;
        }
    }
out:
    if (st == PK_ERR_NOMEM && err && errlen)
        pk_seterr(err, errlen, "%s: out of memory", file);
    cJSON_Delete(root);
    return st;
}

/* merges.txt: an optional "#version" line, then "a b" per line. */
static pk_status parse_merges_txt(pk_tokenizer *t, const char *data, size_t n, const char *file,
                                  char *err, size_t errlen)
{
    size_t lines = 0;
    for (size_t i = 0; i < n; i++)
        lines += data[i] == '\n';
    pk_status st = tok_merges_init(t, lines + 1);
    int32_t rank = 0;
    size_t lineno = 0;
    for (size_t i = 0; i < n && st == PK_OK;) {
        const char *nl = memchr(data + i, '\n', n - i);
        size_t e = nl ? (size_t)(nl - data) : n, len = e - i;
        const char *line = data + i;
        i = e + 1;
        lineno++;
        if (len && line[len - 1] == '\r')
            len--;
        if (len == 0 || (lineno == 1 && len >= 8 && !memcmp(line, "#version", 8)))
            continue;
        const char *sp = memchr(line, ' ', len);
        if (!sp || sp == line || (size_t)(sp - line) + 1 >= len ||
            memchr(sp + 1, ' ', len - (size_t)(sp - line) - 1)) {
            pk_seterr(err, errlen, "%s: line %zu: expected two tokens separated by one space", file,
                      lineno);
            return PK_ERR_FORMAT;
        }
        size_t an = (size_t)(sp - line);
        st = add_merge(t, line, an, sp + 1, len - an - 1, rank++, file, err, errlen);
    }
    return st;
}

pk_status tok_load_vocab_merges(pk_tokenizer *t, const char *vocab_path, const char *merges_path,
                                char *err, size_t errlen)
{
    char *data = NULL;
    size_t n = 0;
    cJSON *root = NULL;
    pk_status st = tok_read_file(vocab_path, &data, &n, err, errlen);
    if (st != PK_OK)
        goto out;
    root = cJSON_ParseWithLength(data, n);
    if (!cJSON_IsObject(root)) {
        pk_seterr(err, errlen, "%s: not a JSON object (malformed or truncated)", vocab_path);
        st = PK_ERR_FORMAT;
        goto out;
    }
    st = load_vocab_object(t, root, vocab_path, err, errlen);
    if (st != PK_OK)
        goto out;
    free(data);
    data = NULL;
    st = tok_read_file(merges_path, &data, &n, err, errlen);
    if (st == PK_OK)
        st = parse_merges_txt(t, data, n, merges_path, err, errlen);
    if (st != PK_OK)
        goto out;
    t->byte_level = 1;
    t->dec_byte_level = 1;
    st = tok_add_regex(t, tok_gpt2_pattern, strlen(tok_gpt2_pattern), SPLIT_ISOLATED, 0, err,
                       errlen, vocab_path);
    if (st == PK_OK)
        tok_init_byte_level(t);
out:
    cJSON_Delete(root);
    free(data);
    return st;
}
