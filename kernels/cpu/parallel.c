/* The CPU backend's threads: OpenMP (libgomp) teams over an op's independent tasks (blocks
 * of samples, column ranges of a GEMM), and OpenBLAS kept to one thread inside them.
 *
 * Why not OpenBLAS's own threads: they split one GEMM at a time, and the work between
 * GEMMs (im2col, bias + activation, pooling) stayed on one core. With 2 threads the
 * shipped CNN ran 1.2x faster than with 1, its workers spending ~40% of their time in
 * sched_yield; splitting whole blocks runs that work in parallel too (bench/NOTES.md,
 * "CPU threads"). A task's result never depends on the thread that runs it or on how
 * many threads run: each thread has its own scratch, and a GEMM's shape does not change
 * (cpu.h), so answers are the same bits for any thread count (test_conv and test_fmnist
 * check).
 *
 * Built without OpenMP (a compiler without it: clang without libomp), tasks run in order
 * on the calling thread. */
#define _GNU_SOURCE /* sched_getaffinity */
#include <cblas.h>
#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu.h"

/* Set in the child of a fork of a process that had run a team: libgomp's threads do not
 * come along, and its first team there would wait for them forever (libgomp is not
 * fork-safe), so that child runs every task on the calling thread: the same bits, one
 * core. A child of a process that never ran a team starts libgomp afresh. */
static _Atomic int team_started, widest;
static int forked;

static void after_fork_child(void) { forked = team_started; }

int ert_cpu_widest_team(void) { return widest; }

static void setup(void) {
    openblas_set_num_threads(1);
    pthread_atfork(NULL, NULL, after_fork_child);
}

void ert_cpu_blas_setup(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, setup);
}

/* OpenBLAS's own shutdown, what it calls before a fork; weak: the serial build has none
 * (the OpenMP build's frees its buffers, and a later call starts them again). After the
 * one-thread setup: openblas_set_num_threads starts a stopped pool again. */
extern int blas_thread_shutdown_(void) __attribute__((weak));

void ert_cpu_blas_pool_stop(void) {
    ert_cpu_blas_setup();
    if (blas_thread_shutdown_) blas_thread_shutdown_();
}

/* OpenBLAS's build line and oneDNN's version, as loaded (ert_build_info). */
void ert_cpu_libraries(char *buf, size_t len) {
    char dnnl[128];
    ert_cpu_onednn_version(dnnl, sizeof dnnl);
    snprintf(buf, len, "%s; %s", openblas_get_config(), dnnl);
}

int ert_cpu_quota_parse(const char *quota, const char *period) {
    char *end;
    const double q = strtod(quota, &end);
    if (end == quota || !(q > 0) || q != q) return 0; /* "max", "-1", garbage: no quota */
    const double p = strtod(period, &end);
    if (end == period || !(p > 0)) return 0;
    const double cpus = ceil(q / p);
    return cpus > ERT_MAX_THREADS ? ERT_MAX_THREADS : (int)cpus;
}

ert_status ert_threads_check(int threads) {
    if (threads >= 0 && threads <= ERT_MAX_THREADS) return ERT_OK;
    return ert_error(ERT_ERR_INVALID_ARGUMENT, "threads %d: expected 1..%d, or 0 for the default", threads,
                     ERT_MAX_THREADS);
}

int ert_cpu_threads_given(void) {
    const char *env = getenv("ERT_CPU_THREADS");
    return env && *env;
}

ert_status ert_cpu_threads_default(int *out) {
    const char *env = getenv("ERT_CPU_THREADS");
    if (ert_cpu_threads_given()) {
        char *end;
        const long v = isdigit((unsigned char)env[0]) ? strtol(env, &end, 10) : 0;
        if (v < 1 || v > ERT_MAX_THREADS || *end != '\0')
            return ert_error(ERT_ERR_INVALID_ARGUMENT, "ERT_CPU_THREADS '%s': expected a whole number 1..%d", env,
                             ERT_MAX_THREADS);
        *out = (int)v;
        return ERT_OK;
    }
    cpu_set_t set; /* more than CPU_SETSIZE (1024) CPUs: the online count */
    int n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : (int)sysconf(_SC_NPROCESSORS_ONLN);
    /* a container started with --cpus=2 on a 16-core host sees 16 CPUs in its affinity
     * mask but gets the time of 2 */
    const int quota = ert_cgroup_limits_of_process().cpus;
    if (quota > 0 && quota < n) n = quota;
    *out = n < 1 ? 1 : n > ERT_MAX_THREADS ? ERT_MAX_THREADS : n;
    return ERT_OK;
}

void ert_cpu_parallel(int threads, int tasks, ert_cpu_task fn, void *ctx) {
    if (threads > tasks) threads = tasks;
#ifdef _OPENMP
    if (threads > 1 && !forked) {
        team_started = 1;
        int w = widest;
        while (threads > w && !atomic_compare_exchange_weak(&widest, &w, threads)) {
        }
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
        for (int t = 0; t < tasks; ++t) fn(ctx, t, omp_get_thread_num());
        return;
    }
#endif
    for (int t = 0; t < tasks; ++t) fn(ctx, t, 0);
}
