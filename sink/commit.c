/*  commit - the sink's conversation with the broker. See commit.h. */
#include "sink/commit.h"
#include "common/palloc.h"
#include "common/plist.h"
#include "common/plog.h"
#include "common/ptable.h"
#include "proto/proto_sock.h"

#include <inttypes.h>
#include <stddef.h>
#include <string.h>

#define MIN_TICK_MS 10

//  R_DECIDING: its verdict is being handled (in no list); unless that holds
//  it, it is dropped after. R_CLAIMING: held, with its first hold=1 due at
//  once (its verdict was pushed: the broker does not know the sink has it).
typedef enum { R_FRESH = 1, R_ASKING, R_HELD, R_DECIDING, R_CLAIMING } s_ref_state_t;

typedef struct {
    uint64_t job_id, token;     //  adjacent: the table's key
    s_ref_state_t state;
    int64_t sent_at;            //  last COMMIT that named it
    plist_t *list;              //  fresh, asking or held: oldest send first
    plist_node_t node;
} s_ref_t;

typedef struct {
    uint64_t job_id, token;
    uint64_t status;
    char *reason;
    int64_t at;
} s_outcome_t;

typedef struct {
    uint64_t seq;
    int64_t sent_at;
    s_outcome_t *items;
    size_t count;
} s_batch_t;

struct commit_s {
    zsock_t *broker;
    int64_t resend_ms;
    int64_t lease_ms;
    commit_events_t events;
    ptable_t *refs;             //  (job_id, token) -> s_ref_t (owns them)
    plist_t fresh;              //  never asked yet
    plist_t asking;             //  asked, no verdict yet
    plist_t held;               //  held: renewed by hold=1
    plist_t claiming;           //  held, not yet claimed
    proto_commit_item_t *frame; //  the COMMIT being filled (PROTO_BATCH items)
    size_t frame_count;
    s_outcome_t *outcomes;      //  not sent yet
    size_t outcome_count, outcome_capacity;
    zlistx_t *batches;          //  s_batch_t sent, waiting for OUTCOME_ACK, oldest send first
    uint64_t next_seq;
    commit_stats_t stats;
};

_Static_assert (offsetof (s_ref_t, token) == offsetof (s_ref_t, job_id) + 8,
                "the table's key is (job_id, token), adjacent");

static const void *s_ref_key (const void *item)
{
    return &((const s_ref_t *) item)->job_id;
}

static bool s_ref_match (const void *item, const void *key)
{
    return ptable_u64x2_equal (s_ref_key (item), key);
}

static void s_batch_free (s_batch_t *b)
{
    for (size_t i = 0; i < b->count; i++)
        free (b->items[i].reason);
    free (b->items);
    free (b);
}

commit_t *commit_new (zsock_t *broker, int64_t resend_ms, int64_t lease_ms,
                      const commit_events_t *events)
{
    commit_t *self = pcalloc (1, sizeof *self);
    self->broker = broker;
    self->resend_ms = resend_ms;
    self->lease_ms = lease_ms;
    self->events = *events;
    self->refs = ptable_new (ptable_hash_u64x2, s_ref_key, s_ref_match);
    plist_init (&self->fresh);
    plist_init (&self->asking);
    plist_init (&self->held);
    plist_init (&self->claiming);
    self->frame = pcalloc (PROTO_BATCH, sizeof (proto_commit_item_t));
    self->batches = zlistx_new ();
    return self;
}

void commit_destroy (commit_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    commit_t *self = *self_p;
    size_t cursor = 0;
    s_ref_t *r;
    while ((r = ptable_next (self->refs, &cursor)))
        free (r);
    ptable_destroy (&self->refs);
    free (self->frame);
    for (size_t i = 0; i < self->outcome_count; i++)
        free (self->outcomes[i].reason);
    free (self->outcomes);
    for (s_batch_t *b = zlistx_first (self->batches); b; b = zlistx_next (self->batches))
        s_batch_free (b);
    zlistx_destroy (&self->batches);
    free (self);
    *self_p = NULL;
}

//  --- refs ------------------------------------------------------------------------------

//  Moves a ref to the end of `to` (NULL: out of every list).
static void s_move (s_ref_t *r, plist_t *to, s_ref_state_t state)
{
    if (r->list)
        plist_remove (r->list, &r->node);
    r->list = to;
    if (to)
        plist_append (to, &r->node);
    r->state = state;
}

static s_ref_t *s_first_of (plist_t *list)
{
    plist_node_t *node = plist_first (list);
    return node ? PLIST_ITEM (node, s_ref_t, node) : NULL;
}

