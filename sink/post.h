/*  post - the replies the broker said to post, from its verdict until
    their outcome is known (then the ledger has them).

    A reply is one (entity, message) pair: the sink holds at most one per
    pair. Its life:

        GATED --the gate lets it go--> at its destination --first byte about to leave:
          ^                            the "posting" mark is stored and synced--> POSTING
          |                                                                          |
          +----------- retry: full-jitter backoff, through the gate again -----------+
                                                          outcome: posted, failed, ... --> ledger

    What is posted is what the broker named (its post verdict: entity,
    chat, msg_key, payload, priority, times); a worker's result contributes
    only its text. A pair already posted is reported 3 duplicate; a pair
    whose earlier post was interrupted (in doubt) 4 in doubt; a newer token
    for a pair the sink holds replaces the older one (the older one's text
    is dropped if it has not started posting; a post under way continues,
    and its outcome is reported for the newer token). A renewal answered
    stale/unknown/done drops the reply unless it has started posting.

    A reply whose first part went out and a later part failed is not sent
    through the gate again (its slot is recorded): only the rest goes, to
    its destination, after the backoff.
*/
#ifndef POST_H_INCLUDED
#define POST_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/pconfig.h"
#include "sink/commit.h"
#include "sink/dests.h"
#include "sink/gate.h"
#include "sink/ledger.h"
#include "sink/sink_store.h"

typedef struct post_s post_t;

//  The job as the broker names it (strings and payload are copied).
typedef struct {
    const char *msg_key;
    const char *entity;
    const char *chat;
    const char *chat_kind;
    int priority;
    int64_t created_ms;
    int64_t expires_ms;
    const void *payload;
    uint32_t payload_size;
    int64_t slot_ms;            //  not to be posted before (the broker's plan); 0 = none
} post_job_t;

typedef struct {
    uint64_t committed;         //  post verdicts taken
    uint64_t post_retries;
    uint64_t replaced;          //  a newer token took over a held reply
    uint64_t lost;              //  dropped: the broker no longer wants them from the sink
    size_t replies;             //  held now
    size_t waiting;             //  of which in the gate
} post_stats_t;

//  Everything is borrowed; `store` may be NULL (nothing durable). Makes
//  the destinations; NULL (logged) if one cannot start.
post_t *post_new (const pcfg_t *config, gate_t *gate, ledger_t *ledger, commit_t *commit,
                  sink_store_t *store);
void post_destroy (post_t **self_p);

//  The destinations (to register with the loop, and for recovery).
dests_t *post_dests (post_t *self);

//  A post verdict for (job_id, token): the broker's job, the worker's text.
void post_accept (post_t *self, uint64_t job_id, uint64_t token, const post_job_t *job,
                  const char *text, uint64_t llm_ms, uint64_t tokens, int64_t now);
//  A renewal was answered stale, unknown or done.
void post_lost (post_t *self, uint64_t job_id, uint64_t token);
//  True if the sink holds this attempt.
bool post_has (post_t *self, uint64_t job_id, uint64_t token);

//  The turn's phases. apply: let go what the gate allows. committed: the
//  store's commit succeeded (true when posts now wait for another turn).
//  send: write what waited for the commit (local destinations).
void post_apply (post_t *self, int64_t now);
bool post_committed (post_t *self);
void post_send (post_t *self, int64_t now);
int64_t post_wakeup (post_t *self, int64_t now);

//  Stops letting replies go (the sink is stopping); true while posts are
//  under way at destinations.
void post_drain (post_t *self);
bool post_busy (post_t *self);
//  The sink stops now: marks of replies whose first byte never left are
//  forgotten (they were certainly not posted; the broker takes the jobs back).
void post_stop (post_t *self);

void post_stats (post_t *self, post_stats_t *stats);

#endif
