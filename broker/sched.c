/*  sched - the broker's scheduler. See sched.h for the rules.

    Structure. Jobs of one (entity, chat) pair form a flow: a heap of its
    ready jobs by (rank, seq). An entity holds a heap of its flows keyed by
    (head rank, flow's last-served stamp, head seq), so its chats take turns
    within a rank. Entities that may dispatch now sit in the ready heap,
    keyed by (best head rank, entity's virtual time, last-served stamp), so
    entities take turns within a rank, weighted by their rate limits: each
    dispatch advances an entity's virtual time by the inverse of its posts
    per minute, so under a binding global limit an entity allowed 20 posts a
    minute gets twice the turns of one allowed 10, and none runs out of its
    own budget early while the others leave global slots unused. An entity blocked by its rate limit waits in a
    timer heap until its limit lifts; one blocked by its concurrency cap or
    a pause waits for that event. A flow whose chat is rate-limited is
    parked on the chat, which waits in its own timer heap; when it lifts,
    the chat's parked flows go back to their entities. Delayed jobs wait in
    a heap by not-before time; queued jobs are also in an expiry heap.

    The rate slots (when a limit allows the next dispatch, what a dispatch
    takes, gives back or moves) are sched_limits.c's; the records both
    files read are in sched_int.h.
*/
#include "broker/sched_int.h"
#include "common/palloc.h"

#include <czmq.h>
#include <stdlib.h>
#include <string.h>

//  --- orderings -------------------------------------------------------------------

static bool s_job_before (const sched_job_t *a, const sched_job_t *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->seq < b->seq;
}

static bool s_job_less (const void *a, const void *b)
{
    return s_job_before (a, b);
}

static bool s_delay_less (const void *a, const void *b)
{
    const sched_job_t *x = a, *y = b;
    return x->not_before != y->not_before ? x->not_before < y->not_before : x->seq < y->seq;
}

static bool s_expiry_less (const void *a, const void *b)
{
    const sched_job_t *x = a, *y = b;
    return x->expires_at != y->expires_at ? x->expires_at < y->expires_at : x->seq < y->seq;
}

//  Flows and entities are ordered by keys copied from their top job, not
//  read through it: with a thousand entities, following two pointers per
//  comparison into jobs scattered over memory was a fifth of the broker's
//  time. A key is copied whenever the top may have changed, just before the
//  heap is told (s_flow_key, s_entity_key).
static bool s_flow_less (const void *a, const void *b)
{
    const flow_t *x = a, *y = b;
    if (x->top_rank != y->top_rank)
        return x->top_rank < y->top_rank;
    if (x->stamp != y->stamp)
        return x->stamp < y->stamp;
    return x->top_seq < y->top_seq;
}

static bool s_entity_less (const void *a, const void *b)
{
    const entity_t *x = a, *y = b;
    if (x->top_rank != y->top_rank)
        return x->top_rank < y->top_rank;
    if (x->vtime != y->vtime)
        return x->vtime < y->vtime;
    return x->stamp < y->stamp;
}

static void s_flow_key (flow_t *flow)
{
    const sched_job_t *top = heap_top (&flow->jobs);
    if (top) {
        flow->top_rank = top->rank;
        flow->top_seq = top->seq;
        flow->top_priority = top->priority;
    }
}

static void s_entity_key (entity_t *e)
{
    const flow_t *top = heap_top (&e->flows);
    if (top) {
        e->top_rank = top->top_rank;
        e->top_priority = top->top_priority;
    }
}

static const void *s_flow_key_of (const void *item)
{
    return &((const flow_t *) item)->key;
}

static bool s_flow_key_match (const void *item, const void *key)
{
    return ((const flow_t *) item)->key == *(const uint64_t *) key;
}

static const void *s_chat_key_of (const void *item)
{
    return ((const chat_t *) item)->key;
}

static bool s_chat_key_match (const void *item, const void *key)
{
    return strcmp (((const chat_t *) item)->key, key) == 0;
}

#define VTIME_SCALE 1000000000.0

//  An entity's sustained posts per minute under its own rate limit; 0 when
//  it has none.
static double s_rate (const sched_limit_t *l)
{
    double rate = 0;
    if (l->gap_ms > 0)
        rate = (double) LIMITS_MINUTE_MS / (double) l->gap_ms;
    if (l->per_minute > 0 && (rate == 0 || (double) l->per_minute < rate))
        rate = (double) l->per_minute;
    if (l->per_hour > 0 && (rate == 0 || (double) l->per_hour / 60.0 < rate))
        rate = (double) l->per_hour / 60.0;
    return rate;
}

