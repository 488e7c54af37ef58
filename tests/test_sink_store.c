/*  The sink's durable state (sink/sink_store.c): what survives a restart,
    and that only marks are synced. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "sink/sink_store.h"

#include <czmq.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int marks, posted;
    char text[64], reason[64];
    int outcome;
    int64_t first_at;
    uint64_t token;
    int64_t posted_at[8];
} s_seen_t;

static void s_on_mark (void *arg, const sink_mark_t *m)
{
    s_seen_t *seen = arg;
    seen->marks++;
    snprintf (seen->text, sizeof seen->text, "%s", m->text);
    snprintf (seen->reason, sizeof seen->reason, "%s", m->reason);
    seen->outcome = m->outcome;
    seen->first_at = m->first_at;
    seen->token = m->token;
    assert_int_equal (m->payload_size, 3);
    assert_memory_equal (m->payload, "abc", 3);
}

static void s_on_posted (void *arg, const sink_posted_t *p)
{
    s_seen_t *seen = arg;
    if (seen->posted < 8)
        seen->posted_at[seen->posted] = p->at;
    seen->posted++;
}

static s_seen_t s_load (sink_store_t *store)
{
    s_seen_t seen;
    memset (&seen, 0, sizeof seen);
    seen.outcome = -9;
    sink_store_load (store, &seen, s_on_mark, s_on_posted);
    return seen;
}

static void test_marks_outcomes_and_syncs (void **state)
{
    (void) state;
    char dir[] = "/tmp/parley-sink-store-XXXXXX";
    assert_non_null (mkdtemp (dir));
    char err[300];
    sink_store_t *store = sink_store_open (dir, "always", err, sizeof err);
    assert_non_null (store);
    pkey_fp_t pair = pkey_pair_fp ("joker", "tg/-1/5");
    sink_mark_t m = {pair,     7,    0xabc, "tg/-1/5", "joker", "tg/-1", "group", "ha!", "abc", 3,
                     10,       1000, 0,     50,        12,      2000,    0,       SINK_NO_OUTCOME,
                     "",       0};
    //  Nothing written: nothing to commit, nothing synced.
    assert_int_equal (sink_store_commit (store), 0);
    assert_int_equal (sink_store_syncs (store), 0);
    //  A mark is synced with its commit.
    sink_store_mark (store, &m);
    assert_true (sink_store_dirty (store));
    assert_int_equal (sink_store_commit (store), 0);
    assert_int_equal (sink_store_syncs (store), 1);
    //  What follows rides along, unsynced.
    sink_store_first (store, pair, 2100);
    sink_store_retoken (store, pair, 7, 0xdef);
    sink_store_outcome (store, pair, 0, "", 2200);
    sink_posted_t p = {pair, "joker", "tg/-1", "group", 2100, false};
    sink_store_posted (store, &p);
    assert_int_equal (sink_store_commit (store), 0);
    assert_int_equal (sink_store_syncs (store), 1);
    sink_store_close (&store);

    //  After a restart: the mark with its first part and outcome, the posted pair.
    store = sink_store_open (dir, "always", err, sizeof err);
    s_seen_t seen = s_load (store);
    assert_int_equal (seen.marks, 1);
    assert_string_equal (seen.text, "ha!");
    assert_int_equal (seen.outcome, 0);
    assert_int_equal (seen.first_at, 2100);
    assert_int_equal (seen.token, 0xdef);
    assert_int_equal (seen.posted, 1);
    assert_int_equal (seen.posted_at[0], 2100);
    //  Acknowledged: the mark goes; the posted pair stays until pruned.
    sink_store_forget (store, pair);
    sink_store_prune (store, 2000);
    assert_int_equal (sink_store_commit (store), 0);
    seen = s_load (store);
    assert_int_equal (seen.marks, 0);
    assert_int_equal (seen.posted, 1);
    sink_store_unposted (store, pair);
    assert_int_equal (sink_store_commit (store), 0);
    seen = s_load (store);
    assert_int_equal (seen.posted, 0);

    sink_store_close (&store);
    assert_null (store);
    char cmd[600];
    snprintf (cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal (system (cmd), 0);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_marks_outcomes_and_syncs),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
