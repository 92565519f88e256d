/* fuzz_record.c: libFuzzer target for the sealed-record decoder and the example plaintext
 * decoder. Arbitrary bytes as a record must fail with PK_ERR_AUTH (never crash, never decrypt);
 * arbitrary bytes as a plaintext either decode to NUL-terminated fields or give PK_ERR_FORMAT;
 * a seal/open round trip of the input must give it back, and one flipped byte must not. */
#include "pk_crypto.h"
#include "pk_store.h"

#include <stdlib.h>
#include <string.h>

static void check(int ok)
{
    if (!ok)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t raw[PK_CRYPTO_KEY_BYTES] = {7, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    uint8_t ad[PK_RECORD_AD_BYTES];
    pk_key *k = NULL;
    size_t n = 0;
    check(pk_crypto_global_init() == PK_OK);
    check(pk_key_from_bytes(raw, &k) == PK_OK);
    pk_record_ad(ad, PK_AD_EXAMPLE, (int64_t)size, 1);
    uint8_t *pt = malloc(size + 1), *rec = malloc(size + PK_RECORD_OVERHEAD);
    check(pt && rec);
    /* 1. The bytes as a record: never authentic. */
    pk_status st = pk_record_open(k, ad, sizeof ad, data, size, pt, size + 1, &n);
    check(st == PK_ERR_AUTH && n == 0);
    /* 2. The bytes as an example plaintext. */
    pk_example *e = NULL;
    st = pk_example_decode(data, size, 5, &e);
    check(st == PK_OK || st == PK_ERR_FORMAT);
    if (st == PK_OK) {
        const char *f[5] = {e->text, e->text2, e->prompt, e->response, e->label};
        size_t total = 0;
        for (int i = 0; i < 5; i++)
            total += f[i] ? strlen(f[i]) : 0;
        check(e->id == 5 && total < size);
        pk_example_free(e);
    } else {
        check(e == NULL);
    }
    /* 3. Round trip, then one flipped byte. */
    size_t reclen = 0;
    check(pk_record_seal(k, ad, sizeof ad, data, size, rec, size + PK_RECORD_OVERHEAD, &reclen) ==
          PK_OK);
    check(pk_record_open(k, ad, sizeof ad, rec, reclen, pt, size + 1, &n) == PK_OK && n == size &&
          (size == 0 || !memcmp(pt, data, size)));
    size_t at = size ? data[0] % reclen : 0;
    rec[at] ^= 0x20;
    check(pk_record_open(k, ad, sizeof ad, rec, reclen, pt, size + 1, &n) == PK_ERR_AUTH);
    free(pt);
    free(rec);
    pk_key_free(k);
    return 0;
}
