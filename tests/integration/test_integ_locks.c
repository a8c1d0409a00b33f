/*
 * test_integ_locks.c: the lock service over HTTP on one real dsyncd.
 *
 * Replays the two scenarios of the original design (three readers then a
 * writer; two clients crossing on keys a and b), leases and blocking
 * waits, every kind of bad request (each with its error and no change to
 * the table), and eight threads taking turns on one exclusive lock.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "harness.h"

static int setup(void **state)
{
    *state = h_node_new(NULL);
    return *state ? 0 : -1;
}

static int teardown(void **state)
{
    return h_node_free(*state);
}

/* POST /locks/acquire; returns the parsed answer, status in *status. */
static json_t *acquire(h_node *n, const char *client, const char *key, const char *mode,
                       const char *extra, int *status)
{
    char body[512];
    snprintf(body, sizeof body, "{\"key\":\"%s\",\"client_id\":\"%s\",\"mode\":\"%s\"%s%s}", key,
             client, mode, extra ? "," : "", extra ? extra : "");
    json_t *j = h_json(n, "POST", "/locks/acquire", body, status);
    assert_non_null(j);
    return j;
}

static json_int_t granted(h_node *n, const char *client, const char *key, const char *mode)
{
    int st;
    json_t *j = acquire(n, client, key, mode, NULL, &st);
    assert_int_equal(st, 200);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "granted");
    assert_string_equal(json_string_value(json_object_get(j, "key")), key);
    assert_string_equal(json_string_value(json_object_get(j, "client_id")), client);
    assert_string_equal(json_string_value(json_object_get(j, "mode")), mode);
    json_int_t token = json_integer_value(json_object_get(j, "fencing_token"));
    assert_true(token > 0);
    assert_true(json_integer_value(json_object_get(j, "lease_ms")) > 0);
    json_decref(j);
    return token;
}

static void waiting(h_node *n, const char *client, const char *key, const char *mode,
                    json_int_t position)
{
    int st;
    json_t *j = acquire(n, client, key, mode, NULL, &st);
    assert_int_equal(st, 202);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "waiting");
    assert_int_equal(json_integer_value(json_object_get(j, "position")), position);
    json_decref(j);
}

static void release(h_node *n, const char *client, const char *key, int expect_status)
{
    char body[256];
    snprintf(body, sizeof body, "{\"key\":\"%s\",\"client_id\":\"%s\"}", key, client);
    int st;
    json_t *j = h_json(n, "POST", "/locks/release", body, &st);
    assert_int_equal(st, expect_status);
    if (st == 200)
        assert_string_equal(json_string_value(json_object_get(j, "status")), "released");
    else
        assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                            "not_found");
    json_decref(j);
}

static json_t *lock_of(json_t *state, const char *key)
{
    size_t i;
    json_t *l;
    json_array_foreach(json_object_get(state, "locks"), i, l)
    {
        if (strcmp(json_string_value(json_object_get(l, "key")), key) == 0) return l;
    }
    return NULL;
}

static bool has_edge(json_t *state, const char *waiter, const char *holder, const char *key)
{
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(state, "wait_for"), i, e)
    {
        if (!strcmp(json_string_value(json_object_get(e, "waiter")), waiter) &&
            !strcmp(json_string_value(json_object_get(e, "holder")), holder) &&
            !strcmp(json_string_value(json_object_get(e, "key")), key))
            return true;
    }
    return false;
}

