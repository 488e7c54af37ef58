/*  context - the recent lines of each chat, attached to its jobs.

    A worker writes a better reply when it sees what was said before: each
    job carries the chat's last lines (as many as the entity that reads the
    most wants, at most CONTEXT_MAX), oldest first. Lines live in memory
    only; after a restart a chat's context starts empty.
*/
#ifndef CONTEXT_H_INCLUDED
#define CONTEXT_H_INCLUDED

#include <stddef.h>

#include "proto/proto.h"

#define CONTEXT_MAX 50      //  lines kept per chat

typedef struct context_s context_t;

//  Keeps up to `lines` (at most CONTEXT_MAX) lines of each chat.
context_t *context_new (size_t lines);
void context_destroy (context_t **self_p);

//  Writes the last lines of `chat_key`, oldest first, into `out` (room for
//  CONTEXT_MAX); returns how many. They stay valid until the chat's next
//  context_add.
size_t context_get (context_t *self, const char *chat_key, proto_line_t *out);

//  Adds a line to `chat_key` (copied), dropping its oldest beyond the bound.
void context_add (context_t *self, const char *chat_key, const char *author, const char *text);

//  Chats with context kept.
size_t context_chats (context_t *self);

#endif
