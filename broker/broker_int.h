/*  broker_int - the broker's internal types, shared by its source files. */
#ifndef BROKER_INT_H_INCLUDED
#define BROKER_INT_H_INCLUDED

#include <czmq.h>

#include "broker/broker.h"
#include "broker/heap.h"
#include "broker/sched.h"
#include "broker/store.h"
#include "common/pdaemon.h"
#include "common/plog.h"
#include "proto/proto.h"
#include "proto/proto_sock.h"

typedef enum {
    JOB_QUEUED = 1,     //  in the scheduler (ready or delayed)
    JOB_DISPATCHED,     //  a worker holds it
    JOB_HANDED_OFF,     //  the worker sent the result to the sink; waiting for COMMIT
    JOB_COMMITTED       //  the sink owns posting it; waiting for OUTCOME
} bjob_state_t;

typedef struct bworker_s bworker_t;

typedef struct bjob_s {
    sched_job_t sj;             //  first: the scheduler's part
    uint64_t id;
    uint64_t token;             //  fencing token of the current dispatch; 0 = none
    uint32_t attempt;           //  dispatches so far
    uint32_t failures;          //  attempts that failed (retry, lost worker)
    uint8_t state;              //  bjob_state_t
    uint8_t priority;
    int64_t created_ms;
    int64_t deadline;           //  JOB_HANDED_OFF: give up waiting for COMMIT
    size_t pos_deadline;
    bworker_t *worker;          //  JOB_DISPATCHED / JOB_COMMITTED before RELEASE
    struct bjob_s *wprev, *wnext;   //  in the worker's list
    char *dkey;                 //  "entity \x1f msg_key": one active job per pair
    const char *msg_key;        //  inside dkey
    proto_bin_t payload;        //  owned MESSAGE record
    char *history;              //  one line per failed attempt, for the dead-letter queue
} bjob_t;

struct bworker_s {
    char *key;                  //  routing id in hex: the worker table key
    zframe_t *route;            //  routing id as received
    char *id;                   //  its WORKER_ID
    char *host;
    uint64_t pid;
    uint32_t capacity;
    uint32_t credit;            //  jobs it can take now
    bool draining;
    int64_t last_seen;
    char **models;
    size_t model_count;
    bjob_t *jobs;               //  jobs it holds (list via wnext)
    size_t job_count;
    proto_job_t *batch;         //  jobs being sent to it this iteration
    size_t batch_count;
    size_t batch_capacity;
    uint64_t dispatched;        //  total jobs sent
};

typedef struct {
    uint64_t id;
    char *msg_key;
    char *entity;
    char *chat;
    uint8_t priority;
    int64_t created_ms;
    int64_t dead_at;
    uint32_t attempts;
    char *reason;
    char *history;
    proto_bin_t payload;
} bdead_t;

typedef struct {
    //  counters since start
    uint64_t submitted, accepted, duplicates, rejected, dropped;
    uint64_t dispatched, retried, dead, expired, skipped, returned;
    uint64_t committed, posted, duplicate_posts, stale_results, lost_workers, malformed;
} bcounters_t;

typedef struct boutgoing_s {
    zsock_t *sock;
    zframe_t *route;
    zmq_msg_t body;
} boutgoing_t;

typedef struct broker_s {
    const pcfg_t *config;
    zsock_t *pipe;
    zsock_t *frontend;
    zsock_t *backend;
    proto_net_t net;
    sched_t *sched;
    store_t *store;             //  durable state; NULL keeps everything in memory
    int64_t next_prune;
    uint32_t epoch;             //  distinguishes this run's tokens from earlier runs'
    uint64_t next_token;
    uint64_t next_job_id;
    int64_t now;                //  wall ms, never decreasing
    zhashx_t *jobs;             //  id -> bjob_t
    zhashx_t *active;           //  dkey -> bjob_t
    zhashx_t *finished;         //  dkey of recently finished jobs -> 1
    zlistx_t *finished_order;   //  the same keys, oldest first, to bound the set
    zhashx_t *workers;          //  key -> bworker_t
    heap_t deadlines;           //  handed-off jobs by deadline
    zlistx_t *dead;             //  bdead_t, oldest first
    uint64_t next_dead_id;
    zhashx_t *poller_stats;     //  id -> json_t snapshot
    struct boutgoing_s *outbox; //  replies held until state is stored (group commit)
    size_t outbox_count;
    size_t outbox_capacity;
    bcounters_t counters;
    size_t state_count[JOB_COMMITTED + 1];  //  jobs in each bjob_state_t
    int64_t next_heartbeat;
    int64_t next_congestion_warning;
    plog_limiter_t malformed_log;
} broker_t;

#define U64_KEY(id) ((void *) (uintptr_t) (id))     //  job ids as zhashx keys

//  broker_jobs.c: the job lifecycle and its durability
const char *broker_accept (broker_t *self, const proto_job_spec_t *spec, bool *duplicate);
void broker_enforce_queue_limit (broker_t *self);
void broker_set_state (broker_t *self, bjob_t *job, int state);
void broker_persist (broker_t *self, bjob_t *job);
void broker_reserve (broker_t *self, bjob_t *job);
void broker_unreserve (broker_t *self, bjob_t *job);
void broker_worker_detach (bworker_t *worker, bjob_t *job);
void broker_job_unassign (broker_t *self, bjob_t *job);
void broker_job_finish (broker_t *self, bjob_t *job);
void broker_job_failed (broker_t *self, bjob_t *job, const char *reason, int64_t retry_after);
void broker_append_history (bjob_t *job, int64_t now, const char *what);
void broker_dead_letter (broker_t *self, bjob_t *job, const char *reason);
void broker_job_free (bjob_t **job_p);
int broker_recover (broker_t *self);

//  broker_ctl.c
char *broker_ctl_handle (broker_t *self, const proto_ctl_t *ctl, int *status);
json_t *broker_stats_json (broker_t *self);
void broker_stats_values (broker_t *self, proto_num_t *values, size_t *count, size_t max);

//  broker_jobs.c, used by broker_ctl.c
void broker_requeue_dead (broker_t *self, bdead_t *dead);
void broker_dead_free (bdead_t **dead_p);
void broker_set_paused (broker_t *self, int entity, bool paused);
void broker_forget_dead (broker_t *self, bdead_t *dead);

#endif
