/*  broker_jobs - the life of a job in the broker, and its durability.

    Accepting a job (one per (message, entity)), finishing it, failing an
    attempt (backoff, then the dead-letter queue), and the store writes that
    go with each change, so a restart finds the same state (broker_recover).
*/
#include "broker/broker_int.h"
#include "common/plog.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define FINISHED_KEYS_MAX 262144  //  recently finished (message, entity) keys kept in memory

static int64_t s_random (int64_t lo, int64_t hi)
{
    if (hi <= lo)
        return lo;
    return lo + (int64_t) (random () % (hi - lo + 1));
}

//  --- jobs -------------------------------------------------------------------------

void broker_job_free (bjob_t **job_p)
{
    bjob_t *job = *job_p;
    free (job->dkey);
    free ((void *) job->payload.data);
    free (job->history);
    free (job);
    *job_p = NULL;
}

//  All state changes go through here, so the per-state counts stay right.
void broker_set_state (broker_t *self, bjob_t *job, int state)
{
    if (job->state)
        self->state_count[job->state]--;
    job->state = (uint8_t) state;
    if (state)
        self->state_count[state]++;
}

//  --- durability: every state change the broker must not forget ------------------

static store_job_t s_row (broker_t *self, const bjob_t *job)
{
    return (store_job_t) {job->id,
                          pcfg_entity (self->config, job->sj.entity)->id,
                          job->msg_key,
                          sched_chat_key (self->sched, job->sj.chat),
                          sched_chat_kind (self->sched, job->sj.chat),
                          job->priority,
                          job->created_ms,
                          job->sj.enqueued_at,
                          job->sj.not_before,
                          job->sj.expires_at,
                          job->attempt,
                          job->failures,
                          job->state == JOB_COMMITTED,
                          job->state == JOB_COMMITTED ? job->token : 0,
                          job->payload.data,
                          job->payload.size,
                          job->history ? job->history : ""};
}

static void s_persist_new (broker_t *self, bjob_t *job)
{
    if (self->store) {
        store_job_t row = s_row (self, job);
        store_job_insert (self->store, &row);
    }
}

void broker_persist (broker_t *self, bjob_t *job)
{
    if (self->store) {
        store_job_t row = s_row (self, job);
        store_job_update (self->store, &row);
    }
}

//  A dispatch takes rate slots; remember them if any limit applies.
void broker_reserve (broker_t *self, bjob_t *job)
{
    if (self->store && sched_limited (self->sched, job->sj.entity, job->sj.chat))
        store_reserve (self->store, job->id, job->sj.reserved_at,
                       pcfg_entity (self->config, job->sj.entity)->id,
                       sched_chat_key (self->sched, job->sj.chat),
                       sched_chat_kind (self->sched, job->sj.chat));
}

//  The job was not posted and will not be: its rate slots are free again.
void broker_unreserve (broker_t *self, bjob_t *job)
{
    if (self->store && job->sj.reserved_at)
        store_unreserve (self->store, job->id);
    sched_unreserve (self->sched, &job->sj, self->now);
}

void broker_worker_detach (bworker_t *worker, bjob_t *job)
{
    if (job->wprev)
        job->wprev->wnext = job->wnext;
    else
        worker->jobs = job->wnext;
    if (job->wnext)
        job->wnext->wprev = job->wprev;
    job->wprev = job->wnext = NULL;
    job->worker = NULL;
    worker->job_count--;
}

static void s_remember_finished (broker_t *self, const char *dkey)
{
    if (zhashx_insert (self->finished, dkey, (void *) 1) != 0)
        return;
    zlistx_add_end (self->finished_order, strdup (dkey));
    while (zlistx_size (self->finished_order) > FINISHED_KEYS_MAX) {
        char *oldest = zlistx_detach (self->finished_order, NULL);
        zhashx_delete (self->finished, oldest);
        free (oldest);
    }
}

