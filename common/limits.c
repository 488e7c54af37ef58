/*  limits - exact sliding-window rate limits. See limits.h. */
#include "common/limits.h"
#include "common/palloc.h"

#include <stdlib.h>

int limit_log_init (limit_log_t *self, const sched_limit_t *limit)
{
    self->limit = *limit;
    size_t capacity = 0;
    if (limit->gap_ms > 0)
        capacity = 1;
    if (limit->per_minute > 0 && (size_t) limit->per_minute > capacity)
        capacity = (size_t) limit->per_minute;
    if (limit->per_hour > 0 && (size_t) limit->per_hour > capacity)
        capacity = (size_t) limit->per_hour;
    self->capacity = capacity;
    self->count = self->head = 0;
    self->ring = NULL;
    if (capacity) {
        self->ring = pmalloc (capacity * sizeof (int64_t));
    }
    return 0;
}

void limit_log_destroy (limit_log_t *self)
{
    free (self->ring);
    self->ring = NULL;
    self->capacity = self->count = self->head = 0;
}

int64_t limit_log_entry (const limit_log_t *self, size_t i)
{
    return self->ring[(self->head + self->capacity - 1 - i) % self->capacity];
}

static inline int64_t s_max (int64_t a, int64_t b)
{
    return a > b ? a : b;
}

int64_t limit_log_next (const limit_log_t *self, int64_t now)
{
    int64_t at = now;
    const sched_limit_t *l = &self->limit;
    if (l->gap_ms > 0 && self->count >= 1)
        at = s_max (at, limit_log_entry (self, 0) + l->gap_ms);
    if (l->per_minute > 0 && self->count >= (size_t) l->per_minute)
        at = s_max (at, limit_log_entry (self, (size_t) l->per_minute - 1) + LIMITS_MINUTE_MS);
    if (l->per_hour > 0 && self->count >= (size_t) l->per_hour)
        at = s_max (at, limit_log_entry (self, (size_t) l->per_hour - 1) + LIMITS_HOUR_MS);
    return at;
}

int64_t limit_log_next_with (const limit_log_t *self, int64_t now, size_t pending, bool paced)
{
    const sched_limit_t *l = &self->limit;
    if (pending == 0) {
        int64_t at = limit_log_next (self, now);
        if (paced && l->per_minute > 0 && self->count >= 1) {
            //  Evenly spaced, but a post that went late (its slot taken by
            //  another budget) does not push every later one back: the next
            //  may catch up, to as little as half a step after it, while two
            //  steps separate every other post. A saturated budget keeps its
            //  rate instead of losing each delay.
            int64_t step = LIMITS_MINUTE_MS / l->per_minute;
            if (self->count >= 2)
                at = s_max (at, s_max (limit_log_entry (self, 0) + step / 2,
                                       limit_log_entry (self, 1) + 2 * step));
            else
                at = s_max (at, limit_log_entry (self, 0) + step);
        }
        return at;
    }
    //  A pending post takes its slot at some time >= now: a gap is not known
    //  to be kept until it is made, and each pending post uses one count.
    if (l->gap_ms > 0 || (paced && l->per_minute > 0))
        return LIMITS_NEVER;
    int64_t at = now;
    if (l->per_minute > 0) {
        if (pending >= (size_t) l->per_minute)
            return LIMITS_NEVER;
        size_t k = (size_t) l->per_minute - pending;     //  the k-th newest must be a minute old
        if (self->count >= k)
            at = s_max (at, limit_log_entry (self, k - 1) + LIMITS_MINUTE_MS);
    }
    if (l->per_hour > 0) {
        if (pending >= (size_t) l->per_hour)
            return LIMITS_NEVER;
        size_t k = (size_t) l->per_hour - pending;
        if (self->count >= k)
            at = s_max (at, limit_log_entry (self, k - 1) + LIMITS_HOUR_MS);
    }
    return at;
}

void limit_log_record (limit_log_t *self, int64_t at)
{
    if (!self->capacity)
        return;
    self->ring[self->head] = at;
    self->head = (self->head + 1) % self->capacity;
    if (self->count < self->capacity)
        self->count++;
}

bool limit_log_forget (limit_log_t *self, int64_t at)
{
    for (size_t i = 0; i < self->count; i++) {
        if (limit_log_entry (self, i) != at)
            continue;
        //  Move every newer entry one place older, then drop the newest slot.
        for (size_t j = i; j > 0; j--) {
            size_t to = (self->head + self->capacity - 1 - j) % self->capacity;
            size_t from = (self->head + self->capacity - j) % self->capacity;
            self->ring[to] = self->ring[from];
        }
        self->head = (self->head + self->capacity - 1) % self->capacity;
        self->count--;
        return true;
    }
    return false;
}

void limit_log_insert (limit_log_t *self, int64_t at)
{
    if (!self->capacity)
        return;
    //  Older than everything a full log keeps: it no longer counts.
    if (self->count == self->capacity && at < limit_log_entry (self, self->count - 1))
        return;
    limit_log_record (self, at);
    //  Back to its place, newest first.
    for (size_t i = 0; i + 1 < self->count; i++) {
        size_t newer = (self->head + 2 * self->capacity - 1 - i) % self->capacity;
        size_t older = (self->head + 2 * self->capacity - 2 - i) % self->capacity;
        if (self->ring[older] <= self->ring[newer])
            break;
        int64_t t = self->ring[older];
        self->ring[older] = self->ring[newer];
        self->ring[newer] = t;
    }
}
