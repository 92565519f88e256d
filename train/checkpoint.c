/* checkpoint.c: the checkpoint blob of a run (pk_train.h): the bytes of the trainable tensors
 * in model order behind a "PKCK1" header. Sealing and storing the blob is left to store/. */
#include "pk_train.h"

#include <stdlib.h>
#include <string.h>

static void put_le64(unsigned char b[8], int64_t v)
{
    uint64_t u = (uint64_t)v;
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(u >> (8 * i));
}

pk_status pk_checkpoint_pack(const pk_model *m, const uint8_t *trainable, void **blob, size_t *len)
{
    size_t nt = pk_model_n_tensors(m), total = 16;
    *blob = NULL;
    *len = 0;
    for (size_t i = 0; i < nt; i++) {
        pk_tensor_info ti;
        pk_status st = pk_model_tensor(m, i, &ti);
        if (st != PK_OK)
            return st;
        if (trainable == NULL || trainable[i])
            total += pk_dtype_row_bytes(ti.dtype, ti.numel);
    }
    unsigned char *b = malloc(total);
    if (b == NULL)
        return PK_ERR_NOMEM;
    memcpy(b, "PKCK1\0\0\0", 8);
    put_le64(b + 8, (int64_t)(total - 16));
    size_t off = 16;
    for (size_t i = 0; i < nt; i++) {
        pk_tensor_info ti;
        if (pk_model_tensor(m, i, &ti) != PK_OK || !(trainable == NULL || trainable[i]))
            continue;
        size_t nbytes = pk_dtype_row_bytes(ti.dtype, ti.numel);
        memcpy(b + off, ti.data, nbytes);
        off += nbytes;
    }
    *blob = b;
    *len = total;
    return PK_OK;
}

pk_status pk_checkpoint_unpack(pk_model *m, const uint8_t *trainable, const void *blob, size_t len,
                               char *err, size_t errlen)
{
    const unsigned char *b = blob;
    size_t nt = pk_model_n_tensors(m), need = 16;
    for (size_t i = 0; i < nt; i++) {
        pk_tensor_info ti;
        pk_status st = pk_model_tensor(m, i, &ti);
        if (st != PK_OK)
            return st;
        if (trainable == NULL || trainable[i])
            need += pk_dtype_row_bytes(ti.dtype, ti.numel);
    }
    if (len < 8 || memcmp(b, "PKCK1\0\0\0", 8) != 0) {
        pk_seterr(err, errlen, "not a checkpoint (no PKCK1 header)");
        return PK_ERR_FORMAT;
    }
    if (len != need) {
        pk_seterr(err, errlen, "%zu bytes, expected %zu for this model and mask", len, need);
        return PK_ERR_FORMAT;
    }
    size_t off = 16;
    for (size_t i = 0; i < nt; i++) {
        pk_tensor_info ti;
        if (pk_model_tensor(m, i, &ti) != PK_OK || !(trainable == NULL || trainable[i]))
            continue;
        size_t nbytes = pk_dtype_row_bytes(ti.dtype, ti.numel);
        memcpy(ti.data, b + off, nbytes);
        off += nbytes;
    }
    return PK_OK;
}