static void test_three_readers_then_a_writer_that_is_not_starved(void **state)
{
    h_node *n = *state;
    json_int_t t1 = granted(n, "c1", "res", "S");
    json_int_t t2 = granted(n, "c2", "res", "S");
    json_int_t t3 = granted(n, "c3", "res", "S");
    assert_true(t1 < t2 && t2 < t3);
    waiting(n, "c4", "res", "X", 1);

    int st;
    json_t *s = h_json(n, "GET", "/locks/state", NULL, &st);
    assert_int_equal(st, 200);
    json_t *l = lock_of(s, "res");
    assert_non_null(l);
    assert_string_equal(json_string_value(json_object_get(l, "mode")), "S");
    assert_int_equal(json_array_size(json_object_get(l, "holders")), 3);
    assert_int_equal(json_array_size(json_object_get(l, "waiters")), 1);
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(l, "waiters"), 0), "client_id")),
                        "c4");
    assert_true(has_edge(s, "c4", "c1", "res") && has_edge(s, "c4", "c2", "res") &&
                has_edge(s, "c4", "c3", "res"));
    assert_int_equal(json_array_size(json_object_get(s, "wait_for")), 3);
    json_decref(s);

    /* A later reader queues behind the writer instead of overtaking it. */
    waiting(n, "c5", "res", "S", 2);
    s = h_json(n, "GET", "/locks/state", NULL, &st);
    assert_true(has_edge(s, "c5", "c4", "res"));
    assert_false(has_edge(s, "c5", "c1", "res"));
    json_decref(s);

    release(n, "c1", "res", 200);
    release(n, "c2", "res", 200);
    waiting(n, "c4", "res", "X", 1);
    release(n, "c3", "res", 200);
    json_int_t t4 = granted(n, "c4", "res", "X");
    assert_true(t4 > t3);
    waiting(n, "c5", "res", "S", 1);
    release(n, "c4", "res", 200);
    json_int_t t5 = granted(n, "c5", "res", "S");
    assert_true(t5 > t4);

    /* Every outcome was counted. */
    assert_true(h_metric(n, "locks_acquire_total{mode=\"S\",result=\"ok\"}") == 4);
    assert_true(h_metric(n, "locks_acquire_total{mode=\"S\",result=\"wait\"}") == 2);
    assert_true(h_metric(n, "locks_acquire_total{mode=\"X\",result=\"wait\"}") == 2);
    assert_true(h_metric(n, "locks_acquire_total{mode=\"X\",result=\"ok\"}") == 1);
    assert_true(h_metric(n, "locks_acquire_total{mode=\"X\",result=\"deadlock\"}") == 0);
    assert_true(h_metric(n, "locks_release_total{result=\"released\"}") == 4);
    assert_true(h_metric(n, "locks_held") == 1);
    assert_true(h_metric(n, "locks_waiting") == 0);
    assert_true(h_metric(n, "http_requests_total{method=\"POST\",path=\"/locks/acquire\","
                            "code=\"202\"}") == 4);
}

static void test_two_clients_crossing_on_a_and_b_are_refused_as_a_deadlock(void **state)
{
    h_node *n = *state;
    granted(n, "A", "a", "X");
    granted(n, "B", "b", "X");
    waiting(n, "A", "b", "X", 1);
    int st;
    json_t *j = acquire(n, "B", "a", "X", NULL, &st);
    assert_int_equal(st, 409);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "deadlock");
    json_t *cycle = json_object_get(j, "cycle");
    assert_int_equal(json_array_size(cycle), 2);
    assert_string_equal(json_string_value(json_array_get(cycle, 0)), "B");
    assert_string_equal(json_string_value(json_array_get(cycle, 1)), "A");
    json_decref(j);

    /* The refused request left no trace in the queue of a. */
    json_t *s = h_json(n, "GET", "/locks/state", NULL, &st);
    assert_int_equal(json_array_size(json_object_get(lock_of(s, "a"), "waiters")), 0);
    assert_false(has_edge(s, "B", "A", "a"));
    json_decref(s);
    assert_true(h_metric(n, "locks_acquire_total{mode=\"X\",result=\"deadlock\"}") == 1);

    release(n, "B", "b", 200);
    granted(n, "A", "b", "X");
}

static void test_an_unrenewed_lease_frees_the_lock_for_a_blocked_waiter(void **state)
{
    h_node *n = *state;
    int st;
    json_t *j = acquire(n, "holder", "job", "X", "\"ttl_ms\":300", &st);
    assert_int_equal(st, 200);
    json_decref(j);
    long long start = h_now_ms();
    j = acquire(n, "waiter", "job", "X", "\"wait_ms\":5000", &st);
    long long took = h_now_ms() - start;
    assert_int_equal(st, 200);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "granted");
    json_decref(j);
    assert_true(took >= 200 && took < 4000);
    release(n, "holder", "job", 404);
    assert_true(h_metric(n, "locks_lease_expired_total{party=\"holder\"}") == 1);
}

