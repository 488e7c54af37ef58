/*  source_feed - the platform sources' parsers without the network.

    Each function hands one answer from the platform to a source made by
    source_new (of that type), exactly as its request or connection would,
    then lets the source emit what it produced (at most `budget` messages).
    Nothing is sent. Used by the unit tests and the fuzz targets
    (tests/fuzz/), so the code that reads untrusted answers is the code
    that runs in the daemon.
*/
#ifndef SOURCE_FEED_H_INCLUDED
#define SOURCE_FEED_H_INCLUDED

#include "poller/source.h"
#include "net/pirc.h"

//  http: one answer to the page request (`body` NUL-terminated at `size`).
void source_http_feed (source_t *self, long status, const char *body, size_t size, int budget,
                       source_emit_fn *emit, void *ctx);

//  telegram: one answer to getUpdates (`body` NUL-terminated at `size`).
//  The updates of the previous answer are emitted first; while some are
//  left (emit refused one, or the budget ran out) the source would not
//  have asked again, so the answer is not taken and it returns false.
bool source_telegram_feed (source_t *self, long status, const char *body, size_t size,
                           int budget, source_emit_fn *emit, void *ctx);

//  twitch: one line the IRC connection parsed. Returns false when the
//  source left it for later (its budget was spent), as it tells pirc.
bool source_twitch_line (source_t *self, const pirc_msg_t *msg, int64_t now, int budget,
                         source_emit_fn *emit, void *ctx);

#endif
