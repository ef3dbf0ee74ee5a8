/* fileio.c — mmap, atomic output files and small path utilities (POSIX). */
#define _GNU_SOURCE
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"

int lp_mmap_open(lp_mmap *m, const char *path) {
    memset(m, 0, sizeof *m);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return lp_fail("%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return lp_fail("%s: not a regular file", path);
    }
    m->size = (uint64_t)st.st_size;
    if (m->size > 0) {
        void *p = mmap(NULL, m->size, PROT_READ, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
            close(fd);
            return lp_fail("%s: mmap failed: %s", path, strerror(errno));
        }
        m->data = p;
    }
    close(fd);
    m->path = lp_xstrdup(path);
    return 0;
}

void lp_mmap_close(lp_mmap *m) {
    if (m->data) munmap((void *)m->data, m->size);
    free(m->path);
    memset(m, 0, sizeof *m);
}

void lp_mmap_release(const lp_mmap *m, uint64_t off, uint64_t len) {
    if (!m->data || len == 0) return;
    long page = sysconf(_SC_PAGESIZE);
    uint64_t start = off & ~(uint64_t)(page - 1);
    uint64_t end = off + len;
    if (end > m->size) end = m->size;
    if (end > start) madvise((void *)(m->data + start), end - start, MADV_DONTNEED);
}

int lp_outfile_open(lp_outfile *f, const char *path) {
    memset(f, 0, sizeof *f);
    f->path = lp_xstrdup(path);
    f->tmp_path = lp_xasprintf("%s.tmp.%d", path, (int)getpid());
    f->fp = fopen(f->tmp_path, "wb");
    if (!f->fp) {
        int rc = lp_fail("%s: cannot create: %s", f->tmp_path, strerror(errno));
        free(f->path);
        free(f->tmp_path);
        memset(f, 0, sizeof *f);
        return rc;
    }
    return 0;
}

int lp_outfile_write(lp_outfile *f, const void *data, size_t n) {
    if (n && fwrite(data, 1, n, f->fp) != n) return lp_fail("%s: write failed: %s", f->path, strerror(errno));
    f->written += n;
    return 0;
}

int lp_outfile_pad(lp_outfile *f, size_t alignment) {
    static const uint8_t zeros[256];
    size_t rem = (size_t)(f->written % alignment);
    if (rem == 0) return 0;
    size_t n = alignment - rem;
    while (n > 0) {
        size_t k = n < sizeof zeros ? n : sizeof zeros;
        if (lp_outfile_write(f, zeros, k) != 0) return -1;
        n -= k;
    }
    return 0;
}

static void outfile_free(lp_outfile *f) {
    free(f->path);
    free(f->tmp_path);
    memset(f, 0, sizeof *f);
}

int lp_outfile_commit(lp_outfile *f) {
    int rc = 0;
    if (fclose(f->fp) != 0) rc = lp_fail("%s: close failed: %s", f->path, strerror(errno));
    if (rc == 0 && rename(f->tmp_path, f->path) != 0) rc = lp_fail("%s: rename failed: %s", f->path, strerror(errno));
    if (rc != 0) unlink(f->tmp_path);
    outfile_free(f);
    return rc;
}

void lp_outfile_abort(lp_outfile *f) {
    if (!f->fp) return;
    fclose(f->fp);
    unlink(f->tmp_path);
    outfile_free(f);
}

char *lp_read_file(const char *path, size_t *len_out) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        lp_fail("%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = lp_xmalloc(cap);
    for (;;) {
        if (len + 1 >= cap) buf = lp_xrealloc(buf, cap *= 2);
        size_t k = fread(buf + len, 1, cap - len - 1, fp);
        len += k;
        if (k == 0) break;
    }
    int bad = ferror(fp);
    fclose(fp);
    if (bad) {
        free(buf);
        lp_fail("%s: read failed", path);
        return NULL;
    }
    buf[len] = 0;
    if (len_out) *len_out = len;
    return buf;
}

int lp_write_file_atomic(const char *path, const void *data, size_t n) {
    lp_outfile f;
    if (lp_outfile_open(&f, path) != 0) return -1;
    if (lp_outfile_write(&f, data, n) != 0) {
        lp_outfile_abort(&f);
        return -1;
    }
    return lp_outfile_commit(&f);
}

bool lp_path_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

bool lp_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int lp_mkdir_p(const char *path) {
    char *p = lp_xstrdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            int rc = lp_fail("%s: cannot create directory: %s", p, strerror(errno));
            free(p);
            return rc;
        }
        *s = '/';
    }
    int rc = 0;
    if (mkdir(p, 0777) != 0 && errno != EEXIST) rc = lp_fail("%s: cannot create directory: %s", p, strerror(errno));
    free(p);
    return rc;
}

char *lp_path_join(const char *a, const char *b) {
    size_t n = strlen(a);
    if (n > 0 && a[n - 1] == '/') return lp_xasprintf("%s%s", a, b);
    return lp_xasprintf("%s/%s", a, b);
}

const char *lp_path_basename(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

int lp_copy_file(const char *src, const char *dst) {
    lp_mmap m;
    if (lp_mmap_open(&m, src) != 0) return -1;
    int rc = lp_write_file_atomic(dst, m.data, m.size);
    lp_mmap_close(&m);
    return rc;
}