static void test_renewing_a_lease_keeps_the_lock(void **state)
{
    h_node *n = *state;
    int st;
    json_t *j = acquire(n, "h", "k", "X", "\"ttl_ms\":300", &st);
    json_int_t token = json_integer_value(json_object_get(j, "fencing_token"));
    json_decref(j);
    for (int i = 0; i < 4; i++) {
        struct timespec ts = {0, 150 * 1000000L};
        nanosleep(&ts, NULL);
        j = acquire(n, "h", "k", "X", "\"ttl_ms\":300", &st);
        assert_int_equal(st, 200);
        /* Renewal keeps the grant: same fencing token. */
        assert_int_equal(json_integer_value(json_object_get(j, "fencing_token")), token);
        json_decref(j);
    }
    waiting(n, "other", "k", "X", 1);
}

typedef struct {
    h_node *n;
    long long delay_ms;
} release_later_arg;

static void *release_later(void *p)
{
    release_later_arg *a = p;
    struct timespec ts = {0, a->delay_ms * 1000000L};
    nanosleep(&ts, NULL);
    int st;
    json_decref(h_json(a->n, "POST", "/locks/release", "{\"key\":\"w\",\"client_id\":\"h\"}", &st));
    return NULL;
}

static void test_wait_ms_times_out_waiting_or_returns_the_grant(void **state)
{
    h_node *n = *state;
    granted(n, "h", "w", "X");
    long long start = h_now_ms();
    int st;
    json_t *j = acquire(n, "x", "w", "X", "\"wait_ms\":300", &st);
    assert_int_equal(st, 202);
    assert_int_equal(json_integer_value(json_object_get(j, "position")), 1);
    assert_true(h_now_ms() - start >= 300);
    json_decref(j);

    pthread_t t;
    release_later_arg a = {n, 200};
    pthread_create(&t, NULL, release_later, &a);
    j = acquire(n, "x", "w", "X", "\"wait_ms\":10000", &st);
    pthread_join(t, NULL);
    assert_int_equal(st, 200);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "granted");
    json_decref(j);
}

/* /locks/state without the lease_ms fields, which move with time. */
static char *stable_state(h_node *n)
{
    int st;
    json_t *s = h_json(n, "GET", "/locks/state", NULL, &st);
    assert_int_equal(st, 200);
    size_t i, k;
    json_t *l, *p;
    json_array_foreach(json_object_get(s, "locks"), i, l)
    {
        json_array_foreach(json_object_get(l, "holders"), k, p) json_object_del(p, "lease_ms");
        json_array_foreach(json_object_get(l, "waiters"), k, p) json_object_del(p, "lease_ms");
    }
    char *text = json_dumps(s, JSON_SORT_KEYS | JSON_COMPACT);
    json_decref(s);
    return text;
}

static void expect_error(h_resp *r, int status, const char *code)
{
    if (r->status != status || !r->body || !strstr(r->body, code))
        fail_msg("expected %d %s, got %d %s", status, code, r->status, r->body ? r->body : "");
    assert_non_null(strstr(r->content_type, "application/json"));
    json_t *j = json_loads(r->body, 0, NULL);
    assert_non_null(j);
    json_t *e = json_object_get(j, "error");
    assert_string_equal(json_string_value(json_object_get(e, "code")), code);
    assert_true(json_string_length(json_object_get(e, "message")) > 0);
    json_decref(j);
    h_resp_free(r);
}

/* An answer to HEAD carries headers only: a body would be read as the
 * start of the next answer on a kept-alive connection. */
static void test_a_head_request_gets_no_body_on_a_kept_alive_connection(void **state)
{
    h_node *n = *state;
    static const char two[] = "HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n"
                              "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    h_resp r;
    assert_int_equal(h_raw(n, two, sizeof two - 1, 5000, &r), 0);
    assert_true(r.status == 200 || r.status == 405);
    /* What follows the first answer's headers is the second answer. */
    assert_non_null(r.body);
    assert_int_equal(strncmp(r.body, "HTTP/1.1 200", 12), 0);
    h_resp_free(&r);
}

