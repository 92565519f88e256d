/* pk_tokenizer.h: text <-> token ids for Hugging Face models.
 * Byte-level BPE (GPT-2, OPT, RoBERTa, Llama-3, Qwen2: vocab.json + merges.txt or tokenizer.json)
 * and SentencePiece BPE (Llama/TinyStories: tokenizer.model, or tokenizer.json of that family).
 * Thread safety: a loaded tokenizer is read-only; encode/decode/token_id may run on many threads
 * at once on one handle. A pk_tokenizer_stream is used by one thread at a time. */
#ifndef PK_TOKENIZER_H
#define PK_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "pk_common.h"

typedef struct pk_tokenizer pk_tokenizer;

/* Loads the tokenizer files of directory dir (borrowed). Looks for, in order: tokenizer.json,
 * vocab.json + merges.txt, tokenizer.model; plus the optional tokenizer_config.json,
 * special_tokens_map.json and config.json (special-token ids, add_bos_token/add_eos_token).
 * On success *out is an owned handle (free with pk_tokenizer_free). On failure *out is NULL and
 * err (size errlen, may be NULL/0) gets a message naming the file and what is wrong.
 * Returns PK_OK, PK_ERR_NOTFOUND (no tokenizer files), PK_ERR_IO, PK_ERR_FORMAT (malformed or
 * truncated file), PK_ERR_UNSUPPORTED (a model type / pre-tokenizer we do not handle),
 * PK_ERR_NOMEM, PK_ERR_ARG. */
PK_NODISCARD pk_status pk_tokenizer_load(const char *dir, pk_tokenizer **out, char *err,
                                         size_t errlen);

/* NULL-safe. */
void pk_tokenizer_free(pk_tokenizer *t);

/* Encodes len bytes of text (borrowed; may contain NUL bytes; need not be NUL-terminated).
 * add_special != 0 inserts BOS/EOS as tokenizer_config.json says (add_bos_token/add_eos_token),
 * else the family default (RoBERTa-style <s> ... </s>, SentencePiece BOS, GPT-2 nothing).
 * Special/added tokens written literally in the text are always matched as whole strings.
 * *ids is an owned result (free()), *n its length; *ids may be NULL when *n == 0.
 * Returns PK_OK, PK_ERR_NOMEM, PK_ERR_ARG (NULL text with len > 0). */
PK_NODISCARD pk_status pk_tokenizer_encode(const pk_tokenizer *t, const char *text, size_t len,
                                           int add_special, int32_t **ids, size_t *n);

/* Decodes n ids (borrowed). skip_special != 0 drops special tokens (BOS/EOS/PAD/added special).
 * *text is an owned, NUL-terminated result (free()); *len excludes the NUL (the text itself may
 * contain NUL bytes). Returns PK_OK, PK_ERR_NOMEM, PK_ERR_ARG (an id outside the vocabulary). */
PK_NODISCARD pk_status pk_tokenizer_decode(const pk_tokenizer *t, const int32_t *ids, size_t n,
                                           int skip_special, char **text, size_t *len);

/* The id of a vocabulary piece or added token written exactly as in the files (e.g. "<s>",
 * "Ġthe", "▁Once"), or -1. piece is borrowed and NUL-terminated. */
int32_t pk_tokenizer_token_id(const pk_tokenizer *t, const char *piece);

/* Special-token ids, -1 if the tokenizer has none. */
int32_t pk_tokenizer_bos(const pk_tokenizer *t);
int32_t pk_tokenizer_eos(const pk_tokenizer *t);
int32_t pk_tokenizer_pad(const pk_tokenizer *t);
int32_t pk_tokenizer_mask(const pk_tokenizer *t);
int32_t pk_tokenizer_unk(const pk_tokenizer *t);

/* Number of ids (vocabulary plus added tokens): every valid id is < this. */
size_t pk_tokenizer_vocab_size(const pk_tokenizer *t);

/* Streaming decode for generation: push ids one at a time and get back only bytes that form
 * complete UTF-8 characters; an incomplete trailing sequence is held back until it completes
 * (or until flush, which returns whatever is left). */
typedef struct pk_tokenizer_stream pk_tokenizer_stream;

/* t is borrowed and must outlive the stream. *out is owned (pk_tokenizer_stream_free). */
PK_NODISCARD pk_status pk_tokenizer_stream_new(const pk_tokenizer *t, int skip_special,
                                               pk_tokenizer_stream **out);
/* Appends id; *bytes is a view of the newly completed text (valid until the next call on s),
 * *len its length (may be 0). Returns PK_OK, PK_ERR_ARG (bad id), PK_ERR_NOMEM. */
PK_NODISCARD pk_status pk_tokenizer_stream_push(pk_tokenizer_stream *s, int32_t id,
                                                const char **bytes, size_t *len);
/* Returns the held-back bytes (possibly invalid UTF-8) as a view, and resets the stream. */
PK_NODISCARD pk_status pk_tokenizer_stream_flush(pk_tokenizer_stream *s, const char **bytes,
                                                 size_t *len);
/* NULL-safe. */
void pk_tokenizer_stream_free(pk_tokenizer_stream *s);

#endif /* PK_TOKENIZER_H */
