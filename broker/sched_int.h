/*  sched_int - what the scheduler's two files share: its records.

    sched.c has the queue: flows, entities taking turns, the timers that
    bring them back. sched_limits.c has the rate slots: when a limit allows
    the next dispatch, and the slots taken at dispatch, given back, moved to
    the time of the post or restored after a restart. Nothing outside the
    scheduler includes this file.
*/
#ifndef BROKER_SCHED_INT_H_INCLUDED
#define BROKER_SCHED_INT_H_INCLUDED

#include "broker/heap.h"
#include "broker/sched.h"
#include "common/ptable.h"

#include <czmq.h>

//  What orders flows and entities comes first in their records, so that a
//  comparison reads one cache line of each.
typedef struct flow_s {
    int64_t top_rank;           //  its top job's (rank, seq) and priority, kept
    uint64_t top_seq;           //  here so that ordering flows, and asking whether
    uint64_t stamp;             //  when it last dispatched (scheduler stamp)
    uint8_t top_priority;       //  the top is paced, reads no job (s_flow_key)
    uint16_t entity;
    uint32_t chat;
    uint32_t pos;               //  in its entity's flow heap
    uint64_t key;               //  in the scheduler's flow table: chat << 16 | entity
    heap_t jobs;                //  ready jobs by (rank, seq)
    bool parked;                //  waiting on its chat's limit
    struct flow_s *next_parked;
} flow_t;

typedef struct {
    int64_t top_rank;           //  its top flow's top_rank and top_priority
    uint64_t vtime;             //  virtual time: advanced by `step` per dispatch
    uint64_t stamp;             //  when it last dispatched
    uint8_t top_priority;       //  (s_entity_key)
    heap_t flows;               //  flows with ready jobs, not parked
    limit_log_t log;
    int64_t max_in_flight;      //  0 = unlimited
    size_t in_flight;
    size_t queued;
    uint64_t step;              //  VTIME_SCALE / its posts per minute
    bool paused;
    int64_t slot_ok;            //  key in the timer heap: its next slot (sched__slot_ok)
    int64_t blocked_at;         //  last time its limit held back a ready job (sched_slot)
    uint32_t pos_ready;
    uint32_t pos_timer;
} entity_t;

typedef struct {
    char *key;
    char *kind;
    uint32_t index;             //  in the scheduler's chats
    limit_log_t log;
    flow_t *parked;             //  flows waiting for this chat's limit
    int64_t slot_ok;            //  key in the chat timer heap: its next slot
    int64_t blocked_at;         //  last time its limit held back a ready job
    uint32_t pos_timer;
} chat_t;

struct sched_s {
    sched_limit_t global_limit;
    int64_t global_max_in_flight;
    int64_t aging_ms;
    int paced_from;
    sched_chat_rule_t *rules;
    size_t rule_count;

    entity_t *entities;
    size_t entity_count;
    chat_t **chats;
    size_t chat_count;
    size_t chat_capacity;
    ptable_t *chat_index;       //  chats by key
    //  Flows by (chat, entity), made on first use. A table, not an array of
    //  every entity per chat: a thousand entities in ten thousand chats cost
    //  only the pairs that ever had a job, not ten million slots.
    ptable_t *flows;

    limit_log_t global_log;
    int64_t global_blocked_at;  //  last time the global limit held back a ready job
    bool global_held;           //  ... and it has not let one go since
    size_t global_in_flight;
    int64_t lead;               //  reservations are made this far ahead (sched_set_lead)
    uint64_t vclock;            //  virtual time of the latest dispatch
    bool paused_all;

    heap_t ready;               //  entities that may dispatch now
    heap_t entity_timers;       //  entities waiting for their rate limit
    heap_t chat_timers;         //  chats with parked flows
    heap_t delayed;             //  jobs waiting for not_before
    heap_t expiry;              //  queued jobs with an expiry

    uint64_t seq;
    uint64_t stamp;
    size_t queued;
    size_t delayed_count;
};

//  sched.c
//  Puts an entity where it belongs: ready, waiting for its limit, or
//  nowhere (no work, paused, or at its concurrency cap).
void sched__entity_refresh (sched_t *self, entity_t *e, int64_t now);

//  sched_limits.c
//  The earliest slot >= now + lead that `log` allows a reservation at,
//  paced or not (limits.h): the entity and chat timers keep these, so that
//  a change of the lead moves every timer with it (a timer kept as a
//  dispatch time would fire late by as much as the lead grew, and leave
//  that much of a full budget unplanned).
int64_t sched__slot_ok (const sched_t *self, const limit_log_t *log, int64_t now, bool paced);
//  When a job taking `slot` is dispatched: slot - lead (SCHED_NEVER for never).
int64_t sched__due (const sched_t *self, int64_t slot);
//  The earliest time >= now at which `log` allows a dispatch (its slot ahead).
int64_t sched__next_ok (const sched_t *self, const limit_log_t *log, int64_t now, bool paced);
//  Takes the rate slots of a job dispatched at `now`: the same time in the
//  entity's, the chat's and the global log.
void sched__take_slots (sched_t *self, sched_job_t *job, entity_t *e, chat_t *chat, int64_t now);

#endif
