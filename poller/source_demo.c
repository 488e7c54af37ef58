/*  source_demo - a built-in chat that never sleeps.

    Generates believable traffic for the configured entities: a few rooms,
    a crowd of users, small talk and questions, and a share of messages that
    mention an entity ("@Philosopher what is time?"). Deterministic for a
    given seed, and message ids are a counter, so runs can be compared.
    ratePerSecond may be high (the benchmark uses it as a load generator).
*/
#include "poller/source.h"
#include "common/palloc.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint64_t seed;
    unsigned short rand[3];     //  erand48 state, set afresh for every message
    double interval_ms;         //  between two messages
    double next_at;             //  when the next message is due
    uint64_t produced;
    int64_t limit;              //  0 = endless
    char cursor[32];
    char **entity_names;
    size_t entity_count;
} demo_t;

static const char *s_adjectives[] = {"quiet", "blue", "happy", "lazy", "swift", "brave", "odd",
                                     "tiny", "grumpy", "sunny", "misty", "clever", "wild", "sleepy"};
static const char *s_animals[] = {"fox", "whale", "otter", "panda", "owl", "lynx", "moth",
                                  "badger", "heron", "gecko", "bison", "koala", "crane", "newt"};
static const char *s_rooms[] = {"lounge", "gaming", "tech", "music", "books", "random",
                                "cooking", "art", "science", "movies"};

//  Lines people write; some are questions worth answering, some are noise.
static const char *s_lines[] = {
    "anyone tried the new rust release?",
    "what's everyone having for dinner tonight",
    "is it just me or is the stream lagging",
    "do we actually have free will or is it all physics",
    "my cat just knocked over my coffee again",
    "best sci-fi book you've read this year?",
    "gg that last round was wild",
    "how do you stay motivated on mondays",
    "why is naming things so hard in programming",
    "what's a good first instrument to learn",
    "it's raining again, third day in a row",
    "can someone explain quantum entanglement simply",
    "hot take: pineapple on pizza is fine",
    "what would you do with an extra hour every day",
    "i finally fixed that bug after 3 days",
    "recommend me a podcast for a long drive",
    "is coffee better than tea, be honest",
    "the sunset tonight was unreal",
    "how do you deal with procrastination",
    "what's the meaning of a good life",
    "just got back from a run, legs are dead",
    "anyone else learning to cook during winter",
    "what's the most underrated movie ever",
    "tabs or spaces, settle this once and for all",
    "i think i'm addicted to this chat lol",
    "tell me a story about a lighthouse",
    "my plants keep dying, any tips",
    "what's your favourite way to spend a sunday",
    "lol",
    "brb",
};

#define COUNT(a) (sizeof (a) / sizeof (a)[0])

//  Each message's draws depend only on (seed, message number), so a restart
//  resumes the same conversation from the stored message count.
static void s_reseed (demo_t *d, uint64_t index)
{
    uint64_t x = d->seed + index * 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    x ^= x >> 31;
    d->rand[0] = (unsigned short) x;
    d->rand[1] = (unsigned short) (x >> 16);
    d->rand[2] = (unsigned short) (x >> 32);
}

static size_t s_pick (demo_t *d, size_t n)
{
    return (size_t) (erand48 (d->rand) * (double) n) % n;
}

static void s_poll (source_t *self, int64_t now, int budget, source_emit_fn *emit, void *ctx)
{
    demo_t *d = self->state;
    const pcfg_source_t *c = self->config;
    if (d->next_at == 0)
        d->next_at = (double) now;
    while (budget-- > 0 && d->next_at <= (double) now && (d->limit == 0 || (int64_t) d->produced < d->limit)) {
        s_reseed (d, d->produced);
        size_t user = s_pick (d, (size_t) c->users);
        size_t room = s_pick (d, (size_t) c->chats);
        const char *line = s_lines[s_pick (d, COUNT (s_lines))];
        bool mention = d->entity_count > 0 && erand48 (d->rand) < c->mention_rate;
        const char *target = mention ? d->entity_names[s_pick (d, d->entity_count)] : NULL;

        char author[64], author_id[32], chat[64], msg_ref[32], text[512];
        snprintf (author, sizeof author, "%s%s%zu", s_adjectives[user % COUNT (s_adjectives)],
                  s_animals[(user / COUNT (s_adjectives)) % COUNT (s_animals)], user);
        snprintf (author_id, sizeof author_id, "u%zu", user);
        if (room < COUNT (s_rooms))
            snprintf (chat, sizeof chat, "%s", s_rooms[room]);
        else
            snprintf (chat, sizeof chat, "room%zu", room);
        snprintf (msg_ref, sizeof msg_ref, "%llu", (unsigned long long) d->produced + 1);
        if (target)
            snprintf (text, sizeof text, "@%s %s", target, line);
        else
            snprintf (text, sizeof text, "%s", line);
        chat_msg_t msg = {msg_ref, chat, "group", author, author_id, text, NULL,
                          (int64_t) d->next_at, false};
        if (!emit (ctx, self, &msg))
            return;     //  the same message again next time
        d->produced++;
        d->next_at += d->interval_ms;
    }
    //  After a long stall do not replay the backlog at once: real chats do not.
    if (d->next_at < (double) now - 1000)
        d->next_at = (double) now - 1000;
}

static int64_t s_wakeup (prt_io_t *io, int64_t now)
{
    source_t *self = source_of (io);
    demo_t *d = self->state;
    (void) now;
    if (d->limit && (int64_t) d->produced >= d->limit)
        return PRT_NEVER;
    //  Rounded up: a wakeup before next_at would find nothing due and spin.
    return (int64_t) ceil (d->next_at);
}

static int s_pollitems (prt_io_t *io, zmq_pollitem_t *items, int max)
{
    (void) io, (void) items, (void) max;
    return 0;     //  a timer only
}

static bool s_finished (source_t *self)
{
    demo_t *d = self->state;
    return d->limit && (int64_t) d->produced >= d->limit;
}

static const char *s_cursor (source_t *self)
{
    demo_t *d = self->state;
    snprintf (d->cursor, sizeof d->cursor, "%llu", (unsigned long long) d->produced);
    return d->cursor;
}

static void s_committed (source_t *self, const char *cursor)
{
    (void) self, (void) cursor;
}

static void s_restore (source_t *self, const char *cursor)
{
    demo_t *d = self->state;
    d->produced = strtoull (cursor, NULL, 10);
}

static void s_destroy (source_t *self)
{
    demo_t *d = self->state;
    for (size_t i = 0; i < d->entity_count; i++)
        free (d->entity_names[i]);
    free (d->entity_names);
    free (d);
}

int source_demo_init (source_t *self, uint64_t seed)
{
    demo_t *d = pcalloc (1, sizeof *d);
    const pcfg_source_t *c = self->config;
    d->seed = seed;
    d->interval_ms = c->rate_per_second > 0 ? 1000.0 / c->rate_per_second : 1e18;
    d->limit = c->limit;
    d->entity_names = pcalloc (self->root->entities.count + 1, sizeof (char *));
    for (size_t i = 0; i < self->root->entities.count; i++) {
        const pcfg_entity_t *e = pcfg_entity (self->root, i);
        if (e->enabled)
            d->entity_names[d->entity_count++] = pstrdup (e->name);
    }
    self->state = d;
    self->poll = s_poll;
    self->io.wakeup = s_wakeup;
    self->io.pollitems = s_pollitems;
    self->finished = s_finished;
    self->cursor = s_cursor;
    self->committed = s_committed;
    self->restore = s_restore;
    self->destroy = s_destroy;
    return 0;
}
