/*  sched - the broker's scheduler: which job goes next, and when.

    A plain data structure with the clock passed in: no sockets, no real
    time, so every rule is tested deterministically (tests/test_sched.c).

    Rules, all applied together at dispatch:
    - priority 0 (most urgent) .. 99, FIFO within a priority; optional aging
      (every agingSeconds of waiting counts one priority more urgent);
    - rate limits per entity, per chat and global: a minimum gap, at most N
      in any 60 s and at most M in any 3600 s window (exact sliding logs:
      no half-open window of that length ever holds more than the limit);
      jobs of priority paced_from and up (chatter) are paced: a per-minute
      count is spent evenly through the minute, as the sink spends it, not
      in a burst that leaves the rest of the minute to others;
    - concurrency caps: global and per entity (jobs in flight);
    - not-before times (natural response delays, retry backoff);
    - pause per entity or for everything.

    Dispatch is fair and never blocked by one busy party: the most urgent
    job that is eligible now goes first; among equal urgency, entities take
    turns, and within an entity its chats take turns. A job whose entity or
    chat is rate-limited waits aside without delaying anyone else.

    Cost: O(log n) per push/pop in queued jobs (plus, when a chat's limit
    lifts, O(k log n) for the k entities waiting on that chat).

    Jobs are intrusive: embed sched_job_t as the first member of your record.
*/
#ifndef SCHED_H_INCLUDED
#define SCHED_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/limits.h"

#define SCHED_NEVER INT64_MAX

typedef struct {
    sched_limit_t limit;
    int64_t max_in_flight;  //  0 = unlimited
} sched_entity_config_t;

typedef struct {
    const char *source;     //  "*" = any
    const char *chat_kind;  //  "*" = any
    sched_limit_t limit;
} sched_chat_rule_t;

typedef struct {
    sched_limit_t global;
    int64_t global_max_in_flight;   //  0 = unlimited
    int64_t aging_ms;               //  0 = no aging
    size_t entity_count;
    const sched_entity_config_t *entities;
    size_t chat_rule_count;
    const sched_chat_rule_t *chat_rules;    //  first match wins
    int paced_from;                 //  jobs of this priority and up are paced; 0 = none
} sched_config_t;

//  Where a job is (sched_job_t.where).
typedef enum {
    SCHED_NOWHERE = 0,  //  not known to the scheduler
    SCHED_DELAYED,      //  waiting for its not-before time
    SCHED_READY,        //  queued, eligible as far as its own time goes
    SCHED_INFLIGHT      //  dispatched; counts against concurrency caps
} sched_where_t;

typedef struct sched_job_s {
    //  Set by the caller before sched_push:
    uint8_t priority;       //  0..99
    uint16_t entity;        //  index into sched_config_t.entities
    uint32_t chat;          //  from sched_chat_intern
    int64_t not_before;     //  earliest dispatch, ms; 0 = now
    int64_t expires_at;     //  ms; 0 = never
    //  Owned by the scheduler:
    int64_t enqueued_at;    //  first push
    int64_t rank;           //  urgency (priority, aged)
    uint64_t seq;           //  FIFO order
    int64_t reserved_at;    //  rate slot taken at dispatch, 0 = none
    uint8_t where;          //  sched_where_t
    bool held;              //  its slot is contended: the reply waits for it (sched_slot)
    uint32_t pos_queue;     //  in its flow's heap or in the delay heap
    uint32_t pos_expiry;
} sched_job_t;

typedef struct sched_s sched_t;

//  The configuration is copied.
sched_t *sched_new (const sched_config_t *config);
//  A scheduler holding a Parley configuration's limits and caps: every
//  entity's rateLimits and maxInFlight, the chatLimits rules, the global
//  limits, globalMaxInFlight, aging and the urgent class.
sched_t *sched_new_for (const pcfg_t *config);
void sched_destroy (sched_t **self_p);

//  Returns the index of the chat `key` ("source/chat"), creating it and
//  choosing its limit rule from `source` and `kind` on first sight.
uint32_t sched_chat_intern (sched_t *self, const char *key, const char *source, const char *kind);

//  Number of chats known.
size_t sched_chat_count (sched_t *self);

//  Frees the per-(chat, entity) state of pairs that hold no job, where that
//  keeps the chats' turns: a pair is kept while its entity has work in a
//  chat served after it (its turn among the entity's chats still counts).
//  A pair made again counts as never served. Called now and then; returns
//  how many it freed. Without it, every pair that ever had a job would be
//  kept for the life of the process.
size_t sched_forget_idle (sched_t *self);
//  Pairs (chat, entity) the scheduler holds state for.
size_t sched_flow_count (sched_t *self);
const char *sched_chat_key (sched_t *self, uint32_t chat);
const char *sched_chat_kind (sched_t *self, uint32_t chat);

//  True when a dispatch for (entity, chat) counts against any rate limit
//  (the entity's, the chat's or the global one), i.e. worth remembering.
bool sched_limited (sched_t *self, int entity, uint32_t chat);

//  Queues a job (first time or again after a failed attempt).
void sched_push (sched_t *self, sched_job_t *job, int64_t now);

//  The most urgent job eligible at `now`, or NULL. The job is taken out of
//  the queue, counted in flight, and its rate slots are reserved.
sched_job_t *sched_pop (sched_t *self, int64_t now);

//  The job is no longer in flight (its worker is done with it, or gone).
void sched_done (sched_t *self, sched_job_t *job, int64_t now);

//  Gives the job's rate slots back: it was not posted and will not be.
void sched_unreserve (sched_t *self, sched_job_t *job, int64_t now);

//  The job was posted at `at`: its rate slots move from the time reserved
//  at dispatch to that time, so the broker counts what the platform saw.
void sched_posted (sched_t *self, sched_job_t *job, int64_t at, int64_t now);

//  Takes a queued or delayed job out (dropped, purged). No-op otherwise.
void sched_remove (sched_t *self, sched_job_t *job);

//  A queued job whose expires_at has passed, taken out; NULL if none.
sched_job_t *sched_pop_expired (sched_t *self, int64_t now);

//  When sched_pop may next return a job that it cannot return now; or
//  SCHED_NEVER when only an outside event (a push, a done, a resume) can
//  change that. Also covers the next expiry.
int64_t sched_wakeup (sched_t *self, int64_t now);

//  Pause or resume one entity, or every entity with entity = -1.
void sched_pause (sched_t *self, int entity, bool paused, int64_t now);
bool sched_paused (sched_t *self, int entity);

//  Rate history: restore a reservation made before a restart, so a
//  restarted broker does not allow a burst.
void sched_restore_reservation (sched_t *self, int entity, uint32_t chat, int64_t at);

//  Rate slots are reserved lead_ms ahead of dispatch (about the time a reply
//  takes to reach the sink, which holds it until its slot): see sched_limits.c.
void sched_set_lead (sched_t *self, int64_t lead_ms);

//  The time before which a reply to the dispatched `job` should not be
//  posted: its reserved slot when a limit it counts against was full (held
//  a ready job back) within the lead before its dispatch; 0 when no limit
//  was, and the reply may go as soon as the limits allow.
int64_t sched_slot (const sched_job_t *job);

typedef struct {
    size_t queued;          //  ready + delayed
    size_t delayed;
    size_t in_flight;
} sched_counts_t;

void sched_counts (sched_t *self, sched_counts_t *counts);

//  Per-entity: queued jobs and jobs in flight.
void sched_entity_counts (sched_t *self, int entity, size_t *queued, size_t *in_flight);

#endif
