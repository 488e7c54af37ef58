/*  workers_heartbeat - what workers say: HEARTBEAT and RELEASE. See workers.h.

    A worker's first HEARTBEAT registers it; every HEARTBEAT renews what it
    holds, takes back what it should hold and does not, puts what it lists
    and is not its in the WELCOME's cancel list, and is answered with that
    WELCOME. A RELEASE settles the attempts the worker holds.
*/
#include "broker/workers_int.h"
#include "common/palloc.h"

#include <inttypes.h>
#include <string.h>

//  --- heartbeats -------------------------------------------------------------------------

static void s_set_models (bworker_t *w, const proto_heartbeat_t *hb)
{
    //  Hot models change as LLM servers load and evict them.
    for (size_t i = 0; i < w->model_count; i++)
        free (w->models[i]);
    free (w->models);
    w->models = pcalloc (hb->model_count + 1, sizeof (char *));
    w->model_count = hb->model_count;
    for (size_t i = 0; i < hb->model_count; i++)
        w->models[i] = pstrdup (hb->models[i]);
}

static bworker_t *s_register (bworkers_t *self, const proto_peer_t *peer, const proto_heartbeat_t *hb,
                              int64_t now)
{
    bworker_t *w = pcalloc (1, sizeof *w);
    w->owner = self;
    memcpy (w->route, peer->route, peer->route_size);
    w->route_size = peer->route_size;
    w->key = (bworker_route_t) {w->route, w->route_size};
    w->id = pstrdup (hb->worker_id);
    w->host = pstrdup (hb->host);
    w->user = pstrdup (peer->user);
    w->pid = hb->pid;
    w->last_seen = now;
    ptable_insert (self->by_route, w);
    plog_info ("worker %s joined (%s pid %" PRIu64 ", %" PRIu64 " slots%s%s)", w->id, w->host, w->pid,
               hb->capacity, *w->user ? ", key " : "", w->user);
    return w;
}

static void s_cancel (bworker_t *w, uint64_t job_id, uint64_t token)
{
    w->cancel = pgrow (w->cancel, &w->cancel_capacity, w->cancel_count + 1, sizeof (proto_ref_t));
    w->cancel[w->cancel_count++] = (proto_ref_t) {job_id, token};
    w->owner->counters.cancelled++;
}

//  A small open-addressed set of the refs a heartbeat lists, for the reconciliation.
typedef struct {
    const proto_ref_t **slots;
    size_t mask;
} s_held_t;

static size_t s_held_home (const s_held_t *h, uint64_t job_id)
{
    return (size_t) ptable_hash_u64 (&job_id) & h->mask;
}

static void s_held_build (s_held_t *h, const proto_heartbeat_t *hb)
{
    size_t cap = 16;
    while (cap < hb->held_count * 2)
        cap *= 2;
    h->slots = pcalloc (cap, sizeof (proto_ref_t *));
    h->mask = cap - 1;
    for (size_t i = 0; i < hb->held_count; i++) {
        size_t k = s_held_home (h, hb->held[i].job_id);
        while (h->slots[k])
            k = (k + 1) & h->mask;
        h->slots[k] = &hb->held[i];
    }
}

//  Finds (job_id, token) in the set and marks it seen (so what remains are zombies).
static bool s_held_take (s_held_t *h, uint64_t job_id, uint64_t token)
{
    for (size_t k = s_held_home (h, job_id); h->slots[k]; k = (k + 1) & h->mask) {
        const proto_ref_t *ref = h->slots[k];
        if (ref->job_id == job_id && ref->token == token) {
            //  Mark it taken by pointing at a sentinel that matches nothing.
            static const proto_ref_t taken = {0, 0};
            h->slots[k] = &taken;
            return true;
        }
    }
    return false;
}

