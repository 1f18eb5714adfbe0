/* Datasets: IDX files (gzip or plain, through zlib), float32 .npy files, and the named
 * Fashion-MNIST splits built from them.
 *
 * Every reader validates its header before it trusts a size, and reads the payload into
 * a buffer that grows as the data arrives, so a header that promises more data than the
 * file holds costs a "truncated" error, not a giant allocation. */
#define _POSIX_C_SOURCE 200809L

#include "exitrt/exitrt.h"
#include "error.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#define DATA_PATH_MAX 4096
#define FMNIST_DEFAULT_DIR "/usr/share/datasets/fashion-mnist"
#define FMNIST_SPLITS "fashion-mnist:train, fashion-mnist:val, fashion-mnist:test, fashion-mnist:train-all"
#define FMNIST_HINT "apt-get install dataset-fashion-mnist"
#define NPY_HEADER_MAX (1u << 20)
#define NPY_MAX_PARSED_DIMS 64
#define PAYLOAD_FIRST_CHUNK ((size_t)1 << 20)

/* ---------------------------------------------------------------- reading through zlib */

typedef struct reader {
    gzFile f;
    const char *path;
} reader;

static ert_status rd_open(reader *r, const char *path) {
    r->path = path;
    errno = 0;
    r->f = gzopen(path, "rb");
    if (!r->f) {
        if (errno != 0)
            return ert_error(ERT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        return ert_error(ERT_ERR_OUT_OF_MEMORY, "%s: cannot open: out of memory", path);
    }
    gzbuffer(r->f, 1u << 17);
    return ERT_OK;
}

static void rd_close(reader *r) {
    if (r->f) gzclose(r->f);
    r->f = NULL;
}

/* The status for a failed gzread, or for an early end (Z_OK or Z_BUF_ERROR: the data
 * stops before the header said it would). */
static ert_status rd_failure(reader *r, const char *what, uint64_t want, uint64_t got) {
    int saved_errno = errno;
    int errnum = Z_OK;
    const char *msg = gzerror(r->f, &errnum);
    switch (errnum) {
    case Z_OK:
    case Z_BUF_ERROR:
        return ert_error(ERT_ERR_FORMAT, "%s: truncated %s: expected %llu bytes, got %llu",
                         r->path, what, (unsigned long long)want, (unsigned long long)got);
    case Z_ERRNO:
        return ert_error(ERT_ERR_IO, "%s: read error in %s: %s", r->path, what,
                         strerror(saved_errno));
    case Z_MEM_ERROR:
        return ert_error(ERT_ERR_OUT_OF_MEMORY, "%s: out of memory while decompressing",
                         r->path);
    default:
        return ert_error(ERT_ERR_FORMAT, "%s: corrupt gzip data in %s: %s", r->path, what,
                         msg ? msg : "unknown zlib error");
    }
}

/* Reads up to `len` bytes; *got gets the count. Returns 0, or -1 on a zlib error. */
static int rd_some(reader *r, unsigned char *buf, size_t len, size_t *got) {
    *got = 0;
    while (*got < len) {
        size_t want = len - *got;
        if (want > ((size_t)1 << 30)) want = (size_t)1 << 30;
        int n = gzread(r->f, buf + *got, (unsigned)want);
        if (n < 0) return -1;
        if (n == 0) break;
        *got += (size_t)n;
    }
    return 0;
}

/* Reads exactly `len` bytes (a header). */
static ert_status rd_exact(reader *r, void *buf, size_t len, const char *what) {
    size_t got = 0;
    if (rd_some(r, buf, len, &got) != 0 || got != len) return rd_failure(r, what, len, got);
    return ERT_OK;
}

/* Reads exactly `bytes` bytes of payload into a malloc'd buffer (at least one byte is
 * allocated), growing the buffer as data arrives. */
static ert_status rd_payload(reader *r, uint64_t bytes, const char *what, unsigned char **out) {
    unsigned char *buf = NULL;
    size_t have = 0;
    size_t cap;
    ert_status st = ERT_OK;

    *out = NULL;
    if (bytes > (uint64_t)SIZE_MAX) {
        st = ert_error(ERT_ERR_FORMAT, "%s: %s of %llu bytes is too large", r->path, what,
                       (unsigned long long)bytes);
        goto fail;
    }
    cap = bytes < PAYLOAD_FIRST_CHUNK ? (size_t)bytes : PAYLOAD_FIRST_CHUNK;
    for (;;) {
        unsigned char *grown = realloc(buf, cap > 0 ? cap : 1);
        size_t got = 0;
        if (!grown) {
            st = ert_error(ERT_ERR_OUT_OF_MEMORY, "%s: cannot allocate %zu bytes for %s",
                           r->path, cap, what);
            goto fail;
        }
        buf = grown;
        if (rd_some(r, buf + have, cap - have, &got) != 0 || got != cap - have) {
            st = rd_failure(r, what, bytes, (uint64_t)(have + got));
            goto fail;
        }
        have = cap;
        if ((uint64_t)have == bytes) break;
        cap = (uint64_t)cap * 2 < bytes ? cap * 2 : (size_t)bytes;
    }
    *out = buf;
    return ERT_OK;

fail:
    free(buf);
    return st;
}

static uint32_t be_u32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static uint64_t le_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}

