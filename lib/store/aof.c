/*
 * aof.c: the queue's local append-only file in <data_dir>/queue/.
 *
 * See aof.h for the format, the recovery rules and the durability
 * contract. The framing, the torn-tail rules, the preallocation and the
 * temp-file-and-rename rewrite follow raftlog.c; what differs is that the
 * records are opaque, so the snapshot lives in the same file as the first
 * record and the rename is the one commit point of a compaction.
 *
 * The file is replayed through a read-only mapping, so a large queue does
 * not need a second copy of its file in memory while it starts.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aof.h"
#include "dsync/errors.h"
#include "fileio.h"

enum { REC_HEADER = 9 }; /* u32 len, u32 crc, u8 type */
#define PREALLOC_BYTES (4u << 20)
#define PENDING_KEEP_BYTES (8u << 20) /* a bigger buffer is freed after a write */
#define EVERYSEC_MS 1000u
/* Records kept for a background rewrite, at most: they are written and
 * fsynced by the caller's thread at the switch, so a rewrite outrun by
 * more appends than this is given up (and tried again later). */
#define TAIL_MAX_BYTES (32u << 20)

struct aof_file {
    char dir[DSYNC_PATH_MAX];
    char path[DSYNC_PATH_MAX + 16];
    char tmp_path[DSYNC_PATH_MAX + 16];
    aof_fsync_policy policy;
    ut_logger log;
    int fd;
    uint64_t size;         /* end of the last record written: where appends go */
    uint64_t durable_size; /* of which fdatasynced */
    uint64_t alloc_size;   /* file size, preallocated zeros included */
    bool no_prealloc;      /* the file system cannot fallocate: plain appends */
    bool broken;
    bool flushed_once; /* EVERYSEC: last_fsync_ms is meaningful */
    uint64_t last_fsync_ms;
    ut_buf pending;  /* framed records not yet written */
    bool flush_out;  /* between aof_flush_begin and aof_flush_end */
    aof_flush own;   /* aof_sync's flush, run on the caller's thread */
    aof_stats stats;
    /* A rewrite in the background (aof_rewrite_start): its thread writes
     * the snapshot to aof.tmp while appends go on to this file and are
     * copied to tail too, for the new file. */
    struct bg_rewrite *bg;
};

/* What the rewrite thread gets, and gives back through done. Only the
 * thread touches fd and snapshot until done is set. */
typedef struct bg_rewrite {
    pthread_t thread;
    int fd;            /* aof.tmp */
    void *snapshot;    /* owned */
    size_t len;
    uint64_t rec;      /* header + snapshot: where the tail goes */
    uint64_t alloc;    /* bytes the thread allocated */
    bool no_prealloc;  /* the file system cannot fallocate */
    int rc;            /* the thread's result */
    atomic_bool done;  /* set last by the thread */
    ut_buf tail;       /* framed records appended since the start */
    bool overrun;      /* tail passed TAIL_MAX_BYTES: the rewrite is given up */
} bg_rewrite;

/* ---- file helpers ------------------------------------------------------- */

/* Allocates [from, from + len) of fd. False if it cannot; *unsupported
 * says whether it never will on this file system. */
static bool allocate(int fd, uint64_t from, uint64_t len, bool *unsupported)
{
    if (fallocate(fd, 0, (off_t)from, (off_t)len) == 0) return true;
    if (errno == EOPNOTSUPP || errno == ENOSYS) *unsupported = true;
    return false;
}

static void frame_header(unsigned char hdr[REC_HEADER], uint8_t type, const void *data, size_t len)
{
    uint32_t crc = ut_crc32c(ut_crc32c(0, &type, 1), data, len);
    ut_put_le(hdr, (uint32_t)len, 4);
    ut_put_le(hdr + 4, crc, 4);
    hdr[8] = type;
}

/* ---- replay --------------------------------------------------------------- */

typedef struct {
    size_t valid; /* the prefix made of good records */
    size_t torn;  /* bytes after it to cut off as a torn write */
    uint64_t replayed;
} replay_result;

/* Does a complete record with a good checksum lie anywhere in d[from,
 * len)? A record cut by a crash leaves nothing valid after its header;
 * one whose length field was damaged in the middle of the file does. */
