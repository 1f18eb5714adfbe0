#include "backend_testutil.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "testutil.h"

static uint64_t rng;

void rng_seed(uint64_t seed) { rng = seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull; }

uint32_t rng_u32(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}

float rng_uniform(float lo, float hi) { return lo + (hi - lo) * (float)(rng_u32() >> 8) * (1.0f / 16777216.0f); }

void fill_uniform(float *v, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; ++i) v[i] = rng_uniform(lo, hi);
}

size_t esize(ert_dtype dt) { return dt == ERT_DTYPE_BF16 || dt == ERT_DTYPE_F16 ? 2 : 4; }

void to_act(ert_dtype dt, const float *src, size_t n, void *dst) {
    for (size_t i = 0; i < n; ++i) {
        if (dt == ERT_DTYPE_BF16) ((uint16_t *)dst)[i] = ert_f32_to_bf16(src[i]);
        else if (dt == ERT_DTYPE_F16) ((uint16_t *)dst)[i] = ert_f32_to_f16(src[i]);
        else ((float *)dst)[i] = src[i];
    }
}

void from_act(ert_dtype dt, const void *src, size_t n, float *dst) {
    for (size_t i = 0; i < n; ++i) {
        if (dt == ERT_DTYPE_BF16) dst[i] = ert_bf16_to_f32(((const uint16_t *)src)[i]);
        else if (dt == ERT_DTYPE_F16) dst[i] = ert_f16_to_f32(((const uint16_t *)src)[i]);
        else dst[i] = ((const float *)src)[i];
    }
}

/* What the device stores of these values (the CPU then computes from the same numbers). */
void round_act(ert_dtype dt, float *v, size_t n) {
    if (dt == ERT_DTYPE_BF16)
        for (size_t i = 0; i < n; ++i) v[i] = ert_bf16_to_f32(ert_f32_to_bf16(v[i]));
    else if (dt == ERT_DTYPE_F16)
        for (size_t i = 0; i < n; ++i) v[i] = ert_f16_to_f32(ert_f32_to_f16(v[i]));
}

ert_backend *make(const ert_backend_ops *o, ert_dtype dt, int max_rows) {
    ert_backend_config cfg = {.device = 0, .max_rows = max_rows, .dtype = dt};
    ert_backend *be = NULL;
    const ert_status st = o->create(&cfg, &be);
    ck_assert_msg(st == ERT_OK, "%s create (%s): %s", o->name, ert_dtype_name(dt), ert_last_error());
    return be;
}

void *balloc(const ert_backend_ops *o, ert_backend *be, size_t bytes) {
    void *p = NULL;
    ck_assert_msg(o->alloc(be, bytes, &p) == ERT_OK, "%s alloc %zu: %s", o->name, bytes, ert_last_error());
    return p;
}

/* Upload, then sync: the host buffers are reused right away. */
void bup(const ert_backend_ops *o, ert_backend *be, void *dst, const void *src, size_t bytes) {
    ck_assert_msg(o->upload(be, dst, src, bytes) == ERT_OK, "%s upload: %s", o->name, ert_last_error());
    ck_assert_msg(o->sync(be) == ERT_OK, "%s sync: %s", o->name, ert_last_error());
}

void bdown(const ert_backend_ops *o, ert_backend *be, void *dst, const void *src, size_t bytes) {
    ck_assert_msg(o->download(be, dst, src, bytes) == ERT_OK, "%s download: %s", o->name, ert_last_error());
}

void bfill(const ert_backend_ops *o, ert_backend *be, void *dst, size_t bytes, int byte) {
    void *h = malloc(bytes ? bytes : 1);
    memset(h, byte, bytes);
    bup(o, be, dst, h, bytes);
    free(h);
}

int32_t *bcount(const ert_backend_ops *o, ert_backend *be, int32_t v) {
    int32_t *p = balloc(o, be, sizeof v);
    bup(o, be, p, &v, sizeof v);
    return p;
}

int all_bytes(const void *p, size_t n, int byte) {
    for (size_t i = 0; i < n; ++i)
        if (((const unsigned char *)p)[i] != (unsigned char)byte) return 0;
    return 1;
}

int cuda_backends_or_skip(const ert_backend_ops **cpu, const ert_backend_ops **gpu) {
    *cpu = ert_backend_cpu();
    *gpu = ert_backend_cuda();
    if (!*gpu) {
        printf("SKIP: built without CUDA\n");
        return ERT_TEST_SKIP;
    }
    ert_backend_config cfg = {.device = 0, .max_rows = 1, .dtype = ERT_DTYPE_F32};
    ert_backend *probe = NULL;
    const ert_status st = (*gpu)->create(&cfg, &probe);
    if (st == ERT_ERR_UNSUPPORTED) {
        printf("SKIP: no CUDA device: %s\n", ert_last_error());
        return ERT_TEST_SKIP;
    }
    if (st != ERT_OK) { /* a device exists but the backend cannot start: a failure */
        printf("FAIL: cuda backend create: %s\n", ert_last_error());
        return EXIT_FAILURE;
    }
    printf("device: %s\n", (*gpu)->device_name(probe));
    (*gpu)->destroy(probe);
    return -1;
}
