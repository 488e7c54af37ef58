/*  source - where chat messages come from.

    A source produces chat messages when the poller asks it to. It may have
    file descriptors to wait on (stdin, sockets) and a time it wants to be
    asked again (polling interval, demo rate): that is its `io`, a runtime
    plugin (common/prt.h) the poller registers with its loop. Every kind of
    source (demo, jsonl, and the platform sources) fills io.pollitems and
    io.wakeup and implements the table of functions below; io.process is
    this module's: when the source is due (an item is ready or its wake-up
    time has come) it calls the kind's poll with the budget its host
    grants, and hands the messages to the host's emit.

    A source the poller pauses (its submit window is full) is taken off the
    loop: its descriptors are not watched and it is not asked for messages
    until the poller has room again.
*/
#ifndef SOURCE_H_INCLUDED
#define SOURCE_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>
#include <zmq.h>

#include "common/pconfig.h"
#include "common/prt.h"

//  One chat message as a source sees it. Strings are borrowed for the
//  duration of the emit call.
typedef struct {
    const char *msg_ref;            //  message id on the platform (unique within the chat)
    const char *chat_ref;           //  chat id on the platform
    const char *chat_kind;          //  "group", "private" or ""
    const char *author;             //  display name
    const char *author_id;
    const char *text;
    const char *reply_to_author;    //  author of the message this one replies to, or NULL
    int64_t ts_ms;                  //  when written, Unix ms
    bool from_bot;                  //  the platform says a bot wrote it
    //  Names the platform itself marked as mentioned, without '@' (Telegram
    //  "mention", "text_mention" and "/command@bot" entities); they count
    //  besides the "@name" found in the text. May be NULL.
    const char *const *mentions;
    size_t mention_count;
} chat_msg_t;

typedef struct source_s source_t;

//  Called by a source for each new message; returns false when the poller
//  cannot take more now (the source keeps the message for later).
typedef bool (source_emit_fn) (void *ctx, source_t *source, const chat_msg_t *msg);

//  Who takes a source's messages: the poller.
typedef struct {
    source_emit_fn *emit;
    //  How many messages the host takes now; 0 = none (the source is not polled).
    int (*budget) (void *ctx);
    void *ctx;
} source_host_t;

struct source_s {
    //  The runtime plugin. The kind fills pollitems (descriptors to wait on)
    //  and wakeup (when it wants to be polled again, Unix ms; PRT_NEVER =
    //  only on descriptor activity); process is source.c's. First member,
    //  so the kinds' io functions find their source (source_of).
    prt_io_t io;
    const pcfg_source_t *config;
    const pcfg_t *root;
    void *state;
    source_host_t host;
    //  Produce messages due at `now`, at most `budget` of them.
    void (*poll) (source_t *self, int64_t now, int budget, source_emit_fn *emit, void *ctx);
    //  True when it will never produce again (demo limit, end of file).
    bool (*finished) (source_t *self);
    //  Resuming after a restart. cursor() returns where reading continues
    //  after the messages emitted so far (a short string: a file offset, an
    //  update id), or NULL when the source cannot resume (a live chat). The
    //  poller stores it together with those messages' jobs; then it calls
    //  committed() with it, and only then may the source tell the platform
    //  that those messages are consumed (e.g. Telegram's getUpdates offset).
    //  restore() is called once, before the first poll, with the stored one.
    const char *(*cursor) (source_t *self);
    void (*committed) (source_t *self, const char *cursor);
    void (*restore) (source_t *self, const char *cursor);
    void (*destroy) (source_t *self);
    uint64_t errors;                //  bad input skipped (counted, logged)
};

//  Creates the source described by `config`; NULL (logged) on error.
source_t *source_new (const pcfg_source_t *config, const pcfg_t *root, uint64_t seed);
void source_destroy (source_t **self_p);

//  Gives the source its host; until then io.process polls nothing.
void source_attach (source_t *self, const source_host_t *host);

//  The source whose `io` this is (for the kinds' io functions).
static inline source_t *source_of (prt_io_t *io)
{
    return (source_t *) io;
}

//  Constructors of the kinds, used by source_new.
int source_demo_init (source_t *self, uint64_t seed);
int source_jsonl_init (source_t *self);
int source_http_init (source_t *self);
int source_telegram_init (source_t *self);
int source_twitch_init (source_t *self);

//  Helpers the platform sources share.

//  The secret named by the source's tokenEnv; NULL (logged) when tokenEnv
//  is set but the variable is not, or when `required` and tokenEnv is empty.
const char *source_token (source_t *self, bool required);
//  True if the source's botAuthors lists `author` or `author_id` (any case).
bool source_is_bot_author (source_t *self, const char *author, const char *author_id);
//  Milliseconds between polls: the source's own, or botSettings'.
int64_t source_interval_ms (source_t *self);
//  finished() of a source that never finishes (a live chat platform).
bool source_endless (source_t *self);
//  A JSON id or name field: a string as it is, an integer written into
//  `buf`; NULL for anything else (ids are strings on some platforms and
//  numbers on others).
const char *source_json_scalar (const json_t *v, char *buf, size_t len);

#endif
