/*  fuzz_dest - how the sink reads the platforms' answers to its posts.

    Input: byte 0 is flags (1 the exchange failed, 2 the body was cut at
    the size cap, 4 the request may have been sent, 8 it timed out);
    bytes 1-2 the HTTP status (big-endian, mod 1000); bytes 3-10 the
    Retry-After header as curl reads it (seconds, big-endian, signed); the
    rest is the body. The response goes to dest_http_outcome (the HTTP
    destination's verdict) and dest_telegram_outcome (sendMessage: ok or
    error, description, parameters.retry_after, migrate_to_chat_id);
    the Retry-After to phttp_retry_after_ms. Verdicts must be one of the
    four, reasons terminated and valid UTF-8, waits bounded. Seeds: tests/fuzz/dest/.
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/plog.h"
#include "net/ptext.h"
#include "sink/dest.h"

#define HEADER 11

//  `token`: the secret that must not appear in the reason, or NULL.
static void s_check (int status, const char *why, size_t whylen, const char *token)
{
    if (status < DEST_OK || status > DEST_IN_DOUBT || strnlen (why, whylen) == whylen)
        abort ();
    //  The reason travels in an OUTCOME frame, whose decoder refuses what is not UTF-8.
    if (!ptext_utf8_valid (why, strlen (why)))
        abort ();
    //  A refused post has a reason.
    if (status != DEST_OK && !*why)
        abort ();
    if (token && strstr (why, token))
        abort ();
}

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int LLVMFuzzerInitialize (int *argc, char ***argv)
{
    (void) argc, (void) argv;
    plog_init ("fuzz", PLOG_TRACE);
    return 0;
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    if (size < HEADER)
        return 0;
    uint8_t flags = data[0];
    long status = (long) (((unsigned) data[1] << 8 | data[2]) % 1000);
    uint64_t raw = 0;
    for (int i = 3; i < HEADER; i++)
        raw = raw << 8 | data[i];
    int64_t retry_after_s = (int64_t) raw;
    int64_t retry_after_ms = phttp_retry_after_ms (retry_after_s);
    if (retry_after_ms != -1
        && (retry_after_ms < 1000 || retry_after_ms > PHTTP_RETRY_AFTER_MAX * 1000))
        abort ();
    //  The body as phttp keeps it: its bytes and a NUL.
    size_t len = size - HEADER;
    char *body = malloc (len + 1);
    memcpy (body, data + HEADER, len);
    body[len] = 0;
    phttp_response_t r = {.status = status,
                          .body = body,
                          .size = len,
                          .retry_after_ms = retry_after_ms,
                          .error = flags & 1 ? "Connection reset by peer" : NULL,
                          .too_large = flags & 2,
                          .maybe_sent = flags & 4,
                          .timed_out = flags & 8,
                          .first_byte_ms = -1};
    char why[500];
    why[0] = 0;
    //  (the HTTP destination redacts its reasons itself)
    s_check (dest_http_outcome (&r, "api", why, sizeof why), why, sizeof why, NULL);
    why[0] = 0;
    int64_t wait = 0;
    int outcome = dest_telegram_outcome (&r, "123456:SECRET", why, sizeof why, &wait);
    s_check (outcome, why, sizeof why, "123456:SECRET");
    if (status == 429 ? wait < 0 || wait > PHTTP_RETRY_AFTER_MAX * 1000 : wait != -1)
        abort ();
    free (body);
    return 0;
}
