/*  phttp - HTTP on libcurl's multi interface in a zmq_poll loop. See phttp.h.

    libcurl's "multi socket" interface: libcurl reports every socket it wants
    watched (s_socket_cb) and the one timeout it needs (s_timer_cb). The
    sockets go into an epoll set and the owner's zmq_poll watches only the
    epoll descriptor, so a loop turn costs the same with a thousand requests
    in flight as with one. Ready sockets go back to libcurl with
    curl_multi_socket_action.
*/
#include "net/phttp.h"
#include "common/palloc.h"

#include <czmq.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <unistd.h>

#define EVENTS_PER_WAIT 256

struct phttp_call_s {
    CURL *easy;
    void *handle;               //  in the owner's list of calls in flight
    struct curl_slist *headers;
    char *data;                 //  the response body so far
    size_t size, cap, max;
    bool too_large;             //  the body passed max
    bool aborted;               //  on_data asked to stop
    int64_t started;            //  zclock_time at start
    int64_t first_byte;         //  zclock_time of the first body byte; -1 = none yet
    char errbuf[CURL_ERROR_SIZE];
    phttp_done_fn *done;        //  a request...
    phttp_data_fn *on_data;
    phttp_connected_fn *connected;  //  ...or a connection attempt
    void *arg;
};

struct phttp_s {
    CURLM *multi;
    char *secret;               //  blanked out of error texts
    int epoll_fd;               //  the sockets curl waits on
    size_t sockets;             //  how many are in it
    int64_t deadline;           //  curl's timer, Unix ms; INT64_MAX = none
    zlistx_t *calls;            //  phttp_call_t in flight
    zlistx_t *connections;      //  CURL * handed to owners (connect-only)
};

static pthread_once_t s_curl_once = PTHREAD_ONCE_INIT;

static void s_curl_init (void)
{
    curl_global_init (CURL_GLOBAL_DEFAULT);
}

void phttp_global_init (void)
{
    pthread_once (&s_curl_once, s_curl_init);
}

//  --- curl's callbacks -----------------------------------------------------------

static int s_socket_cb (CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void) easy;
    phttp_t *self = userp;
    if (what == CURL_POLL_REMOVE) {
        //  The socket may be closed already, which took it out of the set.
        epoll_ctl (self->epoll_fd, EPOLL_CTL_DEL, fd, NULL);
        if (socketp)
            self->sockets--;
        curl_multi_assign (self->multi, fd, NULL);
        return 0;
    }
    struct epoll_event ev = {0};
    ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
    ev.data.fd = fd;
    //  socketp marks a socket we have added (libcurl keeps it for us).
    if (!socketp) {
        //  A descriptor number closed behind our back may come again.
        if (epoll_ctl (self->epoll_fd, EPOLL_CTL_ADD, fd, &ev) && errno == EEXIST)
            epoll_ctl (self->epoll_fd, EPOLL_CTL_MOD, fd, &ev);
        curl_multi_assign (self->multi, fd, self);
        self->sockets++;
    }
    else
        epoll_ctl (self->epoll_fd, EPOLL_CTL_MOD, fd, &ev);
    return 0;
}

static int s_timer_cb (CURLM *multi, long timeout_ms, void *userp)
{
    (void) multi;
    phttp_t *self = userp;
    self->deadline = timeout_ms < 0 ? INT64_MAX : zclock_time () + timeout_ms;
    return 0;
}

