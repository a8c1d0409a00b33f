/*
 * redis_log.h: the Redis backend of queue persistence, a durable per-topic
 * RECORD LOG with ownership fencing.
 *
 * What it stores. The queue state machine (lib/queue) encodes its
 * operations as byte strings; this layer never looks inside them. A topic's
 * state is its latest snapshot plus the records appended after it, in
 * order. Keys, all hash-tagged with the topic so a Redis Cluster would keep
 * one topic in one slot (and one Lua script may touch them all):
 *
 *   dsync:q:{T}:epoch  the owner's epoch, a decimal string
 *   dsync:q:{T}:log    a list of records (RPUSH), binary-safe
 *   dsync:q:{T}:snap   the snapshot bytes (absent: empty state)
 *
 * Fencing. A node that takes a topic over calls rl_claim with an epoch
 * greater than any used before for it; every write (rl_flush, rl_rewrite)
 * runs as a Lua script that first checks that the stored epoch still equals
 * the writer's, and changes nothing otherwise. Redis runs a script
 * atomically, so each of an old owner's writes lands wholly before the
 * claim (and the new owner's rl_load sees it) or is refused wholly after
 * it: once another node has claimed a topic, the old one can never write to
 * it again. Epochs are compared as decimal strings by length then digits,
 * so the whole uint64_t range is exact (Lua's numbers are doubles). Epochs
 * must be unique per claimant (e.g. a term and the node id): rl_claim's
 * *stored then tells a node whose claim had an unknown outcome whether the
 * claim that stands is its own.
 *
 * Batching. rl_append only buffers; a flush sends the whole buffer in ONE
 * pipelined round trip, one EVALSHA per topic touched, each applying its
 * topic's records atomically and only under the writer's epoch. Redis
 * writes its AOF (and fsyncs it, under appendfsync always) once per pass
 * of its event loop, before replying, so the scripts of a pipeline share a
 * few writes instead of one each: group commit. The scripts are loaded
 * (SCRIPT LOAD) on every connect; a NOSCRIPT answer (SCRIPT FLUSH, a
 * failover to a server without them) means the script did not run, so
 * those topics are sent again with EVAL in a second round trip. rl_flush
 * waits for the replies; rl_flush_start and the calls after it let the
 * caller go on meanwhile (one flush in flight, the next one buffering).
 *
 * Snapshots. rl_rewrite sets :snap and deletes :log in one fenced script.
 * That is only right if the snapshot covers every record in :log, so the
 * caller rewrites only after a flush, from the state that includes every
 * record it flushed; rl_rewrite refuses (DSYNC_EINVAL) while the topic has
 * records buffered or in flight. No sequence numbers are needed: the owner is the only
 * writer, and a rewrite whose outcome is unknown left either the old
 * snapshot plus its log or the new snapshot, which are the same state.
 *
 * Connection. One hiredis context, owned by one thread (the node loop);
 * blocking, except that a flush in flight is read as its replies arrive
 * (the caller polls the socket). Every blocking wait is bounded by the
 * handle's WAIT LIMIT (rl_open's wait_ms): the connect, each reply of a
 * command, each write. A node sets it well below its election timeout, as
 * its loop also sends Raft's heartbeats: a Redis that stalls (SIGSTOP, a
 * blackholed link, a disk that hangs its AOF fsync) costs the loop one
 * wait limit per backoff step, and calls fail fast in between. Two waits are longer,
 * RL_COMMAND_TIMEOUT_MS of silence, as their size may make Redis work
 * that long before it answers: rl_load and rl_rewrite (a stall that
 * begins during one costs that much once); and a flush in flight, which
 * blocks nobody, is given up after that long without a reply. The limit
 * is on each wait for bytes, not on a whole call: a large call to a slow
 * but living Redis may take longer. A wait that times out, and a flush
 * given up, are taken as a stalled server: like a failed connect, they
 * start the backoff below. hiredis 0.14 never
 * reconnects and a context is dead after any error, so after an I/O error
 * the context is freed and the next call connects again (failed connects
 * back off from 50 ms to 1 s, and calls inside the backoff fail at once:
 * cheap 503s during an outage). A write whose outcome is unknown (the
 * connection broke after it was sent) is never retried here: the call
 * reports DSYNC_EUNAVAILABLE and the caller decides (its records carry ids
 * that make a replay idempotent); the one exception is the cache's
 * stores, fenced by their version, which rl_cache_run sends again with
 * its batch (below). Reads (rl_load, rl_topics, rl_info_*, cache loads)
 * are retried once on a fresh connection when a reused one turns out to be
 * dead, so an idle connection closed by a server timeout costs no 503.
 * hiredis writes with write(2), which raises SIGPIPE on a closed socket;
 * every call blocks SIGPIPE in the calling thread and consumes one it
 * raised, so an embedder that does not ignore SIGPIPE is not killed.
 *
 * Durability. What Redis acknowledged is in its AOF per its appendfsync
 * policy: `always` fsyncs before replying (nothing acknowledged is lost);
 * `everysec` can lose about the last 1-2 s of writes on an OS crash or
 * power loss, but nothing on a kill -9 of redis-server (the write(2) to
 * the AOF happens before the reply); `no` leaves it to the kernel. With
 * appendonly off a restart loses everything since the last RDB save.
 * rl_info_appendfsync reports the policy so dsyncd can log it at start.
 *
 * Errors: 0 or a negative DSYNC_E* code. DSYNC_EUNAVAILABLE: Redis is
 * unreachable, timed out, loading, read-only or out of memory (answer
 * 503); DSYNC_EEXIST: fenced off (a newer epoch owns the topic);
 * DSYNC_ECONFIG: a bad URL or database; DSYNC_EINVAL: a bad argument;
 * DSYNC_ETOOBIG: over a limit below; DSYNC_EIO: Redis refused a command for
 * another reason (e.g. WRONGTYPE: someone else wrote our keys).
 * rl_last_error says more.
 */