static s_ref_t *s_ref (commit_t *self, uint64_t job_id, uint64_t token)
{
    ptable_u64x2_t key = {job_id, token};
    return ptable_lookup (self->refs, &key);
}

static void s_drop (commit_t *self, s_ref_t *r)
{
    s_move (r, NULL, r->state);
    ptable_remove (self->refs, &r->job_id);
    free (r);
}

static s_ref_t *s_ref_get (commit_t *self, uint64_t job_id, uint64_t token)
{
    s_ref_t *r = s_ref (self, job_id, token);
    if (!r) {
        r = pcalloc (1, sizeof *r);
        r->job_id = job_id;
        r->token = token;
        ptable_insert (self->refs, r);
    }
    return r;
}

static bool s_held (const s_ref_t *r)
{
    return r->state == R_HELD || r->state == R_CLAIMING;
}

void commit_ask (commit_t *self, uint64_t job_id, uint64_t token)
{
    assert (self);
    s_ref_t *r = s_ref_get (self, job_id, token);
    if (!s_held (r))
        s_move (r, &self->fresh, R_FRESH);
}

void commit_claim (commit_t *self, uint64_t job_id, uint64_t token)
{
    assert (self);
    s_ref_t *r = s_ref (self, job_id, token);
    if (r && r->state == R_HELD)
        s_move (r, &self->claiming, R_CLAIMING);
}

void commit_hold (commit_t *self, uint64_t job_id, uint64_t token, int64_t now)
{
    assert (self);
    s_ref_t *r = s_ref_get (self, job_id, token);
    if (!s_held (r)) {
        //  The COMMIT its verdict answered counts as contact.
        r->sent_at = now;
        s_move (r, &self->held, R_HELD);
    }
}

void commit_forget (commit_t *self, uint64_t job_id, uint64_t token)
{
    assert (self);
    s_ref_t *r = s_ref (self, job_id, token);
    if (r)
        s_drop (self, r);
}

void commit_outcome (commit_t *self, uint64_t job_id, uint64_t token, int status,
                     const char *reason, int64_t at)
{
    assert (self);
    commit_forget (self, job_id, token);
    self->outcomes = pgrow (self->outcomes, &self->outcome_capacity, self->outcome_count + 1,
                            sizeof (s_outcome_t));
    self->outcomes[self->outcome_count++] =
        (s_outcome_t) {job_id, token, (uint64_t) status, reason && *reason ? pstrdup (reason) : NULL,
                       at};
}

//  --- answers -------------------------------------------------------------------------------

void commit_on_verdict (commit_t *self, const proto_verdicts_t *verdicts)
{
    assert (self);
    if (verdicts->lease_ms > 0)
        self->lease_ms = (int64_t) verdicts->lease_ms;
    for (size_t i = 0; i < verdicts->count; i++) {
        const proto_verdict_item_t *v = &verdicts->items[i];
        s_ref_t *r = s_ref (self, v->job_id, v->token);
        if (!r)
            continue;   //  an answer to a repeated question, already settled
        if (s_held (r)) {
            //  "post" renews it; anything else: it is no longer ours.
            if (v->verdict != PROTO_VERDICT_POST)
                self->events.verdict (self->events.ctx, v, true);
            continue;
        }
        //  The handler may hold it (kept, no new ref), forget it, or leave it.
        s_move (r, NULL, R_DECIDING);
        self->events.verdict (self->events.ctx, v, false);
        r = s_ref (self, v->job_id, v->token);
        if (r && r->state == R_DECIDING)
            s_drop (self, r);
    }
}

void commit_on_outcome_ack (commit_t *self, uint64_t seq)
{
    assert (self);
    for (s_batch_t *b = zlistx_first (self->batches); b; b = zlistx_next (self->batches)) {
        if (b->seq != seq)
            continue;
        zlistx_detach_cur (self->batches);
        for (size_t i = 0; i < b->count; i++)
            self->events.acked (self->events.ctx, b->items[i].job_id, b->items[i].token);
        s_batch_free (b);
        return;
    }
}

//  --- sending ---------------------------------------------------------------------------------

static void s_flush (commit_t *self)
{
    if (!self->frame_count)
        return;
    proto_commit_t commit = {++self->next_seq, self->frame, self->frame_count};
    //  Not taken (no broker yet, or its queue is full): the resend brings it.
    proto_send (self->broker, PROTO_COMMIT, &commit);
    self->frame_count = 0;
}

static void s_name (commit_t *self, s_ref_t *r, uint64_t hold, int64_t now)
{
    self->frame[self->frame_count++] = (proto_commit_item_t) {r->job_id, r->token, hold};
    r->sent_at = now;
    if (self->frame_count == PROTO_BATCH)
        s_flush (self);
}

