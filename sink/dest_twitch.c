/*  dest_twitch - replies posted to Twitch chat over IRC.

    One connection (net/pirc) per account: the default login (nick,
    tokenEnv) and one per entity in accounts[], each logged in at start so
    replies go out at once. A reply is a PRIVMSG tagged
    @reply-parent-msg-id, so it shows as a reply to the message it answers;
    the channel is JOINed on first use.

    Did it post? IRC does not acknowledge a PRIVMSG, but Twitch sends the
    sender a USERSTATE for the channel after every message it accepts, and
    a NOTICE (msg-id) when it refuses one. So a sent message waits for one
    of them, matched in order per channel: USERSTATE is DEST_OK; a NOTICE
    for a rate limit, slow mode or duplicate is DEST_RETRY, any other is
    DEST_FAIL. If the connection breaks, messages never written are
    DEST_RETRY, and messages written but unconfirmed (or no answer within
    timeoutMs) are DEST_IN_DOUBT: they may be in the chat, so they are not
    sent again blindly.

    Limits per account: 20 messages per 30 s (100 with "moderator"), plus
    the configured ones, held with the destination's margins; a message
    counts from when it is written until Twitch confirms it, and is recorded
    at the confirmation. Texts over 500 characters are split or trimmed. A
    text starting with '/' or '.' gets a zero-width space in front, so a
    reply can never run a chat command.
*/
#include "sink/dest.h"
#include "sink/dest_feed.h"
#include "sink/dest_outbox.h"
#include "common/palloc.h"
#include "common/plog.h"
#include "net/pirc.h"

#include <czmq.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_URL     "ircs://irc.chat.twitch.tv:6697"
#define TWITCH_MAX      500
#define JOIN_WAIT_MS    10000       //  a JOIN without ROOMSTATE counts as done after this
#define ZERO_WIDTH      "\xE2\x80\x8B"

typedef enum { CH_JOINING = 1, CH_JOINED = 2, CH_REFUSED = 3 } s_channel_state_t;

typedef struct {
    s_channel_state_t state;
    int64_t since;
    char reason[200];           //  CH_REFUSED: Twitch's notice
} s_channel_t;

typedef struct {
    dest_item_t *item;
    char channel[128];
    uint64_t start, end;        //  the line's place in the connection's output stream
    int64_t sent_at;
} s_sent_t;

typedef struct {
    dest_t *dest;
    char *entity;               //  NULL for the default account
    char *nick;
    pirc_t *irc;
    dest_limit_t *limit;
    zhashx_t *channels;         //  channel -> s_channel_t, for this connection
    zlistx_t *awaiting;         //  s_sent_t, in send order
    char last_error[200];
    int64_t now;
} tw_account_t;

typedef struct {
    tw_account_t **accounts;    //  [0] is the default account (NULL if none)
    size_t account_count;
    dest_outbox_t *outbox;
} tw_dest_t;

//  --- outcomes --------------------------------------------------------------------------------

static void s_settle (tw_account_t *acc, s_sent_t *sent, int status, const char *why,
                      int64_t retry_after)
{
    tw_dest_t *t = acc->dest->state;
    dest_item_t *item = sent->item;
    zlistx_delete (acc->awaiting, zlistx_find (acc->awaiting, sent));
    dest_outbox_part_done (t->outbox, item, status, why, retry_after, acc->now);
}

static s_sent_t *s_first_for (tw_account_t *acc, const char *channel)
{
    for (s_sent_t *s = zlistx_first (acc->awaiting); s; s = zlistx_next (acc->awaiting))
        if (streq (s->channel, channel))
            return s;
    return NULL;
}

//  NOTICE msg-ids that mean "not now" rather than "never", and how long to
//  wait; 0 for the others (followers-only, banned, unique-chat: the same
//  message would be refused again).
static int64_t s_retry_ms (const char *msg_id)
{
    static const struct {
        const char *id;
        int64_t ms;
    } retry[] = {{"msg_ratelimit", 30000},
                 {"msg_slowmode", 5000},
                 {"msg_duplicate", 30000},
                 {"msg_timedout", 60000}};
    for (size_t i = 0; i < sizeof retry / sizeof retry[0]; i++)
        if (streq (msg_id, retry[i].id))
            return retry[i].ms;
    return 0;
}

