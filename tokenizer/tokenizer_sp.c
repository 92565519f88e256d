/* tokenizer_sp.c: SentencePiece tokenizer.model (a ModelProto protobuf, parsed by hand):
 * pieces with scores and types, TrainerSpec (model type, byte_fallback, special ids) and
 * NormalizerSpec (add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces). BPE merges
 * are derived from the scores: a pair merges into the piece it spells, higher scores first. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer_impl.h"

enum { SP_NORMAL = 1, SP_UNKNOWN = 2, SP_CONTROL = 3, SP_USER = 4, SP_UNUSED = 5, SP_BYTE = 6 };

typedef struct pb {
    const uint8_t *p, *end;
} pb;

/* Reads a varint; returns 0 on truncation/overflow. */
static int pb_varint(pb *b, uint64_t *v)
{
    uint64_t r = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (b->p >= b->end)
            return 0;
        uint8_t c = *b->p++;
        r |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *v = r;
            return 1;
        }
    }
    return 0;
}

/* Reads one field: its number, wire type, and value (varint / 32-bit / bytes). */
typedef struct pb_field {
    uint32_t num;
    int wire;
    uint64_t v;          /* varint or fixed */
    const uint8_t *data; /* length-delimited */
    size_t len;
} pb_field;

static int pb_next(pb *b, pb_field *f)
{
    uint64_t key;
    if (!pb_varint(b, &key))
        return 0;
    f->num = (uint32_t)(key >> 3);
    f->wire = (int)(key & 7);
    if (f->num == 0)
        return 0;
    switch (f->wire) {
    case 0:
        return pb_varint(b, &f->v);
    case 1:
        if (b->end - b->p < 8)
            return 0;
        memcpy(&f->v, b->p, 8);
        b->p += 8;
        return 1;
    case 2: {
        uint64_t l;
        if (!pb_varint(b, &l) || l > (uint64_t)(b->end - b->p))
            return 0;
        f->data = b->p;
        f->len = (size_t)l;
        b->p += l;
        return 1;
    }
    case 5: {
        if (b->end - b->p < 4)
            return 0;
        uint32_t x;
        memcpy(&x, b->p, 4);
        f->v = x;
        b->p += 4;
        return 1;
    }
    default:
        return 0;
    }
}

typedef struct sp_state {
    float *score;  /* [n] */
    uint8_t *type; /* [n] */
    size_t n, cap;
    int model_type; /* 1 unigram, 2 bpe, ... */
    int byte_fallback;
    int64_t unk_id, bos_id, eos_id, pad_id;
} sp_state;

static pk_status parse_piece(pk_tokenizer *t, sp_state *s, const uint8_t *d, size_t n,
                             const char *file, char *err, size_t errlen)
{
    pb b = {d, d + n};
    pb_field f;
    const uint8_t *str = NULL;
    size_t slen = 0;
    float score = 0.0f;
    int type = SP_NORMAL;
    while (b.p < b.end) {
        if (!pb_next(&b, &f)) {
            pk_seterr(err, errlen, "%s: piece %zu: malformed protobuf", file, s->n);
            return PK_ERR_FORMAT;
        }
        if (f.num == 1 && f.wire == 2) {
            str = f.data;
            slen = f.len;
        } else if (f.num == 2 && f.wire == 5) {
            uint32_t x = (uint32_t)f.v;
            memcpy(&score, &x, 4);
        } else if (f.num == 3 && f.wire == 0) {
            type = (int)f.v;
        }
    }
    if (!str || slen == 0 || type < SP_NORMAL || type > SP_BYTE) {
        pk_seterr(err, errlen, "%s: piece %zu has no text or an unknown type", file, s->n);
        return PK_ERR_FORMAT;
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 1024;
        float *sc = realloc(s->score, cap * sizeof *sc);
        if (sc)
            s->score = sc;
        uint8_t *ty = realloc(s->type, cap);
        if (ty)
            s->type = ty;
        if (!sc || !ty)
            return PK_ERR_NOMEM;
        s->cap = cap;
    }
    s->score[s->n] = score;
    s->type[s->n] = (uint8_t)type;
    pk_status st = tok_set_piece(t, (int32_t)s->n, (const char *)str, slen);
    s->n++;
    return st;
}

