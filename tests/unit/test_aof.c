/*
 * test_aof.c: the queue's append-only file: what is synced survives in
 * order, a torn tail is cut off, a corrupt middle record stops the open, a
 * rewrite compacts to a snapshot and survives a crash at any point, a
 * flush can run on another thread, and a failed write breaks the store
 * for good.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "dsync/errors.h"
#include "store/aof.h"

typedef struct {
    char dir[64];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    strcpy(f->dir, "/tmp/dsync-aof-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static void remove_queue_dir(fixture *f)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s/queue", f->dir);
    assert_int_equal(system(cmd), 0);
}

static void queue_path(fixture *f, const char *name, char *out, size_t cap)
{
    snprintf(out, cap, "%s/queue/%s", f->dir, name);
}

/* ---- replay collector ------------------------------------------------------ */

typedef struct {
    aof_type type;
    char *data;
    size_t len;
} item;

typedef struct {
    item *items;
    size_t n, cap;
    size_t fail_at; /* the callback fails on this item (SIZE_MAX: never) */
} collector;

static int collect(void *ctx, aof_type type, const void *data, size_t len)
{
    collector *c = ctx;
    if (c->n == c->fail_at) return DSYNC_ENOMEM;
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 16;
        c->items = realloc(c->items, c->cap * sizeof *c->items);
        assert_non_null(c->items);
    }
    item *it = &c->items[c->n++];
    it->type = type;
    it->len = len;
    it->data = malloc(len + 1);
    assert_non_null(it->data);
    memcpy(it->data, data, len);
    it->data[len] = '\0';
    return 0;
}

static void collector_reset(collector *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->items[i].data);
    free(c->items);
    memset(c, 0, sizeof *c);
    c->fail_at = SIZE_MAX;
}

static aof_file *open_with(fixture *f, const aof_options *opts, collector *c)
{
    collector_reset(c);
    aof_file *a = NULL;
    char err[512] = "";
    int rc = aof_open(f->dir, opts, &a, collect, c, err, sizeof err);
    if (rc != 0) fail_msg("open: %s (%s)", dsync_strerror(rc), err);
    return a;
}

static aof_file *open_ok(fixture *f, collector *c)
{
    return open_with(f, NULL, c);
}

/* Expects the replay to have given the snapshot (unless NULL), then records. */
static void expect_replay(const collector *c, const char *snapshot, const char *const *records,
                          size_t n)
{
    size_t first = snapshot ? 1 : 0;
    assert_int_equal(c->n, first + n);
    if (snapshot) {
        assert_int_equal(c->items[0].type, AOF_SNAPSHOT);
        assert_string_equal(c->items[0].data, snapshot);
    }
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(c->items[first + i].type, AOF_RECORD);
        assert_int_equal(c->items[first + i].len, strlen(records[i]));
        assert_string_equal(c->items[first + i].data, records[i]);
    }
}

static void append(aof_file *a, const char *s)
{
    assert_int_equal(aof_append(a, s, strlen(s)), 0);
}

static size_t framed(const char *s)
{
    return 9 + strlen(s);
}

static aof_stats stats_of(const aof_file *a)
{
    aof_stats st;
    aof_get_stats(a, &st);
    return st;
}

/* ---- file surgery ------------------------------------------------------------ */

static off_t file_size(fixture *f, const char *name)
{
    char path[128];
    queue_path(f, name, path, sizeof path);
    struct stat st;
    if (stat(path, &st) != 0) return -1;
    return st.st_size;
}

static void xor_byte(fixture *f, off_t offset, unsigned char mask)
{
    char path[128];
    queue_path(f, "aof", path, sizeof path);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    unsigned char c;
    assert_int_equal(pread(fd, &c, 1, offset), 1);
    c ^= mask;
    assert_int_equal(pwrite(fd, &c, 1, offset), 1);
    close(fd);
}

static void write_file(fixture *f, const char *name, const void *data, size_t len, off_t size)
{
    char path[128];
    queue_path(f, name, path, sizeof path);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    if (size > (off_t)len) assert_int_equal(ftruncate(fd, size), 0);
    close(fd);
}

/* Appends zeros to the file, as preallocated space a crash left. */
static void extend_with_zeros(fixture *f, off_t extra)
{
    char path[128];
    queue_path(f, "aof", path, sizeof path);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(truncate(path, st.st_size + extra), 0);
}

static size_t frame(unsigned char *out, uint8_t type, const char *payload)
{
    size_t len = strlen(payload);
    ut_put_le(out, len, 4);
    ut_put_le(out + 4, ut_crc32c(ut_crc32c(0, &type, 1), payload, len), 4);
    out[8] = type;
    memcpy(out + 9, payload, len);
    return 9 + len;
}

/* ---- tests ------------------------------------------------------------------- */

static void test_records_survive_a_close_and_reopen_in_order(void **state)
{
    fixture *f = *state;
    collector c = {.fail_at = SIZE_MAX};
    aof_file *a = open_ok(f, &c);
    assert_int_equal(c.n, 0);
    assert_int_equal(aof_size(a), 0);
    append(a, "one");
    append(a, "two");
    append(a, ""); /* an empty record is a record */
    append(a, "three");
    assert_int_equal(aof_sync(a), 0);
    assert_int_equal(aof_size(a), framed("one") + framed("two") + framed("") + framed("three"));
    append(a, "four, buffered at close"); /* a clean close writes it */
    assert_int_equal(aof_close(a), 0);

    a = open_ok(f, &c);
    const char *want[] = {"one", "two", "", "three", "four, buffered at close"};
    expect_replay(&c, NULL, want, 5);
    assert_int_equal(stats_of(a).replayed, 5);
    assert_int_equal(stats_of(a).torn_bytes, 0);
    assert_int_equal(aof_close(a), 0);
    collector_reset(&c);
}

