/*  http_client - many HTTP calls in flight on one thread. See http_client.h.

    libcurl's "multi socket" interface: libcurl reports every socket it wants
    watched (s_socket_cb) and the one timeout it needs (s_timer_cb). The
    sockets go into an epoll set, and the caller's zmq_poll watches only the
    epoll descriptor, so a loop turn costs the same with a thousand calls in
    flight as with one (poll over a thousand sockets would cost more than
    the calls themselves). Ready sockets go back to libcurl with
    curl_multi_socket_action.
*/
#include "worker/http_client.h"

#include <curl/curl.h>
#include <czmq.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <unistd.h>

#define EVENTS_PER_WAIT 256

struct http_call_s {
    http_client_t *client;
    CURL *easy;
    struct curl_slist *headers;
    char *body;                 //  our copy of the POST body (libcurl does not copy it)
    char *response;             //  the body received so far
    size_t response_len, response_cap;
    http_data_fn *on_data;
    http_done_fn *on_done;
    void *arg;
    int64_t started;            //  zclock_time at start
    int64_t first_byte;         //  zclock_time of the first body byte; -1 = none yet
    bool aborted;               //  on_data asked to stop
    bool too_big;               //  the body passed HTTP_MAX_BODY
    char errbuf[CURL_ERROR_SIZE];
    http_call_t *next, *prev;   //  in the client's list of calls in flight
};

struct http_client_s {
    CURLM *multi;
    int epoll_fd;               //  the sockets libcurl waits on
    size_t sockets;             //  how many are in it
    int64_t timer_due;          //  when libcurl wants its timeout; INT64_MAX = none
    http_call_t *calls;         //  in flight
    size_t active;
};

//  --- the sockets libcurl waits on ------------------------------------------------

static int s_socket_cb (CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void) easy;
    http_client_t *self = userp;
    if (what == CURL_POLL_REMOVE) {
        //  The socket may be closed already, which removed it from the set.
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
    http_client_t *self = userp;
    self->timer_due = timeout_ms < 0 ? INT64_MAX : zclock_time () + timeout_ms;
    return 0;
}

//  --- calls ---------------------------------------------------------------------------

