#include <string.h>

#include "cpu.h"

/* Survivors (keep[r] = 1) move to dense rows in their order: activations, original
 * indices and policy state; their number goes to *count. */
void ert_cpu_compact(const ert_compact_args *a) {
    const int rows = ert_cpu_rows(a->rows);
    const size_t row_bytes = (size_t)a->width * sizeof(float);
    int32_t n = 0;
    for (int r = 0; r < rows; ++r) {
        if (!a->keep[r]) continue;
        memcpy((char *)a->y + (size_t)n * row_bytes, (const char *)a->x + (size_t)r * row_bytes, row_bytes);
        a->idx_out[n] = a->idx_in[r];
        a->state_out[n] = a->state_in[r];
        ++n;
    }
    *a->count = n;
}
