#include <string.h>

#include "cpu.h"

static void move_row(const ert_compact_args *a, size_t row_bytes, int from, int to) {
    memcpy((char *)a->y + (size_t)to * row_bytes, (const char *)a->x + (size_t)from * row_bytes, row_bytes);
    a->idx_out[to] = a->idx_in[from];
    a->state_out[to] = a->state_in[from];
}

/* gather (outputs apart from inputs) or fill (in place): backend.h has the contract. */
void ert_cpu_compact(const ert_compact_args *a) {
    const int rows = ert_cpu_rows(a->rows);
    const size_t row_bytes = (size_t)a->width * sizeof(float);
    int32_t n = 0;
    if (ert_compact_kind(a) == ERT_COMPACT_GATHER) {
        for (int r = 0; r < rows; ++r)
            if (a->keep[r]) move_row(a, row_bytes, r, n++);
        *a->count = n;
        return;
    }
    for (int r = 0; r < rows; ++r) n += a->keep[r] ? 1 : 0;
    /* The holes below n and the kept rows at or past n are equally many: pair them in order. */
    int hole = 0;
    for (int r = n; r < rows; ++r) {
        if (!a->keep[r]) continue;
        while (a->keep[hole]) ++hole;
        move_row(a, row_bytes, r, hole++);
    }
    *a->count = n;
}
