/*  commit - the sink's conversation with the broker.

        COMMIT hold=0   "I have a result for (job, token): may I post it?"
                        sent for every new result, and again every
                        network.resendMs until a VERDICT answers it
        COMMIT hold=1   "I still hold (job, token)": a renewal of every job
                        the sink holds with a post verdict (waiting for a
                        rate slot, or being posted), at least every
                        lease_ms / 3, so the broker does not take it back;
                        and a claim, sent at once, of a job whose verdict
                        the broker pushed at dispatch (nobody asked)
        OUTCOME         what happened to each held job; resent every
                        resendMs until its OUTCOME_ACK

    lease_ms is the one the last VERDICT gave, else
    queueSettings.staleClaimTimeout. Everything is sent with proto_send and
    never blocks: a frame ZeroMQ does not take is sent again when due.

    What the answers mean is the caller's business: each VERDICT item and
    each acknowledged outcome comes back through commit_events_t.
*/
#ifndef COMMIT_H_INCLUDED
#define COMMIT_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

#include "proto/proto.h"

typedef struct commit_s commit_t;

typedef struct {
    //  A VERDICT item for a job the sink asked about (renewal = false) or
    //  holds (renewal = true). An asked job is no longer asked about; to
    //  keep it, call commit_hold.
    void (*verdict) (void *ctx, const proto_verdict_item_t *item, bool renewal);
    //  The broker stored this outcome.
    void (*acked) (void *ctx, uint64_t job_id, uint64_t token);
    void *ctx;
} commit_events_t;

typedef struct {
    uint64_t asked;             //  hold=0 items sent (first time)
    uint64_t resent;            //  hold=0 items sent again, unanswered
    uint64_t renewals;          //  hold=1 items sent
    uint64_t claims;            //  hold=1 items claiming a pushed verdict (not renewals)
    uint64_t outcomes;          //  outcome items sent (first time)
    uint64_t outcomes_resent;
    size_t asking;              //  jobs waiting for a verdict
    size_t held;                //  jobs held
    size_t unacked;             //  outcomes waiting for OUTCOME_ACK
} commit_stats_t;

//  `broker` is borrowed (the DEALER connected to the broker's frontend).
commit_t *commit_new (zsock_t *broker, int64_t resend_ms, int64_t lease_ms,
                      const commit_events_t *events);
void commit_destroy (commit_t **self_p);

//  Asks about a new result (COMMIT hold=0), until a verdict answers.
void commit_ask (commit_t *self, uint64_t job_id, uint64_t token);
//  Holds a job with a post verdict (renewals from `now` on).
void commit_hold (commit_t *self, uint64_t job_id, uint64_t token, int64_t now);
//  A held job whose verdict was pushed: says so at once (hold=1), then
//  renews it as any other. Nothing if it is not held.
void commit_claim (commit_t *self, uint64_t job_id, uint64_t token);
//  Stops asking about / holding a job (dropped, or replaced by a newer token).
void commit_forget (commit_t *self, uint64_t job_id, uint64_t token);
//  Reports what happened to a job (and stops holding it).
void commit_outcome (commit_t *self, uint64_t job_id, uint64_t token, int status,
                     const char *reason, int64_t at);

//  What the broker said.
void commit_on_verdict (commit_t *self, const proto_verdicts_t *verdicts);
void commit_on_outcome_ack (commit_t *self, uint64_t seq);

//  Sends what is due at `now`: new questions and outcomes, resends, renewals.
void commit_send (commit_t *self, int64_t now);
//  When commit_send next has something due (after new work: now).
int64_t commit_wakeup (commit_t *self, int64_t now);

//  The lease in force, and how often renewals and resends must be checked.
int64_t commit_lease (commit_t *self);
int64_t commit_tick (commit_t *self);

void commit_stats (commit_t *self, commit_stats_t *stats);

#endif
