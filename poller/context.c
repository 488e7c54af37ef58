/*  context - the recent lines of each chat. See context.h. */
#include "poller/context.h"
#include "common/palloc.h"

#include <czmq.h>

typedef struct {
    char *author;
    char *text;
} s_line_t;

//  A ring of a chat's last lines (self->lines of its slots are used).
typedef struct {
    s_line_t lines[CONTEXT_MAX];
    size_t count;
    size_t head;                //  next slot to write
} s_chat_t;

struct context_s {
    size_t lines;               //  lines kept per chat (and attached to a job)
    zhashx_t *chats;            //  chat key -> s_chat_t
};

static void s_chat_free (void **item)
{
    s_chat_t *c = *item;
    for (size_t i = 0; i < c->count; i++) {
        free (c->lines[i].author);
        free (c->lines[i].text);
    }
    free (c);
    *item = NULL;
}

context_t *context_new (size_t lines)
{
    context_t *self = pcalloc (1, sizeof *self);
    self->lines = lines > CONTEXT_MAX ? CONTEXT_MAX : lines;
    self->chats = zhashx_new ();
    zhashx_set_destructor (self->chats, s_chat_free);
    return self;
}

void context_destroy (context_t **self_p)
{
    context_t *self = *self_p;
    if (!self)
        return;
    zhashx_destroy (&self->chats);
    free (self);
    *self_p = NULL;
}

size_t context_get (context_t *self, const char *chat_key, proto_line_t *out)
{
    assert (self);
    const s_chat_t *c = zhashx_lookup (self->chats, chat_key);
    if (!c)
        return 0;
    size_t take = c->count < self->lines ? c->count : self->lines;
    for (size_t i = 0; i < take; i++) {
        const s_line_t *l = &c->lines[(c->head + self->lines - take + i) % self->lines];
        out[i] = (proto_line_t) {l->author, l->text};
    }
    return take;
}

void context_add (context_t *self, const char *chat_key, const char *author, const char *text)
{
    assert (self);
    if (self->lines == 0)
        return;     //  nobody reads context: keep none
    s_chat_t *c = zhashx_lookup (self->chats, chat_key);
    if (!c) {
        c = pcalloc (1, sizeof *c);
        zhashx_insert (self->chats, chat_key, c);
    }
    s_line_t *slot = &c->lines[c->head];
    if (c->count == self->lines) {
        free (slot->author);
        free (slot->text);
    }
    else
        c->count++;
    slot->author = pstrdup (author);
    slot->text = pstrdup (text);
    c->head = (c->head + 1) % self->lines;
}

size_t context_chats (context_t *self)
{
    assert (self);
    return zhashx_size (self->chats);
}
