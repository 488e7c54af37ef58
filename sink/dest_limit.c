/*  dest_limit - sliding-window limits per account. See dest_limit.h. */
#include "sink/dest_limit.h"

#include <czmq.h>
#include <stdlib.h>
#include <string.h>

#define PRUNE_EVERY 1000        //  posts between sweeps of idle per-chat windows

//  The times of the last `count` posts, oldest at `head` once full.
typedef struct {
    int64_t *times;
    int64_t count;
    int64_t used;
    int64_t head;
} s_window_t;

typedef struct {
    dest_rule_t rule;
    s_window_t all;             //  DEST_SCOPE_ALL
    zhashx_t *chats;            //  chat -> s_window_t, for the per-chat scopes
} s_rule_t;

struct dest_limit_s {
    s_rule_t *rules;
    size_t count;
    int64_t paused_until;
    uint64_t takes;
};

static s_window_t *s_window_new (int64_t count)
{
    s_window_t *w = calloc (1, sizeof *w);
    w->times = calloc ((size_t) count, sizeof (int64_t));
    w->count = count;
    return w;
}

static void s_window_free (void **item)
{
    s_window_t *w = *item;
    free (w->times);
    free (w);
    *item = NULL;
}

static int64_t s_window_next (const s_window_t *w, int64_t per_ms, int64_t now)
{
    if (w->used < w->count)
        return now;
    int64_t free_at = w->times[w->head] + per_ms;
    return free_at > now ? free_at : now;
}

static void s_window_take (s_window_t *w, int64_t now)
{
    if (w->used < w->count)
        w->times[(w->head + w->used++) % w->count] = now;
    else {
        w->times[w->head] = now;
        w->head = (w->head + 1) % w->count;
    }
}

static bool s_applies (const dest_rule_t *r, bool is_private)
{
    return r->scope == DEST_SCOPE_CHAT || (r->scope == DEST_SCOPE_GROUP && !is_private)
           || (r->scope == DEST_SCOPE_PRIVATE && is_private);
}

dest_limit_t *dest_limit_new (const dest_rule_t *rules, size_t count)
{
    dest_limit_t *self = calloc (1, sizeof *self);
    self->rules = calloc (count + 1, sizeof (s_rule_t));
    self->count = count;
    for (size_t i = 0; i < count; i++) {
        s_rule_t *r = &self->rules[i];
        r->rule = rules[i];
        if (r->rule.count < 1)
            r->rule.count = 1;
        if (r->rule.scope == DEST_SCOPE_ALL) {
            r->all.times = calloc ((size_t) r->rule.count, sizeof (int64_t));
            r->all.count = r->rule.count;
        }
        else {
            r->chats = zhashx_new ();
            zhashx_set_destructor (r->chats, s_window_free);
        }
    }
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
    free (self);
    *self_p = NULL;
}

int64_t dest_limit_next (dest_limit_t *self, const char *chat, bool is_private, int64_t now)
{
    assert (self);
    int64_t at = self->paused_until > now ? self->paused_until : now;
    for (size_t i = 0; i < self->count; i++) {
        s_rule_t *r = &self->rules[i];
        const s_window_t *w = NULL;
        if (r->rule.scope == DEST_SCOPE_ALL)
            w = &r->all;
        else if (s_applies (&r->rule, is_private))
            w = zhashx_lookup (r->chats, chat);
        if (w) {
            int64_t t = s_window_next (w, r->rule.per_ms, now);
            if (t > at)
                at = t;
        }
    }
    return at;
}

//  Forgets per-chat windows whose every post is older than the window.
static void s_prune (dest_limit_t *self, int64_t now)
{
    for (size_t i = 0; i < self->count; i++) {
        s_rule_t *r = &self->rules[i];
        if (!r->chats)
            continue;
        zlistx_t *keys = zhashx_keys (r->chats);
        for (const char *k = zlistx_first (keys); k; k = zlistx_next (keys)) {
            s_window_t *w = zhashx_lookup (r->chats, k);
            int64_t newest = w->times[(w->head + w->used - 1) % w->count];
            if (newest + r->rule.per_ms <= now)
                zhashx_delete (r->chats, k);
        }
        zlistx_destroy (&keys);
    }
}

void dest_limit_take (dest_limit_t *self, const char *chat, bool is_private, int64_t now)
{
    assert (self);
    for (size_t i = 0; i < self->count; i++) {
        s_rule_t *r = &self->rules[i];
        if (r->rule.scope == DEST_SCOPE_ALL)
            s_window_take (&r->all, now);
        else if (s_applies (&r->rule, is_private)) {
            s_window_t *w = zhashx_lookup (r->chats, chat);
            if (!w) {
                w = s_window_new (r->rule.count);
                zhashx_insert (r->chats, chat, w);
            }
            s_window_take (w, now);
        }
    }
    if (++self->takes % PRUNE_EVERY == 0)
        s_prune (self, now);
}

void dest_limit_pause (dest_limit_t *self, int64_t until)
{
    assert (self);
    if (until > self->paused_until)
        self->paused_until = until;
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
