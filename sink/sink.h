/*  sink - posts the replies and publishes the pipeline's stats.

    The sink server is a czmq actor. It binds the results socket (PULL,
    workers push RESULT and STATS) and the stats socket (PUB), and connects
    to the broker's frontend (DEALER). For each result it asks the broker
    (COMMIT) whether this attempt owns the job; only on VERDICT post does it
    post, at most once per (message, entity), then reports the OUTCOME and
    keeps it until the broker's OUTCOME_ACK.
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
