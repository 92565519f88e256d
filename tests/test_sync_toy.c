/* test_sync_toy.c: shared by the sync tests (#included): a toy "model" behind pk_sync_model_ops
 * (a float vector, a quadratic loss towards a private target, the real z generator), agent homes
 * with fast key derivation, and an independent implementation of the protocol's encodings
 * (pool seeds, packed updates, log entry hashes) written from docs/PROTOCOL.md. */
#include "pk_net.h"
#include "pk_rng.h"
#include "pk_store.h"

#include <cJSON.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define TOY_D 96

typedef struct toy {
    float w[TOY_D];
    float base[TOY_D];
    float target[TOY_D]; /* derived from the agent's private text */
    uint64_t key;        /* tensor key of the one tensor */
    int64_t batch;       /* examples per step */
    long grads, applies; /* call counters */
} toy;

static void toy_init(toy *t, const char *private_text)
{
    memset(t, 0, sizeof *t);
    for (int i = 0; i < TOY_D; i++)
        t->base[i] = 0.01f * (float)((i * 37) % 23) - 0.1f;
    uint8_t h[64];
    crypto_generichash(h, sizeof h, (const uint8_t *)private_text, strlen(private_text), NULL, 0);
    for (int i = 0; i < TOY_D; i++)
        t->target[i] = (float)h[i % 64] / 255.0f - 0.5f + 0.25f;
    memcpy(t->w, t->base, sizeof t->w);
    t->key = pk_rng_tensor_key("toy.weight");
    t->batch = 4;
}

static double toy_loss(const toy *t, const float *z, float scale)
{
    double l = 0.0;
    for (int i = 0; i < TOY_D; i++) {
        double d = (double)(t->w[i] + scale * z[i]) - (double)t->target[i];
        l += 0.5 * d * d;
    }
    return l / TOY_D;
}

static pk_status toy_grad(void *user, uint64_t seed, pk_z_kind kind, float eps, float *g,
                          int64_t *n)
{
    toy *t = user;
    float z[TOY_D];
    pk_z_fill(seed, t->key, 0, TOY_D, kind, z);
    *g = (float)((toy_loss(t, z, eps) - toy_loss(t, z, -eps)) / (2.0 * (double)eps));
    *n = t->batch;
    t->grads++;
    return PK_OK;
}

static pk_status toy_apply(void *user, uint64_t seed, pk_z_kind kind, float lr, float coef)
{
    toy *t = user;
    pk_z_axpy(seed, t->key, 0, TOY_D, kind, -(lr * coef), t->w);
    t->applies++;
    return PK_OK;
}

static pk_status toy_reset(void *user)
{
    toy *t = user;
    memcpy(t->w, t->base, sizeof t->w);
    return PK_OK;
}

static void hash_floats(const float *w, char hex[65])
{
    uint8_t h[32];
    crypto_generichash(h, sizeof h, (const uint8_t *)w, TOY_D * sizeof(float), NULL, 0);
    sodium_bin2hex(hex, 65, h, sizeof h);
}

static pk_status toy_hash(void *user, char hex[65])
{
    toy *t = user;
    hash_floats(t->w, hex);
    return PK_OK;
}

static pk_sync_model_ops toy_ops(toy *t)
{
    pk_sync_model_ops o = {toy_grad, toy_apply, toy_reset, toy_hash, t, "all"};
    return o;
}

/* A new agent home with fast (test-only) key derivation, opened. */
static pk_store *make_home(const char *dir)
{
    pk_store_params sp = pk_store_default_params();
    sp.opslimit = crypto_pwhash_OPSLIMIT_MIN;
    sp.memlimit = crypto_pwhash_MEMLIMIT_MIN;
    char err[256] = "";
    pk_store *s = NULL;
    if (pk_store_init(dir, "pw", 2, sp, err, sizeof err) != PK_OK ||
        pk_store_open(dir, "pw", 2, &s, err, sizeof err) != PK_OK) {
        fprintf(stderr, "store %s: %s\n", dir, err);
        return NULL;
    }
    return s;
}

static inline pk_store *open_home(const char *dir)
{
    char err[256] = "";
    pk_store *s = NULL;
    if (pk_store_open(dir, "pw", 2, &s, err, sizeof err) != PK_OK)
        fprintf(stderr, "store %s: %s\n", dir, err);
    return s;
}

/* ---- the protocol, independently (docs/PROTOCOL.md sections 2, 3, 6) ---------------------- */

static uint64_t ref_pool_seed(const uint8_t ps[32], uint32_t k)
{
    uint8_t in[36], h[32];
    memcpy(in, ps, 32);
    in[32] = (uint8_t)k;
    in[33] = (uint8_t)(k >> 8);
    in[34] = (uint8_t)(k >> 16);
    in[35] = (uint8_t)(k >> 24);
    crypto_generichash(h, 32, in, 36, NULL, 0);
    uint64_t s;
    memcpy(&s, h, 8); /* little-endian host (x86-64, aarch64) */
    return s;
}

typedef struct bytes {
    uint8_t b[1 << 16];
    size_t n;
} bytes;

static inline void b_put(bytes *b, const void *p, size_t n)
{
    memcpy(b->b + b->n, p, n);
    b->n += n;
}

static inline void b_u32(bytes *b, uint32_t v)
{
    b_put(b, &v, 4);
}

static inline void b_u64(bytes *b, uint64_t v)
{
    b_put(b, &v, 8);
}

static inline void b_str(bytes *b, const char *s)
{
    b_u32(b, (uint32_t)strlen(s));
    b_put(b, s, strlen(s));
}

/* Replays a /v1/log JSON answer onto w (from the base), independently of sync.c. Returns the
 * number of entries, or -1. */
static int ref_replay(const char *log_json, const uint8_t ps[32], pk_z_kind kind, uint64_t key,
                      float *w)
{
    cJSON *j = cJSON_Parse(log_json);
    const cJSON *ents = cJSON_GetObjectItemCaseSensitive(j, "entries"), *e;
    int count = 0;
    if (!cJSON_IsArray(ents)) {
        cJSON_Delete(j);
        return -1;
    }
    cJSON_ArrayForEach(e, ents)
    {
        const char *b64 = cJSON_GetObjectItemCaseSensitive(e, "updates")->valuestring;
        float lr = (float)cJSON_GetObjectItemCaseSensitive(e, "lr")->valuedouble;
        static uint8_t bin[1 << 16];
        size_t got = 0;
        if (*b64 && sodium_base642bin(bin, sizeof bin, b64, strlen(b64), NULL, &got, NULL,
                                      sodium_base64_VARIANT_ORIGINAL) != 0) {
            cJSON_Delete(j);
            return -1;
        }
        for (size_t i = 0; i + 6 <= got; i += 6) {
            uint32_t k = (uint32_t)bin[i] | (uint32_t)bin[i + 1] << 8;
            float coef;
            memcpy(&coef, bin + i + 2, 4);
            pk_z_axpy(ref_pool_seed(ps, k), key, 0, TOY_D, kind, -(lr * coef), w);
        }
        count++;
    }
    cJSON_Delete(j);
    return count;
}
