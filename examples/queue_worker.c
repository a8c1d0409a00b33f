/*
 * queue_worker.c: takes jobs from a topic of a running dsyncd cluster and
 * acks them; or, with --die-after K, takes K jobs and dies without acking,
 * to show at-least-once delivery: the next worker gets those jobs again
 * once their visibility timeout has passed, with deliveries > 1.
 *
 * Build: make (gives bin/queue_worker), or
 *        cc queue_worker.c $(pkg-config --cflags --libs dsync) -o queue_worker
 * Run:   make run                                 (a cluster on 8081-8083)
 *        bin/queue_producer -n 10                 (ten jobs on topic "jobs")
 *        bin/queue_worker --die-after 3 -v 2000   (takes 3, exits 3 without acking)
 *        bin/queue_worker -n 10                   (acks all 10; the 3 come back
 *                                                  after 2 s with deliveries=2)
 * Options: -a HOST:PORT,... (nodes), -t TOPIC (default jobs), -c CONSUMER_ID,
 * -n COUNT (stop after acking COUNT; default: when idle), -v VISIBILITY_MS
 * (default 2000), -i IDLE_MS (stop after this long without a message;
 * default 10000).
 *
 * Prints a line per message and a summary: "acked: N" and
 * "redelivered (deliveries > 1): K, ids: ..."; the dying worker prints
 * "died without acking: K, ids: ..." and exits with status 3.
 */
#define _POSIX_C_SOURCE 200809L
#include <dsync.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_ADDRS "127.0.0.1:8081,127.0.0.1:8082,127.0.0.1:8083"
#define MAX_IDS 1000
#define EXIT_DIED 3

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void print_ids(const char *what, const uint64_t *ids, int n)
{
    printf("%s: %d, ids:", what, n);
    for (int i = 0; i < n; i++)
        printf(" %" PRIu64, ids[i]);
    printf("\n");
}

static void usage(FILE *f)
{
    fprintf(f, "usage: queue_worker [-a HOST:PORT,...] [-t TOPIC] [-c CONSUMER_ID] [-n COUNT]\n"
               "                    [-v VISIBILITY_MS] [-i IDLE_MS] [--die-after K]\n"
               "  -a  dsyncd nodes (default " DEFAULT_ADDRS ")\n"
               "  -n  stop after acking COUNT messages (default: stop when idle)\n"
               "  -v  visibility timeout of each delivery (default 2000 ms)\n"
               "  -i  stop after IDLE_MS without a message (default 10000)\n"
               "  --die-after K  take K messages, then exit (status 3) without acking\n");
}

int main(int argc, char **argv)
{
    const char *addrs = DEFAULT_ADDRS, *topic = "jobs";
    char consumer[64];
    snprintf(consumer, sizeof consumer, "worker-%ld", (long)getpid());
    long expect = 0, die_after = 0;
    long long visibility_ms = 2000, idle_ms = 10000;
    for (int i = 1; i < argc; i++) {
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "-a") == 0 && next) {
            addrs = argv[++i];
        } else if (strcmp(argv[i], "-t") == 0 && next) {
            topic = argv[++i];
        } else if (strcmp(argv[i], "-c") == 0 && next) {
            snprintf(consumer, sizeof consumer, "%s", argv[++i]);
        } else if (strcmp(argv[i], "-n") == 0 && next) {
            expect = atol(argv[++i]);
        } else if (strcmp(argv[i], "-v") == 0 && next) {
            visibility_ms = atoll(argv[++i]);
        } else if (strcmp(argv[i], "-i") == 0 && next) {
            idle_ms = atoll(argv[++i]);
        } else if (strcmp(argv[i], "--die-after") == 0 && next) {
            die_after = atol(argv[++i]);
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (expect < 0 || expect > MAX_IDS || die_after < 0 || die_after > MAX_IDS ||
        visibility_ms < 1 || idle_ms < 1) {
        usage(stderr);
        return 2;
    }
    dsync_client *c;
    int rc = dsync_client_open(addrs, NULL, &c);
    if (rc != 0) {
        fprintf(stderr, "queue_worker: bad address list '%s': %s\n", addrs, dsync_strerror(rc));
        return 2;
    }
    printf("queue_worker %s on topic \"%s\" via %s%s\n", consumer, topic, addrs,
           die_after ? " (will die without acking)" : "");

    static uint64_t taken[MAX_IDS], redelivered[MAX_IDS];
    int n_taken = 0, n_redelivered = 0, errors = 0;
    long acked = 0;
    long long last_message = now_ms();
    for (;;) {
        if (expect && acked >= expect) break;
        if (die_after && n_taken >= die_after) break;
        long long idle_left = idle_ms - (now_ms() - last_message);
        if (idle_left <= 0) break;
        /* Long poll: the server answers as soon as a message is ready. */
        dsync_consume_request req = {
            .topic = topic,
            .consumer_id = consumer,
            .max = die_after ? (uint32_t)(die_after - n_taken) : 10,
            .visibility_ms = (uint64_t)visibility_ms,
            .wait_ms = (uint64_t)(idle_left < 1000 ? idle_left : 1000),
        };
        dsync_queue_msg *msgs;
        size_t n;
        rc = dsync_client_queue_consume(c, &req, &msgs, &n);
        if (rc != 0) {
            fprintf(stderr, "queue_worker: consume: %s (%s)\n", dsync_strerror(rc),
                    dsync_client_errmsg(c));
            if (++errors > 5) break;
            continue;
        }
        if (n > 0) last_message = now_ms();
        for (size_t i = 0; i < n; i++) {
            const dsync_queue_msg *m = &msgs[i];
            printf("got id=%" PRIu64 " deliveries=%" PRIu32 " message=%s\n", m->id, m->deliveries,
                   m->body);
            if (die_after) { /* keep it, ack nothing */
                if (n_taken < MAX_IDS) taken[n_taken++] = m->id;
                continue;
            }
            /* ... the job would be done here, then: */
            rc = dsync_client_queue_ack(c, topic, m->receipt);
            if (rc != 0) {
                fprintf(stderr, "queue_worker: ack of id %" PRIu64 ": %s (%s)\n", m->id,
                        dsync_strerror(rc), dsync_client_errmsg(c));
                errors++;
                continue;
            }
            acked++;
            if (m->deliveries > 1 && n_redelivered < MAX_IDS) redelivered[n_redelivered++] = m->id;
        }
        dsync_queue_msgs_free(msgs, n);
    }
    dsync_client_close(c);

    if (die_after) {
        print_ids("died without acking", taken, n_taken);
        /* A crash in all but name: the messages stay in flight until their
         * visibility timeout, then go to the next consumer. */
        return n_taken == die_after ? EXIT_DIED : 1;
    }
    printf("acked: %ld\n", acked);
    print_ids("redelivered (deliveries > 1)", redelivered, n_redelivered);
    return (expect == 0 || acked >= expect) && errors == 0 ? 0 : 1;
}