static size_t s_write_cb (char *data, size_t size, size_t nmemb, void *userp)
{
    http_call_t *call = userp;
    size_t n = size * nmemb;
    if (call->first_byte < 0)
        call->first_byte = zclock_time ();
    if (call->on_data) {
        //  Only an event stream is streamed: an error, or a server that
        //  ignored "stream", answers with a plain body we keep.
        long status = 0;
        char *type = NULL;
        curl_easy_getinfo (call->easy, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo (call->easy, CURLINFO_CONTENT_TYPE, &type);
        if (status >= 200 && status < 300 && type && !strncasecmp (type, "text/event-stream", 17)) {
            if (call->on_data (call->arg, data, n)) {
                call->aborted = true;
                return 0;   //  libcurl ends the call with CURLE_WRITE_ERROR
            }
            return n;
        }
    }
    if (call->response_len + n > HTTP_MAX_BODY) {
        call->too_big = true;
        return 0;
    }
    if (call->response_len + n + 1 > call->response_cap) {
        size_t cap = call->response_cap ? call->response_cap : 4096;
        while (cap < call->response_len + n + 1)
            cap *= 2;
        call->response = realloc (call->response, cap);
        call->response_cap = cap;
    }
    memcpy (call->response + call->response_len, data, n);
    call->response_len += n;
    call->response[call->response_len] = 0;
    return n;
}

static void s_call_free (http_call_t **call_p)
{
    http_call_t *call = *call_p;
    curl_easy_cleanup (call->easy);
    curl_slist_free_all (call->headers);
    free (call->body);
    free (call->response);
    free (call);
    *call_p = NULL;
}

static void s_unlink (http_client_t *self, http_call_t *call)
{
    if (call->prev)
        call->prev->next = call->next;
    else
        self->calls = call->next;
    if (call->next)
        call->next->prev = call->prev;
    self->active--;
}

http_call_t *http_client_start (http_client_t *self, const http_request_t *r)
{
    assert (self);
    http_call_t *call = calloc (1, sizeof *call);
    call->client = self;
    call->easy = curl_easy_init ();
    if (!call->easy) {
        free (call);
        return NULL;
    }
    call->on_data = r->on_data;
    call->on_done = r->on_done;
    call->arg = r->arg;
    call->first_byte = -1;
    call->started = zclock_time ();
    CURL *e = call->easy;
    curl_easy_setopt (e, CURLOPT_URL, r->url);
    curl_easy_setopt (e, CURLOPT_PRIVATE, call);
    curl_easy_setopt (e, CURLOPT_ERRORBUFFER, call->errbuf);
    curl_easy_setopt (e, CURLOPT_WRITEFUNCTION, s_write_cb);
    curl_easy_setopt (e, CURLOPT_WRITEDATA, call);
    //  No signals: we are one thread of many. Timeouts come from the multi timer.
    curl_easy_setopt (e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt (e, CURLOPT_CONNECTTIMEOUT_MS, (long) r->connect_timeout_ms);
    curl_easy_setopt (e, CURLOPT_TIMEOUT_MS, (long) r->timeout_ms);
    curl_easy_setopt (e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt (e, CURLOPT_USERAGENT, "parley-worker/" PARLEY_VERSION);
    if (r->bearer && *r->bearer) {
        //  libcurl writes the header itself; the key is never part of anything we log.
        curl_easy_setopt (e, CURLOPT_HTTPAUTH, (long) CURLAUTH_BEARER);
        curl_easy_setopt (e, CURLOPT_XOAUTH2_BEARER, r->bearer);
    }
    if (r->body) {
        call->body = strdup (r->body);
        curl_easy_setopt (e, CURLOPT_POSTFIELDS, call->body);
        curl_easy_setopt (e, CURLOPT_POSTFIELDSIZE, (long) strlen (call->body));
        call->headers = curl_slist_append (call->headers, "Content-Type: application/json");
        //  No "Expect: 100-continue" round trip before larger prompts.
        call->headers = curl_slist_append (call->headers, "Expect:");
    }
    if (r->on_data)
        call->headers = curl_slist_append (call->headers, "Accept: text/event-stream");
    if (call->headers)
        curl_easy_setopt (e, CURLOPT_HTTPHEADER, call->headers);
    if (r->method && strcmp (r->method, "GET") && strcmp (r->method, "POST"))
        curl_easy_setopt (e, CURLOPT_CUSTOMREQUEST, r->method);
    if (curl_multi_add_handle (self->multi, e) != CURLM_OK) {
        s_call_free (&call);
        return NULL;
    }
    call->next = self->calls;
    if (self->calls)
        self->calls->prev = call;
    self->calls = call;
    self->active++;
    return call;
}

void http_client_cancel (http_client_t *self, http_call_t **call_p)
{
    assert (self);
    if (!call_p || !*call_p)
        return;
    http_call_t *call = *call_p;
    curl_multi_remove_handle (self->multi, call->easy);
    s_unlink (self, call);
    s_call_free (call_p);
}

//  Ends every finished call: removes it, then runs its done callback.
static void s_collect (http_client_t *self)
{
    CURLMsg *msg;
    int left;
    //  One message at a time: a done callback may start or cancel calls, and
    //  removing a handle also removes its pending message.
    while ((msg = curl_multi_info_read (self->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle;
        CURLcode code = msg->data.result;
        http_call_t *call = NULL;
        curl_easy_getinfo (easy, CURLINFO_PRIVATE, (char **) &call);
        curl_multi_remove_handle (self->multi, easy);
        s_unlink (self, call);
        int64_t now = zclock_time ();
        http_response_t r = {0};
        curl_easy_getinfo (easy, CURLINFO_RESPONSE_CODE, &r.status);
        curl_off_t retry_after = 0;
        curl_easy_getinfo (easy, CURLINFO_RETRY_AFTER, &retry_after);
        r.retry_after_ms = retry_after > 0 ? (int64_t) retry_after * 1000 : -1;
        r.transport_ok = code == CURLE_OK;
        r.timed_out = code == CURLE_OPERATION_TIMEDOUT;
        r.aborted = call->aborted;
        if (call->too_big)
            r.error = "response body too large";
        else if (call->aborted)
            r.error = "stopped reading the response";
        else if (code != CURLE_OK)
            r.error = *call->errbuf ? call->errbuf : curl_easy_strerror (code);
        r.body = call->response ? call->response : "";
        r.body_len = call->response_len;
        r.first_byte_ms = call->first_byte < 0 ? -1 : call->first_byte - call->started;
        r.total_ms = now - call->started;
        call->on_done (call->arg, &r);
        s_call_free (&call);
    }
}

//  --- the loop's side --------------------------------------------------------------

int http_client_pollitems (http_client_t *self, zmq_pollitem_t *items, int max)
{
    assert (self);
    if (self->sockets == 0 || max < 1)
        return 0;
    items[0] = (zmq_pollitem_t) {NULL, self->epoll_fd, ZMQ_POLLIN, 0};
    return 1;
}

void http_client_process (http_client_t *self, int64_t now, const zmq_pollitem_t *items, int count)
{
    assert (self);
    int running;
    if (count > 0 && items[0].revents) {
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
    if (now >= self->timer_due) {
        self->timer_due = INT64_MAX;
        curl_multi_socket_action (self->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    }
    s_collect (self);
}

int64_t http_client_wakeup (http_client_t *self)
{
    assert (self);
    return self->timer_due;
}

size_t http_client_active (http_client_t *self)
{
    assert (self);
    return self->active;
}

//  --- life -----------------------------------------------------------------------------

http_client_t *http_client_new (void)
{
    if (curl_global_init (CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return NULL;
    http_client_t *self = calloc (1, sizeof *self);
    self->multi = curl_multi_init ();
    self->epoll_fd = epoll_create1 (EPOLL_CLOEXEC);
    if (!self->multi || self->epoll_fd < 0) {
        if (self->multi)
            curl_multi_cleanup (self->multi);
        if (self->epoll_fd >= 0)
            close (self->epoll_fd);
        free (self);
        curl_global_cleanup ();
        return NULL;
    }
    self->timer_due = INT64_MAX;
    curl_multi_setopt (self->multi, CURLMOPT_SOCKETFUNCTION, s_socket_cb);
    curl_multi_setopt (self->multi, CURLMOPT_SOCKETDATA, self);
    curl_multi_setopt (self->multi, CURLMOPT_TIMERFUNCTION, s_timer_cb);
    curl_multi_setopt (self->multi, CURLMOPT_TIMERDATA, self);
    return self;
}

void http_client_destroy (http_client_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    http_client_t *self = *self_p;
    while (self->calls) {
        http_call_t *call = self->calls;
        http_client_cancel (self, &call);
    }
    curl_multi_cleanup (self->multi);
    close (self->epoll_fd);
    free (self);
    curl_global_cleanup ();
    *self_p = NULL;
}