//  Reconciles what the broker thinks the worker holds with what it says it holds.
static void s_reconcile (bworkers_t *self, bworker_t *w, const proto_heartbeat_t *hb, int64_t now)
{
    s_held_t held;
    s_held_build (&held, hb);
    //  A job_seq counted by another broker run (sent before the worker read
    //  this run's WELCOME) judges nothing; nor may one past what was sent.
    uint64_t job_seq = hb->epoch == self->epoch ? hb->job_seq : 0;
    uint64_t seen = job_seq < w->last_frame ? job_seq : w->last_frame;
    bjob_t *job = w->jobs;
    while (job) {
        bjob_t *next = job->flight->link.next;
        bool listed = s_held_take (&held, job->id, job->flight->token);
        if (listed || job_seq == 0) {
            //  A worker that reports no frame seq cannot be judged (it predates
            //  leases per job, or has seen nothing yet): its heartbeat renews all.
            bjobs_renew (self->jobs, job, now);
        }
        else if (job->flight->link.frame_seq <= seen) {
            if (job->state == JOB_DISPATCHED) {
                char detail[300];
                snprintf (detail, sizeof detail,
                          "worker %s does not hold it (its JOB frame %" PRIu64 " was lost, or the worker dropped it)",
                          w->id, job->flight->link.frame_seq);
                bjobs_take_back (self->jobs, job, BJOBS_NOT_HELD, detail, now);
            }
            else
                bworkers_unlink (job);     //  committed by the sink already; RELEASE lost
        }
        job = next;
    }
    //  What it listed and is not its: drop them there.
    w->zombies = 0;
    for (size_t k = 0; k <= held.mask; k++) {
        const proto_ref_t *ref = held.slots[k];
        if (ref && ref->job_id) {
            s_cancel (w, ref->job_id, ref->token);
            w->zombies++;
        }
    }
    free (held.slots);
}

void bworkers_heartbeat (bworkers_t *self, const proto_peer_t *peer, const proto_heartbeat_t *hb,
                         int64_t now)
{
    bworker_route_t key = {peer->route, peer->route_size};
    bworker_t *w = ptable_lookup (self->by_route, &key);
    if (w && strcmp (w->user, peer->user) != 0) {
        //  Another identity took over this routing id: not this worker.
        self->counters.refused++;
        if (plog_limiter_allow (&self->log, 10))
            plog_warn ("heartbeat for worker %s from another identity (%s, not %s): refused", w->id,
                       *peer->user ? peer->user : "plain", *w->user ? w->user : "plain");
        return;
    }
    if (!w && peer->route_size > 0 && peer->route[0] == 0) {
        //  ZeroMQ made this routing id: the sender set none (a worker must),
        //  or these are messages left over from a connection its worker
        //  replaced (handover renames the old one). Either way no worker can
        //  be reached there.
        self->counters.refused++;
        if (plog_limiter_allow (&self->log, 10))
            plog_warn ("heartbeat from worker %s on a connection without a routing id of its own"
                       " (a worker must set one; or a connection it replaced): ignored", hb->worker_id);
        return;
    }
    if (!w)
        w = s_register (self, peer, hb, now);
    w->last_seen = now;
    w->unreachable = false;
    uint64_t cap = hb->capacity < (uint64_t) self->config->worker_max_capacity
                       ? hb->capacity
                       : (uint64_t) self->config->worker_max_capacity;
    w->capacity = (uint32_t) cap;
    if (hb->draining && !w->draining)
        plog_info ("worker %s is draining", w->id);
    w->draining = hb->draining != 0;
    s_set_models (w, hb);
    s_reconcile (self, w, hb, now);
    const pcfg_t *c = self->config;
    proto_welcome_t welcome = {self->epoch, (uint64_t) c->heartbeat_ms,
                               (uint64_t) c->stale_claim_timeout_ms, w->last_frame, w->cancel,
                               w->cancel_count, (uint64_t) c->max_hold_ms};
    bout_add (self->out, self->backend, w->route, w->route_size, PROTO_WELCOME, &welcome, NULL, NULL, 0);
    //  Ahead of the frontend's answers, with the JOB frames: a worker reads
    //  its WELCOME before the jobs sent after it.
    bout_urgent (self->out);
    w->cancel_count = 0;
}

void bworkers_release (bworkers_t *self, const proto_peer_t *peer, const proto_release_t *release,
                       int64_t now)
{
    bworker_route_t key = {peer->route, peer->route_size};
    bworker_t *w = ptable_lookup (self->by_route, &key);
    if (w && strcmp (w->user, peer->user) != 0) {
        self->counters.refused++;
        return;
    }
    for (size_t i = 0; i < release->count; i++) {
        const proto_release_item_t *item = &release->items[i];
        bjob_t *job = bjobs_find (self->jobs, item->job_id);
        //  Only the attempt this worker holds can be settled by it.
        if (!job || !job->flight || job->flight->token != item->token || !w
            || job->flight->link.worker != w)
            continue;
        bworkers_unlink (job);
        if (job->state == JOB_DISPATCHED)
            bjobs_released (self->jobs, job, item, now);
        //  Committed already: the sink's COMMIT arrived before this RELEASE.
    }
}
