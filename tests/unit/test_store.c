/*
 * test_store.c: the durable Raft log: what is synced survives, a torn tail
 * is cut off, a corrupt middle record stops the open, snapshots compact.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "dsync/errors.h"
#include "store/store.h"

typedef struct {
    char dir[64];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    strcpy(f->dir, "/tmp/dsync-store-XXXXXX");
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

static st_log *open_ok(fixture *f, const st_loaded **ld)
{
    st_log *l;
    char err[256] = "";
    int rc = st_log_open(f->dir, &l, ld, err, sizeof err);
    if (rc != 0) fail_msg("open: %s (%s)", dsync_strerror(rc), err);
    return l;
}

static void append(st_log *l, uint64_t index, uint64_t term, const char *data)
{
    st_entry e = {index, term, 1, data, strlen(data)};
    assert_int_equal(st_log_append(l, &e, 1), 0);
}

static void assert_entry(const st_loaded *ld, size_t i, uint64_t index, uint64_t term,
                         const char *data)
{
    assert_true(i < ld->n_entries);
    assert_int_equal(ld->entries[i].index, index);
    assert_int_equal(ld->entries[i].term, term);
    assert_int_equal(ld->entries[i].len, strlen(data));
    assert_memory_equal(ld->entries[i].data, data, strlen(data));
}

static void test_synced_entries_and_hard_state_survive_a_reopen(void **state)
{
    fixture *f = *state;
    const st_loaded *ld;
    st_log *l = open_ok(f, &ld);
    assert_int_equal(ld->n_entries, 0);
    assert_false(ld->has_hard_state);
    append(l, 1, 1, "one");
    append(l, 2, 1, "two");
    st_hard_state hs = {3, 2, 1};
    assert_int_equal(st_log_set_hard_state(l, &hs), 0);
    hs.commit = 2;
    assert_int_equal(st_log_set_hard_state(l, &hs), 0);
    size_t bytes;
    assert_int_equal(st_log_sync(l, &bytes), 0);
    assert_true(bytes > 0);
    st_log_close(l);

    l = open_ok(f, &ld);
    assert_int_equal(ld->n_entries, 2);
    assert_entry(ld, 0, 1, 1, "one");
    assert_entry(ld, 1, 2, 1, "two");
    assert_true(ld->has_hard_state);
    assert_int_equal(ld->hard_state.term, 3);
    assert_int_equal(ld->hard_state.vote, 2);
    assert_int_equal(ld->hard_state.commit, 2);
    assert_int_equal(ld->torn_bytes, 0);
    assert_int_equal(st_log_last_index(l), 2);
    st_log_close(l);
}

static void test_an_entry_at_an_earlier_index_replaces_the_tail(void **state)
{
    fixture *f = *state;
    const st_loaded *ld;
    st_log *l = open_ok(f, &ld);
    append(l, 1, 1, "a");
    append(l, 2, 1, "b");
    append(l, 3, 1, "c");
    assert_int_equal(st_log_sync(l, NULL), 0);
    append(l, 2, 2, "B"); /* a new leader's conflicting entry */
    assert_int_equal(st_log_last_index(l), 2);
    /* A gap is refused. */
    st_entry gap = {4, 2, 1, "x", 1};
    assert_int_equal(st_log_append(l, &gap, 1), DSYNC_EINVAL);
    assert_int_equal(st_log_sync(l, NULL), 0);
    st_log_close(l);

    l = open_ok(f, &ld);
    assert_int_equal(ld->n_entries, 2);
    assert_entry(ld, 0, 1, 1, "a");
    assert_entry(ld, 1, 2, 2, "B");
    st_log_close(l);
}

