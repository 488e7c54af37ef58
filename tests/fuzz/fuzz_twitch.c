/*  fuzz_twitch - Twitch chat lines: the IRC parser and what reads its lines.

    The input is what a Twitch (or any IRC) server sends: lines ending in
    LF (CR LF). Each line gets the checks net/pirc applies before parsing
    (length, UTF-8), then pirc_parse and pirc_tag; the parsed line goes to
    the Twitch source (PRIVMSG becomes a chat message, NOTICE is logged)
    and to the Twitch destination (ROOMSTATE, USERSTATE and NOTICE settle
    posts and joins), as their connections hand it over. Every message
    the source emits is checked (fuzz_chat.h). Seeds: tests/fuzz/twitch/.

    Without a connection the destination has no post awaiting an answer,
    so its lines reach the lookup of the channel, not the settling.
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/plog.h"
#include "net/pirc.h"
#include "net/ptext.h"
#include "poller/source_feed.h"
#include "sink/dest_feed.h"
#include "fuzz_chat.h"

#define MAX_LINES 64

static pcfg_t *s_config;

static bool s_emit (void *ctx, source_t *source, const chat_msg_t *msg)
{
    int *count = ctx;
    fuzz_check_chat_msg (source->config->name, msg);
    return ++*count % 7 != 3;
}

static void s_done (void *ctx, void *tag, int status, const char *reason, int64_t retry_after_ms)
{
    (void) ctx, (void) tag, (void) status, (void) reason, (void) retry_after_ms;
}

//  The tags every reader asks for, into buffers of several sizes.
static void s_tags (const pirc_msg_t *msg)
{
    static const char *keys[] = {"id", "display-name", "user-id", "tmi-sent-ts",
                                 "reply-parent-user-login", "msg-id", "badges", ""};
    char out[64];
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        for (size_t len = 1; len <= sizeof out; len *= 4) {
            const char *v = pirc_tag (msg, keys[i], out, len);
            FUZZ_REQUIRE (!v || strlen (v) < len, "pirc_tag overflowed its buffer");
        }
}

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int LLVMFuzzerInitialize (int *argc, char ***argv)
{
    (void) argc, (void) argv;
    plog_init ("fuzz", PLOG_TRACE);
    fuzz_scrubbed = false;     //  IRC lines are checked, not scrubbed
    setenv ("PARLEY_FUZZ_TWITCH_TOKEN", "oauth:fuzz", 1);
    char err[512];
    s_config = pcfg_load_string (
        "{\"poller\": {\"sources\": [{\"name\": \"twitch\", \"type\": \"twitch\","
        " \"url\": \"irc://127.0.0.1:9\", \"nick\": \"parleybot\","
        " \"tokenEnv\": \"PARLEY_FUZZ_TWITCH_TOKEN\", \"channels\": [\"mychannel\"],"
        " \"botAuthors\": [\"nightbot\"]}]},"
        " \"sink\": {\"destinations\": [{\"name\": \"twitch\", \"type\": \"twitch\","
        " \"url\": \"irc://127.0.0.1:9\", \"nick\": \"parleybot\","
        " \"tokenEnv\": \"PARLEY_FUZZ_TWITCH_TOKEN\"}]}}",
        "fuzz", true, err, sizeof err);
    if (!s_config)
        abort ();
    return 0;
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    source_t *source = source_new (s_config->sources.items, s_config, 1);
    dest_events_t events = {s_done, NULL, NULL, NULL};
    dest_t *dest = dest_new (s_config->destinations.items, s_config, &events);
    if (!source || !dest)
        abort ();
    int count = 0, lines = 0;
    const char *p = (const char *) data, *end = p + size;
    while (p < end && lines++ < MAX_LINES) {
        const char *nl = memchr (p, '\n', (size_t) (end - p));
        size_t n = nl ? (size_t) (nl - p) : (size_t) (end - p);
        const char *next = nl ? nl + 1 : end;
        if (n && p[n - 1] == '\r')
            n--;
        //  What pirc checks before it parses a line (and its copy ends at a NUL).
        if (n == 0 || n > PIRC_MAX_LINE || !ptext_utf8_valid (p, n)) {
            p = next;
            continue;
        }
        char *line = strndup (p, n);
        pirc_msg_t msg;
        if (pirc_parse (line, &msg) == 0) {
            FUZZ_REQUIRE (msg.command && *msg.command && msg.tags && msg.nick, "pirc_parse result");
            FUZZ_REQUIRE (msg.param_count >= 0 && msg.param_count <= PIRC_MAX_PARAMS,
                          "param_count");
            for (int i = 0; i < msg.param_count; i++)
                FUZZ_REQUIRE (msg.params[i], "params[]");
            s_tags (&msg);
            //  A source that cannot take the line now gets it again, as pirc does.
            if (!source_twitch_line (source, &msg, 1763900000000, 3, s_emit, &count))
                source_twitch_line (source, &msg, 1763900000000, 3, s_emit, &count);
            dest_twitch_line (dest, &msg, 1763900000000);
        }
        free (line);
        p = next;
    }
    source_destroy (&source);
    dest_destroy (&dest);
    return 0;
}
