/*  workers - workers, what they hold, credit, dispatch. See workers.h; what
    workers say (HEARTBEAT, RELEASE), and the reconciliation of what each
    holds, is workers_heartbeat.c. */
#include "broker/workers_int.h"
#include "common/palloc.h"
#include "common/pkey.h"
#include "common/plog.h"
#include "common/ptable.h"

#include <inttypes.h>
#include <string.h>

static uint64_t s_route_hash (const void *key)
{
    const bworker_route_t *r = key;
    return pkey_fp (r->data, r->size).lo;
}

static const void *s_route_of (const void *item)
{
    return &((const bworker_t *) item)->key;
}

static bool s_route_match (const void *item, const void *key)
{
    const bworker_t *w = item;
    const bworker_route_t *r = key;
    return w->route_size == r->size && memcmp (w->route, r->data, r->size) == 0;
}

bworkers_t *bworkers_new (const pcfg_t *config, bjobs_t *jobs, bout_t *out, zsock_t *backend,
                          uint64_t epoch)
{
    bworkers_t *self = pcalloc (1, sizeof *self);
    self->config = config;
    self->jobs = jobs;
    self->out = out;
    self->backend = backend;
    self->epoch = epoch;
    self->by_route = ptable_new (s_route_hash, s_route_of, s_route_match);
    return self;
}

static void s_worker_free (bworker_t *w)
{
    free (w->id);
    free (w->host);
    free (w->user);
    for (size_t i = 0; i < w->model_count; i++)
        free (w->models[i]);
    free (w->models);
    free (w->batch);
    free (w->push);
    free (w->cancel);
    free (w);
}

void bworkers_destroy (bworkers_t **self_p)
{
    bworkers_t *self = *self_p;
    if (!self)
        return;
    size_t cursor = 0;
    bworker_t *w;
    while ((w = ptable_next (self->by_route, &cursor))) {
        //  The jobs stay with the job table, which frees them.
        for (bjob_t *job = w->jobs; job; job = job->flight->link.next)
            job->flight->link.worker = NULL;
        s_worker_free (w);
    }
    ptable_destroy (&self->by_route);
    free (self);
    *self_p = NULL;
}

bool bworkers_is_silent (const bworker_t *w, int64_t now)
{
    return w && now - w->last_seen >= w->owner->config->stale_claim_timeout_ms;
}

const char *bworkers_name (const bworker_t *worker)
{
    return worker ? worker->id : "-";
}

//  --- what each worker holds --------------------------------------------------------

//  A dispatched job (it has its flight) joins the worker's list.
static void s_link (bworker_t *w, bjob_t *job, uint64_t frame_seq)
{
    if (job->flight->link.worker)
        bworkers_unlink (job);      //  never in two lists (a list with a cycle never ends)
    job->flight->link = (bjob_link_t) {w, NULL, w->jobs, frame_seq};
    if (w->jobs)
        w->jobs->flight->link.prev = job;
    w->jobs = job;
    w->job_count++;
}

void bworkers_unlink (bjob_t *job)
{
    bjob_link_t *link = job->flight ? &job->flight->link : NULL;
    bworker_t *w = link ? link->worker : NULL;
    if (!w)
        return;
    if (link->prev)
        link->prev->flight->link.next = link->next;
    else
        w->jobs = link->next;
    if (link->next)
        link->next->flight->link.prev = link->prev;
    if (w->alone == job)
        w->alone = NULL;
    w->job_count--;
    *link = (bjob_link_t) {NULL, NULL, NULL, 0};
}

static uint32_t s_credit (const bworker_t *w)
{
    size_t used = w->job_count + w->zombies;
    if (w->draining || w->alone || w->reserved || w->unreachable || used >= w->capacity)
        return 0;
    return w->capacity - (uint32_t) used;
}

//  --- dispatching ---------------------------------------------------------------------------

size_t bworkers_free_credit (bworkers_t *self)
{
    size_t total = 0, cursor = 0;
    bworker_t *w;
    while ((w = ptable_next (self->by_route, &cursor)))
        total += s_credit (w);
    return total;
}

static bool s_has_model (const bworker_t *w, const char *model)
{
    for (size_t i = 0; i < w->model_count; i++)
        if (strcmp (w->models[i], model) == 0)
            return true;
    return false;
}

//  A worker for a job: one with the entity's model hot, else the one with
//  the most free credit. With `idle`, only a worker that holds nothing.
static bworker_t *s_pick (bworkers_t *self, const char *model, bool idle)
{
    bworker_t *best = NULL, *hot = NULL;
    uint32_t best_free = 0, hot_free = 0;
    size_t cursor = 0;
    bworker_t *w;
    while ((w = ptable_next (self->by_route, &cursor))) {
        uint32_t free_credit = s_credit (w);
        if (free_credit == 0 || (idle && w->job_count + w->zombies > 0))
            continue;
        if (*model && s_has_model (w, model) && free_credit > hot_free) {
            hot = w;
            hot_free = free_credit;
        }
        if (free_credit > best_free) {
            best = w;
            best_free = free_credit;
        }
    }
    return hot ? hot : best;
}

