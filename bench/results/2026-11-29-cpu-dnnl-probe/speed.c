#include <oneapi/dnnl/dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#define CHK(x) do { dnnl_status_t s_ = (x); if (s_ != dnnl_success) { printf("%s: %d\n", #x, s_); exit(1); } } while (0)
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static dnnl_engine_t eng; static dnnl_stream_t strm;
typedef struct { dnnl_primitive_t p; dnnl_memory_t src, wei, dst; } mm;
/* y (M x N) = x (M x K) W^T, W given as (N x K) row-major = (K x N) with strides (1, K) */
static void mm_make(mm *m, int M, int K, int N, const float *W, int runtime) {
    dnnl_memory_desc_t sd, wd, dd, wany, wplain;
    dnnl_dims_t s = {runtime ? DNNL_RUNTIME_DIM_VAL : M, K}, w = {K, N}, d = {runtime ? DNNL_RUNTIME_DIM_VAL : M, N};
    CHK(dnnl_memory_desc_init_by_tag(&sd, 2, s, dnnl_f32, dnnl_ab));
    CHK(dnnl_memory_desc_init_by_tag(&dd, 2, d, dnnl_f32, dnnl_ab));
    CHK(dnnl_memory_desc_init_by_tag(&wany, 2, w, dnnl_f32, dnnl_format_tag_any));
    CHK(dnnl_memory_desc_init_by_tag(&wplain, 2, w, dnnl_f32, dnnl_ba));
    dnnl_matmul_desc_t md;
    CHK(dnnl_matmul_desc_init(&md, &sd, &wany, NULL, &dd));
    dnnl_primitive_desc_t pd;
    CHK(dnnl_primitive_desc_create(&pd, &md, NULL, eng, NULL));
    wd = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    CHK(dnnl_primitive_create(&m->p, pd));
    dnnl_memory_t wsrc;
    CHK(dnnl_memory_create(&wsrc, &wplain, eng, (void *)W));
    CHK(dnnl_memory_create(&m->wei, &wd, eng, DNNL_MEMORY_ALLOCATE));
    dnnl_primitive_desc_t rpd; dnnl_primitive_t r;
    CHK(dnnl_reorder_primitive_desc_create(&rpd, &wplain, eng, &wd, eng, NULL));
    CHK(dnnl_primitive_create(&r, rpd));
    dnnl_exec_arg_t ra[2] = {{DNNL_ARG_FROM, wsrc}, {DNNL_ARG_TO, m->wei}};
    CHK(dnnl_primitive_execute(r, strm, 2, ra));
    CHK(dnnl_stream_wait(strm));
    const char *impl; dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    if (M == 64 || runtime) printf("impl(M=%d runtime=%d): %s\n", M, runtime, impl);
}
static void mm_run(mm *m, int M, int K, int N, const float *x, float *y, int runtime) {
    dnnl_memory_desc_t sd, dd;
    dnnl_dims_t s = {M, K}, d = {M, N};
    CHK(dnnl_memory_desc_init_by_tag(&sd, 2, s, dnnl_f32, dnnl_ab));
    CHK(dnnl_memory_desc_init_by_tag(&dd, 2, d, dnnl_f32, dnnl_ab));
    dnnl_memory_t sm, dm;
    CHK(dnnl_memory_create(&sm, &sd, eng, (void *)x));
    CHK(dnnl_memory_create(&dm, &dd, eng, y));
    dnnl_exec_arg_t a[3] = {{DNNL_ARG_SRC, sm}, {DNNL_ARG_WEIGHTS, m->wei}, {DNNL_ARG_DST, dm}};
    CHK(dnnl_primitive_execute(m->p, strm, 3, a));
    CHK(dnnl_stream_wait(strm));
    dnnl_memory_destroy(sm); dnnl_memory_destroy(dm);
    (void)runtime;
}
int main(int argc, char **argv) {
    int K = argc > 1 ? atoi(argv[1]) : 1024, N = argc > 2 ? atoi(argv[2]) : 1024;
    CHK(dnnl_engine_create(&eng, dnnl_cpu, 0));
    CHK(dnnl_stream_create(&strm, eng, dnnl_stream_default_flags));
    float *W = malloc(sizeof(float) * K * N), *x = malloc(sizeof(float) * 1024 * K), *y = malloc(sizeof(float) * 1024 * N);
    srand(1);
    for (int i = 0; i < K * N; ++i) W[i] = (rand() / (float)RAND_MAX - 0.5f) * 0.1f;
    for (int i = 0; i < 1024 * K; ++i) x[i] = rand() / (float)RAND_MAX;
    for (int runtime = 1; runtime >= 0; --runtime) {
        const int Ms[] = {1, 2, 3, 7, 16, 17, 33, 64, 100, 256, 1024};
        float ref[4096]; int first = 1;
        mm rt; if (runtime) mm_make(&rt, 0, K, N, W, 1);
        for (int i = 0; i < 11; ++i) {
            int M = Ms[i];
            mm m; if (!runtime) mm_make(&m, M, K, N, W, 0);
            mm *u = runtime ? &rt : &m;
            /* put sample 0 at the LAST row of the batch */
            float *xb = malloc(sizeof(float) * M * K), *yb = malloc(sizeof(float) * M * N);
            for (int r = 0; r < M; ++r) memcpy(xb + (size_t)r * K, x + (size_t)((r + 1) % M) * K, sizeof(float) * K);
            mm_run(u, M, K, N, xb, yb, runtime);
            double t0 = now(); int reps = 20;
            for (int k = 0; k < reps; ++k) mm_run(u, M, K, N, xb, yb, runtime);
            double dt = (now() - t0) / reps;
            const float *row = yb + (size_t)(M - 1) * N; /* sample 0 */
            if (first) { memcpy(ref, row, sizeof(float) * N); first = 0; }
            int diff = 0; for (int c = 0; c < N; ++c) diff += memcmp(&ref[c], &row[c], 4) != 0;
            printf("runtime=%d M=%4d: %8.1f us, %6.1f GFLOP/s, sample 0 differs from M=1 in %d of %d\n", runtime, M, dt * 1e6, 2.0 * M * K * N / dt * 1e-9, diff, N);
            free(xb); free(yb);
        }
    }
    return 0;
}
