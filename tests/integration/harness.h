/*
 * harness.h: integration tests drive real dsyncd processes on loopback.
 *
 * h_node_start() picks free ports, makes a temporary data directory, starts
 * dsyncd there with an explicit environment (no stray .env is read) and
 * waits, with a bound, for /health to answer. Nodes are stopped by PID;
 * an atexit hook kills any the test left behind. The HTTP client is plain
 * blocking HTTP/1.1 with Connection: close and a receive timeout.
 */
#ifndef DSYNC_HARNESS_H
#define DSYNC_HARNESS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define H_MAX_ENV 16

typedef struct {
    pid_t pid; /* 0 when not running */
    int node_id;
    int http_port;
    int peer_port;
    char dir[128]; /* data directory and log live here */
    char log_path[160];
    char peers[512]; /* DSYNC_PEERS, "" for a single node */
    char extra_env[H_MAX_ENV][256];
    int n_extra;
} h_node;

typedef struct {
    int status; /* 0 when no response came */
    char content_type[128];
    char allow[64];
    char retry_after[16];
    char connection[32];
    char *body; /* NUL-terminated */
    size_t body_len;
} h_resp;

/* Path of the dsyncd binary: $DSYNCD, else bin/dsyncd. */
const char *h_dsyncd_path(void);
/* A port nobody listens on right now, below the kernel's range for
 * outgoing connections (so no connect takes it before a server binds it),
 * and not handed out before in this process. */
int h_free_port(void);

/* Prepares n (ports, directory); extra is NULL or a NULL-ended list of
 * "NAME=VALUE" strings added to the node's environment. */
void h_node_init(h_node *n, int node_id, const char *const *extra);
/* Starts (or restarts, keeping ports and data) and waits for /health.
 * Returns 0, or -1 after printing the node's log. */
int h_node_start(h_node *n);
/* SIGTERM, then SIGKILL after 5 s. Keeps the data directory. Returns 0
 * when the node exited cleanly with status 0, -1 otherwise. */
int h_node_stop(h_node *n);
/* SIGKILL at once, as a crash. */
void h_node_kill9(h_node *n);
/* Stops the node if running and removes its directory; as h_node_stop. */
int h_node_destroy(h_node *n);
/* Prints the last lines of the node's log to stderr. */
void h_node_print_log(const h_node *n);

/* A started node 1 on the heap (extra as in h_node_init), or NULL after
 * printing why; h_node_free stops it, removes its directory and frees it
 * (as h_node_destroy). For cmocka setup and teardown functions. */
h_node *h_node_new(const char *const *extra);
int h_node_free(h_node *n);

/* POST of a printf-formatted JSON body; the parsed answer (NULL if not
 * JSON), the status in *status. */
