/*  dest_limit - a platform's rate limits, held at the destination.

    The broker already spaces posts by the configured limits; this is the
    safety net at the edge, with the platform's published numbers (and any
    the configuration adds): a post waits until every rule allows it.

    Rules are sliding windows: at most `count` posts in any `per_ms`
    milliseconds, counted over all the account's posts (DEST_SCOPE_ALL) or
    per chat (CHAT: every chat, GROUP: group chats only, PRIVATE: private
    chats only). One dest_limit_t covers one account (a bot token, a
    Twitch login), because that is what platforms count. The clock is
    passed in, so tests need no real time.
*/
#ifndef DEST_LIMIT_H_INCLUDED
#define DEST_LIMIT_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/pconfig.h"

typedef enum {
    DEST_SCOPE_ALL = 0,
    DEST_SCOPE_CHAT = 1,
    DEST_SCOPE_GROUP = 2,
    DEST_SCOPE_PRIVATE = 3
} dest_scope_t;

typedef struct {
    dest_scope_t scope;
    int64_t count;
    int64_t per_ms;
} dest_rule_t;

#define DEST_MAX_RULES 16

typedef struct dest_limit_s dest_limit_t;

dest_limit_t *dest_limit_new (const dest_rule_t *rules, size_t count);
void dest_limit_destroy (dest_limit_t **self_p);

//  The earliest time (>= now) a post to `chat` may be made.
int64_t dest_limit_next (dest_limit_t *self, const char *chat, bool is_private, int64_t now);
//  Counts a post made at `now`.
void dest_limit_take (dest_limit_t *self, const char *chat, bool is_private, int64_t now);
//  Holds every post until `until` (the platform answered 429).
void dest_limit_pause (dest_limit_t *self, int64_t until);

//  The rules of a destination: its platform's (unless platformLimits is
//  false) followed by its configured limits[]. Returns how many.
size_t dest_limit_rules (const pcfg_destination_t *config, dest_rule_t *out, size_t max);

#endif
