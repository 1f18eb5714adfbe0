/* exitrt evaluation suite: accuracy-latency sweeps, Pareto frontiers, latency budgets,
 * per-exit threshold search and distribution shift. Included by exitrt/exitrt.h. */
#ifndef EXITRT_EVALUATE_H
#define EXITRT_EVALUATE_H

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif
#endif