static uint32_t le_u32(const unsigned char *p) {
    return ((uint32_t)p[3] << 24) | ((uint32_t)p[2] << 16) | ((uint32_t)p[1] << 8) | p[0];
}

static int host_is_little_endian(void) {
    const uint16_t one = 1;
    unsigned char first;
    memcpy(&first, &one, 1);
    return first == 1;
}

static ert_dataset *dataset_new(const char *name) {
    ert_dataset *d = calloc(1, sizeof *d);
    if (d) snprintf(d->name, sizeof d->name, "%s", name);
    return d;
}

void ert_dataset_free(ert_dataset *data) {
    if (!data) return;
    free(data->x);
    free(data->labels);
    free(data);
}

/* ---------------------------------------------------------------- IDX */

static const char *idx_type_name(unsigned type) {
    switch (type) {
    case 0x08: return "u8";
    case 0x09: return "i8";
    case 0x0B: return "i16";
    case 0x0C: return "i32";
    case 0x0D: return "f32";
    case 0x0E: return "f64";
    default: return "unknown";
    }
}

ert_status ert_idx_read(const char *path, ert_dataset **out) {
    reader r = {0};
    ert_dataset *d = NULL;
    unsigned char *raw = NULL;
    unsigned char magic[4], dimbuf[16];
    uint32_t dims[4];
    uint64_t sample = 1, total;
    unsigned ndim, type;
    ert_status st;

    if (out) *out = NULL;
    if (!path || !out)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_idx_read: %s is NULL",
                         !path ? "path" : "out");

    if ((st = rd_open(&r, path)) != ERT_OK) goto fail;
    if ((st = rd_exact(&r, magic, 4, "IDX header")) != ERT_OK) goto fail;
    if (magic[0] != 0 || magic[1] != 0) {
        st = ert_error(ERT_ERR_FORMAT,
                       "%s: bad IDX magic %02x %02x %02x %02x (expected 00 00 TYPE NDIM)",
                       path, magic[0], magic[1], magic[2], magic[3]);
        goto fail;
    }
    type = magic[2];
    ndim = magic[3];
    if (type != 0x08) {
        st = ert_error(ERT_ERR_DTYPE,
                       "%s: IDX data type 0x%02x (%s) is not supported (only 0x08, u8)", path,
                       type, idx_type_name(type));
        goto fail;
    }
    if (ndim < 1 || ndim > 4) {
        st = ert_error(ERT_ERR_FORMAT, "%s: IDX file has %u dimensions (1 to 4 supported)",
                       path, ndim);
        goto fail;
    }
    if ((st = rd_exact(&r, dimbuf, 4 * (size_t)ndim, "IDX dimensions")) != ERT_OK) goto fail;
    for (unsigned i = 0; i < ndim; ++i) dims[i] = be_u32(dimbuf + 4 * i);
    for (unsigned i = 1; i < ndim; ++i) {
        if (dims[i] == 0) {
            st = ert_error(ERT_ERR_FORMAT, "%s: IDX dimension %u is 0", path, i);
            goto fail;
        }
        sample *= dims[i];
        if (sample > (uint64_t)INT_MAX) {
            st = ert_error(ERT_ERR_FORMAT, "%s: IDX sample dimensions overflow (%llu+ values)",
                           path, (unsigned long long)sample);
            goto fail;
        }
    }
    /* dims[0] < 2^32 and sample <= INT_MAX, so the product fits in 63 bits. */
    total = (uint64_t)dims[0] * sample;
    if (total > (uint64_t)(SIZE_MAX / sizeof(float))) {
        st = ert_error(ERT_ERR_FORMAT, "%s: IDX dimensions overflow (%llu values)", path,
                       (unsigned long long)total);
        goto fail;
    }

    d = dataset_new(path);
    if (!d) {
        st = ert_error(ERT_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
        goto fail;
    }
    d->n = dims[0];
    if ((st = rd_payload(&r, total, "IDX data", &raw)) != ERT_OK) goto fail;

    if (ndim == 1) {
        d->labels = malloc(total > 0 ? (size_t)total * sizeof(int32_t) : 1);
        if (!d->labels) {
            st = ert_error(ERT_ERR_OUT_OF_MEMORY, "%s: cannot allocate %llu labels", path,
                           (unsigned long long)total);
            goto fail;
        }
        for (uint64_t i = 0; i < total; ++i) d->labels[i] = raw[i];
        d->ndim = 0;
        d->sample_size = 0;
    } else {
        d->x = malloc(total > 0 ? (size_t)total * sizeof(float) : 1);
        if (!d->x) {
            st = ert_error(ERT_ERR_OUT_OF_MEMORY, "%s: cannot allocate %llu floats", path,
                           (unsigned long long)total);
            goto fail;
        }
        for (uint64_t i = 0; i < total; ++i) d->x[i] = (float)raw[i] / 255.0f;
        d->ndim = (int)ndim - 1;
        for (unsigned i = 1; i < ndim; ++i) d->shape[i - 1] = (int)dims[i];
        d->sample_size = (int)sample;
    }
    free(raw);
    rd_close(&r);
    *out = d;
    return ERT_OK;

fail:
    free(raw);
    ert_dataset_free(d);
    rd_close(&r);
    return st;
}

