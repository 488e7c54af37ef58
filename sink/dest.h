/*  dest - where replies are posted.

    A destination posts one reply at a time or many concurrently, and
    reports each exactly once through the done callback (possibly from
    inside post, for local destinations). Kinds: stdout and jsonl (local),
    http, telegram and twitch (platforms).

    A destination is a plugin of the daemon's loop (common/prt.h): it embeds
    a prt_io_t as its first member, and the sink registers &dest->io with
    prt_add_io. Its sockets, timers and held posts make progress in
    io.process, which the loop calls every turn.
*/
#ifndef DEST_H_INCLUDED
#define DEST_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>
#include <zmq.h>

#include "common/pconfig.h"
#include "common/prt.h"
#include "net/phttp.h"

typedef enum {
    DEST_OK = 0,        //  posted
    DEST_RETRY = 1,     //  transient failure: try again later
    DEST_FAIL = 2,      //  permanent failure: dead-letter it
    DEST_IN_DOUBT = 3,  //  may have been posted; cannot be checked
    DEST_DROPPED = 4    //  the sink said not to send it (see dest_sending_fn); nothing left
} dest_status_t;

//  One reply to post. Strings are borrowed until done is called.
typedef struct {
    const char *msg_key;        //  the chat message answered
    const char *entity_id;
    const char *entity_name;
    const char *chat;           //  chat key, "source/chat"
    const char *source;
    const char *chat_ref;       //  chat id on the platform
    const char *msg_ref;        //  message id on the platform (reply target)
    const char *author;         //  who is answered
    const char *text;
    int64_t created_ms;
    uint64_t job_id;
    uint64_t attempt;
    int priority;               //  0 most urgent: held posts go most urgent first
} dest_post_t;

typedef struct dest_s dest_t;

typedef void (dest_done_fn) (void *ctx, void *tag, int status, const char *reason,
                             int64_t retry_after_ms);

//  What the sink answers a destination about to send a reply's first byte.
typedef enum {
    DEST_SEND_GO = 0,           //  send it: the sink has stored that it is being posted
    DEST_SEND_LATER = 1,        //  not yet (the mark is being stored): keep it, ask again
    DEST_SEND_DROP = 2          //  never (too late, or no longer the sink's): end it as DEST_DROPPED
} dest_send_t;

//  Called by a destination that holds posts (see `holds`) right before a
//  reply's first byte leaves for the platform (at `now`). The sink checks
//  that it is still fresh and records, durably, that it is being posted.
typedef int (dest_sending_fn) (void *ctx, void *tag, int64_t now);

//  Called once per reply when its first part has been posted: `at` is when
//  the platform's answer arrived (local destinations: when the write
//  finished). That is when the platform counted it: the sink's budgets
//  record the post then. May be followed by done with any status (a later
//  part can fail).
typedef void (dest_first_fn) (void *ctx, void *tag, int64_t at);

typedef struct {
    dest_done_fn *done;
    dest_sending_fn *sending;   //  may be NULL (send at once)
    dest_first_fn *first;       //  may be NULL
    void *ctx;
} dest_events_t;

struct dest_s {
    prt_io_t io;                //  first: the loop's view of the destination
    const pcfg_destination_t *config;
    const pcfg_t *root;
    dest_done_fn *done;
    dest_sending_fn *sending;
    dest_first_fn *first;
    void *ctx;
    void *state;
    //  True if posts may wait inside the destination (platform limits)
    //  before they are sent; it then calls `sending` as each one leaves.
    //  False for destinations that write at once, inside post().
    bool holds;
    //  Posts; calls done (maybe at once). Returns -1 if it cannot start.
    int (*post) (dest_t *self, const dest_post_t *post, void *tag, int64_t now);
    //  May be NULL. Finishes the posts made since the last flush (and calls
    //  their done): a destination that writes at once may gather a turn's
    //  posts into one write. The sink flushes at the end of every posting.
    void (*flush) (dest_t *self);
    //  True if a post with this msg_key and entity is known to have been
    //  made (used to settle a post interrupted by a crash); -1 if the
    //  destination cannot tell.
    int (*was_posted) (dest_t *self, const char *msg_key, const char *entity_id);
    //  A post made before a restart (its time, entity and chat id on the
    //  platform), so the platform's limits are held across a restart. May
    //  be NULL. Call in time order.
    void (*restore) (dest_t *self, const char *entity_id, const char *chat_ref, int64_t at);
    void (*destroy) (dest_t *self);
};

dest_t *dest_new (const pcfg_destination_t *config, const pcfg_t *root,
                  const dest_events_t *events);
void dest_destroy (dest_t **self_p);

//  The destination of a loop plugin (io is its first member).
static inline dest_t *dest_of (prt_io_t *io)
{
    return (dest_t *) io;
}

int dest_stdout_init (dest_t *self);
int dest_jsonl_init (dest_t *self);
int dest_http_init (dest_t *self);
int dest_telegram_init (dest_t *self);
int dest_twitch_init (dest_t *self);

//  --- helpers the platform destinations share -----------------------------

//  The secret in environment variable `var`; NULL (logged, naming `what`)
//  if `var` is empty or the variable is not set.
const char *dest_token (dest_t *self, const char *var, const char *what);

//  The accounts[] entry for `entity_id`, or NULL (the default account).
const pcfg_account_t *dest_account (dest_t *self, const char *entity_id);

//  Template variables of a post: {text} (the given text), {entity},
//  {entity_name}, {author}, {chat}, {chat_ref}, {msg_ref}, {msg_key},
//  {source}, {token}. Use with ptext_fill.
typedef struct {
    const dest_post_t *post;
    const char *text;
    const char *token;
    char scratch[32];
} dest_vars_t;
const char *dest_var (void *ctx, const char *name);

//  Makes a reason valid UTF-8 in place, so the OUTCOME frame that carries
//  it decodes: a multi-byte character cut at the end (a reason truncated to
//  its buffer) is dropped, any other byte that is not UTF-8 (a platform's
//  answer in another encoding) becomes '?'. Reasons that quote outside text
//  pass through it before they reach the done callback.
void dest_reason_utf8 (char *why);

//  What an HTTP answer means for a post that must not be doubled: a 2xx is
//  DEST_OK; no answer after the request may have left, or a gateway's
//  502/504, is DEST_IN_DOUBT; 408, 429, 500 and 503 (and failures before
//  sending) are DEST_RETRY; other statuses are DEST_FAIL. `why` gets the
//  reason, naming `platform`, with up to 200 bytes of the answer's body
//  (valid UTF-8, cut at a character).
int dest_http_outcome (const phttp_response_t *response, const char *platform, char *why,
                       size_t whylen);

//  What a Telegram sendMessage answer means: dest_http_outcome, with
//  Telegram's description (the token redacted) and, for a chat that became
//  a supergroup, its new id as the reason. `*retry_after_ms` gets, for a
//  429, how long the bot must wait (parameters.retry_after, else the
//  Retry-After header, else 1 s), otherwise -1.
int dest_telegram_outcome (const phttp_response_t *response, const char *token, char *why,
                           size_t whylen, int64_t *retry_after_ms);

//  Shared no-op parts for destinations without sockets or timers.
int dest_no_pollitems (prt_io_t *io, zmq_pollitem_t *items, int max);
void dest_no_process (prt_io_t *io, int64_t now, zmq_pollitem_t *items, int count);
int64_t dest_no_wakeup (prt_io_t *io, int64_t now);

#endif
