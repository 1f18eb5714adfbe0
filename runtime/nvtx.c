/* NVTX3 ranges (see nvtx.h). NVTX3 is header-only: the first NVTX call loads the tool
 * named by NVTX_INJECTION64_PATH (Nsight Systems, or the test's recorder); with no tool
 * every NVTX call is a null function-pointer check. Built without the headers
 * (ERT_WITH_NVTX undefined) both functions are empty. */
#include "nvtx.h"

#if defined(ERT_WITH_NVTX) && ERT_WITH_NVTX

#include <pthread.h>
#include <stdio.h>

#include <nvtx3/nvToolsExt.h>

#include "exitrt/exitrt.h"

enum {
    CAT_BATCH = 1,
    CAT_STAGE = 2,
    CAT_EXIT = 3,
    CAT_COMPACT = 4,
    CAT_TRANSFER = 5,
    CAT_SWEEP = 6,
};

typedef struct range_info {
    uint32_t category;
    int indexed;       /* 1: one registered string per stage or exit */
    const char *text;  /* the name, or its prefix before " K" */
} range_info;

static const range_info ranges[ERT_NVTX_RANGE_COUNT] = {
    [ERT_NVTX_BATCH] = {CAT_BATCH, 0, "batch"},
    [ERT_NVTX_STAGE] = {CAT_STAGE, 1, "stage"},
    [ERT_NVTX_HEAD] = {CAT_EXIT, 1, "exit head"},
    [ERT_NVTX_DECIDE] = {CAT_EXIT, 1, "decide"},
    [ERT_NVTX_COMPACT] = {CAT_COMPACT, 1, "compact"},
    [ERT_NVTX_SYNC] = {CAT_COMPACT, 1, "host sync"},
    [ERT_NVTX_UPLOAD] = {CAT_TRANSFER, 0, "upload"},
    [ERT_NVTX_DOWNLOAD] = {CAT_TRANSFER, 0, "download"},
    [ERT_NVTX_GRAPH] = {CAT_STAGE, 0, "graph launch"},
    [ERT_NVTX_POINT] = {CAT_SWEEP, 0, "sweep point"},
};

/* Index by category; opaque ARGB. */
static const char *const category_names[] = {NULL, "batch", "stage", "exit", "compact", "transfer", "sweep"};
static const uint32_t category_colors[] = {0,           0xFF4C72B0u, 0xFF55A868u, 0xFFDD8452u,
                                           0xFFC44E52u, 0xFF8172B3u, 0xFF937860u};

static pthread_once_t once = PTHREAD_ONCE_INIT;
static nvtxDomainHandle_t domain;
static nvtxStringHandle_t plain_names[ERT_NVTX_RANGE_COUNT];          /* the ranges with one name */
static nvtxStringHandle_t stage_names[ERT_MAX_STAGES];
static nvtxStringHandle_t exit_names[ERT_NVTX_RANGE_COUNT][ERT_MAX_EXITS]; /* head, decide, compact, sync */

static void init(void) {
    domain = nvtxDomainCreateA("exitrt");
    for (uint32_t c = CAT_BATCH; c <= CAT_SWEEP; ++c) nvtxDomainNameCategoryA(domain, c, category_names[c]);
    char text[64];
    for (int r = 0; r < ERT_NVTX_RANGE_COUNT; ++r) {
        if (!ranges[r].indexed) {
            plain_names[r] = nvtxDomainRegisterStringA(domain, ranges[r].text);
        } else if (r == ERT_NVTX_STAGE) {
            for (int k = 0; k < ERT_MAX_STAGES; ++k) {
                snprintf(text, sizeof text, "%s %d", ranges[r].text, k);
                stage_names[k] = nvtxDomainRegisterStringA(domain, text);
            }
        } else {
            for (int k = 0; k < ERT_MAX_EXITS; ++k) {
                snprintf(text, sizeof text, "%s %d", ranges[r].text, k);
                exit_names[r][k] = nvtxDomainRegisterStringA(domain, text);
            }
        }
    }
}

/* The attributes every range shares: its category, that category's colour, the rows. */
static nvtxEventAttributes_t attributes(const range_info *ri, int64_t rows) {
    nvtxEventAttributes_t a = {0};
    a.version = NVTX_VERSION;
    a.size = NVTX_EVENT_ATTRIB_STRUCT_SIZE;
    a.category = ri->category;
    a.colorType = NVTX_COLOR_ARGB;
    a.color = category_colors[ri->category];
    a.payloadType = NVTX_PAYLOAD_TYPE_INT64;
    a.payload.llValue = rows;
    return a;
}

void ert_nvtx_push(ert_nvtx_range range, int index, int64_t rows) {
    if ((int)range < 0 || range >= ERT_NVTX_RANGE_COUNT) return;
    pthread_once(&once, init);
    const range_info *ri = &ranges[range];
    nvtxEventAttributes_t a = attributes(ri, rows);
    const int limit = range == ERT_NVTX_STAGE ? ERT_MAX_STAGES : ERT_MAX_EXITS;
    if (!ri->indexed) {
        a.messageType = NVTX_MESSAGE_TYPE_REGISTERED;
        a.message.registered = plain_names[range];
    } else if (index >= 0 && index < limit) {
        a.messageType = NVTX_MESSAGE_TYPE_REGISTERED;
        a.message.registered = range == ERT_NVTX_STAGE ? stage_names[index] : exit_names[range][index];
    } else {
        /* Cannot happen with a loaded model (the loader enforces the limits); keep the
         * range, unnumbered, so pushes and pops still pair. */
        a.messageType = NVTX_MESSAGE_TYPE_ASCII;
        a.message.ascii = ri->text;
    }
    nvtxDomainRangePushEx(domain, &a);
}

void ert_nvtx_push_text(ert_nvtx_range range, const char *text, int64_t rows) {
    if ((int)range < 0 || range >= ERT_NVTX_RANGE_COUNT) return;
    if (!text) {
        ert_nvtx_push(range, 0, rows);
        return;
    }
    pthread_once(&once, init);
    nvtxEventAttributes_t a = attributes(&ranges[range], rows);
    a.messageType = NVTX_MESSAGE_TYPE_ASCII;
    a.message.ascii = text;
    nvtxDomainRangePushEx(domain, &a);
}

void ert_nvtx_pop(void) {
    pthread_once(&once, init); /* normally done by the push it closes */
    nvtxDomainRangePop(domain);
}

#else /* no NVTX headers at build time */

void ert_nvtx_push(ert_nvtx_range range, int index, int64_t rows) {
    (void)range;
    (void)index;
    (void)rows;
}

void ert_nvtx_push_text(ert_nvtx_range range, const char *text, int64_t rows) {
    (void)range;
    (void)text;
    (void)rows;
}

void ert_nvtx_pop(void) {}

#endif
