/*
 * ring.h: the consistent-hash ring that places queue topics on nodes.
 *
 * A pure data structure: no I/O, no clock, no threads, no randomness. Each
 * node (a nonzero uint64_t id) puts `vnodes` points on a 64-bit circle; a
 * topic belongs to the first point clockwise at or after the hash of its
 * name, wrapping past the top. Adding or removing a node therefore moves
 * only the topics on the arcs that node gains or loses (Karger et al.,
 * "Consistent Hashing and Random Trees", 1997), about 1/n of them.
 *
 * Placement depends only on the membership: the same set of node ids gives
 * the same owner for every topic on every machine, whatever the order the
 * ids were added in. Points sort by (position, node id), so even two nodes
 * that hash to one position agree on who comes first. Positions use
 * lib/util's ut_mix64 / ut_hash64, which are fixed across builds and
 * platforms; changing them (or QR_TOPIC_SEED) moves topics across a
 * cluster that mixes versions, so test_ring pins a few placements.
 *
 * Costs with P = nodes * vnodes points: qr_owner O(log P) by binary search;
 * qr_add O(P + vnodes log vnodes); qr_remove O(P); 16 bytes per point.
 */
#ifndef DSYNC_QUEUE_RING_H
#define DSYNC_QUEUE_RING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Virtual nodes per node. A node's share of the circle is the sum of its
 * vnodes' arcs, each roughly exponential, so the share's relative standard
 * deviation is about 1/sqrt(vnodes). We want every node of a 3-node
 * cluster within 10% of a fair share for any node ids. Measured over 2000
 * random 3-node memberships (100,000 topics each), the share of
 * memberships with some node more than 10% off was: 160 vnodes (ketama's
 * figure) 28%, 256: 12%, 512: 1.8%, 1024: 0.05% (mean worst node 3.1% off).
 * The price of 1024 is small: 16 nodes make 16384 points, 256 KiB, 14
 * comparisons per lookup. Many vnodes also spread the ~1/n of topics a
 * membership change moves evenly over all the other nodes.
 */
#define QR_DEFAULT_VNODES 1024u
/* Upper bound for qr_new's vnodes, so nodes * vnodes stays far from
 * overflow and one qr_add stays a bounded amount of work. */
#define QR_MAX_VNODES 65536u
/* Seed of ut_hash64 for topic names; part of the placement contract. */
#define QR_TOPIC_SEED 0x71756575655f7271ULL /* "queue_rq" */

typedef struct qr_ring qr_ring;

/* A ring with no nodes, each node to get `vnodes` points (0 means
 * QR_DEFAULT_VNODES). NULL when vnodes > QR_MAX_VNODES or memory runs out.
 * The caller owns the ring and frees it with qr_free. */
qr_ring *qr_new(unsigned vnodes);
/* Frees the ring and everything it holds; NULL is a no-op. */
void qr_free(qr_ring *r);

/* Adds node id with its vnodes points. 0, DSYNC_EINVAL for id 0,
 * DSYNC_EEXIST if id is on the ring already, DSYNC_ENOMEM (ring unchanged)
 * when memory runs out. */
int qr_add(qr_ring *r, uint64_t id);
/* Removes node id and all its points. 0 or DSYNC_ENOTFOUND. */
int qr_remove(qr_ring *r, uint64_t id);
/* Whether node id is on the ring. */
bool qr_has(const qr_ring *r, uint64_t id);
/* Number of nodes (not points) on the ring. */
size_t qr_count(const qr_ring *r);
/* Virtual nodes per node, as resolved by qr_new. */
unsigned qr_vnodes(const qr_ring *r);

/* The position of a topic name of len bytes on the circle:
 * ut_hash64(topic, len, QR_TOPIC_SEED). Names are raw bytes, no NUL
 * needed; topic may be NULL when len is 0. */
uint64_t qr_topic_hash(const char *topic, size_t len);

/* The node that owns the topic: the first point clockwise at or after
 * qr_topic_hash(topic, len). 0 when the ring is empty. */
uint64_t qr_owner(const qr_ring *r, const char *topic, size_t len);

/* Liveness as the caller sees it (e.g. its failure detector); must answer
 * the same for an id throughout one call, and must not change the ring. */
typedef bool (*qr_live_fn)(void *ctx, uint64_t id);

/* Like qr_owner but skips the points of nodes for which is_live(ctx, id)
 * is false, so a dead owner's topics fall to the next live node clockwise
 * and come back to it, unchanged, once it is live again. 0 when no node is
 * live or the ring is empty. is_live may be called more than once for an
 * id; NULL counts every node live. */
uint64_t qr_owner_live(const qr_ring *r, const char *topic, size_t len, qr_live_fn is_live,
                       void *ctx);

/* Writes into out[0..max) the distinct nodes met going clockwise from the
 * topic's position: out[0] is qr_owner, out[1] is who takes over if it
 * fails, and so on (Dynamo's preference list). Returns how many were
 * written: min(max, qr_count(r)). out is the caller's; it may be NULL when
 * max is 0. */
size_t qr_preference_list(const qr_ring *r, const char *topic, size_t len, uint64_t *out,
                          size_t max);

#endif
