#include <oneapi/dnnl/dnnl.h>
#include <stdio.h>
#include <math.h>
#include <float.h>
#include <string.h>
/* a 1 x K x N matmul, x = {+inf or other}, weights chosen so z = +inf, -inf, NaN, finite */
static void run(int chain, int rows, int N) {
  dnnl_engine_t e; dnnl_engine_create(&e, dnnl_cpu, 0);
  dnnl_stream_t s; dnnl_stream_create(&s, e, dnnl_stream_default_flags);
  int K=1;
  float x[64], w[1024], y[64*1024];
  for (int r=0;r<rows;++r) x[r]= r%4==0? INFINITY : r%4==1? NAN : r%4==2 ? 3e38f : 0.5f*(float)r;
  for (int n=0;n<N;++n) w[n] = n%3==0? 1.f : n%3==1 ? -1.f : 0.f;
  dnnl_memory_desc_t sd, wd, dd; dnnl_dims_t sdims={rows,K}, wdims={K,N}, ddims={rows,N};
  dnnl_memory_desc_create_with_tag(&sd,2,sdims,dnnl_f32,dnnl_ab);
  dnnl_memory_desc_create_with_tag(&wd,2,wdims,dnnl_f32,dnnl_ab);
  dnnl_memory_desc_create_with_tag(&dd,2,ddims,dnnl_f32,dnnl_ab);
  dnnl_primitive_attr_t attr; dnnl_primitive_attr_create(&attr);
  dnnl_post_ops_t ops; dnnl_post_ops_create(&ops);
  if (chain) dnnl_post_ops_append_eltwise(ops, dnnl_eltwise_clip, -INFINITY, FLT_MAX);
  dnnl_post_ops_append_eltwise(ops, dnnl_eltwise_gelu_erf, 0, 0);
  dnnl_primitive_attr_set_post_ops(attr, ops);
  dnnl_primitive_desc_t pd;
  int st = dnnl_matmul_primitive_desc_create(&pd,e,sd,wd,NULL,dd,attr);
  const char*impl=""; dnnl_primitive_desc_query(pd,dnnl_query_impl_info_str,0,&impl);
  dnnl_primitive_t p; dnnl_primitive_create(&p,pd);
  dnnl_memory_t ms,mw,md; dnnl_memory_create(&ms,sd,e,x); dnnl_memory_create(&mw,wd,e,w); dnnl_memory_create(&md,dd,e,y);
  dnnl_exec_arg_t a[3]={{DNNL_ARG_SRC,ms},{DNNL_ARG_WEIGHTS,mw},{DNNL_ARG_DST,md}};
  dnnl_primitive_execute(p,s,3,a); dnnl_stream_wait(s);
  printf("chain %d rows %d N %d st %d impl %s\n", chain, rows, N, st, impl);
  int bad=0;
  for (int r=0;r<rows;++r) for (int n=0;n<N;++n) {
    double z = (double)x[r]*w[n]; float zf=(float)z; if (isnan(x[r])) zf=NAN;
    if (isinf(x[r]) && w[n]==0) zf=NAN;
    float want = isnan(zf)? NAN : isinf(zf)? (zf>0? INFINITY: NAN) : (float)(0.5*zf*(1+erf(zf/sqrt(2.0))));
    float got=y[r*N+n];
    int ok = isnan(want)? isnan(got) : isinf(want)? (isinf(got)&&got>0) : fabsf(got-want)<=1e-5f+1e-4f*fabsf(want);
    if(!ok && bad++<6) printf("  r %d n %d x %g w %g: got %g want %g\n", r,n,x[r],w[n],got,want);
  }
  printf("  bad %d\n", bad);
}
int main(void){ run(0,4,3); run(1,4,3); run(0,64,512); run(1,64,512); run(1,7,37); return 0; }
