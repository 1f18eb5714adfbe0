#include <oneapi/dnnl/dnnl.h>
#include <stdio.h>
#include <math.h>
int main(void){
  dnnl_engine_t e; dnnl_engine_create(&e, dnnl_cpu, 0);
  dnnl_stream_t s; dnnl_stream_create(&s, e, dnnl_stream_default_flags);
  enum {N=40};
  float x[N], y[N];
  for (int i=0;i<N;++i) x[i]= (float)(i-20)*0.5f;
  x[0]=INFINITY; x[1]=-INFINITY; x[2]=NAN; x[3]=3e38f; x[4]=1e30f; x[5]=100.f; x[6]=30.f; x[7]=1e10f; x[8]=-1e10f;
  dnnl_memory_desc_t md; dnnl_dims_t d={N};
  dnnl_memory_desc_create_with_tag(&md,1,d,dnnl_f32,dnnl_a);
  dnnl_primitive_desc_t pd;
  int st=dnnl_eltwise_forward_primitive_desc_create(&pd,e,dnnl_forward_inference,dnnl_eltwise_gelu_erf,md,md,0,0,NULL);
  const char*impl; dnnl_primitive_desc_query(pd,dnnl_query_impl_info_str,0,&impl);
  printf("st %d impl %s\n",st,impl);
  dnnl_primitive_t p; dnnl_primitive_create(&p,pd);
  dnnl_memory_t mx,my; dnnl_memory_create(&mx,md,e,x); dnnl_memory_create(&my,md,e,y);
  dnnl_exec_arg_t a[2]={{DNNL_ARG_SRC,mx},{DNNL_ARG_DST,my}};
  dnnl_primitive_execute(p,s,2,a); dnnl_stream_wait(s);
  for(int i=0;i<10;++i) printf("gelu(%g) = %g\n",x[i],y[i]);
  return 0;
}
