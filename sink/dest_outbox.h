/*  dest_outbox - posts a platform destination holds until it may send them.

    Shared by the http, telegram and twitch destinations. A reply becomes
    one item: its text (after textTemplate) cut into parts no longer than
    the platform allows (or trimmed, as configured). An item goes when its
    account's limits (dest_limit) allow it, no other post to the same chat
    is in flight (the parts of a reply keep their order) and the
    destination is ready to send (a Twitch connection is up). Then the
    destination's send function starts its next part.

    Order: waiting items go most urgent first (priority, then the time
    their message was written), and a less urgent item does not take a
    window a more urgent waiting item needs when that would make the urgent
    one wait longer: a waiting mention is never overtaken by chatter.

    Right before a reply's first byte leaves, the sink is asked (the dest
    `sending` event): it checks the reply is still fresh and stores that it
    is being posted; the item waits while the sink stores that, and ends as
    DEST_DROPPED if the sink says never.

    Parts already posted are remembered per (message, entity): when the
    sink retries a reply whose second part failed, only the rest is sent,
    so a retry never doubles what already went out.
*/
#ifndef DEST_OUTBOX_H_INCLUDED
#define DEST_OUTBOX_H_INCLUDED

#include "net/ptext.h"
#include "sink/dest.h"
#include "sink/dest_limit.h"

typedef struct dest_outbox_s dest_outbox_t;

typedef struct {
    void *tag;                  //  the sink's tag for done
    char *key;                  //  "entity \x1f msg_key": the reply's identity
    char *chat;                 //  chat id on the platform
    char *msg_ref;              //  message answered
    bool is_private;
    char **parts;
    size_t part_count;
    size_t part_next;           //  the part being / to be sent
    void *account;              //  the destination's, for its send function
    dest_limit_t *limit;        //  the account's limits
    bool in_flight;
    bool announced;             //  the sink agreed it may be sent
    int64_t blocked_since;      //  the destination was not ready; 0 = not blocked
    uint64_t seq;               //  arrival order, among equally urgent items
    dest_post_t post;           //  a copy of the post (strings owned by the item)
    void *handle;               //  in the outbox's list
} dest_item_t;

//  Starts sending item->parts[item->part_next]. Returns 0 when started (the
//  destination later calls dest_outbox_part_done, never from inside this
//  function), 1 when it cannot send now (write why into `why`; the item
//  waits, and ends as DEST_RETRY once it has waited timeoutMs), 2 when it
//  never can (the item ends as DEST_FAIL with `why`).
typedef int (dest_send_fn) (dest_t *dest, dest_item_t *item, int64_t now, char *why, size_t whylen);

//  `unit` and `platform_max` give the platform's length limit (0 = none);
//  the destination's maxLength overrides it.
dest_outbox_t *dest_outbox_new (dest_t *dest, dest_send_fn *send, ptext_unit_t unit,
                                size_t platform_max);
//  Drops every held item without calling done (the sink is stopping).
void dest_outbox_destroy (dest_outbox_t **self_p);

//  Queues a reply with its final text. Returns the item (owned by the
//  outbox), or NULL when it was completed at once (posted in full before).
dest_item_t *dest_outbox_add (dest_outbox_t *self, const dest_post_t *post, void *tag,
                              const char *text, const char *chat, bool is_private,
                              void *account, dest_limit_t *limit);

//  Sends what may go now.
void dest_outbox_run (dest_outbox_t *self, int64_t now);
//  When dest_outbox_run has something to do (Unix ms), or DEST_NEVER.
int64_t dest_outbox_wakeup (dest_outbox_t *self, int64_t now);

//  The current part of an in-flight item was answered at `now`. DEST_OK
//  moves on to the next part (or completes the reply); any other status
//  completes it with that status (the parts posted so far are remembered
//  for a retry). The part counts in the limits from its start until now,
//  and is recorded at `now` if it was (or may have been) posted.
void dest_outbox_part_done (dest_outbox_t *self, dest_item_t *item, int status,
                            const char *reason, int64_t retry_after_ms, int64_t now);

//  Items held (in flight or waiting).
size_t dest_outbox_size (dest_outbox_t *self);
//  Iteration over held items, most urgent first.
dest_item_t *dest_outbox_first (dest_outbox_t *self);
dest_item_t *dest_outbox_next (dest_outbox_t *self);

#endif
