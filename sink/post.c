/*  post - replies from the broker's post verdict to their outcome. See post.h.

    This file takes them to their destination; post_outcome.c has what
    becomes of them there.
*/
#include "sink/post_int.h"
#include "common/palloc.h"
#include "proto/proto_defs.h"

#include <czmq.h>
#include <string.h>

//  --- keys and records ------------------------------------------------------------------

//  The tables' keys are the reply's own fields.
_Static_assert (offsetof (reply_t, token) == offsetof (reply_t, job_id) + 8,
                "the by_ref key is (job_id, token), adjacent");

static const void *s_id_of (const void *item)
{
    return &((const reply_t *) item)->id;
}

static bool s_id_match (const void *item, const void *key)
{
    return ((const reply_t *) item)->id == *(const uint64_t *) key;
}

static const void *s_ref_of (const void *item)
{
    return &((const reply_t *) item)->job_id;
}

static const void *s_pair_of (const void *item)
{
    return &((const reply_t *) item)->pair;
}

static bool s_ref_match (const void *item, const void *key)
{
    return ptable_u64x2_equal (s_ref_of (item), key);
}

static bool s_pair_match (const void *item, const void *key)
{
    return pkey_fp_equal (((const reply_t *) item)->pair, *(const pkey_fp_t *) key);
}

static reply_t *s_by_ref (post_t *self, uint64_t job_id, uint64_t token)
{
    ptable_u64x2_t key = {job_id, token};
    return ptable_lookup (self->by_ref, &key);
}

//  Takes `r` out of `table` if it is the record there under its key.
static void s_unindex (ptable_t *table, const void *key, reply_t *r)
{
    if (ptable_lookup (table, key) == r)
        ptable_remove (table, key);
}

//  Puts `r` in `table`, in place of any record with its key.
static void s_index (ptable_t *table, const void *key, reply_t *r)
{
    ptable_remove (table, key);
    ptable_insert (table, r);
}

//  Wall time for events that come from destinations within a turn.
int64_t post__clock (post_t *self)
{
    int64_t now = zclock_time ();
    if (now > self->now)
        self->now = now;
    return self->now;
}

void post__list (reply_t *r, plist_t *list)
{
    if (r->list)
        plist_remove (r->list, &r->node);
    r->list = list;
    if (list)
        plist_append (list, &r->node);
}

//  The first reply of a list, or NULL.
static reply_t *s_first_of (plist_t *list)
{
    plist_node_t *node = plist_first (list);
    return node ? PLIST_ITEM (node, reply_t, node) : NULL;
}

static void s_reindex (post_t *self, reply_t *r, uint64_t job_id, uint64_t token)
{
    s_unindex (self->by_ref, &r->job_id, r);
    r->job_id = job_id;
    r->token = token;
    s_index (self->by_ref, &r->job_id, r);
}

static reply_t *s_new (post_t *self, uint64_t job_id, uint64_t token, pkey_fp_t pair)
{
    reply_t *r = pcalloc (1, sizeof *r);
    r->id = ++self->next_id;
    r->pair = pair;
    r->job_id = job_id;
    r->token = token;
    ptable_insert (self->by_id, r);
    s_index (self->by_pair, &r->pair, r);
    s_index (self->by_ref, &r->job_id, r);
    return r;
}

void post__free (post_t *self, reply_t *r)
{
    post__list (r, NULL);
    s_unindex (self->by_ref, &r->job_id, r);
    s_unindex (self->by_pair, &r->pair, r);
    ptable_remove (self->by_id, &r->id);
    free (r->block);
    free (r);
}

