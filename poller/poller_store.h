/*  poller_store - the poller's durable state (storage.dataDir/poller.db).

        seen     message keys already read, so a source that returns the
                 same messages again (a "last 50" API) or a restart does not
                 submit them twice
        cursors  where each source resumes (a file offset, an update id)
        outbox   SUBMIT frames the broker has not acknowledged yet, and
                 the new batches of jobs it refused as busy (stored in the
                 transaction that forgets the refused batch); resent after
                 a restart (the broker drops duplicates)

    The seen keys are loaded into memory at start (the poller's seen set,
    bounded by storage.dedupeMaxKeys and dedupeRetentionSeconds); the
    table is pruned to match.

    A message's jobs, its seen mark and its source's cursor are stored in
    one transaction before the jobs are submitted and before the source may
    confirm the messages to its platform. So a crash at any moment loses
    nothing that was read, and reads nothing twice.
*/
#ifndef POLLER_STORE_H_INCLUDED
#define POLLER_STORE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct poller_store_s poller_store_t;

poller_store_t *poller_store_open (const char *dir, const char *fsync, char *err, size_t errlen);
void poller_store_close (poller_store_t **self_p);
int poller_store_commit (poller_store_t *self);

bool poller_store_seen (poller_store_t *self, const char *msg_key);
void poller_store_mark_seen (poller_store_t *self, const char *msg_key, int64_t now);

void poller_store_cursor (poller_store_t *self, const char *source, const char *cursor);
//  The stored cursor of `source` (caller frees), or NULL.
char *poller_store_get_cursor (poller_store_t *self, const char *source);

void poller_store_batch (poller_store_t *self, uint64_t seq, const void *frame, size_t size,
                         size_t count);
void poller_store_acked (poller_store_t *self, uint64_t seq);

typedef void (poller_store_batch_fn) (void *arg, uint64_t seq, const void *frame, size_t size,
                                      size_t count);
void poller_store_load_batches (poller_store_t *self, void *arg, poller_store_batch_fn *fn);

//  Every stored seen key, oldest first, with the time it was marked.
typedef void (poller_store_seen_fn) (void *arg, const char *msg_key, int64_t at);
void poller_store_load_seen (poller_store_t *self, void *arg, poller_store_seen_fn *fn);

//  Forgets seen keys marked before `before` (Unix ms).
void poller_store_prune (poller_store_t *self, int64_t before);

#endif
