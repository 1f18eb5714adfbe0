/* NVTX3 ranges for Nsight Systems (and for the injection test that checks them on the
 * CPU). One domain "exitrt"; every fixed message is a registered string; categories
 * batch, stage, exit, compact, transfer and sweep, each with its colour; the int64
 * payload is the number of active rows. A sweep point's range carries its own text
 * (policy and data, an ASCII message). Without the NVTX headers at build time these are
 * no-ops. */
#ifndef ERT_RUNTIME_NVTX_H
#define ERT_RUNTIME_NVTX_H

#include <stdint.h>

typedef enum ert_nvtx_range {
    ERT_NVTX_BATCH = 0, /* "batch"           category batch    */
    ERT_NVTX_STAGE,     /* "stage K"         category stage    */
    ERT_NVTX_HEAD,      /* "exit head K"     category exit     */
    ERT_NVTX_DECIDE,    /* "decide K"        category exit     */
    ERT_NVTX_COMPACT,   /* "compact K"       category compact  */
    ERT_NVTX_SYNC,      /* "host sync K"     category compact  */
    ERT_NVTX_UPLOAD,    /* "upload"          category transfer */
    ERT_NVTX_DOWNLOAD,  /* "download"        category transfer */
    ERT_NVTX_GRAPH,     /* "graph launch"    category stage: graph mode's whole forward */
    ERT_NVTX_POINT,     /* "sweep point"     category sweep: one batch of a measured operating point */
    ERT_NVTX_RANGE_COUNT
} ert_nvtx_range;

/* Opens a range; `index` is the stage or exit number (ignored for batch and transfers),
 * `rows` the active row count carried as the payload. Ranges nest; pop closes the last. */
void ert_nvtx_push(ert_nvtx_range range, int index, int64_t rows);
void ert_nvtx_pop(void);
/* Opens a range whose message is `text` (copied by the tool when it records it); NULL:
 * the range's own name. */
void ert_nvtx_push_text(ert_nvtx_range range, const char *text, int64_t rows);

#endif
