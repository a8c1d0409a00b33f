/* test_util.c: the hash map, byte buffer, hashes and error names. */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <jansson.h>

#include "dsync.h"
#include "util/util.h"

static void test_map_puts_gets_and_replaces(void **state)
{
    ut_map m;
    ut_map_init(&m);
    assert_null(ut_map_get(&m, "a"));
    int one = 1, two = 2;
    assert_int_equal(ut_map_put(&m, "a", &one), 0);
    assert_ptr_equal(ut_map_get(&m, "a"), &one);
    assert_int_equal(ut_map_put(&m, "a", &two), 0);
    assert_ptr_equal(ut_map_get(&m, "a"), &two);
    assert_int_equal(m.count, 1);
    assert_ptr_equal(ut_map_del(&m, "a"), &two);
    assert_null(ut_map_get(&m, "a"));
    assert_null(ut_map_del(&m, "a"));
    ut_map_close(&m);
}

/* Many inserts and deletes in a pseudo-random order, checked against a
 * plain array: exercises growth and backward-shift deletion. */
static void test_map_matches_a_reference_under_churn(void **state)
{
    enum { N = 5000 };
    static int present[N];
    static int vals[N];
    memset(present, 0, sizeof present);
    ut_map m;
    ut_map_init(&m);
    uint64_t x = 42;
    char key[32];
    for (int step = 0; step < 60000; step++) {
        x = ut_mix64(x + step);
        int k = (int)(x % N);
        snprintf(key, sizeof key, "key-%d", k);
        if (x & 0x100) {
            vals[k] = k;
            assert_int_equal(ut_map_put(&m, key, &vals[k]), 0);
            present[k] = 1;
        } else {
            void *v = ut_map_del(&m, key);
            assert_true(present[k] ? v == &vals[k] : v == NULL);
            present[k] = 0;
        }
    }
    size_t live = 0;
    for (int k = 0; k < N; k++) {
        snprintf(key, sizeof key, "key-%d", k);
        void *v = ut_map_get(&m, key);
        assert_true(present[k] ? v == &vals[k] : v == NULL);
        live += (size_t)present[k];
    }
    assert_int_equal(m.count, live);
    size_t seen = 0;
    const char *k;
    for (size_t it = 0; ut_map_next(&m, &it, &k, NULL);)
        seen++;
    assert_int_equal(seen, live);
    ut_map_close(&m);
}

static void test_buf_grows_and_detaches(void **state)
{
    ut_buf b;
    ut_buf_init(&b);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(ut_buf_printf(&b, "%d,", i), 0);
    assert_int_equal(ut_buf_printf(&b, "%s", "x"), 0);
    size_t len;
    char *s = ut_buf_detach(&b, &len);
    assert_non_null(s);
    assert_int_equal(strlen(s), len);
    assert_memory_equal(s, "0,1,2,", 6);
    assert_int_equal(s[len - 1], 'x');
    free(s);
    /* A long formatted string takes the slow path. */
    char big[600];
    memset(big, 'q', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(ut_buf_printf(&b, "<%s>", big), 0);
    assert_int_equal(b.len, sizeof big + 1);
    ut_buf_free(&b);
}

/* ut_buf_put_dec and ut_u64_dec write what printf writes: the edges, every
 * power of ten and its neighbours, and random values of every width. */
static void test_decimal_matches_printf(void **state)
{
    (void)state;
    int64_t edges[] = {0, 1, -1, 9, 10, -10, INT64_MAX, INT64_MIN, INT64_MIN + 1};
    int64_t v[4000];
    size_t n = 0;
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++)
        v[n++] = edges[i];
    for (int64_t p = 10;; p *= 10) { /* 10 to 10^18 */
        v[n++] = p - 1;
        v[n++] = p;
        v[n++] = -p;
        if (p > INT64_MAX / 10) break;
    }
    uint64_t seed = 42;
    while (n < sizeof v / sizeof v[0]) {
        uint64_t r = ut_rand_next(&seed);
        v[n++] = (int64_t)(r >> (r % 64)); /* every width */
    }
    ut_buf b;
    ut_buf_init(&b);
    for (size_t i = 0; i < n; i++) {
        char want[32], got[20];
        int wl = snprintf(want, sizeof want, "%" PRId64, v[i]);
        b.len = 0;
        assert_int_equal(ut_buf_put_dec(&b, v[i]), 0);
        assert_int_equal(b.len, (size_t)wl);
        assert_memory_equal(b.data, want, b.len);
        if (v[i] < 0) continue;
        assert_int_equal(ut_u64_dec(got, (uint64_t)v[i]), (size_t)wl);
        assert_memory_equal(got, want, (size_t)wl);
    }
    char got[20];
    assert_int_equal(ut_u64_dec(got, UINT64_MAX), 20);
    assert_memory_equal(got, "18446744073709551615", 20);
    ut_buf_free(&b);
}

