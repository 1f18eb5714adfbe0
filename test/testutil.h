/* Helpers shared by the check suites. */
#ifndef ERT_TESTUTIL_H
#define ERT_TESTUTIL_H

#include <check.h>
#include <cjson/cJSON.h>
#include <stddef.h>

#include "exitrt/exitrt.h"

/* Exit code that ctest counts as skipped (SKIP_RETURN_CODE). */
#define ERT_TEST_SKIP 77

/* A path below the source tree ($ERT_SOURCE_DIR, set by ctest). */
const char *tu_path(const char *rel);

/* Loads test/fixtures/tiny-f32 (24 inputs, 5 classes, 3 exits) and fills n samples of
 * x (uniform in [0, 1]) and labels from srand(seed). */
ert_model *tu_tiny_model(unsigned seed, float *x, int32_t *labels, int n);

/* tiny-f32 (into *model) and a CPU session of it taking up to max_batch rows. */
ert_session *tu_tiny_session(int max_batch, ert_model **model);

/* Writes n random samples for tiny-f32 (shape (n, 2, 3, 4), uniform in [0, 1]) and their
 * labels (0..4) from srand(seed) as x.npy and y.npy in tu_tmpdir(); the data spec
 * "X.npy:Y.npy" goes to spec. */
void tu_write_tiny_npy(unsigned seed, int n, char *spec, size_t len);
/* A fresh temporary directory for one test; removed by the caller if it wants. */
const char *tu_tmpdir(void);
/* Reads and parses a JSON file; fails the test if it cannot. */
cJSON *tu_json_load(const char *path);
/* A JSON array of numbers as a malloc'd float array; *n gets its length. */
float *tu_json_floats(const cJSON *arr, int *n);
/* Writes `bytes` bytes to `path`; fails the test on error. */
void tu_write_file(const char *path, const void *data, size_t bytes);
/* Runs a suite (CK_NORMAL output); returns the process exit code. */
int tu_run(Suite *s);
/* The same without forking a process per test: for CUDA, whose context does not survive
 * a fork once the parent has touched the device. */
int tu_run_nofork(Suite *s);
/* Largest |a-b| / (atol + rtol*|b|) over n values (> 1 means out of tolerance). */
double tu_rel_err(const float *a, const float *b, int n, double atol, double rtol);

#endif

/* One tensor for tu_write_safetensors. `data` holds `bytes` raw bytes. */
typedef struct tu_tensor {
    const char *name;
    const char *dtype;   /* written as given: "F32", "F16", "BF16", or a wrong one */
    int ndim;
    long long shape[4];
    const void *data;
    size_t bytes;
    long long offsets[2]; /* if offsets[1] != 0, written instead of the real offsets */
} tu_tensor;

/* Writes a safetensors file: header from the tensors, then their data back to back. */
void tu_write_safetensors(const char *path, const tu_tensor *t, int n);
/* Writes a .npy file (version 1.0) of raw little-endian data: descr like "<f4", shape
 * like "(50, 2, 3, 4)". */
void tu_write_npy(const char *path, const char *descr, const char *shape, const void *data, size_t bytes);
/* Writes a text file. */
void tu_write_text(const char *path, const char *text);
/* Copies a file. */
void tu_copy_file(const char *from, const char *to);
/* A copy of test/fixtures/tiny-f32 (config.json, model.safetensors) in a fresh
 * tu_tmpdir(), whose path it returns, for tests that add a calibration.json. */
const char *tu_copy_tiny(void);
/* Runs `$ERT_CLI ARGS` in the source tree, capturing stdout and stderr (NUL-terminated,
 * cut to their buffers); returns the exit status, -1 if it did not exit normally. */
int tu_cli(const char *args, char *out, size_t out_len, char *err, size_t err_len);
/* 1 if the last error message contains `needle` (prints the message if not). */
int tu_error_has(const char *needle);
/* The CPU device's name for a model with linear ops only (a conv's oneDNN runs without
 * AVX-512 too), as this build on this CPU gives it:
 * "cpu (2 threads, oneDNN)" where oneDNN is built in and the CPU has AVX-512 (oneDNN's
 * brgemm) and ERT_CPU_GEMM is not openblas, else "cpu (2 threads, OpenBLAS)". In a
 * static buffer. */
const char *tu_cpu_name(int threads);
