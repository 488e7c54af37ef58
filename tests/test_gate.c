/*  The sink's gate (sink/gate.c) on a virtual clock: budgets counted at
    completion, pending posts, mentions before chatter, pacing, freshness. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "sink/gate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  --- helpers --------------------------------------------------------------------------------

static uint64_t s_rng = 88172645463325252ULL;

static uint64_t s_rand (void)
{
    s_rng ^= s_rng << 13;
    s_rng ^= s_rng >> 7;
    s_rng ^= s_rng << 17;
    return s_rng;
}

static int64_t s_between (int64_t lo, int64_t hi)
{
    return lo + (int64_t) (s_rand () % (uint64_t) (hi - lo + 1));
}

static gate_reply_t s_reply (uint64_t id, int entity, const char *chat, int priority,
                             int64_t created)
{
    gate_reply_t r = {id, entity, chat, "group", priority, created, 0, 0};
    return r;
}

//  Next event at `now`: the id released (0 if none), asserting it is GO.
static uint64_t s_go (gate_t *gate, int64_t now)
{
    uint64_t id = 0;
    gate_event_t e = gate_next (gate, now, &id);
    if (e == GATE_NONE)
        return 0;
    assert_int_equal (e, GATE_GO);
    return id;
}

static int s_cmp (const void *a, const void *b)
{
    int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
    return x < y ? -1 : x > y;
}

//  Asserts `times` (any order) keep the limit: gaps, and counts in every
//  half-open window of a minute and of an hour.
static void s_check_limit (int64_t *times, size_t n, const sched_limit_t *l, const char *what)
{
    qsort (times, n, sizeof (int64_t), s_cmp);
    for (size_t i = 0; i < n; i++) {
        if (l->gap_ms && i + 1 < n && times[i + 1] - times[i] < l->gap_ms)
            fail_msg ("%s: %lld ms between two posts, the gap is %lld", what,
                      (long long) (times[i + 1] - times[i]), (long long) l->gap_ms);
        size_t in_minute = 0, in_hour = 0;
        for (size_t j = i; j < n && times[j] < times[i] + 60000; j++)
            in_minute++;
        for (size_t j = i; j < n && times[j] < times[i] + 3600000; j++)
            in_hour++;
        if (l->per_minute && in_minute > (size_t) l->per_minute)
            fail_msg ("%s: %zu posts in a minute, the limit is %lld", what, in_minute,
                      (long long) l->per_minute);
        if (l->per_hour && in_hour > (size_t) l->per_hour)
            fail_msg ("%s: %zu posts in an hour, the limit is %lld", what, in_hour,
                      (long long) l->per_hour);
    }
}

//  --- a simulated platform: posts take a random time ------------------------------------------

#define SIM_MAX 4096

typedef struct {
    gate_t *gate;
    int64_t now;
    int64_t lat_min, lat_max;
    uint64_t flight[SIM_MAX];       //  released, not yet posted
    int64_t done_at[SIM_MAX];
    size_t flying;
    //  Per released reply, by id: when it started, arrived and completed.
    int64_t start[SIM_MAX], arrive[SIM_MAX], complete[SIM_MAX];
    uint64_t order[SIM_MAX];        //  ids in release order
    size_t released;
} s_sim_t;

static void s_sim_release (s_sim_t *s)
{
    uint64_t id;
    while ((id = s_go (s->gate, s->now))) {
        assert_true (id < SIM_MAX);
        int64_t took = s_between (s->lat_min, s->lat_max);
        s->start[id] = s->now;
        s->arrive[id] = s->now + s_between (0, took);   //  somewhere on the way
        s->complete[id] = s->now + took;
        s->flight[s->flying] = id;
        s->done_at[s->flying++] = s->now + took;
        s->order[s->released++] = id;
    }
}

//  Runs until `until` (virtual ms), completing posts as they are due.
static void s_sim_run (s_sim_t *s, int64_t until)
{
    while (s->now < until) {
        s_sim_release (s);
        int64_t next = gate_wakeup (s->gate, s->now);
        for (size_t i = 0; i < s->flying; i++)
            if (s->done_at[i] < next)
                next = s->done_at[i];
        if (next > until)
            next = until;
        if (next <= s->now)
            next = s->now + 1;
        s->now = next;
        for (size_t i = 0; i < s->flying;) {
            if (s->done_at[i] <= s->now) {
                gate_posted (s->gate, s->flight[i], s->done_at[i]);
                s->flight[i] = s->flight[--s->flying];
                s->done_at[i] = s->done_at[s->flying];
            }
            else
                i++;
        }
    }
}

//  --- tests ------------------------------------------------------------------------------------

static void test_limits_held_at_completion (void **state)
{
    (void) state;
    sched_limit_t entities[2] = {{700, 8, 200}, {0, 20, 0}};
    gate_chat_rule_t rules[] = {{"*", "group", {300, 12, 0}}};
    gate_config_t config = {{0, 25, 400}, 2, entities, 1, rules, 30};
    gate_t *gate = gate_new (&config);
    static s_sim_t sim;
    memset (&sim, 0, sizeof sim);
    sim.gate = gate;
    sim.now = 1000000;
    sim.lat_min = 0;
    sim.lat_max = 1500;
    const char *chats[] = {"tg/-1", "tg/-2", "tg/-3"};
    int entity_of[SIM_MAX], chat_of[SIM_MAX];
    //  Replies keep coming for 70 simulated minutes, in bursts.
    uint64_t id = 0;
    for (int minute = 0; minute < 70; minute++) {
        int burst = (int) s_between (0, 12);
        for (int k = 0; k < burst && id + 1 < SIM_MAX; k++) {
            id++;
            entity_of[id] = (int) s_between (0, 1);
            chat_of[id] = (int) s_between (0, 2);
            int priority = s_between (0, 1) ? 10 : 50;
            gate_reply_t r = s_reply (id, entity_of[id], chats[chat_of[id]], priority, sim.now);
            assert_int_equal (gate_add (gate, &r, sim.now), 0);
        }
        s_sim_run (&sim, sim.now + 60000);
    }
    s_sim_run (&sim, sim.now + 3600000);
    assert_true (sim.released > 300);
    //  Every budget, at the times the platform saw the posts: completion
    //  (where they are recorded) and arrival (somewhere before that).
    static int64_t times[SIM_MAX], arrivals[SIM_MAX];
    for (int pass = 0; pass < 2; pass++) {
        int64_t *at = pass ? sim.arrive : sim.complete;
        for (int e = 0; e < 2; e++) {
            size_t n = 0;
            for (size_t i = 0; i < sim.released; i++)
                if (entity_of[sim.order[i]] == e)
                    times[n++] = at[sim.order[i]];
            s_check_limit (times, n, &entities[e], pass ? "entity (arrivals)" : "entity");
        }
        for (int c = 0; c < 3; c++) {
            size_t n = 0;
            for (size_t i = 0; i < sim.released; i++)
                if (chat_of[sim.order[i]] == c)
                    times[n++] = at[sim.order[i]];
            s_check_limit (times, n, &rules[0].limit, pass ? "chat (arrivals)" : "chat");
        }
        for (size_t i = 0; i < sim.released; i++)
            arrivals[i] = at[sim.order[i]];
        s_check_limit (arrivals, sim.released, &config.global, pass ? "global (arrivals)" : "global");
    }
    //  Nothing is lost: everything added was posted in the end.
    assert_int_equal (sim.released, id);
    assert_int_equal (gate_waiting (gate), 0);
    assert_int_equal (gate_pending (gate), 0);
    gate_destroy (&gate);
    assert_null (gate);
}

static void test_pending_posts_block (void **state)
{
    (void) state;
    sched_limit_t entities[1] = {{1000, 0, 0}};
    gate_config_t config = {{0, 0, 0}, 1, entities, 0, NULL, 30};
    gate_t *gate = gate_new (&config);
    int64_t t = 50000;
    gate_reply_t a = s_reply (1, 0, "x/1", 10, t), b = s_reply (2, 0, "x/2", 10, t);
    gate_add (gate, &a, t);
    gate_add (gate, &b, t);
    assert_int_equal (s_go (gate, t), 1);
    assert_int_equal (s_go (gate, t), 0);
    //  However long the first takes, the second waits for it.
    assert_int_equal (s_go (gate, t + 600000), 0);
    assert_int_equal (gate_pending (gate), 1);
    //  Recorded at its completion (the end of that millisecond): the gap
    //  counts from then.
    gate_posted (gate, 1, t + 600500);
    assert_int_equal (s_go (gate, t + 600500), 0);
    assert_int_equal (gate_wakeup (gate, t + 600500), t + 601501);
    assert_int_equal (s_go (gate, t + 601500), 0);
    assert_int_equal (s_go (gate, t + 601501), 2);
    //  A post that did not happen gives its slot back at once.
    gate_cancel (gate, 2);
    gate_reply_t c = s_reply (3, 0, "x/1", 10, t);
    gate_add (gate, &c, t + 601502);
    assert_int_equal (s_go (gate, t + 601502), 3);
    gate_posted (gate, 3, t + 601600);

    //  Counts: three posts under way fill a limit of three a minute.
    sched_limit_t three[1] = {{0, 3, 0}};
    gate_config_t c3 = {{0, 0, 0}, 1, three, 0, NULL, 30};
    gate_t *g3 = gate_new (&c3);
    for (uint64_t i = 1; i <= 4; i++) {
        gate_reply_t r = s_reply (i, 0, "x/1", 10, t);
        gate_add (g3, &r, t);
    }
    assert_int_equal (s_go (g3, t), 1);
    assert_int_equal (s_go (g3, t), 2);
    assert_int_equal (s_go (g3, t), 3);
    assert_int_equal (s_go (g3, t + 120000), 0);
    gate_posted (g3, 1, t + 100);
    gate_posted (g3, 2, t + 200);
    gate_posted (g3, 3, t + 300);
    //  The fourth goes a minute after the first completed.
    assert_int_equal (s_go (g3, t + 300), 0);
    assert_int_equal (gate_wakeup (g3, t + 300), t + 60101);
    assert_int_equal (s_go (g3, t + 60100), 0);
    assert_int_equal (s_go (g3, t + 60101), 4);
    gate_destroy (&g3);
    gate_destroy (&gate);
}

static void test_mentions_never_overtaken_by_chatter (void **state)
{
    (void) state;
    int64_t t = 1000000;
    //  Entity 0 (mentions) may post every 10 s; the chat allows 2 an hour.
    sched_limit_t entities[2] = {{10000, 0, 0}, {0, 0, 0}};
    gate_chat_rule_t rules[] = {{"*", "*", {0, 0, 2}}};
    gate_config_t config = {{0, 0, 0}, 2, entities, 1, rules, 30};
    gate_t *gate = gate_new (&config);
    gate_reply_t m1 = s_reply (1, 0, "tg/-1", 10, t), m2 = s_reply (2, 0, "tg/-1", 10, t + 1);
    gate_reply_t c1 = s_reply (3, 1, "tg/-1", 50, t - 5000);
    gate_add (gate, &c1, t);
    gate_add (gate, &m1, t);
    gate_add (gate, &m2, t);
    assert_int_equal (s_go (gate, t), 1);
    gate_posted (gate, 1, t + 200);
    //  The chat has one slot left, which m2 needs at t + 10201: chatter
    //  waiting longer does not get it, however long it has waited.
    for (int64_t at = t + 300; at < t + 10201; at += 700)
        assert_int_equal (s_go (gate, at), 0);
    assert_int_equal (s_go (gate, t + 10201), 2);
    gate_posted (gate, 2, t + 10300);
    //  Now the chat is full until an hour after m1.
    assert_int_equal (s_go (gate, t + 3600200), 0);
    assert_int_equal (s_go (gate, t + 3600201), 3);
    gate_posted (gate, 3, t + 3600250);
    gate_destroy (&gate);

    //  Chatter is not held back for nothing: when the mention waits far
    //  longer for a budget of its own, chatter may use the chat meanwhile.
    sched_limit_t slow[2] = {{0, 1, 0}, {0, 0, 0}};
    gate_chat_rule_t gap[] = {{"*", "*", {1000, 0, 0}}};
    gate_config_t c2 = {{0, 0, 0}, 2, slow, 1, gap, 30};
    gate = gate_new (&c2);
    gate_reply_t a = s_reply (1, 0, "tg/-1", 10, t), b = s_reply (2, 0, "tg/-1", 10, t);
    gate_reply_t c = s_reply (3, 1, "tg/-1", 50, t), d = s_reply (4, 1, "tg/-1", 50, t);
    gate_add (gate, &a, t);
    gate_add (gate, &b, t);
    gate_add (gate, &c, t);
    gate_add (gate, &d, t);
    assert_int_equal (s_go (gate, t), 1);
    gate_posted (gate, 1, t + 100);
    //  b waits a minute for its entity; c and d take turns with the chat's gap.
    assert_int_equal (s_go (gate, t + 1101), 3);
    gate_posted (gate, 3, t + 1200);
    assert_int_equal (s_go (gate, t + 2201), 4);
    gate_posted (gate, 4, t + 2300);
    assert_int_equal (s_go (gate, t + 60101), 2);
    gate_destroy (&gate);
}

static void test_pacing_spreads_a_saturated_budget (void **state)
{
    (void) state;
    //  84 a minute overall: chatter (priority 50 >= urgentBelow 30) is paced.
    gate_config_t config = {{0, 84, 0}, 0, NULL, 0, NULL, 30};
    for (int mentions = 0; mentions < 2; mentions++) {
        gate_t *gate = gate_new (&config);
        static s_sim_t sim;
        memset (&sim, 0, sizeof sim);
        sim.gate = gate;
        sim.now = 3000000;
        sim.lat_min = 0;
        sim.lat_max = 30;
        int64_t start = sim.now;
        for (uint64_t id = 1; id < 1500; id++) {
            gate_reply_t r = s_reply (id, -1, "x/1", mentions ? 10 : 50, start);
            gate_add (gate, &r, start);
        }
        s_sim_run (&sim, start + 10 * 60000);
        //  Posts per 15 s, over 10 minutes.
        int buckets[40] = {0};
        for (size_t i = 0; i < sim.released; i++) {
            int64_t at = sim.complete[sim.order[i]] - start;
            if (at < 10 * 60000)
                buckets[at / 15000]++;
        }
        int lo = 1000, hi = 0, total = 0;
        for (int b = 0; b < 40; b++) {
            lo = buckets[b] < lo ? buckets[b] : lo;
            hi = buckets[b] > hi ? buckets[b] : hi;
            total += buckets[b];
        }
        if (mentions) {
            //  Mentions may use the whole burst: 84 at the start of each minute.
            assert_true (buckets[0] >= 80);
            assert_true (lo == 0);
        }
        else {
            //  Even: about 21 per 15 s, never a burst, and >= 95 % of the budget used.
            if (hi - lo > 2 || lo < 19)
                fail_msg ("uneven pacing: %d to %d per 15 s", lo, hi);
            if (total < 84 * 10 * 95 / 100)
                fail_msg ("pacing used only %d of %d slots", total, 84 * 10);
        }
        sched_limit_t held = config.global;
        int64_t *times = calloc (sim.released + 1, sizeof (int64_t));
        for (size_t i = 0; i < sim.released; i++)
            times[i] = sim.complete[sim.order[i]];
        s_check_limit (times, sim.released, &held, "global");
        free (times);
        gate_destroy (&gate);
    }
}

static void test_freshness (void **state)
{
    (void) state;
    sched_limit_t entities[1] = {{5000, 0, 0}};
    gate_config_t config = {{0, 0, 0}, 1, entities, 0, NULL, 30};
    gate_t *gate = gate_new (&config);
    int64_t t = 10000;
    //  Too late already: not taken.
    gate_reply_t old = {1, 0, "x/1", "", 10, t - 5000, t - 1, 0};
    assert_int_equal (gate_add (gate, &old, t), -1);
    gate_reply_t a = {2, 0, "x/1", "", 10, t, 0, 0};
    gate_reply_t b = {3, 0, "x/1", "", 10, t, t + 2000, 0};
    gate_add (gate, &a, t);
    gate_add (gate, &b, t);
    assert_int_equal (s_go (gate, t), 2);
    gate_posted (gate, 2, t + 10);
    //  b waits for the gap (t + 5010) but expires at t + 2000: the wakeup
    //  comes for the expiry, and b is never let go.
    assert_int_equal (s_go (gate, t + 20), 0);
    assert_int_equal (gate_wakeup (gate, t + 20), t + 2001);
    uint64_t id = 0;
    assert_int_equal (gate_next (gate, t + 2000, &id), GATE_NONE);
    assert_int_equal (gate_next (gate, t + 2001, &id), GATE_EXPIRED);
    assert_int_equal (id, 3);
    assert_int_equal (gate_waiting (gate), 0);
    //  A retry's backoff: not before its time.
    gate_reply_t c = {4, 0, "x/2", "", 10, t, 0, t + 9000};
    gate_add (gate, &c, t + 2001);
    assert_int_equal (s_go (gate, t + 8999), 0);
    assert_int_equal (gate_wakeup (gate, t + 8999), t + 9000);
    assert_int_equal (s_go (gate, t + 9000), 4);
    //  Removing a released reply gives its slot back.
    assert_true (gate_remove (gate, 4));
    assert_int_equal (gate_pending (gate), 0);
    gate_destroy (&gate);
}

static void test_order_and_restored_history (void **state)
{
    (void) state;
    sched_limit_t entities[1] = {{0, 2, 0}};
    gate_config_t config = {{0, 0, 0}, 1, entities, 0, NULL, 30};
    gate_t *gate = gate_new (&config);
    int64_t t = 500000;
    //  Two posts in the last minute, from before a restart.
    gate_restore (gate, 0, "x/1", "group", t - 50000);
    gate_restore (gate, 0, "x/1", "group", t - 40000);
    gate_reply_t r[4] = {s_reply (1, 0, "x/1", 50, t - 9000), s_reply (2, 0, "x/1", 10, t - 1000),
                         s_reply (3, 0, "x/1", 10, t - 2000), s_reply (4, 0, "x/1", 99, t - 9999)};
    for (int i = 0; i < 4; i++)
        gate_add (gate, &r[i], t);
    assert_int_equal (s_go (gate, t), 0);
    assert_int_equal (gate_wakeup (gate, t), t + 10000);
    //  Most urgent first, then the oldest message.
    assert_int_equal (s_go (gate, t + 10000), 3);
    gate_posted (gate, 3, t + 10000);
    assert_int_equal (s_go (gate, t + 20000), 2);
    gate_posted (gate, 2, t + 20000);
    assert_int_equal (s_go (gate, t + 70000), 0);
    assert_int_equal (s_go (gate, t + 70001), 1);
    gate_posted (gate, 1, t + 70001);
    //  4 is chatter (priority 99): paced, half a minute after the newest.
    assert_int_equal (s_go (gate, t + 80000), 0);
    assert_int_equal (s_go (gate, t + 100002), 4);
    gate_destroy (&gate);
}

//  A reply with a planned slot (the broker's, while a limit is full) waits
//  for it, goes in slot order among its priority, and still keeps every
//  budget: a slot is a plan, not a permission.
static void test_planned_slots (void **state)
{
    (void) state;
    sched_limit_t entities[2] = {{0, 0, 0}, {0, 0, 0}};
    gate_config_t config = {{500, 0, 0}, 2, entities, 0, NULL, 30};
    gate_t *gate = gate_new (&config);
    int64_t t = 300000;
    gate_reply_t a = s_reply (1, 0, "x/1", 50, t - 5000);
    gate_reply_t b = s_reply (2, 1, "x/1", 50, t - 1000);
    gate_reply_t c = s_reply (3, 0, "x/1", 50, t - 500);
    gate_reply_t d = s_reply (4, 1, "x/1", 50, t - 400);
    a.slot = t + 2000;
    b.slot = t + 1000;
    d.slot = t + 2100;
    gate_add (gate, &a, t);
    gate_add (gate, &b, t);
    gate_add (gate, &c, t);
    gate_add (gate, &d, t);
    //  Without a slot, at once.
    assert_int_equal (s_go (gate, t), 3);
    gate_posted (gate, 3, t + 10);
    //  The global gap allows one from t + 511; the next planned is at t + 1000.
    assert_int_equal (s_go (gate, t + 600), 0);
    assert_int_equal (gate_wakeup (gate, t + 600), t + 1000);
    //  b's slot comes before a's, though a's message is older.
    assert_int_equal (s_go (gate, t + 1000), 2);
    gate_posted (gate, 2, t + 1005);
    assert_int_equal (s_go (gate, t + 1999), 0);
    assert_int_equal (s_go (gate, t + 2000), 1);
    gate_posted (gate, 1, t + 2000);
    //  d's slot (t + 2100) has come, but the global gap from a's post has not.
    assert_int_equal (s_go (gate, t + 2100), 0);
    assert_int_equal (gate_wakeup (gate, t + 2100), t + 2501);
    assert_int_equal (s_go (gate, t + 2501), 4);
    gate_posted (gate, 4, t + 2510);
    assert_int_equal (gate_waiting (gate) + gate_pending (gate), 0);
    gate_destroy (&gate);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_limits_held_at_completion),
        cmocka_unit_test (test_pending_posts_block),
        cmocka_unit_test (test_mentions_never_overtaken_by_chatter),
        cmocka_unit_test (test_pacing_spreads_a_saturated_budget),
        cmocka_unit_test (test_freshness),
        cmocka_unit_test (test_order_and_restored_history),
        cmocka_unit_test (test_planned_slots),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
