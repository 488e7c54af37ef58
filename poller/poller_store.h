/*  poller_store - the poller's durable state: a journal of records (store/pjournal).

    What is stored (storage.dataDir/poller/):
        SEEN        the fingerprint of a message key read, with the time: a
                    source that returns the same messages again (a "last 50"
                    API) or a restart does not submit them twice
        CURSOR      where a source resumes (a file offset, an update id):
                    the latest per source
        BATCH       a SUBMIT frame the broker has not acknowledged yet
                    (its seq and job count with it), whole
        BATCH_GONE  the broker acknowledged it (its older records are void)

    Every record is coded by the protocol's table-driven codec, and a
    batch's frame is decoded as the broker would decode it, so loading
    checks records as strictly as the network does; a record that cannot be
    used is quarantined (kept in quarantine.pj, counted, logged with its
    key) and the poller starts anyway.

    What must be on disk before anything leaves (fsync "always"): a
    message's jobs (a new batch), its seen mark and its source's cursor,
    before the jobs are submitted and before the source confirms the
    messages to its platform (a Telegram offset). They are stored in one
    turn and that turn syncs once: poller_store_batch with `sync`, and
    poller_store_cursor. Everything else rides along with the next sync:
    an acknowledged batch's tombstone, and the batch its busy jobs become
    (stored in the turn the old one is acknowledged, and before it in the
    journal, so the tombstone cannot outlive it). Losing those in a power
    cut only sends jobs again, which the broker drops as duplicates.

    The seen set is the intake's pseen; the store keeps the segment of each
    key's record in the key's tag, and unrefs it when the set forgets the
    key (evicted or aged out). Batches embed a poller_store_anchor_t that
    ties them to the segment of their latest record; when an old segment
    must be emptied (migration) the store asks the batches' owner to store
    them again, and writes seen keys and cursors again itself.
*/
#ifndef POLLER_STORE_H_INCLUDED
#define POLLER_STORE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/pkey.h"
#include "common/pseen.h"
#include "store/pjournal.h"

typedef struct poller_store_s poller_store_t;

//  Embedded in each stored batch, zeroed.
typedef struct {
    pjournal_anchor_t journal;
    uint8_t kind;               //  the store's own use
} poller_store_anchor_t;

//  Opens (creating it) dir/poller/. fsync: always | batch | off. Returns
//  NULL and writes why into err on failure.
poller_store_t *poller_store_open (const char *dir, const char *fsync, char *err, size_t errlen);
//  The same with journal segments of `segment_bytes` (0: the default); tests
//  use small ones to see segments go.
poller_store_t *poller_store_open_sized (const char *dir, const char *fsync, size_t segment_bytes,
                                         char *err, size_t errlen);
void poller_store_close (poller_store_t **self_p);

//  The seen set (owned by the intake): the store tags its keys with their
//  segments. Set before poller_store_load.
void poller_store_set_seen (poller_store_t *self, pseen_t *seen);

//  The owner of the batches writes one again when asked (migration): it
//  calls poller_store_batch for the batch holding `anchor`. Set before the
//  first commit.
typedef void (poller_store_rewrite_fn) (void *arg, poller_store_anchor_t *anchor);
void poller_store_set_owner (poller_store_t *self, poller_store_rewrite_fn *rewrite, void *arg);

//  Ends the turn: empties an old segment when it is time (migration), then
//  writes and syncs per the policy. Returns 0, or -1 (logged) when the
//  state could not be made durable: the poller must then stop. Sticky.
int poller_store_commit (poller_store_t *self);

//  Milliseconds until written records are due to be synced (0: now), or -1
//  when nothing waits: the loop should not sleep past it.
int64_t poller_store_sync_due (poller_store_t *self);

//  A message key read at `at`: returns the tag to keep with it in the seen
//  set. Rides along with the turn's sync.
uint32_t poller_store_mark_seen (poller_store_t *self, pkey_fp_t fp, int64_t at);

//  Where `source` resumes now. The turn syncs: the source confirms its
//  messages to its platform once the commit returns.
void poller_store_cursor (poller_store_t *self, const char *source, const char *cursor);
//  The stored cursor of `source` (caller frees), or NULL.
char *poller_store_get_cursor (poller_store_t *self, const char *source);

//  Stores a batch whole (new, or again). `sync`: it is about to be
//  submitted for the first time.
void poller_store_batch (poller_store_t *self, poller_store_anchor_t *anchor, uint64_t seq,
                         const void *frame, size_t size, size_t count, bool sync);
//  The broker acknowledged the batch.
void poller_store_acked (poller_store_t *self, poller_store_anchor_t *anchor, uint64_t seq);

//  Loading at start-up, once, after poller_store_set_seen: seen keys newer
//  than `retention_ms` go into the seen set, cursors are kept for
//  poller_store_get_cursor, and every batch not acknowledged is handed to
//  fn, by seq, with the segment of its record: the owner anchors it with
//  poller_store_anchor_loaded. Returns 0, or -1 when the journal cannot be
//  read at all.
typedef void (poller_store_batch_fn) (void *arg, uint64_t seq, const void *frame, size_t size,
                                      size_t count, uint64_t segment);
int poller_store_load (poller_store_t *self, int64_t now, int64_t retention_ms,
                       poller_store_batch_fn *fn, void *arg);
void poller_store_anchor_loaded (poller_store_t *self, poller_store_anchor_t *anchor,
                                 uint64_t segment);
//  Unties a batch that is dropped without an acknowledgement (the poller
//  stops): it is loaded again at the next start.
void poller_store_anchor_drop (poller_store_t *self, poller_store_anchor_t *anchor);

//  Records quarantined at load (damaged, or from an unknown version).
uint64_t poller_store_quarantined (poller_store_t *self);

//  The journal's counters (records, commits, fsyncs...).
void poller_store_stats (poller_store_t *self, pjournal_stats_t *stats);

#endif
