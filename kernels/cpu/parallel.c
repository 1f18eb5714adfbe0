/* The CPU backend's threads: OpenMP (libgomp) teams over an op's independent tasks (blocks
 * of samples, column ranges of a GEMM), and OpenBLAS kept to one thread inside them.
 *
 * Why not OpenBLAS's own threads: they split one GEMM at a time, and the work between
 * GEMMs (im2col, bias + activation, pooling) stayed on one core. With 2 threads the
 * shipped CNN ran 1.2x faster than with 1, its workers spending ~40% of their time in
 * sched_yield; splitting whole blocks runs that work in parallel too (bench/NOTES.md,
 * "CPU threads"). A task's result never depends on the thread that runs it or on how
 * many threads run: each thread has its own scratch, and a GEMM's shape does not change
 * (cpu.h), so answers are the same bits for any thread count (test_ops checks).
 *
 * Built without OpenMP (a compiler without it: clang without libomp), tasks run in order
 * on the calling thread. */
#define _GNU_SOURCE /* sched_getaffinity */
#include <cblas.h>
#include <ctype.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu.h"

static void blas_one_thread(void) { openblas_set_num_threads(1); }

void ert_cpu_blas_setup(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, blas_one_thread);
}

ert_status ert_cpu_threads_default(int *out) {
    const char *env = getenv("ERT_CPU_THREADS");
    if (env && *env) {
        char *end;
        const long v = isdigit((unsigned char)env[0]) ? strtol(env, &end, 10) : 0;
        if (v < 1 || v > ERT_MAX_THREADS || *end != '\0')
            return ert_error(ERT_ERR_INVALID_ARGUMENT, "ERT_CPU_THREADS '%s': expected a whole number 1..%d", env,
                             ERT_MAX_THREADS);
        *out = (int)v;
        return ERT_OK;
    }
    cpu_set_t set;
    int n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
    *out = n < 1 ? 1 : n > ERT_MAX_THREADS ? ERT_MAX_THREADS : n;
    return ERT_OK;
}

void ert_cpu_parallel(int threads, int tasks, ert_cpu_task fn, void *ctx) {
    if (threads > tasks) threads = tasks;
#ifdef _OPENMP
    if (threads > 1) {
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
        for (int t = 0; t < tasks; ++t) fn(ctx, t, omp_get_thread_num());
        return;
    }
#endif
    for (int t = 0; t < tasks; ++t) fn(ctx, t, 0);
}
