/*
 * test_integ_client.c: dsync_client_* (include/dsync/client.h) against
 * real dsyncd processes, and against a scripted fake server for the
 * answers a real node does not give on demand.
 *
 * Real nodes: locks (grant, wait, deadlock, release), the queue (JSON
 * messages with escapes round-trip, ack, redelivery), the cache (works, or
 * is DSYNC_ENOTSUPP while the server has no cache endpoints), failover past
 * a dead address, and past a node cut off from its cluster (503).
 * Fake server: Retry-After honoured and bounded, malformed answers
 * refused with DSYNC_EPROTO, chunked answers, unknown endpoints, the key's
 * percent-encoding and the JSON escapes of what the client sends.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "dsync.h"
#include "harness.h"

static dsync_client *open_client(const char *addresses, const dsync_client_options *opt)
{
    dsync_client *c = NULL;
    assert_int_equal(dsync_client_open(addresses, opt, &c), 0);
    assert_non_null(c);
    return c;
}

static dsync_client *client_for(const h_node *n)
{
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", n->http_port);
    return open_client(addr, NULL);
}

static int setup_node(void **state)
{
    *state = h_node_new(NULL);
    return *state ? 0 : -1;
}

static int teardown_node(void **state)
{
    return h_node_free(*state);
}

/* ---- real node ----------------------------------------------------------- */

static void test_open_refuses_malformed_address_lists(void **state)
{
    (void)state;
    dsync_client *c = (dsync_client *)1;
    assert_int_equal(dsync_client_open("", NULL, &c), DSYNC_EINVAL);
    assert_null(c);
    assert_int_equal(dsync_client_open("127.0.0.1", NULL, &c), DSYNC_EINVAL);
    assert_int_equal(dsync_client_open("127.0.0.1:80x", NULL, &c), DSYNC_EINVAL);
    assert_int_equal(dsync_client_open("127.0.0.1:8081,,127.0.0.1:8082", NULL, &c), DSYNC_EINVAL);
    assert_int_equal(dsync_client_open(":8081", NULL, &c), DSYNC_EINVAL);
    c = open_client("http://127.0.0.1:8081, [::1]:8082", NULL);
    assert_string_equal(dsync_client_node(c), "127.0.0.1:8081");
    dsync_client_close(c);
    dsync_client_close(NULL);
}

static void test_locks_grant_wait_deadlock_and_release(void **state)
{
    dsync_client *c = client_for(*state);
    dsync_lock_request a = {
        .key = "k1", .client_id = "A", .mode = DSYNC_LOCK_EXCLUSIVE, .ttl_ms = 30000};
    dsync_lock_result r;
    assert_int_equal(dsync_client_lock_acquire(c, &a, &r), 0);
    assert_int_equal(r.status, DSYNC_LOCK_GRANTED);
    assert_true(r.fencing_token > 0);
    assert_true(r.lease_ms > 0 && r.lease_ms <= 30000);
    uint64_t first = r.fencing_token;
    assert_string_equal(dsync_client_errmsg(c), "");

    dsync_lock_request b = {.key = "k2", .client_id = "B", .mode = DSYNC_LOCK_EXCLUSIVE};
    assert_int_equal(dsync_client_lock_acquire(c, &b, &r), 0);
    assert_int_equal(r.status, DSYNC_LOCK_GRANTED);
    assert_true(r.fencing_token > first);

    /* A waits for k2 (held by B); B asking for k1 would close the cycle. */
    dsync_lock_request a2 = {.key = "k2", .client_id = "A", .mode = DSYNC_LOCK_EXCLUSIVE};
    assert_int_equal(dsync_client_lock_acquire(c, &a2, &r), 0);
    assert_int_equal(r.status, DSYNC_LOCK_WAITING);
    assert_int_equal(r.position, 1);
    dsync_lock_request b2 = {.key = "k1", .client_id = "B", .mode = DSYNC_LOCK_EXCLUSIVE};
    assert_int_equal(dsync_client_lock_acquire(c, &b2, &r), 0);
    assert_int_equal(r.status, DSYNC_LOCK_DEADLOCK);
    assert_int_equal(r.cycle_len, 2);
    assert_string_equal(r.cycle[0], "B");
    assert_string_equal(r.cycle[1], "A");

    /* B leaves k2: A's blocking acquire is granted. */
    int was_waiting = -1;
    assert_int_equal(dsync_client_lock_release(c, "k2", "B", &was_waiting), 0);
    assert_int_equal(was_waiting, 0);
    a2.wait_ms = 2000;
    assert_int_equal(dsync_client_lock_acquire(c, &a2, &r), 0);
    assert_int_equal(r.status, DSYNC_LOCK_GRANTED);

    assert_int_equal(dsync_client_lock_release(c, "k2", "nobody", NULL), DSYNC_ENOTFOUND);
    assert_non_null(strstr(dsync_client_errmsg(c), "HTTP 404 not_found"));
    dsync_lock_request bad = {.key = "k", .client_id = "A", .mode = 7};
    assert_int_equal(dsync_client_lock_acquire(c, &bad, &r), DSYNC_EINVAL);
    /* Refused by the server (over DSYNC_LOCK_MAX_TTL_MS): 400 -> EINVAL. */
    dsync_lock_request long_ttl = {
        .key = "k", .client_id = "A", .mode = DSYNC_LOCK_SHARED, .ttl_ms = 1ull << 40};
    assert_int_equal(dsync_client_lock_acquire(c, &long_ttl, &r), DSYNC_EINVAL);
    assert_non_null(strstr(dsync_client_errmsg(c), "HTTP 400 invalid_field"));
    dsync_client_close(c);
}

