/*  jobs - the broker's jobs and the life of each one.

    A job is one (chat message, entity) pair: at most one is active per
    pair, and a finished pair is remembered (bounded) so a resubmission is a
    duplicate. A job moves through these states:

        SUBMIT -> QUEUED -> DISPATCHED -> HANDED_OFF -> COMMITTED -> finished
                    ^          |          (RELEASE done)  (COMMIT)   (OUTCOME)
                    |          |               |              |
                    +----------+---------------+--------------+
                      taken back: RELEASE retry, a lease that ran out, a worker
                      lost or not holding it, a result that never reached the
                      sink, a sink that stopped holding it. Then backoff, and
                      the dead-letter queue after maxRetries FAILED attempts.

    Every state but QUEUED has a deadline (a lease): DISPATCHED until the
    worker's next heartbeat that lists it (lease_ms) and at most maxHoldMs
    in all; HANDED_OFF until the sink's COMMIT; COMMITTED until the sink's
    next renewal. A deadline that passes takes the job back, so no hop can
    strand a job.

    Not every take-back is the job's fault: only a RELEASE retry, a job held
    past maxHoldMs, and a crash while the job ran alone count as failed
    attempts. A job whose worker died with it is a suspect (crashes); the
    worker module runs a suspect alone, so a job that kills workers is told
    apart from the jobs that happened to share a worker with it.

    Every dispatch gets a new random 64-bit token; a COMMIT or RELEASE
    carrying another token is refused, so exactly one attempt is posted.
*/
#ifndef BROKER_JOBS_H_INCLUDED
#define BROKER_JOBS_H_INCLUDED

#include "broker/dead.h"
#include "broker/sched.h"
#include "broker/store.h"
#include "common/pconfig.h"
#include "proto/proto.h"

typedef enum {
    JOB_QUEUED = 1,     //  in the scheduler (ready or delayed)
    JOB_DISPATCHED,     //  a worker holds it
    JOB_HANDED_OFF,     //  its worker sent the result to the sink; waiting for COMMIT
    JOB_COMMITTED,      //  the sink holds it to post; waiting for OUTCOME
    JOB_STATES
} bjob_state_t;

typedef struct bworker_s bworker_t;

//  A job's place at its worker. Owned by the worker module (workers.c,
//  workers_heartbeat.c): only it reads or writes these.
typedef struct {
    bworker_t *worker;
    struct bjob_s *prev, *next;
    uint64_t frame_seq;         //  the JOB frame it went out in
} bjob_link_t;

//  What a job has only while it is not QUEUED (dispatched, handed off,
//  committed). A million queued jobs do not carry it: it is allocated at
//  dispatch (or when a committed job is loaded) and freed when the job is
//  queued again or finished.
typedef struct {
    bjob_link_t link;           //  the worker module's
    struct bjob_s *job;         //  whose it is
    uint64_t token;             //  fencing token of the current dispatch
    int64_t deadline;           //  see above; in the deadline heap
    int64_t dispatched_at;      //  when (for maxHoldMs)
    uint32_t pos_deadline;
} bjob_flight_t;

typedef struct bjob_s {
    sched_job_t sj;             //  first: the scheduler's part
    uint64_t id;
    int64_t created_ms;
    bjob_flight_t *flight;      //  NULL while QUEUED
    store_anchor_t anchor;      //  its latest stored record
    char *history;              //  a line per attempt that went wrong
    uint32_t attempt;           //  dispatches so far
    uint32_t failures;          //  attempts that failed by the job's own fault
    uint32_t payload_size;
    uint16_t crashes;           //  times a worker was lost while holding it
    uint16_t msg_off;           //  the message key is pair + msg_off
    uint16_t pair_len;          //  strlen (pair); the payload follows its NUL
    uint8_t state;              //  bjob_state_t
    uint8_t priority;
    bool alone;                 //  dispatched alone, as a suspect
    char pair[];                //  "entity \x1f msg_key" NUL, then the payload
} bjob_t;

//  The token of its current dispatch; 0 while QUEUED.
static inline uint64_t bjob_token (const bjob_t *job)
{
    return job->flight ? job->flight->token : 0;
}

static inline const char *bjob_msg_key (const bjob_t *job)
{
    return job->pair + job->msg_off;
}

static inline proto_bin_t bjob_payload (const bjob_t *job)
{
    return (proto_bin_t) {(const uint8_t *) job->pair + job->pair_len + 1, job->payload_size};
}

//  Jobs that are suspects: a worker died holding them this many times.
#define BJOB_SUSPECT_CRASHES 2

typedef struct bjobs_s bjobs_t;

