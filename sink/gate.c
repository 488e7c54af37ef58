/*  gate - replies wait until every user-level budget allows them. See gate.h. */
#include "sink/gate.h"
#include "common/palloc.h"
#include "common/ptable.h"

#include <czmq.h>
#include <string.h>

#define BUDGETS          3          //  global, entity, chat
#define EST_SAMPLES      16         //  post durations kept for the estimate
#define EST_FIRST_MS     1000       //  estimate before any post was seen
#define EST_MIN_MS       50
#define EST_MAX_MS       60000
#define CHAT_PRUNE_MS    60000      //  idle chats are forgotten this often at most

typedef struct {
    limit_log_t log;
    size_t pending;             //  released, not yet posted
    uint64_t stamp;             //  the pass that set protect[]
    int64_t protect[2];         //  [paced]: earliest time a more urgent waiting reply needs it
    int level;                  //  priority of the replies that set level_protect[]
    int64_t level_protect[2];   //  the same, from replies of priority `level`
} s_budget_t;

typedef struct {
    char *key;
    s_budget_t budget;          //  unused (log inactive) when no rule matches
    size_t refs;                //  entries pointing here
} s_chat_t;

typedef struct {
    uint64_t id;
    int priority;
    bool paced;
    int64_t turn;               //  its place among equals: its slot, or created_ms
    int64_t expires_ms;
    int64_t not_before;
    int64_t released_at;        //  0 while waiting
    s_chat_t *chat;
    s_budget_t *budgets[BUDGETS];   //  NULL where there is no limit
} s_entry_t;

struct gate_s {
    s_budget_t global;
    s_budget_t *entities;
    size_t entity_count;
    gate_chat_rule_t *rules;
    size_t rule_count;
    int urgent_below;
    ptable_t *entries;          //  s_entry_t by id, waiting and released
    ptable_t *chats;            //  s_chat_t by key
    s_entry_t **waiting;        //  most urgent first
    size_t waiting_count, waiting_capacity;
    size_t pending;
    uint64_t *go;               //  released by the last pass, not yet handed out
    size_t go_head, go_count, go_capacity;
    uint64_t *expired;
    size_t expired_head, expired_count, expired_capacity;
    bool dirty;                 //  something changed since the last pass
    int64_t next_wake;          //  from the last pass
    uint64_t stamp;             //  pass number
    int64_t last_prune;
    int64_t durations[EST_SAMPLES];     //  release -> posted, most recent posts
    size_t duration_count, duration_head;
    int64_t estimate;           //  how long a pending post is expected to take
};

//  --- the tables' keys -------------------------------------------------------------

static const void *s_entry_key (const void *item)
{
    return &((const s_entry_t *) item)->id;
}

static bool s_entry_match (const void *item, const void *key)
{
    return ((const s_entry_t *) item)->id == *(const uint64_t *) key;
}

static const void *s_chat_key (const void *item)
{
    return ((const s_chat_t *) item)->key;
}

static bool s_chat_match (const void *item, const void *key)
{
    return strcmp (((const s_chat_t *) item)->key, key) == 0;
}

//  --- budgets ------------------------------------------------------------------------

static void s_budget_init (s_budget_t *b, const sched_limit_t *limit)
{
    if (limit_log_init (&b->log, limit))
        palloc_fail ("a rate log", sizeof (int64_t) * 3600);
    b->pending = 0;
    b->stamp = 0;
}

//  The earliest time the budget allows one more post with `pending` under
//  way. While pending posts fill it, that depends on when they complete:
//  assume they complete within the gate's estimate.
static int64_t s_budget_at (const gate_t *self, const s_budget_t *b, int64_t now, size_t pending,
                            bool paced)
{
    int64_t at = limit_log_next_with (&b->log, now, pending, paced);
    if (at != LIMITS_NEVER)
        return at;
    const sched_limit_t *l = &b->log.limit;
    int64_t after = l->gap_ms;
    if (paced && l->per_minute > 0 && LIMITS_MINUTE_MS / l->per_minute > after)
        after = LIMITS_MINUTE_MS / l->per_minute;
    if (l->per_minute > 0 && pending >= (size_t) l->per_minute)
        after = LIMITS_MINUTE_MS;
    if (l->per_hour > 0 && pending >= (size_t) l->per_hour)
        after = LIMITS_HOUR_MS;
    return now + self->estimate + after;
}