#ifndef DSYNC_STORE_REDIS_LOG_H
#define DSYNC_STORE_REDIS_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/util.h"

/* Topic names: 1..RL_TOPIC_MAX bytes, no NUL, not starting with '}' (a
 * Redis Cluster would see an empty hash tag and scatter the keys). */
#define RL_TOPIC_MAX 512
/* One record or snapshot, at most (Redis' own bulk limit is 512 MiB). */
#define RL_RECORD_MAX (64u << 20)
/* Buffered between flushes, at most: far below Redis' 1 GiB query buffer
 * limit, past which it would drop the connection mid-flush. */
#define RL_BATCH_MAX_BYTES (256u << 20)
#define RL_BATCH_MAX_RECORDS 1000000u

/* The wait limit rl_open's wait_ms 0 means, and the silence a flush in
 * flight, rl_load or rl_rewrite may meet before it is given up. */
#define RL_COMMAND_TIMEOUT_MS 1000
/* The shortest wait limit rl_open takes (a shorter wait_ms is raised). */
#define RL_WAIT_MIN_MS 10

typedef struct rl_log rl_log;

typedef enum {
    RL_SNAPSHOT = 1,
    RL_RECORD = 2,
} rl_kind;

/* Counters for metrics and tests. */
typedef struct {
    uint64_t round_trips;      /* pipelined exchanges with Redis */
    uint64_t connects;         /* successful connects (the first one too) */
    uint64_t connect_failures; /* failed connect attempts */
} rl_stats;

/* Parses url ("redis://host[:port][/db]", port 6379 and db 0 by default,
 * "[::1]" for an IPv6 address; no credentials) and connects, waiting at
 * most wait_ms (0: RL_COMMAND_TIMEOUT_MS) for the connect and for each
 * reply of the calls to come (see "Connection"). 0 with *out set;
 * DSYNC_ECONFIG for a bad URL or a database Redis refuses;
 * DSYNC_EUNAVAILABLE when Redis cannot be reached (retry the open). err
 * (may be NULL) gets a message on failure. The caller owns *out and
 * frees it with rl_close. */
int rl_open(const char *url, unsigned wait_ms, rl_log **out, char *err, size_t errlen);
/* Closes the connection and frees the handle, dropping buffered records
 * that were not flushed. NULL is a no-op. */
void rl_close(rl_log *rl);

/* Makes epoch (> 0) the topic's owner epoch if it is greater than the
 * stored one (none counts as 0). 0 when set; DSYNC_EEXIST when the stored
 * epoch is >= epoch. *stored (may be NULL) gets the epoch stored before
 * the call (0: none). Not retried on an unknown outcome. */
int rl_claim(rl_log *rl, const char *topic, uint64_t epoch, uint64_t *stored);

/* Buffers a record (copied) for the topic's log, to be written under
 * epoch. No I/O. DSYNC_EINVAL for a bad topic, epoch 0 or a topic with
 * records buffered under another epoch (flush or discard first); DSYNC_ETOOBIG
 * for a record over RL_RECORD_MAX or a batch over its limits. */
