/*  hand - what waits to leave the worker: RESULTs for the sink and
    RELEASEs for the broker. See worker_int.h.

    Nothing here blocks. A RESULT ZeroMQ will not take (the sink is not
    connected, or its queue is full) stays queued here and is offered again
    every turn; its job's RELEASE done is queued only once the RESULT is,
    so the broker never hears "done" for a reply the sink cannot have.
    A result the sink has not taken for min(lease_ms / 2, resendMs x 4) is
    dropped and its job handed back (RELEASE retry, "sink unreachable"),
    well before the broker's lease on it runs out; the worker's heartbeats
    never wait for the sink. A RELEASE ZeroMQ will not take is kept and
    sent again; one that is lost for good is covered by the broker's
    reconciliation (a job not in HEARTBEAT.held goes back to the queue).
*/
#include "worker/worker_int.h"
#include "common/palloc.h"

#include <inttypes.h>
#include <string.h>

#define RESULT_BATCH   (PROTO_BATCH / 4)   //  results carry text and context: smaller frames
#define RETRY_TICK_MS  20                  //  how soon a refused frame is offered again
#define REASON_MAX     4000

//  RELEASEs waiting at most: one per job held (capacity) plus the answers to
//  jobs refused on arrival, which a broker keeping to its credit also bounds
//  by capacity; the batch is slack. Beyond it a RELEASE is dropped: the
//  broker's reconciliation takes such a job back since it is not held.
#define RELEASE_BOUND(self) (2 * (size_t) (self)->capacity + PROTO_BATCH)

//  How long a result may wait for the sink before its job goes back.
static int64_t s_sink_bound (worker_t *self)
{
    int64_t bound = self->lease_ms / 2;
    if (self->config->resend_ms * 4 < bound)
        bound = self->config->resend_ms * 4;
    return bound > 50 ? bound : 50;
}

static void s_count (worker_t *self, int status)
{
    wcounters_t *c = &self->counters;
    switch (status) {
    case PROTO_REL_DONE: c->completed++; break;
    case PROTO_REL_RETRY: c->retried++; break;
    case PROTO_REL_FAIL: c->failed++; break;
    case PROTO_REL_EXPIRED: c->expired++; break;
    case PROTO_REL_SKIP: c->skipped++; break;
    default: c->returned++; break;
    }
}

void worker_hand_release (worker_t *self, uint64_t job_id, uint64_t token, int status,
                          const char *reason, int64_t retry_after)
{
    s_count (self, status);
    if (self->release_count >= RELEASE_BOUND (self)) {
        self->counters.releases_dropped++;
        if (plog_limiter_allow (&self->hand_log, 10))
            plog_warn ("RELEASE of job %" PRIu64 " dropped: %zu RELEASEs already wait for the "
                       "broker; it takes the job back as not held", job_id, self->release_count);
        return;
    }
    self->releases = pgrow (self->releases, &self->release_capacity, self->release_count + 1,
                            sizeof (proto_release_item_t));
    char *copy = pstrndup (reason ? reason : "", REASON_MAX);
    self->releases[self->release_count++] = (proto_release_item_t) {
        job_id, token, (uint64_t) status, copy, retry_after > 0 ? (uint64_t) retry_after : 0};
}

void worker_hand_result (worker_t *self, wjob_t *job, char *text, uint64_t llm_ms, uint64_t tokens,
                         int64_t now)
{
    //  At most capacity: every result is a job held (worker_int.h).
    self->results = pgrow (self->results, &self->result_capacity, self->result_count + 1,
                           sizeof (wresult_t));
    self->results[self->result_count++] = (wresult_t) {job, text, llm_ms, tokens, now};
}

static void s_result_free (wresult_t *result)
{
    free (result->text);
    worker_job_free (&result->job);
}

//  Removes the first `n` results (already freed).
static void s_results_shift (worker_t *self, size_t n)
{
    if (!n)
        return;
    memmove (self->results, self->results + n, (self->result_count - n) * sizeof (wresult_t));
    self->result_count -= n;
}

//  Fills self->frame from results[first..]: at most RESULT_BATCH items and
//  about half network.maxFrameBytes (one item at least). Returns how many.
static size_t s_fill_frame (worker_t *self, size_t first)
{
    const size_t budget = (size_t) self->net.max_frame_bytes / 2;
    size_t n = 0, bytes = 0;
    while (first + n < self->result_count && n < RESULT_BATCH) {
        wresult_t *r = &self->results[first + n];
        wjob_t *job = r->job;
        const pcfg_entity_t *e = pcfg_entity (self->config, (size_t) job->entity);
        size_t size = strlen (r->text) + job->payload.size + strlen (job->msg_key)
                      + strlen (job->chat) + strlen (e->id) + 64;
        if (n && bytes + size > budget)
            break;
        bytes += size;
        self->frame[n++] = (proto_result_item_t) {
            job->id,   job->token,  job->attempt, job->msg_key, e->id,     job->chat,
            (uint64_t) job->created_ms, (uint64_t) job->expires_ms, r->text, job->payload,
            r->llm_ms, r->tokens};
    }
    return n;
}

