/*  phttp - HTTP on libcurl's multi interface, inside a zmq_poll loop.

    One phttp_t is one curl multi handle. Its sockets go into the owner's
    zmq_poll (phttp_pollitems) and its timer into the owner's wakeup
    (phttp_wakeup); phttp_process then lets curl do what is due and calls
    each finished request's done callback. Nothing blocks: the poller and
    the sink keep serving everything else while requests are in flight.

    It also opens raw connections (phttp_connect: TCP, or TLS for an https
    URL, through CURLOPT_CONNECT_ONLY) for protocols that are not HTTP, such
    as Twitch's IRC; the owner then talks with curl_easy_send/recv.

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

typedef struct phttp_s phttp_t;

typedef struct {
    const char *method;             //  "GET" when NULL, "POST", "PUT"
    const char *url;
    const char *const *headers;     //  "Name: value" lines, NULL-terminated; may be NULL
    const char *body;               //  request body (copied); may be NULL
    size_t body_size;
    int64_t timeout_ms;             //  whole request; 0 = PHTTP_TIMEOUT_MS
    size_t max_response_bytes;      //  larger bodies are refused; 0 = PHTTP_MAX_RESPONSE
} phttp_request_t;

typedef struct {
    long status;                    //  HTTP status; 0 when no status line arrived
    const char *body;               //  NUL-terminated (borrowed for the callback)
    size_t size;
    int64_t retry_after_ms;         //  the Retry-After header, or -1
    bool too_large;                 //  the body passed max_response_bytes (and was cut off)
    const char *error;              //  why the exchange did not complete, or NULL
    bool maybe_sent;                //  on error: the request may have reached the server
} phttp_response_t;

typedef void (phttp_done_fn) (void *arg, const phttp_response_t *response);

//  A raw connection is ready (easy != NULL) or could not be opened (error).
typedef void (phttp_connected_fn) (void *arg, CURL *easy, const char *error);

//  Initialises libcurl (and its TLS library) once per process. Call it from
//  the main thread before starting threads: TLS libraries keep per-thread
//  state, and a daemon's actor threads are not joined at exit. phttp_new
//  calls it too, for programs that did not.
void phttp_global_init (void);

//  Creates a multi handle. `secret` (may be NULL) is blanked out of errors.
phttp_t *phttp_new (const char *secret);
//  Cancels requests in flight without calling their callbacks.
void phttp_destroy (phttp_t **self_p);

//  Starts a request; `done` is called once, from phttp_process. Returns -1
//  if curl refused to start it (then done is never called).
int phttp_request (phttp_t *self, const phttp_request_t *request, phttp_done_fn *done, void *arg);

//  Opens a raw connection to `url` (http:// = TCP, https:// = TLS).
//  `done` is called once, from phttp_process. A connection given to done
//  belongs to the caller, who closes it with phttp_release.
int phttp_connect (phttp_t *self, const char *url, int64_t timeout_ms, phttp_connected_fn *done,
                   void *arg);
void phttp_release (phttp_t *self, CURL **easy_p);

//  The sockets curl waits on; returns how many items were written.
int phttp_pollitems (phttp_t *self, zmq_pollitem_t *items, int max);
//  Lets curl work on ready sockets and due timers; calls done callbacks.
void phttp_process (phttp_t *self);
//  When curl's timer is due (Unix ms), or INT64_MAX.
int64_t phttp_wakeup (phttp_t *self);
//  Requests and connection attempts in flight.
size_t phttp_active (phttp_t *self);

//  Copies `text` into `out`, replacing every occurrence of `secret` (if
//  not NULL or empty) with "<redacted>".
void phttp_redact (const char *text, const char *secret, char *out, size_t outlen);

//  Exponential backoff with jitter: a random delay in [d/2, d] where
//  d = base * 2^failures, at most `cap`.
int64_t phttp_backoff_ms (unsigned failures, int64_t base, int64_t cap);

#endif
