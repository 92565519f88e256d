/* crypto.c: libsodium wrappers for keys, sealed records and Ed25519 (see pk_crypto.h for the
 * record format and key hierarchy). Storage of salts, records and keys is left to store/. */
#include "pk_crypto.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

struct pk_key {
    uint8_t k[PK_CRYPTO_KEY_BYTES]; /* key bytes, in sodium_malloc'd memory */
};

static const char kdf_context[crypto_kdf_CONTEXTBYTES + 1] = "pkstore1";

pk_status pk_crypto_global_init(void)
{
    if (sodium_init() < 0) {
        pk_log(PK_LOG_ERROR, "crypto: sodium_init failed");
        return PK_ERR_UNSUPPORTED;
    }
    return PK_OK;
}

void *pk_secure_alloc(size_t n)
{
    /* sodium_malloc places the block at the end of its page: round the size to 16 bytes so the
     * pointer is aligned for any type. */
    if (n > SIZE_MAX - 16)
        return NULL;
    return sodium_malloc(n ? (n + 15) & ~(size_t)15 : 16);
}

void pk_secure_free(void *p)
{
    if (p)
        sodium_free(p);
}

void pk_secure_wipe(void *p, size_t n)
{
    if (p && n)
        sodium_memzero(p, n);
}

int pk_secure_memcmp(const void *a, const void *b, size_t n)
{
    return sodium_memcmp(a, b, n);
}

void pk_crypto_random(void *buf, size_t n)
{
    randombytes_buf(buf, n);
}

uint64_t pk_kdf_default_opslimit(void)
{
    return crypto_pwhash_OPSLIMIT_INTERACTIVE;
}

size_t pk_kdf_default_memlimit(void)
{
    return crypto_pwhash_MEMLIMIT_INTERACTIVE;
}

static pk_key *key_alloc(void)
{
    pk_key *k = sodium_malloc(sizeof *k);
    return k;
}

void pk_key_free(pk_key *k)
{
    if (k)
        sodium_free(k); /* sodium_free wipes before unmapping */
}

pk_status pk_key_from_passphrase(const char *pass, size_t len,
                                 const uint8_t salt[PK_CRYPTO_SALT_BYTES], uint64_t opslimit,
                                 size_t memlimit, pk_key **out)
{
    *out = NULL;
    if (opslimit == 0)
        opslimit = pk_kdf_default_opslimit();
    if (memlimit == 0)
        memlimit = pk_kdf_default_memlimit();
    if (opslimit < crypto_pwhash_OPSLIMIT_MIN || opslimit > crypto_pwhash_OPSLIMIT_MAX ||
        memlimit < crypto_pwhash_MEMLIMIT_MIN || memlimit > crypto_pwhash_MEMLIMIT_MAX ||
        len > crypto_pwhash_PASSWD_MAX)
        return PK_ERR_ARG;
    pk_key *k = key_alloc();
    if (!k)
        return PK_ERR_NOMEM;
    if (crypto_pwhash(k->k, sizeof k->k, pass ? pass : "", len, salt, (unsigned long long)opslimit,
                      memlimit, crypto_pwhash_ALG_ARGON2ID13) != 0) {
        pk_key_free(k);
        return PK_ERR_NOMEM; /* the only documented failure: not enough memory */
    }
    *out = k;
    return PK_OK;
}

pk_status pk_key_derive(const pk_key *master, uint64_t id, pk_key **out)
{
    *out = NULL;
    pk_key *k = key_alloc();
    if (!k)
        return PK_ERR_NOMEM;
    if (crypto_kdf_derive_from_key(k->k, sizeof k->k, id, kdf_context, master->k) != 0) {
        pk_key_free(k);
        return PK_ERR_ARG;
    }
    *out = k;
    return PK_OK;
}

pk_status pk_key_from_bytes(const uint8_t raw[PK_CRYPTO_KEY_BYTES], pk_key **out)
{
    *out = key_alloc();
    if (!*out)
        return PK_ERR_NOMEM;
    memcpy((*out)->k, raw, PK_CRYPTO_KEY_BYTES);
    return PK_OK;
}

