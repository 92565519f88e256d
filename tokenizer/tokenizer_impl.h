/* tokenizer_impl.h: the pk_tokenizer struct shared by the tokenizer sources (private to
 * tokenizer/). tokenizer.c: handle, lookups, config files, encode/decode driver, streaming.
 * tokenizer_bpe.c: the merge loop and pre-tokenization; tokenizer_json.c: tokenizer.json and
 * vocab.json + merges.txt; tokenizer_sp.c: SentencePiece tokenizer.model (protobuf). */
#ifndef PK_TOKENIZER_INTERNAL_H
#define PK_TOKENIZER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "pk_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

/* Per-id flags. */
enum {
    TOKF_ADDED = 1,   /* an added token: decodes to its literal content */
    TOKF_SPECIAL = 2, /* dropped by skip_special */
    TOKF_CONTROL = 4, /* SentencePiece control piece: decodes to nothing */
    TOKF_BYTE = 8,    /* <0xXX> byte piece: decodes to one raw byte */
    TOKF_UNUSED = 16, /* SentencePiece unused piece: never produced by merges */
    TOKF_UNK = 32,    /* the unknown piece */
};

/* Split pre-tokenizer behaviours (HF SplitDelimiterBehavior). */
enum { SPLIT_ISOLATED = 0, SPLIT_REMOVED, SPLIT_MERGED_PREV, SPLIT_MERGED_NEXT, SPLIT_CONTIGUOUS };

#define TOK_MAX_PRE     4 /* regex pre-tokenizers in a Sequence */
#define TOK_MAX_REPLACE 8 /* Replace normalizers / decoders */

typedef struct tok_added {
    char *content;   /* owned, len bytes (+NUL) */
    size_t len;      /* bytes */
    int32_t id;      /* token id */
    int special;     /* skipped by skip_special */
    int lstrip;      /* swallow whitespace on the left */
    int rstrip;      /* swallow whitespace on the right */
    int single_word; /* only match when not inside a word */
} tok_added;

typedef struct tok_regex {
    pcre2_code *code; /* owned, JIT-compiled when possible */
    int behavior;     /* SPLIT_* */
    int invert;       /* the regex matches the pieces, not the delimiters */
} tok_regex;

typedef struct tok_replace {
    char *from, *to;         /* owned literal strings */
    size_t from_len, to_len; /* bytes */
} tok_replace;

typedef struct tok_merge {
    uint64_t key; /* pair a<<32|b; UINT64_MAX = empty slot */
    int32_t rank; /* lower merges first */
    int32_t id;   /* resulting token */
} tok_merge;

struct pk_tokenizer {
    int sp_model;            /* loaded from tokenizer.model (SentencePiece semantics) */
    int byte_level;          /* byte-level BPE: bytes map to printable chars (GPT-2 table) */
    size_t n_ids;            /* ids are 0..n_ids-1 */
    char **piece;            /* [n_ids] owned NUL-terminated pieces (NULL for holes) */
    uint32_t *piece_len;     /* [n_ids] bytes */
    uint8_t *flags;          /* [n_ids] TOKF_* */
    uint32_t *vocab_ht;      /* piece -> id+1 open-addressing table (0 = empty) */
    size_t vocab_cap;        /* power of two */
    tok_merge *merges;       /* [merge_cap] open-addressing table of pairs */
    size_t merge_cap;        /* power of two */
    int32_t byte_id[256];    /* byte-level: id of each byte's char; else -1 */
    uint8_t cp_byte[324];    /* byte-level decode: code point (< 324) -> byte */
    uint8_t cp_ok[324];      /* 1 if cp_byte is defined */
    int32_t byte_piece[256]; /* <0xXX> piece ids (byte fallback), -1 if none */
    int byte_fallback;       /* unknown chars become <0xXX> pieces */
    int fuse_unk;            /* consecutive unknowns collapse into one unk */
    int ignore_merges;       /* a pre-token found whole in the vocab is one token (Llama-3) */
    /* pre-tokenization */
    tok_regex pre[TOK_MAX_PRE]; /* regex splits, applied in order */
    int n_pre;
    int bl_add_prefix_space; /* ByteLevel pre-tokenizer add_prefix_space */
    int metaspace;           /* Metaspace pre-tokenizer: spaces -> U+2581 */
    int metaspace_prepend;   /* 0 never, 1 first, 2 always */
    int metaspace_split;     /* Metaspace split on U+2581 */
    /* normalization */
    int nfc, nfkc, nfd, nfkd, lowercase;
    int sp_dummy_prefix; /* SentencePiece add_dummy_prefix */
    int sp_remove_ws;    /* SentencePiece remove_extra_whitespaces */
    int sp_escape_ws;    /* SentencePiece escape_whitespaces (' ' -> U+2581) */
    char *prepend;       /* Prepend normalizer content (owned) or NULL */
    tok_replace norm_rep[TOK_MAX_REPLACE];
    int n_norm_rep;
    /* decoding */
    int dec_byte_level;    /* ByteLevel decoder */
    int dec_byte_fallback; /* <0xXX> -> byte */
    int dec_strip_lead;    /* drop one leading space of the first token */
    tok_replace dec_rep[TOK_MAX_REPLACE];
    int n_dec_rep;
    /* added tokens, matched as whole strings before anything else */
    tok_added *added; /* [n_added] owned, sorted by length (longest first) */
    size_t n_added;
    uint8_t added_first[256]; /* 1 if some added token starts with this byte */
    /* specials */
    int32_t bos, eos, pad, mask, unk, cls, sep;
    int add_bos, add_eos;             /* 1 to insert on add_special */
    int32_t *prefix_ids, *suffix_ids; /* add_special template (owned) */
    size_t n_prefix, n_suffix;
};

