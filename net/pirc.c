/*  pirc - one IRC connection over libcurl. See pirc.h. */
#include "net/pirc.h"
#include "common/palloc.h"
#include "common/plog.h"
#include "net/phttp.h"
#include "net/ptext.h"

#include <czmq.h>
#include <stdlib.h>
#include <string.h>

#define KEEPALIVE_MS    60000       //  silence after which we ping the server
#define PING_WAIT_MS    20000       //  and how long it has to answer
#define REGISTER_MS     15000       //  from connected to the welcome (001)
#define MAX_BUFFERED    (1 << 20)   //  input kept while the owner cannot take lines
#define RETRY_BASE_MS   1000
#define RETRY_MAX_MS    60000
#define AUTH_RETRY_MS   30000       //  after a refused login, retry slowly
#define AUTH_RETRY_MAX  600000

typedef enum {
    S_IDLE,                     //  waiting to (re)connect
    S_CONNECTING,               //  TCP / TLS handshake in progress
    S_REGISTERING,              //  logged in, waiting for the welcome
    S_READY
} s_state_t;

struct pirc_s {
    char *name;
    char *url;                  //  as curl wants it: https:// or http://
    char *nick;
    char *token;                //  "oauth:..." or NULL
    int64_t connect_timeout_ms;
    pirc_line_fn *on_line;
    pirc_state_fn *on_state;
    void *arg;
    phttp_t *http;
    CURL *easy;                 //  the connection, once open
    curl_socket_t fd;
    s_state_t state;
    int64_t now;
    int64_t next_connect_at;
    unsigned failures;          //  consecutive failed connections
    bool auth_refused;
    int64_t register_deadline;
    int64_t last_rx;
    int64_t ping_sent_at;       //  0 = no ping outstanding
    char *in;                   //  received, not yet dispatched
    size_t in_len, in_pos, in_cap;
    bool skipping;              //  inside an overlong line
    uint64_t line_no;
    char *out;                  //  queued, not yet written
    size_t out_len, out_pos, out_cap;
    uint64_t queued, written;   //  stream positions of this connection
    uint64_t errors;
    const char *broken;         //  why reading stopped; closed once the lines before are seen
    plog_limiter_t log;
};

//  --- parsing ------------------------------------------------------------------------

int pirc_parse (char *line, pirc_msg_t *msg)
{
    memset (msg, 0, sizeof *msg);
    msg->tags = msg->nick = "";
    char *p = line;
    if (*p == '@') {
        msg->tags = p + 1;
        p = strchr (p, ' ');
        if (!p)
            return -1;
        *p++ = 0;
        while (*p == ' ')
            p++;
    }
    if (*p == ':') {
        msg->nick = p + 1;
        p = strchr (p, ' ');
        if (!p)
            return -1;
        *p++ = 0;
        char *bang = strchr (msg->nick, '!');
        if (bang)
            *bang = 0;
        while (*p == ' ')
            p++;
    }
    msg->command = p;
    p = strchr (p, ' ');
    if (p)
        *p++ = 0;
    if (!*msg->command)
        return -1;
    while (p && *p && msg->param_count < PIRC_MAX_PARAMS) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        if (*p == ':' || msg->param_count == PIRC_MAX_PARAMS - 1) {
            msg->params[msg->param_count++] = *p == ':' ? p + 1 : p;
            break;
        }
        msg->params[msg->param_count++] = p;
        p = strchr (p, ' ');
        if (p)
            *p++ = 0;
    }
    return 0;
}

