/*  sink - posts the replies and publishes the pipeline's stats.

    The sink server is a czmq actor on the daemon loop (common/prt). It
    binds the results socket (PULL: workers push RESULT and STATS) and the
    stats socket (XPUB), and connects to the broker's frontend (DEALER). For
    each result it needs the broker's word (VERDICT) that this attempt owns
    the job: pushed with the dispatch, or else asked for (COMMIT). On post
    it posts what the broker names, at most once per (message, entity),
    when every limit allows it, holding the job meanwhile; then it reports
    the OUTCOME until the broker's OUTCOME_ACK. Its modules: intake
    (results waiting for a verdict), pushed (verdicts waiting for their
    results), commit
    (the broker conversation), gate (user-level budgets), post (replies
    from verdict to outcome), ledger (posted pairs, outcomes, recovery),
    hub (the stats feed), sink_store (durable state), dest* (destinations).
*/
#ifndef SINK_H_INCLUDED
#define SINK_H_INCLUDED

#include <czmq.h>

#include "common/pconfig.h"

typedef struct {
    const pcfg_t *config;       //  borrowed; must outlive the actor
    const char *ready_file;
} sink_args_t;

void sink_server (zsock_t *pipe, void *args);

#endif
