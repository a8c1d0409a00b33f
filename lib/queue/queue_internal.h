/*
 * queue_internal.h: the queue state's structures and the transitions that
 * queue.c (the calls), queue_index.c (heaps, tables, ready order),
 * queue_log.c (records) and queue_snap.c (snapshots)
 * share. Transitions neither journal nor fire events; callers do.
 */
#ifndef DSYNC_QUEUE_INTERNAL_H
#define DSYNC_QUEUE_INTERNAL_H

#include <stdlib.h>
#include <string.h>

#include "dsync/errors.h"
#include "queue.h"

/* Set in q_msg.len: the message carries its origin (dead letters only). */
#define Q_MSG_ORIGIN 0x80000000u
/* Origin bytes ahead of the body: u64 id, u32 deliveries, 4 zero bytes. */
#define Q_ORIGIN_BYTES 16

typedef struct q_msg q_msg;
typedef struct q_topic q_topic;

/* A message and its body in one allocation. */
struct q_msg {
    uint64_t id;
    union {
        q_msg *next;     /* ready, in the topic's fresh list */
        size_t heap_idx; /* in flight: its lease's place in the deadline heap */
    } link;
    uint32_t deliveries;
    uint32_t len;         /* body bytes, | Q_MSG_ORIGIN */
    unsigned char data[]; /* [origin] body */
};

/* An in-flight message's lease, in the state's deadline heap. */
typedef struct {
    uint64_t deadline;
    q_msg *msg;
    q_topic *topic;
} q_lease;

/* In-flight messages of a topic by id: open addressing, linear probing. */
typedef struct {
    q_msg **slots;
    size_t cap; /* power of two, or 0 */
    size_t count;
} q_idmap;

struct q_topic {
    char *name;
    bool is_dlq;
    uint64_t nonce;   /* receipts' key */
    uint64_t next_id; /* the next message's id */
    /* Ready messages are in two sorted sources, merged on the way out:
     * never-delivered ones in a list (enqueues come in id order), and
     * requeued ones in a min-heap on id, so both enqueue and requeue are
     * cheap and consume still hands out the smallest id. */
    q_msg *fresh_head, *fresh_tail;
    q_msg **retry;
    size_t retry_n, retry_cap;
    q_idmap in_flight;
    uint64_t n_ready;
    uint64_t enqueued, consumed, acked, requeued, dead_lettered;
};

struct q_state {
    ut_map topics; /* name -> q_topic */
    q_lease *heap; /* min-heap on (deadline, id, topic name) */
    size_t heap_n, heap_cap;
    uint64_t nonce;
    uint32_t max_deliveries;
    ut_buf *journal;
    q_event_fn listener;
    void *listener_ctx;
};

/* ---- messages (queue.c) ---- */

static inline size_t q_msg_len(const q_msg *m)
{
    return m->len & ~Q_MSG_ORIGIN;
}

static inline const unsigned char *q_msg_body(const q_msg *m)
{
    return m->data + ((m->len & Q_MSG_ORIGIN) ? Q_ORIGIN_BYTES : 0);
}

/* A new message (deliveries 0, link unset); origin_id 0 means none. NULL
 * on out of memory. len <= QS_MAX_BODY. */
q_msg *q_msg_new(uint64_t id, const void *body, size_t len, uint64_t origin_id,
                 uint32_t origin_deliveries);
void q_msg_origin(const q_msg *m, uint64_t *id, uint32_t *deliveries);

/* ---- topics (queue.c) ---- */

/* name valid as a topic of len bytes (see queue.h). */
bool q_name_valid(const char *name, size_t len);
/* Whether name is a dead-letter topic's: it ends in QS_DLQ_SUFFIX. */
bool q_name_is_dlq(const char *name);
q_topic *q_topic_find(const q_state *q, const char *name);
/* The nonce a topic created now in q gets. */
uint64_t q_topic_nonce(const q_state *q, const char *name);
/* A new empty topic, not yet in any state; NULL on out of memory. */
q_topic *q_topic_alloc(const char *name, uint64_t nonce);
/* Frees the topic and all its messages; the caller has taken its leases
 * out of the deadline heap (or frees the heap too). */
