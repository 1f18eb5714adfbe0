#define ERT_ERROR_IMPL /* the definitions below, not the analyzer-only macros */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define ERT_ERROR_LEN 1024

static _Thread_local char last_error[ERT_ERROR_LEN];

const char *ert_status_to_string(ert_status status) {
    switch (status) {
    case ERT_OK: return "ok";
    case ERT_ERR_INVALID_ARGUMENT: return "invalid argument";
    case ERT_ERR_IO: return "i/o error";
    case ERT_ERR_FORMAT: return "malformed file";
    case ERT_ERR_SHAPE: return "shape mismatch";
    case ERT_ERR_DTYPE: return "unsupported dtype";
    case ERT_ERR_OUT_OF_MEMORY: return "out of memory";
    case ERT_ERR_UNSUPPORTED: return "unsupported";
    case ERT_ERR_BACKEND: return "backend error";
    case ERT_ERR_NUMERIC: return "non-finite value";
    }
    return "unknown status";
}

const char *ert_last_error(void) { return last_error; }

void ert_error_clear(void) { last_error[0] = '\0'; }

ert_status ert_error(ert_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return status;
}

ert_status ert_error_context(ert_status status, const char *fmt, ...) {
    char prefix[ERT_ERROR_LEN], old[ERT_ERROR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, last_error, sizeof old);
    size_t np = strlen(prefix), no = strlen(old);
    if (np > ERT_ERROR_LEN - 1) np = ERT_ERROR_LEN - 1;
    if (no > ERT_ERROR_LEN - 1 - np) no = ERT_ERROR_LEN - 1 - np;
    memcpy(last_error, prefix, np);
    memcpy(last_error + np, old, no);
    last_error[np + no] = '\0';
    return status;
}
