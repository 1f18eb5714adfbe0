/* Functions marked ERT_HD compile as C for the CPU backend and as host+device code
 * under nvcc, so both backends share one copy of the math. */
#ifndef ERT_HD_H
#define ERT_HD_H
#if defined(__CUDACC__)
#define ERT_HD static __host__ __device__ __forceinline__
#else
#define ERT_HD static inline
#endif
#endif
