/*  test_phttp - the HTTP client against a real server on 127.0.0.1.

    A libmicrohttpd server (its own thread) answers the requests; a socket
    that listens but never accepts stands for a server that never answers,
    and a closed port for one that refuses. Covers what each daemon relies
    on: headers and bearer keys, bodies, Retry-After, the response cap,
    streamed event streams and their abort, first-byte timing, cancel,
    timeouts and whether a failed request may have been sent, raw
    connections, and one poll item for many requests in flight.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "net/phttp.h"

#include <arpa/inet.h>
#include <czmq.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BIG_BODY 2000

//  --- the server ----------------------------------------------------------------------------

static const char s_stream[] = "data: one\n\ndata: two\n\n";

static enum MHD_Result s_answer (struct MHD_Connection *conn, unsigned status, const char *type,
                                 const char *body, size_t size, const char *retry_after)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer (size, (void *) body, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header (r, "Content-Type", type);
    if (retry_after)
        MHD_add_response_header (r, "Retry-After", retry_after);
    enum MHD_Result rc = MHD_queue_response (conn, status, r);
    MHD_destroy_response (r);
    return rc;
}

//  /echo answers "METHOD|Authorization|X-Test|body"; /busy is a 503 with
//  Retry-After; /big is larger than the tests' cap; /stream is an event
//  stream; /stream404 an error with the same content type.
static enum MHD_Result s_handler (void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload, size_t *upload_size, void **state)
{
    (void) cls, (void) version;
    if (!*state) {
        *state = zchunk_new (NULL, 0);
        return MHD_YES;
    }
    zchunk_t *body = *state;
    if (*upload_size) {
        zchunk_extend (body, upload, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    if (streq (url, "/echo")) {
        const char *auth = MHD_lookup_connection_value (conn, MHD_HEADER_KIND, "Authorization");
        const char *test = MHD_lookup_connection_value (conn, MHD_HEADER_KIND, "X-Test");
        char out[1000];
        snprintf (out, sizeof out, "%s|%s|%s|%.*s", method, auth ? auth : "", test ? test : "",
                  (int) zchunk_size (body), (char *) zchunk_data (body));
        return s_answer (conn, 200, "text/plain", out, strlen (out), NULL);
    }
    if (streq (url, "/busy"))
        return s_answer (conn, 503, "text/plain", "busy", 4, "7");
    if (streq (url, "/big")) {
        char big[BIG_BODY];
        memset (big, 'x', sizeof big);
        return s_answer (conn, 200, "text/plain", big, sizeof big, NULL);
    }
    if (streq (url, "/stream"))
        return s_answer (conn, 200, "text/event-stream", s_stream, strlen (s_stream), NULL);
    if (streq (url, "/stream404"))
        return s_answer (conn, 404, "text/event-stream", "no such model", 13, NULL);
    return s_answer (conn, 404, "text/plain", "not found", 9, NULL);
}

static void s_completed (void *cls, struct MHD_Connection *conn, void **state,
                         enum MHD_RequestTerminationCode code)
{
    (void) cls, (void) conn, (void) code;
    zchunk_t *body = *state;
    zchunk_destroy (&body);
    *state = NULL;
}

typedef struct {
    struct MHD_Daemon *daemon;
    char base[64];              //  http://127.0.0.1:port
    char refused_url[64];       //  a port nobody listens on
    char url[128];              //  see s_url
} server_t;

//  The server's URL of `path`; valid until the next call.
static const char *s_url (server_t *s, const char *path)
{
    snprintf (s->url, sizeof s->url, "%s%s", s->base, path);
    return s->url;
}

//  A socket that listens and never accepts by itself: the kernel completes
//  connections and takes requests, and no answer ever comes.
static int s_silent (char *url, size_t urlsize)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl (INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal (bind (fd, (struct sockaddr *) &a, sizeof a), 0);
    assert_int_equal (listen (fd, 16), 0);
    getsockname (fd, (struct sockaddr *) &a, &len);
    snprintf (url, urlsize, "http://127.0.0.1:%d/", ntohs (a.sin_port));
    return fd;
}

static int s_setup (void **state)
{
    server_t *s = calloc (1, sizeof *s);
    s->daemon = MHD_start_daemon (MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL,
                                  NULL, s_handler, NULL, MHD_OPTION_NOTIFY_COMPLETED, s_completed,
                                  NULL, MHD_OPTION_END);
    assert_non_null (s->daemon);
    snprintf (s->base, sizeof s->base, "http://127.0.0.1:%u",
              MHD_get_daemon_info (s->daemon, MHD_DAEMON_INFO_BIND_PORT)->port);
    close (s_silent (s->refused_url, sizeof s->refused_url));
    *state = s;
    return 0;
}

static int s_teardown (void **state)
{
    server_t *s = *state;
    MHD_stop_daemon (s->daemon);
    free (s);
    return 0;
}

//  --- the client's side --------------------------------------------------------------------

typedef struct {
    int done;                   //  done callbacks run
    phttp_response_t r;         //  the last response, strings copied
    char body[4096];
    char error[400];
    char streamed[256];         //  what on_data got
    int pieces;
    bool stop;                  //  on_data asks to stop
} result_t;

static void s_done (void *arg, const phttp_response_t *r)
{
    result_t *res = arg;
    res->done++;
    res->r = *r;
    snprintf (res->body, sizeof res->body, "%s", r->body);
    snprintf (res->error, sizeof res->error, "%s", r->error ? r->error : "");
    res->r.body = res->body;
    res->r.error = r->error ? res->error : NULL;
}

static int s_on_data (void *arg, const char *data, size_t size)
{
    result_t *res = arg;
    res->pieces++;
    size_t used = strlen (res->streamed), room = sizeof res->streamed - used - 1;
    size_t n = size < room ? size : room;
    memcpy (res->streamed + used, data, n);
    res->streamed[used + n] = 0;
    return res->stop ? -1 : 0;
}

//  The owner's loop: zmq_poll on what phttp asks for, until `until` holds
//  or `ms` pass. Returns whether it held.
static bool s_run (phttp_t *http, int *counter, int until, int64_t ms)
{
    int64_t end = zclock_time () + ms;
    while (zclock_time () < end && (!counter || *counter < until)) {
        zmq_pollitem_t items[4];
        int n = phttp_pollitems (http, items, 4);
        assert_in_range (n, 0, 1);
        int64_t wake = phttp_wakeup (http), now = zclock_time ();
        int64_t timeout = wake < end ? wake - now : end - now;
        zmq_poll (items, n, timeout < 0 ? 0 : timeout > 50 ? 50 : (long) timeout);
        phttp_process (http);
    }
    return counter && *counter >= until;
}

//  Runs one request to its end; `res` starts afresh (but for `stop`).
static void s_fetch (phttp_t *http, const phttp_request_t *req, result_t *res)
{
    *res = (result_t) {.stop = res->stop};
    assert_non_null (phttp_request (http, req, s_done, res));
    assert_true (s_run (http, &res->done, 1, 5000));
}

static void test_request_and_answer (void **state)
{
    server_t *s = *state;
    phttp_t *http = phttp_new (NULL);
    assert_non_null (http);
    static const char *const headers[] = {"X-Test: yes", NULL};
    result_t res = {0};
    phttp_request_t req = {.method = "POST", .url = s_url (s, "/echo"), .headers = headers,
                           .body = "{\"a\":1}", .bearer = "sk-key"};
    assert_non_null (phttp_request (http, &req, s_done, &res));
    assert_int_equal (phttp_active (http), 1);
    assert_true (s_run (http, &res.done, 1, 5000));
    assert_int_equal (res.r.status, 200);
    assert_null (res.r.error);
    assert_string_equal (res.body, "POST|Bearer sk-key|yes|{\"a\":1}");
    assert_int_equal (res.r.size, strlen (res.body));
    assert_int_equal (res.r.retry_after_ms, -1);
    assert_true (res.r.first_byte_ms >= 0 && res.r.total_ms >= res.r.first_byte_ms);
    assert_int_equal (phttp_active (http), 0);

    //  GET without a key; PUT with an empty body.
    req = (phttp_request_t) {.url = s_url (s, "/echo")};
    s_fetch (http, &req, &res);
    assert_string_equal (res.body, "GET|||");
    req.method = "PUT";
    s_fetch (http, &req, &res);
    assert_string_equal (res.body, "PUT|||");
    phttp_destroy (&http);
    assert_null (http);
}

static void test_retry_after_and_cap (void **state)
{
    server_t *s = *state;
    phttp_t *http = phttp_new (NULL);
    result_t res = {0};
    phttp_request_t req = {.url = s_url (s, "/busy")};
    s_fetch (http, &req, &res);
    assert_int_equal (res.r.status, 503);
    assert_null (res.r.error);
    assert_int_equal (res.r.retry_after_ms, 7000);
    assert_string_equal (res.body, "busy");

    //  A body over the cap ends the request; its status is still known.
    req = (phttp_request_t) {.url = s_url (s, "/big"), .max_response_bytes = BIG_BODY / 2};
    s_fetch (http, &req, &res);
    assert_true (res.r.too_large);
    assert_non_null (res.r.error);
    assert_int_equal (res.r.status, 200);
    assert_true (res.r.size <= BIG_BODY / 2);
    assert_true (res.r.maybe_sent);
    phttp_destroy (&http);
}

static void test_stream (void **state)
{
    server_t *s = *state;
    phttp_t *http = phttp_new (NULL);
    result_t res = {0};
    phttp_request_t req = {.method = "POST", .url = s_url (s, "/stream"), .body = "{}",
                           .on_data = s_on_data};
    s_fetch (http, &req, &res);
    assert_null (res.r.error);
    assert_string_equal (res.streamed, s_stream);
    assert_int_equal (res.r.size, 0);           //  streamed, not kept
    assert_true (res.r.first_byte_ms >= 0);

    //  An error answer is kept as a body, whatever its type.
    req.url = s_url (s, "/stream404");
    s_fetch (http, &req, &res);
    assert_int_equal (res.r.status, 404);
    assert_int_equal (res.pieces, 0);
    assert_string_equal (res.body, "no such model");

    //  The callback may stop the request.
    res.stop = true;
    req.url = s_url (s, "/stream");
    s_fetch (http, &req, &res);
    assert_true (res.r.aborted);
    assert_non_null (res.r.error);
    assert_int_equal (res.pieces, 1);
    phttp_destroy (&http);
}

static void test_failures (void **state)
{
    server_t *s = *state;
    phttp_t *http = phttp_new (NULL);
    //  Refused: the request never left.
    result_t res = {0};
    phttp_request_t req = {.method = "POST", .url = s->refused_url, .body = "x"};
    s_fetch (http, &req, &res);
    assert_non_null (res.r.error);
    assert_false (res.r.maybe_sent);
    assert_false (res.r.timed_out);
    assert_int_equal (res.r.status, 0);
    assert_int_equal (res.r.first_byte_ms, -1);

    //  No answer: the request was sent, its fate is unknown.
    char silent_url[64];
    int silent = s_silent (silent_url, sizeof silent_url);
    req = (phttp_request_t) {.method = "POST", .url = silent_url, .body = "x", .timeout_ms = 300};
    s_fetch (http, &req, &res);
    assert_non_null (res.r.error);
    assert_true (res.r.timed_out);
    assert_true (res.r.maybe_sent);

    //  Cancelled: done never runs.
    memset (&res, 0, sizeof res);
    req.timeout_ms = 200;
    phttp_call_t *call = phttp_request (http, &req, s_done, &res);
    assert_non_null (call);
    s_run (http, NULL, 0, 50);
    phttp_cancel (http, &call);
    assert_null (call);
    assert_int_equal (phttp_active (http), 0);
    s_run (http, NULL, 0, 400);
    assert_int_equal (res.done, 0);

    //  Destroyed with requests in flight: their callbacks do not run either.
    assert_non_null (phttp_request (http, &req, s_done, &res));
    phttp_destroy (&http);
    assert_int_equal (res.done, 0);
    close (silent);
}

static void test_many_in_flight (void **state)
{
    server_t *s = *state;
    phttp_t *http = phttp_new (NULL);
    enum { COUNT = 40 };
    static result_t res[COUNT];
    memset (res, 0, sizeof res);
    int finished = 0;
    phttp_request_t req = {.url = s_url (s, "/echo")};
    for (int i = 0; i < COUNT; i++)
        assert_non_null (phttp_request (http, &req, s_done, &res[i]));
    assert_int_equal (phttp_active (http), COUNT);
    //  s_run checks that one poll item stands for all of them.
    int64_t end = zclock_time () + 10000;
    while (finished < COUNT && zclock_time () < end) {
        s_run (http, NULL, 0, 20);
        finished = 0;
        for (int i = 0; i < COUNT; i++)
            finished += res[i].done;
    }
    assert_int_equal (finished, COUNT);
    for (int i = 0; i < COUNT; i++)
        assert_string_equal (res[i].body, "GET|||");
    phttp_destroy (&http);
}

typedef struct {
    CURL *easy;
    int calls;
    char error[300];
} conn_t;

static void s_connected (void *arg, CURL *easy, const char *error)
{
    conn_t *c = arg;
    c->calls++;
    c->easy = easy;
    snprintf (c->error, sizeof c->error, "%s", error ? error : "");
}

static void test_raw_connection (void **state)
{
    server_t *s = *state;
    phttp_t *http = phttp_new (NULL);
    char silent_url[64];
    int silent = s_silent (silent_url, sizeof silent_url);
    conn_t c = {0};
    assert_int_equal (phttp_connect (http, silent_url, 2000, s_connected, &c), 0);
    assert_true (s_run (http, &c.calls, 1, 5000));
    assert_non_null (c.easy);
    size_t sent = 0;
    assert_int_equal (curl_easy_send (c.easy, "PING\r\n", 6, &sent), CURLE_OK);
    assert_int_equal (sent, 6);
    int peer = accept (silent, NULL, NULL);
    char line[16] = "";
    assert_int_equal (recv (peer, line, sizeof line - 1, 0), 6);
    assert_string_equal (line, "PING\r\n");
    assert_int_equal (send (peer, "PONG\r\n", 6, 0), 6);
    char in[16] = "";
    size_t got = 0;
    int64_t end = zclock_time () + 2000;
    while (curl_easy_recv (c.easy, in, sizeof in - 1, &got) == CURLE_AGAIN && zclock_time () < end)
        zclock_sleep (10);
    assert_string_equal (in, "PONG\r\n");
    phttp_release (http, &c.easy);
    assert_null (c.easy);
    assert_int_equal (recv (peer, line, sizeof line, 0), 0);     //  closed
    close (peer);

    //  A refused connection says why; a connection left open is closed with the client.
    memset (&c, 0, sizeof c);
    assert_int_equal (phttp_connect (http, s->refused_url, 2000, s_connected, &c), 0);
    assert_true (s_run (http, &c.calls, 1, 5000));
    assert_null (c.easy);
    assert_true (*c.error);
    memset (&c, 0, sizeof c);
    assert_int_equal (phttp_connect (http, silent_url, 2000, s_connected, &c), 0);
    assert_true (s_run (http, &c.calls, 1, 5000));
    assert_non_null (c.easy);
    phttp_destroy (&http);
    peer = accept (silent, NULL, NULL);
    assert_int_equal (recv (peer, line, sizeof line, 0), 0);
    close (peer);
    close (silent);
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_request_and_answer),
        cmocka_unit_test (test_retry_after_and_cap),
        cmocka_unit_test (test_stream),
        cmocka_unit_test (test_failures),
        cmocka_unit_test (test_many_in_flight),
        cmocka_unit_test (test_raw_connection),
    };
    return cmocka_run_group_tests (tests, s_setup, s_teardown);
}