static void test_unsynced_writes_lost_in_a_power_loss_cost_nothing_synced(void **state)
{
    fixture *f = *state;
    const st_loaded *ld;
    /* Every cut point inside the unsynced record must recover to exactly
     * the synced prefix. */
    for (size_t keep = 0; keep < 40; keep += 3) {
        teardown(state);
        setup(state);
        f = *state;
        st_log *l = open_ok(f, &ld);
        append(l, 1, 1, "durable");
        assert_int_equal(st_log_sync(l, NULL), 0);
        append(l, 2, 1, "in flight when the power went");
        st_log_crash_for_test(l, keep);

        l = open_ok(f, &ld);
        assert_int_equal(ld->n_entries, 1);
        assert_entry(ld, 0, 1, 1, "durable");
        assert_int_equal(ld->torn_bytes, keep);
        /* The store carries on after the cut. */
        append(l, 2, 1, "after");
        assert_int_equal(st_log_sync(l, NULL), 0);
        st_log_close(l);
        l = open_ok(f, &ld);
        assert_int_equal(ld->n_entries, 2);
        assert_entry(ld, 1, 2, 1, "after");
        assert_int_equal(ld->torn_bytes, 0);
        st_log_close(l);
    }
}

/* The writer thread's three steps (st_log_flush_*): records buffered while
 * a flush is out wait for the next one, nothing else may touch the file
 * meanwhile, and a flush that never ended made nothing after it durable. */
static void test_a_flush_in_three_steps_leaves_later_appends_for_the_next(void **state)
{
    fixture *f = *state;
    const st_loaded *ld;
    st_log *l = open_ok(f, &ld);
    st_log_flush fl = {0};
    append(l, 1, 1, "first");
    st_hard_state hs = {1, 1, 0};
    assert_int_equal(st_log_set_hard_state(l, &hs), 0);
    assert_int_equal(st_log_flush_begin(l, &fl), 0);
    assert_true(fl.data.len > 0);
    assert_int_equal(st_log_pending_bytes(l), 0);
    /* While it is out: appends buffer; a sync, a second flush or a
     * snapshot (which rewrites the file) are refused. */
    append(l, 2, 1, "second");
    assert_true(st_log_pending_bytes(l) > 0);
    assert_int_equal(st_log_sync(l, NULL), DSYNC_EIO);
    st_log_flush other = {0};
    assert_int_equal(st_log_flush_begin(l, &other), DSYNC_EIO);
    st_snapshot_meta meta = {1, 1, NULL, 0};
    assert_int_equal(st_log_save_snapshot(l, &meta, "s", 1), DSYNC_EIO);
    assert_int_equal(st_log_file_size(l), 0);
    assert_int_equal(st_log_flush_run(&fl), 0);
    assert_int_equal(st_log_flush_end(l, &fl, 0), 0);
    uint64_t first_size = st_log_file_size(l);
    assert_true(first_size > 0);
    /* A power loss now keeps the first flush, not what came after it. */
    st_log_crash_for_test(l, 0);
    l = open_ok(f, &ld);
    assert_int_equal(ld->n_entries, 1);
    assert_entry(ld, 0, 1, 1, "first");
    assert_true(ld->has_hard_state);
    assert_int_equal(ld->hard_state.term, 1);
    /* And a second round flushes from where the first ended. */
    append(l, 2, 1, "second");
    assert_int_equal(st_log_flush_begin(l, &fl), 0);
    assert_int_equal(st_log_flush_run(&fl), 0);
    assert_int_equal(st_log_flush_end(l, &fl, 0), 0);
    /* Nothing buffered: an empty flush that writes nothing. */
    assert_int_equal(st_log_flush_begin(l, &fl), 0);
    assert_int_equal(fl.data.len, 0);
    st_log_close(l);
    l = open_ok(f, &ld);
    assert_int_equal(ld->n_entries, 2);
    assert_entry(ld, 1, 2, 1, "second");
    st_log_close(l);
    ut_buf_free(&fl.data);
}

