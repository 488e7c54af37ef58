/*  pirc - one IRC connection, as Twitch chat speaks it.

    Connects through libcurl (phttp_connect: TLS for ircs://, plain TCP for
    irc://, which the tests use), logs in with CAP REQ for tags and
    commands, PASS oauth:<token> and NICK, answers PING, follows RECONNECT,
    pings a silent server and reconnects with backoff when the connection
    breaks. Lines come to the owner parsed (IRCv3 tags, prefix, command,
    parameters); lines the owner sends are queued and written as the socket
    allows. Used by the Twitch source (reading) and destination (posting).

    Delivery accounting for the destination: pirc_send returns the position
    in the output stream just past the line, and pirc_written says how much
    of the stream the kernel took. When the connection breaks, the owner's
    state callback runs before anything is reset, so it can tell lines that
    never left (safe to send again) from lines that did (fate unknown).
*/
#ifndef PIRC_H_INCLUDED
#define PIRC_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>
#include <zmq.h>

#define PIRC_MAX_PARAMS 15
#define PIRC_MAX_LINE   (64 * 1024)     //  longer input lines are refused

typedef struct pirc_s pirc_t;

typedef struct {
    const char *tags;           //  raw IRCv3 tags without '@', "" if none
    const char *nick;           //  the prefix up to '!': a nick or a server name; "" if none
    const char *command;        //  "PRIVMSG", "001", ...
    const char *params[PIRC_MAX_PARAMS];  //  the trailing parameter is the last
    int param_count;
} pirc_msg_t;

typedef enum {
    PIRC_READY = 1,             //  logged in (001 received): JOIN, send
    PIRC_CLOSED = 2             //  connection lost; it reconnects by itself
} pirc_event_t;

//  A line arrived. Return false to leave it (and those after it) for later,
//  e.g. when the poller cannot take more messages now.
typedef bool (pirc_line_fn) (void *arg, const pirc_msg_t *msg);
//  The connection became ready, or broke (`why` says how).
typedef void (pirc_state_fn) (void *arg, pirc_event_t event, const char *why);

typedef struct {
    const char *name;           //  for logs: "source twitch", "destination tw (bob)"
    const char *url;            //  ircs://host:port or irc://host:port
    const char *nick;           //  login; NULL or "" = anonymous read-only (justinfan)
    const char *token;          //  OAuth token, with or without "oauth:"; may be NULL
    int64_t connect_timeout_ms;
    pirc_line_fn *on_line;
    pirc_state_fn *on_state;
    void *arg;
} pirc_config_t;

//  Returns NULL (logged) if the URL is not irc:// or ircs://.
pirc_t *pirc_new (const pirc_config_t *config);
void pirc_destroy (pirc_t **self_p);

//  Connect, read, dispatch lines, write, keep alive: whatever is due now.
void pirc_process (pirc_t *self, int64_t now);
int pirc_pollitems (pirc_t *self, zmq_pollitem_t *items, int max);
//  When pirc_process has work (Unix ms), INT64_MAX = only on socket activity.
int64_t pirc_wakeup (pirc_t *self, int64_t now);

bool pirc_ready (pirc_t *self);
//  Queues one line ("\r\n" is added; CR and LF inside are replaced by
//  spaces). Returns the stream position just past it, or 0 if the
//  connection is not ready.
uint64_t pirc_send (pirc_t *self, const char *line);
//  Bytes of this connection's output stream written so far.
uint64_t pirc_written (pirc_t *self);
//  Input lines refused (too long, invalid UTF-8, unparsable), logged.
uint64_t pirc_errors (pirc_t *self);

//  Parses one line (without CR LF, modified in place). Returns -1 if it
//  has no command.
int pirc_parse (char *line, pirc_msg_t *msg);
//  The value of tag `key`, unescaped into `out` (\s \: \\ \r \n); a value
//  too long for `out` is cut at a character boundary. Returns NULL if the
//  tag is absent.
const char *pirc_tag (const pirc_msg_t *msg, const char *key, char *out, size_t outlen);

#endif
