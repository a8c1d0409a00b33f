/*
 * cache_demo.c: the cache across two nodes of a running dsyncd cluster,
 * and the invalidation that keeps them coherent.
 *
 * Build: make (gives bin/cache_demo), or
 *        cc cache_demo.c $(pkg-config --cflags --libs dsync) -o cache_demo
 * Run:   make run              (a three-node cluster on 8081-8083), then
 *        bin/cache_demo        (or -A HOST:PORT -B HOST:PORT -k KEY)
 *
 * One client per node, each with that node's address only (no failover),
 * so every read is served by the node named: PUT on A, GET on B (B now
 * holds a copy, state S or E), PUT on B (A's copy is invalidated before
 * the PUT returns), GET on A returns the new value. Prints each step with
 * the MESI state seen, then "invalidation seen: yes" and "result: ok".
 * Exits 0 on success, 1 on a wrong value, and 3 when the server has no
 * cache endpoints yet (DSYNC_ENOTSUPP), after saying so.
 */
#include <dsync.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EXIT_NO_CACHE 3

static const char *node_a = "127.0.0.1:8081", *node_b = "127.0.0.1:8082";
static dsync_client *a, *b; /* one client per node */

static void fail(dsync_client *c, const char *what, int rc)
{
    if (rc == DSYNC_ENOTSUPP)
        printf("cache_demo: the server has no cache endpoints yet (%s)\n", dsync_client_errmsg(c));
    else
        fprintf(stderr, "cache_demo: %s: %s (%s)\n", what, dsync_strerror(rc),
                dsync_client_errmsg(c));
    dsync_client_close(a);
    dsync_client_close(b);
    exit(rc == DSYNC_ENOTSUPP ? EXIT_NO_CACHE : 1);
}

static void put(dsync_client *c, const char *name, const char *key, const char *value)
{
    int rc = dsync_client_cache_put(c, key, value, strlen(value));
    if (rc != 0) fail(c, "put", rc);
    printf("PUT on %s: %s = \"%s\"\n", name, key, value);
}

/* Reads key on the node; true when it holds want. */
static int get(dsync_client *c, const char *name, const char *key, const char *want)
{
    char *value, state;
    int rc = dsync_client_cache_get(c, key, &value, NULL, &state);
    if (rc != 0) fail(c, "get", rc);
    int same = strcmp(value, want) == 0;
    printf("GET on %s: %s = \"%s\" (state %c)%s\n", name, key, value, state,
           same ? "" : "  <-- stale!");
    free(value);
    return same;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: cache_demo [-A HOST:PORT] [-B HOST:PORT] [-k KEY]\n"
               "  -A, -B  the two nodes (default 127.0.0.1:8081 and 127.0.0.1:8082)\n");
}

int main(int argc, char **argv)
{
    char key[64];
    snprintf(key, sizeof key, "cache-demo-%ld", (long)getpid());
    for (int i = 1; i < argc; i++) {
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "-A") == 0 && next) {
            node_a = argv[++i];
        } else if (strcmp(argv[i], "-B") == 0 && next) {
            node_b = argv[++i];
        } else if (strcmp(argv[i], "-k") == 0 && next) {
            snprintf(key, sizeof key, "%s", argv[++i]);
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (dsync_client_open(node_a, NULL, &a) != 0 || dsync_client_open(node_b, NULL, &b) != 0) {
        fprintf(stderr, "cache_demo: bad address %s or %s\n", node_a, node_b);
        dsync_client_close(a);
        return 2;
    }
    printf("cache_demo: node A %s, node B %s, key %s\n", node_a, node_b, key);
    put(a, "A", key, "v1");
    int ok = get(b, "B", key, "v1");
    put(b, "B", key, "v2 (from B)");
    int fresh = get(a, "A", key, "v2 (from B)");
    ok &= fresh & get(b, "B", key, "v2 (from B)");
    printf("invalidation seen: %s\n", fresh ? "yes" : "no");
    printf("result: %s\n", ok ? "ok" : "FAILED");
    dsync_client_close(a);
    dsync_client_close(b);
    return ok ? 0 : 1;
}