//  Takes the job's fields, copied into one block with the payload and what
//  its message record says; -1 (why in `why`) if that record cannot be read.
static int s_set_job (post_t *self, reply_t *r, const post_job_t *job, const char *text, char *why,
                      size_t whylen)
{
    proto_message_t m;
    msgpack_zone_clear (self->zone);
    int rc = proto_record_unpack_in (&proto_message_record, job->payload, job->payload_size, &m,
                                     self->zone, why, whylen);
    enum { N = 9 };
    const char *in[N] = {job->msg_key, job->entity, job->chat, job->chat_kind, text,
                         rc ? "" : m.source, rc ? "" : m.chat_ref, rc ? "" : m.msg_ref,
                         rc ? "" : m.author};
    const char **out[N] = {&r->msg_key, &r->entity,   &r->chat,    &r->chat_kind, &r->text,
                           &r->source,  &r->chat_ref, &r->msg_ref, &r->author};
    size_t len[N], total = job->payload_size;
    for (int i = 0; i < N; i++) {
        if (!in[i])
            in[i] = "";
        len[i] = strlen (in[i]) + 1;
        total += len[i];
    }
    char *block = pmalloc (total), *at = block + job->payload_size;
    memcpy (block, job->payload, job->payload_size);
    for (int i = 0; i < N; i++) {
        memcpy (at, in[i], len[i]);
        *out[i] = at;
        at += len[i];
    }
    free (r->block);
    r->block = block;
    r->payload = (const uint8_t *) block;
    r->payload_size = job->payload_size;
    r->priority = job->priority;
    r->entity_index = pcfg_entity_index (self->config, r->entity);
    r->created_ms = job->created_ms;
    r->expires_ms = job->expires_ms;
    return rc;
}

//  --- verdicts ---------------------------------------------------------------------------------

//  The broker's slot for the reply, when a limit it counts against is full:
//  posting before it would take a slot planned for another reply (PROTOCOL.md
//  §5). One further ahead than a minute (the longest the broker plans ahead)
//  is a clock that disagrees with the broker's, and is not waited for.
static int64_t s_slot (post_t *self, const post_job_t *job)
{
    return job->slot_ms > self->now + LIMITS_MINUTE_MS ? 0 : job->slot_ms;
}

//  A newer dispatch of a reply the sink holds takes it over.
static void s_replace (post_t *self, reply_t *r, uint64_t job_id, uint64_t token,
                       const post_job_t *job, const char *text, uint64_t llm_ms, uint64_t tokens)
{
    self->stats.replaced++;
    commit_forget (self->commit, r->job_id, r->token);
    s_reindex (self, r, job_id, token);
    commit_hold (self->commit, job_id, token, self->now);
    if (r->marked && self->store)
        sink_store_retoken (self->store, r->pair, job_id, token);
    if (r->state != R_GATED)
        return;     //  under way: it goes on, and reports for the newer token
    //  Not started: the newer text and fields replace the older ones.
    gate_remove (self->gate, r->id);
    r->llm_ms = llm_ms;
    r->tokens = tokens;
    char why[300];
    if (s_set_job (self, r, job, text, why, sizeof why))
        post__settle (self, r, PROTO_OUT_FAILED, why);
    else if (!(r->dest = dests_route (self->dests, r->source)))
        post__settle (self, r, PROTO_OUT_FAILED, "no destination takes replies for its source");
    else if (post__gate (self, r, 0, s_slot (self, job)))
        post__settle (self, r, PROTO_OUT_EXPIRED, "too late to post");
}

void post_accept (post_t *self, uint64_t job_id, uint64_t token, const post_job_t *job,
                  const char *text, uint64_t llm_ms, uint64_t tokens, int64_t now)
{
    assert (self);
    self->now = now;
    self->stats.committed++;
    pkey_fp_t pair = pkey_pair_fp (job->entity, job->msg_key);
    reply_t *r = ptable_lookup (self->by_pair, &pair);
    if (r) {
        if (r->job_id != job_id || r->token != token)
            s_replace (self, r, job_id, token, job, text, llm_ms, tokens);
        return;
    }
    switch (ledger_pair (self->ledger, pair)) {
    case LEDGER_POSTED:
        ledger_report (self->ledger, job_id, token, PROTO_OUT_DUPLICATE, "already posted", now);
        return;
    case LEDGER_IN_DOUBT:
        ledger_report (self->ledger, job_id, token, PROTO_OUT_IN_DOUBT,
                       "an earlier post of this reply was interrupted and may have gone out", now);
        return;
    default: break;
    }
    r = s_new (self, job_id, token, pair);
    r->llm_ms = llm_ms;
    r->tokens = tokens;
    char why[300], reason[400];
    if (s_set_job (self, r, job, text, why, sizeof why)) {
        snprintf (reason, sizeof reason, "the job's message record cannot be read: %s", why);
        post__settle (self, r, PROTO_OUT_FAILED, reason);
        return;
    }
    r->dest = dests_route (self->dests, r->source);
    if (!r->dest) {
        snprintf (reason, sizeof reason, "no destination takes replies for source \"%s\"",
                  r->source);
        post__settle (self, r, PROTO_OUT_FAILED, reason);
        return;
    }
    if (post__gate (self, r, 0, s_slot (self, job))) {
        post__settle (self, r, PROTO_OUT_EXPIRED, "too late to post");
        return;
    }
    commit_hold (self->commit, job_id, token, now);
}

