/*
 * test_net.c: the peer transport on loopback: frames arrive whole and in
 * order, a peer that sends garbage is cut off, unknown nodes are refused,
 * the fault switch drops both ways, a restarted peer is re-dialled, and
 * the losses counter counts what may have been lost and nothing else.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "dsync/errors.h"
#include "net/net.h"

typedef struct {
    uint64_t from[64];
    uint8_t type[64];
    char payload[64][64];
    size_t n;
} inbox;

static void on_frame(void *ctx, uint64_t from, uint8_t type, const void *payload, size_t len)
{
    inbox *ib = ctx;
    if (ib->n >= 64) return;
    ib->from[ib->n] = from;
    ib->type[ib->n] = type;
    size_t n = len < 63 ? len : 63;
    memcpy(ib->payload[ib->n], payload, n);
    ib->payload[ib->n][n] = '\0';
    ib->n++;
}

static uint16_t free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t len = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &len);
    close(fd);
    return ntohs(sa.sin_port);
}

typedef struct {
    dsync_peer peers[2];
    nt_transport *t[2];
    inbox ib[2];
} pair;

static nt_transport *open_node(pair *p, int i)
{
    nt_options opt = {.self_id = p->peers[i].id,
                      .listen_addr = p->peers[i].addr,
                      .peers = p->peers,
                      .n_peers = 2,
                      .on_frame = on_frame,
                      .ctx = &p->ib[i],
                      .watch_types = 1ULL << NT_USER};
    char err[256];
    nt_transport *t;
    int rc = nt_open(&opt, &t, err, sizeof err);
    if (rc != 0) fail_msg("nt_open: %s", err);
    return t;
}

static int setup(void **state)
{
    pair *p = calloc(1, sizeof *p);
    for (int i = 0; i < 2; i++) {
        p->peers[i].id = (uint64_t)i + 1;
        snprintf(p->peers[i].addr, sizeof p->peers[i].addr, "127.0.0.1:%u", free_port());
    }
    p->t[0] = open_node(p, 0);
    p->t[1] = open_node(p, 1);
    *state = p;
    return 0;
}

static int teardown(void **state)
{
    pair *p = *state;
    nt_close(p->t[0]);
    nt_close(p->t[1]);
    free(p);
    return 0;
}

/* One turn of both nodes' loops. */
static void turn(pair *p, uint64_t now, int timeout_ms)
{
    struct pollfd fds[2][32];
    size_t n[2];
    for (int i = 0; i < 2; i++) {
        if (!p->t[i]) continue;
        nt_tick(p->t[i], now);
        n[i] = nt_pollfds(p->t[i], fds[i], 32);
        poll(fds[i], n[i], timeout_ms);
        nt_handle(p->t[i], fds[i], n[i], now);
    }
}

/* Runs turns until cond holds, for at most 3 s of real time. */
#define RUN_UNTIL(p, cond)                                                                         \
    do {                                                                                           \
        for (int _i = 0; _i < 3000 && !(cond); _i++)                                               \
            turn((p), (uint64_t)_i * 10 + 1000, 1);                                                \
        assert_true(cond);                                                                         \
    } while (0)

static void test_frames_arrive_whole_and_in_order(void **state)
{
    pair *p = *state;
    RUN_UNTIL(p, nt_connected(p->t[0], 2));
    for (int i = 0; i < 20; i++) {
        char msg[16];
        snprintf(msg, sizeof msg, "m%d", i);
        assert_int_equal(nt_send(p->t[0], 2, NT_USER + 1, msg, strlen(msg)), 0);
    }
    RUN_UNTIL(p, p->ib[1].n == 20);
    for (int i = 0; i < 20; i++) {
        char msg[16];
        snprintf(msg, sizeof msg, "m%d", i);
        assert_string_equal(p->ib[1].payload[i], msg);
        assert_int_equal(p->ib[1].from[i], 1);
        assert_int_equal(p->ib[1].type[i], NT_USER + 1);
    }
    assert_true(nt_last_heard(p->t[1], 1) > 0);
    assert_int_equal(nt_send(p->t[0], 99, NT_USER, "x", 1), DSYNC_ENOTFOUND);
}

