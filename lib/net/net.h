/*
 * net.h: the peer transport, TCP between the nodes of a cluster.
 *
 * Owned by the node's loop thread: non-blocking sockets that the loop
 * polls next to its eventfd. Each node dials every peer once and sends on
 * that connection; it receives on the connections peers dialled to it.
 *
 * Frame: u16 magic "DS" | u8 version | u8 type | u32 payload length |
 * u32 CRC-32C of the payload | payload, little-endian. The first frame on
 * a dialled connection is HELLO carrying the sender's node id. A peer that
 * sends a bad magic, version, length or checksum, or frames before its
 * HELLO, or a HELLO naming a node we do not know, is disconnected: nothing
 * it sent reaches the node.
 *
 * Fault injection (tests only): nt_set_drop() names peers whose traffic,
 * both ways, is dropped at this node until the next call.
 */
#ifndef DSYNC_NET_H
#define DSYNC_NET_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dsync/config.h"
#include "util/util.h"

#define NT_VERSION 1
#define NT_MAX_FRAME (64u << 20) /* a snapshot travels in one frame */
#define NT_HEADER 12

/* Frame types above NT_HELLO belong to the caller. */
enum { NT_HELLO = 1, NT_USER = 16 };

typedef struct nt_transport nt_transport;

/* A frame arrived from a known peer; payload is valid during the call. */
typedef void (*nt_frame_fn)(void *ctx, uint64_t from, uint8_t type, const void *payload,
                            size_t len);

typedef struct {
    uint64_t self_id;
    const char *listen_addr; /* host:port */
    const dsync_peer *peers; /* every member, self included */
    size_t n_peers;
    nt_frame_fn on_frame;
    void *ctx;
    const ut_logger *log;
    size_t max_outbox_bytes; /* per peer; frames past it are dropped */
    /* Frame types (bit t for type t < 64) whose loss nt_stats.losses
     * counts; others may be lost without a count. */
    uint64_t watch_types;
} nt_options;

int nt_open(const nt_options *opt, nt_transport **out, char *err, size_t errlen);
void nt_close(nt_transport *t);

/* A new member (a membership change): dialled from now on, and its
 * HELLO accepted. A known peer at a new address is dialled there from now
 * on (what was queued for the old one is dropped). DSYNC_EEXIST if known
 * at that address already (addresses of removed members stay known;
 * nothing is sent to them). */
int nt_add_peer(nt_transport *t, uint64_t id, const char *addr);

/* Queues a frame to peer `to`. Returns DSYNC_ENOTFOUND for an unknown id,
 * DSYNC_EUNAVAILABLE when the frame was dropped (outbox full, fault
 * switch): Raft tolerates lost messages and will send again. */
int nt_send(nt_transport *t, uint64_t to, uint8_t type, const void *payload, size_t len);
/* The same, with the payload in two pieces (header + body). */
int nt_send2(nt_transport *t, uint64_t to, uint8_t type, const void *p1, size_t n1, const void *p2,
             size_t n2);

/* Fills fds (at most max) with what the loop must poll; returns the count. */
size_t nt_pollfds(nt_transport *t, struct pollfd *fds, size_t max);
/* Handles the poll results for the fds nt_pollfds gave, in the same order. */
void nt_handle(nt_transport *t, const struct pollfd *fds, size_t n, uint64_t now_ms);
/* Dials peers that are down, with exponential backoff; returns the next
 * time (absolute ms) it wants to run. */
uint64_t nt_tick(nt_transport *t, uint64_t now_ms);

/* Last time (ms) a frame arrived from peer id; 0 if never. */
uint64_t nt_last_heard(const nt_transport *t, uint64_t id);
/* Whether our dialled connection to id is up. */
bool nt_connected(const nt_transport *t, uint64_t id);

/* Fault injection: drop all traffic to and from these peers (n = 0 heals). */
void nt_set_drop(nt_transport *t, const uint64_t *ids, size_t n);
bool nt_dropping(const nt_transport *t, uint64_t id);

/* Counters, for metrics. */
typedef struct {
    uint64_t frames_sent, frames_received, bytes_sent, bytes_received;
    uint64_t frames_dropped, protocol_errors, connects;
    /* Times frames of a watched type may have been lost without a refusal
     * telling the sender: a dialled connection that went down after
     * carrying one (what was unsent or unread goes with it), one received
     * from a peer the fault switch drops. A connection that never came
     * up, or carried none, loses none. */
    uint64_t losses;
} nt_stats;
void nt_get_stats(const nt_transport *t, nt_stats *out);

/* Splits "host:port"; 0 or DSYNC_EINVAL. */
int nt_parse_addr(const char *addr, char *host, size_t hostlen, uint16_t *port);

#endif