static bool s_entity_timer_less (const void *a, const void *b)
{
    return ((const entity_t *) a)->slot_ok < ((const entity_t *) b)->slot_ok;
}

static bool s_chat_timer_less (const void *a, const void *b)
{
    return ((const chat_t *) a)->slot_ok < ((const chat_t *) b)->slot_ok;
}

//  --- construction ------------------------------------------------------------------

sched_t *sched_new (const sched_config_t *config)
{
    sched_t *self = pcalloc (1, sizeof *self);
    self->global_limit = config->global;
    self->global_max_in_flight = config->global_max_in_flight;
    self->aging_ms = config->aging_ms;
    self->paced_from = config->paced_from;
    self->rule_count = config->chat_rule_count;
    self->rules = pcalloc (self->rule_count + 1, sizeof (sched_chat_rule_t));
    for (size_t i = 0; i < self->rule_count; i++) {
        self->rules[i] = config->chat_rules[i];
        self->rules[i].source = pstrdup (config->chat_rules[i].source);
        self->rules[i].chat_kind = pstrdup (config->chat_rules[i].chat_kind);
    }
    self->entity_count = config->entity_count;
    self->entities = pcalloc (self->entity_count + 1, sizeof (entity_t));
    for (size_t i = 0; i < self->entity_count; i++) {
        entity_t *e = &self->entities[i];
        heap_init (&e->flows, s_flow_less, offsetof (flow_t, pos));
        limit_log_init (&e->log, &config->entities[i].limit);
        e->max_in_flight = config->entities[i].max_in_flight;
        e->pos_ready = e->pos_timer = HEAP_NONE;
    }
    limit_log_init (&self->global_log, &config->global);
    //  Turn weights: an entity without a limit of its own weighs as much as
    //  the most generous one that has one.
    double most = 0;
    for (size_t i = 0; i < self->entity_count; i++)
        if (s_rate (&config->entities[i].limit) > most)
            most = s_rate (&config->entities[i].limit);
    for (size_t i = 0; i < self->entity_count; i++) {
        double rate = s_rate (&config->entities[i].limit);
        if (rate == 0)
            rate = most > 0 ? most : 1;
        self->entities[i].step = (uint64_t) (VTIME_SCALE / rate) + 1;
    }
    self->chat_index = ptable_new (ptable_hash_str, s_chat_key_of, s_chat_key_match);
    self->flows = ptable_new (ptable_hash_u64, s_flow_key_of, s_flow_key_match);
    heap_init (&self->ready, s_entity_less, offsetof (entity_t, pos_ready));
    heap_init (&self->entity_timers, s_entity_timer_less, offsetof (entity_t, pos_timer));
    heap_init (&self->chat_timers, s_chat_timer_less, offsetof (chat_t, pos_timer));
    heap_init (&self->delayed, s_delay_less, offsetof (sched_job_t, pos_queue));
    heap_init (&self->expiry, s_expiry_less, offsetof (sched_job_t, pos_expiry));
    return self;
}

static void s_flow_free (void *item)
{
    flow_t *flow = item;
    heap_destroy (&flow->jobs);
    free (flow);
}

void sched_destroy (sched_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    sched_t *self = *self_p;
    size_t cursor = 0;
    flow_t *flow;
    while ((flow = ptable_next (self->flows, &cursor)))
        s_flow_free (flow);
    ptable_destroy (&self->flows);
    for (size_t c = 0; c < self->chat_count; c++) {
        chat_t *chat = self->chats[c];
        limit_log_destroy (&chat->log);
        free (chat);
    }
    free (self->chats);
    for (size_t i = 0; i < self->entity_count; i++) {
        heap_destroy (&self->entities[i].flows);
        limit_log_destroy (&self->entities[i].log);
    }
    free (self->entities);
    for (size_t i = 0; i < self->rule_count; i++) {
        free ((char *) self->rules[i].source);
        free ((char *) self->rules[i].chat_kind);
    }
    free (self->rules);
    limit_log_destroy (&self->global_log);
    ptable_destroy (&self->chat_index);
    heap_destroy (&self->ready);
    heap_destroy (&self->entity_timers);
    heap_destroy (&self->chat_timers);
    heap_destroy (&self->delayed);
    heap_destroy (&self->expiry);
    free (self);
    *self_p = NULL;
}