static bool valid_record_after(const unsigned char *d, size_t len, size_t from)
{
    for (size_t p = from; p + REC_HEADER <= len; p++) {
        uint8_t type = d[p + 8];
        if (type != AOF_RECORD && type != AOF_SNAPSHOT) continue;
        uint32_t plen = (uint32_t)ut_get_le(d + p, 4);
        if (plen > len - p - REC_HEADER) continue;
        uint32_t crc = ut_crc32c(ut_crc32c(0, &type, 1), d + p + REC_HEADER, plen);
        if (crc == (uint32_t)ut_get_le(d + p + 4, 4)) return true;
    }
    return false;
}

static int replay_file(const char *path, const unsigned char *d, size_t len, aof_replay_fn fn,
                       void *ctx, replay_result *r, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    size_t off = 0;
    while (off < len) {
        size_t left = len - off;
        if (sf_all_zero(d + off, left)) break; /* preallocated, never written */
        if (left < REC_HEADER) {
            r->torn = left; /* a header cut short */
            break;
        }
        uint32_t plen = (uint32_t)ut_get_le(d + off, 4);
        uint32_t crc = (uint32_t)ut_get_le(d + off + 4, 4);
        uint8_t type = d[off + 8];
        const unsigned char *payload = d + off + REC_HEADER;
        bool past_end = plen > left - REC_HEADER;
        if (past_end || ut_crc32c(ut_crc32c(0, &type, 1), payload, plen) != crc) {
            /* A bad record is a torn write only if nothing follows it: no
             * data after its end, and no valid record inside the span its
             * length claims (a damaged length field in the middle of the
             * file would otherwise swallow the records after it, into the
             * preallocated zeros or past the end). The snapshot was
             * fsynced before the rename that installed it, so damage to it
             * is never a torn write. */
            size_t end = past_end ? len : off + REC_HEADER + plen;
            bool snapshot = off == 0 && type == AOF_SNAPSHOT;
            if (!snapshot && sf_all_zero(d + end, len - end) &&
                !valid_record_after(d, end, off + REC_HEADER)) {
                r->torn = left;
                break;
            }
            snprintf(err, errlen,
                     "queue aof %s: %s the %s at offset %zu (length %u, file %zu bytes), and %s; "
                     "refusing to drop what follows (restore the data directory from a backup)",
                     path, past_end ? "length past the end of the file in" : "checksum mismatch in",
                     snapshot ? "snapshot record" : "record", off, plen, len,
                     snapshot ? "the snapshot was fsynced before it was installed, so it is "
                                "not a torn write"
                              : "valid data follows it");
            return DSYNC_ECORRUPT;
        }
        if (type == AOF_SNAPSHOT && off != 0) {
            snprintf(err, errlen,
                     "queue aof %s: a snapshot record at offset %zu (only the first record "
                     "may be one)",
                     path, off);
            return DSYNC_ECORRUPT;
        }
        if (type != AOF_SNAPSHOT && type != AOF_RECORD) {
            snprintf(err, errlen, "queue aof %s: unknown record type %u (length %u) at offset %zu",
                     path, type, plen, off);
            return DSYNC_ECORRUPT;
        }
        int rc = fn(ctx, (aof_type)type, payload, plen);
        if (rc != 0) {
            if (rc > 0 || rc < DSYNC_ERR_MIN) rc = DSYNC_EINVAL;
            snprintf(err, errlen, "queue aof %s: replaying the %s at offset %zu failed: %s", path,
                     type == AOF_SNAPSHOT ? "snapshot" : "record", off, dsync_strerror(rc));
            return rc;
        }
        r->replayed++;
        off += REC_HEADER + plen;
        r->valid = off;
    }
    return 0;
}

/* ---- open / close ------------------------------------------------------- */

static void bg_abandon(aof_file *a);

static void free_file(aof_file *a)
{
    bg_abandon(a);
    if (a->fd >= 0) close(a->fd);
    ut_buf_free(&a->pending);
    ut_buf_free(&a->own.data);
    free(a);
}