/* ---------------------------------------------------------------- npy */

typedef struct npy_header {
    char descr[32];
    int descr_structured; /* descr was a list (a structured dtype) */
    int fortran;
    int ndim;
    int64_t shape[NPY_MAX_PARSED_DIMS];
    int has_descr, has_fortran, has_shape;
} npy_header;

typedef struct npy_parser {
    const char *s;
    size_t pos, len;
} npy_parser;

static void np_skip_ws(npy_parser *p) {
    while (p->pos < p->len &&
           (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' || p->s[p->pos] == '\n' ||
            p->s[p->pos] == '\r'))
        p->pos++;
}

static int np_peek(npy_parser *p) { return p->pos < p->len ? (unsigned char)p->s[p->pos] : -1; }

static int np_accept(npy_parser *p, char c) {
    np_skip_ws(p);
    if (np_peek(p) == c) {
        p->pos++;
        return 1;
    }
    return 0;
}

/* A quoted Python string ('...' or "...") without escapes; copies at most cap-1 chars and
 * returns 0, or -1 if it is not a string or too long. */
static int np_string(npy_parser *p, char *out, size_t cap) {
    np_skip_ws(p);
    int q = np_peek(p);
    size_t n = 0;
    if (q != '\'' && q != '"') return -1;
    p->pos++;
    while (p->pos < p->len && p->s[p->pos] != (char)q) {
        if (p->s[p->pos] == '\\' || n + 1 >= cap) return -1;
        out[n++] = p->s[p->pos++];
    }
    if (p->pos >= p->len) return -1;
    p->pos++;
    out[n] = '\0';
    return 0;
}