/* A failed flush breaks the store for good, as a failed sync does. */
static void test_a_failed_flush_breaks_the_store(void **state)
{
    fixture *f = *state;
    const st_loaded *ld;
    st_log *l = open_ok(f, &ld);
    st_log_flush fl = {0};
    append(l, 1, 1, "lost");
    assert_int_equal(st_log_flush_begin(l, &fl), 0);
    assert_int_equal(st_log_flush_end(l, &fl, DSYNC_EIO), DSYNC_EIO);
    assert_int_equal(st_log_sync(l, NULL), DSYNC_EIO);
    st_entry e = {2, 1, 1, "x", 1};
    assert_int_equal(st_log_append(l, &e, 1), DSYNC_EIO);
    st_log_close(l);
    ut_buf_free(&fl.data);
}

static void flip_byte(fixture *f, long offset)
{
    char path[128];
    snprintf(path, sizeof path, "%s/raft/log", f->dir);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    unsigned char c;
    assert_int_equal(pread(fd, &c, 1, offset), 1);
    c ^= 0x40;
    assert_int_equal(pwrite(fd, &c, 1, offset), 1);
    close(fd);
}

/* The file is preallocated ahead of the writes (so an fdatasync need not
 * journal a new size); the zero tail is free space, not a torn write. */
static void test_the_log_is_preallocated_and_its_zero_tail_is_not_a_torn_write(void **state)
{
    fixture *f = *state;
    const st_loaded *ld;
    st_log *l = open_ok(f, &ld);
    append(l, 1, 1, "first entry");
    assert_int_equal(st_log_sync(l, NULL), 0);
    char path[128];
    snprintf(path, sizeof path, "%s/raft/log", f->dir);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true((uint64_t)st.st_size > st_log_file_size(l));
    st_log_close(l);

    l = open_ok(f, &ld);
    assert_int_equal(ld->n_entries, 1);
    assert_int_equal(ld->torn_bytes, 0);
    /* Appends after a reopen land after the last record, not at the end
     * of the preallocated space. */
    append(l, 2, 1, "second entry");
    assert_int_equal(st_log_sync(l, NULL), 0);
    st_log_close(l);
    l = open_ok(f, &ld);
    assert_int_equal(ld->n_entries, 2);
    assert_entry(ld, 1, 2, 1, "second entry");
    assert_int_equal(ld->torn_bytes, 0);
    st_log_close(l);
}

static void test_a_corrupt_record_in_the_middle_stops_the_open(void **state)
{
    fixture *f = *state;
    const st_loaded *ld;
    st_log *l = open_ok(f, &ld);
    append(l, 1, 1, "first entry");
    append(l, 2, 1, "second entry");
    append(l, 3, 1, "third entry");
    assert_int_equal(st_log_sync(l, NULL), 0);
    st_log_close(l);
    flip_byte(f, 30); /* inside the second record */

    char err[256] = "";
    st_log *bad;
    assert_int_equal(st_log_open(f->dir, &bad, &ld, err, sizeof err), DSYNC_ECORRUPT);
    assert_non_null(strstr(err, "checksum mismatch"));
}

static void test_a_bad_checksum_on_the_last_record_is_a_torn_write(void **state)
{
    fixture *f = *state;
    const st_loaded *ld;
    st_log *l = open_ok(f, &ld);
    append(l, 1, 1, "first entry");
    append(l, 2, 1, "second entry");
    assert_int_equal(st_log_sync(l, NULL), 0);
    uint64_t size = st_log_file_size(l);
    st_log_close(l);
    flip_byte(f, (long)size - 2);
    l = open_ok(f, &ld);
    assert_int_equal(ld->n_entries, 1);
    assert_true(ld->torn_bytes > 0);
    st_log_close(l);
}

