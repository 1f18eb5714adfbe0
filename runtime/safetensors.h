/* A reader for the safetensors format: a little-endian u64 header length N, N bytes of
 * JSON header {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}},
 * then the raw data. Offsets are relative to the end of the header. Every offset, length
 * and shape is validated when the file is opened. */
#ifndef ERT_SAFETENSORS_H
#define ERT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "exitrt/exitrt.h"

#define ERT_ST_MAX_DIMS 8

typedef enum ert_st_dtype { ERT_ST_F32 = 0, ERT_ST_F16, ERT_ST_BF16 } ert_st_dtype;

typedef struct ert_st_tensor {
    char *name;
    ert_st_dtype dtype;
    int ndim;
    int64_t shape[ERT_ST_MAX_DIMS];
    int64_t numel;
    size_t begin, end; /* byte range within the data section */
    int used;          /* set by the model loader: the config names this tensor */
} ert_st_tensor;

typedef struct ert_safetensors {
    char *path;
    const uint8_t *file; /* the whole file, mapped read-only (NULL if under 8 bytes) */
    size_t file_size;
    size_t data_start;
    int count;
    ert_st_tensor *tensors;
} ert_safetensors;

ert_status ert_st_open(const char *path, ert_safetensors **out);
void ert_st_close(ert_safetensors *st);
ert_st_tensor *ert_st_find(ert_safetensors *st, const char *name);
/* Converts the tensor to f32 into out[numel]. */
void ert_st_read_f32(const ert_safetensors *st, const ert_st_tensor *t, float *out);
const char *ert_st_dtype_name(ert_st_dtype dtype);

#endif