static int np_word(npy_parser *p, const char *word) {
    size_t n = strlen(word);
    np_skip_ws(p);
    if (p->len - p->pos >= n && memcmp(p->s + p->pos, word, n) == 0) {
        p->pos += n;
        return 1;
    }
    return 0;
}

/* A tuple of non-negative integers: (), (5,), (3, 4), (3L, 4L). */
static int np_shape(npy_parser *p, npy_header *h) {
    h->ndim = 0;
    if (!np_accept(p, '(')) return -1;
    for (;;) {
        np_skip_ws(p);
        if (np_accept(p, ')')) return 0;
        int c = np_peek(p);
        if (c < '0' || c > '9') return -1;
        int64_t v = 0;
        while ((c = np_peek(p)) >= '0' && c <= '9') {
            if (v > (INT64_MAX - (c - '0')) / 10) return -1;
            v = v * 10 + (c - '0');
            p->pos++;
        }
        if (np_peek(p) == 'L') p->pos++;
        if (h->ndim >= NPY_MAX_PARSED_DIMS) return -1;
        h->shape[h->ndim++] = v;
        if (np_accept(p, ',')) continue;
        if (np_accept(p, ')')) return 0;
        return -1;
    }
}

/* Parses the header dict {'descr': ..., 'fortran_order': ..., 'shape': (...)}. */
static ert_status npy_parse_dict(const char *path, const char *text, size_t len,
                                 npy_header *h) {
    npy_parser p = {text, 0, len};
    char key[32];

    memset(h, 0, sizeof *h);
    if (!np_accept(&p, '{')) goto bad;
    for (;;) {
        if (np_accept(&p, '}')) break;
        if (np_string(&p, key, sizeof key) != 0 || !np_accept(&p, ':')) goto bad;
        if (strcmp(key, "descr") == 0 && !h->has_descr) {
            np_skip_ws(&p);
            if (np_peek(&p) == '[') {
                h->descr_structured = 1;
                snprintf(h->descr, sizeof h->descr, "structured");
                return ERT_OK; /* refused as a dtype by the caller */
            }
            if (np_string(&p, h->descr, sizeof h->descr) != 0) goto bad;
            h->has_descr = 1;
        } else if (strcmp(key, "fortran_order") == 0 && !h->has_fortran) {
            if (np_word(&p, "True")) h->fortran = 1;
            else if (np_word(&p, "False")) h->fortran = 0;
            else goto bad;
            h->has_fortran = 1;
        } else if (strcmp(key, "shape") == 0 && !h->has_shape) {
            if (np_shape(&p, h) != 0) goto bad;
            h->has_shape = 1;
        } else {
            return ert_error(ERT_ERR_FORMAT, "%s: npy header has an unexpected or repeated key '%s'",
                             path, key);
        }
        if (np_accept(&p, ',')) continue;
        if (np_accept(&p, '}')) break;
        goto bad;
    }
    np_skip_ws(&p);
    if (p.pos != p.len) goto bad;
    if (!h->has_descr || !h->has_fortran || !h->has_shape)
        return ert_error(ERT_ERR_FORMAT, "%s: npy header lacks '%s'", path,
                         !h->has_descr ? "descr" : !h->has_fortran ? "fortran_order" : "shape");
    return ERT_OK;

bad:
    return ert_error(ERT_ERR_FORMAT, "%s: malformed npy header near offset %zu: %.80s", path,
                     p.pos, text);
}

