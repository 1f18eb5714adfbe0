/* exitrt load generator: open- and closed-loop arrivals, dynamic batching, early answers,
 * SLO peak search and an adaptive operating point. Included by exitrt/exitrt.h. */
#ifndef EXITRT_LOADTEST_H
#define EXITRT_LOADTEST_H

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif
#endif
