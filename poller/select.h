/*  select - who answers a chat message.

    For each entity, in this order:
    - never its own message; another bot's message only with answerBots
      (so two bots never talk in a loop);
    - not in a chat outside its allowChats or inside its denyChats;
    - a mention ("@name" or "@alias", any case, not inside a word: neither
      "ana@name.com" nor "@namesake"), a name the platform marked as
      mentioned (chat_msg_t.mentions), or a reply to its message selects it
      at mentionPriority;
    - otherwise it answers with its responseChance, at defaultPriority. The
      draw is a pure function of (seed, message key, entity), so a message
      read twice (after a restart) gets the same answer.
*/
#ifndef SELECT_H_INCLUDED
#define SELECT_H_INCLUDED

#include "common/pconfig.h"
#include "poller/source.h"

typedef struct {
    int entity;         //  index in config entities
    int priority;
    bool mention;
} selection_t;

//  Fills `out` (room for every entity) and returns how many were selected.
int select_entities (const pcfg_t *config, const char *source, const chat_msg_t *msg,
                     const char *msg_key, uint64_t seed, selection_t *out);

//  The index of the entity that wrote `msg` (by id, name or alias), or -1.
int select_author_entity (const pcfg_t *config, const chat_msg_t *msg);

//  The uniform draw in [0, 1) for (seed, key, entity).
double select_draw (uint64_t seed, const char *msg_key, const char *entity);

//  True if `text` mentions `name` as "@name".
bool select_mentions (const char *text, const char *name);

#endif