//  The job leaves the broker: posted, expired, skipped or dead-lettered.
void broker_job_finish (broker_t *self, bjob_t *job)
{
    sched_done (self->sched, &job->sj, self->now);
    sched_remove (self->sched, &job->sj);
    heap_remove (&self->deadlines, job);
    if (job->worker)
        broker_worker_detach (job->worker, job);
    broker_set_state (self, job, 0);
    if (self->store)
        store_job_finish (self->store, job->id, job->dkey, self->now);
    zhashx_delete (self->jobs, U64_KEY (job->id));
    zhashx_delete (self->active, job->dkey);
    s_remember_finished (self, job->dkey);
    broker_job_free (&job);
}

void broker_append_history (bjob_t *job, int64_t now, const char *what)
{
    char line[600];
    snprintf (line, sizeof line, "%s%" PRId64 " attempt %u: %s", job->history ? "\n" : "", now,
              job->attempt, what);
    size_t old = job->history ? strlen (job->history) : 0;
    //  Bound the history: the last attempts matter most.
    if (old > 8000) {
        free (job->history);
        job->history = NULL;
        old = 0;
    }
    job->history = realloc (job->history, old + strlen (line) + 1);
    memcpy (job->history + old, line, strlen (line) + 1);
}

void broker_dead_letter (broker_t *self, bjob_t *job, const char *reason)
{
    bdead_t *dead = calloc (1, sizeof *dead);
    dead->id = ++self->next_dead_id;
    dead->msg_key = strdup (job->msg_key);
    dead->entity = strdup (pcfg_entity (self->config, job->sj.entity)->id);
    dead->chat = strdup (sched_chat_key (self->sched, job->sj.chat));
    dead->priority = job->priority;
    dead->created_ms = job->created_ms;
    dead->dead_at = self->now;
    dead->attempts = job->attempt;
    dead->reason = strdup (reason);
    dead->history = strdup (job->history ? job->history : "");
    dead->payload = job->payload;
    job->payload.data = NULL;
    job->payload.size = 0;
    zlistx_add_end (self->dead, dead);
    if (self->store) {
        store_dead_t row = {dead->id,       dead->msg_key,    dead->entity,  dead->chat,
                            dead->priority, dead->created_ms, dead->dead_at, dead->attempts,
                            dead->reason,   dead->history,    dead->payload.data,
                            dead->payload.size};
        store_dead_insert (self->store, &row);
    }
    self->counters.dead++;
    plog_warn ("dead-lettered %s for %s after %u attempt(s): %s", dead->msg_key, dead->entity,
               dead->attempts, reason);
    broker_job_finish (self, job);
}

//  An attempt failed: back off and retry, or dead-letter after maxRetries.
void broker_job_failed (broker_t *self, bjob_t *job, const char *reason, int64_t retry_after)
{
    broker_append_history (job, self->now, reason);
    job->failures++;
    if ((int64_t) job->failures > self->config->max_retries) {
        char why[600];
        snprintf (why, sizeof why, "gave up after %u failed attempts; last: %s", job->failures,
                  reason);
        broker_dead_letter (self, job, why);
        return;
    }
    //  Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^(n-1))].
    int64_t ceiling = self->config->retry_base_ms;
    for (uint32_t i = 1; i < job->failures && ceiling < self->config->retry_max_ms; i++)
        ceiling *= 2;
    if (ceiling > self->config->retry_max_ms)
        ceiling = self->config->retry_max_ms;
    int64_t delay = s_random (0, ceiling);
    if (retry_after > delay)
        delay = retry_after;
    broker_set_state (self, job, JOB_QUEUED);
    job->token = 0;
    job->sj.not_before = self->now + delay;
    sched_push (self->sched, &job->sj, self->now);
    broker_persist (self, job);
    self->counters.retried++;
}

//  Takes a job out of a worker's hands and settles the attempt.
void broker_job_unassign (broker_t *self, bjob_t *job)
{
    if (job->worker)
        broker_worker_detach (job->worker, job);
    sched_done (self->sched, &job->sj, self->now);
}

//  --- accepting jobs -------------------------------------------------------------------

static int64_t s_response_delay (broker_t *self, int priority)
{
    const pcfg_t *c = self->config;
    const pcfg_delay_t *d = priority < c->urgent_below ? &c->delay_urgent
                            : priority >= c->low_from  ? &c->delay_low
                                                       : &c->delay_normal;
    return s_random (d->min_ms, d->max_ms);
}

