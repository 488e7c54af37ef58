/*  select - who answers a chat message. See select.h. */
#include "poller/select.h"
#include "common/palloc.h"

#include <czmq.h>
#include <ctype.h>
#include <string.h>

//  The entities one lower-cased name stands for, in configuration order.
typedef struct {
    int *items;
    size_t count;
    size_t capacity;
} s_names_t;

struct select_s {
    const pcfg_t *config;
    zhashx_t *names;            //  lower-cased name, id or alias -> s_names_t
    size_t longest;             //  bytes of the longest name
    //  Lengths of the names holding a byte that ends a mention ("jo-ker",
    //  "joker bot"): a token scan cannot find them, so at each '@' the text
    //  is also tried at each of these lengths (usually there are none).
    size_t *odd_lengths;
    size_t odd_count;
    int *chance;                //  enabled entities with responseChance > 0, in order
    size_t chance_count;
    uint32_t *stamp;            //  per entity: == gen when mentioned in this call
    uint32_t gen;
    int *hits;                  //  entities mentioned in this call
    size_t hit_count;
    char *key;                  //  scratch for a lower-cased name (longest + 1)
};

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

//  --- the index -----------------------------------------------------------------------

static void s_names_free (void **item)
{
    s_names_t *names = *item;
    free (names->items);
    free (names);
    *item = NULL;
}

//  Lower-cases (ASCII, as strncasecmp compares) `n` bytes of `s` into the
//  scratch key; false if no name is that long.
static bool s_key (select_t *self, const char *s, size_t n)
{
    if (n > self->longest)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char) s[i];
        self->key[i] = (char) (c < 0x80 ? tolower (c) : c);
    }
    self->key[n] = 0;
    return true;
}

static void s_add_name (select_t *self, const char *name, int entity)
{
    size_t n = strlen (name);
    if (n > self->longest) {
        self->longest = n;
        self->key = prealloc (self->key, n + 1);
    }
    s_key (self, name, n);
    s_names_t *names = zhashx_lookup (self->names, self->key);
    if (!names) {
        names = pcalloc (1, sizeof *names);
        zhashx_insert (self->names, self->key, names);
    }
    if (names->count && names->items[names->count - 1] == entity)
        return;     //  its name and id are the same
    names->items = pgrow (names->items, &names->capacity, names->count + 1, sizeof (int));
    names->items[names->count++] = entity;
    bool odd = false;
    for (size_t i = 0; i < n && !odd; i++)
        odd = !s_name_char ((unsigned char) name[i]);
    for (size_t i = 0; odd && i < self->odd_count; i++)
        odd = self->odd_lengths[i] != n;
    if (odd) {
        self->odd_lengths = prealloc (self->odd_lengths, (self->odd_count + 1) * sizeof (size_t));
        self->odd_lengths[self->odd_count++] = n;
    }
}

select_t *select_new (const pcfg_t *config)
{
    select_t *self = pcalloc (1, sizeof *self);
    self->config = config;
    self->names = zhashx_new ();
    zhashx_set_destructor (self->names, s_names_free);
    self->key = pmalloc (1);
    size_t count = config->entities.count;
    self->chance = pcalloc (count, sizeof (int));
    self->stamp = pcalloc (count, sizeof (uint32_t));
    self->hits = pcalloc (count, sizeof (int));
    for (size_t i = 0; i < count; i++) {
        const pcfg_entity_t *e = pcfg_entity (config, i);
        s_add_name (self, e->name, (int) i);
        s_add_name (self, e->id, (int) i);
        for (size_t a = 0; a < e->aliases.count; a++)
            s_add_name (self, e->aliases.items[a], (int) i);
        if (e->enabled && e->response_chance > 0)
            self->chance[self->chance_count++] = (int) i;
    }
    return self;
}

void select_destroy (select_t **self_p)
{
    select_t *self = *self_p;
    if (!self)
        return;
    zhashx_destroy (&self->names);
    free (self->odd_lengths);
    free (self->chance);
    free (self->stamp);
    free (self->hits);
    free (self->key);
    free (self);
    *self_p = NULL;
}

//  The entities named by `n` bytes at `s` (any case), or NULL.
static const s_names_t *s_lookup (select_t *self, const char *s, size_t n)
{
    return s_key (self, s, n) ? zhashx_lookup (self->names, self->key) : NULL;
}

int select_who (select_t *self, const char *who)
{
    assert (self);
    const s_names_t *names = who ? s_lookup (self, who, strlen (who)) : NULL;
    return names ? names->items[names->count - 1] : -1;
}

static void s_mark (select_t *self, const s_names_t *names)
{
    for (size_t i = 0; names && i < names->count; i++) {
        int e = names->items[i];
        if (self->stamp[e] != self->gen) {
            self->stamp[e] = self->gen;
            self->hits[self->hit_count++] = e;
        }
    }
}