typedef struct {
    uint64_t submitted, accepted, duplicates, rejected, busy, dispatched, retried, dead, expired,
        skipped, returned, committed, posted, duplicate_posts, stale_results, reclaimed, crashes,
        sink_expired;
} bjobs_counters_t;

//  `store` may be NULL (memory only). Tokens of this run never repeat those of another.
bjobs_t *bjobs_new (const pcfg_t *config, sched_t *sched, store_t *store, bdlq_t *dlq);
void bjobs_destroy (bjobs_t **self_p);

//  --- submitting ---------------------------------------------------------------

typedef enum { BJOBS_ACCEPTED, BJOBS_DUPLICATE, BJOBS_INVALID, BJOBS_BUSY } bjobs_accept_t;

//  Takes one submitted job. On BJOBS_INVALID, *why says why (a static string).
bjobs_accept_t bjobs_accept (bjobs_t *self, const proto_job_spec_t *spec, int64_t now,
                             const char **why);

//  --- dispatching (the worker module drives it) -------------------------------

//  The next job to dispatch at `now`, or NULL. It is DISPATCHED with a new
//  token and its rate slots taken; the caller links it to a worker.
bjob_t *bjobs_next (bjobs_t *self, int64_t now);
//  The job could not be given to any worker after all: back in the queue,
//  its slots given back and the attempt not counted, eligible at `not_before`.
void bjobs_unpop (bjobs_t *self, bjob_t *job, int64_t now, int64_t not_before);

//  A heartbeat listed the job: its lease runs until now + lease (and never
//  past its dispatch + maxHoldMs).
void bjobs_renew (bjobs_t *self, bjob_t *job, int64_t now);

//  --- what workers report ---------------------------------------------------------

//  RELEASE of a DISPATCHED job with its current token (the caller checked).
void bjobs_released (bjobs_t *self, bjob_t *job, const proto_release_item_t *item, int64_t now);

//  Why a job is taken from its worker.
typedef enum {
    BJOBS_NOT_HELD,         //  the worker does not have it (JOB frame lost): no fault
    BJOBS_NOT_SENT,         //  its JOB frame could not be queued: no attempt at all
    BJOBS_WORKER_LOST,      //  its worker went silent: a crash, unless known otherwise
    BJOBS_LEASE,            //  not renewed in time (a worker that does not list its jobs)
    BJOBS_HELD_TOO_LONG     //  past maxHoldMs: the job's fault
} bjobs_why_t;

//  Takes a DISPATCHED job back from its worker (unlinks it) and queues it
//  again, counting what `why` means; `detail` goes into its history.
void bjobs_take_back (bjobs_t *self, bjob_t *job, bjobs_why_t why, const char *detail,
                      int64_t now);

//  --- what the sink reports -----------------------------------------------------------

//  Answers one COMMIT item; fills `verdict` (with the job's fields for a
//  post on hold = 0). Strings in `verdict` are the job's: use them before
//  anything else changes the job.
void bjobs_commit (bjobs_t *self, const proto_commit_item_t *item, int64_t lease_ms, int64_t now,
                   proto_verdict_item_t *verdict);
//  An outcome for the current attempt of a job the sink has not claimed yet
//  (it had the verdict pushed at dispatch) claims it first.
void bjobs_outcome (bjobs_t *self, const proto_outcome_item_t *item, int64_t now);
//  Fills a post verdict's fields from the job: what the sink posts.
//  Strings are the job's, as above.
void bjobs_verdict_fields (bjobs_t *self, const bjob_t *job, proto_verdict_item_t *verdict);

//  --- time ----------------------------------------------------------------------------------

//  Expires queued jobs and settles every deadline due at `now`.
void bjobs_tick (bjobs_t *self, int64_t now);
//  When bjobs_tick has something to do.
int64_t bjobs_wakeup (bjobs_t *self, int64_t now);

//  --- looking and counting ------------------------------------------------------------------

bjob_t *bjobs_find (bjobs_t *self, uint64_t id);
size_t bjobs_count (bjobs_t *self);
size_t bjobs_in_state (bjobs_t *self, bjob_state_t state);
const bjobs_counters_t *bjobs_counters (bjobs_t *self);
//  The entity id of a job.
const char *bjobs_entity (bjobs_t *self, const bjob_t *job);

//  A dead letter queued again as a new job (dlq retry).
void bjobs_requeue_dead (bjobs_t *self, const bdead_t *dead, int64_t now);
void bjobs_set_paused (bjobs_t *self, int entity, bool paused, int64_t now);

//  Recovery: the store's rows back into jobs. Returns 0 or -1.
int bjobs_recover (bjobs_t *self, int64_t now);
//  Periodic pruning of stored keys and rate history.
void bjobs_prune (bjobs_t *self, int64_t now);

#endif
