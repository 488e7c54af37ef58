/*  jobs - the jobs a worker has in hand. See worker_int.h.

    A JOB item becomes a wjob_t handed to the backend, or is answered at
    once with a RELEASE when it cannot be written here. The backend reports
    each job once (worker_jobs_done); a written reply then waits in hand.c
    until the sink takes it.
*/
#include "worker/worker_int.h"
#include "worker/reply.h"
#include "common/palloc.h"
#include "proto/proto_defs.h"
#include "proto/proto_record.h"

#include <string.h>

#define MAX_REPLY 16384     //  longest reply kept, in bytes, whatever the platform
#define ZONE_SLACK 512      //  a decoded message's zone: its payload's size and this

void worker_job_free (wjob_t **job_p)
{
    wjob_t *job = *job_p;
    if (!job)
        return;
    free (job->msg_key);
    free (job->chat);
    free ((void *) job->payload.data);
    proto_zone_free (&job->zone);
    free (job);
    *job_p = NULL;
}

static void s_link (worker_t *self, wjob_t *job)
{
    job->prev = NULL;
    job->next = self->jobs;
    if (self->jobs)
        self->jobs->prev = job;
    self->jobs = job;
    self->job_count++;
}

static void s_unlink (worker_t *self, wjob_t *job)
{
    if (job->prev)
        job->prev->next = job->next;
    else
        self->jobs = job->next;
    if (job->next)
        job->next->prev = job->prev;
    job->next = job->prev = NULL;
    self->job_count--;
}

//  A job for the backend, or NULL (answered with a RELEASE) if it cannot be written here.
static wjob_t *s_job_new (worker_t *self, const proto_job_t *item, int64_t now)
{
    int entity = pcfg_entity_index (self->config, item->entity);
    if (entity < 0) {
        char why[600];
        snprintf (why, sizeof why, "unknown entity \"%s\" (is this worker's configuration current?)",
                  item->entity);
        worker_hand_release (self, item->job_id, item->token, PROTO_REL_FAIL, why, 0);
        return NULL;
    }
    if (item->expires_ms && (int64_t) item->expires_ms < now) {
        worker_hand_release (self, item->job_id, item->token, PROTO_REL_EXPIRED,
                             "expired before writing", 0);
        return NULL;
    }
    wjob_t *job = pcalloc (1, sizeof *job);
    job->id = item->job_id;
    job->token = item->token;
    job->attempt = item->attempt;
    job->msg_key = pstrdup (item->msg_key);
    job->chat = pstrdup (item->chat);
    job->entity = entity;
    job->priority = (uint8_t) item->priority;
    job->created_ms = (int64_t) item->created_ms;
    job->expires_ms = (int64_t) item->expires_ms;
    //  The payload outlives the JOB frame: the RESULT carries it.
    uint8_t *payload = pmalloc (item->payload.size ? item->payload.size : 1);
    if (item->payload.size)
        memcpy (payload, item->payload.data, item->payload.size);
    job->payload.data = payload;
    job->payload.size = item->payload.size;
    //  The message's strings live as long as the job, in a zone of its own
    //  sized to the payload: msgpack's default zone is 8 KiB, a malloc large
    //  enough to cost more than the rest of taking a job.
    msgpack_zone *zone = msgpack_zone_new (job->payload.size + ZONE_SLACK);
    if (!zone)
        palloc_fail ("msgpack zone", job->payload.size + ZONE_SLACK);
    job->zone = zone;
    char why[300];
    if (proto_record_unpack_in (&proto_message_record, job->payload.data, job->payload.size,
                                &job->message, zone, why, sizeof why)) {
        char reason[400];
        snprintf (reason, sizeof reason, "malformed message payload: %s", why);
        self->counters.malformed++;
        worker_hand_release (self, job->id, job->token, PROTO_REL_FAIL, reason, 0);
        worker_job_free (&job);
        return NULL;
    }
    job->started_at = now;
    return job;
}

