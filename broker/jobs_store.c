/*  jobs_store - what the broker stores of its jobs, and how they come back.

    A job is stored whole when it is accepted (synced before the ACK), when
    the sink commits it, and when it is queued again after something went
    wrong; a finished one leaves a tombstone and its pair's fingerprint.
    In flight is not stored: a restart queues such a job again anyway.
*/
#include "broker/jobs_int.h"
#include "broker/workers.h"
#include "common/palloc.h"

#include <inttypes.h>
#include <string.h>

//  --- durability ------------------------------------------------------------------------

store_job_t bjobs__row (bjobs_t *self, const bjob_t *job)
{
    proto_bin_t payload = bjob_payload (job);
    return (store_job_t) {job->id,
                          bjobs__entity (self, job),
                          bjob_msg_key (job),
                          sched_chat_key (self->sched, job->sj.chat),
                          sched_chat_kind (self->sched, job->sj.chat),
                          job->priority,
                          job->created_ms,
                          job->sj.enqueued_at,
                          job->sj.not_before,
                          job->sj.expires_at,
                          job->attempt,
                          job->failures,
                          job->crashes,
                          job->state == JOB_COMMITTED,
                          job->state == JOB_COMMITTED ? bjob_token (job) : 0,
                          payload.data,
                          payload.size,
                          job->history ? job->history : ""};
}

//  Stores the job whole; `sync` when an acknowledgement depends on it.
void bjobs__put (bjobs_t *self, bjob_t *job, bool sync)
{
    if (self->store) {
        store_job_t row = bjobs__row (self, job);
        store_job_put (self->store, &job->anchor, &row, sync);
    }
}

void bjobs__persist (bjobs_t *self, bjob_t *job)
{
    bjobs__put (self, job, false);
}

//  A finished pair is remembered (and stored) so a resubmission is a duplicate.
void bjobs__remember_done (bjobs_t *self, pkey_fp_t fp, int64_t now)
{
    if (pseen_has (self->finished, fp))
        return;
    uint32_t tag = self->store ? store_done (self->store, fp, now) : 0;
    pseen_add (self->finished, fp, now, tag);
}

//  A dispatch takes rate slots; they are stored when any limit applies, so
//  a restart does not allow a burst.
void bjobs__reserve (bjobs_t *self, bjob_t *job)
{
    if (self->store && sched_limited (self->sched, job->sj.entity, job->sj.chat))
        store_reserve (self->store, job->id, job->sj.reserved_at, bjobs__entity (self, job),
                       sched_chat_key (self->sched, job->sj.chat),
                       sched_chat_kind (self->sched, job->sj.chat));
}

//  The job was not posted and will not be: its rate slots are free again.
void bjobs__unreserve (bjobs_t *self, bjob_t *job, int64_t now)
{
    if (self->store && job->sj.reserved_at)
        store_unreserve (self->store, job->id);
    sched_unreserve (self->sched, &job->sj, now);
}

//  --- dead letters retried, pauses, pruning ------------------------------------------

void bjobs_requeue_dead (bjobs_t *self, const bdead_t *dead, int64_t now)
{
    //  A retried dead letter is a new job for the same (message, entity).
    pkey_fp_t fp = pkey_pair_fp (dead->entity, dead->msg_key);
    uint32_t tag = 0;
    if (pseen_remove (self->finished, fp, &tag) && self->store)
        store_forget_done (self->store, fp, tag);
    proto_job_spec_t spec = {dead->msg_key, dead->entity, dead->chat, dead->chat_kind, dead->priority,
                             (uint64_t) now, dead->payload};
    const char *why = NULL;
    if (bjobs_accept (self, &spec, now, &why) == BJOBS_INVALID)
        plog_warn ("dead letter %" PRIu64 " not retried: %s", dead->id, why);
}

void bjobs_set_paused (bjobs_t *self, int entity, bool paused, int64_t now)
{
    sched_pause (self->sched, entity, paused, now);
    if (self->store)
        store_set_paused (self->store,
                          entity < 0 ? "*" : pcfg_entity (self->config, (size_t) entity)->id, paused);
}

void bjobs_prune (bjobs_t *self, int64_t now)
{
    pseen_prune (self->finished, now);
    size_t freed = sched_forget_idle (self->sched);
    if (freed)
        plog_debug ("scheduler: freed the state of %zu idle (chat, entity) pairs; %zu kept", freed,
                    sched_flow_count (self->sched));
    if (self->store)
        store_prune (self->store, now);
}

//  --- recovery ---------------------------------------------------------------------------------