//  True when the answer is one to stream: a 2xx event stream. An error, or
//  a server that ignored "stream", answers with a plain body we keep.
static bool s_streamed (phttp_call_t *call)
{
    long status = 0;
    char *type = NULL;
    curl_easy_getinfo (call->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo (call->easy, CURLINFO_CONTENT_TYPE, &type);
    return status >= 200 && status < 300 && type && !strncasecmp (type, "text/event-stream", 17);
}

static size_t s_write_cb (char *ptr, size_t size, size_t nmemb, void *userp)
{
    phttp_call_t *call = userp;
    size_t n = size * nmemb;
    if (call->first_byte < 0)
        call->first_byte = zclock_time ();
    if (call->on_data && s_streamed (call)) {
        if (call->on_data (call->arg, ptr, n)) {
            call->aborted = true;
            return 0;   //  curl ends the transfer with CURLE_WRITE_ERROR
        }
        return n;
    }
    if (call->size + n > call->max) {
        call->too_large = true;
        return 0;
    }
    if (call->size + n + 1 > call->cap) {
        call->cap = (call->size + n + 1) * 2;
        if (call->cap > call->max + 1)
            call->cap = call->max + 1;
        call->data = prealloc (call->data, call->cap);
    }
    memcpy (call->data + call->size, ptr, n);
    call->size += n;
    call->data[call->size] = 0;
    return n;
}

//  --- calls ----------------------------------------------------------------------------

static void s_call_free (phttp_call_t *call)
{
    curl_slist_free_all (call->headers);
    free (call->data);
    free (call);
}

static phttp_call_t *s_call_new (const char *url, int64_t connect_timeout_ms, int64_t timeout_ms)
{
    phttp_call_t *call = pcalloc (1, sizeof *call);
    call->easy = curl_easy_init ();
    if (!call->easy) {
        free (call);
        return NULL;
    }
    call->started = zclock_time ();
    call->first_byte = -1;
    if (connect_timeout_ms <= 0)
        connect_timeout_ms = PHTTP_CONNECT_MS;
    CURL *e = call->easy;
    curl_easy_setopt (e, CURLOPT_URL, url);
    curl_easy_setopt (e, CURLOPT_PRIVATE, call);
    curl_easy_setopt (e, CURLOPT_ERRORBUFFER, call->errbuf);
    //  No signals: we are one thread of many. Timeouts come from the multi timer.
    curl_easy_setopt (e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt (e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt (e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt (e, CURLOPT_CONNECTTIMEOUT_MS,
                      (long) (timeout_ms < connect_timeout_ms ? timeout_ms : connect_timeout_ms));
    curl_easy_setopt (e, CURLOPT_TIMEOUT_MS, (long) timeout_ms);
    return call;
}

static int s_start (phttp_t *self, phttp_call_t *call)
{
    if (curl_multi_add_handle (self->multi, call->easy) != CURLM_OK) {
        curl_easy_cleanup (call->easy);
        s_call_free (call);
        return -1;
    }
    call->handle = zlistx_add_end (self->calls, call);
    return 0;
}

phttp_call_t *phttp_request (phttp_t *self, const phttp_request_t *r, phttp_done_fn *done,
                             void *arg)
{
    assert (self);
    phttp_call_t *call = s_call_new (r->url, r->connect_timeout_ms,
                                     r->timeout_ms > 0 ? r->timeout_ms : PHTTP_TIMEOUT_MS);
    if (!call)
        return NULL;
    call->done = done;
    call->on_data = r->on_data;
    call->arg = arg;
    call->max = r->max_response_bytes ? r->max_response_bytes : PHTTP_MAX_RESPONSE;
    CURL *e = call->easy;
    curl_easy_setopt (e, CURLOPT_USERAGENT, "parley/" PARLEY_VERSION);
    curl_easy_setopt (e, CURLOPT_WRITEFUNCTION, s_write_cb);
    curl_easy_setopt (e, CURLOPT_WRITEDATA, call);
    //  A POST must not wait for "100 Continue" from servers that never send it.
    call->headers = curl_slist_append (NULL, "Expect:");
    for (size_t i = 0; r->headers && r->headers[i]; i++)
        call->headers = curl_slist_append (call->headers, r->headers[i]);
    if (r->on_data)
        call->headers = curl_slist_append (call->headers, "Accept: text/event-stream");
    else
        //  Compressed answers, but not streams: a compressing proxy may hold
        //  events back until it has a block to compress.
        curl_easy_setopt (e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt (e, CURLOPT_HTTPHEADER, call->headers);
    if (r->bearer && *r->bearer) {
        curl_easy_setopt (e, CURLOPT_HTTPAUTH, (long) CURLAUTH_BEARER);
        curl_easy_setopt (e, CURLOPT_XOAUTH2_BEARER, r->bearer);
    }
    const char *method = r->method ? r->method : "GET";
    if (strcmp (method, "GET") != 0) {
        const char *body = r->body ? r->body : "";
        curl_easy_setopt (e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) strlen (body));
        curl_easy_setopt (e, CURLOPT_COPYPOSTFIELDS, body);
        if (strcmp (method, "POST") != 0)
            curl_easy_setopt (e, CURLOPT_CUSTOMREQUEST, method);
    }
    return s_start (self, call) ? NULL : call;
}

void phttp_cancel (phttp_t *self, phttp_call_t **call_p)
{
    assert (self);
    if (!call_p || !*call_p)
        return;
    phttp_call_t *call = *call_p;
    zlistx_delete (self->calls, call->handle);
    curl_multi_remove_handle (self->multi, call->easy);
    curl_easy_cleanup (call->easy);
    s_call_free (call);
    *call_p = NULL;
}

int phttp_connect (phttp_t *self, const char *url, int64_t timeout_ms, phttp_connected_fn *done,
                   void *arg)
{
    assert (self);
    phttp_call_t *call = s_call_new (url, 0, timeout_ms > 0 ? timeout_ms : PHTTP_CONNECT_MS);
    if (!call)
        return -1;
    call->connected = done;
    call->arg = arg;
    CURL *e = call->easy;
    curl_easy_setopt (e, CURLOPT_CONNECT_ONLY, 1L);
    //  Not HTTP: no proxy from the environment, no ALPN offer of h2.
    curl_easy_setopt (e, CURLOPT_PROXY, "");
    curl_easy_setopt (e, CURLOPT_SSL_ENABLE_ALPN, 0L);
    return s_start (self, call);
}

void phttp_release (phttp_t *self, CURL **easy_p)
{
    assert (self);
    if (!easy_p || !*easy_p)
        return;
    CURL *easy = *easy_p;
    void *handle = zlistx_find (self->connections, easy);
    if (handle)
        zlistx_delete (self->connections, handle);
    //  Removing the handle from the multi closes a connect-only connection.
    curl_multi_remove_handle (self->multi, easy);
    curl_easy_cleanup (easy);
    *easy_p = NULL;
}

//  --- the loop ----------------------------------------------------------------------------

//  Ends a call whose transfer is over: the owner learns of it through done
//  (or connected), and nothing of it stays here.
static void s_finish (phttp_t *self, phttp_call_t *call, CURLcode result)
{
    zlistx_delete (self->calls, call->handle);
    char error[CURL_ERROR_SIZE + 160] = "";
    if (call->too_large)
        snprintf (error, sizeof error, "response body too large");
    else if (call->aborted)
        snprintf (error, sizeof error, "stopped reading the response");
    else if (result != CURLE_OK) {
        char raw[CURL_ERROR_SIZE + 120];
        snprintf (raw, sizeof raw, "%s%s%s", curl_easy_strerror (result),
                  call->errbuf[0] ? ": " : "", call->errbuf);
        phttp_redact (raw, self->secret, error, sizeof error);
    }
    if (call->connected) {
        if (result == CURLE_OK) {
            //  The handle outlives the call: nothing may point back at it.
            curl_easy_setopt (call->easy, CURLOPT_PRIVATE, NULL);
            zlistx_add_end (self->connections, call->easy);
            call->connected (call->arg, call->easy, NULL);
        }
        else {
            curl_multi_remove_handle (self->multi, call->easy);
            curl_easy_cleanup (call->easy);
            call->connected (call->arg, NULL, error);
        }
        s_call_free (call);
        return;
    }
    phttp_response_t response = {0};
    curl_easy_getinfo (call->easy, CURLINFO_RESPONSE_CODE, &response.status);
    curl_off_t retry_after = 0;
    curl_easy_getinfo (call->easy, CURLINFO_RETRY_AFTER, &retry_after);
    response.retry_after_ms = phttp_retry_after_ms ((int64_t) retry_after);
    response.body = call->data ? call->data : "";
    response.size = call->size;
    response.error = *error ? error : NULL;
    response.too_large = call->too_large;
    response.timed_out = result == CURLE_OPERATION_TIMEDOUT;
    response.aborted = call->aborted;
    if (response.error) {
        //  Whether the request may have reached the server decides between
        //  "try again" and "in doubt" for posts that must not be doubled.
        curl_off_t pretransfer = 0;
        long request_size = 0;
        curl_easy_getinfo (call->easy, CURLINFO_PRETRANSFER_TIME_T, &pretransfer);
        curl_easy_getinfo (call->easy, CURLINFO_REQUEST_SIZE, &request_size);
        response.maybe_sent = pretransfer > 0 || request_size > 0 || response.status > 0;
    }
    int64_t now = zclock_time ();
    response.first_byte_ms = call->first_byte < 0 ? -1 : call->first_byte - call->started;
    response.total_ms = now - call->started;
    curl_multi_remove_handle (self->multi, call->easy);
    curl_easy_cleanup (call->easy);
    call->done (call->arg, &response);
    s_call_free (call);
}

void phttp_process (phttp_t *self)
{
    assert (self);
    int running = 0;
    if (self->sockets) {
        //  Which of curl's sockets are ready now (the owner's zmq_poll woke us,
        //  or it woke for something else: then there are none, for one call).
        struct epoll_event events[EVENTS_PER_WAIT];
        int n;
        do {
            n = epoll_wait (self->epoll_fd, events, EVENTS_PER_WAIT, 0);
            for (int i = 0; i < n; i++) {
                uint32_t e = events[i].events;
                int flags = (e & EPOLLIN ? CURL_CSELECT_IN : 0) | (e & EPOLLOUT ? CURL_CSELECT_OUT : 0)
                            | (e & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
                curl_multi_socket_action (self->multi, events[i].data.fd, flags, &running);
            }
        } while (n == EVENTS_PER_WAIT);
    }
    if (zclock_time () >= self->deadline) {
        self->deadline = INT64_MAX;
        curl_multi_socket_action (self->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    }
    //  One message at a time: a done callback may start or cancel requests,
    //  and removing a handle also removes its pending message.
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read (self->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        phttp_call_t *call = NULL;
        curl_easy_getinfo (msg->easy_handle, CURLINFO_PRIVATE, (char **) &call);
        if (call)
            s_finish (self, call, msg->data.result);
    }
}

int phttp_pollitems (phttp_t *self, zmq_pollitem_t *items, int max)
{
    assert (self);
    if (self->sockets == 0 || max < 1)
        return 0;
    items[0] = (zmq_pollitem_t) {NULL, self->epoll_fd, ZMQ_POLLIN, 0};
    return 1;
}

int64_t phttp_wakeup (phttp_t *self)
{
    assert (self);
    return self->deadline;
}

size_t phttp_active (phttp_t *self)
{
    assert (self);
    return zlistx_size (self->calls);
}

//  --- life ------------------------------------------------------------------------------------

phttp_t *phttp_new (const char *secret)
{
    phttp_global_init ();
    phttp_t *self = pcalloc (1, sizeof *self);
    self->multi = curl_multi_init ();
    self->epoll_fd = epoll_create1 (EPOLL_CLOEXEC);
    if (!self->multi || self->epoll_fd < 0) {
        if (self->multi)
            curl_multi_cleanup (self->multi);
        if (self->epoll_fd >= 0)
            close (self->epoll_fd);
        free (self);
        return NULL;
    }
    self->secret = secret && *secret ? pstrdup (secret) : NULL;
    self->deadline = INT64_MAX;
    self->calls = zlistx_new ();
    self->connections = zlistx_new ();
    curl_multi_setopt (self->multi, CURLMOPT_SOCKETFUNCTION, s_socket_cb);
    curl_multi_setopt (self->multi, CURLMOPT_SOCKETDATA, self);
    curl_multi_setopt (self->multi, CURLMOPT_TIMERFUNCTION, s_timer_cb);
    curl_multi_setopt (self->multi, CURLMOPT_TIMERDATA, self);
    return self;
}

void phttp_destroy (phttp_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    phttp_t *self = *self_p;
    phttp_call_t *call;
    while ((call = zlistx_first (self->calls)))
        phttp_cancel (self, &call);
    zlistx_destroy (&self->calls);
    CURL *easy;
    while ((easy = zlistx_first (self->connections)))
        phttp_release (self, &easy);
    zlistx_destroy (&self->connections);
    //  The multi may still report sockets it closes: the epoll set goes last.
    curl_multi_cleanup (self->multi);
    close (self->epoll_fd);
    if (self->secret)
        memset (self->secret, 0, strlen (self->secret));
    free (self->secret);
    free (self);
    *self_p = NULL;
}

//  --- helpers ---------------------------------------------------------------------------------

int64_t phttp_retry_after_ms (int64_t seconds)
{
    if (seconds <= 0)
        return -1;
    return (seconds < PHTTP_RETRY_AFTER_MAX ? seconds : PHTTP_RETRY_AFTER_MAX) * 1000;
}

void phttp_redact (const char *text, const char *secret, char *out, size_t outlen)
{
    if (!outlen)
        return;
    size_t o = 0, slen = secret ? strlen (secret) : 0;
    while (*text && o + 1 < outlen) {
        if (slen && strncmp (text, secret, slen) == 0) {
            const char *mark = "<redacted>";
            size_t m = strlen (mark);
            if (o + m + 1 > outlen)
                break;
            memcpy (out + o, mark, m);
            o += m;
            text += slen;
        }
        else
            out[o++] = *text++;
    }
    out[o] = 0;
}

int64_t phttp_backoff_ms (unsigned failures, int64_t base, int64_t cap)
{
    int64_t d = base;
    for (unsigned i = 0; i < failures && d < cap; i++)
        d *= 2;
    if (d > cap)
        d = cap;
    if (d < 2)
        return d;
    return d / 2 + (int64_t) (random () % (d / 2 + 1));
}
