/*  jobs_sink - what the sink reports of the broker's jobs.

    A COMMIT asks whether a result may be posted: the attempt that owns the
    job (its token) is told to post and the job is COMMITTED, held by the
    sink under a lease it renews; any other attempt is refused. The answer
    for the attempt being dispatched is pushed to the sink with the JOB
    (bjobs_verdict_fields), so a sink that has it claims the job (hold = 1)
    or reports its outcome without asking. How long a
    rate-limited job took from dispatch to the sink sets how far ahead the
    scheduler reserves slots. An OUTCOME ends the job: posted (its slots
    move to the time of the post), a duplicate, expired, failed or in doubt.
*/
#include "broker/jobs_int.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

//  --- what the sink reports ----------------------------------------------------------------------

static int s_cmp_i64 (const void *a, const void *b)
{
    int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
    return (x > y) - (x < y);
}

//  A rate-limited job reached the sink `took` ms after its dispatch. The
//  scheduler reserves slots about that far ahead (sched_set_lead): the 95th
//  percentile of the last LEAD_SAMPLES, at most a minute, so most replies
//  wait at the sink for their slots and a saturated budget is used in full.
//  A reply later than its slot loses it when no other waiting reply's
//  limits allow that moment: with seed 000's budgets (tests/test_seed_limits)
//  the 90th percentile used the global budget at 95.0-96.7 % over a minute
//  in ten runs, the 95th at 95.0-98.3 % (mean 96.7 % against 95.8 %).
static void s_learn_lead (bjobs_t *self, int64_t took)
{
    if (took < 0)
        took = 0;
    self->lead_samples[self->lead_count++ % LEAD_SAMPLES] = took;
    //  Sorting 64 numbers is cheap, but not on every job: every 8th.
    if (self->lead_count % 8 != 0 && self->lead_count > 8)
        return;
    size_t n = self->lead_count < LEAD_SAMPLES ? self->lead_count : LEAD_SAMPLES;
    int64_t sorted[LEAD_SAMPLES];
    memcpy (sorted, self->lead_samples, n * sizeof (int64_t));
    qsort (sorted, n, sizeof (int64_t), s_cmp_i64);
    int64_t lead = sorted[(n * 19) / 20];
    sched_set_lead (self->sched, lead < LIMITS_MINUTE_MS ? lead : LIMITS_MINUTE_MS);
}

//  The attempt holding the job's token is the sink's now: its writing is
//  over (the RELEASE may still be on its way) and the sink holds it under a
//  lease it renews.
static void s_to_sink (bjobs_t *self, bjob_t *job, int64_t now)
{
    if (job->state == JOB_DISPATCHED || job->state == JOB_HANDED_OFF) {
        if (sched_limited (self->sched, job->sj.entity, job->sj.chat))
            s_learn_lead (self, now - job->flight->dispatched_at);
    }
    sched_done (self->sched, &job->sj, now);
    bjobs__set_state (self, job, JOB_COMMITTED);
    bjobs__persist (self, job);
    self->counters.committed++;
}

void bjobs_verdict_fields (bjobs_t *self, const bjob_t *job, proto_verdict_item_t *v)
{
    v->msg_key = bjob_msg_key (job);
    v->entity = bjobs__entity (self, job);
    v->chat = sched_chat_key (self->sched, job->sj.chat);
    v->chat_kind = sched_chat_kind (self->sched, job->sj.chat);
    v->priority = job->priority;
    v->created_ms = (uint64_t) job->created_ms;
    v->expires_ms = (uint64_t) job->sj.expires_at;
    v->payload = bjob_payload (job);
    v->slot_ms = (uint64_t) sched_slot (&job->sj);
}

void bjobs_commit (bjobs_t *self, const proto_commit_item_t *item, int64_t lease_ms, int64_t now,
                   proto_verdict_item_t *v)
{
    memset (v, 0, sizeof *v);
    v->job_id = item->job_id;
    v->token = item->token;
    v->msg_key = v->entity = v->chat = v->chat_kind = "";
    bjob_t *job = ptable_lookup (self->by_id, &item->job_id);
    if (!job)
        v->verdict = PROTO_VERDICT_UNKNOWN;
    else if (bjob_token (job) != item->token || job->state == JOB_QUEUED)
        v->verdict = PROTO_VERDICT_STALE;
    else {
        v->verdict = PROTO_VERDICT_POST;
        if (job->state != JOB_COMMITTED)
            s_to_sink (self, job, now);
        bjobs__set_deadline (self, job, now + lease_ms);
        //  hold = 1 is a sink that has the job's fields: from an earlier
        //  answer, or from the verdict pushed at dispatch (a claim).
        if (!item->hold)
            bjobs_verdict_fields (self, job, v);
    }
    if (v->verdict != PROTO_VERDICT_POST) {
        self->counters.stale_results++;
        plog_debug ("result for job %" PRIu64 " refused (%s)", item->job_id,
                    v->verdict == PROTO_VERDICT_STALE ? "stale" : "unknown");
    }
}

void bjobs_outcome (bjobs_t *self, const proto_outcome_item_t *item, int64_t now)
{
    bjob_t *job = ptable_lookup (self->by_id, &item->job_id);
    //  Outcomes are idempotent: a repeat for a finished job is ignored.
    if (!job || bjob_token (job) != item->token || job->state == JOB_QUEUED)
        return;
    //  A sink that had the verdict pushed at dispatch may report before it
    //  claims the job (a duplicate, or a post made at once): the report
    //  is the claim.
    if (job->state != JOB_COMMITTED)
        s_to_sink (self, job, now);
    switch (item->status) {
    case PROTO_OUT_POSTED:
        //  The slots count from when the post was made (the sink's clock,
        //  never later than now).
        sched_posted (self->sched, &job->sj,
                      item->at_ms > 0 && (int64_t) item->at_ms < now ? (int64_t) item->at_ms : now, now);
        self->counters.posted++;
        bjobs__finish (self, job, now);
        break;
    case PROTO_OUT_DUPLICATE:
        self->counters.duplicate_posts++;
        bjobs__finish (self, job, now);
        break;
    case PROTO_OUT_EXPIRED:
        bjobs__unreserve (self, job, now);
        self->counters.expired++;
        bjobs__finish (self, job, now);
        break;
    case PROTO_OUT_FAILED:
        bjobs__unreserve (self, job, now);
        bjobs__history (job, now, item->reason);
        bjobs__dead_letter (self, job, *item->reason ? item->reason : "failed", false, now);
        break;
    case PROTO_OUT_IN_DOUBT:
    default:
        //  Its slot stays taken: the reply may be in the chat.
        bjobs__history (job, now, item->reason);
        bjobs__dead_letter (self, job, *item->reason ? item->reason : "in doubt", true, now);
        break;
    }
}