uint64_t tok_hash(const char *s, size_t n);
pk_tokenizer *tok_alloc(void);
/* Reserves ids 0..n-1 (growing the arrays). */
PK_NODISCARD pk_status tok_reserve(pk_tokenizer *t, size_t n);
/* Sets piece of id (copies s). */
PK_NODISCARD pk_status tok_set_piece(pk_tokenizer *t, int32_t id, const char *s, size_t n);
/* Builds the piece hash table once all pieces are set. Fails on duplicates? no: keeps the
 * lowest id. */
PK_NODISCARD pk_status tok_build_vocab_index(pk_tokenizer *t);
int32_t tok_lookup(const pk_tokenizer *t, const char *s, size_t n);
PK_NODISCARD pk_status tok_merges_init(pk_tokenizer *t, size_t n);
void tok_merge_add(pk_tokenizer *t, int32_t a, int32_t b, int32_t rank, int32_t id);
int tok_merge_find(const pk_tokenizer *t, int32_t a, int32_t b, int32_t *rank, int32_t *id);
PK_NODISCARD pk_status tok_add_token(pk_tokenizer *t, const char *s, size_t n, int32_t id,
                                     int special, int lstrip, int rstrip, int single_word);
void tok_finish_added(pk_tokenizer *t);
void tok_init_byte_level(pk_tokenizer *t);
void tok_find_byte_pieces(pk_tokenizer *t);
/* Compiles a Split regex (UTF, UCP, JIT). */
PK_NODISCARD pk_status tok_add_regex(pk_tokenizer *t, const char *pattern, size_t n, int behavior,
                                     int invert, char *err, size_t errlen, const char *file);
extern const char tok_gpt2_pattern[];

/* Reads a whole file (owned result, NUL-terminated). */
PK_NODISCARD pk_status tok_read_file(const char *path, char **data, size_t *len, char *err,
                                     size_t errlen);

/* Loaders. */
PK_NODISCARD pk_status tok_load_vocab_merges(pk_tokenizer *t, const char *vocab_path,
                                             const char *merges_path, char *err, size_t errlen);
PK_NODISCARD pk_status tok_load_sp_buffer(pk_tokenizer *t, const uint8_t *buf, size_t n,
                                          const char *name, char *err, size_t errlen);
PK_NODISCARD pk_status tok_load_json_buffer(pk_tokenizer *t, const char *buf, size_t n,
                                            const char *name, char *err, size_t errlen);

/* Growable id buffer used by the encoder. */
typedef struct tok_ids {
    int32_t *v;
    size_t n, cap;
} tok_ids;
PK_NODISCARD pk_status tok_ids_push(tok_ids *b, int32_t id);

/* Encodes one plain stretch of text (no added tokens inside) into out (tokenizer_bpe.c).
 * cache is per call scratch (may be NULL). */
typedef struct tok_cache tok_cache;
tok_cache *tok_cache_new(size_t text_len);
void tok_cache_free(tok_cache *c);
PK_NODISCARD pk_status tok_encode_plain(const pk_tokenizer *t, const char *s, size_t n,
                                        int at_start, tok_cache *cache, tok_ids *out);

#endif /* PK_TOKENIZER_INTERNAL_H */