//  Migration: the store asks for an object to be written again.
static void s_rewrite (void *arg, store_anchor_t *anchor)
{
    bjobs_t *self = arg;
    if (anchor->kind == STORE_ANCHOR_JOB)
        bjobs__persist (self, PJOURNAL_CONTAINER (anchor, bjob_t, anchor));
    else if (anchor->kind == STORE_ANCHOR_DEAD)
        bdlq_rewrite (self->dlq, anchor);
}

//  A job and its sort key, side by side: sorting a million jobs by reading
//  each one's fields at every comparison was cache miss after cache miss.
typedef struct {
    int64_t enqueued_at;
    uint64_t id;
    bjob_t *job;
} s_order_t;

//  While loading, a job that a newer record replaced or removed keeps this
//  state and its place in the load order; finalisation frees it.
#define JOB_SUPERSEDED UINT8_MAX

typedef struct {
    bjobs_t *self;
    int64_t now;
    //  Every job loaded, in the order loaded: close to the order queued,
    //  and the order the records sit in memory.
    s_order_t *order;
    size_t count, capacity;
} s_load_t;

//  Takes a loaded job out of the tables; it stays in the load order.
static void s_supersede (bjobs_t *self, bjob_t *job)
{
    store_anchor_drop (self->store, &job->anchor);
    ptable_remove (self->by_id, &job->id);
    ptable_remove (self->by_pair, job->pair);
    job->state = JOB_SUPERSEDED;
}

static void s_load_job (void *arg, const store_job_t *row, uint64_t segment)
{
    s_load_t *load = arg;
    bjobs_t *self = load->self;
    //  Both tables' slots are asked for first and read last: at a million
    //  jobs each lookup is a cache miss, and these two overlap with each
    //  other and with making the record.
    uint64_t id_hash = ptable_hash_key (self->by_id, &row->id);
    ptable_prefetch (self->by_id, id_hash);
    bjob_t *job = bjobs__job_new (row->id, row->entity, row->msg_key, row->payload, row->payload_size);
    uint64_t pair_hash = ptable_hash_key (self->by_pair, job->pair);
    ptable_prefetch (self->by_pair, pair_hash);
    job->priority = (uint8_t) row->priority;
    job->created_ms = row->created_ms;
    job->attempt = row->attempt;
    job->failures = row->failures;
    job->crashes = (uint16_t) (row->crashes < UINT16_MAX ? row->crashes : UINT16_MAX);
    job->history = *row->history ? pstrdup (row->history) : NULL;
    if (row->committed)
        bjobs__flight (job)->token = row->token;
    job->state = row->committed ? JOB_COMMITTED : JOB_QUEUED;     //  counted when finalised
    job->sj.priority = job->priority;
    job->sj.not_before = row->not_before;
    job->sj.expires_at = row->expires_ms;
    job->sj.enqueued_at = row->enqueued_ms;
    //  An entity the configuration lost is found out at finalisation (UINT16_MAX).
    int entity = pcfg_entity_index (self->config, row->entity);
    job->sj.entity = entity < 0 ? UINT16_MAX : (uint16_t) entity;
    if (row->id > self->next_job_id)
        self->next_job_id = row->id;
    //  A newer version replaces the one loaded before.
    bjob_t *old = ptable_lookup_hashed (self->by_id, &row->id, id_hash);
    if (old)
        s_supersede (self, old);
    if (ptable_lookup_hashed (self->by_pair, job->pair, pair_hash)) {
        plog_warn ("recovered job %" PRIu64 " repeats the active pair %s/%s; dropped", row->id,
                   row->entity, row->msg_key);
        bjobs__job_free (job);
        return;
    }
    char source[128];
    bjobs__chat_source (row->chat, source, sizeof source);
    job->sj.chat = sched_chat_intern (self->sched, row->chat, source, row->chat_kind);
    ptable_insert_hashed (self->by_id, job, id_hash);
    ptable_insert_hashed (self->by_pair, job, pair_hash);
    store_anchor_loaded (self->store, &job->anchor, STORE_ANCHOR_JOB, segment);
    load->order = pgrow (load->order, &load->capacity, load->count + 1, sizeof (s_order_t));
    load->order[load->count++] = (s_order_t) {row->enqueued_ms, row->id, job};
}

static void s_load_job_gone (void *arg, uint64_t id)
{
    s_load_t *load = arg;
    bjobs_t *self = load->self;
    bjob_t *job = ptable_lookup (self->by_id, &id);
    if (job)
        s_supersede (self, job);
}

static void s_load_dead (void *arg, const store_dead_t *d, uint64_t segment)
{
    s_load_t *load = arg;
    bdead_t entry = {d->id,       (char *) d->msg_key, (char *) d->entity, (char *) d->chat,
                     (char *) d->chat_kind, (uint8_t) d->priority, d->maybe_posted, d->created_ms,
                     d->dead_at,  d->attempts, (char *) d->reason, (char *) d->history,
                     {d->payload, d->payload_size}, {{0, NULL, NULL}, 0}};
    bdlq_load (load->self->dlq, &entry, segment);
}

