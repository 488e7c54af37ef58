/*  fuzz_chat - what every chat message a source emits must satisfy, checked
    by the source fuzz targets in their emit callback.

    The poller turns each message into a job: the key "source/chat/message"
    travels as a JOB_SPEC string and the message as a MESSAGE record. A
    message that breaks the protocol's bounds, or carries invalid UTF-8,
    would be refused by the broker or the worker (and, in a SUBMIT, take
    the other jobs of its frame with it). So a source must never emit one:
    the fuzzer aborts when it does.
*/
#ifndef FUZZ_CHAT_H_INCLUDED
#define FUZZ_CHAT_H_INCLUDED

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/ptext.h"
#include "poller/source.h"
#include "proto/proto.h"

#include "fuzz_require.h"

//  Sources that scrub their input (ptext_scrub) must also refuse what holds
//  the sentinel; for the others U+FFFF is just a character.
static bool fuzz_scrubbed = true;

static inline void fuzz_check_str (const char *s, size_t max, const char *what)
{
    FUZZ_REQUIRE (s, what);
    FUZZ_REQUIRE (strlen (s) <= max, what);
    FUZZ_REQUIRE (ptext_utf8_valid (s, strlen (s)), what);
    FUZZ_REQUIRE (!fuzz_scrubbed || !ptext_has_sentinel (s), what);
}

//  Checks `msg` from the source named `source` as the poller would use it.
static inline void fuzz_check_chat_msg (const char *source, const chat_msg_t *msg)
{
    fuzz_check_str (msg->msg_ref, PROTO_MAX_KEY, "msg_ref");
    fuzz_check_str (msg->chat_ref, PROTO_MAX_KEY, "chat_ref");
    fuzz_check_str (msg->author, PROTO_MAX_KEY, "author");
    fuzz_check_str (msg->text, PROTO_MAX_STR, "text");
    if (msg->author_id)
        fuzz_check_str (msg->author_id, PROTO_MAX_KEY, "author_id");
    if (msg->reply_to_author)
        fuzz_check_str (msg->reply_to_author, PROTO_MAX_KEY, "reply_to_author");
    FUZZ_REQUIRE (msg->chat_kind && (!strcmp (msg->chat_kind, "group")
                                     || !strcmp (msg->chat_kind, "private")
                                     || !*msg->chat_kind),
                  "chat_kind");
    for (size_t i = 0; i < msg->mention_count; i++)
        fuzz_check_str (msg->mentions[i], PROTO_MAX_KEY, "mentions[]");
    //  The job's keys, as the poller builds them, fit a JOB_SPEC.
    size_t key = strlen (source) + 1 + strlen (msg->chat_ref) + 1 + strlen (msg->msg_ref);
    FUZZ_REQUIRE (key <= PROTO_MAX_KEY, "source/chat/message key too long");
    //  The MESSAGE record goes through the codec.
    proto_message_t m = {source,      msg->chat_ref, msg->msg_ref,         msg->author,
                         msg->author_id ? msg->author_id : "", msg->text, (uint64_t) msg->ts_ms,
                         msg->from_bot ? PROTO_MSG_FROM_BOT : 0, NULL, 0};
    uint8_t *data;
    size_t size;
    FUZZ_REQUIRE (proto_message_encode (&m, &data, &size) == 0, "MESSAGE does not encode");
    proto_message_t back;
    void *zone = NULL;
    char why[256];
    FUZZ_REQUIRE (proto_message_decode (data, size, &back, &zone, why, sizeof why) == PROTO_OK,
                  "MESSAGE does not decode");
    proto_zone_free (&zone);
    free (data);
}

#endif
