/*  gate - replies wait here until every user-level budget allows them.

    A reply the broker said to post has three budgets: its entity's
    rateLimits, its chat's chatLimits rule (the first rule matching the
    chat's source and kind, as the broker's scheduler chooses) and the
    global botSettings limits. Each is a common/limits.h log.

    The platform counts a post when it arrives, so a budget is spent where
    the platform counts it: a reply the gate lets go is PENDING in each of
    its budgets until its (first) part has been posted, and its slot is
    RECORDED at the time that post completed (the platform's answer arrived,
    or the local write finished) — never when it is let go. With a gap
    budget a pending post blocks the next one until it completes, so the
    next post starts after the previous one's answer and arrives after it.

    Order: the most urgent reply first (priority, then its not_before — the
    broker's planned slot, or a retry's time — or without one the time its
    message was written). A less urgent reply is not given a budget that a more
    urgent waiting reply needs, when granting it would push the urgent
    reply's earliest time later by more than the budget's gap: a waiting
    mention is never overtaken by chatter for a count (N a minute, an hour),
    and waits at most one gap for a slot it was not ready for (the slot
    would otherwise stay empty, and a saturated budget lose it for good).
    Replies of the same priority do not hold slots for each other: the gate
    is work-conserving among them. While a post is pending, its completion
    time is unknown; the gate then estimates it from the posts it has seen.

    Replies with priority >= urgentBelow are PACED on per-minute counts
    (limit_log_next_with paced): a saturated budget is spent evenly through
    the minute, while mentions may use the whole burst.

    Freshness: a reply past its expires_ms never leaves the gate: it is
    refused when it comes (gate_add), and taken out as GATE_EXPIRED once its
    time passes while it waits; gate_wakeup includes the next expiry.

    A plain structure with the clock passed in (like broker/sched.c), tested
    in tests/test_gate.c.
*/
#ifndef GATE_H_INCLUDED
#define GATE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/limits.h"
#include "common/pconfig.h"

#define GATE_NEVER INT64_MAX

typedef struct gate_s gate_t;

typedef struct {
    const char *source;         //  "*" = any
    const char *chat_kind;      //  "*" = any
    sched_limit_t limit;
} gate_chat_rule_t;

typedef struct {
    sched_limit_t global;
    size_t entity_count;
    const sched_limit_t *entities;      //  by entity index
    size_t chat_rule_count;
    const gate_chat_rule_t *chat_rules; //  first match wins
    int urgent_below;                   //  priorities from this up are paced
} gate_config_t;

//  A reply to hold. Strings are copied.
typedef struct {
    uint64_t id;                //  the caller's; unique and not 0
    int entity;                 //  entity index; -1 = none (no entity budget)
    const char *chat;           //  chat key, "source/chat"
    const char *chat_kind;      //  "group", "private" or ""
    int priority;               //  0 most urgent .. 99
    int64_t created_ms;         //  when its message was written
    int64_t expires_ms;         //  0 = never
    int64_t not_before;         //  0 = at once (a retry's backoff)
    int64_t slot;               //  the broker's planned slot, 0 = none (see Order)
} gate_reply_t;

typedef enum {
    GATE_NONE = 0,              //  nothing to do now
    GATE_GO = 1,                //  post it now; it is pending until gate_posted or gate_cancel
    GATE_EXPIRED = 2            //  it expired while waiting; the gate has forgotten it
} gate_event_t;

//  The configuration is copied.
gate_t *gate_new (const gate_config_t *config);
//  A gate holding a Parley configuration's limits: every entity's
//  rateLimits, the chatLimits rules, the global botSettings limits.
gate_t *gate_new_for (const pcfg_t *config);
void gate_destroy (gate_t **self_p);

//  Holds a reply. Returns 0, or -1 when it has expired already (not held).
int gate_add (gate_t *self, const gate_reply_t *reply, int64_t now);

//  Forgets a waiting reply (or a released one, giving its slots back).
//  Returns true if the gate had it.
bool gate_remove (gate_t *self, uint64_t id);

//  What happens next at `now`: a reply to post, one that expired, or none.
gate_event_t gate_next (gate_t *self, int64_t now, uint64_t *id);

//  The released reply's (first part) was posted at `at`: its budgets record
//  the slot then, and it is no longer pending. The gate forgets it.
void gate_posted (gate_t *self, uint64_t id, int64_t at);

//  The released reply was not posted: its pending slots are given back.
void gate_cancel (gate_t *self, uint64_t id);

//  When gate_next may next have something to do (an expiry included);
//  GATE_NEVER if only gate_add / gate_posted / gate_cancel can change that.
int64_t gate_wakeup (gate_t *self, int64_t now);

//  A post made before a restart, so a restart does not allow a burst.
//  Call in time order, before any reply is held.
void gate_restore (gate_t *self, int entity, const char *chat, const char *chat_kind, int64_t at);

//  Replies waiting, and replies released and not yet posted.
size_t gate_waiting (gate_t *self);
size_t gate_pending (gate_t *self);

#endif