static void test_many_appends_share_one_group_commit(void **state)
{
    fixture *f = *state;
    collector c = {.fail_at = SIZE_MAX};
    aof_file *a = open_ok(f, &c);
    char buf[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(buf, sizeof buf, "enqueue %d", i);
        append(a, buf);
    }
    aof_stats st = stats_of(a);
    assert_int_equal(st.writes, 0);
    assert_int_equal(st.fsyncs, 0);
    assert_int_equal(st.size, 0);
    assert_true(st.pending > 0);
    assert_int_equal(aof_sync(a), 0);
    st = stats_of(a);
    assert_int_equal(st.writes, 1);
    assert_int_equal(st.fsyncs, 1);
    assert_int_equal(st.pending, 0);
    assert_int_equal(st.durable_size, st.size);
    /* Nothing buffered: no write, no flush. */
    assert_int_equal(aof_sync(a), 0);
    assert_int_equal(stats_of(a).fsyncs, 1);
    aof_crash_for_test(a, 0);

    a = open_ok(f, &c);
    assert_int_equal(c.n, 1000);
    for (int i = 0; i < 1000; i++) {
        snprintf(buf, sizeof buf, "enqueue %d", i);
        assert_string_equal(c.items[i].data, buf);
    }
    assert_int_equal(aof_close(a), 0);
    collector_reset(&c);
}

/* Every cut point inside the unsynced records, with the file ending there
 * or followed by preallocated zeros, recovers the synced prefix plus the
 * unsynced records that made it whole, and the store carries on. */
static void test_a_torn_tail_at_every_cut_point_recovers_the_synced_prefix(void **state)
{
    fixture *f = *state;
    collector c = {.fail_at = SIZE_MAX};
    const char *recs[] = {"alpha", "beta", "in flight when the power went", "second unsynced",
                          "after"};
    size_t l2 = framed(recs[2]), l3 = framed(recs[3]);
    for (int zero_tail = 0; zero_tail < 2; zero_tail++) {
        for (size_t keep = 0; keep <= l2 + l3; keep++) {
            remove_queue_dir(f);
            aof_file *a = open_ok(f, &c);
            append(a, recs[0]);
            append(a, recs[1]);
            assert_int_equal(aof_sync(a), 0);
            append(a, recs[2]);
            append(a, recs[3]);
            aof_crash_for_test(a, keep);
            if (zero_tail) extend_with_zeros(f, 4096);

            size_t whole = keep >= l2 + l3 ? 2 : keep >= l2 ? 1 : 0;
            size_t partial = keep - (whole == 2 ? l2 + l3 : whole == 1 ? l2 : 0);
            a = open_ok(f, &c);
            expect_replay(&c, NULL, recs, 2 + whole);
            uint64_t torn = stats_of(a).torn_bytes;
            if (partial == 0)
                assert_int_equal(torn, 0);
            else
                assert_int_equal(torn, partial + (zero_tail ? 4096 : 0));
            /* The cut is gone for good: the next record lands right after. */
            assert_int_equal(aof_size(a), framed(recs[0]) + framed(recs[1]) +
                                              (whole >= 1 ? l2 : 0) + (whole == 2 ? l3 : 0));
            append(a, recs[4]);
            assert_int_equal(aof_sync(a), 0);
            assert_int_equal(aof_close(a), 0);

            a = open_ok(f, &c);
            assert_int_equal(c.n, 3 + whole);
            assert_string_equal(c.items[2 + whole].data, recs[4]);
            assert_int_equal(stats_of(a).torn_bytes, 0);
            assert_int_equal(aof_close(a), 0);
        }
    }
    collector_reset(&c);
}

static void test_a_corrupt_record_in_the_middle_stops_the_open(void **state)
{
    fixture *f = *state;
    collector c = {.fail_at = SIZE_MAX};
    aof_file *a = open_ok(f, &c);
    append(a, "first record");
    append(a, "second record");
    append(a, "third record");
    assert_int_equal(aof_sync(a), 0);
    assert_int_equal(aof_close(a), 0);
    off_t second = (off_t)framed("first record");
    xor_byte(f, second + 12, 0x40); /* inside the second record's payload */

    aof_file *bad = (aof_file *)&c; /* must come back NULL */
    char err[512] = "";
    collector_reset(&c);
    assert_int_equal(aof_open(f->dir, NULL, &bad, collect, &c, err, sizeof err), DSYNC_ECORRUPT);
    assert_null(bad);
    assert_non_null(strstr(err, "checksum mismatch"));
    char where[32];
    snprintf(where, sizeof where, "offset %lld", (long long)second);
    assert_non_null(strstr(err, where));
    /* The file is left as it was for the operator. */
    assert_true(file_size(f, "aof") > second + (off_t)framed("second record"));
    collector_reset(&c);
}

/* A damaged length field makes a record run into the preallocated zeros or
 * past the end of the file, which is what a torn write looks like too; the
 * valid records inside the span it claims tell them apart. */
