/*  dest_limit - a platform's rate limits, held at the destination.

    The sink's gate already holds replies to the configured limits (the
    entity's, the chat's, the global ones); this holds the platform's
    published numbers (and any the configuration adds): a post waits until
    every rule allows it.

    Rules are sliding windows: at most `count` posts in any `per_ms`
    milliseconds, counted over all the account's posts (DEST_SCOPE_ALL) or
    per chat (CHAT: every chat, GROUP: group chats only, PRIVATE: private
    chats only). One dest_limit_t covers one account (a bot token, a
    Twitch login), because that is what platforms count.

    Counted where the platform counts: a part is PENDING from when it starts
    until its answer arrives, and RECORDED at the time the answer arrived,
    so the next post in a full window starts after the previous one's answer
    and arrives after it. Each window is also held a margin longer than the
    platform counts it (dest_limit_margin), so clock differences and network
    delay never make the platform see one post too many.

    A 429 pauses what it is about: one chat (dest_limit_pause with a chat)
    or the whole account (chat NULL), for exactly the time the platform
    asked. The clock is passed in, so tests need no real time.
*/
#ifndef DEST_LIMIT_H_INCLUDED
#define DEST_LIMIT_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/pconfig.h"

#define DEST_NEVER INT64_MAX

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

//  The earliest time (>= now) one more post to `chat` may start, counting
//  the parts under way; DEST_NEVER while those fill a window (it depends on
//  when they are answered).
int64_t dest_limit_next (dest_limit_t *self, const char *chat, bool is_private, int64_t now);

//  A part to `chat` starts: it is pending in every window that counts it.
void dest_limit_start (dest_limit_t *self, const char *chat, bool is_private);
//  Its answer arrived at `at`: no longer pending; if the platform took (or
//  may have taken) it, `posted`, it is recorded at `at`.
void dest_limit_end (dest_limit_t *self, const char *chat, bool is_private, int64_t at,
                     bool posted);
//  Records a post made at `at` (history from before a restart).
void dest_limit_record (dest_limit_t *self, const char *chat, bool is_private, int64_t at);

//  Holds every post to `chat` (or, with chat NULL, every post of the
//  account) until `until`.
void dest_limit_pause (dest_limit_t *self, const char *chat, int64_t until);
//  True if `chat` is paused on its own at `now` (not the account).
bool dest_limit_chat_paused (dest_limit_t *self, const char *chat, int64_t now);
//  How many chats are paused on their own at `now`.
size_t dest_limit_paused_chats (dest_limit_t *self, int64_t now);

//  Priority within one pass over held posts (`pass` changes every pass): a
//  more urgent post waiting until `at` protects its windows; a less urgent
//  post is `protected` out of a window when starting it would make that
//  window allow the next post later than a protecting post's time.
void dest_limit_protect (dest_limit_t *self, uint64_t pass, const char *chat, bool is_private,
                         int64_t at);
bool dest_limit_protected (dest_limit_t *self, uint64_t pass, const char *chat, bool is_private,
                           int64_t now);

//  The rules of a destination: its platform's (unless platformLimits is
//  false) followed by its configured limits[], as the platform counts them.
//  Returns how many.
size_t dest_limit_rules (const pcfg_destination_t *config, dest_rule_t *out, size_t max);

//  Holds each window `percent` percent longer than the platform counts it,
//  and at least `ms` longer (limitMarginPercent, limitMarginMs).
void dest_limit_margin (dest_rule_t *rules, size_t count, double percent, int64_t ms);

//  dest_limit_rules with the destination's margins: what a destination holds.
size_t dest_limit_held_rules (const pcfg_destination_t *config, dest_rule_t *out, size_t max);

#endif