//  Records a post at `at`; the log needs times that do not decrease.
static void s_budget_record (s_budget_t *b, int64_t at)
{
    if (!limit_log_active (&b->log))
        return;
    if (b->log.count && limit_log_entry (&b->log, 0) > at)
        at = limit_log_entry (&b->log, 0);
    limit_log_record (&b->log, at);
}

//  --- chats ---------------------------------------------------------------------------

static bool s_matches (const char *pattern, const char *value)
{
    return strcmp (pattern, "*") == 0 || strcmp (pattern, value ? value : "") == 0;
}

static s_chat_t *s_chat (gate_t *self, const char *key, const char *kind)
{
    s_chat_t *chat = ptable_lookup (self->chats, key);
    if (chat)
        return chat;
    char source[256];
    const char *slash = strchr (key, '/');
    size_t n = slash ? (size_t) (slash - key) : strlen (key);
    if (n >= sizeof source)
        n = sizeof source - 1;
    memcpy (source, key, n);
    source[n] = 0;
    sched_limit_t none = {0, 0, 0};
    const sched_limit_t *limit = &none;
    for (size_t i = 0; i < self->rule_count; i++)
        if (s_matches (self->rules[i].source, source) && s_matches (self->rules[i].chat_kind, kind)) {
            limit = &self->rules[i].limit;
            break;
        }
    chat = pcalloc (1, sizeof *chat);
    chat->key = pstrdup (key);
    s_budget_init (&chat->budget, limit);
    ptable_insert (self->chats, chat);
    return chat;
}

//  Takes a void pointer: it is also the chat table's dispose callback.
static void s_chat_free (void *item)
{
    s_chat_t *chat = item;
    limit_log_destroy (&chat->budget.log);
    free (chat->key);
    free (chat);
}

//  Nobody waits in it and its history no longer limits anything (arg: now).
static bool s_chat_idle (const void *item, void *arg)
{
    const s_chat_t *c = item;
    const limit_log_t *log = &c->budget.log;
    int64_t now = *(const int64_t *) arg;
    return !c->refs && (!log->count || limit_log_entry (log, 0) + LIMITS_HOUR_MS <= now);
}

//  Forgets chats nobody waits in whose history no longer limits anything.
static void s_prune_chats (gate_t *self, int64_t now)
{
    if (now - self->last_prune < CHAT_PRUNE_MS)
        return;
    self->last_prune = now;
    ptable_remove_if (self->chats, s_chat_idle, &now, s_chat_free);
}

//  --- life ------------------------------------------------------------------------------

gate_t *gate_new (const gate_config_t *config)
{
    gate_t *self = pcalloc (1, sizeof *self);
    s_budget_init (&self->global, &config->global);
    self->entity_count = config->entity_count;
    self->entities = pcalloc (config->entity_count + 1, sizeof (s_budget_t));
    for (size_t i = 0; i < config->entity_count; i++)
        s_budget_init (&self->entities[i], &config->entities[i]);
    self->rule_count = config->chat_rule_count;
    self->rules = pcalloc (config->chat_rule_count + 1, sizeof (gate_chat_rule_t));
    for (size_t i = 0; i < config->chat_rule_count; i++) {
        self->rules[i] = config->chat_rules[i];
        self->rules[i].source = pstrdup (config->chat_rules[i].source);
        self->rules[i].chat_kind = pstrdup (config->chat_rules[i].chat_kind);
    }
    self->urgent_below = config->urgent_below;
    self->entries = ptable_new (ptable_hash_u64, s_entry_key, s_entry_match);
    self->chats = ptable_new (ptable_hash_str, s_chat_key, s_chat_match);
    self->estimate = EST_FIRST_MS;
    self->next_wake = GATE_NEVER;
    return self;
}

void gate_destroy (gate_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    gate_t *self = *self_p;
    size_t cursor = 0;
    s_entry_t *e;
    while ((e = ptable_next (self->entries, &cursor)))
        free (e);
    ptable_destroy (&self->entries);
    cursor = 0;
    s_chat_t *chat;
    while ((chat = ptable_next (self->chats, &cursor)))
        s_chat_free (chat);
    ptable_destroy (&self->chats);
    limit_log_destroy (&self->global.log);
    for (size_t i = 0; i < self->entity_count; i++)
        limit_log_destroy (&self->entities[i].log);
    free (self->entities);
    for (size_t i = 0; i < self->rule_count; i++) {
        free ((char *) self->rules[i].source);
        free ((char *) self->rules[i].chat_kind);
    }
    free (self->rules);
    free (self->waiting);
    free (self->go);
    free (self->expired);
    free (self);
    *self_p = NULL;
}