static void test_a_damaged_length_in_the_middle_is_not_taken_for_a_torn_tail(void **state)
{
    fixture *f = *state;
    collector c = {.fail_at = SIZE_MAX};
    off_t second = (off_t)framed("first record");
    /* +1 MiB ends inside the 4 MiB preallocated; +256 MiB past the end. */
    const struct {
        off_t byte;
        const char *why;
    } damage[] = {{second + 2, "checksum mismatch"}, {second + 3, "past the end"}};
    for (size_t i = 0; i < 2; i++) {
        remove_queue_dir(f);
        aof_file *a = open_ok(f, &c);
        append(a, "first record");
        append(a, "second record");
        append(a, "third record");
        assert_int_equal(aof_sync(a), 0);
        assert_int_equal(aof_close(a), 0);
        xor_byte(f, damage[i].byte, 0x10);

        aof_file *bad;
        char err[512] = "";
        assert_int_equal(aof_open(f->dir, NULL, &bad, collect, &c, err, sizeof err),
                         DSYNC_ECORRUPT);
        char where[32];
        snprintf(where, sizeof where, "offset %lld", (long long)second);
        assert_non_null(strstr(err, where));
        assert_non_null(strstr(err, damage[i].why));
    }
    collector_reset(&c);
}

static void test_a_bad_checksum_on_the_last_record_is_a_torn_write(void **state)
{
    fixture *f = *state;
    collector c = {.fail_at = SIZE_MAX};
    aof_file *a = open_ok(f, &c);
    append(a, "first record");
    append(a, "second record");
    assert_int_equal(aof_sync(a), 0);
    uint64_t size = aof_size(a);
    assert_int_equal(aof_close(a), 0);
    xor_byte(f, (off_t)size - 2, 0x01); /* followed by the preallocated zeros */

    a = open_ok(f, &c);
    const char *want[] = {"first record", "store goes on"};
    expect_replay(&c, NULL, want, 1);
    assert_true(stats_of(a).torn_bytes >= framed("second record"));
    assert_int_equal(file_size(f, "aof"), (off_t)framed("first record"));
    append(a, want[1]);
    assert_int_equal(aof_sync(a), 0);
    assert_int_equal(aof_close(a), 0);
    a = open_ok(f, &c);
    expect_replay(&c, NULL, want, 2);
    assert_int_equal(aof_close(a), 0);
    collector_reset(&c);
}

static void test_the_preallocated_zero_tail_is_not_a_torn_write(void **state)
{
    fixture *f = *state;
    collector c = {.fail_at = SIZE_MAX};
    aof_file *a = open_ok(f, &c);
    append(a, "first record");
    assert_int_equal(aof_sync(a), 0);
    assert_true(file_size(f, "aof") > (off_t)aof_size(a));
    assert_int_equal(aof_close(a), 0);

    const char *want[] = {"first record", "second record"};
    a = open_ok(f, &c);
    expect_replay(&c, NULL, want, 1);
    assert_int_equal(stats_of(a).torn_bytes, 0);
    /* Appends after a reopen land after the last record, not after the
     * preallocated space, and need no new allocation. */
    off_t allocated = file_size(f, "aof");
    append(a, want[1]);
    assert_int_equal(aof_sync(a), 0);
    assert_int_equal(file_size(f, "aof"), allocated);
    assert_int_equal(aof_close(a), 0);
    a = open_ok(f, &c);
    expect_replay(&c, NULL, want, 2);
    assert_int_equal(stats_of(a).torn_bytes, 0);
    assert_int_equal(aof_close(a), 0);
    collector_reset(&c);
}

static void test_a_rewrite_then_reopen_gives_the_snapshot_and_later_records(void **state)
{
    fixture *f = *state;
    collector c = {.fail_at = SIZE_MAX};
    aof_file *a = open_ok(f, &c);
    append(a, "A");
    append(a, "B");
    append(a, "C");
    assert_int_equal(aof_sync(a), 0);
    assert_int_equal(aof_rewrite(a, "state ABC", 9), 0);
    assert_int_equal(aof_size(a), framed("state ABC"));
    append(a, "D");
    append(a, "E");
    assert_int_equal(aof_sync(a), 0);
    assert_int_equal(stats_of(a).rewrites, 1);
    assert_int_equal(aof_close(a), 0);

    const char *later[] = {"D", "E"};
    a = open_ok(f, &c);
    expect_replay(&c, "state ABC", later, 2);
    /* Compacting again, after a reopen, replaces the snapshot. */
    assert_int_equal(aof_rewrite(a, "state ABCDE", 11), 0);
    append(a, "F");
    assert_int_equal(aof_close(a), 0);
    a = open_ok(f, &c);
    const char *after_second[] = {"F"};
    expect_replay(&c, "state ABCDE", after_second, 1);
    /* An empty snapshot (an empty queue) is a snapshot too. */
    assert_int_equal(aof_rewrite(a, NULL, 0), 0);
    assert_int_equal(aof_close(a), 0);
    a = open_ok(f, &c);
    expect_replay(&c, "", NULL, 0);
    assert_int_equal(aof_close(a), 0);
    assert_int_equal(file_size(f, "aof.tmp"), -1);
    collector_reset(&c);
}

/* The snapshot reflects every record appended so far; records buffered
 * when it is written are durable through it and not written again. */
