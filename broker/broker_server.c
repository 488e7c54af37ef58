/*  broker_server - the broker actor: sockets, job lifecycle, workers.

    Job lifecycle (bjob_state_t):

        SUBMIT -> QUEUED -> DISPATCHED -> HANDED_OFF -> COMMITTED -> finished
                    ^          |   (worker RELEASE done)   (sink COMMIT) (sink OUTCOME)
                    |          |
                    +----------+  RELEASE retry, worker lost, lease over: backoff,
                                  then after maxRetries the dead-letter queue

    Every dispatch gets a new token; a COMMIT carrying an older token is
    answered STALE, so exactly one attempt of a job is ever posted.

    The loop, one screen long (s_run): wait for a socket or the next timer,
    read what is there in batches, store the changes, send the replies that
    waited for the store, run timers, dispatch.
*/
#include "broker/broker_int.h"
#include "common/plog.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BATCH_READ        512     //  frames read from one socket per iteration
#define FINISHED_KEYS_MAX 262144  //  recently finished (message, entity) keys kept
#define STATS_STALE_MS    10000   //  poller snapshots older than this are dropped

//  --- small helpers -------------------------------------------------------------

static int64_t s_now (broker_t *self)
{
    //  Wall time, for rate history that outlives a restart; never let it go
    //  backwards, which would break the scheduler's ordering.
    int64_t now = zclock_time ();
    if (now > self->now)
        self->now = now;
    return self->now;
}

static size_t s_u64_hash (const void *key)
{
    uint64_t x = (uint64_t) (uintptr_t) key;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t) x;
}

static int s_u64_compare (const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) a, y = (uintptr_t) b;
    return x < y ? -1 : x > y;
}

static zhashx_t *s_u64_table (void)
{
    zhashx_t *table = zhashx_new ();
    zhashx_set_key_hasher (table, s_u64_hash);
    zhashx_set_key_comparator (table, s_u64_compare);
    zhashx_set_key_duplicator (table, NULL);
    zhashx_set_key_destructor (table, NULL);
    return table;
}

#define U64_KEY(id) ((void *) (uintptr_t) (id))

static bool s_deadline_less (const void *a, const void *b)
{
    return ((const bjob_t *) a)->deadline < ((const bjob_t *) b)->deadline;
}

static int64_t s_random (int64_t lo, int64_t hi)
{
    if (hi <= lo)
        return lo;
    return lo + (int64_t) (random () % (hi - lo + 1));
}

//  Queue a reply; it is sent once the iteration's changes are stored.
static void s_reply (broker_t *self, zsock_t *sock, zframe_t *route, proto_type_t type,
                     const void *body)
{
    if (self->outbox_count == self->outbox_capacity) {
        self->outbox_capacity = self->outbox_capacity ? self->outbox_capacity * 2 : 64;
        self->outbox = realloc (self->outbox, self->outbox_capacity * sizeof (boutgoing_t));
    }
    boutgoing_t *out = &self->outbox[self->outbox_count];
    if (proto_encode (type, body, &out->body))
        return;
    out->sock = sock;
    out->route = zframe_dup (route);
    self->outbox_count++;
}

static void s_send_now (zsock_t *sock, zframe_t *route, zmq_msg_t *body)
{
    void *handle = zsock_resolve (sock);
    if (zmq_send (handle, zframe_data (route), zframe_size (route), ZMQ_SNDMORE | ZMQ_DONTWAIT) == -1
        || zmq_msg_send (body, handle, ZMQ_DONTWAIT) == -1) {
        //  The peer is gone or not reading; it will ask again.
        plog_debug ("reply not sent: %s", zmq_strerror (zmq_errno ()));
        zmq_msg_close (body);
    }
}

static void s_flush_outbox (broker_t *self)
{
    for (size_t i = 0; i < self->outbox_count; i++) {
        boutgoing_t *out = &self->outbox[i];
        s_send_now (out->sock, out->route, &out->body);
        zframe_destroy (&out->route);
    }
    self->outbox_count = 0;
}

//  --- jobs -------------------------------------------------------------------------

static void s_job_free (bjob_t **job_p)
{
    bjob_t *job = *job_p;
    free (job->dkey);
    free ((void *) job->payload.data);
    free (job->history);
    free (job);
    *job_p = NULL;
}

//  All state changes go through here, so the per-state counts stay right.
static void s_set_state (broker_t *self, bjob_t *job, int state)
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

static void s_persist (broker_t *self, bjob_t *job)
{
    if (self->store) {
        store_job_t row = s_row (self, job);
        store_job_update (self->store, &row);
    }
}

//  A dispatch takes rate slots; remember them if any limit applies.
static void s_reserve (broker_t *self, bjob_t *job)
{
    if (self->store && sched_limited (self->sched, job->sj.entity, job->sj.chat))
        store_reserve (self->store, job->id, job->sj.reserved_at,
                       pcfg_entity (self->config, job->sj.entity)->id,
                       sched_chat_key (self->sched, job->sj.chat),
                       sched_chat_kind (self->sched, job->sj.chat));
}