static bool s_on_line (void *arg, const pirc_msg_t *m)
{
    tw_account_t *acc = arg;
    if (m->param_count < 1 || m->params[0][0] != '#')
        return true;
    const char *channel = m->params[0] + 1;
    s_channel_t *ch = zhashx_lookup (acc->channels, channel);
    if (streq (m->command, "ROOMSTATE")) {
        if (ch && ch->state == CH_JOINING)
            ch->state = CH_JOINED;
    }
    else if (streq (m->command, "USERSTATE")) {
        //  Sent on JOIN too (before ROOMSTATE); only a joined channel's confirms a message.
        s_sent_t *sent = ch && ch->state == CH_JOINED ? s_first_for (acc, channel) : NULL;
        if (sent)
            s_settle (acc, sent, DEST_OK, NULL, 0);
    }
    else if (streq (m->command, "NOTICE")) {
        char msg_id[64] = "";
        pirc_tag (m, "msg-id", msg_id, sizeof msg_id);
        const char *text = m->param_count > 1 ? m->params[m->param_count - 1] : "";
        char why[400];
        snprintf (why, sizeof why, "Twitch refused it in #%s: %s (%s)", channel, text, msg_id);
        s_sent_t *sent = ch && ch->state == CH_JOINED ? s_first_for (acc, channel) : NULL;
        if (ch && ch->state == CH_JOINING) {
            ch->state = CH_REFUSED;
            snprintf (ch->reason, sizeof ch->reason, "%s (%s)", text, msg_id);
            plog_warn ("destination %s: cannot join #%s as %s: %s", acc->dest->config->name,
                       channel, acc->nick, ch->reason);
        }
        else if (sent) {
            int64_t retry = s_retry_ms (msg_id);
            s_settle (acc, sent, retry ? DEST_RETRY : DEST_FAIL, why, retry);
        }
        else
            plog_info ("destination %s: notice in #%s: %s", acc->dest->config->name, channel, text);
    }
    return true;
}

static void s_on_state (void *arg, pirc_event_t event, const char *why)
{
    tw_account_t *acc = arg;
    if (event == PIRC_READY) {
        acc->last_error[0] = 0;
        return;
    }
    snprintf (acc->last_error, sizeof acc->last_error, "%s", why ? why : "connection lost");
    //  Whatever was written may be in the chat; whatever was not, was not.
    uint64_t written = pirc_written (acc->irc);
    s_sent_t *sent;
    while ((sent = zlistx_first (acc->awaiting))) {
        char reason[400];
        if (sent->start >= written) {
            snprintf (reason, sizeof reason,
                      "the connection to Twitch broke before it was sent: %s", acc->last_error);
            s_settle (acc, sent, DEST_RETRY, reason, 0);
        }
        else {
            snprintf (reason, sizeof reason,
                      "the connection to Twitch broke after it was sent, before Twitch confirmed "
                      "it: %s",
                      acc->last_error);
            s_settle (acc, sent, DEST_IN_DOUBT, reason, 0);
        }
    }
    zhashx_purge (acc->channels);  //  a new connection joins again
}

void dest_twitch_line (dest_t *self, const pirc_msg_t *msg, int64_t now)
{
    tw_dest_t *t = self->state;
    tw_account_t *acc = t->accounts[0];
    if (!acc && t->account_count > 1)
        acc = t->accounts[1];
    if (acc) {
        acc->now = now;
        s_on_line (acc, msg);
    }
}

//  --- posting ---------------------------------------------------------------------------------

static int s_send (dest_t *dest, dest_item_t *item, int64_t now, char *why, size_t whylen)
{
    tw_account_t *acc = item->account;
    acc->now = now;
    if (!pirc_ready (acc->irc)) {
        snprintf (why, whylen, "not connected to Twitch as %s%s%s", acc->nick,
                  acc->last_error[0] ? ": " : "", acc->last_error);
        return 1;
    }
    s_channel_t *ch = zhashx_lookup (acc->channels, item->chat);
    if (!ch) {
        char join[200];
        snprintf (join, sizeof join, "JOIN #%s", item->chat);
        pirc_send (acc->irc, join);
        ch = pcalloc (1, sizeof *ch);
        ch->state = CH_JOINING;
        ch->since = now;
        zhashx_insert (acc->channels, item->chat, ch);
    }
    if (ch->state == CH_JOINING && now - ch->since >= JOIN_WAIT_MS) {
        plog_warn ("destination %s: no ROOMSTATE %lld ms after joining #%s; posting anyway",
                   dest->config->name, (long long) (now - ch->since), item->chat);
        ch->state = CH_JOINED;
    }
    if (ch->state == CH_JOINING) {
        snprintf (why, whylen, "joining #%s", item->chat);
        return 1;
    }
    if (ch->state == CH_REFUSED) {
        snprintf (why, whylen, "cannot join #%s: %s", item->chat, ch->reason);
        return 2;
    }
    const char *part = item->parts[item->part_next];
    bool command = part[0] == '/' || part[0] == '.';
    char *line = pmalloc (strlen (part) + strlen (item->msg_ref) + strlen (item->chat) + 80);
    if (*item->msg_ref && !strpbrk (item->msg_ref, " ;\\\r\n"))
        sprintf (line, "@reply-parent-msg-id=%s PRIVMSG #%s :%s%s", item->msg_ref, item->chat,
                 command ? ZERO_WIDTH : "", part);
    else
        sprintf (line, "PRIVMSG #%s :%s%s", item->chat, command ? ZERO_WIDTH : "", part);
    s_sent_t *sent = pcalloc (1, sizeof *sent);
    sent->item = item;
    snprintf (sent->channel, sizeof sent->channel, "%s", item->chat);
    sent->sent_at = now;
    sent->end = pirc_send (acc->irc, line);
    //  The stream position where this line starts: everything queued before it.
    sent->start = sent->end - (strlen (line) + 2);
    free (line);
    zlistx_add_end (acc->awaiting, sent);
    return 0;
}

