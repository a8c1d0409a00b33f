/*
 * queue.h: the queue state machine, pure and deterministic.
 *
 * Many named topics of opaque messages with at-least-once delivery, as SQS
 * and RabbitMQ users know it. No clock, no I/O, no threads, no randomness:
 * time comes in as now_ms and the receipts' secret as a caller's nonce, so
 * the same calls give the same state on the owner that serves a topic, on
 * the node that takes it over, and in every test. The node (lib/node) owns
 * one q_state per loop thread; lib/store makes its records durable.
 *
 * Rules:
 *  - A topic exists once something was enqueued to it (or its dead letters
 *    arrived) and then stays, with its counters, until q_free or a
 *    q_restore replaces it. Names are 1..QS_TOPIC_MAX bytes of printable
 *    ASCII (0x20..0x7e), or such a name plus ".dlq" (a dead-letter topic);
 *    a name ending in ".dlq" is always a dead-letter topic, so "t.dlq.dlq"
 *    is refused.
 *  - Ids are u64, strictly increasing per topic from 1, never reused.
 *  - A message is ready or in flight. q_consume hands out the ready
 *    messages with the smallest ids (FIFO), raises each one's delivery
 *    count and keeps it in flight until now_ms + visibility_ms; an in-flight
 *    message is never handed out again, so no two consumers hold it at once.
 *  - Each delivery has its own receipt: (id, tag) where tag is SipHash-2-4,
 *    keyed by the topic's 64-bit nonce, of (id, delivery count). The pair
 *    never repeats within a topic, and without the nonce a receipt cannot be
 *    derived from others (a guard against stale and mistaken acks, not a
 *    credential). The topic's nonce is mixed from q_config.nonce and its
 *    name when it is created and travels in its records and snapshots, so a
 *    node that loads the topic accepts the receipts handed out before.
 *  - q_ack with the receipt of the current delivery of an in-flight message
 *    deletes it. Anything else (unknown topic or id, an earlier delivery's
 *    receipt, a lease that ended) is DSYNC_ENOTFOUND and changes nothing.
 *  - A lease ends when now_ms >= its deadline. Every call that takes now_ms
 *    first does q_tick(now_ms): each ended lease puts its message back
 *    among the ready ones in id order, ahead of newer messages, with its
 *    delivery count kept (it rises at the next delivery). A message already
 *    delivered max_deliveries times instead moves, at that moment, to the
 *    topic "<topic>.dlq" as a new message (new id there, delivery count 0,
 *    its original id and deliveries kept as its origin). Dead-letter topics
 *    have no dead-letter topic of their own: their messages are requeued.
 *  - Every state change can be written as a record (q_set_journal) and
 *    replayed with q_apply; the whole state as a snapshot (q_snapshot).
 *    Replaying a history's records onto an empty state, or onto a snapshot
 *    taken part way, gives the same state, snapshot for snapshot.
 *  - Deadlines are absolute in the caller's time base. A state (or topic)
 *    loaded on another machine keeps them, so nodes that hand topics to
 *    each other should pass a shared base (wall-clock ms), not CLOCK_MONOTONIC.
 *
 * Costs, with n messages in a topic and f in flight in the state: enqueue
 * O(1); consume O(log n + log f) per message; ack O(log f); each expiry
 * O(log n + log f); q_next_deadline and q_has_ready O(1). Memory: one
 * allocation per message, 24 bytes of header plus the body; a lease is 24
 * bytes in the deadline heap plus a slot in the topic's in-flight table.
 */
#ifndef DSYNC_QUEUE_H
#define DSYNC_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/util.h"

#define QS_MAX_BODY (1u << 20)                     /* bytes of one message body */
#define QS_TOPIC_MAX 200                           /* bytes of a topic name, without ".dlq" */
#define QS_DLQ_SUFFIX ".dlq"                       /* a dead-letter topic's name: topic + suffix */
#define QS_TOPIC_NAME_MAX (QS_TOPIC_MAX + 4)       /* the longest name, a dead-letter topic's */
#define QS_CONSUMER_MAX 128                        /* bytes of a consumer id */
#define QS_MAX_VISIBILITY_MS (12ull * 3600 * 1000) /* longest lease, as in SQS */
#define QS_DEFAULT_MAX_DELIVERIES 5
#define QS_RECEIPT_STRLEN 32 /* hex digits of a printed receipt, without the NUL */

typedef struct q_state q_state;

typedef struct {
    /* Secret mixed into every topic's receipt key; give it from a good
     * random source (getrandom) once per state. */
    uint64_t nonce;
    /* Deliveries after which an unacked message is dead-lettered; 0 means
     * QS_DEFAULT_MAX_DELIVERIES. */
    uint32_t max_deliveries;
} q_config;