static void test_bad_requests_get_their_error_and_change_nothing(void **state)
{
    h_node *n = *state;
    granted(n, "c1", "k", "S");
    waiting(n, "c2", "k", "X", 1);
    char *before = stable_state(n);
    h_resp r;

    static const char *const invalid_field[] = {
        "{\"client_id\":\"c\",\"mode\":\"S\"}",
        "{\"key\":\"k\",\"mode\":\"S\"}",
        "{\"key\":\"k\",\"client_id\":\"c\"}",
        "{\"key\":\"\",\"client_id\":\"c\",\"mode\":\"S\"}",
        "{\"key\":5,\"client_id\":\"c\",\"mode\":\"S\"}",
        "{\"key\":\"k\",\"client_id\":\"c\",\"mode\":\"Q\"}",
        "{\"key\":\"k\",\"client_id\":\"c\",\"mode\":\"S\",\"ttl_ms\":0}",
        "{\"key\":\"k\",\"client_id\":\"c\",\"mode\":\"S\",\"ttl_ms\":-5}",
        "{\"key\":\"k\",\"client_id\":\"c\",\"mode\":\"S\",\"ttl_ms\":\"5\"}",
        "{\"key\":\"k\",\"client_id\":\"c\",\"mode\":\"S\",\"ttl_ms\":1.5}",
        "{\"key\":\"k\",\"client_id\":\"c\",\"mode\":\"S\",\"wait_ms\":99999999}",
        "{\"key\":\"k\",\"client_id\":[\"c\"],\"mode\":\"S\"}",
    };
    for (size_t i = 0; i < sizeof invalid_field / sizeof invalid_field[0]; i++) {
        h_http(n, "POST", "/locks/acquire", invalid_field[i], "", &r);
        expect_error(&r, 400, "invalid_field");
    }
    char long_key[400];
    memset(long_key, 'k', 257);
    long_key[257] = '\0';
    char body[600];
    snprintf(body, sizeof body, "{\"key\":\"%s\",\"client_id\":\"c\",\"mode\":\"S\"}", long_key);
    h_http(n, "POST", "/locks/acquire", body, "", &r);
    expect_error(&r, 400, "invalid_field");

    static const char *const invalid_json[] = {"{\"key\":\"k\",", "[1,2]", "\"str\"", "",
                                               "{\"key\":\"k\",\"key\":\"j\"}"};
    for (size_t i = 0; i < sizeof invalid_json / sizeof invalid_json[0]; i++) {
        h_http(n, "POST", "/locks/acquire", invalid_json[i], "", &r);
        expect_error(&r, 400, "invalid_json");
    }
    h_http(n, "POST", "/locks/release", "{\"key\":\"k\",\"client_id\":\"nobody\"}", "", &r);
    expect_error(&r, 404, "not_found");
    h_http(n, "GET", "/no/such/path", NULL, "", &r);
    expect_error(&r, 404, "not_found");

    h_http(n, "GET", "/locks/acquire", NULL, "", &r);
    assert_string_equal(r.allow, "POST");
    expect_error(&r, 405, "method_not_allowed");
    h_http(n, "POST", "/health", "{}", "", &r);
    assert_string_equal(r.allow, "GET");
    expect_error(&r, 405, "method_not_allowed");

    /* 2 MB against the 1 MiB default. */
    size_t big = 2 * 1024 * 1024;
    char *huge = malloc(big + 1);
    memset(huge, ' ', big);
    huge[0] = '{';
    huge[big - 1] = '}';
    huge[big] = '\0';
    h_http(n, "POST", "/locks/acquire", huge, "", &r);
    free(huge);
    expect_error(&r, 413, "payload_too_large");

    /* A declared terabyte is refused at once, without waiting for it. */
    static const char absurd[] = "POST /locks/acquire HTTP/1.1\r\nHost: x\r\n"
                                 "Content-Length: 1000000000000\r\n\r\n{";
    long long start = h_now_ms();
    h_raw(n, absurd, sizeof absurd - 1, 5000, &r);
    assert_true(h_now_ms() - start < 1000);
    expect_error(&r, 413, "payload_too_large");

    static const char twice[] = "POST /locks/acquire HTTP/1.1\r\nHost: x\r\n"
                                "Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}";
    h_raw(n, twice, sizeof twice - 1, 5000, &r);
    assert_string_equal(r.connection, "close");
    expect_error(&r, 400, "invalid_request");

    char *after = stable_state(n);
    assert_string_equal(before, after);
    free(before);
    free(after);
    h_http(n, "GET", "/health", NULL, "", &r);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    assert_true(h_metric(n, "http_requests_total{method=\"POST\",path=\"/locks/acquire\","
                            "code=\"400\"}") >= 18);
}

/* A misspelt setting in the environment is not an error there (other
 * tools share the DSYNC_ prefix), but it must not pass unseen. */
