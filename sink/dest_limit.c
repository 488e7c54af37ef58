/*  dest_limit - sliding-window limits per account. See dest_limit.h. */
#include "sink/dest_limit.h"
#include "common/palloc.h"

#include <czmq.h>
#include <math.h>
#include <string.h>

#define PRUNE_EVERY 1000        //  posts between sweeps of idle per-chat windows

//  The times of the last `count` posts (newest at head - 1) and the posts
//  under way.
typedef struct {
    int64_t *times;
    int64_t count;
    int64_t used;
    int64_t head;
    int64_t pending;
    uint64_t stamp;             //  the pass that set `protect`
    int64_t protect;
} s_window_t;

typedef struct {
    dest_rule_t rule;
    s_window_t all;             //  DEST_SCOPE_ALL
    zhashx_t *chats;            //  chat -> s_window_t, for the per-chat scopes
} s_rule_t;

struct dest_limit_s {
    s_rule_t *rules;
    size_t count;
    int64_t paused_until;       //  the whole account
    zhashx_t *paused;           //  chat -> int64_t until
    uint64_t posts;
};

static void s_window_init (s_window_t *w, int64_t count)
{
    w->times = pcalloc ((size_t) count, sizeof (int64_t));
    w->count = count;
}

static s_window_t *s_window_new (int64_t count)
{
    s_window_t *w = pcalloc (1, sizeof *w);
    s_window_init (w, count);
    return w;
}

static void s_free_item (void **item)
{
    free (*item);
    *item = NULL;
}

static void s_window_free (void **item)
{
    s_window_t *w = *item;
    free (w->times);
    free (w);
    *item = NULL;
}

//  The i-th newest post (0 = newest); i < used.
static int64_t s_entry (const s_window_t *w, int64_t i)
{
    return w->times[(w->head + w->count - 1 - i) % w->count];
}

//  Earliest time one more post may start with `pending` under way.
static int64_t s_window_next (const s_window_t *w, int64_t per_ms, int64_t now, int64_t pending)
{
    if (pending >= w->count)
        return DEST_NEVER;
    int64_t k = w->count - pending;     //  the k-th newest must be a window old
    if (w->used < k)
        return now;
    int64_t free_at = s_entry (w, k - 1) + per_ms;
    return free_at > now ? free_at : now;
}

static void s_window_record (s_window_t *w, int64_t at)
{
    if (w->used && s_entry (w, 0) > at)
        at = s_entry (w, 0);    //  times never go back (clock changes)
    w->times[w->head] = at;
    w->head = (w->head + 1) % w->count;
    if (w->used < w->count)
        w->used++;
}

static bool s_applies (const dest_rule_t *r, bool is_private)
{
    return r->scope == DEST_SCOPE_CHAT || (r->scope == DEST_SCOPE_GROUP && !is_private)
           || (r->scope == DEST_SCOPE_PRIVATE && is_private);
}

//  The window of rule `r` that counts posts to `chat`, or NULL; `create`
//  makes a per-chat window on first use.
static s_window_t *s_window (s_rule_t *r, const char *chat, bool is_private, bool create)
{
    if (r->rule.scope == DEST_SCOPE_ALL)
        return &r->all;
    if (!s_applies (&r->rule, is_private))
        return NULL;
    s_window_t *w = zhashx_lookup (r->chats, chat);
    if (!w && create) {
        w = s_window_new (r->rule.count);
        zhashx_insert (r->chats, chat, w);
    }
    return w;
}

dest_limit_t *dest_limit_new (const dest_rule_t *rules, size_t count)
{
    dest_limit_t *self = pcalloc (1, sizeof *self);
    self->rules = pcalloc (count + 1, sizeof (s_rule_t));
    self->count = count;
    for (size_t i = 0; i < count; i++) {
        s_rule_t *r = &self->rules[i];
        r->rule = rules[i];
        if (r->rule.count < 1)
            r->rule.count = 1;
        if (r->rule.scope == DEST_SCOPE_ALL)
            s_window_init (&r->all, r->rule.count);
        else {
            r->chats = zhashx_new ();
            zhashx_set_destructor (r->chats, s_window_free);
        }
    }
    self->paused = zhashx_new ();
    zhashx_set_destructor (self->paused, s_free_item);
    return self;
}