const char *pirc_tag (const pirc_msg_t *msg, const char *key, char *out, size_t outlen)
{
    size_t klen = strlen (key);
    for (const char *t = msg->tags; t && *t;) {
        const char *end = strchr (t, ';');
        size_t len = end ? (size_t) (end - t) : strlen (t);
        if (len >= klen && strncmp (t, key, klen) == 0 && (len == klen || t[klen] == '=')) {
            const char *v = len == klen ? t + len : t + klen + 1;
            const char *vend = t + len;
            size_t o = 0;
            while (v < vend && o + 1 < outlen) {
                if (*v == '\\' && v + 1 < vend) {
                    char c = v[1];
                    out[o++] = c == 's'   ? ' '
                               : c == ':' ? ';'
                               : c == 'r' ? '\r'
                               : c == 'n' ? '\n'
                                          : c;
                    v += 2;
                }
                else if (*v == '\\')
                    v++;    //  a lone trailing backslash is dropped
                else
                    out[o++] = *v++;
            }
            //  A value cut to fit must not end inside a UTF-8 sequence.
            while (v < vend && o > 0 && !ptext_utf8_valid (out, o))
                o--;
            out[o] = 0;
            return out;
        }
        t = end ? end + 1 : NULL;
    }
    return NULL;
}

//  --- connection ---------------------------------------------------------------------

static void s_bad_input (pirc_t *self, const char *what)
{
    self->errors++;
    if (plog_limiter_allow (&self->log, 20))
        plog_warn ("%s: line %llu from the server: %s; skipped", self->name,
                   (unsigned long long) self->line_no, what);
}

static void s_close (pirc_t *self, const char *why, bool log)
{
    bool was_connected = self->state != S_IDLE;
    if (log && why)
        plog_warn ("%s: connection to %s lost: %s", self->name, self->url, why);
    self->state = S_IDLE;
    unsigned tries = self->failures++;
    int64_t delay = self->auth_refused ? phttp_backoff_ms (tries, AUTH_RETRY_MS, AUTH_RETRY_MAX)
                                       : phttp_backoff_ms (tries, RETRY_BASE_MS, RETRY_MAX_MS);
    self->next_connect_at = self->now + delay;
    //  Tell the owner before the stream positions are reset.
    if (was_connected && self->on_state)
        self->on_state (self->arg, PIRC_CLOSED, why ? why : "closed");
    phttp_release (self->http, &self->easy);
    self->fd = CURL_SOCKET_BAD;
    self->in_len = self->in_pos = 0;
    self->out_len = self->out_pos = 0;
    self->queued = self->written = 0;
    self->skipping = false;
    self->ping_sent_at = 0;
    self->broken = NULL;
}

//  Queues raw bytes (login lines, PONG) regardless of the ready state.
static void s_queue (pirc_t *self, const char *line)
{
    size_t n = strlen (line);
    if (self->out_len + n + 3 > self->out_cap) {
        if (self->out_pos) {
            memmove (self->out, self->out + self->out_pos, self->out_len - self->out_pos);
            self->out_len -= self->out_pos;
            self->out_pos = 0;
        }
        if (self->out_len + n + 3 > self->out_cap) {
            self->out_cap = (self->out_len + n + 3) * 2;
            self->out = prealloc (self->out, self->out_cap);
        }
    }
    char *at = self->out + self->out_len;
    for (size_t i = 0; i < n; i++)
        at[i] = line[i] == '\r' || line[i] == '\n' ? ' ' : line[i];
    at[n] = '\r';
    at[n + 1] = '\n';
    self->out_len += n + 2;
    self->queued += n + 2;
}

static void s_on_connected (void *arg, CURL *easy, const char *error)
{
    pirc_t *self = arg;
    if (!easy) {
        self->state = S_CONNECTING;     //  so s_close counts it as a failure to report
        plog_warn ("%s: cannot connect to %s: %s", self->name, self->url, error);
        s_close (self, error, false);
        return;
    }
    self->easy = easy;
    curl_easy_getinfo (easy, CURLINFO_ACTIVESOCKET, &self->fd);
    self->state = S_REGISTERING;
    self->register_deadline = self->now + REGISTER_MS;
    self->last_rx = self->now;
    plog_info ("%s: connected to %s, logging in as %s", self->name, self->url, self->nick);
    s_queue (self, "CAP REQ :twitch.tv/tags twitch.tv/commands");
    if (self->token) {
        char pass[600];
        snprintf (pass, sizeof pass, "PASS %s", self->token);
        s_queue (self, pass);
        memset (pass, 0, sizeof pass);
    }
    char nick[300];
    snprintf (nick, sizeof nick, "NICK %s", self->nick);
    s_queue (self, nick);
}