json_t *h_post(const h_node *n, const char *path, int *status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- clusters ---------------------------------------------------------- */

#define H_MAX_NODES 5

typedef struct {
    h_node nodes[H_MAX_NODES];
    int n;
} h_cluster;

/* Prepares n nodes that list each other in DSYNC_PEERS (with extra as in
 * h_node_init), starts them all, and waits for one leader every node
 * agrees on. Returns 0, or -1 after printing what went wrong. */
int h_cluster_start(h_cluster *c, int n, const char *const *extra);
/* Adds node c->n + 1 to the prepared cluster: DSYNC_PEERS names every
 * node so far and itself, DSYNC_JOIN=1, and extra as in h_node_init.
 * Starts it (it is not a member until someone adds it); returns its
 * index, or -1. */
int h_cluster_add_node(h_cluster *c, const char *const *extra);
/* Index of the leader that every running node names, once that holds
 * (polling /health for up to timeout_ms); -1 if it never does. Nodes in
 * `skip` (a bitmask of indexes) are neither asked nor eligible. */
int h_cluster_leader(h_cluster *c, unsigned skip, int timeout_ms);
/* Stops every node in parallel (SIGTERM to all, then reap) and removes
 * their directories; -1 if one did not exit cleanly. */
int h_cluster_destroy(h_cluster *c);
/* An integer field of a node's /health; -1 if it does not answer. */
long long h_health_int(const h_node *n, const char *field);

/* One request; extra_headers is "" or lines each ending in \r\n. */
int h_http(const h_node *n, const char *method, const char *path, const char *body,
           const char *extra_headers, h_resp *r);
/* Sends raw bytes and reads the answer until the server closes or
 * timeout_ms passes. */
int h_raw(const h_node *n, const void *data, size_t len, int timeout_ms, h_resp *r);
/* Sends head, then one byte of drip every every_ms until the server
 * answers or closes (or drip ends), and reads the answer: a slow client. */
int h_raw_dribble(const h_node *n, const void *head, size_t len, const char *drip, int every_ms,
                  int timeout_ms, h_resp *r);
void h_resp_free(h_resp *r);

/* Request + JSON parse of the answer (NULL if it is not JSON). */
json_t *h_json(const h_node *n, const char *method, const char *path, const char *body,
               int *status);
/* The value of one exact series line ("name{labels}") in /metrics; -1 if
 * the series is absent. */
double h_metric(const h_node *n, const char *series);

/* ---- redis-server ------------------------------------------------------ */

/* A real redis-server on loopback with its own directory: appendonly yes,
 * appendfsync always, no RDB snapshots. */
typedef struct {
    pid_t pid; /* 0 when not running */
    int port;
    char dir[128];
    char url[64]; /* redis://127.0.0.1:port, for DSYNC_REDIS_URL */
} h_redis;

/* Whether redis-server is on PATH (tests that need it skip otherwise). */
bool h_redis_available(void);
/* Starts it: on a free port in a new temporary directory the first time,
 * on the same port with the same data (its AOF) after a stop. Waits, with
 * a bound, until it answers PING. 0, or -1 after printing why. */
int h_redis_start(h_redis *r);
/* SIGKILL at once, as a crash. */
void h_redis_kill9(h_redis *r);
/* Stops it if running and removes its directory. */
void h_redis_destroy(h_redis *r);
/* Writes the keys of count queue topics named PREFIX-0 .. PREFIX-<count-1>
 * straight into it, as if each had been claimed once with epoch 1 (and
 * holds nothing). 0, or -1 after printing why. */
int h_redis_put_topics(const h_redis *r, const char *prefix, int count);

/* Polls cond every 10 ms until it holds or timeout_ms passes. */
bool h_wait_until(bool (*cond)(void *), void *arg, int timeout_ms);
/* Milliseconds on the monotonic clock. */
long long h_now_ms(void);

/* ---- the queue over HTTP (queue_http.c) ---------------------------------- */

/* Enqueues {"v": value} to topic: the message id, or minus the HTTP status. */
long long h_enqueue(const h_node *n, const char *topic, long long value);
/* The same, retrying a 503 (a topic between owners) for up to timeout_ms. */
long long h_enqueue_retrying(const h_node *n, const char *topic, long long value, int timeout_ms);
/* A consume by consumer "c": the whole answer (the caller decrefs it), NULL
 * unless 200; the status in *status. */
json_t *h_consume(const h_node *n, const char *topic, int max, int visibility_ms, int wait_ms,
                  int *status);
/* Acks a receipt: the HTTP status. */
int h_ack(const h_node *n, const char *topic, const char *receipt);
/* Producers and consumers in parallel: producer i, on producers[i],
 * enqueues per_producer messages round-robin over the topics
 * "<prefix>0".."<prefix>(topics-1)" (each retrying 503s for 15 s), while
 * consumer i, on consumers[i], consumes batches of 10 with a 30 s
 * visibility and acks each, until 15 idle rounds or 30 s. The visibility
 * outlasts the run, so there is no redelivery: asserts that every message
 * was acked exactly once. Topics must divide producers * per_producer. */
void h_queue_mix(const char *prefix, int topics, const h_node *const *producers, int n_producers,
                 int per_producer, const h_node *const *consumers, int n_consumers);

#endif