void worker_jobs_take (worker_t *self, const proto_jobs_t *jobs, int64_t now)
{
    for (size_t i = 0; i < jobs->count; i++) {
        const proto_job_t *item = &jobs->items[i];
        self->counters.received++;
        if (self->draining) {
            worker_hand_release (self, item->job_id, item->token, PROTO_REL_RETURN,
                                 "worker draining", 0);
            continue;
        }
        //  The broker never sends more than the credit it has; a job beyond
        //  capacity goes straight back, so what this worker holds (and its
        //  queues, see worker_int.h) stays bounded by capacity.
        if (worker_held (self) >= self->capacity) {
            self->counters.over_capacity++;
            worker_hand_release (self, item->job_id, item->token, PROTO_REL_RETURN,
                                 "worker full (the broker sent more jobs than its capacity)", 0);
            continue;
        }
        wjob_t *job = s_job_new (self, item, now);
        if (!job)
            continue;
        s_link (self, job);
        if (self->backend->start (self->backend, job, now)) {
            s_unlink (self, job);
            worker_hand_release (self, job->id, job->token, PROTO_REL_RETRY,
                                 "backend could not start the job", 0);
            worker_job_free (&job);
        }
    }
}

void worker_jobs_done (void *ctx, wjob_t *job, int status, const char *text, uint64_t tokens,
                       int64_t retry_after)
{
    worker_t *self = ctx;
    int64_t now = prt_now (self->rt);
    s_unlink (self, job);
    int64_t took = now - job->started_at;
    if (took < 0)
        took = 0;
    self->counters.llm_ms_total += (uint64_t) took;
    self->counters.tokens += tokens;
    if (status != PROTO_REL_DONE) {
        worker_hand_release (self, job->id, job->token, status, text, retry_after);
        worker_job_free (&job);
        return;
    }
    if (job->expires_ms && now > job->expires_ms) {
        worker_hand_release (self, job->id, job->token, PROTO_REL_EXPIRED, "reply written too late", 0);
        worker_job_free (&job);
        return;
    }
    const pcfg_entity_t *e = pcfg_entity (self->config, (size_t) job->entity);
    char *reply = reply_clean (pstrdup (text ? text : ""), e, 0, MAX_REPLY);
    if (!*reply) {
        self->counters.empty++;
        worker_hand_release (self, job->id, job->token, PROTO_REL_SKIP, "empty reply", 0);
        free (reply);
        worker_job_free (&job);
        return;
    }
    worker_hand_result (self, job, reply, (uint64_t) took, tokens, now);
}

//  The job with the backend that has this ref, or NULL. The list is at most capacity long.
static wjob_t *s_find (worker_t *self, proto_ref_t ref)
{
    for (wjob_t *job = self->jobs; job; job = job->next)
        if (job->id == ref.job_id && job->token == ref.token)
            return job;
    return NULL;
}

bool worker_jobs_cancel (worker_t *self, proto_ref_t ref)
{
    wjob_t *job = s_find (self, ref);
    if (!job)
        return false;
    self->backend->cancel (self->backend, job);
    s_unlink (self, job);
    worker_job_free (&job);
    return true;
}

void worker_jobs_return_all (worker_t *self, const char *reason)
{
    while (self->jobs) {
        wjob_t *job = self->jobs;
        self->backend->cancel (self->backend, job);
        s_unlink (self, job);
        worker_hand_release (self, job->id, job->token, PROTO_REL_RETURN, reason, 0);
        worker_job_free (&job);
    }
}

size_t worker_jobs_refs (worker_t *self, proto_ref_t *out)
{
    size_t n = 0;
    for (wjob_t *job = self->jobs; job; job = job->next)
        out[n++] = (proto_ref_t) {job->id, job->token};
    return n;
}

void worker_jobs_destroy (worker_t *self)
{
    while (self->jobs) {
        wjob_t *job = self->jobs;
        s_unlink (self, job);
        worker_job_free (&job);
    }
}
