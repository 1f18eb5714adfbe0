/* The CNN's convolution GEMM shapes (out_c x kdim x columns, as conv.c calls them), oneDNN matmul
 * vs OpenBLAS, one thread, plain layouts (the columns change every call: nothing to pack once).
 * Build: gcc -O2 -fopenmp -I/usr/include/x86_64-linux-gnu/openblas-pthread -o c conv-gemm-probe.c -ldnnl -lopenblas
 * Run: OMP_NUM_THREADS=1 ./c M K N   (output: conv-gemm-probe.txt) */
#include <oneapi/dnnl/dnnl.h>
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#define CHK(x) do { dnnl_status_t s_ = (x); if (s_ != dnnl_success) { printf("%s: %d\n", #x, s_); exit(1); } } while (0)
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc,char**argv){
  int M=atoi(argv[1]),K=atoi(argv[2]),N=atoi(argv[3]);
  openblas_set_num_threads(1);
  dnnl_engine_t eng; dnnl_stream_t st; CHK(dnnl_engine_create(&eng,dnnl_cpu,0)); CHK(dnnl_stream_create(&st,eng,0));
  float *A=malloc(4L*M*K),*B=malloc(4L*K*N),*C=malloc(4L*M*N),*C2=malloc(4L*M*N);
  for(long i=0;i<(long)M*K;i++)A[i]=(rand()%100)/100.f; for(long i=0;i<(long)K*N;i++)B[i]=(rand()%100)/100.f;
  dnnl_memory_desc_t ad,bd,cd; dnnl_dims_t a={M,K},b={K,N},c={M,N};
  CHK(dnnl_memory_desc_init_by_tag(&ad,2,a,dnnl_f32,dnnl_ab));CHK(dnnl_memory_desc_init_by_tag(&bd,2,b,dnnl_f32,dnnl_ab));CHK(dnnl_memory_desc_init_by_tag(&cd,2,c,dnnl_f32,dnnl_ab));
  dnnl_matmul_desc_t md; CHK(dnnl_matmul_desc_init(&md,&ad,&bd,NULL,&cd));
  dnnl_primitive_desc_t pd; CHK(dnnl_primitive_desc_create(&pd,&md,NULL,eng,NULL));
  const char*impl; dnnl_primitive_desc_query(pd,dnnl_query_impl_info_str,0,&impl);
  dnnl_primitive_t p; CHK(dnnl_primitive_create(&p,pd));
  dnnl_memory_t am,bm,cm; CHK(dnnl_memory_create(&am,&ad,eng,A));CHK(dnnl_memory_create(&bm,&bd,eng,B));CHK(dnnl_memory_create(&cm,&cd,eng,C));
  dnnl_exec_arg_t args[3]={{DNNL_ARG_SRC,am},{DNNL_ARG_WEIGHTS,bm},{DNNL_ARG_DST,cm}};
  int R=200; CHK(dnnl_primitive_execute(p,st,3,args));
  double t0=now(); for(int r=0;r<R;r++) dnnl_primitive_execute(p,st,3,args); double td=(now()-t0)/R;
  cblas_sgemm(CblasRowMajor,CblasNoTrans,CblasNoTrans,M,N,K,1,A,K,B,N,0,C2,N);
  t0=now(); for(int r=0;r<R;r++) cblas_sgemm(CblasRowMajor,CblasNoTrans,CblasNoTrans,M,N,K,1,A,K,B,N,0,C2,N); double to=(now()-t0)/R;
  double f=2.0*M*K*N;
  printf("M=%d K=%d N=%d %s: onednn %.1f us %.1f GF/s | openblas %.1f us %.1f GF/s | %.2fx\n",M,K,N,impl,td*1e6,f/td*1e-9,to*1e6,f/to*1e-9,to/td);
}