void dest_limit_destroy (dest_limit_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dest_limit_t *self = *self_p;
    for (size_t i = 0; i < self->count; i++) {
        free (self->rules[i].all.times);
        zhashx_destroy (&self->rules[i].chats);
    }
    free (self->rules);
    zhashx_destroy (&self->paused);
    free (self);
    *self_p = NULL;
}

static int64_t s_paused_until (dest_limit_t *self, const char *chat)
{
    //  Nearly always empty: asked before every post, it costs no hash then.
    if (zhashx_size (self->paused) == 0)
        return 0;
    int64_t *until = zhashx_lookup (self->paused, chat);
    return until ? *until : 0;
}

int64_t dest_limit_next (dest_limit_t *self, const char *chat, bool is_private, int64_t now)
{
    assert (self);
    int64_t at = self->paused_until > now ? self->paused_until : now;
    int64_t chat_until = s_paused_until (self, chat);
    if (chat_until > at)
        at = chat_until;
    for (size_t i = 0; i < self->count; i++) {
        s_rule_t *r = &self->rules[i];
        const s_window_t *w = s_window (r, chat, is_private, false);
        if (w) {
            int64_t t = s_window_next (w, r->rule.per_ms, now, w->pending);
            if (t > at)
                at = t;
        }
    }
    return at;
}

//  Forgets per-chat windows with nothing under way whose every post is
//  older than the window, and pauses that are over.
static void s_prune (dest_limit_t *self, int64_t now)
{
    for (size_t i = 0; i < self->count; i++) {
        s_rule_t *r = &self->rules[i];
        if (!r->chats)
            continue;
        zlistx_t *keys = zhashx_keys (r->chats);
        for (const char *k = zlistx_first (keys); k; k = zlistx_next (keys)) {
            s_window_t *w = zhashx_lookup (r->chats, k);
            if (!w->pending && (!w->used || s_entry (w, 0) + r->rule.per_ms <= now))
                zhashx_delete (r->chats, k);
        }
        zlistx_destroy (&keys);
    }
    zlistx_t *keys = zhashx_keys (self->paused);
    for (const char *k = zlistx_first (keys); k; k = zlistx_next (keys))
        if (s_paused_until (self, k) <= now)
            zhashx_delete (self->paused, k);
    zlistx_destroy (&keys);
}

void dest_limit_start (dest_limit_t *self, const char *chat, bool is_private)
{
    assert (self);
    for (size_t i = 0; i < self->count; i++) {
        s_window_t *w = s_window (&self->rules[i], chat, is_private, true);
        if (w)
            w->pending++;
    }
}

void dest_limit_end (dest_limit_t *self, const char *chat, bool is_private, int64_t at,
                     bool posted)
{
    assert (self);
    for (size_t i = 0; i < self->count; i++) {
        s_window_t *w = s_window (&self->rules[i], chat, is_private, posted);
        if (!w)
            continue;
        if (w->pending)
            w->pending--;
        if (posted)
            s_window_record (w, at);
    }
    if (posted && ++self->posts % PRUNE_EVERY == 0)
        s_prune (self, at);
}

void dest_limit_record (dest_limit_t *self, const char *chat, bool is_private, int64_t at)
{
    assert (self);
    for (size_t i = 0; i < self->count; i++) {
        s_window_t *w = s_window (&self->rules[i], chat, is_private, true);
        if (w)
            s_window_record (w, at);
    }
}

