/*  workers_int - what the worker module's two files share: its records.

    workers.c has the workers the broker knows, what each holds, its credit
    and the dispatch; workers_heartbeat.c what workers say (HEARTBEAT,
    RELEASE) and the reconciliation of what each holds. Nothing outside the
    worker module includes this file.
*/
#ifndef BROKER_WORKERS_INT_H_INCLUDED
#define BROKER_WORKERS_INT_H_INCLUDED

#include "broker/workers.h"
#include "common/plog.h"
#include "common/ptable.h"

typedef struct {
    const uint8_t *data;
    size_t size;
} bworker_route_t;

struct bworker_s {
    bworkers_t *owner;
    uint8_t route[256];         //  routing id
    size_t route_size;
    bworker_route_t key;        //  the table key: points at route
    char *id;                   //  its WORKER_ID
    char *host;
    char *user;                 //  its authenticated identity ("" without security)
    uint64_t pid;
    uint32_t capacity;          //  as announced, at most worker.maxCapacity
    uint32_t zombies;           //  refs it listed that are not its
    bool draining;
    bool reserved;              //  emptying out to run a suspect alone
    bool unreachable;           //  a frame to it could not be sent: no jobs until it heartbeats
    int64_t last_seen;
    char **models;
    size_t model_count;
    bjob_t *jobs;               //  what it holds (list through bjob_t.link)
    size_t job_count;
    bjob_t *alone;              //  the suspect it runs alone, if any
    uint64_t last_frame;        //  seq of the last JOB frame sent to it
    uint64_t dispatched;        //  jobs sent, in all
    proto_job_t *batch;         //  jobs going out in this turn's frame
    size_t batch_count, batch_capacity;
    proto_verdict_item_t *push; //  their post verdicts, for the sink (while it is known)
    size_t push_capacity;
    proto_ref_t *cancel;        //  refs to send back in the next WELCOME
    size_t cancel_count, cancel_capacity;
};

struct bworkers_s {
    const pcfg_t *config;
    bjobs_t *jobs;
    bout_t *out;
    zsock_t *backend;
    uint64_t epoch;
    ptable_t *by_route;         //  route -> bworker_t
    uint64_t frame_seq;         //  JOB frames sent by this broker run
    bworker_t *reserved;        //  the worker emptying out for a suspect
    zsock_t *sink_sock;         //  where post verdicts are pushed (NULL: nowhere)
    uint8_t sink_route[256];
    size_t sink_route_size;
    bworkers_counters_t counters;
    plog_limiter_t log;
};

#endif