int aof_open(const char *dir, const aof_options *opts, aof_file **out, aof_replay_fn replay,
             void *ctx, char *err, size_t errlen)
{
    char scratch[8];
    if (!err || errlen == 0) {
        err = scratch;
        errlen = sizeof scratch;
    }
    err[0] = '\0';
    if (!out) return DSYNC_EINVAL;
    *out = NULL;
    if (!dir || !replay) return DSYNC_EINVAL;
    aof_options o = opts ? *opts : (aof_options){0};
    if (o.fsync != AOF_FSYNC_ALWAYS && o.fsync != AOF_FSYNC_EVERYSEC) {
        snprintf(err, errlen, "unknown fsync policy %d", (int)o.fsync);
        return DSYNC_EINVAL;
    }
    aof_file *a = calloc(1, sizeof *a);
    if (!a) return DSYNC_ENOMEM;
    a->fd = -1;
    a->policy = o.fsync;
    if (o.log) a->log = *o.log;
    ut_buf_init(&a->pending);
    ut_buf_init(&a->own.data);
    if (snprintf(a->dir, sizeof a->dir, "%s/queue", dir) >= (int)sizeof a->dir) {
        snprintf(err, errlen, "data directory path too long");
        free_file(a);
        return DSYNC_EINVAL;
    }
    snprintf(a->path, sizeof a->path, "%s/aof", a->dir);
    snprintf(a->tmp_path, sizeof a->tmp_path, "%s/aof.tmp", a->dir);

    int rc = sf_mkdir_p(a->dir);
    if (rc != 0) {
        snprintf(err, errlen, "cannot create %s: %s", a->dir, strerror(errno));
        free_file(a);
        return rc;
    }
    /* A rewrite that did not reach its rename: the aof beside it is the
     * complete state, the temp file at best a copy of it. */
    if (unlink(a->tmp_path) == 0)
        ut_log(&a->log, DSYNC_LOG_WARN, "queue aof: removed %s left by an unfinished rewrite",
               a->tmp_path);
    else if (errno != ENOENT)
        ut_log(&a->log, DSYNC_LOG_WARN, "queue aof: cannot remove %s: %s", a->tmp_path,
               strerror(errno));

    a->fd = open(a->path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    struct stat st;
    if (a->fd < 0 || fstat(a->fd, &st) != 0) {
        snprintf(err, errlen, "cannot open %s: %s", a->path, strerror(errno));
        free_file(a);
        return DSYNC_EIO;
    }
    size_t len = (size_t)st.st_size;
    void *map = NULL;
    if (len > 0) {
        map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, a->fd, 0);
        if (map == MAP_FAILED) {
            snprintf(err, errlen, "cannot map %s: %s", a->path, strerror(errno));
            free_file(a);
            return DSYNC_EIO;
        }
        madvise(map, len, MADV_SEQUENTIAL);
    }
    replay_result r;
    rc = replay_file(a->path, map, len, replay, ctx, &r, err, errlen);
    if (map) munmap(map, len);
    if (rc != 0) {
        free_file(a);
        return rc;
    }

    /* Cut a torn tail off for good before anything is appended after it;
     * a preallocated zero tail stays for the appends to come. */
    a->alloc_size = r.torn ? r.valid : len;
    if (r.torn) {
        if (ftruncate(a->fd, (off_t)r.valid) != 0 || fdatasync(a->fd) != 0) {
            snprintf(err, errlen, "cannot cut the torn tail of %s: %s", a->path, strerror(errno));
            free_file(a);
            return DSYNC_EIO;
        }
        ut_log(&a->log, DSYNC_LOG_WARN,
               "queue aof: cut %zu bytes of a torn write at offset %zu of %s", r.torn, r.valid,
               a->path);
    }
    /* Make the directory and the file's name durable if this open made them. */
    if (sf_fsync_dir(dir) != 0 || sf_fsync_dir(a->dir) != 0) {
        snprintf(err, errlen, "cannot fsync %s: %s", a->dir, strerror(errno));
        free_file(a);
        return DSYNC_EIO;
    }
    a->size = a->durable_size = r.valid;
    a->stats.replayed = r.replayed;
    a->stats.torn_bytes = r.torn;
    *out = a;
    return 0;
}