static void s_frame_failed (void *arg, const uint8_t *route, size_t route_size, uint64_t seq)
{
    bworkers_t *self = arg;
    bworker_route_t key = {route, route_size};
    bworker_t *w = ptable_lookup (self->by_route, &key);
    if (!w)
        return;
    self->counters.reclaimed_frames++;
    //  Its connection is gone (or full): send it nothing more until a heartbeat
    //  proves the route is back, or the jobs taken back here would go straight
    //  back to it, turn after turn.
    w->unreachable = true;
    bjob_t *job = w->jobs;
    while (job) {
        bjob_t *next = job->flight->link.next;
        if (job->flight->link.frame_seq == seq && job->state == JOB_DISPATCHED)
            bjobs_take_back (self->jobs, job, BJOBS_NOT_SENT, "its JOB frame could not be sent",
                             zclock_time ());
        job = next;
    }
}

void bworkers_push_to (bworkers_t *self, zsock_t *frontend, const uint8_t *route,
                       size_t route_size)
{
    if (route_size > sizeof self->sink_route)
        route_size = 0;
    self->sink_sock = route_size ? frontend : NULL;
    self->sink_route_size = route_size;
    if (route_size)
        memcpy (self->sink_route, route, route_size);
}

//  The sink is gone (or full): push nothing more until it speaks again. Its
//  results are asked about with COMMIT meanwhile, which is only slower.
static void s_push_failed (void *arg, const uint8_t *route, size_t route_size, uint64_t seq)
{
    (void) seq;
    bworkers_t *self = arg;
    if (route_size == self->sink_route_size && memcmp (route, self->sink_route, route_size) == 0)
        bworkers_push_to (self, NULL, NULL, 0);
}

static void s_send_batch (bworkers_t *self, bworker_t *w)
{
    if (!w->batch_count)
        return;
    proto_jobs_t body = {w->batch, w->batch_count, w->last_frame};
    bout_add (self->out, self->backend, w->route, w->route_size, PROTO_JOB, &body, s_frame_failed,
              self, w->last_frame);
    bout_urgent (self->out);
    //  The verdicts go after the JOB, so they do not delay it: they have one
    //  hop to make, the JOB's result two and a reply to write.
    if (self->sink_sock) {
        proto_verdicts_t push = {PROTO_VERDICT_PUSHED, w->push, w->batch_count,
                                 (uint64_t) self->config->stale_claim_timeout_ms};
        bout_add (self->out, self->sink_sock, self->sink_route, self->sink_route_size,
                  PROTO_VERDICT, &push, s_push_failed, self, 0);
        bout_urgent (self->out);
        self->counters.pushed += w->batch_count;
    }
    w->dispatched += w->batch_count;
    w->batch_count = 0;
}

static void s_add_to_batch (bworkers_t *self, bworker_t *w, bjob_t *job)
{
    if (w->batch_count == 0)
        w->last_frame = ++self->frame_seq;
    s_link (w, job, w->last_frame);
    //  The JOB item and the pushed verdict name the job with the same fields.
    proto_verdict_item_t v = {.job_id = job->id, .token = job->flight->token,
                              .verdict = PROTO_VERDICT_POST};
    bjobs_verdict_fields (self->jobs, job, &v);
    w->batch = pgrow (w->batch, &w->batch_capacity, w->batch_count + 1, sizeof (proto_job_t));
    w->batch[w->batch_count] = (proto_job_t) {v.job_id,     v.token,     job->attempt,
                                              v.msg_key,    v.entity,    v.chat,
                                              v.priority,   v.created_ms, v.expires_ms,
                                              v.payload};
    if (self->sink_sock) {
        w->push = pgrow (w->push, &w->push_capacity, w->batch_count + 1,
                         sizeof (proto_verdict_item_t));
        w->push[w->batch_count] = v;
    }
    w->batch_count++;
    //  A full frame goes at once, so a large burst streams out.
    if (w->batch_count >= PROTO_BATCH / 4)
        s_send_batch (self, w);
}

//  A suspect runs alone. Returns true when it went out.
static bool s_dispatch_alone (bworkers_t *self, bjob_t *job, const char *model, int64_t now)
{
    bworker_t *w = s_pick (self, model, true);
    if (!w && self->reserved && self->reserved->job_count + self->reserved->zombies == 0) {
        w = self->reserved;
        w->reserved = false;
        if (s_credit (w) == 0)
            w = NULL;
    }
    if (!w) {
        //  Empty one worker out for it (it gets nothing new meanwhile); try again shortly.
        if (!self->reserved) {
            size_t cursor = 0;
            bworker_t *least = NULL, *c;
            while ((c = ptable_next (self->by_route, &cursor)))
                if (!c->draining && !c->alone && (!least || c->job_count < least->job_count))
                    least = c;
            if (least) {
                least->reserved = true;
                self->reserved = least;
            }
        }
        bjobs_unpop (self->jobs, job, now, now + self->config->heartbeat_ms / 2);
        return false;
    }
    if (self->reserved == w) {
        w->reserved = false;
        self->reserved = NULL;
    }
    job->alone = true;
    s_add_to_batch (self, w, job);
    w->alone = job;
    s_send_batch (self, w);
    plog_info ("job %s for %s runs alone on worker %s: %u worker(s) died holding it",
               bjob_msg_key (job), bjobs_entity (self->jobs, job), w->id, job->crashes);
    return true;
}

