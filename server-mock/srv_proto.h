/* proto.h: the byte-exact encodings of docs/PROTOCOL.md (seed pool, device id, packed updates,
 * canonical upload message, hash-chained log entries), shared by the coordinator, the load
 * generator and the tests. Library pk_srvproto; libsodium for BLAKE2b, Ed25519 and base64.
 * Thread safety: every function is pure and reentrant (call sodium_init() once first). */
#ifndef PK_SRV_PROTO_H
#define PK_SRV_PROTO_H

#include "pk_common.h"

#include <stddef.h>
#include <stdint.h>

#define PKP_DEVICE_ID_LEN 17 /* "d" + 16 hex chars */
#define PKP_MAX_NAME      64 /* task_id, idempotency_key: 1..64 chars of [A-Za-z0-9._-] */
#define PKP_PAIR_BYTES    6  /* u16le index || f32le value */
#define PKP_HASH_BYTES    32 /* BLAKE2b-256 */

typedef struct pkp_pair {
    uint16_t k; /* pool index */
    float v;    /* per-seed sum of g (upload) or coefficient (log) */
} pkp_pair;

/* seed_k = u64le(first 8 bytes of BLAKE2b-256(pool_seed || u32le(k))). */
uint64_t pkp_pool_seed(const uint8_t pool_seed[32], uint32_t k);

/* "d" + hex(first 8 bytes of BLAKE2b-256(public key)); out gets 18 bytes with the NUL. */
void pkp_device_id(const uint8_t pk[32], char out[PKP_DEVICE_ID_LEN + 1]);

/* 1 if s is 1..64 chars of [A-Za-z0-9._-], else 0. */
int pkp_name_ok(const char *s);

/* Lower-case hex of n bytes into out (2n+1 bytes). */
void pkp_hex(const uint8_t *in, size_t n, char *out);
/* Exactly 2n hex chars -> n bytes; PK_ERR_FORMAT otherwise. */
PK_NODISCARD pk_status pkp_unhex(const char *hex, uint8_t *out, size_t n);
/* The value of one hex digit, or -1. */
int pkp_hexval(char c);
/* 1 if pk is an Ed25519 public key a signature can be checked against: on the curve, canonical,
 * and not of small order (the all-zero key and the other small-order points are refused). */
int pkp_pubkey_ok(const uint8_t pk[32]);

/* Pairs -> packed bytes (n * 6). out must hold n * PKP_PAIR_BYTES bytes. */
void pkp_pack(const pkp_pair *pairs, size_t n, uint8_t *out);
/* Packed bytes -> pairs (len must be a multiple of 6; out holds len / 6 pairs). */
void pkp_unpack(const uint8_t *in, size_t len, pkp_pair *out);

/* Validates packed bytes against the pool size K and a bound: returns NULL when fine, else the
 * protocol error code ("bad_field", "seed_not_in_pool", "unsorted_updates", "non_finite",
 * "out_of_range") and writes a message into msg (msglen bytes). */
const char *pkp_check_updates(const uint8_t *bytes, size_t len, uint32_t K, double max_abs,
                              char *msg, size_t msglen);

/* Base64 (original alphabet, padded). encode: owned result (free()), never NULL unless out of
 * memory. decode: *out owned (free()), PK_ERR_FORMAT on bad base64, PK_ERR_LIMIT if the decoded
 * size would exceed max. */
char *pkp_b64_encode(const uint8_t *in, size_t len);
PK_NODISCARD pk_status pkp_b64_decode(const char *b64, size_t max, uint8_t **out, size_t *len);

/* The canonical upload message (PROTOCOL 5). *msg owned (free()). */
PK_NODISCARD pk_status pkp_upload_msg(const char *task_id, uint64_t round, const char *device_id,
                                      const char *idem_key, uint64_t examples,
                                      const uint8_t *updates, size_t updates_len, uint8_t **msg,
                                      size_t *msg_len);

/* hash_v = BLAKE2b-256(prev || entry_v) (PROTOCOL 6). */
void pkp_log_hash(const uint8_t prev[PKP_HASH_BYTES], const char *task_id, uint64_t version,
                  float lr, uint32_t uploads, uint64_t examples, const uint8_t *updates,
                  size_t updates_len, uint8_t out[PKP_HASH_BYTES]);

/* BLAKE2b-256 of a buffer. */
void pkp_blake2b(const void *in, size_t len, uint8_t out[PKP_HASH_BYTES]);

/* Writes `"%.9g"` of a binary32 value (enough digits to round-trip). */
void pkp_fmt_float(float v, char *out, size_t outlen);

#endif /* PK_SRV_PROTO_H */
