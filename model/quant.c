/* quant.c: the block-quantized weight formats of GGUF files (Q8_0, Q4_0, Q4_K, Q5_K, Q6_K, laid
 * out as ggml stores them; DESIGN 5): each block decoded to fp32, and an encoder for each. Blocks
 * are read byte by byte (no struct overlay), so any alignment and endianness of the host works.
 * Which tensors get which type is the quantize command's business. */
#include <math.h>
#include <string.h>

#include "quant_impl.h"

#define QK   32  /* elements of a Q8_0 / Q4_0 block */
#define QK_K 256 /* elements of a K-quant super-block (8 sub-blocks of 32, Q6_K: 16 of 16) */

static float half_at(const unsigned char *p)
{
    return pk_f16_to_f32((uint16_t)(p[0] | (p[1] << 8)));
}

static void put_half(unsigned char *p, uint16_t h)
{
    p[0] = (unsigned char)(h & 0xff);
    p[1] = (unsigned char)(h >> 8);
}

/* Q8_0 (34 bytes): f16 d, int8 q[32]; x = d * q (d: the stored one, or a trained scale). */
static void dec_q8_0(const unsigned char *b, float d, float *y)
{
    for (int i = 0; i < QK; i++)
        y[i] = d * (float)(signed char)b[2 + i];
}

/* Q4_0 (18 bytes): f16 d, 16 bytes of nibbles; element i < 16 is the low nibble of byte i,
 * element i + 16 its high nibble; x = d * (q - 8). */
static void dec_q4_0(const unsigned char *b, float d, float *y)
{
    for (int i = 0; i < QK / 2; i++) {
        y[i] = d * (float)((b[2 + i] & 0x0f) - 8);
        y[i + QK / 2] = d * (float)((b[2 + i] >> 4) - 8);
    }
}

/* The 6-bit scale and min of sub-block j of a Q4_K / Q5_K block from its 12 packed bytes: j < 4
 * in the low 6 bits of bytes j and j+4; j >= 4 has its low 4 bits in byte j+4 (scale low
 * nibble, min high nibble) and its top 2 bits in the top bits of bytes j-4 (scale) and j (min). */
static void k_scale_min(int j, const unsigned char *q, int *sc, int *mn)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *mn = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
        *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* Q4_K (144 bytes): f16 d, f16 dmin, 12 scale bytes, 128 bytes of nibbles. Each 64 elements
 * use 32 bytes: low nibbles for the first 32 (sub-block 2k), high nibbles for the next 32
 * (sub-block 2k+1); x = d * sc * q - dmin * mn. */
static void dec_q4_k(const unsigned char *b, float *y)
{
    float d = half_at(b), dmin = half_at(b + 2);
    const unsigned char *sc = b + 4, *q = b + 16;
    for (int k = 0; k < 4; k++) {
        int s0, m0, s1, m1;
        k_scale_min(2 * k, sc, &s0, &m0);
        k_scale_min(2 * k + 1, sc, &s1, &m1);
        for (int l = 0; l < 32; l++) {
            y[64 * k + l] = d * (float)s0 * (float)(q[32 * k + l] & 0x0f) - dmin * (float)m0;
            y[64 * k + 32 + l] = d * (float)s1 * (float)(q[32 * k + l] >> 4) - dmin * (float)m1;
        }
    }
}

/* Q5_K (176 bytes): f16 d, f16 dmin, 12 scale bytes, 32 bytes of fifth bits, 128 bytes of
 * nibbles laid out as Q4_K; element l of sub-block j takes bit j of qh[l] as 16. */
static void dec_q5_k(const unsigned char *b, float *y)
{
    float d = half_at(b), dmin = half_at(b + 2);
    const unsigned char *sc = b + 4, *qh = b + 16, *q = b + 48;
    for (int k = 0; k < 4; k++) {
        int s0, m0, s1, m1;
        k_scale_min(2 * k, sc, &s0, &m0);
        k_scale_min(2 * k + 1, sc, &s1, &m1);
        for (int l = 0; l < 32; l++) {
            int lo = (q[32 * k + l] & 0x0f) + ((qh[l] >> (2 * k)) & 1) * 16;
            int hi = (q[32 * k + l] >> 4) + ((qh[l] >> (2 * k + 1)) & 1) * 16;
            y[64 * k + l] = d * (float)s0 * (float)lo - dmin * (float)m0;
            y[64 * k + 32 + l] = d * (float)s1 * (float)hi - dmin * (float)m1;
        }
    }
}

