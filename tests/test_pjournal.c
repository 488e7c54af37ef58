/*  The journal engine (store/pjournal): records survive a reopen, segments
    go strictly from the oldest once nothing needs them, migration frees old
    segments, damage is repaired or quarantined without stopping the load,
    the lock keeps a second process out, storage errors are sticky, and each
    fsync policy syncs as often as it says. Each test works in its own
    directory under /tmp. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "store/pjournal.h"
#include "common/plog.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define NAME "unit"

//  Record types of the little object store the tests keep on the journal.
enum { REC_PUT = 1, REC_GONE = 2, REC_OTHER = 7 };

//  ---------------------------------------------------------------------------
//  Helpers

static int s_remove_entry (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void) st;
    (void) flag;
    (void) ftw;
    return remove (path);
}

//  A fresh directory per test; removed (with everything in it) by teardown.
static int s_setup (void **state)
{
    char *dir = strdup ("/tmp/pjournal-test-XXXXXX");
    if (!mkdtemp (dir))
        return -1;
    *state = dir;
    return 0;
}

static int s_teardown (void **state)
{
    nftw (*state, s_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free (*state);
    return 0;
}

static void s_segment_path (char *path, size_t size, const char *dir, uint64_t id)
{
    snprintf (path, size, "%s/%s/%016llx.pj", dir, NAME, (unsigned long long) id);
}

static bool s_segment_on_disk (const char *dir, uint64_t id)
{
    char path[512];
    s_segment_path (path, sizeof path, dir, id);
    return access (path, F_OK) == 0;
}

static off_t s_file_size (const char *path)
{
    struct stat st;
    assert_int_equal (stat (path, &st), 0);
    return st.st_size;
}

//  Deterministic payload bytes for record i.
static void s_fill (unsigned char *p, size_t len, uint32_t i)
{
    for (size_t k = 0; k < len; k++)
        p[k] = (unsigned char) (i * 31 + k * 7 + 1);
}

static pjournal_t *s_open (const char *dir, const char *policy, size_t segment_bytes)
{
    char err[256] = "";
    pjournal_t *j = pjournal_new (dir, NAME, policy, segment_bytes, err, sizeof err);
    if (!j)
        fail_msg ("pjournal_new: %s", err);
    return j;
}

//  What a load saw: every record in order, and which ones to refuse.
typedef struct {
    pjournal_t *journal;
    size_t count;
    uint64_t segments[4096];        //  segment of record i
    uint8_t types[4096];            //  type of record i
    uint32_t lens[4096];            //  length of record i
    uint32_t sums[4096];            //  a checksum of record i's payload
    bool ref;                       //  ref the segment of every record kept
    int reject_type;                //  refuse records of this type (-1: none)
} s_seen_t;

static uint32_t s_sum (const unsigned char *p, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t k = 0; k < len; k++)
        h = (h ^ p[k]) * 16777619u;
    return h;
}

static int s_collect_fn (void *arg, uint64_t segment, uint8_t type, const void *data, size_t len,
                         char *reason, size_t reason_size)
{
    s_seen_t *seen = arg;
    if (type == seen->reject_type) {
        snprintf (reason, reason_size, "type %d is unknown here", type);
        return -1;
    }
    assert_true (seen->count < 4096);
    seen->segments[seen->count] = segment;
    seen->types[seen->count] = type;
    seen->lens[seen->count] = (uint32_t) len;
    seen->sums[seen->count] = s_sum (data, len);
    seen->count++;
    if (seen->ref)
        pjournal_ref (seen->journal, segment);
    return 0;
}

static void s_load (pjournal_t *j, s_seen_t *seen, bool ref)
{
    memset (seen, 0, sizeof *seen);
    seen->journal = j;
    seen->ref = ref;
    seen->reject_type = -1;
    assert_int_equal (pjournal_load (j, s_collect_fn, seen), 0);
}

//  Appends record i (length len, type type) and returns its segment.
static uint64_t s_append (pjournal_t *j, uint8_t type, uint32_t i, size_t len)
{
    unsigned char buf[20000];
    assert_true (len <= sizeof buf);
    s_fill (buf, len, i);
    uint64_t seg = pjournal_append (j, type, buf, len);
    assert_true (seg > 0);
    return seg;
}

//  The same, for a record the test keeps: its segment is referenced.
static uint64_t s_append_kept (pjournal_t *j, uint8_t type, uint32_t i, size_t len)
{
    uint64_t seg = s_append (j, type, i, len);
    pjournal_ref (j, seg);
    return seg;
}

static void s_expect_record (s_seen_t *seen, size_t at, uint8_t type, uint32_t i, size_t len)
{
    unsigned char buf[20000];
    s_fill (buf, len, i);
    assert_int_equal (seen->types[at], type);
    assert_int_equal (seen->lens[at], len);
    assert_int_equal (seen->sums[at], s_sum (buf, len));
}

//  ---------------------------------------------------------------------------

static void test_round_trip (void **state)
{
    const char *dir = *state;
    pjournal_t *j = s_open (dir, "off", 0);
    s_seen_t seen;
    s_load (j, &seen, false);
    assert_int_equal (seen.count, 0);
    for (uint32_t i = 0; i < 1000; i++) {
        assert_int_equal (s_append (j, (uint8_t) (i % 5), i, i % 301), 1);
        if (i % 100 == 99)
            assert_int_equal (pjournal_commit (j), 0);
    }
    pjournal_stats_t st;
    pjournal_stats (j, &st);
    assert_int_equal (st.records_written, 1000);
    assert_int_equal (st.commits, 10);
    assert_int_equal (st.writes, 10);      //  one write per turn
    assert_int_equal (st.segments, 1);
    pjournal_destroy (&j);
    assert_null (j);

    j = s_open (dir, "off", 0);
    s_load (j, &seen, true);
    assert_int_equal (seen.count, 1000);
    for (uint32_t i = 0; i < 1000; i++) {
        assert_int_equal (seen.segments[i], 1);
        s_expect_record (&seen, i, (uint8_t) (i % 5), i, i % 301);
    }
    pjournal_stats (j, &st);
    assert_int_equal (st.records_loaded, 1000);
    assert_int_equal (st.torn_tails, 0);
    assert_int_equal (st.quarantined, 0);
    //  After a load, new records go to a new segment.
    assert_int_equal (s_append (j, 1, 5000, 10), 2);
    assert_int_equal (pjournal_commit (j), 0);
    assert_true (s_segment_on_disk (dir, 1));       //  still referenced
    assert_int_equal (pjournal_refs (j, 1), 1000);
    pjournal_destroy (&j);
}

static void test_big_records (void **state)
{
    const char *dir = *state;
    pjournal_t *j = s_open (dir, "off", 4096);
    s_seen_t seen;
    s_load (j, &seen, false);
    //  Three of 1500 bytes do not fit in 4096: the third starts segment 2.
    assert_int_equal (s_append_kept (j, 1, 0, 1500), 1);
    assert_int_equal (s_append_kept (j, 1, 1, 1500), 1);
    assert_int_equal (s_append_kept (j, 1, 2, 1500), 2);
    //  Bigger than a segment: a segment of its own, and the next one moves on.
    assert_int_equal (s_append_kept (j, 1, 3, 10000), 3);
    assert_int_equal (s_append_kept (j, 1, 4, 10), 4);
    assert_int_equal (pjournal_commit (j), 0);
    pjournal_stats_t st;
    pjournal_stats (j, &st);
    assert_int_equal (st.writes, 4);                //  one per segment touched
    assert_int_equal (pjournal_append (j, 1, "", (size_t) PJOURNAL_RECORD_MAX + 1), 0);
    pjournal_destroy (&j);

    j = s_open (dir, "off", 4096);
    s_load (j, &seen, false);
    assert_int_equal (seen.count, 5);
    s_expect_record (&seen, 3, 1, 3, 10000);
    assert_int_equal (seen.segments[3], 3);
    pjournal_destroy (&j);
}

static void test_ordered_deletion (void **state)
{
    const char *dir = *state;
    pjournal_t *j = s_open (dir, "batch", 4096);
    s_seen_t seen;
    s_load (j, &seen, false);
    //  3000-byte records: one per segment.
    uint64_t seg[5];
    for (int i = 0; i < 5; i++) {
        seg[i] = s_append (j, REC_PUT, (uint32_t) i, 3000);
        pjournal_ref (j, seg[i]);
        assert_int_equal (seg[i], (uint64_t) i + 1);
    }
    assert_int_equal (pjournal_commit (j), 0);
    for (int i = 0; i < 5; i++)
        assert_true (s_segment_on_disk (dir, seg[i]));

    //  A middle segment with no refs stays while an older one is live.
    pjournal_unref (j, seg[1]);
    assert_int_equal (pjournal_commit (j), 0);
    assert_true (s_segment_on_disk (dir, seg[1]));
    uint64_t oldest, refs;
    assert_int_equal (pjournal_oldest (j, &oldest, &refs), 0);
    assert_int_equal (oldest, seg[0]);
    assert_int_equal (refs, 1);

    //  Once the older goes, both go; the next live one stops the sweep.
    pjournal_unref (j, seg[0]);
    assert_int_equal (pjournal_commit (j), 0);
    assert_false (s_segment_on_disk (dir, seg[0]));
    assert_false (s_segment_on_disk (dir, seg[1]));
    assert_false (pjournal_segment_exists (j, seg[1]));
    assert_true (s_segment_on_disk (dir, seg[2]));
    assert_int_equal (pjournal_oldest (j, &oldest, &refs), 0);
    assert_int_equal (oldest, seg[2]);

    //  The segment being written is never deleted, even with no refs.
    pjournal_unref (j, seg[2]);
    pjournal_unref (j, seg[3]);
    pjournal_unref (j, seg[4]);
    assert_int_equal (pjournal_commit (j), 0);
    assert_false (s_segment_on_disk (dir, seg[3]));
    assert_true (s_segment_on_disk (dir, seg[4]));
    pjournal_stats_t st;
    pjournal_stats (j, &st);
    assert_int_equal (st.segments, 1);
    assert_int_equal (st.segments_deleted, 4);
    pjournal_destroy (&j);
}

//  ---------------------------------------------------------------------------
//  A small object store on the journal: objects rewritten whole, tombstones
//  for deletions, one anchor each.

#define S_OBJECTS 2000

typedef struct {
    bool live;
    uint32_t version;               //  changes on every rewrite
    uint32_t len;                   //  payload length
    pjournal_anchor_t anchor;       //  the segment of its latest record
} s_object_t;

typedef struct {
    pjournal_t *journal;
    s_object_t objects[S_OBJECTS];
} s_store_t;

static void s_object_write (s_store_t *store, uint32_t id)
{
    s_object_t *o = &store->objects[id];
    unsigned char buf[1024];
    assert_true (8 + o->len <= sizeof buf);
    memcpy (buf, &id, 4);
    memcpy (buf + 4, &o->version, 4);
    s_fill (buf + 8, o->len, id ^ o->version);
    uint64_t seg = pjournal_append (store->journal, REC_PUT, buf, 8 + o->len);
    pjournal_anchor_set (store->journal, &o->anchor, seg);
}

static void s_object_put (s_store_t *store, uint32_t id, uint32_t len)
{
    s_object_t *o = &store->objects[id];
    o->live = true;
    o->version++;
    o->len = len;
    s_object_write (store, id);
}

static void s_object_delete (s_store_t *store, uint32_t id)
{
    s_object_t *o = &store->objects[id];
    assert_true (o->live);
    pjournal_append (store->journal, REC_GONE, &id, 4);
    pjournal_anchor_clear (store->journal, &o->anchor);
    o->live = false;
}

static int s_store_replay (void *arg, uint64_t segment, uint8_t type, const void *data, size_t len,
                           char *reason, size_t reason_size)
{
    s_store_t *store = arg;
    uint32_t id;
    if (len < 4 || (memcpy (&id, data, 4), id >= S_OBJECTS)) {
        snprintf (reason, reason_size, "no object id");
        return -1;
    }
    s_object_t *o = &store->objects[id];
    if (type == REC_PUT) {
        unsigned char expect[1024];
        uint32_t version;
        memcpy (&version, (const char *) data + 4, 4);
        s_fill (expect, len - 8, id ^ version);
        assert_memory_equal ((const char *) data + 8, expect, len - 8);
        o->live = true;
        o->version = version;
        o->len = (uint32_t) len - 8;
        pjournal_anchor_set (store->journal, &o->anchor, segment);
    }
    else if (type == REC_GONE) {
        o->live = false;
        pjournal_anchor_clear (store->journal, &o->anchor);
    }
    else {
        snprintf (reason, reason_size, "unknown type %d", type);
        return -1;
    }
    return 0;
}

//  Moves up to `limit` objects out of the segment the journal wants freed.
static int s_store_migrate (s_store_t *store, int limit)
{
    uint64_t old;
    int moved = 0;
    if (!pjournal_wants_migration (store->journal, &old))
        return 0;
    pjournal_anchor_t *a;
    while (moved < limit && (a = pjournal_anchor_first (store->journal, old))) {
        s_object_t *o = PJOURNAL_CONTAINER (a, s_object_t, anchor);
        s_object_write (store, (uint32_t) (o - store->objects));
        assert_true (a->segment != old);
        moved++;
    }
    return moved;
}

static s_store_t *s_store_open (const char *dir, size_t segment_bytes)
{
    s_store_t *store = calloc (1, sizeof *store);
    store->journal = s_open (dir, "off", segment_bytes);
    assert_int_equal (pjournal_load (store->journal, s_store_replay, store), 0);
    return store;
}

static void s_store_close (s_store_t **store_p)
{
    pjournal_destroy (&(*store_p)->journal);
    free (*store_p);
    *store_p = NULL;
}

static void test_migration (void **state)
{
    const char *dir = *state;
    s_store_t *store = s_store_open (dir, 4096);
    pjournal_t *j = store->journal;
    //  100 objects of ~500 bytes: about 8 per segment, 13 segments.
    for (uint32_t id = 0; id < 100; id++)
        s_object_put (store, id, 500);
    assert_int_equal (pjournal_commit (j), 0);
    assert_false (pjournal_wants_migration (j, NULL));
    //  All but two die: object 0 pins segment 1, object 50 a middle one.
    for (uint32_t id = 0; id < 100; id++)
        if (id != 0 && id != 50)
            s_object_delete (store, id);
    assert_int_equal (pjournal_commit (j), 0);
    uint64_t pinned = store->objects[50].anchor.segment;
    assert_int_equal (store->objects[0].anchor.segment, 1);
    assert_true (s_segment_on_disk (dir, 1));
    assert_true (s_segment_on_disk (dir, 2));       //  dead, but after a live one

    uint64_t old;
    assert_true (pjournal_wants_migration (j, &old));
    assert_int_equal (old, 1);
    assert_int_equal (s_store_migrate (store, 1000), 1);
    assert_int_equal (pjournal_commit (j), 0);
    //  Segment 1 is gone, and every dead one up to object 50's.
    assert_false (s_segment_on_disk (dir, 1));
    for (uint64_t s = 1; s < pinned; s++)
        assert_false (pjournal_segment_exists (j, s));
    assert_true (s_segment_on_disk (dir, pinned));
    //  Then object 50's segment; after that nothing is worth moving.
    for (int turn = 0; turn < 10 && pjournal_wants_migration (j, NULL); turn++) {
        s_store_migrate (store, 1000);
        assert_int_equal (pjournal_commit (j), 0);
    }
    assert_false (pjournal_wants_migration (j, NULL));
    assert_false (s_segment_on_disk (dir, pinned));
    pjournal_stats_t st;
    pjournal_stats (j, &st);
    assert_true (st.segments <= 3);
    uint32_t v0 = store->objects[0].version, v50 = store->objects[50].version;
    s_store_close (&store);

    //  What was migrated is what a reload sees.
    store = s_store_open (dir, 4096);
    for (uint32_t id = 0; id < 100; id++)
        assert_int_equal (store->objects[id].live, id == 0 || id == 50);
    assert_int_equal (store->objects[0].version, v0);
    assert_int_equal (store->objects[50].version, v50);
    assert_int_equal (store->objects[0].len, 500);
    s_store_close (&store);
}

static void test_torn_tail (void **state)
{
    const char *dir = *state;
    pjournal_t *j = s_open (dir, "batch", 0);
    s_seen_t seen;
    s_load (j, &seen, true);
    for (uint32_t i = 0; i < 10; i++)
        s_append_kept (j, 1, i, 100);
    assert_int_equal (pjournal_commit (j), 0);
    pjournal_destroy (&j);

    //  A crash in the middle of the last record.
    char path[512];
    s_segment_path (path, sizeof path, dir, 1);
    off_t whole = s_file_size (path);
    assert_int_equal (truncate (path, whole - 5), 0);

    j = s_open (dir, "batch", 0);
    s_load (j, &seen, true);
    assert_int_equal (seen.count, 9);
    pjournal_stats_t st;
    pjournal_stats (j, &st);
    assert_int_equal (st.torn_tails, 1);
    assert_int_equal (st.quarantined, 0);
    assert_int_equal (s_file_size (path), whole - (off_t) (PJOURNAL_RECORD_OVERHEAD + 100));
    //  The next run appends cleanly, to a new segment.
    for (uint32_t i = 10; i < 15; i++)
        assert_int_equal (s_append_kept (j, 1, i, 100), 2);
    assert_int_equal (pjournal_commit (j), 0);
    pjournal_destroy (&j);

    //  Space the file system allocated but never filled: zeros at the end.
    s_segment_path (path, sizeof path, dir, 2);
    whole = s_file_size (path);
    assert_int_equal (truncate (path, whole + 4096), 0);

    j = s_open (dir, "batch", 0);
    s_load (j, &seen, true);
    assert_int_equal (seen.count, 14);
    for (uint32_t i = 0; i < 14; i++)
        s_expect_record (&seen, i, 1, i < 9 ? i : i + 1, 100);
    pjournal_stats (j, &st);
    assert_int_equal (st.torn_tails, 1);
    assert_int_equal (s_file_size (path), whole);
    pjournal_destroy (&j);

    //  Repaired for good: a third load finds nothing to cut.
    j = s_open (dir, "batch", 0);
    s_load (j, &seen, true);
    assert_int_equal (seen.count, 14);
    pjournal_stats (j, &st);
    assert_int_equal (st.torn_tails, 0);
    pjournal_destroy (&j);
}

//  What a quarantine file held.
typedef struct {
    int count;
    int kind[16];
    uint64_t segment[16];
    uint64_t offset[16];
    uint8_t type[16];
    char reason[16][128];
    size_t len[16];
    uint32_t sum[16];
} s_quarantine_t;

static int s_quarantine_fn (void *arg, int kind, uint64_t segment, uint64_t offset, uint8_t type,
                            const char *reason, const void *data, size_t len)
{
    s_quarantine_t *q = arg;
    assert_true (q->count < 16);
    int n = q->count++;
    q->kind[n] = kind;
    q->segment[n] = segment;
    q->offset[n] = offset;
    q->type[n] = type;
    snprintf (q->reason[n], sizeof q->reason[n], "%s", reason);
    q->len[n] = len;
    q->sum[n] = s_sum (data, len);
    return 0;
}

static void s_read_quarantine (const char *dir, s_quarantine_t *q, int expect)
{
    char path[512];
    snprintf (path, sizeof path, "%s/%s/quarantine.pj", dir, NAME);
    memset (q, 0, sizeof *q);
    assert_int_equal (pjournal_quarantine_read (path, s_quarantine_fn, q), expect);
    assert_int_equal (q->count, expect);
}

static void test_corrupt_middle (void **state)
{
    const char *dir = *state;
    pjournal_t *j = s_open (dir, "batch", 4096);
    s_seen_t seen;
    s_load (j, &seen, true);
    //  1000-byte records: 4 per segment, 12 records in 3 segments.
    for (uint32_t i = 0; i < 12; i++)
        assert_int_equal (s_append_kept (j, 1, i, 1000), 1 + i / 4);
    assert_int_equal (pjournal_commit (j), 0);
    pjournal_destroy (&j);

    //  One flipped byte in the payload of segment 1's second record.
    char path[512];
    s_segment_path (path, sizeof path, dir, 1);
    off_t size = s_file_size (path);
    uint64_t second = PJOURNAL_HEADER_BYTES + PJOURNAL_RECORD_OVERHEAD + 1000;
    FILE *f = fopen (path, "r+b");
    assert_non_null (f);
    fseek (f, (long) (second + PJOURNAL_RECORD_OVERHEAD + 500), SEEK_SET);
    int c = fgetc (f);
    fseek (f, (long) (second + PJOURNAL_RECORD_OVERHEAD + 500), SEEK_SET);
    fputc (c ^ 0x10, f);
    fclose (f);

    j = s_open (dir, "batch", 4096);
    s_load (j, &seen, true);
    //  Record 0, then segments 2 and 3 whole: the rest of segment 1 is set aside.
    assert_int_equal (seen.count, 9);
    s_expect_record (&seen, 0, 1, 0, 1000);
    for (uint32_t i = 1; i < 9; i++) {
        s_expect_record (&seen, i, 1, i + 3, 1000);
        assert_int_equal (seen.segments[i], 2 + (i - 1) / 4);
    }
    pjournal_stats_t st;
    pjournal_stats (j, &st);
    assert_int_equal (st.quarantined, 1);
    assert_int_equal (st.torn_tails, 0);
    assert_int_equal (s_file_size (path), (off_t) second);
    pjournal_destroy (&j);

    s_quarantine_t q;
    s_read_quarantine (dir, &q, 1);
    assert_int_equal (q.kind[0], PJOURNAL_QUARANTINE_BYTES);
    assert_int_equal (q.segment[0], 1);
    assert_int_equal (q.offset[0], second);
    assert_string_equal (q.reason[0], "bad crc");
    assert_int_equal (q.len[0], (size_t) size - second);

    //  Cut out: a second load finds nothing more to set aside.
    j = s_open (dir, "batch", 4096);
    s_load (j, &seen, true);
    assert_int_equal (seen.count, 9);
    pjournal_stats (j, &st);
    assert_int_equal (st.quarantined, 0);
    pjournal_destroy (&j);
    s_read_quarantine (dir, &q, 1);
}

static void test_rejected_record (void **state)
{
    const char *dir = *state;
    pjournal_t *j = s_open (dir, "off", 0);
    s_seen_t seen;
    s_load (j, &seen, false);
    for (uint32_t i = 0; i < 20; i++)
        s_append_kept (j, i % 4 == 3 ? REC_OTHER : REC_PUT, i, 50 + i);
    assert_int_equal (pjournal_commit (j), 0);
    pjournal_destroy (&j);

    j = s_open (dir, "off", 0);
    memset (&seen, 0, sizeof seen);
    seen.journal = j;
    seen.reject_type = REC_OTHER;
    assert_int_equal (pjournal_load (j, s_collect_fn, &seen), 0);
    //  Loading went on past each refused record.
    assert_int_equal (seen.count, 15);
    assert_int_equal (seen.types[14], REC_PUT);
    s_expect_record (&seen, 14, REC_PUT, 18, 68);
    pjournal_stats_t st;
    pjournal_stats (j, &st);
    assert_int_equal (st.quarantined, 5);
    assert_int_equal (st.records_loaded, 20);
    pjournal_destroy (&j);

    s_quarantine_t q;
    s_read_quarantine (dir, &q, 5);
    uint64_t offset = PJOURNAL_HEADER_BYTES;
    for (uint32_t i = 0, n = 0; i < 20; i++) {
        if (i % 4 == 3) {
            unsigned char buf[100];
            s_fill (buf, 50 + i, i);
            assert_int_equal (q.kind[n], PJOURNAL_QUARANTINE_RECORD);
            assert_int_equal (q.segment[n], 1);
            assert_int_equal (q.offset[n], offset);
            assert_int_equal (q.type[n], REC_OTHER);
            assert_string_equal (q.reason[n], "type 7 is unknown here");
            assert_int_equal (q.len[n], 50 + i);
            assert_int_equal (q.sum[n], s_sum (buf, 50 + i));
            n++;
        }
        offset += PJOURNAL_RECORD_OVERHEAD + 50 + i;
    }
}

static void test_lock (void **state)
{
    const char *dir = *state;
    pjournal_t *first = s_open (dir, "off", 0);
    char err[256] = "";
    pjournal_t *second = pjournal_new (dir, NAME, "off", 0, err, sizeof err);
    assert_null (second);
    char pid[32];
    snprintf (pid, sizeof pid, "pid %ld", (long) getpid ());
    assert_non_null (strstr (err, "in use"));
    assert_non_null (strstr (err, pid));
    pjournal_destroy (&first);
    //  Released with its holder.
    second = s_open (dir, "off", 0);
    pjournal_destroy (&second);
    //  An unknown policy is refused.
    assert_null (pjournal_new (dir, NAME, "sometimes", 0, err, sizeof err));
    assert_non_null (strstr (err, "sometimes"));
}

static void test_sticky_error (void **state)
{
    const char *dir = *state;
    pjournal_t *j = s_open (dir, "batch", 0);
    s_seen_t seen;
    s_load (j, &seen, true);
    for (uint32_t i = 0; i < 10; i++)
        s_append_kept (j, 1, i, 100);
    assert_int_equal (pjournal_commit (j), 0);
    assert_null (pjournal_error (j));

    //  The file may grow by 100 bytes more: the next write is cut short,
    //  then refused (EFBIG instead of the signal).
    char path[512];
    s_segment_path (path, sizeof path, dir, 1);
    off_t size = s_file_size (path);
    struct rlimit saved, limit;
    assert_int_equal (getrlimit (RLIMIT_FSIZE, &saved), 0);
    void (*old_handler) (int) = signal (SIGXFSZ, SIG_IGN);
    limit = saved;
    limit.rlim_cur = (rlim_t) size + 100;
    assert_int_equal (setrlimit (RLIMIT_FSIZE, &limit), 0);
    s_append (j, 1, 10, 1000);
    int rc = pjournal_commit (j);
    assert_int_equal (setrlimit (RLIMIT_FSIZE, &saved), 0);
    signal (SIGXFSZ, old_handler);

    assert_int_equal (rc, -1);
    const char *error = pjournal_error (j);
    assert_non_null (error);
    assert_non_null (strstr (error, path));
    assert_non_null (strstr (error, strerror (EFBIG)));
    //  No half record left behind.
    assert_int_equal (s_file_size (path), size);
    //  Sticky: the disk has room again, the journal still refuses.
    s_append (j, 1, 11, 10);
    assert_int_equal (pjournal_commit (j), -1);
    assert_int_equal (pjournal_sync (j), -1);
    assert_int_equal (s_file_size (path), size);
    pjournal_destroy (&j);

    j = s_open (dir, "batch", 0);
    s_load (j, &seen, true);
    assert_int_equal (seen.count, 10);
    pjournal_stats_t st;
    pjournal_stats (j, &st);
    assert_int_equal (st.torn_tails, 0);
    assert_int_equal (st.quarantined, 0);
    pjournal_destroy (&j);
}

static void test_failed_new_segment (void **state)
{
    const char *dir = *state;
    pjournal_t *j = s_open (dir, "off", 0);
    s_seen_t seen;
    s_load (j, &seen, true);
    //  Not even the header fits: the new file is removed, not left half made.
    struct rlimit saved, limit;
    assert_int_equal (getrlimit (RLIMIT_FSIZE, &saved), 0);
    void (*old_handler) (int) = signal (SIGXFSZ, SIG_IGN);
    limit = saved;
    limit.rlim_cur = 10;
    assert_int_equal (setrlimit (RLIMIT_FSIZE, &limit), 0);
    s_append_kept (j, 1, 0, 100);
    int rc = pjournal_commit (j);
    assert_int_equal (setrlimit (RLIMIT_FSIZE, &saved), 0);
    signal (SIGXFSZ, old_handler);
    assert_int_equal (rc, -1);
    assert_false (s_segment_on_disk (dir, 1));
    pjournal_destroy (&j);

    j = s_open (dir, "off", 0);
    s_load (j, &seen, true);
    pjournal_stats_t st;
    pjournal_stats (j, &st);
    assert_int_equal (seen.count + st.torn_tails + st.quarantined, 0);
    pjournal_destroy (&j);
}

static void test_bad_headers (void **state)
{
    const char *dir = *state;
    pjournal_t *j = s_open (dir, "off", 4096);
    s_seen_t seen;
    s_load (j, &seen, true);
    for (uint32_t i = 0; i < 6; i++)
        assert_int_equal (s_append_kept (j, 1, i, 1500), 1 + i / 2);
    assert_int_equal (pjournal_commit (j), 0);
    pjournal_destroy (&j);

    //  Segment 1 no longer looks like a segment: all of it to quarantine.
    char path[512];
    s_segment_path (path, sizeof path, dir, 1);
    off_t size = s_file_size (path);
    FILE *f = fopen (path, "r+b");
    assert_non_null (f);
    fputs ("XX", f);
    fclose (f);
    j = s_open (dir, "off", 4096);
    s_load (j, &seen, true);
    assert_int_equal (seen.count, 4);
    s_expect_record (&seen, 0, 1, 2, 1500);
    assert_false (s_segment_on_disk (dir, 1));
    pjournal_destroy (&j);
    s_quarantine_t q;
    s_read_quarantine (dir, &q, 1);
    assert_int_equal (q.kind[0], PJOURNAL_QUARANTINE_BYTES);
    assert_int_equal (q.segment[0], 1);
    assert_int_equal (q.offset[0], 0);
    assert_int_equal (q.len[0], (size_t) size);

    //  A newer format is never repaired: the load refuses and touches nothing.
    s_segment_path (path, sizeof path, dir, 2);
    f = fopen (path, "r+b");
    assert_non_null (f);
    fseek (f, 3, SEEK_SET);
    fputc (PJOURNAL_FORMAT_VERSION + 1, f);
    fclose (f);
    size = s_file_size (path);
    j = s_open (dir, "off", 4096);
    memset (&seen, 0, sizeof seen);
    seen.journal = j;
    seen.reject_type = -1;
    assert_int_equal (pjournal_load (j, s_collect_fn, &seen), -1);
    assert_non_null (strstr (pjournal_error (j), "format version"));
    pjournal_destroy (&j);
    assert_int_equal (s_file_size (path), size);
    assert_true (s_segment_on_disk (dir, 3));
}

//  A file named like a segment beyond PJOURNAL_SEGMENT_ID_MAX (a damaged
//  name: owners keep segment ids in 32-bit tags) is quarantined and
//  removed; the rest loads, and new segments go on from the last good id.
static void test_segment_id_out_of_range (void **state)
{
    const char *dir = *state;
    pjournal_t *j = s_open (dir, "off", 4096);
    s_seen_t seen;
    s_load (j, &seen, true);
    assert_int_equal (s_append_kept (j, 1, 0, 100), 1);
    assert_int_equal (pjournal_commit (j), 0);
    pjournal_destroy (&j);

    char from[512], to[512];
    s_segment_path (from, sizeof from, dir, 1);
    s_segment_path (to, sizeof to, dir, (uint64_t) PJOURNAL_SEGMENT_ID_MAX + 2);
    char cmd[1100];
    snprintf (cmd, sizeof cmd, "cp %s %s", from, to);
    assert_int_equal (system (cmd), 0);
    //  Its header names it, as the engine would have.
    FILE *f = fopen (to, "r+b");
    assert_non_null (f);
    uint64_t id = htole64 ((uint64_t) PJOURNAL_SEGMENT_ID_MAX + 2);
    fseek (f, 8, SEEK_SET);
    fwrite (&id, 8, 1, f);
    fclose (f);
    off_t size = s_file_size (to);

    j = s_open (dir, "off", 4096);
    s_load (j, &seen, true);
    assert_int_equal (seen.count, 1);
    assert_int_equal (seen.segments[0], 1);
    assert_false (s_segment_on_disk (dir, (uint64_t) PJOURNAL_SEGMENT_ID_MAX + 2));
    assert_int_equal (s_append_kept (j, 1, 1, 100), 2);
    assert_int_equal (pjournal_commit (j), 0);
    pjournal_destroy (&j);
    s_quarantine_t q;
    s_read_quarantine (dir, &q, 1);
    assert_int_equal (q.kind[0], PJOURNAL_QUARANTINE_BYTES);
    assert_true (q.segment[0] == (uint64_t) PJOURNAL_SEGMENT_ID_MAX + 2);
    assert_int_equal (q.len[0], (size_t) size);

    //  The largest id that loads: the next segment comes after it.
    s_segment_path (to, sizeof to, dir, PJOURNAL_SEGMENT_ID_MAX);
    snprintf (cmd, sizeof cmd, "mv %s %s", from, to);
    assert_int_equal (system (cmd), 0);
    f = fopen (to, "r+b");
    assert_non_null (f);
    id = htole64 ((uint64_t) PJOURNAL_SEGMENT_ID_MAX);
    fseek (f, 8, SEEK_SET);
    fwrite (&id, 8, 1, f);
    fclose (f);
    j = s_open (dir, "off", 4096);
    s_load (j, &seen, true);
    assert_true (seen.count >= 1);
    assert_true (s_append_kept (j, 1, 2, 100) > PJOURNAL_SEGMENT_ID_MAX);
    assert_int_equal (pjournal_commit (j), 0);
    pjournal_destroy (&j);
}

static void test_fsync_always (void **state)
{
    const char *dir = *state;
    pjournal_t *j = s_open (dir, "always", 0);
    s_seen_t seen;
    s_load (j, &seen, false);
    pjournal_stats_t st;
    for (uint32_t i = 0; i < 10; i++) {
        s_append (j, 1, i, 100);
        if (i % 2 == 0)
            pjournal_sync_needed (j);
        assert_int_equal (pjournal_commit (j), 0);
        pjournal_stats (j, &st);
        //  One fdatasync per marked commit; unmarked ones ride along.
        assert_int_equal (st.fsyncs, i / 2 + 1);
    }
    //  A marked commit with no record of its own syncs those that rode
    //  along; the next one finds nothing unsynced and does nothing.
    pjournal_sync_needed (j);
    assert_int_equal (pjournal_commit (j), 0);
    pjournal_stats (j, &st);
    assert_int_equal (st.fsyncs, 6);
    pjournal_sync_needed (j);
    assert_int_equal (pjournal_commit (j), 0);
    pjournal_stats (j, &st);
    assert_int_equal (st.fsyncs, 6);
    assert_int_equal (st.dir_syncs, 1);         //  the new segment's name
    pjournal_destroy (&j);
}

static int64_t s_now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_fsync_batch (void **state)
{
    const char *dir = *state;
    pjournal_t *j = s_open (dir, "batch", 0);
    s_seen_t seen;
    s_load (j, &seen, false);
    pjournal_set_batch_interval (j, 60000);
    pjournal_stats_t st;
    for (uint32_t i = 0; i < 100; i++) {
        s_append (j, 1, i, 100);
        pjournal_sync_needed (j);       //  not honoured under batch
        assert_int_equal (pjournal_commit (j), 0);
    }
    pjournal_stats (j, &st);
    assert_int_equal (st.fsyncs, 0);
    int64_t due = pjournal_sync_due (j);
    assert_true (due > 0 && due <= 60000);
    //  With a short interval, a commit syncs once it has passed.
    pjournal_set_batch_interval (j, 20);
    int64_t deadline = s_now_ms () + 5000;
    uint32_t i = 100;
    while (st.fsyncs == 0 && s_now_ms () < deadline) {
        s_append (j, 1, i++, 100);
        assert_int_equal (pjournal_commit (j), 0);
        pjournal_stats (j, &st);
        if (st.fsyncs == 0)
            usleep (2000);
    }
    assert_int_equal (st.fsyncs, 1);
    //  A clean stop leaves nothing unsynced, and a sync with nothing new is free.
    s_append (j, 1, i, 100);
    assert_int_equal (pjournal_commit (j), 0);
    assert_int_equal (pjournal_sync (j), 0);
    assert_int_equal (pjournal_sync_due (j), -1);
    assert_int_equal (pjournal_sync (j), 0);
    pjournal_stats (j, &st);
    assert_int_equal (st.fsyncs, 2);
    pjournal_destroy (&j);
}

//  Under batch the sync runs behind the loop: commits go on while it runs,
//  its result is taken by a later commit, and a stop waits for it.
static void test_fsync_batch_behind (void **state)
{
    const char *dir = *state;
    pjournal_t *j = s_open (dir, "batch", 0);
    s_seen_t seen;
    s_load (j, &seen, false);
    pjournal_set_batch_interval (j, 0);        //  due as soon as anything is written
    s_append (j, 1, 0, 100);
    assert_int_equal (pjournal_commit (j), 0);
    pjournal_stats_t st;
    pjournal_stats (j, &st);
    assert_int_equal (st.fsyncs, 0);           //  started, not waited for
    uint32_t i = 1;
    int64_t deadline = s_now_ms () + 5000;
    while (st.fsyncs == 0 && s_now_ms () < deadline) {
        //  While it runs the loop is asked to look again soon, never to spin.
        int64_t due = pjournal_sync_due (j);
        assert_true (due == -1 || (due > 0 && due <= 5));
        s_append (j, 1, i++, 100);
        assert_int_equal (pjournal_commit (j), 0);
        pjournal_stats (j, &st);
        if (st.fsyncs == 0)
            usleep (1000);
    }
    assert_true (st.fsyncs >= 1);
    //  Written after it started, so still unsynced: another one follows.
    deadline = s_now_ms () + 5000;
    uint64_t first = st.fsyncs;
    while (st.fsyncs == first && s_now_ms () < deadline) {
        assert_int_equal (pjournal_commit (j), 0);
        pjournal_stats (j, &st);
        if (st.fsyncs == first)
            usleep (1000);
    }
    assert_true (st.fsyncs > first);
    //  Stop with one running: everything is there after.
    s_append (j, 1, i++, 100);
    assert_int_equal (pjournal_commit (j), 0);
    pjournal_destroy (&j);
    j = s_open (dir, "batch", 0);
    s_load (j, &seen, false);
    assert_int_equal (seen.count, i);
    pjournal_destroy (&j);
}

static void test_fsync_off (void **state)
{
    const char *dir = *state;
    pjournal_t *j = s_open (dir, "off", 4096);
    s_seen_t seen;
    s_load (j, &seen, false);
    pjournal_set_batch_interval (j, 0);
    for (uint32_t i = 0; i < 100; i++) {
        s_append (j, 1, i, 500);        //  rotating and deleting segments too
        pjournal_sync_needed (j);
        assert_int_equal (pjournal_commit (j), 0);
    }
    assert_int_equal (pjournal_sync (j), 0);
    pjournal_stats_t st;
    pjournal_stats (j, &st);
    assert_int_equal (st.fsyncs, 0);
    assert_int_equal (st.dir_syncs, 0);
    assert_true (st.segments_deleted > 10);
    pjournal_destroy (&j);
}

//  The bounded larger one: random puts, rewrites and deletions over many
//  small segments with migration every turn and reloads along the way; the
//  reloaded state always equals the model, and the disk stays bounded.
static void test_model (void **state)
{
    const char *dir = *state;
    const size_t segment = 16384;
    s_store_t *store = s_store_open (dir, segment);
    s_store_t *model = calloc (1, sizeof *model);
    unsigned int seed = 12345;
    uint64_t max_disk = 0, deleted = 0;
    for (int turn = 0; turn < 400; turn++) {
        for (int op = 0; op < 50; op++) {
            uint32_t id = (uint32_t) (rand_r (&seed) % S_OBJECTS);
            //  Lower ids live long; higher ones churn.
            bool churn = id >= 200;
            if (store->objects[id].live && (churn || rand_r (&seed) % 8 == 0)
                && rand_r (&seed) % 2)
                s_object_delete (store, id);
            else if (churn || !store->objects[id].live)
                s_object_put (store, id, (uint32_t) (rand_r (&seed) % 300));
        }
        s_store_migrate (store, 200);
        assert_int_equal (pjournal_commit (store->journal), 0);
        //  Live data is at most 2000 objects of ~160 bytes; the disk holds at
        //  most about twice that plus the slack, the segment being written
        //  and what one turn adds while a migration is under way.
        pjournal_stats_t st;
        pjournal_stats (store->journal, &st);
        uint64_t live = 0;
        for (uint32_t id = 0; id < S_OBJECTS; id++)
            if (store->objects[id].live)
                live += PJOURNAL_RECORD_OVERHEAD + 8 + store->objects[id].len;
        if (st.disk_bytes > max_disk)
            max_disk = st.disk_bytes;
        assert_true (st.disk_bytes <= 2 * live + (PJOURNAL_MIGRATE_SLACK_SEGMENTS + 3) * segment);
        if (turn % 100 == 99) {
            //  Reload and compare with what the running store holds.
            for (uint32_t id = 0; id < S_OBJECTS; id++)
                model->objects[id] = store->objects[id];
            deleted += st.segments_deleted;
            s_store_close (&store);
            store = s_store_open (dir, segment);
            pjournal_stats (store->journal, &st);
            assert_int_equal (st.quarantined + st.torn_tails, 0);
            for (uint32_t id = 0; id < S_OBJECTS; id++) {
                assert_int_equal (store->objects[id].live, model->objects[id].live);
                if (model->objects[id].live) {
                    assert_int_equal (store->objects[id].version, model->objects[id].version);
                    assert_int_equal (store->objects[id].len, model->objects[id].len);
                }
            }
        }
    }
    print_message ("model: largest journal %llu bytes\n", (unsigned long long) max_disk);
    assert_true (deleted > 50);
    s_store_close (&store);
    free (model);
}

int main (void)
{
    //  Repairs log a warning each; keep the output to failures.
    plog_init ("test", getenv ("PJOURNAL_TEST_LOG") ? PLOG_INFO : PLOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown (test_round_trip, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_big_records, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_ordered_deletion, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_migration, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_torn_tail, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_corrupt_middle, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_rejected_record, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_lock, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_sticky_error, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_failed_new_segment, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_bad_headers, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_segment_id_out_of_range, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_fsync_always, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_fsync_batch, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_fsync_batch_behind, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_fsync_off, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_model, s_setup, s_teardown),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
