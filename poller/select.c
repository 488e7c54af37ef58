/*  select - who answers a chat message. See select.h. */
#include "poller/select.h"

#include <czmq.h>
#include <ctype.h>
#include <string.h>

double select_draw (uint64_t seed, const char *msg_key, const char *entity)
{
    //  SHA-1 of "seed/key/entity": stable across runs, machines and restarts.
    char head[32];
    snprintf (head, sizeof head, "%llu/", (unsigned long long) seed);
    zdigest_t *digest = zdigest_new ();
    zdigest_update (digest, (const byte *) head, strlen (head));
    zdigest_update (digest, (const byte *) msg_key, strlen (msg_key));
    zdigest_update (digest, (const byte *) "/", 1);
    zdigest_update (digest, (const byte *) entity, strlen (entity));
    const byte *d = zdigest_data (digest);
    uint64_t x = 0;
    for (int i = 0; i < 7; i++)
        x = (x << 8) | d[i];
    zdigest_destroy (&digest);
    return (double) x / 72057594037927936.0;    //  2^56
}

//  Platform user names are ASCII letters, digits and '_'; anything else
//  (space, punctuation, an emoji, "’s") ends a name.
static bool s_name_char (unsigned char c)
{
    return (c < 0x80 && isalnum (c)) || c == '_';
}

bool select_mentions (const char *text, const char *name)
{
    size_t n = strlen (name);
    if (n == 0)
        return false;
    for (const char *at = strchr (text, '@'); at; at = strchr (at + 1, '@')) {
        //  "ana@joker.com" is an address, not a mention.
        if (at > text && s_name_char ((unsigned char) at[-1]))
            continue;
        if (strncasecmp (at + 1, name, n) != 0)
            continue;
        if (!s_name_char ((unsigned char) at[1 + n]))
            return true;
    }
    return false;
}

static bool s_in_list (const pcfg_strs_t *list, const char *chat_key)
{
    for (size_t i = 0; i < list->count; i++)
        if (strcmp (list->items[i], chat_key) == 0)
            return true;
    return false;
}

static bool s_is (const pcfg_entity_t *e, const char *who)
{
    if (!who)
        return false;
    if (strcasecmp (who, e->name) == 0 || strcasecmp (who, e->id) == 0)
        return true;
    for (size_t i = 0; i < e->aliases.count; i++)
        if (strcasecmp (who, e->aliases.items[i]) == 0)
            return true;
    return false;
}

int select_author_entity (const pcfg_t *config, const chat_msg_t *msg)
{
    int author_entity = -1;
    for (size_t i = 0; i < config->entities.count; i++)
        if (s_is (pcfg_entity (config, i), msg->author))
            author_entity = (int) i;
    return author_entity;
}

int select_entities (const pcfg_t *config, const char *source, const chat_msg_t *msg,
                     const char *msg_key, uint64_t seed, selection_t *out)
{
    char chat_key[600];
    snprintf (chat_key, sizeof chat_key, "%s/%s", source, msg->chat_ref);
    int author_entity = select_author_entity (config, msg);
    bool from_bot = msg->from_bot || author_entity >= 0;
    int n = 0;
    for (size_t i = 0; i < config->entities.count; i++) {
        const pcfg_entity_t *e = pcfg_entity (config, i);
        if (!e->enabled || (int) i == author_entity)
            continue;
        if (from_bot && !e->answer_bots)
            continue;
        if ((e->allow_chats.count && !s_in_list (&e->allow_chats, chat_key))
            || s_in_list (&e->deny_chats, chat_key))
            continue;
        bool mention = select_mentions (msg->text, e->name) || select_mentions (msg->text, e->id)
                       || s_is (e, msg->reply_to_author);
        for (size_t a = 0; !mention && a < e->aliases.count; a++)
            mention = select_mentions (msg->text, e->aliases.items[a]);
        for (size_t m = 0; !mention && msg->mentions && m < msg->mention_count; m++)
            mention = s_is (e, msg->mentions[m]);
        if (mention)
            out[n++] = (selection_t) {(int) i, (int) config->mention_priority, true};
        else if (e->response_chance >= 1.0
                 || (e->response_chance > 0 && select_draw (seed, msg_key, e->id) < e->response_chance))
            out[n++] = (selection_t) {(int) i, (int) config->default_priority, false};
    }
    return n;
}
