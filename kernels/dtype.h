/* Element types: names, and conversions of 16-bit floats (IEEE half and bfloat16) to
 * and from f32, bit-exact with PyTorch (round to nearest even; NaN stays NaN). */
#ifndef ERT_DTYPE_H
#define ERT_DTYPE_H

#include <stdint.h>
#include <string.h>

#include "exitrt/exitrt.h"
#include "hd.h"

ERT_HD float ert_bits_to_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

ERT_HD uint32_t ert_f32_to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

ERT_HD float ert_bf16_to_f32(uint16_t h) { return ert_bits_to_f32((uint32_t)h << 16); }

ERT_HD uint16_t ert_f32_to_bf16(float f) {
    uint32_t u = ert_f32_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

ERT_HD float ert_f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1f) return ert_bits_to_f32(sign | 0x7f800000u | (man << 13)); /* inf, NaN */
    if (exp != 0) return ert_bits_to_f32(sign | ((exp + 112u) << 23) | (man << 13));
    if (man == 0) return ert_bits_to_f32(sign);
    /* subnormal: man * 2^-24 */
    float v = (float)man * (1.0f / 16777216.0f);
    return sign ? -v : v;
}

ERT_HD uint16_t ert_f32_to_f16(float f) {
    uint32_t u = ert_f32_to_bits(f);
    const uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    u &= 0x7fffffffu;
    if (u > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);  /* NaN */
    if (u >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* overflow to inf */
    if (u < 0x38800000u) {                                    /* subnormal or zero */
        float a = ert_bits_to_f32(u) * 16777216.0f;           /* in units of 2^-24 */
        uint32_t m = (uint32_t)a;
        float rem = a - (float)m;
        if (rem > 0.5f || (rem == 0.5f && (m & 1u))) ++m;
        return (uint16_t)(sign | m);
    }
    u += 0xfffu + ((u >> 13) & 1u) - (112u << 23);
    return (uint16_t)(sign | (u >> 13));
}

#endif