//  Every "@name" of the text, in one pass. A name made of name characters
//  is mentioned exactly when it equals the whole token after an '@' that
//  does not follow a name character.
static void s_scan_text (select_t *self, const char *text)
{
    for (const char *at = strchr (text, '@'); at; at = strchr (at + 1, '@')) {
        if (at > text && s_name_char ((unsigned char) at[-1]))
            continue;
        const char *name = at + 1;
        size_t n = 0;
        while (s_name_char ((unsigned char) name[n]))
            n++;
        if (n > 0)
            s_mark (self, s_lookup (self, name, n));
        for (size_t i = 0; i < self->odd_count; i++) {
            size_t len = self->odd_lengths[i];
            if (len > 0 && strnlen (name, len) == len && !s_name_char ((unsigned char) name[len]))
                s_mark (self, s_lookup (self, name, len));
        }
    }
}

static int s_int_compare (const void *a, const void *b)
{
    int x = *(const int *) a, y = *(const int *) b;
    return (x > y) - (x < y);
}

static bool s_in_list (const pcfg_strs_t *list, const char *chat_key)
{
    for (size_t i = 0; i < list->count; i++)
        if (strcmp (list->items[i], chat_key) == 0)
            return true;
    return false;
}

static int s_priority (const pcfg_t *config, const pcfg_entity_t *e, const pcfg_source_t *source,
                       bool mention)
{
    int64_t p = mention ? e->mention_priority : e->default_priority;
    if (p < 0 && source)
        p = mention ? source->mention_priority : source->default_priority;
    if (p < 0)
        p = mention ? config->mention_priority : config->default_priority;
    return (int) p;
}

int select_run (select_t *self, const pcfg_source_t *source, const char *chat_key,
                const chat_msg_t *msg, const char *msg_key, uint64_t seed, selection_t *out,
                int *skipped)
{
    assert (self);
    const pcfg_t *config = self->config;
    if (++self->gen == 0) {
        //  Wrapped: old stamps could look current.
        memset (self->stamp, 0, config->entities.count * sizeof (uint32_t));
        self->gen = 1;
    }
    self->hit_count = 0;
    s_scan_text (self, msg->text);
    if (msg->reply_to_author)
        s_mark (self, s_lookup (self, msg->reply_to_author, strlen (msg->reply_to_author)));
    for (size_t m = 0; msg->mentions && m < msg->mention_count; m++)
        if (msg->mentions[m])
            s_mark (self, s_lookup (self, msg->mentions[m], strlen (msg->mentions[m])));
    qsort (self->hits, self->hit_count, sizeof (int), s_int_compare);

    int author = select_who (self, msg->author);
    bool from_bot = msg->from_bot || author >= 0;
    int n = 0, skips = 0;
    //  The mentioned and the drawing entities, merged in configuration order.
    size_t h = 0, c = 0;
    while (h < self->hit_count || c < self->chance_count) {
        int i;
        if (c == self->chance_count || (h < self->hit_count && self->hits[h] < self->chance[c]))
            i = self->hits[h++];
        else {
            i = self->chance[c++];
            if (h < self->hit_count && self->hits[h] == i)
                h++;
        }
        const pcfg_entity_t *e = pcfg_entity (config, (size_t) i);
        if (!e->enabled || i == author)
            continue;
        if (from_bot && !e->answer_bots)
            continue;
        if ((e->allow_chats.count && !s_in_list (&e->allow_chats, chat_key))
            || s_in_list (&e->deny_chats, chat_key))
            continue;
        bool mention = self->stamp[i] == self->gen;
        if (!mention && e->response_chance < 1.0
            && select_draw (seed, msg_key, e->id) >= e->response_chance)
            continue;
        int priority = s_priority (config, e, source, mention);
        if (priority >= SELECT_SKIP) {
            skips++;
            continue;
        }
        out[n++] = (selection_t) {i, priority, mention};
    }
    if (skipped)
        *skipped = skips;
    return n;
}

//  --- without an index ------------------------------------------------------------------

int select_entities (const pcfg_t *config, const char *source, const chat_msg_t *msg,
                     const char *msg_key, uint64_t seed, selection_t *out)
{
    const pcfg_source_t *src = NULL;
    for (size_t i = 0; i < config->sources.count && !src; i++) {
        const pcfg_source_t *s = &((const pcfg_source_t *) config->sources.items)[i];
        if (strcmp (s->name, source) == 0)
            src = s;
    }
    char *chat_key = zsys_sprintf ("%s/%s", source, msg->chat_ref);
    select_t *self = select_new (config);
    int n = select_run (self, src, chat_key, msg, msg_key, seed, out, NULL);
    select_destroy (&self);
    zstr_free (&chat_key);
    return n;
}

int select_author_entity (const pcfg_t *config, const chat_msg_t *msg)
{
    select_t *self = select_new (config);
    int author = select_who (self, msg->author);
    select_destroy (&self);
    return author;
}