//  --- chats ----------------------------------------------------------------------------

static bool s_matches (const char *pattern, const char *value)
{
    return strcmp (pattern, "*") == 0 || strcmp (pattern, value ? value : "") == 0;
}

uint32_t sched_chat_intern (sched_t *self, const char *key, const char *source, const char *kind)
{
    const chat_t *found = ptable_lookup (self->chat_index, key);
    if (found)
        return found->index;
    if (self->chat_count == self->chat_capacity) {
        size_t capacity = self->chat_capacity ? self->chat_capacity * 2 : 64;
        self->chats = prealloc (self->chats, capacity * sizeof (chat_t *));
        self->chat_capacity = capacity;
    }
    //  The key and kind live right after the record: one allocation, and
    //  the lines a lookup reads next to each other.
    if (!kind)
        kind = "";
    size_t klen = strlen (key) + 1, kindlen = strlen (kind) + 1;
    chat_t *chat = pcalloc (1, sizeof *chat + klen + kindlen);
    chat->key = memcpy ((char *) (chat + 1), key, klen);
    chat->kind = memcpy (chat->key + klen, kind, kindlen);
    chat->pos_timer = HEAP_NONE;
    sched_limit_t none = {0, 0, 0};
    const sched_limit_t *limit = &none;
    for (size_t i = 0; i < self->rule_count; i++)
        if (s_matches (self->rules[i].source, source) && s_matches (self->rules[i].chat_kind, kind)) {
            limit = &self->rules[i].limit;
            break;
        }
    limit_log_init (&chat->log, limit);
    chat->index = (uint32_t) self->chat_count;
    self->chats[self->chat_count++] = chat;
    ptable_insert (self->chat_index, chat);
    return chat->index;
}

size_t sched_chat_count (sched_t *self)
{
    return self->chat_count;
}

const char *sched_chat_key (sched_t *self, uint32_t chat)
{
    return chat < self->chat_count ? self->chats[chat]->key : NULL;
}

const char *sched_chat_kind (sched_t *self, uint32_t chat)
{
    return chat < self->chat_count ? self->chats[chat]->kind : NULL;
}

size_t sched_flow_count (sched_t *self)
{
    return ptable_size (self->flows);
}

typedef struct {
    const sched_t *self;
    const uint64_t *oldest;     //  per entity: the oldest stamp among its flows with work
} s_forget_t;

static bool s_flow_idle (const void *item, void *arg)
{
    const flow_t *flow = item;
    const s_forget_t *f = arg;
    return flow->jobs.size == 0 && !flow->parked && flow->pos == HEAP_NONE
           && flow->entity < f->self->entity_count && flow->stamp < f->oldest[flow->entity];
}

size_t sched_forget_idle (sched_t *self)
{
    //  A flow's turn among its entity's flows is its stamp (when it last
    //  dispatched; 0: never), and a flow made again starts at 0. So an empty
    //  flow may go when its stamp is older than that of every flow of its
    //  entity with work that has dispatched before: made again, it still
    //  goes before those. Against flows that never dispatched it ties, and
    //  the older job goes first.
    uint64_t *oldest = pcalloc (self->entity_count + 1, sizeof (uint64_t));
    for (size_t i = 0; i < self->entity_count; i++)
        oldest[i] = UINT64_MAX;
    size_t cursor = 0;
    flow_t *flow;
    while ((flow = ptable_next (self->flows, &cursor)))
        if (flow->jobs.size > 0 && flow->stamp > 0 && flow->entity < self->entity_count
            && flow->stamp < oldest[flow->entity])
            oldest[flow->entity] = flow->stamp;
    //  Parked flows wait on a chat too: they stay whatever their stamp.
    s_forget_t forget = {self, oldest};
    size_t n = ptable_remove_if (self->flows, s_flow_idle, &forget, s_flow_free);
    free (oldest);
    return n;
}

//  --- keeping the heaps right ------------------------------------------------------------

//  True when the entity's most urgent ready job is paced (read from the
//  key s_entity_key keeps, which is current whenever flows is not empty).
static bool s_entity_paced (const sched_t *self, const entity_t *e)
{
    return self->paced_from > 0 && e->flows.size > 0 && e->top_priority >= self->paced_from;
}

