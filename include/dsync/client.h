/*
 * client.h: talking to a running dsyncd cluster over HTTP, from C.
 *
 * What hiredis is to Redis and clientv3 to etcd: open a client with the
 * addresses of some nodes, then take locks, use the queue and the cache
 * with the same request and result types as the embedded API in dsync.h.
 * Any node answers any call (it forwards to the leader or the owner
 * itself), so the client needs no leader tracking; it keeps one keep-alive
 * connection to one node and moves to the next address when that node is
 * unreachable or answers 503 (no leader, no quorum), waiting the node's
 * Retry-After (up to a bound) once every address has been tried.
 *
 * A dsync_client is not thread-safe: use one per thread (they are cheap:
 * one socket and a few KiB). Calls return 0 or a negative DSYNC_E* code;
 * after a failure dsync_client_errmsg() says what happened in words (the
 * node, the HTTP status and the server's message).
 *
 * Retries and their outcome: a call may be sent again to another node when
 * the first one broke off without an answer or answered 503, so its first
 * attempt may have taken effect. Acquire is idempotent (same client id),
 * release treats "not held" after such a retry as done, an enqueue may
 * store the message twice (delivery is at-least-once anyway, so consumers
 * must cope with duplicates), an ack may then answer DSYNC_ENOTFOUND.
 */
#ifndef DSYNC_CLIENT_H
#define DSYNC_CLIENT_H

#include <stddef.h>
#include <stdint.h>

/* The lock and queue types of the embedded API. (dsync.h includes this
 * header at its end, after them; the guard above makes the circle harmless.) */
#include "../dsync.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A client. Opaque; made by dsync_client_open, freed by dsync_client_close. */
typedef struct dsync_client dsync_client;

/* Timeouts and retries, in milliseconds. Zero-initialise (or pass NULL)
 * for the defaults; any field left 0 takes its default. */
typedef struct {
    uint32_t connect_timeout_ms; /* one connect attempt; default 1000 */
    uint32_t io_timeout_ms;      /* one request's answer, on top of its own
                                  * wait_ms (long polls); default 10000 */
    uint32_t retry_timeout_ms;   /* how long one call keeps trying other
                                  * nodes and retrying; default 10000 */
    uint32_t retry_after_max_ms; /* the longest pause a Retry-After buys
                                  * between rounds over the addresses; default 2000 */
} dsync_client_options;

/* Longest address list, in nodes. */
#define DSYNC_CLIENT_MAX_NODES 16

/*
 * Makes a client for the nodes in addresses, "HOST:PORT,HOST:PORT,..."
 * (an optional "http://" prefix each; at most DSYNC_CLIENT_MAX_NODES),
 * resolved now. No connection is made until the first call. opts may be
 * NULL. Returns DSYNC_EINVAL for an empty or malformed list or a name that
 * does not resolve, DSYNC_ENOMEM.
 */
int dsync_client_open(const char *addresses, const dsync_client_options *opts, dsync_client **out);

/* Closes the connection and frees the client. NULL is ignored. */
void dsync_client_close(dsync_client *client);

/* What the last failed call ran into, e.g. "127.0.0.1:8082: HTTP 404
 * not_found: no such endpoint: /cache/put"; "" after a success. Valid until
 * the next call on the client. */
const char *dsync_client_errmsg(const dsync_client *client);

/* "HOST:PORT" of the node the client talks to now (the one that answered
 * the last call, or the next one to try). */
const char *dsync_client_node(const dsync_client *client);

/* ---- locks (POST /locks/acquire, /locks/release) ----------------------- */

/*
 * As dsync_lock_acquire: result->status GRANTED (with the fencing token and
 * the lease), WAITING (queued; acquire again to wait more or to learn of
 * the grant) or DEADLOCK (with the cycle). req->wait_ms blocks on the
 * server up to that long; the call's timeout grows by it. DSYNC_EINVAL for
 * arguments the server refuses (bad key, client id, mode, ttl_ms over the
 * server's DSYNC_LOCK_MAX_TTL_MS, wait_ms over DSYNC_LOCK_MAX_WAIT_MS).
 */
int dsync_client_lock_acquire(dsync_client *client, const dsync_lock_request *req,
                              dsync_lock_result *result);

/* As dsync_lock_release: releases the lock or withdraws the waiting
 * request; *was_waiting (if not NULL) tells which. DSYNC_ENOTFOUND when
 * client_id neither holds nor waits for key. */
int dsync_client_lock_release(dsync_client *client, const char *key, const char *client_id,
                              int *was_waiting);

/* ---- queue (POST /queue/enqueue, /queue/consume, /queue/ack) ----------- */

/* Appends a message: message_json is the text of one JSON value (an
 * object, a string, a number...), checked here. *id (if not NULL) is its
 * id in the topic, once the topic's owner has it durably. DSYNC_EINVAL for
 * a bad topic or text that is not JSON, DSYNC_ETOOBIG over the server's
 * body limit. */
int dsync_client_queue_enqueue(dsync_client *client, const char *topic, const char *message_json,
                               uint64_t *id);

/* As dsync_queue_consume: up to req->max messages (0 means 1; the server
 * allows 100), each in flight for req->visibility_ms (0: the server's
 * default); waits up to req->wait_ms for one. Each message's body is the
 * compact JSON text of the value enqueued, NUL-terminated, len bytes.
 * Free the array with dsync_queue_msgs_free(*msgs, *n). */
int dsync_client_queue_consume(dsync_client *client, const dsync_consume_request *req,
                               dsync_queue_msg **msgs, size_t *n);

/* As dsync_queue_ack: deletes the message of that delivery. DSYNC_ENOTFOUND
 * when the receipt is unknown, already acked, or its visibility ran out. */
int dsync_client_queue_ack(dsync_client *client, const char *topic, const char *receipt);

/* ---- cache (GET /cache/get?key=K, POST /cache/put) --------------------- */

/*
 * Reads key on the node the client talks to. *value is malloc'ed (free
 * with free()), NUL-terminated, *len bytes (len may be NULL); *state (may
 * be NULL) is the MESI state of that node's copy: 'M', 'E', 'S', or 'I' (read, no copy kept).
 * DSYNC_ENOTFOUND when the key is absent, DSYNC_ENOTSUPP when the server
 * has no cache endpoints.
 */
int dsync_client_cache_get(dsync_client *client, const char *key, char **value, size_t *len,
                           char *state);

/* Writes key = value (len bytes of UTF-8 text); returns once every other
 * copy in the cluster is invalid. DSYNC_ENOTSUPP when the server has no
 * cache endpoints, DSYNC_EINVAL for a bad key or a value that is not UTF-8. */
int dsync_client_cache_put(dsync_client *client, const char *key, const char *value, size_t len);

#ifdef __cplusplus
}
#endif
#endif
