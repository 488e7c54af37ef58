/*  limits - exact sliding-window rate limits.

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

typedef struct {
    sched_limit_t limit;
    int64_t *ring;      //  reservation times; newest at head - 1
    size_t capacity;
    size_t count;
    size_t head;
} limit_log_t;

//  Returns -1 when out of memory.
int limit_log_init (limit_log_t *self, const sched_limit_t *limit);
void limit_log_destroy (limit_log_t *self);

//  True when the limit restricts anything at all.
static inline bool limit_log_active (const limit_log_t *self)
{
    return self->capacity > 0;
}

//  Earliest time >= now at which one more reservation is allowed.
int64_t limit_log_next (const limit_log_t *self, int64_t now);

//  Records a reservation at `at` (times must not decrease).
void limit_log_record (limit_log_t *self, int64_t at);

//  Gives back the reservation made at `at`, if the log still holds it.
void limit_log_forget (limit_log_t *self, int64_t at);

//  The i-th newest reservation (0 = newest); i < count.
int64_t limit_log_entry (const limit_log_t *self, size_t i);

#endif