//  --- the waiting list, most urgent first -------------------------------------------------

static bool s_before (const s_entry_t *a, const s_entry_t *b)
{
    if (a->priority != b->priority)
        return a->priority < b->priority;
    if (a->turn != b->turn)
        return a->turn < b->turn;
    return a->id < b->id;
}

//  Position of the first entry not before `e`.
static size_t s_position (gate_t *self, const s_entry_t *e)
{
    size_t lo = 0, hi = self->waiting_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s_before (self->waiting[mid], e))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void s_wait (gate_t *self, s_entry_t *e)
{
    self->waiting = pgrow (self->waiting, &self->waiting_capacity, self->waiting_count + 1,
                           sizeof (s_entry_t *));
    size_t at = s_position (self, e);
    memmove (&self->waiting[at + 1], &self->waiting[at],
             (self->waiting_count - at) * sizeof (s_entry_t *));
    self->waiting[at] = e;
    self->waiting_count++;
}

static void s_unwait (gate_t *self, s_entry_t *e)
{
    size_t at = s_position (self, e);
    if (at < self->waiting_count && self->waiting[at] == e) {
        memmove (&self->waiting[at], &self->waiting[at + 1],
                 (self->waiting_count - at - 1) * sizeof (s_entry_t *));
        self->waiting_count--;
    }
}

static void s_queue (uint64_t **ring, size_t *head, size_t *count, size_t *capacity, uint64_t id)
{
    if (*count == *capacity) {
        //  Unroll the ring into a larger array.
        size_t old = *capacity;
        uint64_t *grown = pcalloc (old ? old * 2 : 16, sizeof (uint64_t));
        for (size_t i = 0; i < *count; i++)
            grown[i] = (*ring)[(*head + i) % old];
        free (*ring);
        *ring = grown;
        *head = 0;
        *capacity = old ? old * 2 : 16;
    }
    (*ring)[(*head + *count) % *capacity] = id;
    (*count)++;
}

static bool s_dequeue (uint64_t *ring, size_t *head, size_t *count, size_t capacity, uint64_t *id)
{
    if (!*count)
        return false;
    *id = ring[*head];
    *head = (*head + 1) % capacity;
    (*count)--;
    return true;
}

//  --- holding -------------------------------------------------------------------------------

static void s_forget (gate_t *self, s_entry_t *e)
{
    ptable_remove (self->entries, &e->id);
    e->chat->refs--;
    free (e);
}

int gate_add (gate_t *self, const gate_reply_t *r, int64_t now)
{
    assert (self);
    assert (r->id);
    if (r->expires_ms && now > r->expires_ms)
        return -1;
    if (ptable_lookup (self->entries, &r->id))
        gate_remove (self, r->id);
    s_entry_t *e = pcalloc (1, sizeof *e);
    e->id = r->id;
    e->priority = r->priority;
    e->paced = r->priority >= self->urgent_below;
    //  A reply with a slot planned by the broker goes in the plan's order,
    //  so that one early for its slot does not take an earlier one's.
    e->turn = r->slot ? r->slot : r->created_ms;
    e->expires_ms = r->expires_ms;
    e->not_before = r->not_before;
    e->chat = s_chat (self, r->chat, r->chat_kind);
    e->chat->refs++;
    size_t n = 0;
    if (limit_log_active (&self->global.log))
        e->budgets[n++] = &self->global;
    if (r->entity >= 0 && (size_t) r->entity < self->entity_count
        && limit_log_active (&self->entities[r->entity].log))
        e->budgets[n++] = &self->entities[r->entity];
    if (limit_log_active (&e->chat->budget.log))
        e->budgets[n++] = &e->chat->budget;
    //  The broker's slot is waited for. Letting the next reply planned take,
    //  a gap early, a slot left empty by one late for it (which would then
    //  take the next one's) used less of seed 000's budget, not more: the
    //  plan ran ahead of itself, and the entities' own gaps then held replies
    //  back.
    if (r->slot > e->not_before)
        e->not_before = r->slot;
    ptable_insert (self->entries, e);
    s_wait (self, e);
    self->dirty = true;
    return 0;
}

