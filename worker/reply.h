/*  reply - makes what an LLM wrote fit to post.

    In order: drops reasoning blocks (<think>...</think>, which reasoning
    models put before the answer; an unclosed one drops everything after
    it), trims white space, drops a leading "Name:" when the model wrote the
    entity's own name first (it imitates the chat lines of the prompt), and
    cuts a reply longer than `limit` at a word boundary, ending it with "…".
    What is left may be empty: the worker then skips the job with the reason
    "empty reply". Platform length limits are not applied here: each
    destination splits or trims to its own (sink.destinations[].maxLength).
*/
#ifndef REPLY_H_INCLUDED
#define REPLY_H_INCLUDED

#include <stddef.h>

#include "common/pconfig.h"

//  Cleans `text` (a heap string it takes) and returns the result, which the
//  caller owns (it may have moved). `limit` is in characters (0 = none),
//  `max_bytes` a hard cap in bytes that is never exceeded.
char *reply_clean (char *text, const pcfg_entity_t *entity, size_t limit, size_t max_bytes);

#endif