static flow_t *s_flow (sched_t *self, uint16_t entity, uint32_t chat)
{
    uint64_t key = (uint64_t) chat << 16 | entity;
    flow_t *flow = ptable_lookup (self->flows, &key);
    if (!flow) {
        flow = pcalloc (1, sizeof *flow);
        heap_init (&flow->jobs, s_job_less, offsetof (sched_job_t, pos_queue));
        flow->key = key;
        flow->entity = entity;
        flow->chat = chat;
        flow->pos = HEAP_NONE;
        ptable_insert (self->flows, flow);
    }
    return flow;
}

//  Puts an entity where it belongs: ready, waiting for its limit, or
//  nowhere (no work, paused, or at its concurrency cap).
void sched__entity_refresh (sched_t *self, entity_t *e, int64_t now)
{
    s_entity_key (e);
    bool can_ready = e->flows.size > 0 && !e->paused
                     && !(e->max_in_flight > 0 && e->in_flight >= (size_t) e->max_in_flight);
    int64_t slot_ok =
        can_ready ? sched__slot_ok (self, &e->log, now, s_entity_paced (self, e)) : LIMITS_NEVER;
    if (can_ready && sched__due (self, slot_ok) <= now) {
        heap_remove (&self->entity_timers, e);
        if (heap_contains (&self->ready, e))
            heap_update (&self->ready, e);
        else
            heap_push (&self->ready, e);
    }
    else if (can_ready) {
        heap_remove (&self->ready, e);
        e->slot_ok = slot_ok;
        e->blocked_at = now;
        if (heap_contains (&self->entity_timers, e))
            heap_update (&self->entity_timers, e);
        else
            heap_push (&self->entity_timers, e);
    }
    else {
        heap_remove (&self->ready, e);
        heap_remove (&self->entity_timers, e);
    }
}

//  Puts a flow back in order in its entity after its jobs changed.
static void s_flow_refresh (sched_t *self, flow_t *flow, int64_t now)
{
    entity_t *e = &self->entities[flow->entity];
    s_flow_key (flow);
    if (flow->jobs.size == 0 || flow->parked)
        heap_remove (&e->flows, flow);
    else if (heap_contains (&e->flows, flow))
        heap_update (&e->flows, flow);
    else
        heap_push (&e->flows, flow);
    sched__entity_refresh (self, e, now);
}

static void s_enqueue_ready (sched_t *self, sched_job_t *job, int64_t now)
{
    flow_t *flow = s_flow (self, job->entity, job->chat);
    job->where = SCHED_READY;
    heap_push (&flow->jobs, job);
    s_flow_refresh (self, flow, now);
}

//  `until` is the chat's next slot (sched__slot_ok).
static void s_park (sched_t *self, flow_t *flow, int64_t until, int64_t now)
{
    chat_t *chat = self->chats[flow->chat];
    chat->blocked_at = now;
    flow->parked = true;
    flow->next_parked = chat->parked;
    chat->parked = flow;
    if (!heap_contains (&self->chat_timers, chat)) {
        chat->slot_ok = until;
        heap_push (&self->chat_timers, chat);
    }
    else if (until < chat->slot_ok) {
        chat->slot_ok = until;
        heap_update (&self->chat_timers, chat);
    }
    s_flow_refresh (self, flow, now);
}

static void s_unpark_all (sched_t *self, chat_t *chat, int64_t now)
{
    flow_t *flow = chat->parked;
    chat->parked = NULL;
    heap_remove (&self->chat_timers, chat);
    while (flow) {
        flow_t *next = flow->next_parked;
        flow->parked = false;
        flow->next_parked = NULL;
        s_flow_refresh (self, flow, now);
        flow = next;
    }
}

//  Moves everything whose time has come: delayed jobs become ready,
//  entities and chats whose limits lifted take part again.
static void s_advance (sched_t *self, int64_t now)
{
    sched_job_t *job;
    while ((job = heap_top (&self->delayed)) && job->not_before <= now) {
        heap_pop (&self->delayed);
        self->delayed_count--;
        s_enqueue_ready (self, job, now);
    }
    entity_t *e;
    while ((e = heap_top (&self->entity_timers)) && sched__due (self, e->slot_ok) <= now) {
        heap_pop (&self->entity_timers);
        e->blocked_at = now;    //  held back until now
        sched__entity_refresh (self, e, now);
    }
    chat_t *chat;
    while ((chat = heap_top (&self->chat_timers)) && sched__due (self, chat->slot_ok) <= now) {
        int64_t slot_ok = sched__slot_ok (self, &chat->log, now, false);
        if (sched__due (self, slot_ok) > now) {
            chat->slot_ok = slot_ok;
            heap_update (&self->chat_timers, chat);
        }
        else {
            chat->blocked_at = now;
            s_unpark_all (self, chat, now);
        }
    }
}

