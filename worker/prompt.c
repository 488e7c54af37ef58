/*  prompt - what the LLM is asked. See prompt.h. */
#include "worker/prompt.h"
#include "common/palloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *data;
    size_t len, cap;
} s_text_t;

static void s_add (s_text_t *t, const char *s)
{
    size_t n = strlen (s);
    if (t->len + n + 1 > t->cap) {
        t->cap = (t->len + n + 1) * 2;
        t->data = prealloc (t->data, t->cap);
    }
    memcpy (t->data + t->len, s, n + 1);
    t->len += n;
}

static const char *s_or (const char *s, const char *fallback)
{
    return s && *s ? s : fallback;
}

json_t *prompt_messages (const pcfg_entity_t *entity, const proto_message_t *message)
{
    json_t *messages = json_array ();
    if (*entity->system_prompt)
        json_array_append_new (messages, json_pack ("{s:s, s:s}", "role", "system", "content",
                                                    entity->system_prompt));
    else {
        char persona[600];
        snprintf (persona, sizeof persona,
                  "You are %s, taking part in a group chat. Reply briefly.", entity->name);
        json_array_append_new (messages,
                               json_pack ("{s:s, s:s}", "role", "system", "content", persona));
    }
    s_text_t user = {0};
    s_add (&user, "");
    size_t keep = (size_t) entity->messages_to_read;
    size_t n = message->context_count < keep ? message->context_count : keep;
    if (n) {
        s_add (&user, "Recent messages in the chat (oldest first):\n");
        for (size_t i = message->context_count - n; i < message->context_count; i++) {
            s_add (&user, s_or (message->context[i].author, "someone"));
            s_add (&user, ": ");
            s_add (&user, s_or (message->context[i].text, ""));
            s_add (&user, "\n");
        }
        s_add (&user, "\n");
    }
    s_add (&user, "Reply to this message from ");
    s_add (&user, s_or (message->author, "someone"));
    s_add (&user, ":\n");
    s_add (&user, s_or (message->text, ""));
    json_array_append_new (messages,
                           json_pack ("{s:s, s:s}", "role", "user", "content", user.data));
    free (user.data);
    return messages;
}
