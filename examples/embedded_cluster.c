/*
 * embedded_cluster.c: three libdsync nodes inside one process, talking
 * Raft to each other over loopback TCP: how a C program embeds the
 * library as a cluster without dsyncd (in real use, each node would live
 * in its own process on its own machine, with the same configuration).
 *
 * Build: make (gives bin/embedded_cluster), or
 *        cc embedded_cluster.c $(pkg-config --cflags --libs dsync) -o embedded_cluster
 * Run:   bin/embedded_cluster          (no cluster needed; -p PORT picks the
 *                                       first of three peer ports, -d DIR the
 *                                       data directory, kept afterwards)
 *
 * Each node gets a dsync_config: its id, its peer address, the peer list
 * naming all three (DSYNC_PEERS' form), and a data directory of its own
 * (a Raft node must keep its votes and log). The program waits for a
 * leader that every node agrees on, takes a lock through a follower,
 * sees it from another node, watches a second client queue behind it and
 * get the grant after the release, then closes the nodes. Prints each
 * step and "result: ok" (exit 0), or "result: FAILED" (exit 1).
 */
#define _XOPEN_SOURCE 700
#include <arpa/inet.h>
#include <dsync.h>
#include <ftw.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define N_NODES 3

static dsync_node *nodes[N_NODES];

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A loopback port nobody listens on now (the kernel picks it). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

