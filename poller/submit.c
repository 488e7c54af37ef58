/*  submit - batches, ACKs, resends and busy retries. See submit.h. */
#include "poller/submit.h"
#include "poller/spec.h"
#include "common/palloc.h"
#include "common/pbackoff.h"
#include "common/plog.h"
#include "common/prt.h"
#include "proto/proto_sock.h"

#include <inttypes.h>
#include <string.h>

#define FRAME_MARGIN   64      //  frame bytes kept free beyond the jobs (header, seq, array)
#define LOG_BURST      20      //  warnings a minute for each kind of refusal

//  States of a job of an acknowledged batch (ACK's reject list).
enum { S_DONE = 0, S_BUSY = 1, S_INVALID = 2 };

typedef struct {
    uint64_t seq;
    size_t count;
    int64_t due;                //  ready/waiting: when to send; unacked: when to resend
    uint32_t refusals;          //  times its jobs were refused as busy in a row
    zmq_msg_t frame;            //  the SUBMIT, kept for resending
    poller_store_anchor_t anchor;   //  its record, until the ACK
} s_batch_t;

struct submit_s {
    const pcfg_t *config;
    poller_store_t *store;      //  NULL keeps everything in memory
    proto_job_spec_t *pending;  //  added jobs not in a batch yet (owned)
    size_t pending_count;
    size_t pending_capacity;
    zlistx_t *ready;            //  stored, sent at the next submit_send
    zlistx_t *unacked;          //  sent, by due (send order)
    zlistx_t *waiting;          //  busy jobs, by due
    size_t batch_jobs;          //  jobs in ready, unacked and waiting
    size_t waiting_jobs;
    uint64_t next_seq;
    size_t frame_room;          //  bytes of jobs one SUBMIT may carry
    submit_counters_t counters;
    plog_limiter_t invalid_log;
    plog_limiter_t reject_log;
};

static void s_batch_free (void **item)
{
    s_batch_t *batch = *item;
    zmq_msg_close (&batch->frame);
    free (batch);
    *item = NULL;
}

static int s_by_due (const void *a, const void *b)
{
    int64_t x = ((const s_batch_t *) a)->due, y = ((const s_batch_t *) b)->due;
    return (x > y) - (x < y);
}

//  Migration: the store asks for a batch to be written again.
static void s_rewrite (void *arg, poller_store_anchor_t *anchor)
{
    submit_t *self = arg;
    s_batch_t *batch = PJOURNAL_CONTAINER (anchor, s_batch_t, anchor);
    poller_store_batch (self->store, &batch->anchor, batch->seq, zmq_msg_data (&batch->frame),
                        zmq_msg_size (&batch->frame), batch->count, false);
}

submit_t *submit_new (const pcfg_t *config, poller_store_t *store)
{
    submit_t *self = pcalloc (1, sizeof *self);
    self->config = config;
    self->store = store;
    self->ready = zlistx_new ();
    self->unacked = zlistx_new ();
    self->waiting = zlistx_new ();
    zlistx_set_destructor (self->ready, s_batch_free);
    zlistx_set_destructor (self->unacked, s_batch_free);
    zlistx_set_destructor (self->waiting, s_batch_free);
    zlistx_set_comparator (self->waiting, s_by_due);
    size_t frame = (size_t) config->max_frame_bytes;
    self->frame_room = frame > 2 * FRAME_MARGIN ? frame - FRAME_MARGIN : frame / 2;
    if (store)
        poller_store_set_owner (store, s_rewrite, self);
    return self;
}

//  Unties the batches of a list from the store (they stay stored).
static void s_drop_anchors (submit_t *self, zlistx_t *list)
{
    for (s_batch_t *b = zlistx_first (list); b; b = zlistx_next (list))
        poller_store_anchor_drop (self->store, &b->anchor);
}

