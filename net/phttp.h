/*  phttp - HTTP on libcurl's multi interface, inside a zmq_poll loop.

    One phttp_t is one curl multi handle: any number of requests in flight
    on the owner's thread, no thread per request, nothing that blocks. The
    owner's zmq_poll watches one descriptor (phttp_pollitems: an epoll set
    holding every socket curl waits on) and wakes at phttp_wakeup (curl's
    timer); phttp_process then lets curl do what is due and calls each
    finished request's done callback. One descriptor whatever the number of
    sockets: when zmq_poll watched each socket itself, a worker with 1000
    LLM calls in flight spent half its CPU scanning them in poll().

    A request carries a header list, a bearer key (libcurl writes the
    header), a body and its timeouts; a 2xx text/event-stream answer may be
    streamed to a callback piece by piece (LLM servers' server-sent events)
    instead of being kept. The response says whether a failed request may
    have reached the server, which tells "try again" from "in doubt" for a
    post that must never be doubled; it also brings the server's
    Retry-After and the time to the first byte. A request ends exactly once,
    through its done callback, unless it is cancelled.

    Raw connections (phttp_connect: TCP, or TLS for an https URL, through
    CURLOPT_CONNECT_ONLY) serve protocols that are not HTTP, such as
    Twitch's IRC; the owner then talks with curl_easy_send/recv.

    Secrets: a token may be part of a URL (Telegram puts it in the path).
    The `secret` given to phttp_new is blanked out of every error text.
*/
#ifndef PHTTP_H_INCLUDED
#define PHTTP_H_INCLUDED

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#define PHTTP_MAX_RESPONSE (8u << 20)   //  default cap on a response body
#define PHTTP_TIMEOUT_MS   30000        //  default time for a whole request
#define PHTTP_CONNECT_MS   10000        //  default time to connect
#define PHTTP_RETRY_AFTER_MAX 86400     //  a longer Retry-After (s) is taken as a day

typedef struct phttp_s phttp_t;
typedef struct phttp_call_s phttp_call_t;

//  Streaming: called with each piece of a 2xx text/event-stream body as it
//  arrives, instead of keeping it (other bodies, such as an error's, are
//  kept as usual). Return 0 to go on, -1 to stop the request.
typedef int (phttp_data_fn) (void *arg, const char *data, size_t size);

typedef struct {
    const char *method;             //  "GET" when NULL, "POST", "PUT"
    const char *url;
    const char *const *headers;     //  "Name: value" lines, NULL-terminated; may be NULL
    const char *body;               //  body of a POST or PUT (copied); NULL = empty
    const char *bearer;             //  key for "Authorization: Bearer"; NULL = none. Never logged.
    int64_t connect_timeout_ms;     //  0 = PHTTP_CONNECT_MS, at most timeout_ms
    int64_t timeout_ms;             //  whole request; 0 = PHTTP_TIMEOUT_MS
    size_t max_response_bytes;      //  larger bodies end the request; 0 = PHTTP_MAX_RESPONSE
    phttp_data_fn *on_data;         //  stream an event-stream answer here; NULL = keep it
} phttp_request_t;

typedef struct {
    long status;                    //  HTTP status; 0 when no status line arrived
    const char *body;               //  NUL-terminated (borrowed for the callback); "" when streamed
    size_t size;
    int64_t retry_after_ms;         //  the Retry-After header, or -1
    //  Why the exchange did not complete, or NULL when a whole response
    //  arrived. The flags below say more about some of the reasons.
    const char *error;
    bool too_large;                 //  the body passed max_response_bytes (and was cut off)
    bool timed_out;                 //  the connect or total timeout expired
    bool aborted;                   //  the data callback asked to stop
    bool maybe_sent;                //  on error: the request may have reached the server
    int64_t first_byte_ms;          //  from the start to the first body byte; -1 = none
    int64_t total_ms;               //  from the start to the end
} phttp_response_t;

//  Called once when a request ends; `response` is valid during the call only.
typedef void (phttp_done_fn) (void *arg, const phttp_response_t *response);

//  A raw connection is ready (easy != NULL) or could not be opened (error).
typedef void (phttp_connected_fn) (void *arg, CURL *easy, const char *error);

//  Initialises libcurl (and its TLS library) once per process. Call it from
//  the main thread before starting threads: TLS libraries keep per-thread
//  state, and a daemon's actor threads are not joined at exit. phttp_new
//  calls it too, for programs that did not.
void phttp_global_init (void);

//  Creates a client. `secret` (may be NULL) is blanked out of errors.
//  Caller owns the result; NULL if libcurl or epoll cannot be set up.
phttp_t *phttp_new (const char *secret);
//  Cancels requests in flight without calling their callbacks, and closes
//  raw connections still open.
void phttp_destroy (phttp_t **self_p);

//  Starts a request; `done` (and `on_data`) get `arg`. Returns a handle
//  valid until done runs or the request is cancelled; NULL if curl refused
//  to start it (then done is never called).
phttp_call_t *phttp_request (phttp_t *self, const phttp_request_t *request, phttp_done_fn *done,
                             void *arg);
//  Drops a request without calling its done callback; nulls the handle.
void phttp_cancel (phttp_t *self, phttp_call_t **call_p);

//  Opens a raw connection to `url` (http:// = TCP, https:// = TLS).
//  `done` is called once, from phttp_process. A connection given to done
//  belongs to the caller, who closes it with phttp_release. Returns -1 if
//  curl refused to start (then done is never called).
int phttp_connect (phttp_t *self, const char *url, int64_t timeout_ms, phttp_connected_fn *done,
                   void *arg);
void phttp_release (phttp_t *self, CURL **easy_p);

//  What the owner's zmq_poll watches: at most one item, none when curl
//  waits on no socket. Returns how many items were written.
int phttp_pollitems (phttp_t *self, zmq_pollitem_t *items, int max);
//  Lets curl work on ready sockets and due timers; finished requests run
//  their done callbacks from here.
void phttp_process (phttp_t *self);
//  When curl's timer is due (Unix ms, zclock_time), or INT64_MAX.
int64_t phttp_wakeup (phttp_t *self);
//  Requests and connection attempts in flight.
size_t phttp_active (phttp_t *self);

//  A Retry-After in seconds (as curl reads the header, a number or a date)
//  in milliseconds, at most PHTTP_RETRY_AFTER_MAX seconds; -1 when there
//  was none (or it is not in the future).
int64_t phttp_retry_after_ms (int64_t seconds);

//  Copies `text` into `out`, replacing every occurrence of `secret` (if
//  not NULL or empty) with "<redacted>".
void phttp_redact (const char *text, const char *secret, char *out, size_t outlen);

//  Exponential backoff with jitter: a random delay in [d/2, d] where
//  d = base * 2^failures, at most `cap`.
int64_t phttp_backoff_ms (unsigned failures, int64_t base, int64_t cap);

#endif