static void test_a_rewrite_makes_buffered_records_durable_through_the_snapshot(void **state)
{
    fixture *f = *state;
    collector c = {.fail_at = SIZE_MAX};
    for (int everysec = 0; everysec < 2; everysec++) {
        remove_queue_dir(f);
        aof_options opts = {.fsync = everysec ? AOF_FSYNC_EVERYSEC : AOF_FSYNC_ALWAYS};
        aof_file *a = open_with(f, &opts, &c);
        append(a, "A");
        assert_int_equal(aof_sync(a), 0); /* everysec: written, not flushed */
        append(a, "B");                   /* buffered */
        assert_int_equal(aof_rewrite(a, "state AB", 8), 0);
        aof_stats st = stats_of(a);
        assert_int_equal(st.pending, 0);
        assert_int_equal(st.durable_size, st.size);
        assert_int_equal(aof_sync(a), 0);
        aof_crash_for_test(a, SIZE_MAX); /* a power loss right after */

        a = open_with(f, &opts, &c);
        expect_replay(&c, "state AB", NULL, 0);
        append(a, "C");
        assert_int_equal(aof_sync(a), 0);
        assert_int_equal(aof_flush_due(a, 0), 0);
        aof_crash_for_test(a, 0);
        const char *later[] = {"C"};
        a = open_with(f, &opts, &c);
        expect_replay(&c, "state AB", later, 1);
        assert_int_equal(aof_close(a), 0);
    }
    collector_reset(&c);
}

/* The rename is the commit point: before it the old file is the whole
 * state and a leftover temp file (whole or cut) is ignored; after it the
 * snapshot was fsynced, so damage to it is corruption, not a torn write. */
static void test_a_crash_during_a_rewrite_recovers_a_complete_state(void **state)
{
    fixture *f = *state;
    collector c = {.fail_at = SIZE_MAX};
    aof_file *a = open_ok(f, &c);
    append(a, "A");
    append(a, "B");
    assert_int_equal(aof_sync(a), 0);
    assert_int_equal(aof_close(a), 0);
    const char *want[] = {"A", "B", "C"};

    unsigned char snap[64];
    size_t snap_len = frame(snap, AOF_SNAPSHOT, "state AB, not yet renamed");
    size_t cuts[] = {5, snap_len - 3, snap_len};
    for (size_t i = 0; i < 3; i++) {
        /* A temp file cut at the crash, or whole and fsynced but not
         * renamed, with or without its preallocated space. */
        write_file(f, "aof.tmp", snap, cuts[i], i == 2 ? 4096 : 0);
        a = open_ok(f, &c);
        expect_replay(&c, NULL, want, 2);
        assert_int_equal(file_size(f, "aof.tmp"), -1);
        assert_int_equal(aof_close(a), 0);
    }

    /* After the rename: the new file is the state. */
    a = open_ok(f, &c);
    assert_int_equal(aof_rewrite(a, "state AB", 8), 0);
    append(a, "C");
    assert_int_equal(aof_sync(a), 0);
    aof_crash_for_test(a, 0);
    a = open_ok(f, &c);
    expect_replay(&c, "state AB", want + 2, 1);
    assert_int_equal(aof_close(a), 0);

    /* A snapshot cut short or damaged is never taken for a torn write. */
    char path[128];
    queue_path(f, "aof", path, sizeof path);
    assert_int_equal(truncate(path, 12), 0);
    aof_file *bad;
    char err[512] = "";
    assert_int_equal(aof_open(f->dir, NULL, &bad, collect, &c, err, sizeof err), DSYNC_ECORRUPT);
    assert_non_null(strstr(err, "snapshot"));
    assert_non_null(strstr(err, "offset 0"));
    write_file(f, "aof", snap, snap_len, 4096);
    xor_byte(f, 20, 0x02);
    assert_int_equal(aof_open(f->dir, NULL, &bad, collect, &c, err, sizeof err), DSYNC_ECORRUPT);
    assert_non_null(strstr(err, "snapshot record at offset 0"));
    collector_reset(&c);
}

static void test_a_rewrite_that_fails_before_its_rename_leaves_the_store_working(void **state)
{
    fixture *f = *state;
    collector c = {.fail_at = SIZE_MAX};
    aof_file *a = open_ok(f, &c);
    append(a, "A");
    assert_int_equal(aof_sync(a), 0);
    append(a, "B"); /* buffered across the failed rewrite */
    char tmp[128];
    queue_path(f, "aof.tmp", tmp, sizeof tmp);
    assert_int_equal(mkdir(tmp, 0755), 0); /* the temp file cannot be created */
    assert_int_equal(aof_rewrite(a, "state AB", 8), DSYNC_EIO);
    assert_false(stats_of(a).broken);
    assert_int_equal(stats_of(a).pending, framed("B"));
    append(a, "C");
    assert_int_equal(aof_sync(a), 0);
    aof_crash_for_test(a, 0);
    assert_int_equal(rmdir(tmp), 0);

    const char *want[] = {"A", "B", "C"};
    a = open_ok(f, &c);
    expect_replay(&c, NULL, want, 3);
    assert_int_equal(aof_close(a), 0);
    collector_reset(&c);
}

/* A copy of s in malloc'd memory, as aof_rewrite_start takes it. */
static void *owned(const char *s)
{
    char *p = strdup(s);
    assert_non_null(p);
    return p;
}

/* Polls a background rewrite until it ends (at most 10 s); its result. */
static int poll_done(aof_file *a)
{
    for (int i = 0; i < 10000; i++) {
        int rc = aof_rewrite_poll(a);
        if (rc != 0 || !aof_rewriting(a)) return rc;
        usleep(1000);
    }
    fail_msg("the background rewrite did not end within 10 s");
    return -1;
}

/* The snapshot is written in the background while appends and syncs go
 * on to the old file; those records follow the snapshot in the new file,
 * once each, and everything acknowledged survives a power loss right
 * after the switch. */
