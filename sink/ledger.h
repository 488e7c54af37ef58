/*  ledger - what the sink knows about pairs it is done with.

        posted pairs    every (entity, message) posted, remembered for
                        storage.dedupeRetentionSeconds (at most
                        storage.dedupeMaxKeys of them, the oldest go first)
                        so a pair is never posted twice; the last hour of
                        them is the rate history a restart replays
        doubted pairs   every pair whose post may or may not have happened
                        (interrupted, or the platform's answer was lost),
                        remembered the same way: never posted again (a
                        person decides, from the dead-letter queue)
        outcomes        every outcome reported to the broker, until its
                        OUTCOME_ACK

    The ledger also counts the outcomes and the posting latency, and
    recovers the sink's durable state at start: a mark with an outcome is
    reported again; a mark without one (a post the sink stopped in the
    middle of) is checked with its destination: posted, certainly not
    posted (the broker is asked about it again), or in doubt.
*/
#ifndef LEDGER_H_INCLUDED
#define LEDGER_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/pconfig.h"
#include "common/pkey.h"
#include "sink/commit.h"
#include "sink/dests.h"
#include "sink/gate.h"
#include "sink/sink_store.h"

typedef struct ledger_s ledger_t;

typedef enum {
    LEDGER_NONE = 0,            //  nothing known: it may be posted
    LEDGER_POSTED = 1,          //  posted: never again
    LEDGER_IN_DOUBT = 2,        //  may have been posted: never again (a person decides)
    LEDGER_NOT_POSTED = 3       //  failed or expired, outcome not acknowledged yet
} ledger_pair_t;

//  One outcome of a reply the sink held.
typedef struct {
    pkey_fp_t pair;
    uint64_t job_id, token;
    int outcome;                //  proto_outcome_status_t
    const char *reason;
    const char *entity;
    const char *chat;
    const char *chat_kind;
    int64_t created_ms;         //  for the latency
    int64_t first_at;           //  when its first part was posted (0 = unknown)
    bool marked;                //  the store holds its mark
} ledger_outcome_t;

typedef struct {
    uint64_t posted, duplicate_posts, expired, failed, in_doubt;
    size_t posted_pairs;        //  remembered now
    size_t doubted_pairs;
    size_t unacked;             //  outcomes waiting for OUTCOME_ACK
    double latency_p50, latency_p95, latency_p99;   //  message written -> posted, ms
} ledger_stats_t;

//  `store` (NULL: nothing durable) and `commit` are borrowed.
ledger_t *ledger_new (const pcfg_t *config, sink_store_t *store, commit_t *commit);
void ledger_destroy (ledger_t **self_p);

int ledger_pair (ledger_t *self, pkey_fp_t pair);

//  Reports an outcome and remembers it until acknowledged.
void ledger_settle (ledger_t *self, const ledger_outcome_t *outcome, int64_t now);
//  Reports an outcome for an attempt the sink did not take (duplicate, in doubt).
void ledger_report (ledger_t *self, uint64_t job_id, uint64_t token, int outcome,
                    const char *reason, int64_t now);
//  A new attempt owns the pair (its mark replaces any stored one).
void ledger_supersede (ledger_t *self, pkey_fp_t pair);
//  True while an outcome for this attempt waits for its acknowledgement.
bool ledger_has (ledger_t *self, uint64_t job_id, uint64_t token);
//  The broker stored this outcome.
void ledger_acked (ledger_t *self, uint64_t job_id, uint64_t token);

//  A recovered post the broker must be asked about again (COMMIT hold=0).
typedef void (ledger_again_fn) (void *arg, const sink_mark_t *mark);
//  Loads the stored state; replays the last hour into `gate` and `dests`.
//  Returns 0, or -1 when the store cannot be read at all.
int ledger_recover (ledger_t *self, gate_t *gate, dests_t *dests, int64_t now,
                    ledger_again_fn *again, void *arg);

//  Forgets posted pairs past their retention.
void ledger_prune (ledger_t *self, int64_t now);

void ledger_stats (ledger_t *self, ledger_stats_t *stats);

#endif
