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
    read what is there in batches, run timers, dispatch, store the changes,
    and send the replies that waited for the store. The job lifecycle and
    recovery live in broker_jobs.c.
*/
#include "broker/broker_int.h"
#include "common/plog.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BATCH_READ        512     //  frames read from one socket per iteration
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

static bool s_deadline_less (const void *a, const void *b)
{
    return ((const bjob_t *) a)->deadline < ((const bjob_t *) b)->deadline;
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

//  --- frontend: SUBMIT ------------------------------------------------------------

static void s_on_submit (broker_t *self, zframe_t *route, const proto_submit_t *submit)
{
    proto_ack_t ack = {submit->seq, 0, 0, NULL, 0};
    proto_reject_t rejected[64];
    for (size_t i = 0; i < submit->count; i++) {
        bool duplicate;
        const char *why = broker_accept (self, &submit->items[i], &duplicate);
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
    broker_enforce_queue_limit (self);
    s_reply (self, self->frontend, route, PROTO_ACK, &ack);
}

//  --- frontend: COMMIT and OUTCOME from the sink ---------------------------------

static void s_on_commit (broker_t *self, zframe_t *route, const proto_commit_t *commit)
{
    proto_verdicts_t answer = {commit->seq, NULL, commit->count};
    answer.items = calloc (commit->count ? commit->count : 1, sizeof (proto_verdict_item_t));
    for (size_t i = 0; i < commit->count; i++) {
        const proto_commit_item_t *ref = &commit->items[i];
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
                broker_set_state (self, job, JOB_COMMITTED);
                heap_remove (&self->deadlines, job);
                broker_persist (self, job);
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
            broker_job_finish (self, job);
            break;
        case PROTO_OUT_DUPLICATE:
            self->counters.duplicate_posts++;
            broker_job_finish (self, job);
            break;
        case PROTO_OUT_EXPIRED:
            broker_unreserve (self, job);
            self->counters.expired++;
            broker_job_finish (self, job);
            break;
        case PROTO_OUT_FAILED:
            broker_unreserve (self, job);
            broker_append_history (job, self->now, item->reason);
            broker_dead_letter (self, job, item->reason);
            break;
        case PROTO_OUT_IN_DOUBT:
        default:
            broker_append_history (job, self->now, item->reason);
            broker_dead_letter (self, job, item->reason);
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
            broker_job_unassign (self, job);
            continue;
        }
        if (job->state != JOB_DISPATCHED)
            continue;
        broker_job_unassign (self, job);
        switch (item->status) {
        case PROTO_REL_DONE:
            broker_set_state (self, job, JOB_HANDED_OFF);
            job->deadline = self->now + self->config->stale_claim_timeout_ms;
            heap_push (&self->deadlines, job);
            break;
        case PROTO_REL_RETRY:
            broker_unreserve (self, job);
            broker_job_failed (self, job, item->reason, (int64_t) item->retry_after_ms);
            break;
        case PROTO_REL_FAIL:
            broker_unreserve (self, job);
            broker_append_history (job, self->now, item->reason);
            broker_dead_letter (self, job, item->reason);
            break;
        case PROTO_REL_EXPIRED:
            broker_unreserve (self, job);
            self->counters.expired++;
            broker_job_finish (self, job);
            break;
        case PROTO_REL_SKIP:
            broker_unreserve (self, job);
            plog_debug ("job %s skipped: %s", job->msg_key, item->reason);
            self->counters.skipped++;
            broker_job_finish (self, job);
            break;
        case PROTO_REL_RETURN:
        default:
            //  Not attempted (the worker is stopping): back at once, no failure counted.
            broker_unreserve (self, job);
            broker_set_state (self, job, JOB_QUEUED);
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
        broker_job_unassign (self, job);
        if (job->state != JOB_DISPATCHED)
            continue;   //  committed already: the sink owns it
        broker_unreserve (self, job);
        char reason[300];
        snprintf (reason, sizeof reason, "worker %s lost (%s)", w->id, why);
        broker_job_failed (self, job, reason, 0);
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
        broker_set_state (self, job, JOB_DISPATCHED);
        job->token = ((uint64_t) self->epoch << 32) | (++self->next_token & 0xffffffffu);
        job->attempt++;
        broker_reserve (self, job);
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
        broker_job_finish (self, (bjob_t *) sj);
    }
    //  Results that never reached the sink: the job runs again.
    bjob_t *job;
    while ((job = heap_top (&self->deadlines)) && job->deadline <= self->now) {
        heap_pop (&self->deadlines);
        broker_unreserve (self, job);
        broker_job_failed (self, job, "result did not reach the sink in time", 0);
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
    if (proto_sock_admit (sock, zframe_data (route), zframe_size (route), &part, NULL, why, sizeof why)
        || proto_decode (zmq_msg_data (&part), zmq_msg_size (&part), &msg, why, sizeof why) != PROTO_OK)
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
    proto_net_from_config (&self->net, config, "broker");

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
        broker_job_free (&job);
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
    self->frontend = proto_sock_new (&self->net, ZMQ_ROUTER, front, true, NULL, PROTO_PORT_FRONTEND);
    self->backend = proto_sock_new (&self->net, ZMQ_ROUTER, back, true, NULL, PROTO_PORT_BACKEND);
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
    if (broker_recover (self)) {
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
