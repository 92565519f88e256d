/* proto.c: byte-exact encodings of docs/PROTOCOL.md (seed pool, device ids, packed per-seed
 * values, the canonical signed upload message, hash-chained log entries). No I/O, no state;
 * HTTP and storage live in the server files, the client side in net/sync*.c. */
#include "srv_proto.h"

#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char upload_tag[] = "pocketllm-upload-v1"; /* 19 bytes, no NUL */
static const char log_tag[] = "pocketllm-log-v1";       /* 16 bytes, no NUL */

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

uint64_t pkp_pool_seed(const uint8_t pool_seed[32], uint32_t k)
{
    uint8_t in[36], h[32];
    memcpy(in, pool_seed, 32);
    pk_put_le32(in + 32, k);
    crypto_generichash(h, sizeof h, in, sizeof in, NULL, 0);
    uint64_t s = 0;
    for (int i = 7; i >= 0; i--)
        s = s << 8 | h[i];
    return s;
}

void pkp_device_id(const uint8_t pk[32], char out[PKP_DEVICE_ID_LEN + 1])
{
    uint8_t h[32];
    crypto_generichash(h, sizeof h, pk, 32, NULL, 0);
    out[0] = 'd';
    pkp_hex(h, 8, out + 1);
}

int pkp_name_ok(const char *s)
{
    size_t n = strlen(s);
    return n >= 1 && n <= PKP_MAX_NAME && pk_name_chars_ok(s, n, "._-");
}

void pkp_hex(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

int pkp_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int pkp_pubkey_ok(const uint8_t pk[32])
{
    return crypto_core_ed25519_is_valid_point(pk) == 1;
}

pk_status pkp_unhex(const char *hex, uint8_t *out, size_t n)
{
    if (strlen(hex) != 2 * n)
        return PK_ERR_FORMAT;
    for (size_t i = 0; i < n; i++) {
        int hi = pkp_hexval(hex[2 * i]), lo = pkp_hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return PK_ERR_FORMAT;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return PK_OK;
}

void pkp_pack(const pkp_pair *pairs, size_t n, uint8_t *out)
{
    for (size_t i = 0; i < n; i++) {
        put_u16(out + i * PKP_PAIR_BYTES, pairs[i].k);
        pk_put_le32(out + i * PKP_PAIR_BYTES + 2, pk_f32_bits(pairs[i].v));
    }
}

void pkp_unpack(const uint8_t *in, size_t len, pkp_pair *out)
{
    size_t n = len / PKP_PAIR_BYTES;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = in + i * PKP_PAIR_BYTES;
        uint32_t u = pk_get_le32(p + 2);
        out[i].k = (uint16_t)(p[0] | p[1] << 8);
        memcpy(&out[i].v, &u, 4);
    }
}

const char *pkp_check_updates(const uint8_t *bytes, size_t len, uint32_t K, double max_abs,
                              char *msg, size_t msglen)
{
    if (len % PKP_PAIR_BYTES != 0) {
        snprintf(msg, msglen, "updates: %zu bytes is not a multiple of %d", len, PKP_PAIR_BYTES);
        return "bad_field";
    }
    size_t n = len / PKP_PAIR_BYTES;
    long prev = -1;
    for (size_t i = 0; i < n; i++) {
        pkp_pair p;
        pkp_unpack(bytes + i * PKP_PAIR_BYTES, PKP_PAIR_BYTES, &p);
        if (p.k >= K) {
            snprintf(msg, msglen, "updates[%zu]: seed index %u is not in the pool (K = %u)", i,
                     (unsigned)p.k, (unsigned)K);
            return "seed_not_in_pool";
        }
        if ((long)p.k <= prev) {
            snprintf(msg, msglen,
                     "updates[%zu]: seed index %u does not follow %ld (must be "
                     "strictly ascending)",
                     i, (unsigned)p.k, prev);
            return "unsorted_updates";
        }
        prev = p.k;
        if (!isfinite(p.v)) {
            snprintf(msg, msglen, "updates[%zu]: value for seed index %u is not finite", i,
                     (unsigned)p.k);
            return "non_finite";
        }
        if (fabs((double)p.v) > max_abs) {
            snprintf(msg, msglen, "updates[%zu]: |%g| exceeds max_abs_g = %g", i, (double)p.v,
                     max_abs);
            return "out_of_range";
        }
    }
    return NULL;
}

char *pkp_b64_encode(const uint8_t *in, size_t len)
{
    size_t cap = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);
    char *out = malloc(cap);
    if (!out)
        return NULL;
    sodium_bin2base64(out, cap, in, len, sodium_base64_VARIANT_ORIGINAL);
    return out;
}