static void s_chat_source (const char *chat, char *source, size_t len)
{
    const char *slash = strchr (chat, '/');
    size_t n = slash ? (size_t) (slash - chat) : strlen (chat);
    if (n >= len)
        n = len - 1;
    memcpy (source, chat, n);
    source[n] = 0;
}

//  Returns NULL when accepted, or why not.
const char *broker_accept (broker_t *self, const proto_job_spec_t *spec, bool *duplicate)
{
    *duplicate = false;
    int entity = pcfg_entity_index (self->config, spec->entity);
    if (entity < 0)
        return "unknown entity";
    if (!*spec->msg_key)
        return "empty msg_key";
    if (!*spec->chat)
        return "empty chat";
    size_t elen = strlen (spec->entity), klen = strlen (spec->msg_key);
    char *dkey = malloc (elen + klen + 2);
    memcpy (dkey, spec->entity, elen);
    dkey[elen] = 0x1f;
    memcpy (dkey + elen + 1, spec->msg_key, klen + 1);
    if (zhashx_lookup (self->active, dkey) || zhashx_lookup (self->finished, dkey)
        || (self->store && store_is_done (self->store, dkey))) {
        free (dkey);
        *duplicate = true;
        return NULL;
    }
    const pcfg_t *c = self->config;
    const pcfg_entity_t *e = pcfg_entity (c, (size_t) entity);
    bjob_t *job = calloc (1, sizeof *job);
    job->id = ++self->next_job_id;
    broker_set_state (self, job, JOB_QUEUED);
    job->priority = (uint8_t) spec->priority;
    job->created_ms = (int64_t) spec->created_ms;
    job->dkey = dkey;
    job->msg_key = dkey + elen + 1;
    job->pos_deadline = HEAP_NONE;
    uint8_t *payload = malloc (spec->payload.size ? spec->payload.size : 1);
    if (spec->payload.size)     //  an empty payload may come with a NULL pointer
        memcpy (payload, spec->payload.data, spec->payload.size);
    job->payload.data = payload;
    job->payload.size = spec->payload.size;
    char source[128];
    s_chat_source (spec->chat, source, sizeof source);
    job->sj.priority = job->priority;
    job->sj.entity = (uint16_t) entity;
    job->sj.chat = sched_chat_intern (self->sched, spec->chat, source, spec->chat_kind);
    job->sj.not_before = job->created_ms + s_response_delay (self, job->priority);
    int64_t max_age = e->max_age_seconds ? e->max_age_seconds : c->max_age_seconds;
    job->sj.expires_at = max_age ? job->created_ms + max_age * 1000 : 0;
    zhashx_insert (self->jobs, U64_KEY (job->id), job);
    zhashx_insert (self->active, job->dkey, job);
    sched_push (self->sched, &job->sj, self->now);
    s_persist_new (self, job);
    return NULL;
}

void broker_enforce_queue_limit (broker_t *self)
{
    sched_counts_t counts;
    sched_counts (self->sched, &counts);
    while (counts.queued > (size_t) self->config->max_queue_size) {
        bjob_t *victim = (bjob_t *) sched_least_urgent (self->sched);
        if (!victim)
            break;
        plog_debug ("queue full: dropping %s (priority %u)", victim->msg_key, victim->priority);
        self->counters.dropped++;
        broker_job_finish (self, victim);
        counts.queued--;
    }
    int64_t threshold = self->config->congestion_threshold;
    if (threshold > 0 && counts.queued > (size_t) threshold && self->now >= self->next_congestion_warning) {
        plog_warn ("congestion: %zu jobs queued (threshold %" PRId64 ")", counts.queued, threshold);
        self->next_congestion_warning = self->now + 10000;
    }
}

//  --- dead letters -------------------------------------------------------------------

void broker_dead_free (bdead_t **dead_p)
{
    bdead_t *d = *dead_p;
    if (!d)
        return;
    free (d->msg_key);
    free (d->entity);
    free (d->chat);
    free (d->reason);
    free (d->history);
    free ((void *) d->payload.data);
    free (d);
    *dead_p = NULL;
}

