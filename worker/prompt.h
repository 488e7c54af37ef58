/*  prompt - what the LLM is asked: the persona, the chat, the message.

    The messages of a chat completion:

        system: the entity's systemPrompt (or, when empty, "You are NAME,
                taking part in a group chat. Reply briefly.")
        user:   Recent messages in the chat (oldest first):
                alice: first earlier message
                bob: second earlier message

                Reply to this message from alice:
                the message being answered

    The chat is one user turn, not one turn per line: every server's chat
    template accepts it (some refuse two user turns in a row), and it keeps
    who said what. Only the last messagesToRead earlier lines are given; an
    entity with messagesToRead 0 sees only the message it answers.
*/
#ifndef PROMPT_H_INCLUDED
#define PROMPT_H_INCLUDED

#include <jansson.h>

#include "common/pconfig.h"
#include "proto/proto.h"

//  The messages array for `entity` answering `message`. Caller owns the result.
json_t *prompt_messages (const pcfg_entity_t *entity, const proto_message_t *message);

#endif