/* ---- writes --------------------------------------------------------------- */

int aof_append(aof_file *a, const void *data, size_t len)
{
    if (a->broken) return DSYNC_EIO;
    if (len > AOF_MAX_RECORD) return DSYNC_ETOOBIG;
    if (!data && len) return DSYNC_EINVAL;
    if (ut_buf_reserve(&a->pending, REC_HEADER + len) != 0) {
        a->pending.oom = false; /* nothing was added; the buffer is as it was */
        return DSYNC_ENOMEM;
    }
    unsigned char hdr[REC_HEADER];
    frame_header(hdr, AOF_RECORD, data, len);
    ut_buf_append(&a->pending, hdr, sizeof hdr); /* reserved: cannot fail */
    ut_buf_append(&a->pending, data, len);
    bg_rewrite *bg = a->bg;
    if (bg && !bg->overrun && bg->tail.len + sizeof hdr + len > TAIL_MAX_BYTES) {
        bg->overrun = true;
        ut_buf_free(&bg->tail);
    }
    if (bg && !bg->overrun) { /* the new file needs it too; out of memory fails that rewrite */
        ut_buf_append(&bg->tail, hdr, sizeof hdr);
        ut_buf_append(&bg->tail, data, len);
    }
    return 0;
}

int aof_flush_begin(aof_file *a, aof_flush *f)
{
    if (a->broken) return DSYNC_EIO;
    if (a->flush_out) return DSYNC_EINVAL;
    /* The buffers trade places: the flush's old one, emptied at its end,
     * takes the next records. */
    ut_buf spare = f->data;
    f->data = a->pending;
    a->pending = spare;
    a->pending.len = 0;
    f->fd = a->fd;
    f->off = a->size;
    f->alloc = a->alloc_size;
    f->no_prealloc = a->no_prealloc;
    f->sync = a->policy == AOF_FSYNC_ALWAYS && f->data.len > 0;
    a->flush_out = true;
    return 0;
}

int aof_flush_run(aof_flush *f)
{
    size_t n = f->data.len;
    if (n == 0) return 0;
    /* Room past the end inside allocated space, so the fdatasync need not
     * journal a new file size. */
    if (!f->no_prealloc && f->off + n > f->alloc) {
        uint64_t want = f->off + n + PREALLOC_BYTES;
        if (allocate(f->fd, f->alloc, want - f->alloc, &f->no_prealloc)) f->alloc = want;
    }
    if (sf_pwrite_all(f->fd, f->data.data, n, f->off) != 0) return DSYNC_EIO;
    if (f->sync && fdatasync(f->fd) != 0) return DSYNC_EIO;
    return 0;
}

int aof_flush_end(aof_file *a, aof_flush *f, int rc)
{
    a->flush_out = false;
    size_t n = f->data.len;
    if (f->data.cap > PENDING_KEEP_BYTES)
        ut_buf_free(&f->data); /* one huge batch should not pin its buffer */
    else
        f->data.len = 0;
    if (rc != 0) { /* what reached the disk is unknown: broken for good */
        a->broken = true;
        return DSYNC_EIO;
    }
    a->alloc_size = f->alloc;
    a->no_prealloc = f->no_prealloc;
    if (n == 0) return 0;
    a->size = f->off + n;
    a->stats.writes++;
    if (f->sync) {
        a->durable_size = a->size;
        a->stats.fsyncs++;
    }
    return 0;
}

static int fdatasync_file(aof_file *a)
{
    if (a->durable_size == a->size) return 0;
    if (fdatasync(a->fd) != 0) {
        a->broken = true;
        return DSYNC_EIO;
    }
    a->durable_size = a->size;
    a->stats.fsyncs++;
    return 0;
}

int aof_close(aof_file *a)
{
    if (!a) return 0;
    int rc = DSYNC_EIO;
    if (!a->broken && (rc = aof_sync(a)) == 0) rc = fdatasync_file(a);
    free_file(a);
    return rc;
}

