/* tokenizer_bpe.c: encoding one stretch of text that holds no added tokens: normalization
 * (NFC/NFKC via utf8proc, Replace, Prepend, SentencePiece whitespace rules), pre-tokenization
 * (Split regexes via PCRE2 with JIT and UCP, Metaspace), and the BPE merge loop: a binary heap
 * ordered by (merge rank, position), as Hugging Face tokenizers does, plus a per-call cache of
 * already-encoded pre-tokens. Loaders set up the tables (tokenizer_json.c, tokenizer_sp.c). */
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "tokenizer_impl.h"

/* GPT-2's pre-tokenizer regex (HF ByteLevel use_regex). */
const char tok_gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

#define CACHE_MAX_WORD 48 /* bytes; longer pre-tokens are not cached */
#define CACHE_MAX_IDS  (CACHE_MAX_WORD)

void tok_init_byte_level(pk_tokenizer *t)
{
    /* GPT-2 bytes_to_unicode: printable Latin-1 bytes map to themselves, the other 68 bytes to
     * U+0100.. in byte order. */
    int next = 256;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        int cp = printable ? b : next++;
        t->cp_byte[cp] = (uint8_t)b;
        t->cp_ok[cp] = 1;
        char s[4];
        size_t n = (size_t)utf8proc_encode_char(cp, (utf8proc_uint8_t *)s);
        t->byte_id[b] = tok_lookup(t, s, n);
    }
}

pk_status tok_add_regex(pk_tokenizer *t, const char *pattern, size_t n, int behavior, int invert,
                        char *err, size_t errlen, const char *file)
{
    if (t->n_pre >= TOK_MAX_PRE) {
        pk_seterr(err, errlen, "%s: more than %d Split pre-tokenizers", file, TOK_MAX_PRE);
        return PK_ERR_UNSUPPORTED;
    }
    int ec = 0;
    PCRE2_SIZE eo = 0;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, n,
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &ec, &eo, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        pk_seterr(err, errlen, "%s: pre-tokenizer regex does not compile at offset %zu: %s", file,
                  (size_t)eo, (const char *)msg);
        return PK_ERR_FORMAT;
    }
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter */
    t->pre[t->n_pre].code = re;
    t->pre[t->n_pre].behavior = behavior;
    t->pre[t->n_pre].invert = invert;
    t->n_pre++;
    return PK_OK;
}

/* ---- per-call scratch and cache ---- */

typedef struct cache_ent {
    uint32_t off;  /* into words: key bytes, then ids */
    uint16_t klen; /* key bytes */
    uint16_t nids; /* ids */
    uint32_t hash; /* low bits of the key hash; 0 = empty slot */
} cache_ent;

struct tok_cache {
    cache_ent *slots;          /* [cap] open addressing */
    size_t cap, used;          /* cap: slots, a power of two, fixed at creation */
    char *arena;               /* keys + ids, 4-byte aligned */
    size_t arena_n, arena_cap; /* bytes */
    pcre2_match_data *md[TOK_MAX_PRE];
    pcre2_match_context *mctx; /* with a large JIT stack, created on demand */
    pcre2_jit_stack *jstack;
    int32_t *sym_id, *sym_next, *sym_prev; /* merge loop symbols */
    size_t sym_cap;
    uint64_t *heap; /* (rank << 32 | pos) */
    int32_t *heap_a, *heap_b;
    size_t heap_cap;
    char *norm; /* normalized text */
    size_t norm_cap;
};

tok_cache *tok_cache_new(size_t text_len)
{
    tok_cache *c = calloc(1, sizeof(tok_cache));
    if (!c)
        return NULL;
    /* about one entry per 4 bytes of text, so short texts do not pay for a big table */
    c->cap = 64;
    while (c->cap < 8192 && c->cap * 4 < text_len)
        c->cap *= 2;
    return c;
}