static void s_flush_results (worker_t *self, int64_t now)
{
    if (!self->frame)
        self->frame = pmalloc (RESULT_BATCH * sizeof (proto_result_item_t));
    size_t sent = 0;
    //  Only to a connected sink (worker_server.c says why); ZMQ_EVENTS says
    //  at once whether its pipe has room: no need to encode frames that
    //  would be refused.
    while (sent < self->result_count && self->sink_fd_up >= 0
           && (zsock_events (self->sink) & ZMQ_POLLOUT)) {
        size_t n = s_fill_frame (self, sent);
        proto_result_t body = {self->id, self->frame, n};
        if (proto_send (self->sink, PROTO_RESULT, &body))
            break;
        //  Queued to ZeroMQ: now, and only now, the broker may hear "done".
        for (size_t i = sent; i < sent + n; i++) {
            worker_hand_release (self, self->results[i].job->id, self->results[i].job->token,
                                 PROTO_REL_DONE, NULL, 0);
            s_result_free (&self->results[i]);
        }
        sent += n;
    }
    s_results_shift (self, sent);
    if (self->result_count && !self->sink_refused_since)
        self->sink_refused_since = now;
    else if (!self->result_count && self->sink_refused_since) {
        if (self->sink_gave_up)
            plog_info ("the sink takes results again");
        self->sink_refused_since = 0;
        self->sink_gave_up = false;
    }
}

//  Results the sink has not taken in time: their jobs go back to the broker.
static void s_expire_results (worker_t *self, int64_t now)
{
    int64_t bound = s_sink_bound (self);
    size_t n = 0;
    //  Results are queued in the order they were written, so the stale ones lead.
    while (n < self->result_count && now - self->results[n].since >= bound) {
        char reason[200];
        snprintf (reason, sizeof reason, "sink unreachable (results not accepted for %" PRId64 " ms)",
                  now - self->results[n].since);
        worker_hand_release (self, self->results[n].job->id, self->results[n].job->token,
                             PROTO_REL_RETRY, reason, 0);
        s_result_free (&self->results[n]);
        n++;
    }
    if (!n)
        return;
    s_results_shift (self, n);
    self->counters.sink_handed_back += n;
    if (!self->sink_gave_up || plog_limiter_allow (&self->hand_log, 10))
        plog_warn ("the sink (%s) took no results for %" PRId64 " ms: %zu job(s) handed back to "
                   "the broker", self->config->sink_results, bound, n);
    self->sink_gave_up = true;
}

static void s_flush_releases (worker_t *self)
{
    size_t sent = 0;
    while (sent < self->release_count) {
        size_t n = self->release_count - sent;
        if (n > PROTO_BATCH)
            n = PROTO_BATCH;
        proto_release_t body = {self->releases + sent, n};
        if (proto_send (self->broker, PROTO_RELEASE, &body))
            break;
        for (size_t i = sent; i < sent + n; i++)
            free ((char *) self->releases[i].reason);
        sent += n;
    }
    if (!sent)
        return;
    memmove (self->releases, self->releases + sent,
             (self->release_count - sent) * sizeof (proto_release_item_t));
    self->release_count -= sent;
}

void worker_hand_flush (worker_t *self, int64_t now)
{
    s_flush_results (self, now);
    s_expire_results (self, now);
    s_flush_releases (self);
}

bool worker_hand_cancel (worker_t *self, proto_ref_t ref)
{
    for (size_t i = 0; i < self->result_count; i++) {
        wjob_t *job = self->results[i].job;
        if (job->id == ref.job_id && job->token == ref.token) {
            s_result_free (&self->results[i]);
            memmove (self->results + i, self->results + i + 1,
                     (self->result_count - i - 1) * sizeof (wresult_t));
            self->result_count--;
            return true;
        }
    }
    for (size_t i = 0; i < self->release_count; i++) {
        proto_release_item_t *item = &self->releases[i];
        if (item->job_id == ref.job_id && item->token == ref.token) {
            free ((char *) item->reason);
            memmove (item, item + 1, (self->release_count - i - 1) * sizeof (proto_release_item_t));
            self->release_count--;
            return true;
        }
    }
    return false;
}

size_t worker_hand_refs (worker_t *self, proto_ref_t *out)
{
    size_t n = 0;
    for (size_t i = 0; i < self->result_count; i++)
        out[n++] = (proto_ref_t) {self->results[i].job->id, self->results[i].job->token};
    for (size_t i = 0; i < self->release_count; i++)
        out[n++] = (proto_ref_t) {self->releases[i].job_id, self->releases[i].token};
    return n;
}

void worker_hand_return_results (worker_t *self, const char *reason)
{
    for (size_t i = 0; i < self->result_count; i++) {
        worker_hand_release (self, self->results[i].job->id, self->results[i].job->token,
                             PROTO_REL_RETURN, reason, 0);
        s_result_free (&self->results[i]);
    }
    self->result_count = 0;
}

int64_t worker_hand_wakeup (worker_t *self, int64_t now)
{
    //  A refused frame is offered again soon; the sink's bound (at least
    //  50 ms, see s_sink_bound) is always later than the next try.
    return self->result_count || self->release_count ? now + RETRY_TICK_MS : PRT_NEVER;
}

void worker_hand_destroy (worker_t *self)
{
    for (size_t i = 0; i < self->result_count; i++)
        s_result_free (&self->results[i]);
    for (size_t i = 0; i < self->release_count; i++)
        free ((char *) self->releases[i].reason);
    free (self->results);
    free (self->releases);
    free (self->frame);
    self->results = NULL;
    self->releases = NULL;
    self->frame = NULL;
    self->result_count = self->release_count = 0;
}
