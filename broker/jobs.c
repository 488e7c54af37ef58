/*  jobs - the broker's jobs and the life of each one. See jobs.h; what is
    stored of them, and how they come back after a restart, is jobs_store.c;
    what the sink reports of them (COMMIT, OUTCOME) is jobs_sink.c. */
#include "broker/jobs_int.h"
#include "broker/workers.h"
#include "common/palloc.h"
#include "common/pbackoff.h"
#include "common/pkey.h"
#include "common/plog.h"
#include "common/pseen.h"
#include "common/ptable.h"

#include <inttypes.h>
#include <sodium.h>
#include <string.h>

#define HISTORY_MAX     8000    //  bytes of attempt history kept per job

//  --- tables ----------------------------------------------------------------------

static const void *s_id_of (const void *item)
{
    return &((const bjob_t *) item)->id;
}

static bool s_id_match (const void *item, const void *key)
{
    return ((const bjob_t *) item)->id == *(const uint64_t *) key;
}

static const void *s_pair_of (const void *item)
{
    return ((const bjob_t *) item)->pair;
}

static bool s_pair_match (const void *item, const void *key)
{
    return strcmp (((const bjob_t *) item)->pair, key) == 0;
}

bjobs_t *bjobs_new (const pcfg_t *config, sched_t *sched, store_t *store, bdlq_t *dlq)
{
    bjobs_t *self = pcalloc (1, sizeof *self);
    self->config = config;
    self->sched = sched;
    self->store = store;
    self->dlq = dlq;
    self->by_id = ptable_new (ptable_hash_u64, s_id_of, s_id_match);
    self->by_pair = ptable_new (ptable_hash_str, s_pair_of, s_pair_match);
    self->finished = pseen_new ((size_t) config->dedupe_max_keys, config->dedupe_retention_s * 1000);
    return self;
}

void bjobs__job_free (bjob_t *job)
{
    free (job->history);
    free (job->flight);
    free (job);
}

void bjobs_destroy (bjobs_t **self_p)
{
    bjobs_t *self = *self_p;
    if (!self)
        return;
    size_t cursor = 0;
    bjob_t *job;
    while ((job = ptable_next (self->by_id, &cursor)))
        bjobs__job_free (job);
    ptable_destroy (&self->by_id);
    ptable_destroy (&self->by_pair);
    pseen_destroy (&self->finished);
    bdeadlines_destroy (&self->deadlines);
    free (self);
    *self_p = NULL;
}

//  --- small parts ----------------------------------------------------------------------

//  A fencing token nobody can guess: random, never 0.
static uint64_t s_token (bjobs_t *self)
{
    uint64_t token = 0;
    while (token == 0) {
        if (self->tokens_left == 0) {
            randombytes_buf (self->tokens, sizeof self->tokens);
            self->tokens_left = TOKENS_BUFFERED;
        }
        token = self->tokens[--self->tokens_left];
    }
    return token;
}

//  Every state change goes through here, so the counts per state stay right.
void bjobs__set_state (bjobs_t *self, bjob_t *job, int state)
{
    if (job->state)
        self->state_count[job->state]--;
    job->state = (uint8_t) state;
    if (state)
        self->state_count[state]++;
}

bjob_flight_t *bjobs__flight (bjob_t *job)
{
    if (!job->flight) {
        job->flight = pcalloc (1, sizeof (bjob_flight_t));
        job->flight->job = job;
        job->flight->pos_deadline = HEAP_NONE;
    }
    return job->flight;
}

//  Out of any worker's hands and out of the deadlines: the job is queued or finished.
static void s_land (bjobs_t *self, bjob_t *job)
{
    if (!job->flight)
        return;
    bworkers_unlink (job);
    bdeadlines_remove (&self->deadlines, job);
    free (job->flight);
    job->flight = NULL;
}

void bjobs__set_deadline (bjobs_t *self, bjob_t *job, int64_t at)
{
    bdeadlines_set (&self->deadlines, job, at);
}

const char *bjobs__entity (bjobs_t *self, const bjob_t *job)
{
    return pcfg_entity (self->config, job->sj.entity)->id;
}

const char *bjobs_entity (bjobs_t *self, const bjob_t *job)
{
    return bjobs__entity (self, job);
}

