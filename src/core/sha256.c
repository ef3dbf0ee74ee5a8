/* sha256.c — SHA-256 compression, streaming state, hex output and file hashing. */
#include "sha256.h"

#include <string.h>

#include "fileio.h"

/* First 32 bits of the fractional parts of the cube roots of the first 64 primes (FIPS 180-4 4.2.2). */
static const uint32_t round_constants[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static inline uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static inline uint32_t load_be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void store_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void compress(uint32_t state[8], const uint8_t block[64]) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++) w[i] = load_be32(block + 4 * i);
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
    uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + round_constants[i] + w[i];
        uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    state[0] += a;
    state[1] += b;
    state[2] += c;
    state[3] += d;
    state[4] += e;
    state[5] += f;
    state[6] += g;
    state[7] += h;
}

void lp_sha256_init(lp_sha256 *s) {
    static const uint32_t initial[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->state, initial, sizeof initial);
    s->total_bytes = 0;
    s->block_len = 0;
}

void lp_sha256_update(lp_sha256 *s, const void *data, size_t n) {
    const uint8_t *p = data;
    s->total_bytes += n;
    if (s->block_len > 0) {
        size_t take = 64 - s->block_len < n ? 64 - s->block_len : n;
        memcpy(s->block + s->block_len, p, take);
        s->block_len += take;
        p += take;
        n -= take;
        if (s->block_len < 64) return;
        compress(s->state, s->block);
        s->block_len = 0;
    }
    for (; n >= 64; p += 64, n -= 64) compress(s->state, p);
    if (n > 0) memcpy(s->block, p, n);
    s->block_len = n;
}

void lp_sha256_final(lp_sha256 *s, uint8_t digest[LP_SHA256_BYTES]) {
    uint64_t bit_len = s->total_bytes * 8;
    uint8_t pad[72] = {0x80};
    /* 0x80, zeros up to 56 mod 64, then the 64-bit big-endian bit length. */
    size_t pad_len = (s->block_len < 56 ? 56 : 120) - s->block_len;
    for (int i = 0; i < 8; i++) pad[pad_len + i] = (uint8_t)(bit_len >> (56 - 8 * i));
    lp_sha256_update(s, pad, pad_len + 8);
    for (int i = 0; i < 8; i++) store_be32(digest + 4 * i, s->state[i]);
}

void lp_sha256_hex(const uint8_t digest[LP_SHA256_BYTES], char hex[65]) {
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < LP_SHA256_BYTES; i++) {
        hex[2 * i] = digits[digest[i] >> 4];
        hex[2 * i + 1] = digits[digest[i] & 15];
    }
    hex[64] = 0;
}

void lp_sha256_buf(const void *data, size_t n, char hex[65]) {
    lp_sha256 s;
    uint8_t digest[LP_SHA256_BYTES];
    lp_sha256_init(&s);
    lp_sha256_update(&s, data, n);
    lp_sha256_final(&s, digest);
    lp_sha256_hex(digest, hex);
}

int lp_sha256_file(const char *path, char hex[65]) {
    /* Hash in windows and unmap each window's pages afterwards, so hashing a
     * model keeps the resident set at one window instead of the whole file. */
    const uint64_t window = 64u << 20;
    lp_mmap m;
    if (lp_mmap_open(&m, path) != 0) return -1;
    lp_sha256 s;
    uint8_t digest[LP_SHA256_BYTES];
    lp_sha256_init(&s);
    for (uint64_t off = 0; off < m.size; off += window) {
        uint64_t len = m.size - off < window ? m.size - off : window;
        lp_sha256_update(&s, m.data + off, (size_t)len);
        lp_mmap_release(&m, off, len);
    }
    lp_sha256_final(&s, digest);
    lp_sha256_hex(digest, hex);
    lp_mmap_close(&m);
    return 0;
}
