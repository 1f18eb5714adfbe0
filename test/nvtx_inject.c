/* An NVTX3 injection library that records what the program emits, for test_nvtx.
 *
 * NVTX loads the library named by NVTX_INJECTION64_PATH at the first NVTX call and calls
 * InitializeInjectionNvtx2(getExportTable). We take the CORE2 (domain API) function
 * table and put recorders in place of DomainCreateA, DomainRegisterStringA,
 * DomainNameCategoryA, DomainRangePushEx and DomainRangePop. Domain and string handles
 * are our own small numbers, so a registered message maps back to its text.
 *
 * Every event becomes one line in the file named by ERT_NVTX_LOG (stderr if unset),
 * flushed at once so the program can read it back while it runs:
 *   domain <name>
 *   category <domain> <id> <name>
 *   string <domain> <handle> <text>
 *   push <domain> <depth> <category> <ARGB as 8 hex digits | none> <int64 payload | none> <message>
 *   pop <domain> <depth>
 * <depth> is the nesting level (0 for an outermost range) per thread and domain. The
 * message is the registered string's text, "ascii:<text>" for an ASCII message, "?"
 * otherwise; a push with a wrong version or size logs "push <domain> <depth> badattr". */
#define NVTX_NO_IMPL
#include <nvtx3/nvToolsExt.h>

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_DOMAINS = 16, MAX_STRINGS = 4096 };

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static FILE *log_file;
/* Domain d (1-based; 0 is NVTX's default domain, the NULL handle) has name domains[d]. */
static char *domains[MAX_DOMAINS + 1];
static int num_domains;
static char *strings[MAX_STRINGS + 1]; /* handle h (1-based) -> text */
static int string_domain[MAX_STRINGS + 1];
static int num_strings;
static _Thread_local int depth[MAX_DOMAINS + 1];

/* Caller holds the lock. Returns the domain's number, or -1 for a handle that is not ours. */
static int domain_index(nvtxDomainHandle_t h) {
    const uintptr_t d = (uintptr_t)h;
    return d <= (uintptr_t)num_domains ? (int)d : -1;
}

static const char *domain_name(int d) { return d < 0 ? "?" : d == 0 ? "(default)" : domains[d]; }

static void emit(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void emit(const char *fmt, ...) {
    FILE *f = log_file ? log_file : stderr;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fputc('\n', f);
    fflush(f);
}

static nvtxDomainHandle_t NVTX_API rec_domain_create(const char *name) {
    pthread_mutex_lock(&lock);
    nvtxDomainHandle_t h = NULL;
    if (name && num_domains < MAX_DOMAINS) {
        domains[++num_domains] = strdup(name);
        h = (nvtxDomainHandle_t)(uintptr_t)num_domains;
        emit("domain %s", name);
    } else {
        emit("domain-failed %s", name ? name : "(null)");
    }
    pthread_mutex_unlock(&lock);
    return h;
}

static nvtxStringHandle_t NVTX_API rec_register_string(nvtxDomainHandle_t domain, const char *text) {
    pthread_mutex_lock(&lock);
    nvtxStringHandle_t h = NULL;
    const int d = domain_index(domain);
    if (text && num_strings < MAX_STRINGS) {
        strings[++num_strings] = strdup(text);
        string_domain[num_strings] = d;
        h = (nvtxStringHandle_t)(uintptr_t)num_strings;
        emit("string %s %d %s", domain_name(d), num_strings, text);
    } else {
        emit("string-failed %s", domain_name(d));
    }
    pthread_mutex_unlock(&lock);
    return h;
}

static void NVTX_API rec_name_category(nvtxDomainHandle_t domain, uint32_t category, const char *name) {
    pthread_mutex_lock(&lock);
    emit("category %s %u %s", domain_name(domain_index(domain)), category, name ? name : "(null)");
    pthread_mutex_unlock(&lock);
}

static int NVTX_API rec_push(nvtxDomainHandle_t domain, const nvtxEventAttributes_t *a) {
    pthread_mutex_lock(&lock);
    const int d = domain_index(domain);
    const int level = d >= 0 ? depth[d]++ : -1;
    const char *dn = domain_name(d);
    if (!a || a->version != NVTX_VERSION || a->size != NVTX_EVENT_ATTRIB_STRUCT_SIZE) {
        emit("push %s %d badattr", dn, level);
    } else {
        char color[16] = "none", payload[32] = "none";
        if (a->colorType == NVTX_COLOR_ARGB) snprintf(color, sizeof color, "%08x", (unsigned)a->color);
        if (a->payloadType == NVTX_PAYLOAD_TYPE_INT64)
            snprintf(payload, sizeof payload, "%lld", (long long)a->payload.llValue);
        const char *msg = "?", *prefix = "";
        if (a->messageType == NVTX_MESSAGE_TYPE_REGISTERED) {
            const uintptr_t s = (uintptr_t)a->message.registered;
            if (s >= 1 && s <= (uintptr_t)num_strings && string_domain[s] == d) msg = strings[s];
            else msg = "?unregistered";
        } else if (a->messageType == NVTX_MESSAGE_TYPE_ASCII && a->message.ascii) {
            prefix = "ascii:";
            msg = a->message.ascii;
        }
        emit("push %s %d %u %s %s %s%s", dn, level, (unsigned)a->category, color, payload, prefix, msg);
    }
    pthread_mutex_unlock(&lock);
    return level;
}

static int NVTX_API rec_pop(nvtxDomainHandle_t domain) {
    pthread_mutex_lock(&lock);
    const int d = domain_index(domain);
    int level = -1;
    if (d >= 0 && depth[d] > 0) {
        level = --depth[d];
        emit("pop %s %d", domain_name(d), level);
    } else {
        emit("pop %s underflow", domain_name(d));
    }
    pthread_mutex_unlock(&lock);
    return level;
}

int NVTX_API InitializeInjectionNvtx2(NvtxGetExportTableFunc_t getExportTable);

int NVTX_API InitializeInjectionNvtx2(NvtxGetExportTableFunc_t getExportTable) {
    const char *path = getenv("ERT_NVTX_LOG");
    if (path && *path && !(log_file = fopen(path, "w"))) {
        fprintf(stderr, "nvtx_inject: cannot write %s\n", path);
        return 0;
    }
    const NvtxExportTableCallbacks *cb = getExportTable ? getExportTable(NVTX_ETID_CALLBACKS) : NULL;
    if (!cb || cb->struct_size < sizeof *cb || !cb->GetModuleFunctionTable) {
        emit("init-failed no callbacks export table");
        return 0;
    }
    NvtxFunctionTable table = NULL;
    unsigned int size = 0;
    if (!cb->GetModuleFunctionTable(NVTX_CB_MODULE_CORE2, &table, &size) || !table ||
        size <= NVTX_CBID_CORE2_DomainCreateA) {
        emit("init-failed no CORE2 function table (size %u)", size);
        return 0;
    }
    *table[NVTX_CBID_CORE2_DomainCreateA] = (NvtxFunctionPointer)rec_domain_create;
    *table[NVTX_CBID_CORE2_DomainRegisterStringA] = (NvtxFunctionPointer)rec_register_string;
    *table[NVTX_CBID_CORE2_DomainNameCategoryA] = (NvtxFunctionPointer)rec_name_category;
    *table[NVTX_CBID_CORE2_DomainRangePushEx] = (NvtxFunctionPointer)rec_push;
    *table[NVTX_CBID_CORE2_DomainRangePop] = (NvtxFunctionPointer)rec_pop;
    return 1;
}