static void test_a_background_rewrite_keeps_the_records_appended_meanwhile(void **state)
{
    fixture *f = *state;
    collector c = {.fail_at = SIZE_MAX};
    aof_file *a = open_ok(f, &c);
    append(a, "A");
    assert_int_equal(aof_sync(a), 0);
    append(a, "B"); /* buffered at the start: in the snapshot, not after it */
    assert_int_equal(aof_rewrite_start(a, owned("state AB"), 8), 0);
    assert_true(aof_rewriting(a));
    /* One at a time, and not by the blocking way either. */
    assert_int_equal(aof_rewrite_start(a, owned("x"), 1), DSYNC_EINVAL);
    assert_int_equal(aof_rewrite(a, "x", 1), DSYNC_EINVAL);
    append(a, "C");
    assert_int_equal(aof_sync(a), 0); /* C durable in the old file */
    append(a, "D");                   /* buffered when the switch comes */
    assert_int_equal(poll_done(a), 1);
    assert_false(aof_rewriting(a));
    assert_int_equal(stats_of(a).rewrites, 1);
    assert_int_equal(stats_of(a).pending, 0);
    assert_int_equal(aof_size(a), framed("state AB") + framed("C") + framed("D"));
    assert_int_equal(file_size(f, "aof.tmp"), -1);
    append(a, "E");
    assert_int_equal(aof_sync(a), 0);
    aof_crash_for_test(a, 0); /* power loss: what was fdatasynced stays */

    const char *later[] = {"C", "D", "E"};
    a = open_ok(f, &c);
    expect_replay(&c, "state AB", later, 3);
    assert_int_equal(aof_rewrite_poll(a), 0); /* none runs */
    assert_int_equal(aof_close(a), 0);
    collector_reset(&c);
}

/* Closing while the thread writes: it is waited for and its file
 * dropped; the old file holds everything. */
static void test_closing_during_a_background_rewrite_keeps_the_old_file(void **state)
{
    fixture *f = *state;
    collector c = {.fail_at = SIZE_MAX};
    aof_file *a = open_ok(f, &c);
    append(a, "A");
    assert_int_equal(aof_sync(a), 0);
    /* Large enough that the thread is likely still at work. */
    size_t big = 8u << 20;
    char *snap = malloc(big);
    assert_non_null(snap);
    memset(snap, 's', big);
    assert_int_equal(aof_rewrite_start(a, snap, big), 0);
    append(a, "B");
    assert_int_equal(aof_close(a), 0);
    assert_int_equal(file_size(f, "aof.tmp"), -1);

    const char *want[] = {"A", "B"};
    a = open_ok(f, &c);
    expect_replay(&c, NULL, want, 2);
    assert_int_equal(aof_close(a), 0);
    collector_reset(&c);
}

/* More than 32 MiB appended while the thread writes: written at the
 * switch, they would stall the caller, so the rewrite is given up and the
 * old file, complete, goes on. */
static void test_a_background_rewrite_outrun_by_appends_is_given_up(void **state)
{
    fixture *f = *state;
    collector c = {.fail_at = SIZE_MAX};
    aof_file *a = open_ok(f, &c);
    append(a, "A");
    assert_int_equal(aof_rewrite_start(a, owned("state A"), 7), 0);
    size_t mib = 1u << 20;
    char *rec = malloc(mib);
    assert_non_null(rec);
    for (int i = 0; i < 33; i++) {
        memset(rec, 'a' + i % 26, mib);
        assert_int_equal(aof_append(a, rec, mib), 0);
        assert_int_equal(aof_sync(a), 0);
    }
    assert_int_equal(poll_done(a), DSYNC_ETOOBIG);
    assert_false(aof_rewriting(a));
    assert_false(stats_of(a).broken);
    assert_int_equal(stats_of(a).rewrites, 0);
    assert_int_equal(file_size(f, "aof.tmp"), -1);
    append(a, "Z");
    assert_int_equal(aof_close(a), 0);
    free(rec);

    a = open_ok(f, &c);
    assert_int_equal(c.n, 35); /* A, the 33, Z: no snapshot */
    assert_int_equal(c.items[0].type, AOF_RECORD);
    assert_string_equal(c.items[0].data, "A");
    assert_int_equal(c.items[33].len, mib);
    assert_string_equal(c.items[34].data, "Z");
    assert_int_equal(aof_close(a), 0);
    collector_reset(&c);
}

/* A background rewrite that cannot start changes nothing. */
static void test_a_background_rewrite_that_cannot_start_leaves_the_store_working(void **state)
{
    fixture *f = *state;
    collector c = {.fail_at = SIZE_MAX};
    aof_file *a = open_ok(f, &c);
    append(a, "A");
    char tmp[128];
    queue_path(f, "aof.tmp", tmp, sizeof tmp);
    assert_int_equal(mkdir(tmp, 0755), 0); /* the temp file cannot be created */
    assert_int_equal(aof_rewrite_start(a, owned("state A"), 7), DSYNC_EIO);
    assert_false(aof_rewriting(a));
    assert_int_equal(aof_rewrite_poll(a), 0);
    assert_false(stats_of(a).broken);
    append(a, "B");
    assert_int_equal(aof_sync(a), 0);
    assert_int_equal(aof_close(a), 0);
    assert_int_equal(rmdir(tmp), 0);

    const char *want[] = {"A", "B"};
    a = open_ok(f, &c);
    expect_replay(&c, NULL, want, 2);
    assert_int_equal(aof_close(a), 0);
    collector_reset(&c);
}

/* Finds this process's descriptor of path (the store's file). */
static int fd_of(const char *path)
{
    char real[PATH_MAX], link[PATH_MAX], name[300];
    assert_non_null(realpath(path, real));
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    int found = -1;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        snprintf(name, sizeof name, "/proc/self/fd/%s", e->d_name);
        ssize_t n = readlink(name, link, sizeof link - 1);
        if (n <= 0) continue;
        link[n] = '\0';
        if (strcmp(link, real) == 0) found = atoi(e->d_name);
    }
    closedir(d);
    return found;
}

