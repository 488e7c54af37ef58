/*  select - who answers a chat message.

    For each entity, in this order:
    - never its own message; another bot's message only with answerBots
      (so two bots never talk in a loop);
    - not in a chat outside its allowChats or inside its denyChats;
    - a mention ("@name" or "@alias", any case, not inside a word: neither
      "ana@name.com" nor "@namesake"), a name the platform marked as
      mentioned (chat_msg_t.mentions), or a reply to its message selects it
      at its mention priority;
    - otherwise it answers with its responseChance, at its default
      priority. The draw is a pure function of (seed, message key, entity),
      so a message read twice (after a restart) gets the same answer.

    Priorities: the entity's own (entities[].mentionPriority /
    defaultPriority) when set (>= 0), else the source's (poller.sources[]),
    else queueSettings'. Priority 99 (SELECT_SKIP) means "do not answer":
    such a pick makes no job and is counted as skipped.

    Cost per message does not grow with the number of entities: one hash
    of every entity's lower-cased name, id and aliases finds who a mention,
    a platform-marked name, a reply or an author is, from one scan of the
    text for '@'; and only the entities with responseChance > 0 are visited
    for the draw.
*/
#ifndef SELECT_H_INCLUDED
#define SELECT_H_INCLUDED

#include "common/pconfig.h"
#include "poller/source.h"

#define SELECT_SKIP 99      //  the priority that means "do not answer"

typedef struct {
    int entity;         //  index in config entities
    int priority;
    bool mention;
} selection_t;

typedef struct select_s select_t;

//  Builds the index of `config`'s entities; `config` must outlive it.
select_t *select_new (const pcfg_t *config);
void select_destroy (select_t **self_p);

//  Fills `out` (room for every entity) with the entities that answer `msg`,
//  in configuration order, and returns how many. `source` (may be NULL)
//  gives the source's priorities; `chat_key` is "source/chat" (allow and
//  deny lists hold those). `*skipped` (may be NULL) gets how many picks
//  were dropped because their priority is SELECT_SKIP.
int select_run (select_t *self, const pcfg_source_t *source, const char *chat_key,
                const chat_msg_t *msg, const char *msg_key, uint64_t seed, selection_t *out,
                int *skipped);

//  The index of the entity called `who` (id, name or alias, any case; the
//  last such entity if several are), or -1.
int select_who (select_t *self, const char *who);

//  The same rules, for one message, without a prepared index (it is built
//  and dropped on each call: for tests and one-off uses). `source` is the
//  source's name; its priorities come from config's poller.sources.
int select_entities (const pcfg_t *config, const char *source, const chat_msg_t *msg,
                     const char *msg_key, uint64_t seed, selection_t *out);

//  The index of the entity that wrote `msg` (by id, name or alias), or -1.
int select_author_entity (const pcfg_t *config, const chat_msg_t *msg);

//  The uniform draw in [0, 1) for (seed, key, entity).
double select_draw (uint64_t seed, const char *msg_key, const char *entity);

//  True if `text` mentions `name` as "@name".
bool select_mentions (const char *text, const char *name);

#endif