/* The library never prints; it hands warnings and errors to us. */
static void log_to_stderr(void *ctx, dsync_log_level level, const char *msg)
{
    (void)ctx;
    if (level >= DSYNC_LOG_WARN) fprintf(stderr, "  [libdsync] %s\n", msg);
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Index of the node every node names as leader, once they agree; -1 if
 * they do not within timeout_ms. */
static int wait_for_leader(long long timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    do {
        uint64_t agreed = 0;
        int ok = 1;
        for (int i = 0; i < N_NODES && ok; i++) {
            dsync_health h;
            if (dsync_node_health(nodes[i], &h) != 0 || h.leader_id == 0 ||
                (agreed && h.leader_id != agreed))
                ok = 0;
            else
                agreed = h.leader_id;
        }
        if (ok) return (int)agreed - 1; /* node i has id i + 1 */
        sleep_ms(20);
    } while (now_ms() < deadline);
    return -1;
}

static const char *status_name(dsync_lock_status s)
{
    return s == DSYNC_LOCK_GRANTED ? "granted" : s == DSYNC_LOCK_WAITING ? "waiting" : "deadlock";
}

static void usage(FILE *f)
{
    fprintf(f, "usage: embedded_cluster [-p FIRST_PEER_PORT] [-d DATA_DIR]\n"
               "  -p  peer ports PORT, PORT+1, PORT+2 (default: free ports)\n"
               "  -d  keep the nodes' data under DATA_DIR (default: a temporary directory,\n"
               "      removed at the end)\n");
}

int main(int argc, char **argv)
{
    int first_port = 0;
    const char *keep_dir = NULL;
    for (int i = 1; i < argc; i++) {
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "-p") == 0 && next) {
            first_port = atoi(argv[++i]);
        } else if (strcmp(argv[i], "-d") == 0 && next) {
            keep_dir = argv[++i];
        } else {
            usage(stderr);
            return 2;
        }
    }
    char dir[512];
    if (keep_dir) {
        snprintf(dir, sizeof dir, "%s", keep_dir);
    } else {
        const char *tmp = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/dsync-embedded-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(dir)) {
            perror("embedded_cluster: mkdtemp");
            return 1;
        }
    }

    /* One configuration per node; they differ only in id, address, directory. */
    dsync_config cfg[N_NODES];
    for (int i = 0; i < N_NODES; i++) {
        dsync_config_defaults(&cfg[i]);
        cfg[i].node_id = (uint64_t)i + 1;
        cfg[i].n_peers = N_NODES;
        cfg[i].log_fn = log_to_stderr;
    }
    char peers[256] = "";
    for (int i = 0; i < N_NODES; i++) {
        int port = first_port ? first_port + i : free_port();
        for (int j = 0; j < N_NODES; j++) {
            cfg[j].peers[i].id = (uint64_t)i + 1;
            snprintf(cfg[j].peers[i].addr, sizeof cfg[j].peers[i].addr, "127.0.0.1:%d", port);
        }
        snprintf(cfg[i].peer_addr, sizeof cfg[i].peer_addr, "127.0.0.1:%d", port);
        snprintf(cfg[i].data_dir, sizeof cfg[i].data_dir, "%s/node%d", dir, i + 1);
        size_t len = strlen(peers);
        snprintf(peers + len, sizeof peers - len, "%s%d=127.0.0.1:%d", i ? "," : "", i + 1, port);
    }
    printf("embedded_cluster: %d nodes in this process, peers %s, data in %s\n", N_NODES, peers,
           dir);

    int ok = 0, opened = 0;
    long long t0 = now_ms();
    for (; opened < N_NODES; opened++) {
        char err[256];
        if (dsync_config_validate(&cfg[opened], err, sizeof err) != 0) {
            fprintf(stderr, "embedded_cluster: node %d: %s\n", opened + 1, err);
            goto out;
        }
        int rc = dsync_node_open(&cfg[opened], &nodes[opened]);
        if (rc != 0) {
            fprintf(stderr, "embedded_cluster: node %d: %s\n", opened + 1, dsync_strerror(rc));
            goto out;
        }
    }
    int leader = wait_for_leader(15000);
    if (leader < 0) {
        fprintf(stderr, "embedded_cluster: no leader that every node agrees on within 15 s\n");
        goto out;
    }
    printf("leader: node %d after %lld ms, every node agrees\n", leader + 1, now_ms() - t0);

    /* Two followers: requests to a follower go to the leader by themselves. */
    int f1 = (leader + 1) % N_NODES, f2 = (leader + 2) % N_NODES;
    dsync_lock_request alice = {
        .key = "inventory", .client_id = "alice", .mode = DSYNC_LOCK_EXCLUSIVE, .ttl_ms = 10000};
    dsync_lock_result res;
    int rc = dsync_lock_acquire(nodes[f1], &alice, &res);
    if (rc != 0 || res.status != DSYNC_LOCK_GRANTED) {
        fprintf(stderr, "embedded_cluster: acquire: %s\n", rc ? dsync_strerror(rc) : "not granted");
        goto out;
    }
    uint64_t alice_token = res.fencing_token;
    printf("node %d: alice takes X on \"inventory\" -> granted, fencing token %" PRIu64 "\n",
           f1 + 1, alice_token);

    /* Another node sees the same lock table (a linearizable read). */
    dsync_lock_state st;
    if ((rc = dsync_lock_state_get(nodes[f2], &st)) != 0) {
        fprintf(stderr, "embedded_cluster: state: %s\n", dsync_strerror(rc));
        goto out;
    }
    int seen = 0;
    for (size_t i = 0; i < st.n_locks; i++)
        if (strcmp(st.locks[i].key, "inventory") == 0 && st.locks[i].n_holders == 1 &&
            strcmp(st.locks[i].holders[0].client_id, "alice") == 0 &&
            st.locks[i].holders[0].fencing_token == alice_token) {
            printf("node %d sees: \"inventory\" held %s by %s (token %" PRIu64 ")\n", f2 + 1,
                   dsync_lock_mode_name(st.locks[i].mode), st.locks[i].holders[0].client_id,
                   st.locks[i].holders[0].fencing_token);
            seen = 1;
        }
    dsync_lock_state_free(&st);
    if (!seen) {
        fprintf(stderr, "embedded_cluster: node %d does not see alice's lock\n", f2 + 1);
        goto out;
    }

    dsync_lock_request bob = {
        .key = "inventory", .client_id = "bob", .mode = DSYNC_LOCK_EXCLUSIVE, .ttl_ms = 10000};
    rc = dsync_lock_acquire(nodes[f2], &bob, &res);
    printf("node %d: bob asks X on \"inventory\" -> %s", f2 + 1,
           rc ? dsync_strerror(rc) : status_name(res.status));
    if (rc == 0 && res.status == DSYNC_LOCK_WAITING) printf(", position %u", res.position);
    printf("\n");
    if (rc != 0 || res.status != DSYNC_LOCK_WAITING) goto out;

    rc = dsync_lock_release(nodes[leader], "inventory", "alice", NULL);
    printf("node %d: alice releases \"inventory\" -> %s\n", leader + 1,
           rc ? dsync_strerror(rc) : "released");
    if (rc != 0) goto out;
    bob.wait_ms = 5000;
    rc = dsync_lock_acquire(nodes[f2], &bob, &res);
    if (rc != 0 || res.status != DSYNC_LOCK_GRANTED) goto out;
    printf("node %d: bob asks again -> granted, fencing token %" PRIu64 " (> %" PRIu64 ")\n",
           f2 + 1, res.fencing_token, alice_token);
    ok = res.fencing_token > alice_token &&
         dsync_lock_release(nodes[f1], "inventory", "bob", NULL) == 0;

out:
    for (int i = 0; i < opened; i++)
        dsync_node_close(nodes[i]);
    printf("closed %d node(s)\n", opened);
    if (!keep_dir && nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        fprintf(stderr, "embedded_cluster: could not remove %s\n", dir);
    printf("result: %s\n", ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
