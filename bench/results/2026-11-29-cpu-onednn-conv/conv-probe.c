/* One convolution of fmnist-cnn's shapes for one sample (N = 1) on oneDNN, one thread: the primitive
 * with src/dst "any" (reorders from and to NCHW timed with it) vs plain NCHW (argument 4 given).
 * Build: gcc -O2 -fopenmp -o c conv-probe.c -ldnnl    Run: ./c C H K [plain]   (output: conv-probe.txt) */
/* per-sample (N=1) oneDNN convolution with reorders nchw -> any -> nchw, one thread */
#include <oneapi/dnnl/dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <omp.h>
#define CHK(x) do { dnnl_status_t s_ = (x); if (s_ != dnnl_success) { printf("%s: %d\n", #x, s_); exit(1); } } while (0)
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc,char**argv){
  omp_set_num_threads(1);
  int C=atoi(argv[1]),H=atoi(argv[2]),K=atoi(argv[3]);
  dnnl_engine_t eng; dnnl_stream_t st; CHK(dnnl_engine_create(&eng,dnnl_cpu,0)); CHK(dnnl_stream_create(&st,eng,0));
  dnnl_memory_desc_t sp, s_any, w_any, b_md, d_any, dp, wp;
  dnnl_dims_t sd={1,C,H,H}, wd={K,C,3,3}, bd={K}, dd={1,K,H,H}, strides={1,1}, pad={1,1};
  CHK(dnnl_memory_desc_init_by_tag(&sp,4,sd,dnnl_f32,dnnl_nchw));
  CHK(dnnl_memory_desc_init_by_tag(&dp,4,dd,dnnl_f32,dnnl_nchw));
  CHK(dnnl_memory_desc_init_by_tag(&wp,4,wd,dnnl_f32,dnnl_oihw));
  CHK(dnnl_memory_desc_init_by_tag(&s_any,4,sd,dnnl_f32,dnnl_format_tag_any));
  CHK(dnnl_memory_desc_init_by_tag(&d_any,4,dd,dnnl_f32,dnnl_format_tag_any));
  CHK(dnnl_memory_desc_init_by_tag(&w_any,4,wd,dnnl_f32,dnnl_format_tag_any));
  CHK(dnnl_memory_desc_init_by_tag(&b_md,1,bd,dnnl_f32,dnnl_x));
  int plain = argc > 4;
  dnnl_convolution_desc_t cd;
  CHK(dnnl_convolution_forward_desc_init(&cd, dnnl_forward_inference, dnnl_convolution_direct, plain ? &sp : &s_any, &w_any, &b_md, plain ? &dp : &d_any, strides, pad, pad));
  dnnl_post_ops_t po; CHK(dnnl_post_ops_create(&po)); CHK(dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0.f, 0.f));
  dnnl_primitive_attr_t attr; CHK(dnnl_primitive_attr_create(&attr)); CHK(dnnl_primitive_attr_set_post_ops(attr, po));
  dnnl_primitive_desc_t pd; CHK(dnnl_primitive_desc_create(&pd,&cd,attr,eng,NULL));
  const char*impl; dnnl_primitive_desc_query(pd,dnnl_query_impl_info_str,0,&impl);
  const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
  const dnnl_memory_desc_t *dmd = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
  const dnnl_memory_desc_t *wmd = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
  dnnl_primitive_t conv; CHK(dnnl_primitive_create(&conv,pd));
  float *x=malloc(4L*C*H*H), *y=malloc(4L*K*H*H), *w=malloc(4L*K*C*9), *b=malloc(4L*K);
  for(long i=0;i<(long)C*H*H;i++)x[i]=(rand()%1000)/1000.f-.5f; for(long i=0;i<(long)K*C*9;i++)w[i]=(rand()%1000)/1000.f-.5f; for(int i=0;i<K;i++)b[i]=0.01f*i;
  void *xs=aligned_alloc(64,dnnl_memory_desc_get_size(smd)+64), *ys=aligned_alloc(64,dnnl_memory_desc_get_size(dmd)+64), *wsb=aligned_alloc(64,dnnl_memory_desc_get_size(wmd)+64);
  dnnl_memory_t xm,xsm,ym,ysm,wm,wsm,bm;
  CHK(dnnl_memory_create(&xm,&sp,eng,x)); CHK(dnnl_memory_create(&xsm,smd,eng,xs));
  CHK(dnnl_memory_create(&ym,&dp,eng,y)); CHK(dnnl_memory_create(&ysm,dmd,eng,ys));
  CHK(dnnl_memory_create(&wm,&wp,eng,w)); CHK(dnnl_memory_create(&wsm,wmd,eng,wsb)); CHK(dnnl_memory_create(&bm,&b_md,eng,b));
  dnnl_primitive_desc_t r1pd,r2pd,r3pd; dnnl_primitive_t r1,r2,r3;
  CHK(dnnl_reorder_primitive_desc_create(&r1pd,&sp,eng,smd,eng,NULL)); CHK(dnnl_primitive_create(&r1,r1pd));
  CHK(dnnl_reorder_primitive_desc_create(&r2pd,dmd,eng,&dp,eng,NULL)); CHK(dnnl_primitive_create(&r2,r2pd));
  CHK(dnnl_reorder_primitive_desc_create(&r3pd,&wp,eng,wmd,eng,NULL)); CHK(dnnl_primitive_create(&r3,r3pd));
  dnnl_exec_arg_t a3[2]={{DNNL_ARG_FROM,wm},{DNNL_ARG_TO,wsm}}; CHK(dnnl_primitive_execute(r3,st,2,a3));
  dnnl_exec_arg_t a1[2]={{DNNL_ARG_FROM,xm},{DNNL_ARG_TO,xsm}};
  dnnl_exec_arg_t ac[4]={{DNNL_ARG_SRC,xsm},{DNNL_ARG_WEIGHTS,wsm},{DNNL_ARG_BIAS,bm},{DNNL_ARG_DST,ysm}};
  dnnl_exec_arg_t a2[2]={{DNNL_ARG_FROM,ysm},{DNNL_ARG_TO,ym}};
  int same = dnnl_memory_desc_equal(smd,&sp), dsame = dnnl_memory_desc_equal(dmd,&dp);
  int R=3000; double t0=now();
  for(int r=0;r<R;r++){ if(!same) dnnl_primitive_execute(r1,st,2,a1); dnnl_primitive_execute(conv,st,4,ac); if(!dsame) dnnl_primitive_execute(r2,st,2,a2);}
  double t=(now()-t0)/R; double f=2.0*K*C*9*H*H;
  double t1=now(); for(int r=0;r<R;r++) dnnl_primitive_execute(conv,st,4,ac); double tc=(now()-t1)/R;
  printf("C=%d H=%d K=%d %s src_plain=%d dst_plain=%d: %.2f us/sample (conv alone %.2f) %.1f GF/s\n",C,H,K,impl,same,dsame,t*1e6,tc*1e6,f/t*1e-9);
}
