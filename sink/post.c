/*  post - replies from the broker's post verdict to their outcome. See post.h. */
#include "sink/post.h"
#include "common/palloc.h"
#include "common/pbackoff.h"
#include "common/pkey.h"
#include "common/plog.h"
#include "proto/proto.h"

#include <czmq.h>
#include <inttypes.h>
#include <string.h>

#define POST_ATTEMPTS   10          //  tries of one post before it fails for good
#define RETRY_BASE_MS   500
#define RETRY_MAX_MS    60000

typedef enum {
    R_GATED = 1,        //  in the gate: waiting for its budgets (or a retry's backoff)
    R_RELEASED,         //  a destination holds it; not marked yet
    R_MARKING,          //  its mark waits for the turn's commit
    R_READY,            //  marked: its destination may send it (local ones: in the send phase)
    R_POSTING,          //  its first byte may have left
    R_RESUMING          //  its first part went out, a later one failed: the rest waits
} r_state_t;

typedef struct {
    uint64_t id;                //  the gate's id for it
    uint64_t job_id, token;
    char ref[48];               //  "job_id:token"
    pkey_fp_t pair;
    char pair_key[40];          //  hex of the pair fingerprint
    char *msg_key, *entity, *chat, *chat_kind, *text;
    uint8_t *payload;
    uint32_t payload_size;
    proto_message_t message;    //  the payload decoded: where to post
    void *zone;
    int priority;
    int64_t created_ms, expires_ms;
    uint64_t llm_ms, tokens;
    dest_t *dest;
    r_state_t state;
    bool marked;                //  its mark is stored (or being stored)
    bool durable;               //  ... and committed
    bool in_dest;               //  a destination holds it: its done will come
    bool lost;                  //  the broker no longer wants it from the sink
    int64_t marked_at;
    int64_t first_at;           //  its first part was posted then; 0 = not (known to be)
    uint32_t attempts;
    int64_t not_before;         //  R_RESUMING
    zlistx_t *list;             //  marking, local or resuming, if in one
    void *handle;
} reply_t;

struct post_s {
    const pcfg_t *config;
    gate_t *gate;
    ledger_t *ledger;
    commit_t *commit;
    sink_store_t *store;
    dests_t *dests;
    zhashx_t *by_id;            //  id -> reply_t (owns them)
    zhashx_t *by_ref;           //  "job_id:token" -> reply_t
    zhashx_t *by_pair;          //  pair hex -> reply_t
    zlistx_t *marking;          //  marks stored this turn, waiting for the commit
    zlistx_t *local;            //  marked replies for local destinations, to write
    zlistx_t *resuming;         //  partly posted replies waiting to send the rest
    uint64_t next_id;
    int64_t now;
    bool draining;
    size_t in_dest;             //  replies destinations hold
    post_stats_t stats;
};

//  --- keys and records ------------------------------------------------------------------

static size_t s_id_hash (const void *key)
{
    uint64_t x = (uint64_t) (uintptr_t) key;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    return (size_t) (x ^ (x >> 33));
}

static int s_id_compare (const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) a, y = (uintptr_t) b;
    return x < y ? -1 : x > y;
}

#define ID_KEY(id) ((void *) (uintptr_t) (id))

static void s_ref_key (char *key, size_t len, uint64_t job_id, uint64_t token)
{
    snprintf (key, len, "%" PRIu64 ":%" PRIx64, job_id, token);
}

static void s_pair_key (char *key, size_t len, pkey_fp_t fp)
{
    snprintf (key, len, "%016" PRIx64 "%016" PRIx64, fp.hi, fp.lo);
}

//  Wall time for events that come from destinations within a turn.
static int64_t s_clock (post_t *self)
{
    int64_t now = zclock_time ();
    if (now > self->now)
        self->now = now;
    return self->now;
}

static void s_list (reply_t *r, zlistx_t *list)
{
    if (r->list)
        zlistx_detach (r->list, r->handle);
    r->list = list;
    r->handle = list ? zlistx_add_end (list, r) : NULL;
}

static void s_reindex (post_t *self, reply_t *r, uint64_t job_id, uint64_t token)
{
    if (*r->ref)
        zhashx_delete (self->by_ref, r->ref);
    r->job_id = job_id;
    r->token = token;
    s_ref_key (r->ref, sizeof r->ref, job_id, token);
    zhashx_update (self->by_ref, r->ref, r);
}

