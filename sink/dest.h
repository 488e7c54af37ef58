/*  dest - where replies are posted.

    A destination posts one reply at a time or many concurrently, and
    reports each exactly once through the done callback (possibly from
    inside post, for local destinations). Kinds: stdout and jsonl (local),
    http, telegram and twitch (platforms).
*/
#ifndef DEST_H_INCLUDED
#define DEST_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>
#include <zmq.h>

#include "common/pconfig.h"
#include "net/phttp.h"

typedef enum {
    DEST_OK = 0,        //  posted
    DEST_RETRY = 1,     //  transient failure: try again later
    DEST_FAIL = 2,      //  permanent failure: dead-letter it
    DEST_IN_DOUBT = 3   //  may have been posted; cannot be checked
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
} dest_post_t;

typedef struct dest_s dest_t;

typedef void (dest_done_fn) (void *ctx, void *tag, int status, const char *reason,
                             int64_t retry_after_ms);

//  Called by a destination that holds posts (see `holds`) right before a
//  reply's first byte leaves for the platform. The sink records, durably,
//  that this reply is being posted; it returns 0, or -1 when it could not,
//  and then the destination must not send (it tries again later).
typedef int (dest_sending_fn) (void *ctx, void *tag);

struct dest_s {
    const pcfg_destination_t *config;
    const pcfg_t *root;
    dest_done_fn *done;
    dest_sending_fn *sending;
    void *ctx;
    void *state;
    //  True if posts may wait inside the destination (platform limits)
    //  before they are sent; it then calls `sending` as each one leaves.
    //  False for destinations that write at once, inside post().
    bool holds;
    //  Posts; calls done (maybe at once). Returns -1 if it cannot start.
    int (*post) (dest_t *self, const dest_post_t *post, void *tag, int64_t now);
    int (*pollitems) (dest_t *self, zmq_pollitem_t *items, int max);
    void (*process) (dest_t *self, int64_t now, zmq_pollitem_t *items, int count);
    int64_t (*wakeup) (dest_t *self, int64_t now);
    //  True if a post with this msg_key and entity is known to have been
    //  made (used to settle a post interrupted by a crash); -1 if the
    //  destination cannot tell.
    int (*was_posted) (dest_t *self, const char *msg_key, const char *entity_id);
    void (*destroy) (dest_t *self);
};

dest_t *dest_new (const pcfg_destination_t *config, const pcfg_t *root, dest_done_fn *done,
                  dest_sending_fn *sending, void *ctx);
void dest_destroy (dest_t **self_p);

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

//  What an HTTP answer means for a post that must not be doubled: a 2xx is
//  DEST_OK; no answer after the request may have left, or a gateway's
//  502/504, is DEST_IN_DOUBT; 408, 429, 500 and 503 (and failures before
//  sending) are DEST_RETRY; other statuses are DEST_FAIL. `why` gets the
//  reason, naming `platform`.
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
int dest_no_pollitems (dest_t *self, zmq_pollitem_t *items, int max);
void dest_no_process (dest_t *self, int64_t now, zmq_pollitem_t *items, int count);
int64_t dest_no_wakeup (dest_t *self, int64_t now);

#endif