/* Q6_K (210 bytes): 128 bytes of low nibbles, 64 bytes of 2-bit high parts, 16 int8 scales (one
 * per 16 elements), f16 d. Each half of 128 elements uses 64 low bytes and 32 high bytes:
 * element l + 32 r (r = 0..3) takes nibble (r >> 1) of low byte l + 32 (r & 1) and bits 2r of
 * high byte l; x = d * scale * (q - 32). */
static void dec_q6_k(const unsigned char *b, float *y)
{
    float d = half_at(b + 208);
    for (int h = 0; h < 2; h++) {
        const unsigned char *ql = b + 64 * h, *qh = b + 128 + 32 * h;
        const signed char *sc = (const signed char *)(b + 192 + 8 * h);
        for (int l = 0; l < 32; l++) {
            for (int r = 0; r < 4; r++) {
                int lo = (ql[l + 32 * (r & 1)] >> (4 * (r >> 1))) & 0x0f;
                int q = (lo | (((qh[l] >> (2 * r)) & 3) << 4)) - 32;
                y[128 * h + 32 * r + l] = d * (float)sc[l / 16 + 2 * r] * (float)q;
            }
        }
    }
}

void pk_quant_decode(pk_dtype dt, const void *src, size_t nblocks, float *dst)
{
    const unsigned char *s = src;
    size_t bb = pk_dtype_row_bytes(dt, pk_dtype_block(dt)), be = pk_dtype_block(dt);
    for (size_t i = 0; i < nblocks; i++) {
        const unsigned char *b = s + i * bb;
        float *y = dst + i * be;
        switch (dt) {
        case PK_DTYPE_Q8_0:
            dec_q8_0(b, half_at(b), y);
            break;
        case PK_DTYPE_Q4_0:
            dec_q4_0(b, half_at(b), y);
            break;
        case PK_DTYPE_Q4_K:
            dec_q4_k(b, y);
            break;
        case PK_DTYPE_Q5_K:
            dec_q5_k(b, y);
            break;
        case PK_DTYPE_Q6_K:
            dec_q6_k(b, y);
            break;
        default:
            PK_ASSERT(0 && "not a block type");
        }
    }
}

static void enc_q8_0(const float *x, unsigned char *b)
{
    float amax = 0.0f;
    for (int i = 0; i < QK; i++)
        amax = fmaxf(amax, fabsf(x[i]));
    uint16_t dh = pk_f32_to_f16(amax / 127.0f);
    float d = pk_f16_to_f32(dh), id = d > 0.0f ? 1.0f / d : 0.0f;
    put_half(b, dh);
    for (int i = 0; i < QK; i++) {
        float v = roundf(x[i] * id);
        v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
        b[2 + i] = (unsigned char)(signed char)v;
    }
}

/* d = (the value of largest magnitude) / -8, so that value is exactly q = 0 and the whole range
 * [-8, 7] of the nibble is used toward the other sign. */
static void enc_q4_0(const float *x, unsigned char *b)
{
    float amax = 0.0f, vmax = 0.0f;
    for (int i = 0; i < QK; i++) {
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            vmax = x[i];
        }
    }
    uint16_t dh = pk_f32_to_f16(vmax / -8.0f);
    float d = pk_f16_to_f32(dh), id = d != 0.0f ? 1.0f / d : 0.0f;
    put_half(b, dh);
    for (int i = 0; i < QK / 2; i++) {
        int q[2];
        for (int h = 0; h < 2; h++) {
            float v = floorf(x[i + h * QK / 2] * id + 8.5f);
            q[h] = v < 0.0f ? 0 : v > 15.0f ? 15 : (int)v;
        }
        b[2 + i] = (unsigned char)(q[0] | (q[1] << 4));
    }
}

/* An f16 at least v (v >= 0): the super-block scales are rounded up so the 6-bit sub-block
 * scales, also rounded up, always cover their sub-block's range (no clipping). */
static uint16_t f16_ceil(float v)
{
    uint16_t h = pk_f32_to_f16(v);
    return pk_f16_to_f32(h) < v ? (uint16_t)(h + 1) : h;
}

static int ceil_q(float v, float step, int hi)
{
    if (step <= 0.0f)
        return 0;
    float q = ceilf(v / step);
    return q < 0.0f ? 0 : q > (float)hi ? hi : (int)q;
}

