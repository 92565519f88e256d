/* checkpoint.c: the checkpoint blob of a run (pk_train.h): the bytes of the trainable tensors
 * in model order behind a "PKCK1" header; with an estimator's state (hizoo's Hessian diagonal),
 * a "PKCK2" header, the weights, then the state's bytes. Sealing and storing the blob is left to
 * store/. */
#include "pk_train.h"

#include <stdlib.h>
#include <string.h>

static void put_le64(unsigned char b[8], int64_t v)
{
    uint64_t u = (uint64_t)v;
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(u >> (8 * i));
}

/* The bytes of the trainable tensors (trainable NULL: all) into *n. */
static pk_status trainable_bytes(const pk_model *m, const uint8_t *trainable, size_t *n)
{
    size_t nt = pk_model_n_tensors(m);
    *n = 0;
    for (size_t i = 0; i < nt; i++) {
        pk_tensor_info ti;
        pk_status st = pk_model_tensor(m, i, &ti);
        if (st != PK_OK)
            return st;
        if (trainable == NULL || trainable[i])
            *n += pk_dtype_row_bytes(ti.dtype, ti.numel);
    }
    return PK_OK;
}

/* The trainable tensors in model order into `to`, or (to NULL) from `from` into the tensors;
 * the buffer holds trainable_bytes. */
static void copy_trainable(const pk_model *m, const uint8_t *trainable, unsigned char *to,
                           const unsigned char *from)
{
    size_t nt = pk_model_n_tensors(m), off = 0;
    for (size_t i = 0; i < nt; i++) {
        pk_tensor_info ti;
        if (pk_model_tensor(m, i, &ti) != PK_OK || !(trainable == NULL || trainable[i]))
            continue;
        size_t nbytes = pk_dtype_row_bytes(ti.dtype, ti.numel);
        if (to)
            memcpy(to + off, ti.data, nbytes);
        else
            memcpy(ti.data, from + off, nbytes);
        off += nbytes;
    }
}

pk_status pk_checkpoint_pack(const pk_model *m, const uint8_t *trainable, void **blob, size_t *len)
{
    size_t need = 0;
    *blob = NULL;
    *len = 0;
    pk_status st = trainable_bytes(m, trainable, &need);
    if (st != PK_OK)
        return st;
    unsigned char *b = malloc(16 + need);
    if (b == NULL)
        return PK_ERR_NOMEM;
    memcpy(b, "PKCK1\0\0\0", 8);
    put_le64(b + 8, (int64_t)need);
    copy_trainable(m, trainable, b + 16, NULL);
    *blob = b;
    *len = 16 + need;
    return PK_OK;
}

/* The weights part of a checkpoint: payload (len bytes after the header) into the trainable
 * tensors, if its size is theirs. */
static pk_status weights_in(pk_model *m, const uint8_t *trainable, const unsigned char *payload,
                            size_t len, char *err, size_t errlen)
{
    size_t need = 0;
    pk_status st = trainable_bytes(m, trainable, &need);
    if (st != PK_OK)
        return st;
    if (len != need) {
        pk_seterr(err, errlen, "weights: %zu bytes, expected %zu for this model and mask", len,
                  need);
        return PK_ERR_FORMAT;
    }
    copy_trainable(m, trainable, NULL, payload);
    return PK_OK;
}

pk_status pk_checkpoint_unpack(pk_model *m, const uint8_t *trainable, const void *blob, size_t len,
                               char *err, size_t errlen)
{
    const unsigned char *b = blob;
    if (len < 16 || memcmp(b, "PKCK1\0\0\0", 8) != 0) {
        pk_seterr(err, errlen, "not a checkpoint (no PKCK1 header)");
        return PK_ERR_FORMAT;
    }
    return weights_in(m, trainable, b + 16, len - 16, err, errlen);
}

static uint64_t get_le64(const unsigned char b[8])
{
    uint64_t u = 0;
    for (int i = 0; i < 8; i++)
        u |= (uint64_t)b[i] << (8 * i);
    return u;
}

pk_status pk_checkpoint_pack_state(const pk_model *m, const uint8_t *trainable,
                                   const pk_mezo_state *state, void **blob, size_t *len)
{
    size_t sb = pk_mezo_state_bytes(state), wlen = 0;
    void *w = NULL;
    pk_status st = pk_checkpoint_pack(m, trainable, &w, &wlen);
    if (st != PK_OK || sb == 0) {
        *blob = w;
        *len = wlen;
        return st;
    }
    unsigned char *b = realloc(w, wlen + sb);
    if (b == NULL) {
        free(w);
        *blob = NULL;
        *len = 0;
        return PK_ERR_NOMEM;
    }
    memcpy(b, "PKCK2\0\0\0", 8); /* bytes 8..16 stay the weights' length */
    pk_mezo_state_save(state, b + wlen);
    *blob = b;
    *len = wlen + sb;
    return PK_OK;
}

pk_status pk_checkpoint_unpack_state(pk_model *m, const uint8_t *trainable, pk_mezo_state *state,
                                     const void *blob, size_t len, char *err, size_t errlen)
{
    const unsigned char *b = blob;
    size_t sb = pk_mezo_state_bytes(state);
    if (len >= 16 && memcmp(b, "PKCK2\0\0\0", 8) == 0) {
        uint64_t wlen = get_le64(b + 8);
        if (wlen > len - 16 || len - 16 - wlen != sb) {
            pk_seterr(err, errlen, "%zu bytes of estimator state, expected %zu for these settings",
                      wlen > len - 16 ? (size_t)0 : (size_t)(len - 16 - wlen), sb);
            return PK_ERR_FORMAT;
        }
        pk_status st = weights_in(m, trainable, b + 16, (size_t)wlen, err, errlen);
        return st == PK_OK ? pk_mezo_state_load(state, b + 16 + wlen, sb) : st;
    }
    if (sb != 0) {
        pk_seterr(err, errlen, "no estimator state in it (%zu bytes expected)", sb);
        return PK_ERR_FORMAT;
    }
    return pk_checkpoint_unpack(m, trainable, blob, len, err, errlen);
}