static void s_flush (pirc_t *self)
{
    while (self->easy && self->out_pos < self->out_len) {
        size_t n = 0;
        CURLcode rc = curl_easy_send (self->easy, self->out + self->out_pos,
                                      self->out_len - self->out_pos, &n);
        if (rc == CURLE_AGAIN)
            return;
        if (rc != CURLE_OK) {
            s_close (self, curl_easy_strerror (rc), true);
            return;
        }
        self->out_pos += n;
        self->written += n;
    }
    if (self->out_pos == self->out_len)
        self->out_pos = self->out_len = 0;
}

static void s_read (pirc_t *self)
{
    while (self->easy && self->in_len < MAX_BUFFERED) {
        if (self->in_pos && self->in_pos == self->in_len)
            self->in_pos = self->in_len = 0;
        if (self->in_cap - self->in_len < 4096) {
            if (self->in_pos) {
                memmove (self->in, self->in + self->in_pos, self->in_len - self->in_pos);
                self->in_len -= self->in_pos;
                self->in_pos = 0;
            }
            if (self->in_cap - self->in_len < 4096) {
                self->in_cap = self->in_cap ? self->in_cap * 2 : 16384;
                self->in = prealloc (self->in, self->in_cap);
            }
        }
        size_t n = 0;
        CURLcode rc = curl_easy_recv (self->easy, self->in + self->in_len,
                                      self->in_cap - self->in_len - 1, &n);
        if (rc == CURLE_AGAIN)
            return;
        //  Lines already received (a NOTICE saying why, a USERSTATE
        //  confirming a post) are dispatched before the connection is closed.
        if (rc != CURLE_OK) {
            self->broken = curl_easy_strerror (rc);
            return;
        }
        if (n == 0) {
            self->broken = "the server closed the connection";
            return;
        }
        self->in_len += n;
        self->last_rx = self->now;
        self->ping_sent_at = 0;
    }
}

//  What pirc itself does with a line; returns true if the owner should not see it.
static bool s_handle (pirc_t *self, const pirc_msg_t *msg)
{
    const char *cmd = msg->command;
    if (streq (cmd, "PING")) {
        char pong[600];
        snprintf (pong, sizeof pong, "PONG :%s",
                  msg->param_count ? msg->params[msg->param_count - 1] : "");
        s_queue (self, pong);
        return true;
    }
    if (streq (cmd, "PONG"))
        return true;
    if (streq (cmd, "001") && self->state == S_REGISTERING) {
        self->state = S_READY;
        self->failures = 0;
        self->auth_refused = false;
        plog_info ("%s: logged in to %s as %s", self->name, self->url, self->nick);
        if (self->on_state)
            self->on_state (self->arg, PIRC_READY, NULL);
    }
    else if (streq (cmd, "NOTICE") && self->state == S_REGISTERING && msg->param_count) {
        const char *text = msg->params[msg->param_count - 1];
        if (strstr (text, "authentication failed") || strstr (text, "Improperly formatted auth")) {
            plog_error ("%s: %s refused the login of %s: \"%s\" (check the OAuth token and nick)",
                        self->name, self->url, self->nick, text);
            self->auth_refused = true;
        }
    }
    return false;
}

