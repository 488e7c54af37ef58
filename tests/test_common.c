/*  test_common - pair keys, the bounded seen-set, backoff, the pointer table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/limits.h"
#include "common/pbackoff.h"
#include "common/pkey.h"
#include "common/pseen.h"
#include "common/ptable.h"

static void test_pair_keys (void **state)
{
    (void) state;
    char buf[64];
    assert_int_equal (pkey_pair (buf, sizeof buf, "joker", "tg/1/2"), 12);
    assert_memory_equal (buf, "joker\x1ftg/1/2", 13);
    assert_string_equal (pkey_pair_msg (buf), "tg/1/2");
    char *owned = pkey_pair_new ("joker", "tg/1/2");
    assert_string_equal (owned, buf);
    free (owned);
    //  Truncation still terminates.
    char tiny[4];
    pkey_pair (tiny, sizeof tiny, "joker", "x");
    assert_int_equal (strlen (tiny), 3);
    pkey_fp_t a = pkey_pair_fp ("joker", "tg/1/2");
    pkey_fp_t b = pkey_pair_fp ("joker", "tg/1/3");
    pkey_fp_t c = pkey_fp (buf, 12);
    assert_false (pkey_fp_equal (a, b));
    assert_true (pkey_fp_equal (a, c));
    //  The fingerprint is fixed across runs (it is stored): pin it.
    pkey_fp_t pinned = pkey_pair_fp ("a", "b");
    char text[40];
    snprintf (text, sizeof text, "%016llx%016llx", (unsigned long long) pinned.hi,
              (unsigned long long) pinned.lo);
    pkey_fp_t again = pkey_pair_fp ("a", "b");
    assert_true (pkey_fp_equal (pinned, again));
}

static int s_forgotten;
static void s_on_forget (void *arg, pkey_fp_t fp, int64_t at, uint32_t tag)
{
    (void) arg;
    (void) fp;
    (void) at;
    (void) tag;
    s_forgotten++;
}

static pkey_fp_t s_fp (int i)
{
    char key[32];
    snprintf (key, sizeof key, "key-%d", i);
    return pkey_fp (key, strlen (key));
}

static void test_seen_bounds (void **state)
{
    (void) state;
    pseen_t *seen = pseen_new (5000, 1000);
    pseen_on_forget (seen, s_on_forget, NULL);
    s_forgotten = 0;
    for (int i = 0; i < 20000; i++)
        assert_true (pseen_add (seen, s_fp (i), i, (uint32_t) i));
    //  Only the newest 5000 remain, and the set found each again.
    assert_int_equal (pseen_size (seen), 5000);
    assert_int_equal (s_forgotten, 15000);
    for (int i = 0; i < 20000; i++)
        assert_int_equal (pseen_has (seen, s_fp (i)), i >= 15000);
    assert_false (pseen_add (seen, s_fp (19999), 20000, 0));
    //  Removal leaves the rest findable (backward-shift deletion).
    for (int i = 15000; i < 20000; i += 2)
        assert_true (pseen_remove (seen, s_fp (i), NULL));
    for (int i = 15000; i < 20000; i++)
        assert_int_equal (pseen_has (seen, s_fp (i)), i % 2 == 1);
    assert_int_equal (pseen_size (seen), 2500);
    //  Age: keys older than 1000 ms at time 19500 go.
    size_t dropped = pseen_prune (seen, 19500);
    assert_int_equal (dropped, 1750);
    assert_int_equal (pseen_size (seen), 750);
    pseen_destroy (&seen);
}

static void s_each (void *arg, pkey_fp_t fp, int64_t at, uint32_t tag)
{
    (void) fp;
    int64_t *last = arg;
    assert_true (at > *last);
    assert_int_not_equal (tag, 3);
    *last = at;
}

static void test_seen_iteration_is_oldest_first (void **state)
{
    (void) state;
    pseen_t *seen = pseen_new (100, 0);
    for (int i = 0; i < 10; i++)
        pseen_add (seen, s_fp (i), 100 + i, (uint32_t) i);
    pseen_remove (seen, s_fp (3), NULL);
    int64_t last = 0;
    pseen_each (seen, s_each, &last);
    assert_int_equal (last, 109);
    pseen_destroy (&seen);
}

//  Keys crowded onto one home slot of the index, some of them also sharing
//  the index's 32-bit hash: every lookup walks a long cluster, is told
//  apart by the whole fingerprint, and removals shift the cluster back.
static pkey_fp_t s_crowded_fp (int i)
{
    //  The index hashes lo ^ (hi >> 7), 32 bits. lo's low 20 bits are zero,
    //  so every key's home is slot 0 of any index up to a million slots;
    //  keys 2k and 2k + 1 have equal hashes (hi differs only above bit 39).
    pkey_fp_t fp = {(uint64_t) (i / 2) << 20, (uint64_t) (i % 2) << 40};
    return fp;
}

static void test_seen_crowded_against_a_reference (void **state)
{
    (void) state;
    enum { KEYS = 1500, OPS = 60000 };
    bool present[KEYS] = {false};
    size_t live = 0;
    pseen_t *seen = pseen_new (1000000, 0);
    srand (7);
    for (int op = 0; op < OPS; op++) {
        int k = rand () % KEYS;
        pkey_fp_t fp = s_crowded_fp (k);
        switch (rand () % 3) {
            case 0:
                assert_int_equal (pseen_add (seen, fp, op, (uint32_t) k), !present[k]);
                live += !present[k];
                present[k] = true;
                break;
            case 1: {
                uint32_t tag = UINT32_MAX;
                assert_int_equal (pseen_remove (seen, fp, &tag), present[k]);
                if (present[k])
                    assert_int_equal (tag, (uint32_t) k);
                live -= present[k];
                present[k] = false;
                break;
            }
            default:
                assert_int_equal (pseen_has (seen, fp), present[k]);
        }
        assert_int_equal (pseen_size (seen), live);
    }
    for (int k = 0; k < KEYS; k++)
        assert_int_equal (pseen_has (seen, s_crowded_fp (k)), present[k]);
    pseen_destroy (&seen);
}

static void test_backoff (void **state)
{
    (void) state;
    assert_int_equal (pbackoff_ceiling (1000, 60000, 1), 1000);
    assert_int_equal (pbackoff_ceiling (1000, 60000, 3), 4000);
    assert_int_equal (pbackoff_ceiling (1000, 60000, 40), 60000);
    for (int i = 0; i < 1000; i++) {
        int64_t d = pbackoff_delay (100, 1000, 3);
        assert_true (d >= 0 && d <= 400);
    }
    assert_int_equal (pbackoff_delay (0, 1000, 3), 0);
}

static void test_limits_pending_and_pacing (void **state)
{
    (void) state;
    sched_limit_t three_a_minute = {0, 3, 0};
    limit_log_t log;
    assert_int_equal (limit_log_init (&log, &three_a_minute), 0);
    //  Nothing made yet: two pending leave one slot, three leave none.
    assert_int_equal (limit_log_next_with (&log, 1000, 2, false), 1000);
    assert_int_equal (limit_log_next_with (&log, 1000, 3, false), LIMITS_NEVER);
    limit_log_record (&log, 1000);
    limit_log_record (&log, 2000);
    //  Two made, one pending: the next waits for the oldest to be a minute old.
    assert_int_equal (limit_log_next_with (&log, 2500, 1, false), 61000);
    assert_int_equal (limit_log_next_with (&log, 2500, 0, false), 2500);
    //  Paced: a step is 20 s (60 s / 3); two steps after the one before the
    //  newest, at least half a step after the newest.
    assert_int_equal (limit_log_next_with (&log, 2500, 0, true), 41000);
    assert_int_equal (limit_log_next_with (&log, 2500, 1, true), LIMITS_NEVER);
    //  On time, the spacing is one step; a late post lets the next catch up.
    limit_log_record (&log, 41000);
    assert_int_equal (limit_log_next_with (&log, 41000, 0, true), 61000);
    limit_log_record (&log, 70000);
    assert_int_equal (limit_log_next_with (&log, 70000, 0, true), 81000);
    //  A reservation moved back in time takes its place in order; one older
    //  than all a full log keeps is dropped.
    assert_true (limit_log_forget (&log, 70000));
    limit_log_insert (&log, 30000);
    assert_int_equal (limit_log_entry (&log, 0), 41000);
    assert_int_equal (limit_log_entry (&log, 1), 30000);
    assert_int_equal (limit_log_entry (&log, 2), 2000);
    limit_log_insert (&log, 500);
    assert_int_equal (limit_log_entry (&log, 2), 2000);
    assert_false (limit_log_forget (&log, 500));
    limit_log_destroy (&log);

    sched_limit_t gap = {500, 0, 0};
    assert_int_equal (limit_log_init (&log, &gap), 0);
    limit_log_record (&log, 1000);
    assert_int_equal (limit_log_next_with (&log, 1200, 0, true), 1500);
    assert_int_equal (limit_log_next_with (&log, 1200, 1, false), LIMITS_NEVER);
    limit_log_destroy (&log);
}

//  --- ptable: records keyed by their own (a, b) fields -------------------------------

typedef struct {
    uint64_t id;                //  first, so a match that compared the record itself would fail
    uint64_t a, b;              //  the key
} s_rec_t;

static const void *s_rec_key (const void *item)
{
    return &((const s_rec_t *) item)->a;
}

static bool s_rec_match (const void *item, const void *key)
{
    return ptable_u64x2_equal (s_rec_key (item), key);
}

static size_t s_disposed;

static bool s_odd_id (const void *item, void *arg)
{
    (void) arg;
    return ((const s_rec_t *) item)->id & 1;
}

static void s_count_disposed (void *item)
{
    assert_true (((s_rec_t *) item)->id & 1);
    s_disposed++;
}

static void test_ptable_against_a_reference (void **state)
{
    (void) state;
    enum { N = 5000 };
    s_rec_t *recs = calloc (N, sizeof *recs);
    bool *in = calloc (N, sizeof *in);
    ptable_t *t = ptable_new (ptable_hash_u64x2, s_rec_key, s_rec_match);
    //  Keys that share their first half, and many operations that shift probe runs.
    for (size_t i = 0; i < N; i++)
        recs[i] = (s_rec_t) {1000 + i, i / 7, (i % 7) * 0x9e37ULL};
    uint64_t x = 88172645463325252ULL;
    size_t size = 0;
    for (int step = 0; step < 200000; step++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        size_t i = (size_t) (x % N);
        ptable_u64x2_t key = {recs[i].a, recs[i].b};
        //  Every other step in the steps a restart uses: hash, prefetch, use.
        bool hashed = step & 1;
        uint64_t h = ptable_hash_key (t, &key);
        if (hashed)
            ptable_prefetch (t, h);
        assert_ptr_equal (hashed ? ptable_lookup_hashed (t, &key, h) : ptable_lookup (t, &key),
                          in[i] ? &recs[i] : NULL);
        if (in[i]) {
            assert_ptr_equal (ptable_remove (t, &key), &recs[i]);
            in[i] = false;
            size--;
        }
        else if (hashed) {
            ptable_insert_hashed (t, &recs[i], h);
            in[i] = true;
            size++;
        }
        else {
            ptable_insert (t, &recs[i]);
            in[i] = true;
            size++;
        }
        assert_int_equal (ptable_size (t), size);
    }
    size_t cursor = 0, walked = 0;
    s_rec_t *r;
    while ((r = ptable_next (t, &cursor))) {
        assert_true (in[r - recs]);
        walked++;
    }
    assert_int_equal (walked, size);
    for (size_t i = 0; i < N; i++) {
        ptable_u64x2_t key = {recs[i].a, recs[i].b};
        assert_ptr_equal (ptable_lookup (t, &key), in[i] ? &recs[i] : NULL);
    }
    //  A sweep: the records with an odd id go, the rest stay findable.
    s_disposed = 0;
    size_t odd = 0;
    for (size_t i = 0; i < N; i++)
        odd += in[i] && (recs[i].id & 1);
    assert_int_equal (ptable_remove_if (t, s_odd_id, NULL, s_count_disposed), odd);
    assert_int_equal (s_disposed, odd);
    assert_int_equal (ptable_size (t), size - odd);
    for (size_t i = 0; i < N; i++) {
        ptable_u64x2_t key = {recs[i].a, recs[i].b};
        assert_ptr_equal (ptable_lookup (t, &key), in[i] && !(recs[i].id & 1) ? &recs[i] : NULL);
    }
    ptable_destroy (&t);
    assert_null (t);
    free (recs);
    free (in);
}

//  Every key's home is one of the table's last two slots, so the records
//  run on from the end of the array to its start.
static uint64_t s_hash_at_the_end (const void *key)
{
    return 62 + (((const ptable_u64x2_t *) key)->a & 1);
}

static void test_ptable_remove_if_across_the_wrap (void **state)
{
    (void) state;
    enum { N = 40 };            //  under 0.7 of the first 64 slots: no growth
    s_rec_t recs[N];
    ptable_t *t = ptable_new (s_hash_at_the_end, s_rec_key, s_rec_match);
    for (size_t i = 0; i < N; i++) {
        recs[i] = (s_rec_t) {i, i, 7};
        ptable_insert (t, &recs[i]);
    }
    s_disposed = 0;
    assert_int_equal (ptable_remove_if (t, s_odd_id, NULL, s_count_disposed), N / 2);
    assert_int_equal (s_disposed, N / 2);
    assert_int_equal (ptable_size (t), N / 2);
    for (size_t i = 0; i < N; i++) {
        ptable_u64x2_t key = {recs[i].a, recs[i].b};
        assert_ptr_equal (ptable_lookup (t, &key), i & 1 ? NULL : &recs[i]);
    }
    size_t cursor = 0, walked = 0;
    while (ptable_next (t, &cursor))
        walked++;
    assert_int_equal (walked, N / 2);
    ptable_destroy (&t);
}

//  A table grown past 2 MiB of slots (huge pages where offered) keeps every record.
static void test_ptable_large (void **state)
{
    (void) state;
    enum { N = 150000 };
    s_rec_t *recs = calloc (N, sizeof *recs);
    ptable_t *t = ptable_new (ptable_hash_u64x2, s_rec_key, s_rec_match);
    for (size_t i = 0; i < N; i++) {
        recs[i] = (s_rec_t) {i, i, i * 31};
        ptable_insert (t, &recs[i]);
    }
    assert_int_equal (ptable_size (t), N);
    for (size_t i = 0; i < N; i++) {
        ptable_u64x2_t key = {recs[i].a, recs[i].b};
        assert_ptr_equal (ptable_lookup (t, &key), &recs[i]);
    }
    ptable_destroy (&t);
    free (recs);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_pair_keys),
        cmocka_unit_test (test_seen_bounds),
        cmocka_unit_test (test_seen_iteration_is_oldest_first),
        cmocka_unit_test (test_seen_crowded_against_a_reference),
        cmocka_unit_test (test_backoff),
        cmocka_unit_test (test_limits_pending_and_pacing),
        cmocka_unit_test (test_ptable_against_a_reference),
        cmocka_unit_test (test_ptable_remove_if_across_the_wrap),
        cmocka_unit_test (test_ptable_large),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