//  The channel a chat id names: without '#', in lower case.
static void s_channel (const char *chat_ref, char *channel, size_t len)
{
    snprintf (channel, len, "%s", chat_ref[0] == '#' ? chat_ref + 1 : chat_ref);
    for (char *c = channel; *c; c++)
        *c = (char) tolower ((unsigned char) *c);
}

static tw_account_t *s_account_for (tw_dest_t *t, const char *entity_id)
{
    for (size_t i = 1; i < t->account_count; i++)
        if (streq (t->accounts[i]->entity, entity_id))
            return t->accounts[i];
    return t->accounts[0];
}

static int s_post (dest_t *self, const dest_post_t *post, void *tag, int64_t now)
{
    tw_dest_t *t = self->state;
    tw_account_t *acc = s_account_for (t, post->entity_id);
    if (!acc) {
        char why[300];
        snprintf (why, sizeof why,
                  "no Twitch account posts for entity %s (no nick, not in accounts)",
                  post->entity_id);
        self->done (self->ctx, tag, DEST_FAIL, why, 0);
        return 0;
    }
    dest_vars_t vars = {post, post->text, NULL, ""};
    char *text = ptext_fill (self->config->text_template, dest_var, &vars);
    char channel[128];
    s_channel (post->chat_ref, channel, sizeof channel);
    dest_outbox_add (t->outbox, post, tag, text, channel, false, acc, acc->limit);
    free (text);
    dest_outbox_run (t->outbox, now);
    return 0;
}

//  --- the loop --------------------------------------------------------------------------------

static int s_pollitems (prt_io_t *io, zmq_pollitem_t *items, int max)
{
    tw_dest_t *t = dest_of (io)->state;
    int n = 0;
    for (size_t i = 0; i < t->account_count; i++)
        if (t->accounts[i])
            n += pirc_pollitems (t->accounts[i]->irc, items + n, max - n);
    return n;
}

static void s_process (prt_io_t *io, int64_t now, zmq_pollitem_t *items, int count)
{
    (void) items, (void) count;
    dest_t *self = dest_of (io);
    tw_dest_t *t = self->state;
    for (size_t i = 0; i < t->account_count; i++) {
        tw_account_t *acc = t->accounts[i];
        if (!acc)
            continue;
        acc->now = now;
        pirc_process (acc->irc, now);
        //  Unconfirmed for too long: Twitch may have it; do not send it again.
        s_sent_t *sent;
        while ((sent = zlistx_first (acc->awaiting))
               && now - sent->sent_at >= self->config->timeout_ms) {
            char why[200];
            snprintf (why, sizeof why, "Twitch did not confirm the message within %lld ms",
                      (long long) self->config->timeout_ms);
            s_settle (acc, sent, DEST_IN_DOUBT, why, 0);
        }
    }
    dest_outbox_run (t->outbox, now);
    for (size_t i = 0; i < t->account_count; i++)
        if (t->accounts[i])
            pirc_process (t->accounts[i]->irc, now);   //  write what was just queued
}

static int64_t s_wakeup (prt_io_t *io, int64_t now)
{
    dest_t *self = dest_of (io);
    tw_dest_t *t = self->state;
    int64_t wake = dest_outbox_wakeup (t->outbox, now);
    for (size_t i = 0; i < t->account_count; i++) {
        tw_account_t *acc = t->accounts[i];
        if (!acc)
            continue;
        int64_t w = pirc_wakeup (acc->irc, now);
        s_sent_t *sent = zlistx_first (acc->awaiting);
        if (sent && sent->sent_at + self->config->timeout_ms < w)
            w = sent->sent_at + self->config->timeout_ms;
        if (w < wake)
            wake = w;
    }
    //  A channel being joined is checked again when its wait is over.
    if (wake > now + JOIN_WAIT_MS && dest_outbox_size (t->outbox))
        wake = now + JOIN_WAIT_MS;
    return wake;
}

