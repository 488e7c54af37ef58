/*  post_outcome - what becomes of a reply once it is through the gate: what
    its destination says (about to send, first part out, done), a retry
    after a backoff, and the outcome handed to the ledger. See post.h.
*/
#include "sink/post_int.h"
#include "common/pbackoff.h"
#include "common/plog.h"
#include "proto/proto_defs.h"

#include <inttypes.h>

#define POST_ATTEMPTS   10          //  tries of one post before it fails for good
#define RETRY_BASE_MS   500
#define RETRY_MAX_MS    60000

//  --- outcomes ------------------------------------------------------------------------------

//  The outcome is known: the ledger reports it; the reply is done with.
void post__settle (post_t *self, reply_t *r, int outcome, const char *reason)
{
    ledger_outcome_t o = {r->pair,   r->job_id, r->token,     outcome,       reason,
                          r->entity, r->chat,   r->chat_kind, r->created_ms, r->first_at,
                          r->marked};
    ledger_settle (self->ledger, &o, self->now);
    post__free (self, r);
}

//  Dropped without an outcome: the broker no longer wants one from the sink.
void post__drop (post_t *self, reply_t *r)
{
    self->stats.lost++;
    if (r->marked && self->store)
        sink_store_forget (self->store, r->pair);
    commit_forget (self->commit, r->job_id, r->token);
    post__free (self, r);
}

int post__gate (post_t *self, reply_t *r, int64_t not_before, int64_t slot)
{
    gate_reply_t g = {r->id,         r->entity_index,
                      r->chat,       r->chat_kind,
                      r->priority,   r->created_ms,
                      r->expires_ms, not_before, slot};
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

//  --- what destinations say ---------------------------------------------------------------------

//  A destination that holds posts is about to send the first byte of one.
int post__on_sending (void *ctx, void *tag, int64_t now)
{
    post_t *self = ctx;
    reply_t *r = tag;
    if (now > self->now)
        self->now = now;
    if (r->lost || (r->expires_ms && now > r->expires_ms))
        return DEST_SEND_DROP;
    if (!r->marked)
        post__mark (self, r);
    if (!r->durable)
        return DEST_SEND_LATER;
    r->state = R_POSTING;
    return DEST_SEND_GO;
}

void post__on_first (void *ctx, void *tag, int64_t at)
{
    post_t *self = ctx;
    post__clock (self);
    s_first (self, tag, at);
}

static void s_retry (post_t *self, reply_t *r, const char *reason, int64_t retry_after)
{
    r->attempts++;
    self->stats.post_retries++;
    if (r->lost) {
        if (r->first_at)
            post__settle (self, r, PROTO_OUT_IN_DOUBT, "partly posted when the broker took it back");
        else
            post__drop (self, r);
        return;
    }
    if (r->attempts >= POST_ATTEMPTS) {
        char why[700];
        snprintf (why, sizeof why, "gave up after %u tries: %s", r->attempts, reason ? reason : "");
        if (!r->first_at)
            gate_cancel (self->gate, r->id);
        post__settle (self, r, PROTO_OUT_FAILED, why);
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
        post__list (r, &self->resuming);
        return;
    }
    //  Certainly not posted: no mark until it is about to go again.
    gate_cancel (self->gate, r->id);
    if (r->marked && self->store)
        sink_store_forget (self->store, r->pair);
    r->marked = r->durable = false;
    post__list (r, NULL);
    if (post__gate (self, r, self->now + delay, 0))
        post__settle (self, r, PROTO_OUT_EXPIRED, "too late to post");
}

void post__on_done (void *ctx, void *tag, int status, const char *reason,
                    int64_t retry_after)
{
    post_t *self = ctx;
    reply_t *r = tag;
    int64_t now = post__clock (self);
    r->in_dest = false;
    self->in_dest--;
    switch (status) {
    case DEST_OK:
        s_first (self, r, now);
        post__settle (self, r, PROTO_OUT_POSTED, NULL);
        break;
    case DEST_IN_DOUBT:
        //  The platform may have counted it: so do the budgets.
        if (!r->first_at)
            gate_posted (self->gate, r->id, now);
        post__settle (self, r, PROTO_OUT_IN_DOUBT, reason);
        break;
    case DEST_FAIL:
        if (!r->first_at)
            gate_cancel (self->gate, r->id);
        post__settle (self, r, PROTO_OUT_FAILED, reason);
        break;
    case DEST_DROPPED:
        gate_cancel (self->gate, r->id);
        if (r->lost)
            post__drop (self, r);
        else
            post__settle (self, r, PROTO_OUT_EXPIRED, "too late to post");
        break;
    default: s_retry (self, r, reason, retry_after); break;
    }
}