static void test_an_unknown_setting_in_the_environment_is_named_in_a_warning(void **state)
{
    (void)state;
    static const char *const env[] = {"DSYNC_RAFT_TIK_MS=5", NULL};
    h_node *n = h_node_new(env);
    assert_non_null(n);
    FILE *f = fopen(n->log_path, "r");
    assert_non_null(f);
    char log[65536];
    size_t len = fread(log, 1, sizeof log - 1, f);
    fclose(f);
    log[len] = '\0';
    assert_non_null(strstr(log, "warn: environment: DSYNC_RAFT_TIK_MS is not a dsyncd setting"));
    /* The settings the harness gives it are all known. */
    assert_null(strstr(log, "DSYNC_NODE_ID is not"));
    assert_null(strstr(log, "DSYNC_HTTP_ADDR is not"));
    assert_int_equal(h_node_free(n), 0);
}

/* civetweb's timeout bounds each wait for bytes, not a whole body: a
 * client dribbling its body a byte at a time must still be cut off at the
 * request deadline (408, connection closed, nothing applied), while one
 * that finishes within it is served. A body no handler reads closes the
 * connection instead of being read; a chunked one is refused. */
static void test_a_body_dribbled_past_the_request_deadline_gets_408(void **state)
{
    (void)state;
    static const char *const env[] = {"DSYNC_HTTP_REQUEST_TIMEOUT_MS=1000", NULL};
    h_node *n = h_node_new(env);
    assert_non_null(n);
    static const char body[] = "{\"key\":\"slow\",\"client_id\":\"c\",\"mode\":\"X\"}";
    char head[256];
    /* Keep-alive asked for: the server must close after the 408 itself. */
    int hl = snprintf(head, sizeof head,
                      "POST /locks/acquire HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n",
                      sizeof body - 1);

    /* The whole body at 10 bytes a second would take 4 s: it is cut off
     * after the 1 s deadline (and at most a quarter of it late). */
    h_resp r;
    long long start = h_now_ms();
    assert_int_equal(h_raw_dribble(n, head, (size_t)hl, body, 100, 10000, &r), 0);
    long long took = h_now_ms() - start;
    assert_int_equal(r.status, 408);
    assert_non_null(strstr(r.body, "\"request_timeout\""));
    assert_string_equal(r.connection, "close");
    h_resp_free(&r);
    assert_true(took >= 900 && took < 3000);
    int st;
    json_t *s = h_json(n, "GET", "/locks/state", NULL, &st);
    assert_int_equal(st, 200);
    assert_null(lock_of(s, "slow"));
    json_decref(s);
    assert_int_equal(h_metric(n, "http_requests_total{method=\"POST\",path=\"/locks/acquire\","
                                 "code=\"408\"}"),
                     1);

    /* A body on a route that reads none (here a GET) is not read after the
     * answer, as civetweb would to keep the connection: it is closed. */
    static const char get_head[] =
        "GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n";
    start = h_now_ms();
    assert_int_equal(h_raw_dribble(n, get_head, sizeof get_head - 1, body, 100, 10000, &r), 0);
    took = h_now_ms() - start;
    assert_int_equal(r.status, 200);
    assert_string_equal(r.connection, "close");
    h_resp_free(&r);
    assert_true(took < 900);

    /* A chunked body is refused at once: it could not be held to a
     * deadline. */
    static const char chunked_head[] = "POST /locks/acquire HTTP/1.1\r\nHost: x\r\n"
                                       "Transfer-Encoding: chunked\r\n\r\n";
    char chunked[128];
    snprintf(chunked, sizeof chunked, "%zx\r\n%s\r\n0\r\n\r\n", sizeof body - 1, body);
    start = h_now_ms();
    assert_int_equal(
        h_raw_dribble(n, chunked_head, sizeof chunked_head - 1, chunked, 100, 10000, &r), 0);
    took = h_now_ms() - start;
    assert_int_equal(r.status, 411);
    assert_non_null(strstr(r.body, "\"length_required\""));
    assert_string_equal(r.connection, "close");
    h_resp_free(&r);
    assert_true(took < 900);

    /* The first body a byte each 5 ms (0.2 s) is within the deadline. */
    hl = snprintf(head, sizeof head,
                  "POST /locks/acquire HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  "Content-Length: %zu\r\n\r\n",
                  sizeof body - 1);
    assert_int_equal(h_raw_dribble(n, head, (size_t)hl, body, 5, 10000, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"granted\""));
    h_resp_free(&r);
    assert_int_equal(h_node_free(n), 0);
}