static void s_dispatch (pirc_t *self)
{
    while (self->easy && self->in_pos < self->in_len) {
        char *start = self->in + self->in_pos;
        char *nl = memchr (start, '\n', self->in_len - self->in_pos);
        if (!nl) {
            if (self->in_len - self->in_pos > PIRC_MAX_LINE) {
                self->line_no++;
                s_bad_input (self, "longer than 64 KiB");
                self->skipping = true;
                self->in_pos = self->in_len = 0;
            }
            return;
        }
        size_t n = (size_t) (nl - start);
        if (self->skipping) {
            self->skipping = false;
            self->in_pos += n + 1;
            continue;
        }
        self->line_no++;
        if (n && start[n - 1] == '\r')
            n--;
        if (n == 0) {
            self->in_pos = (size_t) (nl - self->in) + 1;
            continue;
        }
        if (n > PIRC_MAX_LINE) {
            s_bad_input (self, "longer than 64 KiB");
            self->in_pos = (size_t) (nl - self->in) + 1;
            continue;
        }
        if (!ptext_utf8_valid (start, n)) {
            s_bad_input (self, "invalid UTF-8");
            self->in_pos = (size_t) (nl - self->in) + 1;
            continue;
        }
        //  Parse a copy: a refused line must stay intact for the next try.
        char *copy = pstrndup (start, n);
        pirc_msg_t msg;
        if (pirc_parse (copy, &msg)) {
            s_bad_input (self, "not an IRC message");
            free (copy);
            self->in_pos = (size_t) (nl - self->in) + 1;
            continue;
        }
        bool consumed = s_handle (self, &msg);
        if (streq (msg.command, "RECONNECT")) {
            free (copy);
            plog_info ("%s: the server asked us to reconnect", self->name);
            s_close (self, "the server asked to reconnect", false);
            self->next_connect_at = self->now;
            return;
        }
        if (self->auth_refused) {
            free (copy);
            s_close (self, "login refused", false);
            return;
        }
        if (!consumed && self->on_line && !self->on_line (self->arg, &msg)) {
            self->line_no--;
            free (copy);
            return;     //  the owner cannot take it now
        }
        free (copy);
        if (!self->easy)
            return;     //  the owner's callback closed us
        self->in_pos = (size_t) (nl - self->in) + 1;
    }
}

//  --- the loop -------------------------------------------------------------------------

void pirc_process (pirc_t *self, int64_t now)
{
    assert (self);
    self->now = now;
    if (self->state == S_IDLE && now >= self->next_connect_at) {
        self->state = S_CONNECTING;
        if (phttp_connect (self->http, self->url, self->connect_timeout_ms, s_on_connected, self)) {
            self->state = S_IDLE;
            self->next_connect_at = now + RETRY_MAX_MS;
            plog_error ("%s: curl cannot open a connection to %s", self->name, self->url);
        }
    }
    if (self->state == S_CONNECTING)
        phttp_process (self->http);
    if (!self->easy)
        return;
    if (!self->broken)
        s_read (self);
    s_dispatch (self);
    if (self->easy && self->broken) {
        s_close (self, self->broken, true);
        self->broken = NULL;
    }
    if (!self->easy)
        return;
    if (self->state == S_REGISTERING && now >= self->register_deadline) {
        s_close (self, "no welcome from the server after login", true);
        return;
    }
    if (self->state == S_READY) {
        if (self->ping_sent_at && now - self->ping_sent_at >= PING_WAIT_MS) {
            s_close (self, "no answer to PING", true);
            return;
        }
        if (!self->ping_sent_at && now - self->last_rx >= KEEPALIVE_MS) {
            s_queue (self, "PING :tmi.twitch.tv");
            self->ping_sent_at = now;
        }
    }
    s_flush (self);
}

int pirc_pollitems (pirc_t *self, zmq_pollitem_t *items, int max)
{
    assert (self);
    if (self->state == S_CONNECTING)
        return phttp_pollitems (self->http, items, max);
    if (!self->easy || max < 1)
        return 0;
    short events = (short) ((self->in_len < MAX_BUFFERED ? ZMQ_POLLIN : 0)
                            | (self->out_pos < self->out_len ? ZMQ_POLLOUT : 0));
    items[0] = (zmq_pollitem_t) {NULL, self->fd, events, 0};
    return 1;
}