static pk_status parse_trainer(sp_state *s, const uint8_t *d, size_t n)
{
    pb b = {d, d + n};
    pb_field f;
    while (b.p < b.end) {
        if (!pb_next(&b, &f))
            return PK_ERR_FORMAT;
        if (f.wire != 0)
            continue;
        int64_t v = (int64_t)(int32_t)(uint32_t)f.v; /* int32 fields; -1 is sign-extended */
        switch (f.num) {
        case 3:
            s->model_type = (int)f.v;
            break;
        case 35:
            s->byte_fallback = f.v != 0;
            break;
        case 40:
            s->unk_id = v;
            break;
        case 41:
            s->bos_id = v;
            break;
        case 42:
            s->eos_id = v;
            break;
        case 43:
            s->pad_id = v;
            break;
        default:
            break;
        }
    }
    return PK_OK;
}

static pk_status parse_normalizer_spec(pk_tokenizer *t, const uint8_t *d, size_t n,
                                       const char *file, char *err, size_t errlen)
{
    pb b = {d, d + n};
    pb_field f;
    while (b.p < b.end) {
        if (!pb_next(&b, &f))
            return PK_ERR_FORMAT;
        if (f.num == 1 && f.wire == 2) {
            int identity = f.len == 8 && !memcmp(f.data, "identity", 8);
            int nfkc = (f.len == 8 && !memcmp(f.data, "nmt_nfkc", 8)) ||
                       (f.len == 4 && !memcmp(f.data, "nfkc", 4));
            if (nfkc) {
                t->nfkc = 1; /* approximated by utf8proc NFKC (no precompiled charsmap) */
            } else if (!identity) {
                pk_seterr(err, errlen, "%s: normalizer %.*s is not supported", file,
                          (int)(f.len > 40 ? 40 : f.len), (const char *)f.data);
                return PK_ERR_UNSUPPORTED;
            }
        } else if (f.wire == 0 && f.num == 3) {
            t->sp_dummy_prefix = f.v != 0;
        } else if (f.wire == 0 && f.num == 4) {
            t->sp_remove_ws = f.v != 0;
        } else if (f.wire == 0 && f.num == 5) {
            t->sp_escape_ws = f.v != 0;
        }
    }
    return PK_OK;
}

typedef struct rank_item {
    float score;
    int32_t id;
} rank_item;

static int rank_cmp(const void *a, const void *b)
{
    const rank_item *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* SentencePiece BPE merges a pair when the concatenation is a (normal or user-defined) piece,
 * best score first, leftmost on ties: equal scores share one rank so position decides. */
static pk_status build_sp_merges(pk_tokenizer *t, const sp_state *s)
{
    rank_item *it = malloc(s->n * sizeof *it);
    int32_t *rank = malloc(s->n * sizeof *rank);
    pk_status st = PK_OK;
    if (!it || !rank) {
        st = PK_ERR_NOMEM;
        goto out;
    }
    size_t total = 0;
    for (size_t i = 0; i < s->n; i++) {
        it[i] = (rank_item){s->score[i], (int32_t)i};
        total += t->piece_len[i];
    }
    qsort(it, s->n, sizeof *it, rank_cmp);
    int32_t r = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (i > 0 && it[i].score != it[i - 1].score)
            r++;
        rank[it[i].id] = r;
    }
    st = tok_merges_init(t, total);
    for (size_t id = 0; id < s->n && st == PK_OK; id++) {
        if (s->type[id] != SP_NORMAL && s->type[id] != SP_USER)
            continue;
        const char *p = t->piece[id];
        size_t n = t->piece_len[id];
        for (size_t k = 1; k < n; k++) {
            if ((((uint8_t)p[k]) & 0xC0) == 0x80)
                continue; /* split only between characters */
            int32_t a = tok_lookup(t, p, k), b = tok_lookup(t, p + k, n - k);
            if (a >= 0 && b >= 0)
                tok_merge_add(t, a, b, rank[id], (int32_t)id);
        }
    }
out:
    free(it);
    free(rank);
    return st;
}