static reply_t *s_new (post_t *self, uint64_t job_id, uint64_t token, pkey_fp_t pair)
{
    reply_t *r = pcalloc (1, sizeof *r);
    r->id = ++self->next_id;
    r->pair = pair;
    s_pair_key (r->pair_key, sizeof r->pair_key, pair);
    zhashx_insert (self->by_id, ID_KEY (r->id), r);
    zhashx_update (self->by_pair, r->pair_key, r);
    s_reindex (self, r, job_id, token);
    return r;
}

static void s_free (post_t *self, reply_t *r)
{
    s_list (r, NULL);
    zhashx_delete (self->by_ref, r->ref);
    if (zhashx_lookup (self->by_pair, r->pair_key) == r)
        zhashx_delete (self->by_pair, r->pair_key);
    zhashx_delete (self->by_id, ID_KEY (r->id));
    free (r->msg_key);
    free (r->entity);
    free (r->chat);
    free (r->chat_kind);
    free (r->text);
    free (r->payload);
    proto_zone_free (&r->zone);
    free (r);
}

//  Takes the job's fields; -1 (why in `why`) if its message record cannot be read.
static int s_set_job (reply_t *r, const post_job_t *job, const char *text, char *why, size_t len)
{
    free (r->msg_key);
    free (r->entity);
    free (r->chat);
    free (r->chat_kind);
    free (r->text);
    free (r->payload);
    proto_zone_free (&r->zone);
    r->msg_key = pstrdup (job->msg_key);
    r->entity = pstrdup (job->entity);
    r->chat = pstrdup (job->chat);
    r->chat_kind = pstrdup (job->chat_kind ? job->chat_kind : "");
    r->text = pstrdup (text ? text : "");
    r->payload = pmemdup (job->payload, job->payload_size);
    r->payload_size = job->payload_size;
    r->priority = job->priority;
    r->created_ms = job->created_ms;
    r->expires_ms = job->expires_ms;
    return proto_message_decode (r->payload, r->payload_size, &r->message, &r->zone, why, len);
}

//  --- outcomes ------------------------------------------------------------------------------

//  The outcome is known: the ledger reports it; the reply is done with.
static void s_settle (post_t *self, reply_t *r, int outcome, const char *reason)
{
    ledger_outcome_t o = {r->pair,   r->job_id, r->token,     outcome,       reason,
                          r->entity, r->chat,   r->chat_kind, r->created_ms, r->first_at,
                          r->marked};
    ledger_settle (self->ledger, &o, self->now);
    s_free (self, r);
}

//  Dropped without an outcome: the broker no longer wants one from the sink.
static void s_drop (post_t *self, reply_t *r)
{
    self->stats.lost++;
    if (r->marked && self->store)
        sink_store_forget (self->store, r->pair);
    commit_forget (self->commit, r->job_id, r->token);
    s_free (self, r);
}

static int s_gate (post_t *self, reply_t *r, int64_t not_before)
{
    gate_reply_t g = {r->id,         pcfg_entity_index (self->config, r->entity),
                      r->chat,       r->chat_kind,
                      r->priority,   r->created_ms,
                      r->expires_ms, not_before};
    r->state = R_GATED;
    return gate_add (self->gate, &g, self->now);
}

//  The first part went out at `at`: the budgets count it then.
static void s_first (post_t *self, reply_t *r, int64_t at)
{
    if (r->first_at)
        return;
    r->first_at = at;
    gate_posted (self->gate, r->id, at);
    if (r->marked && self->store)
        sink_store_first (self->store, r->pair, at);
}

//  --- verdicts ---------------------------------------------------------------------------------

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
    if (s_set_job (r, job, text, why, sizeof why))
        s_settle (self, r, PROTO_OUT_FAILED, why);
    else if (!(r->dest = dests_route (self->dests, r->message.source)))
        s_settle (self, r, PROTO_OUT_FAILED, "no destination takes replies for its source");
    else if (s_gate (self, r, 0))
        s_settle (self, r, PROTO_OUT_EXPIRED, "too late to post");
}

void post_accept (post_t *self, uint64_t job_id, uint64_t token, const post_job_t *job,
                  const char *text, uint64_t llm_ms, uint64_t tokens, int64_t now)
{
    assert (self);
    self->now = now;
    self->stats.committed++;
    pkey_fp_t pair = pkey_pair_fp (job->entity, job->msg_key);
    char key[40];
    s_pair_key (key, sizeof key, pair);
    reply_t *r = zhashx_lookup (self->by_pair, key);
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
    if (s_set_job (r, job, text, why, sizeof why)) {
        snprintf (reason, sizeof reason, "the job's message record cannot be read: %s", why);
        s_settle (self, r, PROTO_OUT_FAILED, reason);
        return;
    }
    r->dest = dests_route (self->dests, r->message.source);
    if (!r->dest) {
        snprintf (reason, sizeof reason, "no destination takes replies for source \"%s\"",
                  r->message.source);
        s_settle (self, r, PROTO_OUT_FAILED, reason);
        return;
    }
    if (s_gate (self, r, 0)) {
        s_settle (self, r, PROTO_OUT_EXPIRED, "too late to post");
        return;
    }
    commit_hold (self->commit, job_id, token, now);
}