void tok_cache_free(tok_cache *c)
{
    if (!c)
        return;
    free(c->slots);
    free(c->arena);
    for (int i = 0; i < TOK_MAX_PRE; i++)
        pcre2_match_data_free(c->md[i]);
    pcre2_match_context_free(c->mctx);
    pcre2_jit_stack_free(c->jstack);
    free(c->sym_id);
    free(c->sym_next);
    free(c->sym_prev);
    free(c->heap);
    free(c->norm);
    free(c);
}

static const int32_t *cache_get(tok_cache *c, const char *w, size_t n, uint32_t h, size_t *nids)
{
    if (!c->slots)
        return NULL;
    size_t i = h & (c->cap - 1);
    while (c->slots[i].hash) {
        const cache_ent *e = &c->slots[i];
        if (e->hash == h && e->klen == n && !memcmp(c->arena + e->off, w, n)) {
            *nids = e->nids;
            return (const int32_t *)(const void *)(c->arena + e->off + ((n + 3) & ~(size_t)3));
        }
        i = (i + 1) & (c->cap - 1);
    }
    return NULL;
}

static void cache_put(tok_cache *c, const char *w, size_t n, uint32_t h, const int32_t *ids,
                      size_t nids)
{
    if (n > CACHE_MAX_WORD || nids > CACHE_MAX_IDS)
        return;
    if (!c->slots) {
        c->slots = calloc(c->cap, sizeof *c->slots);
        c->arena_cap = c->cap * 32;
        c->arena = malloc(c->arena_cap);
        if (!c->slots || !c->arena) {
            free(c->slots);
            free(c->arena);
            c->slots = NULL;
            c->arena = NULL;
            return;
        }
    }
    size_t need = ((n + 3) & ~(size_t)3) + nids * sizeof(int32_t);
    if (c->used * 2 >= c->cap || c->arena_n + need > c->arena_cap) {
        memset(c->slots, 0, c->cap * sizeof *c->slots); /* full: start over */
        c->used = 0;
        c->arena_n = 0;
    }
    size_t i = h & (c->cap - 1);
    while (c->slots[i].hash)
        i = (i + 1) & (c->cap - 1);
    memcpy(c->arena + c->arena_n, w, n);
    memcpy(c->arena + c->arena_n + ((n + 3) & ~(size_t)3), ids, nids * sizeof(int32_t));
    c->slots[i] = (cache_ent){(uint32_t)c->arena_n, (uint16_t)n, (uint16_t)nids, h};
    c->arena_n += need;
    c->used++;
}

/* ---- the merge loop ---- */

static pk_status scratch_syms(tok_cache *c, size_t n)
{
    if (n <= c->sym_cap)
        return PK_OK;
    size_t cap = c->sym_cap ? c->sym_cap : 64;
    while (cap < n)
        cap *= 2;
    int32_t *a = realloc(c->sym_id, cap * sizeof *a);
    if (a)
        c->sym_id = a;
    int32_t *b = realloc(c->sym_next, cap * sizeof *b);
    if (b)
        c->sym_next = b;
    int32_t *p = realloc(c->sym_prev, cap * sizeof *p);
    if (p)
        c->sym_prev = p;
    /* heap entries: at most n initial pairs + 2 per merge */
    uint64_t *h = realloc(c->heap, 3 * cap * (sizeof *h + 2 * sizeof(int32_t)));
    if (h)
        c->heap = h;
    if (!a || !b || !p || !h)
        return PK_ERR_NOMEM;
    c->heap_a = (int32_t *)(void *)(c->heap + 3 * cap);
    c->heap_b = c->heap_a + 3 * cap;
    c->sym_cap = cap;
    c->heap_cap = 3 * cap;
    return PK_OK;
}

/* Min-heap over keys; heap_a/heap_b carry the ids the pair had when pushed. */
static void heap_set(tok_cache *c, size_t i, uint64_t key, int32_t a, int32_t b)
{
    c->heap[i] = key;
    c->heap_a[i] = a;
    c->heap_b[i] = b;
}

static void heap_move(tok_cache *c, size_t to, size_t from)
{
    heap_set(c, to, c->heap[from], c->heap_a[from], c->heap_b[from]);
}

