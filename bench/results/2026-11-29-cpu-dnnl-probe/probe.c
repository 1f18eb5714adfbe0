/* oneDNN matmul probe (not part of the build): y = x W^T, W (N x K) reordered once into the
 * primitive's format.
 *   probe rows  K N RUNTIME_M  : for M = 1..70, then every 23rd up to 300, a different
 *       arrangement of 300 samples per M; each row is compared bit for bit with that
 *       sample's first result. RUNTIME_M = 1: one primitive for a run-time M; 0: one
 *       primitive per fixed M.
 *   probe speed K N            : time per call and GFLOP/s by M (sample 0 placed last,
 *       compared with its M = 1 result), run-time M first, then fixed M.
 * Build: gcc -O2 -o probe probe.c -ldnnl; run with OMP_NUM_THREADS=1. */
#include <oneapi/dnnl/dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHK(x) do { dnnl_status_t s_ = (x); if (s_ != dnnl_success) { printf("%s: %d\n", #x, s_); exit(1); } } while (0)

static dnnl_engine_t eng;
static dnnl_stream_t strm;

typedef struct { dnnl_primitive_t p; dnnl_memory_t wei; char impl[64]; } mm;

/* A matmul primitive for M rows (M = 0: a run-time M) and its reordered weights. */
static void mm_make(mm *m, int M, int K, int N, const float *W) {
    dnnl_memory_desc_t sd, dd, wany, wplain, wd;
    dnnl_dims_t s = {M ? M : DNNL_RUNTIME_DIM_VAL, K}, w = {K, N}, d = {M ? M : DNNL_RUNTIME_DIM_VAL, N};
    CHK(dnnl_memory_desc_init_by_tag(&sd, 2, s, dnnl_f32, dnnl_ab));
    CHK(dnnl_memory_desc_init_by_tag(&dd, 2, d, dnnl_f32, dnnl_ab));
    CHK(dnnl_memory_desc_init_by_tag(&wany, 2, w, dnnl_f32, dnnl_format_tag_any));
    CHK(dnnl_memory_desc_init_by_tag(&wplain, 2, w, dnnl_f32, dnnl_ba));
    dnnl_matmul_desc_t md;
    CHK(dnnl_matmul_desc_init(&md, &sd, &wany, NULL, &dd));
    dnnl_primitive_desc_t pd;
    CHK(dnnl_primitive_desc_create(&pd, &md, NULL, eng, NULL));
    wd = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    const char *impl;
    CHK(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl));
    snprintf(m->impl, sizeof m->impl, "%s", impl);
    CHK(dnnl_primitive_create(&m->p, pd));
    dnnl_memory_t wsrc;
    CHK(dnnl_memory_create(&wsrc, &wplain, eng, (void *)W));
    CHK(dnnl_memory_create(&m->wei, &wd, eng, DNNL_MEMORY_ALLOCATE));
    dnnl_primitive_desc_t rpd;
    dnnl_primitive_t r;
    CHK(dnnl_reorder_primitive_desc_create(&rpd, &wplain, eng, &wd, eng, NULL));
    CHK(dnnl_primitive_create(&r, rpd));
    dnnl_exec_arg_t ra[2] = {{DNNL_ARG_FROM, wsrc}, {DNNL_ARG_TO, m->wei}};
    CHK(dnnl_primitive_execute(r, strm, 2, ra));
    CHK(dnnl_stream_wait(strm));
    dnnl_primitive_destroy(r);
    dnnl_memory_destroy(wsrc);
}

static void mm_free(mm *m) {
    dnnl_primitive_destroy(m->p);
    dnnl_memory_destroy(m->wei);
}

static void mm_run(const mm *m, int M, int K, int N, const float *x, float *y) {
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
    dnnl_memory_destroy(sm);
    dnnl_memory_destroy(dm);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static float *random_floats(size_t n, float scale, float shift) {
    float *v = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; ++i) v[i] = (rand() / (float)RAND_MAX + shift) * scale;
    return v;
}