void post_lost (post_t *self, uint64_t job_id, uint64_t token)
{
    assert (self);
    reply_t *r = s_by_ref (self, job_id, token);
    if (!r)
        return;
    commit_forget (self->commit, job_id, token);
    if (r->state == R_GATED) {
        gate_remove (self->gate, r->id);
        post__drop (self, r);
    }
    else if (!r->in_dest && r->state != R_RESUMING) {
        //  Marked for a local destination, not written yet.
        gate_cancel (self->gate, r->id);
        post__drop (self, r);
    }
    else
        //  A destination holds it: it asks before the first byte, and drops
        //  it then; a post under way finishes, its outcome unheard.
        r->lost = true;
}

bool post_has (post_t *self, uint64_t job_id, uint64_t token)
{
    assert (self);
    return s_by_ref (self, job_id, token) != NULL;
}

//  --- posting --------------------------------------------------------------------------------

//  Stores the mark; it is synced by the turn's commit.
void post__mark (post_t *self, reply_t *r)
{
    r->marked = true;
    r->marked_at = self->now;
    if (!self->store) {
        r->durable = true;
        return;
    }
    ledger_supersede (self->ledger, r->pair);
    sink_mark_t m = {r->pair,       r->job_id,     r->token,        r->msg_key,  r->entity,
                     r->chat,       r->chat_kind,  r->text,         r->payload,  r->payload_size,
                     r->priority,   r->created_ms, r->expires_ms,   r->llm_ms,   r->tokens,
                     r->marked_at,  r->first_at,   SINK_NO_OUTCOME, "",          0};
    sink_store_mark (self->store, &m);
    r->durable = false;
    r->state = R_MARKING;
    post__list (r, &self->marking);
}

static void s_hand (post_t *self, reply_t *r)
{
    int entity = r->entity_index;
    dest_post_t post = {r->msg_key,
                        r->entity,
                        entity >= 0 ? pcfg_entity (self->config, (size_t) entity)->name : r->entity,
                        r->chat,
                        r->source,
                        r->chat_ref,
                        r->msg_ref,
                        r->author,
                        r->text,
                        r->created_ms,
                        r->job_id,
                        r->attempts + 1,
                        r->priority};
    r->in_dest = true;
    self->in_dest++;
    dest_t *dest = r->dest;
    //  The destination may answer at once (done from inside post): r may be gone after.
    if (dest->post (dest, &post, r, self->now))
        dest->done (dest->ctx, r, DEST_RETRY, "the destination could not take the post", 0);
}

static void s_release (post_t *self, reply_t *r)
{
    if (r->dest->holds) {
        r->state = R_RELEASED;
        s_hand (self, r);
        return;
    }
    //  A local destination writes at once: the mark first, the write after the commit.
    post__mark (self, r);
    if (r->durable) {
        r->state = R_READY;
        post__list (r, &self->local);
    }
}

void post_apply (post_t *self, int64_t now)
{
    assert (self);
    self->now = now;
    uint64_t id;
    gate_event_t event;
    while (!self->draining && (event = gate_next (self->gate, now, &id)) != GATE_NONE) {
        reply_t *r = ptable_lookup (self->by_id, &id);
        if (!r)
            continue;
        if (event == GATE_EXPIRED)
            post__settle (self, r, PROTO_OUT_EXPIRED, "too late to post");
        else
            s_release (self, r);
    }
    for (size_t n = plist_size (&self->resuming); n > 0 && !self->draining; n--) {
        reply_t *r = s_first_of (&self->resuming);
        if (r->not_before > now) {
            post__list (r, &self->resuming);     //  to the end: each is visited once
            continue;
        }
        post__list (r, NULL);
        r->state = R_POSTING;
        s_hand (self, r);
    }
    dests_flush (self->dests);
}

