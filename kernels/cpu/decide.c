#include <string.h>

#include "cpu.h"
#include "exit_math.h"

/* logits (rows, classes) -> per row: exit flag, and for leaving rows the prediction,
 * exit number and confidence written at the sample's original index. */
void ert_cpu_decide(const ert_decide_args *a) {
    const int rows = ert_cpu_rows(a->rows);
    const ert_exit_params *params = a->dev_params ? a->dev_params : &a->params; /* host memory here */
    const float inv_temp = params->inv_temp[a->exit_index];
    for (int r = 0; r < rows; ++r) {
        ert_sample_state *st = &a->state[r];
        if (st->done) {
            a->keep[r] = 0;
            continue;
        }
        const ert_softmax_stats s =
            ert_softmax_stats_compute(a->logits + (size_t)r * a->classes, a->classes, inv_temp);
        const int leave = ert_exit_decide(params, a->exit_index, a->is_last, &s, st);
        a->keep[r] = (uint8_t)!leave;
        if (leave) {
            const int32_t i = a->orig_index[r];
            a->pred[i] = s.top1;
            a->exit_at[i] = a->exit_index;
            a->conf[i] = s.p1;
            if (a->logits_out)
                memcpy(a->logits_out + (size_t)i * a->classes, a->logits + (size_t)r * a->classes,
                       sizeof(float) * (size_t)a->classes);
            st->done = 1;
        }
    }
}
