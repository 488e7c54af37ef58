/*  heap - an indexed binary min-heap of pointers.

    Each element keeps its own position (a uint32_t at `pos_offset` inside
    it: four bytes, as a million queued jobs are in several heaps each), so removing or re-keying an arbitrary element is O(log n). The
    broker's priority queues, timers and fairness rotations are all heaps.
*/
#ifndef HEAP_H_INCLUDED
#define HEAP_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HEAP_NONE UINT32_MAX      //  position of an element not in a heap

typedef bool (*heap_less_fn) (const void *a, const void *b);

typedef struct {
    void **items;
    size_t size;
    size_t capacity;
    heap_less_fn less;
    size_t pos_offset;
} heap_t;

void heap_init (heap_t *self, heap_less_fn less, size_t pos_offset);
void heap_destroy (heap_t *self);

//  Adds `item`; returns 0.
int heap_push (heap_t *self, void *item);

static inline void *heap_top (const heap_t *self)
{
    return self->size ? self->items[0] : NULL;
}

void *heap_pop (heap_t *self);

//  Removes `item` from wherever it is; no-op when it is not in the heap.
void heap_remove (heap_t *self, void *item);

//  Restores order after `item`'s key changed.
void heap_update (heap_t *self, void *item);

static inline bool heap_contains (const heap_t *self, const void *item)
{
    uint32_t pos = *(const uint32_t *) ((const char *) item + self->pos_offset);
    return pos < self->size && self->items[pos] == item;
}

#endif
