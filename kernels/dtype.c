#include <string.h>

#include "dtype.h"
#include "error.h"

static const char *const dtype_names[] = {"f32", "tf32", "bf16", "f16"};

const char *ert_dtype_name(ert_dtype dtype) {
    return (unsigned)dtype < sizeof dtype_names / sizeof *dtype_names ? dtype_names[dtype] : "?";
}

ert_status ert_dtype_parse(const char *text, ert_dtype *out) {
    for (unsigned i = 0; i < sizeof dtype_names / sizeof *dtype_names; ++i)
        if (text && strcmp(text, dtype_names[i]) == 0) {
            *out = (ert_dtype)i;
            return ERT_OK;
        }
    return ert_error(ERT_ERR_INVALID_ARGUMENT, "dtype '%s': expected f32, tf32, bf16 or f16", text ? text : "(null)");
}
