/*
 * The exit decision, one fused kernel per exit:
 *
 *   logits (rows, classes) f32 -> temperature-scaled softmax statistics -> the policy's
 *   exit test -> keep[r]; leaving rows write pred / exit / conf (and, when asked, their
 *   logits) at orig_index[r].
 *
 * The arithmetic is exit_math.h's, the same functions the CPU reference calls, compiled
 * with --fmad=false (CMakeLists.txt: nvcc would otherwise fuse its multiply-adds into
 * FMAs, which round once where the CPU rounds twice), so both backends decide alike (up
 * to the last-ulp differences of expf/logf between libm and CUDA, which only matter for
 * scores within ~1e-6 of a threshold).
 *
 * One thread per row: a row is a short sequential scan (C logits, twice) and exit heads
 * have few classes; the rows of a batch give the parallelism. The whole ert_decide_args,
 * policy included (ert_exit_params, fixed-size arrays), travels by value as the kernel
 * parameter, so a launch reads no host state and needs no upload; __grid_constant__ lets
 * the threads read it in place (exit_math takes its address) instead of copying it to
 * local memory. A graph, launched again with another policy, passes dev_params instead:
 * the policy the session uploaded with the batch.
 */
#include "cuda_common.cuh"
#include "exit_math.h"

static const int kThreads = 128;

static __global__ void decide_kernel(const __grid_constant__ ert_decide_args a) {
    const int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= ert_cuda_rows(a.rows.n, a.rows.dev_count)) return;
    ert_sample_state st = a.state[r];
    if (st.done) { /* masked mode: the sample left at an earlier exit */
        a.keep[r] = 0;
        return;
    }
    const ert_exit_params *p = a.dev_params ? a.dev_params : &a.params;
    const ert_softmax_stats s =
        ert_softmax_stats_compute(a.logits + (size_t)r * a.classes, a.classes, p->inv_temp[a.exit_index]);
    const int leave = ert_exit_decide(p, a.exit_index, a.is_last, &s, &st);
    a.keep[r] = (uint8_t)!leave;
    if (leave) {
        const int32_t i = a.orig_index[r];
        a.pred[i] = s.top1;
        a.exit_at[i] = a.exit_index;
        a.conf[i] = s.p1;
        if (a.logits_out) { /* optional: the logits of the exit each sample left at */
            const float *z = a.logits + (size_t)r * a.classes;
            float *o = a.logits_out + (size_t)i * a.classes;
            for (int j = 0; j < a.classes; ++j) o[j] = z[j];
        }
        st.done = 1;
    }
    a.state[r] = st;
}

static ert_status launch_decide(cudaStream_t stream, const ert_decide_args &a) {
    decide_kernel<<<(unsigned)ert_ceil_div(a.rows.n, kThreads), kThreads, 0, stream>>>(a);
    return ERT_CUDA_CHECK(cudaGetLastError());
}

ert_status ert_cuda_decide(ert_backend *be, const ert_decide_args *args) {
    if (args->rows.n == 0) return ERT_OK;
    return launch_decide(be->stream, *args);
}
