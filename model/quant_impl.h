/* quant_impl.h: private to model/: the GGUF block-quantized formats (ggml's block layouts, all
 * little-endian): decode whole blocks to fp32 and encode fp32 into blocks. */
#ifndef PK_QUANT_IMPL_H
#define PK_QUANT_IMPL_H

#include <stddef.h>

#include "pk_model.h"

/* Widens nblocks whole blocks of dtype dt (a block type) at src into dst
 * [nblocks * pk_dtype_block(dt)]. Pure. */
void pk_quant_decode(pk_dtype dt, const void *src, size_t nblocks, float *dst);
/* Encodes nblocks blocks of fp32 values (src [nblocks * block]) into dst. Every block type has
 * an encoder (pk_quant_can_encode); other types are a bug to ask for. Pure. */
void pk_quant_encode(pk_dtype dt, const float *src, size_t nblocks, void *dst);
int pk_quant_can_encode(pk_dtype dt);

/* Trainable block scales (--trainable scales): the types with one scale per block (Q8_0,
 * Q4_0: x = d * q). pk_quant_block_scales reads the stored f16 scales of nblocks blocks into d
 * (exact in fp32); pk_quant_decode_scaled decodes the blocks with d[i] in place of block i's
 * stored scale (the same arithmetic: d * q in fp32). Pure. */
int pk_quant_has_block_scale(pk_dtype dt);
void pk_quant_block_scales(pk_dtype dt, const void *src, size_t nblocks, float *d);
void pk_quant_decode_scaled(pk_dtype dt, const void *src, size_t nblocks, const float *d,
                            float *dst);

#endif /* PK_QUANT_IMPL_H */