pk_status pkp_b64_decode(const char *b64, size_t max, uint8_t **out, size_t *len)
{
    size_t n = strlen(b64);
    size_t cap = n / 4 * 3 + 3;
    *out = NULL;
    *len = 0;
    if (cap > max + 3)
        return PK_ERR_LIMIT;
    uint8_t *buf = malloc(cap ? cap : 1);
    if (!buf)
        return PK_ERR_NOMEM;
    size_t got = 0;
    const char *end = NULL;
    if (sodium_base642bin(buf, cap, b64, n, NULL, &got, &end, sodium_base64_VARIANT_ORIGINAL) !=
            0 ||
        end != b64 + n) {
        free(buf);
        return PK_ERR_FORMAT;
    }
    if (got > max) {
        free(buf);
        return PK_ERR_LIMIT;
    }
    *out = buf;
    *len = got;
    return PK_OK;
}

pk_status pkp_upload_msg(const char *task_id, uint64_t round, const char *device_id,
                         const char *idem_key, uint64_t examples, const uint8_t *updates,
                         size_t updates_len, uint8_t **msg, size_t *msg_len)
{
    size_t lt = strlen(task_id), ld = strlen(device_id), li = strlen(idem_key);
    size_t total = 19 + 4 + lt + 8 + 4 + ld + 4 + li + 8 + 4 + updates_len;
    *msg = NULL;
    *msg_len = 0;
    if (updates_len % PKP_PAIR_BYTES != 0 || lt > 1024 || ld > 1024 || li > 1024)
        return PK_ERR_ARG;
    uint8_t *m = malloc(total), *p = m;
    if (!m)
        return PK_ERR_NOMEM;
    memcpy(p, upload_tag, 19), p += 19;
    pk_put_le32(p, (uint32_t)lt), p += 4;
    memcpy(p, task_id, lt), p += lt;
    pk_put_le64(p, round), p += 8;
    pk_put_le32(p, (uint32_t)ld), p += 4;
    memcpy(p, device_id, ld), p += ld;
    pk_put_le32(p, (uint32_t)li), p += 4;
    memcpy(p, idem_key, li), p += li;
    pk_put_le64(p, examples), p += 8;
    pk_put_le32(p, (uint32_t)(updates_len / PKP_PAIR_BYTES)), p += 4;
    if (updates_len)
        memcpy(p, updates, updates_len);
    *msg = m;
    *msg_len = total;
    return PK_OK;
}

void pkp_log_hash(const uint8_t prev[PKP_HASH_BYTES], const char *task_id, uint64_t version,
                  float lr, uint32_t uploads, uint64_t examples, const uint8_t *updates,
                  size_t updates_len, uint8_t out[PKP_HASH_BYTES])
{
    crypto_generichash_state st;
    uint8_t b[8];
    size_t lt = strlen(task_id);
    crypto_generichash_init(&st, NULL, 0, PKP_HASH_BYTES);
    crypto_generichash_update(&st, prev, PKP_HASH_BYTES);
    crypto_generichash_update(&st, (const uint8_t *)log_tag, 16);
    pk_put_le32(b, (uint32_t)lt);
    crypto_generichash_update(&st, b, 4);
    crypto_generichash_update(&st, (const uint8_t *)task_id, lt);
    pk_put_le64(b, version);
    crypto_generichash_update(&st, b, 8);
    pk_put_le32(b, pk_f32_bits(lr));
    crypto_generichash_update(&st, b, 4);
    pk_put_le32(b, uploads);
    crypto_generichash_update(&st, b, 4);
    pk_put_le64(b, examples);
    crypto_generichash_update(&st, b, 8);
    pk_put_le32(b, (uint32_t)(updates_len / PKP_PAIR_BYTES));
    crypto_generichash_update(&st, b, 4);
    if (updates_len)
        crypto_generichash_update(&st, updates, updates_len);
    crypto_generichash_final(&st, out, PKP_HASH_BYTES);
}

void pkp_blake2b(const void *in, size_t len, uint8_t out[PKP_HASH_BYTES])
{
    crypto_generichash(out, PKP_HASH_BYTES, in, len, NULL, 0);
}

void pkp_fmt_float(float v, char *out, size_t outlen)
{
    snprintf(out, outlen, "%.9g", (double)v);
}