void submit_destroy (submit_t **self_p)
{
    submit_t *self = *self_p;
    if (!self)
        return;
    for (size_t i = 0; i < self->pending_count; i++)
        spec_free (&self->pending[i]);
    free (self->pending);
    if (self->store) {
        s_drop_anchors (self, self->ready);
        s_drop_anchors (self, self->unacked);
        s_drop_anchors (self, self->waiting);
        poller_store_set_owner (self->store, NULL, NULL);
    }
    zlistx_destroy (&self->ready);
    zlistx_destroy (&self->unacked);
    zlistx_destroy (&self->waiting);
    free (self);
    *self_p = NULL;
}

//  A batch in `frame` (taken over) joins the ready list, or with `retry`
//  the waiting list to be sent at `due`; it is stored first. A new batch
//  makes the turn sync; busy jobs were stored before, in the batch their
//  ACK forgets in this same turn, after this one.
static s_batch_t *s_add_batch (submit_t *self, zmq_msg_t *frame, size_t count, bool retry,
                               int64_t due)
{
    s_batch_t *batch = pcalloc (1, sizeof *batch);
    batch->seq = ++self->next_seq;
    batch->count = count;
    batch->due = due;
    zmq_msg_init (&batch->frame);
    zmq_msg_move (&batch->frame, frame);
    zmq_msg_close (frame);
    if (self->store)
        poller_store_batch (self->store, &batch->anchor, batch->seq, zmq_msg_data (&batch->frame),
                            zmq_msg_size (&batch->frame), count, !retry);
    self->batch_jobs += count;
    if (retry) {
        self->waiting_jobs += count;
        zlistx_insert (self->waiting, batch, false);
    }
    else
        zlistx_add_end (self->ready, batch);
    return batch;
}

void submit_restore (submit_t *self, uint64_t seq, const void *frame, size_t size, size_t count,
                     uint64_t segment)
{
    assert (self);
    s_batch_t *batch = pcalloc (1, sizeof *batch);
    batch->seq = seq;
    batch->count = count;
    zmq_msg_init_size (&batch->frame, size);
    memcpy (zmq_msg_data (&batch->frame), frame, size);
    if (self->store)
        poller_store_anchor_loaded (self->store, &batch->anchor, segment);
    zlistx_add_end (self->ready, batch);
    self->batch_jobs += count;
    if (seq > self->next_seq)
        self->next_seq = seq;
}

static void s_refuse (submit_t *self, const proto_job_spec_t *spec, const char *why)
{
    self->counters.invalid++;
    if (plog_limiter_allow (&self->invalid_log, LOG_BURST))
        plog_warn ("job for message %.200s (entity %.100s) not submitted: %s",
                   spec->msg_key ? spec->msg_key : "?", spec->entity ? spec->entity : "?", why);
}

int submit_add (submit_t *self, proto_job_spec_t *spec)
{
    assert (self);
    char why[200];
    const char *problem = spec_check (spec, why, sizeof why);
    if (!problem && spec_wire_size (spec) > self->frame_room) {
        snprintf (why, sizeof why, "it takes more than network.maxFrameBytes (%zu bytes)",
                  self->frame_room + FRAME_MARGIN);
        problem = why;
    }
    if (problem) {
        s_refuse (self, spec, problem);
        spec_free (spec);
        return -1;
    }
    self->pending = pgrow (self->pending, &self->pending_capacity, self->pending_count + 1,
                           sizeof (proto_job_spec_t));
    self->pending[self->pending_count++] = *spec;
    memset (spec, 0, sizeof *spec);
    return 0;
}

size_t submit_outstanding (submit_t *self)
{
    assert (self);
    return self->pending_count + self->batch_jobs;
}

size_t submit_room (submit_t *self)
{
    size_t window = (size_t) self->config->submit_window;
    size_t used = submit_outstanding (self);
    return used < window ? window - used : 0;
}

size_t submit_waiting (submit_t *self)
{
    assert (self);
    return self->waiting_jobs;
}

