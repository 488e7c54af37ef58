/*  http_client - many HTTP calls in flight on one thread (libcurl multi).

    The client never blocks and owns no loop: the worker's zmq_poll loop asks
    it what to watch (http_client_pollitems: one epoll descriptor standing
    for every socket of every call) and when to wake (http_client_wakeup),
    then lets it make progress (http_client_process). libcurl tells us which
    sockets it needs through CURLMOPT_SOCKETFUNCTION and when it needs a
    timeout through CURLMOPT_TIMERFUNCTION, so a call costs one socket and no
    thread. Each call ends exactly once, through its done callback, from
    http_client_process; or never, if it is cancelled.
*/
#ifndef HTTP_CLIENT_H_INCLUDED
#define HTTP_CLIENT_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

//  Largest response body kept; a larger one ends the call with an error.
#define HTTP_MAX_BODY (8u << 20)

typedef struct http_client_s http_client_t;
typedef struct http_call_s http_call_t;

typedef struct {
    bool transport_ok;          //  a complete HTTP response arrived
    bool timed_out;             //  the connect or total timeout expired
    bool aborted;               //  the stream callback asked to stop
    const char *error;          //  what went wrong below HTTP (when !transport_ok)
    long status;                //  HTTP status; 0 when none arrived
    const char *body;           //  the response body (empty for a streamed 2xx)
    size_t body_len;
    int64_t retry_after_ms;     //  from a Retry-After header; -1 when absent
    int64_t first_byte_ms;      //  from the start of the call to its first body byte; -1 = none
    int64_t total_ms;
} http_response_t;

//  Called once when a call ends; `response` is valid during the call only.
typedef void (http_done_fn) (void *arg, const http_response_t *response);

//  Streaming: called with each piece of a 2xx text/event-stream body as it
//  arrives (instead of keeping it; other bodies are kept as usual). Return
//  0 to go on, -1 to abort the call.
typedef int (http_data_fn) (void *arg, const char *data, size_t size);

typedef struct {
    const char *method;         //  "GET" or "POST"
    const char *url;
    const char *body;           //  POST body (copied); NULL for GET
    const char *bearer;         //  API key for "Authorization: Bearer"; NULL = none. Never logged.
    int64_t connect_timeout_ms;
    int64_t timeout_ms;         //  the whole call
    http_data_fn *on_data;      //  NULL = keep the body
    http_done_fn *on_done;
    void *arg;
} http_request_t;

//  Caller owns the result; NULL if libcurl cannot be set up.
http_client_t *http_client_new (void);
void http_client_destroy (http_client_t **self_p);

//  Starts a call. Returns a handle valid until its done callback runs or it
//  is cancelled; NULL if it cannot start (done is then not called).
http_call_t *http_client_start (http_client_t *self, const http_request_t *request);

//  Drops a call without calling its done callback; nulls the handle.
void http_client_cancel (http_client_t *self, http_call_t **call_p);

//  Fills `items` with what to watch (at most one item); returns how many.
int http_client_pollitems (http_client_t *self, zmq_pollitem_t *items, int max);

//  Acts on ready sockets (when the item from pollitems is ready) and due
//  timeouts; completed calls run their done callbacks from here.
void http_client_process (http_client_t *self, int64_t now, const zmq_pollitem_t *items, int count);

//  When process must run next (ms, zclock_time clock); INT64_MAX = only on socket activity.
int64_t http_client_wakeup (http_client_t *self);

//  Calls in flight.
size_t http_client_active (http_client_t *self);

#endif