bool gate_remove (gate_t *self, uint64_t id)
{
    assert (self);
    s_entry_t *e = ptable_lookup (self->entries, &id);
    if (!e)
        return false;
    if (e->released_at)
        gate_cancel (self, id);
    else {
        s_unwait (self, e);
        s_forget (self, e);
        self->dirty = true;
    }
    return true;
}

static void s_unpend (gate_t *self, s_entry_t *e, int64_t at, bool record)
{
    for (int i = 0; i < BUDGETS; i++) {
        s_budget_t *b = e->budgets[i];
        if (!b)
            continue;
        if (b->pending)
            b->pending--;
        if (record)
            s_budget_record (b, at);
    }
    self->pending--;
    s_forget (self, e);
    self->dirty = true;
}

void gate_posted (gate_t *self, uint64_t id, int64_t at)
{
    assert (self);
    s_entry_t *e = ptable_lookup (self->entries, &id);
    if (!e || !e->released_at)
        return;
    //  Learn how long posts take, for the estimate of pending ones.
    int64_t took = at - e->released_at;
    self->durations[self->duration_head] = took < 0 ? 0 : took;
    self->duration_head = (self->duration_head + 1) % EST_SAMPLES;
    if (self->duration_count < EST_SAMPLES)
        self->duration_count++;
    int64_t longest = 0;
    for (size_t i = 0; i < self->duration_count; i++)
        if (self->durations[i] > longest)
            longest = self->durations[i];
    self->estimate = longest < EST_MIN_MS ? EST_MIN_MS : longest > EST_MAX_MS ? EST_MAX_MS : longest;
    //  The clock counts whole milliseconds: the post completed somewhere in
    //  [at, at + 1). Counting it at the end of that millisecond keeps the next
    //  post's start, and so its arrival, a whole gap after this one's arrival.
    s_unpend (self, e, at + 1, true);
}

void gate_cancel (gate_t *self, uint64_t id)
{
    assert (self);
    s_entry_t *e = ptable_lookup (self->entries, &id);
    if (e && e->released_at)
        s_unpend (self, e, 0, false);
}

void gate_restore (gate_t *self, int entity, const char *chat, const char *chat_kind, int64_t at)
{
    assert (self);
    s_budget_record (&self->global, at);
    if (entity >= 0 && (size_t) entity < self->entity_count)
        s_budget_record (&self->entities[entity], at);
    s_budget_record (&s_chat (self, chat, chat_kind)->budget, at);
    self->dirty = true;
}

//  --- the pass: who may go now ------------------------------------------------------------

//  The earliest time `e` may go, as far as its budgets and its own time go.
static int64_t s_earliest (const gate_t *self, const s_entry_t *e, int64_t now)
{
    int64_t at = e->not_before > now ? e->not_before : now;
    for (int i = 0; i < BUDGETS; i++) {
        const s_budget_t *b = e->budgets[i];
        if (b) {
            int64_t t = s_budget_at (self, b, now, b->pending, e->paced);
            if (t > at)
                at = t;
        }
    }
    return at;
}

//  True when letting `e` go now would make a more urgent waiting reply,
//  which needs one of e's budgets, wait longer than it must anyway. Only a
//  more urgent priority protects: among replies of one priority the gate is
//  work-conserving (a reply ready now takes a free slot rather than leave it
//  unused for an older one that is not ready yet), or a saturated budget
//  would lose every slot an older reply's own limit makes it miss.
static bool s_protected (const gate_t *self, const s_entry_t *e, int64_t now)
{
    for (int i = 0; i < BUDGETS; i++) {
        const s_budget_t *b = e->budgets[i];
        if (!b || b->stamp != self->stamp)
            continue;
        for (int paced = 0; paced < 2; paced++) {
            int64_t until = b->protect[paced];
            if (b->level != e->priority && b->level_protect[paced] < until)
                until = b->level_protect[paced];
            //  Within one gap is not "overtaken": the more urgent reply was not
            //  ready for this slot and gets the next one, at most a gap later;
            //  leaving the slot empty would lose it for good. A count (N a
            //  minute) would make it wait much longer: that is protected.
            if (until != GATE_NEVER
                && s_budget_at (self, b, now, b->pending + 1, paced) > until + b->log.limit.gap_ms)
                return true;
        }
    }
    return false;
}

