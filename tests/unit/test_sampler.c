/* test_sampler.c — the sampler on constructed distributions: greedy, seeded
 * determinism, empirical frequencies, what top-k / top-p / min-p keep,
 * repetition / presence / frequency penalties and their window, and the
 * streaming stop-string scanner. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "runtime/sampler.h"

enum { V = 256, DRAWS = 20000 };

/* Logits whose softmax (temperature 1) is 0.5, 0.3, 0.15, 0.05 on ids 10, 20, 30, 40
 * and ~0 elsewhere. */
static void four_way(float *logits) {
    for (int i = 0; i < V; i++) logits[i] = -1e4f;
    logits[10] = logf(0.5f), logits[20] = logf(0.3f), logits[30] = logf(0.15f), logits[40] = logf(0.05f);
}

static lp_sampler_params plain(void) {
    return (lp_sampler_params){.temperature = 1.0f, .top_p = 1.0f, .repeat_penalty = 1.0f, .penalty_last_n = 64, .seed = 7};
}

/* Frequencies of ids 10/20/30/40 over DRAWS; fails on any other id. */
static void histogram(const lp_sampler_params *p, const float *logits, double freq[4]) {
    lp_sampler *s = lp_sampler_create(p, V);
    assert_non_null(s);
    int count[4] = {0};
    for (int i = 0; i < DRAWS; i++) {
        int32_t t = lp_sampler_sample(s, logits);
        assert_true(t == 10 || t == 20 || t == 30 || t == 40);
        count[t / 10 - 1]++;
    }
    for (int i = 0; i < 4; i++) freq[i] = (double)count[i] / DRAWS;
    lp_sampler_free(s);
}

static void test_greedy(void **state) {
    (void)state;
    float logits[V];
    for (int i = 0; i < V; i++) logits[i] = sinf((float)i);
    logits[201] = 5.0f;
    lp_sampler_params p = plain();
    p.temperature = 0.0f;
    lp_sampler *s = lp_sampler_create(&p, V);
    for (int i = 0; i < 10; i++) assert_int_equal(lp_sampler_sample(s, logits), 201);
    lp_sampler_free(s);
    assert_int_equal(lp_argmax(logits, V), 201);
    /* top_k = 1 at any temperature and seed is greedy */
    p = plain();
    p.top_k = 1;
    p.temperature = 2.0f;
    for (uint64_t seed = 0; seed < 20; seed++) {
        p.seed = seed;
        s = lp_sampler_create(&p, V);
        assert_int_equal(lp_sampler_sample(s, logits), 201);
        lp_sampler_free(s);
    }
}

static void test_seeded(void **state) {
    (void)state;
    float logits[V];
    for (int i = 0; i < V; i++) logits[i] = (float)(i % 17) * 0.1f;
    lp_sampler_params p = plain();
    int32_t a[200], b[200], c[200];
    lp_sampler *s = lp_sampler_create(&p, V);
    for (int i = 0; i < 200; i++) a[i] = lp_sampler_sample(s, logits);
    lp_sampler_reset(s); /* same seed again: same stream */
    for (int i = 0; i < 200; i++) b[i] = lp_sampler_sample(s, logits);
    lp_sampler_free(s);
    p.seed = 8;
    s = lp_sampler_create(&p, V);
    for (int i = 0; i < 200; i++) c[i] = lp_sampler_sample(s, logits);
    lp_sampler_free(s);
    assert_memory_equal(a, b, sizeof a);
    assert_memory_not_equal(a, c, sizeof a);
}

static void test_distribution(void **state) {
    (void)state;
    float logits[V];
    four_way(logits);
    double f[4];
    lp_sampler_params p = plain();
    histogram(&p, logits, f);
    const double want[4] = {0.5, 0.3, 0.15, 0.05};
    for (int i = 0; i < 4; i++) assert_true(fabs(f[i] - want[i]) < 0.015);
    /* temperature 0.5 squares the odds: 0.25 : 0.09 : 0.0225 : 0.0025 */
    p.temperature = 0.5f;
    histogram(&p, logits, f);
    const double sq = 0.25 + 0.09 + 0.0225 + 0.0025;
    assert_true(fabs(f[0] - 0.25 / sq) < 0.015);
    assert_true(fabs(f[1] - 0.09 / sq) < 0.015);
}

