/*  phttp - HTTP on libcurl's multi interface in a zmq_poll loop. See phttp.h. */
#include "net/phttp.h"

#include <czmq.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct {
    curl_socket_t fd;
    int what;                   //  CURL_POLL_IN / OUT / INOUT
} s_sock_t;

typedef struct {
    phttp_t *owner;
    CURL *easy;
    struct curl_slist *headers;
    char *data;                 //  response body
    size_t size, cap, max;
    bool too_large;
    int64_t retry_after_ms;
    char errbuf[CURL_ERROR_SIZE];
    phttp_done_fn *done;
    phttp_connected_fn *connected;
    void *arg;
} s_call_t;

struct phttp_s {
    CURLM *multi;
    char *secret;               //  blanked out of error texts
    s_sock_t *socks;            //  sockets curl asked us to watch
    size_t sock_count, sock_cap;
    int64_t deadline;           //  curl's timer, Unix ms; INT64_MAX = none
    zlistx_t *calls;            //  s_call_t in flight
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
    (void) easy, (void) socketp;
    phttp_t *self = userp;
    for (size_t i = 0; i < self->sock_count; i++)
        if (self->socks[i].fd == fd) {
            if (what == CURL_POLL_REMOVE)
                self->socks[i] = self->socks[--self->sock_count];
            else
                self->socks[i].what = what;
            return 0;
        }
    if (what == CURL_POLL_REMOVE)
        return 0;
    if (self->sock_count == self->sock_cap) {
        self->sock_cap = self->sock_cap ? self->sock_cap * 2 : 8;
        self->socks = realloc (self->socks, self->sock_cap * sizeof (s_sock_t));
    }
    self->socks[self->sock_count++] = (s_sock_t) {fd, what};
    return 0;
}

static int s_timer_cb (CURLM *multi, long timeout_ms, void *userp)
{
    (void) multi;
    phttp_t *self = userp;
    self->deadline = timeout_ms < 0 ? INT64_MAX : zclock_time () + timeout_ms;
    return 0;
}

static size_t s_write_cb (char *ptr, size_t size, size_t nmemb, void *userp)
{
    s_call_t *call = userp;
    size_t n = size * nmemb;
    if (call->size + n > call->max) {
        call->too_large = true;
        return 0;   //  curl stops the transfer
    }
    if (call->size + n + 1 > call->cap) {
        call->cap = (call->size + n + 1) * 2;
        if (call->cap > call->max + 1)
            call->cap = call->max + 1;
        call->data = realloc (call->data, call->cap);
    }
    memcpy (call->data + call->size, ptr, n);
    call->size += n;
    call->data[call->size] = 0;
    return n;
}

static size_t s_header_cb (char *line, size_t size, size_t nmemb, void *userp)
{
    s_call_t *call = userp;
    size_t n = size * nmemb;
    static const char name[] = "retry-after:";
    if (n > sizeof name && strncasecmp (line, name, sizeof name - 1) == 0) {
        char value[64];
        size_t vlen = n - (sizeof name - 1);
        if (vlen >= sizeof value)
            vlen = sizeof value - 1;
        memcpy (value, line + sizeof name - 1, vlen);
        value[vlen] = 0;
        char *v = value;
        while (*v == ' ' || *v == '\t')
            v++;
        char *end;
        long long secs = strtoll (v, &end, 10);
        if (end != v && secs >= 0)
            call->retry_after_ms = secs * 1000;
        else {
            //  An HTTP date.
            time_t when = curl_getdate (v, NULL);
            if (when > 0) {
                int64_t ms = (int64_t) when * 1000 - zclock_time ();
                call->retry_after_ms = ms > 0 ? ms : 0;
            }
        }
    }
    return n;
}

//  --- calls ----------------------------------------------------------------------------

static void s_call_free (s_call_t *call)
{
    curl_slist_free_all (call->headers);
    free (call->data);
    free (call);
}

