/* dtype.c: fp16/bf16 <-> fp32 conversion (round to nearest even), dtype names and sizes (the
 * block-quantized types' block arithmetic; their codecs are in quant.c), the thread setting
 * shared by OpenMP and OpenBLAS, the BLAS kernel's name and the error-text helper of model/. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/utsname.h>

#include <cblas.h>
#include <omp.h>

#include "model_impl.h"
#include "quant_impl.h"

/* Elements and bytes per block of each dtype, indexed by pk_dtype. */
static const struct {
    const char *name;
    unsigned block, bytes;
} dtypes[PK_DTYPE__COUNT] = {
    {"F32", 1, 4},    {"F16", 1, 2},      {"BF16", 1, 2},     {"Q8_0", 32, 34},
    {"Q4_0", 32, 18}, {"Q4_K", 256, 144}, {"Q5_K", 256, 176}, {"Q6_K", 256, 210},
};

static int valid_dtype(pk_dtype dt)
{
    return (int)dt >= 0 && (int)dt < PK_DTYPE__COUNT;
}

size_t pk_dtype_size(pk_dtype dt)
{
    return valid_dtype(dt) && dtypes[dt].block == 1 ? dtypes[dt].bytes : 0;
}

size_t pk_dtype_block(pk_dtype dt)
{
    PK_ASSERT(valid_dtype(dt));
    return dtypes[dt].block;
}

size_t pk_dtype_row_bytes(pk_dtype dt, size_t n)
{
    PK_ASSERT(valid_dtype(dt) && n % dtypes[dt].block == 0);
    return n / dtypes[dt].block * dtypes[dt].bytes;
}

int pk_dtype_is_quant(pk_dtype dt)
{
    return valid_dtype(dt) && dtypes[dt].block > 1;
}

const char *pk_dtype_name(pk_dtype dt)
{
    return valid_dtype(dt) ? dtypes[dt].name : "?";
}

int pk_dtype_parse(const char *s, pk_dtype *out)
{
    static const struct {
        const char *name;
        pk_dtype dt;
    } names[] = {{"f32", PK_DTYPE_F32},   {"F32", PK_DTYPE_F32},   {"float32", PK_DTYPE_F32},
                 {"f16", PK_DTYPE_F16},   {"F16", PK_DTYPE_F16},   {"float16", PK_DTYPE_F16},
                 {"bf16", PK_DTYPE_BF16}, {"BF16", PK_DTYPE_BF16}, {"bfloat16", PK_DTYPE_BF16},
                 {"fp32", PK_DTYPE_F32},  {"fp16", PK_DTYPE_F16},  {"q8_0", PK_DTYPE_Q8_0},
                 {"q4_0", PK_DTYPE_Q4_0}, {"q4_k", PK_DTYPE_Q4_K}, {"q5_k", PK_DTYPE_Q5_K},
                 {"q6_k", PK_DTYPE_Q6_K}};
    for (size_t i = 0; s && i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(s, names[i].name) == 0) {
            *out = names[i].dt;
            return 0;
        }
    }
    for (int d = PK_DTYPE_Q8_0; s && d < PK_DTYPE__COUNT; d++) {
        if (strcmp(s, dtypes[d].name) == 0) {
            *out = (pk_dtype)d;
            return 0;
        }
    }
    return -1;
}

static uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float pk_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) /* inf / nan */
        return u2f(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        if (man == 0)
            return u2f(sign);
        /* subnormal: man * 2^-24 */
        float v = (float)man * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    return u2f(sign | ((exp + 112u) << 23) | (man << 13));
}

uint16_t pk_f32_to_f16(float f)
{
    uint32_t u = f2u(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) /* nan: keep it a quiet nan */
        return (uint16_t)(sign | 0x7e00u);
    if (a >= 0x477ff000u) /* rounds to >= 65520: inf */
        return (uint16_t)(sign | 0x7c00u);
    if (a < 0x38800000u) { /* below the smallest normal 2^-14: subnormal or zero */
        /* value * 2^24 rounded to nearest even, via the float adder (exact for this range) */
        float v = u2f(a) * 16777216.0f; /* scale into [0, 1024) */
        /* round half to even by adding and subtracting 2^23 */
        float r = (v + 8388608.0f) - 8388608.0f;
        return (uint16_t)(sign | (uint16_t)r);
    }
    uint32_t mant_odd = (a >> 13) & 1u;
    a += 0xfffu + mant_odd; /* round to nearest even at bit 13 */
    a -= 112u << 23;        /* rebias 127 -> 15 */
    return (uint16_t)(sign | (a >> 13));
}