static void test_truncation(void **state) {
    (void)state;
    float logits[V];
    four_way(logits);
    double f[4];
    /* top-p 0.75: {0.5, 0.3} is the smallest set with mass >= 0.75, renormalised 0.625 / 0.375 */
    lp_sampler_params p = plain();
    p.top_p = 0.75f;
    histogram(&p, logits, f);
    assert_true(f[2] == 0.0 && f[3] == 0.0);
    assert_true(fabs(f[0] - 0.625) < 0.015);
    /* min-p 0.2: keeps p >= 0.1, so 0.15 stays and 0.05 goes */
    p = plain();
    p.min_p = 0.2f;
    histogram(&p, logits, f);
    assert_true(f[2] > 0.1 && f[3] == 0.0);
    assert_true(fabs(f[0] - 0.5 / 0.95) < 0.015);
    /* top-k 2 */
    p = plain();
    p.top_k = 2;
    histogram(&p, logits, f);
    assert_true(f[2] == 0.0 && f[3] == 0.0 && f[0] > 0.55 && f[1] > 0.3);
    /* top-k 3 then top-p 0.9 of the renormalised {0.526, 0.316, 0.158}: all three needed */
    p.top_k = 3;
    p.top_p = 0.9f;
    histogram(&p, logits, f);
    assert_true(f[2] > 0.1 && f[3] == 0.0);
}

static int32_t greedy_after(const lp_sampler_params *p, const float *logits, const int32_t *seen, int n_seen) {
    lp_sampler *s = lp_sampler_create(p, V);
    for (int i = 0; i < n_seen; i++) lp_sampler_accept(s, seen[i]);
    int32_t t = lp_sampler_sample(s, logits);
    lp_sampler_free(s);
    return t;
}

static void test_penalties(void **state) {
    (void)state;
    float logits[V];
    for (int i = 0; i < V; i++) logits[i] = -5.0f;
    logits[1] = 2.0f, logits[2] = 1.9f;
    const int32_t once[] = {1}, twice[] = {1, 1};
    lp_sampler_params p = plain();
    p.temperature = 0.0f;
    assert_int_equal(greedy_after(&p, logits, once, 1), 1);
    /* repetition: 2.0 / 1.5 = 1.33 < 1.9 */
    p.repeat_penalty = 1.5f;
    assert_int_equal(greedy_after(&p, logits, once, 1), 2);
    /* a negative logit is multiplied: -1.0 * 1.5 = -1.5 falls below -1.2 */
    float neg[V];
    for (int i = 0; i < V; i++) neg[i] = -5.0f;
    neg[3] = -1.0f, neg[4] = -1.2f;
    const int32_t three[] = {3};
    assert_int_equal(greedy_after(&p, neg, three, 1), 4);
    /* presence: once is enough */
    p = plain();
    p.temperature = 0.0f;
    p.presence_penalty = 0.2f;
    assert_int_equal(greedy_after(&p, logits, once, 1), 2);
    /* frequency: 0.06 per occurrence, 2.0 - 0.06 > 1.9 but 2.0 - 0.12 < 1.9 */
    p = plain();
    p.temperature = 0.0f;
    p.frequency_penalty = 0.06f;
    assert_int_equal(greedy_after(&p, logits, once, 1), 1);
    assert_int_equal(greedy_after(&p, logits, twice, 2), 2);
    /* window: token 1 followed by 64 others has left the last-64 window */
    p = plain();
    p.temperature = 0.0f;
    p.repeat_penalty = 1.5f;
    int32_t hist[65];
    hist[0] = 1;
    for (int i = 1; i < 65; i++) hist[i] = 100 + i;
    assert_int_equal(greedy_after(&p, logits, hist, 65), 1);
    assert_int_equal(greedy_after(&p, logits, hist, 64), 2);
    /* the logits passed in are not modified */
    assert_true(logits[1] == 2.0f);
}

static void test_stop_scan(void **state) {
    (void)state;
    const char *stops[] = {"world", "<|im_end|>", "wo!"};
    size_t safe;
    const char *t1 = "Hello wor";
    assert_int_equal(lp_stop_scan(t1, strlen(t1), stops, 3, &safe), -1);
    assert_int_equal(safe, 6); /* "wor" may become "world": held back */
    const char *t2 = "Hello world! <|im_end|>";
    assert_int_equal(lp_stop_scan(t2, strlen(t2), stops, 3, &safe), 0);
    assert_int_equal(safe, 6);
    const char *t3 = "a <|im_end|> world";
    assert_int_equal(lp_stop_scan(t3, strlen(t3), stops, 3, &safe), 1); /* earliest wins */
    assert_int_equal(safe, 2);
    const char *t4 = "nothing here";
    assert_int_equal(lp_stop_scan(t4, strlen(t4), stops, 3, &safe), -1);
    assert_int_equal(safe, strlen(t4));
    const char *t5 = "x <|im_e";
    assert_int_equal(lp_stop_scan(t5, strlen(t5), stops, 3, &safe), -1);
    assert_int_equal(safe, 2);
    assert_int_equal(lp_stop_scan("", 0, stops, 3, &safe), -1);
    assert_int_equal(safe, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy),     cmocka_unit_test(test_seeded),   cmocka_unit_test(test_distribution),
        cmocka_unit_test(test_truncation), cmocka_unit_test(test_penalties), cmocka_unit_test(test_stop_scan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