static pk_status sp_finish(pk_tokenizer *t, sp_state *s, const char *file, char *err, size_t errlen)
{
    if (s->model_type != 2) {
        pk_seterr(err, errlen, "%s: SentencePiece model type %d is not supported (only BPE = 2)",
                  file, s->model_type);
        return PK_ERR_UNSUPPORTED;
    }
    pk_status st = tok_build_vocab_index(t);
    if (st != PK_OK)
        return st;
    for (size_t i = 0; i < s->n; i++) {
        if (s->type[i] == SP_CONTROL)
            t->flags[i] |= TOKF_CONTROL | TOKF_SPECIAL;
        else if (s->type[i] == SP_UNUSED)
            t->flags[i] |= TOKF_UNUSED;
        else if (s->type[i] == SP_UNKNOWN)
            t->flags[i] |= TOKF_UNK;
        else if (s->type[i] == SP_USER) {
            st = tok_add_token(t, t->piece[i], t->piece_len[i], (int32_t)i, 0, 0, 0, 0);
            if (st != PK_OK)
                return st;
        }
    }
    int64_t ids[4] = {s->unk_id, s->bos_id, s->eos_id, s->pad_id};
    int32_t *slots[4] = {&t->unk, &t->bos, &t->eos, &t->pad};
    for (int k = 0; k < 4; k++)
        *slots[k] = ids[k] >= 0 && (size_t)ids[k] < s->n ? (int32_t)ids[k] : -1;
    t->byte_fallback = s->byte_fallback;
    t->dec_byte_fallback = 1;
    t->dec_strip_lead = t->sp_dummy_prefix;
    t->dec_rep[0].from = strdup("\xe2\x96\x81");
    t->dec_rep[0].to = strdup(" ");
    t->n_dec_rep = 1;
    if (!t->dec_rep[0].from || !t->dec_rep[0].to)
        return PK_ERR_NOMEM;
    t->dec_rep[0].from_len = 3;
    t->dec_rep[0].to_len = 1;
    tok_find_byte_pieces(t);
    return build_sp_merges(t, s);
}

pk_status tok_load_sp_buffer(pk_tokenizer *t, const uint8_t *buf, size_t n, const char *file,
                             char *err, size_t errlen)
{
    sp_state s = {0};
    s.model_type = 1; /* the protobuf default: unigram */
    s.unk_id = 0;
    s.bos_id = 1;
    s.eos_id = 2;
    s.pad_id = -1;
    t->sp_model = 1;
    t->sp_dummy_prefix = 1;
    t->sp_remove_ws = 1;
    t->sp_escape_ws = 1;
    pk_status st = PK_OK;
    pb b = {buf, buf + n};
    pb_field f;
    while (b.p < b.end && st == PK_OK) {
        if (!pb_next(&b, &f)) {
            pk_seterr(err, errlen, "%s: malformed or truncated protobuf at byte %zu", file,
                      (size_t)(b.p - buf));
            st = PK_ERR_FORMAT;
            break;
        }
        if (f.num == 1 && f.wire == 2) {
            st = parse_piece(t, &s, f.data, f.len, file, err, errlen);
        } else if (f.num == 2 && f.wire == 2) {
            st = parse_trainer(&s, f.data, f.len);
            if (st != PK_OK)
                pk_seterr(err, errlen, "%s: malformed trainer_spec", file);
        } else if (f.num == 3 && f.wire == 2) {
            st = parse_normalizer_spec(t, f.data, f.len, file, err, errlen);
            if (st == PK_ERR_FORMAT)
                pk_seterr(err, errlen, "%s: malformed normalizer_spec", file);
        }
    }
    if (st == PK_OK && s.n == 0) {
        pk_seterr(err, errlen, "%s: no pieces (not a SentencePiece model?)", file);
        st = PK_ERR_FORMAT;
    }
    if (st == PK_OK)
        st = sp_finish(t, &s, file, err, errlen);
    if (st == PK_ERR_NOMEM)
        pk_seterr(err, errlen, "%s: out of memory", file);
    free(s.score);
    free(s.type);
    return st;
}