static void heap_push(tok_cache *c, size_t *hn, uint64_t key, int32_t a, int32_t b)
{
    size_t i = (*hn)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (c->heap[p] <= key)
            break;
        heap_move(c, i, p);
        i = p;
    }
    heap_set(c, i, key, a, b);
}

static void heap_pop(tok_cache *c, size_t *hn)
{
    size_t n = --(*hn);
    uint64_t key = c->heap[n];
    int32_t a = c->heap_a[n], b = c->heap_b[n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= n)
            break;
        if (l + 1 < n && c->heap[l + 1] < c->heap[l])
            l++;
        if (key <= c->heap[l])
            break;
        heap_move(c, i, l);
        i = l;
    }
    heap_set(c, i, key, a, b);
}

static void push_pair(const pk_tokenizer *t, tok_cache *c, size_t *hn, int32_t i)
{
    if (i < 0)
        return;
    int32_t j = c->sym_next[i];
    if (j < 0 || c->sym_id[i] < 0 || c->sym_id[j] < 0)
        return;
    int32_t rank, id;
    if (!tok_merge_find(t, c->sym_id[i], c->sym_id[j], &rank, &id))
        return;
    if (*hn >= c->heap_cap)
        return; /* cannot happen: n initial pairs + 2 per merge < 3n */
    heap_push(c, hn, (uint64_t)(uint32_t)rank << 32 | (uint32_t)i, c->sym_id[i], c->sym_id[j]);
}

#define LINEAR_MAX 64 /* words up to this many symbols merge by linear scans */

/* Short words: keep the rank of every adjacent pair and scan for the lowest (leftmost on ties),
 * which is the heap's order without its bookkeeping (tiktoken/llama.cpp style). */
static size_t merge_linear(const pk_tokenizer *t, int32_t *sym, size_t n)
{
    int32_t rank[LINEAR_MAX], nid[LINEAR_MAX];
    for (size_t i = 0; i + 1 < n; i++)
        if (!tok_merge_find(t, sym[i], sym[i + 1], &rank[i], &nid[i]))
            rank[i] = INT32_MAX;
    while (n > 1) {
        int32_t best = INT32_MAX;
        size_t bi = 0;
        for (size_t i = 0; i + 1 < n; i++) {
            if (rank[i] < best) {
                best = rank[i];
                bi = i;
            }
        }
        if (best == INT32_MAX)
            break;
        sym[bi] = nid[bi];
        for (size_t i = bi + 1; i + 1 < n; i++) {
            sym[i] = sym[i + 1];
            rank[i] = rank[i + 1];
            nid[i] = nid[i + 1];
        }
        n--;
        if (bi > 0 && !tok_merge_find(t, sym[bi - 1], sym[bi], &rank[bi - 1], &nid[bi - 1]))
            rank[bi - 1] = INT32_MAX;
        if (bi + 1 < n && !tok_merge_find(t, sym[bi], sym[bi + 1], &rank[bi], &nid[bi]))
            rank[bi] = INT32_MAX;
    }
    return n;
}

/* Merges c->sym_id[0..n) in place; returns the number of surviving symbols, compacted. */
static size_t merge_symbols(const pk_tokenizer *t, tok_cache *c, size_t n)
{
    if (n <= LINEAR_MAX)
        return merge_linear(t, c->sym_id, n);
    for (size_t i = 0; i < n; i++) {
        c->sym_next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
        c->sym_prev[i] = (int32_t)i - 1;
    }
    size_t hn = 0;
    for (size_t i = 0; i + 1 < n; i++)
        push_pair(t, c, &hn, (int32_t)i);
    while (hn > 0) {
        int32_t pos = (int32_t)(uint32_t)c->heap[0];
        int32_t a = c->heap_a[0], b = c->heap_b[0];
        heap_pop(c, &hn);
        int32_t j = c->sym_next[pos];
        if (c->sym_id[pos] != a || j < 0 || c->sym_id[j] != b)
            continue; /* stale: a neighbour merged since this pair was pushed */
        int32_t rank, id;
        if (!tok_merge_find(t, a, b, &rank, &id))
            continue;
        c->sym_id[pos] = id;
        c->sym_id[j] = -2; /* dead */
        c->sym_next[pos] = c->sym_next[j];
        if (c->sym_next[j] >= 0)
            c->sym_prev[c->sym_next[j]] = pos;
        push_pair(t, c, &hn, c->sym_prev[pos]);
        push_pair(t, c, &hn, pos);
    }
    size_t k = 0;
    for (int32_t i = 0; i >= 0 && (size_t)i < n; i = c->sym_next[i])
        c->sym_id[k++] = c->sym_id[i];
    return k;
}