//  The job was not posted and will not be: its rate slots are free again.
static void s_unreserve (broker_t *self, bjob_t *job)
{
    if (self->store && job->sj.reserved_at)
        store_unreserve (self->store, job->id);
    sched_unreserve (self->sched, &job->sj, self->now);
}

static void s_worker_detach (bworker_t *worker, bjob_t *job)
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
static void s_job_finish (broker_t *self, bjob_t *job)
{
    sched_done (self->sched, &job->sj, self->now);
    sched_remove (self->sched, &job->sj);
    heap_remove (&self->deadlines, job);
    if (job->worker)
        s_worker_detach (job->worker, job);
    s_set_state (self, job, 0);
    if (self->store)
        store_job_finish (self->store, job->id, job->dkey, self->now);
    zhashx_delete (self->jobs, U64_KEY (job->id));
    zhashx_delete (self->active, job->dkey);
    s_remember_finished (self, job->dkey);
    s_job_free (&job);
}

static void s_append_history (bjob_t *job, int64_t now, const char *what)
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

static void s_dead_letter (broker_t *self, bjob_t *job, const char *reason)
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
    s_job_finish (self, job);
}

//  An attempt failed: back off and retry, or dead-letter after maxRetries.
static void s_job_failed (broker_t *self, bjob_t *job, const char *reason, int64_t retry_after)
{
    s_append_history (job, self->now, reason);
    job->failures++;
    if ((int64_t) job->failures > self->config->max_retries) {
        char why[600];
        snprintf (why, sizeof why, "gave up after %u failed attempts; last: %s", job->failures,
                  reason);
        s_dead_letter (self, job, why);
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
    s_set_state (self, job, JOB_QUEUED);
    job->token = 0;
    job->sj.not_before = self->now + delay;
    sched_push (self->sched, &job->sj, self->now);
    s_persist (self, job);
    self->counters.retried++;
}

//  Takes a job out of a worker's hands and settles the attempt.
static void s_job_unassign (broker_t *self, bjob_t *job)
{
    if (job->worker)
        s_worker_detach (job->worker, job);
    sched_done (self->sched, &job->sj, self->now);
}

static int64_t s_response_delay (broker_t *self, int priority)
{
    const pcfg_t *c = self->config;
    const pcfg_delay_t *d = priority < c->urgent_below ? &c->delay_urgent
                            : priority >= c->low_from  ? &c->delay_low
                                                       : &c->delay_normal;
    return s_random (d->min_ms, d->max_ms);
}

//  --- frontend: SUBMIT ------------------------------------------------------------

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
static const char *s_accept_one (broker_t *self, const proto_job_spec_t *spec, bool *duplicate)
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
    s_set_state (self, job, JOB_QUEUED);
    job->priority = (uint8_t) spec->priority;
    job->created_ms = (int64_t) spec->created_ms;
    job->dkey = dkey;
    job->msg_key = dkey + elen + 1;
    job->pos_deadline = HEAP_NONE;
    uint8_t *payload = malloc (spec->payload.size ? spec->payload.size : 1);
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

static void s_enforce_queue_limit (broker_t *self)
{
    sched_counts_t counts;
    sched_counts (self->sched, &counts);
    while (counts.queued > (size_t) self->config->max_queue_size) {
        bjob_t *victim = (bjob_t *) sched_least_urgent (self->sched);
        if (!victim)
            break;
        plog_debug ("queue full: dropping %s (priority %u)", victim->msg_key, victim->priority);
        self->counters.dropped++;
        s_job_finish (self, victim);
        counts.queued--;
    }
    int64_t threshold = self->config->congestion_threshold;
    if (threshold > 0 && counts.queued > (size_t) threshold && self->now >= self->next_congestion_warning) {
        plog_warn ("congestion: %zu jobs queued (threshold %" PRId64 ")", counts.queued, threshold);
        self->next_congestion_warning = self->now + 10000;
    }
}

static void s_on_submit (broker_t *self, zframe_t *route, const proto_submit_t *submit)
{
    proto_ack_t ack = {submit->seq, 0, 0, NULL, 0};
    proto_reject_t rejected[64];
    for (size_t i = 0; i < submit->count; i++) {
        bool duplicate;
        const char *why = s_accept_one (self, &submit->items[i], &duplicate);
        self->counters.submitted++;
        if (why) {
            self->counters.rejected++;
            plog_warn ("refused job %s for %s: %s", submit->items[i].msg_key,
                       submit->items[i].entity, why);
            if (ack.rejected_count < 64)
                rejected[ack.rejected_count++] = (proto_reject_t) {i, why};
        }
        else if (duplicate) {
            ack.duplicates++;
            self->counters.duplicates++;
        }
        else {
            ack.accepted++;
            self->counters.accepted++;
        }
    }
    ack.rejected = rejected;
    s_enforce_queue_limit (self);
    s_reply (self, self->frontend, route, PROTO_ACK, &ack);
}

//  --- frontend: COMMIT and OUTCOME from the sink ---------------------------------

static void s_on_commit (broker_t *self, zframe_t *route, const proto_commit_t *commit)
{
    proto_verdicts_t answer = {commit->seq, NULL, commit->count};
    answer.items = calloc (commit->count ? commit->count : 1, sizeof (proto_verdict_item_t));
    for (size_t i = 0; i < commit->count; i++) {
        const proto_ref_t *ref = &commit->items[i];
        proto_verdict_item_t *v = &answer.items[i];
        v->job_id = ref->job_id;
        v->token = ref->token;
        bjob_t *job = zhashx_lookup (self->jobs, U64_KEY (ref->job_id));
        if (!job)
            v->verdict = PROTO_VERDICT_UNKNOWN;
        else if (job->token != ref->token || job->state == JOB_QUEUED)
            v->verdict = PROTO_VERDICT_STALE;
        else {
            if (job->state != JOB_COMMITTED) {
                s_set_state (self, job, JOB_COMMITTED);
                heap_remove (&self->deadlines, job);
                s_persist (self, job);
                self->counters.committed++;
            }
            v->verdict = PROTO_VERDICT_POST;
        }
        if (v->verdict != PROTO_VERDICT_POST) {
            self->counters.stale_results++;
            plog_debug ("result for job %" PRIu64 " token %" PRIx64 " refused (%s)", ref->job_id,
                        ref->token, v->verdict == PROTO_VERDICT_STALE ? "stale" : "unknown");
        }
    }
    s_reply (self, self->frontend, route, PROTO_VERDICT, &answer);
    free (answer.items);
}

static void s_on_outcome (broker_t *self, zframe_t *route, const proto_outcome_t *outcome)
{
    for (size_t i = 0; i < outcome->count; i++) {
        const proto_outcome_item_t *item = &outcome->items[i];
        bjob_t *job = zhashx_lookup (self->jobs, U64_KEY (item->job_id));
        //  Outcomes are idempotent: a repeat for a finished job is ignored.
        if (!job || job->token != item->token || job->state != JOB_COMMITTED)
            continue;
        switch (item->status) {
        case PROTO_OUT_POSTED:
            self->counters.posted++;
            s_job_finish (self, job);
            break;
        case PROTO_OUT_DUPLICATE:
            self->counters.duplicate_posts++;
            s_job_finish (self, job);
            break;
        case PROTO_OUT_EXPIRED:
            s_unreserve (self, job);
            self->counters.expired++;
            s_job_finish (self, job);
            break;
        case PROTO_OUT_FAILED:
            s_unreserve (self, job);
            s_append_history (job, self->now, item->reason);
            s_dead_letter (self, job, item->reason);
            break;
        case PROTO_OUT_IN_DOUBT:
        default:
            s_append_history (job, self->now, item->reason);
            s_dead_letter (self, job, item->reason);
            break;
        }
    }
    proto_outcome_ack_t ack = {outcome->seq};
    s_reply (self, self->frontend, route, PROTO_OUTCOME_ACK, &ack);
}

//  --- frontend: STATS ------------------------------------------------------------

static void s_on_stats (broker_t *self, zframe_t *route, const proto_stats_t *stats)
{
    //  Pollers report here; keep their latest snapshot for the sink.
    for (size_t i = 0; i < stats->count; i++) {
        const proto_component_t *c = &stats->components[i];
        if (strcmp (c->role, "poller") != 0)
            continue;
        json_t *snap = json_object ();
        json_object_set_new (snap, "at", json_integer (self->now));
        json_t *values = json_object ();
        for (size_t j = 0; j < c->count; j++)
            json_object_set_new (values, c->values[j].key, json_real (c->values[j].value));
        json_object_set_new (snap, "values", values);
        zhashx_update (self->poller_stats, c->id, snap);
    }
    //  Answer with the broker's own counters and the pollers' latest.
    proto_num_t values[64];
    size_t count = 0;
    broker_stats_values (self, values, &count, 64);
    size_t npollers = zhashx_size (self->poller_stats);
    proto_component_t *components = calloc (npollers + 1, sizeof (proto_component_t));
    char broker_id[32];
    snprintf (broker_id, sizeof broker_id, "%u", self->epoch);
    components[0] = (proto_component_t) {"broker", broker_id, values, count};
    size_t n = 1;
    proto_num_t *pvalues[256] = {NULL};
    json_t *snap = zhashx_first (self->poller_stats);
    while (snap) {
        const char *id = zhashx_cursor (self->poller_stats);
        int64_t at = json_integer_value (json_object_get (snap, "at"));
        json_t *vals = json_object_get (snap, "values");
        if (self->now - at <= STATS_STALE_MS && n < 256) {
            size_t k = 0;
            proto_num_t *pv = calloc (json_object_size (vals) + 1, sizeof (proto_num_t));
            const char *key;
            json_t *value;
            json_object_foreach (vals, key, value) {
                pv[k].key = key;
                pv[k].value = json_number_value (value);
                k++;
            }
            pvalues[n] = pv;
            components[n++] = (proto_component_t) {"poller", id, pv, k};
        }
        snap = zhashx_next (self->poller_stats);
    }
    proto_stats_t answer = {(uint64_t) self->now, components, n};
    s_reply (self, self->frontend, route, PROTO_STATS, &answer);
    for (size_t i = 0; i < n; i++)
        free (pvalues[i]);
    free (components);
}

//  --- backend: workers --------------------------------------------------------------

static char *s_route_key (zframe_t *route)
{
    return zframe_strhex (route);
}

static void s_worker_free (void **item)
{
    bworker_t *w = *item;
    zframe_destroy (&w->route);
    free (w->key);
    free (w->id);
    free (w->host);
    for (size_t i = 0; i < w->model_count; i++)
        free (w->models[i]);
    free (w->models);
    free (w->batch);
    free (w);
    *item = NULL;
}

static void s_send_welcome (broker_t *self, bworker_t *w)
{
    proto_welcome_t welcome = {self->epoch, (uint64_t) self->config->heartbeat_ms,
                               (uint64_t) self->config->stale_claim_timeout_ms};
    zmq_msg_t frame;
    if (proto_encode (PROTO_WELCOME, &welcome, &frame) == 0)
        s_send_now (self->backend, w->route, &frame);
}

static void s_on_heartbeat (broker_t *self, zframe_t *route, const proto_heartbeat_t *hb)
{
    char *key = s_route_key (route);
    bworker_t *w = zhashx_lookup (self->workers, key);
    if (!w) {
        w = calloc (1, sizeof *w);
        w->key = key;
        key = NULL;
        w->route = zframe_dup (route);
        w->id = strdup (hb->worker_id);
        w->host = strdup (hb->host);
        w->pid = hb->pid;
        w->capacity = (uint32_t) hb->capacity;
        //  A worker new to this broker may still be busy with jobs from an
        //  earlier broker run: only its free slots are credit.
        w->credit = (uint32_t) (hb->free < hb->capacity ? hb->free : hb->capacity);
        zhashx_insert (self->workers, w->key, w);
        plog_info ("worker %s joined (%s pid %" PRIu64 ", %u slots, %u free)", w->id, w->host,
                   w->pid, w->capacity, w->credit);
        s_send_welcome (self, w);
    }
    free (key);
    w->last_seen = self->now;
    if (hb->draining && !w->draining)
        plog_info ("worker %s is draining", w->id);
    w->draining = hb->draining != 0;
    //  Hot models change as LLM servers load and evict them.
    for (size_t i = 0; i < w->model_count; i++)
        free (w->models[i]);
    free (w->models);
    w->models = calloc (hb->model_count + 1, sizeof (char *));
    w->model_count = hb->model_count;
    for (size_t i = 0; i < hb->model_count; i++)
        w->models[i] = strdup (hb->models[i]);
}

static void s_on_release (broker_t *self, zframe_t *route, const proto_release_t *release)
{
    char *key = s_route_key (route);
    bworker_t *w = zhashx_lookup (self->workers, key);
    free (key);
    for (size_t i = 0; i < release->count; i++) {
        const proto_release_item_t *item = &release->items[i];
        //  Every item frees a slot at the worker, whatever became of the job.
        if (w && w->credit < w->capacity)
            w->credit++;
        bjob_t *job = zhashx_lookup (self->jobs, U64_KEY (item->job_id));
        if (!job || job->token != item->token)
            continue;   //  superseded attempt: nothing to settle
        if (job->state == JOB_COMMITTED) {
            //  The sink committed before the worker's RELEASE arrived.
            s_job_unassign (self, job);
            continue;
        }
        if (job->state != JOB_DISPATCHED)
            continue;
        s_job_unassign (self, job);
        switch (item->status) {
        case PROTO_REL_DONE:
            s_set_state (self, job, JOB_HANDED_OFF);
            job->deadline = self->now + self->config->stale_claim_timeout_ms;
            heap_push (&self->deadlines, job);
            break;
        case PROTO_REL_RETRY:
            s_unreserve (self, job);
            s_job_failed (self, job, item->reason, (int64_t) item->retry_after_ms);
            break;
        case PROTO_REL_FAIL:
            s_unreserve (self, job);
            s_append_history (job, self->now, item->reason);
            s_dead_letter (self, job, item->reason);
            break;
        case PROTO_REL_EXPIRED:
            s_unreserve (self, job);
            self->counters.expired++;
            s_job_finish (self, job);
            break;
        case PROTO_REL_SKIP:
            s_unreserve (self, job);
            plog_debug ("job %s skipped: %s", job->msg_key, item->reason);
            self->counters.skipped++;
            s_job_finish (self, job);
            break;
        case PROTO_REL_RETURN:
        default:
            //  Not attempted (the worker is stopping): back at once, no failure counted.
            s_unreserve (self, job);
            s_set_state (self, job, JOB_QUEUED);
            job->token = 0;
            job->sj.not_before = 0;
            sched_push (self->sched, &job->sj, self->now);
            self->counters.returned++;
            break;
        }
    }
}

//  A worker stopped heartbeating: its jobs go back to the queue.
static void s_worker_lost (broker_t *self, bworker_t *w, const char *why)
{
    plog_warn ("worker %s lost (%s); %zu job(s) return to the queue", w->id, why, w->job_count);
    self->counters.lost_workers++;
    while (w->jobs) {
        bjob_t *job = w->jobs;
        s_job_unassign (self, job);
        if (job->state != JOB_DISPATCHED)
            continue;   //  committed already: the sink owns it
        s_unreserve (self, job);
        char reason[300];
        snprintf (reason, sizeof reason, "worker %s lost (%s)", w->id, why);
        s_job_failed (self, job, reason, 0);
    }
    zhashx_delete (self->workers, w->key);
}

//  --- dispatch ----------------------------------------------------------------------

static bool s_worker_has_model (const bworker_t *w, const char *model)
{
    for (size_t i = 0; i < w->model_count; i++)
        if (strcmp (w->models[i], model) == 0)
            return true;
    return false;
}

//  Picks the worker for a job: one with the entity's model hot, else the
//  one with the most free credit.
static bworker_t *s_pick_worker (broker_t *self, const char *model)
{
    bworker_t *best = NULL, *hot = NULL;
    for (bworker_t *w = zhashx_first (self->workers); w; w = zhashx_next (self->workers)) {
        uint32_t free_credit = w->credit > w->batch_count ? w->credit - (uint32_t) w->batch_count : 0;
        if (w->draining || free_credit == 0)
            continue;
        if (*model && s_worker_has_model (w, model)) {
            uint32_t hot_free = hot ? hot->credit - (uint32_t) hot->batch_count : 0;
            if (!hot || free_credit > hot_free)
                hot = w;
        }
        uint32_t best_free = best ? best->credit - (uint32_t) best->batch_count : 0;
        if (!best || free_credit > best_free)
            best = w;
    }
    return hot ? hot : best;
}

//  Free slots over all workers that take work.
static size_t s_free_credit (broker_t *self)
{
    size_t total = 0;
    for (bworker_t *w = zhashx_first (self->workers); w; w = zhashx_next (self->workers))
        if (!w->draining)
            total += w->credit;
    return total;
}

static void s_send_batch (broker_t *self, bworker_t *w)
{
    //  Through the outbox: the rate slots these jobs took are stored first.
    proto_jobs_t body = {w->batch, w->batch_count};
    s_reply (self, self->backend, w->route, PROTO_JOB, &body);
    w->credit -= (uint32_t) w->batch_count;
    w->dispatched += w->batch_count;
    w->batch_count = 0;
}

//  How many jobs may be dispatched now: free worker slots, and room under
//  maxPendingResults (jobs dispatched but not yet posted), so that when the
//  sink or its destination falls behind, dispatching waits instead of
//  burying it.
static size_t s_dispatch_budget (broker_t *self)
{
    size_t budget = s_free_credit (self);
    size_t pending = self->state_count[JOB_DISPATCHED] + self->state_count[JOB_HANDED_OFF]
                     + self->state_count[JOB_COMMITTED];
    size_t cap = (size_t) self->config->max_pending_results;
    size_t room = pending < cap ? cap - pending : 0;
    return budget < room ? budget : room;
}

static void s_dispatch (broker_t *self)
{
    //  Each popped job takes one unit of budget, so the loop ends with it.
    for (size_t budget = s_dispatch_budget (self); budget > 0; budget--) {
        sched_job_t *sj = sched_pop (self->sched, self->now);
        if (!sj)
            break;
        bjob_t *job = (bjob_t *) sj;
        const pcfg_entity_t *e = pcfg_entity (self->config, job->sj.entity);
        bworker_t *w = s_pick_worker (self, e->model);
        assert (w);     //  budget > 0 means some worker has a free slot
        s_set_state (self, job, JOB_DISPATCHED);
        job->token = ((uint64_t) self->epoch << 32) | (++self->next_token & 0xffffffffu);
        job->attempt++;
        s_reserve (self, job);
        job->worker = w;
        job->wnext = w->jobs;
        if (w->jobs)
            w->jobs->wprev = job;
        job->wprev = NULL;
        w->jobs = job;
        w->job_count++;
        if (w->batch_count == w->batch_capacity) {
            w->batch_capacity = w->batch_capacity ? w->batch_capacity * 2 : 64;
            w->batch = realloc (w->batch, w->batch_capacity * sizeof (proto_job_t));
        }
        w->batch[w->batch_count++] = (proto_job_t) {
            job->id,       job->token,          job->attempt, job->msg_key,
            e->id,         sched_chat_key (self->sched, job->sj.chat),
            job->priority, (uint64_t) job->created_ms,   (uint64_t) job->sj.expires_at,
            job->payload};
        self->counters.dispatched++;
        //  A full batch goes at once, so large bursts stream to the worker.
        if (w->batch_count >= PROTO_BATCH / 4 || w->batch_count >= w->credit)
            s_send_batch (self, w);
    }
    for (bworker_t *w = zhashx_first (self->workers); w; w = zhashx_next (self->workers))
        if (w->batch_count)
            s_send_batch (self, w);
}

//  --- timers --------------------------------------------------------------------------

static void s_run_timers (broker_t *self)
{
    if (self->store && self->now >= self->next_prune) {
        store_prune (self->store, self->now, self->config->dedupe_retention_s * 1000);
        self->next_prune = self->now + 60000;
    }
    //  Queued jobs that are too old now will never be sent: count them.
    sched_job_t *sj;
    while ((sj = sched_pop_expired (self->sched, self->now))) {
        self->counters.expired++;
        s_job_finish (self, (bjob_t *) sj);
    }
    //  Results that never reached the sink: the job runs again.
    bjob_t *job;
    while ((job = heap_top (&self->deadlines)) && job->deadline <= self->now) {
        heap_pop (&self->deadlines);
        s_unreserve (self, job);
        s_job_failed (self, job, "result did not reach the sink in time", 0);
    }
    if (self->now >= self->next_heartbeat) {
        self->next_heartbeat = self->now + self->config->heartbeat_ms;
        zlistx_t *lost = zlistx_new ();
        for (bworker_t *w = zhashx_first (self->workers); w; w = zhashx_next (self->workers)) {
            if (self->now - w->last_seen > self->config->stale_claim_timeout_ms)
                zlistx_add_end (lost, w);
            else
                s_send_welcome (self, w);
        }
        for (bworker_t *w = zlistx_first (lost); w; w = zlistx_next (lost))
            s_worker_lost (self, w, "no heartbeat within staleClaimTimeout");
        zlistx_destroy (&lost);
    }
}

static int64_t s_next_timer (broker_t *self)
{
    int64_t at = self->next_heartbeat;
    bjob_t *job = heap_top (&self->deadlines);
    if (job && job->deadline < at)
        at = job->deadline;
    //  The scheduler's next moment matters only when a worker can take work;
    //  otherwise a credit arriving wakes the loop.
    int64_t wake = sched_wakeup (self->sched, self->now);
    if (s_dispatch_budget (self) > 0 && wake < at)
        at = wake;
    else {
        //  Expiry still has to run without workers.
        sched_counts_t counts;
        sched_counts (self->sched, &counts);
        if (counts.queued && wake < at && wake > self->now)
            at = wake;
    }
    return at;
}

//  --- messages ----------------------------------------------------------------------------

static void s_malformed (broker_t *self, const char *where, const char *why)
{
    self->counters.malformed++;
    if (plog_limiter_allow (&self->malformed_log, 10))
        plog_warn ("dropped malformed frame on %s: %s", where, why);
}

//  Reads one [routing id][body] message; returns false when nothing is waiting.
static bool s_read_routed (broker_t *self, zsock_t *sock, const char *where)
{
    void *handle = zsock_resolve (sock);
    zmq_msg_t part;
    zmq_msg_init (&part);
    if (zmq_msg_recv (&part, handle, ZMQ_DONTWAIT) == -1) {
        zmq_msg_close (&part);
        return false;
    }
    zframe_t *route = zframe_new (zmq_msg_data (&part), zmq_msg_size (&part));
    int more = zmq_msg_more (&part);
    zmq_msg_close (&part);
    if (!more) {
        s_malformed (self, where, "no body after the routing id");
        zframe_destroy (&route);
        return true;
    }
    zmq_msg_init (&part);
    zmq_msg_recv (&part, handle, 0);
    //  Only single-frame bodies exist; discard any extra parts.
    bool extra = zmq_msg_more (&part);
    while (extra) {
        zmq_msg_t junk;
        zmq_msg_init (&junk);
        zmq_msg_recv (&junk, handle, 0);
        extra = zmq_msg_more (&junk);
        zmq_msg_close (&junk);
    }
    proto_msg_t msg;
    char why[256];
    if (proto_decode (zmq_msg_data (&part), zmq_msg_size (&part), &msg, why, sizeof why) != PROTO_OK)
        s_malformed (self, where, why);
    else {
        bool front = sock == self->frontend;
        switch (msg.type) {
        case PROTO_SUBMIT:
            if (front)
                s_on_submit (self, route, &msg.body.submit);
            break;
        case PROTO_COMMIT:
            if (front)
                s_on_commit (self, route, &msg.body.commit);
            break;
        case PROTO_OUTCOME:
            if (front)
                s_on_outcome (self, route, &msg.body.outcome);
            break;
        case PROTO_STATS:
            if (front)
                s_on_stats (self, route, &msg.body.stats);
            break;
        case PROTO_CTL:
            if (front) {
                int status = 0;
                char *body = broker_ctl_handle (self, &msg.body.ctl, &status);
                proto_ctl_reply_t reply = {msg.body.ctl.req_id, (uint64_t) status, body};
                s_reply (self, self->frontend, route, PROTO_CTL_REPLY, &reply);
                free (body);
            }
            break;
        case PROTO_HEARTBEAT:
            if (!front)
                s_on_heartbeat (self, route, &msg.body.heartbeat);
            break;
        case PROTO_RELEASE:
            if (!front)
                s_on_release (self, route, &msg.body.release);
            break;
        default:
            break;
        }
        if ((front && (msg.type == PROTO_HEARTBEAT || msg.type == PROTO_RELEASE))
            || (!front && msg.type != PROTO_HEARTBEAT && msg.type != PROTO_RELEASE)) {
            char what[64];
            snprintf (what, sizeof what, "%s is not expected here", proto_type_name (msg.type));
            s_malformed (self, where, what);
        }
        proto_msg_release (&msg);
    }
    zmq_msg_close (&part);
    zframe_destroy (&route);
    return true;
}

//  --- life ---------------------------------------------------------------------------------

static void s_json_destructor (void **item)
{
    json_decref (*item);
    *item = NULL;
}

static void s_dead_destructor (void **item)
{
    broker_dead_free ((bdead_t **) item);
}

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
    const char *why = s_accept_one (self, &spec, &duplicate);
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
        s_set_state (self, job, JOB_COMMITTED);
        job->token = row->token;
    }
    else {
        //  Queued, or in flight when the broker stopped: either way, queued now.
        s_set_state (self, job, JOB_QUEUED);
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
static int s_recover (broker_t *self)
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

static void s_config_sched (const pcfg_t *c, sched_config_t *sc, sched_entity_config_t *ents,
                            sched_chat_rule_t *rules)
{
    sc->global.gap_ms = (int64_t) (c->min_seconds_between_any_post * 1000);
    sc->global.per_minute = c->max_total_messages_per_minute;
    sc->global.per_hour = c->max_total_messages_per_hour;
    sc->global_max_in_flight = c->global_max_in_flight;
    sc->aging_ms = c->aging_seconds * 1000;
    sc->entity_count = c->entities.count;
    for (size_t i = 0; i < c->entities.count; i++) {
        const pcfg_entity_t *e = pcfg_entity (c, i);
        ents[i].limit.gap_ms = (int64_t) (e->rate.min_seconds_between_posts * 1000);
        ents[i].limit.per_minute = e->rate.max_posts_per_minute;
        ents[i].limit.per_hour = e->rate.max_posts_per_hour;
        ents[i].max_in_flight = e->max_in_flight ? e->max_in_flight : c->entity_max_in_flight;
    }
    sc->entities = ents;
    const pcfg_chat_limit_t *cl = c->chat_limits.items;
    for (size_t i = 0; i < c->chat_limits.count; i++) {
        rules[i].source = cl[i].source;
        rules[i].chat_kind = cl[i].chat_kind;
        rules[i].limit.gap_ms = (int64_t) (cl[i].rate.min_seconds_between_posts * 1000);
        rules[i].limit.per_minute = cl[i].rate.max_posts_per_minute;
        rules[i].limit.per_hour = cl[i].rate.max_posts_per_hour;
    }
    sc->chat_rule_count = c->chat_limits.count;
    sc->chat_rules = rules;
}

static broker_t *s_broker_new (zsock_t *pipe, const pcfg_t *config)
{
    broker_t *self = calloc (1, sizeof *self);
    self->pipe = pipe;
    self->config = config;
    self->epoch = (uint32_t) (zclock_time () / 1000) ^ (uint32_t) getpid ();
    srandom ((unsigned) (zclock_time () ^ getpid ()));
    s_now (self);
    proto_net_defaults (&self->net);
    self->net.hwm = (int) config->hwm;
    self->net.max_frame_bytes = (int) config->max_frame_bytes;
    self->net.heartbeat_ms = (int) config->heartbeat_ms;

    sched_config_t sc = {0};
    sched_entity_config_t *ents = calloc (config->entities.count + 1, sizeof *ents);
    sched_chat_rule_t *rules = calloc (config->chat_limits.count + 1, sizeof *rules);
    s_config_sched (config, &sc, ents, rules);
    self->sched = sched_new (&sc);
    free (ents);
    free (rules);

    self->jobs = s_u64_table ();
    self->active = zhashx_new ();
    zhashx_set_key_duplicator (self->active, NULL);
    zhashx_set_key_destructor (self->active, NULL);
    self->finished = zhashx_new ();
    self->finished_order = zlistx_new ();
    zlistx_set_destructor (self->finished_order, (zlistx_destructor_fn *) zstr_free);
    self->workers = zhashx_new ();
    zhashx_set_destructor (self->workers, s_worker_free);
    self->dead = zlistx_new ();
    zlistx_set_destructor (self->dead, s_dead_destructor);
    self->poller_stats = zhashx_new ();
    zhashx_set_destructor (self->poller_stats, s_json_destructor);
    heap_init (&self->deadlines, s_deadline_less, offsetof (bjob_t, pos_deadline));
    return self;
}

static void s_broker_destroy (broker_t **self_p)
{
    broker_t *self = *self_p;
    bjob_t *job = zhashx_first (self->jobs);
    while (job) {
        bjob_t *next = zhashx_next (self->jobs);
        s_job_free (&job);
        job = next;
    }
    zhashx_destroy (&self->jobs);
    zhashx_destroy (&self->active);
    zlistx_destroy (&self->finished_order);
    zhashx_destroy (&self->finished);
    zhashx_destroy (&self->workers);
    zlistx_destroy (&self->dead);
    zhashx_destroy (&self->poller_stats);
    heap_destroy (&self->deadlines);
    store_close (&self->store);
    sched_destroy (&self->sched);
    for (size_t i = 0; i < self->outbox_count; i++) {
        zmq_msg_close (&self->outbox[i].body);
        zframe_destroy (&self->outbox[i].route);
    }
    free (self->outbox);
    zsock_destroy (&self->frontend);
    zsock_destroy (&self->backend);
    free (self);
    *self_p = NULL;
}

static int s_bind (broker_t *self, const char *ready_file)
{
    const pcfg_t *c = self->config;
    const char *front = *c->broker_frontend_bind ? c->broker_frontend_bind : c->broker_frontend;
    const char *back = *c->broker_backend_bind ? c->broker_backend_bind : c->broker_backend;
    self->frontend = proto_sock_new (&self->net, ZMQ_ROUTER, front, true, NULL);
    self->backend = proto_sock_new (&self->net, ZMQ_ROUTER, back, true, NULL);
    if (!self->frontend || !self->backend)
        return -1;
    char *fe = proto_sock_endpoint (self->frontend);
    char *be = proto_sock_endpoint (self->backend);
    plog_info ("listening: frontend %s, backend %s; %zu entities", fe, be, c->entities.count);
    json_t *ready = json_object ();
    json_object_set_new (ready, "frontend", json_string (fe));
    json_object_set_new (ready, "backend", json_string (be));
    pdaemon_write_ready (ready_file, ready);
    zstr_free (&fe);
    zstr_free (&be);
    return 0;
}

//  The loop: wait, read in batches, timers, dispatch, store, reply.
//  Returns -1 when the state could not be stored.
static int s_run (broker_t *self)
{
    zmq_pollitem_t items[] = {
        {zsock_resolve (self->pipe), 0, ZMQ_POLLIN, 0},
        {zsock_resolve (self->frontend), 0, ZMQ_POLLIN, 0},
        {zsock_resolve (self->backend), 0, ZMQ_POLLIN, 0},
    };
    for (;;) {
        int64_t now = s_now (self);
        int64_t wait = s_next_timer (self) - now;
        if (wait < 0)
            wait = 0;
        if (zmq_poll (items, 3, wait > 60000 ? 60000 : (long) wait) == -1) {
            if (zmq_errno () == EINTR)
                continue;   //  a signal: the pipe brings $TERM
            break;
        }
        if (items[0].revents & ZMQ_POLLIN) {
            char *command = zstr_recv (self->pipe);
            bool term = !command || streq (command, "$TERM");
            zstr_free (&command);
            if (term)
                break;
        }
        s_now (self);
        for (int i = 0; i < BATCH_READ && s_read_routed (self, self->backend, "backend"); i++)
            ;
        for (int i = 0; i < BATCH_READ && s_read_routed (self, self->frontend, "frontend"); i++)
            ;
        s_run_timers (self);
        s_dispatch (self);
        //  Group commit: everything this iteration changed is stored before
        //  anyone hears about it.
        if (self->store && store_commit (self->store))
            return -1;
        s_flush_outbox (self);
    }
    return 0;
}

void broker_server (zsock_t *pipe, void *args)
{
    broker_args_t *a = args;
    broker_t *self = s_broker_new (pipe, a->config);
    zsock_signal (pipe, 0);
    if (s_recover (self)) {
        zstr_send (pipe, "cannot open the broker's storage");
        s_broker_destroy (&self);
        return;
    }
    if (s_bind (self, a->ready_file)) {
        zstr_send (pipe, "cannot bind the broker's endpoints");
        s_broker_destroy (&self);
        return;
    }
    if (s_run (self)) {
        //  Stop rather than go on with state that is not on disk; a restart recovers.
        zstr_send (pipe, "storage failed; stopping");
        s_broker_destroy (&self);
        return;
    }
    sched_counts_t counts;
    sched_counts (self->sched, &counts);
    plog_info ("stopping with %zu job(s) queued and %zu in flight", counts.queued, counts.in_flight);
    s_broker_destroy (&self);
}
