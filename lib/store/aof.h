/*
 * aof.h: the queue's local append-only file, used when DSYNC_REDIS_URL is
 * empty. The queue state machine (lib/queue) encodes each operation as an
 * opaque byte string; this file makes those strings durable, replays them
 * on start so the caller can rebuild its state, and compacts them into a
 * whole-state snapshot when the file grows.
 *
 * Files: one, <dir>/queue/aof, whose first record may be a snapshot, plus
 * <dir>/queue/aof.tmp while a rewrite runs. One file rather than a
 * snapshot file beside the log because the records are opaque: they carry
 * no index saying which of them a snapshot already covers (raftlog has Raft
 * indices for that). With two files a crash between installing a snapshot
 * and truncating the log would replay operations the snapshot holds. With
 * one file the rename that installs the rewritten file is the single
 * commit point: before it the old file is complete, after it the new one.
 *
 * Record: u32 length of payload | u32 CRC-32C of type+payload | u8 type |
 * payload. All integers little-endian. Types: 1 snapshot (only at offset
 * 0), 2 record. The file is preallocated ahead of the writes (fallocate,
 * 4 MiB at a time) so an fdatasync need not journal a new file size; the
 * zeros after the last record are free space.
 *
 * Recovery (as raftlog's): a record cut short at the end of the file, or a
 * bad checksum on the very last record (or one followed only by zeros), is
 * a torn write and is cut off. A bad record with valid data after it is
 * corruption in the middle: the open fails with DSYNC_ECORRUPT and a
 * message naming the offset, never silently dropping what follows. Two
 * refinements: a length running past the end is a torn write only if no
 * complete valid record starts anywhere after its header (so a damaged
 * length field in the middle is not mistaken for the end), and a damaged
 * snapshot record is never a torn write (it was fsynced before the rename
 * that installed it).
 *
 * Durability: aof_append only buffers; aof_sync writes everything buffered
 * with one write() and, under AOF_FSYNC_ALWAYS, one fdatasync() (group
 * commit: every record buffered since the last one shares it). The caller
 * answers a request only after the aof_sync (or aof_flush_end, below)
 * that covers its record.
 * AOF_FSYNC_EVERYSEC makes aof_sync write only; the caller calls
 * aof_flush_due each tick and it fdatasyncs at most once a second. Loss
 * window under EVERYSEC: a process crash (kill -9) loses nothing aof_sync
 * has returned for (the bytes are in the kernel's page cache), but a power
 * loss or kernel crash loses what was written since the last fdatasync:
 * up to one second plus the caller's tick interval of acknowledged writes.
 *
 * After a failed write or fsync the store is broken for good: every later
 * call returns DSYNC_EIO. The kernel may have dropped the dirty pages and
 * cleared the error, so a retried fsync could "succeed" over lost data
 * (the PostgreSQL fsync lesson). Restart and replay instead.
 *
 * Single-threaded: one owner calls everything (a background rewrite's
 * thread touches only its own temp file and snapshot; aof_flush_run, its
 * flush).
 */
#ifndef DSYNC_STORE_AOF_H
#define DSYNC_STORE_AOF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/util.h"

#define AOF_MAX_RECORD (64u << 20)   /* payload bytes of one record */
#define AOF_MAX_SNAPSHOT 0xfffffff0u /* payload bytes of a snapshot (u32 length) */

typedef enum { AOF_SNAPSHOT = 1, AOF_RECORD = 2 } aof_type;

typedef enum {
    AOF_FSYNC_ALWAYS = 0, /* aof_sync writes and fdatasyncs (the default) */
    AOF_FSYNC_EVERYSEC,   /* aof_sync writes; aof_flush_due fdatasyncs */
} aof_fsync_policy;

typedef struct {
    aof_fsync_policy fsync;
    const ut_logger *log; /* warnings (torn tail cut, stale temp file); may be NULL */
} aof_options;

/* Called by aof_open for the snapshot (at most once, first), then for each
 * record in order. data points into the file as mapped during the open:
 * copy what you keep. Returns 0, or a negative DSYNC_E* that aborts the
 * open with that code. */
typedef int (*aof_replay_fn)(void *ctx, aof_type type, const void *data, size_t len);

typedef struct {
    uint64_t size;         /* bytes of records in the file (written by aof_sync) */
    uint64_t durable_size; /* of which fdatasynced */
    uint64_t pending;      /* bytes buffered by aof_append, not yet written */
    uint64_t replayed;     /* records replayed by the open, snapshot included */
    uint64_t torn_bytes;   /* bytes cut off the end by the open as a torn write */
    uint64_t writes;       /* write batches since the open */
    uint64_t fsyncs;       /* fdatasyncs of the file since the open */
    uint64_t rewrites;
    bool broken;
} aof_stats;

typedef struct aof_file aof_file;

/* Opens (creating if needed) dir/queue/aof, replays it through replay(ctx,
 * ...), cuts a torn tail off and gets ready to append. opts may be NULL
 * for the defaults. On failure *out is NULL and err holds a message. */
int aof_open(const char *dir, const aof_options *opts, aof_file **out, aof_replay_fn replay,
             void *ctx, char *err, size_t errlen);