/* The header of a Q4_K / Q5_K block (f16 d, f16 dmin, 12 bytes of 6-bit scales and mins) for x
 * [256] at `levels` quantization levels - 1 (15 or 31). Per sub-block j of 32: offset mn_j =
 * -min(0, min x) >= 0 and scale (max x + mn_j) / levels, each a 6-bit multiple of a
 * super-block f16 (dmin, d), rounded up so no value is clipped. s[j], m[j] get the sub-block's
 * effective scale d * sc_j and offset dmin * mn_j. */
static void enc_k_header(const float *x, float levels, unsigned char *b, float s[8], float m[8])
{
    float lo[8], hi[8], dmax = 0.0f, mmax = 0.0f;
    for (int j = 0; j < 8; j++) {
        lo[j] = 0.0f;
        hi[j] = 0.0f;
        for (int l = 0; l < 32; l++) {
            float v = x[32 * j + l];
            lo[j] = v < lo[j] ? v : lo[j];
            hi[j] = v > hi[j] ? v : hi[j];
        }
        mmax = -lo[j] > mmax ? -lo[j] : mmax;
    }
    uint16_t mh = f16_ceil(mmax / 63.0f);
    float dmin = pk_f16_to_f32(mh);
    int sc[8], mn[8];
    for (int j = 0; j < 8; j++) {
        mn[j] = ceil_q(-lo[j], dmin, 63);
        float need = (hi[j] + dmin * (float)mn[j]) / levels;
        dmax = need > dmax ? need : dmax;
    }
    uint16_t dh = f16_ceil(dmax / 63.0f);
    float d = pk_f16_to_f32(dh);
    put_half(b, dh);
    put_half(b + 2, mh);
    memset(b + 4, 0, 12);
    for (int j = 0; j < 8; j++) {
        sc[j] = ceil_q((hi[j] + dmin * (float)mn[j]) / levels, d, 63);
        int i = j & 3;
        if (j < 4) {
            b[4 + i] |= (unsigned char)sc[j];
            b[8 + i] |= (unsigned char)mn[j];
        } else {
            b[4 + i] |= (unsigned char)((sc[j] >> 4) << 6);
            b[8 + i] |= (unsigned char)((mn[j] >> 4) << 6);
            b[12 + i] = (unsigned char)((sc[j] & 0x0f) | ((mn[j] & 0x0f) << 4));
        }
        s[j] = d * (float)sc[j];
        m[j] = dmin * (float)mn[j];
    }
}

/* q = round((x + mn) / scale) in [0, levels] for element l of sub-block j. */
static int k_level(const float *x, const float *s, const float *m, int j, int l, int levels)
{
    float is = s[j] > 0.0f ? 1.0f / s[j] : 0.0f;
    float v = roundf((x[32 * j + l] + m[j]) * is);
    return v < 0.0f ? 0 : v > (float)levels ? levels : (int)v;
}

/* Q4_K: the header, then the nibbles (sub-block 2k low, 2k+1 high, 32 bytes per pair). */
static void enc_q4_k(const float *x, unsigned char *b)
{
    float s[8], m[8];
    enc_k_header(x, 15.0f, b, s, m);
    unsigned char *q = b + 16;
    for (int j = 0; j < 8; j++) {
        for (int l = 0; l < 32; l++) {
            int qi = k_level(x, s, m, j, l, 15);
            unsigned char *p = &q[32 * (j / 2) + l];
            *p = (unsigned char)(j % 2 ? (*p & 0x0f) | (qi << 4) : qi);
        }
    }
}

/* Q5_K: the header at 31 levels, then bit 4 of element l of sub-block j in bit j of qh[l] and
 * its low 4 bits in the nibbles laid out as Q4_K. */
static void enc_q5_k(const float *x, unsigned char *b)
{
    float s[8], m[8];
    enc_k_header(x, 31.0f, b, s, m);
    unsigned char *qh = b + 16, *q = b + 48;
    memset(qh, 0, 32);
    for (int j = 0; j < 8; j++) {
        for (int l = 0; l < 32; l++) {
            int qi = k_level(x, s, m, j, l, 31);
            unsigned char *p = &q[32 * (j / 2) + l];
            *p = (unsigned char)(j % 2 ? (*p & 0x0f) | ((qi & 15) << 4) : (qi & 15));
            qh[l] |= (unsigned char)((qi >> 4) << j);
        }
    }
}

