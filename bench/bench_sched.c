/*  bench_sched - cost of the scheduler's push and pop against queue depth.

    Usage: bench_sched [MAX_DEPTH]     (default 1000000)

    For depths 10^3 .. MAX_DEPTH it fills the queue (10 entities, 1000 chats,
    mixed priorities, a rate limit on some entities and chats), then times
    pops of the whole queue. Prints ns per push and per pop: with O(log n)
    dispatch they grow by a small constant per tenfold depth.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker/sched.h"

static double s_seconds (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static void s_run (size_t depth)
{
    sched_entity_config_t ents[10];
    memset (ents, 0, sizeof ents);
    //  Limits that never bind within the run, so every job can be popped,
    //  but the limit logs are still consulted on every dispatch.
    for (int e = 0; e < 10; e += 3)
        ents[e].limit.per_hour = 100000000;
    sched_chat_rule_t rule = {"*", "*", {0, 100000000, 0}};
    sched_config_t config = {{0, 0, 0}, 0, 0, 10, ents, 1, &rule};
    sched_t *s = sched_new (&config);
    uint32_t chats[1000];
    for (int c = 0; c < 1000; c++) {
        char key[32];
        snprintf (key, sizeof key, "bench/c%d", c);
        chats[c] = sched_chat_intern (s, key, "bench", "group");
    }
    sched_job_t *jobs = calloc (depth, sizeof (sched_job_t));
    static const uint8_t priorities[] = {10, 50, 50, 50, 90};
    double t0 = s_seconds ();
    for (size_t i = 0; i < depth; i++) {
        jobs[i].priority = priorities[i % 5];
        jobs[i].entity = (uint16_t) (i % 10);
        jobs[i].chat = chats[(i / 10) % 1000];
        sched_push (s, &jobs[i], 1000);
    }
    double t1 = s_seconds ();
    size_t popped = 0;
    while (sched_pop (s, 2000))
        popped++;
    double t2 = s_seconds ();
    printf ("%9zu queued   push %6.0f ns   pop %6.0f ns   (%zu popped)\n", depth,
            (t1 - t0) * 1e9 / (double) depth, (t2 - t1) * 1e9 / (double) popped, popped);
    sched_destroy (&s);
    free (jobs);
}

int main (int argc, char **argv)
{
    size_t max = argc > 1 ? strtoul (argv[1], NULL, 10) : 1000000;
    printf ("sched: %zu bytes of scheduler state per job (sched_job_t)\n", sizeof (sched_job_t));
    for (size_t depth = 1000; depth <= max; depth *= 10)
        s_run (depth);
    return 0;
}
