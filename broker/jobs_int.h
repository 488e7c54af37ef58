/*  jobs_int - what the job module's files share: its struct and helpers.

    jobs.c has the life of a job; jobs_sink.c what the sink reports of it
    (COMMIT, OUTCOME); jobs_store.c what of it is stored and how the jobs
    come back after a restart; jobs_deadlines.c the heap of deadlines.
    Nothing outside the job module includes this file.
*/
#ifndef BROKER_JOBS_INT_H_INCLUDED
#define BROKER_JOBS_INT_H_INCLUDED

#include "broker/heap.h"
#include "broker/jobs.h"
#include "common/pkey.h"
#include "common/plog.h"
#include "common/pseen.h"
#include "common/ptable.h"

#define TOKENS_BUFFERED 256     //  random tokens fetched from the kernel at once

#define LEAD_SAMPLES 64          //  recent hand-off times the dispatch lead is taken from

//  jobs_deadlines.c: every job that is not QUEUED, by deadline (lazily: see there).
typedef struct {
    int64_t at;                 //  the entry's key: never later than the job's deadline
    bjob_flight_t *flight;
} bdeadline_t;

typedef struct {
    bdeadline_t *items;
    size_t size, capacity;
} bdeadlines_t;

struct bjobs_s {
    const pcfg_t *config;
    sched_t *sched;
    store_t *store;             //  NULL: memory only
    bdlq_t *dlq;
    ptable_t *by_id;            //  id -> bjob_t
    ptable_t *by_pair;          //  pair key -> bjob_t: one active job per pair
    pseen_t *finished;          //  fingerprints of finished pairs, bounded
    bdeadlines_t deadlines;     //  every job that is not QUEUED, by deadline
    size_t state_count[JOB_STATES];
    uint64_t next_job_id;
    uint64_t tokens[TOKENS_BUFFERED];
    size_t tokens_left;
    bjobs_counters_t counters;
    int64_t lead_samples[LEAD_SAMPLES]; //  dispatch -> the sink asking, rate-limited jobs
    size_t lead_count;
    plog_limiter_t dead_log;    //  dead letters can come in floods
    plog_limiter_t back_log;    //  so can take-backs
};

//  jobs.c
void bjobs__set_state (bjobs_t *self, bjob_t *job, int state);
//  The job's flight record, made if it has none (it leaves the queue).
bjob_flight_t *bjobs__flight (bjob_t *job);
//  Needs the flight record.
void bjobs__set_deadline (bjobs_t *self, bjob_t *job, int64_t at);
const char *bjobs__entity (bjobs_t *self, const bjob_t *job);
void bjobs__chat_source (const char *chat, char *source, size_t len);
bjob_t *bjobs__job_new (uint64_t id, const char *entity, const char *msg_key, const void *payload,
                        uint32_t payload_size);
void bjobs__job_free (bjob_t *job);
//  Adds a line to the job's history of attempts that went wrong.
void bjobs__history (bjob_t *job, int64_t now, const char *what);
//  The job is over: out of the scheduler, the tables and the store, its pair
//  remembered as finished, and freed.
void bjobs__finish (bjobs_t *self, bjob_t *job, int64_t now);
//  Into the dead-letter queue, then finished.
void bjobs__dead_letter (bjobs_t *self, bjob_t *job, const char *reason, bool maybe_posted,
                         int64_t now);

//  jobs_deadlines.c
void bdeadlines_destroy (bdeadlines_t *self);
//  Sets the job's deadline, and adds it if it has none.
void bdeadlines_set (bdeadlines_t *self, bjob_t *job, int64_t at);
void bdeadlines_remove (bdeadlines_t *self, bjob_t *job);
//  Takes out and returns a job whose deadline is at or before `now`; NULL when none is.
bjob_t *bdeadlines_due (bdeadlines_t *self, int64_t now);
//  When to look again (INT64_MAX: nothing has a deadline).
int64_t bdeadlines_next (const bdeadlines_t *self);

//  jobs_store.c
store_job_t bjobs__row (bjobs_t *self, const bjob_t *job);
void bjobs__put (bjobs_t *self, bjob_t *job, bool sync);
void bjobs__persist (bjobs_t *self, bjob_t *job);
void bjobs__remember_done (bjobs_t *self, pkey_fp_t fp, int64_t now);
void bjobs__reserve (bjobs_t *self, bjob_t *job);
void bjobs__unreserve (bjobs_t *self, bjob_t *job, int64_t now);

#endif
