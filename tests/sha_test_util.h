/* sha_test_util.h: the SHA-256 of a file as lowercase hex, as the hub's X-Content-Sha256 and
 * ETag carry it, for the tests that check what a hub served (test_pull, test_server).
 * Header-only (static inline); the test links libsodium. */
#ifndef PK_SHA_TEST_UTIL_H
#define PK_SHA_TEST_UTIL_H

#include <sodium.h>
#include <stdio.h>

/* SHA-256 of the file at path into hex (64 digits and a NUL); a file that cannot be opened
 * hashes as empty. */
static inline void file_sha256_hex(const char *path, char hex[65])
{
    FILE *f = fopen(path, "rb");
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    unsigned char buf[1 << 16], out[crypto_hash_sha256_BYTES];
    size_t n;
    while (f && (n = fread(buf, 1, sizeof buf, f)) > 0)
        crypto_hash_sha256_update(&st, buf, n);
    if (f)
        fclose(f);
    crypto_hash_sha256_final(&st, out);
    sodium_bin2hex(hex, 65, out, sizeof out);
}

#endif /* PK_SHA_TEST_UTIL_H */
