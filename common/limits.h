/*  limits - exact sliding-window rate limits, shared by the broker (which
    reserves a slot when it dispatches, so it does not dispatch more than can
    be posted) and the sink (which holds every post until its slot, and
    records the slot when the post is made: that is where the platform
    counts).

    A limit has up to three parts: a minimum gap between reservations, at
    most N in any 60-second window and at most M in any 3600-second window.
    The log keeps the most recent max(N, M, 1) reservation times, which is
    all that is needed to answer exactly: a reservation at t is allowed when
    the newest is at least gap ago, the N-th newest at least 60 s ago and the
    M-th newest at least 3600 s ago. So no half-open window [s, s + 60 s)
    ever holds more than N reservations: no double bursts at window edges,
    as fixed windows allow.
*/
#ifndef LIMITS_H_INCLUDED
#define LIMITS_H_INCLUDED

#include "common/pconfig.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LIMITS_MINUTE_MS 60000
#define LIMITS_HOUR_MS   3600000

typedef struct {
    int64_t gap_ms;     //  minimum time between two reservations; 0 = none
    int64_t per_minute; //  at most this many in any 60 s window; 0 = unlimited
    int64_t per_hour;   //  at most this many in any 3600 s window; 0 = unlimited
} sched_limit_t;

//  A rate from the configuration (seconds, counts) as a limit log counts it.
static inline sched_limit_t limits_of_rate (const pcfg_rate_t *rate)
{
    return (sched_limit_t) {(int64_t) (rate->min_seconds_between_posts * 1000),
                            rate->max_posts_per_minute, rate->max_posts_per_hour};
}

//  The configuration's global limits (botSettings).
static inline sched_limit_t limits_global (const pcfg_t *c)
{
    return (sched_limit_t) {(int64_t) (c->min_seconds_between_any_post * 1000),
                            c->max_total_messages_per_minute, c->max_total_messages_per_hour};
}

typedef struct {
    sched_limit_t limit;
    int64_t *ring;      //  reservation times; newest at head - 1
    size_t capacity;
    size_t count;
    size_t head;
} limit_log_t;

//  Returns 0 (memory runs out only by aborting: common/palloc.h).
int limit_log_init (limit_log_t *self, const sched_limit_t *limit);
void limit_log_destroy (limit_log_t *self);

//  True when the limit restricts anything at all.
static inline bool limit_log_active (const limit_log_t *self)
{
    return self->capacity > 0;
}

//  Earliest time >= now at which one more reservation is allowed.
int64_t limit_log_next (const limit_log_t *self, int64_t now);

#define LIMITS_NEVER INT64_MAX
//  Pacing applies to count limits whose window is at most this long.
#define LIMITS_PACE_WINDOW_MS LIMITS_MINUTE_MS

//  The same, with `pending` posts under way whose time is not known yet
//  (they will be recorded when they are made, at a time >= now): they
//  occupy slots, so LIMITS_NEVER while they fill the limit. With `paced`,
//  count limits of a minute also space posts a step (window / count) apart
//  on average (two steps between every other post, at least half a step
//  between neighbours, so one late post does not delay all later ones), so a
//  saturated budget is spent evenly through the window instead of in bursts
//  at its start (used for replies that are not urgent).
int64_t limit_log_next_with (const limit_log_t *self, int64_t now, size_t pending, bool paced);

//  Records a reservation at `at` (times must not decrease).
void limit_log_record (limit_log_t *self, int64_t at);

//  Gives back the reservation made at `at`, if the log still holds it
//  (returns whether it did).
bool limit_log_forget (limit_log_t *self, int64_t at);

//  Records a reservation at `at`, which may be older than the newest: it
//  takes its place in time order (used when a reservation moves to the time
//  the post was really made).
void limit_log_insert (limit_log_t *self, int64_t at);

//  The i-th newest reservation (0 = newest); i < count.
int64_t limit_log_entry (const limit_log_t *self, size_t i);

#endif
