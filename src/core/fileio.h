/* fileio.h — read-only memory maps, atomic output files, and path helpers.
 *
 * Inputs are mapped, never read whole, so converting a checkpoint costs page
 * cache, not heap. Outputs go to "<path>.tmp.<pid>" and are renamed into place
 * only on lp_outfile_commit(), so an interrupted run never leaves a half-written
 * artifact under the final name. */
#ifndef LP_FILEIO_H
#define LP_FILEIO_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef struct {
    const uint8_t *data; /* NULL for an empty file */
    uint64_t size;
    char *path;
} lp_mmap;

int lp_mmap_open(lp_mmap *m, const char *path);
void lp_mmap_close(lp_mmap *m);
/* Hint the kernel that [off, off+len) will not be needed again (drops page-cache pressure). */
void lp_mmap_release(const lp_mmap *m, uint64_t off, uint64_t len);

typedef struct {
    FILE *fp;
    char *path;     /* final name */
    char *tmp_path; /* where bytes go until commit */
    uint64_t written;
} lp_outfile;

int lp_outfile_open(lp_outfile *f, const char *path);
int lp_outfile_write(lp_outfile *f, const void *data, size_t n);
int lp_outfile_pad(lp_outfile *f, size_t alignment); /* zero bytes up to a multiple of alignment */
int lp_outfile_commit(lp_outfile *f);                /* fsync-free flush + rename; closes */
void lp_outfile_abort(lp_outfile *f);                /* removes the temp file; closes */

/* Whole small file (configs, tokenizer.json) into a NUL-terminated buffer. */
char *lp_read_file(const char *path, size_t *len_out);
int lp_write_file_atomic(const char *path, const void *data, size_t n);
bool lp_path_exists(const char *path);
bool lp_is_dir(const char *path);
int lp_mkdir_p(const char *path);
char *lp_path_join(const char *a, const char *b); /* malloc'd "a/b" */
const char *lp_path_basename(const char *path);
int lp_copy_file(const char *src, const char *dst); /* atomic */

#endif
