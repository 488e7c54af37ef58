/*  The poller's store on the journal (poller/poller_store): seen keys,
    cursors and unacknowledged batches survive a reopen; seen keys past the
    retention or the count bound are not brought back; only new batches and
    cursors make a turn sync; damaged and unknown records are quarantined
    and the rest loads; old segments go (migration moves what pins them);
    and the submit module's batches - busy ones included - come back after
    a restart exactly as the broker has not acknowledged them. Each test
    works in its own directory under /tmp. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "common/palloc.h"
#include "common/pconfig.h"
#include "common/pkey.h"
#include "common/pseen.h"
#include "poller/poller_store.h"
#include "poller/submit.h"
#include "proto/proto.h"
#include "store/pjournal.h"

#include <ftw.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HOUR_MS 3600000

//  ---------------------------------------------------------------------------
//  Helpers

static int s_remove_entry (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void) st, (void) flag, (void) ftw;
    return remove (path);
}

static int s_setup (void **state)
{
    char *dir = strdup ("/tmp/poller-store-test-XXXXXX");
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

static pkey_fp_t s_fp (int i)
{
    char key[64];
    int n = snprintf (key, sizeof key, "in/room/m%d", i);
    return pkey_fp (key, (size_t) n);
}

//  A SUBMIT frame of `count` jobs with sequence number `seq` (caller frees).
static void *s_frame (uint64_t seq, size_t count, size_t *size)
{
    proto_job_spec_t *items = pcalloc (count, sizeof *items);
    char keys[64][32];
    assert_true (count <= 64);
    for (size_t i = 0; i < count; i++) {
        snprintf (keys[i], sizeof keys[i], "in/room/b%llu-%zu", (unsigned long long) seq, i);
        items[i] = (proto_job_spec_t) {keys[i], "alpha", "in/room", "group", 10, 1000, {(const uint8_t *) "x", 1}};
    }
    proto_submit_t submit = {seq, items, count};
    zmq_msg_t frame;
    assert_int_equal (proto_encode (PROTO_SUBMIT, &submit, &frame), 0);
    *size = zmq_msg_size (&frame);
    void *data = pmemdup (zmq_msg_data (&frame), *size);
    zmq_msg_close (&frame);
    free (items);
    return data;
}

//  A batch as the tests' owner keeps it.
typedef struct {
    uint64_t seq;
    size_t count;
    void *frame;
    size_t size;
    poller_store_anchor_t anchor;
} s_batch_t;

#define MAX_BATCHES 64

//  An open store with its seen set and batches, as the poller would hold them.
typedef struct {
    poller_store_t *store;
    pseen_t *seen;
    s_batch_t batches[MAX_BATCHES];
    size_t nbatches;
    size_t rewrites;            //  batches the store asked to write again
} s_poller_t;

static void s_rewrite (void *arg, poller_store_anchor_t *anchor)
{
    s_poller_t *p = arg;
    s_batch_t *b = PJOURNAL_CONTAINER (anchor, s_batch_t, anchor);
    poller_store_batch (p->store, &b->anchor, b->seq, b->frame, b->size, b->count, false);
    p->rewrites++;
}

static void s_loaded (void *arg, uint64_t seq, const void *frame, size_t size, size_t count,
                      uint64_t segment)
{
    s_poller_t *p = arg;
    assert_true (p->nbatches < MAX_BATCHES);
    s_batch_t *b = &p->batches[p->nbatches++];
    *b = (s_batch_t) {seq, count, pmemdup (frame, size), size, {{0, NULL, NULL}, 0}};
    poller_store_anchor_loaded (p->store, &b->anchor, segment);
}

static void s_open (s_poller_t *p, const char *dir, const char *fsync, size_t segment_bytes,
                    size_t max_keys, int64_t now)
{
    memset (p, 0, sizeof *p);
    char err[512] = "";
    p->store = poller_store_open_sized (dir, fsync, segment_bytes, err, sizeof err);
    if (!p->store)
        fail_msg ("open: %s", err);
    p->seen = pseen_new (max_keys, 24 * HOUR_MS);
    poller_store_set_seen (p->store, p->seen);
    poller_store_set_owner (p->store, s_rewrite, p);
    assert_int_equal (poller_store_load (p->store, now, 24 * HOUR_MS, s_loaded, p), 0);
}

static void s_close (s_poller_t *p)
{
    for (size_t i = 0; i < p->nbatches; i++) {
        poller_store_anchor_drop (p->store, &p->batches[i].anchor);
        free (p->batches[i].frame);
    }
    poller_store_close (&p->store);
    pseen_destroy (&p->seen);
}

static s_batch_t *s_add_batch (s_poller_t *p, uint64_t seq, size_t count, bool sync)
{
    assert_true (p->nbatches < MAX_BATCHES);
    s_batch_t *b = &p->batches[p->nbatches++];
    memset (b, 0, sizeof *b);
    b->seq = seq;
    b->count = count;
    b->frame = s_frame (seq, count, &b->size);
    poller_store_batch (p->store, &b->anchor, seq, b->frame, b->size, count, sync);
    return b;
}

//  Acknowledged: its slot stays (anchors are linked in place) but is dead.
static void s_ack (s_poller_t *p, uint64_t seq)
{
    for (size_t i = 0; i < p->nbatches; i++)
        if (p->batches[i].seq == seq) {
            poller_store_acked (p->store, &p->batches[i].anchor, seq);
            free (p->batches[i].frame);
            p->batches[i].frame = NULL;
            p->batches[i].seq = 0;
            return;
        }
    fail_msg ("no batch %llu", (unsigned long long) seq);
}

static void s_mark (s_poller_t *p, int i, int64_t at)
{
    pkey_fp_t fp = s_fp (i);
    pseen_add (p->seen, fp, at, poller_store_mark_seen (p->store, fp, at));
}

static uint64_t s_fsyncs (s_poller_t *p)
{
    pjournal_stats_t st;
    poller_store_stats (p->store, &st);
    return st.fsyncs;
}

//  ---------------------------------------------------------------------------
//  Tests

static void test_round_trip (void **state)
{
    const char *dir = *state;
    int64_t now = 1700000000000;
    s_poller_t p;
    s_open (&p, dir, "batch", 0, 1000, now);
    assert_int_equal (p.nbatches, 0);
    assert_null (poller_store_get_cursor (p.store, "in"));
    for (int i = 0; i < 5; i++)
        s_mark (&p, i, now + i);
    poller_store_cursor (p.store, "in", "100");
    poller_store_cursor (p.store, "tg", "7");
    s_add_batch (&p, 1, 3, true);
    s_add_batch (&p, 2, 2, true);
    assert_int_equal (poller_store_commit (p.store), 0);
    //  The next turn: batch 1 acknowledged, the cursor moves.
    s_ack (&p, 1);
    poller_store_cursor (p.store, "in", "250");
    assert_int_equal (poller_store_commit (p.store), 0);
    s_close (&p);

    s_open (&p, dir, "batch", 0, 1000, now + 1000);
    assert_int_equal (poller_store_quarantined (p.store), 0);
    assert_int_equal (pseen_size (p.seen), 5);
    for (int i = 0; i < 5; i++)
        assert_true (pseen_has (p.seen, s_fp (i)));
    assert_false (pseen_has (p.seen, s_fp (5)));
    char *c = poller_store_get_cursor (p.store, "in");
    assert_string_equal (c, "250");
    free (c);
    c = poller_store_get_cursor (p.store, "tg");
    assert_string_equal (c, "7");
    free (c);
    assert_int_equal (p.nbatches, 1);
    assert_int_equal (p.batches[0].seq, 2);
    assert_int_equal (p.batches[0].count, 2);
    size_t size;
    void *want = s_frame (2, 2, &size);
    assert_int_equal (p.batches[0].size, size);
    assert_memory_equal (p.batches[0].frame, want, size);
    free (want);
    s_close (&p);
}

static void test_batches_come_back_in_seq_order (void **state)
{
    const char *dir = *state;
    s_poller_t p;
    s_open (&p, dir, "off", 0, 1000, 1000);
    for (uint64_t seq = 1; seq <= 20; seq++)
        s_add_batch (&p, seq, 1 + seq % 3, seq % 2);
    assert_int_equal (poller_store_commit (p.store), 0);
    for (uint64_t seq = 3; seq <= 20; seq += 3)
        s_ack (&p, seq);
    assert_int_equal (poller_store_commit (p.store), 0);
    s_close (&p);
    s_open (&p, dir, "off", 0, 1000, 1000);
    assert_int_equal (p.nbatches, 14);
    uint64_t last = 0;
    for (size_t i = 0; i < p.nbatches; i++) {
        assert_true (p.batches[i].seq > last);
        assert_true (p.batches[i].seq % 3 != 0);
        assert_int_equal (p.batches[i].count, 1 + p.batches[i].seq % 3);
        last = p.batches[i].seq;
    }
    s_close (&p);
}

static void test_seen_bounds_at_load (void **state)
{
    const char *dir = *state;
    int64_t now = 1700000000000;
    s_poller_t p;
    s_open (&p, dir, "off", 0, 1000, now);
    //  Ten keys from two days ago, then twenty recent ones.
    for (int i = 0; i < 10; i++)
        s_mark (&p, i, now - 48 * HOUR_MS + i);
    for (int i = 10; i < 30; i++)
        s_mark (&p, i, now + i);
    assert_int_equal (poller_store_commit (p.store), 0);
    s_close (&p);
    //  The retention keeps the twenty; a bound of 15 keeps the newest 15.
    s_open (&p, dir, "off", 0, 15, now + 100);
    assert_int_equal (pseen_size (p.seen), 15);
    for (int i = 0; i < 15; i++)
        assert_false (pseen_has (p.seen, s_fp (i)));
    for (int i = 15; i < 30; i++)
        assert_true (pseen_has (p.seen, s_fp (i)));
    //  Forgetting keys (here: all, by age) releases their records' refs.
    assert_int_equal (pseen_prune (p.seen, now + 25 * HOUR_MS), 15);
    assert_int_equal (poller_store_commit (p.store), 0);
    s_close (&p);
}

//  fsync "always": a turn syncs when it stores a new batch or a cursor; a
//  turn of seen marks, acknowledgements and busy re-batches rides along.
static void test_only_batches_and_cursors_sync (void **state)
{
    const char *dir = *state;
    s_poller_t p;
    s_open (&p, dir, "always", 0, 1000, 1000);
    uint64_t base = s_fsyncs (&p);
    s_mark (&p, 1, 1000);
    s_add_batch (&p, 1, 1, true);
    poller_store_cursor (p.store, "in", "1");
    assert_int_equal (poller_store_commit (p.store), 0);
    assert_int_equal (s_fsyncs (&p), base + 1);
    //  The ACK turn: its tombstone, and a busy re-batch, are not synced now.
    s_add_batch (&p, 2, 1, false);
    s_ack (&p, 1);
    s_mark (&p, 2, 1001);
    assert_int_equal (poller_store_commit (p.store), 0);
    assert_int_equal (s_fsyncs (&p), base + 1);
    assert_true (poller_store_sync_due (p.store) >= 0);
    //  A cursor alone syncs, and takes what rode along with it.
    poller_store_cursor (p.store, "in", "2");
    assert_int_equal (poller_store_commit (p.store), 0);
    assert_int_equal (s_fsyncs (&p), base + 2);
    assert_int_equal (poller_store_sync_due (p.store), -1);
    //  A turn with nothing: nothing.
    assert_int_equal (poller_store_commit (p.store), 0);
    assert_int_equal (s_fsyncs (&p), base + 2);
    s_close (&p);
}

//  Loads a journal keeping every record (so nothing is deleted).
static int s_keep_all (void *arg, uint64_t segment, uint8_t type, const void *data, size_t len,
                       char *reason, size_t reason_size)
{
    (void) type, (void) data, (void) len, (void) reason, (void) reason_size;
    pjournal_ref (arg, segment);
    return 0;
}

//  Records an older or damaged version could leave, appended through the
//  journal itself (so their checksums are right): each is quarantined with
//  its reason, and everything else loads.
static void test_quarantine (void **state)
{
    const char *dir = *state;
    s_poller_t p;
    s_open (&p, dir, "off", 0, 1000, 1000);
    s_mark (&p, 1, 1000);
    poller_store_cursor (p.store, "in", "42");
    s_add_batch (&p, 1, 2, true);
    assert_int_equal (poller_store_commit (p.store), 0);
    s_close (&p);

    char err[256];
    pjournal_t *j = pjournal_new (dir, "poller", "off", 0, err, sizeof err);
    assert_non_null (j);
    assert_int_equal (pjournal_load (j, s_keep_all, j), 0);
    //  A SEEN that is not three numbers; a CURSOR whose source is not
    //  UTF-8, and one without a source; an array claiming 2^28 items; a
    //  type this version does not know.
    static const uint8_t seen_bad[] = {0x92, 0x01, 0x02};
    static const uint8_t cursor_bad[] = {0x92, 0xa1, 0xff, 0xa1, '9'};
    static const uint8_t cursor_nameless[] = {0x92, 0xa0, 0xa1, '9'};
    static const uint8_t huge[] = {0xdd, 0x0f, 0xff, 0xff, 0xff};
    assert_true (pjournal_append (j, 1, seen_bad, sizeof seen_bad));
    assert_true (pjournal_append (j, 2, cursor_bad, sizeof cursor_bad));
    assert_true (pjournal_append (j, 2, cursor_nameless, sizeof cursor_nameless));
    assert_true (pjournal_append (j, 3, huge, sizeof huge));
    assert_true (pjournal_append (j, 200, "from the future", 15));
    //  A BATCH whose frame is not a SUBMIT, and one whose frame has another seq.
    size_t size;
    void *frame = s_frame (9, 1, &size);
    msgpack_sbuffer buf;
    msgpack_sbuffer_init (&buf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &buf, msgpack_sbuffer_write);
    msgpack_pack_array (&pk, 3);
    msgpack_pack_uint64 (&pk, 5);
    msgpack_pack_uint64 (&pk, 1);
    msgpack_pack_bin (&pk, 4);
    msgpack_pack_bin_body (&pk, "junk", 4);
    assert_true (pjournal_append (j, 3, buf.data, buf.size));
    buf.size = 0;
    msgpack_pack_array (&pk, 3);
    msgpack_pack_uint64 (&pk, 6);
    msgpack_pack_uint64 (&pk, 1);
    msgpack_pack_bin (&pk, size);
    msgpack_pack_bin_body (&pk, frame, size);
    assert_true (pjournal_append (j, 3, buf.data, buf.size));
    msgpack_sbuffer_destroy (&buf);
    free (frame);
    assert_int_equal (pjournal_commit (j), 0);
    pjournal_destroy (&j);

    s_open (&p, dir, "off", 0, 1000, 2000);
    assert_int_equal (poller_store_quarantined (p.store), 7);
    assert_true (pseen_has (p.seen, s_fp (1)));
    char *c = poller_store_get_cursor (p.store, "in");
    assert_string_equal (c, "42");
    free (c);
    assert_int_equal (p.nbatches, 1);
    assert_int_equal (p.batches[0].seq, 1);
    //  It serves: new state is stored and read back.
    s_add_batch (&p, 2, 1, true);
    assert_int_equal (poller_store_commit (p.store), 0);
    s_close (&p);
    s_open (&p, dir, "off", 0, 1000, 3000);
    assert_int_equal (p.nbatches, 2);
    s_close (&p);
}

//  Small segments: seen keys churn through a small set while a cursor and
//  a batch that never change pin the first segment; migration moves them,
//  old segments go, and everything still loads.
static void test_old_segments_go (void **state)
{
    const char *dir = *state;
    int64_t now = 1700000000000;
    s_poller_t p;
    s_open (&p, dir, "off", 4096, 100, now);
    poller_store_cursor (p.store, "still", "1");
    s_add_batch (&p, 1, 3, true);
    assert_int_equal (poller_store_commit (p.store), 0);
    pjournal_stats_t st;
    for (int i = 0; i < 20000; i++) {
        s_mark (&p, i, now + i);
        if (i % 50 == 0) {
            char cursor[32];
            snprintf (cursor, sizeof cursor, "%d", i);
            poller_store_cursor (p.store, "moving", cursor);
        }
        if (i % 10 == 9)
            assert_int_equal (poller_store_commit (p.store), 0);
    }
    poller_store_stats (p.store, &st);
    assert_true (st.segments_deleted > 100);
    assert_true (st.segments < 20);
    assert_true (p.rewrites > 0);
    s_close (&p);

    s_open (&p, dir, "off", 4096, 100, now + 30000);
    assert_int_equal (poller_store_quarantined (p.store), 0);
    assert_int_equal (pseen_size (p.seen), 100);
    for (int i = 19900; i < 20000; i++)
        assert_true (pseen_has (p.seen, s_fp (i)));
    char *c = poller_store_get_cursor (p.store, "still");
    assert_string_equal (c, "1");
    free (c);
    c = poller_store_get_cursor (p.store, "moving");
    assert_string_equal (c, "19950");
    free (c);
    assert_int_equal (p.nbatches, 1);
    assert_int_equal (p.batches[0].seq, 1);
    assert_int_equal (p.batches[0].count, 3);
    s_close (&p);
}

//  ---------------------------------------------------------------------------
//  The submit module on the store

static void s_restore (void *arg, uint64_t seq, const void *frame, size_t size, size_t count,
                       uint64_t segment)
{
    submit_restore (arg, seq, frame, size, count, segment);
}

static proto_job_spec_t s_job (int i)
{
    char key[32];
    snprintf (key, sizeof key, "in/room/m%d", i);
    uint8_t *data = pcalloc (1, 1);
    return (proto_job_spec_t) {pstrdup (key), pstrdup ("alpha"), pstrdup ("in/room"),
                               pstrdup ("group"), 10, 1000, {data, 1}};
}

static void s_recv (zsock_t *broker, proto_msg_t *msg)
{
    zmq_pollitem_t item = {zsock_resolve (broker), 0, ZMQ_POLLIN, 0};
    assert_int_equal (zmq_poll (&item, 1, 1000), 1);
    zmq_msg_t frame;
    zmq_msg_init (&frame);
    assert_true (zmq_msg_recv (&frame, zsock_resolve (broker), 0) >= 0);
    char why[256];
    assert_int_equal (proto_decode (zmq_msg_data (&frame), zmq_msg_size (&frame), msg, why, sizeof why),
                      PROTO_OK);
    zmq_msg_close (&frame);
    assert_int_equal (msg->type, PROTO_SUBMIT);
}

static void test_submit_batches_survive_a_restart (void **state)
{
    const char *dir = *state;
    char err[512] = "";
    pcfg_t *config = pcfg_load_string ("{\"poller\": {\"submitWindow\": 100, \"submitBatch\": 4}}",
                                       "test", true, err, sizeof err);
    assert_non_null (config);
    zsock_t *broker = zsock_new_pair ("@inproc://poller-store-submit");
    zsock_t *poller = zsock_new_pair (">inproc://poller-store-submit");

    poller_store_t *store = poller_store_open (dir, "always", err, sizeof err);
    assert_non_null (store);
    pseen_t *seen = pseen_new (1000, 0);
    poller_store_set_seen (store, seen);
    submit_t *submit = submit_new (config, store);
    assert_int_equal (poller_store_load (store, 1000, HOUR_MS, s_restore, submit), 0);
    for (int i = 0; i < 8; i++) {
        proto_job_spec_t spec = s_job (i);
        assert_int_equal (submit_add (submit, &spec), 0);
    }
    submit_flush (submit, 1000);
    assert_int_equal (poller_store_commit (store), 0);
    submit_send (submit, poller, 1000);
    proto_msg_t first, second;
    s_recv (broker, &first);
    s_recv (broker, &second);
    //  The first batch: jobs 1 and 2 busy. The second: all taken.
    proto_reject_t rejects[] = {{1, "queue full", PROTO_REJECT_BUSY},
                                {2, "queue full", PROTO_REJECT_BUSY}};
    proto_ack_t ack = {first.body.submit.seq, 2, 0, rejects, 2, 300, 0};
    submit_on_ack (submit, &ack, 1010);
    ack = (proto_ack_t) {second.body.submit.seq, 4, 0, NULL, 0, 0, 0};
    submit_on_ack (submit, &ack, 1010);
    proto_msg_release (&first);
    proto_msg_release (&second);
    assert_int_equal (poller_store_commit (store), 0);
    assert_int_equal (submit_outstanding (submit), 2);
    //  Stop (as a kill would: the busy batch is not acknowledged).
    submit_destroy (&submit);
    poller_store_close (&store);
    pseen_destroy (&seen);

    store = poller_store_open (dir, "always", err, sizeof err);
    assert_non_null (store);
    seen = pseen_new (1000, 0);
    poller_store_set_seen (store, seen);
    submit = submit_new (config, store);
    assert_int_equal (poller_store_load (store, 2000, HOUR_MS, s_restore, submit), 0);
    assert_int_equal (submit_outstanding (submit), 2);
    submit_send (submit, poller, 2000);
    proto_msg_t again;
    s_recv (broker, &again);
    assert_int_equal (again.body.submit.count, 2);
    assert_string_equal (again.body.submit.items[0].msg_key, "in/room/m1");
    assert_string_equal (again.body.submit.items[1].msg_key, "in/room/m2");
    ack = (proto_ack_t) {again.body.submit.seq, 2, 0, NULL, 0, 0, 0};
    proto_msg_release (&again);
    submit_on_ack (submit, &ack, 2010);
    assert_int_equal (poller_store_commit (store), 0);
    assert_int_equal (submit_outstanding (submit), 0);
    submit_destroy (&submit);
    poller_store_close (&store);
    pseen_destroy (&seen);

    //  Nothing is left to send.
    store = poller_store_open (dir, "always", err, sizeof err);
    seen = pseen_new (1000, 0);
    poller_store_set_seen (store, seen);
    submit = submit_new (config, store);
    assert_int_equal (poller_store_load (store, 3000, HOUR_MS, s_restore, submit), 0);
    assert_int_equal (submit_outstanding (submit), 0);
    submit_destroy (&submit);
    poller_store_close (&store);
    pseen_destroy (&seen);
    zsock_destroy (&poller);
    zsock_destroy (&broker);
    pcfg_destroy (&config);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown (test_round_trip, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_batches_come_back_in_seq_order, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_seen_bounds_at_load, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_only_batches_and_cursors_sync, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_quarantine, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_old_segments_go, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_submit_batches_survive_a_restart, s_setup, s_teardown),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
