/*  sched_limits - the scheduler's rate slots. See sched.h for the rules.

    Every entity, every chat and the scheduler itself keep a log of the
    slots taken against their limit (common/limits.h). This file is what
    reads and writes those logs: when a limit allows the next dispatch, the
    slots a dispatch takes, and the slots given back, moved to the time the
    post was made, or restored after a restart. Which job goes next, and
    when an entity or a chat is looked at again, is sched.c.
*/
#include "broker/sched_int.h"

//  A limit counts as full for this long at least after it held a job back.
#define HOLD_WINDOW_MIN_MS 1000

//  --- rate slots, reserved ahead ----------------------------------------------------------

//  The sink holds each post until its budgets allow it (and, while a limit is
//  full, until the slot reserved here: sched_slot) and records the slot when
//  the post is made; the broker reserves slots so that it does not dispatch
//  more than can be posted. A reply reaches the sink one LLM latency after
//  dispatch, so the broker reserves in the future: a job dispatched at `now`
//  takes the slot at now + lead. With lead about the LLM latency, replies
//  reach the sink a little before their slots and wait there, so a saturated
//  budget is used in full instead of losing every slot a slow reply misses.

int64_t sched__slot_ok (const sched_t *self, const limit_log_t *log, int64_t now, bool paced)
{
    return limit_log_next_with (log, now + self->lead, 0, paced);
}

int64_t sched__due (const sched_t *self, int64_t slot)
{
    return slot == LIMITS_NEVER ? SCHED_NEVER : slot - self->lead;
}

int64_t sched__next_ok (const sched_t *self, const limit_log_t *log, int64_t now, bool paced)
{
    return sched__due (self, sched__slot_ok (self, log, now, paced));
}

bool sched_limited (sched_t *self, int entity, uint32_t chat)
{
    return limit_log_active (&self->global_log)
           || (entity >= 0 && (size_t) entity < self->entity_count
               && limit_log_active (&self->entities[entity].log))
           || (chat < self->chat_count && limit_log_active (&self->chats[chat]->log));
}

//  Reserves the slot at now + lead, or just after the newest if the lead
//  shrank (the log's times must not decrease). Returns the time recorded.
static int64_t s_reserve (limit_log_t *log, int64_t at)
{
    if (!limit_log_active (log))
        return at;
    if (log->count && limit_log_entry (log, 0) > at)
        at = limit_log_entry (log, 0);
    limit_log_record (log, at);
    return at;
}

void sched__take_slots (sched_t *self, sched_job_t *job, entity_t *e, chat_t *chat, int64_t now)
{
    //  One time for all three logs, so sched_unreserve finds it in each.
    int64_t at = now + self->lead;
    if (limit_log_active (&e->log) && e->log.count && limit_log_entry (&e->log, 0) > at)
        at = limit_log_entry (&e->log, 0);
    if (limit_log_active (&chat->log) && chat->log.count && limit_log_entry (&chat->log, 0) > at)
        at = limit_log_entry (&chat->log, 0);
    if (limit_log_active (&self->global_log) && self->global_log.count
        && limit_log_entry (&self->global_log, 0) > at)
        at = limit_log_entry (&self->global_log, 0);
    job->reserved_at = s_reserve (&e->log, at);
    s_reserve (&chat->log, at);
    s_reserve (&self->global_log, at);
    //  A limit that held a ready job back within the lead is full: the slots
    //  ahead are planned for replies on their way, and a reply posted before
    //  its own slot would take one of theirs. The sink then posts it no
    //  earlier than its slot (sched_slot), so the platform sees the plan.
    //  Posted as early as the sink's budgets allowed, replies overtook each
    //  other, and a reply late for its slot found the next ones' entities
    //  already spent: seed 000's budgets (tests/test_seed_limits) were used
    //  at 96.1-97.2 %, against 96.7-98.3 % held. A limit that was not full
    //  holds nothing: its replies go the moment the limits allow.
    int64_t since = now - (self->lead > HOLD_WINDOW_MIN_MS ? self->lead : HOLD_WINDOW_MIN_MS);
    job->held = (limit_log_active (&e->log) && e->blocked_at > since)
                || (limit_log_active (&chat->log) && chat->blocked_at > since)
                || (limit_log_active (&self->global_log) && self->global_blocked_at > since);
}

int64_t sched_slot (const sched_job_t *job)
{
    return job->held ? job->reserved_at : 0;
}

//  --- slots given back, moved, restored ---------------------------------------------------

void sched_unreserve (sched_t *self, sched_job_t *job, int64_t now)
{
    if (!job->reserved_at)
        return;
    entity_t *e = &self->entities[job->entity];
    chat_t *chat = self->chats[job->chat];
    limit_log_forget (&e->log, job->reserved_at);
    limit_log_forget (&chat->log, job->reserved_at);
    limit_log_forget (&self->global_log, job->reserved_at);
    job->reserved_at = 0;
    sched__entity_refresh (self, e, now);
    if (heap_contains (&self->chat_timers, chat)) {
        chat->slot_ok = sched__slot_ok (self, &chat->log, now, false);
        heap_update (&self->chat_timers, chat);
    }
}

void sched_posted (sched_t *self, sched_job_t *job, int64_t at, int64_t now)
{
    if (!job->reserved_at || at <= 0 || at == job->reserved_at)
        return;
    entity_t *e = &self->entities[job->entity];
    chat_t *chat = self->chats[job->chat];
    limit_log_t *logs[] = {&e->log, &chat->log, &self->global_log};
    for (size_t i = 0; i < sizeof logs / sizeof logs[0]; i++)
        if (limit_log_forget (logs[i], job->reserved_at))
            limit_log_insert (logs[i], at);
    job->reserved_at = at;
    sched__entity_refresh (self, e, now);
    if (heap_contains (&self->chat_timers, chat)) {
        chat->slot_ok = sched__slot_ok (self, &chat->log, now, false);
        heap_update (&self->chat_timers, chat);
    }
}

void sched_restore_reservation (sched_t *self, int entity, uint32_t chat, int64_t at)
{
    if (entity >= 0 && (size_t) entity < self->entity_count)
        s_reserve (&self->entities[entity].log, at);
    if (chat < self->chat_count)
        s_reserve (&self->chats[chat]->log, at);
    s_reserve (&self->global_log, at);
}

void sched_set_lead (sched_t *self, int64_t lead_ms)
{
    self->lead = lead_ms < 0 ? 0 : lead_ms;
}
