#include "backend_testutil.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "exitrt/exitrt.h"
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

tolerance tol_for(ert_dtype dt) {
    switch (dt) {
    case ERT_DTYPE_F32: return (tolerance){1e-4, 1e-4};
    case ERT_DTYPE_TF32: return (tolerance){2e-3, 2e-3};
    default: return (tolerance){2e-2, 2e-2};
    }
}

int all_bytes(const void *p, size_t n, int byte) {
    for (size_t i = 0; i < n; ++i)
        if (((const unsigned char *)p)[i] != (unsigned char)byte) return 0;
    return 1;
}

void check_graph_vs_eager(const ert_backend_ops *o, ert_backend *be, const ert_op *op, const void *x,
                          size_t y_row_bytes, int max_rows, const int *counts, int num_counts, const char *what) {
    int buckets[ERT_MAX_BUCKETS], nb = 0;
    ck_assert_msg(ert_buckets_parse(NULL, max_rows, buckets, &nb) == ERT_OK, "%s", ert_last_error());
    const size_t yb = (size_t)(max_rows + 1) * y_row_bytes; /* a guard row past the last */
    int32_t *count = bcount(o, be, 0);
    void *yg = balloc(o, be, yb), *ye = balloc(o, be, yb);
    unsigned char *hg = malloc(yb), *he = malloc(yb);
    ck_assert(hg && he);
    ert_graph *graph = NULL;
    ck_assert_msg(o->graph_begin(be, buckets, nb) == ERT_OK, "%s: %s", what, ert_last_error());
    if (o->op_run(be, op, (ert_rows){max_rows, count}, x, yg) != ERT_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", ert_last_error());
        (void)o->graph_end(be, NULL);
        ck_abort_msg("%s: capturing the op: %s", what, msg);
    }
    ck_assert_msg(o->graph_end(be, &graph) == ERT_OK, "%s: %s", what, ert_last_error());
    for (int i = 0; i < num_counts; ++i) {
        const int n = counts[i], bucket = ert_bucket_rows(buckets, nb, n);
        bup(o, be, count, &n, sizeof n);
        bfill(o, be, yg, yb, 0xFF);
        bfill(o, be, ye, yb, 0xFF);
        ck_assert_msg(o->graph_launch(be, graph) == ERT_OK, "%s: %s", what, ert_last_error());
        if (n > 0) ck_assert_msg(o->op_run(be, op, (ert_rows){n, NULL}, x, ye) == ERT_OK, "%s", ert_last_error());
        bdown(o, be, hg, yg, yb);
        bdown(o, be, he, ye, yb);
        ck_assert_msg(memcmp(hg, he, (size_t)n * y_row_bytes) == 0, "%s, count %d (bucket %d): graph != eager", what,
                      n, bucket);
        const size_t untouched = (size_t)bucket * y_row_bytes;
        ck_assert_msg(all_bytes(hg + untouched, yb - untouched, 0xFF),
                      "%s, count %d: the graph wrote rows at or past its bucket (%d rows)", what, n, bucket);
    }
    o->graph_free(be, graph);
    o->release(be, yg), o->release(be, ye), o->release(be, count);
    free(hg), free(he);
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
