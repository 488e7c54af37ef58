/*  jobs_deadlines - every job that is not QUEUED, by its deadline (its lease).

    A binary min-heap of (key, flight record) pairs. The key is kept in the
    entry, so comparing two never reads the jobs: with tens of thousands of
    jobs in flight, the heap's comparisons were cache misses into job
    records and a tenth of the broker's time. An entry's position is kept in
    the job's small flight record, not in the job.

    Keys are lazy. A job's deadline only moves later while it is in flight
    (its worker releases it, the sink commits it, a renewal comes), and it
    nearly always finishes long before even its first deadline. So a later
    deadline is only written in the flight record; its entry keeps the
    earlier key until that key comes due, when the entry is given the job's
    real deadline and sinks back. An earlier deadline moves the entry up at
    once, so the heap's top is never later than the earliest deadline: the
    broker may wake a little early, never late.
*/
#include "broker/jobs_int.h"
#include "common/palloc.h"

static inline void s_place (bdeadlines_t *self, size_t pos, bdeadline_t entry)
{
    self->items[pos] = entry;
    entry.flight->pos_deadline = (uint32_t) pos;
}

static void s_sift_up (bdeadlines_t *self, size_t pos)
{
    bdeadline_t entry = self->items[pos];
    while (pos > 0) {
        size_t parent = (pos - 1) / 2;
        if (self->items[parent].at <= entry.at)
            break;
        s_place (self, pos, self->items[parent]);
        pos = parent;
    }
    s_place (self, pos, entry);
}

static void s_sift_down (bdeadlines_t *self, size_t pos)
{
    bdeadline_t entry = self->items[pos];
    for (;;) {
        size_t child = 2 * pos + 1;
        if (child >= self->size)
            break;
        if (child + 1 < self->size && self->items[child + 1].at < self->items[child].at)
            child++;
        if (self->items[child].at >= entry.at)
            break;
        s_place (self, pos, self->items[child]);
        pos = child;
    }
    s_place (self, pos, entry);
}

static bool s_contains (const bdeadlines_t *self, const bjob_t *job)
{
    uint32_t pos = job->flight ? job->flight->pos_deadline : HEAP_NONE;
    return pos < self->size && self->items[pos].flight == job->flight;
}

void bdeadlines_destroy (bdeadlines_t *self)
{
    free (self->items);
    self->items = NULL;
    self->size = self->capacity = 0;
}

void bdeadlines_set (bdeadlines_t *self, bjob_t *job, int64_t at)
{
    job->flight->deadline = at;
    if (s_contains (self, job)) {
        bdeadline_t *entry = &self->items[job->flight->pos_deadline];
        if (at < entry->at) {
            entry->at = at;
            s_sift_up (self, job->flight->pos_deadline);
        }
        return;
    }
    self->items = pgrow (self->items, &self->capacity, self->size + 1, sizeof (bdeadline_t));
    self->items[self->size] = (bdeadline_t) {at, job->flight};
    s_sift_up (self, self->size++);
}

void bdeadlines_remove (bdeadlines_t *self, bjob_t *job)
{
    if (!s_contains (self, job))
        return;
    size_t pos = job->flight->pos_deadline;
    job->flight->pos_deadline = HEAP_NONE;
    if (pos == --self->size)
        return;
    self->items[pos] = self->items[self->size];
    //  The moved entry may belong above or below its new place.
    if (pos > 0 && self->items[pos].at < self->items[(pos - 1) / 2].at)
        s_sift_up (self, pos);
    else
        s_sift_down (self, pos);
}

bjob_t *bdeadlines_due (bdeadlines_t *self, int64_t now)
{
    while (self->size && self->items[0].at <= now) {
        bjob_t *job = self->items[0].flight->job;
        if (job->flight->deadline <= now) {
            bdeadlines_remove (self, job);
            return job;
        }
        //  Its deadline moved later: the entry takes it now.
        self->items[0].at = job->flight->deadline;
        s_sift_down (self, 0);
    }
    return NULL;
}

int64_t bdeadlines_next (const bdeadlines_t *self)
{
    return self->size ? self->items[0].at : INT64_MAX;
}