/* After a failed write or fsync the kernel may have dropped the pages and
 * forgotten the error; the store must not carry on as if nothing happened. */
static void test_a_failed_write_breaks_the_store_for_good(void **state)
{
    fixture *f = *state;
    collector c = {.fail_at = SIZE_MAX};
    aof_file *a = open_ok(f, &c);
    append(a, "A");
    assert_int_equal(aof_sync(a), 0);

    char path[128];
    queue_path(f, "aof", path, sizeof path);
    int fd = fd_of(path);
    assert_true(fd >= 0);
    int ro = open("/dev/null", O_RDONLY);
    assert_true(ro >= 0);
    assert_int_equal(dup2(ro, fd), fd); /* every write to the file now fails */
    close(ro);

    append(a, "B");
    assert_int_equal(aof_sync(a), DSYNC_EIO);
    assert_true(stats_of(a).broken);
    assert_int_equal(aof_append(a, "C", 1), DSYNC_EIO);
    assert_int_equal(aof_sync(a), DSYNC_EIO);
    assert_int_equal(aof_flush_due(a, 99999), DSYNC_EIO);
    assert_int_equal(aof_rewrite(a, "state", 5), DSYNC_EIO);
    assert_int_equal(aof_close(a), DSYNC_EIO);

    const char *want[] = {"A"};
    a = open_ok(f, &c);
    expect_replay(&c, NULL, want, 1);
    assert_int_equal(aof_close(a), 0);
    collector_reset(&c);
}

/* ---- flushes on another thread ------------------------------------------------ */

static void *run_flush(void *arg)
{
    aof_flush *fl = arg;
    intptr_t rc = aof_flush_run(fl);
    return (void *)rc;
}

static int flush_on_thread(aof_flush *fl)
{
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, run_flush, fl), 0);
    void *rc;
    assert_int_equal(pthread_join(t, &rc), 0);
    return (int)(intptr_t)rc;
}

/* A flush taken by aof_flush_begin and run on another thread makes its
 * records durable at aof_flush_end; what is appended while it is out goes
 * with the next flush, not this one. */
static void test_a_flush_run_on_another_thread_makes_its_records_durable(void **state)
{
    fixture *f = *state;
    collector c = {.fail_at = SIZE_MAX};
    aof_file *a = open_ok(f, &c);
    aof_flush fl;
    memset(&fl, 0, sizeof fl);
    ut_buf_init(&fl.data);
    append(a, "A");
    append(a, "B");
    assert_int_equal(aof_flush_begin(a, &fl), 0);
    append(a, "C"); /* after the begin: the next flush's */
    assert_int_equal(stats_of(a).pending, framed("C"));
    assert_int_equal(stats_of(a).size, 0); /* sizes change at the end */
    assert_int_equal(flush_on_thread(&fl), 0);
    assert_int_equal(aof_flush_end(a, &fl, 0), 0);
    aof_stats st = stats_of(a);
    assert_int_equal(st.size, framed("A") + framed("B"));
    assert_int_equal(st.durable_size, st.size);
    assert_int_equal(st.fsyncs, 1);
    assert_int_equal(st.pending, framed("C"));
    aof_crash_for_test(a, 0); /* a power loss now: C was never written */

    const char *want[] = {"A", "B"};
    a = open_ok(f, &c);
    expect_replay(&c, NULL, want, 2);
    append(a, "D");
    assert_int_equal(aof_flush_begin(a, &fl), 0);
    assert_int_equal(flush_on_thread(&fl), 0);
    assert_int_equal(aof_flush_end(a, &fl, 0), 0);
    /* An empty flush writes nothing. */
    assert_int_equal(aof_flush_begin(a, &fl), 0);
    assert_int_equal(flush_on_thread(&fl), 0);
    assert_int_equal(aof_flush_end(a, &fl, 0), 0);
    assert_int_equal(stats_of(a).writes, 1);
    aof_crash_for_test(a, 0);
    const char *want2[] = {"A", "B", "D"};
    a = open_ok(f, &c);
    expect_replay(&c, NULL, want2, 3);
    assert_int_equal(aof_close(a), 0);
    ut_buf_free(&fl.data);
    collector_reset(&c);
}

/* While a flush is out nothing else may write the file: a second flush, a
 * sync and a rewrite are refused, and a background rewrite that is done
 * waits for the flush's end to switch files; then everything survives. */
static void test_while_a_flush_is_out_nothing_else_writes_the_file(void **state)
{
    fixture *f = *state;
    collector c = {.fail_at = SIZE_MAX};
    aof_file *a = open_ok(f, &c);
    aof_flush fl, other;
    memset(&fl, 0, sizeof fl);
    memset(&other, 0, sizeof other);
    ut_buf_init(&fl.data);
    ut_buf_init(&other.data);
    append(a, "A");
    assert_int_equal(aof_flush_begin(a, &fl), 0);
    append(a, "B");
    assert_int_equal(aof_flush_begin(a, &other), DSYNC_EINVAL);
    assert_int_equal(aof_sync(a), DSYNC_EINVAL);
    assert_int_equal(aof_rewrite(a, "state", 5), DSYNC_EINVAL);
    assert_int_equal(stats_of(a).pending, framed("B")); /* none of them took B */
    /* The snapshot covers A and B; C comes after it. */
    assert_int_equal(aof_rewrite_start(a, owned("state AB"), 8), 0);
    append(a, "C");
    for (int i = 0; i < 200; i++) { /* the thread's snapshot is written by then, or soon */
        assert_int_equal(aof_rewrite_poll(a), 0);
        usleep(1000);
    }
    assert_true(aof_rewriting(a));
    assert_int_equal(flush_on_thread(&fl), 0);
    assert_int_equal(aof_flush_end(a, &fl, 0), 0);
    assert_int_equal(poll_done(a), 1);
    assert_int_equal(stats_of(a).pending, 0); /* B in the snapshot, C in the new file's tail */
    aof_crash_for_test(a, 0);

    const char *want[] = {"C"};
    a = open_ok(f, &c);
    expect_replay(&c, "state AB", want, 1);
    assert_int_equal(aof_close(a), 0);
    ut_buf_free(&fl.data);
    ut_buf_free(&other.data);
    collector_reset(&c);
}

