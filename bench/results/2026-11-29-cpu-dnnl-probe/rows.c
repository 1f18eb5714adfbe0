#include <oneapi/dnnl/dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define CHK(x) do { dnnl_status_t s_ = (x); if (s_ != dnnl_success) { printf("%s: %d\n", #x, s_); exit(1); } } while (0)
static dnnl_engine_t eng; static dnnl_stream_t strm;
int main(int argc, char **argv) {
    int K = atoi(argv[1]), N = atoi(argv[2]), runtime = atoi(argv[3]), maxM = argc > 4 ? atoi(argv[4]) : 300;
    CHK(dnnl_engine_create(&eng, dnnl_cpu, 0));
    CHK(dnnl_stream_create(&strm, eng, dnnl_stream_default_flags));
    float *W = malloc(sizeof(float) * K * N), *x = malloc(sizeof(float) * maxM * K), *y = malloc(sizeof(float) * maxM * N);
    srand(K * 7 + N);
    for (int i = 0; i < K * N; ++i) W[i] = (rand() / (float)RAND_MAX - 0.5f) * 0.1f;
    float *ref = malloc(sizeof(float) * maxM * N); int have_ref = 0;
    float *pool = malloc(sizeof(float) * maxM * K);
    for (int i = 0; i < maxM * K; ++i) pool[i] = rand() / (float)RAND_MAX - 0.3f;
    dnnl_memory_desc_t wany, wplain, wd;
    dnnl_dims_t w = {K, N};
    CHK(dnnl_memory_desc_init_by_tag(&wany, 2, w, dnnl_f32, dnnl_format_tag_any));
    CHK(dnnl_memory_desc_init_by_tag(&wplain, 2, w, dnnl_f32, dnnl_ba));
    dnnl_primitive_t prim = NULL; dnnl_memory_t wei = NULL;
    int bad = 0, checked = 0;
    const char *impl0 = NULL;
    for (int M = 1; M <= maxM; M += (M < 70 ? 1 : 23)) {
        if (!prim || !runtime) {
            dnnl_memory_desc_t sd, dd;
            dnnl_dims_t s = {runtime ? DNNL_RUNTIME_DIM_VAL : M, K}, d = {runtime ? DNNL_RUNTIME_DIM_VAL : M, N};
            CHK(dnnl_memory_desc_init_by_tag(&sd, 2, s, dnnl_f32, dnnl_ab));
            CHK(dnnl_memory_desc_init_by_tag(&dd, 2, d, dnnl_f32, dnnl_ab));
            dnnl_matmul_desc_t md;
            CHK(dnnl_matmul_desc_init(&md, &sd, &wany, NULL, &dd));
            dnnl_primitive_desc_t pd;
            CHK(dnnl_primitive_desc_create(&pd, &md, NULL, eng, NULL));
            wd = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
            const char *impl; dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
            if (!impl0 || strcmp(impl0, impl)) { printf("  K=%d N=%d M=%d impl %s\n", K, N, M, impl); impl0 = strdup(impl); }
            CHK(dnnl_primitive_create(&prim, pd));
            dnnl_memory_t wsrc;
            CHK(dnnl_memory_create(&wsrc, &wplain, eng, W));
            CHK(dnnl_memory_create(&wei, &wd, eng, DNNL_MEMORY_ALLOCATE));
            dnnl_primitive_desc_t rpd; dnnl_primitive_t r;
            CHK(dnnl_reorder_primitive_desc_create(&rpd, &wplain, eng, &wd, eng, NULL));
            CHK(dnnl_primitive_create(&r, rpd));
            dnnl_exec_arg_t ra[2] = {{DNNL_ARG_FROM, wsrc}, {DNNL_ARG_TO, wei}};
            CHK(dnnl_primitive_execute(r, strm, 2, ra));
            CHK(dnnl_stream_wait(strm));
        }
        /* rows: samples (M*3 + r) % maxM, a different arrangement per M */
        int *id = malloc(sizeof(int) * M);
        for (int r = 0; r < M; ++r) { id[r] = (r * 37 + M * 11) % maxM; }
        /* distinct ids needed */
        for (int r = 0; r < M; ++r) memcpy(x + (size_t)r * K, pool + (size_t)id[r] * K, sizeof(float) * K);
        dnnl_memory_desc_t sd, dd; dnnl_dims_t s = {M, K}, d = {M, N};
        CHK(dnnl_memory_desc_init_by_tag(&sd, 2, s, dnnl_f32, dnnl_ab));
        CHK(dnnl_memory_desc_init_by_tag(&dd, 2, d, dnnl_f32, dnnl_ab));
        dnnl_memory_t sm, dm;
        CHK(dnnl_memory_create(&sm, &sd, eng, x)); CHK(dnnl_memory_create(&dm, &dd, eng, y));
        dnnl_exec_arg_t a[3] = {{DNNL_ARG_SRC, sm}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dm}};
        CHK(dnnl_primitive_execute(prim, strm, 3, a)); CHK(dnnl_stream_wait(strm));
        if (!have_ref) { /* reference: every sample computed alone at M = 2 would be circular; use first M's */ }
        for (int r = 0; r < M; ++r) {
            float *rr = ref + (size_t)id[r] * N;
            static char seen[100000];
            if (!seen[id[r]]) { memcpy(rr, y + (size_t)r * N, sizeof(float) * N); seen[id[r]] = 1; continue; }
            checked++;
            if (memcmp(rr, y + (size_t)r * N, sizeof(float) * N)) { if (bad < 3) printf("  M=%d row %d (sample %d) differs\n", M, r, id[r]); bad++; }
        }
        dnnl_memory_destroy(sm); dnnl_memory_destroy(dm); free(id);
        if (!runtime) { dnnl_primitive_destroy(prim); dnnl_memory_destroy(wei); }
    }
    printf("K=%d N=%d runtime=%d: %d of %d rows differ from the sample's first result\n", K, N, runtime, bad, checked);
    return 0;
}