static void test_queue_messages_round_trip_with_escapes_and_come_back_unacked(void **state)
{
    dsync_client *c = client_for(*state);
    const char *msg = "{\"s\":\"q\\\"b\\\\s\\n\\u00e9\\u2603\",\"n\":[1,-2,null,true,{}]}";
    uint64_t id = 0;
    assert_int_equal(dsync_client_queue_enqueue(c, "jobs", msg, &id), 0);
    assert_int_equal(id, 1);
    assert_int_equal(dsync_client_queue_enqueue(c, "jobs", "\"plain string\"", &id), 0);
    assert_int_equal(id, 2);
    assert_int_equal(dsync_client_queue_enqueue(c, "jobs", "{\"a\":1,}", &id), DSYNC_EINVAL);
    assert_int_equal(dsync_client_queue_enqueue(c, "jobs", "{\"a\":1,\"a\":2}", &id), DSYNC_EINVAL);
    assert_int_equal(dsync_client_queue_enqueue(c, "jobs", "1 2", &id), DSYNC_EINVAL);

    dsync_consume_request req = {
        .topic = "jobs", .consumer_id = "w", .max = 10, .visibility_ms = 300};
    dsync_queue_msg *m;
    size_t n;
    assert_int_equal(dsync_client_queue_consume(c, &req, &m, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(m[0].id, 1);
    /* The compact text of the same value: escapes decoded and re-encoded. */
    json_t *want = json_loads(msg, 0, NULL), *got = json_loadb(m[0].body, m[0].len, 0, NULL);
    assert_non_null(got);
    assert_true(json_equal(want, got));
    json_decref(want);
    json_decref(got);
    assert_int_equal(strlen(m[0].body), m[0].len);
    assert_string_equal(m[1].body, "\"plain string\"");
    assert_int_equal(m[0].deliveries, 1);
    assert_int_equal(strlen(m[0].receipt), DSYNC_RECEIPT_LEN);
    assert_int_equal(dsync_client_queue_ack(c, "jobs", m[1].receipt), 0);
    assert_int_equal(dsync_client_queue_ack(c, "jobs", m[1].receipt), DSYNC_ENOTFOUND);
    dsync_queue_msgs_free(m, n);

    /* Message 1 was not acked: it comes back after its visibility. */
    req.wait_ms = 3000;
    req.visibility_ms = 30000;
    assert_int_equal(dsync_client_queue_consume(c, &req, &m, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(m[0].id, 1);
    assert_int_equal(m[0].deliveries, 2);
    assert_int_equal(dsync_client_queue_ack(c, "jobs", m[0].receipt), 0);
    dsync_queue_msgs_free(m, n);

    /* An empty topic: a long poll that ends with nothing. */
    req.wait_ms = 200;
    long long t0 = h_now_ms();
    assert_int_equal(dsync_client_queue_consume(c, &req, &m, &n), 0);
    assert_int_equal(n, 0);
    assert_null(m);
    assert_true(h_now_ms() - t0 >= 150);
    dsync_client_close(c);
}

static void test_cache_works_or_says_the_server_has_no_cache(void **state)
{
    dsync_client *c = client_for(*state);
    int rc = dsync_client_cache_put(c, "greeting", "hello \"you\"", 11);
    char *value = NULL;
    char st = 0;
    if (rc == DSYNC_ENOTSUPP) {
        /* Until the cache lands in dsyncd: a clear error, not "not found". */
        assert_non_null(strstr(dsync_client_errmsg(c), "no such endpoint"));
        assert_int_equal(dsync_client_cache_get(c, "greeting", &value, NULL, &st), DSYNC_ENOTSUPP);
        assert_null(value);
        print_message("cache endpoints absent on this dsyncd: checked DSYNC_ENOTSUPP only\n");
    } else {
        assert_int_equal(rc, 0);
        size_t len = 0;
        assert_int_equal(dsync_client_cache_get(c, "greeting", &value, &len, &st), 0);
        assert_string_equal(value, "hello \"you\"");
        assert_int_equal(len, 11);
        assert_true(st == 'M' || st == 'E' || st == 'S');
        free(value);
        assert_int_equal(dsync_client_cache_get(c, "no such key", &value, NULL, &st),
                         DSYNC_ENOTFOUND);
    }
    dsync_client_close(c);
}

/* A value of 600 KB goes to a real node and comes back whole. */
static void test_a_large_value_round_trips(void **state)
{
    dsync_client *c = client_for(*state);
    size_t len = 600 * 1024;
    char *big = malloc(len + 1);
    assert_non_null(big);
    for (size_t i = 0; i < len; i++)
        big[i] = (char)('a' + i % 26);
    big[len] = '\0';
    assert_int_equal(dsync_client_cache_put(c, "big", big, len), 0);
    char *value = NULL;
    size_t got = 0;
    assert_int_equal(dsync_client_cache_get(c, "big", &value, &got, NULL), 0);
    assert_int_equal(got, len);
    assert_memory_equal(value, big, len);
    free(value);
    free(big);
    dsync_client_close(c);
}

static void test_a_dead_first_address_fails_over_to_the_next(void **state)
{
    const h_node *n = *state;
    char addrs[64];
    int dead = h_free_port();
    snprintf(addrs, sizeof addrs, "127.0.0.1:%d,127.0.0.1:%d", dead, n->http_port);
    dsync_client *c = open_client(addrs, NULL);
    dsync_lock_request req = {.key = "fo", .client_id = "F", .mode = DSYNC_LOCK_SHARED};
    dsync_lock_result r;
    assert_int_equal(dsync_client_lock_acquire(c, &req, &r), 0);
    assert_int_equal(r.status, DSYNC_LOCK_GRANTED);
    char live[32];
    snprintf(live, sizeof live, "127.0.0.1:%d", n->http_port);
    assert_string_equal(dsync_client_node(c), live);
    assert_int_equal(dsync_client_lock_release(c, "fo", "F", NULL), 0);
    dsync_client_close(c);

    /* Nothing alive: the call gives up within its retry timeout. */
    snprintf(addrs, sizeof addrs, "127.0.0.1:%d", dead);
    dsync_client_options opt = {.retry_timeout_ms = 300};
    c = open_client(addrs, &opt);
    long long t0 = h_now_ms();
    assert_int_equal(dsync_client_lock_acquire(c, &req, &r), DSYNC_EIO);
    assert_true(h_now_ms() - t0 < 2000);
    assert_non_null(strstr(dsync_client_errmsg(c), "Connection refused"));
    dsync_client_close(c);
}

/* Three nodes; the leader is cut off from the other two (fault switch):
 * it answers writes with 503, and a client that lists it first moves on. */
static void test_a_node_answering_503_fails_over_and_retry_after_is_bounded(void **state)
{
    (void)state;
    static const char *const env[] = {"DSYNC_FAULT_INJECTION=1", NULL};
    h_cluster cl;
    assert_int_equal(h_cluster_start(&cl, 3, env), 0);
    int l = h_cluster_leader(&cl, 0, 5000);
    assert_true(l >= 0);
    for (int i = 0; i < 3; i++) {
        char drop[32];
        if (i == l)
            snprintf(drop, sizeof drop, "%d,%d", cl.nodes[(l + 1) % 3].node_id,
                     cl.nodes[(l + 2) % 3].node_id);
        else
            snprintf(drop, sizeof drop, "%d", cl.nodes[l].node_id);
        int st;
        json_decref(h_post(&cl.nodes[i], "/admin/faults", &st, "{\"drop_peers\":[%s]}", drop));
        assert_int_equal(st, 200);
    }

    /* Once it has stepped down (CheckQuorum) it knows no leader and answers
     * every write with 503 at once. */
    long long deadline = h_now_ms() + 5000;
    while (h_health_int(&cl.nodes[l], "leader_id") != 0 && h_now_ms() < deadline)
        usleep(20000);
    assert_int_equal(h_health_int(&cl.nodes[l], "leader_id"), 0);

    char only_cut[32], cut_first[64];
    snprintf(only_cut, sizeof only_cut, "127.0.0.1:%d", cl.nodes[l].http_port);
    snprintf(cut_first, sizeof cut_first, "%s,127.0.0.1:%d", only_cut,
             cl.nodes[(l + 1) % 3].http_port);

    /* Only the cut-off node: 503 after 503, a pause of Retry-After (1 s)
     * cut to retry_after_max_ms between them, then EUNAVAILABLE. */
    dsync_client_options opt = {.retry_timeout_ms = 1200, .retry_after_max_ms = 300};
    dsync_client *c = open_client(only_cut, &opt);
    dsync_lock_request req = {.key = "cut", .client_id = "C", .mode = DSYNC_LOCK_EXCLUSIVE};
    dsync_lock_result r;
    long long t0 = h_now_ms();
    assert_int_equal(dsync_client_lock_acquire(c, &req, &r), DSYNC_EUNAVAILABLE);
    long long took = h_now_ms() - t0;
    const char *err = dsync_client_errmsg(c);
    print_message("cut-off node only, %lld ms: %s\n", took, err);
    assert_non_null(strstr(err, "HTTP 503 unavailable"));
    /* Kept trying for its retry timeout, pausing 300 ms, not 1 s, between. */
    int attempts = 0;
    assert_int_equal(sscanf(err, "gave up after %d attempt", &attempts), 1);
    assert_true(attempts >= 3);
    assert_true(took >= 600 && took < 3000);
    dsync_client_close(c);

    /* The cut-off node first, a majority node next: granted there. */
    c = open_client(cut_first, NULL);
    assert_int_equal(dsync_client_lock_acquire(c, &req, &r), 0);
    assert_int_equal(r.status, DSYNC_LOCK_GRANTED);
    assert_string_not_equal(dsync_client_node(c), only_cut);
    /* The connection to the node that answered is kept for the next call. */
    assert_int_equal(dsync_client_lock_release(c, "cut", "C", NULL), 0);
    assert_string_not_equal(dsync_client_node(c), only_cut);
    dsync_client_close(c);
    assert_int_equal(h_cluster_destroy(&cl), 0);
}

/* ---- fake server ----------------------------------------------------------- */

/* Answers each request with the next scripted answer (raw bytes, sent as
 * they are but for "Content-Length: @", where @ becomes the length of what
 * follows the blank line), recording the request; closes the connection
 * after an answer with "Connection: close" and after the last one. */
typedef struct {
    int listen_fd;
    int port;
    const char *const *answers;
    int n_answers;
    char last_request[8192];
    int requests;
    long long answered_at[8];
    pthread_t thread;
} fake_server;

static void *fake_main(void *arg)
{
    fake_server *f = arg;
    int fd = -1;
    while (f->requests < f->n_answers) {
        if (fd < 0) {
            fd = accept(f->listen_fd, NULL, NULL);
            if (fd < 0) break;
        }
        /* Headers, then Content-Length bytes of body. */
        char buf[8192];
        size_t len = 0;
        buf[0] = '\0';
        char *end = NULL;
        while (!(end = strstr(buf, "\r\n\r\n"))) {
            ssize_t k = recv(fd, buf + len, sizeof buf - 1 - len, 0);
            if (k <= 0) break;
            len += (size_t)k;
            buf[len] = '\0';
        }
        if (!end) {
            close(fd);
            fd = -1;
            continue;
        }
        const char *cl = strstr(buf, "Content-Length: ");
        size_t want = (size_t)(end + 4 - buf) + (cl ? (size_t)atol(cl + 16) : 0);
        while (len < want && len < sizeof buf - 1) {
            ssize_t k = recv(fd, buf + len, sizeof buf - 1 - len, 0);
            if (k <= 0) break;
            len += (size_t)k;
        }
        buf[len] = '\0';
        memcpy(f->last_request, buf, len + 1);
        char answer[4096];
        snprintf(answer, sizeof answer, "%s", f->answers[f->requests]);
        char *at = strstr(answer, "Content-Length: @"), *blank = strstr(answer, "\r\n\r\n");
        if (at && blank) {
            char rest[4096];
            snprintf(rest, sizeof rest, "%zu%s", strlen(blank + 4), at + 17);
            snprintf(at + 16, sizeof answer - (size_t)(at + 16 - answer), "%s", rest);
        }
        if (f->requests < 8) f->answered_at[f->requests] = h_now_ms();
        f->requests++;
        (void)send(fd, answer, strlen(answer), MSG_NOSIGNAL);
        if (strstr(answer, "Connection: close") || f->requests == f->n_answers) {
            close(fd);
            fd = -1;
        }
    }
    if (fd >= 0) close(fd);
    return NULL;
}

/* A socket listening on a free loopback port (*port); rcvbuf > 0 sets the
 * receive buffer of the connections it accepts. */
static int listen_loopback(int rcvbuf, int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    if (rcvbuf > 0)
        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf), 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t sl = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    *port = ntohs(sa.sin_port);
    assert_int_equal(listen(fd, 8), 0);
    return fd;
}

static void fake_start(fake_server *f, const char *const *answers, int n)
{
    memset(f, 0, sizeof *f);
    f->answers = answers;
    f->n_answers = n;
    f->listen_fd = listen_loopback(0, &f->port);
    assert_int_equal(pthread_create(&f->thread, NULL, fake_main, f), 0);
}

static void fake_stop(fake_server *f)
{
    shutdown(f->listen_fd, SHUT_RDWR); /* wakes an accept still waiting */
    pthread_join(f->thread, NULL);
    close(f->listen_fd);
}

static dsync_client *fake_client(const fake_server *f, const dsync_client_options *opt)
{
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", f->port);
    return open_client(addr, opt);
}

#define JSON_200(body)                                                                             \
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: @\r\n\r\n" body

static const char granted[] =
    JSON_200("{\"key\":\"k\",\"client_id\":\"c\",\"mode\":\"X\","
             "\"status\":\"granted\",\"fencing_token\":7,\"lease_ms\":1}");
static const char unavailable[] =
    "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: @\r\n\r\n"
    "{\"error\":{\"code\":\"unavailable\",\"message\":\"acquire: no leader\"}}";

static void test_retry_after_is_honoured_up_to_its_bound(void **state)
{
    (void)state;
    static const char *const script[] = {unavailable, granted};
    dsync_lock_request req = {.key = "k", .client_id = "c", .mode = DSYNC_LOCK_EXCLUSIVE};
    dsync_lock_result r;
    fake_server f;

    /* Retry-After: 1 with the default bound (2 s): a pause of 1 s. */
    fake_start(&f, script, 2);
    dsync_client *c = fake_client(&f, NULL);
    assert_int_equal(dsync_client_lock_acquire(c, &req, &r), 0);
    assert_int_equal(r.fencing_token, 7);
    dsync_client_close(c);
    fake_stop(&f);
    long long gap = f.answered_at[1] - f.answered_at[0];
    assert_true(gap >= 950 && gap < 1900);

    /* The same with retry_after_max_ms = 100: the pause is cut to 100 ms. */
    fake_start(&f, script, 2);
    dsync_client_options opt = {.retry_after_max_ms = 100};
    c = fake_client(&f, &opt);
    assert_int_equal(dsync_client_lock_acquire(c, &req, &r), 0);
    dsync_client_close(c);
    fake_stop(&f);
    gap = f.answered_at[1] - f.answered_at[0];
    assert_true(gap >= 90 && gap < 800);
}

/* A server that lets a big request sit in the socket buffers (kept small)
 * for a while before it reads it, so the client's send cannot go out in
 * one piece; it keeps the body and answers a cache PUT. */
typedef struct {
    int listen_fd, port;
    char *body;
    size_t body_len;
    pthread_t thread;
} slow_server;

static void *slow_main(void *arg)
{
    slow_server *s = arg;
    int fd = accept(s->listen_fd, NULL, NULL);
    if (fd < 0) return NULL;
    struct timespec pause = {0, 200 * 1000 * 1000};
    nanosleep(&pause, NULL);
    char head[8192];
    size_t len = 0;
    char *end = NULL;
    while (!end && len < sizeof head - 1) {
        ssize_t k = recv(fd, head + len, sizeof head - 1 - len, 0);
        if (k <= 0) break;
        len += (size_t)k;
        head[len] = '\0';
        end = strstr(head, "\r\n\r\n");
    }
    const char *cl = end ? strstr(head, "Content-Length: ") : NULL;
    size_t want = cl ? (size_t)atol(cl + 16) : 0, have = end ? len - (size_t)(end + 4 - head) : 0;
    s->body = malloc(want + 1);
    if (end && s->body && have <= want) {
        memcpy(s->body, end + 4, have);
        while (have < want) {
            ssize_t k = recv(fd, s->body + have, want - have, 0);
            if (k <= 0) break;
            have += (size_t)k;
        }
        s->body[have] = '\0';
        s->body_len = have;
    }
    static const char answer[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 "Content-Length: 43\r\nConnection: close\r\n\r\n"
                                 "{\"status\":\"stored\",\"key\":\"big\",\"state\":\"M\"}";
    (void)send(fd, answer, sizeof answer - 1, MSG_NOSIGNAL);
    close(fd);
    return NULL;
}

/* A request far larger than the socket buffers goes out in pieces, head
 * and body in order and whole. */
static void test_a_request_larger_than_the_socket_buffers_goes_out_whole(void **state)
{
    (void)state;
    slow_server s = {0};
    s.listen_fd = listen_loopback(4096, &s.port);
    assert_int_equal(pthread_create(&s.thread, NULL, slow_main, &s), 0);

    size_t len = 8u << 20;
    char *big = malloc(len + 1);
    assert_non_null(big);
    for (size_t i = 0; i < len; i++)
        big[i] = (char)('a' + i % 26);
    big[len] = '\0';
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", s.port);
    dsync_client *c = open_client(addr, NULL);
    assert_int_equal(dsync_client_cache_put(c, "big", big, len), 0);
    dsync_client_close(c);
    pthread_join(s.thread, NULL);
    close(s.listen_fd);
    json_error_t err;
    json_t *j = s.body ? json_loadb(s.body, s.body_len, 0, &err) : NULL;
    assert_non_null(j);
    json_t *v = json_object_get(j, "value");
    assert_int_equal(json_string_length(v), len);
    assert_memory_equal(json_string_value(v), big, len);
    json_decref(j);
    free(s.body);
    free(big);
}

static void test_malformed_answers_are_refused(void **state)
{
    (void)state;
    static const char *const script[] = {
        /* not HTTP */
        "SMTP ready\r\n\r\n",
        /* JSON cut short */
        JSON_200("{\"a\":"),
        /* a JSON array, not an object */
        JSON_200("[]"),
        /* fencing token of the wrong type */
        JSON_200("{\"status\":\"granted\",\"fencing_token\":\"7\",\"lease_ms\":1}"),
        /* two different Content-Lengths */
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        /* a bad chunk size */
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        /* duplicate keys */
        JSON_200("{\"status\":\"granted\",\"status\":\"x\",\"fencing_token\":1}"),
        /* a status the contract does not have */
        "HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n",
    };
    enum { N = sizeof script / sizeof script[0] };
    fake_server f;
    fake_start(&f, script, N);
    dsync_client *c = fake_client(&f, NULL);
    dsync_lock_request req = {.key = "k", .client_id = "c", .mode = DSYNC_LOCK_EXCLUSIVE};
    dsync_lock_result r;
    for (int i = 0; i < N; i++) {
        int rc = dsync_client_lock_acquire(c, &req, &r);
        if (rc != DSYNC_EPROTO) print_message("answer %d: %s\n", i, dsync_client_errmsg(c));
        assert_int_equal(rc, DSYNC_EPROTO);
        assert_int_equal(r.status, 0);
    }
    dsync_client_close(c);
    fake_stop(&f);
}

static void test_chunked_answers_escapes_and_unknown_endpoints(void **state)
{
    (void)state;
    static const char *const script[] = {
        /* chunked, with an extension and a trailer; the value has escapes */
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        "14;x=y\r\n{\"key\":\"a b/\\u00e9\",\r\n"
        "26\r\n\"value\":\"q\\\"b\\\\s\\n\\u00e9\",\"state\":\"S\"}\r\n"
        "0\r\nX-Trailer: 1\r\n\r\n",
        /* a server without the cache */
        "HTTP/1.1 404 Not Found\r\nContent-Length: @\r\n\r\n"
        "{\"error\":{\"code\":\"not_found\",\"message\":\"no such endpoint: /cache/put\"}}",
        "HTTP/1.1 404 Not Found\r\nContent-Length: @\r\n\r\n"
        "{\"error\":{\"code\":\"not_found\",\"message\":\"no such endpoint: /cache/get\"}}",
        /* a server with it, and no such key */
        "HTTP/1.1 404 Not Found\r\nContent-Length: @\r\n\r\n"
        "{\"error\":{\"code\":\"not_found\",\"message\":\"no key \\\"zz\\\"\"}}",
    };
    fake_server f;
    fake_start(&f, script, 4);
    dsync_client *c = fake_client(&f, NULL);
    char *value;
    size_t len;
    char st;
    assert_int_equal(dsync_client_cache_get(c, "a b/\xc3\xa9", &value, &len, &st), 0);
    assert_non_null(strstr(f.last_request, "GET /cache/get?key=a%20b%2F%C3%A9 HTTP/1.1\r\n"));
    assert_string_equal(value, "q\"b\\s\n\xc3\xa9");
    assert_int_equal(len, 8);
    assert_int_equal(st, 'S');
    free(value);

    const char tricky[] = "say \"hi\"\\\n\t\x01 \xe2\x98\x83";
    assert_int_equal(dsync_client_cache_put(c, "k\"1", tricky, strlen(tricky)), DSYNC_ENOTSUPP);
    assert_non_null(strstr(dsync_client_errmsg(c), "no such endpoint: /cache/put"));
    /* What went out is JSON whose strings are exactly key and value. */
    json_t *sent = json_loads(strstr(f.last_request, "\r\n\r\n") + 4, 0, NULL);
    assert_non_null(sent);
    assert_string_equal(json_string_value(json_object_get(sent, "key")), "k\"1");
    assert_string_equal(json_string_value(json_object_get(sent, "value")), tricky);
    json_decref(sent);
    assert_int_equal(dsync_client_cache_get(c, "k", &value, NULL, NULL), DSYNC_ENOTSUPP);
    assert_null(value);
    assert_int_equal(dsync_client_cache_get(c, "zz", &value, NULL, NULL), DSYNC_ENOTFOUND);
    /* Not UTF-8: refused before anything is sent. */
    assert_int_equal(dsync_client_cache_put(c, "k", "\xff", 1), DSYNC_EINVAL);
    assert_int_equal(f.requests, 4);
    dsync_client_close(c);
    fake_stop(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_refuses_malformed_address_lists),
        cmocka_unit_test_setup_teardown(test_locks_grant_wait_deadlock_and_release, setup_node,
                                        teardown_node),
        cmocka_unit_test_setup_teardown(
            test_queue_messages_round_trip_with_escapes_and_come_back_unacked, setup_node,
            teardown_node),
        cmocka_unit_test_setup_teardown(test_cache_works_or_says_the_server_has_no_cache,
                                        setup_node, teardown_node),
        cmocka_unit_test_setup_teardown(test_a_large_value_round_trips, setup_node, teardown_node),
        cmocka_unit_test(test_a_request_larger_than_the_socket_buffers_goes_out_whole),
        cmocka_unit_test_setup_teardown(test_a_dead_first_address_fails_over_to_the_next,
                                        setup_node, teardown_node),
        cmocka_unit_test(test_a_node_answering_503_fails_over_and_retry_after_is_bounded),
        cmocka_unit_test(test_retry_after_is_honoured_up_to_its_bound),
        cmocka_unit_test(test_malformed_answers_are_refused),
        cmocka_unit_test(test_chunked_answers_escapes_and_unknown_endpoints),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
