/*  source_twitch - chat messages from Twitch channels over IRC.

    One connection (net/pirc: TLS to irc.chat.twitch.tv by default, with
    the tags and commands capabilities) joins the configured channels, at
    most 20 per 10 seconds as Twitch allows, and turns each PRIVMSG into a
    chat message: the "id" tag is the message id, "display-name" the author,
    "tmi-sent-ts" the time, "reply-parent-user-login" the author a reply
    answers. Messages arrive the moment they are written; a raid of
    hundreds of mentions is read as fast as the poller takes them, and the
    connection's buffer holds the rest while the poller's window is full.

    The reading login (nick) and the botAuthors count as bots, so entities
    do not answer them unless answerBots. A live chat cannot be re-read, so
    there is no cursor. Lines that are not valid IRC or UTF-8 are logged,
    counted in errors and skipped.
*/
#include "poller/source.h"
#include "common/palloc.h"
#include "poller/source_feed.h"
#include "common/plog.h"
#include "net/pirc.h"

#include <czmq.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DEFAULT_URL     "ircs://irc.chat.twitch.tv:6697"
#define JOIN_BATCH      20          //  channels per JOIN burst
#define JOIN_PERIOD_MS  10500       //  Twitch: 20 joins per 10 seconds
#define MAX_NAME        128         //  channels and logins are at most 25 characters on Twitch

typedef struct {
    pirc_t *irc;
    source_t *self;
    char **channels;            //  lowercase, without '#'
    size_t channel_count;
    size_t joined;              //  channels JOINed on this connection
    int64_t join_at;            //  next JOIN burst
    bool ready;
    int64_t now;
    //  during poll
    source_emit_fn *emit;
    void *ctx;
    int budget;
    uint64_t own_errors;        //  besides the lines pirc refused
    plog_limiter_t log;
} tw_src_t;

static void s_count_errors (tw_src_t *t)
{
    t->self->errors = t->own_errors + pirc_errors (t->irc);
}

static void s_bad (tw_src_t *t, const char *what)
{
    t->own_errors++;
    s_count_errors (t);
    if (plog_limiter_allow (&t->log, 20))
        plog_warn ("source %s: %s; skipped", t->self->config->name, what);
}

static bool s_privmsg (tw_src_t *t, const pirc_msg_t *m)
{
    if (m->param_count < 2 || m->params[0][0] != '#') {
        s_bad (t, "PRIVMSG without a channel and text");
        return true;
    }
    if (strlen (m->params[0]) > MAX_NAME || strlen (m->nick) > MAX_NAME) {
        s_bad (t, "PRIVMSG with a channel or login longer than 128 bytes");
        return true;
    }
    if (t->budget <= 0)
        return false;
    char id[128], display[128], user_id[64], sent[32], reply_login[128];
    if (!pirc_tag (m, "id", id, sizeof id) || !*id) {
        s_bad (t, "PRIVMSG without an id tag (the tags capability was not granted?)");
        return true;
    }
    const char *author = pirc_tag (m, "display-name", display, sizeof display);
    if (!author || !*author)
        author = m->nick;
    const char *author_id = pirc_tag (m, "user-id", user_id, sizeof user_id);
    const char *ts = pirc_tag (m, "tmi-sent-ts", sent, sizeof sent);
    const char *reply_to = pirc_tag (m, "reply-parent-user-login", reply_login, sizeof reply_login);
    //  "/me waves" arrives as "\001ACTION waves\001".
    const char *text = m->params[1];
    char *action = NULL;
    if (strncmp (text, "\001ACTION ", 8) == 0) {
        action = pstrdup (text + 8);
        size_t n = strlen (action);
        if (n && action[n - 1] == '\001')
            action[n - 1] = 0;
        text = action;
    }
    const char *login = m->nick;
    const char *nick = t->self->config->nick;
    bool from_bot = (*nick && strcasecmp (login, nick) == 0)
                    || source_is_bot_author (t->self, login, author_id)
                    || source_is_bot_author (t->self, author, NULL);
    chat_msg_t msg = {id,
                      m->params[0] + 1,
                      "group",
                      author,
                      author_id ? author_id : login,
                      text,
                      reply_to && *reply_to ? reply_to : NULL,
                      ts ? strtoll (ts, NULL, 10) : t->now,
                      from_bot,
                      NULL,
                      0};
    bool taken = t->emit (t->ctx, t->self, &msg);
    free (action);
    if (taken)
        t->budget--;
    return taken;
}

static bool s_on_line (void *arg, const pirc_msg_t *m)
{
    tw_src_t *t = arg;
    if (streq (m->command, "PRIVMSG"))
        return s_privmsg (t, m);
    if (streq (m->command, "NOTICE") && m->param_count) {
        char msg_id[64];
        plog_warn ("source %s: Twitch notice%s%s for %s: %s", t->self->config->name,
                   pirc_tag (m, "msg-id", msg_id, sizeof msg_id) ? " " : "",
                   pirc_tag (m, "msg-id", msg_id, sizeof msg_id) ? msg_id : "",
                   m->param_count > 1 ? m->params[0] : "the connection",
                   m->params[m->param_count - 1]);
    }
    return true;
}

