/* pk_crypto.h: key derivation, sealed records, device identity and secure memory (DESIGN 6),
 * a thin layer over libsodium so that no other module calls it directly.
 *
 * Key hierarchy: passphrase -> Argon2id (crypto_pwhash, salt + limits stored by the caller)
 * -> 32-byte master key -> crypto_kdf subkeys (context "pkstore1"): records, checkpoints,
 * identity, key check. Every key lives in sodium_malloc'd memory (pk_key, opaque) and is wiped
 * when freed.
 *
 * Record format (version 1), all bytes:  [0] version = 0x01 | [1..24] 24-byte random nonce |
 * [25..] XChaCha20-Poly1305 (IETF) ciphertext of the plaintext | 16-byte tag.  Overhead: 41.
 * The associated data is the row identity (see pk_record_ad), so a record moved to another row,
 * swapped or replayed fails to open.
 * Thread safety: pure functions; a pk_key may be read by several threads at once. */
#ifndef PK_CRYPTO_H
#define PK_CRYPTO_H

#include "pk_common.h"

#include <stddef.h>
#include <stdint.h>

#define PK_CRYPTO_KEY_BYTES   32u
#define PK_CRYPTO_SALT_BYTES  16u
#define PK_RECORD_VERSION     1u
#define PK_RECORD_NONCE_BYTES 24u
#define PK_RECORD_TAG_BYTES   16u
#define PK_RECORD_OVERHEAD    (1u + PK_RECORD_NONCE_BYTES + PK_RECORD_TAG_BYTES)
#define PK_RECORD_AD_BYTES    26u
#define PK_SIGN_PK_BYTES      32u
#define PK_SIGN_SK_BYTES      64u
#define PK_SIGN_BYTES         64u

/* Subkey ids (crypto_kdf subkey_id). */
enum {
    PK_SUBKEY_RECORDS = 1,
    PK_SUBKEY_CHECKPOINTS = 2,
    PK_SUBKEY_IDENTITY = 3,
    PK_SUBKEY_KEYCHECK = 4
};
/* Record kinds, first byte of the associated data. */
enum { PK_AD_EXAMPLE = 'E', PK_AD_CHECKPOINT = 'C', PK_AD_IDENTITY = 'I', PK_AD_KEYCHECK = 'K' };

/* sodium_init; call once from main (and from each test) before anything else here. */
PK_NODISCARD pk_status pk_crypto_global_init(void);

/* Secure memory: sodium_malloc (guard pages, mlock where allowed), 16-byte aligned; NULL on
 * failure. Requires pk_crypto_global_init first (libsodium aborts otherwise).
 * pk_secure_free wipes and frees (NULL-safe). pk_secure_wipe zeroes n bytes (not optimized out). */
void *pk_secure_alloc(size_t n);
void pk_secure_free(void *p);
void pk_secure_wipe(void *p, size_t n);
/* Constant-time comparison: 0 if equal. */
int pk_secure_memcmp(const void *a, const void *b, size_t n);
/* Cryptographically random bytes. */
void pk_crypto_random(void *buf, size_t n);

typedef struct pk_key pk_key; /* 32 bytes in sodium memory */

/* Argon2id limits: 0 means the interactive default. Limits are clamped by no one: the minimum
 * (crypto_pwhash_OPSLIMIT_MIN = 1, MEMLIMIT_MIN = 8192) is checked, PK_ERR_ARG below it. */
uint64_t pk_kdf_default_opslimit(void);
size_t pk_kdf_default_memlimit(void);
/* Master key from a passphrase (borrowed, len bytes). *out is an owned result (pk_key_free).
 * PK_ERR_NOMEM if Argon2id cannot get its memory, PK_ERR_ARG for limits out of range. */
PK_NODISCARD pk_status pk_key_from_passphrase(const char *pass, size_t len,
                                              const uint8_t salt[PK_CRYPTO_SALT_BYTES],
                                              uint64_t opslimit, size_t memlimit, pk_key **out);
/* Subkey number id of master (crypto_kdf, context "pkstore1"). *out owned (pk_key_free). */
PK_NODISCARD pk_status pk_key_derive(const pk_key *master, uint64_t id, pk_key **out);
/* A key from 32 raw bytes (borrowed; known-answer tests). *out owned (pk_key_free). */
PK_NODISCARD pk_status pk_key_from_bytes(const uint8_t raw[PK_CRYPTO_KEY_BYTES], pk_key **out);
/* A random key (tests, fuzzing). */
PK_NODISCARD pk_status pk_key_random(pk_key **out);
void pk_key_free(pk_key *k); /* NULL-safe; wipes */

/* The associated data of a row: kind byte, format version byte, a and b as little-endian
 * 64-bit integers, e.g. (PK_AD_EXAMPLE, dataset id, example id). Writes PK_RECORD_AD_BYTES. */
void pk_record_ad(uint8_t ad[PK_RECORD_AD_BYTES], uint8_t kind, int64_t a, int64_t b);
/* Seals pt (borrowed, ptlen bytes) into out (cap >= ptlen + PK_RECORD_OVERHEAD) with a fresh
 * random nonce. PK_ERR_ARG if out is too small. */
