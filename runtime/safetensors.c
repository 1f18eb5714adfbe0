#include "safetensors.h"

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dtype.h"
#include "error.h"
#include "internal.h"
#include "sanitizer.h"

/* A header larger than this is refused before it is read (the format's own readers use
 * 100 MB). */
#define ERT_ST_MAX_HEADER (100u << 20)

static const char *const st_dtype_names[] = {"F32", "F16", "BF16"};
static const size_t st_dtype_size[] = {4, 2, 2};

const char *ert_st_dtype_name(ert_st_dtype dtype) { return st_dtype_names[dtype]; }

ert_status ert_file_read(const char *path, char **data, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return ert_error(ERT_ERR_IO, "'%s': cannot open", path);
    ert_status st = ERT_OK;
    char *buf = NULL;
    if (fseek(f, 0, SEEK_END) != 0) goto io;
    long len = ftell(f);
    if (len < 0 || fseek(f, 0, SEEK_SET) != 0) goto io;
    if (!(buf = malloc((size_t)len + 1))) {
        st = ert_error(ERT_ERR_OUT_OF_MEMORY, "'%s': cannot allocate %ld bytes", path, len);
        goto done;
    }
    if (fread(buf, 1, (size_t)len, f) != (size_t)len) goto io;
    buf[len] = '\0';
    *data = buf;
    *size = (size_t)len;
    buf = NULL;
    goto done;
io:
    st = ert_error(ERT_ERR_IO, "'%s': read error", path);
done:
    free(buf);
    fclose(f);
    return st;
}

static int cmp_begin(const void *a, const void *b) {
    const ert_st_tensor *x = a, *y = b;
    return (x->begin > y->begin) - (x->begin < y->begin);
}

/* Parses one header entry into t; the message names the tensor and the file. */
static ert_status parse_entry(const ert_safetensors *st, const cJSON *e, ert_st_tensor *t, size_t data_size) {
    const char *path = st->path, *name = e->string;
    if (!cJSON_IsObject(e)) return ert_error(ERT_ERR_FORMAT, "'%s': tensor '%s': entry is not an object", path, name);
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dtype) || !cJSON_IsArray(shape) || !cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2)
        return ert_error(ERT_ERR_FORMAT, "'%s': tensor '%s': needs dtype, shape and data_offsets [begin, end]",
                         path, name);
    int found = 0;
    for (int d = 0; d < 3; ++d)
        if (strcmp(dtype->valuestring, st_dtype_names[d]) == 0) {
            t->dtype = (ert_st_dtype)d;
            found = 1;
        }
    if (!found)
        return ert_error(ERT_ERR_DTYPE, "'%s': tensor '%s': dtype '%s' is not supported (F32, F16, BF16)", path,
                         name, dtype->valuestring);
    t->ndim = cJSON_GetArraySize(shape);
    if (t->ndim > ERT_ST_MAX_DIMS)
        return ert_error(ERT_ERR_FORMAT, "'%s': tensor '%s': %d dimensions (at most %d)", path, name, t->ndim,
                         ERT_ST_MAX_DIMS);
    t->numel = 1;
    int i = 0;
    const cJSON *dim;
    cJSON_ArrayForEach(dim, shape) {
        double v = dim->valuedouble;
        if (!cJSON_IsNumber(dim) || !(v >= 0 && v <= 4e12) || v != floor(v)) /* no cast of an out-of-range double */
            return ert_error(ERT_ERR_FORMAT, "'%s': tensor '%s': bad dimension %d in shape", path, name, i);
        t->shape[i++] = (int64_t)v;
        if (v > 0 && t->numel > ((int64_t)1 << 40) / (int64_t)v) /* checked before the product can overflow */
            return ert_error(ERT_ERR_FORMAT, "'%s': tensor '%s': shape too large", path, name);
        t->numel *= (int64_t)v;
    }
    double b = cJSON_GetArrayItem(offs, 0)->valuedouble, en = cJSON_GetArrayItem(offs, 1)->valuedouble;
    if (!cJSON_IsNumber(cJSON_GetArrayItem(offs, 0)) || !cJSON_IsNumber(cJSON_GetArrayItem(offs, 1)) || !(b >= 0) ||
        !(en >= b) || b != floor(b) || en != floor(en))
        return ert_error(ERT_ERR_FORMAT, "'%s': tensor '%s': bad data_offsets", path, name);
    if (en > (double)data_size)
        return ert_error(ERT_ERR_FORMAT,
                         "'%s': tensor '%s': data_offsets [%.0f, %.0f] run past the end of the data (%zu bytes): "
                         "file truncated or offsets wrong",
                         path, name, b, en, data_size);
    t->begin = (size_t)b;
    t->end = (size_t)en;
    if ((int64_t)(t->end - t->begin) != t->numel * (int64_t)st_dtype_size[t->dtype])
        return ert_error(ERT_ERR_FORMAT, "'%s': tensor '%s': %zu bytes for %lld %s elements", path, name,
                         t->end - t->begin, (long long)t->numel, st_dtype_names[t->dtype]);
    if (!(t->name = strdup(name))) return ert_error(ERT_ERR_OUT_OF_MEMORY, "'%s': out of memory", path);
    return ERT_OK;
}

/* Maps the whole file read-only (a file shorter than a header is only measured): its
 * pages are the page cache's (clean, dropped under memory pressure) and nothing is
 * copied, so loading a model allocates only its f32 weights, not a private copy of the
 * file besides. (A file truncated by someone else while it is mapped would fault.) */