void post_lost (post_t *self, uint64_t job_id, uint64_t token)
{
    assert (self);
    char key[48];
    s_ref_key (key, sizeof key, job_id, token);
    reply_t *r = zhashx_lookup (self->by_ref, key);
    if (!r)
        return;
    commit_forget (self->commit, job_id, token);
    if (r->state == R_GATED) {
        gate_remove (self->gate, r->id);
        s_drop (self, r);
    }
    else if (!r->in_dest && r->state != R_RESUMING) {
        //  Marked for a local destination, not written yet.
        gate_cancel (self->gate, r->id);
        s_drop (self, r);
    }
    else
        //  A destination holds it: it asks before the first byte, and drops
        //  it then; a post under way finishes, its outcome unheard.
        r->lost = true;
}

bool post_has (post_t *self, uint64_t job_id, uint64_t token)
{
    assert (self);
    char key[48];
    s_ref_key (key, sizeof key, job_id, token);
    return zhashx_lookup (self->by_ref, key) != NULL;
}

//  --- posting --------------------------------------------------------------------------------

//  Stores the mark; it is synced by the turn's commit.
static void s_mark (post_t *self, reply_t *r)
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
    s_list (r, self->marking);
}

static void s_hand (post_t *self, reply_t *r)
{
    int entity = pcfg_entity_index (self->config, r->entity);
    dest_post_t post = {r->msg_key,
                        r->entity,
                        entity >= 0 ? pcfg_entity (self->config, (size_t) entity)->name : r->entity,
                        r->chat,
                        r->message.source,
                        r->message.chat_ref,
                        r->message.msg_ref,
                        r->message.author,
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
    s_mark (self, r);
    if (r->durable) {
        r->state = R_READY;
        s_list (r, self->local);
    }
}

void post_apply (post_t *self, int64_t now)
{
    assert (self);
    self->now = now;
    uint64_t id;
    gate_event_t event;
    while (!self->draining && (event = gate_next (self->gate, now, &id)) != GATE_NONE) {
        reply_t *r = zhashx_lookup (self->by_id, ID_KEY (id));
        if (!r)
            continue;
        if (event == GATE_EXPIRED)
            s_settle (self, r, PROTO_OUT_EXPIRED, "too late to post");
        else
            s_release (self, r);
    }
    for (size_t n = zlistx_size (self->resuming); n > 0 && !self->draining; n--) {
        reply_t *r = zlistx_first (self->resuming);
        if (r->not_before > now) {
            s_list (r, self->resuming);     //  to the end: each is visited once
            continue;
        }
        s_list (r, NULL);
        r->state = R_POSTING;
        s_hand (self, r);
    }
}

bool post_committed (post_t *self)
{
    assert (self);
    bool any = false;
    reply_t *r;
    while ((r = zlistx_first (self->marking))) {
        s_list (r, r->in_dest ? NULL : self->local);
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
    while ((r = zlistx_first (self->local))) {
        s_list (r, NULL);
        //  Freshness, right before the write.
        if (r->expires_ms && now > r->expires_ms) {
            gate_cancel (self->gate, r->id);
            s_settle (self, r, PROTO_OUT_EXPIRED, "too late to post");
            continue;
        }
        r->state = R_POSTING;
        s_hand (self, r);
    }
}

int64_t post_wakeup (post_t *self, int64_t now)
{
    assert (self);
    if (zlistx_size (self->local))
        return now;
    int64_t wake = self->draining ? GATE_NEVER : gate_wakeup (self->gate, now);
    for (reply_t *r = zlistx_first (self->resuming); r; r = zlistx_next (self->resuming))
        if (r->not_before < wake)
            wake = r->not_before;
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
    for (reply_t *r = zhashx_first (self->by_id); r; r = zhashx_next (self->by_id))
        if (r->marked && r->state != R_POSTING && r->state != R_RESUMING)
            sink_store_forget (self->store, r->pair);
}

bool post_busy (post_t *self)
{
    assert (self);
    return self->in_dest > 0 || zlistx_size (self->local) > 0;
}

//  --- what destinations say ---------------------------------------------------------------------

//  A destination that holds posts is about to send the first byte of one.
static int s_on_sending (void *ctx, void *tag, int64_t now)
{
    post_t *self = ctx;
    reply_t *r = tag;
    if (now > self->now)
        self->now = now;
    if (r->lost || (r->expires_ms && now > r->expires_ms))
        return DEST_SEND_DROP;
    if (!r->marked)
        s_mark (self, r);
    if (!r->durable)
        return DEST_SEND_LATER;
    r->state = R_POSTING;
    return DEST_SEND_GO;
}

static void s_on_first (void *ctx, void *tag, int64_t at)
{
    post_t *self = ctx;
    s_clock (self);
    s_first (self, tag, at);
}

static void s_retry (post_t *self, reply_t *r, const char *reason, int64_t retry_after)
{
    r->attempts++;
    self->stats.post_retries++;
    if (r->lost) {
        if (r->first_at)
            s_settle (self, r, PROTO_OUT_IN_DOUBT, "partly posted when the broker took it back");
        else
            s_drop (self, r);
        return;
    }
    if (r->attempts >= POST_ATTEMPTS) {
        char why[700];
        snprintf (why, sizeof why, "gave up after %u tries: %s", r->attempts, reason ? reason : "");
        if (!r->first_at)
            gate_cancel (self->gate, r->id);
        s_settle (self, r, PROTO_OUT_FAILED, why);
        return;
    }
    int64_t delay = pbackoff_delay (RETRY_BASE_MS, RETRY_MAX_MS, r->attempts);
    if (retry_after > delay)
        delay = retry_after;
    plog_info ("post of %s by %s will be retried in %" PRId64 " ms: %s", r->msg_key, r->entity,
               delay, reason ? reason : "");
    if (r->first_at) {
        r->state = R_RESUMING;
        r->not_before = self->now + delay;
        s_list (r, self->resuming);
        return;
    }
    //  Certainly not posted: no mark until it is about to go again.
    gate_cancel (self->gate, r->id);
    if (r->marked && self->store)
        sink_store_forget (self->store, r->pair);
    r->marked = r->durable = false;
    s_list (r, NULL);
    if (s_gate (self, r, self->now + delay))
        s_settle (self, r, PROTO_OUT_EXPIRED, "too late to post");
}

static void s_on_done (void *ctx, void *tag, int status, const char *reason, int64_t retry_after)
{
    post_t *self = ctx;
    reply_t *r = tag;
    int64_t now = s_clock (self);
    r->in_dest = false;
    self->in_dest--;
    switch (status) {
    case DEST_OK:
        s_first (self, r, now);
        s_settle (self, r, PROTO_OUT_POSTED, NULL);
        break;
    case DEST_IN_DOUBT:
        //  The platform may have counted it: so do the budgets.
        if (!r->first_at)
            gate_posted (self->gate, r->id, now);
        s_settle (self, r, PROTO_OUT_IN_DOUBT, reason);
        break;
    case DEST_FAIL:
        if (!r->first_at)
            gate_cancel (self->gate, r->id);
        s_settle (self, r, PROTO_OUT_FAILED, reason);
        break;
    case DEST_DROPPED:
        gate_cancel (self->gate, r->id);
        if (r->lost)
            s_drop (self, r);
        else
            s_settle (self, r, PROTO_OUT_EXPIRED, "too late to post");
        break;
    default: s_retry (self, r, reason, retry_after); break;
    }
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
    self->by_id = zhashx_new ();
    zhashx_set_key_hasher (self->by_id, s_id_hash);
    zhashx_set_key_comparator (self->by_id, s_id_compare);
    zhashx_set_key_duplicator (self->by_id, NULL);
    zhashx_set_key_destructor (self->by_id, NULL);
    self->by_ref = zhashx_new ();
    self->by_pair = zhashx_new ();
    self->marking = zlistx_new ();
    self->local = zlistx_new ();
    self->resuming = zlistx_new ();
    dest_events_t events = {s_on_done, s_on_sending, s_on_first, self};
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
    reply_t *r;
    while ((r = zhashx_first (self->by_id)))
        s_free (self, r);
    zhashx_destroy (&self->by_id);
    zhashx_destroy (&self->by_ref);
    zhashx_destroy (&self->by_pair);
    zlistx_destroy (&self->marking);
    zlistx_destroy (&self->local);
    zlistx_destroy (&self->resuming);
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
    stats->replies = zhashx_size (self->by_id);
    stats->waiting = gate_waiting (self->gate);
}