int64_t pirc_wakeup (pirc_t *self, int64_t now)
{
    assert (self);
    if (self->easy && (self->broken
                       || (self->in_len > self->in_pos
                           && memchr (self->in + self->in_pos, '\n', self->in_len - self->in_pos))))
        return now;     //  lines the owner did not take yet, or a break to report
    switch (self->state) {
    case S_IDLE: return self->next_connect_at;
    case S_CONNECTING: return phttp_wakeup (self->http);
    case S_REGISTERING: return self->register_deadline;
    case S_READY: break;
    }
    return self->ping_sent_at ? self->ping_sent_at + PING_WAIT_MS : self->last_rx + KEEPALIVE_MS;
}

bool pirc_ready (pirc_t *self)
{
    assert (self);
    return self->state == S_READY;
}

uint64_t pirc_send (pirc_t *self, const char *line)
{
    assert (self);
    if (self->state != S_READY)
        return 0;
    s_queue (self, line);
    return self->queued;
}

uint64_t pirc_written (pirc_t *self)
{
    assert (self);
    return self->written;
}

uint64_t pirc_errors (pirc_t *self)
{
    assert (self);
    return self->errors;
}

//  --- life ------------------------------------------------------------------------------

pirc_t *pirc_new (const pirc_config_t *config)
{
    const char *url = config->url;
    const char *scheme;
    const char *rest;
    int port;
    if (strncmp (url, "ircs://", 7) == 0)
        scheme = "https", rest = url + 7, port = 6697;
    else if (strncmp (url, "irc://", 6) == 0)
        scheme = "http", rest = url + 6, port = 6667;
    else {
        plog_error ("%s: \"%s\" is not an irc:// or ircs:// URL", config->name, url);
        return NULL;
    }
    pirc_t *self = pcalloc (1, sizeof *self);
    self->name = pstrdup (config->name);
    char curl_url[600];
    //  IRC ports are not HTTP's: name the port when the URL does not.
    const char *slash = strchr (rest, '/');
    size_t hostlen = slash ? (size_t) (slash - rest) : strlen (rest);
    if (memchr (rest, ':', hostlen) || (hostlen && rest[0] == '['))
        snprintf (curl_url, sizeof curl_url, "%s://%.*s", scheme, (int) hostlen, rest);
    else
        snprintf (curl_url, sizeof curl_url, "%s://%.*s:%d", scheme, (int) hostlen, rest, port);
    self->url = pstrdup (curl_url);
    if (config->nick && *config->nick)
        self->nick = pstrdup (config->nick);
    else {
        char anon[32];
        snprintf (anon, sizeof anon, "justinfan%d", 10000 + (int) (random () % 80000));
        self->nick = pstrdup (anon);
    }
    if (config->token && *config->token) {
        char token[600];
        snprintf (token, sizeof token, "%s%s", strncmp (config->token, "oauth:", 6) ? "oauth:" : "",
                  config->token);
        self->token = pstrdup (token);
        memset (token, 0, sizeof token);
    }
    self->connect_timeout_ms = config->connect_timeout_ms > 0 ? config->connect_timeout_ms : 10000;
    self->on_line = config->on_line;
    self->on_state = config->on_state;
    self->arg = config->arg;
    self->http = phttp_new (self->token);
    self->fd = CURL_SOCKET_BAD;
    self->state = S_IDLE;
    if (!self->http) {
        plog_error ("%s: libcurl could not be set up", self->name);
        pirc_destroy (&self);
    }
    return self;
}

void pirc_destroy (pirc_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pirc_t *self = *self_p;
    phttp_destroy (&self->http);    //  closes the connection too
    free (self->name);
    free (self->url);
    free (self->nick);
    if (self->token)
        memset (self->token, 0, strlen (self->token));
    free (self->token);
    free (self->in);
    free (self->out);
    free (self);
    *self_p = NULL;
}