/* Proof of one delivery. Printed as QS_RECEIPT_STRLEN lowercase hex digits:
 * 16 of id, 16 of tag. */
typedef struct {
    uint64_t id;
    uint64_t tag;
} q_receipt;

/* One message handed out by q_consume. body points into the state and
 * stays valid until the next call that changes q; copy it before then. */
typedef struct {
    uint64_t id;
    uint32_t deliveries; /* including this one: 1 on the first delivery */
    q_receipt receipt;
    uint64_t visibility_deadline; /* absolute, same base as now_ms */
    const void *body;
    size_t len;
    /* For a message of a dead-letter topic: its id and delivery count in
     * the topic it came from; 0 for any other message. */
    uint64_t origin_id;
    uint32_t origin_deliveries;
} q_delivery;

/* What q_tick did on its own, for waking parked consumers (both kinds make
 * a topic ready: the topic for REQUEUED, dlq_topic for DEAD_LETTERED) and
 * for logs and metrics. Pointers are valid during the callback only, which
 * must not call back into q. */
typedef enum {
    Q_EV_REQUEUED = 1,      /* a lease ended; the message is ready again */
    Q_EV_DEAD_LETTERED = 2, /* a lease ended after max_deliveries; moved to dlq_topic */
} q_event_kind;

typedef struct {
    q_event_kind kind;
    const char *topic;
    uint64_t id;
    uint32_t deliveries;
    const char *dlq_topic; /* DEAD_LETTERED only */
    uint64_t dlq_id;       /* DEAD_LETTERED only */
} q_event;

typedef void (*q_event_fn)(void *ctx, const q_event *ev);

/* Per-topic figures for metrics. name is the topic's own copy, valid while
 * the topic exists. Counters count since the topic was created, and travel
 * with it in records and snapshots. */
typedef struct {
    const char *name;
    uint64_t depth;         /* ready messages */
    uint64_t in_flight;     /* messages delivered and not yet acked or expired */
    uint64_t next_id;       /* the id the next message will get */
    uint64_t enqueued;      /* messages added, including dead letters arriving */
    uint64_t consumed;      /* deliveries */
    uint64_t acked;         /* messages deleted by an ack */
    uint64_t requeued;      /* leases that ended and put their message back */
    uint64_t dead_lettered; /* messages moved out to "<topic>.dlq" */
} q_topic_stats;

/* ---- life cycle ----------------------------------------------------------- */

/* An empty state with cfg (NULL: nonce 0, default max_deliveries); NULL on
 * out of memory. The caller owns it and frees it with q_free. */
q_state *q_new(const q_config *cfg);
/* Frees the state and every message; NULL is a no-op. */
void q_free(q_state *q);

/* Events from q_tick (and the ticks inside other calls); fn may be NULL. */
void q_set_listener(q_state *q, q_event_fn fn, void *ctx);

/* From now on every state change appends its record (format in
 * queue_log.c) to journal, in order; NULL stops it. The caller owns the
 * buffer, drains it (e.g. after each call: store, then set len to 0) and
 * frees it. Space is reserved before a change, so a change whose record
 * does not fit fails with DSYNC_ENOMEM and does not happen (and while the
 * buffer's oom flag is set, every change does: reset it with ut_buf_free). */
void q_set_journal(q_state *q, ut_buf *journal);

/* ---- the queue ------------------------------------------------------------ */

/* 0 when name is a valid topic name (see the rules), else DSYNC_EINVAL. */
int q_check_topic_name(const char *name);

/* Appends len bytes of body (NULL allowed when len is 0) to topic, creating
 * the topic. *id gets the message's id. DSYNC_EINVAL for a bad name,
 * DSYNC_ETOOBIG for len > QS_MAX_BODY, DSYNC_ENOMEM with no change. */
int q_enqueue(q_state *q, const char *topic, const void *body, size_t len, uint64_t now_ms,
              uint64_t *id);

/* Hands out up to max ready messages of topic, smallest ids first, into
 * out[0..*n), each in flight until now_ms + visibility_ms. *n = 0 when there
 * is none or the topic does not exist. consumer_id (1..QS_CONSUMER_MAX
 * printable bytes) is checked but not kept: the receipt is the only proof
 * of a delivery. DSYNC_EINVAL for a bad name or id, max 0, visibility_ms 0
 * or over QS_MAX_VISIBILITY_MS; DSYNC_ENOMEM with no delivery made. */
int q_consume(q_state *q, const char *topic, const char *consumer_id, size_t max,
              uint64_t visibility_ms, uint64_t now_ms, q_delivery *out, size_t *n);

/* Deletes the message of the delivery that receipt proves, if its lease has
 * not ended by now_ms. DSYNC_ENOTFOUND (nothing changed) otherwise,
 * DSYNC_EINVAL for a bad name, DSYNC_ENOMEM with no change. */
