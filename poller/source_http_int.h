/*  source_http_int - what the http source's two files share: its state
    and the steps one calls in the other.

    source_http.c polls: requests, responses, backoff and the source
    interface. source_http_map.c turns a page of JSON into messages: the
    configured field paths, one message's fields, the seen-set. Nothing
    outside the http source includes this file.
*/
#ifndef POLLER_SOURCE_HTTP_INT_H_INCLUDED
#define POLLER_SOURCE_HTTP_INT_H_INCLUDED

#include "poller/source.h"
#include "common/plog.h"
#include "net/phttp.h"

#include <czmq.h>

#define SEEN_MAX        20000       //  message ids remembered (with their authors)
#define MAX_ID          200
#define MAX_TEXT        65536
#define MAX_TIME        1e14        //  a time (s or ms) past this is nonsense (and would overflow)

typedef struct {
    char *id, *chat, *chat_kind, *author, *author_id, *text, *reply_to_author;
    int64_t ts_ms;
    bool from_bot;
    size_t order;               //  position in the page, to keep ties stable
} pending_t;

typedef struct {
    phttp_t *http;
    char *token;                //  from tokenEnv, or NULL
    const char *bearer;         //  the token, when no header names "{token}"
    char **headers;             //  "Name: value", NULL-terminated
    json_t *fields;             //  field key -> array of paths
    bool list_configured;       //  the user named where the list is
    bool in_flight;
    int64_t now;
    int64_t next_at;            //  next poll
    unsigned failures;
    unsigned idle_polls;        //  polls in a row that brought nothing new
    zlistx_t *pending;          //  pending_t, oldest first
    zhashx_t *seen;             //  "chat \x1f id" -> author (strdup)
    zlistx_t *seen_order;
    int64_t since;              //  newest message time emitted
    int64_t skip_before;        //  after a restore: older messages were handled
    char cursor[32];
    plog_limiter_t log;
} http_src_t;

//  source_http_map.c
//  The field paths: the defaults, then what the configuration names. -1 if it is wrong.
int source_http__fields_init (source_t *self, http_src_t *h);
//  Counts and logs (rate-limited) a bad input: where it was and what was wrong.
void source_http__bad (source_t *self, http_src_t *h, const char *where, const char *what);
void source_http__pending_free (void **item);
//  Queues the page's messages not seen before, oldest first. Returns the
//  number of new messages in the page, or -1 if it was refused.
int source_http__page (source_t *self, http_src_t *h, const char *body, size_t size,
                       size_t *page_len);

#endif