bool post_committed (post_t *self)
{
    assert (self);
    bool any = false;
    reply_t *r;
    while ((r = s_first_of (&self->marking))) {
        post__list (r, r->in_dest ? NULL : &self->local);
        r->durable = true;
        r->state = R_READY;     //  a destination that holds it asks again next turn
        any = true;
    }
    return any;
}

void post_send (post_t *self, int64_t now)
{
    assert (self);
    self->now = now;
    reply_t *r;
    while ((r = s_first_of (&self->local))) {
        post__list (r, NULL);
        //  Freshness, right before the write.
        if (r->expires_ms && now > r->expires_ms) {
            gate_cancel (self->gate, r->id);
            post__settle (self, r, PROTO_OUT_EXPIRED, "too late to post");
            continue;
        }
        r->state = R_POSTING;
        s_hand (self, r);
    }
    //  Destinations that gather a turn's posts write them now.
    dests_flush (self->dests);
}

int64_t post_wakeup (post_t *self, int64_t now)
{
    assert (self);
    if (plist_size (&self->local))
        return now;
    int64_t wake = self->draining ? GATE_NEVER : gate_wakeup (self->gate, now);
    for (plist_node_t *n = plist_first (&self->resuming); n; n = plist_next (&self->resuming, n)) {
        reply_t *r = PLIST_ITEM (n, reply_t, node);
        if (r->not_before < wake)
            wake = r->not_before;
    }
    return wake;
}

void post_drain (post_t *self)
{
    assert (self);
    self->draining = true;
}

void post_stop (post_t *self)
{
    assert (self);
    if (!self->store)
        return;
    size_t cursor = 0;
    reply_t *r;
    while ((r = ptable_next (self->by_id, &cursor)))
        if (r->marked && r->state != R_POSTING && r->state != R_RESUMING)
            sink_store_forget (self->store, r->pair);
}

bool post_busy (post_t *self)
{
    assert (self);
    return self->in_dest > 0 || plist_size (&self->local) > 0;
}

//  --- life ------------------------------------------------------------------------------------

post_t *post_new (const pcfg_t *config, gate_t *gate, ledger_t *ledger, commit_t *commit,
                  sink_store_t *store)
{
    post_t *self = pcalloc (1, sizeof *self);
    self->config = config;
    self->gate = gate;
    self->ledger = ledger;
    self->commit = commit;
    self->store = store;
    self->by_id = ptable_new (ptable_hash_u64, s_id_of, s_id_match);
    self->by_ref = ptable_new (ptable_hash_u64x2, s_ref_of, s_ref_match);
    self->by_pair = ptable_new (pkey_fp_hash, s_pair_of, s_pair_match);
    plist_init (&self->marking);
    plist_init (&self->local);
    plist_init (&self->resuming);
    self->zone = msgpack_zone_new (MSGPACK_ZONE_CHUNK_SIZE);
    if (!self->zone)
        palloc_fail ("msgpack zone", MSGPACK_ZONE_CHUNK_SIZE);
    dest_events_t events = {post__on_done, post__on_sending, post__on_first, self};
    self->dests = dests_new (config, &events);
    if (!self->dests)
        post_destroy (&self);
    return self;
}

void post_destroy (post_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    post_t *self = *self_p;
    //  Destinations first: they hold replies as tags.
    dests_destroy (&self->dests);
    size_t count = ptable_size (self->by_id), cursor = 0, n = 0;
    reply_t **all = pcalloc (count + 1, sizeof *all), *r;
    while ((r = ptable_next (self->by_id, &cursor)))
        all[n++] = r;
    for (size_t i = 0; i < n; i++)
        post__free (self, all[i]);
    free (all);
    ptable_destroy (&self->by_id);
    ptable_destroy (&self->by_ref);
    ptable_destroy (&self->by_pair);
    msgpack_zone_free (self->zone);
    free (self);
    *self_p = NULL;
}

dests_t *post_dests (post_t *self)
{
    assert (self);
    return self->dests;
}

void post_stats (post_t *self, post_stats_t *stats)
{
    assert (self);
    *stats = self->stats;
    stats->replies = ptable_size (self->by_id);
    stats->waiting = gate_waiting (self->gate);
}