static void test_a_node_killed_with_sigkill_restarts_with_every_granted_lock(void **state)
{
    h_node *n = *state;
    json_int_t t1 = granted(n, "h1", "k1", "X");
    json_int_t t2 = granted(n, "h2", "k2", "S");
    waiting(n, "w", "k1", "X", 1);
    h_node_kill9(n);
    assert_int_equal(h_node_start(n), 0);

    int st;
    json_t *s = h_json(n, "GET", "/locks/state", NULL, &st);
    json_t *l1 = lock_of(s, "k1"), *l2 = lock_of(s, "k2");
    assert_non_null(l1);
    assert_non_null(l2);
    json_t *h = json_array_get(json_object_get(l1, "holders"), 0);
    assert_string_equal(json_string_value(json_object_get(h, "client_id")), "h1");
    assert_int_equal(json_integer_value(json_object_get(h, "fencing_token")), t1);
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(l1, "waiters"), 0), "client_id")),
                        "w");
    assert_int_equal(json_integer_value(json_object_get(
                         json_array_get(json_object_get(l2, "holders"), 0), "fencing_token")),
                     t2);
    json_decref(s);
    /* The holder is still the holder; new grants get larger tokens. */
    assert_int_equal(granted(n, "h1", "k1", "X"), t1);
    release(n, "h1", "k1", 200);
    assert_true(granted(n, "w", "k1", "X") > t2);
}

typedef struct {
    h_node *n;
    int id;
    pthread_mutex_t *mu;
    int *inside;
    json_int_t *last_token;
    int violations;
} worker_arg;

static void *worker(void *p)
{
    worker_arg *a = p;
    char body[128];
    snprintf(body, sizeof body,
             "{\"key\":\"hot\",\"client_id\":\"w%d\",\"mode\":\"X\",\"wait_ms\":20000}", a->id);
    char rel[128];
    snprintf(rel, sizeof rel, "{\"key\":\"hot\",\"client_id\":\"w%d\"}", a->id);
    for (int i = 0; i < 30; i++) {
        int st;
        json_t *j = h_json(a->n, "POST", "/locks/acquire", body, &st);
        if (st != 200 || !j) {
            a->violations++;
            json_decref(j);
            continue;
        }
        json_int_t token = json_integer_value(json_object_get(j, "fencing_token"));
        json_decref(j);
        pthread_mutex_lock(a->mu);
        if (*a->inside || token <= *a->last_token) a->violations++;
        *a->inside = 1;
        *a->last_token = token;
        pthread_mutex_unlock(a->mu);
        pthread_mutex_lock(a->mu);
        *a->inside = 0;
        pthread_mutex_unlock(a->mu);
        json_decref(h_json(a->n, "POST", "/locks/release", rel, &st));
        if (st != 200) a->violations++;
    }
    return NULL;
}

static void test_eight_clients_take_turns_on_one_exclusive_lock(void **state)
{
    h_node *n = *state;
    enum { T = 8 };
    pthread_t th[T];
    worker_arg args[T];
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    int inside = 0;
    json_int_t last = 0;
    for (int i = 0; i < T; i++) {
        args[i] = (worker_arg){n, i, &mu, &inside, &last, 0};
        pthread_create(&th[i], NULL, worker, &args[i]);
    }
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].violations, 0);
    }
    assert_true(last >= T * 30);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_three_readers_then_a_writer_that_is_not_starved, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_two_clients_crossing_on_a_and_b_are_refused_as_a_deadlock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_an_unrenewed_lease_frees_the_lock_for_a_blocked_waiter,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_renewing_a_lease_keeps_the_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wait_ms_times_out_waiting_or_returns_the_grant, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_head_request_gets_no_body_on_a_kept_alive_connection,
                                        setup, teardown),
        cmocka_unit_test(test_a_body_dribbled_past_the_request_deadline_gets_408),
        cmocka_unit_test(test_an_unknown_setting_in_the_environment_is_named_in_a_warning),
        cmocka_unit_test_setup_teardown(test_bad_requests_get_their_error_and_change_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_eight_clients_take_turns_on_one_exclusive_lock, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_a_node_killed_with_sigkill_restarts_with_every_granted_lock, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