/* Opens a .npy file and reads its header; leaves the reader at the first data byte. */
static ert_status npy_open(const char *path, reader *r, npy_header *h) {
    unsigned char pre[8], lenbuf[4];
    char *text = NULL;
    size_t hlen;
    ert_status st;

    if ((st = rd_open(r, path)) != ERT_OK) goto fail;
    if ((st = rd_exact(r, pre, 8, "npy preamble")) != ERT_OK) goto fail;
    if (memcmp(pre, "\x93NUMPY", 6) != 0) {
        st = ert_error(ERT_ERR_FORMAT, "%s: not a .npy file (bad magic)", path);
        goto fail;
    }
    if ((pre[6] != 1 && pre[6] != 2 && pre[6] != 3) || pre[7] != 0) {
        st = ert_error(ERT_ERR_UNSUPPORTED, "%s: npy format version %u.%u is not supported "
                       "(1.0, 2.0, 3.0 are)", path, pre[6], pre[7]);
        goto fail;
    }
    if (pre[6] == 1) {
        if ((st = rd_exact(r, lenbuf, 2, "npy header length")) != ERT_OK) goto fail;
        hlen = (size_t)lenbuf[0] | ((size_t)lenbuf[1] << 8);
    } else {
        if ((st = rd_exact(r, lenbuf, 4, "npy header length")) != ERT_OK) goto fail;
        uint32_t l32 = le_u32(lenbuf);
        if (l32 > NPY_HEADER_MAX) {
            st = ert_error(ERT_ERR_FORMAT, "%s: npy header length %lu is implausible", path,
                           (unsigned long)l32);
            goto fail;
        }
        hlen = l32;
    }
    text = malloc(hlen + 1);
    if (!text) {
        st = ert_error(ERT_ERR_OUT_OF_MEMORY, "%s: out of memory for the npy header", path);
        goto fail;
    }
    if ((st = rd_exact(r, text, hlen, "npy header")) != ERT_OK) goto fail;
    text[hlen] = '\0';
    if (memchr(text, '\0', hlen)) {
        st = ert_error(ERT_ERR_FORMAT, "%s: npy header contains a NUL byte", path);
        goto fail;
    }
    if ((st = npy_parse_dict(path, text, hlen, h)) != ERT_OK) goto fail;
    free(text);
    return ERT_OK;

fail:
    free(text);
    rd_close(r);
    return st;
}

ert_status ert_npy_read_f32(const char *path, ert_dataset **out) {
    reader r = {0};
    npy_header h;
    ert_dataset *d = NULL;
    unsigned char *raw = NULL;
    uint64_t sample = 1;
    ert_status st;

    if (out) *out = NULL;
    if (!path || !out)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_npy_read_f32: %s is NULL",
                         !path ? "path" : "out");

    if ((st = npy_open(path, &r, &h)) != ERT_OK) return st;
    if (h.descr_structured || strcmp(h.descr, "<f4") != 0) {
        st = ert_error(ERT_ERR_DTYPE, "%s: npy dtype '%s' is not supported (expected '<f4')",
                       path, h.descr);
        goto fail;
    }
    if (h.fortran) {
        st = ert_error(ERT_ERR_UNSUPPORTED,
                       "%s: npy array is in Fortran order; save it in C order", path);
        goto fail;
    }
    if (h.ndim < 1 || h.ndim > 4) {
        st = ert_error(ERT_ERR_SHAPE, "%s: npy array has %d dimensions (1 to 4 supported)",
                       path, h.ndim);
        goto fail;
    }
    for (int i = 1; i < h.ndim; ++i) {
        if (h.shape[i] == 0 || h.shape[i] > INT_MAX || (sample *= (uint64_t)h.shape[i]) > INT_MAX) {
            st = ert_error(ERT_ERR_SHAPE, "%s: npy sample dimension %d (%lld) is 0 or too large",
                           path, i, (long long)h.shape[i]);
            goto fail;
        }
    }
    if ((uint64_t)h.shape[0] > (uint64_t)(SIZE_MAX / sizeof(float)) / sample) {
        st = ert_error(ERT_ERR_FORMAT, "%s: npy shape overflows (%lld samples of %llu)", path,
                       (long long)h.shape[0], (unsigned long long)sample);
        goto fail;
    }

    d = dataset_new(path);
    if (!d) {
        st = ert_error(ERT_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
        goto fail;
    }
    if ((st = rd_payload(&r, (uint64_t)h.shape[0] * sample * sizeof(float), "npy data", &raw)) !=
        ERT_OK)
        goto fail;
    if (!host_is_little_endian()) {
        size_t count = (size_t)((uint64_t)h.shape[0] * sample);
        for (size_t i = 0; i < count; ++i) {
            unsigned char *b = raw + 4 * i, t;
            t = b[0], b[0] = b[3], b[3] = t;
            t = b[1], b[1] = b[2], b[2] = t;
        }
    }
    d->x = (float *)(void *)raw; /* malloc'd memory is aligned for any type */
    raw = NULL;
    d->n = h.shape[0];
    d->sample_size = (int)sample;
    if (h.ndim == 1) {
        d->ndim = 1;
        d->shape[0] = 1;
    } else {
        d->ndim = h.ndim - 1;
        for (int i = 1; i < h.ndim; ++i) d->shape[i - 1] = (int)h.shape[i];
    }
    rd_close(&r);
    *out = d;
    return ERT_OK;

fail:
    free(raw);
    ert_dataset_free(d);
    rd_close(&r);
    return st;
}