//  Encodes `count` checked jobs as one batch. Should the encoder still
//  refuse (a bound the checks do not know), the halves go on their own, so
//  only the job at fault is lost.
static void s_encode (submit_t *self, const proto_job_spec_t *items, size_t count, int64_t now)
{
    proto_submit_t submit = {self->next_seq + 1, (proto_job_spec_t *) items, count};
    zmq_msg_t frame;
    if (proto_encode (PROTO_SUBMIT, &submit, &frame) == 0) {
        s_add_batch (self, &frame, count, false, now);
        self->counters.submitted += count;
    }
    else if (count == 1)
        s_refuse (self, items, "the protocol encoder refused it");
    else {
        s_encode (self, items, count / 2, now);
        s_encode (self, items + count / 2, count - count / 2, now);
    }
}

void submit_flush (submit_t *self, int64_t now)
{
    assert (self);
    size_t done = 0;
    while (done < self->pending_count) {
        size_t n = 0, bytes = 0;
        while (done + n < self->pending_count && n < (size_t) self->config->submit_batch) {
            size_t size = spec_wire_size (&self->pending[done + n]);
            if (n > 0 && bytes + size > self->frame_room)
                break;
            bytes += size;
            n++;
        }
        s_encode (self, self->pending + done, n, now);
        done += n;
    }
    for (size_t i = 0; i < self->pending_count; i++)
        spec_free (&self->pending[i]);
    self->pending_count = 0;
}

//  --- answers --------------------------------------------------------------------------

static s_batch_t *s_find_unacked (submit_t *self, uint64_t seq)
{
    for (s_batch_t *b = zlistx_first (self->unacked); b; b = zlistx_next (self->unacked))
        if (b->seq == seq)
            return b;
    return NULL;
}

//  The busy jobs of `batch` (state S_BUSY) become a new batch that waits.
//  Returns -1 if the old frame cannot be read (then it stays as it is).
static int s_retry_busy (submit_t *self, s_batch_t *batch, const proto_submit_t *old,
                         const uint8_t *state, size_t busy, uint64_t retry_after_ms, int64_t now)
{
    proto_job_spec_t *items = pcalloc (busy, sizeof (proto_job_spec_t));
    size_t n = 0;
    for (size_t i = 0; i < old->count && i < batch->count; i++)
        if (state[i] == S_BUSY)
            items[n++] = old->items[i];     //  borrowed from the decoded frame
    //  No sooner than the broker asked; longer while it keeps refusing
    //  these jobs (a job's n-th refusal in a row waits up to base * 2^(n-1)).
    uint32_t refusals = batch->refusals + 1;
    int64_t hint = (int64_t) retry_after_ms;
    int64_t wait = pbackoff_delay (hint > 0 ? hint : SUBMIT_BUSY_BASE_MS, SUBMIT_BUSY_CAP_MS,
                                   refusals);
    if (wait < hint)
        wait = hint;
    proto_submit_t submit = {self->next_seq + 1, items, n};
    zmq_msg_t frame;
    int rc = proto_encode (PROTO_SUBMIT, &submit, &frame);
    if (rc == 0) {
        s_add_batch (self, &frame, n, true, now + wait)->refusals = refusals;
        plog_debug ("%zu busy job(s) of batch %" PRIu64 " go again in %" PRId64 " ms as batch %" PRIu64,
                    n, batch->seq, wait, self->next_seq);
    }
    free (items);
    return rc;
}

