/*  test_sched_props - the scheduler against a brute-force model, on thousands
    of random workloads and configurations.

    The model keeps every job and every kept reservation in plain arrays and
    decides eligibility by scanning them, sharing no code with the scheduler.
    For each workload it checks, at every step of simulated time:
      - the job dispatched is eligible and no eligible job is more urgent;
      - when the scheduler gives nothing, nothing is eligible;
      - nothing becomes eligible before the scheduler's wakeup time;
      - no job is ever dispatched while it is in flight;
    and at the end that no limit was exceeded in any window. A second set of
    saturating workloads checks that every limit's budget is used (>= 98%).
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/sched.h"

//  Workloads per run. Sanitizer builds run a fifth of them (each costs ~10x
//  there), so the suite stays proportionate on a busy machine;
//  PARLEY_PROPS_RUNS overrides both (e.g. a long soak: 100000).
#if defined(__SANITIZE_ADDRESS__)
#define RANDOM_RUNS 400
#define SATURATING_RUNS 40
#else
#define RANDOM_RUNS 2000
#define SATURATING_RUNS 200
#endif

//  Saturating workloads are a tenth of the random ones when overridden.
static unsigned s_runs (unsigned fallback, unsigned divisor)
{
    const char *env = getenv ("PARLEY_PROPS_RUNS");
    unsigned n = env && atoi (env) > 0 ? (unsigned) atoi (env) / divisor : fallback;
    return n ? n : 1;
}

#define MIN 60000
#define HOUR 3600000
#define MAX_JOBS 400
#define MAX_ENT 4
#define MAX_CHAT 5
#define MAX_LOG 20000

enum { QUEUED, INFLIGHT, DONE, GONE };

typedef struct {
    sched_job_t sj;
    int state;
    int64_t arrive;
    int64_t finish_at;      //  in flight until
    bool will_fail;
} mjob_t;

typedef struct {
    sched_limit_t limit;
    int64_t log[MAX_LOG];   //  kept reservations, ascending
    int count;
} msubject_t;

typedef struct {
    unsigned short rand[3];
    sched_config_t config;
    sched_entity_config_t ents[MAX_ENT];
    sched_chat_rule_t rules[2];
    int nent, nchat;
    uint32_t chat_index[MAX_CHAT];
    int chat_rule[MAX_CHAT];        //  -1 = no limit
    msubject_t ent[MAX_ENT], chat[MAX_CHAT], global;
    int ent_in_flight[MAX_ENT];
    int in_flight;
    mjob_t jobs[MAX_JOBS];
    int njobs;
    sched_t *s;
} world_t;

static long s_rand (world_t *w, long n)
{
    return n <= 0 ? 0 : (long) (erand48 (w->rand) * (double) n);
}

//  --- the model --------------------------------------------------------------------

static bool s_allowed (const msubject_t *m, int64_t t)
{
    const sched_limit_t *l = &m->limit;
    if (l->gap_ms > 0 && m->count > 0 && m->log[m->count - 1] > t - l->gap_ms)
        return false;
    int in_minute = 0, in_hour = 0;
    for (int i = m->count - 1; i >= 0 && m->log[i] > t - HOUR; i--) {
        in_hour++;
        if (m->log[i] > t - MIN)
            in_minute++;
    }
    if (l->per_minute > 0 && in_minute >= l->per_minute)
        return false;
    if (l->per_hour > 0 && in_hour >= l->per_hour)
        return false;
    return true;
}

static void s_record (msubject_t *m, int64_t t)
{
    assert_true (m->count < MAX_LOG);
    m->log[m->count++] = t;
}

static void s_forget (msubject_t *m, int64_t t)
{
    for (int i = m->count - 1; i >= 0; i--)
        if (m->log[i] == t) {
            memmove (&m->log[i], &m->log[i + 1], (size_t) (m->count - i - 1) * sizeof (int64_t));
            m->count--;
            return;
        }
    fail_msg ("reservation at %lld not in the model", (long long) t);
}

static bool s_eligible (world_t *w, const mjob_t *j, int64_t t)
{
    if (j->state != QUEUED || j->sj.not_before > t)
        return false;
    int e = j->sj.entity;
    int cap = (int) w->ents[e].max_in_flight;
    if (cap > 0 && w->ent_in_flight[e] >= cap)
        return false;
    if (w->config.global_max_in_flight > 0 && w->in_flight >= w->config.global_max_in_flight)
        return false;
    int c = -1;
    for (int i = 0; i < w->nchat; i++)
        if (w->chat_index[i] == j->sj.chat)
            c = i;
    return s_allowed (&w->ent[e], t) && s_allowed (&w->chat[c], t) && s_allowed (&w->global, t);
}

//  The most urgent eligible priority, or -1.
static int s_best (world_t *w, int64_t t)
{
    int best = -1;
    for (int i = 0; i < w->njobs; i++)
        if (s_eligible (w, &w->jobs[i], t) && (best < 0 || w->jobs[i].sj.priority < best))
            best = w->jobs[i].sj.priority;
    return best;
}

static void s_check_windows (const msubject_t *m, const char *what)
{
    const sched_limit_t *l = &m->limit;
    for (int i = 1; i < m->count; i++) {
        if (l->gap_ms && m->log[i] - m->log[i - 1] < l->gap_ms)
            fail_msg ("%s: gap of %lld ms < %lld", what, (long long) (m->log[i] - m->log[i - 1]),
                      (long long) l->gap_ms);
        if (l->per_minute && i >= l->per_minute && m->log[i] - m->log[i - l->per_minute] < MIN)
            fail_msg ("%s: %lld posts within 60 s", what, (long long) l->per_minute + 1);
        if (l->per_hour && i >= l->per_hour && m->log[i] - m->log[i - l->per_hour] < HOUR)
            fail_msg ("%s: %lld posts within an hour", what, (long long) l->per_hour + 1);
    }
}

//  --- random worlds ------------------------------------------------------------------------

static sched_limit_t s_random_limit (world_t *w, int how_tight)
{
    sched_limit_t l = {0, 0, 0};
    if (s_rand (w, 3) == 0)
        l.gap_ms = 1000 * (1 + s_rand (w, 5 * how_tight));
    if (s_rand (w, 2) == 0)
        l.per_minute = 1 + s_rand (w, 6);
    if (s_rand (w, 3) == 0)
        l.per_hour = 1 + s_rand (w, 30);
    return l;
}

static void s_build (world_t *w, unsigned seed)
{
    memset (w, 0, sizeof *w);
    w->rand[0] = (unsigned short) seed;
    w->rand[1] = (unsigned short) (seed >> 16);
    w->rand[2] = 0x5eed;
    w->nent = 1 + (int) s_rand (w, MAX_ENT);
    w->nchat = 1 + (int) s_rand (w, MAX_CHAT);
    for (int e = 0; e < w->nent; e++) {
        w->ents[e].limit = s_random_limit (w, 2);
        w->ents[e].max_in_flight = s_rand (w, 3) == 0 ? 1 + s_rand (w, 3) : 0;
        w->ent[e].limit = w->ents[e].limit;
    }
    if (s_rand (w, 3) == 0)
        w->config.global = s_random_limit (w, 1);
    w->global.limit = w->config.global;
    w->config.global_max_in_flight = s_rand (w, 4) == 0 ? 1 + s_rand (w, 4) : 0;
    w->rules[0] = (sched_chat_rule_t) {"s0", "group", s_random_limit (w, 2)};
    w->rules[1] = (sched_chat_rule_t) {"*", "private", s_random_limit (w, 1)};
    w->config.chat_rules = w->rules;
    w->config.chat_rule_count = 2;
    w->config.entities = w->ents;
    w->config.entity_count = (size_t) w->nent;
    w->s = sched_new (&w->config);
    for (int c = 0; c < w->nchat; c++) {
        char key[32];
        const char *source = s_rand (w, 2) ? "s0" : "s1";
        const char *kind = s_rand (w, 3) == 0 ? "private" : "group";
        snprintf (key, sizeof key, "%s/c%d", source, c);
        w->chat_index[c] = sched_chat_intern (w->s, key, source, kind);
        //  What the rules say, worked out independently of the scheduler.
        if (strcmp (source, "s0") == 0 && strcmp (kind, "group") == 0)
            w->chat[c].limit = w->rules[0].limit;
        else if (strcmp (kind, "private") == 0)
            w->chat[c].limit = w->rules[1].limit;
    }
    static const int priorities[] = {0, 10, 10, 50, 50, 50, 90};
    w->njobs = 50 + (int) s_rand (w, MAX_JOBS - 50);
    for (int i = 0; i < w->njobs; i++) {
        mjob_t *j = &w->jobs[i];
        j->arrive = s_rand (w, 20 * MIN);
        j->sj.priority = (uint8_t) priorities[s_rand (w, 7)];
        j->sj.entity = (uint16_t) s_rand (w, w->nent);
        j->sj.chat = w->chat_index[s_rand (w, w->nchat)];
        j->sj.not_before = j->arrive + (s_rand (w, 3) == 0 ? s_rand (w, 10000) : 0);
        if (s_rand (w, 10) == 0)
            j->sj.expires_at = j->arrive + 30000 + s_rand (w, 10 * MIN);
        j->will_fail = s_rand (w, 6) == 0;
        j->state = GONE;    //  not arrived yet
    }
}

static int s_chat_of (world_t *w, uint32_t chat)
{
    for (int i = 0; i < w->nchat; i++)
        if (w->chat_index[i] == chat)
            return i;
    return -1;
}

//  Runs one world to the end, checking every step.
static void s_simulate (world_t *w, unsigned seed)
{
    int64_t now = 0;
    for (int steps = 0; steps < 200000; steps++) {
        //  Arrivals and completions due now.
        for (int i = 0; i < w->njobs; i++) {
            mjob_t *j = &w->jobs[i];
            if (j->state == GONE && j->arrive <= now && j->sj.where == SCHED_NOWHERE
                && j->finish_at == 0) {
                j->state = QUEUED;
                sched_push (w->s, &j->sj, now);
            }
            if (j->state == INFLIGHT && j->finish_at <= now) {
                int e = j->sj.entity, c = s_chat_of (w, j->sj.chat);
                sched_done (w->s, &j->sj, now);
                w->ent_in_flight[e]--;
                w->in_flight--;
                if (j->will_fail) {
                    //  Failed before posting: the slot comes back, the job goes again.
                    s_forget (&w->ent[e], j->sj.reserved_at);
                    s_forget (&w->chat[c], j->sj.reserved_at);
                    s_forget (&w->global, j->sj.reserved_at);
                    sched_unreserve (w->s, &j->sj, now);
                    j->will_fail = false;
                    j->state = QUEUED;
                    j->sj.not_before = now + 2000;
                    sched_push (w->s, &j->sj, now);
                }
                else
                    j->state = DONE;
            }
        }
        sched_job_t *x;
        while ((x = sched_pop_expired (w->s, now))) {
            mjob_t *j = (mjob_t *) x;
            if (j->state != QUEUED || j->sj.expires_at > now)
                fail_msg ("seed %u: expired a job that was not queued or not expired", seed);
            j->state = DONE;
        }
        //  Dispatch everything eligible now.
        while ((x = sched_pop (w->s, now))) {
            mjob_t *j = (mjob_t *) x;
            if (j->state == INFLIGHT)
                fail_msg ("seed %u: job dispatched while in flight", seed);
            if (!s_eligible (w, j, now))
                fail_msg ("seed %u t=%lld: dispatched a job that is not eligible", seed, (long long) now);
            int best = s_best (w, now);
            if (j->sj.priority != best)
                fail_msg ("seed %u t=%lld: dispatched priority %d while %d was eligible", seed,
                          (long long) now, j->sj.priority, best);
            int e = j->sj.entity, c = s_chat_of (w, j->sj.chat);
            s_record (&w->ent[e], now);
            s_record (&w->chat[c], now);
            s_record (&w->global, now);
            w->ent_in_flight[e]++;
            w->in_flight++;
            j->state = INFLIGHT;
            j->finish_at = now + 1 + s_rand (w, 30000);
        }
        if (s_best (w, now) >= 0)
            fail_msg ("seed %u t=%lld: a job is eligible but nothing was dispatched", seed, (long long) now);
        //  Now and then the idle pairs' state is freed, as the broker does:
        //  nothing above may notice.
        if (s_rand (w, 4) == 0)
            sched_forget_idle (w->s);
        //  The next moment anything can happen.
        int64_t next = sched_wakeup (w->s, now);
        for (int i = 0; i < w->njobs; i++) {
            mjob_t *j = &w->jobs[i];
            if (j->state == GONE && j->arrive > now && j->arrive < next)
                next = j->arrive;
            if (j->state == INFLIGHT && j->finish_at < next)
                next = j->finish_at;
        }
        if (next == SCHED_NEVER)
            break;
        if (next <= now)
            fail_msg ("seed %u: time does not advance (%lld)", seed, (long long) now);
        //  Nothing may become eligible before then, or the scheduler slept too long.
        int64_t probe = now + 1 + s_rand (w, next - now - 1);
        if (probe < next && s_best (w, probe) >= 0)
            fail_msg ("seed %u: a job was eligible at %lld, before the wakeup at %lld", seed,
                      (long long) probe, (long long) next);
        now = next;
    }
    for (int i = 0; i < w->njobs; i++)
        if (w->jobs[i].state != DONE)
            fail_msg ("seed %u: job %d never finished (state %d)", seed, i, w->jobs[i].state);
    char what[64];
    for (int e = 0; e < w->nent; e++) {
        snprintf (what, sizeof what, "seed %u entity %d", seed, e);
        s_check_windows (&w->ent[e], what);
    }
    for (int c = 0; c < w->nchat; c++) {
        snprintf (what, sizeof what, "seed %u chat %d", seed, c);
        s_check_windows (&w->chat[c], what);
    }
    snprintf (what, sizeof what, "seed %u global", seed);
    s_check_windows (&w->global, what);
    sched_counts_t counts;
    sched_counts (w->s, &counts);
    assert_int_equal (counts.queued, 0);
    assert_int_equal (counts.in_flight, 0);
}

static void test_random_workloads (void **state)
{
    (void) state;
    world_t *w = malloc (sizeof *w);
    int dispatched = 0;
    for (unsigned seed = 1, runs = s_runs (RANDOM_RUNS, 1); seed <= runs; seed++) {
        s_build (w, seed);
        s_simulate (w, seed);
        dispatched += w->global.count;
        sched_destroy (&w->s);
    }
    printf ("2000 random workloads, %d dispatches checked\n", dispatched);
    free (w);
}

//  --- saturating demand: budgets are used ---------------------------------------------------

//  Greedy count of a single limit over `horizon`: the most it can ever allow.
static int s_capacity (const sched_limit_t *l, int64_t horizon)
{
    static msubject_t m;
    memset (&m, 0, sizeof m);
    m.limit = *l;
    int64_t t = 0;
    while (t < horizon && m.count < MAX_LOG) {
        if (s_allowed (&m, t)) {
            s_record (&m, t);
            continue;
        }
        t++;
        //  Jump to the next second to keep this cheap; limits are whole seconds here.
        t = (t + 999) / 1000 * 1000;
    }
    return m.count;
}

//  Keeps `depth` jobs queued for every (entity, chat) and counts dispatches.
static int s_saturate (sched_config_t *config, uint32_t nchat, const char **sources, int64_t horizon,
                       int *per_entity)
{
    sched_t *s = sched_new (config);
    uint32_t chats[8];
    for (uint32_t c = 0; c < nchat; c++) {
        char key[32];
        snprintf (key, sizeof key, "%s/c%u", sources[c], c);
        chats[c] = sched_chat_intern (s, key, sources[c], "group");
    }
    size_t cells = config->entity_count * nchat;
    int depth = 3;
    sched_job_t *pool = calloc (cells * (size_t) depth, sizeof (sched_job_t));
    size_t used = 0;
    int total = 0;
    for (size_t e = 0; e < config->entity_count; e++)
        for (uint32_t c = 0; c < nchat; c++)
            for (int k = 0; k < depth; k++) {
                sched_job_t *j = &pool[used++];
                j->priority = 50;
                j->entity = (uint16_t) e;
                j->chat = chats[c];
                sched_push (s, j, 0);
            }
    int64_t now = 0;
    while (now < horizon) {
        sched_job_t *j;
        int popped = 0;
        while ((j = sched_pop (s, now)) && ++popped) {
            total++;
            per_entity[j->entity]++;
            sched_done (s, j, now);
            //  Demand never runs out: a new job for the same pair. The one
            //  just done is the only record free for it: every other one is
            //  still queued in the scheduler and must not be touched.
            sched_job_t *next = j;
            uint16_t entity = j->entity;
            uint32_t chat = j->chat;
            memset (next, 0, sizeof *next);
            next->entity = entity;
            next->chat = chat;
            next->priority = 50;
            sched_push (s, next, now);
        }
        int64_t next = sched_wakeup (s, now);
        if (next <= now && !popped)
            fail_msg ("the scheduler wakes at %lld but has nothing to give", (long long) next);
        now = next;
    }
    sched_destroy (&s);
    free (pool);
    return total;
}

static void test_budgets_used_under_saturation (void **state)
{
    (void) state;
    world_t *w = malloc (sizeof *w);
    const int64_t horizon = 3 * HOUR;
    const char *plain[] = {"s1", "s1", "s1", "s1"};
    const char *limited[] = {"s0", "s0", "s0", "s0"};
    double worst = 1.0;
    for (unsigned seed = 1, runs = s_runs (SATURATING_RUNS, 10); seed <= runs; seed++) {
        memset (w, 0, sizeof *w);
        w->rand[0] = (unsigned short) seed;
        w->rand[2] = 0xb00;
        sched_config_t config = {0};
        sched_entity_config_t ents[MAX_ENT] = {{{0, 0, 0}, 0}};
        int per_entity[MAX_ENT] = {0};
        int kind = (int) (seed % 3);
        int expected = 0, got = 0;
        if (kind == 0) {
            //  Each entity's own limit binds: capacity is the sum of theirs.
            config.entity_count = 1 + (size_t) s_rand (w, MAX_ENT);
            for (size_t e = 0; e < config.entity_count; e++) {
                do
                    ents[e].limit = s_random_limit (w, 2);
                while (!ents[e].limit.gap_ms && !ents[e].limit.per_minute && !ents[e].limit.per_hour);
                expected += s_capacity (&ents[e].limit, horizon);
            }
            config.entities = ents;
            got = s_saturate (&config, 2, plain, horizon, per_entity);
        }
        else if (kind == 1) {
            //  Per-chat limits bind: every chat's budget is used.
            sched_chat_rule_t rule = {"s0", "group", s_random_limit (w, 2)};
            if (!rule.limit.gap_ms && !rule.limit.per_minute && !rule.limit.per_hour)
                rule.limit.per_minute = 2;
            config.chat_rules = &rule;
            config.chat_rule_count = 1;
            config.entity_count = 2;
            config.entities = ents;
            uint32_t nchat = 1 + (uint32_t) s_rand (w, 4);
            expected = (int) nchat * s_capacity (&rule.limit, horizon);
            got = s_saturate (&config, nchat, limited, horizon, per_entity);
        }
        else {
            //  The global limit binds.
            do
                config.global = s_random_limit (w, 1);
            while (!config.global.gap_ms && !config.global.per_minute && !config.global.per_hour);
            config.entity_count = 3;
            config.entities = ents;
            expected = s_capacity (&config.global, horizon);
            got = s_saturate (&config, 3, plain, horizon, per_entity);
        }
        double ratio = (double) got / (double) expected;
        if (ratio < worst)
            worst = ratio;
        if (ratio < 0.98 || got > expected)
            fail_msg ("seed %u (kind %d): %d dispatches, budget %d (%.3f)", seed, kind, got,
                      expected, ratio);
    }
    printf ("200 saturating workloads: worst budget use %.4f\n", worst);
    free (w);
}

//  Seed 000's ten entities under saturating demand reach the ceiling of their
//  limits and never more. (The seed states 14 posts a minute; its listed
//  limits, 1+2+1+1+1+1+2+1+2+1, add up to 13, and 13 is what they allow.)
static void test_seed_000_ceiling (void **state)
{
    (void) state;
    static const int per_minute[] = {1, 2, 1, 1, 1, 1, 2, 1, 2, 1};
    sched_entity_config_t ents[10];
    memset (ents, 0, sizeof ents);
    for (int e = 0; e < 10; e++)
        ents[e].limit.per_minute = per_minute[e];
    ents[0].limit.gap_ms = 45000;       //  the philosopher: 1 every 45 s ...
    ents[0].limit.per_hour = 60;        //  ... its hourly cap does not bind in an hour at 1/min
    sched_config_t config = {0};
    config.entities = ents;
    config.entity_count = 10;
    config.global.per_minute = 50;      //  maxTotalMessagesPerMinute from the seed
    int per_entity[10] = {0};
    const char *sources[] = {"kv", "kv", "kv"};
    int total = s_saturate (&config, 3, sources, HOUR, per_entity);
    int ceiling = 0;
    for (int e = 0; e < 10; e++)
        ceiling += per_minute[e] * 60;
    printf ("seed 000: %d posts in an hour (limits allow %d):", total, ceiling);
    for (int e = 0; e < 10; e++)
        printf (" %d", per_entity[e]);
    printf ("\n");
    assert_int_equal (ceiling, 780);
    assert_int_equal (total, ceiling);
    for (int e = 0; e < 10; e++)
        assert_true (per_entity[e] <= per_minute[e] * 60);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_random_workloads),
        cmocka_unit_test (test_budgets_used_under_saturation),
        cmocka_unit_test (test_seed_000_ceiling),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