static s_call_t *s_call_new (phttp_t *self, const char *url, int64_t timeout_ms)
{
    s_call_t *call = calloc (1, sizeof *call);
    call->owner = self;
    call->retry_after_ms = -1;
    call->easy = curl_easy_init ();
    if (!call->easy) {
        free (call);
        return NULL;
    }
    CURL *e = call->easy;
    curl_easy_setopt (e, CURLOPT_URL, url);
    curl_easy_setopt (e, CURLOPT_PRIVATE, call);
    curl_easy_setopt (e, CURLOPT_ERRORBUFFER, call->errbuf);
    curl_easy_setopt (e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt (e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt (e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt (e, CURLOPT_CONNECTTIMEOUT_MS,
                      (long) (timeout_ms < PHTTP_CONNECT_MS ? timeout_ms : PHTTP_CONNECT_MS));
    curl_easy_setopt (e, CURLOPT_TIMEOUT_MS, (long) timeout_ms);
    return call;
}

static int s_start (phttp_t *self, s_call_t *call)
{
    if (curl_multi_add_handle (self->multi, call->easy) != CURLM_OK) {
        curl_easy_cleanup (call->easy);
        s_call_free (call);
        return -1;
    }
    zlistx_add_end (self->calls, call);
    return 0;
}

int phttp_request (phttp_t *self, const phttp_request_t *r, phttp_done_fn *done, void *arg)
{
    assert (self);
    s_call_t *call =
        s_call_new (self, r->url, r->timeout_ms > 0 ? r->timeout_ms : PHTTP_TIMEOUT_MS);
    if (!call)
        return -1;
    call->done = done;
    call->arg = arg;
    call->max = r->max_response_bytes ? r->max_response_bytes : PHTTP_MAX_RESPONSE;
    CURL *e = call->easy;
    curl_easy_setopt (e, CURLOPT_USERAGENT, "parley/" PARLEY_VERSION);
    curl_easy_setopt (e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt (e, CURLOPT_WRITEFUNCTION, s_write_cb);
    curl_easy_setopt (e, CURLOPT_WRITEDATA, call);
    curl_easy_setopt (e, CURLOPT_HEADERFUNCTION, s_header_cb);
    curl_easy_setopt (e, CURLOPT_HEADERDATA, call);
    //  A POST must not wait for "100 Continue" from servers that never send it.
    call->headers = curl_slist_append (NULL, "Expect:");
    for (size_t i = 0; r->headers && r->headers[i]; i++)
        call->headers = curl_slist_append (call->headers, r->headers[i]);
    curl_easy_setopt (e, CURLOPT_HTTPHEADER, call->headers);
    const char *method = r->method ? r->method : "GET";
    if (strcmp (method, "GET") != 0) {
        curl_easy_setopt (e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) r->body_size);
        curl_easy_setopt (e, CURLOPT_COPYPOSTFIELDS, r->body ? r->body : "");
        if (strcmp (method, "POST") != 0)
            curl_easy_setopt (e, CURLOPT_CUSTOMREQUEST, method);
    }
    return s_start (self, call);
}

int phttp_connect (phttp_t *self, const char *url, int64_t timeout_ms, phttp_connected_fn *done,
                   void *arg)
{
    assert (self);
    s_call_t *call = s_call_new (self, url, timeout_ms > 0 ? timeout_ms : PHTTP_CONNECT_MS);
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

static void s_finish (phttp_t *self, s_call_t *call, CURLcode result)
{
    zlistx_delete (self->calls, zlistx_find (self->calls, call));
    char error[CURL_ERROR_SIZE + 160];
    error[0] = 0;
    if (result != CURLE_OK && !(call->too_large && result == CURLE_WRITE_ERROR)) {
        char raw[CURL_ERROR_SIZE + 120];
        snprintf (raw, sizeof raw, "%s%s%s", curl_easy_strerror (result),
                  call->errbuf[0] ? ": " : "", call->errbuf);
        phttp_redact (raw, self->secret, error, sizeof error);
    }
    if (call->connected) {
        if (result == CURLE_OK) {
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
    long status = 0;
    curl_easy_getinfo (call->easy, CURLINFO_RESPONSE_CODE, &status);
    response.status = status;
    response.body = call->data ? call->data : "";
    response.size = call->size;
    response.retry_after_ms = call->retry_after_ms;
    response.too_large = call->too_large;
    response.error = error[0] ? error : NULL;
    if (response.error) {
        //  Whether the request may have reached the server decides between
        //  "try again" and "in doubt" for posts that must not be doubled.
        curl_off_t pretransfer = 0;
        long request_size = 0;
        curl_easy_getinfo (call->easy, CURLINFO_PRETRANSFER_TIME_T, &pretransfer);
        curl_easy_getinfo (call->easy, CURLINFO_REQUEST_SIZE, &request_size);
        response.maybe_sent = pretransfer > 0 || request_size > 0 || status > 0;
    }
    curl_multi_remove_handle (self->multi, call->easy);
    curl_easy_cleanup (call->easy);
    call->done (call->arg, &response);
    s_call_free (call);
}

void phttp_process (phttp_t *self)
{
    assert (self);
    int running = 0;
    if (self->sock_count) {
        //  Which of curl's sockets are ready now (the owner's zmq_poll woke us).
        size_t n = self->sock_count;
        struct pollfd *fds = calloc (n, sizeof *fds);
        for (size_t i = 0; i < n; i++) {
            fds[i].fd = self->socks[i].fd;
            fds[i].events = (short) (((self->socks[i].what & CURL_POLL_IN) ? POLLIN : 0)
                                     | ((self->socks[i].what & CURL_POLL_OUT) ? POLLOUT : 0));
        }
        if (poll (fds, (nfds_t) n, 0) > 0)
            for (size_t i = 0; i < n; i++) {
                int flags = ((fds[i].revents & POLLIN) ? CURL_CSELECT_IN : 0)
                            | ((fds[i].revents & POLLOUT) ? CURL_CSELECT_OUT : 0)
                            | ((fds[i].revents & (POLLERR | POLLHUP)) ? CURL_CSELECT_ERR : 0);
                if (flags)
                    curl_multi_socket_action (self->multi, fds[i].fd, flags, &running);
            }
        free (fds);
    }
    if (zclock_time () >= self->deadline) {
        self->deadline = INT64_MAX;
        curl_multi_socket_action (self->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    }
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read (self->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        s_call_t *call = NULL;
        curl_easy_getinfo (msg->easy_handle, CURLINFO_PRIVATE, (char **) &call);
        if (call && zlistx_find (self->calls, call))
            s_finish (self, call, msg->data.result);
    }
}

int phttp_pollitems (phttp_t *self, zmq_pollitem_t *items, int max)
{
    assert (self);
    int n = 0;
    for (size_t i = 0; i < self->sock_count && n < max; i++) {
        short events = (short) (((self->socks[i].what & CURL_POLL_IN) ? ZMQ_POLLIN : 0)
                                | ((self->socks[i].what & CURL_POLL_OUT) ? ZMQ_POLLOUT : 0));
        items[n++] = (zmq_pollitem_t) {NULL, self->socks[i].fd, events, 0};
    }
    return n;
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
    phttp_t *self = calloc (1, sizeof *self);
    self->multi = curl_multi_init ();
    if (!self->multi) {
        free (self);
        return NULL;
    }
    self->secret = secret && *secret ? strdup (secret) : NULL;
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
    for (s_call_t *call = zlistx_first (self->calls); call; call = zlistx_next (self->calls)) {
        curl_multi_remove_handle (self->multi, call->easy);
        curl_easy_cleanup (call->easy);
        s_call_free (call);
    }
    zlistx_destroy (&self->calls);
    for (CURL *e = zlistx_first (self->connections); e; e = zlistx_next (self->connections)) {
        curl_multi_remove_handle (self->multi, e);
        curl_easy_cleanup (e);
    }
    zlistx_destroy (&self->connections);
    curl_multi_cleanup (self->multi);
    free (self->socks);
    if (self->secret)
        memset (self->secret, 0, strlen (self->secret));
    free (self->secret);
    free (self);
    *self_p = NULL;
}

//  --- helpers ---------------------------------------------------------------------------------

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
