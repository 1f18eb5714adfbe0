/* The limits a process's cgroups put on it: the memory it may use and the CPU time it
 * gets. A limit can sit on the process's own cgroup or on any ancestor (a Slurm job's
 * memory, a systemd unit's MemoryMax= and CPUQuota=, the slice above them), and inside a
 * container with its own cgroup namespace the root is the container's cgroup; so every
 * level from the process's own cgroup up to the root is read, and the tightest wins. */
#include <ctype.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"

int ert_cpu_parse_bytes(const char *text, size_t *out) {
    if (!isdigit((unsigned char)text[0])) return 0;
    char *end;
    const unsigned long long v = strtoull(text, &end, 10);
    if (*end != '\0' || v == 0 || v == ULLONG_MAX || v > SIZE_MAX) return 0;
    *out = (size_t)v;
    return 1;
}

/* The first line of dir/name, without its newline; 0 if there is none. */
static int read_line(const char *dir, const char *name, char *buf, size_t len) {
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path) return 0;
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    const int ok = fgets(buf, (int)len, f) != NULL;
    fclose(f);
    if (ok) buf[strcspn(buf, "\n")] = '\0';
    return ok;
}

/* Tightens *lim with the files of one cgroup directory: v2 (memory.max, cpu.max "QUOTA
 * PERIOD") or v1 (memory.limit_in_bytes, cpu.cfs_quota_us and cpu.cfs_period_us). */
static void read_level(const char *dir, int v2, int memory, ert_cgroup_limits *lim) {
    char a[64], b[64];
    size_t bytes;
    int cpus = 0;
    if (memory) {
        if (read_line(dir, v2 ? "memory.max" : "memory.limit_in_bytes", a, sizeof a) &&
            ert_cpu_parse_bytes(a, &bytes) && bytes < lim->memory) /* "max": none */
            lim->memory = bytes;
        return;
    }
    if (v2 && read_line(dir, "cpu.max", a, sizeof a)) {
        char *space = strchr(a, ' ');
        if (space) {
            *space = '\0';
            cpus = ert_cpu_quota_parse(a, space + 1);
        }
    } else if (!v2 && read_line(dir, "cpu.cfs_quota_us", a, sizeof a) && read_line(dir, "cpu.cfs_period_us", b, sizeof b))
        cpus = ert_cpu_quota_parse(a, b);
    if (cpus > 0 && (lim->cpus == 0 || cpus < lim->cpus)) lim->cpus = cpus;
}

/* Does the comma-separated list `list` (a /proc/self/cgroup controller field, length n)
 * hold `name`? */
static int lists(const char *list, size_t n, const char *name) {
    const size_t len = strlen(name);
    for (const char *p = list; p < list + n;) {
        const char *comma = memchr(p, ',', (size_t)(list + n - p));
        const size_t item = comma ? (size_t)(comma - p) : (size_t)(list + n - p);
        if (item == len && memcmp(p, name, len) == 0) return 1;
        p += item + 1;
    }
    return 0;
}

/* Reads the levels of one hierarchy: `path` (the cgroup, "/a/b") under `mount`, then each
 * ancestor up to "/". */
static void read_levels(const char *mount, const char *path, int v2, int memory, ert_cgroup_limits *lim) {
    char dir[PATH_MAX];
    if (snprintf(dir, sizeof dir, "%s%s", mount, path) >= (int)sizeof dir) return;
    const size_t base = strlen(mount);
    for (;;) {
        size_t n = strlen(dir);
        while (n > base && dir[n - 1] == '/') dir[--n] = '\0'; /* "/a/b/" -> "/a/b"; the root: mount */
        read_level(dir, v2, memory, lim);
        char *slash = strrchr(dir + base, '/');
        if (n == base || !slash) return;
        *slash = '\0';
    }
}

ert_cgroup_limits ert_cgroup_read(const char *self, const char *root) {
    ert_cgroup_limits lim = {SIZE_MAX, 0};
    char mount[PATH_MAX], path[PATH_MAX];
    /* each line "ID:CONTROLLERS:PATH"; v2's has ID 0 and no controllers */
    for (const char *line = self; line && *line;) {
        const char *end = strchr(line, '\n');
        const size_t len = end ? (size_t)(end - line) : strlen(line);
        const char *c1 = memchr(line, ':', len), *c2 = c1 ? memchr(c1 + 1, ':', len - (size_t)(c1 + 1 - line)) : NULL;
        const size_t plen = c2 ? len - (size_t)(c2 + 1 - line) : 0;
        if (c2 && c2[1] == '/' && plen < sizeof path) {
            memcpy(path, c2 + 1, plen);
            path[plen] = '\0';
            char *deleted = strstr(path, " (deleted)");
            if (deleted) *deleted = '\0';
            const char *ctl = c1 + 1;
            const size_t clen = (size_t)(c2 - ctl);
            if (clen == 0) { /* v2: both limits in one hierarchy, mounted at the root */
                read_levels(root, path, 1, 1, &lim);
                read_levels(root, path, 1, 0, &lim);
            }
            if (clen && lists(ctl, clen, "memory") && snprintf(mount, sizeof mount, "%s/memory", root) < (int)sizeof mount)
                read_levels(mount, path, 0, 1, &lim);
            if (clen && lists(ctl, clen, "cpu") && snprintf(mount, sizeof mount, "%s/cpu", root) < (int)sizeof mount)
                read_levels(mount, path, 0, 0, &lim);
        }
        line = end ? end + 1 : NULL;
    }
    return lim;
}

ert_cgroup_limits ert_cgroup_limits_of_process(void) {
    char self[4096] = "";
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (f) {
        const size_t n = fread(self, 1, sizeof self - 1, f);
        self[n] = '\0';
        fclose(f);
    }
    /* without /proc: the roots of both kinds of hierarchy */
    return ert_cgroup_read(*self ? self : "0::/\n1:memory:/\n2:cpu:/\n", "/sys/fs/cgroup");
}
