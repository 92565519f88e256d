/* test_crypto.c: crypto/ known answers (XChaCha20-Poly1305 draft vector, RFC 8032 Ed25519,
 * BLAKE2b-256 and SHA-256), the record format's tamper loops (every byte flip, truncation, wrong
 * AD or key -> PK_ERR_AUTH with the output zeroed), Argon2id key derivation determinism, the
 * streaming hashes against one-shot ones, hex and base64 round trips and refusals, and the range
 * of the uniform random helpers. */
#include "pk_crypto.h"
#include "pk_test.h"

#include <stdlib.h>
#include <string.h>

static size_t unhex(const char *h, uint8_t *out)
{
    size_t n = 0;
    for (; h[0] && h[1]; h += 2) {
        unsigned v = 0;
        sscanf(h, "%2x", &v);
        out[n++] = (uint8_t)v;
    }
    return n;
}

static int all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

/* Ed25519 RFC 8032 section 7.1, test 1 (empty message) and test 2 (one byte 0x72). */
static void test_ed25519_kat(void)
{
    uint8_t pk[32], sig[64], msg[1] = {0x72};
    unhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", pk);
    unhex("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39"
          "701cf9b46bd25bf5f0595bbe24655141438e7a100b",
          sig);
    PK_CHECK_EQ(pk_sign_verify(pk, "", 0, sig), PK_OK);
    PK_CHECK_EQ(pk_sign_verify(pk, msg, 1, sig), PK_ERR_AUTH);
    unhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", pk);
    unhex("92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f36"
          "13d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
          sig);
    PK_CHECK_EQ(pk_sign_verify(pk, msg, 1, sig), PK_OK);
    for (size_t i = 0; i < 64; i++) {
        sig[i] ^= 1;
        PK_CHECK_EQ(pk_sign_verify(pk, msg, 1, sig), PK_ERR_AUTH);
        sig[i] ^= 1;
    }
    /* A fresh pair signs and verifies. */
    uint8_t sk[64];
    PK_CHECK_EQ(pk_sign_keypair(pk, sk), PK_OK);
    PK_CHECK_EQ(pk_sign_detached(sk, "hello", 5, sig), PK_OK);
    PK_CHECK_EQ(pk_sign_verify(pk, "hello", 5, sig), PK_OK);
    PK_CHECK_EQ(pk_sign_verify(pk, "hellO", 5, sig), PK_ERR_AUTH);
    pk_secure_wipe(sk, sizeof sk);
}

static void test_hash(void)
{
    char hex[65];
    /* BLAKE2b-256 of the empty string. */
    pk_hash_hex("", 0, hex);
    PK_CHECK(!strcmp(hex, "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8"));
}

/* Known answers computed with Python's hashlib (blake2b(digest_size=32), sha256). */
static const char blake_empty[] =
    "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8";