static void s_send_outcomes (commit_t *self, s_batch_t *b)
{
    proto_outcome_item_t *items = pcalloc (b->count, sizeof *items);
    for (size_t i = 0; i < b->count; i++) {
        s_outcome_t *o = &b->items[i];
        items[i] = (proto_outcome_item_t) {o->job_id, o->token, o->status, o->reason ? o->reason : "",
                                           (uint64_t) o->at};
    }
    proto_outcome_t outcome = {b->seq, items, b->count};
    proto_send (self->broker, PROTO_OUTCOME, &outcome);
    free (items);
}

void commit_send (commit_t *self, int64_t now)
{
    assert (self);
    s_ref_t *r;
    //  Claims first: an OUTCOME that follows finds the job the sink's.
    while ((r = s_first_of (&self->claiming))) {
        s_name (self, r, 1, now);
        s_move (r, &self->held, R_HELD);
        self->stats.claims++;
    }
    while ((r = s_first_of (&self->fresh))) {
        s_name (self, r, 0, now);
        s_move (r, &self->asking, R_ASKING);
        self->stats.asked++;
    }
    //  Lists are in order of last send: stop at the first one not yet due.
    while ((r = s_first_of (&self->asking)) && r->sent_at != now
           && now - r->sent_at >= self->resend_ms) {
        s_name (self, r, 0, now);
        s_move (r, &self->asking, R_ASKING);
        self->stats.resent++;
    }
    //  Due at a quarter of the lease, checked every tick (at most a twelfth):
    //  never more than a third of the lease between two renewals.
    int64_t renew = self->lease_ms / 4;
    while ((r = s_first_of (&self->held)) && r->sent_at != now && now - r->sent_at >= renew) {
        s_name (self, r, 1, now);
        s_move (r, &self->held, R_HELD);
        self->stats.renewals++;
    }
    s_flush (self);
    //  Outcomes not acknowledged in time go again, then the new ones.
    s_batch_t *b;
    while ((b = zlistx_first (self->batches)) && b->sent_at != now
           && now - b->sent_at >= self->resend_ms) {
        zlistx_detach_cur (self->batches);
        b->sent_at = now;
        s_send_outcomes (self, b);
        zlistx_add_end (self->batches, b);
        self->stats.outcomes_resent += b->count;
    }
    for (size_t done = 0; done < self->outcome_count;) {
        size_t n = self->outcome_count - done;
        if (n > PROTO_BATCH)
            n = PROTO_BATCH;
        b = pcalloc (1, sizeof *b);
        b->seq = ++self->next_seq;
        b->sent_at = now;
        b->items = pmemdup (self->outcomes + done, n * sizeof (s_outcome_t));
        b->count = n;
        s_send_outcomes (self, b);
        zlistx_add_end (self->batches, b);
        self->stats.outcomes += n;
        done += n;
    }
    self->outcome_count = 0;
}

int64_t commit_wakeup (commit_t *self, int64_t now)
{
    assert (self);
    if (plist_size (&self->fresh) || plist_size (&self->claiming) || self->outcome_count)
        return now;
    int64_t wake = INT64_MAX;
    s_ref_t *r = s_first_of (&self->asking);
    if (r)
        wake = r->sent_at + self->resend_ms;
    r = s_first_of (&self->held);
    if (r && r->sent_at + self->lease_ms / 4 < wake)
        wake = r->sent_at + self->lease_ms / 4;
    s_batch_t *b = zlistx_first (self->batches);
    if (b && b->sent_at + self->resend_ms < wake)
        wake = b->sent_at + self->resend_ms;
    return wake;
}

int64_t commit_lease (commit_t *self)
{
    assert (self);
    return self->lease_ms;
}

int64_t commit_tick (commit_t *self)
{
    assert (self);
    int64_t tick = self->lease_ms / 3 < self->resend_ms ? self->lease_ms / 3 : self->resend_ms;
    tick /= 4;
    return tick < MIN_TICK_MS ? MIN_TICK_MS : tick;
}

void commit_stats (commit_t *self, commit_stats_t *stats)
{
    assert (self);
    *stats = self->stats;
    stats->asking = plist_size (&self->fresh) + plist_size (&self->asking);
    stats->held = plist_size (&self->held) + plist_size (&self->claiming);
    stats->unacked = self->outcome_count;
    for (s_batch_t *b = zlistx_first (self->batches); b; b = zlistx_next (self->batches))
        stats->unacked += b->count;
}