/* A flush whose write fails breaks the store at its end, as a failed sync
 * does; what was durable before stays. */
static void test_a_failed_flush_breaks_the_store_for_good(void **state)
{
    fixture *f = *state;
    collector c = {.fail_at = SIZE_MAX};
    aof_file *a = open_ok(f, &c);
    append(a, "A");
    assert_int_equal(aof_sync(a), 0);
    aof_flush fl;
    memset(&fl, 0, sizeof fl);
    ut_buf_init(&fl.data);
    append(a, "B");
    assert_int_equal(aof_flush_begin(a, &fl), 0);
    int fd = fl.fd;
    fl.fd = -1; /* the write fails: EBADF */
    assert_int_equal(flush_on_thread(&fl), DSYNC_EIO);
    fl.fd = fd;
    assert_int_equal(aof_flush_end(a, &fl, DSYNC_EIO), DSYNC_EIO);
    assert_true(stats_of(a).broken);
    assert_int_equal(aof_append(a, "C", 1), DSYNC_EIO);
    assert_int_equal(aof_flush_begin(a, &fl), DSYNC_EIO);
    assert_int_equal(aof_close(a), DSYNC_EIO);

    const char *want[] = {"A"};
    a = open_ok(f, &c);
    expect_replay(&c, NULL, want, 1);
    assert_int_equal(aof_close(a), 0);
    ut_buf_free(&fl.data);
    collector_reset(&c);
}

static void test_everysec_writes_on_sync_and_flushes_at_most_once_a_second(void **state)
{
    fixture *f = *state;
    collector c = {.fail_at = SIZE_MAX};
    aof_options opts = {.fsync = AOF_FSYNC_EVERYSEC};
    aof_file *a = open_with(f, &opts, &c);
    append(a, "A");
    assert_int_equal(aof_sync(a), 0);
    aof_stats st = stats_of(a);
    assert_int_equal(st.writes, 1);
    assert_int_equal(st.fsyncs, 0);
    assert_int_equal(st.durable_size, 0);
    assert_int_equal(aof_flush_due(a, 5000), 0); /* the first flush is due at once */
    assert_int_equal(stats_of(a).fsyncs, 1);
    append(a, "B");
    assert_int_equal(aof_sync(a), 0);
    assert_int_equal(aof_flush_due(a, 5999), 0); /* too soon */
    assert_int_equal(stats_of(a).fsyncs, 1);
    aof_crash_for_test(a, 0); /* the power fails inside the window */

    const char *want[] = {"A", "B", "C"};
    a = open_with(f, &opts, &c);
    expect_replay(&c, NULL, want, 1);
    append(a, "B");
    assert_int_equal(aof_sync(a), 0);
    assert_int_equal(aof_flush_due(a, 100), 0);
    append(a, "C");
    assert_int_equal(aof_sync(a), 0);
    assert_int_equal(aof_flush_due(a, 600), 0);
    assert_int_equal(stats_of(a).fsyncs, 1);
    assert_int_equal(aof_flush_due(a, 1100), 0);
    assert_int_equal(stats_of(a).fsyncs, 2);
    assert_int_equal(aof_flush_due(a, 5000), 0); /* nothing new: no flush */
    assert_int_equal(stats_of(a).fsyncs, 2);
    aof_crash_for_test(a, 0);
    a = open_with(f, &opts, &c);
    expect_replay(&c, NULL, want, 3);
    assert_int_equal(aof_close(a), 0);

    /* A process crash loses nothing aof_sync wrote: it is in the page cache. */
    a = open_with(f, &opts, &c);
    append(a, "D");
    assert_int_equal(aof_sync(a), 0);
    aof_crash_for_test(a, SIZE_MAX);
    a = open_with(f, &opts, &c);
    assert_int_equal(c.n, 4);
    assert_int_equal(aof_close(a), 0);
    collector_reset(&c);
}

static void test_a_replay_callback_error_aborts_the_open(void **state)
{
    fixture *f = *state;
    collector c = {.fail_at = SIZE_MAX};
    aof_file *a = open_ok(f, &c);
    append(a, "A");
    append(a, "B");
    append(a, "C");
    assert_int_equal(aof_close(a), 0);

    collector_reset(&c);
    c.fail_at = 1;
    aof_file *bad = (aof_file *)&c;
    char err[512] = "";
    assert_int_equal(aof_open(f->dir, NULL, &bad, collect, &c, err, sizeof err), DSYNC_ENOMEM);
    assert_null(bad);
    char where[32];
    snprintf(where, sizeof where, "offset %zu", framed("A"));
    assert_non_null(strstr(err, where));

    const char *want[] = {"A", "B", "C"};
    a = open_ok(f, &c); /* nothing was cut */
    expect_replay(&c, NULL, want, 3);
    assert_int_equal(aof_close(a), 0);
    collector_reset(&c);
}