void bworkers_dispatch (bworkers_t *self, size_t budget, int64_t now)
{
    bool suspect_deferred = false;
    for (; budget > 0; budget--) {
        bjob_t *job = bjobs_next (self->jobs, now);
        if (!job)
            break;
        const pcfg_entity_t *e = pcfg_entity (self->config, job->sj.entity);
        if (job->crashes >= BJOB_SUSPECT_CRASHES) {
            //  One suspect at a time waits for a worker to empty out.
            if (suspect_deferred)
                bjobs_unpop (self->jobs, job, now, now + self->config->heartbeat_ms / 2);
            else if (!s_dispatch_alone (self, job, e->model, now))
                suspect_deferred = true;
            continue;
        }
        bworker_t *w = s_pick (self, e->model, false);
        if (!w) {
            //  Every worker is full (a reservation took the last slot): later.
            bjobs_unpop (self->jobs, job, now, now);
            break;
        }
        s_add_to_batch (self, w, job);
    }
    size_t cursor = 0;
    bworker_t *w;
    while ((w = ptable_next (self->by_route, &cursor)))
        s_send_batch (self, w);
}

//  --- time -------------------------------------------------------------------------------------

static void s_lose (bworkers_t *self, bworker_t *w, int64_t now)
{
    plog_warn ("worker %s lost (no heartbeat within staleClaimTimeout); %zu job(s) return to the queue",
               w->id, w->job_count);
    self->counters.lost_workers++;
    char detail[300];
    snprintf (detail, sizeof detail, "worker %s lost (no heartbeat within staleClaimTimeout) holding %zu job(s)",
              w->id, w->job_count);
    while (w->jobs) {
        bjob_t *job = w->jobs;
        if (job->state == JOB_DISPATCHED)
            bjobs_take_back (self->jobs, job, BJOBS_WORKER_LOST, detail, now);
        else
            bworkers_unlink (job);
    }
    if (self->reserved == w)
        self->reserved = NULL;
    ptable_remove (self->by_route, &w->key);
    s_worker_free (w);
}

void bworkers_tick (bworkers_t *self, int64_t now)
{
    for (;;) {
        size_t cursor = 0;
        bworker_t *w, *lost = NULL;
        while ((w = ptable_next (self->by_route, &cursor)))
            if (now - w->last_seen > self->config->stale_claim_timeout_ms) {
                lost = w;
                break;
            }
        if (!lost)
            return;
        s_lose (self, lost, now);
    }
}

int64_t bworkers_wakeup (bworkers_t *self, int64_t now)
{
    (void) now;
    int64_t at = INT64_MAX;
    size_t cursor = 0;
    bworker_t *w;
    while ((w = ptable_next (self->by_route, &cursor)))
        if (w->last_seen + self->config->stale_claim_timeout_ms + 1 < at)
            at = w->last_seen + self->config->stale_claim_timeout_ms + 1;
    return at;
}

//  --- looking ------------------------------------------------------------------------------------

size_t bworkers_count (bworkers_t *self)
{
    return ptable_size (self->by_route);
}

size_t bworkers_credit (bworkers_t *self)
{
    size_t total = 0, cursor = 0;
    bworker_t *w;
    while ((w = ptable_next (self->by_route, &cursor)))
        total += s_credit (w);
    return total;
}

const bworkers_counters_t *bworkers_counters (bworkers_t *self)
{
    return &self->counters;
}

json_t *bworkers_json (bworkers_t *self, int64_t now)
{
    json_t *list = json_array ();
    size_t cursor = 0;
    bworker_t *w;
    while ((w = ptable_next (self->by_route, &cursor))) {
        json_t *models = json_array ();
        for (size_t i = 0; i < w->model_count; i++)
            json_array_append_new (models, json_string (w->models[i]));
        json_array_append_new (
            list, json_pack ("{s:s, s:s, s:I, s:i, s:i, s:i, s:I, s:b, s:I, s:o, s:b, s:s}", "id",
                             w->id, "host", w->host, "pid", (json_int_t) w->pid, "capacity",
                             (int) w->capacity, "credit", (int) s_credit (w), "jobs",
                             (int) w->job_count, "dispatched", (json_int_t) w->dispatched,
                             "draining", w->draining, "idle_ms", (json_int_t) (now - w->last_seen),
                             "models", models, "alone", w->alone != NULL, "key", w->user));
    }
    return list;
}
