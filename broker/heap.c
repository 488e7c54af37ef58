/*  heap - indexed binary min-heap. See heap.h. */
#include "broker/heap.h"
#include "common/palloc.h"

#include <stdlib.h>

#define POS(self, item) (*(uint32_t *) ((char *) (item) + (self)->pos_offset))

void heap_init (heap_t *self, heap_less_fn less, size_t pos_offset)
{
    self->items = NULL;
    self->size = self->capacity = 0;
    self->less = less;
    self->pos_offset = pos_offset;
}

void heap_destroy (heap_t *self)
{
    free (self->items);
    self->items = NULL;
    self->size = self->capacity = 0;
}

static inline void s_place (heap_t *self, size_t pos, void *item)
{
    self->items[pos] = item;
    POS (self, item) = (uint32_t) pos;
}

static void s_sift_up (heap_t *self, size_t pos)
{
    void *item = self->items[pos];
    while (pos > 0) {
        size_t parent = (pos - 1) / 2;
        if (!self->less (item, self->items[parent]))
            break;
        s_place (self, pos, self->items[parent]);
        pos = parent;
    }
    s_place (self, pos, item);
}

static void s_sift_down (heap_t *self, size_t pos)
{
    void *item = self->items[pos];
    for (;;) {
        size_t child = 2 * pos + 1;
        if (child >= self->size)
            break;
        if (child + 1 < self->size && self->less (self->items[child + 1], self->items[child]))
            child++;
        if (!self->less (self->items[child], item))
            break;
        s_place (self, pos, self->items[child]);
        pos = child;
    }
    s_place (self, pos, item);
}

int heap_push (heap_t *self, void *item)
{
    if (self->size == self->capacity) {
        //  Small at first: the scheduler has a heap per (chat, entity) flow,
        //  a hundred thousand of them with many entities and chats, and most
        //  hold a job or two.
        size_t capacity = self->capacity ? self->capacity * 2 : 4;
        self->items = prealloc (self->items, capacity * sizeof (void *));
        self->capacity = capacity;
    }
    s_place (self, self->size++, item);
    s_sift_up (self, self->size - 1);
    return 0;
}

void *heap_pop (heap_t *self)
{
    if (!self->size)
        return NULL;
    void *top = self->items[0];
    heap_remove (self, top);
    return top;
}

void heap_remove (heap_t *self, void *item)
{
    if (!heap_contains (self, item))
        return;
    size_t pos = POS (self, item);
    POS (self, item) = HEAP_NONE;
    self->size--;
    if (pos == self->size)
        return;
    s_place (self, pos, self->items[self->size]);
    //  The moved element may belong above or below its new place.
    if (pos > 0 && self->less (self->items[pos], self->items[(pos - 1) / 2]))
        s_sift_up (self, pos);
    else
        s_sift_down (self, pos);
}

void heap_update (heap_t *self, void *item)
{
    if (!heap_contains (self, item))
        return;
    size_t pos = POS (self, item);
    if (pos > 0 && self->less (item, self->items[(pos - 1) / 2]))
        s_sift_up (self, pos);
    else
        s_sift_down (self, pos);
}