int q_ack(q_state *q, const char *topic, const q_receipt *receipt, uint64_t now_ms);

/* Ends every lease with deadline <= now_ms, in (deadline, id, topic)
 * order, requeuing or dead-lettering each message (see the rules).
 * *expired (may be NULL) gets how many. DSYNC_ENOMEM stops it part way,
 * in a consistent state; the next call continues. */
int q_tick(q_state *q, uint64_t now_ms, size_t *expired);

/* The earliest lease deadline in the state; UINT64_MAX when nothing is in
 * flight. The node arms its timer for it and calls q_tick. */
uint64_t q_next_deadline(const q_state *q);

/* Whether topic has a message q_consume would hand out now (false for an
 * unknown topic or a bad name). For parking long-polling consumers: the
 * node wakes them after an enqueue and on the listener's events. */
bool q_has_ready(const q_state *q, const char *topic);

/* ---- figures -------------------------------------------------------------- */

/* st for topic; DSYNC_ENOTFOUND for an unknown topic or a bad name. */
int q_topic_stats_get(const q_state *q, const char *topic, q_topic_stats *st);
/* Iteration over every topic, in no particular order:
 *   for (size_t it = 0; q_topic_next(q, &it, &st);) ...
 * Calls that create topics invalidate the iteration. */
bool q_topic_next(const q_state *q, size_t *iter, q_topic_stats *st);
/* Totals over the state; any pointer may be NULL. */
void q_counts(const q_state *q, size_t *topics, uint64_t *ready, uint64_t *in_flight);

/* ---- receipts ------------------------------------------------------------- */

/* Writes the receipt as QS_RECEIPT_STRLEN hex digits and a NUL into out. */
void q_receipt_format(const q_receipt *r, char out[QS_RECEIPT_STRLEN + 1]);
/* Parses exactly QS_RECEIPT_STRLEN hex digits; DSYNC_EINVAL otherwise. */
int q_receipt_parse(const char *s, q_receipt *r);

/* ---- records and snapshots ------------------------------------------------ */

/* Applies the one record at the start of data[0..len) and sets *used (may
 * be NULL) to its size. The record is checked in full first (checksum,
 * fields, and that it follows from the current state: the ids and order a
 * real history would have); DSYNC_ECORRUPT leaves q unchanged, as does
 * DSYNC_ENOMEM. Neither journals nor fires events. */
int q_apply(q_state *q, const void *data, size_t len, size_t *used);
/* Applies every record of data[0..len) in order. On an error, *used (may
 * be NULL) is the size of the records applied before the bad one. */
int q_apply_all(q_state *q, const void *data, size_t len, size_t *used);

/* Reads the header of the record at the start of data[0..len): its size
 * (*rec_len) and topic name (copied into name, QS_TOPIC_NAME_MAX + 1
 * bytes), so a store can file records by topic without applying them.
 * Checks the size, version and name, not the checksum (q_apply does).
 * DSYNC_ECORRUPT when malformed. */
int q_record_topic(const void *data, size_t len, char *name, size_t *rec_len);
/* Appends the whole state (topics by name, messages by id, counters,
 * nonces, leases) to b in a versioned, deterministic binary form (format in
 * queue_snap.c). Config, journal and listener are not part of it. */
int q_snapshot(const q_state *q, ut_buf *b);
/* The same form holding only topic; DSYNC_ENOTFOUND when it is unknown. A
 * new owner loads it with q_restore_topics. */
int q_snapshot_topic(const q_state *q, const char *topic, ut_buf *b);
/* The same form holding a placement unit: topic and its dead-letter topic
 * "<topic>.dlq", those of them that exist (none: an empty snapshot). topic
 * is a base name (not itself a dead-letter topic). This is what a store
 * keeps per unit, since dead letters live where their topic does. */
int q_snapshot_unit(const q_state *q, const char *topic, ut_buf *b);
/* Forgets topic and every message and lease of it, as if it had never
 * been here: the node that hands a topic over drops it. No record is
 * journaled. DSYNC_ENOTFOUND when there is no such topic. */
int q_drop_topic(q_state *q, const char *topic);
/* Replaces every topic of q with those of the snapshot. DSYNC_ECORRUPT for
 * anything malformed, DSYNC_ENOMEM; either way q is unchanged. */
int q_restore(q_state *q, const void *data, size_t len);
/* Adds the snapshot's topics to q, replacing those of the same names and
 * keeping the others. Errors as q_restore, q unchanged. */
int q_restore_topics(q_state *q, const void *data, size_t len);

/* Checks every invariant (heap order and back-indexes, in-flight tables,
 * ready order, counts, id bounds). 0, or -1 with a description in err. For
 * tests and debug builds; O(messages). */
int q_check_invariants(const q_state *q, char *err, size_t errlen);

#endif
