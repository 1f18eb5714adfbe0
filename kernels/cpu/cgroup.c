/* The limits a process's cgroups put on it: the memory it may use and the CPU time it
 * gets. A limit can sit on the process's own cgroup or on any ancestor (a Slurm job's
 * memory, a systemd unit's MemoryMax= and CPUQuota=, the slice above them), so every level
 * from the process's own cgroup up to the root of what is mounted is read, and the
 * tightest wins. Where a hierarchy is mounted, and which of its cgroups the mount shows
 * as its root (a container without its own cgroup namespace sees its cgroup mounted at
 * /sys/fs/cgroup), comes from /proc/self/mountinfo: the process's path is taken relative
 * to that root, so no level that is not an ancestor is read. */
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
        /* "max" (v2) and v1's "unlimited" (2^63 - 1 rounded down to a page): none */
        if (read_line(dir, v2 ? "memory.max" : "memory.limit_in_bytes", a, sizeof a) &&
            ert_cpu_parse_bytes(a, &bytes) && bytes < (size_t)1 << 62 && bytes < lim->memory)
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

/* Does the comma-separated list `list` (length n: a /proc/self/cgroup controller field, a
 * mount's super options) hold `name`? */
static int lists(const char *list, size_t n, const char *name) {
    const size_t len = strlen(name);
    for (const char *p = list, *end = list + n; p < end;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const size_t item = comma ? (size_t)(comma - p) : (size_t)(end - p);
        if (item == len && memcmp(p, name, len) == 0) return 1;
        if (!comma) break;
        p = comma + 1;
    }
    return 0;
}

/* Reads the levels of one hierarchy: `rel` (the cgroup below the mount's root, "/a/b" or
 * "") under the mount point, then each ancestor up to the mount point itself. */
static void read_levels(const char *point, const char *rel, int v2, int memory, ert_cgroup_limits *lim) {
    char dir[PATH_MAX];
    if (snprintf(dir, sizeof dir, "%s%s", point, rel) >= (int)sizeof dir) return;
    const size_t base = strlen(point);
    for (;;) {
        size_t n = strlen(dir);
        while (n > base && dir[n - 1] == '/') dir[--n] = '\0'; /* "/a/b/" -> "/a/b" */
        read_level(dir, v2, memory, lim);
        char *slash = strrchr(dir + base, '/');
        if (n == base || !slash) return;
        *slash = '\0';
    }
}

/* The space-separated field i (from 0) of a line of length len, copied into out. */
static int field(const char *line, size_t len, int i, char *out, size_t cap) {
    const char *p = line, *end = line + len;
    for (; i > 0 && p < end; --i) {
        const char *sp = memchr(p, ' ', (size_t)(end - p));
        if (!sp) return 0;
        p = sp + 1;
    }
    const char *sp = memchr(p, ' ', (size_t)(end - p));
    const size_t n = sp ? (size_t)(sp - p) : (size_t)(end - p);
    if (p >= end || n == 0 || n >= cap) return 0;
    memcpy(out, p, n);
    out[n] = '\0';
    return 1;
}

/* The mount of a hierarchy in mountinfo's text ("ID PARENT DEV ROOT POINT OPTIONS ... -
 * FSTYPE SOURCE SUPER"): cgroup v2's (controller NULL) or the v1 one holding `controller`;
 * its root (the cgroup it shows) and its mount point. */
static int find_mount(const char *mountinfo, const char *controller, char *root, char *point, size_t cap) {
    for (const char *line = mountinfo; line && *line;) {
        const char *end = strchr(line, '\n');
        const size_t len = end ? (size_t)(end - line) : strlen(line);
        const char *dash = NULL; /* the " - " that ends the optional fields */
        for (const char *p = line; p + 3 <= line + len && !dash; ++p)
            if (memcmp(p, " - ", 3) == 0) dash = p + 3;
        char type[32], super[256];
        if (dash && field(dash, len - (size_t)(dash - line), 0, type, sizeof type) &&
            field(line, len, 3, root, cap) && field(line, len, 4, point, cap)) {
            if (!controller && strcmp(type, "cgroup2") == 0) return 1;
            if (controller && strcmp(type, "cgroup") == 0 && field(dash, len - (size_t)(dash - line), 2, super, sizeof super) &&
                lists(super, strlen(super), controller))
                return 1;
        }
        line = end ? end + 1 : NULL;
    }
    return 0;
}

/* Reads one hierarchy for the process's cgroup `path`: below the mount's root, or the
 * mount point alone when the path is not below it (or climbs with ".."). */
static void read_hierarchy(const char *mountinfo, const char *controller, const char *path, int memory,
                           ert_cgroup_limits *lim) {
    char root[PATH_MAX], point[PATH_MAX];
    if (!find_mount(mountinfo, controller, root, point, sizeof root)) return;
    const size_t n = strcmp(root, "/") == 0 ? 0 : strlen(root);
    const char *rel = strncmp(path, root, n) == 0 && (path[n] == '/' || path[n] == '\0') ? path + n : "";
    if (strstr(rel, "/..")) rel = "";
    read_levels(point, rel, !controller, memory, lim);
}

ert_cgroup_limits ert_cgroup_read(const char *self, const char *mountinfo) {
    ert_cgroup_limits lim = {SIZE_MAX, 0};
    char path[PATH_MAX];
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
            if (clen == 0) { /* v2: both limits in one hierarchy */
                read_hierarchy(mountinfo, NULL, path, 1, &lim);
                read_hierarchy(mountinfo, NULL, path, 0, &lim);
            }
            if (clen && lists(ctl, clen, "memory")) read_hierarchy(mountinfo, "memory", path, 1, &lim);
            if (clen && lists(ctl, clen, "cpu")) read_hierarchy(mountinfo, "cpu", path, 0, &lim);
        }
        line = end ? end + 1 : NULL;
    }
    return lim;
}

/* A whole file as a string (malloc'ed), or NULL. */
static char *read_all(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    size_t n = 0, cap = 16384;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - 1 - n, f);
        if (n < cap - 1) break;
        char *grown = realloc(buf, cap *= 2);
        if (!grown) free(buf);
        buf = grown;
    }
    fclose(f);
    if (buf) buf[n] = '\0';
    return buf;
}

ert_cgroup_limits ert_cgroup_limits_of_process(void) {
    char *self = read_all("/proc/self/cgroup"), *mountinfo = read_all("/proc/self/mountinfo");
    /* without /proc: the roots of both kinds of hierarchy where they are usually mounted */
    const ert_cgroup_limits lim =
        ert_cgroup_read(self && *self ? self : "0::/\n1:memory:/\n2:cpu:/\n",
                        mountinfo && *mountinfo ? mountinfo
                                                : "1 0 0:0 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
                                                  "2 0 0:0 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
                                                  "3 0 0:0 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n");
    free(self);
    free(mountinfo);
    return lim;
}
