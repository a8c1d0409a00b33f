/*
 * store.h: durable things in a node's data directory.
 *
 * The Raft log store (raftlog.c) keeps entries and the hard state (term,
 * vote, commit) in one append-only file of checksummed records, and the
 * latest snapshot in its own file. Writes are buffered by the caller's
 * batch and made durable by one st_log_sync() (group commit): Raft must not
 * send a message or answer a client that depends on a write before the
 * sync that covers it has returned.
 *
 * Record: u32 length of payload | u32 CRC-32C of type+payload | u8 type |
 * payload. All integers little-endian. An entry record whose index is not
 * last+1 replaces the log from that index on (Raft's conflict truncation);
 * replay applies the same rule, so the file never needs rewriting in place.
 *
 * Recovery: a record cut short at the end of the file, or a bad checksum
 * on the very last record, is a torn write and is cut off. A bad record
 * with valid data after it is corruption in the middle: opening fails with
 * DSYNC_ECORRUPT and a message, never silently dropping what follows.
 */
#ifndef DSYNC_STORE_H
#define DSYNC_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/util.h"

typedef struct {
    uint64_t term;
    uint64_t vote; /* 0: none */
    uint64_t commit;
} st_hard_state;

typedef struct {
    uint64_t index;
    uint64_t term;
    uint8_t type; /* opaque to the store */
    const void *data;
    size_t len;
} st_entry;

/* Snapshot metadata; conf is an opaque blob (the membership). */
typedef struct {
    uint64_t index;
    uint64_t term;
    void *conf;
    size_t conf_len;
} st_snapshot_meta;

/* What the store found on disk when it was opened. Owned by the store,
 * valid until the next write or close. */
typedef struct {
    bool has_hard_state;
    st_hard_state hard_state;
    bool has_snapshot;
    st_snapshot_meta snapshot;
    void *snapshot_data;
    size_t snapshot_len;
    st_entry *entries; /* in index order, all after the snapshot */
    size_t n_entries;
    size_t torn_bytes; /* bytes cut off the end as a torn write */
} st_loaded;

typedef struct st_log st_log;

/* Opens (creating if needed) the store in dir/raft. */
int st_log_open(const char *dir, st_log **out, const st_loaded **loaded, char *err, size_t errlen);
void st_log_close(st_log *l);

/* Buffers entries: each must be last+1, or at most last (replacing the tail
 * from there), and after the snapshot. Not durable until st_log_sync. */
int st_log_append(st_log *l, const st_entry *entries, size_t n);
int st_log_set_hard_state(st_log *l, const st_hard_state *hs);
/* Writes the buffered records and fdatasyncs. On failure the store is
 * broken (DSYNC_EIO from every later call): after a failed fsync the page
 * cache may have dropped the data, so carrying on could lose acknowledged
 * writes (the PostgreSQL fsync lesson). *synced_bytes, if not NULL, gets
 * the bytes this sync wrote. */
int st_log_sync(st_log *l, size_t *synced_bytes);

/* The same write in three steps, so another thread can wait for the disk
 * while the caller goes on buffering: st_log_flush_begin takes the
 * buffered records (0 and an empty flush when there are none), and while
 * the flush is out no other call but st_log_append, st_log_set_hard_state
 * and the accessors may be made; st_log_flush_run (any thread, touching
 * nothing but f) writes and fdatasyncs; st_log_flush_end takes its result
 * back, on failure breaking the store as st_log_sync does. */
typedef struct {
    int fd;
    ut_buf data;
    uint64_t offset;
} st_log_flush;
int st_log_flush_begin(st_log *l, st_log_flush *f);
int st_log_flush_run(st_log_flush *f);
int st_log_flush_end(st_log *l, st_log_flush *f, int rc);
/* Buffered records not yet taken by a sync or a flush. */
size_t st_log_pending_bytes(const st_log *l);

/* Installs a snapshot durably (temp file, fsync, rename, fsync dir), then
 * compacts the log to the entries after meta->index. Entries after the
 * snapshot index that disagree with it on the term are dropped too. */
int st_log_save_snapshot(st_log *l, const st_snapshot_meta *meta, const void *data, size_t len);

/* Last index in the log (or the snapshot's index when the log is empty). */
uint64_t st_log_last_index(const st_log *l);
/* Size of the log file, durable part. */
uint64_t st_log_file_size(const st_log *l);

/* Test hook: simulate a power loss by cutting the log file back to what
 * was synced, plus keep_unsynced bytes of what was written after it. The
 * store is closed by the call. */
void st_log_crash_for_test(st_log *l, size_t keep_unsynced);

#endif