void bjobs__history (bjob_t *job, int64_t now, const char *what)
{
    char line[700];
    int n = snprintf (line, sizeof line, "%s%" PRId64 " attempt %u: %s", job->history ? "\n" : "",
                      now, job->attempt, what);
    size_t add = n < 0 ? 0 : (size_t) n >= sizeof line ? sizeof line - 1 : (size_t) n;
    size_t old = job->history ? strlen (job->history) : 0;
    //  The last attempts matter most: start again when it grows too long.
    if (old + add > HISTORY_MAX) {
        free (job->history);
        job->history = NULL;
        old = 0;
        if (line[0] == '\n')
            memmove (line, line + 1, add--);
    }
    job->history = prealloc (job->history, old + add + 1);
    memcpy (job->history + old, line, add);
    job->history[old + add] = 0;
}

//  --- the end of a job -----------------------------------------------------------------

void bjobs__finish (bjobs_t *self, bjob_t *job, int64_t now)
{
    sched_done (self->sched, &job->sj, now);
    sched_remove (self->sched, &job->sj);
    s_land (self, job);
    bjobs__set_state (self, job, 0);
    if (self->store)
        store_job_gone (self->store, &job->anchor, job->id);
    ptable_remove (self->by_id, &job->id);
    ptable_remove (self->by_pair, job->pair);
    bjobs__remember_done (self, pkey_fp (job->pair, job->pair_len), now);
    bjobs__job_free (job);
}

void bjobs__dead_letter (bjobs_t *self, bjob_t *job, const char *reason, bool maybe_posted,
                         int64_t now)
{
    bdead_t entry = {0,
                     (char *) bjob_msg_key (job),
                     (char *) bjobs__entity (self, job),
                     (char *) sched_chat_key (self->sched, job->sj.chat),
                     (char *) sched_chat_kind (self->sched, job->sj.chat),
                     job->priority,
                     maybe_posted,
                     job->created_ms,
                     now,
                     job->attempt,
                     (char *) reason,
                     job->history ? job->history : "",
                     bjob_payload (job)};
    bdlq_add (self->dlq, &entry);
    self->counters.dead++;
    if (plog_limiter_allow (&self->dead_log, 20))
        plog_warn ("dead-lettered %s for %s after %u attempt(s)%s: %s", entry.msg_key, entry.entity,
                   job->attempt, maybe_posted ? " (the reply may have been posted)" : "", reason);
    bjobs__finish (self, job, now);
}

//  Queues the job again, eligible at `not_before`.
static void s_requeue (bjobs_t *self, bjob_t *job, int64_t not_before, int64_t now)
{
    //  Out of any worker's hands and out of flight first (a job the sink
    //  committed may still be with its worker, whose RELEASE is on its way).
    s_land (self, job);
    sched_done (self->sched, &job->sj, now);
    bjobs__set_state (self, job, JOB_QUEUED);
    job->alone = false;
    job->sj.not_before = not_before;
    sched_push (self->sched, &job->sj, now);
    bjobs__persist (self, job);
}

//  An attempt failed by the job's own fault: back off and retry, or
//  dead-letter it after maxRetries.
static void s_failed (bjobs_t *self, bjob_t *job, const char *reason, int64_t retry_after,
                      int64_t now)
{
    bjobs__history (job, now, reason);
    job->failures++;
    if ((int64_t) job->failures > self->config->max_retries) {
        char why[800];
        snprintf (why, sizeof why, "gave up after %u failed attempts; last: %s", job->failures, reason);
        bjobs__dead_letter (self, job, why, false, now);
        return;
    }
    int64_t delay = pbackoff_delay (self->config->retry_base_ms, self->config->retry_max_ms,
                                    job->failures);
    if (retry_after > delay)
        delay = retry_after;
    s_requeue (self, job, now + delay, now);
    self->counters.retried++;
}

//  --- submitting ------------------------------------------------------------------------------

static int64_t s_response_delay (const pcfg_t *c, int priority)
{
    const pcfg_delay_t *d = priority < c->urgent_below ? &c->delay_urgent
                            : priority >= c->low_from  ? &c->delay_low
                                                       : &c->delay_normal;
    if (d->max_ms <= d->min_ms)
        return d->min_ms;
    return d->min_ms + (int64_t) ((uint64_t) random () % (uint64_t) (d->max_ms - d->min_ms + 1));
}

