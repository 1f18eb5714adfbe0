/* Private to the evaluation suite (sweep.c, thresholds.c): the exit table's layout and
 * the grid placement the sweep borrows from the threshold search. */
#ifndef ERT_RUNTIME_SWEEP_INTERNAL_H
#define ERT_RUNTIME_SWEEP_INTERNAL_H

#include "internal.h"

struct ert_exit_table {
    const ert_model *model;
    int64_t n;
    int num_exits, classes;
    float *logits;   /* n x num_exits x classes */
    int32_t *labels; /* n, or NULL */
    char name[256];
};

/* ert_exit_table_build with a callback before each exit's pass (exit number). */
ert_status ert_exit_table_build_progress(ert_session *session, const ert_dataset *data, int batch,
                                         void (*progress)(void *user, int exit), void *user, ert_exit_table **out);

/* Thresholds for one family (CONFIDENCE, ENTROPY, MARGIN) shared by every exit, chosen so
 * that their simulated FLOPs fractions spread evenly over the range the family reaches:
 * up to `grid` distinct operating points, written to out (ascending FLOPs); *count gets
 * how many. Each value survives the round trip through a 6-digit spec exactly. */
ert_status ert_thresholds_grid(const ert_exit_table *table, ert_policy_kind kind, int uncalibrated, int grid,
                               float *out, int *count);

/* The float a threshold becomes when written with %.6g and parsed back by the policy
 * parser ((float)strtod). */
float ert_threshold_round(double value);

#endif
