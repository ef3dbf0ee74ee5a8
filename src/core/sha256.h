/* sha256.h — streaming SHA-256 (FIPS 180-4).
 *
 * Used to verify downloaded blobs against the hub's X-Linked-Etag and to
 * fingerprint inputs/outputs in conversion manifests. Files are hashed through
 * a memory map, releasing mapped pages behind the cursor, so a 60 GB checkpoint
 * costs no heap and the process's resident set stays small. */
#ifndef LP_SHA256_H
#define LP_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define LP_SHA256_BYTES 32

typedef struct {
    uint32_t state[8];
    uint64_t total_bytes;  /* message length so far */
    uint8_t block[64];     /* partial block waiting for more input */
    size_t block_len;
} lp_sha256;

void lp_sha256_init(lp_sha256 *s);
void lp_sha256_update(lp_sha256 *s, const void *data, size_t n);
/* Finish and write the 32-byte digest; s must be re-initialised before reuse. */
void lp_sha256_final(lp_sha256 *s, uint8_t digest[LP_SHA256_BYTES]);

/* Lower-case hex of a digest, NUL-terminated (65 bytes). */
void lp_sha256_hex(const uint8_t digest[LP_SHA256_BYTES], char hex[65]);
/* One-shot hash of a buffer, as hex. */
void lp_sha256_buf(const void *data, size_t n, char hex[65]);
/* Hash of a whole file, as hex; -1 with lp_fail() if it cannot be opened/mapped. */
int lp_sha256_file(const char *path, char hex[65]);

#endif
