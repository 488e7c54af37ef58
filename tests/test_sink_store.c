/*  The sink's durable state (sink/sink_store.c on store/pjournal): what
    survives a restart, that only marks are synced, that a mark changed
    many times in a turn is written once, that damaged records are
    quarantined while the rest loads, and that old segments go (pairs
    copied forward, rate history kept for its hour). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "sink/sink_store.h"
#include "store/pjournal.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define NOW     1700000000000ll     //  "now" in these tests
#define HOUR    3600000ll
#define KEEP_MS (24 * HOUR)         //  dedupe retention

//  A store with its sets, as the ledger holds them.
typedef struct {
    sink_store_t *store;
    pseen_t *posted, *doubted;
} s_rig_t;

//  What a load handed back.
typedef struct {
    int marks, rate;
    char text[64], reason[64], entity[32];
    int outcome;
    int64_t first_at;
    uint64_t token;
    uint32_t payload_size;
    int64_t rate_at[8];
    bool rate_doubt[8];
    bool forget;                //  forget each mark as it loads
    sink_store_t *store;
} s_seen_t;

static void s_on_mark (void *arg, const sink_mark_t *m)
{
    s_seen_t *seen = arg;
    seen->marks++;
    snprintf (seen->text, sizeof seen->text, "%s", m->text);
    snprintf (seen->reason, sizeof seen->reason, "%s", m->reason);
    snprintf (seen->entity, sizeof seen->entity, "%s", m->entity);
    seen->outcome = m->outcome;
    seen->first_at = m->first_at;
    seen->token = m->token;
    seen->payload_size = m->payload_size;
    if (m->outcome == SINK_NO_OUTCOME) {
        assert_int_equal (m->payload_size, 3);
        assert_memory_equal (m->payload, "abc", 3);
    }
    if (seen->forget)
        sink_store_forget (seen->store, m->pair);
}

static void s_on_rate (void *arg, const sink_posted_t *p)
{
    s_seen_t *seen = arg;
    if (seen->rate < 8) {
        seen->rate_at[seen->rate] = p->at;
        seen->rate_doubt[seen->rate] = p->doubt;
    }
    if (seen->rate > 0)
        assert_true (p->at >= seen->rate_at[seen->rate - 1 < 8 ? seen->rate - 1 : 7]);
    assert_string_equal (p->entity, "joker");
    seen->rate++;
}

static void s_open (s_rig_t *rig, const char *dir, const char *fsync, size_t segment_bytes)
{
    char err[300];
    rig->store = sink_store_open (dir, fsync, segment_bytes, err, sizeof err);
    assert_non_null (rig->store);
    rig->posted = pseen_new (1000000, KEEP_MS);
    rig->doubted = pseen_new (1000000, KEEP_MS);
    sink_store_set_pairs (rig->store, rig->posted, rig->doubted);
}

static s_seen_t s_load (s_rig_t *rig, int64_t now, bool forget)
{
    s_seen_t seen;
    memset (&seen, 0, sizeof seen);
    seen.outcome = -9;
    seen.forget = forget;
    seen.store = rig->store;
    assert_int_equal (sink_store_load (rig->store, now, KEEP_MS, &seen, s_on_mark, s_on_rate), 0);
    return seen;
}

static void s_close (s_rig_t *rig)
{
    sink_store_set_pairs (rig->store, NULL, NULL);
    sink_store_close (&rig->store);
    assert_null (rig->store);
    pseen_destroy (&rig->posted);
    pseen_destroy (&rig->doubted);
}

static s_seen_t s_reopen (s_rig_t *rig, const char *dir, int64_t now)
{
    s_close (rig);
    s_open (rig, dir, "always", 0);
    return s_load (rig, now, false);
}

//  As the ledger does: the pair goes into its set with the store's tag.
static void s_post (s_rig_t *rig, pkey_fp_t pair, int64_t at, bool doubt)
{
    uint32_t tag;
    if (!doubt && pseen_remove (rig->doubted, pair, &tag))
        sink_store_unposted (rig->store, tag);
    sink_posted_t p = {pair, "joker", "tg/-1", "group", at, doubt};
    tag = sink_store_posted (rig->store, &p);
    assert_true (tag > 0);
    assert_true (pseen_add (doubt ? rig->doubted : rig->posted, pair, at, tag));
}

static sink_mark_t s_mark (pkey_fp_t pair, const char *msg_key, uint64_t token, int64_t at)
{
    sink_mark_t m = {pair,  7,     token, msg_key, "joker", "tg/-1",         "group", "ha!", "abc",
                     3,     10,    at,    0,       50,      12,              at,      0,     SINK_NO_OUTCOME,
                     "",    0};
    return m;
}

static char *s_dir (void)
{
    char *dir = strdup ("/tmp/parley-sink-store-XXXXXX");
    assert_non_null (mkdtemp (dir));
    return dir;
}

static void s_rmdir (char *dir)
{
    char cmd[600];
    snprintf (cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal (system (cmd), 0);
    free (dir);
}

static int s_segments (const char *dir)
{
    char path[512];
    snprintf (path, sizeof path, "%s/sink", dir);
    DIR *d = opendir (path);
    assert_non_null (d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir (d)))
        if (strlen (e->d_name) == 19 && strcmp (e->d_name + 16, ".pj") == 0)
            n++;
    closedir (d);
    return n;
}

//  --- tests ------------------------------------------------------------------------------

static void test_marks_outcomes_and_syncs (void **state)
{
    (void) state;
    char *dir = s_dir ();
    s_rig_t rig;
    s_open (&rig, dir, "always", 0);
    s_seen_t seen = s_load (&rig, NOW, false);
    assert_int_equal (seen.marks, 0);
    pkey_fp_t pair = pkey_pair_fp ("joker", "tg/-1/5");
    sink_mark_t m = s_mark (pair, "tg/-1/5", 0xabc, NOW - 1000);
    //  Nothing written: nothing to commit, nothing synced.
    uint64_t syncs = sink_store_syncs (rig.store);
    assert_false (sink_store_dirty (rig.store));
    assert_int_equal (sink_store_commit (rig.store), 0);
    assert_int_equal (sink_store_syncs (rig.store), syncs);
    //  A mark is synced with its commit.
    sink_store_mark (rig.store, &m);
    assert_true (sink_store_dirty (rig.store));
    assert_int_equal (sink_store_commit (rig.store), 0);
    assert_false (sink_store_dirty (rig.store));
    assert_int_equal (sink_store_syncs (rig.store), syncs + 1);
    //  What follows rides along, unsynced.
    sink_store_first (rig.store, pair, NOW - 900);
    sink_store_retoken (rig.store, pair, 7, 0xdef);
    sink_store_outcome (rig.store, pair, 0, "", NOW - 800);
    s_post (&rig, pair, NOW - 900, false);
    assert_int_equal (sink_store_commit (rig.store), 0);
    assert_int_equal (sink_store_syncs (rig.store), syncs + 1);

    //  After a restart: the mark with its first part and outcome, the posted pair.
    seen = s_reopen (&rig, dir, NOW);
    assert_int_equal (seen.marks, 1);
    assert_string_equal (seen.text, "");        //  an outcome's mark keeps no text
    assert_string_equal (seen.entity, "joker");
    assert_int_equal (seen.outcome, 0);
    assert_int_equal (seen.first_at, NOW - 900);
    assert_int_equal (seen.token, 0xdef);
    assert_true (pseen_has (rig.posted, pair));
    assert_int_equal (seen.rate, 1);
    assert_int_equal (seen.rate_at[0], NOW - 900);
    //  Acknowledged: the mark goes; the posted pair stays.
    sink_store_forget (rig.store, pair);
    assert_int_equal (sink_store_commit (rig.store), 0);
    seen = s_reopen (&rig, dir, NOW);
    assert_int_equal (seen.marks, 0);
    assert_true (pseen_has (rig.posted, pair));
    //  More than an hour later it is no rate history; past the retention it is forgotten.
    seen = s_reopen (&rig, dir, NOW + HOUR);
    assert_int_equal (seen.rate, 0);
    assert_true (pseen_has (rig.posted, pair));
    seen = s_reopen (&rig, dir, NOW + KEEP_MS);
    assert_false (pseen_has (rig.posted, pair));
    s_close (&rig);
    s_rmdir (dir);
}

static void test_interrupted_mark_and_doubt (void **state)
{
    (void) state;
    char *dir = s_dir ();
    s_rig_t rig;
    s_open (&rig, dir, "always", 0);
    s_load (&rig, NOW, false);
    pkey_fp_t a = pkey_pair_fp ("joker", "tg/-1/1"), b = pkey_pair_fp ("joker", "tg/-1/2");
    sink_mark_t m = s_mark (a, "tg/-1/1", 1, NOW - 500);
    sink_store_mark (rig.store, &m);
    //  Marked and forgotten in one turn: nothing is written for it.
    m = s_mark (b, "tg/-1/2", 2, NOW - 400);
    sink_store_mark (rig.store, &m);
    sink_store_forget (rig.store, b);
    //  A pair in doubt, then posted after all; another only in doubt.
    pkey_fp_t c = pkey_pair_fp ("joker", "tg/-1/3"), d = pkey_pair_fp ("joker", "tg/-1/4");
    s_post (&rig, c, NOW - 300, true);
    s_post (&rig, d, NOW - 250, true);
    assert_int_equal (sink_store_commit (rig.store), 0);
    s_post (&rig, c, NOW - 200, false);
    assert_int_equal (sink_store_commit (rig.store), 0);

    //  A restart finds the interrupted post, with its text, and the pairs as they ended.
    s_seen_t seen = s_reopen (&rig, dir, NOW);
    assert_int_equal (seen.marks, 1);
    assert_string_equal (seen.text, "ha!");
    assert_int_equal (seen.outcome, SINK_NO_OUTCOME);
    assert_int_equal (seen.token, 1);
    assert_true (pseen_has (rig.posted, c));
    assert_false (pseen_has (rig.doubted, c));
    assert_true (pseen_has (rig.doubted, d));
    assert_int_equal (pseen_size (rig.posted) + pseen_size (rig.doubted), 2);
    //  The rate history, oldest first: each post and doubt once.
    assert_int_equal (seen.rate, 3);
    assert_true (seen.rate_doubt[0] && seen.rate_doubt[1] && !seen.rate_doubt[2]);
    //  Recovery forgets it (the loader may change the store while it loads).
    s_close (&rig);
    s_open (&rig, dir, "always", 0);
    seen = s_load (&rig, NOW, true);
    assert_int_equal (seen.marks, 1);
    assert_int_equal (sink_store_commit (rig.store), 0);
    seen = s_reopen (&rig, dir, NOW);
    assert_int_equal (seen.marks, 0);
    s_close (&rig);
    s_rmdir (dir);
}

//  A record as the journal frames it (store/pjournal.h), for damage the codec must catch.
static void s_raw (FILE *f, uint8_t type, const void *payload, uint32_t len)
{
    uint8_t head[9];
    uLong crc = crc32 (0, &type, 1);
    crc = crc32 (crc, payload, len);
    for (int i = 0; i < 4; i++) {
        head[i] = (uint8_t) (len >> (8 * i));
        head[4 + i] = (uint8_t) (crc >> (8 * i));
    }
    head[8] = type;
    fwrite (head, 1, 9, f);
    fwrite (payload, 1, len, f);
}

static void test_damaged_records_are_quarantined (void **state)
{
    (void) state;
    char *dir = s_dir ();
    s_rig_t rig;
    s_open (&rig, dir, "always", 0);
    s_load (&rig, NOW, false);
    pkey_fp_t a = pkey_pair_fp ("joker", "tg/-1/1"), b = pkey_pair_fp ("joker", "tg/-1/2");
    sink_mark_t m = s_mark (a, "tg/-1/1", 1, NOW - 500);
    sink_store_mark (rig.store, &m);
    s_post (&rig, b, NOW - 400, false);
    assert_int_equal (sink_store_commit (rig.store), 0);
    s_close (&rig);
    //  Append to the newest segment: a MARK that is no mark, a POSTED whose
    //  array claims 2^28 items, a type from a later version, a MARK whose pair
    //  is not its entity and key, and a torn last write.
    char path[512];
    snprintf (path, sizeof path, "%s/sink/%016x.pj", dir, 1);
    FILE *f = fopen (path, "ab");
    assert_non_null (f);
    s_raw (f, 1, "\x93\x01\x02\x03", 4);
    s_raw (f, 4, "\xdd\x0f\xff\xff\xff", 5);
    s_raw (f, 200, "from the future", 15);
    //  A whole MARK, packed as the store packs it, but for another pair.
    static const uint8_t forged[] = {
        0xdc, 0x00, 0x11, 0x01, 0x02, 0x07, 0x01, 0xa7, 't', 'g', '/', '-', '1', '/', '9',
        0xa5, 'j', 'o', 'k', 'e', 'r', 0xa5, 't', 'g', '/', '-', '1', 0xa5, 'g', 'r', 'o', 'u',
        'p', 0xa3, 'h', 'a', '!', 0xc4, 0x03, 'a', 'b', 'c', 0x0a, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00};
    s_raw (f, 1, forged, sizeof forged);
    fwrite ("\x20\x00\x00", 1, 3, f);
    fclose (f);

    s_open (&rig, dir, "always", 0);
    s_seen_t seen = s_load (&rig, NOW, false);
    assert_int_equal (sink_store_quarantined (rig.store), 4);
    assert_int_equal (seen.marks, 1);
    assert_string_equal (seen.text, "ha!");
    assert_true (pseen_has (rig.posted, b));
    //  It goes on: new records land in a new segment, and a restart does not loop.
    sink_store_forget (rig.store, a);
    assert_int_equal (sink_store_commit (rig.store), 0);
    seen = s_reopen (&rig, dir, NOW);
    assert_int_equal (seen.marks, 0);
    assert_true (pseen_has (rig.posted, b));
    s_close (&rig);
    s_rmdir (dir);
}

static void test_old_segments_go (void **state)
{
    (void) state;
    char *dir = s_dir ();
    s_rig_t rig;
    s_open (&rig, dir, "batch", 4096);
    s_load (&rig, NOW, false);
    //  Pairs posted two hours ago (no rate history), then a stream of posts
    //  whose marks come and go: the old segments hold little that lives.
    enum { OLD = 100, POSTS = 600 };
    char key[64];
    for (int i = 0; i < OLD; i++) {
        snprintf (key, sizeof key, "tg/-1/old%d", i);
        s_post (&rig, pkey_pair_fp ("joker", key), NOW - 2 * HOUR + i, false);
        if (i % 10 == 9)
            assert_int_equal (sink_store_commit (rig.store), 0);
    }
    sink_store_prune (rig.store, NOW);     //  no rate history: older than an hour
    pkey_fp_t held = pkey_pair_fp ("joker", "tg/-1/held");
    sink_mark_t m = s_mark (held, "tg/-1/held", 1, NOW - 3 * HOUR);
    sink_store_mark (rig.store, &m);
    assert_int_equal (sink_store_commit (rig.store), 0);
    for (int i = 0; i < POSTS; i++) {
        snprintf (key, sizeof key, "tg/-1/%d", i);
        pkey_fp_t pair = pkey_pair_fp ("joker", key);
        m = s_mark (pair, key, 1, NOW - 2 * HOUR + 1000 + i);
        sink_store_mark (rig.store, &m);
        assert_int_equal (sink_store_commit (rig.store), 0);
        sink_store_outcome (rig.store, pair, 0, "", m.marked_at);
        assert_int_equal (sink_store_commit (rig.store), 0);
        sink_store_forget (rig.store, pair);
        assert_int_equal (sink_store_commit (rig.store), 0);
    }
    int segments = s_segments (dir);
    assert_true (segments < 20);
    //  Every pair and the mark that is still held survive a restart, copied forward.
    s_seen_t seen = s_reopen (&rig, dir, NOW);
    assert_int_equal (seen.marks, 1);
    assert_string_equal (seen.text, "ha!");
    assert_int_equal (pseen_size (rig.posted), OLD);
    assert_int_equal (seen.rate, 0);
    s_close (&rig);
    s_rmdir (dir);
}

static void test_rate_history_keeps_its_segments_for_an_hour (void **state)
{
    (void) state;
    char *dir = s_dir ();
    s_rig_t rig;
    s_open (&rig, dir, "batch", 4096);
    s_load (&rig, NOW, false);
    //  Posts of the last minutes, then their pairs forgotten by the set while
    //  marks churn: their segments stay for the hour, for the rate history.
    enum { POSTS = 200 };
    char key[64];
    for (int i = 0; i < POSTS; i++) {
        snprintf (key, sizeof key, "tg/-1/%d", i);
        s_post (&rig, pkey_pair_fp ("joker", key), NOW - 60000 + i * 100, false);
        assert_int_equal (sink_store_commit (rig.store), 0);
    }
    assert_int_equal (pseen_prune (rig.posted, NOW + KEEP_MS), POSTS);
    int before = s_segments (dir);
    for (int i = 0; i < 200; i++) {
        snprintf (key, sizeof key, "tg/-1/m%d", i);
        pkey_fp_t pair = pkey_pair_fp ("joker", key);
        sink_mark_t m = s_mark (pair, key, 1, NOW);
        sink_store_mark (rig.store, &m);
        sink_store_forget (rig.store, pair);
        sink_store_mark (rig.store, &m);
        assert_int_equal (sink_store_commit (rig.store), 0);
        sink_store_forget (rig.store, pair);
        assert_int_equal (sink_store_commit (rig.store), 0);
    }
    assert_true (before >= 3);
    assert_true (s_segments (dir) >= before);
    s_seen_t seen = s_reopen (&rig, dir, NOW);
    assert_int_equal (seen.rate, POSTS);
    assert_true (s_segments (dir) >= before);
    //  An hour after the last of them, they go.
    sink_store_prune (rig.store, NOW + HOUR);
    pseen_prune (rig.posted, NOW + KEEP_MS);
    assert_int_equal (sink_store_commit (rig.store), 0);
    assert_int_equal (s_segments (dir), 1);
    seen = s_reopen (&rig, dir, NOW + HOUR);
    assert_int_equal (seen.rate, 0);
    s_close (&rig);
    s_rmdir (dir);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_marks_outcomes_and_syncs),
        cmocka_unit_test (test_interrupted_mark_and_doubt),
        cmocka_unit_test (test_damaged_records_are_quarantined),
        cmocka_unit_test (test_old_segments_go),
        cmocka_unit_test (test_rate_history_keeps_its_segments_for_an_hour),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