static int rows(int K, int N, int runtime) {
    enum { POOL = 300 };
    srand((unsigned)(K * 7 + N));
    float *W = random_floats((size_t)K * N, 0.1f, -0.5f), *pool = random_floats((size_t)POOL * K, 1.0f, -0.3f);
    float *x = malloc(sizeof(float) * POOL * K), *y = malloc(sizeof(float) * POOL * N), *ref = malloc(sizeof(float) * POOL * N);
    char seen[POOL] = {0}, impl[64] = "";
    mm rt;
    if (runtime) mm_make(&rt, 0, K, N, W);
    int bad = 0, checked = 0;
    for (int M = 1; M <= POOL; M += M < 70 ? 1 : 23) {
        mm fixed;
        if (!runtime) mm_make(&fixed, M, K, N, W);
        const mm *m = runtime ? &rt : &fixed;
        if (strcmp(impl, m->impl)) printf("  K=%d N=%d M=%d impl %s\n", K, N, M, strcpy(impl, m->impl));
        int id[POOL];
        for (int r = 0; r < M; ++r) id[r] = (r * 37 + M * 11) % POOL;
        for (int r = 0; r < M; ++r) memcpy(x + (size_t)r * K, pool + (size_t)id[r] * K, sizeof(float) * K);
        mm_run(m, M, K, N, x, y);
        for (int r = 0; r < M; ++r) {
            float *want = ref + (size_t)id[r] * N;
            if (!seen[id[r]]) {
                memcpy(want, y + (size_t)r * N, sizeof(float) * N);
                seen[id[r]] = 1;
                continue;
            }
            checked++;
            bad += memcmp(want, y + (size_t)r * N, sizeof(float) * N) != 0;
        }
        if (!runtime) mm_free(&fixed);
    }
    printf("K=%d N=%d runtime=%d: %d of %d rows differ from the sample's first result\n", K, N, runtime, bad, checked);
    return 0;
}

static int speed(int K, int N) {
    srand(1);
    float *W = random_floats((size_t)K * N, 0.1f, -0.5f), *x = random_floats((size_t)1024 * K, 1.0f, 0.0f);
    static const int Ms[] = {1, 2, 3, 7, 16, 17, 33, 64, 100, 256, 1024};
    for (int runtime = 1; runtime >= 0; --runtime) {
        float *ref = malloc(sizeof(float) * N);
        mm rt;
        if (runtime) mm_make(&rt, 0, K, N, W);
        for (int i = 0; i < 11; ++i) {
            const int M = Ms[i];
            mm fixed;
            if (!runtime) mm_make(&fixed, M, K, N, W);
            const mm *m = runtime ? &rt : &fixed;
            if (i == 0 || (!runtime && M == 64)) printf("impl(M=%d runtime=%d): %s\n", M, runtime, m->impl);
            /* sample 0 in the last row */
            float *xb = malloc(sizeof(float) * M * K), *yb = malloc(sizeof(float) * M * N);
            for (int r = 0; r < M; ++r) memcpy(xb + (size_t)r * K, x + (size_t)((r + 1) % M) * K, sizeof(float) * K);
            mm_run(m, M, K, N, xb, yb);
            const double t0 = now();
            enum { REPS = 20 };
            for (int k = 0; k < REPS; ++k) mm_run(m, M, K, N, xb, yb);
            const double dt = (now() - t0) / REPS;
            const float *row = yb + (size_t)(M - 1) * N;
            if (i == 0) memcpy(ref, row, sizeof(float) * N);
            int diff = 0;
            for (int c = 0; c < N; ++c) diff += memcmp(&ref[c], &row[c], 4) != 0;
            printf("runtime=%d M=%4d: %8.1f us, %6.1f GFLOP/s, sample 0 differs from M=1 in %d of %d\n", runtime, M,
                   dt * 1e6, 2.0 * M * K * N / dt * 1e-9, diff, N);
            free(xb);
            free(yb);
            if (!runtime) mm_free(&fixed);
        }
        if (runtime) mm_free(&rt);
        free(ref);
    }
    return 0;
}

int main(int argc, char **argv) {
    CHK(dnnl_engine_create(&eng, dnnl_cpu, 0));
    CHK(dnnl_stream_create(&strm, eng, dnnl_stream_default_flags));
    if (argc == 5 && strcmp(argv[1], "rows") == 0) return rows(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
    if (argc == 4 && strcmp(argv[1], "speed") == 0) return speed(atoi(argv[2]), atoi(argv[3]));
    fprintf(stderr, "usage: probe rows K N RUNTIME_M | probe speed K N\n");
    return 2;
}