//  --- the queue ------------------------------------------------------------------------------

void sched_push (sched_t *self, sched_job_t *job, int64_t now)
{
    if (job->where != SCHED_NOWHERE)
        return;
    //  First push: its place in line. A job reloaded after a restart keeps
    //  its enqueue time; reloading in enqueue order keeps FIFO order too.
    if (job->enqueued_at == 0)
        job->enqueued_at = now;
    if (job->seq == 0)
        job->seq = ++self->seq;
    //  Aging: a job enqueued k aging periods earlier ranks k priorities more urgent.
    job->rank = job->priority;
    if (self->aging_ms > 0)
        job->rank += job->enqueued_at / self->aging_ms;
    job->pos_queue = job->pos_expiry = HEAP_NONE;
    self->queued++;
    self->entities[job->entity].queued++;
    if (job->expires_at > 0)
        heap_push (&self->expiry, job);
    if (job->not_before > now) {
        job->where = SCHED_DELAYED;
        self->delayed_count++;
        heap_push (&self->delayed, job);
    }
    else
        s_enqueue_ready (self, job, now);
}

sched_job_t *sched_pop (sched_t *self, int64_t now)
{
    s_advance (self, now);
    if (self->paused_all)
        return NULL;
    if (self->global_max_in_flight > 0 && self->global_in_flight >= (size_t) self->global_max_in_flight)
        return NULL;
    const entity_t *first = heap_top (&self->ready);
    if (first && sched__next_ok (self, &self->global_log, now, s_entity_paced (self, first)) > now) {
        self->global_blocked_at = now;
        self->global_held = true;
        return NULL;
    }
    if (first && self->global_held) {
        self->global_blocked_at = now;      //  held back until now
        self->global_held = false;
    }
    entity_t *e;
    while ((e = heap_top (&self->ready))) {
        flow_t *flow = heap_top (&e->flows);
        chat_t *chat = self->chats[flow->chat];
        if (limit_log_active (&chat->log)) {
            int64_t chat_ok = sched__slot_ok (self, &chat->log, now, s_entity_paced (self, e));
            if (sched__due (self, chat_ok) > now) {
                //  This chat is busy: set the flow aside, others go on.
                s_park (self, flow, chat_ok, now);
                continue;
            }
        }
        sched_job_t *job = heap_pop (&flow->jobs);
        heap_remove (&self->expiry, job);
        self->queued--;
        e->queued--;
        job->where = SCHED_INFLIGHT;
        sched__take_slots (self, job, e, chat, now);
        e->in_flight++;
        self->global_in_flight++;
        flow->stamp = ++self->stamp;
        e->stamp = ++self->stamp;
        //  An entity back from idling starts at the current virtual time: its
        //  idle turns are not saved up into a burst.
        if (e->vtime < self->vclock)
            e->vtime = self->vclock;
        self->vclock = e->vtime;
        e->vtime += e->step;
        s_flow_refresh (self, flow, now);
        return job;
    }
    return NULL;
}

void sched_done (sched_t *self, sched_job_t *job, int64_t now)
{
    if (job->where != SCHED_INFLIGHT)
        return;
    job->where = SCHED_NOWHERE;
    entity_t *e = &self->entities[job->entity];
    e->in_flight--;
    self->global_in_flight--;
    sched__entity_refresh (self, e, now);
}