void q_topic_free(q_topic *t);
/* Adds t to q's map; DSYNC_ENOMEM. */
int q_topic_insert(q_state *q, q_topic *t);

/* ---- transitions (queue.c, and the ready list in queue_index.c) ---- */

/* Appends m, whose id is above every other of t, to the ready ones. */
void q_ready_append(q_topic *t, q_msg *m);
/* Appends a new message with id t->next_id; counts it. */
void q_step_enqueue(q_topic *t, q_msg *m);
/* Room for n more deliveries (deadline heap and in-flight table). */
int q_reserve_deliveries(q_state *q, q_topic *t, size_t n);
/* Takes the ready message with the smallest id (NULL when none); *retried
 * says where it came from, for q_ready_unpop. */
q_msg *q_ready_pop(q_topic *t, bool *retried);
/* Puts back what q_ready_pop took, in reverse order; cannot fail. */
void q_ready_unpop(q_topic *t, q_msg *m, bool retried);
/* The popped message m goes in flight until deadline, one more delivery. */
void q_step_deliver(q_state *q, q_topic *t, q_msg *m, uint64_t deadline);
q_msg *q_in_flight_find(const q_topic *t, uint64_t id);
/* Deletes in-flight m for an ack. */
void q_step_ack(q_state *q, q_topic *t, q_msg *m);
/* In-flight m back among the ready; DSYNC_ENOMEM with no change. */
int q_step_requeue(q_state *q, q_topic *t, q_msg *m);
/* In-flight m of t moves to dlq as its message dlq->next_id;
 * DSYNC_ENOMEM with no change. *moved (may be NULL) gets the new message. */
int q_step_dead_letter(q_state *q, q_topic *t, q_msg *m, q_topic *dlq, q_msg **moved);
/* The dead-letter topic's name for t into out (QS_TOPIC_NAME_MAX + 1). */
void q_dlq_name(const q_topic *t, char *out);

/* ---- deadline heap (queue_index.c) ---- */

int q_heap_reserve(q_state *q, size_t n);
void q_heap_push(q_state *q, q_lease lease);
/* Removes the lease at i; gives back room after a burst (best effort). */
void q_heap_remove(q_state *q, size_t i);
/* Rebuilds the heap's order and back-indexes from scratch, O(n). */
void q_heap_build(q_state *q);
bool q_lease_before(const q_lease *a, const q_lease *b);

/* ---- in-flight tables (queue_index.c) ---- */

int q_idmap_reserve(q_idmap *m, size_t n);
/* Needs the room q_idmap_reserve made. */
void q_idmap_put(q_idmap *m, q_msg *msg);
void q_idmap_del(q_idmap *m, uint64_t id);

/* ---- ready messages (queue_index.c) ---- */

/* Room for n more requeued messages. */
int q_retry_reserve(q_topic *t, size_t n);
void q_retry_push(q_topic *t, q_msg *m);
/* Gives back the room a burst of requeues took (best effort). */
void q_retry_trim(q_topic *t);

/* ---- records (queue_log.c), written to q->journal when it is set ---- */

/* Reserves n bytes of journal (0 when no journal is set). */
int qj_reserve(q_state *q, size_t n);
size_t qj_topic_size(const q_topic *t);
void qj_topic(q_state *q, const q_topic *t);
size_t qj_enqueue_size(const char *topic, size_t len);
void qj_enqueue(q_state *q, const q_topic *t, const q_msg *m);
size_t qj_consume_size(const char *topic, size_t n);
void qj_consume(q_state *q, const q_topic *t, uint64_t deadline, const q_delivery *out, size_t n);
size_t qj_id_size(const char *topic);
void qj_ack(q_state *q, const q_topic *t, uint64_t id);
void qj_requeue(q_state *q, const q_topic *t, uint64_t id);
size_t qj_dead_letter_size(const char *topic);
void qj_dead_letter(q_state *q, const q_topic *t, uint64_t id, uint64_t dlq_id);

#endif