//  How late a reply may come, in seconds (0 = no limit): the entity's or the
//  queue's maxAgeSeconds, and the class's own shorter limit.
static int64_t s_max_age (const pcfg_t *c, const pcfg_entity_t *e, int priority)
{
    int64_t all = e->max_age_seconds ? e->max_age_seconds : c->max_age_seconds;
    int64_t cls = priority < c->urgent_below ? c->max_age_urgent_s
                  : priority >= c->low_from  ? c->max_age_low_s
                                             : c->max_age_normal_s;
    if (!all)
        return cls;
    return cls && cls < all ? cls : all;
}

void bjobs__chat_source (const char *chat, char *source, size_t len)
{
    const char *slash = strchr (chat, '/');
    size_t n = slash ? (size_t) (slash - chat) : strlen (chat);
    if (n >= len)
        n = len - 1;
    memcpy (source, chat, n);
    source[n] = 0;
}

//  A job record: the struct, then the pair key, then the payload, in one block.
bjob_t *bjobs__job_new (uint64_t id, const char *entity, const char *msg_key, const void *payload,
                          uint32_t payload_size)
{
    size_t elen = strlen (entity), klen = strlen (msg_key);
    //  The strings start where the struct's fields end, not after its padding.
    bjob_t *job = pcalloc (1, offsetof (bjob_t, pair) + elen + 1 + klen + 1 + payload_size);
    job->id = id;
    memcpy (job->pair, entity, elen);
    job->pair[elen] = PKEY_SEP;
    memcpy (job->pair + elen + 1, msg_key, klen + 1);
    job->msg_off = (uint16_t) (elen + 1);
    job->pair_len = (uint16_t) (elen + 1 + klen);
    if (payload_size)
        memcpy (job->pair + job->pair_len + 1, payload, payload_size);
    job->payload_size = payload_size;
    return job;
}

bjobs_accept_t bjobs_accept (bjobs_t *self, const proto_job_spec_t *spec, int64_t now,
                             const char **why)
{
    const pcfg_t *c = self->config;
    self->counters.submitted++;
    int entity = pcfg_entity_index (c, spec->entity);
    *why = entity < 0     ? "unknown entity"
           : !*spec->msg_key ? "empty msg_key"
           : !*spec->chat    ? "empty chat"
           : spec->created_ms > PROTO_MAX_TIME_MS ? "created_ms after the year 9999"
                             : NULL;
    if (*why) {
        self->counters.rejected++;
        return BJOBS_INVALID;
    }
    char stack[1100];
    size_t plen = pkey_pair (stack, sizeof stack, spec->entity, spec->msg_key);
    if (ptable_lookup (self->by_pair, stack)
        || pseen_has (self->finished, pkey_fp (stack, plen))) {
        self->counters.duplicates++;
        return BJOBS_DUPLICATE;
    }
    if (spec->priority >= 99) {
        //  Priority 99 means "do not answer": a counted skip, remembered as
        //  finished so a resubmission is a duplicate.
        self->counters.accepted++;
        self->counters.skipped++;
        bjobs__remember_done (self, pkey_fp (stack, plen), now);
        return BJOBS_ACCEPTED;
    }
    sched_counts_t counts;
    sched_counts (self->sched, &counts);
    if (counts.queued >= (size_t) c->max_queue_size) {
        self->counters.busy++;
        return BJOBS_BUSY;
    }
    const pcfg_entity_t *e = pcfg_entity (c, (size_t) entity);
    bjob_t *job = bjobs__job_new (++self->next_job_id, spec->entity, spec->msg_key, spec->payload.data,
                             spec->payload.size);
    bjobs__set_state (self, job, JOB_QUEUED);
    job->priority = (uint8_t) spec->priority;
    job->created_ms = (int64_t) spec->created_ms;
    char source[128];
    bjobs__chat_source (spec->chat, source, sizeof source);
    job->sj.priority = job->priority;
    job->sj.entity = (uint16_t) entity;
    job->sj.chat = sched_chat_intern (self->sched, spec->chat, source, spec->chat_kind);
    job->sj.not_before = job->created_ms + s_response_delay (c, job->priority);
    int64_t max_age = s_max_age (c, e, job->priority);
    job->sj.expires_at = max_age ? job->created_ms + max_age * 1000 : 0;
    ptable_insert (self->by_id, job);
    ptable_insert (self->by_pair, job);
    sched_push (self->sched, &job->sj, now);
    //  The ACK promises it is stored: this turn's commit must reach the disk.
    bjobs__put (self, job, true);
    self->counters.accepted++;
    return BJOBS_ACCEPTED;
}