/* ---- words ---- */

static size_t utf8_len(uint8_t b)
{
    return b < 0x80             ? 1
           : (b & 0xE0) == 0xC0 ? 2
           : (b & 0xF0) == 0xE0 ? 3
           : (b & 0xF8) == 0xF0 ? 4
                                : 1;
}

/* Initial symbols of a non-byte-level word: one per UTF-8 character; characters missing from
 * the vocabulary are -1 - (byte offset) so the fallback below can find their bytes. */
static size_t char_symbols(const pk_tokenizer *t, tok_cache *c, const char *w, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        size_t l = utf8_len((uint8_t)w[i]);
        if (l > n - i)
            l = 1;
        int32_t id = tok_lookup(t, w + i, l);
        c->sym_id[k] = id >= 0 && !(t->flags[id] & TOKF_UNUSED) ? id : -1;
        c->sym_next[k] = (int32_t)i; /* remember the offset until merging rewires it */
        k++;
        i += l;
    }
    return k;
}

static pk_status emit_unknown(const pk_tokenizer *t, const char *w, size_t n, size_t off,
                              tok_ids *out)
{
    size_t l = utf8_len((uint8_t)w[off]);
    if (l > n - off)
        l = 1;
    if (t->byte_fallback) {
        int ok = 1;
        for (size_t b = 0; b < l; b++)
            ok &= t->byte_piece[(uint8_t)w[off + b]] >= 0;
        if (ok) {
            for (size_t b = 0; b < l; b++) {
                pk_status st = tok_ids_push(out, t->byte_piece[(uint8_t)w[off + b]]);
                if (st != PK_OK)
                    return st;
            }
            return PK_OK;
        }
    }
    if (t->unk < 0)
        return PK_OK; /* no unk token: the character is dropped, as in HF */
    if (t->fuse_unk && out->n > 0 && out->v[out->n - 1] == t->unk)
        return PK_OK;
    return tok_ids_push(out, t->unk);
}

static pk_status encode_word(const pk_tokenizer *t, tok_cache *c, const char *w, size_t n,
                             tok_ids *out)
{
    if (n == 0)
        return PK_OK;
    uint32_t h = (uint32_t)tok_hash(w, n) | 1u;
    size_t nc = 0;
    const int32_t *hit = n <= CACHE_MAX_WORD ? cache_get(c, w, n, h, &nc) : NULL;
    if (hit) {
        for (size_t i = 0; i < nc; i++) {
            pk_status st = tok_ids_push(out, hit[i]);
            if (st != PK_OK)
                return st;
        }
        return PK_OK;
    }
    pk_status st = scratch_syms(c, n + 1);
    if (st != PK_OK)
        return st;
    size_t start = out->n, k;
    if (t->byte_level) {
        if (t->ignore_merges) {
            /* the whole word, byte-mapped, may be one vocabulary entry */
            char tmp[4 * CACHE_MAX_WORD];
            size_t m = 0;
            for (size_t i = 0; i < n && m + 2 <= sizeof tmp; i++) {
                int32_t id = t->byte_id[(uint8_t)w[i]];
                if (id < 0 || t->piece_len[id] > 2) {
                    m = sizeof tmp;
                    break;
                }
                memcpy(tmp + m, t->piece[id], t->piece_len[id]);
                m += t->piece_len[id];
            }
            int32_t whole = m < sizeof tmp ? tok_lookup(t, tmp, m) : -1;
            if (whole >= 0) {
                st = tok_ids_push(out, whole);
                goto cache;
            }
        }
        for (size_t i = 0; i < n; i++)
            c->sym_id[i] = t->byte_id[(uint8_t)w[i]];
        k = merge_symbols(t, c, n);
        for (size_t i = 0; i < k && st == PK_OK; i++)
            if (c->sym_id[i] >= 0)
                st = tok_ids_push(out, c->sym_id[i]);
    } else {
        size_t nsym = char_symbols(t, c, w, n);
        for (size_t i = 0; i < nsym; i++)
            if (c->sym_id[i] < 0)
                c->sym_id[i] = -3 - c->sym_next[i]; /* unknown: negative, never merges */
        k = merge_symbols(t, c, nsym);
        for (size_t i = 0; i < k && st == PK_OK; i++) {
            if (c->sym_id[i] >= 0)
                st = tok_ids_push(out, c->sym_id[i]);
            else
                st = emit_unknown(t, w, n, (size_t)(-3 - c->sym_id[i]), out);
        }
    }
cache:
    if (st == PK_OK && out->n > start)
        cache_put(c, w, n, h, out->v + start, out->n - start);
    return st;
}