pk_status pk_key_random(pk_key **out)
{
    *out = key_alloc();
    if (!*out)
        return PK_ERR_NOMEM;
    randombytes_buf((*out)->k, sizeof(*out)->k);
    return PK_OK;
}

void pk_record_ad(uint8_t ad[PK_RECORD_AD_BYTES], uint8_t kind, int64_t a, int64_t b)
{
    uint64_t ua = (uint64_t)a, ub = (uint64_t)b;
    ad[0] = kind;
    ad[1] = (uint8_t)PK_RECORD_VERSION;
    for (int i = 0; i < 8; i++) {
        ad[2 + i] = (uint8_t)(ua >> (8 * i));
        ad[10 + i] = (uint8_t)(ub >> (8 * i));
    }
    memset(ad + 18, 0, PK_RECORD_AD_BYTES - 18); /* reserved */
}

pk_status pk_record_seal(const pk_key *k, const uint8_t *ad, size_t adlen, const void *pt,
                         size_t ptlen, uint8_t *out, size_t cap, size_t *outlen)
{
    *outlen = 0;
    if (ptlen > SIZE_MAX - PK_RECORD_OVERHEAD || cap < ptlen + PK_RECORD_OVERHEAD)
        return PK_ERR_ARG;
    out[0] = (uint8_t)PK_RECORD_VERSION;
    randombytes_buf(out + 1, PK_RECORD_NONCE_BYTES);
    unsigned long long clen = 0;
    crypto_aead_xchacha20poly1305_ietf_encrypt(out + 1 + PK_RECORD_NONCE_BYTES, &clen, pt, ptlen,
                                               ad, adlen, NULL, out + 1, k->k);
    *outlen = 1 + PK_RECORD_NONCE_BYTES + (size_t)clen;
    return PK_OK;
}

pk_status pk_record_open(const pk_key *k, const uint8_t *ad, size_t adlen, const uint8_t *rec,
                         size_t reclen, void *pt, size_t cap, size_t *ptlen)
{
    *ptlen = 0;
    if (reclen < PK_RECORD_OVERHEAD || rec[0] != PK_RECORD_VERSION) {
        pk_secure_wipe(pt, cap);
        return PK_ERR_AUTH;
    }
    if (cap < reclen - PK_RECORD_OVERHEAD)
        return PK_ERR_ARG;
    unsigned long long mlen = 0;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(pt, &mlen, NULL, rec + 1 + PK_RECORD_NONCE_BYTES,
                                                   reclen - 1 - PK_RECORD_NONCE_BYTES, ad, adlen,
                                                   rec + 1, k->k) != 0) {
        pk_secure_wipe(pt, cap);
        return PK_ERR_AUTH;
    }
    *ptlen = (size_t)mlen;
    return PK_OK;
}

pk_status pk_sign_keypair(uint8_t pk[PK_SIGN_PK_BYTES], uint8_t sk[PK_SIGN_SK_BYTES])
{
    return crypto_sign_keypair(pk, sk) == 0 ? PK_OK : PK_ERR_ARG;
}

pk_status pk_sign_detached(const uint8_t sk[PK_SIGN_SK_BYTES], const void *msg, size_t len,
                           uint8_t sig[PK_SIGN_BYTES])
{
    return crypto_sign_detached(sig, NULL, msg, len, sk) == 0 ? PK_OK : PK_ERR_ARG;
}

pk_status pk_sign_verify(const uint8_t pk[PK_SIGN_PK_BYTES], const void *msg, size_t len,
                         const uint8_t sig[PK_SIGN_BYTES])
{
    return crypto_sign_verify_detached(sig, msg, len, pk) == 0 ? PK_OK : PK_ERR_AUTH;
}

void pk_hash_hex(const void *data, size_t len, char hex[65])
{
    uint8_t h[32];
    crypto_generichash(h, sizeof h, data, len, NULL, 0);
    sodium_bin2hex(hex, 65, h, sizeof h);
}