static void test_a_snapshot_compacts_the_log_and_restarts_with_it(void **state)
{
    fixture *f = *state;
    const st_loaded *ld;
    st_log *l = open_ok(f, &ld);
    char data[32];
    for (uint64_t i = 1; i <= 100; i++) {
        snprintf(data, sizeof data, "e%llu", (unsigned long long)i);
        append(l, i, 1 + i / 50, data);
    }
    st_hard_state hs = {2, 1, 90};
    st_log_set_hard_state(l, &hs);
    assert_int_equal(st_log_sync(l, NULL), 0);
    uint64_t before = st_log_file_size(l);
    st_snapshot_meta meta = {80, 2, "conf", 4};
    assert_int_equal(st_log_save_snapshot(l, &meta, "table-bytes", 11), 0);
    assert_true(st_log_file_size(l) < before);
    append(l, 101, 2, "e101");
    assert_int_equal(st_log_sync(l, NULL), 0);
    /* An append at or before the snapshot is refused. */
    st_entry old = {80, 2, 1, "x", 1};
    assert_int_equal(st_log_append(l, &old, 1), DSYNC_EINVAL);
    st_log_close(l);

    l = open_ok(f, &ld);
    assert_true(ld->has_snapshot);
    assert_int_equal(ld->snapshot.index, 80);
    assert_int_equal(ld->snapshot.term, 2);
    assert_int_equal(ld->snapshot.conf_len, 4);
    assert_memory_equal(ld->snapshot.conf, "conf", 4);
    assert_int_equal(ld->snapshot_len, 11);
    assert_memory_equal(ld->snapshot_data, "table-bytes", 11);
    assert_int_equal(ld->n_entries, 21);
    assert_entry(ld, 0, 81, 2, "e81");
    assert_entry(ld, 20, 101, 2, "e101");
    assert_int_equal(ld->hard_state.commit, 90);
    st_log_close(l);
}

static void test_a_snapshot_past_a_conflicting_log_drops_the_log(void **state)
{
    fixture *f = *state;
    const st_loaded *ld;
    st_log *l = open_ok(f, &ld);
    append(l, 1, 1, "a");
    append(l, 2, 1, "b");
    /* The leader's snapshot says index 2 has term 3: our entries are stale. */
    st_snapshot_meta meta = {2, 3, "", 0};
    assert_int_equal(st_log_save_snapshot(l, &meta, "s", 1), 0);
    assert_int_equal(st_log_last_index(l), 2);
    st_log_close(l);
    l = open_ok(f, &ld);
    assert_int_equal(ld->n_entries, 0);
    assert_int_equal(ld->snapshot.index, 2);
    st_log_close(l);
}

static void test_a_corrupt_snapshot_stops_the_open(void **state)
{
    fixture *f = *state;
    const st_loaded *ld;
    st_log *l = open_ok(f, &ld);
    append(l, 1, 1, "a");
    st_snapshot_meta meta = {1, 1, "", 0};
    assert_int_equal(st_log_save_snapshot(l, &meta, "snapshot-data", 13), 0);
    st_log_close(l);
    char path[128];
    snprintf(path, sizeof path, "%s/raft/snapshot", f->dir);
    int fd = open(path, O_RDWR);
    assert_int_equal(pwrite(fd, "X", 1, 40), 1);
    close(fd);
    char err[256] = "";
    assert_int_equal(st_log_open(f->dir, &l, &ld, err, sizeof err), DSYNC_ECORRUPT);
    assert_non_null(strstr(err, "snapshot"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_synced_entries_and_hard_state_survive_a_reopen, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_an_entry_at_an_earlier_index_replaces_the_tail, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_unsynced_writes_lost_in_a_power_loss_cost_nothing_synced, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_the_log_is_preallocated_and_its_zero_tail_is_not_a_torn_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_corrupt_record_in_the_middle_stops_the_open, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_bad_checksum_on_the_last_record_is_a_torn_write,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_snapshot_compacts_the_log_and_restarts_with_it,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_snapshot_past_a_conflicting_log_drops_the_log, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_corrupt_snapshot_stops_the_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_flush_in_three_steps_leaves_later_appends_for_the_next,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_failed_flush_breaks_the_store, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