static int raw_connect(const char *addr)
{
    char host[64];
    uint16_t port;
    assert_int_equal(nt_parse_addr(addr, host, sizeof host, &port), 0);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

static void test_a_peer_that_sends_garbage_is_disconnected(void **state)
{
    pair *p = *state;
    int fd = raw_connect(p->peers[1].addr);
    const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(send(fd, junk, sizeof junk - 1, 0), (ssize_t)(sizeof junk - 1));
    nt_stats st;
    RUN_UNTIL(p, (nt_get_stats(p->t[1], &st), st.protocol_errors == 1));
    assert_int_equal(p->ib[1].n, 0);
    /* The transport closed its end: a read sees EOF. */
    char c;
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    assert_int_equal(recv(fd, &c, 1, 0), 0);
    close(fd);
}

static void test_a_hello_from_an_unknown_node_is_refused(void **state)
{
    pair *p = *state;
    int fd = raw_connect(p->peers[1].addr);
    unsigned char frame[NT_HEADER + 9] = {'D', 'S', NT_VERSION, NT_HELLO, 9, 0, 0, 0};
    frame[NT_HEADER] = 77; /* node 77 is not a member */
    frame[NT_HEADER + 8] = NT_VERSION;
    uint32_t crc = ut_crc32c(0, frame + NT_HEADER, 9);
    for (int i = 0; i < 4; i++)
        frame[8 + i] = (unsigned char)(crc >> (8 * i));
    assert_int_equal(send(fd, frame, sizeof frame, 0), (ssize_t)sizeof frame);
    nt_stats st;
    RUN_UNTIL(p, (nt_get_stats(p->t[1], &st), st.protocol_errors == 1));
    close(fd);
}

static void test_a_bad_checksum_drops_the_connection_and_the_frame(void **state)
{
    pair *p = *state;
    RUN_UNTIL(p, nt_connected(p->t[0], 2));
    assert_int_equal(nt_send(p->t[0], 2, NT_USER, "ok", 2), 0);
    RUN_UNTIL(p, p->ib[1].n == 1);
    /* Forge a frame from a raw socket that first says HELLO as node 1. */
    int fd = raw_connect(p->peers[1].addr);
    unsigned char hello[NT_HEADER + 9] = {'D', 'S', NT_VERSION, NT_HELLO, 9, 0, 0, 0};
    hello[NT_HEADER] = 1;
    hello[NT_HEADER + 8] = NT_VERSION;
    uint32_t crc = ut_crc32c(0, hello + NT_HEADER, 9);
    for (int i = 0; i < 4; i++)
        hello[8 + i] = (unsigned char)(crc >> (8 * i));
    unsigned char bad[NT_HEADER + 3] = {'D', 'S', NT_VERSION, NT_USER, 3,   0,   0,  0,
                                        1,   2,   3,          4,       'b', 'a', 'd'};
    send(fd, hello, sizeof hello, 0);
    send(fd, bad, sizeof bad, 0);
    nt_stats st;
    RUN_UNTIL(p, (nt_get_stats(p->t[1], &st), st.protocol_errors == 1));
    assert_int_equal(p->ib[1].n, 1);
    close(fd);
}

static void test_the_fault_switch_drops_both_ways_until_healed(void **state)
{
    pair *p = *state;
    RUN_UNTIL(p, nt_connected(p->t[0], 2) && nt_connected(p->t[1], 1));
    uint64_t cut = 2;
    nt_set_drop(p->t[0], &cut, 1);
    assert_true(nt_dropping(p->t[0], 2));
    assert_int_equal(nt_send(p->t[0], 2, NT_USER, "a", 1), DSYNC_EUNAVAILABLE);
    assert_int_equal(nt_send(p->t[1], 1, NT_USER, "b", 1), 0);
    for (int i = 0; i < 50; i++)
        turn(p, 2000 + (uint64_t)i, 1);
    assert_int_equal(p->ib[0].n, 0);
    assert_int_equal(p->ib[1].n, 0);
    nt_set_drop(p->t[0], NULL, 0);
    assert_int_equal(nt_send(p->t[0], 2, NT_USER, "c", 1), 0);
    assert_int_equal(nt_send(p->t[1], 1, NT_USER, "d", 1), 0);
    RUN_UNTIL(p, p->ib[0].n == 1 && p->ib[1].n == 1);
    assert_string_equal(p->ib[1].payload[0], "c");
    assert_string_equal(p->ib[0].payload[0], "d");
}

static void test_a_restarted_peer_is_dialled_again(void **state)
{
    pair *p = *state;
    RUN_UNTIL(p, nt_connected(p->t[0], 2));
    nt_close(p->t[1]);
    p->t[1] = NULL;
    RUN_UNTIL(p, !nt_connected(p->t[0], 2) || nt_send(p->t[0], 2, NT_USER, "x", 1) != 0);
    p->t[1] = open_node(p, 1);
    p->ib[1].n = 0;
    RUN_UNTIL(p, nt_connected(p->t[0], 2));
    assert_int_equal(nt_send(p->t[0], 2, NT_USER, "again", 5), 0);
    RUN_UNTIL(p, p->ib[1].n >= 1);
    assert_string_equal(p->ib[1].payload[p->ib[1].n - 1], "again");
}

static uint64_t losses(nt_transport *t)
{
    nt_stats st;
    nt_get_stats(t, &st);
    return st.losses;
}

/* The losses counter: dials to a peer that is not there yet, a connection
 * that came up late, and frames of a type not watched lose nothing; a
 * connection that breaks after carrying a watched frame, and a watched
 * frame the fault switch drops on arrival, count. */
static void test_losses_count_only_what_may_have_been_lost(void **state)
{
    pair *p = *state;
    nt_close(p->t[1]);
    p->t[1] = NULL;
    for (int i = 0; i < 300; i++) /* 3 s of dials refused, backing off */
        turn(p, 1000 + (uint64_t)i * 10, 1);
    assert_false(nt_connected(p->t[0], 2));
    p->t[1] = open_node(p, 1);
    RUN_UNTIL(p, nt_connected(p->t[0], 2) && nt_connected(p->t[1], 1));
    assert_int_equal(losses(p->t[0]), 0);
    assert_int_equal(losses(p->t[1]), 0);

    /* Unwatched: the break costs no count. */
    assert_int_equal(nt_send(p->t[0], 2, NT_USER + 1, "u", 1), 0);
    RUN_UNTIL(p, p->ib[1].n == 1);
    nt_close(p->t[1]);
    p->t[1] = NULL;
    RUN_UNTIL(p, !nt_connected(p->t[0], 2));
    assert_int_equal(losses(p->t[0]), 0);

    /* Watched: it does. */
    p->t[1] = open_node(p, 1);
    p->ib[1].n = 0;
    RUN_UNTIL(p, nt_connected(p->t[0], 2) && nt_connected(p->t[1], 1));
    assert_int_equal(nt_send(p->t[0], 2, NT_USER, "a", 1), 0);
    RUN_UNTIL(p, p->ib[1].n == 1);
    nt_close(p->t[1]); /* the peer dies after the frame went out */
    p->t[1] = NULL;
    RUN_UNTIL(p, losses(p->t[0]) == 1);

    /* Dropped on arrival: only the watched one counts. */
    p->t[1] = open_node(p, 1);
    RUN_UNTIL(p, nt_connected(p->t[0], 2) && nt_connected(p->t[1], 1));
    uint64_t cut = 2;
    nt_set_drop(p->t[0], &cut, 1);
    assert_int_equal(nt_send(p->t[1], 1, NT_USER + 1, "x", 1), 0);
    assert_int_equal(nt_send(p->t[1], 1, NT_USER, "b", 1), 0);
    nt_stats st;
    RUN_UNTIL(p, (nt_get_stats(p->t[0], &st), st.frames_dropped == 2));
    assert_int_equal(losses(p->t[0]), 2);
    assert_int_equal(p->ib[0].n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_frames_arrive_whole_and_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_peer_that_sends_garbage_is_disconnected, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_hello_from_an_unknown_node_is_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_bad_checksum_drops_the_connection_and_the_frame,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_the_fault_switch_drops_both_ways_until_healed, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_restarted_peer_is_dialled_again, setup, teardown),
        cmocka_unit_test_setup_teardown(test_losses_count_only_what_may_have_been_lost, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
