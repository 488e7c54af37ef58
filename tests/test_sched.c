/*  test_sched - every scheduling rule, with a fake clock.

    The scheduler takes `now` as an argument, so these tests drive time by
    hand: no sockets, no sleeping, fully deterministic.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include "broker/sched.h"

#define MIN 60000
#define HOUR 3600000

typedef struct {
    sched_job_t sj;
    int id;
} job_t;

static job_t s_jobs[4096];
static int s_next;

static job_t *s_job (int priority, int entity, uint32_t chat)
{
    job_t *j = &s_jobs[s_next];
    memset (j, 0, sizeof *j);
    j->id = s_next++;
    j->sj.priority = (uint8_t) priority;
    j->sj.entity = (uint16_t) entity;
    j->sj.chat = chat;
    return j;
}

static job_t *s_push (sched_t *s, int priority, int entity, uint32_t chat, int64_t now)
{
    job_t *j = s_job (priority, entity, chat);
    sched_push (s, &j->sj, now);
    return j;
}

static int s_pop_id (sched_t *s, int64_t now)
{
    job_t *j = (job_t *) sched_pop (s, now);
    return j ? j->id : -1;
}

typedef struct {
    sched_config_t config;
    sched_entity_config_t entities[8];
    sched_chat_rule_t rules[4];
} setup_t;

static sched_t *s_new (setup_t *st, size_t entities)
{
    st->config.entity_count = entities;
    st->config.entities = st->entities;
    st->config.chat_rules = st->rules;
    s_next = 0;
    return sched_new (&st->config);
}

static void test_priority_then_fifo (void **state)
{
    (void) state;
    setup_t st = {0};
    sched_t *s = s_new (&st, 1);
    uint32_t c = sched_chat_intern (s, "src/a", "src", "group");
    s_push (s, 50, 0, c, 1);    //  0
    s_push (s, 10, 0, c, 2);    //  1
    s_push (s, 50, 0, c, 3);    //  2
    s_push (s, 0, 0, c, 4);     //  3
    s_push (s, 10, 0, c, 5);    //  4
    int order[] = {3, 1, 4, 0, 2};
    for (int i = 0; i < 5; i++)
        assert_int_equal (s_pop_id (s, 10), order[i]);
    assert_int_equal (s_pop_id (s, 10), -1);
    assert_int_equal (sched_wakeup (s, 10), SCHED_NEVER);
    sched_destroy (&s);
}

static void test_entity_gap_and_wakeup (void **state)
{
    (void) state;
    setup_t st = {0};
    st.entities[0].limit.gap_ms = 45000;
    sched_t *s = s_new (&st, 1);
    uint32_t c = sched_chat_intern (s, "src/a", "src", "");
    s_push (s, 50, 0, c, 0);
    s_push (s, 50, 0, c, 0);
    assert_int_equal (s_pop_id (s, 1000), 0);
    assert_int_equal (s_pop_id (s, 1000), -1);
    //  Sleep exactly until the gap has passed.
    assert_int_equal (sched_wakeup (s, 1000), 46000);
    assert_int_equal (s_pop_id (s, 45999), -1);
    assert_int_equal (s_pop_id (s, 46000), 1);
    sched_destroy (&s);
}

//  N per minute: at most N in any 60 s window, with no double burst across
//  a fixed-window boundary, and the full budget used.
static void test_sliding_minute (void **state)
{
    (void) state;
    setup_t st = {0};
    st.entities[0].limit.per_minute = 3;
    sched_t *s = s_new (&st, 1);
    uint32_t c = sched_chat_intern (s, "src/a", "src", "");
    for (int i = 0; i < 20; i++)
        s_push (s, 50, 0, c, 0);
    int64_t times[20];
    int n = 0;
    //  Posts at 59 s, then as fast as allowed.
    int64_t now = 59000;
    while (n < 9) {
        job_t *j = (job_t *) sched_pop (s, now);
        if (j) {
            times[n++] = now;
            sched_done (s, &j->sj, now);
            continue;
        }
        now = sched_wakeup (s, now);
    }
    //  Three at 59 s; the next three only at 119 s, not at the minute edge 60 s.
    int64_t expect[] = {59000, 59000, 59000, 119000, 119000, 119000, 179000, 179000, 179000};
    for (int i = 0; i < 9; i++)
        assert_int_equal (times[i], expect[i]);
    sched_destroy (&s);
}

static void test_hour_and_minute_together (void **state)
{
    (void) state;
    setup_t st = {0};
    st.entities[0].limit.per_minute = 2;
    st.entities[0].limit.per_hour = 5;
    sched_t *s = s_new (&st, 1);
    uint32_t c = sched_chat_intern (s, "src/a", "src", "");
    for (int i = 0; i < 10; i++)
        s_push (s, 50, 0, c, 0);
    int64_t now = 0;
    int64_t times[6];
    int n = 0;
    while (n < 6) {
        job_t *j = (job_t *) sched_pop (s, now);
        if (j) {
            times[n++] = now;
            continue;
        }
        now = sched_wakeup (s, now);
    }
    assert_int_equal (times[4], 2 * MIN);      //  2 + 2 + 1 within the first hour
    assert_int_equal (times[5], HOUR);         //  the sixth waits for the hour
    sched_destroy (&s);
}

//  A busy chat does not block the entity's other chats (no head-of-line blocking).
static void test_chat_limit_no_head_of_line (void **state)
{
    (void) state;
    setup_t st = {0};
    st.rules[0] = (sched_chat_rule_t) {"tg", "group", {0, 2, 0}};
    st.config.chat_rule_count = 1;
    sched_t *s = s_new (&st, 1);
    uint32_t busy = sched_chat_intern (s, "tg/busy", "tg", "group");
    uint32_t quiet = sched_chat_intern (s, "web/quiet", "web", "group");
    for (int i = 0; i < 5; i++)
        s_push (s, 10, 0, busy, 0);     //  urgent, but its chat allows 2 a minute
    for (int i = 0; i < 3; i++)
        s_push (s, 50, 0, quiet, 0);
    int busy_count = 0, quiet_count = 0;
    job_t *j;
    while ((j = (job_t *) sched_pop (s, 100))) {
        if (j->sj.chat == busy)
            busy_count++;
        else
            quiet_count++;
    }
    assert_int_equal (busy_count, 2);
    assert_int_equal (quiet_count, 3);
    //  The busy chat's next slot is at 60.1 s.
    assert_int_equal (sched_wakeup (s, 100), 60100);
    assert_non_null (sched_pop (s, 60100));
    sched_destroy (&s);
}

//  A rate-limited entity does not block another entity.
static void test_entity_limit_no_head_of_line (void **state)
{
    (void) state;
    setup_t st = {0};
    st.entities[0].limit.per_minute = 1;
    sched_t *s = s_new (&st, 2);
    uint32_t c = sched_chat_intern (s, "src/a", "src", "");
    for (int i = 0; i < 3; i++)
        s_push (s, 0, 0, c, 0);
    for (int i = 0; i < 3; i++)
        s_push (s, 90, 1, c, 0);
    int e0 = 0, e1 = 0;
    job_t *j;
    while ((j = (job_t *) sched_pop (s, 0))) {
        if (j->sj.entity)
            e1++;
        else
            e0++;
    }
    assert_int_equal (e0, 1);
    assert_int_equal (e1, 3);
    sched_destroy (&s);
}

static void test_global_limits_and_caps (void **state)
{
    (void) state;
    setup_t st = {0};
    st.config.global.gap_ms = 5000;
    sched_t *s = s_new (&st, 2);
    uint32_t c = sched_chat_intern (s, "src/a", "src", "");
    s_push (s, 50, 0, c, 0);
    s_push (s, 50, 1, c, 0);
    assert_int_equal (s_pop_id (s, 0), 0);
    assert_int_equal (s_pop_id (s, 0), -1);
    assert_int_equal (sched_wakeup (s, 0), 5000);
    assert_int_equal (s_pop_id (s, 5000), 1);
    sched_destroy (&s);

    //  Concurrency: global cap 3, entity 0 capped at 2.
    setup_t st2 = {0};
    st2.config.global_max_in_flight = 3;
    st2.entities[0].max_in_flight = 2;
    s = s_new (&st2, 2);
    c = sched_chat_intern (s, "src/a", "src", "");
    for (int i = 0; i < 4; i++)
        s_push (s, 10, 0, c, 0);
    for (int i = 0; i < 4; i++)
        s_push (s, 50, 1, c, 0);
    job_t *a = (job_t *) sched_pop (s, 0);
    job_t *b = (job_t *) sched_pop (s, 0);
    job_t *third = (job_t *) sched_pop (s, 0);
    assert_int_equal (a->sj.entity, 0);
    assert_int_equal (b->sj.entity, 0);
    assert_int_equal (third->sj.entity, 1);     //  entity 0 is at its cap
    assert_null (sched_pop (s, 0));             //  global cap reached
    assert_int_equal (sched_wakeup (s, 0), SCHED_NEVER);    //  only a done helps
    sched_done (s, &third->sj, 1);
    job_t *fourth = (job_t *) sched_pop (s, 1);
    assert_int_equal (fourth->sj.entity, 1);    //  entity 0 still capped
    sched_done (s, &a->sj, 2);
    job_t *fifth = (job_t *) sched_pop (s, 2);
    assert_int_equal (fifth->sj.entity, 0);
    sched_counts_t counts;
    sched_counts (s, &counts);
    assert_int_equal (counts.in_flight, 3);
    assert_int_equal (counts.queued, 3);
    sched_destroy (&s);
}

static void test_not_before_and_expiry (void **state)
{
    (void) state;
    setup_t st = {0};
    sched_t *s = s_new (&st, 1);
    uint32_t c = sched_chat_intern (s, "src/a", "src", "");
    job_t *late = s_job (10, 0, c);
    late->sj.not_before = 3000;
    sched_push (s, &late->sj, 0);
    job_t *old = s_job (50, 0, c);
    old->sj.expires_at = 2000;
    old->sj.not_before = 2500;
    sched_push (s, &old->sj, 0);
    assert_int_equal (s_pop_id (s, 0), -1);
    assert_int_equal (sched_wakeup (s, 0), 2000);   //  the expiry comes first
    assert_null (sched_pop_expired (s, 1999));
    assert_ptr_equal (sched_pop_expired (s, 2000), &old->sj);
    assert_int_equal (sched_wakeup (s, 2000), 3000);
    assert_int_equal (s_pop_id (s, 2999), -1);
    assert_int_equal (s_pop_id (s, 3000), late->id);
    sched_destroy (&s);
}

static void test_remove (void **state)
{
    (void) state;
    setup_t st = {0};
    sched_t *s = s_new (&st, 1);
    uint32_t c = sched_chat_intern (s, "src/a", "src", "");
    s_push (s, 50, 0, c, 0);
    job_t *worst = s_push (s, 90, 0, c, 1);
    job_t *worst_later = s_push (s, 90, 0, c, 2);
    s_push (s, 10, 0, c, 3);
    //  Removed jobs never come out; the others keep their order.
    sched_remove (s, &worst_later->sj);
    sched_remove (s, &worst->sj);
    sched_counts_t counts;
    sched_counts (s, &counts);
    assert_int_equal (counts.queued, 2);
    assert_int_equal (s_pop_id (s, 5), 3);
    assert_int_equal (s_pop_id (s, 5), 0);
    assert_int_equal (s_pop_id (s, 5), -1);
    sched_destroy (&s);
}

static void test_unreserve_gives_the_slot_back (void **state)
{
    (void) state;
    setup_t st = {0};
    st.entities[0].limit.per_minute = 1;
    sched_t *s = s_new (&st, 1);
    uint32_t c = sched_chat_intern (s, "src/a", "src", "");
    s_push (s, 50, 0, c, 0);
    s_push (s, 50, 0, c, 0);
    job_t *first = (job_t *) sched_pop (s, 100);
    assert_non_null (first);
    assert_int_equal (s_pop_id (s, 200), -1);
    //  The first attempt failed before posting: its slot is free again.
    sched_done (s, &first->sj, 300);
    sched_unreserve (s, &first->sj, 300);
    assert_int_equal (s_pop_id (s, 300), 1);
    sched_destroy (&s);
}

static void test_pause_and_resume (void **state)
{
    (void) state;
    setup_t st = {0};
    sched_t *s = s_new (&st, 2);
    uint32_t c = sched_chat_intern (s, "src/a", "src", "");
    s_push (s, 10, 0, c, 0);
    s_push (s, 50, 1, c, 0);
    sched_pause (s, 0, true, 0);
    assert_true (sched_paused (s, 0));
    assert_int_equal (s_pop_id (s, 0), 1);
    assert_int_equal (s_pop_id (s, 0), -1);
    sched_pause (s, 0, false, 1);
    sched_pause (s, -1, true, 1);
    assert_int_equal (s_pop_id (s, 1), -1);
    sched_pause (s, -1, false, 2);
    assert_int_equal (s_pop_id (s, 2), 0);
    sched_destroy (&s);
}

//  Equal priority: entities take turns, and an entity's chats take turns.
static void test_rotation (void **state)
{
    (void) state;
    setup_t st = {0};
    sched_t *s = s_new (&st, 2);
    uint32_t a = sched_chat_intern (s, "src/a", "src", "");
    uint32_t b = sched_chat_intern (s, "src/b", "src", "");
    //  Entity 0 has 4 jobs in chat a, then 4 in chat b; entity 1 has 4 in a.
    for (int i = 0; i < 4; i++)
        s_push (s, 50, 0, a, 0);
    for (int i = 0; i < 4; i++)
        s_push (s, 50, 0, b, 0);
    for (int i = 0; i < 4; i++)
        s_push (s, 50, 1, a, 0);
    int entity_switches = 0, last_entity = -1;
    int chat_of_entity0[8], n0 = 0;
    job_t *j;
    while ((j = (job_t *) sched_pop (s, 0))) {
        if (last_entity >= 0 && j->sj.entity != last_entity)
            entity_switches++;
        last_entity = j->sj.entity;
        if (j->sj.entity == 0)
            chat_of_entity0[n0++] = (int) j->sj.chat;
    }
    //  Entities alternate while both have work (4 turns each = 7 switches at least).
    assert_true (entity_switches >= 7);
    //  Entity 0's chats alternate: a, b, a, b, ...
    for (int i = 1; i < n0; i++)
        assert_int_not_equal (chat_of_entity0[i], chat_of_entity0[i - 1]);
    sched_destroy (&s);
}

//  Freeing the state of idle (chat, entity) pairs keeps the chats' turns: a
//  chat served last waits behind the chats that waited, even after its state
//  was freed and made again; with nothing waiting, every pair is freed.
static void test_forget_idle_keeps_turns (void **state)
{
    (void) state;
    setup_t st = {0};
    sched_t *s = s_new (&st, 1);
    uint32_t a = sched_chat_intern (s, "src/a", "src", "");
    uint32_t b = sched_chat_intern (s, "src/b", "src", "");
    uint32_t c = sched_chat_intern (s, "src/c", "src", "");
    //  Each chat served once, in the order a, b, c.
    s_push (s, 50, 0, a, 0);
    s_push (s, 50, 0, b, 0);
    s_push (s, 50, 0, c, 0);
    for (int i = 0; i < 3; i++)
        sched_done (s, sched_pop (s, 0), 0);
    //  b waits again. a was served before b: its state may go. c was served
    //  after b: freed, it would be made again as never served, and go first.
    job_t *b2 = s_push (s, 50, 0, b, 1);
    assert_int_equal (sched_flow_count (s), 3);
    assert_int_equal (sched_forget_idle (s), 1);
    assert_int_equal (sched_flow_count (s), 2);
    job_t *c2 = s_push (s, 50, 0, c, 2);
    job_t *a2 = s_push (s, 50, 0, a, 2);
    assert_int_equal (s_pop_id (s, 2), a2->id);
    assert_int_equal (s_pop_id (s, 2), b2->id);
    assert_int_equal (s_pop_id (s, 2), c2->id);
    sched_done (s, &a2->sj, 2);
    sched_done (s, &b2->sj, 2);
    sched_done (s, &c2->sj, 2);
    //  Nothing waits: every pair goes, and work for them comes out as ever.
    assert_int_equal (sched_forget_idle (s), 3);
    assert_int_equal (sched_flow_count (s), 0);
    job_t *again = s_push (s, 50, 0, c, 3);
    assert_int_equal (s_pop_id (s, 3), again->id);
    sched_done (s, &again->sj, 3);
    //  A chat never served does not hold the others' state: c (served) is
    //  empty while d waits; c goes, and comes back behind d's older job.
    uint32_t d = sched_chat_intern (s, "src/d", "src", "");
    job_t *d1 = s_push (s, 50, 0, d, 4);
    assert_int_equal (sched_forget_idle (s), 1);
    job_t *c3 = s_push (s, 50, 0, c, 5);
    assert_int_equal (s_pop_id (s, 5), d1->id);
    assert_int_equal (s_pop_id (s, 5), c3->id);
    sched_destroy (&s);
}

//  A thousand entities in ten thousand chats: the scheduler keeps state only
//  for the (entity, chat) pairs that have had a job, not a slot for every
//  entity in every chat (ten million of them, 80 MB), and every job comes
//  out once. (Under the sanitizers mallinfo2 reports nothing; the release
//  build checks the bound.)
static void test_many_entities_and_chats_are_sparse (void **state)
{
    (void) state;
    enum { ENTITIES = 1000, CHATS = 10000, JOBS = 4000 };
    static sched_entity_config_t entities[ENTITIES];
    memset (entities, 0, sizeof entities);
    sched_config_t config = {0};
    config.entity_count = ENTITIES;
    config.entities = entities;
    s_next = 0;
    size_t before = mallinfo2 ().uordblks;
    sched_t *s = sched_new (&config);
    uint32_t chats[CHATS];
    char key[32];
    for (int i = 0; i < CHATS; i++) {
        snprintf (key, sizeof key, "src/%d", i);
        chats[i] = sched_chat_intern (s, key, "src", "group");
    }
    //  Pairs scattered over the whole square, a few sharing a flow.
    for (int i = 0; i < JOBS; i++)
        s_push (s, i % 3 == 0 ? 10 : 50, (i * 7919) % ENTITIES, chats[(i * 104729) % CHATS], i);
    size_t grew = mallinfo2 ().uordblks - before;
    assert_true (grew < 8u << 20);
    static bool seen[JOBS];
    memset (seen, 0, sizeof seen);
    int popped = 0, urgent_after_chatter = 0;
    bool chatter_seen = false;
    job_t *j;
    while ((j = (job_t *) sched_pop (s, JOBS))) {
        assert_false (seen[j->id]);
        seen[j->id] = true;
        popped++;
        if (j->sj.priority == 50)
            chatter_seen = true;
        else if (chatter_seen)
            urgent_after_chatter++;
        sched_done (s, &j->sj, JOBS);
    }
    assert_int_equal (popped, JOBS);
    //  Without limits or aging, entities take turns by their most urgent
    //  job: every urgent job goes before any chatter.
    assert_int_equal (urgent_after_chatter, 0);
    sched_destroy (&s);
}

static void test_aging (void **state)
{
    (void) state;
    //  Every 10 s of waiting counts one priority more urgent.
    setup_t st = {0};
    st.config.aging_ms = 10000;
    sched_t *s = s_new (&st, 1);
    uint32_t c = sched_chat_intern (s, "src/a", "src", "");
    job_t *old_low = s_push (s, 60, 0, c, 0);
    //  90 s later the priority-60 job counts as 51: a new priority-50 job still wins.
    job_t *newer = s_push (s, 50, 0, c, 90000);
    assert_int_equal (s_pop_id (s, 90000), newer->id);
    //  100 s later it counts as 50: equal, and it came first.
    job_t *newest = s_push (s, 50, 0, c, 100000);
    assert_int_equal (s_pop_id (s, 100000), old_low->id);
    assert_int_equal (s_pop_id (s, 100000), newest->id);
    sched_destroy (&s);
}

static void test_restored_history_prevents_a_burst (void **state)
{
    (void) state;
    setup_t st = {0};
    st.entities[0].limit.per_minute = 2;
    sched_t *s = s_new (&st, 1);
    uint32_t c = sched_chat_intern (s, "src/a", "src", "");
    //  Before a restart the entity posted twice in the last minute.
    sched_restore_reservation (s, 0, c, 50000);
    sched_restore_reservation (s, 0, c, 55000);
    s_push (s, 50, 0, c, 60000);
    assert_int_equal (s_pop_id (s, 60000), -1);
    assert_int_equal (sched_wakeup (s, 60000), 110000);
    sched_destroy (&s);
}


//  Under a binding global limit, turns follow the entities' own budgets:
//  one allowed 20 a minute gets twice the turns of one allowed 10, so
//  neither runs out of its minute early while global slots go unused.
static void test_weighted_turns (void **state)
{
    (void) state;
    setup_t st = {0};
    st.config.global.gap_ms = 1000;
    st.entities[0].limit.per_minute = 20;
    st.entities[1].limit.per_minute = 10;
    sched_t *s = s_new (&st, 2);
    uint32_t c = sched_chat_intern (s, "src/a", "src", "group");
    for (int i = 0; i < 100; i++) {
        s_push (s, 50, 0, c, 0);
        s_push (s, 50, 1, c, 0);
    }
    int count[2] = {0, 0};
    for (int64_t now = 1000; now < 31000; now += 1000) {
        job_t *j = (job_t *) sched_pop (s, now);
        assert_non_null (j);
        count[j->sj.entity]++;
        sched_done (s, &j->sj, now);
    }
    assert_int_equal (count[0], 20);
    assert_int_equal (count[1], 10);
    sched_destroy (&s);
}

//  Slots are reserved `lead` ahead, and move to the time the post was made.
static void test_lead_and_posted_time (void **state)
{
    (void) state;
    setup_t st = {0};
    st.entities[0].limit.per_minute = 2;
    sched_t *s = s_new (&st, 1);
    uint32_t c = sched_chat_intern (s, "src/a", "src", "group");
    job_t *a = s_push (s, 10, 0, c, 0);
    s_push (s, 10, 0, c, 0);
    s_push (s, 10, 0, c, 0);
    sched_set_lead (s, 5000);
    assert_int_equal (s_pop_id (s, 100000), 0);
    assert_int_equal (a->sj.reserved_at, 105000);
    assert_int_equal (s_pop_id (s, 100000), 1);
    //  Two in the minute from 105 s: the third may go when that minute has
    //  passed, counted ahead: at 165 s - 5 s.
    assert_int_equal (s_pop_id (s, 159999), -1);
    assert_int_equal (sched_wakeup (s, 150000), 160000);
    //  The first was really posted at 101 s: the minute counts from then.
    sched_posted (s, &a->sj, 101000, 150000);
    assert_int_equal (a->sj.reserved_at, 101000);
    assert_int_equal (sched_wakeup (s, 150000), 156000);
    assert_int_equal (s_pop_id (s, 156000), 2);
    sched_destroy (&s);
}

//  A reply carries its slot only when a limit it counts against was full
//  (held a ready job back) within the lead before its dispatch.
static void test_slot_held_only_when_full (void **state)
{
    (void) state;
    setup_t st = {0};
    st.config.global.gap_ms = 500;
    sched_t *s = s_new (&st, 2);
    uint32_t c = sched_chat_intern (s, "src/a", "src", "");
    sched_set_lead (s, 3000);
    //  Quiet: one job, nothing held back, no slot to wait for.
    job_t *a = s_push (s, 50, 0, c, 10000);
    assert_int_equal (s_pop_id (s, 10000), a->id);
    assert_int_equal (a->sj.reserved_at, 13000);
    assert_int_equal (sched_slot (&a->sj), 0);
    //  Two at once: the second waits for the global gap, so the limit is full
    //  and the second carries its slot.
    s_push (s, 50, 0, c, 20000);
    s_push (s, 50, 1, c, 20000);
    job_t *b = (job_t *) sched_pop (s, 20000);
    assert_non_null (b);
    assert_int_equal (sched_slot (&b->sj), 0);
    assert_int_equal (s_pop_id (s, 20000), -1);
    assert_int_equal (sched_wakeup (s, 20000), 20500);
    job_t *d = (job_t *) sched_pop (s, 20500);
    assert_non_null (d);
    assert_int_not_equal (d->sj.entity, b->sj.entity);
    assert_int_equal (sched_slot (&d->sj), 23500);
    //  Still full within the lead (3 s) after the job held back at 20 s ...
    job_t *e = s_push (s, 50, 0, c, 22900);
    assert_int_equal (s_pop_id (s, 22900), e->id);
    assert_int_equal (sched_slot (&e->sj), 25900);
    //  ... and no longer after it: the slot is not waited for.
    job_t *f = s_push (s, 50, 1, c, 30000);
    assert_int_equal (s_pop_id (s, 30000), f->id);
    assert_int_equal (sched_slot (&f->sj), 0);
    //  A slot given back is no slot.
    sched_unreserve (s, &e->sj, 30000);
    assert_int_equal (sched_slot (&e->sj), 0);
    sched_destroy (&s);

    //  An entity's own limit held back counts too; a chat's as well.
    setup_t st2 = {0};
    st2.entities[0].limit.gap_ms = 4000;
    st2.rules[0] = (sched_chat_rule_t) {"*", "*", {2000, 0, 0}};
    st2.config.chat_rule_count = 1;
    s = s_new (&st2, 2);
    c = sched_chat_intern (s, "src/a", "src", "");
    uint32_t c2 = sched_chat_intern (s, "src/b", "src", "");
    sched_set_lead (s, 1000);
    job_t *g = s_push (s, 50, 0, c2, 0);
    job_t *h = s_push (s, 50, 0, c2, 0);
    assert_int_equal (s_pop_id (s, 0), g->id);
    assert_int_equal (s_pop_id (s, 0), -1);     //  entity 0's gap
    assert_int_equal (s_pop_id (s, 4000), h->id);
    assert_int_equal (sched_slot (&h->sj), 5000);
    job_t *i = s_push (s, 50, 1, c, 10000);
    job_t *j = s_push (s, 50, 1, c, 10000);
    assert_int_equal (s_pop_id (s, 10000), i->id);
    assert_int_equal (sched_slot (&i->sj), 0);
    assert_int_equal (s_pop_id (s, 10000), -1);     //  the chat's gap
    assert_int_equal (s_pop_id (s, 12000), j->id);
    assert_int_equal (sched_slot (&j->sj), 13000);
    sched_destroy (&s);
}

//  Limits wait in terms of slots: when the lead grows, an entity waiting
//  for its gap is due that much sooner (its slot has not moved), so the
//  plan has no hole as long as the growth.
static void test_timers_follow_the_lead (void **state)
{
    (void) state;
    setup_t st = {0};
    st.entities[0].limit.gap_ms = 4000;
    st.entities[1].limit.gap_ms = 4000;
    st.rules[0] = (sched_chat_rule_t) {"src", "*", {3000, 0, 0}};
    st.config.chat_rule_count = 1;
    sched_t *s = s_new (&st, 2);
    uint32_t c = sched_chat_intern (s, "src/a", "src", "");
    uint32_t free_chat = sched_chat_intern (s, "other/a", "other", "");
    sched_set_lead (s, 1000);
    s_push (s, 50, 0, free_chat, 0);
    job_t *b = s_push (s, 50, 0, free_chat, 0);
    assert_int_equal (s_pop_id (s, 0), 0);      //  slot 1000
    assert_int_equal (sched_wakeup (s, 0), 4000);   //  slot 5000, due 4000
    sched_set_lead (s, 1600);
    assert_int_equal (sched_wakeup (s, 0), 3400);
    assert_int_equal (s_pop_id (s, 3399), -1);
    assert_int_equal (s_pop_id (s, 3400), b->id);
    assert_int_equal (b->sj.reserved_at, 5000);
    //  A chat's timer the same way.
    s_push (s, 50, 1, c, 10000);
    job_t *d = s_push (s, 50, 1, c, 10000);
    assert_int_equal (s_pop_id (s, 10000), 2);      //  slot 11600
    assert_int_equal (s_pop_id (s, 10000), -1);
    sched_set_lead (s, 2000);
    //  Entity 1's gap (4 s) binds before the chat's: slot 15600, due 13600.
    assert_int_equal (sched_wakeup (s, 10000), 13600);
    assert_int_equal (s_pop_id (s, 13600), d->id);
    assert_int_equal (d->sj.reserved_at, 15600);
    sched_destroy (&s);
}

//  Chatter is paced through the minute; a mention is not.
static void test_chatter_paced (void **state)
{
    (void) state;
    setup_t st = {0};
    st.config.paced_from = 30;
    st.entities[0].limit.per_minute = 4;
    sched_t *s = s_new (&st, 1);
    uint32_t c = sched_chat_intern (s, "src/a", "src", "group");
    s_push (s, 50, 0, c, 0);
    s_push (s, 50, 0, c, 0);
    assert_int_equal (s_pop_id (s, 1000), 0);
    //  A step is 15 s (60 s / 4).
    assert_int_equal (s_pop_id (s, 1000), -1);
    assert_int_equal (sched_wakeup (s, 1000), 16000);
    s_push (s, 10, 0, c, 0);
    assert_int_equal (s_pop_id (s, 1000), 2);
    //  Two went together: the next chatter waits two steps after the older.
    assert_int_equal (s_pop_id (s, 30999), -1);
    assert_int_equal (s_pop_id (s, 31000), 1);
    sched_destroy (&s);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_priority_then_fifo),
        cmocka_unit_test (test_entity_gap_and_wakeup),
        cmocka_unit_test (test_sliding_minute),
        cmocka_unit_test (test_hour_and_minute_together),
        cmocka_unit_test (test_chat_limit_no_head_of_line),
        cmocka_unit_test (test_entity_limit_no_head_of_line),
        cmocka_unit_test (test_global_limits_and_caps),
        cmocka_unit_test (test_not_before_and_expiry),
        cmocka_unit_test (test_remove),
        cmocka_unit_test (test_unreserve_gives_the_slot_back),
        cmocka_unit_test (test_pause_and_resume),
        cmocka_unit_test (test_rotation),
        cmocka_unit_test (test_forget_idle_keeps_turns),
        cmocka_unit_test (test_many_entities_and_chats_are_sparse),
        cmocka_unit_test (test_aging),
        cmocka_unit_test (test_restored_history_prevents_a_burst),
        cmocka_unit_test (test_weighted_turns),
        cmocka_unit_test (test_lead_and_posted_time),
        cmocka_unit_test (test_chatter_paced),
        cmocka_unit_test (test_slot_held_only_when_full),
        cmocka_unit_test (test_timers_follow_the_lead),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