static ert_status map_file(const char *path, ert_safetensors *st) {
    const int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO must not block the loader */
    if (fd < 0) return ert_error(ERT_ERR_IO, "'%s': cannot open", path);
    struct stat sb;
    ert_status status = ERT_OK;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        status = ert_error(ERT_ERR_IO, "'%s': not a regular file", path);
    } else if ((uint64_t)sb.st_size > SIZE_MAX / 2) {
        status = ert_error(ERT_ERR_IO, "'%s': %lld bytes: too large to map", path, (long long)sb.st_size);
    } else {
        st->file_size = (size_t)sb.st_size;
        if (st->file_size >= 8) {
#ifdef ERT_ASAN /* a heap copy of exactly the file instead (sanitizer.h): an overread by one byte shows */
            uint8_t *copy = malloc(st->file_size);
            size_t got = 0;
            while (copy && got < st->file_size) {
                const ssize_t k = read(fd, copy + got, st->file_size - got);
                if (k <= 0) break;
                got += (size_t)k;
            }
            if (!copy) status = ert_error(ERT_ERR_OUT_OF_MEMORY, "'%s': cannot allocate %zu bytes", path, st->file_size);
            else if (got < st->file_size) status = ert_error(ERT_ERR_IO, "'%s': read error", path);
            if (status) free(copy);
            else st->file = copy;
#else
            void *p = mmap(NULL, st->file_size, PROT_READ, MAP_PRIVATE, fd, 0);
            if (p == MAP_FAILED) status = ert_error(ERT_ERR_IO, "'%s': cannot map its %zu bytes", path, st->file_size);
            else st->file = p;
#endif
        }
    }
    close(fd);
    return status;
}

ert_status ert_st_open(const char *path, ert_safetensors **out) {
    ert_status status;
    cJSON *header = NULL;
    ert_safetensors *st = calloc(1, sizeof *st);
    if (!st || !(st->path = strdup(path))) {
        status = ert_error(ERT_ERR_OUT_OF_MEMORY, "'%s': out of memory", path);
        goto fail;
    }
    if ((status = map_file(path, st)) != ERT_OK) goto fail;
    if (st->file_size < 8) {
        status = ert_error(ERT_ERR_FORMAT, "'%s': %zu bytes: too short for a safetensors header", path,
                           st->file_size);
        goto fail;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | st->file[i];
    if (hlen > ERT_ST_MAX_HEADER || hlen > st->file_size - 8) {
        status = ert_error(ERT_ERR_FORMAT, "'%s': header length %llu exceeds the file (%zu bytes): truncated", path,
                           (unsigned long long)hlen, st->file_size);
        goto fail;
    }
    st->data_start = 8 + (size_t)hlen;
    header = cJSON_ParseWithLength((const char *)st->file + 8, (size_t)hlen);
    if (!cJSON_IsObject(header)) {
        status = ert_error(ERT_ERR_FORMAT, "'%s': header is not a JSON object", path);
        goto fail;
    }
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, header) n += strcmp(e->string, "__metadata__") != 0;
    st->tensors = calloc((size_t)(n ? n : 1), sizeof *st->tensors);
    if (!st->tensors) {
        status = ert_error(ERT_ERR_OUT_OF_MEMORY, "'%s': out of memory", path);
        goto fail;
    }
    const size_t data_size = st->file_size - st->data_start;
    cJSON_ArrayForEach(e, header) {
        if (strcmp(e->string, "__metadata__") == 0) continue;
        if ((status = parse_entry(st, e, &st->tensors[st->count], data_size)) != ERT_OK) goto fail;
        st->count++;
    }
    /* Tensors must not overlap (the format also wants them contiguous; we only need
     * every byte range to be its own). */
    ert_st_tensor *sorted = malloc(sizeof *sorted * (size_t)(n ? n : 1));
    if (!sorted) {
        status = ert_error(ERT_ERR_OUT_OF_MEMORY, "'%s': out of memory", path);
        goto fail;
    }
    memcpy(sorted, st->tensors, sizeof *sorted * (size_t)n);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_begin);
    for (int i = 1; i < n; ++i)
        if (sorted[i].begin < sorted[i - 1].end) {
            status = ert_error(ERT_ERR_FORMAT, "'%s': tensors '%s' and '%s' overlap", path, sorted[i - 1].name,
                               sorted[i].name);
            free(sorted);
            goto fail;
        }
    free(sorted);
    cJSON_Delete(header);
    *out = st;
    return ERT_OK;
fail:
    cJSON_Delete(header);
    ert_st_close(st);
    return status;
}

void ert_st_close(ert_safetensors *st) {
    if (!st) return;
    for (int i = 0; i < st->count; ++i) free(st->tensors[i].name);
    free(st->tensors);
#ifdef ERT_ASAN
    free((void *)st->file);
#else
    if (st->file) munmap((void *)st->file, st->file_size);
#endif
    free(st->path);
    free(st);
}

ert_st_tensor *ert_st_find(ert_safetensors *st, const char *name) {
    for (int i = 0; i < st->count; ++i)
        if (strcmp(st->tensors[i].name, name) == 0) return &st->tensors[i];
    return NULL;
}

void ert_st_read_f32(const ert_safetensors *st, const ert_st_tensor *t, float *out) {
    const uint8_t *p = st->file + st->data_start + t->begin;
    for (int64_t i = 0; i < t->numel; ++i) {
        uint16_t h;
        switch (t->dtype) {
        case ERT_ST_F32: memcpy(&out[i], p + 4 * i, 4); break;
        case ERT_ST_F16: memcpy(&h, p + 2 * i, 2); out[i] = ert_f16_to_f32(h); break;
        case ERT_ST_BF16: memcpy(&h, p + 2 * i, 2); out[i] = ert_bf16_to_f32(h); break;
        }
    }
}
