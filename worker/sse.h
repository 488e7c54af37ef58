/*  sse - reads a server-sent events stream (text/event-stream).

    Bytes go in as they arrive, in pieces of any size; each complete event
    comes out through a callback with its "data" lines joined by newlines.
    Comment lines (starting with ':', which llama.cpp and proxies send as
    keep-alives) and fields other than data and event are skipped; lines may
    end in LF, CRLF or CR. A line longer than SSE_MAX_LINE is an error.
*/
#ifndef SSE_H_INCLUDED
#define SSE_H_INCLUDED

#include <stddef.h>

#define SSE_MAX_LINE (1u << 20)

typedef struct sse_s sse_t;

//  One event: its type ("message" unless an event: line named it) and data.
//  Return 0 to go on, -1 to stop (sse_feed then returns -1).
typedef int (sse_event_fn) (void *arg, const char *event, const char *data, size_t size);

//  Caller owns the result.
sse_t *sse_new (sse_event_fn *on_event, void *arg);
void sse_destroy (sse_t **self_p);

//  Feeds bytes; returns 0, or -1 when a line is too long or the callback
//  stopped (see sse_error).
int sse_feed (sse_t *self, const char *data, size_t size);

//  Dispatches an event still pending at the end of the stream (a server
//  that closed without the final blank line). Returns like sse_feed.
int sse_finish (sse_t *self);

//  Why sse_feed failed, or NULL.
const char *sse_error (sse_t *self);

#endif
