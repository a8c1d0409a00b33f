/*
 * test_integ_examples.c: every program in examples/ run against a real
 * three-node dsyncd cluster (free loopback ports, temporary data
 * directories), its output checked.
 *
 * The examples are the binaries of `make` in $DSYNC_BIN (bin/ by default;
 * make check passes the build's own, the ASan build's under make
 * test-asan). Each run is bounded: a program still running at its
 * deadline is killed by PID and the test fails. The cache demo's check is
 * skipped, saying so, only while the cluster answers 404 to POST
 * /cache/put; it turns on by itself once dsyncd has the cache.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "harness.h"

static h_cluster cluster;
static char addrs[256]; /* every node, "127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3" */

typedef struct {
    int status; /* exit status; -1 when killed at the deadline or by a signal */
    char *out;  /* stdout and stderr together, NUL-terminated */
} run_result;

/*
 * Runs $DSYNC_BIN/name with the arguments (a NULL-ended list) and collects
 * its output until it exits; kills it (SIGKILL, by PID) if it is still
 * running after timeout_ms.
 */
static run_result run_example(const char *name, int timeout_ms, ...)
{
    const char *dir = getenv("DSYNC_BIN");
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir && *dir ? dir : "bin", name);
    char *argv[32];
    int argc = 0;
    argv[argc++] = path;
    va_list ap;
    va_start(ap, timeout_ms);
    for (char *a; argc < 31 && (a = va_arg(ap, char *));)
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;

    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(pipefd[1], 1);
        dup2(pipefd[1], 2);
        close(pipefd[0]);
        close(pipefd[1]);
        execv(path, argv);
        fprintf(stderr, "cannot run %s: %s\n", path, strerror(errno));
        _exit(127);
    }
    close(pipefd[1]);
    run_result r = {.status = -1, .out = NULL};
    size_t len = 0, cap = 4096;
    r.out = malloc(cap);
    assert_non_null(r.out);
    long long deadline = h_now_ms() + timeout_ms;
    bool timed_out = false;
    for (;;) {
        long long left = deadline - h_now_ms();
        if (left <= 0) {
            timed_out = true;
            break;
        }
        struct pollfd p = {.fd = pipefd[0], .events = POLLIN};
        int k = poll(&p, 1, (int)left);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) continue;
        if (len + 1024 > cap) {
            cap *= 2;
            r.out = realloc(r.out, cap);
            assert_non_null(r.out);
        }
        ssize_t n = read(pipefd[0], r.out + len, cap - len - 1);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break; /* end of output: the program has exited (or closed it) */
        len += (size_t)n;
    }
    r.out[len] = '\0';
    close(pipefd[0]);
    int st = 0;
    if (timed_out) kill(pid, SIGKILL);
    /* Its output ended; the exit follows at once (bounded all the same). */
    long long reap_deadline = h_now_ms() + 5000;
    while (waitpid(pid, &st, WNOHANG) == 0) {
        if (h_now_ms() >= reap_deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            timed_out = true;
            break;
        }
        usleep(5000);
    }
    if (!timed_out && WIFEXITED(st)) r.status = WEXITSTATUS(st);
    print_message("---- %s (exit %d%s) ----\n%s", name, r.status,
                  timed_out ? ", killed at its deadline" : "", r.out);
    return r;
}

static void expect_line(const run_result *r, const char *text)
{
    if (!strstr(r->out, text)) fail_msg("the output has no \"%s\"", text);
}

/* The ids after "<prefix>: N, ids:" into ids (at most max); returns N. */
static int parse_ids(const char *out, const char *prefix, long *ids, int max)
{
    const char *p = strstr(out, prefix);
    if (!p) return -1;
    p += strlen(prefix);
    int n = 0, k = 0;
    if (sscanf(p, ": %d, ids:%n", &n, &k) != 1 || k == 0) return -1;
    p += k;
    for (int i = 0; i < n && i < max; i++) {
        char *end;
        ids[i] = strtol(p, &end, 10);
        if (end == p) return -1;
        p = end;
    }
    return n;
}

static int setup_cluster(void **state)
{
    (void)state;
    if (h_cluster_start(&cluster, 3, NULL) != 0) return -1;
    snprintf(addrs, sizeof addrs, "127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d",
             cluster.nodes[0].http_port, cluster.nodes[1].http_port, cluster.nodes[2].http_port);
    return 0;
}

static int teardown_cluster(void **state)
{
    (void)state;
    return h_cluster_destroy(&cluster);
}

static void test_lock_client_keeps_critical_sections_apart_and_fences_a_stale_holder(void **state)
{
    (void)state;
    run_result r = run_example("lock_client", 60000, "-a", addrs, "-w", "4", "-n", "10", NULL);
    assert_int_equal(r.status, 0);
    expect_line(&r, "critical sections: 40 of 40, counter: 40 (expected 40)");
    expect_line(&r, "overlapping critical sections: 0");
    expect_line(&r, "writes refused by the storage: 0");
    expect_line(&r, "tokens strictly increasing: yes");
    expect_line(&r, "stale write after the lease ended rejected: yes");
    expect_line(&r, "result: ok");
    free(r.out);
}