static void test_a_valid_record_of_a_wrong_kind_stops_the_open(void **state)
{
    fixture *f = *state;
    collector c = {.fail_at = SIZE_MAX};
    unsigned char file[128];
    char err[512] = "";
    aof_file *bad = open_ok(f, &c); /* creates the directory */
    assert_int_equal(aof_close(bad), 0);

    size_t n = frame(file, AOF_RECORD, "a record");
    n += frame(file + n, AOF_SNAPSHOT, "a snapshot after it");
    write_file(f, "aof", file, n, 0);
    assert_int_equal(aof_open(f->dir, NULL, &bad, collect, &c, err, sizeof err), DSYNC_ECORRUPT);
    assert_non_null(strstr(err, "snapshot record at offset 17"));

    n = frame(file, AOF_RECORD, "a record");
    n += frame(file + n, 7, "from the future");
    write_file(f, "aof", file, n, 0);
    assert_int_equal(aof_open(f->dir, NULL, &bad, collect, &c, err, sizeof err), DSYNC_ECORRUPT);
    assert_non_null(strstr(err, "unknown record type 7"));
    collector_reset(&c);
}

static void test_bad_arguments_are_refused_without_harm(void **state)
{
    fixture *f = *state;
    collector c = {.fail_at = SIZE_MAX};
    aof_file *a = open_ok(f, &c);
    static const char small[1];
    assert_int_equal(aof_append(a, small, AOF_MAX_RECORD + 1), DSYNC_ETOOBIG);
    assert_int_equal(aof_append(a, NULL, 3), DSYNC_EINVAL);
    assert_int_equal(aof_rewrite(a, NULL, 3), DSYNC_EINVAL);
    assert_int_equal(stats_of(a).pending, 0);
    assert_int_equal(aof_close(a), 0);
    aof_options opts = {.fsync = (aof_fsync_policy)9};
    char err[128];
    assert_int_equal(aof_open(f->dir, &opts, &a, collect, &c, err, sizeof err), DSYNC_EINVAL);
    assert_null(a);
    collector_reset(&c);
}

/* 100,000 records of lengths 0..299, contents derived from their number. */
enum { BIG_RUN = 100000 };

static size_t big_record(unsigned i, unsigned char *out)
{
    size_t len = (i * 7919u) % 300;
    uint64_t x = ut_mix64(i);
    for (size_t k = 0; k < len; k++)
        out[k] = (unsigned char)(x >> (8 * (k % 8))) ^ (unsigned char)k;
    return len;
}

typedef struct {
    unsigned next;
    bool bad;
} big_check;

static int check_big(void *ctx, aof_type type, const void *data, size_t len)
{
    big_check *b = ctx;
    unsigned char want[300];
    size_t wlen = big_record(b->next, want);
    if (type != AOF_RECORD || len != wlen || memcmp(data, want, len) != 0) b->bad = true;
    b->next++;
    return 0;
}

static void test_a_big_run_of_records_replays_in_order(void **state)
{
    fixture *f = *state;
    big_check b = {0};
    aof_file *a;
    char err[256];
    assert_int_equal(aof_open(f->dir, NULL, &a, check_big, &b, err, sizeof err), 0);
    unsigned char rec[300];
    uint64_t bytes = 0;
    for (unsigned i = 0; i < BIG_RUN; i++) {
        size_t len = big_record(i, rec);
        assert_int_equal(aof_append(a, rec, len), 0);
        bytes += 9 + len;
    }
    assert_int_equal(aof_sync(a), 0);
    assert_int_equal(aof_size(a), bytes);
    assert_int_equal(stats_of(a).fsyncs, 1);
    aof_crash_for_test(a, 0);

    assert_int_equal(aof_open(f->dir, NULL, &a, check_big, &b, err, sizeof err), 0);
    assert_false(b.bad);
    assert_int_equal(b.next, BIG_RUN);
    assert_int_equal(stats_of(a).replayed, BIG_RUN);
    assert_int_equal(aof_close(a), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_records_survive_a_close_and_reopen_in_order, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_many_appends_share_one_group_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_torn_tail_at_every_cut_point_recovers_the_synced_prefix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_corrupt_record_in_the_middle_stops_the_open, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_a_damaged_length_in_the_middle_is_not_taken_for_a_torn_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_bad_checksum_on_the_last_record_is_a_torn_write,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_the_preallocated_zero_tail_is_not_a_torn_write, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_a_rewrite_then_reopen_gives_the_snapshot_and_later_records, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_rewrite_makes_buffered_records_durable_through_the_snapshot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_crash_during_a_rewrite_recovers_a_complete_state,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_rewrite_that_fails_before_its_rename_leaves_the_store_working, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_background_rewrite_keeps_the_records_appended_meanwhile, setup, teardown),
        cmocka_unit_test_setup_teardown(test_closing_during_a_background_rewrite_keeps_the_old_file,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_background_rewrite_that_cannot_start_leaves_the_store_working, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_background_rewrite_outrun_by_appends_is_given_up,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_failed_write_breaks_the_store_for_good, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_a_flush_run_on_another_thread_makes_its_records_durable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_while_a_flush_is_out_nothing_else_writes_the_file,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_failed_flush_breaks_the_store_for_good, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_everysec_writes_on_sync_and_flushes_at_most_once_a_second, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_replay_callback_error_aborts_the_open, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_valid_record_of_a_wrong_kind_stops_the_open, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments_are_refused_without_harm, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_big_run_of_records_replays_in_order, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
