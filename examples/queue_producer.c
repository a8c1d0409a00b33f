/*
 * queue_producer.c: puts N jobs on a topic of a running dsyncd cluster.
 *
 * Build: make (gives bin/queue_producer), or
 *        cc queue_producer.c $(pkg-config --cflags --libs dsync) -o queue_producer
 * Run:   make run                  (a three-node cluster on 8081-8083), then
 *        bin/queue_producer -n 10  (-a HOST:PORT,... -t TOPIC)
 * and consume them with bin/queue_worker (see queue_worker.c).
 *
 * Each message is a JSON object; the topic's owner has it on disk
 * (fsynced) before the enqueue returns its id. Prints one line per message
 * and "enqueued: N" at the end; exits 1 if any enqueue failed.
 */
#include <dsync.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_ADDRS "127.0.0.1:8081,127.0.0.1:8082,127.0.0.1:8083"

static void usage(FILE *f)
{
    fprintf(f, "usage: queue_producer [-a HOST:PORT,...] [-t TOPIC] [-n COUNT]\n"
               "  -a  dsyncd nodes (default " DEFAULT_ADDRS ")\n"
               "  -t  topic (default jobs), -n messages to enqueue (default 10)\n");
}

int main(int argc, char **argv)
{
    const char *addrs = DEFAULT_ADDRS, *topic = "jobs";
    long count = 10;
    for (int i = 1; i < argc; i++) {
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "-a") == 0 && next) {
            addrs = argv[++i];
        } else if (strcmp(argv[i], "-t") == 0 && next) {
            topic = argv[++i];
        } else if (strcmp(argv[i], "-n") == 0 && next) {
            count = atol(argv[++i]);
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (count < 1) {
        usage(stderr);
        return 2;
    }
    dsync_client *c;
    int rc = dsync_client_open(addrs, NULL, &c);
    if (rc != 0) {
        fprintf(stderr, "queue_producer: bad address list '%s': %s\n", addrs, dsync_strerror(rc));
        return 2;
    }
    long sent = 0;
    for (long i = 1; i <= count; i++) {
        /* Any JSON value will do; quotes and non-ASCII text travel as they are. */
        char message[256];
        snprintf(message, sizeof message,
                 "{\"job\":%ld,\"of\":%ld,\"task\":\"resize \\\"photo-%ld.jpg\\\" \\u2192 "
                 "thumbnail\"}",
                 i, count, i);
        uint64_t id;
        rc = dsync_client_queue_enqueue(c, topic, message, &id);
        if (rc != 0) {
            fprintf(stderr, "queue_producer: enqueue: %s (%s)\n", dsync_strerror(rc),
                    dsync_client_errmsg(c));
            continue;
        }
        printf("enqueued id=%" PRIu64 " %s\n", id, message);
        sent++;
    }
    printf("enqueued: %ld of %ld on topic \"%s\"\n", sent, count, topic);
    dsync_client_close(c);
    return sent == count ? 0 : 1;
}
