/* jansson.h stand-in for the aarch64 cross build of tests/neon (scripts/test-neon.sh):
 * the headers it compiles only name json_t through pointers, so no arm64 libjansson is
 * needed. Never used by the CMake build. */
#ifndef LP_NEON_JANSSON_STUB_H
#define LP_NEON_JANSSON_STUB_H
typedef struct json_t json_t;
#endif
