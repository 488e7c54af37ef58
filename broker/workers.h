/*  workers - the workers the broker knows, what each holds, and its credit.

    A worker registers with its first HEARTBEAT and is answered with a
    WELCOME after every HEARTBEAT. The broker sends it JOB frames, numbered;
    each of its heartbeats says up to which frame it has seen everything
    (job_seq) and lists the jobs it holds. From that the broker reconciles,
    both ways, on every heartbeat:
      - a job sent in a frame the worker has seen, that it does not hold,
        is taken back at once (the frame was lost on the way, or the worker
        dropped it): no waiting for a lease;
      - a job it holds has its lease renewed;
      - a job it lists that is not (or no longer) its comes back in the
        WELCOME's cancel list, and the worker drops it;
      - its credit is recomputed: its capacity (at most worker.maxCapacity)
        minus what it holds.
    A worker silent for a lease is lost and its jobs go back to the queue.

    Which worker gets a job: one with the entity's model hot, else the one
    with the most free credit. A suspect (a job whose workers died holding
    it) runs alone on a worker that holds nothing else, so the next death
    tells whose fault it is.
*/
#ifndef BROKER_WORKERS_H_INCLUDED
#define BROKER_WORKERS_H_INCLUDED

#include <jansson.h>

#include "broker/jobs.h"
#include "broker/outbox.h"
#include "proto/proto_sock.h"

typedef struct bworkers_s bworkers_t;

typedef struct {
    uint64_t lost_workers;      //  workers that went silent
    uint64_t reclaimed_frames;  //  JOB frames ZeroMQ would not take
    uint64_t cancelled;         //  held refs sent back in WELCOME.cancel
    uint64_t refused;           //  messages from a connection bound to another identity
    uint64_t pushed;            //  post verdicts pushed to the sink with their JOB
} bworkers_counters_t;

//  JOB and WELCOME frames go through `out` on `backend` after the commit.
bworkers_t *bworkers_new (const pcfg_t *config, bjobs_t *jobs, bout_t *out, zsock_t *backend,
                          uint64_t epoch);
void bworkers_destroy (bworkers_t **self_p);

//  A HEARTBEAT or RELEASE from `peer`.
void bworkers_heartbeat (bworkers_t *self, const proto_peer_t *peer, const proto_heartbeat_t *hb,
                         int64_t now);
void bworkers_release (bworkers_t *self, const proto_peer_t *peer, const proto_release_t *release,
                       int64_t now);

//  Where the post verdict of each job dispatched goes, ahead of its JOB
//  frame: the sink at `route` on `frontend` (route_size 0: nowhere). A sink
//  that has it when the worker's RESULT arrives posts at once instead of
//  asking with COMMIT: two hops fewer between a message and its reply.
//  Forgotten when a frame to it cannot be sent.
void bworkers_push_to (bworkers_t *self, zsock_t *frontend, const uint8_t *route,
                       size_t route_size);

//  Free slots over every worker that takes work now.
size_t bworkers_free_credit (bworkers_t *self);
//  Hands out up to `budget` jobs; the frames go out after the commit.
void bworkers_dispatch (bworkers_t *self, size_t budget, int64_t now);

//  Loses workers silent for longer than the lease.
void bworkers_tick (bworkers_t *self, int64_t now);
int64_t bworkers_wakeup (bworkers_t *self, int64_t now);

//  A job leaves its worker's hands (any module may call this).
void bworkers_unlink (bjob_t *job);
//  True when the worker has not heartbeated for a lease (it is as good as lost).
bool bworkers_is_silent (const bworker_t *worker, int64_t now);
//  A worker's name for logs ("-" for none).
const char *bworkers_name (const bworker_t *worker);

size_t bworkers_count (bworkers_t *self);
size_t bworkers_credit (bworkers_t *self);
const bworkers_counters_t *bworkers_counters (bworkers_t *self);
json_t *bworkers_json (bworkers_t *self, int64_t now);

#endif