/* Q6_K: per sub-block j of 16 a signed scale s_j = amax_j / 31 (no value beyond 31 steps), as
 * an int8 multiple of the f16 d = max s_j / 127 (both rounded up: no clipping); q - 32 =
 * round(x / (d sc_j)) in [-31, 31]. Layout as dec_q6_k reads it. */
static void enc_q6_k(const float *x, unsigned char *b)
{
    float amax[16], smax = 0.0f;
    for (int j = 0; j < 16; j++) {
        amax[j] = 0.0f;
        for (int l = 0; l < 16; l++) {
            float a = fabsf(x[16 * j + l]);
            amax[j] = a > amax[j] ? a : amax[j];
        }
        smax = amax[j] / 31.0f > smax ? amax[j] / 31.0f : smax;
    }
    uint16_t dh = f16_ceil(smax / 127.0f);
    float d = pk_f16_to_f32(dh);
    memset(b, 0, 210);
    put_half(b + 208, dh);
    signed char *sc = (signed char *)(b + 192);
    for (int j = 0; j < 16; j++)
        sc[j] = (signed char)ceil_q(amax[j] / 31.0f, d, 127);
    for (int h = 0; h < 2; h++) {
        unsigned char *ql = b + 64 * h, *qh = b + 128 + 32 * h;
        for (int l = 0; l < 32; l++) {
            for (int r = 0; r < 4; r++) {
                int i = 128 * h + 32 * r + l, j = i / 16;
                float st = d * (float)sc[j], is = st > 0.0f ? 1.0f / st : 0.0f;
                float v = roundf(x[i] * is);
                int q = (v < -31.0f ? -31 : v > 31.0f ? 31 : (int)v) + 32; /* 1..63 */
                ql[l + 32 * (r & 1)] |= (unsigned char)((q & 15) << (4 * (r >> 1)));
                qh[l] |= (unsigned char)((q >> 4) << (2 * r));
            }
        }
    }
}

typedef void (*block_encoder)(const float *x, unsigned char *b);

/* The block encoder of dt, NULL if it has none. */
static block_encoder encoder_of(pk_dtype dt)
{
    static const struct {
        pk_dtype dt;
        block_encoder enc;
    } encoders[] = {{PK_DTYPE_Q8_0, enc_q8_0},
                    {PK_DTYPE_Q4_0, enc_q4_0},
                    {PK_DTYPE_Q4_K, enc_q4_k},
                    {PK_DTYPE_Q5_K, enc_q5_k},
                    {PK_DTYPE_Q6_K, enc_q6_k}};
    for (size_t i = 0; i < sizeof encoders / sizeof encoders[0]; i++)
        if (encoders[i].dt == dt)
            return encoders[i].enc;
    return NULL;
}

int pk_quant_can_encode(pk_dtype dt)
{
    return encoder_of(dt) != NULL;
}

void pk_quant_encode(pk_dtype dt, const float *src, size_t nblocks, void *dst)
{
    unsigned char *d = dst;
    size_t bb = pk_dtype_row_bytes(dt, pk_dtype_block(dt)), be = pk_dtype_block(dt);
    block_encoder enc = encoder_of(dt);
    PK_ASSERT((enc != NULL || nblocks == 0) && "no encoder for this type");
    for (size_t i = 0; i < nblocks; i++)
        enc(src + i * be, d + i * bb);
}

/* ---- trainable block scales (--trainable scales, DESIGN 5) --------------------------------- */

int pk_quant_has_block_scale(pk_dtype dt)
{
    return dt == PK_DTYPE_Q8_0 || dt == PK_DTYPE_Q4_0;
}

void pk_quant_block_scales(pk_dtype dt, const void *src, size_t nblocks, float *d)
{
    PK_ASSERT(pk_quant_has_block_scale(dt));
    const unsigned char *s = src;
    size_t bb = pk_dtype_row_bytes(dt, QK);
    for (size_t i = 0; i < nblocks; i++)
        d[i] = half_at(s + i * bb);
}

void pk_quant_decode_scaled(pk_dtype dt, const void *src, size_t nblocks, const float *d,
                            float *dst)
{
    PK_ASSERT(pk_quant_has_block_scale(dt));
    const unsigned char *s = src;
    size_t bb = pk_dtype_row_bytes(dt, QK);
    for (size_t i = 0; i < nblocks; i++) {
        if (dt == PK_DTYPE_Q8_0)
            dec_q8_0(s + i * bb, d[i], dst + i * QK);
        else
            dec_q4_0(s + i * bb, d[i], dst + i * QK);
    }
}