int rl_append(rl_log *rl, const char *topic, uint64_t epoch, const void *data, size_t len);
/* Records buffered and not yet flushed. */
size_t rl_pending(const rl_log *rl);

/* The fate of one topic's batch in a flush. */
typedef struct {
    const char *topic;
    uint64_t epoch;
    size_t records; /* in this batch */
    /* 0: applied. DSYNC_EEXIST: fenced, nothing applied. DSYNC_EUNAVAILABLE:
     * unknown (the connection broke) or not sent. Other codes: Redis
     * refused the script, nothing applied. */
    int status;
    uint64_t log_len; /* when applied: records in the topic's log now */
} rl_flush_result;

typedef void (*rl_flush_fn)(void *ctx, const rl_flush_result *r);

/* Sends every buffered record in one pipelined round trip (two if Redis
 * had lost the scripts) and empties the buffer whatever happens. Calls fn
 * (may be NULL) once per topic, in the order the topics were first
 * appended. Returns 0 if all were applied, else DSYNC_EUNAVAILABLE if any
 * topic's fate is unknown, else another error a topic got, else
 * DSYNC_EEXIST if some topic was fenced. An empty buffer is 0, no I/O.
 * A flush already in flight is finished first (its topics told to fn). */
int rl_flush(rl_log *rl, rl_flush_fn fn, void *ctx);

/* The same in steps, so the caller goes on while Redis works: one flush
 * may be in flight at a time, and rl_append buffers the next meanwhile.
 * Redis runs a connection's commands in order, so a flush lands before
 * the next one sent.
 *
 * rl_flush_start sends the buffer (DSYNC_EINVAL while a flush is in
 * flight; 0 and no I/O when it is empty). The connect, when there is no
 * connection, and the write block (as every call here); a connect or
 * write that fails settles the fates at once. Then poll rl_flush_fd (-1:
 * nothing to wait for) and call rl_flush_poll, which reads what has
 * arrived without blocking (except for the rare second round trip after
 * NOSCRIPT) and is true once every fate is known; a flush that hears
 * nothing for RL_COMMAND_TIMEOUT_MS (rl_flush_deadline_ms, moved on by
 * each reply) is given up: the connection is dropped, the missing fates
 * unknown. rl_flush_finish then tells fn each topic's fate as rl_flush
 * does and returns the same summary; it waits for replies still out. Any
 * other call on the handle (claim, load, the cache's) first reads the
 * flight's replies to the end, keeping the fates for rl_flush_finish;
 * rl_flush_fd is then -1 and rl_flush_poll true. */
int rl_flush_start(rl_log *rl);
bool rl_in_flight(const rl_log *rl);
int rl_flush_fd(const rl_log *rl);
uint64_t rl_flush_deadline_ms(const rl_log *rl);
bool rl_flush_poll(rl_log *rl);
int rl_flush_finish(rl_log *rl, rl_flush_fn fn, void *ctx);

/* Records buffered for topic (not yet sent). */
size_t rl_buffered(rl_log *rl, const char *topic);
/* Drops the records buffered for topic, as if never appended; records
 * in flight are not touched. Appends may then use another epoch. */
void rl_discard(rl_log *rl, const char *topic);

/* Called with the snapshot (if any) first, then each record in order.
 * data is valid during the call only. A nonzero return stops the load and
 * becomes rl_load's result. */
typedef int (*rl_load_fn)(void *ctx, rl_kind kind, const void *data, size_t len);

/* Reads the topic's snapshot and log as one consistent view (one script).
 * A topic with nothing stored calls fn never and returns 0. The whole log
 * is read in one reply: rewrite before it grows large (see log_len). */
int rl_load(rl_log *rl, const char *topic, rl_load_fn fn, void *ctx);

/* Atomically, if the topic's epoch is still epoch, replaces the snapshot
 * and empties the log. 0; DSYNC_EEXIST when fenced; DSYNC_EINVAL while the
 * topic has buffered records. Flush first; the snapshot must cover every
 * record flushed. DSYNC_EINVAL also while records of the topic are in
 * flight. */
int rl_rewrite(rl_log *rl, const char *topic, uint64_t epoch, const void *snapshot, size_t len);

/* Called once per topic that has an epoch (every topic ever claimed). A
 * nonzero return stops the listing and becomes rl_topics' result. */
