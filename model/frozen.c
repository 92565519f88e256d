/* frozen.c: the frozen prefix's store (pk_model_freeze_prefix; DESIGN 4 "The frozen prefix").
 *
 * When a run trains only tensors from stage `level` up (two stages per block, its attention half
 * and its MLP half; and after the blocks), the residual stream after the first `level` stages is
 * a function of a token row alone for the whole run.
 * forward.c computes it for each row by itself (a batch of that one row, so the bits do not
 * depend on the batch the row came in, nor on whether it was stored) and keeps it here, keyed by
 * the row's tokens, up to a byte cap; a row found here is copied instead of recomputed. A row
 * that does not fit is recomputed by itself each time: the same bits, more time. */
#include <stdlib.h>
#include <string.h>

#include "forward_impl.h"

typedef struct frozen_row {
    uint64_t key; /* 0: empty slot */
    int32_t len;
    int32_t *ids; /* [len] then token types [len] when the row has them */
    int has_types;
    float *x; /* [len, H] */
} frozen_row;

struct pk_frozen {
    int level;
    size_t cap, used; /* bytes of rows held, and the most they may take */
    size_t n_slots, n_rows;
    frozen_row *slot;
    uint64_t hits, misses;
};

static uint64_t row_key(const int32_t *ids, const int32_t *types, int len)
{
    uint64_t h = 0xcbf29ce484222325ull ^ (uint64_t)(uint32_t)len;
    for (int t = 0; t < len; t++) {
        h = (h ^ (uint64_t)(uint32_t)ids[t]) * 0x100000001b3ull;
        if (types)
            h = (h ^ (uint64_t)(uint32_t)types[t] ^ 0x9e37u) * 0x100000001b3ull;
    }
    return h ? h : 1;
}

static int row_is(const frozen_row *r, const int32_t *ids, const int32_t *types, int len)
{
    if (r->len != len || r->has_types != (types != NULL))
        return 0;
    if (memcmp(r->ids, ids, (size_t)len * sizeof *ids) != 0)
        return 0;
    return types == NULL || memcmp(r->ids + len, types, (size_t)len * sizeof *types) == 0;
}

static void store_free(pk_frozen *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n_slots; i++) {
        free(s->slot[i].ids);
        free(s->slot[i].x);
    }
    free(s->slot);
    free(s);
}

void pk_frozen_free(pk_model *m)
{
    store_free(m->frozen);
    m->frozen = NULL;
}

pk_status pk_model_freeze_prefix(pk_model *m, int level, size_t cap_bytes)
{
    if (m == NULL || level < 0 || level > 2 * m->cfg.L)
        return PK_ERR_ARG;
    pk_frozen_free(m);
    if (level == 0)
        return PK_OK;
    pk_frozen *s = calloc(1, sizeof *s);
    if (s == NULL)
        return PK_ERR_NOMEM;
    s->level = level;
    s->cap = cap_bytes;
    m->frozen = s;
    return PK_OK;
}

size_t pk_model_frozen_cap(uint64_t weight_bytes)
{
    uint64_t min = (uint64_t)16 << 20, q = weight_bytes / 4;
    return (size_t)(q > min ? q : min);
}

int pk_model_frozen_level(const pk_model *m)
{
    return m && m->frozen ? m->frozen->level : 0;
}

void pk_model_frozen_stats(const pk_model *m, uint64_t *hits, uint64_t *misses, size_t *bytes)
{
    const pk_frozen *s = m ? m->frozen : NULL;
    *hits = s ? s->hits : 0;
    *misses = s ? s->misses : 0;
    *bytes = s ? s->used : 0;
}

int pk_model_trainable_level(const pk_model *m, const uint8_t *trainable)
{
    if (trainable == NULL)
        return 0;
    pk_perturb p = {0, 1.0f, PK_Z_GAUSSIAN, trainable, 0};
    return pk_fwd_shared_prefix(m, &p);
}

/* The slot of the row, or of the empty place it would go to (n_slots > 0). */
static frozen_row *find_slot(pk_frozen *s, uint64_t key, const int32_t *ids, const int32_t *types,
                             int len)
{
    size_t mask = s->n_slots - 1, i = (size_t)key & mask;
    for (;; i = (i + 1) & mask) {
        frozen_row *r = &s->slot[i];
        if (r->key == 0 || (r->key == key && row_is(r, ids, types, len)))
            return r;
    }
}

const float *pk_frozen_find(pk_model *m, const int32_t *ids, const int32_t *types, int len)
{
    pk_frozen *s = m->frozen;
    if (s->n_slots == 0) {
        s->misses++;
        return NULL;
    }
    frozen_row *r = find_slot(s, row_key(ids, types, len), ids, types, len);
    if (r->key == 0) {
        s->misses++;
        return NULL;
    }
    s->hits++;
    return r->x;
}

/* Doubles the table (at least 64 slots); 0 on success. */
static int grow(pk_frozen *s)
{
    size_t n = s->n_slots ? 2 * s->n_slots : 64;
    frozen_row *t = calloc(n, sizeof *t);
    if (t == NULL)
        return -1;
    pk_frozen old = *s;
    s->slot = t;
    s->n_slots = n;
    for (size_t i = 0; i < old.n_slots; i++) {
        frozen_row *r = &old.slot[i];
        if (r->key == 0)
            continue;
        *find_slot(s, r->key, r->ids, r->has_types ? r->ids + r->len : NULL, r->len) = *r;
    }
    free(old.slot);
    return 0;
}

void pk_frozen_put(pk_model *m, const int32_t *ids, const int32_t *types, int len, const float *x)
{
    pk_frozen *s = m->frozen;
    size_t xb = (size_t)len * (size_t)m->cfg.H * sizeof(float);
    size_t ib = (size_t)len * sizeof(int32_t) * (types ? 2 : 1);
    if (s->used + xb + ib > s->cap)
        return; /* full: the row is recomputed by itself next time (the same bits) */
    if ((s->n_rows + 1) * 2 > s->n_slots && grow(s) != 0)
        return;
    uint64_t key = row_key(ids, types, len);
    frozen_row *r = find_slot(s, key, ids, types, len);
    if (r->key != 0)
        return; /* already held */
    int32_t *ci = malloc(ib);
    float *cx = malloc(xb);
    if (ci == NULL || cx == NULL) {
        free(ci);
        free(cx);
        return;
    }
    memcpy(ci, ids, (size_t)len * sizeof(int32_t));
    if (types)
        memcpy(ci + len, types, (size_t)len * sizeof(int32_t));
    memcpy(cx, x, xb);
    *r = (frozen_row){key, len, ci, types != NULL, cx};
    s->n_rows++;
    s->used += xb + ib;
}
