/*  worker_int - the worker's state, shared by its three files:

        worker_server.c   the loop, the broker conversation (HEARTBEAT,
                          WELCOME, JOB), stats and the drain
        jobs.c            jobs in hand: taking JOB items, the backend's
                          done callback, dropping and returning jobs
        hand.c            what waits to leave: RESULTs for the sink and
                          RELEASEs for the broker, sent without blocking

    A job the worker holds (received, not yet RELEASEd) is in exactly one
    of three places: with the backend (`jobs`), written and waiting for the
    sink to take its RESULT (`results`), or waiting for ZeroMQ to take its
    RELEASE (`releases`). HEARTBEAT.held lists all three.

    Not a public API.
*/
#ifndef WORKER_INT_H_INCLUDED
#define WORKER_INT_H_INCLUDED

#include "worker/backend.h"
#include "common/pconfig.h"
#include "common/plog.h"
#include "common/prt.h"
#include "proto/proto_sock.h"

#include <czmq.h>

typedef struct {
    uint64_t received, completed, failed, retried, expired, skipped, returned, malformed;
    uint64_t empty, llm_ms_total, tokens;
    uint64_t cancelled;         //  dropped because WELCOME.cancel named them
    uint64_t sink_handed_back;  //  results the sink did not take in time
    uint64_t over_capacity;     //  jobs beyond capacity, handed back at once
    uint64_t releases_dropped;  //  RELEASEs dropped at the queue's bound
} wcounters_t;

//  A written reply waiting for the sink to take its RESULT.
typedef struct {
    wjob_t *job;                //  owned; still held until its RESULT is queued
    char *text;
    uint64_t llm_ms;
    uint64_t tokens;
    int64_t since;              //  when it was written: the sink's time runs from here
} wresult_t;

typedef struct {
    const pcfg_t *config;
    prt_t *rt;
    zsock_t *broker;            //  DEALER
    zsock_t *sink;              //  PUSH
    zsock_t *sink_monitor;      //  PAIR: the sink socket's connection events
    int sink_fd_connected;      //  descriptor of the latest connection to the sink; -1 = none
    int sink_fd_up;             //  that of the connection past its handshake; -1 = sink not connected
    proto_net_t net;
    backend_t *backend;
    char id[128];
    char host[64];
    uint32_t capacity;

    //  jobs.c: jobs with the backend
    wjob_t *jobs;
    size_t job_count;

    //  hand.c: the outgoing queues. Both are bounded by what the worker
    //  holds, and it holds at most `capacity` jobs (jobs.c hands any job
    //  beyond that straight back), so `results` never exceeds capacity;
    //  `releases` also carries the answers to jobs refused on arrival, so
    //  it has a hard bound of its own (hand.c, RELEASE_BOUND).
    wresult_t *results;
    size_t result_count, result_capacity;
    proto_release_item_t *releases;     //  each `reason` is owned
    size_t release_count, release_capacity;
    proto_result_item_t *frame;         //  one RESULT frame's items, reused
    int64_t sink_refused_since;         //  first refusal of the current spell; 0 = flowing
    bool sink_gave_up;                  //  results were handed back in this spell

    //  the broker conversation
    uint64_t epoch;             //  of the broker's last WELCOME; 0 = none yet
    uint64_t job_seq;           //  every JOB frame up to this seq has arrived or never will
    int64_t heartbeat_ms;       //  WELCOME.heartbeat_ms once known, else network.heartbeatMs
    int64_t lease_ms;           //  WELCOME.lease_ms once known, else staleClaimTimeout
    int heartbeat_timer;
    bool heartbeat_due;         //  sent at the end of the turn, after the RELEASEs
    int64_t last_welcome;
    bool broker_silent;
    bool draining;
    int64_t drain_until;

    wcounters_t counters;
    plog_limiter_t bad_log;     //  malformed frames from the broker
    plog_limiter_t hand_log;    //  results handed back, RELEASEs dropped
} worker_t;

//  --- jobs.c ------------------------------------------------------------------------

//  Takes the items of a JOB frame: each one is started, or answered at once
//  with a RELEASE (draining, over capacity, unknown entity, expired, malformed).
void worker_jobs_take (worker_t *self, const proto_jobs_t *jobs, int64_t now);
//  The backend's done callback (ctx is the worker).
void worker_jobs_done (void *ctx, wjob_t *job, int status, const char *text, uint64_t tokens,
                       int64_t retry_after_ms);
//  Drops the job with this ref if the backend has it (no RELEASE). True if it did.
bool worker_jobs_cancel (worker_t *self, proto_ref_t ref);
//  Hands every job the backend still has back to the broker (RELEASE return).
void worker_jobs_return_all (worker_t *self, const char *reason);
//  Writes the refs of the jobs with the backend; returns how many.
size_t worker_jobs_refs (worker_t *self, proto_ref_t *out);
void worker_job_free (wjob_t **job_p);
void worker_jobs_destroy (worker_t *self);

//  --- hand.c ------------------------------------------------------------------------

//  Queues a written reply for the sink; takes `job` and `text`.
void worker_hand_result (worker_t *self, wjob_t *job, char *text, uint64_t llm_ms, uint64_t tokens,
                         int64_t now);
//  Queues a RELEASE item (the reason is copied) and counts it.
void worker_hand_release (worker_t *self, uint64_t job_id, uint64_t token, int status,
                          const char *reason, int64_t retry_after_ms);
//  Sends what ZeroMQ will take, without blocking: RESULTs first, each job's
//  RELEASE done once its RESULT is queued, then RELEASEs; results the sink
//  has not taken for too long are dropped and their jobs handed back.
void worker_hand_flush (worker_t *self, int64_t now);
//  Drops a queued result or RELEASE with this ref (no RELEASE). True if it did.
bool worker_hand_cancel (worker_t *self, proto_ref_t ref);
//  Writes the refs of the queued results and RELEASEs; returns how many.
size_t worker_hand_refs (worker_t *self, proto_ref_t *out);
//  Hands back every queued result (RELEASE return) at the end of a drain.
void worker_hand_return_results (worker_t *self, const char *reason);
//  When the queues want another try; PRT_NEVER when they are empty.
int64_t worker_hand_wakeup (worker_t *self, int64_t now);
void worker_hand_destroy (worker_t *self);

//  Jobs held: received and not RELEASEd (with the backend, or queued).
static inline size_t worker_held (const worker_t *self)
{
    return self->job_count + self->result_count + self->release_count;
}

#endif