typedef int (*rl_topic_fn)(void *ctx, const char *topic);

/* Lists the topics with SCAN (never blocking Redis), each once even when
 * SCAN repeats it. Topics claimed during the listing may be missed. */
int rl_topics(rl_log *rl, rl_topic_fn fn, void *ctx);

/* The same a page at a time (one SCAN, up to about 1,000 topics), for a
 * caller that must not block long: cursor is "0" to begin and after the
 * last page. A page whose fn stopped leaves cursor where it was, so the
 * next call tells that page again (fn must take repeats: SCAN may also
 * repeat a topic across pages). DSYNC_EINVAL for a cursor that is not a
 * string shorter than RL_CURSOR_MAX. */
#define RL_CURSOR_MAX 32
int rl_topics_page(rl_log *rl, char cursor[RL_CURSOR_MAX], rl_topic_fn fn, void *ctx);

/* Writes e.g. "appendonly=yes appendfsync=everysec" into buf (CONFIG
 * GET). DSYNC_EIO when Redis refuses CONFIG (renamed on some hosts). */
int rl_info_appendfsync(rl_log *rl, char *buf, size_t len);

/* ---- the cache's values (redis_cache.c) ---------------------------------
 *
 * The coherent cache keeps written-back values in Redis through the same
 * connection: key K is the hash "dsync:c:K" with fields v (the value), e
 * and s (its version: epoch, seq, decimal), and f (the fence: the highest
 * view epoch that loaded it). A write keeps the value only if its version
 * is above the stored one (a Lua script compares), so a late or repeated
 * write-back never moves a key back in time; and a write asked under a
 * view epoch below the key's fence changes nothing (fenced), so a write of
 * a view that has ended cannot land behind what a newer view loaded and
 * handed out (lib/cache/cache.h, "Epoch fence"). */

#define RL_CACHE_KEY_MAX 1024

/* *found says whether K has a value; if so it is appended to value (the
 * caller's buffer) and its version set. Retried once on a dead connection.
 * No fence is raised (rl_cache_run's fence does that). */
int rl_cache_load(rl_log *rl, const char *key, bool *found, ut_buf *value, uint64_t *epoch,
                  uint64_t *seq);
/* Stores value under version (epoch, seq) unless a version >= it is there;
 * *stored (may be NULL) tells which. Unfenced. Not retried on an unknown outcome
 * (DSYNC_EUNAVAILABLE): the caller may send it again, the version makes
 * that harmless. */
int rl_cache_store(rl_log *rl, const char *key, const void *value, size_t len, uint64_t epoch,
                   uint64_t seq, bool *stored);

/* Loads and stores together: n requests in one pipelined round trip, each
 * with its own result, as rl_cache_load and rl_cache_store give them. A
 * store whose script Redis lost goes again with EVAL on its own, after
 * the others: requests on one key in one batch may land out of order then,
 * so send at most one store per key. A reused connection found dead before
 * the first reply is replaced and the batch sent once more (a store twice
 * is harmless: its version decides). Other I/O errors leave the requests
 * whose replies did not come with DSYNC_EUNAVAILABLE (a store's outcome
 * unknown). Returns 0 when every request got 0, else DSYNC_EUNAVAILABLE
 * if one did, else the first other code. */
typedef struct {
    bool store;          /* a store; else a load */
    const char *key;     /* 1 to RL_CACHE_KEY_MAX bytes */
    const void *value;   /* store: value, len and version (epoch, seq) */
    size_t len;
    uint64_t epoch, seq;
    uint64_t fence;      /* the asker's view epoch; 0: none. A load raises the
                          * key's fence to it; a store below the fence is refused */
    ut_buf *out;         /* load: the caller's buffer, the value appended */
    int rc;              /* out: 0 or DSYNC_E* (EINVAL: a bad request, not sent) */
    bool stored;         /* out, store: no version >= it was there, nor a higher fence */
    bool fenced;         /* out, store: refused, a newer view has loaded the key */
    bool found;          /* out, load: the key has a value */
    uint64_t out_epoch, out_seq; /* out, load: its version */
    char error[160];             /* out: why, when rc is not 0 */
} rl_cache_op;
int rl_cache_run(rl_log *rl, rl_cache_op *ops, size_t n);

/* A description of the last failure; "" when none. Owned by the handle. */
const char *rl_last_error(const rl_log *rl);
void rl_get_stats(const rl_log *rl, rl_stats *out);

#endif
