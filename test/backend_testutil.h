/* Helpers of the backend tests that compare the CUDA backend with the CPU reference
 * through the backend table: a seeded generator, activation-type conversions, and
 * alloc / upload / download shorthands that fail the test with the backend's message. */
#ifndef ERT_BACKEND_TESTUTIL_H
#define ERT_BACKEND_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"

void rng_seed(uint64_t seed);
uint32_t rng_u32(void);
float rng_uniform(float lo, float hi);
void fill_uniform(float *v, size_t n, float lo, float hi);
size_t esize(ert_dtype dt);
void to_act(ert_dtype dt, const float *src, size_t n, void *dst);
void from_act(ert_dtype dt, const void *src, size_t n, float *dst);
void round_act(ert_dtype dt, float *v, size_t n);
ert_backend *make(const ert_backend_ops *o, ert_dtype dt, int max_rows);
void *balloc(const ert_backend_ops *o, ert_backend *be, size_t bytes);
void bup(const ert_backend_ops *o, ert_backend *be, void *dst, const void *src, size_t bytes);
void bdown(const ert_backend_ops *o, ert_backend *be, void *dst, const void *src, size_t bytes);
void bfill(const ert_backend_ops *o, ert_backend *be, void *dst, size_t bytes, int byte);
int32_t *bcount(const ert_backend_ops *o, ert_backend *be, int32_t v);
int all_bytes(const void *p, size_t n, int byte);

/* Sets the CPU and CUDA backend tables. Returns -1 when the CUDA backend starts (the
 * tests can run), else the exit code to return at once: ERT_TEST_SKIP (77) with the
 * reason printed when this build has no CUDA or the machine no device, 1 when a device
 * exists but the backend fails to start. */
int cuda_backends_or_skip(const ert_backend_ops **cpu, const ert_backend_ops **gpu);

#endif