void submit_on_ack (submit_t *self, const proto_ack_t *ack, int64_t now)
{
    assert (self);
    s_batch_t *batch = s_find_unacked (self, ack->seq);
    if (!batch)
        return;     //  a batch already answered (its resend crossed the ACK)
    self->counters.accepted += ack->accepted;
    self->counters.broker_duplicates += ack->duplicates;
    proto_msg_t old;
    memset (&old, 0, sizeof old);
    bool decoded = false;
    if (ack->rejected_count || ack->rejected_more) {
        char why[256];
        decoded = proto_decode (zmq_msg_data (&batch->frame), zmq_msg_size (&batch->frame), &old,
                                why, sizeof why) == PROTO_OK;
        if (!decoded) {
            //  Our own frame: cannot happen. Keep the batch; it goes again after resendMs.
            plog_error ("batch %" PRIu64 " cannot be read back (%s); it is sent again", batch->seq, why);
            return;
        }
    }
    uint8_t *state = pcalloc (batch->count, 1);
    size_t busy = 0, invalid = 0;
    for (size_t i = 0; i < ack->rejected_count; i++) {
        const proto_reject_t *r = &ack->rejected[i];
        if (r->index >= batch->count || r->index >= old.body.submit.count || state[r->index])
            continue;
        if (r->code == PROTO_REJECT_BUSY) {
            state[r->index] = S_BUSY;
            busy++;
            continue;
        }
        state[r->index] = S_INVALID;
        invalid++;
        if (plog_limiter_allow (&self->reject_log, LOG_BURST))
            plog_warn ("broker refused job for message %.200s (entity %.100s): %s",
                       old.body.submit.items[r->index].msg_key,
                       old.body.submit.items[r->index].entity, r->reason);
    }
    if (ack->rejected_more) {
        //  The reject list was cut short: who among the rest was refused,
        //  and how, is unknown. They go again: the broker drops the ones it has.
        plog_warn ("broker left %" PRIu64 " reject(s) of batch %" PRIu64 " unlisted; the "
                   "unlisted jobs are submitted again", ack->rejected_more, batch->seq);
        for (size_t i = 0; i < batch->count && i < old.body.submit.count; i++)
            if (state[i] == S_DONE) {
                state[i] = S_BUSY;
                busy++;
            }
    }
    if (busy) {
        if (s_retry_busy (self, batch, &old.body.submit, state, busy, ack->retry_after_ms, now)) {
            plog_error ("batch %" PRIu64 ": its busy jobs could not be re-encoded; it is sent again",
                        batch->seq);
            free (state);
            proto_msg_release (&old);
            return;
        }
    }
    self->counters.busy += busy;
    self->counters.rejected += invalid;
    self->counters.acked += batch->count - busy;
    if (self->store)
        poller_store_acked (self->store, &batch->anchor, batch->seq);
    self->batch_jobs -= batch->count;
    zlistx_delete (self->unacked, zlistx_cursor (self->unacked));
    free (state);
    if (decoded)
        proto_msg_release (&old);
}

//  --- sending ---------------------------------------------------------------------------

static void s_send (zsock_t *broker, s_batch_t *batch)
{
    zmq_msg_t copy;
    zmq_msg_init (&copy);
    zmq_msg_copy (&copy, &batch->frame);
    //  Not queued (no broker yet): the resend after resendMs tries again.
    proto_send_frame (broker, NULL, 0, &copy);
}

void submit_send (submit_t *self, zsock_t *broker, int64_t now)
{
    assert (self);
    int64_t resend_ms = self->config->resend_ms;
    s_batch_t *b;
    while ((b = zlistx_detach (self->ready, NULL))) {
        s_send (broker, b);
        b->due = now + resend_ms;
        zlistx_add_end (self->unacked, b);
    }
    while ((b = zlistx_first (self->waiting)) && b->due <= now) {
        zlistx_detach_cur (self->waiting);
        s_send (broker, b);
        self->waiting_jobs -= b->count;
        self->counters.resubmitted += b->count;
        b->due = now + resend_ms;
        zlistx_add_end (self->unacked, b);
    }
    //  Oldest first; a resent batch moves to the end, so the list stays in due order.
    size_t n = zlistx_size (self->unacked);
    while (n-- > 0 && (b = zlistx_first (self->unacked)) && b->due <= now) {
        zlistx_detach_cur (self->unacked);
        s_send (broker, b);
        b->due = now + resend_ms;
        self->counters.resent += b->count;
        plog_debug ("resent batch %" PRIu64 " (%zu jobs) without ACK", b->seq, b->count);
        zlistx_add_end (self->unacked, b);
    }
}

int64_t submit_wakeup (submit_t *self, int64_t now)
{
    assert (self);
    if (zlistx_size (self->ready))
        return now;
    int64_t at = PRT_NEVER;
    s_batch_t *b = zlistx_first (self->waiting);
    if (b)
        at = b->due;
    b = zlistx_first (self->unacked);
    if (b && b->due < at)
        at = b->due;
    return at;
}

const submit_counters_t *submit_counters (submit_t *self)
{
    assert (self);
    return &self->counters;
}