/* Reads a one-dimensional '<i4' or '<i8' .npy file as int32 labels. */
static ert_status npy_read_labels(const char *path, int32_t **labels, int64_t *count) {
    reader r = {0};
    npy_header h;
    unsigned char *raw = NULL;
    int32_t *lab = NULL;
    size_t width;
    ert_status st;

    *labels = NULL;
    *count = 0;
    if ((st = npy_open(path, &r, &h)) != ERT_OK) return st;
    if (!h.descr_structured && strcmp(h.descr, "<i4") == 0) {
        width = 4;
    } else if (!h.descr_structured && strcmp(h.descr, "<i8") == 0) {
        width = 8;
    } else {
        st = ert_error(ERT_ERR_DTYPE,
                       "%s: label dtype '%s' is not supported (expected '<i4' or '<i8')", path,
                       h.descr);
        goto fail;
    }
    if (h.ndim != 1) {
        st = ert_error(ERT_ERR_SHAPE, "%s: labels must be one-dimensional, not %d-D", path,
                       h.ndim);
        goto fail;
    }
    /* Fortran order changes nothing for a one-dimensional array. */
    if ((uint64_t)h.shape[0] > (uint64_t)(SIZE_MAX / 8)) {
        st = ert_error(ERT_ERR_FORMAT, "%s: %lld labels is too many", path,
                       (long long)h.shape[0]);
        goto fail;
    }
    if ((st = rd_payload(&r, (uint64_t)h.shape[0] * width, "npy labels", &raw)) != ERT_OK)
        goto fail;
    lab = malloc(h.shape[0] > 0 ? (size_t)h.shape[0] * sizeof(int32_t) : 1);
    if (!lab) {
        st = ert_error(ERT_ERR_OUT_OF_MEMORY, "%s: cannot allocate %lld labels", path,
                       (long long)h.shape[0]);
        goto fail;
    }
    for (int64_t i = 0; i < h.shape[0]; ++i) {
        int64_t v;
        if (width == 4) {
            uint32_t u = le_u32(raw + 4 * (size_t)i);
            v = u <= (uint32_t)INT32_MAX ? (int64_t)u : (int64_t)u - ((int64_t)1 << 32);
        } else {
            uint64_t u = le_u64(raw + 8 * (size_t)i);
            v = u <= (uint64_t)INT64_MAX ? (int64_t)u : -(int64_t)(~u) - 1;
            if (v < INT32_MIN || v > INT32_MAX) {
                st = ert_error(ERT_ERR_FORMAT, "%s: label %lld at index %lld does not fit int32",
                               path, (long long)v, (long long)i);
                goto fail;
            }
        }
        lab[i] = (int32_t)v;
    }
    free(raw);
    rd_close(&r);
    *labels = lab;
    *count = h.shape[0];
    return ERT_OK;

fail:
    free(lab);
    free(raw);
    rd_close(&r);
    return st;
}

