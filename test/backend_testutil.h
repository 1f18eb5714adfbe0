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
/* A backend made for max_rows, with the default row buckets for max_rows (as a graph
 * session makes it); fails the test with the message otherwise. */
ert_backend *make(const ert_backend_ops *o, ert_dtype dt, int max_rows);
void *balloc(const ert_backend_ops *o, ert_backend *be, size_t bytes);
void bup(const ert_backend_ops *o, ert_backend *be, void *dst, const void *src, size_t bytes);
void bdown(const ert_backend_ops *o, ert_backend *be, void *dst, const void *src, size_t bytes);
void bfill(const ert_backend_ops *o, ert_backend *be, void *dst, size_t bytes, int byte);
int32_t *bcount(const ert_backend_ops *o, ert_backend *be, int32_t v);
int all_bytes(const void *p, size_t n, int byte);

/* Fails the test with the backend's message unless `call` returns ERT_OK. */
#define RUN_OK(o, call) ck_assert_msg((call) == ERT_OK, "%s: %s", (o)->name, ert_last_error())

/* How far a device result may be from the CPU reference: |got - want| <= atol + rtol |want|. */
typedef struct tolerance {
    double atol, rtol;
} tolerance;

/* By activation type, for a GEMM-like reduction (f32 exact to rounding, tf32 and 16-bit
 * inputs rounded on the device). */
tolerance tol_for(ert_dtype dt);

/* Graph mode against eager for one prepared op that reads a device row count (linear,
 * conv2d: a SWITCH node over the default buckets for max_rows): the op is captured once
 * and launched for each of `counts`; its rows below the count must equal the eager run's
 * bit for bit, and nothing at or past the count's bucket may be written (a count of 0
 * writes nothing; a count above max_rows is read as max_rows, as the ops read it). x holds max_rows input rows; y rows are y_row_bytes wide. */
void check_graph_vs_eager(const ert_backend_ops *o, ert_backend *be, const ert_op *op, const void *x,
                          size_t y_row_bytes, int max_rows, const int *counts, int num_counts, const char *what);

/* Compaction against a host reference of backend.h's contract (kind ERT_COMPACT_GATHER:
 * the survivors in order into poisoned outputs; ERT_COMPACT_FILL: in place, the buffers
 * compared whole) on each of n backends, activations of type dt: row counts 0 to
 * COMPACT_MAX_ROWS (1024 and 1025 among them, the CUDA fill's path boundary), then device
 * counts below the rows, of 0 and above the rows; widths of 1 to 512 elements, keep
 * patterns all, none, half and sparse (keep bytes other than 1 mean keep); a poisoned
 * guard row past the rows that must stay as it is. The backends must be made for
 * COMPACT_MAX_ROWS rows. */
#define COMPACT_MAX_ROWS 5000
void check_compaction(const ert_backend_ops *const *ops, ert_backend *const *bes, const char *const *labels, int n,
                      ert_dtype dt, int kind, uint64_t seed);

/* What a backend made for max_rows (>= 8) refuses by message, changing nothing: row
 * buckets that do not increase or do not end at max_rows (graph_begin), and a compaction
 * whose new count would overwrite the row count it reads. */
void check_backend_refusals(const ert_backend_ops *o, ert_backend *be, int max_rows);

/* Sets the CPU and CUDA backend tables. Returns -1 when the CUDA backend starts (the
 * tests can run), else the exit code to return at once: ERT_TEST_SKIP (77) with the
 * reason printed when this build has no CUDA or the machine no device (1 instead under
 * ERT_REQUIRE_CUDA=1: the device run), 1 when a device exists but the backend fails to
 * start. Clears the environment variables that steer the CUDA backend (ERT_COMPACT_PATH,
 * ERT_CONV_FUSE, ERT_CUDA_GRAPH_*): each test sets those it tests. */
int cuda_backends_or_skip(const ert_backend_ops **cpu, const ert_backend_ops **gpu);

/* Unsets the environment variables that steer the CUDA backend (a checked fixture's
 * setup: a test that fails with one set leaves it to no later test). */
void cuda_env_clear(void);

/* ERT_TEST_SKIP with "SKIP: why: detail" printed, or under ERT_REQUIRE_CUDA=1 (the device
 * run sets it: there CUDA and cuDNN are due, and what cannot start must not read as a
 * skipped test) EXIT_FAILURE with "FAIL ...". detail may be NULL. */
int cuda_skip_or_fail(const char *why, const char *detail);

#endif