static void test_crc32c_matches_the_standard_check_value(void **state)
{
    /* RFC 3720 B.4 check value for "123456789". */
    assert_int_equal(ut_crc32c(0, "123456789", 9), 0xe3069283);
    /* Chunked input gives the same CRC. */
    uint32_t c = ut_crc32c(0, "1234", 4);
    assert_int_equal(ut_crc32c(c, "56789", 5), 0xe3069283);
}

static void test_hash_spreads_similar_keys(void **state)
{
    /* Keys differing in one character land in different top bits. */
    int top_bits[16] = {0};
    char key[32];
    for (int i = 0; i < 1600; i++) {
        snprintf(key, sizeof key, "topic-%d", i);
        top_bits[ut_hash64(key, strlen(key), 0) >> 60]++;
    }
    for (int i = 0; i < 16; i++)
        assert_in_range(top_bits[i], 60, 140);
}

static void test_every_error_code_has_a_name_and_text(void **state)
{
    for (int code = 0; code >= DSYNC_ERR_MIN; code--) {
        assert_string_not_equal(dsync_errname(code), "EUNKNOWN");
        assert_string_not_equal(dsync_strerror(code), "unknown error");
    }
    assert_string_equal(dsync_errname(-999), "EUNKNOWN");
    assert_string_equal(dsync_version(), DSYNC_VERSION_STRING);
}

/* The simulations' generator is splitmix64: its published first outputs
 * from seed 0, and the same sequence again from the same seed. */
static void test_rand_next_is_splitmix64_and_repeats_from_its_seed(void **state)
{
    (void)state;
    uint64_t s = 0;
    assert_true(ut_rand_next(&s) == 0xe220a8397b1dcdafULL);
    assert_true(ut_rand_next(&s) == 0x6e789e6aa1b965f4ULL);
    uint64_t a = 42, b = 42;
    for (int i = 0; i < 1000; i++)
        assert_true(ut_rand_next(&a) == ut_rand_next(&b));
}

/* ---- JSON ---------------------------------------------------------------- */

/* Whether jansson takes s[0..len) as a string: its UTF-8 check. */
static bool jansson_takes(const char *s, size_t len)
{
    json_t *j = json_stringn(s, len);
    json_decref(j);
    return j != NULL;
}

/* Random bytes drawn mostly from where UTF-8 has its edges. */
static size_t random_bytes(uint64_t *rng, char *out, size_t cap)
{
    static const unsigned char edges[] = {0x00, 0x01, 0x1F, 0x20, 0x22, 0x2F, 0x41, 0x5C, 0x7F,
                                          0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2,
                                          0xDF, 0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xFF};
    size_t len = ut_rand_next(rng) % cap;
    for (size_t i = 0; i < len; i++) {
        uint64_t r = ut_rand_next(rng);
        out[i] = (char)(r % 3 ? edges[(r >> 8) % sizeof edges] : (unsigned char)(r >> 16));
    }
    return len;
}

