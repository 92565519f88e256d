/* mezo_impl.h: what mezo.c and estimator.c share. Private to mezo/. */
#ifndef PK_MEZO_IMPL_H
#define PK_MEZO_IMPL_H

#include "pk_model.h"

#include <stddef.h>

/* Elements [start, start+n) of tensor ti as fp32 to update in place: the tensor's own memory
 * when it is f32, else the elements widened into w (n floats; narrow them back after). */
float *pk_mezo_block_fp32(const pk_tensor_info *ti, size_t start, size_t n, float *w);

#endif /* PK_MEZO_IMPL_H */