static void s_on_state (void *arg, pirc_event_t event, const char *why)
{
    tw_src_t *t = arg;
    (void) why;
    t->ready = event == PIRC_READY;
    t->joined = 0;
    t->join_at = t->now;
}

static void s_join (tw_src_t *t)
{
    if (!t->ready || t->joined >= t->channel_count || t->now < t->join_at)
        return;
    char line[JOIN_BATCH * 32 + 16] = "JOIN ";
    size_t n = 0;
    while (t->joined < t->channel_count && n < JOIN_BATCH) {
        const char *c = t->channels[t->joined++];
        if (strlen (line) + strlen (c) + 3 >= sizeof line)
            break;
        strcat (line, n++ ? ",#" : "#");
        strcat (line, c);
    }
    pirc_send (t->irc, line);
    plog_info ("source %s: joining %zu channel(s)", t->self->config->name, n);
    t->join_at = t->now + JOIN_PERIOD_MS;
}

//  --- the source interface ----------------------------------------------------------------

static void s_poll (source_t *self, int64_t now, int budget, source_emit_fn *emit, void *ctx)
{
    tw_src_t *t = self->state;
    t->now = now;
    t->emit = emit;
    t->ctx = ctx;
    t->budget = budget;
    pirc_process (t->irc, now);
    s_join (t);
    pirc_process (t->irc, now);     //  writes the JOIN at once
    t->emit = NULL;
    s_count_errors (t);
}

bool source_twitch_line (source_t *self, const pirc_msg_t *msg, int64_t now, int budget,
                         source_emit_fn *emit, void *ctx)
{
    tw_src_t *t = self->state;
    t->now = now;
    t->emit = emit;
    t->ctx = ctx;
    t->budget = budget;
    bool taken = s_on_line (t, msg);
    t->emit = NULL;
    s_count_errors (t);
    return taken;
}

static int64_t s_wakeup (prt_io_t *io, int64_t now)
{
    source_t *self = source_of (io);
    tw_src_t *t = self->state;
    int64_t wake = pirc_wakeup (t->irc, now);
    if (t->ready && t->joined < t->channel_count && t->join_at < wake)
        wake = t->join_at;
    return wake;
}

static int s_pollitems (prt_io_t *io, zmq_pollitem_t *items, int max)
{
    source_t *self = source_of (io);
    return pirc_pollitems (((tw_src_t *) self->state)->irc, items, max);
}

static const char *s_cursor (source_t *self)
{
    (void) self;
    return NULL;
}

static void s_committed (source_t *self, const char *cursor)
{
    (void) self, (void) cursor;
}

static void s_restore (source_t *self, const char *cursor)
{
    (void) self, (void) cursor;
}

static void s_destroy (source_t *self)
{
    tw_src_t *t = self->state;
    pirc_destroy (&t->irc);
    for (size_t i = 0; i < t->channel_count; i++)
        free (t->channels[i]);
    free (t->channels);
    free (t);
}

int source_twitch_init (source_t *self)
{
    const pcfg_source_t *c = self->config;
    const char *token = source_token (self, false);
    if (!token)
        return -1;
    if (*token && !*c->nick) {
        plog_error ("source %s: twitch has a token but no \"nick\" (the login it belongs to)",
                    c->name);
        return -1;
    }
    if (c->channels.count == 0) {
        plog_error ("source %s: twitch needs \"channels\" to join", c->name);
        return -1;
    }
    tw_src_t *t = pcalloc (1, sizeof *t);
    t->self = self;
    t->channels = pcalloc (c->channels.count, sizeof (char *));
    for (size_t i = 0; i < c->channels.count; i++) {
        const char *name = c->channels.items[i];
        char *lower = pstrdup (name[0] == '#' ? name + 1 : name);
        for (char *p = lower; *p; p++)
            *p = (char) tolower ((unsigned char) *p);
        t->channels[t->channel_count++] = lower;
    }
    char name[300];
    snprintf (name, sizeof name, "source %s", c->name);
    pirc_config_t irc = {name,        *c->url ? c->url : DEFAULT_URL, c->nick, token,
                         c->timeout_ms, s_on_line, s_on_state, t};
    t->irc = pirc_new (&irc);
    if (!t->irc) {
        self->state = t;
        s_destroy (self);
        return -1;
    }
    self->state = t;
    self->poll = s_poll;
    self->io.wakeup = s_wakeup;
    self->io.pollitems = s_pollitems;
    self->finished = source_endless;
    self->cursor = s_cursor;
    self->committed = s_committed;
    self->restore = s_restore;
    self->destroy = s_destroy;
    return 0;
}