static const char blake_abc[] = "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319";
static const char sha_empty[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
static const char sha_abc[] = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
/* FIPS 180-2 appendix B.3: one million 'a'. */
static const char sha_million_a[] =
    "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";

static int hex_is(const uint8_t *bin, size_t n, const char *want)
{
    char hex[129];
    pk_hex_encode(hex, sizeof hex, bin, n);
    return !strcmp(hex, want);
}

static void test_hash_kat(void)
{
    uint8_t h[PK_HASH_BYTES];
    pk_hash("", 0, h);
    PK_CHECK(hex_is(h, sizeof h, blake_empty));
    pk_hash("abc", 3, h);
    PK_CHECK(hex_is(h, sizeof h, blake_abc));
    char hex[65];
    pk_hash_hex("abc", 3, hex);
    PK_CHECK(!strcmp(hex, blake_abc));
}

/* Streaming over every split point of a message (and an empty update) equals one shot. */
static void test_hash_stream(void)
{
    static const char msg[] = "the weights hash is computed tensor by tensor, not in one buffer";
    size_t n = sizeof msg - 1;
    uint8_t one[PK_HASH_BYTES], part[PK_HASH_BYTES];
    pk_hash(msg, n, one);
    for (size_t cut = 0; cut <= n; cut++) {
        pk_hash_state st;
        pk_hash_init(&st);
        pk_hash_update(&st, msg, cut);
        pk_hash_update(&st, "", 0);
        pk_hash_update(&st, msg + cut, n - cut);
        pk_hash_final(&st, part);
        PK_CHECK(memcmp(one, part, sizeof one) == 0);
    }
    pk_hash_state st;
    pk_hash_init(&st);
    pk_hash_final(&st, part);
    PK_CHECK(hex_is(part, sizeof part, blake_empty));
}

static void sha256_of(const void *data, size_t len, size_t chunk, uint8_t out[PK_SHA256_BYTES])
{
    pk_sha256_state st;
    pk_sha256_init(&st);
    for (size_t off = 0; off < len; off += chunk)
        pk_sha256_update(&st, (const char *)data + off, len - off < chunk ? len - off : chunk);
    pk_sha256_final(&st, out);
}

static void test_sha256(void)
{
    uint8_t h[PK_SHA256_BYTES];
    sha256_of("", 0, 1, h);
    PK_CHECK(hex_is(h, sizeof h, sha_empty));
    sha256_of("abc", 3, 3, h);
    PK_CHECK(hex_is(h, sizeof h, sha_abc));
    sha256_of("abc", 3, 1, h);
    PK_CHECK(hex_is(h, sizeof h, sha_abc));
    size_t n = 1000000;
    char *a = malloc(n);
    PK_CHECK(a != NULL);
    if (!a)
        return;
    memset(a, 'a', n);
    sha256_of(a, n, 4093, h); /* chunks that straddle SHA-256's 64-byte blocks */
    PK_CHECK(hex_is(h, sizeof h, sha_million_a));
    free(a);
}

static void test_hex(void)
{
    uint8_t bin[5] = {0x00, 0x7f, 0x80, 0xab, 0xff}, back[5];
    char hex[11];
    pk_hex_encode(hex, sizeof hex, bin, sizeof bin);
    PK_CHECK(!strcmp(hex, "007f80abff"));
    PK_CHECK_EQ(pk_hex_decode(back, sizeof back, hex), PK_OK);
    PK_CHECK(memcmp(bin, back, sizeof bin) == 0);
    PK_CHECK_EQ(pk_hex_decode(back, sizeof back, "007F80ABFF"), PK_OK); /* either case */
    PK_CHECK(memcmp(bin, back, sizeof bin) == 0);
    PK_CHECK_EQ(pk_hex_decode(back, 0, ""), PK_OK);
    /* wrong length (short, long, odd) and non-hex digits */
    PK_CHECK_EQ(pk_hex_decode(back, sizeof back, "007f80ab"), PK_ERR_FORMAT);
    PK_CHECK_EQ(pk_hex_decode(back, sizeof back, "007f80abff00"), PK_ERR_FORMAT);
    PK_CHECK_EQ(pk_hex_decode(back, sizeof back, "007f80abf"), PK_ERR_FORMAT);
    PK_CHECK_EQ(pk_hex_decode(back, sizeof back, "007f80abfg"), PK_ERR_FORMAT);
    PK_CHECK_EQ(pk_hex_decode(back, sizeof back, "007f 80abf"), PK_ERR_FORMAT);
    PK_CHECK_EQ(pk_hex_decode(back, 1, ":0"), PK_ERR_FORMAT);
}

static void test_base64(void)
{
    uint8_t bin[7] = {250, 251, 252, 253, 254, 255, 0}, back[16];
    size_t n = 99;
    char *b64 = NULL;
    PK_CHECK_EQ(pk_base64_encode(bin, sizeof bin, &b64), PK_OK);
    PK_CHECK(b64 && !strcmp(b64, "+vv8/f7/AA=="));
    PK_CHECK_EQ(pk_base64_decode(b64, strlen(b64), back, sizeof back, &n), PK_OK);
    PK_CHECK(n == sizeof bin && memcmp(bin, back, sizeof bin) == 0);
    free(b64);
    /* every length 0..6 round-trips (all three padding cases) */
    for (size_t len = 0; len < sizeof bin; len++) {
        b64 = NULL;
        PK_CHECK_EQ(pk_base64_encode(bin, len, &b64), PK_OK);
        PK_CHECK(b64 && strlen(b64) == (len + 2) / 3 * 4);
        n = 99;
        PK_CHECK_EQ(pk_base64_decode(b64 ? b64 : "", b64 ? strlen(b64) : 0, back, sizeof back, &n),
                    PK_OK);
        PK_CHECK(n == len && memcmp(bin, back, len) == 0);
        free(b64);
    }
    /* not base64: bad characters, missing padding, trailing bytes, more than fits */
    static const char *const bad[] = {"@@@@", "QUJD!", "QUI", "QQ=", "QUJD QUJD", "QUJDRA==x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        PK_CHECK_EQ(pk_base64_decode(bad[i], strlen(bad[i]), back, sizeof back, &n), PK_ERR_FORMAT);
    PK_CHECK_EQ(pk_base64_decode("+vv8/f7/AA==", 12, back, 6, &n), PK_ERR_FORMAT);
}

static void test_random(void)
{
    int seen[7] = {0};
    for (int i = 0; i < 2000; i++) {
        uint32_t k = pk_crypto_random_uniform(7);
        PK_CHECK(k < 7);
        if (k < 7)
            seen[k]++;
    }
    for (int k = 0; k < 7; k++)
        PK_CHECK(seen[k] > 150); /* expected 286 each; 150 is > 8 sigma below */
    PK_CHECK_EQ(pk_crypto_random_uniform(1), 0);
    PK_CHECK_EQ(pk_crypto_random_uniform(0), 0);
    double sum = 0.0;
    for (int i = 0; i < 10000; i++) {
        double u = pk_crypto_random_double();
        PK_CHECK(u > 0.0 && u < 1.0);
        sum += u;
    }
    PK_CHECK_NEAR(sum / 10000.0, 0.5, 0.03); /* sd of the mean 0.0029 */
}

static void test_record_tamper(void)
{
    pk_key *k = NULL, *k2 = NULL;
    uint8_t ad[PK_RECORD_AD_BYTES], ad2[PK_RECORD_AD_BYTES];
    uint8_t rec[256], pt[256];
    size_t reclen = 0, ptlen = 0;
    const char msg[] = "my private note: the cat is called Pip";
    PK_CHECK_EQ(pk_key_random(&k), PK_OK);
    PK_CHECK_EQ(pk_key_random(&k2), PK_OK);
    pk_record_ad(ad, PK_AD_EXAMPLE, 7, 42);
    PK_CHECK_EQ(pk_record_seal(k, ad, sizeof ad, msg, sizeof msg, rec, sizeof rec, &reclen), PK_OK);
    PK_CHECK_EQ(reclen, sizeof msg + PK_RECORD_OVERHEAD);
    PK_CHECK_EQ(rec[0], PK_RECORD_VERSION);
    for (size_t i = 0; i + 3 <= reclen; i++)
        PK_CHECK(memcmp(rec + i, "Pip", 3) != 0);
    PK_CHECK_EQ(pk_record_open(k, ad, sizeof ad, rec, reclen, pt, sizeof pt, &ptlen), PK_OK);
    PK_CHECK_EQ(ptlen, sizeof msg);
    PK_CHECK(!memcmp(pt, msg, sizeof msg));
    /* Two seals of the same plaintext differ (random nonce). */
    uint8_t rec2[256];
    size_t reclen2 = 0;
    PK_CHECK_EQ(pk_record_seal(k, ad, sizeof ad, msg, sizeof msg, rec2, sizeof rec2, &reclen2),
                PK_OK);
    PK_CHECK(memcmp(rec, rec2, reclen) != 0);
    /* Every bit of every byte flipped: PK_ERR_AUTH and a zeroed output. */
    int bad = 0;
    for (size_t i = 0; i < reclen; i++) {
        for (int b = 0; b < 8; b++) {
            memset(pt, 0xAA, sizeof pt);
            rec[i] ^= (uint8_t)(1u << b);
            pk_status st = pk_record_open(k, ad, sizeof ad, rec, reclen, pt, sizeof pt, &ptlen);
            rec[i] ^= (uint8_t)(1u << b);
            if (st != PK_ERR_AUTH || !all_zero(pt, sizeof pt) || ptlen != 0)
                bad++;
        }
    }
    PK_CHECK_EQ(bad, 0);
    /* Truncations and extensions. */
    for (size_t n = 0; n < reclen; n++)
        PK_CHECK_EQ(pk_record_open(k, ad, sizeof ad, rec, n, pt, sizeof pt, &ptlen), PK_ERR_AUTH);
    rec[reclen] = 0;
    PK_CHECK_EQ(pk_record_open(k, ad, sizeof ad, rec, reclen + 1, pt, sizeof pt, &ptlen),
                PK_ERR_AUTH);
    /* Another row identity, another kind, another key. */
    pk_record_ad(ad2, PK_AD_EXAMPLE, 7, 43);
    PK_CHECK_EQ(pk_record_open(k, ad2, sizeof ad2, rec, reclen, pt, sizeof pt, &ptlen),
                PK_ERR_AUTH);
    pk_record_ad(ad2, PK_AD_EXAMPLE, 8, 42);
    PK_CHECK_EQ(pk_record_open(k, ad2, sizeof ad2, rec, reclen, pt, sizeof pt, &ptlen),
                PK_ERR_AUTH);
    pk_record_ad(ad2, PK_AD_CHECKPOINT, 7, 42);
    PK_CHECK_EQ(pk_record_open(k, ad2, sizeof ad2, rec, reclen, pt, sizeof pt, &ptlen),
                PK_ERR_AUTH);
    PK_CHECK_EQ(pk_record_open(k2, ad, sizeof ad, rec, reclen, pt, sizeof pt, &ptlen), PK_ERR_AUTH);
    /* Output too small is a caller bug (ARG), too small an output buffer for seal too. */
    PK_CHECK_EQ(pk_record_open(k, ad, sizeof ad, rec, reclen, pt, 3, &ptlen), PK_ERR_ARG);
    PK_CHECK_EQ(pk_record_seal(k, ad, sizeof ad, msg, sizeof msg, rec2, 10, &reclen2), PK_ERR_ARG);
    pk_key_free(k);
    pk_key_free(k2);
}

/* draft-irtf-cfrg-xchacha-03 A.3.1: the AEAD vector, as a version-1 record. */
static void test_xchacha_kat(void)
{
    uint8_t key[32], rec[256], ad[12], pt[200];
    size_t ptlen = 0;
    const char *text = "Ladies and Gentlemen of the class of '99: If I could offer you only one "
                       "tip for the future, sunscreen would be it.";
    unhex("50515253c0c1c2c3c4c5c6c7", ad);
    rec[0] = 1;
    unhex("404142434445464748494a4b4c4d4e4f5051525354555657", rec + 1);
    size_t n =
        unhex("bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb731c7f1b0b4a"
              "a6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b4522f8c9ba40db5d945b11b69b982"
              "c1bb9e3f3fac2bc369488f76b2383565d3fff921f9664c97637da9768812f615c68b13b52e"
              "c0875924c1c7987947deafd8780acf49",
              rec + 25);
    pk_key *k = NULL;
    unhex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f", key);
    PK_CHECK_EQ(pk_key_from_bytes(key, &k), PK_OK);
    PK_CHECK_EQ(pk_record_open(k, ad, sizeof ad, rec, 25 + n, pt, sizeof pt, &ptlen), PK_OK);
    PK_CHECK_EQ(ptlen, strlen(text));
    PK_CHECK(!memcmp(pt, text, strlen(text)));
    pk_key_free(k);
}

static void test_kdf(void)
{
    uint8_t salt[PK_CRYPTO_SALT_BYTES] = {1, 2, 3}, ad[PK_RECORD_AD_BYTES], rec[64], pt[64];
    size_t reclen = 0, ptlen = 0;
    pk_key *a = NULL, *b = NULL, *c = NULL, *sa = NULL, *sb = NULL, *sa2 = NULL;
    PK_CHECK_EQ(pk_key_from_passphrase("pw", 2, salt, 1, 8192, &a), PK_OK);
    PK_CHECK_EQ(pk_key_from_passphrase("pw", 2, salt, 1, 8192, &b), PK_OK);
    PK_CHECK_EQ(pk_key_from_passphrase("pW", 2, salt, 1, 8192, &c), PK_OK);
    PK_CHECK_EQ(pk_key_from_passphrase("pw", 2, salt, 0, 100, &sa), PK_ERR_ARG);
    PK_CHECK(sa == NULL);
    pk_record_ad(ad, PK_AD_KEYCHECK, 0, 0);
    PK_CHECK_EQ(pk_record_seal(a, ad, sizeof ad, "check", 5, rec, sizeof rec, &reclen), PK_OK);
    PK_CHECK_EQ(pk_record_open(b, ad, sizeof ad, rec, reclen, pt, sizeof pt, &ptlen), PK_OK);
    PK_CHECK_EQ(pk_record_open(c, ad, sizeof ad, rec, reclen, pt, sizeof pt, &ptlen), PK_ERR_AUTH);
    /* Subkeys: deterministic per id, distinct across ids. */
    PK_CHECK_EQ(pk_key_derive(a, PK_SUBKEY_RECORDS, &sa), PK_OK);
    PK_CHECK_EQ(pk_key_derive(b, PK_SUBKEY_RECORDS, &sa2), PK_OK);
    PK_CHECK_EQ(pk_key_derive(a, PK_SUBKEY_CHECKPOINTS, &sb), PK_OK);
    PK_CHECK_EQ(pk_record_seal(sa, ad, sizeof ad, "x", 1, rec, sizeof rec, &reclen), PK_OK);
    PK_CHECK_EQ(pk_record_open(sa2, ad, sizeof ad, rec, reclen, pt, sizeof pt, &ptlen), PK_OK);
    PK_CHECK_EQ(pk_record_open(sb, ad, sizeof ad, rec, reclen, pt, sizeof pt, &ptlen), PK_ERR_AUTH);
    PK_CHECK_EQ(pk_record_open(a, ad, sizeof ad, rec, reclen, pt, sizeof pt, &ptlen), PK_ERR_AUTH);
    pk_key_free(a);
    pk_key_free(b);
    pk_key_free(c);
    pk_key_free(sa);
    pk_key_free(sa2);
    pk_key_free(sb);
    pk_key_free(NULL);
    pk_secure_free(NULL);
}

int main(void)
{
    PK_CHECK_EQ(pk_crypto_global_init(), PK_OK);
    test_ed25519_kat();
    test_hash();
    test_hash_kat();
    test_hash_stream();
    test_sha256();
    test_hex();
    test_base64();
    test_random();
    test_record_tamper();
    test_xchacha_kat();
    test_kdf();
    return PK_TEST_DONE();
}
