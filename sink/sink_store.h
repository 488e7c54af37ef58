/*  sink_store - what only the sink knows, kept durably: a journal of records
    (store/pjournal) in storage.dataDir/sink/.

    The broker keeps every job under a lease and a fencing token, so the
    sink stores nothing about a result until it is about to post it: a
    result waiting for a verdict or for a rate slot is only in memory (if
    the sink dies, the broker takes the job back after the lease and
    dispatches it again under a new token). What the sink stores:

        MARK      per reply being posted: its text, pair, chat, entity,
                  token and where it goes, stored and synced BEFORE the
                  first byte leaves; written again whole when a newer token
                  takes it over or its first part went out
        OUTCOME   what became of it (replaces its MARK: the text is no
                  longer needed), until the broker's OUTCOME_ACK
        FORGET    the mark is done with: its older records are void
        POSTED    a pair posted / in doubt (it may have been): its
        DOUBTED   fingerprint, entity, chat and time; kept for dedupe
                  (storage.dedupeRetentionSeconds / dedupeMaxKeys) and, for
                  the last hour, as the rate history a restart replays

    After a restart a mark without an outcome is a post that was
    interrupted: the sink asks the destination whether it went out.

    Every record is coded by the protocol's table-driven codec, so loading
    checks it as strictly as the network does; a record that cannot be used
    is quarantined (kept in quarantine.pj with its reason, counted, logged
    with its key) and the sink starts anyway.

    Only a mark must be on disk before anything depends on it: with fsync
    "always", the commit that holds a new mark is synced. Everything else
    rides along with the next sync: losing it can only turn a post into one
    the sink asks the destination about again, or an outcome the broker
    hears twice - never into a double post.

    What keeps old segments: each mark is anchored to the segment of its
    latest record; each posted or doubted pair's segment is the tag it
    carries in the ledger's seen-set (sink_store_set_pairs); and a segment
    holding a post of the last hour is kept for that hour, since the rate
    history is read from it. When old segments pin too much disk, marks are
    written again and pairs are copied forward with fingerprint and time
    only (migration).
*/
#ifndef SINK_STORE_H_INCLUDED
#define SINK_STORE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/pkey.h"
#include "common/pseen.h"

typedef struct sink_store_s sink_store_t;

#define SINK_NO_OUTCOME -1

//  A reply being posted. Strings and payload are borrowed (copied by the store).
typedef struct {
    pkey_fp_t pair;             //  fingerprint of (entity, msg_key)
    uint64_t job_id;
    uint64_t token;
    const char *msg_key;
    const char *entity;
    const char *chat;
    const char *chat_kind;
    const char *text;
    const void *payload;        //  the MESSAGE record: where to post
    uint32_t payload_size;
    int priority;
    int64_t created_ms;
    int64_t expires_ms;
    uint64_t llm_ms;
    uint64_t tokens;
    int64_t marked_at;
    int64_t first_at;           //  when its first part was posted; 0 = not known to be
    int outcome;                //  proto_outcome_status_t, or SINK_NO_OUTCOME
    const char *reason;
    int64_t outcome_at;
} sink_mark_t;

//  A pair posted, or in doubt.
typedef struct {
    pkey_fp_t pair;
    const char *entity;
    const char *chat;
    const char *chat_kind;
    int64_t at;                 //  when its first part was posted (or the doubt arose)
    bool doubt;                 //  it may or may not have been posted
} sink_posted_t;

//  Opens (creating it) dir/sink/. fsync: always | batch | off;
//  segment_bytes: 0 for the journal's default. NULL + err when it cannot.
sink_store_t *sink_store_open (const char *dir, const char *fsync, size_t segment_bytes, char *err,
                               size_t errlen);
//  Writes what waits (no migration), closes, nulls the caller's pointer.
void sink_store_close (sink_store_t **self_p);

//  The sets of posted and doubted pairs (owned by the ledger): the store
//  fills them at load and keeps each key's segment in its tag. Set both
//  before sink_store_load; NULL, NULL before the sets are destroyed.
void sink_store_set_pairs (sink_store_t *self, pseen_t *posted, pseen_t *doubted);

typedef void (sink_store_mark_fn) (void *arg, const sink_mark_t *mark);
typedef void (sink_store_posted_fn) (void *arg, const sink_posted_t *posted);
//  Loads the journal: pairs newer than `retention_ms` go into the sets;
//  `posted` is called for each pair posted or doubted in the hour before
//  `now`, oldest first (the rate history); then `mark` for every mark, in
//  the order they were marked (a mark of an outcome has no text or
//  payload). The callbacks may change the store. Returns 0, or -1 when
//  the journal cannot be read at all.
int sink_store_load (sink_store_t *self, int64_t now, int64_t retention_ms, void *arg,
                     sink_store_mark_fn *mark, sink_store_posted_fn *posted);

//  A reply is about to be posted (stored and synced by the next commit).
void sink_store_mark (sink_store_t *self, const sink_mark_t *mark);
//  A newer dispatch of the same job owns the reply being posted.
void sink_store_retoken (sink_store_t *self, pkey_fp_t pair, uint64_t job_id, uint64_t token);
//  Its first part was posted at `at`.
void sink_store_first (sink_store_t *self, pkey_fp_t pair, int64_t at);
//  Its outcome.
void sink_store_outcome (sink_store_t *self, pkey_fp_t pair, int outcome, const char *reason,
                         int64_t at);
//  Forgets a mark: the outcome was acknowledged, or the post certainly did not happen.
void sink_store_forget (sink_store_t *self, pkey_fp_t pair);

//  A pair was posted (or is in doubt): returns the tag to keep with it in its set.
uint32_t sink_store_posted (sink_store_t *self, const sink_posted_t *posted);
//  The owner took a pair out of its set (`tag` from the set).
void sink_store_unposted (sink_store_t *self, uint32_t tag);
//  Lets go of rate history older than an hour. Call now and then.
void sink_store_prune (sink_store_t *self, int64_t now);

//  Stores everything since the last commit (and empties an old segment when
//  it is time). Returns 0, or -1 (logged) when it could not: the error is
//  sticky, nothing that waited may be sent.
int sink_store_commit (sink_store_t *self);
//  True when records wait for the next commit.
bool sink_store_dirty (sink_store_t *self);
//  fdatasync calls so far (for tests and stats).
uint64_t sink_store_syncs (sink_store_t *self);
//  Records quarantined at load (damaged, or from an unknown version).
uint64_t sink_store_quarantined (sink_store_t *self);
//  The journal's directory.
const char *sink_store_path (sink_store_t *self);

#endif