//  `e` waits until `at`: less urgent replies must not push that later. The
//  pass goes most urgent first, so a new priority level folds the previous
//  one's times into protect[].
static void s_protect (gate_t *self, const s_entry_t *e, int64_t at)
{
    for (int i = 0; i < BUDGETS; i++) {
        s_budget_t *b = e->budgets[i];
        if (!b)
            continue;
        if (b->stamp != self->stamp) {
            b->stamp = self->stamp;
            b->protect[0] = b->protect[1] = GATE_NEVER;
            b->level_protect[0] = b->level_protect[1] = GATE_NEVER;
            b->level = e->priority;
        }
        if (b->level != e->priority) {
            for (int paced = 0; paced < 2; paced++)
                if (b->level_protect[paced] < b->protect[paced])
                    b->protect[paced] = b->level_protect[paced];
            b->level_protect[0] = b->level_protect[1] = GATE_NEVER;
            b->level = e->priority;
        }
        if (at < b->level_protect[e->paced])
            b->level_protect[e->paced] = at;
    }
}

static void s_pass (gate_t *self, int64_t now)
{
    self->stamp++;
    self->dirty = false;
    int64_t wake = GATE_NEVER;
    size_t kept = 0;
    for (size_t i = 0; i < self->waiting_count; i++) {
        s_entry_t *e = self->waiting[i];
        if (e->expires_ms && now > e->expires_ms) {
            s_queue (&self->expired, &self->expired_head, &self->expired_count,
                     &self->expired_capacity, e->id);
            continue;
        }
        int64_t at = s_earliest (self, e, now);
        if (at <= now && !s_protected (self, e, now)) {
            for (int b = 0; b < BUDGETS; b++)
                if (e->budgets[b])
                    e->budgets[b]->pending++;
            self->pending++;
            e->released_at = now > 0 ? now : 1;
            s_queue (&self->go, &self->go_head, &self->go_count, &self->go_capacity, e->id);
            continue;
        }
        s_protect (self, e, at);
        if (at > now && at < wake)
            wake = at;
        if (e->expires_ms && e->expires_ms + 1 < wake)
            wake = e->expires_ms + 1;
        self->waiting[kept++] = e;
    }
    self->waiting_count = kept;
    self->next_wake = wake;
}

gate_event_t gate_next (gate_t *self, int64_t now, uint64_t *id)
{
    assert (self);
    for (;;) {
        uint64_t found;
        if (s_dequeue (self->expired, &self->expired_head, &self->expired_count,
                       self->expired_capacity, &found)) {
            s_entry_t *e = ptable_lookup (self->entries, &found);
            if (!e || e->released_at)
                continue;
            s_forget (self, e);
            *id = found;
            return GATE_EXPIRED;
        }
        if (s_dequeue (self->go, &self->go_head, &self->go_count, self->go_capacity, &found)) {
            s_entry_t *e = ptable_lookup (self->entries, &found);
            if (!e || !e->released_at)
                continue;   //  removed since the pass
            *id = found;
            return GATE_GO;
        }
        if (!self->dirty && now < self->next_wake)
            break;
        s_prune_chats (self, now);
        s_pass (self, now);
        if (!self->go_count && !self->expired_count)
            break;
    }
    return GATE_NONE;
}

int64_t gate_wakeup (gate_t *self, int64_t now)
{
    assert (self);
    if (self->dirty || self->go_count || self->expired_count)
        return now;
    return self->next_wake;
}

size_t gate_waiting (gate_t *self)
{
    assert (self);
    return self->waiting_count;
}

size_t gate_pending (gate_t *self)
{
    assert (self);
    return self->pending;
}

gate_t *gate_new_for (const pcfg_t *c)
{
    size_t ne = c->entities.count, nr = c->chat_limits.count;
    sched_limit_t *entities = pcalloc (ne + 1, sizeof *entities);
    for (size_t i = 0; i < ne; i++)
        entities[i] = limits_of_rate (&pcfg_entity (c, i)->rate);
    gate_chat_rule_t *rules = pcalloc (nr + 1, sizeof *rules);
    const pcfg_chat_limit_t *cl = c->chat_limits.items;
    for (size_t i = 0; i < nr; i++)
        rules[i] = (gate_chat_rule_t) {cl[i].source, cl[i].chat_kind, limits_of_rate (&cl[i].rate)};
    gate_config_t gc = {limits_global (c), ne, entities, nr, rules, (int) c->urgent_below};
    gate_t *gate = gate_new (&gc);
    free (entities);
    free (rules);
    return gate;
}