void pk_hash(const void *data, size_t len, uint8_t out[PK_HASH_BYTES])
{
    crypto_generichash(out, PK_HASH_BYTES, data, len, NULL, 0);
}

_Static_assert(sizeof(pk_hash_state) >= sizeof(crypto_generichash_state),
               "pk_hash_state must hold libsodium's state");

void pk_hash_init(pk_hash_state *st)
{
    PK_ASSERT(crypto_generichash_init((crypto_generichash_state *)(void *)st->opaque, NULL, 0,
                                      PK_HASH_BYTES) == 0);
}

void pk_hash_update(pk_hash_state *st, const void *data, size_t len)
{
    crypto_generichash_update((crypto_generichash_state *)(void *)st->opaque, data, len);
}

void pk_hash_final(pk_hash_state *st, uint8_t out[PK_HASH_BYTES])
{
    crypto_generichash_final((crypto_generichash_state *)(void *)st->opaque, out, PK_HASH_BYTES);
    sodium_memzero(st, sizeof *st);
}

void pk_hex_encode(char *hex, size_t hexlen, const void *bin, size_t n)
{
    PK_ASSERT(hexlen >= 2 * n + 1);
    sodium_bin2hex(hex, hexlen, bin, n);
}

pk_status pk_hex_decode(uint8_t *bin, size_t n, const char *hex)
{
    size_t got = 0;
    if (strlen(hex) != 2 * n || sodium_hex2bin(bin, n, hex, 2 * n, NULL, &got, NULL) != 0 ||
        got != n)
        return PK_ERR_FORMAT;
    return PK_OK;
}

pk_status pk_base64_encode(const void *bin, size_t n, char **out)
{
    size_t cap = sodium_base64_encoded_len(n, sodium_base64_VARIANT_ORIGINAL);
    char *s = malloc(cap);
    *out = NULL;
    if (!s)
        return PK_ERR_NOMEM;
    sodium_bin2base64(s, cap, bin, n, sodium_base64_VARIANT_ORIGINAL);
    *out = s;
    return PK_OK;
}

pk_status pk_base64_decode(const char *b64, size_t len, uint8_t *bin, size_t cap, size_t *n)
{
    *n = 0;
    if (len == 0)
        return PK_OK;
    if (sodium_base642bin(bin, cap, b64, len, NULL, n, NULL, sodium_base64_VARIANT_ORIGINAL) != 0)
        return PK_ERR_FORMAT;
    return PK_OK;
}

_Static_assert(sizeof(pk_sha256_state) >= sizeof(crypto_hash_sha256_state),
               "pk_sha256_state must hold libsodium's state");
_Static_assert(_Alignof(pk_sha256_state) >= _Alignof(crypto_hash_sha256_state),
               "pk_sha256_state must be aligned for libsodium's state");
_Static_assert(PK_SHA256_BYTES == crypto_hash_sha256_BYTES, "SHA-256 is 32 bytes");

void pk_sha256_init(pk_sha256_state *st)
{
    PK_ASSERT(crypto_hash_sha256_init((crypto_hash_sha256_state *)(void *)st->opaque) == 0);
}

void pk_sha256_update(pk_sha256_state *st, const void *data, size_t len)
{
    crypto_hash_sha256_update((crypto_hash_sha256_state *)(void *)st->opaque, data, len);
}

void pk_sha256_final(pk_sha256_state *st, uint8_t out[PK_SHA256_BYTES])
{
    crypto_hash_sha256_final((crypto_hash_sha256_state *)(void *)st->opaque, out);
    sodium_memzero(st, sizeof *st);
}

uint32_t pk_crypto_random_uniform(uint32_t upper)
{
    return randombytes_uniform(upper);
}

double pk_crypto_random_double(void)
{
    uint64_t r = 0;
    randombytes_buf(&r, sizeof r);
    return ((double)(r >> 11) + 0.5) * (1.0 / 9007199254740992.0); /* (k + 1/2) / 2^53 */
}