//  --- dispatching -----------------------------------------------------------------------------

static int64_t s_lease_end (bjobs_t *self, const bjob_t *job, int64_t now)
{
    int64_t end = now + self->config->stale_claim_timeout_ms;
    int64_t hold_end = job->flight->dispatched_at + self->config->max_hold_ms;
    return end < hold_end ? end : hold_end;
}

bjob_t *bjobs_next (bjobs_t *self, int64_t now)
{
    sched_job_t *sj = sched_pop (self->sched, now);
    if (!sj)
        return NULL;
    bjob_t *job = (bjob_t *) sj;
    bjobs__set_state (self, job, JOB_DISPATCHED);
    bjobs__flight (job)->token = s_token (self);
    job->attempt++;
    job->flight->dispatched_at = now;
    bjobs__set_deadline (self, job, s_lease_end (self, job, now));
    bjobs__reserve (self, job);
    self->counters.dispatched++;
    return job;
}

void bjobs_unpop (bjobs_t *self, bjob_t *job, int64_t now, int64_t not_before)
{
    sched_done (self->sched, &job->sj, now);
    bjobs__unreserve (self, job, now);
    job->attempt--;
    self->counters.dispatched--;
    s_land (self, job);
    bjobs__set_state (self, job, JOB_QUEUED);
    job->sj.not_before = not_before;
    sched_push (self->sched, &job->sj, now);
}

void bjobs_renew (bjobs_t *self, bjob_t *job, int64_t now)
{
    if (job->state == JOB_DISPATCHED)
        bjobs__set_deadline (self, job, s_lease_end (self, job, now));
}

//  --- what workers report ------------------------------------------------------------------------

void bjobs_released (bjobs_t *self, bjob_t *job, const proto_release_item_t *item, int64_t now)
{
    sched_done (self->sched, &job->sj, now);
    switch (item->status) {
    case PROTO_REL_DONE:
        //  The result is on its way to the sink; its COMMIT must come within a lease.
        bjobs__set_state (self, job, JOB_HANDED_OFF);
        bjobs__set_deadline (self, job, now + self->config->stale_claim_timeout_ms);
        break;
    case PROTO_REL_RETRY:
        bjobs__unreserve (self, job, now);
        s_failed (self, job, *item->reason ? item->reason : "retry", (int64_t) item->retry_after_ms, now);
        break;
    case PROTO_REL_FAIL:
        bjobs__unreserve (self, job, now);
        bjobs__history (job, now, item->reason);
        bjobs__dead_letter (self, job, *item->reason ? item->reason : "failed", false, now);
        break;
    case PROTO_REL_EXPIRED:
        bjobs__unreserve (self, job, now);
        self->counters.expired++;
        bjobs__finish (self, job, now);
        break;
    case PROTO_REL_SKIP:
        bjobs__unreserve (self, job, now);
        plog_debug ("job %s skipped: %s", bjob_msg_key (job), item->reason);
        self->counters.skipped++;
        bjobs__finish (self, job, now);
        break;
    case PROTO_REL_RETURN:
    default:
        //  Not attempted (the worker is stopping): back at once, no failure counted.
        bjobs__unreserve (self, job, now);
        job->attempt--;
        s_requeue (self, job, 0, now);
        self->counters.returned++;
        break;
    }
}

