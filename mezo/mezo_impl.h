/* mezo_impl.h: what mezo.c and estimator.c share. Private to mezo/. */
#ifndef PK_MEZO_IMPL_H
#define PK_MEZO_IMPL_H

#include "pk_mezo.h"
#include "pk_model.h"

#include <stddef.h>
#include <stdint.h>

/* Elements [start, start+n) of tensor ti as fp32 to update in place: the tensor's own memory
 * when it is f32, else the elements widened into w (n floats; narrow them back after). */
float *pk_mezo_block_fp32(const pk_tensor_info *ti, size_t start, size_t n, float *w);

/* After the update of such a block: w (from pk_mezo_block_fp32, n floats) narrowed back into a
 * 16-bit tensor, rounded to nearest or stochastically from the step seed's rounding stream
 * (u: n words of scratch); nothing for f32, updated in place. */
void pk_mezo_block_store(const pk_tensor_info *ti, uint64_t seed, pk_rounding rounding,
                         size_t start, size_t n, float *w, uint32_t *u);

#endif /* PK_MEZO_IMPL_H */