float pk_bf16_to_f32(uint16_t h)
{
    return u2f((uint32_t)h << 16);
}

uint16_t pk_f32_to_bf16(float f)
{
    uint32_t u = f2u(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u); /* quiet nan */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

#if defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
/* The widening loop below, 8 values at a time on aarch64, same bits: bf16 is a shift; f16 goes
 * through FCVTL, exact for every finite value and infinity (subnormals too), except that it quiets
 * a signalling NaN, so a group of 8 holding a NaN or infinity is left to the scalar code. Returns
 * how many leading values it converted. */
static size_t widen_neon(pk_dtype dt, const unsigned char *s, size_t n, float *dst)
{
    size_t i = 0;
    const uint16x8_t expo = vdupq_n_u16(0x7c00);
    for (; i + 8 <= n; i += 8) {
        uint16x8_t h = vreinterpretq_u16_u8(vld1q_u8(s + 2 * i));
        if (dt == PK_DTYPE_BF16) {
            vst1q_f32(dst + i, vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(h), 16)));
            vst1q_f32(dst + i + 4, vreinterpretq_f32_u32(vshll_high_n_u16(h, 16)));
            continue;
        }
        if (vmaxvq_u16(vceqq_u16(vandq_u16(h, expo), expo)) != 0)
            break;
        float16x8_t f = vreinterpretq_f16_u16(h);
        vst1q_f32(dst + i, vcvt_f32_f16(vget_low_f16(f)));
        vst1q_f32(dst + i + 4, vcvt_high_f32_f16(f));
    }
    return i;
}
#endif

void pk_widen(pk_dtype dt, const void *src, size_t n, float *dst)
{
    const unsigned char *s = src;
    if (dt == PK_DTYPE_F32) {
        memcpy(dst, src, n * 4);
        return;
    }
    if (pk_dtype_is_quant(dt)) {
        PK_ASSERT(n % pk_dtype_block(dt) == 0);
        pk_quant_decode(dt, src, n / pk_dtype_block(dt), dst);
        return;
    }
    size_t i = 0;
#if defined(__aarch64__) && defined(__ARM_NEON)
    i = widen_neon(dt, s, n, dst); /* stops at the first group holding an f16 NaN or infinity */
#endif
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + 2 * i, 2);
        dst[i] = dt == PK_DTYPE_F16 ? pk_f16_to_f32(h) : pk_bf16_to_f32(h);
    }
}

void pk_narrow(pk_dtype dt, const float *src, size_t n, void *dst)
{
    unsigned char *d = dst;
    if (dt == PK_DTYPE_F32) {
        memcpy(dst, src, n * 4);
        return;
    }
    if (pk_dtype_is_quant(dt)) {
        PK_ASSERT(n % pk_dtype_block(dt) == 0 && pk_quant_can_encode(dt));
        pk_quant_encode(dt, src, n / pk_dtype_block(dt), dst);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        uint16_t h = dt == PK_DTYPE_F16 ? pk_f32_to_f16(src[i]) : pk_f32_to_bf16(src[i]);
        memcpy(d + 2 * i, &h, 2);
    }
}

int pk_threads_set(int n)
{
    if (n <= 0)
        n = omp_get_num_procs();
    /* OpenBLAS itself stays single-threaded: forward.c cuts every GEMM into fixed tiles shared
     * out by our threads, so results do not depend on n. (In OpenBLAS's OpenMP build this call
     * also sets OpenMP's count, hence the order.) */
    openblas_set_num_threads(1);
    omp_set_num_threads(n);
    return n;
}

int pk_threads_get(void)
{
    return omp_get_max_threads();
}

const char *pk_model_kernel(char *out, size_t n)
{
    /* openblas_get_config() starts with "OpenBLAS <version> "; the core is the one in use
     * (OPENBLAS_CORETYPE or OpenBLAS's own CPU detection) */
    const char *cfg = openblas_get_config(), *sp = strchr(cfg, ' ');
    int vlen = sp ? (int)strcspn(sp + 1, " ") + (int)(sp + 1 - cfg) : (int)strlen(cfg);
    struct utsname u;
    if (uname(&u) != 0)
        snprintf(u.machine, sizeof u.machine, "unknown");
    snprintf(out, n, "%.*s %s %s", vlen, cfg, openblas_get_corename(), u.machine);
    return out;
}
