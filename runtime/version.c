/* The version and what the build uses (exitrt.h): `exitrt --version`. */
#include <stdio.h>

#include "backend.h"
#include "ert_commit.h" /* ERT_GIT_COMMIT, written at each build (tools/git_commit.cmake) */
#include "exitrt/exitrt.h"

const char *ert_version(void) { return ERT_VERSION; }

const char *ert_commit(void) { return ERT_GIT_COMMIT; }

void ert_build_info(char *buf, size_t len) {
    char cpu[512], cuda[256];
    ert_cpu_libraries(cpu, sizeof cpu);
    ert_cuda_libraries(cuda, sizeof cuda);
    snprintf(buf, len, "cpu: %s\ncuda: %s", cpu, cuda);
}