void broker_requeue_dead (broker_t *self, bdead_t *dead)
{
    //  A retried dead letter is a new job for the same (message, entity).
    size_t elen = strlen (dead->entity), klen = strlen (dead->msg_key);
    char *dkey = malloc (elen + klen + 2);
    memcpy (dkey, dead->entity, elen);
    dkey[elen] = 0x1f;
    memcpy (dkey + elen + 1, dead->msg_key, klen + 1);
    zhashx_delete (self->finished, dkey);
    if (self->store)
        store_forget_done (self->store, dkey);
    free (dkey);
    proto_job_spec_t spec = {dead->msg_key, dead->entity, dead->chat, "", dead->priority,
                             (uint64_t) self->now, dead->payload};
    bool duplicate;
    const char *why = broker_accept (self, &spec, &duplicate);
    if (why)
        plog_warn ("dead letter %" PRIu64 " not retried: %s", dead->id, why);
}

void broker_forget_dead (broker_t *self, bdead_t *dead)
{
    if (self->store)
        store_dead_delete (self->store, dead->id);
}

void broker_set_paused (broker_t *self, int entity, bool paused)
{
    sched_pause (self->sched, entity, paused, self->now);
    if (self->store)
        store_set_paused (self->store, entity < 0 ? "*" : pcfg_entity (self->config, (size_t) entity)->id,
                          paused);
}

//  --- recovery ------------------------------------------------------------------------

static bdead_t *s_dead_new (uint64_t id, const char *msg_key, const char *entity, const char *chat,
                            int priority, int64_t created_ms, int64_t dead_at, uint32_t attempts,
                            const char *reason, const char *history, const void *payload,
                            uint32_t payload_size)
{
    bdead_t *dead = calloc (1, sizeof *dead);
    dead->id = id;
    dead->msg_key = strdup (msg_key);
    dead->entity = strdup (entity);
    dead->chat = strdup (chat);
    dead->priority = (uint8_t) priority;
    dead->created_ms = created_ms;
    dead->dead_at = dead_at;
    dead->attempts = attempts;
    dead->reason = strdup (reason);
    dead->history = strdup (history);
    uint8_t *copy = malloc (payload_size ? payload_size : 1);
    if (payload_size)           //  an empty payload comes back from storage as NULL
        memcpy (copy, payload, payload_size);
    dead->payload = (proto_bin_t) {copy, payload_size};
    return dead;
}

static void s_load_dead (void *arg, const store_dead_t *d)
{
    broker_t *self = arg;
    zlistx_add_end (self->dead, s_dead_new (d->id, d->msg_key, d->entity, d->chat, d->priority,
                                            d->created_ms, d->dead_at, d->attempts, d->reason,
                                            d->history, d->payload, d->payload_size));
    if (d->id > self->next_dead_id)
        self->next_dead_id = d->id;
}