/* ---- pre-tokenization ---- */

static pk_status split_level(const pk_tokenizer *t, tok_cache *c, int level, const char *s,
                             size_t n, tok_ids *out);

static pk_status emit_piece(const pk_tokenizer *t, tok_cache *c, int level, const char *s, size_t n,
                            tok_ids *out)
{
    if (n == 0)
        return PK_OK;
    return split_level(t, c, level + 1, s, n, out);
}

static int pcre_match(const pk_tokenizer *t, tok_cache *c, int level, const char *s, size_t n,
                      size_t from)
{
    const tok_regex *r = &t->pre[level];
    if (!c->md[level]) {
        c->md[level] = pcre2_match_data_create_from_pattern(r->code, NULL);
        if (!c->md[level])
            return PCRE2_ERROR_NOMEMORY;
    }
    int rc = pcre2_match(r->code, (PCRE2_SPTR)s, n, from, 0, c->md[level], c->mctx);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !c->jstack) {
        c->jstack = pcre2_jit_stack_create(64 * 1024, 8 * 1024 * 1024, NULL);
        c->mctx = pcre2_match_context_create(NULL);
        if (!c->jstack || !c->mctx)
            return PCRE2_ERROR_NOMEMORY;
        pcre2_jit_stack_assign(c->mctx, NULL, c->jstack);
        rc = pcre2_match(r->code, (PCRE2_SPTR)s, n, from, 0, c->md[level], c->mctx);
    }
    return rc;
}

static pk_status split_level(const pk_tokenizer *t, tok_cache *c, int level, const char *s,
                             size_t n, tok_ids *out)
{
    if (level >= t->n_pre)
        return encode_word(t, c, s, n, out);
    const tok_regex *r = &t->pre[level];
    size_t pos = 0, gap = 0; /* gap: start of the not-yet-emitted text */
    pk_status st = PK_OK;
    while (pos <= n && st == PK_OK) {
        int rc = pcre_match(t, c, level, s, n, pos);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0)
            return rc == PCRE2_ERROR_NOMEMORY ? PK_ERR_NOMEM : PK_ERR_LIMIT;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md[level]);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) { /* empty match: step one character */
            pos = ms + (ms < n ? utf8_len((uint8_t)s[ms]) : 1);
            continue;
        }
        if (r->invert) { /* the match is a piece, gaps are dropped */
            st = emit_piece(t, c, level, s + ms, me - ms, out);
        } else if (r->behavior == SPLIT_ISOLATED) {
            st = emit_piece(t, c, level, s + gap, ms - gap, out);
            if (st == PK_OK)
                st = emit_piece(t, c, level, s + ms, me - ms, out);
        } else if (r->behavior == SPLIT_REMOVED) {
            st = emit_piece(t, c, level, s + gap, ms - gap, out);
        } else if (r->behavior == SPLIT_MERGED_PREV) {
            st = emit_piece(t, c, level, s + gap, me - gap, out);
        } else { /* MERGED_NEXT / CONTIGUOUS: the delimiter starts the next piece */
            st = emit_piece(t, c, level, s + gap, ms - gap, out);
            gap = ms;
            pos = me;
            continue;
        }
        gap = me;
        pos = me;
    }
    if (st == PK_OK && !r->invert)
        st = emit_piece(t, c, level, s + gap, n - gap, out);
    return st;
}