/* ---------------------------------------------------------------- Fashion-MNIST */

static int is_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int is_file(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && !S_ISDIR(sb.st_mode);
}

/* Finds `dir`/`name`.gz, else `dir`/`name`, into out. */
static ert_status fmnist_find(const char *dir, const char *name, char *out, size_t cap) {
    int n = snprintf(out, cap, "%s/%s.gz", dir, name);
    if (n < 0 || (size_t)n >= cap)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "Fashion-MNIST directory path too long: %s",
                         dir);
    if (is_file(out)) return ERT_OK;
    snprintf(out, cap, "%s/%s", dir, name);
    if (is_file(out)) return ERT_OK;
    return ert_error(ERT_ERR_IO,
                     "Fashion-MNIST file %s/%s.gz (or %s without .gz) not found; "
                     "reinstall with `" FMNIST_HINT "` or fix $ERT_FASHION_MNIST_DIR",
                     dir, name, name);
}

static ert_status fmnist_load(const char *spec, ert_dataset **out) {
    enum { TRAIN, VAL, TEST, TRAIN_ALL } split;
    const char *name = strchr(spec, ':');
    const char *dir = getenv("ERT_FASHION_MNIST_DIR");
    char img_path[DATA_PATH_MAX], lbl_path[DATA_PATH_MAX];
    ert_dataset *img = NULL, *lbl = NULL;
    int64_t expect, first, count;
    ert_status st;

    name = name ? name + 1 : "";
    if (strcmp(name, "train") == 0) split = TRAIN;
    else if (strcmp(name, "val") == 0) split = VAL;
    else if (strcmp(name, "test") == 0) split = TEST;
    else if (strcmp(name, "train-all") == 0) split = TRAIN_ALL;
    else
        return ert_error(ERT_ERR_INVALID_ARGUMENT,
                         "unknown dataset split '%s': valid names are " FMNIST_SPLITS, spec);

    if (!dir || !*dir) dir = FMNIST_DEFAULT_DIR;
    if (!is_dir(dir))
        return ert_error(ERT_ERR_IO,
                         "dataset '%s': Fashion-MNIST directory %s not found; "
                         "`" FMNIST_HINT "` or set $ERT_FASHION_MNIST_DIR", spec, dir);

    const char *img_name = split == TEST ? "t10k-images-idx3-ubyte" : "train-images-idx3-ubyte";
    const char *lbl_name = split == TEST ? "t10k-labels-idx1-ubyte" : "train-labels-idx1-ubyte";
    expect = split == TEST ? 10000 : 60000;

    if ((st = fmnist_find(dir, img_name, img_path, sizeof img_path)) != ERT_OK) goto fail;
    if ((st = fmnist_find(dir, lbl_name, lbl_path, sizeof lbl_path)) != ERT_OK) goto fail;
    if ((st = ert_idx_read(img_path, &img)) != ERT_OK) goto fail;
    if ((st = ert_idx_read(lbl_path, &lbl)) != ERT_OK) goto fail;

    if (!img->x || img->ndim != 2 || img->shape[0] != 28 || img->shape[1] != 28) {
        st = ert_error(ERT_ERR_SHAPE, "%s: expected 28x28 images", img_path);
        goto fail;
    }
    if (!lbl->labels) {
        st = ert_error(ERT_ERR_SHAPE, "%s: expected a one-dimensional label file", lbl_path);
        goto fail;
    }
    if (img->n != lbl->n) {
        st = ert_error(ERT_ERR_SHAPE, "%s has %lld images but %s has %lld labels", img_path,
                       (long long)img->n, lbl_path, (long long)lbl->n);
        goto fail;
    }
    if (img->n != expect) {
        st = ert_error(ERT_ERR_SHAPE, "%s: expected %lld Fashion-MNIST samples, found %lld",
                       img_path, (long long)expect, (long long)img->n);
        goto fail;
    }
    for (int64_t i = 0; i < lbl->n; ++i) {
        if (lbl->labels[i] < 0 || lbl->labels[i] > 9) {
            st = ert_error(ERT_ERR_FORMAT, "%s: label %d at index %lld is not a class 0..9",
                           lbl_path, (int)lbl->labels[i], (long long)i);
            goto fail;
        }
    }

    first = split == VAL ? 50000 : 0;
    count = split == TRAIN ? 50000 : split == VAL ? 10000 : img->n;
    if (first > 0) {
        memmove(img->x, img->x + (size_t)first * 784, (size_t)count * 784 * sizeof(float));
        memmove(lbl->labels, lbl->labels + first, (size_t)count * sizeof(int32_t));
    }
    if (count < img->n) {
        /* Shrinking; a failed realloc leaves the larger block, which is still valid. */
        float *x = realloc(img->x, (size_t)count * 784 * sizeof(float));
        int32_t *l = realloc(lbl->labels, (size_t)count * sizeof(int32_t));
        if (x) img->x = x;
        if (l) lbl->labels = l;
    }
    img->n = count;
    img->labels = lbl->labels;
    lbl->labels = NULL;
    img->ndim = 3;
    img->shape[0] = 1;
    img->shape[1] = 28;
    img->shape[2] = 28;
    img->sample_size = 784;
    snprintf(img->name, sizeof img->name, "%s", spec);
    ert_dataset_free(lbl);
    *out = img;
    return ERT_OK;

fail:
    ert_dataset_free(img);
    ert_dataset_free(lbl);
    return ert_error_context(st, "dataset '%s': ", spec);
}