void sched_remove (sched_t *self, sched_job_t *job)
{
    if (job->where == SCHED_DELAYED) {
        heap_remove (&self->delayed, job);
        self->delayed_count--;
    }
    else if (job->where == SCHED_READY) {
        flow_t *flow = s_flow (self, job->entity, job->chat);
        heap_remove (&flow->jobs, job);
        //  Time does not matter here: only the flow's order changes.
        entity_t *e = &self->entities[flow->entity];
        s_flow_key (flow);
        if (flow->jobs.size == 0 || flow->parked)
            heap_remove (&e->flows, flow);
        else
            heap_update (&e->flows, flow);
        s_entity_key (e);
        if (e->flows.size == 0) {
            heap_remove (&self->ready, e);
            heap_remove (&self->entity_timers, e);
        }
        else if (heap_contains (&self->ready, e))
            heap_update (&self->ready, e);
    }
    else
        return;
    heap_remove (&self->expiry, job);
    self->queued--;
    self->entities[job->entity].queued--;
    job->where = SCHED_NOWHERE;
}

sched_job_t *sched_pop_expired (sched_t *self, int64_t now)
{
    sched_job_t *job = heap_top (&self->expiry);
    if (!job || job->expires_at > now)
        return NULL;
    sched_remove (self, job);
    return job;
}

int64_t sched_wakeup (sched_t *self, int64_t now)
{
    s_advance (self, now);
    int64_t at = SCHED_NEVER;
    const sched_job_t *job = heap_top (&self->delayed);
    if (job && job->not_before < at)
        at = job->not_before;
    const entity_t *e = heap_top (&self->entity_timers);
    if (e && sched__due (self, e->slot_ok) < at)
        at = sched__due (self, e->slot_ok);
    const chat_t *chat = heap_top (&self->chat_timers);
    if (chat && sched__due (self, chat->slot_ok) < at)
        at = sched__due (self, chat->slot_ok);
    job = heap_top (&self->expiry);
    if (job && job->expires_at < at)
        at = job->expires_at;
    bool capped = self->global_max_in_flight > 0
                  && self->global_in_flight >= (size_t) self->global_max_in_flight;
    if (self->ready.size > 0 && !self->paused_all && !capped) {
        const entity_t *first = heap_top (&self->ready);
        int64_t global_ok =
            sched__next_ok (self, &self->global_log, now, s_entity_paced (self, first));
        if (global_ok < at)
            at = global_ok;
    }
    return at;
}

void sched_pause (sched_t *self, int entity, bool paused, int64_t now)
{
    if (entity < 0) {
        self->paused_all = paused;
        return;
    }
    if ((size_t) entity >= self->entity_count)
        return;
    self->entities[entity].paused = paused;
    sched__entity_refresh (self, &self->entities[entity], now);
}

bool sched_paused (sched_t *self, int entity)
{
    if (entity < 0)
        return self->paused_all;
    return (size_t) entity < self->entity_count && self->entities[entity].paused;
}

void sched_counts (sched_t *self, sched_counts_t *counts)
{
    counts->queued = self->queued;
    counts->delayed = self->delayed_count;
    counts->in_flight = self->global_in_flight;
}

void sched_entity_counts (sched_t *self, int entity, size_t *queued, size_t *in_flight)
{
    *queued = *in_flight = 0;
    if (entity >= 0 && (size_t) entity < self->entity_count) {
        *queued = self->entities[entity].queued;
        *in_flight = self->entities[entity].in_flight;
    }
}

sched_t *sched_new_for (const pcfg_t *c)
{
    size_t ne = c->entities.count, nr = c->chat_limits.count;
    sched_entity_config_t *ents = pcalloc (ne + 1, sizeof *ents);
    sched_chat_rule_t *rules = pcalloc (nr + 1, sizeof *rules);
    for (size_t i = 0; i < ne; i++) {
        const pcfg_entity_t *e = pcfg_entity (c, i);
        ents[i].limit = limits_of_rate (&e->rate);
        ents[i].max_in_flight = e->max_in_flight ? e->max_in_flight : c->entity_max_in_flight;
    }
    const pcfg_chat_limit_t *cl = c->chat_limits.items;
    for (size_t i = 0; i < nr; i++)
        rules[i] = (sched_chat_rule_t) {cl[i].source, cl[i].chat_kind, limits_of_rate (&cl[i].rate)};
    sched_config_t sc = {
        .global = limits_global (c),
        .global_max_in_flight = c->global_max_in_flight,
        .aging_ms = c->aging_seconds * 1000,
        .entity_count = ne,
        .entities = ents,
        .chat_rule_count = nr,
        .chat_rules = rules,
        .paced_from = (int) c->urgent_below,
    };
    sched_t *sched = sched_new (&sc);
    free (ents);
    free (rules);
    return sched;
}