/* ---- normalization ---- */

static pk_status norm_reserve(tok_cache *c, size_t n)
{
    if (n <= c->norm_cap)
        return PK_OK;
    char *p = realloc(c->norm, n);
    if (!p)
        return PK_ERR_NOMEM;
    c->norm = p;
    c->norm_cap = n;
    return PK_OK;
}

static const char META[] = "\xe2\x96\x81"; /* U+2581 */

/* SentencePiece: drop leading/trailing spaces, collapse runs, add the dummy prefix, ' ' -> U+2581.
 */
static pk_status sp_normalize(const pk_tokenizer *t, tok_cache *c, const char *s, size_t n,
                              size_t *outn)
{
    pk_status st = norm_reserve(c, 3 * n + 4);
    if (st != PK_OK)
        return st;
    size_t a = 0, b = n;
    if (t->sp_remove_ws) {
        while (a < b && s[a] == ' ')
            a++;
        while (b > a && s[b - 1] == ' ')
            b--;
    }
    size_t k = 0;
    if (t->sp_dummy_prefix && b > a) {
        memcpy(c->norm, t->sp_escape_ws ? META : " ", t->sp_escape_ws ? 3 : 1);
        k = t->sp_escape_ws ? 3 : 1;
    }
    for (size_t i = a; i < b; i++) {
        if (s[i] == ' ' && t->sp_remove_ws && i > a && s[i - 1] == ' ')
            continue;
        if (s[i] == ' ' && t->sp_escape_ws) {
            memcpy(c->norm + k, META, 3);
            k += 3;
        } else {
            c->norm[k++] = s[i];
        }
    }
    *outn = k;
    return PK_OK;
}

/* Unicode normalization via utf8proc; invalid UTF-8 is left as is. */
static pk_status unicode_normalize(const pk_tokenizer *t, tok_cache *c, size_t *n)
{
    int opt = 0;
    if (t->nfc)
        opt = UTF8PROC_STABLE | UTF8PROC_COMPOSE;
    else if (t->nfkc)
        opt = UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
    else if (t->nfd)
        opt = UTF8PROC_STABLE | UTF8PROC_DECOMPOSE;
    else if (t->nfkd)
        opt = UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
    if (!opt && !t->lowercase)
        return PK_OK;
    utf8proc_uint8_t *dst = NULL;
    if (opt) {
        utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)c->norm, (utf8proc_ssize_t)*n,
                                          &dst, (utf8proc_option_t)opt);
        if (r == UTF8PROC_ERROR_NOMEM)
            return PK_ERR_NOMEM;
        if (r >= 0) {
            pk_status st = norm_reserve(c, (size_t)r + 4);
            if (st == PK_OK) {
                memcpy(c->norm, dst, (size_t)r);
                *n = (size_t)r;
            }
            free(dst);
            if (st != PK_OK)
                return st;
        }
    }
    if (t->lowercase) {
        /* lowercase in place when the encoded length does not change, else leave the char */
        for (size_t i = 0; i < *n;) {
            utf8proc_int32_t cp;
            utf8proc_ssize_t l = utf8proc_iterate((const utf8proc_uint8_t *)c->norm + i,
                                                  (utf8proc_ssize_t)(*n - i), &cp);
            if (l <= 0) {
                i++;
                continue;
            }
            utf8proc_uint8_t enc[4];
            utf8proc_int32_t lc = utf8proc_tolower(cp);
            if (utf8proc_encode_char(lc, enc) == l)
                memcpy(c->norm + i, enc, (size_t)l);
            i += (size_t)l;
        }
    }
    return PK_OK;
}

