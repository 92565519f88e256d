/* gguf_impl.h: private to model/: the GGUF container (reader in gguf.c, writer in gguf_write.c)
 * and how its tensors and metadata become a pk_model's config and Hugging Face tensor names. */
#ifndef PK_GGUF_IMPL_H
#define PK_GGUF_IMPL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "model_impl.h"

/* GGUF metadata value types (the spec's gguf_metadata_value_type). */
enum {
    GGUF_U8 = 0,
    GGUF_I8 = 1,
    GGUF_U16 = 2,
    GGUF_I16 = 3,
    GGUF_U32 = 4,
    GGUF_I32 = 5,
    GGUF_F32 = 6,
    GGUF_BOOL = 7,
    GGUF_STRING = 8,
    GGUF_ARRAY = 9,
    GGUF_U64 = 10,
    GGUF_I64 = 11,
    GGUF_F64 = 12,
};

#define GGUF_DEFAULT_ALIGN 32

/* Bytes being written in GGUF's encodings: to the FILE f, or (f == NULL) appended to the heap
 * buffer p (capacity cap; the caller frees it). n counts the bytes put; bad is set by the first
 * failure (out of memory, a short write), after which nothing more is written. */
typedef struct pk_gguf_buf {
    unsigned char *p;
    size_t n, cap;
    int bad;
    FILE *f;
} pk_gguf_buf;
void pk_gguf_put(pk_gguf_buf *b, const void *d, size_t n);
void pk_gguf_put_le(pk_gguf_buf *b, uint64_t v, int n);        /* v's low n bytes, little-endian */
void pk_gguf_put_str(pk_gguf_buf *b, const void *s, size_t n); /* a string: u64 length, bytes */
void pk_gguf_put_key(pk_gguf_buf *b, const char *key, uint32_t type); /* an entry's key, type */

/* ggml's tensor type ids of the types we read and write. */
int pk_gguf_type_of(pk_dtype dt);

/* One metadata entry: views into the file's bytes (all validated at parse time). */
typedef struct pk_gguf_kv {
    const char *key; /* not NUL-terminated */
    size_t klen;
    uint32_t type;
    const unsigned char *val; /* the value (for arrays: the first element) */
    uint32_t atype;           /* arrays: element type */
    uint64_t n;               /* arrays: element count */
    const unsigned char *raw; /* the whole entry as stored (key, type, value) */
    size_t raw_len;
} pk_gguf_kv;

typedef struct pk_gguf_tensor {
    char name[256];
    int ndim;
    uint64_t ne[4]; /* ggml order: ne[0] is the contiguous dimension */
    pk_dtype dtype;
    uint64_t off; /* absolute byte offset in the file */
    uint64_t nbytes;
} pk_gguf_tensor;

typedef struct pk_gguf {
    const unsigned char *base; /* the file's bytes (borrowed) */
    size_t len;
    uint32_t version;
    pk_gguf_kv *kv;
    size_t n_kv;
    pk_gguf_tensor *t;
    size_t n_t;
    uint64_t align, data_off;
} pk_gguf;

/* Parses and validates a whole GGUF file held in buf [len] (borrowed; g keeps views into it).
 * fname names the file in messages. On failure g holds nothing to free. */
PK_NODISCARD pk_status pk_gguf_parse(const char *fname, const unsigned char *buf, size_t len,
                                     pk_gguf *g, char *err, size_t errlen);
void pk_gguf_release(pk_gguf *g); /* frees what parse allocated; NULL-safe */

/* The entry with this key, or NULL. */
const pk_gguf_kv *pk_gguf_find(const pk_gguf *g, const char *key);

/* A GGUF file as a model: the config.json text (embedded by our writer, else built from the
 * architecture's metadata keys) and the tensors under their Hugging Face names and shapes
 * (st.begin = absolute file offset). Llama q/k rows that llama.cpp's converter interleaved are
 * put back in place in buf (a private writable mapping). Owned results: free config and t. */
PK_NODISCARD pk_status pk_gguf_model(const char *fname, unsigned char *buf, size_t len,
                                     char **config, size_t *config_len, pk_st_tensor **t,
                                     size_t *n_t, char *err, size_t errlen);

/* Tokenizer metadata (gguf_tok.c). The tokenizer.ggml.* entries, appended to mem [*n] (owned,
 * grown with realloc) for a SentencePiece tokenizer.model in dir (llama.cpp's "llama" vocabulary:
 * tokens, scores, token_type, special ids, add_space_prefix, ...); *count gets the number of
 * entries (0 if dir has no tokenizer.model). */
PK_NODISCARD pk_status pk_gguf_tok_from_sp(const char *dir, unsigned char **mem, size_t *n,
                                           size_t *count, char *err, size_t errlen);
/* Writes out_dir/tokenizer.model (a SentencePiece model rebuilt from a "llama" vocabulary's
 * tokenizer.ggml.* entries) and out_dir/tokenizer_config.json; *written = 0 (and PK_OK) if g
 * has no such vocabulary. */
PK_NODISCARD pk_status pk_gguf_tok_write_sp(const pk_gguf *g, const char *out_dir, int *written,
                                            char *err, size_t errlen);

/* The same for a byte-level BPE tokenizer.json (llama.cpp's "gpt2" vocabulary: tokens,
 * token_type, merges, pre; plus our pocketllm.tokenizer.* JSON entries), and back to
 * out_dir/tokenizer.json. */
PK_NODISCARD pk_status pk_gguf_tok_from_json(const char *dir, unsigned char **mem, size_t *n,
                                             size_t *count, char *err, size_t errlen);
PK_NODISCARD pk_status pk_gguf_tok_write_bpe(const pk_gguf *g, const char *out_dir, int *written,
                                             char *err, size_t errlen);

/* 1 if buf [len] is a llama GGUF file from another writer, whose q/k rows pk_gguf_model
 * reordered in memory: reading its pages from the file again would undo that. */
int pk_gguf_reordered(const unsigned char *buf, size_t len);

/* Hugging Face name -> llama.cpp name for llama/qwen2 tensors (out [n]); returns 0 if the name
 * has no llama.cpp spelling (it is then written as is). */
int pk_gguf_name_to_gguf(const char *hf, char *out, size_t n);

/* Writes out_dir/config.json (m's source config, torch_dtype = tdtype) and copies the tokenizer
 * files of m's source directory (load.c; shared by pk_model_save and pk_model_save_gguf). */
PK_NODISCARD pk_status pk_model_write_side_files(const pk_model *m, const char *out_dir,
                                                 const char *tdtype, char *err, size_t errlen);

#endif /* PK_GGUF_IMPL_H */
