/*  plist - an intrusive doubly linked list.

    A record that lives in lists (a reply waiting for its commit, a job a
    worker holds) embeds a plist_node_t; moving it from one list to another
    is four pointer writes. czmq's zlistx allocates a node for every add
    and frees it on every detach: a record that changes lists several times
    in its life paid a malloc and a free each time.

    A node is in at most one list at a time; a node in none has prev = NULL.
*/
#ifndef PLIST_H_INCLUDED
#define PLIST_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

typedef struct plist_node_s {
    struct plist_node_s *prev, *next;
} plist_node_t;

typedef struct {
    plist_node_t head;          //  sentinel: head.next is the first node, head.prev the last
    size_t size;
} plist_t;

//  The record that embeds `node` as `member`.
#define PLIST_ITEM(node, type, member) ((type *) ((char *) (node) - offsetof (type, member)))

static inline void plist_init (plist_t *list)
{
    list->head.prev = list->head.next = &list->head;
    list->size = 0;
}

static inline bool plist_linked (const plist_node_t *node)
{
    return node->prev != NULL;
}

//  Takes `node` out of `list` (it must be in it).
static inline void plist_remove (plist_t *list, plist_node_t *node)
{
    node->prev->next = node->next;
    node->next->prev = node->prev;
    node->prev = node->next = NULL;
    list->size--;
}

//  Appends `node`, which must be in no list.
static inline void plist_append (plist_t *list, plist_node_t *node)
{
    node->prev = list->head.prev;
    node->next = &list->head;
    list->head.prev->next = node;
    list->head.prev = node;
    list->size++;
}

static inline plist_node_t *plist_first (const plist_t *list)
{
    return list->head.next == &list->head ? NULL : list->head.next;
}

//  The node after `node`, or NULL at the end.
static inline plist_node_t *plist_next (const plist_t *list, const plist_node_t *node)
{
    return node->next == &list->head ? NULL : node->next;
}

static inline size_t plist_size (const plist_t *list)
{
    return list->size;
}

#endif
