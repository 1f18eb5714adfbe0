#include <oneapi/dnnl/dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
int main(int argc, char **argv) {
  int K = argc > 1 ? atoi(argv[1]) : 1568, N = argc > 2 ? atoi(argv[2]) : 10;
  omp_set_num_threads(1);
  dnnl_engine_t e; dnnl_engine_create(&e, dnnl_cpu, 0);
  dnnl_stream_t s; dnnl_stream_create(&s, e, dnnl_stream_default_flags);
  float *x = malloc(sizeof(float) * 64 * K), *w = malloc(sizeof(float) * K * N), *y64 = malloc(sizeof(float) * 64 * N), *y = malloc(sizeof(float) * 64 * N);
  for (int i = 0; i < 64 * K; ++i) x[i] = (float)((i * 7919) % 1000) / 1000.f - 0.5f;
  for (int i = 0; i < K * N; ++i) w[i] = (float)((i * 104729) % 997) / 997.f - 0.5f;
  for (int mi = 0; mi < 7; ++mi) {
    int M = 64 >> mi;
    dnnl_memory_desc_t sd, wd, dd, wany; dnnl_dims_t sdims = {M, K}, wdims = {K, N}, ddims = {M, N};
    dnnl_memory_desc_create_with_tag(&sd, 2, sdims, dnnl_f32, dnnl_ab);
    dnnl_memory_desc_create_with_tag(&wd, 2, wdims, dnnl_f32, dnnl_ab);
    dnnl_memory_desc_create_with_tag(&dd, 2, ddims, dnnl_f32, dnnl_ab);
    dnnl_primitive_desc_t pd;
    dnnl_matmul_primitive_desc_create(&pd, e, sd, wd, NULL, dd, NULL);
    const char *impl; dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    dnnl_primitive_t p; dnnl_primitive_create(&p, pd);
    dnnl_memory_t ms, mw, md; const float *src = x + (size_t)(64 - M) * K;
    dnnl_memory_create(&ms, sd, e, (void*)src); dnnl_memory_create(&mw, wd, e, w); dnnl_memory_create(&md, dd, e, y);
    dnnl_exec_arg_t a[3] = {{DNNL_ARG_SRC, ms}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DST, md}};
    dnnl_primitive_execute(p, s, 3, a); dnnl_stream_wait(s);
    if (M == 64) memcpy(y64, y, sizeof(float) * 64 * N);
    int diff = memcmp(y, y64 + (size_t)(64 - M) * N, sizeof(float) * M * N) != 0;
    printf("M %2d impl %s differs %d\n", M, impl, diff);
  }
  return 0;
}