static pk_status replace_all(tok_cache *c, size_t *n, const tok_replace *r)
{
    if (!r->from_len)
        return PK_OK;
    size_t count = 0;
    for (size_t i = 0; i + r->from_len <= *n;) {
        if (!memcmp(c->norm + i, r->from, r->from_len)) {
            count++;
            i += r->from_len;
        } else {
            i++;
        }
    }
    if (!count)
        return PK_OK;
    size_t nn = *n - count * r->from_len + count * r->to_len;
    char *dst = malloc(nn + 4);
    if (!dst)
        return PK_ERR_NOMEM;
    size_t k = 0;
    for (size_t i = 0; i < *n;) {
        if (i + r->from_len <= *n && !memcmp(c->norm + i, r->from, r->from_len)) {
            memcpy(dst + k, r->to, r->to_len);
            k += r->to_len;
            i += r->from_len;
        } else {
            dst[k++] = c->norm[i++];
        }
    }
    free(c->norm);
    c->norm = dst;
    c->norm_cap = nn + 4;
    *n = k;
    return PK_OK;
}

/* Copies s into c->norm applying the tokenizer.json normalizers and the Metaspace/ByteLevel
 * prefix rules. */
static pk_status json_normalize(const pk_tokenizer *t, tok_cache *c, const char *s, size_t n,
                                int at_start, size_t *outn)
{
    size_t pre = t->prepend ? strlen(t->prepend) : 0;
    pk_status st = norm_reserve(c, n + pre + 8);
    if (st != PK_OK)
        return st;
    memcpy(c->norm, s, n);
    size_t k = n;
    st = unicode_normalize(t, c, &k);
    for (int i = 0; i < t->n_norm_rep && st == PK_OK; i++)
        st = replace_all(c, &k, &t->norm_rep[i]);
    if (st == PK_OK && t->prepend && k > 0) {
        st = norm_reserve(c, k + pre + 8);
        if (st == PK_OK) {
            memmove(c->norm + pre, c->norm, k);
            memcpy(c->norm, t->prepend, pre);
            k += pre;
        }
    }
    if (st == PK_OK && t->metaspace) {
        tok_replace sp = {(char *)(uintptr_t) " ", (char *)(uintptr_t)META, 1, 3};
        st = replace_all(c, &k, &sp);
        int want = t->metaspace_prepend == 2 || (t->metaspace_prepend == 1 && at_start);
        if (st == PK_OK && want && k > 0 && !(k >= 3 && !memcmp(c->norm, META, 3))) {
            st = norm_reserve(c, k + 8);
            if (st == PK_OK) {
                memmove(c->norm + 3, c->norm, k);
                memcpy(c->norm, META, 3);
                k += 3;
            }
        }
    }
    if (st == PK_OK && t->bl_add_prefix_space && at_start && k > 0 && c->norm[0] != ' ') {
        st = norm_reserve(c, k + 8);
        if (st == PK_OK) {
            memmove(c->norm + 1, c->norm, k);
            c->norm[0] = ' ';
            k++;
        }
    }
    *outn = k;
    return st;
}

pk_status tok_encode_plain(const pk_tokenizer *t, const char *s, size_t n, int at_start,
                           tok_cache *c, tok_ids *out)
{
    if (n == 0)
        return PK_OK;
    if (!c)
        return PK_ERR_NOMEM;
    size_t k = 0;
    pk_status st =
        t->sp_model ? sp_normalize(t, c, s, n, &k) : json_normalize(t, c, s, n, at_start, &k);
    if (st != PK_OK || k == 0)
        return st;
    /* c->norm may be reallocated by nothing below: split_level only reads it */
    if (t->metaspace && t->metaspace_split) {
        size_t a = 0;
        for (size_t i = 3; i + 3 <= k && st == PK_OK; i++) {
            if (!memcmp(c->norm + i, META, 3)) {
                st = split_level(t, c, 0, c->norm + a, i - a, out);
                a = i;
            }
        }
        if (st == PK_OK)
            st = split_level(t, c, 0, c->norm + a, k - a, out);
        return st;
    }
    return split_level(t, c, 0, c->norm, k, out);
}