/* The UTF-8 check accepts exactly what jansson accepts. */
static void test_utf8_check_agrees_with_jansson(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        size_t len;
        bool ok;
    } cases[] = {
        {NULL, 0, true},
        {"", 0, true},
        {"plain", 5, true},
        {"a\0b", 3, true},              /* NUL is a character */
        {"\xC3\xA9", 2, true},          /* e acute */
        {"\xF0\x9F\x98\x80", 4, true},  /* U+1F600 */
        {"\xF4\x8F\xBF\xBF", 4, true},  /* U+10FFFF */
        {"\xC3", 1, false},             /* cut short */
        {"\xC0\x80", 2, false},         /* overlong NUL */
        {"\xE0\x80\x80", 3, false},     /* overlong */
        {"\xF0\x80\x80\x80", 4, false}, /* overlong */
        {"\xED\xA0\x80", 3, false},     /* surrogate U+D800 */
        {"\xF4\x90\x80\x80", 4, false}, /* above U+10FFFF */
        {"\x80", 1, false},             /* continuation first */
        {"\xFF", 1, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(ut_utf8_valid(cases[i].s, cases[i].len), cases[i].ok);
        if (cases[i].s) assert_int_equal(jansson_takes(cases[i].s, cases[i].len), cases[i].ok);
    }
    uint64_t rng = 7;
    char buf[16];
    int valid = 0;
    for (int i = 0; i < 50000; i++) {
        size_t len = random_bytes(&rng, buf, sizeof buf);
        bool ok = ut_utf8_valid(buf, len);
        if (ok != jansson_takes(buf, len)) fail_msg("disagree at case %d (len %zu)", i, len);
        valid += ok;
    }
    assert_true(valid > 1000 && valid < 49000); /* both answers were tested */
}

/* A string literal written by ut_buf_json_str reads exactly as jansson's
 * compact dump of the same string. */
static void test_json_string_literal_matches_jansson(void **state)
{
    (void)state;
    ut_buf b;
    ut_buf_init(&b);
    assert_int_equal(ut_buf_json_str(&b, "a\"b\\c\n\x01/\xC3\xA9\x7F\t", 12), 0);
    assert_string_equal(b.data, "\"a\\\"b\\\\c\\n\\u0001/\xC3\xA9\x7F\\t\"");
    ut_buf_free(&b);
    assert_int_equal(ut_buf_json_str(&b, NULL, 0), 0);
    assert_string_equal(b.data, "\"\"");
    ut_buf_free(&b);

    uint64_t rng = 11;
    char in[16];
    int compared = 0;
    for (int i = 0; i < 50000; i++) {
        size_t len = random_bytes(&rng, in, sizeof in);
        json_t *j = json_stringn(in, len);
        if (!j) continue; /* not UTF-8: the writer's callers never pass it */
        char *want = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
        json_decref(j);
        assert_non_null(want);
        ut_buf_init(&b);
        assert_int_equal(ut_buf_json_str(&b, in, len), 0);
        if (strcmp(b.data, want) != 0) fail_msg("case %d: wrote %s, jansson %s", i, b.data, want);
        free(want);
        ut_buf_free(&b);
        compared++;
    }
    assert_true(compared > 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_map_puts_gets_and_replaces),
        cmocka_unit_test(test_map_matches_a_reference_under_churn),
        cmocka_unit_test(test_buf_grows_and_detaches),
        cmocka_unit_test(test_decimal_matches_printf),
        cmocka_unit_test(test_crc32c_matches_the_standard_check_value),
        cmocka_unit_test(test_hash_spreads_similar_keys),
        cmocka_unit_test(test_rand_next_is_splitmix64_and_repeats_from_its_seed),
        cmocka_unit_test(test_every_error_code_has_a_name_and_text),
        cmocka_unit_test(test_utf8_check_agrees_with_jansson),
        cmocka_unit_test(test_json_string_literal_matches_jansson),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