/* ---------------------------------------------------------------- specs */

static ert_status npy_load(const char *spec, ert_dataset **out) {
    char img_path[DATA_PATH_MAX];
    const char *sep = strstr(spec, ".npy:");
    const char *lbl_path = NULL;
    ert_dataset *d = NULL;
    int32_t *labels = NULL;
    int64_t count = 0;
    size_t img_len;
    ert_status st;

    if (sep) {
        img_len = (size_t)(sep - spec) + 4;
        lbl_path = sep + 5;
        if (!*lbl_path)
            return ert_error(ERT_ERR_INVALID_ARGUMENT,
                             "dataset '%s': empty labels path after ':'", spec);
    } else {
        img_len = strlen(spec);
    }
    if (img_len >= sizeof img_path)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "dataset '%s': path too long", spec);
    memcpy(img_path, spec, img_len);
    img_path[img_len] = '\0';

    if ((st = ert_npy_read_f32(img_path, &d)) != ERT_OK) goto fail;
    if (lbl_path) {
        if ((st = npy_read_labels(lbl_path, &labels, &count)) != ERT_OK) goto fail;
        if (count != d->n) {
            st = ert_error(ERT_ERR_SHAPE, "%s has %lld labels but %s has %lld samples",
                           lbl_path, (long long)count, img_path, (long long)d->n);
            goto fail;
        }
        d->labels = labels;
        labels = NULL;
    }
    snprintf(d->name, sizeof d->name, "%s", spec);
    *out = d;
    return ERT_OK;

fail:
    free(labels);
    ert_dataset_free(d);
    return st;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

ert_status ert_dataset_load(const char *spec, ert_dataset **out) {
    if (out) *out = NULL;
    if (!spec || !out)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_dataset_load: %s is NULL",
                         !spec ? "spec" : "out");
    if (strncmp(spec, "fashion-mnist", 13) == 0 && (spec[13] == ':' || spec[13] == '\0'))
        return fmnist_load(spec, out);
    if (strstr(spec, ".npy:") || ends_with(spec, ".npy")) return npy_load(spec, out);
    return ert_error(ERT_ERR_INVALID_ARGUMENT,
                     "unknown dataset '%s': expected one of " FMNIST_SPLITS
                     ", PATH.npy or PATH.npy:LABELS.npy",
                     spec);
}