void dest_limit_pause (dest_limit_t *self, const char *chat, int64_t until)
{
    assert (self);
    if (!chat) {
        if (until > self->paused_until)
            self->paused_until = until;
        return;
    }
    if (until <= s_paused_until (self, chat))
        return;
    int64_t *value = pmalloc (sizeof (int64_t));
    *value = until;
    zhashx_update (self->paused, chat, value);
}

bool dest_limit_chat_paused (dest_limit_t *self, const char *chat, int64_t now)
{
    assert (self);
    return s_paused_until (self, chat) > now;
}

size_t dest_limit_paused_chats (dest_limit_t *self, int64_t now)
{
    assert (self);
    size_t n = 0;
    for (int64_t *until = zhashx_first (self->paused); until; until = zhashx_next (self->paused))
        n += *until > now;
    return n;
}

void dest_limit_protect (dest_limit_t *self, uint64_t pass, const char *chat, bool is_private,
                         int64_t at)
{
    assert (self);
    for (size_t i = 0; i < self->count; i++) {
        s_window_t *w = s_window (&self->rules[i], chat, is_private, true);
        if (!w)
            continue;
        if (w->stamp != pass) {
            w->stamp = pass;
            w->protect = DEST_NEVER;
        }
        if (at < w->protect)
            w->protect = at;
    }
}

bool dest_limit_protected (dest_limit_t *self, uint64_t pass, const char *chat, bool is_private,
                           int64_t now)
{
    assert (self);
    for (size_t i = 0; i < self->count; i++) {
        s_rule_t *r = &self->rules[i];
        const s_window_t *w = s_window (r, chat, is_private, false);
        if (w && w->stamp == pass && w->protect != DEST_NEVER
            && s_window_next (w, r->rule.per_ms, now, w->pending + 1) > w->protect)
            return true;
    }
    return false;
}

size_t dest_limit_rules (const pcfg_destination_t *config, dest_rule_t *out, size_t max)
{
    size_t n = 0;
    if (config->platform_limits) {
        if (strcmp (config->type, "telegram") == 0) {
            //  core.telegram.org/bots/faq: about 30 messages per second
            //  overall, 20 per minute in a group, about one per second in a chat.
            out[n++] = (dest_rule_t) {DEST_SCOPE_ALL, 30, 1000};
            out[n++] = (dest_rule_t) {DEST_SCOPE_GROUP, 20, 60000};
            out[n++] = (dest_rule_t) {DEST_SCOPE_PRIVATE, 1, 1000};
        }
        else if (strcmp (config->type, "twitch") == 0)
            //  dev.twitch.tv chat limits: 20 messages per 30 s, 100 as moderator.
            out[n++] = (dest_rule_t) {DEST_SCOPE_ALL, config->moderator ? 100 : 20, 30000};
    }
    const pcfg_post_limit_t *limits = config->limits.items;
    for (size_t i = 0; i < config->limits.count && n < max; i++) {
        const char *s = limits[i].scope;
        dest_scope_t scope = strcmp (s, "chat") == 0      ? DEST_SCOPE_CHAT
                             : strcmp (s, "group") == 0   ? DEST_SCOPE_GROUP
                             : strcmp (s, "private") == 0 ? DEST_SCOPE_PRIVATE
                                                          : DEST_SCOPE_ALL;
        out[n++] = (dest_rule_t) {scope, limits[i].count, limits[i].per_ms};
    }
    return n;
}

void dest_limit_margin (dest_rule_t *rules, size_t count, double percent, int64_t ms)
{
    for (size_t i = 0; i < count; i++) {
        int64_t extra = (int64_t) ceil ((double) rules[i].per_ms * percent / 100.0);
        rules[i].per_ms += extra > ms ? extra : ms;
    }
}

size_t dest_limit_held_rules (const pcfg_destination_t *config, dest_rule_t *out, size_t max)
{
    size_t n = dest_limit_rules (config, out, max);
    dest_limit_margin (out, n, config->limit_margin_percent, config->limit_margin_ms);
    return n;
}
