/* The one error mechanism of exitrt: a status code plus a per-thread message. Every layer
 * (kernels, runtime) reports through it; the public ert_last_error() reads it. */
#ifndef ERT_KERNELS_ERROR_H
#define ERT_KERNELS_ERROR_H

#include "exitrt/exitrt.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Records a message for `status` and returns `status`, so that a failing path reads
 * `return ert_error(ERT_ERR_IO, "%s: cannot open", path);`. */
ert_status ert_error(ert_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Prefixes the current message with a context ("model 'x': "), keeps `status`. */
ert_status ert_error_context(ert_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

void ert_error_clear(void);

#if defined(__clang_analyzer__) && !defined(ERT_ERROR_IMPL)
/* The static analyzer sees one translation unit at a time and cannot tell that both
 * functions return `status` unchanged; it then follows `return ert_error(ERT_ERR_..., ...)`
 * as if it returned ERT_OK. Under the analyzer only, make the returned value visible. */
#define ert_error(status, ...) ((void)ert_error((status), __VA_ARGS__), (status))
#define ert_error_context(status, ...) ((void)ert_error_context((status), __VA_ARGS__), (status))
#endif

#ifdef __cplusplus
}
#endif
#endif