static void s_load_dead_gone (void *arg, uint64_t id)
{
    s_load_t *load = arg;
    bdlq_load_gone (load->self->dlq, id);
}

static void s_load_reservation (void *arg, int64_t at, const char *entity, const char *chat,
                                const char *chat_kind)
{
    s_load_t *load = arg;
    bjobs_t *self = load->self;
    char source[128];
    bjobs__chat_source (chat, source, sizeof source);
    sched_restore_reservation (self->sched, pcfg_entity_index (self->config, entity),
                               sched_chat_intern (self->sched, chat, source, chat_kind), at);
}

static void s_load_paused (void *arg, const char *entity, bool paused)
{
    s_load_t *load = arg;
    bjobs_t *self = load->self;
    int index = streq (entity, "*") ? -1 : pcfg_entity_index (self->config, entity);
    if (index >= 0 || streq (entity, "*")) {
        sched_pause (self->sched, index, paused, load->now);
        plog_info ("%s is paused (since before the restart)", entity);
    }
}

static int s_by_enqueue (const void *a, const void *b)
{
    const s_order_t *x = a, *y = b;
    if (x->enqueued_at != y->enqueued_at)
        return x->enqueued_at < y->enqueued_at ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

//  After loading: every job where it belongs, in the order it was first
//  queued. The journal holds them in nearly that order (a job written again
//  moves to the end), so the sort is often skipped.
static void s_finalise (bjobs_t *self, s_load_t *load, int64_t now)
{
    s_order_t *list = load->order;
    size_t k = load->count;
    bool sorted = true;
    for (size_t i = 1; i < k && sorted; i++)
        sorted = s_by_enqueue (&list[i - 1], &list[i]) <= 0;
    if (!sorted)
        qsort (list, k, sizeof (s_order_t), s_by_enqueue);
    bjob_t *job;
    for (size_t i = 0; i < k; i++) {
        job = list[i].job;
        int state = job->state;
        if (state == JOB_SUPERSEDED) {
            bjobs__job_free (job);
            continue;
        }
        job->state = 0;
        if (job->sj.entity == UINT16_MAX) {
            //  The configuration lost this entity: nobody can answer, so a person decides.
            const char *entity = job->pair;
            char name[600];
            snprintf (name, sizeof name, "%.*s", (int) (job->msg_off - 1), entity);
            char reason[700];
            snprintf (reason, sizeof reason, "entity \"%s\" is no longer configured", name);
            bdead_t entry = {0, (char *) bjob_msg_key (job), name,
                             (char *) sched_chat_key (self->sched, job->sj.chat),
                             (char *) sched_chat_kind (self->sched, job->sj.chat), job->priority,
                             false, job->created_ms, now, job->attempt, reason,
                             job->history ? job->history : "", bjob_payload (job),
                             {{0, NULL, NULL}, 0}};
            bdlq_add (self->dlq, &entry);
            plog_warn ("recovered job %s for unknown entity %s: dead-lettered", bjob_msg_key (job), name);
            store_job_gone (self->store, &job->anchor, job->id);
            ptable_remove (self->by_id, &job->id);
            ptable_remove (self->by_pair, job->pair);
            bjobs__job_free (job);
            continue;
        }
        if (state == JOB_COMMITTED) {
            //  The sink holds it under this token; it must renew its hold within a lease.
            bjobs__set_state (self, job, JOB_COMMITTED);
            bjobs__set_deadline (self, job, now + self->config->stale_claim_timeout_ms);
        }
        else {
            //  Queued, or in flight when the broker stopped: either way, queued now.
            bjobs__set_state (self, job, JOB_QUEUED);
            sched_push (self->sched, &job->sj, now);
        }
    }
    free (list);
}

int bjobs_recover (bjobs_t *self, int64_t now)
{
    if (!self->store)
        return 0;
    store_set_owner (self->store, s_rewrite, self, self->finished);
    s_load_t load = {self, now, NULL, 0, 0};
    store_callbacks_t fns = {s_load_job,         s_load_job_gone, s_load_dead, s_load_dead_gone,
                             s_load_reservation, s_load_paused};
    if (store_load (self->store, now, self->config->dedupe_retention_s * 1000, &fns, &load)) {
        //  The jobs still in the tables go with them; the replaced ones here.
        for (size_t i = 0; i < load.count; i++)
            if (load.order[i].job->state == JOB_SUPERSEDED)
                bjobs__job_free (load.order[i].job);
        free (load.order);
        return -1;
    }
    s_finalise (self, &load, now);
    if (store_last_job_id (self->store) > self->next_job_id)
        self->next_job_id = store_last_job_id (self->store);
    return 0;
}