static int s_was_posted (dest_t *self, const char *msg_key, const char *entity_id)
{
    (void) self, (void) msg_key, (void) entity_id;
    return -1;  //  chat history cannot be asked over IRC
}

static void s_restore (dest_t *self, const char *entity_id, const char *chat_ref, int64_t at)
{
    tw_account_t *acc = s_account_for (self->state, entity_id);
    if (!acc)
        return;
    char channel[128];
    s_channel (chat_ref, channel, sizeof channel);
    dest_limit_record (acc->limit, channel, false, at);
}

//  --- life ------------------------------------------------------------------------------------

static void s_free (void **item)
{
    free (*item);
    *item = NULL;
}

static void s_account_free (tw_account_t *acc)
{
    if (!acc)
        return;
    pirc_destroy (&acc->irc);
    dest_limit_destroy (&acc->limit);
    zhashx_destroy (&acc->channels);
    zlistx_destroy (&acc->awaiting);
    free (acc->entity);
    free (acc->nick);
    free (acc);
}

static void s_destroy (dest_t *self)
{
    tw_dest_t *t = self->state;
    dest_outbox_destroy (&t->outbox);
    for (size_t i = 0; i < t->account_count; i++)
        s_account_free (t->accounts[i]);
    free (t->accounts);
    free (t);
}

static tw_account_t *s_account_new (dest_t *self, const char *entity, const char *nick,
                                    const char *token)
{
    tw_account_t *acc = pcalloc (1, sizeof *acc);
    acc->dest = self;
    acc->entity = pstrdup (entity);
    acc->nick = pstrdup (nick);
    char name[300];
    snprintf (name, sizeof name, "destination %s (%s)", self->config->name, nick);
    pirc_config_t irc = {name,     *self->config->url ? self->config->url : DEFAULT_URL,
                         nick,     token,
                         10000,    s_on_line,
                         s_on_state, acc};
    acc->irc = pirc_new (&irc);
    if (!acc->irc) {
        free (acc->entity);
        free (acc->nick);
        free (acc);
        return NULL;
    }
    dest_rule_t rules[DEST_MAX_RULES];
    acc->limit = dest_limit_new (rules, dest_limit_held_rules (self->config, rules, DEST_MAX_RULES));
    acc->channels = zhashx_new ();
    zhashx_set_destructor (acc->channels, s_free);
    acc->awaiting = zlistx_new ();
    zlistx_set_destructor (acc->awaiting, s_free);
    return acc;
}

int dest_twitch_init (dest_t *self)
{
    const pcfg_destination_t *c = self->config;
    if (!*c->nick && c->accounts.count == 0) {
        plog_error ("destination %s: twitch needs \"nick\" and \"tokenEnv\" (the default account) "
                    "or \"accounts\"",
                    c->name);
        return -1;
    }
    tw_dest_t *t = pcalloc (1, sizeof *t);
    self->state = t;
    t->accounts = pcalloc (c->accounts.count + 1, sizeof (tw_account_t *));
    t->account_count = 1;
    t->outbox = dest_outbox_new (self, s_send, PTEXT_CODEPOINTS, TWITCH_MAX);
    int rc = 0;
    if (*c->nick) {
        const char *token =
            dest_token (self, c->token_env, "the OAuth token of the default account");
        if (!token || !(t->accounts[0] = s_account_new (self, NULL, c->nick, token)))
            rc = -1;
    }
    const pcfg_account_t *accounts = c->accounts.items;
    for (size_t i = 0; i < c->accounts.count && rc == 0; i++) {
        char what[300];
        snprintf (what, sizeof what, "the OAuth token of %s", accounts[i].entity);
        if (!*accounts[i].nick) {
            plog_error ("destination %s: accounts[%zu] (%s) needs \"nick\", its Twitch login",
                        c->name, i, accounts[i].entity);
            rc = -1;
            break;
        }
        const char *token = dest_token (self, accounts[i].token_env, what);
        tw_account_t *acc =
            token ? s_account_new (self, accounts[i].entity, accounts[i].nick, token) : NULL;
        if (!acc)
            rc = -1;
        else
            t->accounts[t->account_count++] = acc;
    }
    self->post = s_post;
    self->io.pollitems = s_pollitems;
    self->io.process = s_process;
    self->io.wakeup = s_wakeup;
    self->was_posted = s_was_posted;
    self->restore = s_restore;
    self->destroy = s_destroy;
    if (rc)
        s_destroy (self);
    return rc;
}
