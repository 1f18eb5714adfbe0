/* Build: gcc -O2 -fopenmp -o peak peak.c   Run: ./peak   (output: peak.txt) */
/* The peak f32 FMA rate of this CPU: independent FMA chains in registers, no memory, on 1 and 2 threads. */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
__attribute__((target("avx512f"))) static float run512(long iters) {
    __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    __m512 a0 = _mm512_set1_ps((float)0);
    __m512 a1 = _mm512_set1_ps((float)1);
    __m512 a2 = _mm512_set1_ps((float)2);
    __m512 a3 = _mm512_set1_ps((float)3);
    __m512 a4 = _mm512_set1_ps((float)4);
    __m512 a5 = _mm512_set1_ps((float)5);
    __m512 a6 = _mm512_set1_ps((float)6);
    __m512 a7 = _mm512_set1_ps((float)7);
    __m512 a8 = _mm512_set1_ps((float)8);
    __m512 a9 = _mm512_set1_ps((float)9);
    __m512 a10 = _mm512_set1_ps((float)10);
    __m512 a11 = _mm512_set1_ps((float)11);
    for (long k = 0; k < iters; ++k)
        { a0 = _mm512_fmadd_ps(a0, m, c); a1 = _mm512_fmadd_ps(a1, m, c); a2 = _mm512_fmadd_ps(a2, m, c); a3 = _mm512_fmadd_ps(a3, m, c); a4 = _mm512_fmadd_ps(a4, m, c); a5 = _mm512_fmadd_ps(a5, m, c); a6 = _mm512_fmadd_ps(a6, m, c); a7 = _mm512_fmadd_ps(a7, m, c); a8 = _mm512_fmadd_ps(a8, m, c); a9 = _mm512_fmadd_ps(a9, m, c); a10 = _mm512_fmadd_ps(a10, m, c); a11 = _mm512_fmadd_ps(a11, m, c); }
    __m512 s = a0; s = _mm512_add_ps(s, a1); s = _mm512_add_ps(s, a2); s = _mm512_add_ps(s, a3); s = _mm512_add_ps(s, a4); s = _mm512_add_ps(s, a5); s = _mm512_add_ps(s, a6); s = _mm512_add_ps(s, a7); s = _mm512_add_ps(s, a8); s = _mm512_add_ps(s, a9); s = _mm512_add_ps(s, a10); s = _mm512_add_ps(s, a11);
    return _mm512_reduce_add_ps(s);
}
__attribute__((target("avx2,fma"))) static float run256(long iters) {
    __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    __m256 a0 = _mm256_set1_ps((float)0);
    __m256 a1 = _mm256_set1_ps((float)1);
    __m256 a2 = _mm256_set1_ps((float)2);
    __m256 a3 = _mm256_set1_ps((float)3);
    __m256 a4 = _mm256_set1_ps((float)4);
    __m256 a5 = _mm256_set1_ps((float)5);
    __m256 a6 = _mm256_set1_ps((float)6);
    __m256 a7 = _mm256_set1_ps((float)7);
    __m256 a8 = _mm256_set1_ps((float)8);
    __m256 a9 = _mm256_set1_ps((float)9);
    __m256 a10 = _mm256_set1_ps((float)10);
    __m256 a11 = _mm256_set1_ps((float)11);
    for (long k = 0; k < iters; ++k)
        { a0 = _mm256_fmadd_ps(a0, m, c); a1 = _mm256_fmadd_ps(a1, m, c); a2 = _mm256_fmadd_ps(a2, m, c); a3 = _mm256_fmadd_ps(a3, m, c); a4 = _mm256_fmadd_ps(a4, m, c); a5 = _mm256_fmadd_ps(a5, m, c); a6 = _mm256_fmadd_ps(a6, m, c); a7 = _mm256_fmadd_ps(a7, m, c); a8 = _mm256_fmadd_ps(a8, m, c); a9 = _mm256_fmadd_ps(a9, m, c); a10 = _mm256_fmadd_ps(a10, m, c); a11 = _mm256_fmadd_ps(a11, m, c); }
    __m256 s = a0; s = _mm256_add_ps(s, a1); s = _mm256_add_ps(s, a2); s = _mm256_add_ps(s, a3); s = _mm256_add_ps(s, a4); s = _mm256_add_ps(s, a5); s = _mm256_add_ps(s, a6); s = _mm256_add_ps(s, a7); s = _mm256_add_ps(s, a8); s = _mm256_add_ps(s, a9); s = _mm256_add_ps(s, a10); s = _mm256_add_ps(s, a11);
    float o[8]; _mm256_storeu_ps(o, s); return o[0];
}
int main(void) {
    const long iters = 200000000;
    for (int w = 256; w <= 512; w += 256)
        for (int t = 1; t <= 2; ++t) {
            float sink = 0; double t0 = now();
#pragma omp parallel num_threads(t) reduction(+ : sink)
            sink += w == 512 ? run512(iters) : run256(iters);
            double dt = now() - t0;
            double flops = 2.0 * (w / 32) * 12.0 * iters * t;
            printf("%d-bit FMA, %d thread%s: %.1f GFLOP/s (%.2f GHz at %d FLOP/cycle/core) [%g]\n", w, t, t > 1 ? "s" : "",
                   flops / dt * 1e-9, flops / dt * 1e-9 / t / 32, 32, sink);
        }
}
