/*  broker_ctl - the broker's admin commands and counters.

    Commands (CTL.command, CTL.args) and their JSON answers:
        stats                       counters and gauges
        workers                     connected workers
        entities                    per entity: queued, in flight, paused
        pause ENTITY|all            stop dispatching for an entity (or all)
        resume ENTITY|all
        dlq-list [LIMIT]            dead letters, oldest first
        dlq-retry ID|all [force]    queue dead letters again; "maybe posted"
                                    ones only with force
        dlq-purge ID|all            delete dead letters
*/
#ifndef BROKER_CTL_H_INCLUDED
#define BROKER_CTL_H_INCLUDED

#include <jansson.h>

#include "broker/dead.h"
#include "broker/jobs.h"
#include "broker/workers.h"

//  The broker's own counters (the rest belong to its modules).
typedef struct {
    uint64_t malformed;         //  frames that could not be decoded, or on the wrong socket
    uint64_t refused;           //  messages from a peer whose role may not send them
    uint64_t quarantined;       //  stored records that could not be loaded at start
} bctl_counters_t;

//  What the commands look at.
typedef struct {
    const pcfg_t *config;
    sched_t *sched;
    bjobs_t *jobs;
    bworkers_t *workers;
    bdlq_t *dlq;
    const bctl_counters_t *counters;
    int64_t now;
} bctl_t;

//  Runs a command; returns its JSON answer (caller frees) and sets *status
//  (0 ok, 1 failed: the answer is {"error": "..."}).
char *broker_ctl_handle (bctl_t *ctx, const proto_ctl_t *ctl, int *status);

//  The broker's counters and gauges, as STATS values (names are static).
size_t broker_stats_values (bctl_t *ctx, proto_num_t *values, size_t max);
json_t *broker_stats_json (bctl_t *ctx);

#endif