PK_NODISCARD pk_status pk_record_seal(const pk_key *k, const uint8_t *ad, size_t adlen,
                                      const void *pt, size_t ptlen, uint8_t *out, size_t cap,
                                      size_t *outlen);
/* Opens a record into pt (cap >= reclen - PK_RECORD_OVERHEAD; *ptlen set). Any failure (short
 * record, unknown version, wrong key, wrong AD, tampered byte) is one opaque PK_ERR_AUTH, and
 * then the first cap bytes of pt are zeroed. PK_ERR_ARG only if cap is too small. */
PK_NODISCARD pk_status pk_record_open(const pk_key *k, const uint8_t *ad, size_t adlen,
                                      const uint8_t *rec, size_t reclen, void *pt, size_t cap,
                                      size_t *ptlen);

/* Ed25519. pk_sign_keypair writes a new key pair (sk is 64 bytes: keep it in secure memory). */
PK_NODISCARD pk_status pk_sign_keypair(uint8_t pk[PK_SIGN_PK_BYTES], uint8_t sk[PK_SIGN_SK_BYTES]);
PK_NODISCARD pk_status pk_sign_detached(const uint8_t sk[PK_SIGN_SK_BYTES], const void *msg,
                                        size_t len, uint8_t sig[PK_SIGN_BYTES]);
/* PK_OK if sig is a valid signature of msg by pk, else PK_ERR_AUTH. */
PK_NODISCARD pk_status pk_sign_verify(const uint8_t pk[PK_SIGN_PK_BYTES], const void *msg,
                                      size_t len, const uint8_t sig[PK_SIGN_BYTES]);

/* ---- hashing and encodings ------------------------------------------------------------------ */

#define PK_HASH_BYTES 32u /* BLAKE2b-256 */

/* Hex of a BLAKE2b-256 hash (65 bytes with the NUL), e.g. for model hashes. */
void pk_hash_hex(const void *data, size_t len, char hex[65]);
/* One-shot BLAKE2b-256 of data into out. */
void pk_hash(const void *data, size_t len, uint8_t out[PK_HASH_BYTES]);

/* A streaming BLAKE2b-256 (for the weights hash: tensors hashed one after the other). The state
 * is a caller-owned value (stack is fine); init, any number of updates, then final once. */
typedef struct pk_hash_state {
    _Alignas(64) unsigned char opaque[384]; /* libsodium's crypto_generichash_state */
} pk_hash_state;
void pk_hash_init(pk_hash_state *st);
void pk_hash_update(pk_hash_state *st, const void *data, size_t len);
void pk_hash_final(pk_hash_state *st, uint8_t out[PK_HASH_BYTES]); /* wipes the state */

/* Lowercase hex of bin[0..n) into hex (2n + 1 bytes with the NUL; hexlen must hold them). */
void pk_hex_encode(char *hex, size_t hexlen, const void *bin, size_t n);
/* Exactly 2n hex digits of hex (NUL-terminated) into bin[n]; PK_ERR_FORMAT otherwise. */
PK_NODISCARD pk_status pk_hex_decode(uint8_t *bin, size_t n, const char *hex);
/* Standard base64 (with padding) of bin[0..n): *out an owned NUL-terminated string (free()). */
PK_NODISCARD pk_status pk_base64_encode(const void *bin, size_t n, char **out);
/* Decodes standard base64 text (len chars) into bin (cap bytes); *n the decoded length.
 * PK_ERR_FORMAT if it is not base64 or does not fit. */
PK_NODISCARD pk_status pk_base64_decode(const char *b64, size_t len, uint8_t *bin, size_t cap,
                                        size_t *n);

/* ---- SHA-256 and uniform randomness --------------------------------------------------------- */

#define PK_SHA256_BYTES 32u

/* Streaming SHA-256 (FIPS 180-4), for checksums that other tools publish as SHA-256 (a model
 * hub's X-Content-Sha256 / ETag). The state is a caller-owned value (stack is fine); init, any
 * number of updates, then final once. Nothing here is secret-dependent in timing beyond the
 * data's length. */
typedef struct pk_sha256_state {
    _Alignas(16) unsigned char opaque[128]; /* libsodium's crypto_hash_sha256_state */
} pk_sha256_state;
void pk_sha256_init(pk_sha256_state *st);
void pk_sha256_update(pk_sha256_state *st, const void *data, size_t len);
void pk_sha256_final(pk_sha256_state *st, uint8_t out[PK_SHA256_BYTES]); /* wipes the state */

/* A uniform integer in [0, upper) from the CSPRNG, without modulo bias; 0 when upper < 2.
 * Thread-safe; needs pk_crypto_global_init. */
uint32_t pk_crypto_random_uniform(uint32_t upper);
/* A uniform double in the open interval (0, 1) from the CSPRNG: 53 random bits, offset by half a
 * step, so it is never 0 or 1 and log(u) is finite (e.g. for Box-Muller noise). Thread-safe;
 * needs pk_crypto_global_init. */
double pk_crypto_random_double(void);

#endif /* PK_CRYPTO_H */