int aof_sync(aof_file *a)
{
    int rc = aof_flush_begin(a, &a->own);
    if (rc != 0) return rc;
    return aof_flush_end(a, &a->own, aof_flush_run(&a->own));
}

int aof_flush_due(aof_file *a, uint64_t now_ms)
{
    if (a->broken) return DSYNC_EIO;
    if (a->policy != AOF_FSYNC_EVERYSEC || a->durable_size == a->size || a->flush_out) return 0;
    if (a->flushed_once && now_ms < a->last_fsync_ms + EVERYSEC_MS) return 0;
    int rc = fdatasync_file(a);
    if (rc == 0) {
        a->flushed_once = true;
        a->last_fsync_ms = now_ms;
    }
    return rc;
}

/* ---- rewrite ------------------------------------------------------------- */

int aof_rewrite(aof_file *a, const void *snapshot, size_t len)
{
    if (a->broken) return DSYNC_EIO;
    if (a->bg || a->flush_out) return DSYNC_EINVAL;
    if (len > AOF_MAX_SNAPSHOT) return DSYNC_ETOOBIG;
    if (!snapshot && len) return DSYNC_EINVAL;
    unsigned char hdr[REC_HEADER];
    frame_header(hdr, AOF_SNAPSHOT, snapshot, len);
    uint64_t rec = REC_HEADER + (uint64_t)len;

    /* Until the rename the old file is the state: any failure here leaves
     * it, and the buffer, as they were. */
    int fd = open(a->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return DSYNC_EIO;
    bool no_prealloc = a->no_prealloc;
    uint64_t alloc = rec;
    if (!no_prealloc && allocate(fd, 0, rec + PREALLOC_BYTES, &no_prealloc))
        alloc = rec + PREALLOC_BYTES;
    /* fsync, not fdatasync: the new file's size and name must be durable. */
    if (sf_pwrite_all(fd, hdr, sizeof hdr, 0) != 0 ||
        sf_pwrite_all(fd, snapshot, len, REC_HEADER) != 0 || fsync(fd) != 0 ||
        rename(a->tmp_path, a->path) != 0) {
        close(fd);
        unlink(a->tmp_path);
        return DSYNC_EIO;
    }

    /* Renamed: the new file is the state, and it holds everything appended
     * so far, buffered records included (the caller's snapshot reflects
     * them). */
    close(a->fd);
    a->fd = fd;
    a->size = a->durable_size = rec;
    a->alloc_size = alloc;
    a->no_prealloc = no_prealloc;
    a->pending.len = 0;
    a->stats.rewrites++;
    /* Until the directory is synced a power loss may bring the old name
     * back; that file is complete too, but it lacks what was buffered, so
     * nothing may be acknowledged before this fsync. */
    if (sf_fsync_dir(a->dir) != 0) {
        a->broken = true;
        return DSYNC_EIO;
    }
    return 0;
}

/* ---- rewrite in the background ------------------------------------------ */

static void *bg_main(void *arg)
{
    bg_rewrite *bg = arg;
    unsigned char hdr[REC_HEADER];
    frame_header(hdr, AOF_SNAPSHOT, bg->snapshot, bg->len);
    bg->alloc = bg->rec;
    if (!bg->no_prealloc && allocate(bg->fd, 0, bg->rec + PREALLOC_BYTES, &bg->no_prealloc))
        bg->alloc = bg->rec + PREALLOC_BYTES;
    bg->rc = sf_pwrite_all(bg->fd, hdr, sizeof hdr, 0) == 0 &&
                     sf_pwrite_all(bg->fd, bg->snapshot, bg->len, REC_HEADER) == 0 &&
                     fsync(bg->fd) == 0
                 ? 0
                 : DSYNC_EIO;
    atomic_store_explicit(&bg->done, true, memory_order_release);
    return NULL;
}

/* Waits for the thread and drops what it wrote: the old file goes on. */
static void bg_abandon(aof_file *a)
{
    bg_rewrite *bg = a->bg;
    if (!bg) return;
    pthread_join(bg->thread, NULL);
    close(bg->fd);
    unlink(a->tmp_path);
    free(bg->snapshot);
    ut_buf_free(&bg->tail);
    free(bg);
    a->bg = NULL;
}

int aof_rewrite_start(aof_file *a, void *snapshot, size_t len)
{
    if (a->broken) {
        free(snapshot);
        return DSYNC_EIO;
    }
    if (a->bg || (!snapshot && len)) {
        free(snapshot);
        return DSYNC_EINVAL;
    }
    if (len > AOF_MAX_SNAPSHOT) {
        free(snapshot);
        return DSYNC_ETOOBIG;
    }
    bg_rewrite *bg = calloc(1, sizeof *bg);
    int fd = bg ? open(a->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644) : -1;
    if (fd < 0) {
        free(bg);
        free(snapshot);
        return bg ? DSYNC_EIO : DSYNC_ENOMEM;
    }
    bg->fd = fd;
    bg->snapshot = snapshot;
    bg->len = len;
    bg->rec = REC_HEADER + (uint64_t)len;
    bg->no_prealloc = a->no_prealloc;
    ut_buf_init(&bg->tail);
    atomic_init(&bg->done, false);
    if (pthread_create(&bg->thread, NULL, bg_main, bg) != 0) {
        close(fd);
        unlink(a->tmp_path);
        free(snapshot);
        free(bg);
        return DSYNC_ENOMEM;
    }
    a->bg = bg;
    return 0;
}

bool aof_rewriting(const aof_file *a)
{
    return a->bg != NULL;
}

int aof_rewrite_poll(aof_file *a)
{
    bg_rewrite *bg = a->bg;
    /* The switch waits for a flush out: it writes to the old file. */
    if (!bg || a->flush_out || !atomic_load_explicit(&bg->done, memory_order_acquire)) return 0;
    pthread_join(bg->thread, NULL);
    int rc = a->broken    ? DSYNC_EIO
             : bg->overrun ? DSYNC_ETOOBIG
             : bg->tail.oom ? DSYNC_ENOMEM
                            : bg->rc;
    /* The new file gets what was appended meanwhile, then becomes the
     * state at the rename; until then the old file is, complete. */
    if (rc == 0 && (sf_pwrite_all(bg->fd, bg->tail.data, bg->tail.len, bg->rec) != 0 ||
                    fsync(bg->fd) != 0 || rename(a->tmp_path, a->path) != 0))
        rc = DSYNC_EIO;
    if (rc != 0) {
        close(bg->fd);
        unlink(a->tmp_path);
    } else {
        close(a->fd);
        a->fd = bg->fd;
        a->size = a->durable_size = bg->rec + bg->tail.len;
        a->alloc_size = bg->alloc > a->size ? bg->alloc : a->size;
        a->no_prealloc = bg->no_prealloc;
        /* Buffered records are in the tail, now durable in the new file. */
        a->pending.len = 0;
        a->stats.rewrites++;
    }
    free(bg->snapshot);
    ut_buf_free(&bg->tail);
    free(bg);
    a->bg = NULL;
    if (rc != 0) return rc;
    /* As aof_rewrite: nothing may be acknowledged before this fsync. */
    if (sf_fsync_dir(a->dir) != 0) {
        a->broken = true;
        return DSYNC_EIO;
    }
    return 1;
}

/* ---- introspection and tests --------------------------------------------- */

uint64_t aof_size(const aof_file *a)
{
    return a->size;
}

void aof_get_stats(const aof_file *a, aof_stats *st)
{
    *st = a->stats;
    st->size = a->size;
    st->durable_size = a->durable_size;
    st->pending = a->pending.len;
    st->broken = a->broken;
}

void aof_crash_for_test(aof_file *a, size_t keep_unsynced)
{
    /* What was written or buffered after the last fdatasync may or may
     * not survive a power loss; the test chooses how much did. */
    if (a->pending.len && sf_pwrite_all(a->fd, a->pending.data, a->pending.len, a->size) != 0)
        abort();
    uint64_t unsynced = a->size - a->durable_size + a->pending.len;
    if (keep_unsynced > unsynced) keep_unsynced = (size_t)unsynced;
    if (ftruncate(a->fd, (off_t)(a->durable_size + keep_unsynced)) != 0) abort();
    free_file(a);
}