void bjobs_take_back (bjobs_t *self, bjob_t *job, bjobs_why_t why, const char *detail, int64_t now)
{
    s_land (self, job);
    sched_done (self->sched, &job->sj, now);
    bjobs__unreserve (self, job, now);
    if (plog_limiter_allow (&self->back_log, 20))
        plog_info ("job %s for %s taken back: %s", bjob_msg_key (job), bjobs__entity (self, job), detail);
    switch (why) {
    case BJOBS_NOT_SENT:
        //  It never left: not an attempt at all.
        job->attempt--;
        self->counters.dispatched--;
        s_requeue (self, job, now, now);
        break;
    case BJOBS_NOT_HELD:
        bjobs__history (job, now, detail);
        self->counters.reclaimed++;
        s_requeue (self, job, now, now);
        break;
    case BJOBS_WORKER_LOST:
        self->counters.crashes++;
        if (job->alone) {
            //  It ran alone: the worker died of it.
            char why_text[700];
            snprintf (why_text, sizeof why_text, "killed its worker while running alone (%s)", detail);
            s_failed (self, job, why_text, 0, now);
        }
        else {
            //  Maybe it, maybe another job on that worker: a suspect, retried without penalty.
            if (job->crashes < UINT16_MAX)
                job->crashes++;
            bjobs__history (job, now, detail);
            int64_t delay = pbackoff_delay (self->config->retry_base_ms, self->config->retry_max_ms,
                                            job->crashes);
            s_requeue (self, job, now + delay, now);
            self->counters.retried++;
        }
        break;
    case BJOBS_LEASE:
    case BJOBS_HELD_TOO_LONG:
    default:
        s_failed (self, job, detail, 0, now);
        break;
    }
}

//  --- time ----------------------------------------------------------------------------------

void bjobs_tick (bjobs_t *self, int64_t now)
{
    //  Queued jobs too old to be answered now: counted, never sent.
    sched_job_t *sj;
    while ((sj = sched_pop_expired (self->sched, now))) {
        self->counters.expired++;
        bjobs__finish (self, (bjob_t *) sj, now);
    }
    bjob_t *job;
    while ((job = bdeadlines_due (&self->deadlines, now))) {
        char detail[300];
        switch (job->state) {
        case JOB_DISPATCHED:
            if (bworkers_is_silent (job->flight->link.worker, now)) {
                //  Its worker went silent: that is a lost worker, not a slow job.
                snprintf (detail, sizeof detail, "worker %s lost (no heartbeat within staleClaimTimeout)",
                          bworkers_name (job->flight->link.worker));
                bjobs_take_back (self, job, BJOBS_WORKER_LOST, detail, now);
            }
            else if (now >= job->flight->dispatched_at + self->config->max_hold_ms) {
                snprintf (detail, sizeof detail, "held longer than maxHoldMs (%" PRId64 " ms) by worker %s",
                          self->config->max_hold_ms, bworkers_name (job->flight->link.worker));
                bjobs_take_back (self, job, BJOBS_HELD_TOO_LONG, detail, now);
            }
            else {
                snprintf (detail, sizeof detail, "lease ran out: worker %s did not list it in its heartbeats",
                          bworkers_name (job->flight->link.worker));
                bjobs_take_back (self, job, BJOBS_LEASE, detail, now);
            }
            break;
        case JOB_HANDED_OFF:
            //  The result never reached the sink (or the sink never asked): run it again.
            bjobs__unreserve (self, job, now);
            bjobs__history (job, now, "the result did not reach the sink within the lease");
            s_requeue (self, job, now, now);
            self->counters.retried++;
            break;
        case JOB_COMMITTED:
            //  The sink stopped holding it (it lost its state, or is gone):
            //  run it again; the sink's posted marks keep a post from doubling.
            self->counters.sink_expired++;
            if (plog_limiter_allow (&self->back_log, 20))
                plog_warn ("job %s for %s: the sink stopped holding it; dispatching it again",
                           bjob_msg_key (job), bjobs__entity (self, job));
            bjobs__history (job, now, "the sink stopped holding it");
            s_requeue (self, job, now, now);
            break;
        default:
            break;
        }
    }
}

int64_t bjobs_wakeup (bjobs_t *self, int64_t now)
{
    (void) now;
    int64_t next = bdeadlines_next (&self->deadlines);
    return next == INT64_MAX ? SCHED_NEVER : next;
}

//  --- looking and counting -------------------------------------------------------------------

bjob_t *bjobs_find (bjobs_t *self, uint64_t id)
{
    return ptable_lookup (self->by_id, &id);
}

size_t bjobs_count (bjobs_t *self)
{
    return ptable_size (self->by_id);
}

size_t bjobs_in_state (bjobs_t *self, bjob_state_t state)
{
    return state < JOB_STATES ? self->state_count[state] : 0;
}

const bjobs_counters_t *bjobs_counters (bjobs_t *self)
{
    return &self->counters;
}
