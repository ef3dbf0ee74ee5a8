/* test_sha256.c — SHA-256 against the NIST FIPS 180-2 examples and sha256sum of fixture files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/err.h"
#include "core/fileio.h"
#include "core/sha256.h"

static void test_nist_short_messages(void **state) {
    char hex[65];
    lp_sha256_buf("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    lp_sha256_buf("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    lp_sha256_buf(m448, strlen(m448), hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    const char *m896 = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrs"
                       "mnopqrstnopqrstu";
    lp_sha256_buf(m896, strlen(m896), hex);
    assert_string_equal(hex, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

static void test_million_a_in_uneven_pieces(void **state) {
    /* Pieces of varying size exercise every partial-block path of update(). */
    static char block[1000];
    memset(block, 'a', sizeof block);
    lp_sha256 s;
    lp_sha256_init(&s);
    size_t done = 0, piece = 1;
    while (done < 1000000) {
        size_t n = piece < 1000000 - done ? piece : 1000000 - done;
        if (n > sizeof block) n = sizeof block;
        lp_sha256_update(&s, block, n);
        done += n;
        piece = piece * 7 % 997 + 1;
    }
    uint8_t digest[LP_SHA256_BYTES];
    char hex[65];
    lp_sha256_final(&s, digest);
    lp_sha256_hex(digest, hex);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

static void test_padding_boundaries(void **state) {
    /* Lengths 55, 56, 63, 64 straddle the one-vs-two padding block boundary. Reference digests
     * from Python hashlib.sha256(b'a' * n). */
    static const struct {
        size_t n;
        const char *hex;
    } cases[] = {
        {55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"},
        {56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"},
        {63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34"},
        {64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"},
    };
    char buf[64], hex[65];
    memset(buf, 'a', sizeof buf);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lp_sha256_buf(buf, cases[i].n, hex);
        assert_string_equal(hex, cases[i].hex);
    }
}

static void test_file_hash_matches_sha256sum(void **state) {
    char hex[65];
    /* Digests from coreutils sha256sum of the read-only fixtures. */
    assert_int_equal(lp_sha256_file(LP_FIXTURES_DIR "/models/tiny-qwen3/config.json", hex), 0);
    assert_string_equal(hex, "3c6e45ae6666528860a743686a1a88b90d455d1597b0fd458ff1056ded797f6a");
    assert_int_equal(lp_sha256_file(LP_FIXTURES_DIR "/models/tiny-qwen3/model-00002-of-00002.safetensors", hex), 0);
    assert_string_equal(hex, "b7fe85db7d4f8b2f3f663a20761b4ce578b926d2d2892d911151dc78207d51c2");
}

static void test_file_empty_and_missing(void **state) {
    char path[] = "/tmp/lp_sha256_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    char hex[65];
    assert_int_equal(lp_sha256_file(path, hex), 0);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    unlink(path);
    assert_int_equal(lp_sha256_file(path, hex), -1);
    assert_non_null(strstr(lp_errmsg(), path));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nist_short_messages),
        cmocka_unit_test(test_million_a_in_uneven_pieces),
        cmocka_unit_test(test_padding_boundaries),
        cmocka_unit_test(test_file_hash_matches_sha256sum),
        cmocka_unit_test(test_file_empty_and_missing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