/* Writes and fdatasyncs anything buffered or unsynced (a clean shutdown
 * loses nothing), then frees the store. Returns 0 or the sync's error;
 * the store is freed either way. NULL is a no-op. */
int aof_close(aof_file *a);

/* Buffers one record (copied); not durable until aof_sync. DSYNC_ETOOBIG
 * over AOF_MAX_RECORD, DSYNC_ENOMEM with nothing buffered. */
int aof_append(aof_file *a, const void *data, size_t len);
/* Writes everything buffered with one write and, under AOF_FSYNC_ALWAYS,
 * makes it durable with one fdatasync. A failure breaks the store. */
int aof_sync(aof_file *a);

/* The same group commit with the disk work on another thread, so the
 * caller (a node loop, which also sends Raft's heartbeats) does not wait
 * for an fdatasync that may take hundreds of milliseconds:
 *  - aof_flush_begin takes everything buffered into f (an empty flush
 *    when there is nothing: it writes nothing, but still needs its end);
 *  - aof_flush_run, on any thread and touching nothing but f, writes it
 *    with one write and, under AOF_FSYNC_ALWAYS, one fdatasync;
 *  - aof_flush_end, back on the caller's thread, takes run's result: 0
 *    and the records are in the file (durable under ALWAYS), or
 *    DSYNC_EIO and the store is broken.
 * One flush out at a time. While it is out the caller may append (to the
 * next flush), start a background rewrite (whose switch waits for the
 * end) and read sizes and stats (they change at the end); aof_sync,
 * aof_rewrite and aof_flush_begin answer DSYNC_EINVAL, aof_flush_due does
 * nothing, and close must wait for the end. f starts zeroed (ut_buf_init
 * on data) and keeps its buffer between flushes; free f->data when done
 * with it. */
typedef struct {
    ut_buf data;      /* framed records */
    int fd;           /* the file, at begin */
    uint64_t off;     /* where the records go */
    uint64_t alloc;   /* file size with preallocated zeros; run may raise it */
    bool no_prealloc; /* the file system cannot fallocate: run may learn it */
    bool sync;        /* fdatasync after the write */
} aof_flush;
int aof_flush_begin(aof_file *a, aof_flush *f);
int aof_flush_run(aof_flush *f);
int aof_flush_end(aof_file *a, aof_flush *f, int rc);

/* AOF_FSYNC_EVERYSEC: fdatasyncs what aof_sync wrote if the last
 * fdatasync was 1000 ms or more before now_ms (a monotonic clock). A no-op
 * otherwise and under AOF_FSYNC_ALWAYS. A failure breaks the store. */
int aof_flush_due(aof_file *a, uint64_t now_ms);

/* Compacts: replaces the file by one holding just this snapshot (written
 * to aof.tmp, fsynced, renamed over aof, directory fsynced); appends then
 * continue after it. The snapshot must be the caller's whole state,
 * reflecting every record appended so far, buffered ones included: the
 * rewrite makes those durable through the snapshot (it is a sync point)
 * and drops them from the buffer, so nothing is applied twice. A failure
 * before the rename leaves the old file in use and the store working; one
 * after it breaks the store. */
int aof_rewrite(aof_file *a, const void *snapshot, size_t len);

/* The same compaction without stopping the caller for the snapshot's
 * write and fsync, which for a large queue take a second or more (a node
 * loop also sends Raft's heartbeats). aof_rewrite_start hands the
 * snapshot (malloc'd; owned from now on, freed whatever the result) to a
 * thread that writes and fsyncs it to aof.tmp; the caller goes on
 * appending and syncing to the old file, which stays the state, and every
 * record appended from now on is also kept for the new file. The same
 * rule as aof_rewrite: the snapshot reflects every record appended so far.
 * DSYNC_EINVAL while one runs (aof_rewrite too), DSYNC_EIO or
 * DSYNC_ENOMEM if it could not start (nothing changed).
 *
 * aof_rewrite_poll, called on the caller's thread now and then: 0 while
 * the thread works (or none runs). Once it is done: writes the records
 * appended meanwhile after the snapshot, fsyncs, renames over aof (the
 * commit point), fsyncs the directory, and appends go to the new file;
 * returns 1. A failure before the rename (the thread's write, out of
 * memory for the records kept, DSYNC_ETOOBIG when over 32 MiB of records
 * came meanwhile: they would stall the caller) returns it with the old file
 * still in use and the store working (try again later); a failure after
 * it breaks the store, as with aof_rewrite. aof_close waits for the
 * thread and drops its file. */
int aof_rewrite_start(aof_file *a, void *snapshot, size_t len);
int aof_rewrite_poll(aof_file *a);
/* Whether a rewrite runs in the background. */
bool aof_rewriting(const aof_file *a);

/* Bytes of records in the file (what aof_sync wrote; durable under
 * AOF_FSYNC_ALWAYS), for deciding when to rewrite. */
uint64_t aof_size(const aof_file *a);
void aof_get_stats(const aof_file *a, aof_stats *st);

/* Test hook: simulate a power loss. Cuts the file back to what was
 * fdatasynced, plus keep_unsynced bytes of what came after it (written by
 * aof_sync or still buffered), and frees the store without syncing. */
void aof_crash_for_test(aof_file *a, size_t keep_unsynced);

#endif
