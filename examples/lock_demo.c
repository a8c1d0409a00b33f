/*
 * lock_demo.c: takes and releases locks through libdsync, in-process.
 *
 * Build: make (gives bin/lock_demo). Run: bin/lock_demo
 * No dsyncd and no network: the program opens a single node inside itself
 * and shows shared locks, an exclusive request waiting its turn, the grant
 * that follows the last release, and a refused deadlock.
 */
#include <dsync.h>
#include <stdio.h>
#include <stdlib.h>

static dsync_node *node;

static void check(int rc, const char *what)
{
    if (rc != 0) {
        fprintf(stderr, "lock_demo: %s: %s\n", what, dsync_strerror(rc));
        dsync_node_close(node);
        exit(1);
    }
}

static void acquire(const char *client, const char *key, dsync_lock_mode mode)
{
    dsync_lock_request req = {.key = key, .client_id = client, .mode = mode, .ttl_ms = 10000};
    dsync_lock_result res;
    check(dsync_lock_acquire(node, &req, &res), "acquire");
    printf("%-3s %s on %-4s -> ", client, dsync_lock_mode_name(mode), key);
    switch (res.status) {
    case DSYNC_LOCK_GRANTED:
        printf("granted, fencing token %llu\n", (unsigned long long)res.fencing_token);
        break;
    case DSYNC_LOCK_WAITING:
        printf("waiting, position %u\n", res.position);
        break;
    case DSYNC_LOCK_DEADLOCK:
        printf("deadlock, cycle:");
        for (uint32_t i = 0; i < res.cycle_len; i++)
            printf(" %s", res.cycle[i]);
        printf("\n");
        break;
    }
}

static void release(const char *client, const char *key)
{
    check(dsync_lock_release(node, key, client, NULL), "release");
    printf("%-3s releases %s\n", client, key);
}

int main(void)
{
    dsync_config cfg;
    dsync_config_defaults(&cfg); /* a single node, no peers */
    cfg.data_dir[0] = '\0';      /* nothing on disk: a throwaway node */
    check(dsync_node_open(&cfg, &node), "open");

    printf("-- three readers share, a writer queues behind them\n");
    acquire("c1", "res", DSYNC_LOCK_SHARED);
    acquire("c2", "res", DSYNC_LOCK_SHARED);
    acquire("c3", "res", DSYNC_LOCK_SHARED);
    acquire("w", "res", DSYNC_LOCK_EXCLUSIVE);
    release("c1", "res");
    release("c2", "res");
    release("c3", "res");
    acquire("w", "res", DSYNC_LOCK_EXCLUSIVE); /* granted by the last release */
    release("w", "res");

    printf("-- two clients cross on keys a and b\n");
    acquire("A", "a", DSYNC_LOCK_EXCLUSIVE);
    acquire("B", "b", DSYNC_LOCK_EXCLUSIVE);
    acquire("A", "b", DSYNC_LOCK_EXCLUSIVE);
    acquire("B", "a", DSYNC_LOCK_EXCLUSIVE); /* would close A -> B -> A */
    release("B", "b");
    acquire("A", "b", DSYNC_LOCK_EXCLUSIVE);

    dsync_node_close(node);
    return 0;
}