static void s_load_job (void *arg, const store_job_t *row)
{
    broker_t *self = arg;
    int entity = pcfg_entity_index (self->config, row->entity);
    if (entity < 0) {
        //  The configuration lost this entity: nobody can answer, so a person decides.
        char reason[300];
        snprintf (reason, sizeof reason, "entity \"%s\" is no longer configured", row->entity);
        bdead_t *dead = s_dead_new (++self->next_dead_id, row->msg_key, row->entity, row->chat,
                                    row->priority, row->created_ms, self->now, row->attempt,
                                    reason, row->history, row->payload, row->payload_size);
        zlistx_add_end (self->dead, dead);
        store_dead_t drow = {dead->id,       dead->msg_key,    dead->entity,  dead->chat,
                             dead->priority, dead->created_ms, dead->dead_at, dead->attempts,
                             dead->reason,   dead->history,    row->payload,  row->payload_size};
        store_dead_insert (self->store, &drow);
        size_t n = strlen (row->entity) + strlen (row->msg_key) + 2;
        char *dkey = malloc (n);
        snprintf (dkey, n, "%s\x1f%s", row->entity, row->msg_key);
        store_job_finish (self->store, row->id, dkey, self->now);
        free (dkey);
        plog_warn ("recovered job %s for unknown entity %s: dead-lettered", row->msg_key, row->entity);
        return;
    }
    bjob_t *job = calloc (1, sizeof *job);
    job->id = row->id;
    job->priority = (uint8_t) row->priority;
    job->created_ms = row->created_ms;
    job->attempt = row->attempt;
    job->failures = row->failures;
    size_t elen = strlen (row->entity), klen = strlen (row->msg_key);
    job->dkey = malloc (elen + klen + 2);
    memcpy (job->dkey, row->entity, elen);
    job->dkey[elen] = 0x1f;
    memcpy (job->dkey + elen + 1, row->msg_key, klen + 1);
    job->msg_key = job->dkey + elen + 1;
    job->pos_deadline = HEAP_NONE;
    uint8_t *payload = malloc (row->payload_size ? row->payload_size : 1);
    if (row->payload_size)      //  an empty payload comes back from storage as NULL
        memcpy (payload, row->payload, row->payload_size);
    job->payload = (proto_bin_t) {payload, row->payload_size};
    job->history = *row->history ? strdup (row->history) : NULL;
    char source[128];
    s_chat_source (row->chat, source, sizeof source);
    job->sj.priority = job->priority;
    job->sj.entity = (uint16_t) entity;
    job->sj.chat = sched_chat_intern (self->sched, row->chat, source, row->chat_kind);
    job->sj.not_before = row->not_before;
    job->sj.expires_at = row->expires_ms;
    job->sj.enqueued_at = row->enqueued_ms;
    zhashx_insert (self->jobs, U64_KEY (job->id), job);
    zhashx_insert (self->active, job->dkey, job);
    if (row->committed) {
        //  The sink owns posting it; it will report the outcome for this token.
        broker_set_state (self, job, JOB_COMMITTED);
        job->token = row->token;
    }
    else {
        //  Queued, or in flight when the broker stopped: either way, queued now.
        broker_set_state (self, job, JOB_QUEUED);
        sched_push (self->sched, &job->sj, self->now);
    }
}

static void s_load_reservation (void *arg, int64_t at, const char *entity, const char *chat,
                                const char *chat_kind)
{
    broker_t *self = arg;
    char source[128];
    s_chat_source (chat, source, sizeof source);
    sched_restore_reservation (self->sched, pcfg_entity_index (self->config, entity),
                               sched_chat_intern (self->sched, chat, source, chat_kind), at);
}

static void s_load_paused (void *arg, const char *entity)
{
    broker_t *self = arg;
    int index = streq (entity, "*") ? -1 : pcfg_entity_index (self->config, entity);
    if (index >= 0 || streq (entity, "*")) {
        sched_pause (self->sched, index, true, self->now);
        plog_info ("%s is paused (since before the restart)", entity);
    }
}

//  Opens the store and rebuilds the broker's state from it.
int broker_recover (broker_t *self)
{
    const pcfg_t *c = self->config;
    if (!*c->data_dir) {
        plog_info ("storage.dataDir is empty: state is kept in memory only");
        return 0;
    }
    char err[600];
    self->store = store_open (c->data_dir, c->fsync, err, sizeof err);
    if (!self->store) {
        plog_error ("%s", err);
        return -1;
    }
    int64_t start = zclock_mono ();
    self->epoch = store_next_epoch (self->store);
    store_load (self->store, self->now, self, s_load_job, s_load_dead, s_load_reservation,
                s_load_paused);
    self->next_job_id = store_last_job_id (self->store);
    if (store_commit (self->store))
        return -1;
    sched_counts_t counts;
    sched_counts (self->sched, &counts);
    plog_info ("recovered from %s/broker.db in %" PRId64 " ms: %zu queued, %zu committed to the sink,"
               " %zu dead letters (run %u)",
               c->data_dir, zclock_mono () - start, counts.queued, self->state_count[JOB_COMMITTED],
               zlistx_size (self->dead), self->epoch);
    return 0;
}