static void test_a_worker_that_dies_unacked_has_its_messages_redelivered(void **state)
{
    (void)state;
    run_result p =
        run_example("queue_producer", 30000, "-a", addrs, "-t", "examples", "-n", "8", NULL);
    assert_int_equal(p.status, 0);
    expect_line(&p, "enqueued: 8 of 8 on topic \"examples\"");
    free(p.out);

    /* Takes three and dies (exit 3) with them in flight for 1 s. */
    run_result d = run_example("queue_worker", 30000, "-a", addrs, "-t", "examples", "-v", "1000",
                               "--die-after", "3", NULL);
    assert_int_equal(d.status, 3);
    long died[3], again[8];
    assert_int_equal(parse_ids(d.out, "died without acking", died, 3), 3);
    free(d.out);

    /* The next worker acks all eight; the three come back with deliveries 2. */
    run_result w = run_example("queue_worker", 60000, "-a", addrs, "-t", "examples", "-n", "8",
                               "-i", "20000", NULL);
    assert_int_equal(w.status, 0);
    expect_line(&w, "acked: 8");
    assert_int_equal(parse_ids(w.out, "redelivered (deliveries > 1)", again, 8), 3);
    for (int i = 0; i < 3; i++) {
        bool found = false;
        for (int j = 0; j < 3; j++)
            found |= again[j] == died[i];
        if (!found)
            fail_msg("message %ld died with the first worker but was not redelivered", died[i]);
        char line[64];
        snprintf(line, sizeof line, "got id=%ld deliveries=2 ", died[i]);
        expect_line(&w, line);
    }
    /* Escapes and non-ASCII text travel intact. */
    expect_line(&w, "\"task\":\"resize \\\"photo-1.jpg\\\" \xe2\x86\x92 thumbnail\"");
    free(w.out);
}

static void test_cache_demo_sees_the_invalidation_across_two_nodes(void **state)
{
    (void)state;
    h_resp probe;
    h_http(&cluster.nodes[0], "POST", "/cache/put", "{\"key\":\"probe\",\"value\":\"x\"}", "",
           &probe);
    int probe_status = probe.status;
    h_resp_free(&probe);

    char a[32], b[32];
    snprintf(a, sizeof a, "127.0.0.1:%d", cluster.nodes[0].http_port);
    snprintf(b, sizeof b, "127.0.0.1:%d", cluster.nodes[1].http_port);
    run_result r = run_example("cache_demo", 30000, "-A", a, "-B", b, NULL);
    if (probe_status == 404) {
        /* No cache in this dsyncd yet: the demo must say so, not crash. */
        assert_int_equal(r.status, 3);
        expect_line(&r, "the server has no cache endpoints yet");
        free(r.out);
        print_message("SKIPPED: cache_demo's check: dsyncd answers 404 for POST /cache/put (no "
                      "cache yet); it runs by itself once the cache lands\n");
        skip();
    }
    assert_int_equal(r.status, 0);
    expect_line(&r, "PUT on A: ");
    expect_line(&r, "GET on B: ");
    expect_line(&r, "invalidation seen: yes");
    expect_line(&r, "result: ok");
    if (strstr(r.out, "stale!")) fail_msg("a node returned an old value");
    free(r.out);
}

static void test_embedded_cluster_runs_three_nodes_in_one_process(void **state)
{
    (void)state;
    run_result r = run_example("embedded_cluster", 60000, NULL);
    assert_int_equal(r.status, 0);
    expect_line(&r, "every node agrees");
    expect_line(&r, "sees: \"inventory\" held X by alice");
    expect_line(&r, "bob asks X on \"inventory\" -> waiting, position 1");
    expect_line(&r, "bob asks again -> granted");
    expect_line(&r, "closed 3 node(s)");
    expect_line(&r, "result: ok");
    free(r.out);
}

static void test_lock_demo_runs_a_node_in_process(void **state)
{
    (void)state;
    run_result r = run_example("lock_demo", 30000, NULL);
    assert_int_equal(r.status, 0);
    expect_line(&r, "granted, fencing token");
    expect_line(&r, "deadlock, cycle: B A");
    free(r.out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lock_client_keeps_critical_sections_apart_and_fences_a_stale_holder),
        cmocka_unit_test(test_a_worker_that_dies_unacked_has_its_messages_redelivered),
        cmocka_unit_test(test_cache_demo_sees_the_invalidation_across_two_nodes),
        cmocka_unit_test(test_embedded_cluster_runs_three_nodes_in_one_process),
        cmocka_unit_test(test_lock_demo_runs_a_node_in_process),
    };
    return cmocka_run_group_tests(tests, setup_cluster, teardown_cluster);
}
